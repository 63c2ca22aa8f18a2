//! Oracles: run a sequence and turn what happened into findings — the model's own invariants,
//! livelock, silent data loss, expectations, variant comparison and (with a real backend)
//! divergence.

pub mod compare;
pub mod diff;
pub mod finding;
pub mod progress;
pub mod race;
pub mod run;
pub mod signature;
pub mod step;

pub use finding::{Finding, FindingKind};
pub use run::{run_model, Trace};

/// A real-kernel finding's reproducer with every op's expected outcome written in: the model's,
/// run as the kernel the finding came from (`kernel`). Where the kernel agreed that is what it
/// did; at the step where it diverged it is what the model allows, so the reproducer (its
/// replay with `--backend kvm`, its C) fails on the kernel that diverged and passes where the
/// kernel is fixed. The header keeps its kernels: the case still holds wherever it did.
pub fn with_model_expectations(
    seq: &crate::seq::Sequence,
    kernel: Option<crate::seq::Release>,
) -> crate::seq::Sequence {
    let mut as_kernel = seq.clone();
    if let Some(k) = kernel {
        as_kernel.header.set_kernel(k);
    }
    let t = run_model(&as_kernel);
    let mut out = seq.clone();
    let grouped: Vec<bool> = (0..seq.steps.len()).map(|k| seq.group_at(k).len() > 1 || seq.steps[k].together).collect();
    for ((st, o), grouped) in out.steps.iter_mut().zip(t.outcomes).zip(grouped) {
        // A concurrent group's outcomes are the race oracle's to judge: program order is one
        // serialization among several.
        if !st.op.kind().is_check() && !grouped {
            st.expect = Some(o);
        }
    }
    out
}
