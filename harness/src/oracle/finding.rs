//! Findings: what a run found, with a signature that deduplicates them (finding kind, op kind,
//! the state that broke) and stays the same when the sequence is shrunk or replayed.

use crate::model::{Violation, ViolationKind};
use crate::seq::OpKind;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    /// The model broke one of its own rules (SPEC.md §9).
    Invariant,
    /// A guest op that never finishes.
    Livelock,
    /// An accepted page lost its value with no guest-visible event.
    SilentDataLoss,
    /// An `=>` or `expect` in the sequence did not hold.
    Expectation,
    /// A real backend did something the model does not allow.
    Divergence,
    /// Two variants gave different guest-visible outcomes.
    VariantDiff,
    /// A guest that did not return in time.
    Timeout,
    /// The header could not be set up.
    Setup,
}

impl FindingKind {
    pub fn name(self) -> &'static str {
        match self {
            FindingKind::Invariant => "invariant",
            FindingKind::Livelock => "livelock",
            FindingKind::SilentDataLoss => "silent-data-loss",
            FindingKind::Expectation => "expectation",
            FindingKind::Divergence => "divergence",
            FindingKind::VariantDiff => "variant-diff",
            FindingKind::Timeout => "timeout",
            FindingKind::Setup => "setup",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    /// Index of the step (0-based, ops only) where it showed.
    pub step: Option<usize>,
    pub op: Option<OpKind>,
    /// The state that broke: an invariant's name, an outcome pair, ...
    pub state: String,
    pub detail: String,
}

impl Finding {
    pub fn signature(&self) -> String {
        format!("{}:{}:{}", self.kind.name(), self.op.map(|o| o.name()).unwrap_or("-"), self.state)
    }

    pub fn from_violation(v: Violation, step: usize, op: OpKind) -> Finding {
        let (kind, state) = match v.kind {
            ViolationKind::Invariant(name) => (FindingKind::Invariant, name.to_string()),
            ViolationKind::Livelock => (FindingKind::Livelock, "no-progress".to_string()),
            ViolationKind::SilentDataLoss => (FindingKind::SilentDataLoss, "accepted-page-lost".to_string()),
        };
        Finding { kind, step: Some(step), op: Some(op), state, detail: v.detail }
    }

    /// Hazards a sequence may document with an expectation (`=> livelock`, `=> ve`): when the
    /// step's expectation holds, such a finding is the documented behaviour, not news.
    pub fn is_hazard(&self) -> bool {
        matches!(self.kind, FindingKind::Livelock | FindingKind::SilentDataLoss)
    }
}
