//! `privmem lab [--kernel BZIMAGE] [--init PRIVMEM] [--time S] [--json] [FILE...]`: boot the lab
//! kernel under QEMU TCG, replay the scenarios against its KVM (default: every default-VM and
//! SW_PROTECTED scenario of corpus/), then fuzz it for `--time` seconds, and report here.

use super::events::Event;
use super::load;
use crate::backend::caps::Caps;
use crate::lab;
use crate::oracle::diff::{known_divergences, same_access_divergence};
use crate::report::records::{FindingOrigin, FoundOn, FuzzSummary, LabRecord, Record, ScenarioResult, Verdict};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use super::lab_build::{build_init, default_kernel, repo, BUILD_INIT};

pub fn run(a: &super::commands::LabArgs) -> Result<i32, String> {
    if a.baseline.as_deref().is_some() {
        return super::lab_baseline::run(a);
    }
    let out = PathBuf::from(a.c.out.as_deref().unwrap_or("findings"));
    crate::report::prepare_out_dir(&out)?;
    if let Some(j) = a.c.junit.as_deref() {
        crate::report::check_out_file(Path::new(j))?;
    }
    // TAP replaces the per-scenario lines and the summary.
    let tap = a.tap;
    let json = a.json || tap;
    let user_kernel = a.kernel.as_deref().is_some_and(|k| !matches!(k, "6.12" | "7.3"));
    // `--kernel 6.12` names a lab version, as `--baseline` takes it.
    let version =
        a.kernel_version.as_deref().or(a.kernel.as_deref().filter(|k| matches!(*k, "6.12" | "7.3"))).unwrap_or("6.12");
    if !matches!(version, "6.12" | "7.3") {
        return Err(format!("--kernel-version: `{version}` is not a lab kernel (6.12, 7.3)"));
    }
    let kernel = match a.kernel.as_deref() {
        Some(k) if user_kernel => PathBuf::from(k),
        _ => default_kernel(version)?,
    };
    let init = match a.init.as_deref() {
        Some(i) => PathBuf::from(i),
        None => build_init()?,
    };
    let init_bin = std::fs::read(&init).map_err(|e| format!("{}: {e}; {BUILD_INIT}", init.display()))?;
    // `--exec`: the FILEs are programs to run in the lab, not scenarios.
    let exec = a.exec;
    // `--emulated`: the TD and SNP shims on the lab's KVM, the model answering what they trap
    // on (the corpus's TDX and SNP scenarios unless FILEs are named).
    let emulated = a.emulated;
    let files = if exec {
        a.positional.iter().map(PathBuf::from).collect()
    } else if emulated {
        super::lab_files::emulated_files(&a.positional)
    } else {
        super::lab_files::lab_files(&a.positional)?
    };
    let mut payload = Vec::new();
    let mut names = Vec::new();
    for f in &files {
        if !exec {
            load(&f.display().to_string())?;
        }
        let shown = f.strip_prefix(repo()).unwrap_or(f).display().to_string();
        let name = shown.replace(['/', '\\'], "__");
        payload.push((name.clone(), std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?));
        names.push((name, PathBuf::from(shown)));
    }
    let time = a.c.time.unwrap_or(0);
    let runs = a.c.runs;
    let fuzz = time > 0 || runs.is_some();
    // Divergences the corpus records as known kernel differences do not fail the run.
    // Which are known depends on the release the lab kernel reports (its caps line comes first).
    let corpus_sources: Vec<String> = crate::known::sources(&[]);
    let mut known: Vec<String> = Vec::new();
    // As many lab VMs at once as the machine has cores (TCG is CPU bound): the first replays
    // the scenarios, and the campaign's runs are split between all, each with its own seed.
    let jobs = a.jobs.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get() as u64).unwrap_or(1));
    let jobs = jobs.clamp(1, if fuzz { 16 } else { 1 });
    let seed = a.c.seed;
    let per_job_args = |j: u64| -> Vec<String> {
        let mut args: Vec<String> = vec!["caps".into(), "--json".into()];
        if j == 0 {
            if exec {
                args.extend(["--next--", "exec"].map(String::from));
            } else if emulated {
                args.extend(["--next--", "replay", "--backend", "emulated", "--json"].map(String::from));
            } else {
                args.extend(["--next--", "replay", "--backend", "kvm", "--json"].map(String::from));
            }
            args.extend(names.iter().map(|(n, _)| format!("/corpus/{n}")));
        }
        if fuzz {
            args.extend(["--next--", "fuzz", "--backend", "kvm", "--json", "--out", "/tmp/findings"].map(String::from));
            args.extend(["--vm".to_string(), a.vm.as_deref().unwrap_or("sw-protected").to_string()]);
            match runs {
                Some(r) => args.extend(["--runs".to_string(), (r / jobs + (j < r % jobs) as u64).to_string()]),
                None => args.extend(["--time".to_string(), time.to_string()]),
            }
            if let Some(seed) = seed {
                args.extend(["--seed".to_string(), seed.wrapping_add(j).to_string()]);
            }
            if a.c.fresh_vm {
                args.push("--fresh-vm".into());
            }
            if a.c.no_view {
                args.push("--no-view".into());
            }
            if a.c.no_feedback {
                args.push("--no-feedback".into());
            }
            if std::env::var_os("PRIVMEM_LAB_VERBOSE").is_some() {
                args.push("--print-cases".into());
            }
            if a.profile {
                args.push("--profile".into());
            }
        }
        args
    };
    let limit = Duration::from_secs(a.timeout.unwrap_or(240 + time + runs.unwrap_or(0)));
    if !json {
        eprintln!(
            "lab: booting {} with {} scenarios{} ({jobs} lab VM{} at once)",
            kernel.display(),
            files.len(),
            if fuzz { ", then a fuzz campaign".to_string() } else { String::new() },
            if jobs > 1 { "s" } else { "" }
        );
    }
    let started = std::time::Instant::now();
    let boots: Vec<Result<Vec<String>, String>> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..jobs)
            .map(|j| {
                let initrd_bytes = lab::initramfs(&init_bin, &per_job_args(j), &payload);
                let kernel = &kernel;
                sc.spawn(move || {
                    let initrd = std::env::temp_dir().join(format!("privmem-lab-{}-{j}.cpio", std::process::id()));
                    std::fs::write(&initrd, &initrd_bytes).map_err(|e| format!("{}: {e}", initrd.display()))?;
                    let lines = lab::boot(kernel, &initrd, limit, |l| {
                        if std::env::var_os("PRIVMEM_LAB_VERBOSE").is_some() {
                            eprintln!("lab{j}| {l}");
                        }
                    });
                    let _ = std::fs::remove_file(&initrd);
                    lines
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("lab VM thread panicked".into()))).collect()
    });
    let wall = started.elapsed().as_secs_f64();
    let mut lines = Vec::new();
    let mut completed = 0;
    for (j, b) in boots.into_iter().enumerate() {
        let l = b?;
        let console: Vec<&String> = l.iter().filter(|x| !x.starts_with('{')).collect();
        let tail: Vec<&str> = console.iter().rev().take(30).rev().map(|x| x.as_str()).collect();
        if let Some((cmd, rc)) = l.iter().find_map(|x| lab::failed_command(x)) {
            // A command that could not run (an error, or a panic) is not a clean lab: a
            // campaign that never started reported "0 fuzz cases" and passed.
            eprintln!("lab: `privmem {cmd}` failed in lab VM {j} (exit {rc}); its console ends:\n{}", tail.join("\n"));
        } else if l.iter().any(|x| x.starts_with(lab::DONE)) {
            completed += 1;
        } else {
            // The VM died before its commands finished (a kernel panic, most likely): show why.
            eprintln!("lab: VM {j} stopped before its commands finished; its console ends:\n{}", tail.join("\n"));
        }
        lines.extend(l);
    }

    let (mut passed, mut failed, mut skipped, mut fuzz_findings) = (0, 0, 0, Vec::new());
    let (mut mapping_checks, mut mapped_unchecked, mut written) = (0u64, 0u64, Vec::new());
    // A lab finding replays in the lab, on the same kernel.
    let replay_cmd = if user_kernel {
        format!("privmem lab --kernel {}", kernel.display())
    } else {
        format!("privmem lab --kernel-version {version}")
    };
    // The build's key (the source package version and config fragments' hash) names the config.
    let config_key =
        kernel.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix("bzImage-")).map(String::from);
    let mut lab_caps: Option<Caps> = None;
    let mut fuzz_summaries: Vec<FuzzSummary> = Vec::new();
    let mut reached = std::collections::BTreeSet::new();
    let mut results: Vec<ScenarioResult> = Vec::new();
    // Shown by their corpus path, as the scenarios were named.
    let shown = |file: &str| {
        names
            .iter()
            .find(|(n, _)| file.ends_with(n.as_str()))
            .map(|(_, p)| p.display().to_string())
            .unwrap_or(file.into())
    };
    // Each line read once, through the records' and events' one schema (report/records.rs,
    // cli/events.rs); console text and lines of no known record pass by.
    let mut profiles = Vec::new();
    for l in &lines {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else { continue };
        if let Some(p) = lab::profile::ProfileRecord::from_value(&v) {
            profiles.push(p?);
            continue;
        }
        if let Some(c) = Caps::from_value(&v) {
            let c = c?;
            if !json {
                println!(
                    "lab: kernel Linux {}, modelled as {}",
                    c.release,
                    c.kernel.map(|k| k.to_string()).unwrap_or("each scenario's kernel".into())
                );
                if let Some(d) = &c.drift {
                    println!("lab: {d}");
                }
            }
            known = corpus_sources.iter().flat_map(|s| known_divergences(s, c.kernel)).collect();
            lab_caps = Some(c);
        } else if let Some(r) = ScenarioResult::from_value(&v) {
            let mut r = r?;
            r.file = shown(&r.file);
            mapping_checks += r.mapping_checks.unwrap_or(0);
            let word = if r.emulated { "emulated " } else { "" };
            match r.verdict() {
                Verdict::Skipped => {
                    skipped += 1;
                    if !json {
                        println!("skip  {}: {}", r.file, r.skipped.as_deref().unwrap_or(""));
                    }
                }
                Verdict::Passed => {
                    passed += 1;
                    match &r.counts {
                        Some(c) if !json => println!(
                            "emulated ok   {}: {} guest steps through the shim, {} traps, {} injected",
                            r.file, c.shim_steps, c.traps, c.injected
                        ),
                        _ if !json => println!("ok    {}", r.file),
                        _ => {}
                    }
                }
                Verdict::Failed => {
                    failed += 1;
                    if !json {
                        println!("{word}FAIL  {}", r.file);
                        for d in r.failure_details() {
                            println!("      {d}");
                        }
                    }
                }
            }
            results.push(r);
        } else {
            let event = v.get("event").is_some().then(|| serde_json::from_value::<Event>(v).unwrap_or(Event::Other));
            match event {
                Some(Event::Finding(f)) => {
                    if known.iter().any(|k| same_access_divergence(k, &f.signature)) {
                        if !json {
                            println!("fuzz found the known divergence {}", f.signature);
                        }
                        continue;
                    }
                    // Written here as `privmem fuzz` writes its own, atomically, as they arrive.
                    let c = lab_caps.clone();
                    let origin = FindingOrigin {
                        backend: "lab".into(),
                        label: f.label.clone(),
                        known: f.known,
                        kernel: Some(kernel.display().to_string()),
                        found_on: FoundOn {
                            privmem: crate::report::privmem_version(),
                            model_kernel: c.as_ref().and_then(|c| c.kernel).map(|k| k.to_string()),
                            kernel_release: c.as_ref().map(|c| c.release.clone()),
                            drift: c.as_ref().and_then(|c| c.drift.clone()),
                            lab_config: config_key.clone(),
                            caps: c,
                        },
                        ..Default::default()
                    };
                    let path = crate::report::write_finding_files(&out, &f.finding, &f.sequence, &replay_cmd, origin)
                        .map_err(|e| format!("{}: {e}", out.display()))?;
                    written.push(path.display().to_string());
                    if !json {
                        println!("fuzz finding {} ({}):\n{}", f.signature, f.label, f.sequence);
                    }
                    fuzz_findings.push(f);
                }
                Some(Event::Exec(e)) => {
                    let r = match e.exit {
                        Some(0) => ScenarioResult::ran(&shown(&e.file), vec![]),
                        Some(4) => ScenarioResult::skip(&shown(&e.file), "the program skipped (exit 4)"),
                        _ => ScenarioResult::failed(&shown(&e.file), &e.output),
                    };
                    let label = match r.verdict() {
                        Verdict::Passed => {
                            passed += 1;
                            "ok   "
                        }
                        Verdict::Skipped => {
                            skipped += 1;
                            "skip "
                        }
                        Verdict::Failed => {
                            failed += 1;
                            "FAIL "
                        }
                    };
                    if !json {
                        println!(
                            "{label} {} (exit {})",
                            r.file,
                            e.exit.map(|c| c.to_string()).unwrap_or("none".into())
                        );
                        if r.verdict() == Verdict::Failed {
                            for l in e.output.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev() {
                                println!("      {l}");
                            }
                        }
                    }
                    results.push(r);
                }
                Some(Event::Coverage(c)) => {
                    reached.extend(c.pcs.iter().filter_map(|p| u64::from_str_radix(p, 16).ok()));
                }
                Some(Event::Summary(f)) => {
                    mapping_checks += f.mapping_checks;
                    mapped_unchecked += f.mapped_unchecked;
                    if !json {
                        println!(
                            "lab fuzz: {} cases in {:.0}s, {} distinct findings",
                            f.cases,
                            f.seconds,
                            f.findings.len()
                        );
                    }
                    fuzz_summaries.push(f);
                }
                Some(Event::Other) | None => {}
            }
        }
    }
    let done = completed == jobs;
    // A lab whose first case could not run at all is broken, not a kernel with N bugs: say so
    // with the console, and do not count findings.
    let first = results.iter().find(|r| r.verdict() != Verdict::Skipped);
    let setup_failed =
        first.is_some_and(|r| r.signatures.iter().any(|x| x.starts_with("timeout:") || x.starts_with("setup:")));
    if setup_failed {
        let console: Vec<&String> = lines.iter().filter(|l| !l.starts_with('{')).collect();
        let tail = console.iter().rev().take(40).rev().map(|l| l.as_str()).collect::<Vec<_>>().join("\n");
        return Err(format!(
            "the lab could not run its first case ({}); a setup error, not a finding. Console:\n{tail}",
            first.and_then(|r| r.failure_details().into_iter().next()).unwrap_or("?".into())
        ));
    }
    match &lab_caps {
        Some(c) => {
            let mut missing = Vec::new();
            if !c.sw_protected {
                missing.push("VM type 1 (KVM_X86_SW_PROTECTED_VM) in KVM_CAP_VM_TYPES");
            }
            if c.memory_attributes & u64::from(kvm_bindings::KVM_MEMORY_ATTRIBUTE_PRIVATE) == 0 {
                missing.push("KVM_MEMORY_ATTRIBUTE_PRIVATE in KVM_CAP_MEMORY_ATTRIBUTES");
            }
            if !missing.is_empty() {
                let msg = format!("the lab kernel lacks: {}", missing.join("; "));
                if user_kernel {
                    return Err(msg);
                }
                eprintln!("lab: {msg}");
            }
        }
        None => {
            return Err(format!(
                "the lab VM printed no capabilities; last lines:\n{}",
                lines.iter().rev().take(15).rev().cloned().collect::<Vec<_>>().join("\n")
            ))
        }
    }
    let fuzz_cases: u64 = fuzz_summaries.iter().map(|f| f.cases).sum();
    let profile = lab::profile::merge(&profiles).map(|p| lab::profile::LabProfile::of(&kernel, p));
    if let (Some(p), false) = (&profile, json) {
        p.print(25);
    }
    let mut coverage = None;
    if let Some(page) = a.coverage.as_deref() {
        let c = lab::coverage::lab_page(&kernel, &reached, Path::new(page))?;
        if !json {
            println!("lab: kernel coverage: {} distinct PCs; page written to {page}", reached.len());
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
        crate::report::junit::write(Path::new(j), "privmem-lab", &results).map_err(|e| format!("{j}: {e}"))?;
    }
    if tap {
        print!("{}", crate::report::tap::tap(&results));
        if crate::report::tap::all_skipped(&results) && fuzz_findings.is_empty() {
            return Ok(4);
        }
    } else if json {
        let r = LabRecord {
            passed,
            failed,
            skipped,
            fuzz_findings,
            fuzz: fuzz_summaries,
            completed: done,
            jobs,
            wall_seconds: wall,
            fuzz_cases,
            pcs: reached.len(),
            coverage,
            mapping_checks,
            mapped_unchecked,
            files: written,
            kernel_release: lab_caps.as_ref().map(|c| c.release.clone()),
            model_kernel: lab_caps.as_ref().and_then(|c| c.kernel).map(|k| k.to_string()),
            drift: lab_caps.as_ref().and_then(|c| c.drift.clone()),
            results,
            profile,
        };
        println!("{}", r.to_json());
        return Ok(lab_exit(done, failed, r.fuzz_findings.len()));
    } else {
        println!(
            "lab: mapping view: {mapping_checks} GFN comparisons, {mapped_unchecked} fuzz cases mapped but unchecked"
        );
        if fuzz {
            println!("lab: {fuzz_cases} fuzz cases on {jobs} lab VMs, {wall:.1}s wall time in all (boot and corpus included)");
        }
        for w in &written {
            println!("lab: finding written to {w}");
        }
        println!("lab: {passed} passed, {failed} failed, {skipped} skipped; {} fuzz findings", fuzz_findings.len());
    }
    Ok(lab_exit(done, failed, fuzz_findings.len()))
}

/// 2: a lab VM did not finish; 1: a scenario failed or the campaign found something new.
fn lab_exit(done: bool, failed: usize, findings: usize) -> i32 {
    if !done {
        2
    } else if failed > 0 || findings > 0 {
        1
    } else {
        0
    }
}
