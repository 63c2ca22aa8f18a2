//! One state per invariant that breaks it, built from a scenario's header and host ops and one
//! leaf put where it must not be; the check must name that invariant and no other.

use super::*;
use crate::seq::text::parse;
use stage2::Leaf;

/// The model after `src`'s header and host ops, with no violation yet.
fn model(src: &str) -> Model {
    let s = parse("t", src).unwrap();
    let mut m = Model::new(&s.header).unwrap();
    for st in &s.steps {
        m.host_op(&st.op);
    }
    m.violations.clear();
    m
}

/// Put `leaf` at `gfn` (mirror root or shared), check, and return the invariants that fired.
fn fired(m: &mut Model, gfn: u64, leaf: Leaf, mirror: bool) -> Vec<&'static str> {
    if mirror {
        m.mirror.insert(gfn, leaf);
    } else {
        m.shared.insert(gfn, leaf);
    }
    check(m, &[(gfn, gfn + leaf.pages())]);
    let mut v: Vec<&'static str> = m
        .violations
        .iter()
        .filter_map(|x| match x.kind {
            ViolationKind::Invariant(n) => Some(n),
            _ => None,
        })
        .collect();
    v.dedup();
    v
}

const G: u64 = 0x100000; // gfn of 0x1_0000_0000
const SW_GMEM: &str = "vm sw-protected\ngmem g size=2M\nslot 0 gpa=0x100000000 size=2M gmem=g offset=0\n";

/// Each invariant's breaking state: (name, scenario, leaf, in the mirror root).
fn cases() -> Vec<(&'static str, String, Leaf, bool)> {
    let l4 = |private| Leaf::one(Level::L4K, 0x1234, private, false);
    let l2 = |private| Leaf::one(Level::L2M, 0x4000, private, false);
    vec![
        ("leaf-outside-memslot", "vm default\n".into(), l4(false), false),
        (
            "private-leaf-outside-gmem-slot",
            "vm sw-protected\nslot 0 gpa=0x100000000 size=2M\nprivate 0x100000000 2M => ok\n".into(),
            l4(true),
            false,
        ),
        ("private-leaf-over-shared-gfn", SW_GMEM.into(), l4(true), false),
        (
            "huge-leaf-spans-slots",
            "vm default\nslot 0 gpa=0x100000000 size=1M\nslot 1 gpa=0x100100000 size=1M\n".into(),
            l2(false),
            false,
        ),
        ("huge-leaf-mixed-attributes", format!("{SW_GMEM}private 0x100000000 4K => ok\n"), l2(false), false),
        ("leaf-exceeds-folio", format!("{SW_GMEM}private 0x100000000 2M => ok\n"), l2(true), false),
        (
            "huge-private-leaf-during-build",
            "vm tdx\ngmem g size=2M huge\nslot 0 gpa=0x100000000 size=2M gmem=g offset=0\nprivate 0x100000000 2M => ok\nfallocate g 0 2M => ok\n".into(),
            l2(true),
            false,
        ),
        (
            "mirror-sept-disagree",
            "vm tdx\ngmem g size=2M\nslot 0 gpa=0x100000000 size=2M gmem=g offset=0\nprivate 0x100000000 2M => ok\nfinalize => ok\n".into(),
            l4(true),
            true,
        ),
        (
            "private-page-not-assigned",
            "vm snp\ngmem g size=2M\nslot 0 gpa=0x100000000 size=2M gmem=g offset=0\nprivate 0x100000000 2M => ok\n".into(),
            l4(true),
            false,
        ),
    ]
}

#[test]
fn each_invariant_fires_alone_on_the_state_that_breaks_it() {
    for (name, src, leaf, mirror) in cases() {
        let mut m = model(&src);
        assert_eq!(fired(&mut m, G, leaf, mirror), vec![name], "{name}:\n{src}");
    }
}

/// SNP's RMP level rule: a pre-fault maps the 2M folio with a 2M leaf over a 2M RMP entry;
/// PSMASH the entry to 4K under the leaf, and the leaf is larger than its RMP entry.
#[test]
fn npt_above_rmp_size_fires_alone() {
    let src = "vm snp\ngmem g size=2M huge\nslot 0 gpa=0x100000000 size=2M gmem=g offset=0\nprivate 0x100000000 2M => ok\nfallocate g 0 2M => ok\nfinalize => ok\nprefault vcpu0 0x100000000 2M => ok\n";
    let mut m = model(src);
    let (_, leaf) = m.shared.get(G).expect("the pre-fault mapped the page");
    assert_eq!(leaf.level, Level::L2M, "the fault mapped the folio at 2M");
    assert!(m.rmp.as_mut().expect("SNP").psmash(leaf.pfn));
    m.shared.remove_range(G, G + 512);
    assert_eq!(fired(&mut m, G, leaf, false), vec!["npt-above-rmp-size"], "{src}");
}

#[test]
fn every_invariant_of_the_table_has_its_test() {
    let mut tested: Vec<&str> = cases().iter().map(|c| c.0).collect();
    tested.push("npt-above-rmp-size");
    for inv in INVARIANTS {
        assert!(tested.contains(&inv.name), "no breaking state for {}", inv.name);
        assert!(!inv.doc.is_empty());
    }
    // docs/model.md §9 names each one.
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/model.md")).unwrap();
    for inv in INVARIANTS {
        assert!(doc.contains(&format!("`{}`", inv.name)), "docs/model.md §9 does not name {}", inv.name);
    }
}
