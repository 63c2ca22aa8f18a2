//! `privmem lab [--kernel BZIMAGE|NAME] [--time S|--runs N] [--json] [FILE...]`: boot a lab
//! kernel under QEMU TCG, replay the scenarios against its KVM (default: every default-VM and
//! SW_PROTECTED scenario of corpus/), then fuzz it, and report here. Glue: the plan is
//! `lab/plan.rs`, the VMs' lines are read by `lab/collect.rs`; this file says what it saw.

use super::commands::LabArgs;
use super::load;
use crate::backend::caps::Caps;
use crate::lab::collect::{LabOutcome, VmOutcome};
use crate::lab::plan::{Budget, FuzzJob, Job, Plan, ReplayOn};
use crate::lab::record::LabRecord;
use crate::lab::{self, kernels, VmSpec};
use crate::oracle::diff::{known_divergences, same_access_divergence};
use crate::oracle::progress::StuckCase;
use crate::oracle::{Finding, FindingKind};
use crate::report::records::{FindingEvent, FindingOrigin, FoundOn, ScenarioResult, Verdict};
use crate::wire::Line;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use super::lab_build::{build_init, default_kernel, repo, tdx_kernel, BUILD_INIT};

/// The lab kernel a run boots, and how a finding's replay names it.
struct Kernel {
    path: PathBuf,
    replay_cmd: String,
    /// A kernel the user built: what it lacks is an error, not a note.
    user: bool,
    /// The build's key (source version and config fragments' hash): names the config.
    config_key: Option<String>,
    /// Booted with privmem's software TDX module (`--tdx`): every finding says so.
    simulated_tdx: bool,
}

fn kernel_of(a: &LabArgs) -> Result<Kernel, String> {
    // `--kernel 6.12` names a lab kernel as `--kernel-version` and `--baseline` do.
    let named = a.kernel.as_deref().filter(|k| kernels::named(k).is_some());
    let user = a.kernel.as_deref().filter(|_| named.is_none());
    let version = a.kernel_version.as_deref().or(named).unwrap_or(if a.tdx {
        kernels::tdx().name
    } else {
        kernels::default().name
    });
    if kernels::named(version).is_none() {
        return Err(format!("--kernel-version: `{version}` is not a lab kernel ({})", kernels::names()));
    }
    if a.tdx && version != kernels::tdx().name {
        return Err(format!(
            "--tdx: the software TDX module's flavour is built on {}, not {version}",
            kernels::tdx().name
        ));
    }
    let huge = a.tdx_huge.as_deref().map(|d| format!(" --tdx-huge={d}")).unwrap_or_default();
    let (path, replay_cmd) = match user {
        Some(k) if a.tdx => (PathBuf::from(k), format!("privmem lab --tdx{huge} --kernel {k}")),
        Some(k) => (PathBuf::from(k), format!("privmem lab --kernel {k}")),
        None if a.tdx => (tdx_kernel()?, format!("privmem lab --tdx{huge}")),
        None => (default_kernel(version)?, format!("privmem lab --kernel-version {version}")),
    };
    let config_key =
        path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix("bzImage-")).map(String::from);
    Ok(Kernel { path, replay_cmd, user: user.is_some(), config_key, simulated_tdx: a.tdx })
}

/// Each lab VM's plan: the first replays the scenarios (or runs the programs), and a campaign's
/// runs are split between all, each with its own seed.
fn plans(a: &LabArgs, jobs: u64, files: Vec<String>, deadline_secs: u64) -> Vec<Plan> {
    let fuzz = a.c.time.unwrap_or(0) > 0 || a.c.runs.is_some();
    (0..jobs)
        .map(|j| {
            let mut p = Plan { jobs: vec![Job::Caps], deadline_secs };
            if j == 0 {
                p.jobs.push(match (a.exec, a.emulated) {
                    (true, _) => Job::Exec { files: files.clone() },
                    (false, true) => Job::Replay { on: ReplayOn::Emulated, files: files.clone(), adapt: false },
                    (false, false) => Job::Replay { on: ReplayOn::Kvm, files: files.clone(), adapt: false },
                });
            }
            if fuzz {
                p.jobs.push(Job::Fuzz(FuzzJob {
                    vm: a.vm.clone().unwrap_or("sw-protected".into()),
                    budget: match a.c.runs {
                        Some(r) => Budget::Runs(r / jobs + u64::from(j < r % jobs)),
                        None => Budget::Seconds(a.c.time.unwrap_or(0)),
                    },
                    seed: a.c.seed.map(|s| s.wrapping_add(j)),
                    fresh_vm: a.c.fresh_vm,
                    no_view: a.c.no_view,
                    no_feedback: a.c.no_feedback,
                    groups: a.c.groups,
                    large_conversions: a.c.large_conversions,
                    td_finalized: a.c.td_finalized,
                    print_cases: std::env::var_os("PRIVMEM_LAB_VERBOSE").is_some(),
                    profile: a.profile,
                }));
            }
            p
        })
        .collect()
}

/// Where findings go as they arrive, from every lab VM's thread.
struct Sink<'a> {
    out: &'a Path,
    kernel: &'a Kernel,
    json: bool,
    /// The corpus's known kernel differences on the lab kernel's release, once its caps came
    /// (every lab VM runs the same kernel).
    known: std::sync::OnceLock<Vec<String>>,
    written: Mutex<Written>,
}

/// What the sink took, in the order it arrived.
#[derive(Default)]
struct Written {
    findings: Vec<FindingEvent>,
    files: Vec<String>,
    errors: Vec<String>,
}

impl Sink<'_> {
    fn origin(&self, label: &str, known: bool, caps: Option<&Caps>) -> FindingOrigin {
        FindingOrigin {
            backend: if self.kernel.simulated_tdx { "lab (TDX module simulated)" } else { "lab" }.into(),
            label: label.into(),
            known,
            kernel: Some(self.kernel.path.display().to_string()),
            found_on: FoundOn {
                privmem: crate::report::privmem_version(),
                model_kernel: caps.and_then(|c| c.kernel).map(|k| k.to_string()),
                kernel_release: caps.map(|c| c.release.clone()),
                drift: caps.and_then(|c| c.drift.clone()),
                lab_config: self.kernel.config_key.clone(),
                caps: caps.cloned(),
            },
            ..Default::default()
        }
    }

    /// Write a finding now, as `privmem fuzz` writes its own: atomically, as it arrives.
    fn write(&self, f: &FindingEvent, caps: Option<&Caps>) {
        let origin = self.origin(&f.label, f.known, caps);
        let mut new = self.written.lock().unwrap_or_else(|e| e.into_inner());
        match crate::report::write_finding_files(self.out, &f.finding, &f.sequence, &self.kernel.replay_cmd, origin) {
            Ok(path) => new.files.push(path.display().to_string()),
            Err(e) => new.errors.push(format!("{}: {e}", self.out.display())),
        }
        if !self.json {
            println!("fuzz finding {} ({}):\n{}", f.signature, f.label, f.sequence);
        }
        new.findings.push(f.clone());
    }

    /// A lab VM that ran out of time in a case its watchdog named: a finding of its own.
    /// A case the VM's time ran out in. Where the console holds a report of KVM's (an oops
    /// that killed the harness, which is the VM's init), the finding is that report: the hang
    /// is its consequence.
    fn hang(&self, vm: usize, s: &StuckCase, console: &[String], caps: Option<&Caps>) {
        let context = crate::seq::text::parse("stuck", &s.sequence).map(|q| q.header.vm.name().to_string());
        let said = format!(
            "lab VM {vm} ran out of time in case {} of `{}` (running for {} s when last named)",
            s.case, s.command, s.seconds
        );
        let splat = crate::backend::kvm::kmsg::find_splats(console).into_iter().next();
        let finding = match splat {
            Some(k) => Finding {
                kind: FindingKind::KernelSplat,
                step: None,
                op: None,
                state: k.title,
                detail: format!("{said}, after the kernel reported:\n{}", k.excerpt.join("\n")),
                context: context.unwrap_or_default(),
            },
            None => Finding {
                kind: FindingKind::Timeout,
                step: None,
                op: None,
                state: "lab-deadline".into(),
                detail: format!("{said}: a hang"),
                context: context.unwrap_or_default(),
            },
        };
        let f = FindingEvent {
            signature: finding.signature(),
            label: "hang".into(),
            known: false,
            file: String::new(),
            sequence: s.sequence.clone(),
            seconds: s.seconds as f64,
            detail: finding.detail.clone(),
            finding,
        };
        self.write(&f, caps);
    }
}

/// A scenario's result as a line for a person.
fn say_result(r: &ScenarioResult, exec: Option<Option<i32>>) {
    let word = if r.emulated { "emulated " } else { "" };
    let exit = exec.map(|c| format!(" (exit {})", c.map(|c| c.to_string()).unwrap_or("none".into())));
    match r.verdict() {
        Verdict::Skipped => println!("skip  {}: {}", r.file, r.skipped.as_deref().unwrap_or("")),
        Verdict::Passed => match &r.counts {
            Some(c) => println!(
                "emulated ok   {}: {} guest steps through the shim, {} traps, {} injected",
                r.file, c.shim_steps, c.traps, c.injected
            ),
            None => println!("ok    {}{}", r.file, exit.unwrap_or_default()),
        },
        Verdict::Failed => {
            println!("{word}FAIL  {}{}", r.file, exit.clone().unwrap_or_default());
            let details = r.failure_details();
            // A program's output: its last 20 lines.
            let keep = if exec.is_some() { 20 } else { usize::MAX };
            for d in details.iter().flat_map(|d| d.lines()).collect::<Vec<_>>().iter().rev().take(keep).rev() {
                println!("      {d}");
            }
        }
    }
}

pub fn run(a: &LabArgs) -> Result<i32, String> {
    if a.baseline.is_some() {
        return super::lab_baseline::run(a);
    }
    let out = PathBuf::from(a.c.out.as_deref().unwrap_or("findings"));
    crate::report::prepare_out_dir(&out)?;
    if let Some(j) = a.c.junit.as_deref() {
        crate::report::check_out_file(Path::new(j))?;
    }
    // TAP replaces the per-scenario lines and the summary.
    let json = a.json || a.tap;
    let kernel = kernel_of(a)?;
    let init = match a.init.as_deref() {
        Some(i) => PathBuf::from(i),
        None => build_init()?,
    };
    let init_bin = std::fs::read(&init).map_err(|e| format!("{}: {e}; {BUILD_INIT}", init.display()))?;
    // `--exec`: the FILEs are programs to run in the lab, not scenarios. `--emulated`: the TD
    // and SNP shims on the lab's KVM (the corpus's TDX and SNP scenarios unless FILEs are named).
    let files = if a.exec {
        a.positional.iter().map(PathBuf::from).collect()
    } else if a.emulated {
        super::lab_files::emulated_files(&a.positional)
    } else if a.tdx {
        super::lab_files::tdx_files(&a.positional)
    } else {
        super::lab_files::lab_files(&a.positional)?
    };
    let mut payload = Vec::new();
    let mut names = Vec::new();
    for f in &files {
        if !a.exec {
            load(&f.display().to_string())?;
        }
        let shown = f.strip_prefix(repo()).unwrap_or(f).display().to_string();
        let name = shown.replace(['/', '\\'], "__");
        payload.push((name.clone(), std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?));
        names.push((name, shown));
    }
    let (time, runs) = (a.c.time.unwrap_or(0), a.c.runs);
    let fuzz = time > 0 || runs.is_some();
    // As many lab VMs at once as the machine has cores (TCG is CPU bound).
    let jobs = a.jobs.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get() as u64).unwrap_or(1));
    let jobs = jobs.clamp(1, if fuzz { 16 } else { 1 });
    let limit = Duration::from_secs(a.timeout.unwrap_or(240 + time + runs.unwrap_or(0)));
    let file_names: Vec<String> = names.iter().map(|(n, _)| n.clone()).collect();
    let specs: Vec<VmSpec> = plans(a, jobs, file_names, limit.as_secs())
        .iter()
        .map(|p| VmSpec {
            initrd: lab::initramfs(&init_bin, p, &payload),
            names: names.clone(),
            mode: match (a.tdx, a.tdx_huge.as_deref()) {
                (true, Some(d)) => lab::BootMode::SoftTdxHuge { interruptible: d == "interruptible" },
                (true, None) => lab::BootMode::SoftTdx,
                (false, _) => lab::BootMode::Standard,
            },
        })
        .collect();
    if !json {
        if a.tdx {
            eprintln!(
                "lab: TDX module SIMULATED (privmem's software module, ci/lab/tdx/module): KVM's tdx.c, \
                 the mirror root and guest_memfd run for real; the module's own behaviour, SEAM \
                 transitions and a guest's instruction stream do not (docs/tdx-lab.md)"
            );
            if let Some(d) = a.tdx_huge.as_deref() {
                eprintln!(
                    "lab: the module offers the huge-page interface (2M AUG, DEMOTE, PROMOTE), DEMOTE {}",
                    if d == "interruptible" { "interruptible" } else { "with ENHANCED_DEMOTE_INTERRUPTIBILITY" }
                );
            }
        }
        eprintln!(
            "lab: booting {} with {} scenarios{} ({jobs} lab VM{} at once)",
            kernel.path.display(),
            files.len(),
            if fuzz { ", then a fuzz campaign" } else { "" },
            if jobs > 1 { "s" } else { "" }
        );
    }
    // Divergences the corpus records as known kernel differences do not fail the run; which
    // are known depends on the release the lab kernel reports (its caps line comes first).
    let corpus_sources: Vec<String> = crate::known::sources(&[]);
    let sink = Sink { out: &out, kernel: &kernel, json, known: Default::default(), written: Default::default() };
    let started = std::time::Instant::now();
    let on_line = |j: usize, c: &lab::collect::Collector, line: &Line| match line {
        Line::Caps(c) if j == 0 && !json => {
            println!(
                "lab: kernel Linux {}, modelled as {}",
                c.release,
                c.kernel.map(|k| k.to_string()).unwrap_or("each scenario's kernel".into())
            );
            if let Some(d) = &c.drift {
                println!("lab: {d}");
            }
        }
        Line::Replay(_) if !json => say_result(c.seen.results.last().expect("just collected"), None),
        Line::Exec(e) if !json => say_result(c.seen.results.last().expect("just collected"), Some(e.exit)),
        Line::Finding(f) => {
            let known = sink.known.get_or_init(|| {
                let release = c.seen.caps.as_ref().and_then(|c| c.kernel);
                corpus_sources.iter().flat_map(|s| known_divergences(s, release)).collect()
            });
            if known.iter().any(|k| same_access_divergence(k, &f.signature)) {
                if !json {
                    println!("fuzz found the known divergence {}", f.signature);
                }
            } else {
                sink.write(f, c.seen.caps.as_ref());
            }
        }
        Line::Summary(f) if !json => {
            println!("lab fuzz: {} cases in {:.0}s, {} distinct findings", f.cases, f.seconds, f.findings.len())
        }
        Line::Stuck(s) if !json => {
            eprintln!("lab: VM {j}: case {} of `{}` has been running for {} s", s.case, s.command, s.seconds)
        }
        _ => {}
    };
    let vms = lab::run_vms(&kernel.path, specs, limit, &on_line);
    let wall = started.elapsed().as_secs_f64();
    let vms: Vec<VmOutcome> = vms.into_iter().collect::<Result<_, _>>()?;
    // A VM out of time in a case its watchdog named: that case is a finding (a hang).
    let mut hangs = 0;
    for (j, vm) in vms.iter().enumerate() {
        if let Some(s) = vm.hang() {
            sink.hang(j, s, &vm.console, vm.c.seen.caps.as_ref());
            hangs += 1;
        }
    }
    let mut o = LabOutcome::of(&vms);
    let Written { findings: new, files: written, errors: write_errors } =
        sink.written.into_inner().unwrap_or_else(|e| e.into_inner());
    o.seen.findings = new;
    for (j, why, tail) in &o.problems {
        eprintln!("lab: VM {j}: {why}; its console ends:\n{tail}");
    }
    for e in o.unreadable.iter().chain(&write_errors) {
        eprintln!("lab: {e}");
    }
    // A lab whose first case could not run at all is broken, not a kernel with N bugs.
    if let Some(first) = &o.setup_failed {
        let tail = vms.first().map(|v| v.console_tail(40)).unwrap_or_default();
        return Err(format!(
            "the lab could not run its first case ({first}); a setup error, not a finding. Console:\n{tail}"
        ));
    }
    let Some(caps) = o.seen.caps.clone() else {
        let tail = vms.first().map(|v| v.console_tail(15)).unwrap_or_default();
        return Err(format!("the lab VM printed no capabilities; last lines:\n{tail}"));
    };
    let missing = caps.missing_for_lab(a.tdx);
    if !missing.is_empty() {
        let msg = format!("the lab kernel lacks: {}", missing.join("; "));
        if kernel.user {
            return Err(msg);
        }
        eprintln!("lab: {msg}");
    }
    let profile = lab::profile::merge(&o.seen.profiles).map(|p| lab::profile::LabProfile::of(&kernel.path, p));
    if let (Some(p), false) = (&profile, json) {
        p.print(25);
    }
    let mut coverage = None;
    if let Some(page) = a.coverage.as_deref() {
        let c = lab::coverage::lab_page(&kernel.path, &o.seen.pcs, Path::new(page))?;
        if !json {
            println!("lab: kernel coverage: {} distinct PCs; page written to {page}", o.seen.pcs.len());
            for f in &c.files {
                println!(
                    "lab:   {:32} lines {:>5}/{:<5} functions {:>4}/{}",
                    f.file, f.lines_covered, f.lines, f.functions_reached, f.functions
                );
            }
        }
        coverage = Some(c);
    }
    if let Some(j) = a.c.junit.as_deref() {
        crate::report::junit::write(Path::new(j), "privmem-lab", &o.seen.results).map_err(|e| format!("{j}: {e}"))?;
    }
    // Problems a named hang does not account for (a VM that died, a job that could not run).
    let unexplained = o.problems.len() - hangs.min(o.problems.len());
    let code = lab_exit(unexplained, o.failed, o.seen.findings.len());
    if a.tap {
        print!("{}", crate::report::tap::tap(&o.seen.results));
        if crate::report::tap::all_skipped(&o.seen.results) && o.seen.findings.is_empty() {
            return Ok(4);
        }
        return Ok(code);
    }
    let fuzz_cases = o.fuzz_cases();
    if json {
        let r = LabRecord {
            passed: o.passed,
            failed: o.failed,
            skipped: o.skipped,
            completed: o.completed as u64 == jobs,
            jobs,
            wall_seconds: wall,
            fuzz_cases,
            pcs: o.seen.pcs.len(),
            coverage,
            mapping_checks: o.mapping_checks,
            mapped_unchecked: o.mapped_unchecked,
            tdx_module: o.tdx_module.clone(),
            files: written,
            kernel_release: Some(caps.release.clone()),
            model_kernel: caps.kernel.map(|k| k.to_string()),
            drift: caps.drift.clone(),
            fuzz_findings: o.seen.findings,
            fuzz: o.seen.summaries,
            results: o.seen.results,
            profile,
        };
        Line::from(r).print();
        return Ok(code);
    }
    println!(
        "lab: mapping view: {} GFN comparisons, {} fuzz cases mapped but unchecked",
        o.mapping_checks, o.mapped_unchecked
    );
    if !o.tdx_module.is_empty() {
        let n = |k: &str| o.tdx_module.iter().find(|(name, _)| name == k).map_or(0, |(_, n)| *n);
        println!(
            "lab: vCPUs inside a TD (concurrent groups): {} host S-EPT SEAMCALLs met one, {} got OPERAND_BUSY on an \
             ACCEPT's entry ({} guest waits for the host's priority), {} TRACKs refused, {} REMOVE/DEMOTE/PROMOTE \
             refused for a vCPU still inside, {} guest runs cut short by an interrupt",
            n("met_inside"),
            n("entry_busy"),
            n("host_priority"),
            n("epoch_busy"),
            n("untracked_inside"),
            n("interrupted_runs")
        );
    }
    if fuzz {
        println!(
            "lab: {fuzz_cases} fuzz cases on {jobs} lab VMs, {wall:.1}s wall time in all (boot and corpus included)"
        );
    }
    for w in &written {
        println!("lab: finding written to {w}");
    }
    println!(
        "lab: {} passed, {} failed, {} skipped; {} fuzz findings",
        o.passed,
        o.failed,
        o.skipped,
        o.seen.findings.len()
    );
    Ok(code)
}

/// 1: a scenario failed or the lab found something new (a hang included); 2: a lab VM did not
/// finish its plan and no finding says why; 0.
fn lab_exit(problems: usize, failed: usize, findings: usize) -> i32 {
    if failed > 0 || findings > 0 {
        1
    } else if problems > 0 {
        2
    } else {
        0
    }
}
