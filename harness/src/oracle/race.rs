//! The race oracle. The ops of a concurrent group (`together { … }`) ran at the same time on a
//! real kernel; what it gave must be what some serialization of them gives on the model. Every
//! order is tried (at most 5! = 120, each a clone of the model running a handful of ops), the
//! first whose outcomes, dirty bitmaps and mapping view are the kernel's is taken and the run
//! goes on from its state. Where none is, a `race` finding names the group, what the kernel
//! gave and what each order gives.
//!
//! After the group, the kernel's mapping view must also hold what every serialization holds:
//! no leaf outside a slot, no huge leaf over a range that mixes attributes, crosses a slot's
//! edge or lies in a dirty-logged slot.
//!
//! A host op after `fail-nth` is judged the same way, between two alternatives: the op done
//! (the failed allocation had a fallback, or the fault never fired) or the op not done at all
//! with ENOMEM, which is what KVM's ioctls promise (they reserve before they change anything).

use super::finding::{Finding, FindingKind};
use super::step::{run_group, run_host_step, snapshot, RunOpts, Trace};
use crate::backend::view::{compare_installed, compare_leaves, KLeaf, StepView};
use crate::backend::Observed;
use crate::model::lpage::{self, Backing, UserBacking};
use crate::model::Model;
use crate::seq::text::{print_op, print_outcome};
use crate::seq::{Exit, Level, Outcome, Sequence};
use std::ops::Range;

/// Every order of `0..n`, the identity first.
pub fn orders(n: usize) -> Vec<Vec<usize>> {
    fn go(prefix: &mut Vec<usize>, left: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if left.is_empty() {
            out.push(prefix.clone());
            return;
        }
        for i in 0..left.len() {
            let x = left.remove(i);
            prefix.push(x);
            go(prefix, left, out);
            prefix.pop();
            left.insert(i, x);
        }
    }
    let mut out = Vec::new();
    go(&mut Vec::new(), &mut (0..n).collect(), &mut out);
    out
}

/// One serialization of a group, run on a clone of the model.
struct Serial {
    order: Vec<usize>,
    model: Model,
    trace: Trace,
    per_step: Vec<Vec<Finding>>,
}

/// The fault that lost a race with an attribute change. On a VM whose faults take their
/// private-ness from the attributes (SW_PROTECTED; TDX and SNP read it from the GPA), KVM decides
/// a fault is private or shared when it starts, and checks the attribute again once it holds the
/// page (`kvm_mmu_faultin_pfn()`); a conversion in between makes the fault exit to userspace with
/// KVM_EXIT_MEMORY_FAULT carrying what it started as. Serialized, that is the guest op placed
/// where the attribute was what the exit says, done nothing, with a later op of the group
/// changing the attribute. The VMM then converts or re-enters; the harness takes the exit as
/// the op's outcome.
fn lost_fault(seq: &Sequence, k: usize, observed: Option<&[Observed]>) -> Option<(u64, bool)> {
    if seq.header.vm.has_shared_alias() || !seq.steps[k].op.kind().is_guest() {
        return None;
    }
    match observed?.get(k)? {
        Observed::Outcome(Outcome::Exit(Exit::MemoryFault { private })) => {
            Some((seq.steps[k].op.addr()? / crate::seq::PAGE, *private))
        }
        _ => None,
    }
}

/// `order` with every guest op whose real run lost its fault to a conversion ([`lost_fault`])
/// taken as lost where the attributes allow it; None when a lost fault's attribute never changes
/// after it, or no op was lost.
fn run_order_lost(
    m: &Model,
    seq: &Sequence,
    g: &Range<usize>,
    order: &[usize],
    observed: &[Observed],
) -> Option<Serial> {
    let mut s = run_order(m, seq, g, &[]);
    let mut pending: Vec<(u64, bool)> = Vec::new();
    let mut lost = false;
    for &o in order {
        let k = g.start + o;
        match lost_fault(seq, k, Some(observed)) {
            Some((gfn, a)) if s.model.attrs.is_private(gfn) == a => {
                s.trace.outcomes[k] = Outcome::Exit(Exit::MemoryFault { private: a });
                pending.push((gfn, a));
                lost = true;
            }
            _ => step_one(&mut s, seq, k),
        }
        pending.retain(|&(gfn, a)| s.model.attrs.is_private(gfn) == a);
    }
    (lost && pending.is_empty()).then(|| Serial { order: order.to_vec(), ..s })
}

fn step_one(s: &mut Serial, seq: &Sequence, k: usize) {
    if seq.steps[k].op.kind().is_guest() {
        run_group(&mut s.model, seq, k, k + 1, &mut s.trace, &mut s.per_step);
    } else {
        run_host_step(&mut s.model, seq, k, &mut s.trace, &mut s.per_step);
    }
}

fn run_order(m: &Model, seq: &Sequence, g: &Range<usize>, order: &[usize]) -> Serial {
    let n = seq.steps.len();
    let model = m.clone();
    let trace = Trace {
        outcomes: vec![Outcome::Ok; n],
        exits: vec![0; n],
        pages: vec![None; n],
        dirty: vec![None; n],
        ..Default::default()
    };
    let per_step = vec![Vec::new(); n];
    let mut s = Serial { order: order.to_vec(), model, trace, per_step };
    for &o in order {
        step_one(&mut s, seq, g.start + o);
    }
    s
}

/// Whether a serialization's outcomes are what the kernel observed for the group.
fn outcomes_match(s: &Serial, g: &Range<usize>, observed: &[Observed]) -> bool {
    g.clone().all(|k| match observed.get(k) {
        Some(Observed::Outcome(o)) => *o == s.trace.outcomes[k],
        Some(Observed::DirtyLog(bits)) => {
            s.trace.outcomes[k] == Outcome::Ok && s.trace.dirty[k].as_ref().is_some_and(|r| r.allows(bits).is_ok())
        }
        _ => true,
    })
}

/// Whether a serialization leaves the TD's S-EPT the module shows after the group (two orders
/// may give the same outcomes and different S-EPTs: a punch before or after a guest access
/// that faults the page back in).
fn sept_matches(s: &Serial, real: Option<&Vec<crate::backend::SeptLeaf>>) -> bool {
    let (Some(k), Some(m)) = (real, super::step::sept_snapshot(&s.model)) else { return true };
    let set = |v: &[crate::backend::SeptLeaf]| v.iter().copied().collect::<std::collections::BTreeSet<_>>();
    set(&m) == set(k)
}

fn view_matches(s: &Serial, view: Option<&StepView>) -> bool {
    let leaves = snapshot(&s.model);
    match view {
        Some(StepView::Leaves(k)) => compare_leaves(&leaves, k).1.is_none(),
        Some(StepView::Installed(k)) => compare_installed(&leaves, k).1.is_none(),
        None => true,
    }
}

/// Run the group `g` on `m`: the serialization the real run shows where there is one.
pub(super) fn run_together(
    m: &mut Model,
    seq: &Sequence,
    g: Range<usize>,
    opts: &RunOpts<'_>,
    t: &mut Trace,
    per_step: &mut [Vec<Finding>],
) {
    let all = orders(g.len());
    let real = opts.real;
    let view = real.and_then(|r| r.views.get(g.end - 1)).and_then(|v| v.as_ref());
    let sept = real.and_then(|r| r.sept.get(g.end - 1)).and_then(|v| v.as_ref());
    let mut tried: Vec<Serial> = Vec::new();
    let mut fitting: Vec<Serial> = Vec::new();
    let any_lost = g.clone().any(|k| lost_fault(seq, k, real.map(|r| &r.observed[..])).is_some());
    for order in &all {
        let s = run_order(m, seq, &g, order);
        let Some(r) = real else {
            // The model alone: program order.
            fitting.push(s);
            break;
        };
        let lost = any_lost.then(|| run_order_lost(m, seq, &g, order, &r.observed)).flatten();
        for s in std::iter::once(s).chain(lost) {
            if outcomes_match(&s, &g, &r.observed) && view_matches(&s, view) && sept_matches(&s, sept) {
                fitting.push(s);
            } else {
                tried.push(s);
            }
        }
    }
    let backing = real.and_then(|r| r.backing.get(g.end - 1)).and_then(|b| b.as_ref());
    if let (Some(b), false) = (backing, seq.header.vm.has_shared_alias()) {
        let every: Vec<&Serial> = tried.iter().chain(&fitting).collect();
        if let Some(f) = wrong_backing(seq, &g, b, &every) {
            per_step[g.end - 1].push(f);
        }
    }
    let s = if fitting.is_empty() {
        per_step[g.start].push(no_serialization(seq, &g, real, view, &tried));
        g.clone().for_each(|k| t.unexplained[k] = true);
        tried.swap_remove(0)
    } else {
        best_fit(fitting, &g, opts, t, per_step)
    };
    commit(m, s, &g, t, per_step);
    // Only a view of every present leaf (the TDP MMU's): the shadow MMU's lists the leaves
    // installed during the group, some of which a later op of the group zapped.
    if let Some(StepView::Leaves(leaves)) = view {
        if let Some(f) = illegal_leaf(m, seq, &g, leaves) {
            per_step[g.end - 1].push(f);
        }
    }
}

/// Of the orders that fit the group, the one whose continuation best explains the rest of the
/// real run. Several orders may fit the group's own outcomes and view yet leave different states
/// (a guest write before or after a conversion of its page, with the leaf zapped either way):
/// each is run to the end of the sequence (later groups taking their first fitting order), and
/// the one with the fewest divergences from the group on wins, the earliest order on a tie. This
/// is carrying every fitting state forward, decided at the end instead of step by step.
fn best_fit(
    mut fitting: Vec<Serial>,
    g: &Range<usize>,
    opts: &RunOpts<'_>,
    t: &Trace,
    per_step: &[Vec<Finding>],
) -> Serial {
    let Some(look) = opts.lookahead.filter(|_| fitting.len() > 1) else {
        return fitting.swap_remove(0);
    };
    let inner = RunOpts { lookahead: None, ..opts.clone() };
    let score = |s: &Serial| {
        let mut m = s.model.clone();
        let mut t = t.clone();
        let mut ps = per_step.to_vec();
        commit_ref(s, g, &mut t, &mut ps);
        if opts.leaves_at.get(g.end - 1).copied().unwrap_or(false) {
            t.leaves[g.end - 1] = Some(snapshot(&m));
        }
        (look.0)(&mut m, &mut t, &mut ps, g.end, g.start, &inner)
    };
    let mut best = 0;
    let mut best_score = usize::MAX;
    for (k, s) in fitting.iter().enumerate() {
        let sc = score(s);
        if sc < best_score {
            (best, best_score) = (k, sc);
        }
        if sc == 0 {
            break;
        }
    }
    fitting.swap_remove(best)
}

fn commit_ref(s: &Serial, g: &Range<usize>, t: &mut Trace, per_step: &mut [Vec<Finding>]) {
    for k in g.clone() {
        t.outcomes[k] = s.trace.outcomes[k];
        t.exits[k] = s.trace.exits[k];
        t.dirty[k] = s.trace.dirty[k].clone();
        per_step[k].extend(s.per_step[k].iter().cloned());
    }
}

/// Go on from a chosen run: its model, and its outcomes and findings for the steps `g`.
fn commit(m: &mut Model, s: Serial, g: &Range<usize>, t: &mut Trace, per_step: &mut [Vec<Finding>]) {
    commit_ref(&s, g, t, per_step);
    *m = s.model;
}

/// Run host op `i`, which ran with an allocation failing (`fail-nth` before it): done as the
/// model does it, or not done with ENOMEM, whichever the kernel shows.
pub(super) fn run_failing(
    m: &mut Model,
    seq: &Sequence,
    i: usize,
    opts: &RunOpts<'_>,
    t: &mut Trace,
    per_step: &mut [Vec<Finding>],
) {
    let g = i..i + 1;
    let done = run_order(m, seq, &g, &[0]);
    let Some(real) = opts.real else {
        return commit(m, done, &g, t, per_step);
    };
    let view = real.views.get(i).and_then(|v| v.as_ref());
    let fired = real.fault_fired.get(i).copied().flatten() == Some(true);
    if !fired || (outcomes_match(&done, &g, &real.observed) && view_matches(&done, view)) {
        return commit(m, done, &g, t, per_step);
    }
    let mut undone = run_order(m, seq, &g, &[]);
    undone.trace.outcomes[i] = Outcome::Err(crate::seq::Errno::ENOMEM);
    if outcomes_match(&undone, &g, &real.observed) && view_matches(&undone, view) {
        return commit(m, undone, &g, t, per_step);
    }
    let op = &seq.steps[i].op;
    let n = match i.checked_sub(1).map(|p| &seq.steps[p].op) {
        Some(crate::seq::Op::FailNth { n }) => *n,
        _ => 0,
    };
    per_step[i].push(Finding {
        context: String::new(),
        kind: FindingKind::Divergence,
        step: Some(i),
        op: Some(op.kind()),
        state: format!("injected-fault:model:{}|ENOMEM/real:{}", done.trace.outcomes[i].label(), {
            match real.observed.get(i) {
                Some(Observed::Outcome(o)) => o.label(),
                _ => "state",
            }
        }),
        detail: format!(
            "step {} `{}` ran with allocation {n} of its ioctl failing, and the fault fired: the kernel gave {} \
             (and its mappings); the model allows the op done ({}) or not done at all (err ENOMEM)",
            i + 1,
            print_op(op),
            observed_text(real.observed.get(i)),
            print_outcome(&done.trace.outcomes[i])
        ),
    });
    t.unexplained[i] = true;
    commit(m, done, &g, t, per_step);
}

fn group_text(seq: &Sequence, g: &Range<usize>) -> String {
    g.clone().map(|k| format!("  {}. {}", k + 1, print_op(&seq.steps[k].op))).collect::<Vec<_>>().join("\n")
}

fn observed_text(o: Option<&Observed>) -> String {
    match o {
        Some(Observed::Outcome(o)) => print_outcome(o),
        Some(Observed::DirtyLog(bits)) => format!("{} dirty page(s)", bits.len()),
        Some(Observed::Pages(_)) | Some(Observed::NotChecked) | None => "-".into(),
        Some(Observed::HarnessError(e)) => format!("harness error: {e}"),
    }
}

/// The steps of the group whose outcome an order gives otherwise than the kernel did.
fn mismatches(s: &Serial, g: &Range<usize>, observed: &[Observed]) -> Vec<usize> {
    g.clone().filter(|&k| !outcomes_match(s, &(k..k + 1), observed)).collect()
}

/// The finding for a group no serialization explains. Where the closest order (its view the
/// kernel's) differs in one step's outcome only, the finding is named by that step as a
/// divergence would be (`race:read:model:…/real:…`): a kernel difference `corpus/known` records
/// then shows as known in a group too (a stale MMIO SPTE answers a read racing a conversion
/// just as it answers one after it). Otherwise `race:OP:no-serialization:KIND+KIND…`.
fn no_serialization(
    seq: &Sequence,
    g: &Range<usize>,
    real: Option<&crate::backend::RealTrace>,
    view: Option<&StepView>,
    tried: &[Serial],
) -> Finding {
    let observed = real.map(|r| &r.observed[..]);
    let closest = observed.and_then(|o| {
        tried
            .iter()
            .filter(|s| view_matches(s, view))
            .map(|s| (mismatches(s, g, o), s))
            .min_by_key(|(m, _)| m.len())
            .filter(|(m, _)| m.len() == 1)
            .map(|(m, s)| (m[0], s))
    });
    let real: Vec<String> = g.clone().map(|k| observed_text(observed.and_then(|o| o.get(k)))).collect();
    let mut detail = format!(
        "steps {}..{} ran together:\n{}\nthe kernel gave: {}\nno serialization of the {} ops gives that; tried {} order(s):",
        g.start + 1,
        g.end,
        group_text(seq, g),
        real.join(", "),
        g.len(),
        tried.len()
    );
    for s in tried.iter().take(24) {
        let order: Vec<String> = s.order.iter().map(|o| (g.start + o + 1).to_string()).collect();
        let outs: Vec<String> = g.clone().map(|k| print_outcome(&s.trace.outcomes[k])).collect();
        detail.push_str(&format!("\n  {}: {}", order.join(" "), outs.join(", ")));
    }
    if tried.len() > 24 {
        detail.push_str(&format!("\n  … and {} more", tried.len() - 24));
    }
    let kinds: Vec<&str> = g.clone().map(|k| seq.steps[k].op.kind().name()).collect();
    let (step, state) = match closest {
        Some((k, s)) => {
            let real = match observed.and_then(|o| o.get(k)) {
                Some(Observed::Outcome(o)) => o.label(),
                _ => "state",
            };
            let order: Vec<String> = s.order.iter().map(|o| (g.start + o + 1).to_string()).collect();
            detail.push_str(&format!(
                "\nclosest order {}: all but step {} (`{}`), where it gives {}",
                order.join(" "),
                k + 1,
                print_op(&seq.steps[k].op),
                print_outcome(&s.trace.outcomes[k])
            ));
            (k, format!("model:{}/real:{real}", s.trace.outcomes[k].label()))
        }
        None => (g.start, format!("no-serialization:{}", kinds.join("+"))),
    };
    Finding {
        context: String::new(),
        kind: FindingKind::Race,
        step: Some(step),
        op: Some(seq.steps[step].op.kind()),
        state,
        detail,
    }
}

/// A kernel leaf that no serialization allows, against the state the group left: outside
/// every slot, or huge where a slot's edge, mixed attributes or dirty logging forbid it.
fn illegal_leaf(m: &Model, seq: &Sequence, g: &Range<usize>, leaves: &[KLeaf]) -> Option<Finding> {
    let attrs = m.h.vm.has_private_mem().then_some(&m.attrs);
    for k in leaves.iter().filter(|k| k.root == 0) {
        let end = k.gfn + k.level.pages();
        let slot = m.slots.find(k.gfn).filter(|s| end <= s.end_gfn());
        let why = match slot {
            None => Some(("leaf-outside-slots", "lies outside every memslot".to_string())),
            // A huge page backing is assumed: only the slot, the attributes and logging decide.
            Some(s) if k.level != Level::L4K => {
                let (max, _) = lpage::max_level(s, k.gfn, attrs, None, Backing::User(UserBacking::Huge));
                (max < k.level).then(|| {
                    let what = if s.log.is_some() {
                        "lies in a dirty-logged slot"
                    } else if attrs.is_some_and(|a| a.uniform(k.gfn, end).is_none()) {
                        "spans private and shared GFNs"
                    } else {
                        "crosses its slot's edge or alignment"
                    };
                    ("huge-leaf-forbidden", what.to_string())
                })
            }
            Some(_) => None,
        };
        if let Some((state, what)) = why {
            let leaf = format!(" has a {} leaf at gfn {:#x} that {what},", k.level.name(), k.gfn);
            return Some(after_group(seq, g, state, &leaf));
        }
    }
    None
}

/// A finding about the kernel's leaves after group `g`: `what` the kernel's leaf does, under
/// every order of the group.
fn after_group(seq: &Sequence, g: &Range<usize>, state: &str, what: &str) -> Finding {
    Finding {
        context: String::new(),
        kind: FindingKind::Race,
        step: Some(g.end - 1),
        op: Some(seq.steps[g.start].op.kind()),
        state: state.into(),
        detail: format!(
            "after steps {}..{} ran together:\n{}\nthe kernel{what} under every order of the group",
            g.start + 1,
            g.end,
            group_text(seq, g),
        ),
    }
}

/// A leaf whose memory is the wrong side for its GFN under every order of the group: the slot's
/// shared page behind a GFN every order leaves private, or other memory (guest_memfd's) behind
/// one every order leaves shared. `backing` is the backend's (GFN, frame is the shared page).
fn wrong_backing(seq: &Sequence, g: &Range<usize>, backing: &[(u64, bool)], every: &[&Serial]) -> Option<Finding> {
    for &(gfn, shared_page) in backing {
        // The side every order leaves the GFN on: the wrong one is a finding.
        let always = |private: bool| every.iter().all(|s| s.model.attrs.is_private(gfn) == private);
        let (state, what) = if shared_page && always(true) {
            ("shared-leaf-for-private-gfn", "maps the slot's shared page, but the GFN is private")
        } else if !shared_page && always(false) {
            ("private-leaf-for-shared-gfn", "maps memory other than the slot's shared page, but the GFN is shared")
        } else {
            continue;
        };
        return Some(after_group(seq, g, state, &format!("'s leaf at gfn {gfn:#x} {what}")));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_every_permutation_once_identity_first() {
        for n in 1..=5 {
            let o = orders(n);
            let fact: usize = (1..=n).product();
            assert_eq!(o.len(), fact);
            assert_eq!(o[0], (0..n).collect::<Vec<_>>());
            let set: std::collections::BTreeSet<_> = o.iter().cloned().collect();
            assert_eq!(set.len(), fact);
        }
    }
}
