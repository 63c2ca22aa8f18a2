//! TDX and SEV-SNP VM set-up (`arch/x86/kvm/vmx/tdx.c`, `arch/x86/kvm/svm/sev.c`, Linux 7.3):
//! the uAPI structs kvm-bindings lacks (TDX's), the ioctl numbers, and the exact sequence of
//! ioctls that sets up a sequence's TD or SNP guest. `privmem plan FILE` prints the sequence;
//! `docs/cvm-setup.md` writes it down and a test holds the two together; `tests/uapi_layout.rs`
//! checks every struct and constant here against the 7.3 headers with a C probe.
//!
//! The TDX sequence is issued in the lab, on KVM's real `tdx.c` over privmem's software TDX
//! module (`lab --tdx`); the SNP one waits for an SNP host. The image it loads is the TD/SNP
//! shim's (`privmem_guest::x86_cvm`), which also runs in emulated mode (`backend::emulated`).

use crate::seq::{Sequence, VmType, PAGE};
use privmem_guest::abi::{
    BOOT_GPA, BOOT_PML4, BOOT_SIZE, BOOT_SLOT, CMD_OFF, CODE_OFF, HARNESS_GPA, HARNESS_SIZE, HARNESS_SLOT,
};
use std::fmt::Write as _;

/// `struct kvm_tdx_cmd`: every TDX command through KVM_MEMORY_ENCRYPT_OP.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KvmTdxCmd {
    pub id: u32,
    pub flags: u32,
    pub data: u64,
    pub hw_error: u64,
}

/// `struct kvm_tdx_init_mem_region`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KvmTdxInitMemRegion {
    pub source_addr: u64,
    pub gpa: u64,
    pub nr_pages: u64,
}

/// `struct kvm_tdx_capabilities` up to its trailing `struct kvm_cpuid2` (whose entries follow).
#[repr(C)]
#[derive(Debug)]
pub struct KvmTdxCapabilities {
    pub supported_attrs: u64,
    pub supported_xfam: u64,
    pub kernel_tdvmcallinfo_1_r11: u64,
    pub user_tdvmcallinfo_1_r11: u64,
    pub kernel_tdvmcallinfo_1_r12: u64,
    pub user_tdvmcallinfo_1_r12: u64,
    pub reserved: [u64; 250],
    pub cpuid: kvm_bindings::kvm_cpuid2,
}

/// `struct kvm_tdx_init_vm` up to its trailing `struct kvm_cpuid2`.
#[repr(C)]
#[derive(Debug)]
pub struct KvmTdxInitVm {
    pub attributes: u64,
    pub xfam: u64,
    pub mrconfigid: [u64; 6],
    pub mrowner: [u64; 6],
    pub mrownerconfig: [u64; 6],
    pub reserved: [u64; 12],
    pub cpuid: kvm_bindings::kvm_cpuid2,
}

// Sizes as the 7.3 headers have them (tests/uapi_layout.rs compares with a C probe).
const _: () = assert!(std::mem::size_of::<KvmTdxCmd>() == 24);
const _: () = assert!(std::mem::size_of::<KvmTdxInitMemRegion>() == 24);
const _: () = assert!(std::mem::size_of::<KvmTdxCapabilities>() == 2056);
const _: () = assert!(std::mem::size_of::<KvmTdxInitVm>() == 264);

/// `enum kvm_tdx_cmd_id`.
pub const KVM_TDX_CAPABILITIES: u32 = 0;
pub const KVM_TDX_INIT_VM: u32 = 1;
pub const KVM_TDX_INIT_VCPU: u32 = 2;
pub const KVM_TDX_INIT_MEM_REGION: u32 = 3;
pub const KVM_TDX_FINALIZE_VM: u32 = 4;
pub const KVM_TDX_GET_CPUID: u32 = 5;
pub const KVM_TDX_MEASURE_MEMORY_REGION: u32 = 1;
pub const KVM_EXIT_TDX: u32 = 40;
pub const KVM_SYSTEM_EVENT_TDX_FATAL: u32 = 7;
pub const KVM_HC_MAP_GPA_RANGE: u32 = 12;
pub const KVM_CAP_EXIT_HYPERCALL: u32 = 201;
pub const KVM_CAP_SPLIT_IRQCHIP: u32 = kvm_bindings::KVM_CAP_SPLIT_IRQCHIP;
pub const KVM_X86_TDX_VM: u32 = kvm_bindings::KVM_X86_TDX_VM;
pub const KVM_X86_SNP_VM: u32 = kvm_bindings::KVM_X86_SNP_VM;
pub const KVM_SEV_INIT2: u32 = kvm_bindings::sev_cmd_id_KVM_SEV_INIT2;
pub const KVM_SEV_SNP_LAUNCH_START: u32 = kvm_bindings::sev_cmd_id_KVM_SEV_SNP_LAUNCH_START;
pub const KVM_SEV_SNP_LAUNCH_UPDATE: u32 = kvm_bindings::sev_cmd_id_KVM_SEV_SNP_LAUNCH_UPDATE;
pub const KVM_SEV_SNP_LAUNCH_FINISH: u32 = kvm_bindings::sev_cmd_id_KVM_SEV_SNP_LAUNCH_FINISH;
/// `KVM_SEV_SNP_PAGE_TYPE_NORMAL`: the launch image's pages.
pub const KVM_SEV_SNP_PAGE_TYPE_NORMAL: u8 = 1;

/// The ioctls of the set-up, by name, with their numbers (vmm-sys-util's encoding of each
/// ioctl's direction and argument struct; tests/uapi_layout.rs holds them to the 7.3 headers).
pub const IOCTLS: [(&str, u64); 10] = {
    use super::raw::{kvm_io, kvm_iow, kvm_iowr};
    use kvm_bindings::*;
    [
        ("KVM_CREATE_VM", kvm_io(0x01)),
        ("KVM_CREATE_VCPU", kvm_io(0x41)),
        ("KVM_ENABLE_CAP", kvm_iow::<kvm_enable_cap>(0xa3)),
        // The header of `struct kvm_cpuid2` (nent and padding): its entries follow.
        ("KVM_SET_CPUID2", kvm_iow::<[u32; 2]>(0x90)),
        ("KVM_MEMORY_ENCRYPT_OP", kvm_iowr::<std::os::raw::c_ulong>(0xba)),
        ("KVM_CREATE_GUEST_MEMFD", kvm_iowr::<kvm_create_guest_memfd>(0xd4)),
        ("KVM_SET_USER_MEMORY_REGION2", kvm_iow::<kvm_userspace_memory_region2>(0x49)),
        ("KVM_SET_MEMORY_ATTRIBUTES", kvm_iow::<kvm_memory_attributes>(0xd2)),
        ("KVM_SET_REGS", kvm_iow::<kvm_regs>(0x82)),
        ("KVM_SET_SREGS", kvm_iow::<kvm_sregs>(0x84)),
    ]
};

/// The shim's image (`privmem_guest::x86_cvm`, built by `backend::emulated::image`): the boot
/// region below 4 GiB and the harness slot's private part (code, IDT, stacks) are added to the
/// measured image; the command and result pages above `CMD_OFF` stay shared, the one part the
/// host reads and writes. One guest_memfd file holds both private regions.
pub const IMAGE_PRIVATE: [(&str, u64, u64); 2] =
    [("boot region", BOOT_GPA, BOOT_SIZE), ("harness", HARNESS_GPA, CMD_OFF)];

/// One ioctl of the set-up: which fd it goes to, its name and its argument, in words.
pub struct Call {
    pub fd: String,
    pub ioctl: &'static str,
    pub arg: String,
}

/// The set-up of `seq`'s TD or SNP guest, in issue order, up to its first op; its ops then run
/// as on any VM (`finalize` is KVM_TDX_FINALIZE_VM or SNP_LAUNCH_FINISH where it stands).
/// None for other VM types.
pub fn plan(seq: &Sequence) -> Option<Vec<Call>> {
    let h = &seq.header;
    let mut v = Vec::new();
    let mut call = |fd: &str, ioctl: &'static str, arg: String| v.push(Call { fd: fd.into(), ioctl, arg });
    let enc = |id: &str, data: &str| format!("{{id {id}, data {data}}}");
    match h.vm {
        VmType::Tdx => {
            call("/dev/kvm", "KVM_CREATE_VM", format!("type {KVM_X86_TDX_VM} (KVM_X86_TDX_VM)"));
            // The full in-kernel irqchip is refused: a split one, 24 routes.
            call("vm", "KVM_ENABLE_CAP", format!("KVM_CAP_SPLIT_IRQCHIP ({KVM_CAP_SPLIT_IRQCHIP}), args[0] 24"));
            call("vm", "KVM_MEMORY_ENCRYPT_OP", enc("KVM_TDX_CAPABILITIES", "&kvm_tdx_capabilities, cpuid.nent 256"));
            call(
                "vm",
                "KVM_MEMORY_ENCRYPT_OP",
                enc(
                    "KVM_TDX_INIT_VM",
                    "&kvm_tdx_init_vm: attributes, xfam from the capabilities, CPUID filtered by them, GPAW 48",
                ),
            );
            call("vm", "KVM_ENABLE_CAP", format!("KVM_CAP_EXIT_HYPERCALL ({KVM_CAP_EXIT_HYPERCALL}), args[0] 1 << KVM_HC_MAP_GPA_RANGE ({KVM_HC_MAP_GPA_RANGE})"));
        }
        VmType::Snp => {
            call("/dev/kvm", "KVM_CREATE_VM", format!("type {KVM_X86_SNP_VM} (KVM_X86_SNP_VM)"));
            call(
                "vm",
                "KVM_MEMORY_ENCRYPT_OP",
                "{id KVM_SEV_INIT2, data &kvm_sev_init {vmsa_features 0, ghcb_version 2}, sev_fd /dev/sev}".into(),
            );
            call("vm", "KVM_ENABLE_CAP", format!("KVM_CAP_EXIT_HYPERCALL ({KVM_CAP_EXIT_HYPERCALL}), args[0] 1 << KVM_HC_MAP_GPA_RANGE ({KVM_HC_MAP_GPA_RANGE})"));
        }
        _ => return None,
    }
    // The shim's image: one guest_memfd for its private regions, the harness slot's shared
    // pages (commands and results) from userspace memory; then the sequence's files and slots.
    let image = BOOT_SIZE + HARNESS_SIZE;
    call("vm", "KVM_CREATE_GUEST_MEMFD", format!("{{size {image:#x}, flags 0}} -> image"));
    call("vm", "KVM_SET_USER_MEMORY_REGION2", format!("{{slot {BOOT_SLOT}, flags KVM_MEM_GUEST_MEMFD, gpa {BOOT_GPA:#x}, size {BOOT_SIZE:#x}, guest_memfd image, offset 0}}"));
    call("vm", "KVM_SET_USER_MEMORY_REGION2", format!("{{slot {HARNESS_SLOT}, flags KVM_MEM_GUEST_MEMFD, gpa {HARNESS_GPA:#x}, size {HARNESS_SIZE:#x}, userspace_addr the command pages, guest_memfd image, offset {BOOT_SIZE:#x}}}"));
    for g in &h.gmems {
        call("vm", "KVM_CREATE_GUEST_MEMFD", format!("{{size {:#x}, flags 0}} -> {}", g.size, g.name));
    }
    for s in &h.slots {
        let (flags, gm) = match &s.gmem {
            Some(b) => ("KVM_MEM_GUEST_MEMFD", format!(", guest_memfd {}, offset {:#x}", b.gmem, b.offset)),
            None => ("0", String::new()),
        };
        call(
            "vm",
            "KVM_SET_USER_MEMORY_REGION2",
            format!("{{slot {}, flags {flags}, gpa {:#x}, size {:#x}{gm}}}", s.id, s.gpa, s.size),
        );
    }
    for (what, gpa, size) in IMAGE_PRIVATE {
        call(
            "vm",
            "KVM_SET_MEMORY_ATTRIBUTES",
            format!("{{address {gpa:#x}, size {size:#x}, attributes PRIVATE}} ({what})"),
        );
    }
    for i in 0..h.vcpus {
        let vcpu = format!("vcpu{i}");
        call("vm", "KVM_CREATE_VCPU", format!("{i}"));
        match h.vm {
            VmType::Tdx => {
                call(&vcpu, "KVM_MEMORY_ENCRYPT_OP", enc("KVM_TDX_GET_CPUID", "&kvm_cpuid2"));
                call(&vcpu, "KVM_SET_CPUID2", "the CPUID KVM_TDX_GET_CPUID returned".into());
                call(&vcpu, "KVM_MEMORY_ENCRYPT_OP", enc("KVM_TDX_INIT_VCPU", "0 (initial RCX)"));
            }
            _ => {
                call(&vcpu, "KVM_SET_CPUID2", "KVM_GET_SUPPORTED_CPUID".into());
                // SNP guest state is set with the ordinary register ioctls before LAUNCH_FINISH:
                // the shim starts in 64-bit mode.
                call(
                    &vcpu,
                    "KVM_SET_SREGS",
                    format!("64-bit mode: CR0.PG|PE, CR4.PAE, EFER.LME|LMA, CR3 {BOOT_PML4:#x} (the image's PML4, C-bit in its private entries)"),
                );
                call(&vcpu, "KVM_SET_REGS", format!("{{rip {:#x}, r9 {i} (the vCPU index)}}", HARNESS_GPA + CODE_OFF));
            }
        }
    }
    match h.vm {
        VmType::Tdx => {
            for (what, gpa, size) in IMAGE_PRIVATE {
                call(
                    "vcpu0",
                    "KVM_MEMORY_ENCRYPT_OP",
                    format!(
                        "{{id KVM_TDX_INIT_MEM_REGION, flags KVM_TDX_MEASURE_MEMORY_REGION, data &{{source the image's {what}, gpa {gpa:#x}, nr_pages {}}}}}",
                        size / PAGE
                    ),
                );
            }
        }
        _ => {
            call(
                "vm",
                "KVM_MEMORY_ENCRYPT_OP",
                "{id KVM_SEV_SNP_LAUNCH_START, data &{policy 0x30000}, sev_fd /dev/sev}".into(),
            );
            for (what, gpa, size) in IMAGE_PRIVATE {
                call(
                    "vm",
                    "KVM_MEMORY_ENCRYPT_OP",
                    format!("{{id KVM_SEV_SNP_LAUNCH_UPDATE, data &{{gfn_start {:#x}, uaddr the image's {what}, len {size:#x}, type NORMAL}}, sev_fd /dev/sev}}", gpa / PAGE),
                );
            }
        }
    }
    // `finalize` in the sequence is where the build ends; without one the guest stays in its
    // build (its guest ops are KVM_RUN's EINVAL, as the model has them).
    Some(v)
}

/// The plan as text: one line per ioctl, with its number.
pub fn plan_text(seq: &Sequence) -> Option<String> {
    let mut o = String::new();
    for (i, c) in plan(seq)?.iter().enumerate() {
        let nr = IOCTLS.iter().find(|(n, _)| *n == c.ioctl).map(|(_, v)| *v).unwrap_or(0);
        let _ = writeln!(o, "{:2}. {:9} {} ({nr:#x}) {}", i + 1, c.fd, c.ioctl, c.arg);
    }
    Some(o)
}
