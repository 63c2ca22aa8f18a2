//! `privmem caps`: what the host's KVM offers, in words and as JSON.

use crate::backend::raw;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Caps {
    pub kvm: bool,
    pub api_version: i32,
    /// KVM_CAP_VM_TYPES mask (bit n = VM type n); 1 (default only) if the cap is missing.
    pub vm_types: u32,
    pub user_memory2: bool,
    pub memory_fault_info: bool,
    pub guest_memfd: bool,
    /// KVM_CAP_GUEST_MEMFD_FLAGS for a default VM: MMAP 1<<0, INIT_SHARED 1<<1.
    pub guest_memfd_flags: u64,
    /// KVM_CAP_MEMORY_ATTRIBUTES (PRIVATE = 1<<3), asked of a SW_PROTECTED VM where the host
    /// has them (a default VM has no private memory, so no PRIVATE attribute).
    pub memory_attributes: u64,
    pub pre_fault_memory: bool,
    /// KVM_CAP_DISABLE_QUIRKS2: the quirks userspace may disable (SLOT_ZAP_ALL is 1<<7).
    pub quirks2: u64,
    /// The kernel's mapping view the KVM backend reads (tracefs kvmmmu events), in words.
    pub view: String,
    pub sw_protected: bool,
    pub snp: bool,
    pub tdx: bool,
    /// KVM_CAP_MULTI_ADDRESS_SPACE of a default VM: memslot address spaces (2 with KVM_SMM).
    pub address_spaces: u16,
    /// What this host lacks for TDX and for SEV-SNP VMs, piece by piece (empty where the VM
    /// type is offered).
    pub missing_tdx: Vec<String>,
    pub missing_snp: Vec<String>,
    /// `uname -r`, and the release the model runs as here (None: older than every rule, or
    /// not a release at all); `drift` where that release is past what the table knows.
    pub release: String,
    pub kernel: Option<crate::seq::Release>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<String>,
    pub error: Option<String>,
}

/// Each piece a TDX or SNP VM needs that this host does not show: the CPU feature, the KVM
/// module parameter, the firmware (the TDX module; the SEV firmware behind `/dev/sev`).
fn missing_cvm_pieces(tdx: bool, snp: bool) -> (Vec<String>, Vec<String>) {
    let flags = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("flags")).map(|l| l.to_string()))
        .unwrap_or_default();
    let has_flag = |f: &str| flags.split_whitespace().any(|x| x == f);
    let param = |m: &str, p: &str| {
        std::fs::read_to_string(format!("/sys/module/{m}/parameters/{p}")).ok().map(|v| v.trim().to_string())
    };
    let mut t = Vec::new();
    if !tdx {
        if !has_flag("tdx_host_platform") {
            t.push("an Intel CPU with TDX enabled by the BIOS (/proc/cpuinfo flag tdx_host_platform)".into());
        }
        match param("kvm_intel", "tdx") {
            None => t.push("kvm_intel with TDX support loaded (/sys/module/kvm_intel/parameters/tdx missing)".into()),
            Some(v) if v != "Y" => t.push(format!("kvm_intel.tdx=Y (it is {v})")),
            Some(_) => {}
        }
        t.push("the TDX module, loaded and initialized by the kernel (dmesg: virt/tdx)".into());
    }
    let mut s = Vec::new();
    if !snp {
        if !has_flag("sev_snp") {
            s.push("an AMD CPU with SEV-SNP enabled (/proc/cpuinfo flag sev_snp)".into());
        }
        match param("kvm_amd", "sev_snp") {
            None => {
                s.push("kvm_amd with SEV-SNP support loaded (/sys/module/kvm_amd/parameters/sev_snp missing)".into())
            }
            Some(v) if v != "Y" && v != "1" => s.push(format!("kvm_amd.sev_snp=Y (it is {v})")),
            Some(_) => {}
        }
        if !std::path::Path::new("/dev/sev").exists() {
            s.push("/dev/sev (the ccp driver and the SEV firmware)".into());
        }
    }
    (t, s)
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
}

impl Caps {
    /// What a lab kernel must offer for the lab's corpus and campaigns: SW_PROTECTED VMs and
    /// private memory attributes (empty when it has both).
    /// What the lab needs of its kernel: SW_PROTECTED with private attributes, or (`--tdx`)
    /// the TDX VM type on the software module.
    pub fn missing_for_lab(&self, tdx: bool) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if tdx {
            if !self.tdx {
                missing.push("VM type 5 (KVM_X86_TDX_VM) in KVM_CAP_VM_TYPES (the tdx_soft boot mode: dmesg virt/tdx, kvm_intel)");
            }
            return missing;
        }
        if !self.sw_protected {
            missing.push("VM type 1 (KVM_X86_SW_PROTECTED_VM) in KVM_CAP_VM_TYPES");
        }
        if self.memory_attributes & u64::from(kvm_bindings::KVM_MEMORY_ATTRIBUTE_PRIVATE) == 0 {
            missing.push("KVM_MEMORY_ATTRIBUTE_PRIVATE in KVM_CAP_MEMORY_ATTRIBUTES");
        }
        missing
    }

    /// What this host lacks to run a VM of type `vm`, in words; None where it can.
    pub fn missing_for(&self, vm: crate::seq::VmType) -> Option<String> {
        use crate::seq::VmType;
        let pieces = |v: &[String], cap: &str| match v.is_empty() {
            true => cap.to_string(),
            false => format!("{cap}: {}", v.join("; ")),
        };
        match vm {
            _ if !self.kvm => Some(self.error.clone().unwrap_or("no /dev/kvm".into())),
            VmType::Default => None,
            VmType::SwProtected if self.sw_protected => None,
            VmType::SwProtected => {
                Some("KVM_X86_SW_PROTECTED_VM in KVM_CAP_VM_TYPES (CONFIG_KVM_SW_PROTECTED_VM)".into())
            }
            VmType::Tdx if self.tdx => None,
            VmType::Tdx => Some(pieces(&self.missing_tdx, "KVM_X86_TDX_VM in KVM_CAP_VM_TYPES")),
            VmType::Snp if self.snp => None,
            VmType::Snp => Some(pieces(&self.missing_snp, "KVM_X86_SNP_VM in KVM_CAP_VM_TYPES")),
        }
    }

    pub fn probe() -> Caps {
        let release = kernel_release();
        // Releases older than every rule's line are not modelled at all.
        let m = crate::seq::Release::from_uname(&release)
            .filter(|r| *r >= crate::seq::Kernel::V6_12.first())
            .map(crate::model::kernel::modelled);
        let mut c = Caps {
            kernel: m.as_ref().map(|m| m.release),
            drift: m.and_then(|m| m.drift),
            release,
            ..Default::default()
        };
        let kvm = match kvm_ioctls::Kvm::new() {
            Ok(k) => k,
            Err(e) => {
                c.error = Some(format!("/dev/kvm: {e}"));
                return c;
            }
        };
        c.kvm = true;
        c.api_version = kvm.get_api_version();
        let cap = |n: u32| kvm.check_extension_raw(n as _);
        let types = cap(raw::KVM_CAP_VM_TYPES);
        c.vm_types = if types > 0 { types as u32 } else { 1 };
        c.user_memory2 = cap(raw::KVM_CAP_USER_MEMORY2) > 0;
        c.memory_fault_info = cap(raw::KVM_CAP_MEMORY_FAULT_INFO) > 0;
        c.guest_memfd = cap(raw::KVM_CAP_GUEST_MEMFD) > 0;
        c.pre_fault_memory = cap(raw::KVM_CAP_PRE_FAULT_MEMORY) > 0;
        c.quirks2 = cap(kvm_bindings::KVM_CAP_DISABLE_QUIRKS2).max(0) as u64;
        c.view = match crate::backend::kvm::trace::TraceView::open(Some(0)) {
            Ok(v) => format!(
                "tracefs kvmmmu events, {} MMU",
                if v.mmu == crate::backend::view::Mmu::Tdp { "TDP" } else { "shadow" }
            ),
            Err(e) => format!("none ({e}); page counters at expect steps only"),
        };
        // Asked of /dev/kvm, KVM answers for VMs that can have private memory.
        let system_attrs = cap(raw::KVM_CAP_MEMORY_ATTRIBUTES).max(0) as u64;
        c.sw_protected = c.vm_types & (1 << 1) != 0;
        c.snp = c.vm_types & (1 << 4) != 0;
        c.tdx = c.vm_types & (1 << 5) != 0;
        (c.missing_tdx, c.missing_snp) = missing_cvm_pieces(c.tdx, c.snp);
        // Per-VM answers come from a default VM.
        if let Ok(vm) = kvm.create_vm_with_type(0) {
            c.guest_memfd_flags = vm.check_extension_raw(raw::KVM_CAP_GUEST_MEMFD_FLAGS as _).max(0) as u64;
            c.memory_attributes = vm.check_extension_raw(raw::KVM_CAP_MEMORY_ATTRIBUTES as _).max(0) as u64;
            c.pre_fault_memory |= vm.check_extension_raw(raw::KVM_CAP_PRE_FAULT_MEMORY as _) > 0;
            c.address_spaces = vm.check_extension_raw(kvm_bindings::KVM_CAP_MULTI_ADDRESS_SPACE as _).max(1) as u16;
        }
        if c.sw_protected {
            match kvm.create_vm_with_type(1) {
                Ok(vm) => {
                    c.memory_attributes |= vm.check_extension_raw(raw::KVM_CAP_MEMORY_ATTRIBUTES as _).max(0) as u64
                }
                Err(_) => c.memory_attributes |= system_attrs,
            }
        }
        c
    }

    pub fn words(&self) -> String {
        if !self.kvm {
            return format!("no KVM: {}\n", self.error.clone().unwrap_or_default());
        }
        let yn = |b: bool| if b { "yes" } else { "no" };
        let mut types = vec!["default"];
        for (bit, n) in [(1, "sw-protected"), (2, "sev"), (3, "sev-es"), (4, "snp"), (5, "tdx")] {
            if self.vm_types & (1 << bit) != 0 {
                types.push(n);
            }
        }
        let mut flags = Vec::new();
        if self.guest_memfd_flags & 1 != 0 {
            flags.push("MMAP");
        }
        if self.guest_memfd_flags & 2 != 0 {
            flags.push("INIT_SHARED");
        }
        let kernel = match self.kernel {
            Some(k) => format!(
                "Linux {}, modelled as {k}{}",
                self.release,
                self.drift.as_deref().map(|d| format!(" ({d})")).unwrap_or_default()
            ),
            None => format!("Linux {}, older than every modelled kernel", self.release),
        };
        format!(
            "kernel: {kernel}\nKVM API version {}\nVM types: {}\nKVM_SET_USER_MEMORY_REGION2: {}\nguest_memfd: {} (flags: {})\n\
             memory attributes: {}\nmemory fault info: {}\npre-fault memory: {}\nTDX: {}\nSEV-SNP: {}\n\
             disable SLOT_ZAP_ALL quirk: {}\nmapping view: {}\n",
            self.api_version,
            types.join(", "),
            yn(self.user_memory2),
            yn(self.guest_memfd),
            if flags.is_empty() { "none".to_string() } else { flags.join("|") },
            if self.memory_attributes & (1 << 3) != 0 { "PRIVATE" } else { "none" },
            yn(self.memory_fault_info),
            yn(self.pre_fault_memory),
            if self.tdx { "yes".to_string() } else { format!("no; missing: {}", self.missing_tdx.join("; ")) },
            if self.snp { "yes".to_string() } else { format!("no; missing: {}", self.missing_snp.join("; ")) },
            yn(self.quirks2 & kvm_bindings::KVM_X86_QUIRK_SLOT_ZAP_ALL as u64 != 0),
            self.view,
        )
    }
}
