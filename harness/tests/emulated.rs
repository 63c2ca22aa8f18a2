//! The TD and SNP shims in emulated mode on this machine's real KVM: every TDX and SNP scenario
//! of the corpus runs through the shims (TDCALL, PVALIDATE and the GHCB MSR answered from the
//! model, #VE and #VC injected) to the model's outcomes; and a platform that answers otherwise
//! is seen. Emulated: this checks the shims, not KVM's TDX or SNP support.

use privmem::backend::emulated::EmulatedBackend;
use privmem::oracle::diff::check_real;
use privmem::seq::{text::parse, VmType};
use std::path::Path;

fn corpus() -> Vec<(String, privmem::seq::Sequence)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus");
    privmem::corpus::seq_files(&root)
        .into_iter()
        .filter_map(|f| {
            let s = parse(&f.display().to_string(), &std::fs::read_to_string(&f).ok()?).ok()?;
            matches!(s.header.vm, VmType::Tdx | VmType::Snp).then(|| (f.display().to_string(), s))
        })
        .collect()
}

#[test]
#[cfg_attr(privmem_no_kvm, ignore = "needs /dev/kvm")]
fn every_tdx_and_snp_scenario_runs_through_the_shims_to_the_models_outcomes() {
    let mut b = EmulatedBackend::open().expect("needs /dev/kvm");
    let cases = corpus();
    assert!(cases.len() >= 30, "only {} TDX/SNP scenarios", cases.len());
    let (mut td, mut snp) = (0, 0);
    for (f, s) in &cases {
        let c = check_real(&mut b, s);
        assert!(c.unsupported.is_none(), "{f}: {:?}", c.unsupported);
        assert!(c.diff.findings.is_empty(), "{f}: {:#?}", c.diff.findings);
        if s.header.vm == VmType::Tdx {
            td += 1;
        } else {
            snp += 1;
        }
    }
    let n = b.counts;
    eprintln!("emulated: {td} TDX and {snp} SNP scenarios, {n:?}");
    // The shims really ran: guest steps, answered traps, injected #VE/#VC.
    assert!(n.shim_steps >= 100 && n.traps >= 100 && n.injected >= 5, "{n:?}");
}

#[test]
#[cfg_attr(privmem_no_kvm, ignore = "needs /dev/kvm")]
fn a_platform_answering_otherwise_is_a_divergence() {
    let mut b = EmulatedBackend::open().expect("needs /dev/kvm");
    b.tamper = true;
    for vm in [VmType::Tdx, VmType::Snp] {
        let (f, s) = corpus()
            .into_iter()
            .find(|(_, s)| s.header.vm == vm && s.steps.iter().any(|st| st.op.kind() == privmem::seq::OpKind::Accept))
            .expect("a scenario with an accept");
        let c = check_real(&mut b, &s);
        assert!(!c.diff.findings.is_empty(), "{f}: a wrong ACCEPT/PVALIDATE answer went unseen");
    }
}
