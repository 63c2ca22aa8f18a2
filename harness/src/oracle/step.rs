//! One step on the model, and what a run records per step: the pieces the sequential runner
//! ([`super::run`]) and the race oracle ([`super::race`]) both drive.

use super::finding::{Finding, FindingKind};
use crate::model::dirty_log::DirtyReport;
use crate::model::stage2::Leaf;
use crate::model::HostFacts;
use crate::model::{Attempt, Model, LIVELOCK_EXITS};
use crate::seq::*;

#[derive(Clone, Debug, Default)]
pub struct Trace {
    /// One outcome per step.
    pub outcomes: Vec<Outcome>,
    pub findings: Vec<Finding>,
    /// Host exits taken per step (guest ops).
    pub exits: Vec<u32>,
    /// At `expect pages_*` steps: the model's counts and how many 2M leaves THP decides.
    pub pages: Vec<Option<([u64; 3], u64)>>,
    /// The model's stage-2 leaves (every root) after the steps [`RunOpts::leaves_at`] asked for,
    /// for the kernel's mapping view.
    pub leaves: Vec<Option<Vec<(u64, Leaf)>>>,
    /// The model's S-EPT leaves (a TD's) at the same steps, to hold the module's to.
    pub sept: Vec<Option<Vec<crate::backend::SeptLeaf>>>,
    /// At `get-dirty-log` steps that succeeded: what the bitmap must and may hold.
    pub dirty: Vec<Option<DirtyReport>>,
    /// Steps of a concurrent group no serialization explains: their outcomes are the race
    /// finding's, not compared one by one.
    pub unexplained: Vec<bool>,
}

/// How to run the model: host facts a real backend established, and where to snapshot leaves.
#[derive(Clone, Debug, Default)]
pub struct RunOpts<'a> {
    pub host: HostFacts,
    /// Steps after which the leaves are wanted (empty: none).
    pub leaves_at: Vec<bool>,
    /// What a real run observed, for choosing the serialization of each concurrent group
    /// (None: the model alone, program order).
    pub real: Option<&'a crate::backend::RealTrace>,
    /// How well the rest of a run from a group's end explains the real run (the race oracle's
    /// look-ahead; None: the first fitting order, as inside a look-ahead). The differential
    /// oracle gives it.
    pub lookahead: Option<Lookahead<'a>>,
}

/// Run the steps from `from` on the model and trace given (with the options given) and count
/// the divergences from the real run at steps `since..`.
pub type LookaheadFn<'a> = dyn Fn(&mut Model, &mut Trace, &mut [Vec<Finding>], usize, usize, &RunOpts) -> usize + 'a;

#[derive(Clone, Copy)]
pub struct Lookahead<'a>(pub &'a LookaheadFn<'a>);

impl std::fmt::Debug for Lookahead<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lookahead")
    }
}

/// A TD's S-EPT leaves in the model, as the lab's module dump lists them.
pub fn sept_snapshot(m: &Model) -> Option<Vec<crate::backend::SeptLeaf>> {
    let td = m.td.as_ref()?;
    Some(
        td.leaves_in(0, u64::MAX >> 12)
            .into_iter()
            .flat_map(|(first, l, e)| (0..e.count).map(move |i| (first + i * l.pages(), l, e.state)))
            .collect(),
    )
}

pub fn snapshot(m: &Model) -> Vec<(u64, Leaf)> {
    let mut v = m.shared.runs_in(0, u64::MAX);
    v.extend(m.mirror.runs_in(0, u64::MAX));
    v.sort_by_key(|(b, _)| *b);
    v
}

impl Trace {
    pub fn has(&self, sig: &str) -> bool {
        self.findings.iter().any(|f| f.signature() == sig)
    }
}

/// One host op (or state check) at step `i`.
pub(super) fn run_host_step(m: &mut Model, seq: &Sequence, i: usize, t: &mut Trace, per_step: &mut [Vec<Finding>]) {
    let op = &seq.steps[i].op;
    t.outcomes[i] = m.host_op(op);
    if let Op::ExpectPages { .. } = op {
        t.pages[i] = Some(m.page_counts());
    }
    t.dirty[i] = m.dirty_report.take();
    if let Err(why) = m.check(op) {
        per_step[i].push(Finding {
            context: String::new(),
            kind: FindingKind::Expectation,
            step: Some(i),
            op: Some(op.kind()),
            state: "state-check".into(),
            detail: format!("{}: {why}", text::print_op(op)),
        });
    }
    for v in m.end_step(op) {
        per_step[i].push(Finding::from_violation(v, i, op.kind()));
    }
}

pub(super) fn run_group(
    m: &mut Model,
    seq: &Sequence,
    start: usize,
    end: usize,
    t: &mut Trace,
    per_step: &mut [Vec<Finding>],
) {
    let mut live: Vec<usize> = (start..end).collect();
    while !live.is_empty() {
        live.retain(|&k| {
            let op = &seq.steps[k].op;
            let done = match m.attempt(op) {
                Attempt::Done(o) => Some(o),
                Attempt::Exit(req) => {
                    t.exits[k] += 1;
                    if t.exits[k] > LIVELOCK_EXITS {
                        m.violate(
                            crate::model::ViolationKind::Livelock,
                            format!("`{}` did not finish within {LIVELOCK_EXITS} host exits", text::print_op(op)),
                        );
                        Some(Outcome::Livelock)
                    } else {
                        m.handle_fault(req, false).err()
                    }
                }
            };
            if let Some(o) = done {
                t.outcomes[k] = o;
                *m.cov.outcomes.entry((op.kind(), o.label())).or_default() += 1;
            }
            for v in m.end_step(op) {
                per_step[k].push(Finding::from_violation(v, k, op.kind()));
            }
            done.is_none()
        });
    }
}
