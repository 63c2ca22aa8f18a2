//! `privmem replay --backend emulated FILE...`: the TD and SNP shims run each scenario in an
//! ordinary VM, the model answering what they trap on (see [`crate::backend::emulated`]).
//! Every line and record says `emulated`: this tests the shims' code, never KVM's TDX or SNP
//! support, and is not conformance.

use crate::backend::emulated::EmulatedBackend;
use crate::oracle::diff::check_real;
use crate::report::records::ScenarioResult;

pub fn run(a: &super::commands::ReplayArgs) -> Result<i32, String> {
    let (files, json, tap) = (&a.positional, a.json && !a.tap, a.tap);
    if let Some(j) = a.junit.as_deref() {
        crate::report::check_out_file(std::path::Path::new(j))?;
    }
    let mut b = EmulatedBackend::open()?;
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    let mut results = Vec::new();
    for path in files {
        let (_, seq) = super::load_source(path)?;
        let before = b.counts;
        let c = check_real(&mut b, &seq);
        let mut n = b.counts;
        for (x, y) in [
            (&mut n.shim_steps, before.shim_steps),
            (&mut n.traps, before.traps),
            (&mut n.injected, before.injected),
            (&mut n.host_steps, before.host_steps),
            (&mut n.host_outcome_steps, before.host_outcome_steps),
        ] {
            *x -= y;
        }
        let findings = &c.diff.findings;
        let ok = c.unsupported.is_none() && findings.is_empty();
        let r = match &c.unsupported {
            Some(why) => ScenarioResult::skip(path, why),
            None => ScenarioResult::ran(path, findings.clone()),
        };
        let r = ScenarioResult { emulated: true, counts: Some(n), ..r };
        if json {
            crate::wire::print(r.clone());
        }
        results.push(r);
        // TAP and JUnit carry the results; the words below are for a person.
        let json = json || tap;
        match (&c.unsupported, ok) {
            (Some(why), _) => {
                skipped += 1;
                if !json {
                    println!("skip  {path}: {why}");
                }
            }
            (None, true) => {
                passed += 1;
                if !json {
                    println!(
                        "emulated ok   {path}: {} guest steps through the shim ({} traps answered, {} exceptions injected); {} host steps and {} host-level outcomes from the model, unchecked",
                        n.shim_steps, n.traps, n.injected, n.host_steps, n.host_outcome_steps
                    );
                }
            }
            (None, false) => {
                failed += 1;
                if !json {
                    println!("emulated FAIL {path}");
                    for f in findings {
                        println!("      {}  {}", f.signature(), f.detail);
                    }
                }
            }
        }
    }
    if let Some(j) = a.junit.as_deref() {
        crate::report::junit::write(std::path::Path::new(j), "privmem-emulated", &results)
            .map_err(|e| format!("{j}: {e}"))?;
    }
    if tap {
        print!("{}", crate::report::tap::tap(&results));
        if crate::report::tap::all_skipped(&results) {
            return Ok(4);
        }
    } else if !json {
        let c = b.counts;
        println!(
            "emulated: {passed} passed, {failed} failed, {skipped} skipped; {} guest steps through the shims, {} traps, {} injected exceptions (emulated mode: not conformance)",
            c.shim_steps, c.traps, c.injected
        );
    }
    Ok(if failed > 0 { 1 } else { 0 })
}
