//! The differential oracle: every outcome a real backend observed must be one the model allows,
//! and every leaf the kernel's view shows must be one the model has.

use super::finding::{set_context, Finding, FindingKind, Signature};
use super::run::{run_model_with, RunOpts, Trace};
use crate::backend::view::{compare_installed, compare_leaves, StepView};
use crate::backend::{Backend, Observed, RealTrace, RunError};
use crate::model::pages_feasible;
use crate::seq::text::{print_op, print_outcome};
use crate::seq::{Outcome, Sequence};

/// Whether real page counters are ones the model allows ([`pages_feasible`]).
pub fn pages_allowed(model: ([u64; 3], u64), real: [u64; 3]) -> bool {
    pages_feasible(model, [Some(&[real[0]]), Some(&[real[1]]), Some(&[real[2]])])
}

fn fmt_pages(p: [u64; 3]) -> String {
    format!("pages_4k={} pages_2m={} pages_1g={}", p[0], p[1], p[2])
}

/// What holding a real run to the model gave.
#[derive(Debug, Default)]
pub struct Diff {
    pub findings: Vec<Finding>,
    /// GFN comparisons between the kernel's view and the model's leaves.
    pub mapping_checks: u64,
    /// Steps whose view could not be compared (events lost).
    pub views_lost: u64,
    /// The kernel's view showed a leaf of the case's memory at some step.
    pub kernel_mapped: bool,
}

/// Divergence findings of a real run against the model's trace of the same sequence: every
/// step whose outcome differs, and the first step whose mappings differ (later steps follow
/// from it).
pub fn diff(seq: &Sequence, model: &Trace, real: &RealTrace) -> Diff {
    let mut d = Diff::default();
    let mut mapping_seen = false;
    for (i, st) in seq.steps.iter().enumerate() {
        if let Some(Some(v)) = real.views.get(i) {
            d.kernel_mapped |= !v.leaves().is_empty();
        }
        let unexplained = model.unexplained.get(i).copied().unwrap_or(false);
        if let (Some(Some(v)), Some(Some(leaves)), false) = (real.views.get(i), model.leaves.get(i), unexplained) {
            let (checks, mismatch) = match v {
                StepView::Leaves(k) => compare_leaves(leaves, k),
                StepView::Installed(k) => compare_installed(leaves, k),
            };
            d.mapping_checks += checks;
            if let (Some(m), false) = (mismatch, mapping_seen) {
                mapping_seen = true;
                d.findings.push(Finding {
                    context: String::new(),
                    kind: FindingKind::Divergence,
                    step: Some(i),
                    op: Some(st.op.kind()),
                    state: format!("mapping:model:{}/real:{}", m.labels.0, m.labels.1),
                    detail: format!(
                        "step {} `{}`: mapping at gfn {:#x}: the model has {}; the kernel has {}",
                        i + 1,
                        print_op(&st.op),
                        m.gfn,
                        m.model,
                        m.kernel
                    ),
                });
            }
        }
        if let (Some(Some(k)), Some(Some(mm)), false) = (real.sept.get(i), model.sept.get(i), unexplained) {
            // Every S-EPT leaf either side has is one GFN comparison (at least one per step).
            d.mapping_checks += mm.len().max(k.len()).max(1) as u64;
            if let (Some(f), false) = (sept_mismatch(i, st, mm, k), mapping_seen) {
                mapping_seen = true;
                d.findings.push(f);
            }
        }
        let (ok, m, r) = match (&real.observed[i], model.pages[i]) {
            (Observed::NotChecked, _) => continue,
            _ if unexplained => continue,
            (Observed::DirtyLog(bits), _) => {
                let mo = &model.outcomes[i];
                let verdict = match (mo, model.dirty.get(i).and_then(|d| d.as_ref())) {
                    (Outcome::Ok, Some(rep)) => rep.allows(bits),
                    _ => Err(format!("the model gives {}", print_outcome(mo))),
                };
                let Err(why) = verdict else { continue };
                d.findings.push(Finding {
                    context: String::new(),
                    kind: FindingKind::Divergence,
                    step: Some(i),
                    op: Some(st.op.kind()),
                    state: format!("dirty-log:model:{}/real:bitmap", mo.label()),
                    detail: format!(
                        "step {} `{}`: KVM_GET_DIRTY_LOG reported {} dirty page(s): {why}",
                        i + 1,
                        print_op(&st.op),
                        bits.len()
                    ),
                });
                continue;
            }
            (Observed::HarnessError(why), _) => {
                d.findings.push(Finding {
                    context: String::new(),
                    kind: FindingKind::Setup,
                    step: Some(i),
                    op: Some(st.op.kind()),
                    state: "harness:page-accounting".into(),
                    detail: format!(
                        "step {} `{}`: the harness lost track of its own mappings: {why}",
                        i + 1,
                        print_op(&st.op)
                    ),
                });
                continue;
            }
            (Observed::Pages(p), Some(mp)) => {
                let ([c4, c2, c1], thp) = mp;
                let allowed = if thp == 0 {
                    fmt_pages([c4, c2, c1])
                } else {
                    format!("{} (THP: up to {thp} of the 2M as 1 to 512 4K each)", fmt_pages([c4, c2, c1]))
                };
                (pages_allowed(mp, *p), (allowed, "pages"), (fmt_pages(*p), "pages"))
            }
            (Observed::Pages(_), None) => continue,
            (Observed::Outcome(o), _) => {
                let mo = &model.outcomes[i];
                (mo == o, (print_outcome(mo), mo.label()), (print_outcome(o), o.label()))
            }
        };
        if ok {
            continue;
        }
        let ((m, ml), (r, rl)) = (m, r);
        d.findings.push(Finding {
            context: String::new(),
            kind: FindingKind::Divergence,
            step: Some(i),
            op: Some(st.op.kind()),
            // Labels, not values, so that the signature deduplicates.
            state: format!("model:{ml}/real:{rl}"),
            detail: format!("step {} `{}`: the model allows {m}; real KVM gave {r}", i + 1, print_op(&st.op)),
        });
    }
    for (i, s) in &real.splats {
        d.findings.push(Finding {
            context: String::new(),
            kind: FindingKind::KernelSplat,
            step: Some(*i),
            op: seq.steps.get(*i).map(|st| st.op.kind()),
            state: s.title.clone(),
            detail: format!(
                "step {} `{}`: the kernel reported:\n{}",
                i + 1,
                seq.steps.get(*i).map(|st| print_op(&st.op)).unwrap_or_default(),
                s.excerpt.join("\n")
            ),
        });
    }
    // KVM's mirror root against the TDX module's S-EPT (both real, in the lab's --tdx flavour):
    // the external-SPTE hooks must keep them one picture. The first step they part is the
    // finding; later steps follow from it.
    if let Some((i, m)) = real.mirror.first() {
        let side = |p: Option<u64>, what: &str| match p {
            Some(p) => format!("{what} maps pfn {p:#x}"),
            None => format!("{what} has no leaf"),
        };
        let label = |p: Option<u64>| if p.is_some() { "leaf" } else { "none" };
        let state = match (m.kernel, m.module) {
            (Some(_), Some(_)) => "mirror:kvm:pfn/module:pfn".to_string(),
            (k, s) => format!("mirror:kvm:{}/module:{}", label(k), label(s)),
        };
        d.findings.push(Finding {
            context: String::new(),
            kind: FindingKind::Divergence,
            step: Some(*i),
            op: seq.steps.get(*i).map(|st| st.op.kind()),
            state,
            detail: format!(
                "step {} `{}`: {} at gpa {:#x}: {}; {}",
                i + 1,
                seq.steps.get(*i).map(|st| print_op(&st.op)).unwrap_or_default(),
                m.level.name(),
                m.gfn << 12,
                side(m.kernel, "KVM's mirror root"),
                side(m.module, "the TDX module's (simulated) S-EPT")
            ),
        });
    }
    d.mapping_checks += real.mirror_checks;
    d.views_lost = real.views_lost;
    set_context(&mut d.findings, &seq.header);
    d
}

/// A real run's error as a finding (None when the host simply cannot run the sequence).
pub fn error_finding(seq: &Sequence, e: &RunError) -> Option<Finding> {
    let (kind, step, state) = match e {
        RunError::Unsupported(_) => return None,
        RunError::Timeout { step } => (FindingKind::Timeout, Some(*step), "guest-timeout".to_string()),
        RunError::Guest { step, .. } => (FindingKind::Divergence, Some(*step), "guest-failed".to_string()),
        RunError::Setup(_) | RunError::Ioctl { .. } => (FindingKind::Setup, None, "backend-setup".to_string()),
    };
    let mut f = vec![Finding {
        context: String::new(),
        kind,
        step,
        op: step.and_then(|s| seq.steps.get(s)).map(|s| s.op.kind()),
        state,
        detail: e.to_string(),
    }];
    set_context(&mut f, &seq.header);
    f.pop()
}

/// One sequence on a real backend, held to the model: what `replay`, `fuzz` and the `kvm`
/// fuzz target all do, in one place.
pub struct RealCheck {
    /// The model's run, with the host facts the backend established.
    pub model: Trace,
    pub diff: Diff,
    /// Why the backend could not run the sequence (a missing capability); not a finding.
    pub unsupported: Option<String>,
    /// The kernel PCs the case ran, where the backend records coverage.
    pub pcs: Vec<u64>,
    /// What the kernel did, step by step: its outcome, and the leaves per level (4K, 2M, 1G)
    /// its view saw, where it had one. What `lab --baseline` compares between two kernels.
    pub steps: Vec<RealStep>,
}

/// One step on a real kernel, typed: two kernels' steps compare as values, not as text.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RealStep {
    pub outcome: Observed,
    pub leaves: Option<[u64; 3]>,
}

impl RealStep {
    /// The outcome as a person reads it (the `.seq` syntax).
    pub fn outcome_text(&self) -> String {
        match &self.outcome {
            Observed::Outcome(o) => crate::seq::text::print_outcome(o),
            Observed::Pages(p) => format!("pages_4k={} pages_2m={} pages_1g={}", p[0], p[1], p[2]),
            Observed::NotChecked => "-".into(),
            Observed::DirtyLog(bits) => format!("{} dirty page(s)", bits.len()),
            Observed::HarnessError(why) => format!("harness error: {why}"),
        }
    }
}

fn real_steps(real: &RealTrace) -> Vec<RealStep> {
    real.observed
        .iter()
        .enumerate()
        .map(|(i, o)| RealStep {
            outcome: o.clone(),
            leaves: real.views.get(i).and_then(|v| v.as_ref()).map(|v| {
                let mut n = [0u64; 3];
                v.leaves().iter().for_each(|k| n[k.level as usize] += 1);
                n
            }),
        })
        .collect()
}

pub fn check_real(b: &mut dyn Backend, seq: &Sequence) -> RealCheck {
    // The lab's watchdog names this case if it runs for long.
    let _in_progress = super::progress::running(seq);
    // The model runs as the kernel the backend is on; a scenario that holds on other kernels
    // only is not this kernel's to check.
    let mut as_kernel;
    let seq = match b.kernel() {
        Some(k) if !crate::model::kernel::holds_on(&seq.header, k) => {
            let names: Vec<String> = seq.header.kernels.iter().map(|k| k.to_string()).collect();
            let why = if names.is_empty() {
                format!("Linux {k} cannot set the scenario's header up")
            } else {
                format!("the scenario holds on Linux {} only; this is {k}", names.join(", "))
            };
            return RealCheck {
                model: run_model_with(seq, &RunOpts::default()).0,
                diff: Diff::default(),
                unsupported: Some(RunError::Unsupported(why).to_string()),
                pcs: Vec::new(),
                steps: Vec::new(),
            };
        }
        Some(k) => {
            as_kernel = seq.clone();
            as_kernel.header.set_kernel(k);
            &as_kernel
        }
        None => seq,
    };
    // Concurrent groups on a backend where they really overlap: the case again with other start
    // offsets until something shows, or the repetitions are spent.
    let repeats = if seq.has_groups() && b.overlaps() { collide_repeats() } else { 1 };
    let seed = collide_seed(seq);
    let mut rep = 0;
    loop {
        b.release_as(seed, rep);
        let mut c = check_once(b, seq);
        rep += 1;
        let found = !c.diff.findings.is_empty() || !c.model.findings.is_empty();
        if found || c.unsupported.is_some() || rep >= repeats {
            if repeats > 1 {
                let note = format!(
                    "\nthreads released: repetition {rep} of {repeats}, seed {seed:#x} (the case's own hash: a replay with \
                     PRIVMEM_COLLIDE={repeats} tries the same offsets in the same order)"
                );
                c.diff.findings.iter_mut().chain(c.model.findings.iter_mut()).for_each(|f| f.detail.push_str(&note));
            }
            return c;
        }
    }
}

/// How many times a case with concurrent groups runs, each with other start offsets
/// (`PRIVMEM_COLLIDE`, default 8).
pub fn collide_repeats() -> u32 {
    std::env::var("PRIVMEM_COLLIDE").ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or(8)
}

/// The seed of a case's start offsets: a hash of its ops and header without expectations, so
/// that its reproducer (which carries them) replays the same way.
pub fn collide_seed(seq: &Sequence) -> u64 {
    let mut bare = seq.clone();
    bare.steps.iter_mut().for_each(|st| st.expect = None);
    crate::seq::codec::encode(&bare)
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// Run `seq` on the model as the real run `real` saw it: its host facts, leaves where it has a
/// view, and each concurrent group as the serialization that explains the run best (the race
/// oracle, with a look-ahead that runs each fitting order on to the end and counts divergences).
pub fn run_model_against(seq: &Sequence, real: &RealTrace) -> Trace {
    let look = |m: &mut crate::model::Model,
                t: &mut Trace,
                ps: &mut [Vec<Finding>],
                from: usize,
                since: usize,
                opts: &RunOpts| {
        super::run::run_steps(m, seq, from, opts, t, ps);
        // The later groups' race findings count too: a GFN an earlier group left on an
        // order-dependent side shows only there (a leaf's memory against its side).
        let races = ps[since..].iter().flatten().filter(|f| f.kind == FindingKind::Race).count();
        races + diff(seq, t, real).findings.iter().filter(|f| f.step.is_none_or(|k| k >= since)).count()
    };
    let opts = RunOpts {
        host: real.host,
        leaves_at: (0..real.views.len().max(real.sept.len()))
            .map(|i| matches!(real.views.get(i), Some(Some(_))) || matches!(real.sept.get(i), Some(Some(_))))
            .collect(),
        real: Some(real),
        lookahead: Some(super::step::Lookahead(&look)),
    };
    run_model_with(seq, &opts).0
}

/// One run of `seq` on `b`, held to the model.
fn check_once(b: &mut dyn Backend, seq: &Sequence) -> RealCheck {
    match b.run(seq) {
        Ok(real) => {
            let model = run_model_against(seq, &real);
            let diff = diff(seq, &model, &real);
            let steps = real_steps(&real);
            RealCheck { model, diff, unsupported: None, pcs: real.pcs, steps }
        }
        Err(e) => {
            let model = run_model_with(seq, &RunOpts::default()).0;
            let unsupported = matches!(e, RunError::Unsupported(_)).then(|| e.to_string());
            let diff = Diff { findings: error_finding(seq, &e).into_iter().collect(), ..Default::default() };
            RealCheck { model, diff, unsupported, pcs: Vec::new(), steps: Vec::new() }
        }
    }
}

/// The comment line with which a scenario records a real kernel difference it is known to show.
pub const KNOWN_MARKER: &str = "# known-divergence: kvm ";

/// The divergence signatures a scenario's source records as known on release `k`. A marker may
/// end with `on 6.12 6.18`: the kernels that show it, as a `kernel` header line names them
/// (lines, releases, ranges; elsewhere the scenario must pass as it stands). None: every
/// marker, whatever kernel it names.
pub fn known_divergences(src: &str, k: Option<crate::seq::Release>) -> Vec<String> {
    src.lines()
        .filter_map(|l| l.strip_prefix(KNOWN_MARKER))
        .filter_map(|rest| {
            let (sig, on) = match rest.split_once(" on ") {
                Some((sig, on)) => (sig, Some(on)),
                None => (rest, None),
            };
            let shows = match (k, on) {
                (Some(k), Some(on)) => {
                    on.split_whitespace().any(|n| crate::seq::KernelRange::parse(n).is_ok_and(|r| r.contains(k)))
                }
                _ => true,
            };
            shows.then(|| sig.trim().to_string())
        })
        .collect()
}

/// Whether a recorded known divergence covers a signature, up to which guest access showed it
/// (a read, write or touch of the same GFN takes the same path in KVM).
///
/// A race finding named by one step's outcome (`race:read:model:…/real:…`) is that divergence
/// shown by a group: a recorded divergence covers it too.
pub fn same_access_divergence(recorded: &str, actual: &str) -> bool {
    match (recorded.parse::<Signature>(), actual.parse::<Signature>()) {
        (Ok(r), Ok(mut a)) => {
            if a.kind == "race" && r.kind == "divergence" && a.state.starts_with("model:") {
                a.kind = r.kind.clone();
            }
            r.covers_any_access(&a)
        }
        _ => false,
    }
}

/// The first S-EPT leaf the module and the model disagree on after step `i` (the module's is
/// the lab's software TDX module, read from its debugfs after every step).
fn sept_mismatch(
    i: usize,
    st: &crate::seq::Step,
    model: &[crate::backend::SeptLeaf],
    module: &[crate::backend::SeptLeaf],
) -> Option<Finding> {
    let m: std::collections::BTreeMap<_, _> = model.iter().map(|&(g, l, s)| ((g, l), s)).collect();
    let k: std::collections::BTreeMap<_, _> = module.iter().map(|&(g, l, s)| ((g, l), s)).collect();
    let first = m.keys().chain(k.keys()).filter(|key| m.get(key) != k.get(key)).min()?;
    let name = |s: Option<&crate::seq::SeptState>| s.map(|s| s.name()).unwrap_or("FREE");
    let (ms, ks) = (name(m.get(first)), name(k.get(first)));
    Some(Finding {
        context: String::new(),
        kind: FindingKind::Divergence,
        step: Some(i),
        op: Some(st.op.kind()),
        state: format!("sept:model:{ms}/real:{ks}"),
        detail: format!(
            "step {} `{}`: S-EPT {} at gpa {:#x}: the model has {ms}; the TDX module (simulated) has {ks}",
            i + 1,
            print_op(&st.op),
            first.1.name(),
            first.0 << 12
        ),
    })
}
