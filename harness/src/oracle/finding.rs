//! Findings: what a run found, with a signature that deduplicates them (finding kind, op kind,
//! the state that broke) and stays the same when the sequence is shrunk or replayed.

use crate::model::{Violation, ViolationKind};
use crate::seq::{Header, OpKind};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    /// The model broke one of its own rules (docs/model.md §9).
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
    /// The kernel printed a WARNING, BUG, KASAN or lockdep report during a step.
    KernelSplat,
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
            FindingKind::KernelSplat => "kernel-splat",
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
    /// The VM type, variant and options the finding arose under (`tdx/huge-v3+promote`), so
    /// that a new bug under one configuration never hides behind a documented hazard of another.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub context: String,
}

/// The configuration part of a signature: `vm[/variant][+option...]`.
pub fn context_of(h: &Header) -> String {
    let mut s = h.vm.name().to_string();
    if let Some(v) = h.variant {
        s += "/";
        s += v.name();
    }
    for k in &h.options {
        s += "+";
        s += k.name();
    }
    s
}

/// Tag findings with the configuration they arose under.
pub fn set_context(findings: &mut [Finding], h: &Header) {
    let c = context_of(h);
    for f in findings {
        f.context.clone_from(&c);
    }
}

/// Whether a signature a person recorded (a known divergence, `--ignore`) covers `actual`: a
/// recorded signature without `@context` covers every configuration; a recorded prefix ending
/// in `:` covers every state under it.
pub fn signature_covers(recorded: &str, actual: &str) -> bool {
    let base = |s: &str| s.split_once('@').map(|(b, _)| b.to_string()).unwrap_or(s.to_string());
    let (r, a) = if recorded.contains('@') {
        (recorded.to_string(), actual.to_string())
    } else {
        (base(recorded), base(actual))
    };
    r == a || (r.ends_with(':') && a.starts_with(&r))
}

impl Finding {
    /// `kind:op:state@context`; the context is left out where it is not known.
    pub fn signature(&self) -> String {
        let base = format!("{}:{}:{}", self.kind.name(), self.op.map(|o| o.name()).unwrap_or("-"), self.state);
        if self.context.is_empty() {
            base
        } else {
            format!("{base}@{}", self.context)
        }
    }

    pub fn from_violation(v: Violation, step: usize, op: OpKind) -> Finding {
        let (kind, state) = match v.kind {
            ViolationKind::Invariant(name) => (FindingKind::Invariant, name.to_string()),
            ViolationKind::Livelock => (FindingKind::Livelock, "no-progress".to_string()),
            ViolationKind::SilentDataLoss => (FindingKind::SilentDataLoss, "accepted-page-lost".to_string()),
        };
        Finding { kind, step: Some(step), op: Some(op), state, detail: v.detail, context: String::new() }
    }

    /// Hazards a sequence may document with an expectation (`=> livelock`, `=> ve`): when the
    /// step's expectation holds, such a finding is the documented behaviour, not news.
    pub fn is_hazard(&self) -> bool {
        matches!(self.kind, FindingKind::Livelock | FindingKind::SilentDataLoss)
    }
}
