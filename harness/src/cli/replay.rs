//! `privmem replay`: run `.seq` files on the model and check every expectation.

use super::{load_source, parse_variant};
use crate::backend::kvm::KvmBackend;
use crate::oracle::compare::compare_variants;
use crate::oracle::diff::{check_real, known_divergences, same_access_divergence};
use crate::oracle::run_model;
use crate::report::records::ScenarioResult;

pub fn run(a: &super::commands::ReplayArgs) -> Result<i32, String> {
    let modelled = a.kernel.as_deref().map(crate::model::kernel::kernel_arg).transpose()?;
    if let Some(d) = modelled.as_ref().and_then(|m| m.drift.as_deref()) {
        eprintln!("privmem: {d}");
    }
    let kernel = modelled.as_ref().map(|m| m.release);
    super::plant_arg(a.plant.as_deref())?;
    // `--bin`: the files are fuzzer inputs (cargo-fuzz/AFL crash artifacts) in the binary codec;
    // they replay as the targets ran them, without expectations.
    let bin = a.bin;
    if a.backend.as_deref() == Some("emulated") {
        return super::emulated::run(a);
    }
    let mut results: Vec<ScenarioResult> = Vec::new();
    let mut kvm = match a.backend.as_deref().unwrap_or("model") {
        "model" => None,
        "kvm" => {
            let mut k = KvmBackend::open()?;
            // `--kernel` says what the model runs as here, and any drift is that release's.
            if let Some(m) = &modelled {
                k.caps.kernel = Some(m.release);
                k.caps.drift = m.drift.clone();
            }
            if !a.json && !a.tap {
                println!("{}", k.kernel_words());
            }
            Some(k)
        }
        other => return Err(format!("unknown backend `{other}` (model, kvm, emulated)")),
    };
    let mut skipped = 0;
    if a.positional.is_empty() {
        return Err("replay: name at least one FILE".into());
    }
    let against = a.against.as_deref().map(parse_variant).transpose()?;
    // TAP replaces the per-file lines; the JSON records are its source.
    let tap = a.tap;
    let json = a.json;
    let mut failed = 0;
    let mut bad_input = 0;
    let mut total_mapping_checks = 0;
    let mut covered = std::collections::BTreeSet::new();
    // A directory stands for the `.seq` files under it (the fuzzer inputs under it, with --bin).
    let mut paths = Vec::new();
    for p in &a.positional {
        match std::path::Path::new(p) {
            d if d.is_dir() && bin => {
                let mut v: Vec<String> = std::fs::read_dir(d)
                    .map_err(|e| format!("{p}: {e}"))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|f| f.is_file())
                    .map(|f| f.display().to_string())
                    .collect();
                v.sort();
                paths.extend(v);
            }
            d if d.is_dir() => {
                let v = crate::corpus::seq_files(d);
                if v.is_empty() {
                    return Err(format!("{p}: a directory without .seq files"));
                }
                paths.extend(v.iter().map(|f| f.display().to_string()));
            }
            _ => paths.push(p.clone()),
        }
    }
    for path in &paths {
        // The lab's time is nearly up: what ran is reported, the rest is not started.
        if crate::oracle::progress::stopping() {
            break;
        }
        let loaded = if bin {
            std::fs::read(path).map_err(|e| format!("{path}: {e}")).map(|b| {
                let mut s = crate::seq::codec::decode(&b);
                s.steps.iter_mut().for_each(|st| st.expect = None);
                (String::new(), s)
            })
        } else {
            load_source(path)
        };
        let (src, mut seq) = match loaded {
            Ok(x) => x,
            Err(e) => {
                let r = ScenarioResult::failed(path, &e);
                if json && !tap {
                    crate::wire::print(r.clone());
                } else if !tap {
                    eprintln!("{e}");
                }
                results.push(r);
                bad_input += 1;
                continue;
            }
        };
        let mut skip = None;
        // `--kernel` on the model: run the scenario as that kernel, if it holds there.
        if let (Some(v), None) = (kernel, kvm.as_ref()) {
            if !crate::model::kernel::holds_on(&seq.header, v) {
                skip = Some(format!("the scenario does not hold on Linux {v}"));
            }
            seq.header.set_kernel(v);
        }
        let mut mapping_checks = None;
        let mut real_steps = None;
        // `--adapt`: generated cases made runnable here as a campaign would (`lab --baseline`).
        if let (true, Some(k)) = (a.adapt, kvm.as_ref()) {
            seq = crate::backend::Backend::adapt(k, &seq);
        }
        let mut t = match kvm.as_mut() {
            _ if skip.is_some() => crate::oracle::run::Trace::default(),
            None => run_model(&seq),
            Some(k) => {
                let c = check_real(k, &seq);
                real_steps = Some(c.steps.clone());
                covered.extend(c.pcs.iter().copied());
                mapping_checks = Some(c.diff.mapping_checks);
                total_mapping_checks += c.diff.mapping_checks;
                let mut t = c.model;
                // A scenario may record a real kernel difference it is known to show.
                let known = known_divergences(&src, k.caps.kernel).into_iter().next();
                let d = c.diff.findings;
                if let Some(why) = c.unsupported {
                    skip = Some(why);
                } else {
                    match &known {
                        Some(sig) if d.iter().any(|f| same_access_divergence(sig, &f.signature())) => {
                            if !json && !tap {
                                println!("known {path}: {sig} (a recorded kernel difference)");
                            }
                        }
                        Some(sig) => t.findings.push(crate::oracle::Finding {
                            context: String::new(),
                            kind: crate::oracle::FindingKind::Divergence,
                            step: None,
                            op: None,
                            state: "known-divergence-gone".into(),
                            detail: format!("the recorded divergence {sig} no longer shows (fixed kernel?)"),
                        }),
                        None => t.findings.extend(d),
                    }
                }
                t
            }
        };
        if let (Some(b), Some(av)) = (against, seq.header.variant) {
            t.findings.extend(compare_variants(&seq, av, b));
        }
        if let Some(why) = &skip {
            skipped += 1;
            let r = ScenarioResult::skip(path, why);
            if json && !tap {
                crate::wire::print(r.clone());
            } else if !tap {
                println!("skip  {path}: {why}");
            }
            results.push(r);
            continue;
        }
        let ok = t.findings.is_empty();
        failed += (!ok) as usize;
        let record = ScenarioResult {
            steps: Some(seq.steps.len()),
            mapping_checks,
            real: real_steps,
            adapted: a.adapt.then(|| crate::seq::text::print(&seq)),
            ..ScenarioResult::ran(path, t.findings.clone())
        };
        if tap {
        } else if json {
            crate::wire::print(record.clone());
        } else if ok {
            println!("ok    {path} ({} steps)", seq.steps.len());
        } else {
            println!("FAIL  {path}");
            for f in &t.findings {
                println!("      {}  {}", f.signature(), f.detail);
            }
        }
        results.push(record);
    }
    if tap {
        // Files that could not be read are failed test points too.
        print!("{}", crate::report::tap::tap(&results));
        if bad_input == 0 && crate::report::tap::all_skipped(&results) {
            return Ok(4);
        }
    } else if json && !covered.is_empty() {
        super::fuzz::coverage_line("replay", covered.into_iter()).print();
    }
    if let Some(j) = a.junit.as_deref() {
        crate::report::junit::write(std::path::Path::new(j), "privmem-replay", &results)
            .map_err(|e| format!("{j}: {e}"))?;
    }
    if !json && !tap {
        let passed = paths.len() - failed - skipped - bad_input;
        if kvm.is_some() {
            println!(
                "mapping view: {}, {total_mapping_checks} GFN comparisons",
                kvm.as_ref().map(|k| k.view_name()).unwrap_or_default()
            );
        }
        if bad_input > 0 {
            println!("{passed} passed, {failed} failed, {skipped} skipped, {bad_input} unreadable");
        } else {
            println!("{passed} passed, {failed} failed, {skipped} skipped");
        }
    }
    Ok(if bad_input > 0 {
        2
    } else if failed > 0 {
        1
    } else {
        0
    })
}
