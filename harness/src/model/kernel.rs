//! The kernel axis: every rule of the model that differs between the named kernels
//! ([`Kernel`]), in one table. Each rule names the function it follows and the release it
//! changed in; the model asks [`Model::rule`], never a version number. Checked against
//! Debian's 6.12.117 and 7.3.4 sources and against this host's 6.18 where it could run the
//! case; `next` is taken to hold everything 7.3 does.

use super::Model;
use crate::seq::{Header, Kernel, VmType};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// `GUEST_MEMFD_FLAG_MMAP` and `GUEST_MEMFD_FLAG_INIT_SHARED` are accepted by
    /// KVM_CREATE_GUEST_MEMFD (`kvm_gmem_get_supported_flags()`); before, flags must be 0.
    GmemMmapFlags,
    /// A VM without private memory (the default VM type) may have guest_memfd slots
    /// (`kvm_arch_supports_gmem()`); 6.12's `check_memory_region_flags()` allows
    /// `KVM_MEM_GUEST_MEMFD` only where `kvm_arch_has_private_mem()`.
    GmemOnDefaultVm,
    /// `KVM_X86_TDX_VM` exists (merged in 6.16, `vmx/tdx.c`).
    TdxVm,
    /// Binding a guest_memfd range another slot holds is EEXIST
    /// (`kvm_gmem_commit_memory_region()`); until 6.18 `kvm_gmem_bind()` made it EINVAL.
    GmemRebindEexist,
    /// `KVM_TDX_INIT_MEM_REGION` over a page already added fails with EIO: `kvm_gmem_populate()`
    /// no longer refuses an up-to-date folio (EEXIST until 6.18), and the map in
    /// `kvm_tdp_mmu_map_private_pfn()` comes back spurious, which it turns into EIO.
    InitMemAddedEio,
}

pub struct RuleInfo {
    pub rule: Rule,
    pub name: &'static str,
    /// The first kernel the rule holds on; it holds on every later one.
    pub since: Kernel,
    pub source: &'static str,
}

pub const RULES: [RuleInfo; 5] = [
    RuleInfo {
        rule: Rule::GmemMmapFlags,
        name: "gmem-mmap-flags",
        since: Kernel::V6_18,
        source: "virt/kvm/guest_memfd.c kvm_gmem_get_supported_flags()",
    },
    RuleInfo {
        rule: Rule::GmemOnDefaultVm,
        name: "gmem-on-default-vm",
        since: Kernel::V6_18,
        source: "virt/kvm/kvm_main.c check_memory_region_flags(), kvm_arch_supports_gmem()",
    },
    RuleInfo { rule: Rule::TdxVm, name: "tdx-vm", since: Kernel::V6_18, source: "arch/x86/kvm/vmx/tdx.c (6.16)" },
    RuleInfo {
        rule: Rule::GmemRebindEexist,
        name: "gmem-rebind-eexist",
        since: Kernel::V7_3,
        source: "virt/kvm/guest_memfd.c kvm_gmem_commit_memory_region()",
    },
    RuleInfo {
        rule: Rule::InitMemAddedEio,
        name: "init-mem-added-eio",
        since: Kernel::V7_3,
        source: "virt/kvm/guest_memfd.c kvm_gmem_populate(), arch/x86/kvm/mmu/mmu.c kvm_tdp_mmu_map_private_pfn()",
    },
];

impl Rule {
    pub fn info(self) -> &'static RuleInfo {
        RULES.iter().find(|r| r.rule == self).expect("every rule has a row")
    }
    pub fn holds(self, k: Kernel) -> bool {
        k >= self.info().since
    }
}

/// Whether a sequence's header can be set up on kernel `k` at all (its VM type and its
/// guest_memfd flags exist there); the error says what `k` refuses. Whether the sequence
/// names `k` is [`crate::seq::Header::names_kernel`].
pub fn header_allows(h: &Header, k: Kernel) -> Result<(), String> {
    if h.vm == VmType::Tdx && !Rule::TdxVm.holds(k) {
        return Err(format!("vm tdx: Linux {} has no KVM_X86_TDX_VM (KVM_CREATE_VM fails with EINVAL)", k.name()));
    }
    if let Some(g) = h.gmems.iter().find(|g| g.mmap || g.init_shared) {
        if !Rule::GmemMmapFlags.holds(k) {
            return Err(format!(
                "gmem {}: Linux {} takes no guest_memfd flags (KVM_CREATE_GUEST_MEMFD fails with EINVAL)",
                g.name,
                k.name()
            ));
        }
    }
    if !h.vm.has_private_mem() && !Rule::GmemOnDefaultVm.holds(k) {
        if let Some(s) = h.slots.iter().find(|s| s.gmem.is_some()) {
            return Err(format!(
                "slot {}: Linux {} has no guest_memfd slots on vm {} (EINVAL)",
                s.id,
                k.name(),
                h.vm.name()
            ));
        }
    }
    Ok(())
}

/// The kernels a sequence holds on: those it names (all when it names none) whose KVM can set
/// its header up.
pub fn kernels_for(h: &Header) -> Vec<Kernel> {
    Kernel::ALL.into_iter().filter(|&k| h.names_kernel(k) && header_allows(h, k).is_ok()).collect()
}

impl Model {
    /// Whether `r` holds on the kernel the model runs as.
    pub fn rule(&self, r: Rule) -> bool {
        r.holds(self.kernel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_has_one_row_and_a_source() {
        for (i, r) in RULES.iter().enumerate() {
            assert_eq!(r.rule.info().name, r.name);
            assert!(!r.source.is_empty());
            assert!(RULES[i + 1..].iter().all(|o| o.rule != r.rule && o.name != r.name));
            assert!(!r.rule.holds(Kernel::V6_12) || r.since == Kernel::V6_12);
            assert!(r.rule.holds(Kernel::Next));
        }
    }
}
