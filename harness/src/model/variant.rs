//! The KVM variants of docs/model.md §5 as answers to the questions every variant must answer. The
//! rest of the model asks these methods and never matches on the variant itself. Each answer
//! names the posting it follows (docs/model.md §5 has the table, with Message-IDs).

use crate::seq::{Header, Knob, Level, Variant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcceptRule {
    /// The accept level plays no part (upstream maps 4K anyway; or `ignore-accept-level`).
    Ignored,
    /// A fault carrying an accept level maps at most that level (huge-v1).
    PerFault,
    /// Global and one-way: TDX's EPT-violation handler, on an ACCEPT exit at 4K, splits the 2M
    /// range under the write lock and only then inhibits 2M there (v2 14/23, v3 13/24, v5
    /// 41/45), before the fault's own attribute and guest_memfd checks. The inner answer is
    /// what a failed split does.
    Inhibit(SplitFailed),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitFailed {
    /// `RET_PF_RETRY`: the guest's ACCEPT runs again (v2 14/23).
    Retry,
    /// The error goes to userspace from KVM_RUN (v3 13/24: "Return ret to userspace on error").
    ToUserspace,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultSplit {
    /// Never needed: nothing is mapped above 4K.
    Never,
    /// The split is ignored and the fault retried (huge-v1): can loop forever (H1).
    Ignore,
    /// A split under the shared mmu_lock on the mirror root is refused with a WARN and the fault
    /// retried (v2 11/23: `WARN_ON_ONCE(mmu_lock_shared)`, `-EOPNOTSUPP` inside
    /// `kvm_tdp_mmu_map()`, which retries); nothing reaches userspace.
    WarnRetry,
    /// KVM_BUG_ON: the VM is dead (huge-v5).
    Bug,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DemoteRetry {
    /// INTERRUPTED_RESTARTABLE is retried until it succeeds (huge-v1).
    Forever,
    /// Any error but BUSY is a KVM_BUG_ON: the VM is dead (v2 10/23 "Use KVM_BUG_ON() for any
    /// other unexpected errors"; v5 44/45 `TDX_BUG_ON_2(err, TDH_MEM_PAGE_DEMOTE, ...)`).
    Bug,
}

/// How a path that zaps private memory treats the huge leaves straddling its range's ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZapSplit {
    /// No split: leaves overlapping the range go whole (memslot deletion, MTRR; upstream, where
    /// nothing private is huge; huge-v5's per-VM attributes, and its PUNCH_HOLE, where the
    /// split hook runs after the zap).
    Whole,
    /// Memslot piece by piece: split the piece's ends, zap it; an error stops with earlier pieces
    /// zapped while still PRIVATE (H2; KVM_SET_MEMORY_ATTRIBUTES in v1 to v3: v1 18/21, v3
    /// 15/24).
    PerPiece,

    /// Every piece's ends split before anything is zapped; an error zaps nothing (guest_memfd
    /// punch and conversion: v2 17/23 and v3 16/24 `kvm_gmem_split_private()`; v5 44/45's
    /// `kvm_arch_gmem_convert()` head and tail splits on the convert path).
    AllFirst,
}

/// The guest_memfd paths that zap private memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GmemPath {
    /// fallocate(PUNCH_HOLE).
    Punch,
    /// An in-place private-to-shared conversion (`option in-place-conversion`).
    Convert,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub variant: Variant,
    pub ignore_accept_level: bool,
    pub promote: bool,
    pub zap_private_on_mtrr: bool,
    /// The TDX module advertises ENHANCED_DEMOTE_INTERRUPTIBILITY.
    pub enhanced_demote: bool,
    pub sept_ve_disable: bool,
    /// guest_memfd keeps private/shared (`kvm.vm_memory_attributes=N`), as v3 was tested.
    pub in_place: bool,
    /// kvm_intel's `tdx_huge_page` parameter (v3 24/24, v5 45/45; default on).
    pub tdx_huge_page: bool,
}

impl Policy {
    pub fn new(h: &Header) -> Policy {
        Policy {
            variant: h.variant(),
            ignore_accept_level: h.has(Knob::IgnoreAcceptLevel),
            promote: h.has(Knob::Promote),
            zap_private_on_mtrr: h.has(Knob::ZapPrivateOnMtrr),
            enhanced_demote: !h.has(Knob::NoEnhancedDemote),
            sept_ve_disable: h.has(Knob::SeptVeDisable),
            in_place: h.has(Knob::InPlaceConversion),
            tdx_huge_page: !h.has(Knob::NoTdxHugePage),
        }
    }

    /// The vendor hook's largest private mapping (`tdx_gmem_max_mapping_level()`).
    pub fn max_private_level(&self, runnable: bool) -> Level {
        if !runnable {
            return Level::L4K; // PAGE.ADD is 4K only; nothing larger during build.
        }
        match self.variant {
            Variant::Upstream => Level::L4K,
            Variant::HugeV1 | Variant::HugeV2 => Level::L2M,
            // Off unless the module demotes without interruption (v3 cover letter, "Enable TDX
            // huge pages only on new TDX modules"; v5 45/45 `__tdx_bringup()`), or by parameter.
            Variant::HugeV3 | Variant::HugeV5 if self.enhanced_demote && self.tdx_huge_page => Level::L2M,
            Variant::HugeV3 | Variant::HugeV5 => Level::L4K,
        }
    }

    pub fn accept_rule(&self) -> AcceptRule {
        match self.variant {
            Variant::Upstream => AcceptRule::Ignored,
            _ if self.ignore_accept_level => AcceptRule::Ignored,
            Variant::HugeV1 => AcceptRule::PerFault,
            Variant::HugeV3 if super::seeded::planted() == Some(super::seeded::SeededBug::HugeV3SplitIgnored) => {
                AcceptRule::Ignored
            }
            Variant::HugeV2 => AcceptRule::Inhibit(SplitFailed::Retry),
            Variant::HugeV3 | Variant::HugeV5 => AcceptRule::Inhibit(SplitFailed::ToUserspace),
        }
    }

    pub fn fault_split(&self) -> FaultSplit {
        match self.variant {
            Variant::Upstream => FaultSplit::Never,
            Variant::HugeV1 => FaultSplit::Ignore,
            // v3 09/24 keeps v2 11/23's refusal: `WARN_ON_ONCE(mmu_lock_shared)`,
            // `-EOPNOTSUPP`, the mirror SPTE restored and the fault retried.
            Variant::HugeV2 | Variant::HugeV3 => FaultSplit::WarnRetry,
            // v5 06/45: "KVM doesn't currently support zapping or splitting mirror SPTEs while
            // holding mmu_lock for read": KVM_BUG_ON, -EBUSY.
            Variant::HugeV5 => FaultSplit::Bug,
        }
    }

    /// Pre-fault and prefetch forced to 4K.
    pub fn prefault_4k(&self) -> bool {
        matches!(self.variant, Variant::Upstream | Variant::HugeV1)
    }

    /// KVM_SET_MEMORY_ATTRIBUTES going shared over huge private leaves.
    pub fn attr_split(&self) -> ZapSplit {
        match self.variant {
            Variant::Upstream => ZapSplit::Whole,
            Variant::HugeV1 | Variant::HugeV2 | Variant::HugeV3 => ZapSplit::PerPiece,
            // "just don't support S-EPT hugepages with per-VM memory attributes" (Sean on v3
            // 14/24): v5 has no split there.
            Variant::HugeV5 => ZapSplit::Whole,
        }
    }

    /// A guest_memfd path going shared (punch, in-place conversion) over huge private leaves.
    pub fn gmem_split(&self, path: GmemPath) -> ZapSplit {
        match (self.variant, path) {
            (Variant::Upstream, _) => ZapSplit::Whole,
            // v1 19/21 splits and zaps binding by binding. As posted it also drops the split's
            // error (`goto out` ... `return 0`), which would leave pages mapped that the punch
            // then frees; the model returns the error instead (docs/model.md §5).
            (Variant::HugeV1, _) => ZapSplit::PerPiece,
            (Variant::HugeV2 | Variant::HugeV3, _) => ZapSplit::AllFirst,
            // 43/45 wires its pre-zap hook into PUNCH_HOLE "for demonstration purposes" after
            // `kvm_gmem_invalidate_begin()` has zapped: straddling leaves go whole, and the
            // hook's splits then find nothing to split (so nothing to fail).
            (Variant::HugeV5, GmemPath::Punch) => ZapSplit::Whole,
            (Variant::HugeV5, GmemPath::Convert) => ZapSplit::AllFirst,
        }
    }

    pub fn demote_retry(&self) -> DemoteRetry {
        match self.variant {
            Variant::HugeV1 => DemoteRetry::Forever,
            _ => DemoteRetry::Bug,
        }
    }

    /// Dynamic PAMT: a split also tops up a PAMT page cache (the vCPU's, or without a vCPU the
    /// per-VM one under its mutex: v5 44/45), a second allocation that can fail before any
    /// S-EPT change (`inject pamt-oom`).
    pub fn dynamic_pamt(&self) -> bool {
        self.variant == Variant::HugeV5
    }
}
