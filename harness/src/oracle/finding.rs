//! Findings: what a run found, with a signature that deduplicates them (finding kind, op kind,
//! the state that broke) and stays the same when the sequence is shrunk or replayed.

pub use super::signature::Signature;
use crate::model::{Violation, ViolationKind};
use crate::seq::{Header, OpKind};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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
    /// The model's kernel reached a KVM_BUG_ON or WARN of its own (a posting's documented
    /// choice, e.g. huge-v2 on an interrupted DEMOTE).
    KvmBug,
    /// Ops that ran at the same time gave what no serialization of them gives on the model,
    /// or left a mapping no serialization allows.
    Race,
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
            FindingKind::KvmBug => "kvm-bug",
            FindingKind::Race => "race",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub kind: FindingKind,
    /// Index of the step (0-based, ops only) where it showed; written 1-based, as a person
    /// counts the steps (and as the detail text and `replay` say them).
    #[serde(serialize_with = "one_based", deserialize_with = "from_one_based")]
    pub step: Option<usize>,
    pub op: Option<OpKind>,
    /// The state that broke: an invariant's name, an outcome pair, ...
    pub state: String,
    pub detail: String,
    /// The VM type, variant and options the finding arose under (`tdx/huge-v3+promote`), so
    /// that a new bug under one configuration never hides behind a documented hazard of another.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub context: String,
}

fn one_based<S: serde::Serializer>(step: &Option<usize>, s: S) -> Result<S::Ok, S::Error> {
    match step {
        Some(i) => s.serialize_some(&(i + 1)),
        None => s.serialize_none(),
    }
}

fn from_one_based<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    Ok(Option::<usize>::deserialize(d)?.map(|n| n.saturating_sub(1)))
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

/// Whether a signature a person recorded (a known divergence, `--ignore`) covers `actual`
/// ([`Signature::covers`]); text that is no signature covers nothing.
pub fn signature_covers(recorded: &str, actual: &str) -> bool {
    match (recorded.parse::<Signature>(), actual.parse::<Signature>()) {
        (Ok(r), Ok(a)) => r.covers(&a),
        _ => false,
    }
}

impl Finding {
    /// `kind:op:state@context`; the context is left out where it is not known.
    pub fn sig(&self) -> Signature {
        Signature {
            kind: self.kind.name().into(),
            op: self.op.map(|o| o.name()).unwrap_or("-").into(),
            state: self.state.clone(),
            context: (!self.context.is_empty()).then(|| self.context.clone()),
        }
    }

    /// [`Finding::sig`] as text.
    pub fn signature(&self) -> String {
        self.sig().to_string()
    }

    pub fn from_violation(v: Violation, step: usize, op: OpKind) -> Finding {
        let (kind, state) = match v.kind {
            ViolationKind::Invariant(name) => (FindingKind::Invariant, name.to_string()),
            ViolationKind::Livelock => (FindingKind::Livelock, "no-progress".to_string()),
            ViolationKind::SilentDataLoss => (FindingKind::SilentDataLoss, "accepted-page-lost".to_string()),
            ViolationKind::KvmBug(name) => (FindingKind::KvmBug, name.to_string()),
        };
        Finding { kind, step: Some(step), op: Some(op), state, detail: v.detail, context: String::new() }
    }

    /// Hazards a sequence may document with an expectation (`=> livelock`, `=> ve`, the
    /// `err EIO` of a KVM_BUG_ON): when the step's expectation holds, such a finding is the
    /// documented behaviour, not news.
    pub fn is_hazard(&self) -> bool {
        matches!(self.kind, FindingKind::Livelock | FindingKind::SilentDataLoss | FindingKind::KvmBug)
    }
}
