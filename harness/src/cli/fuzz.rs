//! `privmem fuzz`: an in-process campaign on the model with a progress line, findings shrunk and
//! written atomically as they occur, and a closing summary.

use super::{parse_variant, parse_vm};
use crate::backend::kvm::KvmBackend;
use crate::campaign::{Campaign, CampaignConfig};
use crate::report::records::{FuzzSummary, Hits, ScenarioResult};
use crate::report::write_finding;
use crate::seq::gen::GenConfig;
use crate::seq::{Variant, VmType};
use crate::wire::Line;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// Where the real backend's step time went, by op kind (guest batches under their first op),
/// and in reading the kernel's view.
fn op_seconds() -> std::collections::BTreeMap<String, f64> {
    use crate::backend::kvm::OP_NANOS;
    let secs = |i: usize| OP_NANOS[i].load(Relaxed) as f64 / 1e9;
    let mut m = std::collections::BTreeMap::new();
    for k in crate::seq::OpKind::ALL {
        if secs(k as usize) > 0.0 {
            m.insert(k.name().into(), secs(k as usize));
        }
    }
    m.insert("view".into(), secs(OP_NANOS.len() - 1));
    m
}

/// `--backend`: the model (None) or this host's KVM, checked on its footing first.
fn open_backend(a: &super::commands::FuzzArgs) -> Result<Option<KvmBackend>, String> {
    match a.backend.as_deref().unwrap_or("model") {
        "model" => Ok(None),
        "kvm" => {
            let mut k = KvmBackend::open_with(!a.c.no_view)?;
            if let Some(ms) = a.timeout_ms {
                k.timeout = Duration::from_millis(ms);
            }
            // A fresh VM per case instead of a reused one.
            k.reuse = !a.c.fresh_vm;
            if a.c.large_conversions {
                crate::backend::kvm::allow_large_conversions();
            }
            k.footing().map_err(|why| format!("footing check failed, refusing to fuzz real KVM: {why}"))?;
            Ok(Some(k))
        }
        other => Err(format!("unknown backend `{other}` (model, kvm)")),
    }
}

/// The campaign's VM type, variant and `--against` variant.
type VmChoice = (Option<VmType>, Option<Variant>, Option<Variant>);

/// The campaign's [`VmChoice`], from the options and the host.
fn vm_choice(a: &super::commands::FuzzArgs, kvm: Option<&KvmBackend>) -> Result<VmChoice, String> {
    // `--vm any`: every VM type, each adapted to what the backend's host can run.
    let any = a.vm.as_deref() == Some("any");
    let mut vm = a.vm.as_deref().filter(|_| !any).map(parse_vm).transpose()?;
    if kvm.is_some() && vm.is_none() && !any {
        vm = Some(VmType::Default);
    }
    let variant = a.variant.as_deref().map(parse_variant).transpose()?;
    let against = a.against.as_deref().map(parse_variant).transpose()?;
    if (variant.is_some() || against.is_some()) && vm.is_none() {
        vm = Some(VmType::Tdx);
    }
    if (variant.is_some() || against.is_some()) && vm != Some(VmType::Tdx) {
        return Err("--variant/--against need --vm tdx".into());
    }
    // A VM type the host cannot run is refused, never fuzzed as another type: "0 findings" on
    // default VMs must not read as "TDX fuzzed clean".
    if let (Some(k), Some(v)) = (kvm, vm) {
        if let Some(missing) = k.caps.missing_for(v) {
            return Err(format!("--vm {}: this host's KVM cannot run it; it lacks {missing}", v.name()));
        }
    }
    Ok((vm, variant, against))
}

pub fn run(a: &super::commands::FuzzArgs) -> Result<i32, String> {
    // Open fds are counted with no backend open at either end, RSS once the backend is set up
    // and again at the end, so that a soak compares like with like.
    let (fds0, _) = process_usage();
    let kvm = open_backend(a)?;
    let (vm, variant, against) = vm_choice(a, kvm.as_ref())?;
    let planted = super::plant_arg(a.plant.as_deref())?;
    // `--known DIR,DIR`: scenarios whose known-divergence markers count as known besides the
    // ones privmem ships.
    let known_dirs: Vec<&std::path::Path> =
        a.known.as_deref().map(|s| s.split(',').map(std::path::Path::new).collect()).unwrap_or_default();
    if let Some(d) = known_dirs.iter().find(|d| !d.is_dir()) {
        return Err(format!("--known: {} is not a directory", d.display()));
    }
    let time = a.c.time;
    let runs = a.c.runs;
    let limit_time = match (time, runs) {
        (None, None) => Some(Duration::from_secs(60)),
        (t, _) => t.map(Duration::from_secs),
    };
    let seed = a.c.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    });
    let out = PathBuf::from(a.c.out.as_deref().unwrap_or("findings"));
    // Every output is checked before the first case: a campaign must not lose its first finding,
    // or its whole result, to a path it cannot write.
    crate::report::prepare_out_dir(&out)?;
    if let Some(j) = a.c.junit.as_deref() {
        crate::report::check_out_file(std::path::Path::new(j))?;
    }
    let json = a.json;
    let cfg = CampaignConfig {
        gen: GenConfig {
            vm,
            variant,
            max_ops: a.max_ops.unwrap_or(24) as usize,
            hazards: super::parse_hazards(a.hazards.as_deref())?,
            groups: a.c.groups,
            large_conversions: a.c.large_conversions,
            finalized: a.c.td_finalized,
        },
        against,
        seed,
        ignore: a.ignore.as_deref().map(|s| s.split(',').map(String::from).collect()).unwrap_or_default(),
    };
    let backend_name = if kvm.is_some() { "kvm" } else { "model" };
    // The replay line names the backend: a divergence from real KVM cannot show on the model.
    // The replay line names the backend and the kernel the model ran as: a divergence from
    // real KVM cannot show on the model, and a kernel rule may decide the outcome.
    let caps = kvm.as_ref().map(|k| k.caps.clone());
    let mut replay_args = against.map(|b| format!(" --against {}", b.name())).unwrap_or_default()
        + if kvm.is_some() { " --backend kvm" } else { "" };
    if let Some(k) = caps.as_ref().and_then(|c| c.kernel) {
        replay_args += &format!(" --kernel {k}");
    }
    // A planted model bug's findings replay with it planted, and say whose they are.
    if let Some(b) = planted {
        replay_args += &format!(" --plant {}", b.name());
    }
    let (_, rss0) = process_usage();
    let mut c = Campaign::new(cfg);
    c.feedback = !a.c.no_feedback;
    // Each case on stderr before it runs: what a hung lab VM was doing.
    c.print_cases = a.print_cases;
    if let Some(k) = kvm {
        // Known kernel differences the corpus records are reported as known, not as new.
        c.known = crate::known::sources(&known_dirs)
            .iter()
            .flat_map(|s| crate::oracle::diff::known_divergences(s, k.caps.kernel))
            .collect();
        c.real = Some(Box::new(k));
    }

    let sampler = match a.profile {
        true => Some(crate::lab::profile::Sampler::start()?),
        false => None,
    };
    let start = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut last = Instant::now();
    let mut written = Vec::new();
    let mut known_hits: Vec<String> = Vec::new();
    if !json {
        eprintln!("privmem fuzz: seed {seed}, backend {backend_name}, findings to {}", out.display());
    }
    // A finding as the JSON event the lab and other readers take.
    let event = |nf: &crate::campaign::NewFinding, label: String, file: String| {
        Line::from(crate::report::records::FindingEvent {
            signature: nf.finding.signature(),
            label,
            known: nf.known,
            file,
            sequence: crate::seq::text::print(&nf.seq),
            seconds: start.elapsed().as_secs_f64(),
            detail: nf.finding.detail.clone(),
            finding: nf.finding.clone(),
        })
    };
    super::interrupt::catch();
    loop {
        if limit_time.is_some_and(|t| start.elapsed() >= t)
            || runs.is_some_and(|r| c.cases >= r)
            || super::interrupt::requested()
            || crate::oracle::progress::stopping()
        {
            break;
        }
        for nf in c.step() {
            if nf.known {
                // Documented (a hazard of the series, a recorded kernel difference): said once,
                // not written as a finding, and no reason for a failing exit status.
                let what = nf.hazard.clone().unwrap_or("a kernel difference corpus/known records".into());
                known_hits.push(nf.finding.signature());
                if json {
                    event(&nf, format!("known: {what}"), String::new()).print();
                } else {
                    eprintln!("{}known: {what}: {}", if tty { "\r\x1b[K" } else { "" }, nf.finding.signature());
                }
                continue;
            }
            let model_kernel = caps.as_ref().and_then(|c| c.kernel).unwrap_or(nf.seq.header.kernel());
            let extra = crate::report::records::FindingOrigin {
                backend: backend_name.into(),
                label: nf.label().into(),
                seed: Some(seed),
                case: Some(nf.case),
                replays_confirmed: Some(nf.confirmed),
                known: nf.known,
                kernel: None,
                planted: planted.map(|b| b.name().to_string()),
                found_on: crate::report::provenance(model_kernel, caps.as_ref()),
            };
            let replay_args =
                if caps.is_none() { format!("{replay_args} --kernel {model_kernel}") } else { replay_args.clone() };
            let path = write_finding(&out, &nf.finding, &nf.seq, &replay_args, extra)
                .map_err(|e| format!("{}: {e}", out.display()))?;
            if json {
                event(&nf, nf.label().to_string(), path.display().to_string()).print();
            } else {
                eprintln!(
                    "{}{} {} ({}, {}/3 replays)  -> {}",
                    if tty { "\r\x1b[K" } else { "" },
                    match planted {
                        Some(b) => format!("finding of the planted model bug {}", b.name()),
                        None => "new finding".to_string(),
                    },
                    nf.finding.signature(),
                    nf.label(),
                    nf.confirmed,
                    path.display()
                );
            }
            written.push(path);
        }
        if last.elapsed() >= Duration::from_millis(if tty { 250 } else { 5000 }) {
            last = Instant::now();
            let el = start.elapsed().as_secs_f64();
            let line =
                format!("[{el:6.1}s] {} cases  {:.0} exec/s  {} findings", c.cases, c.cases as f64 / el, c.seen.len());
            if !json {
                if tty {
                    eprint!("\r\x1b[K{line}");
                    let _ = std::io::stderr().flush();
                } else {
                    eprintln!("{line}");
                }
            }
        }
    }
    let el = start.elapsed().as_secs_f64().max(1e-9);
    let skipped = c.skipped;
    let (_, rss1) = process_usage();
    c.real = None;
    let (fds1, _) = process_usage();
    let mut sigs: Vec<(&String, &u64)> = c.seen.iter().filter(|(s, _)| !known_hits.contains(s)).collect();
    sigs.sort();
    if let Some(j) = a.c.junit.as_deref() {
        // One failing test case per distinct finding; none means a clean campaign.
        let cases: Vec<ScenarioResult> = sigs
            .iter()
            .map(|(s, n)| ScenarioResult {
                signatures: vec![s.to_string()],
                ..ScenarioResult::failed(s, &format!("{n} hits; reproducers in {}", out.display()))
            })
            .collect();
        crate::report::junit::write(std::path::Path::new(j), "privmem-fuzz", &cases)
            .map_err(|e| format!("{j}: {e}"))?;
    }
    if let Some(s) = sampler {
        let p = s.finish();
        match json {
            true => Line::from(p).print(),
            false => println!("profile: {} kernel, {} user, {} guest samples", p.kernel, p.user, p.guest),
        }
    }
    if json && !c.covered.is_empty() {
        coverage_line("fuzz", c.covered.iter().copied()).print();
    }
    if json {
        let summary = FuzzSummary {
            backend: backend_name.into(),
            seed,
            seconds: el,
            open_fds: [fds0, fds1],
            rss_kib: [rss0, rss1],
            known: known_hits.clone(),
            findings: sigs.iter().map(|(s, n)| Hits { signature: s.to_string(), hits: **n }).collect(),
            files: written.iter().map(|p| p.display().to_string()).collect(),
            ..campaign_summary(&c, el)
        };
        Line::from(summary).print();
    } else {
        if tty {
            eprintln!();
        }
        println!(
            "fuzz: {} cases, {} ops in {el:.1}s ({:.0} exec/s, {:.0} ops/s), seed {seed}",
            c.cases,
            c.ops,
            c.cases as f64 / el,
            c.ops as f64 / el
        );
        if backend_name == "kvm" {
            println!("real KVM: {} cases skipped (host lacks a capability)", skipped);
            println!(
                "mapping view: {} GFN comparisons; {} cases mapped something, {} of them unchecked; {} steps' view lost",
                c.mapping_checks, c.mapped_cases, c.mapped_unchecked, c.views_lost
            );
        }
        if !known_hits.is_empty() {
            println!(
                "{} known (documented hazards, recorded kernel differences), not reported again",
                known_hits.len()
            );
        }
        println!("open fds {fds0} -> {fds1}, RSS {rss0} KiB -> {rss1} KiB");
        println!("{} distinct new findings", sigs.len());
        for (s, n) in &sigs {
            println!("  {s}  ({n} hits)");
        }
    }
    if super::interrupt::requested() {
        if !json {
            println!("fuzz: interrupted (SIGINT) after {} cases", c.cases);
        }
        return Ok(super::interrupt::EXIT);
    }
    Ok(if sigs.is_empty() { 0 } else { 1 })
}

/// What the campaign and the KVM backend's counters say, for the end-of-campaign summary (the
/// caller adds what only it knows: the backend's name, the seed, process usage, findings).
fn campaign_summary(c: &Campaign, seconds: f64) -> FuzzSummary {
    FuzzSummary {
        cases: c.cases,
        ops: c.ops,
        skipped: c.skipped,
        mapping_checks: c.mapping_checks,
        views_lost: c.views_lost,
        phase_seconds: crate::backend::kvm::PHASE_NANOS.iter().map(|n| n.load(Relaxed) as f64 / 1e9).collect(),
        op_seconds: op_seconds(),
        reset_seconds: crate::backend::kvm::RESET_PARTS
            .iter()
            .zip(&crate::backend::kvm::RESET_NANOS)
            .map(|(p, n)| (p.to_string(), n.load(Relaxed) as f64 / 1e9))
            .collect(),
        fresh_vms: crate::backend::kvm::FRESH_VMS.load(Relaxed),
        fresh_vm_reasons: crate::backend::kvm::Fresh::ALL
            .iter()
            .zip(&crate::backend::kvm::FRESH_WHY_COUNTS)
            .map(|(w, n)| (w.name().to_string(), n.load(Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect(),
        pcs: c.covered.len(),
        corpus: c.corpus.len(),
        feedback: c.feedback,
        mapped_cases: c.mapped_cases,
        mapped_unchecked: c.mapped_unchecked,
        stopped_early: crate::oracle::progress::stopping(),
        exec_per_sec: c.cases as f64 / seconds,
        ..Default::default()
    }
}

/// Open file descriptors and resident set size (KiB) of this process, for soak runs.
pub fn process_usage() -> (usize, u64) {
    let fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0);
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        .map(|pages| pages * 4)
        .unwrap_or(0);
    (fds, rss)
}

/// The kernel PCs a command reached, as one wire line, for `privmem lab --coverage`.
pub fn coverage_line(source: &str, pcs: impl Iterator<Item = u64>) -> Line {
    let mut pcs: Vec<u64> = pcs.collect();
    pcs.sort_unstable();
    Line::from(crate::report::records::CoverageRecord { source: source.into(), pcs })
}
