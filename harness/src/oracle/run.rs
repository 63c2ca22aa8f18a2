//! Running a sequence on the model: host ops in order; on TDX (and SNP), consecutive guest ops
//! of distinct vCPUs interleave round-robin at the granularity of one attempt (one
//! EPT-violation round trip), so races such as H10 can be written down. On default and
//! SW_PROTECTED VMs, where no ACCEPT makes such a race meaningful, guest ops run in order.
//!
//! A concurrent group (`together { … }`) runs as one of its serializations: where a real run's
//! observations are given, the first whose outcomes (and mapping view) are the kernel's, see
//! [`super::race`]; on the model alone, program order.

use super::finding::{set_context, Finding, FindingKind};
use crate::model::dirty_log::DirtyReport;
use crate::model::stage2::Leaf;
use crate::model::HostFacts;
use crate::model::{Attempt, Coverage, Model, LIVELOCK_EXITS};
use crate::seq::text::print_outcome;
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
}

pub(super) fn snapshot(m: &Model) -> Vec<(u64, Leaf)> {
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

/// Run `seq` on a fresh model.
pub fn run_model(seq: &Sequence) -> Trace {
    run_model_cov(seq).0
}

/// Run `seq` and also return what the model covered.
pub fn run_model_cov(seq: &Sequence) -> (Trace, Option<Coverage>) {
    run_model_with(seq, &RunOpts::default())
}

/// Run `seq` with host facts and leaf snapshots.
pub fn run_model_with(seq: &Sequence, opts: &RunOpts) -> (Trace, Option<Coverage>) {
    let mut t = Trace::default();
    let mut m = match Model::new(&seq.header) {
        Ok(m) => m,
        Err(e) => {
            t.findings.push(Finding {
                context: String::new(),
                kind: FindingKind::Setup,
                step: None,
                op: None,
                state: "header".into(),
                detail: e,
            });
            set_context(&mut t.findings, &seq.header);
            return (t, None);
        }
    };
    m.host = opts.host;
    let want = |k: usize| opts.leaves_at.get(k).copied().unwrap_or(false);
    let n = seq.steps.len();
    t.outcomes = vec![Outcome::Ok; n];
    t.exits = vec![0; n];
    t.pages = vec![None; n];
    t.leaves = vec![None; n];
    t.dirty = vec![None; n];
    t.unexplained = vec![false; n];
    let mut per_step: Vec<Vec<Finding>> = vec![Vec::new(); n];
    let mut i = 0;
    while i < n {
        let op = &seq.steps[i].op;
        let group = seq.group_at(i);
        if group.len() > 1 {
            super::race::run_together(&mut m, seq, group.clone(), opts, &mut t, &mut per_step);
            if want(group.end - 1) {
                t.leaves[group.end - 1] = Some(snapshot(&m));
            }
            i = group.end;
            continue;
        }
        if op.kind().is_guest() {
            let mut j = i;
            let mut used: u64 = 0;
            let interleave = seq.header.vm.has_shared_alias();
            while j < n && (interleave || j == i) {
                // A step that starts a concurrent group is that group's.
                if j > i && seq.steps.get(j + 1).is_some_and(|s| s.together) {
                    break;
                }
                let Some(v) = seq.steps[j].op.vcpu().filter(|_| seq.steps[j].op.kind().is_guest()) else {
                    break;
                };
                if used & (1 << v) != 0 {
                    break;
                }
                used |= 1 << v;
                j += 1;
            }
            run_group(&mut m, seq, i, j, &mut t, &mut per_step);
            for k in (i..j).filter(|&k| want(k)) {
                t.leaves[k] = Some(snapshot(&m));
            }
            i = j;
            continue;
        }
        run_host_step(&mut m, seq, i, &mut t, &mut per_step);
        if want(i) {
            t.leaves[i] = Some(snapshot(&m));
        }
        i += 1;
    }
    for (i, st) in seq.steps.iter().enumerate() {
        let held = match &st.expect {
            Some(e) if *e != t.outcomes[i] => {
                per_step[i].push(Finding {
                    context: String::new(),
                    kind: FindingKind::Expectation,
                    step: Some(i),
                    op: Some(st.op.kind()),
                    state: format!("expected-{}", print_outcome(e).replace(' ', "-")),
                    detail: format!(
                        "step {} `{}`: expected {}, got {}",
                        i + 1,
                        text::print_op(&st.op),
                        print_outcome(e),
                        print_outcome(&t.outcomes[i])
                    ),
                });
                false
            }
            Some(_) => true,
            None => false,
        };
        for f in per_step[i].drain(..) {
            if !(held && f.is_hazard()) {
                t.findings.push(f);
            }
        }
    }
    set_context(&mut t.findings, &seq.header);
    let (counts, thp) = m.page_counts();
    for (a, b) in m.cov.final_leaves.iter_mut().zip(counts) {
        *a += b;
    }
    m.cov.final_thp_leaves += thp;
    (t, Some(m.cov))
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
