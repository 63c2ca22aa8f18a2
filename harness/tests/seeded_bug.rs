//! A bug planted in the model must show as a new finding in a campaign on the fixed variant,
//! and must not hide behind a documented hazard: the generator turns on no hazard option unless
//! asked, and signatures carry the configuration they arose under. One test in its own binary,
//! because planting is process-wide.

use privmem::campaign::{Campaign, CampaignConfig};
use privmem::model::seeded::{plant, SeededBug};
use privmem::seq::gen::GenConfig;
use privmem::seq::{Variant, VmType};

fn huge_v3_campaign() -> Campaign {
    let gen = GenConfig { vm: Some(VmType::Tdx), variant: Some(Variant::HugeV3), max_ops: 24, ..Default::default() };
    Campaign::new(CampaignConfig { gen, seed: 1, ..Default::default() })
}

#[test]
fn a_planted_huge_v3_split_bug_is_a_new_finding() {
    // The fixed variant, nothing planted: a clean campaign.
    let mut c = huge_v3_campaign();
    for _ in 0..20_000 {
        let new = c.step();
        assert!(new.is_empty(), "huge-v3 with no hazard option reported {}", new[0].finding.signature());
    }
    // The fault-path split silently ignored: a livelock, reported as new, under huge-v3 itself.
    plant(Some(SeededBug::HugeV3SplitIgnored));
    let mut c = huge_v3_campaign();
    let found = (1..=20_000u64).find_map(|n| c.step().into_iter().next().map(|f| (n, f)));
    plant(None);
    let (n, f) = found.expect("the planted bug was not found within 20000 cases");
    eprintln!("planted bug found after {n} cases: {}", f.finding.signature());
    assert!(f.finding.signature().starts_with("livelock:accept:no-progress@tdx/huge-v3"));
    assert!(!f.known);
}
