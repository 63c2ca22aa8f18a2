//! `privmem lab --kernel A --baseline B [--runs N --seed S] [FILE...]`: the same cases (the
//! corpus's default and SW_PROTECTED scenarios, or the FILEs, plus N cases generated from seed S)
//! on two lab kernels side by side, reporting only the cases whose kernel outcomes or mapping
//! levels differ between them: what a developer of a patch series runs before posting it. A
//! difference the model predicts too (a rule of `model/kernel.rs` differs between the two
//! kernels' releases, as each lab reports its own) is marked as explained; the others are what
//! to look at. The other direction is listed too: a difference the model's rules predict that
//! the two kernels do not show (a stable backport the table lacks, as 6.12.118's binding rework
//! was).
//!
//! Exit codes, for `git bisect run`: 0 no unexplained difference and no missed prediction, 1
//! some, 2 the run failed.

use super::commands::LabArgs;
use super::lab_build::{build_init, repo, resolve_kernel};
use super::lab_files::lab_files;
use crate::backend::caps::Caps;
use crate::campaign::{Campaign, CampaignConfig};
use crate::lab::plan::{Job, Plan, ReplayOn};
use crate::lab::{self, VmSpec};
use crate::oracle::diff::RealStep;
use crate::oracle::run_model;
use crate::report::records::{BaselineRecord, Difference};
use crate::seq::gen::GenConfig;
use crate::seq::{text, Release, VmType};
use std::collections::BTreeMap;
use std::time::Duration;

/// One kernel's results: per file, the case as that lab adapted it and its per-step real
/// outcomes, or why it was skipped.
type Results = BTreeMap<String, Result<(String, Vec<RealStep>), String>>;

/// A lab's results and what it said of its kernel.
struct LabRun {
    results: Results,
    caps: Option<Caps>,
}

fn run_on(
    kernel: &std::path::Path,
    init: &[u8],
    payload: &[(String, Vec<u8>)],
    limit: Duration,
) -> Result<LabRun, String> {
    let files: Vec<String> = payload.iter().map(|(n, _)| n.clone()).collect();
    let plan = Plan {
        jobs: vec![Job::Caps, Job::Replay { on: ReplayOn::Kvm, files, adapt: true }],
        deadline_secs: limit.as_secs(),
    };
    let spec = VmSpec { initrd: lab::initramfs(init, &plan, payload), names: Vec::new(), mode: Default::default() };
    let vm = lab::run_vms(kernel, vec![spec], limit, &|_, _, _| {}).pop().expect("one VM")?;
    if let Some(why) = vm.problem() {
        return Err(format!("the lab VM on {}: {why}; its console ends:\n{}", kernel.display(), vm.console_tail(30)));
    }
    let mut r = Results::new();
    for x in vm.c.seen.results {
        let name = x.file.rsplit('/').next().unwrap_or(&x.file).to_string();
        let entry = match x.skipped {
            Some(why) => Err(why),
            None => Ok((x.adapted.unwrap_or_default(), x.real.unwrap_or_default())),
        };
        r.insert(name, entry);
    }
    Ok(LabRun { results: r, caps: vm.c.seen.caps })
}

/// What the comparison of two labs' results found.
#[derive(Debug, Default)]
struct Compared {
    compared: usize,
    explained: usize,
    unexplained: usize,
    one_sided: usize,
    predicted_absent: usize,
    diffs: Vec<Difference>,
}

impl Compared {
    /// A case both labs ran that is not compared step by step, for the same reason on both.
    fn not_compared(&mut self, case: &str, runs_on_one_only: bool, why: &str) {
        self.one_sided += 1;
        let why = Some(why.to_string());
        self.diffs.push(Difference::OneSided {
            case: case.into(),
            runs_on_one_only,
            kernel: why.clone(),
            baseline: why,
        });
    }
}

/// Compare the two labs' results case by case, both ways: differences that happened (explained
/// by the model as each release, or by corpus/known, or not) and differences the model as each
/// release predicts that did not happen. Pure: the labs have already run.
fn compare(
    cases: &[(String, String)],
    ra: &Results,
    rb: &Results,
    na: Option<Release>,
    nb: Option<Release>,
) -> Result<Compared, String> {
    let mut c = Compared::default();
    for (name, src) in cases {
        let (Some(x), Some(y)) = (ra.get(name), rb.get(name)) else {
            return Err(format!("{name}: a lab VM gave no result for it"));
        };
        let ((sx, x), (sy, y)) = match (x, y) {
            (Ok(x), Ok(y)) => (x, y),
            (Err(_), Err(_)) => continue,
            (x, y) => {
                c.one_sided += 1;
                c.diffs.push(Difference::OneSided {
                    case: name.clone(),
                    runs_on_one_only: true,
                    kernel: x.as_ref().err().cloned(),
                    baseline: y.as_ref().err().cloned(),
                });
                continue;
            }
        };
        // Each lab made the case runnable on its kernel; where they made it differently there is
        // no like-for-like comparison.
        if sx != sy {
            c.not_compared(name, true, "adapted to its kernel differently");
            continue;
        }
        let seq = text::parse(name, sx).map_err(|e| format!("the lab's adapted case: {e}"))?;
        // Two kernels may serialize a concurrent group differently (a corpus race scenario):
        // the race oracle judged each kernel on its own; step by step there is nothing to compare.
        if seq.has_groups() {
            c.not_compared(name, false, "concurrent groups: each kernel serializes them its own way");
            continue;
        }
        c.compared += 1;
        // The model run as each kernel's release, every step's outcome.
        let model_as = |k: Option<Release>| {
            k.map(|k| {
                let mut s = seq.clone();
                s.header.set_kernel(k);
                run_model(&s).outcomes.iter().map(text::print_outcome).collect::<Vec<_>>()
            })
        };
        let (pa, pb) = (model_as(na), model_as(nb));
        // The first step where the model as each release differs, and where the kernels do.
        let predicted = match (&pa, &pb) {
            (Some(p), Some(q)) => (0..p.len().max(q.len())).find(|&i| p.get(i) != q.get(i)),
            _ => None,
        };
        let happened = (0..x.len().max(y.len())).find(|&i| x.get(i) != y.get(i));
        // A prediction before the kernels' first difference (or with none) did not happen.
        if let (Some(at), Some(p), Some(q)) = (predicted, &pa, &pb) {
            if happened.is_none_or(|h| at < h) {
                c.predicted_absent += 1;
                c.diffs.push(Difference::Predicted {
                    case: name.clone(),
                    predicted_step: at + 1,
                    op: seq.steps.get(at).map(|s| text::print_op(&s.op)).unwrap_or_default(),
                    model_kernel: p.get(at).cloned().unwrap_or_default(),
                    model_baseline: q.get(at).cloned().unwrap_or_default(),
                    sequence: text::print(&seq),
                });
            }
        }
        let Some(step) = happened else { continue };
        // Explained: the model, run as each kernel, differs first at that very step.
        let known = |k: Option<Release>| crate::oracle::diff::known_divergences(src, k);
        let why = match predicted {
            Some(at) if at == step => Some("the model's kernel rules differ here"),
            _ if na.is_some() && nb.is_some() && known(na) != known(nb) => {
                Some("corpus/known records a kernel bug on one of the two")
            }
            _ => None,
        };
        if why.is_some() {
            c.explained += 1;
        } else {
            c.unexplained += 1;
        }
        let op = seq.steps.get(step).map(|s| text::print_op(&s.op)).unwrap_or_default();
        c.diffs.push(Difference::Step {
            case: name.clone(),
            step: step + 1,
            op,
            kernel: x.get(step).cloned(),
            baseline: y.get(step).cloned(),
            explained: why.map(String::from),
            sequence: text::print(&seq),
        });
    }
    Ok(c)
}

/// A lab's modelled release in words.
fn name_of(k: Option<Release>) -> String {
    k.map(|k| k.to_string()).unwrap_or("an unmodelled release".into())
}

pub fn run(a: &LabArgs) -> Result<i32, String> {
    let ka = resolve_kernel(a.kernel.as_deref().unwrap_or(lab::kernels::default().name))?;
    let kb = resolve_kernel(a.baseline.as_deref().expect("caller checked"))?;
    let init = build_init()?;
    let init = std::fs::read(&init).map_err(|e| format!("{}: {e}", init.display()))?;
    let json = a.json;
    // The cases: scenarios by file, then generated ones, all as text.
    let mut cases: Vec<(String, String)> = Vec::new();
    for f in lab_files(&a.positional)? {
        let src = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        let shown = f.strip_prefix(repo()).unwrap_or(&f).display().to_string();
        super::load(&f.display().to_string())?;
        cases.push((shown.replace(['/', '\\'], "__"), src));
    }
    let runs = a.c.runs.unwrap_or(0);
    let seed = a.c.seed.unwrap_or(1);
    let vm = match a.vm.as_deref().unwrap_or("sw-protected") {
        "default" => VmType::Default,
        "sw-protected" => VmType::SwProtected,
        other => return Err(format!("--vm: the lab runs default or sw-protected VMs, not `{other}`")),
    };
    // No concurrent groups: two kernels' outcomes are compared step by step, and a race may
    // serialize either way on each.
    let gen = GenConfig {
        vm: Some(vm),
        variant: None,
        max_ops: 24,
        hazards: Vec::new(),
        groups: false,
        large_conversions: false,
        finalized: false,
    };
    let mut c = Campaign::new(CampaignConfig { gen, against: None, seed, ignore: Vec::new() });
    c.feedback = false;
    for i in 0..runs {
        let s = c.next_case();
        cases.push((format!("generated__seed{seed}-case{i:04}.seq"), text::print(&s)));
    }
    let payload: Vec<(String, Vec<u8>)> = cases.iter().map(|(n, src)| (n.clone(), src.clone().into_bytes())).collect();
    let limit = Duration::from_secs(a.timeout.unwrap_or(240 + runs));
    if !json {
        eprintln!("lab: {} cases on {} and on {} (baseline), side by side", cases.len(), ka.display(), kb.display());
    }
    let (ra, rb) = std::thread::scope(|sc| {
        let ha = sc.spawn(|| run_on(&ka, &init, &payload, limit));
        let hb = sc.spawn(|| run_on(&kb, &init, &payload, limit));
        (ha.join().unwrap_or(Err("lab thread panicked".into())), hb.join().unwrap_or(Err("lab thread panicked".into())))
    });
    let (ra, rb) = (ra?, rb?);
    // The releases each lab's kernel is modelled as; a drift (a release past the table) is said.
    let (na, nb) = (ra.caps.as_ref().and_then(|c| c.kernel), rb.caps.as_ref().and_then(|c| c.kernel));
    let drifts: Vec<String> = [&ra, &rb].iter().filter_map(|r| r.caps.as_ref()?.drift.clone()).collect();
    let (ra, rb) = (ra.results, rb.results);
    let Compared { compared, explained, unexplained, one_sided, predicted_absent, diffs } =
        compare(&cases, &ra, &rb, na, nb)?;
    if json {
        let r = BaselineRecord {
            kernel: ka.display().to_string(),
            baseline: kb.display().to_string(),
            cases: cases.len(),
            compared,
            explained,
            unexplained,
            predicted_absent,
            model_kernel: na.map(|k| k.to_string()),
            model_baseline: nb.map(|k| k.to_string()),
            drift: drifts.clone(),
            one_sided,
            differences: diffs,
        };
        crate::wire::print(r);
    } else {
        let side = |s: &Option<RealStep>| match s {
            Some(r @ RealStep { leaves: Some([a, b, c]), .. }) => {
                format!("{} (leaves 4K/2M/1G: {a}/{b}/{c})", r.outcome_text())
            }
            Some(r @ RealStep { leaves: None, .. }) => r.outcome_text(),
            None => "-".into(),
        };
        for d in &diffs {
            match d {
                Difference::OneSided { case, kernel, baseline, runs_on_one_only } => {
                    let q = |x: &Option<String>| x.as_deref().map(|x| format!("{x:?}")).unwrap_or("null".into());
                    let what = if *runs_on_one_only { "only one kernel runs" } else { "not compared step by step:" };
                    println!("{what} {case:?}: {} / {}", q(kernel), q(baseline));
                }
                Difference::Predicted { case, predicted_step, op, model_kernel, model_baseline, sequence } => {
                    println!(
                        "MISS  {case} step {predicted_step}: `{op}`\n  the model predicts {}: {model_kernel}, {}: {model_baseline}\n  both kernels gave the same outcome: a rule of model/kernel.rs does not hold on one of them (a stable backport?)",
                        name_of(na),
                        name_of(nb)
                    );
                    sequence.lines().for_each(|l| println!("      {l}"));
                }
                Difference::Step { case, step, op, kernel, baseline, explained, sequence } => {
                    println!(
                        "{} {case} step {step}: `{op}`\n  {}: {}\n  {}: {}",
                        if explained.is_none() { "DIFF " } else { "known" },
                        ka.display(),
                        side(kernel),
                        kb.display(),
                        side(baseline)
                    );
                    match explained {
                        Some(why) => println!("  ({why})"),
                        None => sequence.lines().for_each(|l| println!("      {l}")),
                    }
                }
            }
        }
        for d in &drifts {
            println!("lab baseline: {d}");
        }
        println!(
            "lab baseline: {} as {} against {} as {}: {} cases, {compared} run on both: {unexplained} differ unexplained, {explained} differ as the model's kernel rules or corpus/known say, {predicted_absent} differences the model predicts did not happen, {one_sided} run on one kernel only",
            ka.display(),
            name_of(na),
            kb.display(),
            name_of(nb),
            cases.len()
        );
    }
    Ok(if unexplained > 0 || predicted_absent > 0 { 1 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Observed;
    use crate::seq::{Errno, Outcome};
    use Errno::{EEXIST, EINVAL};

    const REBIND: &str = "vm sw-protected\ngmem g size=4M\nslot 0 gpa=0x100000000 size=2M gmem=g offset=0\n\
                          slot-add 1 gpa=0x200000000 size=2M gmem=g offset=1M\n";

    /// One lab's results for the rebind case: its adapted text and each step's outcome.
    fn lab(outcome: Errno) -> Results {
        let step = |e| RealStep { outcome: Observed::Outcome(Outcome::Err(e)), leaves: Some([0, 0, 0]) };
        [("rebind.seq".to_string(), Ok((REBIND.to_string(), vec![step(outcome)])))].into_iter().collect()
    }

    fn run(a: Errno, b: Errno, na: Release, nb: Release) -> Compared {
        let cases = [("rebind.seq".to_string(), REBIND.to_string())];
        compare(&cases, &lab(a), &lab(b), Some(na), Some(nb)).unwrap()
    }

    const R6_12_117: Release = Release::new(6, 12, 117);
    const R6_12_118: Release = Release::new(6, 12, 118);
    const R7_3_4: Release = Release::new(7, 3, 4);

    #[test]
    fn a_difference_the_rules_predict_is_known() {
        let c = run(EINVAL, EEXIST, R6_12_117, R7_3_4);
        assert_eq!((c.compared, c.explained, c.unexplained, c.predicted_absent), (1, 1, 0, 0));
    }

    #[test]
    fn a_predicted_difference_that_did_not_happen_is_a_miss() {
        // 6.12.118 took the backport, but a table without it would predict EINVAL there: as
        // 6.12.117 against 7.3.4 with both kernels saying EEXIST.
        let c = run(EEXIST, EEXIST, R6_12_117, R7_3_4);
        assert_eq!((c.unexplained, c.predicted_absent), (0, 1));
        match &c.diffs[..] {
            [Difference::Predicted { predicted_step: 1, model_kernel, model_baseline, .. }] => {
                assert_eq!((model_kernel.as_str(), model_baseline.as_str()), ("err EINVAL", "err EEXIST"))
            }
            d => panic!("{d:?}"),
        }
        // With the backport in the table nothing is predicted, and nothing happened.
        let c = run(EEXIST, EEXIST, R6_12_118, R7_3_4);
        assert_eq!((c.explained, c.unexplained, c.predicted_absent), (0, 0, 0));
        assert!(c.diffs.is_empty());
    }

    /// A corpus race scenario: each kernel may serialize its group its own way, so a different
    /// outcome inside the group is no difference between the kernels.
    #[test]
    fn a_case_with_groups_is_not_compared_step_by_step() {
        let src = "vm default\nvcpus 2\nslot 7 gpa=0x100000000 size=2M\nvcpu0 write 0x100001000 0x7\n\
                   together {\n    slot-delete 7\n    vcpu1 read 0x100001000\n}\n";
        let lab = |o: Outcome| -> Results {
            let step = |o| RealStep { outcome: Observed::Outcome(o), leaves: Some([0, 0, 0]) };
            let steps = vec![step(Outcome::Ok), step(Outcome::Ok), step(o)];
            [("race.seq".to_string(), Ok((src.to_string(), steps)))].into_iter().collect()
        };
        let cases = [("race.seq".to_string(), src.to_string())];
        let c =
            compare(&cases, &lab(Outcome::Value(7)), &lab(Outcome::Exit(crate::seq::Exit::Mmio)), None, None).unwrap();
        assert_eq!((c.compared, c.unexplained, c.one_sided), (0, 0, 1));
    }

    #[test]
    fn a_difference_nothing_predicts_is_unexplained() {
        let c = run(EINVAL, EEXIST, R6_12_118, R7_3_4);
        assert_eq!((c.explained, c.unexplained, c.predicted_absent), (0, 1, 0));
    }
}
