//! `privmem shrink FILE -o OUT [--backend kvm]`: shrink a sequence while it keeps its finding,
//! on the model or, for a real kernel's finding, on this host's KVM.

use super::load;
use crate::backend::kvm::KvmBackend;
use crate::backend::Backend;
use crate::oracle::diff::check_real;
use crate::oracle::{run_model, Finding, FindingKind};
use crate::report::finding_seq_text;
use crate::seq::Sequence;
use crate::shrink::shrink;

pub fn run(a: &super::commands::ShrinkArgs) -> Result<i32, String> {
    let [path] = a.positional.as_slice() else {
        return Err("shrink: name exactly one FILE".into());
    };
    let out = a.out.as_deref().ok_or("shrink: -o OUT is required")?;
    let mut kvm = match a.backend.as_deref().unwrap_or("model") {
        "model" => None,
        "kvm" => Some(KvmBackend::open()?),
        other => return Err(format!("shrink: unknown backend `{other}` (model, kvm)")),
    };
    let planted = super::plant_arg(a.plant.as_deref())?;
    let seq = load(path)?;
    // The findings of a case where it is checked: the model alone, or the kernel against it.
    let mut findings_of = |s: &Sequence| -> Vec<Finding> {
        match kvm.as_mut() {
            None => run_model(s).findings,
            Some(k) => {
                let c = check_real(k, s);
                c.model.findings.into_iter().chain(c.diff.findings).collect()
            }
        }
    };
    let found = findings_of(&seq);
    // The finding itself before a failed expectation that merely records it.
    let Some(f) = found.iter().find(|f| f.kind != FindingKind::Expectation).or(found.first()).cloned() else {
        return Err(format!("{path}: replays without a finding; nothing to shrink"));
    };
    let sig = f.signature();
    let small = shrink(&seq, |c| findings_of(c).iter().any(|g| g.signature() == sig));
    let plant = planted.map(|b| format!(" --plant {}", b.name())).unwrap_or_default();
    let (small, replay) = match &kvm {
        Some(k) if matches!(f.kind, FindingKind::Divergence | FindingKind::KernelSplat) => {
            (crate::oracle::with_model_expectations(&small, k.kernel()), "privmem replay --backend kvm")
        }
        Some(_) => (small, "privmem replay --backend kvm"),
        None => (small, "privmem replay"),
    };
    super::write_out(
        out,
        finding_seq_text(&sig, &f.detail, &crate::seq::text::print(&small), &format!("{replay}{plant}")).as_bytes(),
    )?;
    if a.json {
        let r = crate::report::records::ShrinkRecord {
            signature: sig.to_string(),
            steps_before: seq.steps.len(),
            steps_after: small.steps.len(),
            out: out.to_string(),
        };
        crate::wire::print(r);
    } else {
        let words = format!("{sig}: {} -> {} steps, written to {out}", seq.steps.len(), small.steps.len());
        match out {
            "-" => eprintln!("{words}"),
            _ => println!("{words}"),
        }
    }
    Ok(0)
}
