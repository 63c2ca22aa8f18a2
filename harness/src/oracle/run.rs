//! Running a sequence on the model: host ops in order; on TDX (and SNP), consecutive guest ops
//! of distinct vCPUs interleave round-robin at the granularity of one attempt (one
//! EPT-violation round trip), so races such as H10 can be written down. On default and
//! SW_PROTECTED VMs, where no ACCEPT makes such a race meaningful, guest ops run in order.
//!
//! A concurrent group (`together { … }`) runs as one of its serializations: where a real run's
//! observations are given, the first whose outcomes (and mapping view) are the kernel's, see
//! [`super::race`]; on the model alone, program order.

use super::finding::{set_context, Finding, FindingKind};
use super::step::{run_group, run_host_step, sept_snapshot, snapshot};
pub use super::step::{RunOpts, Trace};
use crate::model::{Coverage, Model};
use crate::seq::text::print_outcome;
use crate::seq::*;

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
    let n = seq.steps.len();
    t.outcomes = vec![Outcome::Ok; n];
    t.exits = vec![0; n];
    t.pages = vec![None; n];
    t.leaves = vec![None; n];
    t.sept = vec![None; n];
    t.dirty = vec![None; n];
    t.unexplained = vec![false; n];
    let mut per_step: Vec<Vec<Finding>> = vec![Vec::new(); n];
    run_steps(&mut m, seq, 0, opts, &mut t, &mut per_step);
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

/// Run steps `from..` of `seq` on `m`, recording into `t` and `per_step` (the race oracle's
/// look-ahead runs the rest of a sequence from each fitting order of a group).
pub(crate) fn run_steps(
    m: &mut Model,
    seq: &Sequence,
    from: usize,
    opts: &RunOpts,
    t: &mut Trace,
    per_step: &mut [Vec<Finding>],
) {
    let want = |k: usize| opts.leaves_at.get(k).copied().unwrap_or(false);
    let n = seq.steps.len();
    let mut i = from;
    while i < n {
        let op = &seq.steps[i].op;
        let group = seq.group_at(i);
        if group.len() > 1 {
            super::race::run_together(m, seq, group.clone(), opts, t, per_step);
            if want(group.end - 1) {
                take_snapshots(m, t, group.end - 1);
            }
            i = group.end;
            continue;
        }
        if op.kind().is_guest() {
            let mut j = i;
            let mut used: u64 = 0;
            // A real run that issued one guest op at a time is held to the model doing the
            // same (concurrent groups are the race oracle's).
            let interleave = seq.header.vm.has_shared_alias() && !opts.real.is_some_and(|r| r.serial_guest_ops);
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
            run_group(m, seq, i, j, t, per_step);
            // Interleaved guest ops have one state after them all: only the last step's
            // snapshot is the model's (a real run's state after an earlier one is not).
            if want(j - 1) {
                take_snapshots(m, t, j - 1);
            }
            i = j;
            continue;
        }
        let armed = i.checked_sub(1).is_some_and(|p| matches!(seq.steps[p].op, Op::FailNth { .. }));
        if armed {
            super::race::run_failing(m, seq, i, opts, t, per_step);
        } else {
            run_host_step(m, seq, i, t, per_step);
        }
        if want(i) {
            take_snapshots(m, t, i);
        }
        i += 1;
    }
}

/// The model's leaves after step `k`, and a TD's S-EPT leaves.
fn take_snapshots(m: &Model, t: &mut Trace, k: usize) {
    t.leaves[k] = Some(snapshot(m));
    if let (Some(leaves), Some(slot)) = (sept_snapshot(m), t.sept.get_mut(k)) {
        *slot = Some(leaves);
    }
}
