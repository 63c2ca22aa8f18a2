//! Liveness: from a fixed seed and no corpus, the generator reaches each hazard class within a
//! bounded number of cases. If a generator change loses one of them, this fails.

use privmem::campaign::{Campaign, CampaignConfig};
use privmem::oracle::run::run_model_cov;
use privmem::seq::gen::GenConfig;
use privmem::seq::{Knob, Outcome, TdxStatus, Variant, VmType};

/// How many cases until `hit` holds, or None within `bound`.
fn cases_until(
    variant: Option<Variant>,
    seed: u64,
    bound: u64,
    mut hit: impl FnMut(&privmem::seq::Sequence) -> bool,
) -> Option<u64> {
    let cfg = CampaignConfig {
        gen: GenConfig {
            vm: Some(VmType::Tdx),
            variant,
            max_ops: 24,
            hazards: Knob::ALL.to_vec(),
            ..Default::default()
        },
        against: None,
        ignore: Vec::new(),
        seed,
    };
    let mut c = Campaign::new(cfg);
    (1..=bound).find(|_| hit(&c.next_case()))
}

fn has_finding(s: &privmem::seq::Sequence, prefix: &str) -> bool {
    run_model_cov(s).0.findings.iter().any(|f| f.signature().starts_with(prefix))
}

#[test]
fn reaches_livelock() {
    let n = cases_until(Some(Variant::HugeV1), 1, 2_000, |s| has_finding(s, "livelock:"));
    assert!(n.is_some(), "no livelock within 2000 huge-v1 cases");
    eprintln!("livelock after {n:?} cases");
}

#[test]
fn reaches_silent_data_loss() {
    let n = cases_until(None, 2, 20_000, |s| has_finding(s, "silent-data-loss:"));
    assert!(n.is_some(), "no silent data loss within 20000 cases");
    eprintln!("silent data loss after {n:?} cases");
}

#[test]
fn reaches_page_size_mismatch() {
    let n = cases_until(None, 3, 20_000, |s| {
        run_model_cov(s).0.outcomes.iter().any(|o| matches!(o, Outcome::Tdx(TdxStatus::PageSizeMismatch, _)))
    });
    assert!(n.is_some(), "no PAGE_SIZE_MISMATCH within 20000 cases");
    eprintln!("PAGE_SIZE_MISMATCH after {n:?} cases");
}

#[test]
fn reaches_enomem_partial_conversion() {
    let n = cases_until(Some(Variant::HugeV1), 4, 400_000, |s| {
        run_model_cov(s).1.is_some_and(|c| c.partial_conversions > 0)
    });
    assert!(n.is_some(), "no partial conversion within 400000 huge-v1 cases");
    eprintln!("ENOMEM partial conversion after {n:?} cases");
}

#[test]
fn reaches_snp_size_mismatch() {
    use privmem::seq::PvalidateRc;
    let cfg = CampaignConfig {
        gen: GenConfig { vm: Some(VmType::Snp), max_ops: 24, ..Default::default() },
        against: None,
        ignore: Vec::new(),
        seed: 5,
    };
    let mut c = Campaign::new(cfg);
    let n = (1..=20_000u64).find(|_| {
        let s = c.next_case();
        run_model_cov(&s).0.outcomes.iter().any(|o| matches!(o, Outcome::Pvalidate(PvalidateRc::FailSizeMismatch, _)))
    });
    assert!(n.is_some(), "no FAIL_SIZEMISMATCH within 20000 SNP cases");
    eprintln!("SNP size mismatch after {n:?} cases");
}

#[test]
fn huge_v3_never_livelocks_unless_the_accept_level_is_ignored() {
    // The fix H1 asks for: under huge-v3 an ACCEPT always finishes, whatever the sequence, as
    // long as KVM honours the accept level.
    let cfg = CampaignConfig {
        gen: GenConfig {
            vm: Some(VmType::Tdx),
            variant: Some(Variant::HugeV3),
            max_ops: 24,
            hazards: Knob::ALL.to_vec(),
            ..Default::default()
        },
        against: None,
        ignore: Vec::new(),
        seed: 6,
    };
    let mut c = Campaign::new(cfg);
    let mut checked = 0;
    for _ in 0..20_000 {
        let s = c.next_case();
        if s.header.has(privmem::seq::Knob::IgnoreAcceptLevel) {
            continue;
        }
        checked += 1;
        let t = run_model_cov(&s).0;
        assert!(
            !t.findings.iter().any(|f| f.signature().starts_with("livelock:")),
            "huge-v3 livelocked:\n{}",
            privmem::seq::text::print(&s)
        );
    }
    assert!(checked > 10_000);
}
