//! `privmem replay`: run `.seq` files on the model and check every expectation.

use super::{load, parse_variant, Args};
use crate::oracle::compare::compare_variants;
use crate::oracle::run_model;

pub fn run(argv: &[String]) -> Result<i32, String> {
    let a = Args::parse(argv, &["against"], &["json"])?;
    if a.positional.is_empty() {
        return Err("replay: name at least one FILE".into());
    }
    let against = a.get("against").map(parse_variant).transpose()?;
    let json = a.flag("json");
    let mut failed = 0;
    let mut bad_input = false;
    for path in &a.positional {
        let seq = match load(path) {
            Ok(s) => s,
            Err(e) => {
                if json {
                    println!("{}", serde_json::json!({"file": path, "error": e}));
                } else {
                    eprintln!("{e}");
                }
                bad_input = true;
                continue;
            }
        };
        let mut t = run_model(&seq);
        if let (Some(b), Some(av)) = (against, seq.header.variant) {
            t.findings.extend(compare_variants(&seq, av, b));
        }
        let ok = t.findings.is_empty();
        failed += (!ok) as usize;
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "file": path,
                    "ok": ok,
                    "steps": seq.steps.len(),
                    "findings": t.findings,
                    "signatures": t.findings.iter().map(|f| f.signature()).collect::<Vec<_>>(),
                })
            );
        } else if ok {
            println!("ok    {path} ({} steps)", seq.steps.len());
        } else {
            println!("FAIL  {path}");
            for f in &t.findings {
                println!("      {}  {}", f.signature(), f.detail);
            }
        }
    }
    if !json {
        println!(
            "{} passed, {} failed",
            a.positional.len() - failed - bad_input as usize,
            failed
        );
    }
    Ok(if bad_input {
        2
    } else if failed > 0 {
        1
    } else {
        0
    })
}
