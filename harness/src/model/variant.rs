//! The KVM variants of docs/model.md §5 as answers to the questions every variant must answer. The
//! rest of the model asks these methods and never matches on the variant itself.

use crate::seq::{Header, Knob, Level, Variant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcceptRule {
    /// The accept level plays no part (upstream maps 4K anyway; or `ignore-accept-level`).
    Ignored,
    /// A fault carrying an accept level maps at most that level (huge-v1).
    PerFault,
    /// Global and one-way: after a 4K accept, 2M is inhibited for that range (huge-v2/v3).
    Inhibit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultSplit {
    /// Never needed: nothing is mapped above 4K.
    Never,
    /// The split is ignored and the fault retried (huge-v1): can loop forever (H1).
    Ignore,
    /// Refused with -EOPNOTSUPP to userspace (huge-v2).
    Refuse,
    /// Done under the write lock; errors go to userspace (huge-v3).
    WriteLock,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DemoteRetry {
    /// INTERRUPTED_RESTARTABLE is retried until it succeeds (huge-v1).
    Forever,
    /// Not retried: the split fails (huge-v2).
    No,
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
        }
    }

    /// The vendor hook's largest private mapping.
    pub fn max_private_level(&self, runnable: bool) -> Level {
        if !runnable {
            return Level::L4K; // PAGE.ADD is 4K only; nothing larger during build.
        }
        match self.variant {
            Variant::Upstream => Level::L4K,
            Variant::HugeV1 | Variant::HugeV2 => Level::L2M,
            Variant::HugeV3 if self.enhanced_demote => Level::L2M,
            Variant::HugeV3 => Level::L4K,
        }
    }

    pub fn accept_rule(&self) -> AcceptRule {
        match self.variant {
            Variant::Upstream => AcceptRule::Ignored,
            _ if self.ignore_accept_level => AcceptRule::Ignored,
            Variant::HugeV1 => AcceptRule::PerFault,
            Variant::HugeV2 | Variant::HugeV3 => AcceptRule::Inhibit,
        }
    }

    pub fn fault_split(&self) -> FaultSplit {
        match self.variant {
            Variant::Upstream => FaultSplit::Never,
            Variant::HugeV1 => FaultSplit::Ignore,
            Variant::HugeV2 => FaultSplit::Refuse,
            Variant::HugeV3 if super::seeded::planted() == Some(super::seeded::SeededBug::HugeV3SplitIgnored) => {
                FaultSplit::Ignore
            }
            Variant::HugeV3 => FaultSplit::WriteLock,
        }
    }

    /// Pre-fault and prefetch forced to 4K.
    pub fn prefault_4k(&self) -> bool {
        matches!(self.variant, Variant::Upstream | Variant::HugeV1)
    }

    /// Whether all splits of a conversion or punch happen before anything is zapped (huge-v3),
    /// rather than split-then-zap per memslot piece (huge-v1/v2, where ENOMEM leaves earlier
    /// pieces zapped: H2).
    pub fn split_all_first(&self) -> bool {
        self.variant == Variant::HugeV3
    }

    pub fn demote_retry(&self) -> DemoteRetry {
        match self.variant {
            Variant::HugeV1 => DemoteRetry::Forever,
            _ => DemoteRetry::No,
        }
    }
}
