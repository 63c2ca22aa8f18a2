//! Every TDX and SNP struct, constant and ioctl number the set-up uses
//! (`backend/kvm/cvm.rs`), against Linux 7.3's own uAPI headers: a C probe compiled against
//! the headers of `linux-source-7.3` (installed by `ci/lab/build-kernel.sh --version 7.3` with
//! `make headers_install`) prints them, and they must equal the Rust side. Skips, naming the
//! missing headers, where the lab has not fetched 7.3 yet (`.ci/run` builds it before the
//! tests).

use privmem::backend::kvm::cvm::*;
use std::mem::{offset_of, size_of};
use std::path::PathBuf;

fn tree_7_3() -> Option<PathBuf> {
    let cache = std::env::var_os("PRIVMEM_LAB_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/privmem-lab"));
    std::fs::read_dir(&cache).ok()?.filter_map(|e| e.ok().map(|e| e.path())).find(|p| {
        p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("headers-7.3"))
            && p.join("include/linux/kvm.h").exists()
    })
}

const PROBE: &str = r#"
#include <stdio.h>
#include <stddef.h>
#include <linux/kvm.h>
#include <linux/kvm_para.h>
#include <linux/fs.h>
#define S(t) printf("size %s %zu\n", #t, sizeof(struct t))
#define O(t, f) printf("offset %s.%s %zu\n", #t, #f, offsetof(struct t, f))
#define C(c) printf("const %s %llu\n", #c, (unsigned long long)(c))
int main(void) {
    S(pm_scan_arg); O(pm_scan_arg, walk_end); O(pm_scan_arg, return_mask); S(page_region);
    C(PAGEMAP_SCAN); C(PAGE_IS_PRESENT); C(PAGE_IS_HUGE);
    C(KVM_PRE_FAULT_MEMORY); C(KVM_GET_STATS_FD); C(KVM_CAP_GUEST_MEMFD_FLAGS);
    C(GUEST_MEMFD_FLAG_MMAP); C(GUEST_MEMFD_FLAG_INIT_SHARED);
    S(kvm_tdx_cmd); O(kvm_tdx_cmd, id); O(kvm_tdx_cmd, flags); O(kvm_tdx_cmd, data); O(kvm_tdx_cmd, hw_error);
    S(kvm_tdx_init_mem_region); O(kvm_tdx_init_mem_region, gpa); O(kvm_tdx_init_mem_region, nr_pages);
    S(kvm_tdx_capabilities); O(kvm_tdx_capabilities, supported_xfam); O(kvm_tdx_capabilities, user_tdvmcallinfo_1_r12);
    O(kvm_tdx_capabilities, reserved); O(kvm_tdx_capabilities, cpuid);
    S(kvm_tdx_init_vm); O(kvm_tdx_init_vm, xfam); O(kvm_tdx_init_vm, mrconfigid); O(kvm_tdx_init_vm, mrowner);
    O(kvm_tdx_init_vm, mrownerconfig); O(kvm_tdx_init_vm, reserved); O(kvm_tdx_init_vm, cpuid);
    S(kvm_sev_cmd); O(kvm_sev_cmd, data); O(kvm_sev_cmd, error); O(kvm_sev_cmd, sev_fd);
    S(kvm_sev_init); O(kvm_sev_init, flags); O(kvm_sev_init, ghcb_version);
    S(kvm_sev_snp_launch_start); O(kvm_sev_snp_launch_start, gosvw); O(kvm_sev_snp_launch_start, flags);
    S(kvm_sev_snp_launch_update); O(kvm_sev_snp_launch_update, len); O(kvm_sev_snp_launch_update, type);
    O(kvm_sev_snp_launch_update, flags);
    S(kvm_sev_snp_launch_finish); O(kvm_sev_snp_launch_finish, host_data); O(kvm_sev_snp_launch_finish, flags);
    C(KVM_TDX_CAPABILITIES); C(KVM_TDX_INIT_VM); C(KVM_TDX_INIT_VCPU); C(KVM_TDX_INIT_MEM_REGION);
    C(KVM_TDX_FINALIZE_VM); C(KVM_TDX_GET_CPUID); C(KVM_TDX_MEASURE_MEMORY_REGION); C(KVM_EXIT_TDX);
    C(KVM_SYSTEM_EVENT_TDX_FATAL); C(KVM_HC_MAP_GPA_RANGE); C(KVM_CAP_EXIT_HYPERCALL); C(KVM_CAP_SPLIT_IRQCHIP);
    C(KVM_X86_TDX_VM); C(KVM_X86_SNP_VM); C(KVM_SEV_INIT2); C(KVM_SEV_SNP_LAUNCH_START);
    C(KVM_SEV_SNP_LAUNCH_UPDATE); C(KVM_SEV_SNP_LAUNCH_FINISH); C(KVM_SEV_SNP_PAGE_TYPE_NORMAL);
    C(KVM_CREATE_VM); C(KVM_CREATE_VCPU); C(KVM_ENABLE_CAP); C(KVM_SET_CPUID2); C(KVM_MEMORY_ENCRYPT_OP);
    C(KVM_CREATE_GUEST_MEMFD); C(KVM_SET_USER_MEMORY_REGION2); C(KVM_SET_MEMORY_ATTRIBUTES); C(KVM_SET_REGS); C(KVM_SET_SREGS);
    return 0;
}
"#;

fn rust_side() -> Vec<String> {
    use kvm_bindings::*;
    let mut v = Vec::new();
    let mut s = |name: &str, n: usize| v.push(format!("size {name} {n}"));
    use privmem::backend::kvm::raw::{PageRegion, PmScanArg, PAGEMAP_SCAN, PAGE_IS_HUGE, PAGE_IS_PRESENT};
    s("pm_scan_arg", size_of::<PmScanArg>());
    s("page_region", size_of::<PageRegion>());
    s("kvm_tdx_cmd", size_of::<KvmTdxCmd>());
    s("kvm_tdx_init_mem_region", size_of::<KvmTdxInitMemRegion>());
    s("kvm_tdx_capabilities", size_of::<KvmTdxCapabilities>());
    s("kvm_tdx_init_vm", size_of::<KvmTdxInitVm>());
    s("kvm_sev_cmd", size_of::<kvm_sev_cmd>());
    s("kvm_sev_init", size_of::<kvm_sev_init>());
    s("kvm_sev_snp_launch_start", size_of::<kvm_sev_snp_launch_start>());
    s("kvm_sev_snp_launch_update", size_of::<kvm_sev_snp_launch_update>());
    s("kvm_sev_snp_launch_finish", size_of::<kvm_sev_snp_launch_finish>());
    let mut o = |name: &str, n: usize| v.push(format!("offset {name} {n}"));
    o("pm_scan_arg.walk_end", offset_of!(PmScanArg, walk_end));
    o("pm_scan_arg.return_mask", offset_of!(PmScanArg, return_mask));
    o("kvm_tdx_cmd.id", offset_of!(KvmTdxCmd, id));
    o("kvm_tdx_cmd.flags", offset_of!(KvmTdxCmd, flags));
    o("kvm_tdx_cmd.data", offset_of!(KvmTdxCmd, data));
    o("kvm_tdx_cmd.hw_error", offset_of!(KvmTdxCmd, hw_error));
    o("kvm_tdx_init_mem_region.gpa", offset_of!(KvmTdxInitMemRegion, gpa));
    o("kvm_tdx_init_mem_region.nr_pages", offset_of!(KvmTdxInitMemRegion, nr_pages));
    o("kvm_tdx_capabilities.supported_xfam", offset_of!(KvmTdxCapabilities, supported_xfam));
    o("kvm_tdx_capabilities.user_tdvmcallinfo_1_r12", offset_of!(KvmTdxCapabilities, user_tdvmcallinfo_1_r12));
    o("kvm_tdx_capabilities.reserved", offset_of!(KvmTdxCapabilities, reserved));
    o("kvm_tdx_capabilities.cpuid", offset_of!(KvmTdxCapabilities, cpuid));
    o("kvm_tdx_init_vm.xfam", offset_of!(KvmTdxInitVm, xfam));
    o("kvm_tdx_init_vm.mrconfigid", offset_of!(KvmTdxInitVm, mrconfigid));
    o("kvm_tdx_init_vm.mrowner", offset_of!(KvmTdxInitVm, mrowner));
    o("kvm_tdx_init_vm.mrownerconfig", offset_of!(KvmTdxInitVm, mrownerconfig));
    o("kvm_tdx_init_vm.reserved", offset_of!(KvmTdxInitVm, reserved));
    o("kvm_tdx_init_vm.cpuid", offset_of!(KvmTdxInitVm, cpuid));
    o("kvm_sev_cmd.data", offset_of!(kvm_sev_cmd, data));
    o("kvm_sev_cmd.error", offset_of!(kvm_sev_cmd, error));
    o("kvm_sev_cmd.sev_fd", offset_of!(kvm_sev_cmd, sev_fd));
    o("kvm_sev_init.flags", offset_of!(kvm_sev_init, flags));
    o("kvm_sev_init.ghcb_version", offset_of!(kvm_sev_init, ghcb_version));
    o("kvm_sev_snp_launch_start.gosvw", offset_of!(kvm_sev_snp_launch_start, gosvw));
    o("kvm_sev_snp_launch_start.flags", offset_of!(kvm_sev_snp_launch_start, flags));
    o("kvm_sev_snp_launch_update.len", offset_of!(kvm_sev_snp_launch_update, len));
    o("kvm_sev_snp_launch_update.type", offset_of!(kvm_sev_snp_launch_update, type_));
    o("kvm_sev_snp_launch_update.flags", offset_of!(kvm_sev_snp_launch_update, flags));
    o("kvm_sev_snp_launch_finish.host_data", offset_of!(kvm_sev_snp_launch_finish, host_data));
    o("kvm_sev_snp_launch_finish.flags", offset_of!(kvm_sev_snp_launch_finish, flags));
    let mut c = |name: &str, n: u64| v.push(format!("const {name} {n}"));
    for (n, x) in [
        ("KVM_TDX_CAPABILITIES", KVM_TDX_CAPABILITIES),
        ("KVM_TDX_INIT_VM", KVM_TDX_INIT_VM),
        ("KVM_TDX_INIT_VCPU", KVM_TDX_INIT_VCPU),
        ("KVM_TDX_INIT_MEM_REGION", KVM_TDX_INIT_MEM_REGION),
        ("KVM_TDX_FINALIZE_VM", KVM_TDX_FINALIZE_VM),
        ("KVM_TDX_GET_CPUID", KVM_TDX_GET_CPUID),
        ("KVM_TDX_MEASURE_MEMORY_REGION", KVM_TDX_MEASURE_MEMORY_REGION),
        ("KVM_EXIT_TDX", KVM_EXIT_TDX),
        ("KVM_SYSTEM_EVENT_TDX_FATAL", KVM_SYSTEM_EVENT_TDX_FATAL),
        ("KVM_HC_MAP_GPA_RANGE", KVM_HC_MAP_GPA_RANGE),
        ("KVM_CAP_EXIT_HYPERCALL", KVM_CAP_EXIT_HYPERCALL),
        ("KVM_CAP_SPLIT_IRQCHIP", KVM_CAP_SPLIT_IRQCHIP),
        ("KVM_X86_TDX_VM", KVM_X86_TDX_VM),
        ("KVM_X86_SNP_VM", KVM_X86_SNP_VM),
        ("KVM_SEV_INIT2", KVM_SEV_INIT2),
        ("KVM_SEV_SNP_LAUNCH_START", KVM_SEV_SNP_LAUNCH_START),
        ("KVM_SEV_SNP_LAUNCH_UPDATE", KVM_SEV_SNP_LAUNCH_UPDATE),
        ("KVM_SEV_SNP_LAUNCH_FINISH", KVM_SEV_SNP_LAUNCH_FINISH),
        ("KVM_SEV_SNP_PAGE_TYPE_NORMAL", u32::from(privmem::backend::kvm::cvm::KVM_SEV_SNP_PAGE_TYPE_NORMAL)),
    ] {
        c(n, x as u64);
    }
    for (n, x) in IOCTLS {
        c(n, x);
    }
    use privmem::backend::kvm::raw;
    for (n, x) in [
        ("PAGEMAP_SCAN", PAGEMAP_SCAN),
        ("PAGE_IS_PRESENT", PAGE_IS_PRESENT),
        ("PAGE_IS_HUGE", PAGE_IS_HUGE),
        ("KVM_PRE_FAULT_MEMORY", raw::KVM_PRE_FAULT_MEMORY),
        ("KVM_GET_STATS_FD", raw::KVM_GET_STATS_FD),
        ("KVM_CAP_GUEST_MEMFD_FLAGS", raw::KVM_CAP_GUEST_MEMFD_FLAGS.into()),
        ("GUEST_MEMFD_FLAG_MMAP", raw::GUEST_MEMFD_FLAG_MMAP),
        ("GUEST_MEMFD_FLAG_INIT_SHARED", raw::GUEST_MEMFD_FLAG_INIT_SHARED),
    ] {
        c(n, x);
    }
    v
}

#[test]
#[cfg_attr(privmem_no_uapi73, ignore = "needs Linux 7.3's uAPI headers (bash ci/lab/build-kernel.sh --version 7.3)")]
#[cfg_attr(privmem_no_gcc, ignore = "needs gcc")]
fn tdx_and_snp_layouts_match_the_7_3_headers() {
    let tree =
        tree_7_3().expect("Linux 7.3's uAPI headers in the lab cache (bash ci/lab/build-kernel.sh --version 7.3)");
    let dir = std::env::temp_dir().join(format!("privmem-uapi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("probe.c"), PROBE).unwrap();
    let st = std::process::Command::new("gcc")
        .arg(format!("-I{}", tree.join("include").display()))
        .args(["-Wall", "-Werror", "-o"])
        .arg(dir.join("probe"))
        .arg(dir.join("probe.c"))
        .status()
        .expect("gcc");
    assert!(st.success(), "the probe does not compile against {}", tree.display());
    let out = std::process::Command::new(dir.join("probe")).output().unwrap();
    let c_side: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect();
    let mut rust = rust_side();
    let mut c = c_side.clone();
    rust.sort();
    c.sort();
    assert_eq!(rust, c, "Rust and Linux 7.3 ({}) disagree", tree.display());
    assert!(c_side.len() >= 60, "{} items compared", c_side.len());
    let _ = std::fs::remove_dir_all(&dir);
}
