//! Oracles: run a sequence and turn what happened into findings — the model's own invariants,
//! livelock, silent data loss, expectations, variant comparison and (with a real backend)
//! divergence.

pub mod compare;
pub mod diff;
pub mod finding;
pub mod run;
pub mod signature;

pub use finding::{Finding, FindingKind};
pub use run::{run_model, Trace};
