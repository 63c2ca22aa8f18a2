//! `privmem shrink FILE -o OUT`: shrink a sequence while it keeps its first finding.

use super::load;
use crate::oracle::run_model;
use crate::report::{finding_seq_text, write_atomic};
use crate::shrink::shrink;

pub fn run(argv: &[String]) -> Result<i32, String> {
    let a = super::spec::Spec::get("shrink").parse(argv)?;
    let [path] = a.positional.as_slice() else {
        return Err("shrink: name exactly one FILE".into());
    };
    let out = a.get("o").or(a.get("out")).ok_or("shrink: -o OUT is required")?;
    let seq = load(path)?;
    let t = run_model(&seq);
    let Some(f) = t.findings.first().cloned() else {
        return Err(format!("{path}: replays without a finding; nothing to shrink"));
    };
    let sig = f.signature();
    let small = shrink(&seq, |c| run_model(c).has(&sig));
    write_atomic(
        std::path::Path::new(out),
        finding_seq_text(&f.signature(), &f.detail, &crate::seq::text::print(&small), "privmem replay").as_bytes(),
    )
    .map_err(|e| format!("{out}: {e}"))?;
    if a.flag("json") {
        let r = crate::report::records::ShrinkRecord {
            signature: sig.to_string(),
            steps_before: seq.steps.len(),
            steps_after: small.steps.len(),
            out: out.to_string(),
        };
        println!("{}", crate::report::records::Record::to_json(&r));
    } else {
        println!("{sig}: {} -> {} steps, written to {out}", seq.steps.len(), small.steps.len());
    }
    Ok(0)
}
