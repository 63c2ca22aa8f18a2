//! Backends: the model and real KVM behind one trait, picked at run time. A backend runs a
//! sequence and reports what it observed per step; the differential oracle
//! ([`crate::oracle::diff`]) holds those observations to what the model allows.

pub mod caps;
pub mod emulated;
pub mod kvm;
pub mod mem;
pub mod raw;
pub mod vcpu;
pub mod view;

use crate::oracle::run_model;
use crate::seq::{Outcome, Sequence};

/// What a backend saw at one step.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Observed {
    Outcome(Outcome),
    /// VM stats `pages_4k`, `pages_2m`, `pages_1g` at an `expect pages_*` step.
    Pages([u64; 3]),
    /// The step has no meaning on this backend (e.g. `expect sept` on real KVM): not checked.
    NotChecked,
    /// What KVM_GET_DIRTY_LOG reported: the slot's dirty pages, by offset in the slot.
    DirtyLog(Vec<u64>),
    /// The harness could not account for what it read (its own mappings in the page counters
    /// disagree with the kernel's mapping view): an error of the harness, not the kernel's.
    HarnessError(String),
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RealTrace {
    pub observed: Vec<Observed>,
    /// KVM_RUN returns taken, and guest ops run, for the batching figures.
    pub exits: u64,
    pub guest_ops: u64,
    /// The kernel's mapping view after each step, where the backend has one.
    pub views: Vec<Option<view::StepView>>,
    /// Steps whose view was lost (the kernel dropped trace events).
    pub views_lost: u64,
    /// What the backend made of the host memory behind the case's slots.
    pub host: crate::model::HostFacts,
    /// Kernel reports (WARNING, BUG, KASAN, lockdep) printed during a step, by step.
    pub splats: Vec<(usize, kvm::kmsg::Splat)>,
    /// The distinct kernel PCs the case ran (KCOV), where the backend has coverage.
    pub pcs: Vec<u64>,
    /// At a host op after `fail-nth`: whether the injected allocation failure fired.
    pub fault_fired: Vec<Option<bool>>,
    /// After a concurrent group, where the backend can tell: each leaf of a slot whose shared
    /// and private memory differ, by its first GFN, and whether its frame is the slot's shared
    /// (userspace) page. What the race oracle's "no private leaf for a shared GFN" reads.
    pub backing: Vec<Option<Vec<(u64, bool)>>>,
    /// After each step, where the TDX module can be read (the lab's software module): the
    /// case's S-EPT leaves as the module holds them.
    pub sept: Vec<Option<Vec<SeptLeaf>>>,
    /// Steps after which KVM's mirror root and the module's S-EPT disagreed (the lab's `--tdx`
    /// flavour, where both are seen), each with the first leaf they disagree on.
    pub mirror: Vec<(usize, MirrorMismatch)>,
    /// Leaves compared between the mirror root and the S-EPT (at least one a step compared).
    pub mirror_checks: u64,
    /// Guest ops of distinct vCPUs ran one after another, each to its end (the real TD runner),
    /// not interleaved attempt by attempt as the model runs a TD's.
    pub serial_guest_ops: bool,
}

/// One S-EPT leaf: its first GFN, level and state (as the module and the model number them).
pub type SeptLeaf = (u64, crate::seq::Level, crate::seq::SeptState);

/// A leaf KVM's mirror root (the kernel's mapping view) and the TDX module's S-EPT (the lab's
/// software module) disagree on after a step: the page each maps, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MirrorMismatch {
    pub gfn: u64,
    pub level: crate::seq::Level,
    pub kernel: Option<u64>,
    pub module: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunError {
    /// The host lacks what the sequence needs; names the capability. Not a finding.
    Unsupported(String),
    /// The guest did not return within the per-case timeout.
    Timeout { step: usize },
    /// The guest failed (shutdown, internal error, unexpected exit) at a step.
    Guest { step: usize, detail: String },
    /// Setting up the VM failed for a reason that is not the sequence's doing.
    Setup(String),
    /// An ioctl of the set-up failed: which, and the errno (kept as its number where it has no
    /// name). Not the sequence's doing either.
    Ioctl { ioctl: &'static str, errno: crate::seq::Errno },
}

impl RunError {
    /// An ioctl's failure, from the raw errno.
    pub fn ioctl(ioctl: &'static str, errno: i32) -> RunError {
        RunError::Ioctl { ioctl, errno: crate::seq::Errno::from_raw(errno) }
    }
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Unsupported(c) => write!(f, "unsupported by the host: {c}"),
            RunError::Timeout { step } => write!(f, "guest timed out at step {}", step + 1),
            RunError::Guest { step, detail } => {
                write!(f, "guest failed at step {}: {detail}", step + 1)
            }
            RunError::Setup(s) => write!(f, "setup failed: {s}"),
            RunError::Ioctl { ioctl, errno } => {
                write!(f, "setup failed: {ioctl}: {} (errno {})", errno.name(), errno.value())
            }
        }
    }
}

pub trait Backend {
    fn name(&self) -> &'static str;
    /// Why this backend cannot run `seq`, naming the missing capability; None if it can.
    fn unsupported(&self, seq: &Sequence) -> Option<String>;
    fn run(&mut self, seq: &Sequence) -> Result<RealTrace, RunError>;
    /// The kernel release this backend runs on, as the model runs it; None: the model runs
    /// as the sequence's header says.
    fn kernel(&self) -> Option<crate::seq::Release> {
        None
    }
    /// A generated case made runnable on this backend (dropping what the host lacks).
    fn adapt(&self, seq: &Sequence) -> Sequence {
        seq.clone()
    }
    /// Whether the ops of a concurrent group really overlap here (threads on a real kernel), so
    /// that repeating a case with other start offsets can show another interleaving.
    fn overlaps(&self) -> bool {
        false
    }
    /// How the next run releases its concurrent groups: start offsets drawn from `seed` for
    /// repetition `repetition` (see [`crate::oracle::race`]).
    fn release_as(&mut self, _seed: u64, _repetition: u32) {}
}

/// The model as a backend (what `--backend model` runs).
pub struct ModelBackend;

impl Backend for ModelBackend {
    fn name(&self) -> &'static str {
        "model"
    }
    fn unsupported(&self, _seq: &Sequence) -> Option<String> {
        None
    }
    fn run(&mut self, seq: &Sequence) -> Result<RealTrace, RunError> {
        let t = run_model(seq);
        Ok(RealTrace { observed: t.outcomes.into_iter().map(Observed::Outcome).collect(), ..Default::default() })
    }
}
