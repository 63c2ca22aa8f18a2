//! `privmem bench`: model speed on realistic mixes, and what a huge range op costs next to a
//! small one. Ratios are measured in the same run.

use crate::campaign::{Campaign, CampaignConfig};
use crate::oracle::run_model;
use crate::report::records::{KvmBench, LabBench, ModelBench};
use crate::seq::gen::GenConfig;
use crate::seq::text::parse;
use crate::seq::{Sequence, VmType};
use crate::wire::Line;
use std::time::Instant;

/// Ops per second over `cases`, run repeatedly for at least `secs`.
fn ops_per_sec(cases: &[Sequence], secs: f64) -> f64 {
    let (mut ops, start) = (0u64, Instant::now());
    while start.elapsed().as_secs_f64() < secs {
        for s in cases {
            let t = run_model(s);
            ops += t.outcomes.len() as u64;
        }
    }
    ops as f64 / start.elapsed().as_secs_f64()
}

fn mix(vm: Option<VmType>, seed: u64, n: usize) -> Vec<Sequence> {
    let mut c = Campaign::new(CampaignConfig {
        gen: GenConfig { vm, max_ops: 48, ..Default::default() },
        seed,
        ..Default::default()
    });
    (0..n).map(|_| c.next_case()).collect()
}

/// A sequence that converts a `size` range back and forth on a slot with some pages mapped.
fn range_case(size: &str) -> Sequence {
    let src = format!(
        "vm sw-protected\ngmem g size=64G\nslot 0 gpa=0x100000000 size=64G gmem=g offset=0\n\
         private 0x100000000 64G\nvcpu0 touch 0x100000000\nvcpu0 touch 0x900000000\nvcpu0 touch 0x1000000000\n{}",
        (0..32)
            .map(|i| format!("{} 0x100000000 {size}\n", if i % 2 == 0 { "shared" } else { "private" }))
            .collect::<String>()
    );
    parse("bench", &src).expect("bench sequence parses")
}

/// Seconds per run of the 32 range ops (less the same run without them).
fn range_cost(size: &str) -> f64 {
    let s = range_case(size);
    let mut base = s.clone();
    base.steps.truncate(4);
    let time = |s: &Sequence| {
        let start = Instant::now();
        let mut n = 0;
        while start.elapsed().as_secs_f64() < 0.3 {
            run_model(s);
            n += 1;
        }
        start.elapsed().as_secs_f64() / n as f64
    };
    ((time(&s) - time(&base)) / 32.0).max(1e-9)
}

/// A 16-op default-VM case: two guest_memfd slots, host writes, guest reads and writes, a punch.
fn kvm_case(seed: u64) -> Sequence {
    let mut src = String::from(
        "vm default\ngmem a size=2M mmap init-shared\nslot 0 gpa=0x100000000 size=2M gmem=a offset=0\nslot 1 gpa=0x200000 size=2M\n",
    );
    for i in 0..16u64 {
        let page = (seed * 7 + i * 13) % 512;
        let line = match i % 8 {
            0 => format!("host-write {:#x} {:#x}", 0x100000000 + page * 4096, seed + i + 1),
            3 => format!("punch {:#x} 4K", 0x100000000 + page * 4096),
            5 => format!("host-read {:#x}", 0x200000 + page * 4096),
            6 | 7 => format!("vcpu0 read {:#x}", 0x100000000 + page * 4096),
            _ => format!("vcpu0 write {:#x} {:#x}", 0x200000 + page * 4096, i + 1),
        };
        src.push_str(&line);
        src.push('\n');
    }
    parse("bench", &src).expect("bench case parses")
}

/// A guest-only case: `n` guest reads and writes in a row on one vCPU.
fn guest_only_case(n: u64) -> Sequence {
    let mut src =
        String::from("vm default\ngmem a size=2M mmap init-shared\nslot 0 gpa=0x100000000 size=2M gmem=a offset=0\n");
    for i in 0..n {
        let addr = 0x100000000 + (i % 512) * 4096;
        if i % 2 == 0 {
            src.push_str(&format!("vcpu0 write {addr:#x} {:#x}\n", i + 1));
        } else {
            src.push_str(&format!("vcpu0 read {addr:#x}\n"));
        }
    }
    parse("bench", &src).expect("bench case parses")
}

fn run_kvm(json: bool) -> Result<i32, String> {
    use crate::backend::kvm::KvmBackend;
    use crate::backend::Backend;
    let mut k = KvmBackend::open()?;
    k.footing().map_err(|why| format!("footing check failed: {why}"))?;
    let exec_per_sec = |k: &mut KvmBackend, reuse: bool, cases: &[Sequence]| -> Result<f64, String> {
        k.reuse = reuse;
        let start = Instant::now();
        for c in cases {
            match k.run(c) {
                Ok(_) | Err(crate::backend::RunError::Unsupported(_)) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(cases.len() as f64 / start.elapsed().as_secs_f64())
    };
    let fixed: Vec<Sequence> = (0..600).map(kvm_case).collect();
    // Generated cases as a campaign runs them: default VMs, 16 ops each, adapted to the host.
    let generated: Vec<Sequence> = {
        let mut c = Campaign::new(CampaignConfig {
            gen: GenConfig { vm: Some(VmType::Default), max_ops: 16, ..Default::default() },
            seed: 4,
            ..Default::default()
        });
        let mut v = Vec::new();
        while v.len() < 600 {
            let s = k.adapt(&c.next_case());
            if s.steps.len() == 16 {
                v.push(s);
            }
        }
        v
    };
    // Warm both paths once, then measure in the same run.
    exec_per_sec(&mut k, true, &fixed[..5])?;
    let fresh = exec_per_sec(&mut k, false, &fixed[..200])?;
    let reused = exec_per_sec(&mut k, true, &fixed)?;
    let gen_fresh = exec_per_sec(&mut k, false, &generated[..200])?;
    let gen_reused = exec_per_sec(&mut k, true, &generated)?;
    k.reuse = true;
    let (mut exits, mut ops) = (0u64, 0u64);
    for _ in 0..50 {
        let t = k.run(&guest_only_case(64)).map_err(|e| e.to_string())?;
        exits += t.exits;
        ops += t.guest_ops;
    }
    let per_op = exits as f64 / ops.max(1) as f64;
    if json {
        let r = KvmBench {
            backend: "kvm".into(),
            fresh_vm_exec_per_sec: fresh,
            reused_vm_exec_per_sec: reused,
            reuse_speedup: gen_reused / gen_fresh,
            generated_fresh_vm_exec_per_sec: gen_fresh,
            generated_reused_vm_exec_per_sec: gen_reused,
            fixed_mix_reuse_speedup: reused / fresh,
            exits_per_guest_op: per_op,
            fresh_vms_created: k.fresh_vms,
        };
        crate::wire::print(r.clone());
    } else {
        println!(
            "real KVM, 16-op cases: fresh VM per case {fresh:.0} exec/s, reused VM {reused:.0} exec/s, speedup {:.2}x",
            reused / fresh
        );
        println!(
            "real KVM, generated 16-op cases: fresh {gen_fresh:.0} exec/s, reused {gen_reused:.0} exec/s, speedup {:.2}x",
            gen_reused / gen_fresh
        );
        println!("guest-only cases of 64 ops: {per_op:.3} exits per guest op ({exits} exits / {ops} ops)");
        println!("VMs created: {}", k.fresh_vms);
    }
    Ok(0)
}

/// `bench --backend lab`: the same seeded lab campaign on today's path (one lab VM, a fresh VM
/// per case, no view) and on the new one (reused VMs proved clean by the view, as many lab VMs
/// as cores), in one run; the ratio of fuzz cases per second (boot excluded).
/// Rounds of `bench --backend lab`, each path once a round.
const LAB_ROUNDS: usize = 3;

/// One `privmem lab --json --seed 1 --runs N ARGS [--kernel K]` run of this binary: its summary.
fn lab_record(runs: u64, args: &[&str], kernel: Option<&str>) -> Result<Box<crate::lab::record::LabRecord>, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = std::process::Command::new(&exe);
    cmd.args(["lab", "--json", "--runs", &runs.to_string(), "--seed", "1"]).args(args);
    if let Some(k) = kernel {
        cmd.args(["--kernel", k]);
    }
    // A run that ends without a campaign (the lab VM died: its console says why, above) is
    // said and run again once, not counted as 0 cases/s.
    for attempt in 1..=2 {
        let out = cmd.stderr(std::process::Stdio::inherit()).output().map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout);
        let r = match Line::parse(text.lines().last().unwrap_or("")) {
            Some(Ok(Line::Lab(r))) => r,
            Some(Err(e)) => return Err(format!("lab output: {e}")),
            _ => return Err(format!("lab output: no `lab` line: {text}")),
        };
        if r.fuzz_rate().1 > 0 || attempt == 2 {
            return match r.fuzz_rate().1 {
                0 => Err(format!("bench: `privmem lab {}` ran no fuzz case twice", args.join(" "))),
                _ => Ok(r),
            };
        }
        eprintln!("bench: `privmem lab {}` ran no fuzz case (its output above says why); once more", args.join(" "));
    }
    unreachable!("the second attempt returns")
}

fn run_lab(json: bool, kernel: Option<&str>, debug_kernel: Option<&str>) -> Result<i32, String> {
    const RUNS: u64 = 300;
    let lab_on = |kernel: Option<&str>, extra: &[&str]| -> Result<(f64, u64, u64), String> {
        let r = lab_record(RUNS, extra, kernel)?;
        let (rate, cases) = r.fuzz_rate();
        Ok((rate, cases, r.mapping_checks))
    };
    let lab = |extra: &[&str]| lab_on(kernel, extra);
    // Interleaved rounds, the best of each path: this machine's CPU time comes and goes (a
    // shared host; one path's run can be 1.6 times slower than the same run a minute later),
    // and what is measured is what the code costs, not the neighbours' load.
    let mut rounds = Vec::new();
    let (mut base_cases, mut new_cases, mut checks) = (0, 0, 0);
    for _ in 0..LAB_ROUNDS {
        let (b, bc, _) = lab(&["--jobs", "1", "--fresh-vm", "--no-view"])?;
        let (n, nc, ch) = lab(&[])?;
        (base_cases, new_cases, checks) = (bc, nc, ch);
        rounds.push([b, n]);
    }
    let base = rounds.iter().map(|r| r[0]).fold(0.0, f64::max);
    let new = rounds.iter().map(|r| r[1]).fold(0.0, f64::max);
    let ratio = new / base;
    // Concurrent cases (`--groups`: each case with groups repeated with other offsets) against
    // sequential ones (the campaign above), in the same run.
    let (conc_rate, _, _) = lab(&["--groups"])?;
    // The debug options' cost: the same campaign on the debug flavour (KASAN, lockdep, KCOV...).
    let debug = debug_kernel.map(|k| lab_on(Some(k), &[])).transpose()?.map(|(d, _, _)| d);
    if json {
        let r = LabBench {
            lab_fresh_cases_per_sec: base,
            lab_cases_per_sec: new,
            lab_speedup: ratio,
            lab_debug_cases_per_sec: debug,
            debug_cost_ratio: debug.map(|d| new / d),
            cases: [base_cases, new_cases],
            mapping_checks: checks,
            rounds: rounds.clone(),
            lab_concurrent_cases_per_sec: conc_rate,
            concurrent_vs_sequential: conc_rate / new,
        };
        crate::wire::print(r.clone());
    } else {
        println!("lab, one VM, fresh VM per case, no view:   {base:8.1} cases/s ({base_cases} cases, best round)");
        println!(
            "lab, parallel VMs, reused VMs, with view: {new:8.1} cases/s ({new_cases} cases, {checks} GFN comparisons, best round)"
        );
        for (i, [b, n]) in rounds.iter().enumerate() {
            println!("  round {}: fresh {b:.1}, reused {n:.1} cases/s ({:.2}x)", i + 1, n / b);
        }
        println!("lab speedup: {ratio:.2} (best of {LAB_ROUNDS} interleaved rounds each)");
        println!(
            "lab, concurrent groups (--groups) {conc_rate:.1} cases/s against sequential cases {new:.1} cases/s: {:.2}x",
            conc_rate / new
        );
        if let Some(d) = debug {
            println!("lab on the debug flavour:                  {d:8.1} cases/s (debug options cost {:.2}x)", new / d);
        }
    }
    Ok(0)
}

/// `bench --backend lab --tdx`: TD cases per second on the `--tdx` flavour (KVM's real `tdx.c`
/// on the software TDX module), a kept TD (`td_reuse`) against a fresh TD per case, in
/// interleaved rounds of one run. Two mixes: TDs built as a VMM builds them (`--td-finalized`:
/// the case's memory made private, then FINALIZE), which a kept TD serves whole, and the
/// campaign's own, where about half the cases build their TD (init-mem before finalize, or no
/// finalize) and get a fresh one either way.
fn run_lab_tdx(json: bool, kernel: Option<&str>) -> Result<i32, String> {
    const RUNS: u64 = 150;
    const ROUNDS: usize = 2;
    // One lab VM, one job: the ratio is the TD's cost, not the cores'. No coverage feedback:
    // both ways run the same generated cases (seed 1), where KCOV's feedback would steer each
    // run to a mix of its own.
    let lab = |extra: &[&str]| -> Result<(f64, u64, u64), String> {
        let args: Vec<&str> =
            ["--tdx", "--vm", "tdx", "--jobs", "1", "--no-feedback"].iter().chain(extra).copied().collect();
        let r = lab_record(RUNS, &args, kernel)?;
        if !r.fuzz_findings.is_empty() {
            eprintln!("bench: the campaign found {} things (see `privmem lab` for them)", r.fuzz_findings.len());
        }
        let (rate, cases) = r.fuzz_rate();
        Ok((rate, r.fuzz.iter().map(|f| f.fresh_vms).sum(), cases))
    };
    let mut rounds = Vec::new();
    let mut fresh_tds = [[0; 2]; 2];
    for _ in 0..ROUNDS {
        let (ff, _, _) = lab(&["--td-finalized", "--fresh-vm"])?;
        let (fk, fresh_f, cases_f) = lab(&["--td-finalized"])?;
        let (gf, _, _) = lab(&["--fresh-vm"])?;
        let (gk, fresh_g, cases_g) = lab(&[])?;
        fresh_tds = [[fresh_f, cases_f], [fresh_g, cases_g]];
        rounds.push([ff, fk, gf, gk]);
    }
    let best = |i: usize| rounds.iter().map(|r| r[i]).fold(0.0, f64::max);
    let (ff, fk, gf, gk) = (best(0), best(1), best(2), best(3));
    if json {
        crate::wire::print(crate::report::records::LabTdxBench {
            finalized_cases_per_sec: [ff, fk],
            finalized_speedup: fk / ff,
            generated_cases_per_sec: [gf, gk],
            generated_speedup: gk / gf,
            fresh_tds,
            rounds,
        });
        return Ok(0);
    }
    let [[f1, c1], [f2, c2]] = fresh_tds;
    println!("lab --tdx (TDX module simulated), one lab VM, {RUNS} generated TD cases a run, best of {ROUNDS} rounds:");
    println!(
        "  TDs built as a VMM builds them (--td-finalized): fresh TD per case {ff:6.1} cases/s, kept TD {fk:6.1} cases/s: {:.2}x ({f1} fresh TDs in {c1} cases)",
        fk / ff
    );
    println!(
        "  the campaign's own mix:                         fresh TD per case {gf:6.1} cases/s, kept TD {gk:6.1} cases/s: {:.2}x ({f2} fresh TDs in {c2} cases)",
        gk / gf
    );
    for (i, r) in rounds.iter().enumerate() {
        println!("  round {}: {:.1} / {:.1}, {:.1} / {:.1} cases/s", i + 1, r[0], r[1], r[2], r[3]);
    }
    Ok(0)
}

pub fn run(a: &super::commands::BenchArgs) -> Result<i32, String> {
    match a.backend.as_deref().unwrap_or("model") {
        "model" => {}
        "kvm" => return run_kvm(a.json),
        "lab" if a.tdx => return run_lab_tdx(a.json, a.kernel.as_deref()),
        "lab" => return run_lab(a.json, a.kernel.as_deref(), a.debug_kernel.as_deref()),
        other => return Err(format!("unknown backend `{other}` (model, kvm, lab)")),
    }
    let realistic = mix(None, 1, 400);
    let tdx = mix(Some(VmType::Tdx), 2, 400);
    let model = ops_per_sec(&realistic, 1.0);
    let model_tdx = ops_per_sec(&tdx, 1.0);
    let snp = mix(Some(VmType::Snp), 3, 400);
    let model_snp = ops_per_sec(&snp, 1.0);
    let big = range_cost("64G");
    let small = range_cost("2M");
    let ratio = big / small;
    if a.json {
        let r = ModelBench {
            model_ops_per_sec: model,
            model_tdx_ops_per_sec: model_tdx,
            model_snp_ops_per_sec: model_snp,
            range_cost_ratio: ratio,
            range_op_64g_ns: big * 1e9,
            range_op_2m_ns: small * 1e9,
        };
        crate::wire::print(r.clone());
    } else {
        println!("model, realistic mix (default/sw-protected/tdx): {model:>12.0} ops/s");
        println!("model, TDX mix:                                   {model_tdx:>12.0} ops/s");
        println!("model, SNP mix:                                   {model_snp:>12.0} ops/s");
        println!("range op 64 GiB: {:.0} ns, 2 MiB: {:.0} ns, ratio {ratio:.2}", big * 1e9, small * 1e9);
    }
    Ok(0)
}
