//! `privmem replay --backend emulated FILE...`: the TD and SNP shims run each scenario in an
//! ordinary VM, the model answering what they trap on (see [`crate::backend::emulated`]).
//! Every line and record says `emulated`: this tests the shims' code, never KVM's TDX or SNP
//! support, and is not conformance.

use crate::backend::emulated::EmulatedBackend;
use crate::oracle::diff::check_real;
use crate::report::records::{Record, ScenarioResult};

pub fn run(files: &[String], json: bool) -> Result<i32, String> {
    let mut b = EmulatedBackend::open()?;
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
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
        if json {
            let r = match &c.unsupported {
                Some(why) => ScenarioResult::skip(path, why),
                None => ScenarioResult::ran(path, findings.clone()),
            };
            println!("{}", ScenarioResult { emulated: true, counts: Some(n), ..r }.to_json());
        }
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
    if !json {
        let c = b.counts;
        println!(
            "emulated: {passed} passed, {failed} failed, {skipped} skipped; {} guest steps through the shims, {} traps, {} injected exceptions (emulated mode: not conformance)",
            c.shim_steps, c.traps, c.injected
        );
    }
    Ok(if failed > 0 { 1 } else { 0 })
}
