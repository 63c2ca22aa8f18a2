use super::*;

fn view(mmu: Mmu) -> TraceView {
    TraceView {
        dir: PathBuf::new(),
        pipes: Vec::new(),
        rings: Vec::new(),
        tdp_fmt: Format::default(),
        set_fmt: Format::default(),
        mmu,
        leaves: BTreeMap::new(),
        snapshot: None,
        mmio: Default::default(),
        installed: Vec::new(),
        lost: false,
        page: Vec::new(),
        events: Vec::new(),
    }
}

fn changed(gfn: u64, level: u8, old: u64, new: u64) -> Event {
    Event::SpteChanged { as_id: 0, gfn, level, old, new }
}

#[test]
fn tdp_events_rebuild_the_leaves() {
    let mut v = view(Mmu::Tdp);
    v.apply(changed(0x40200, 2, NONPRESENT, 0x6000_0000_0abc_08f7)); // a 2M leaf
    v.apply(changed(0x40000, 3, NONPRESENT, 0x6000_0000_0123_4807)); // a page table
    assert_eq!(v.leaves(u64::MAX).map(|l| l.to_vec()), Some(vec![KLeaf { gfn: 0x40200, level: Level::L2M, root: 0 }]));
    v.apply(changed(0x90000, 1, NONPRESENT, 0x8010_0000_0000_0006)); // an MMIO SPTE
    assert_eq!(v.left_below(u64::MAX), (true, true));
    v.apply(changed(0x40200, 2, 0x6000_0000_0abc_08f7, NONPRESENT));
    assert_eq!(v.leaves(u64::MAX).map(|l| l.to_vec()), Some(vec![]));
    // A 2M leaf over a page table: its event first, then the removed 4K child's, at the
    // same GFN; the 2M leaf stays.
    v.apply(changed(0x80200, 1, NONPRESENT, 0x6000_0000_0abc_0807));
    v.apply(changed(0x80200, 2, 0x6000_0000_0123_4807, 0x6000_0000_0abc_08f7));
    v.apply(changed(0x80200, 1, 0x6000_0000_0abc_0807, FROZEN[0]));
    assert_eq!(v.leaves(u64::MAX).map(|l| l.to_vec()), Some(vec![KLeaf { gfn: 0x80200, level: Level::L2M, root: 0 }]));
    // The leaf's frame is its SPTE's address bits, not the top flag bits.
    assert_eq!(v.pfn(&KLeaf { gfn: 0x80200, level: Level::L2M, root: 0 }), Some(0xabc0));
    assert_eq!(v.left_below(0x90001), (true, true), "the MMIO SPTE is still cached");
    assert_eq!(v.left_below(0x80200), (false, false));
    v.forget_mmio();
    assert_eq!(v.left_below(0x90001), (true, false), "forgotten");
}

/// A step that changed no leaf hands out the same view, not a copy; one that did, a new one, in
/// GFN order, then root, then level; the limit cuts at a GFN.
#[test]
fn unchanged_leaves_are_shared() {
    let mut v = view(Mmu::Tdp);
    let leaf4k = 0x6000_0000_0abc_0807;
    v.apply(Event::SpteChanged { as_id: 1, gfn: 0x300, level: 1, old: NONPRESENT, new: leaf4k });
    v.apply(changed(0x300, 1, NONPRESENT, leaf4k));
    v.apply(changed(0x100, 1, NONPRESENT, leaf4k));
    let a = v.leaves(0x1000).expect("no loss");
    let k = |gfn, root| KLeaf { gfn, level: Level::L4K, root };
    assert_eq!(a.to_vec(), vec![k(0x100, 0), k(0x300, 0), k(0x300, 1)]);
    // An MMIO SPTE and a non-leaf change are not leaves.
    v.apply(changed(0x900, 1, NONPRESENT, 0x8010_0000_0000_0006));
    v.apply(changed(0x800, 2, NONPRESENT, 0x6000_0000_0123_4807));
    let b = v.leaves(0x1000).expect("no loss");
    assert!(Arc::ptr_eq(&a, &b), "nothing changed: the same view");
    assert_eq!(v.leaves(0x300).expect("no loss").to_vec(), vec![k(0x100, 0)], "another limit");
    v.apply(changed(0x100, 1, leaf4k, NONPRESENT));
    let c = v.leaves(0x1000).expect("no loss");
    assert_eq!(c.to_vec(), vec![k(0x300, 0), k(0x300, 1)]);
    assert_eq!(v.left_below(0x300), (false, false));
    assert_eq!(v.left_below(0x301), (true, false));
}

/// A removed page table's children are frozen, on 6.12 and on 7.3 (another value): neither is
/// an MMIO SPTE, at any level. An MMIO SPTE is (NPT: bit 0 and the generation).
#[test]
fn frozen_children_are_not_mmio() {
    let mut v = view(Mmu::Tdp);
    for (i, frozen) in FROZEN.iter().enumerate() {
        v.apply(changed(0x40000 * (i as u64 + 1), 3, NONPRESENT, *frozen));
        v.apply(changed(0x200, 2, NONPRESENT, *frozen));
        v.apply(changed(0x201, 1, NONPRESENT, *frozen));
    }
    assert_eq!(v.left_below(u64::MAX), (false, false));
    v.apply(changed(0x202, 1, NONPRESENT, NONPRESENT | 0x8_0000_0000_0221));
    assert_eq!(v.left_below(u64::MAX), (false, true));
}

#[test]
fn shadow_events_list_installed_leaves() {
    let mut v = view(Mmu::Shadow);
    v.apply(Event::SetSpte { gfn: 0x100000, level: 2 });
    v.apply(Event::SetSpte { gfn: 0x1fc0000, level: 1 });
    assert_eq!(v.take_installed(0x1fc0000), Some(vec![KLeaf { gfn: 0x100000, level: Level::L2M, root: 0 }]));
    assert_eq!(v.take_installed(u64::MAX), Some(vec![]), "taken once");
}

/// A page as `trace_pipe_raw` gives it: one small record, one with a length word, a time
/// extend, then zero padding; the missed-events flag in the commit word.
#[test]
fn ring_buffer_pages_decode() {
    let tdp = Format { id: 117, gfn: 8, old: 16, new: 24, level: 32, as_id: 33 };
    let set = Format { id: 118, gfn: 8, level: 32, ..Default::default() };
    let rec = |id: u16, gfn: u64, level: u8| {
        let mut r = vec![0u8; 36];
        r[0..2].copy_from_slice(&id.to_le_bytes());
        r[8..16].copy_from_slice(&gfn.to_le_bytes());
        r[24..32].copy_from_slice(&0x6000_0000_0000_0807u64.to_le_bytes());
        r[32] = level;
        r
    };
    let mut data = Vec::new();
    // type_len 9 (36 bytes), delta 5.
    data.extend_from_slice(&(9u32 | 5 << 5).to_le_bytes());
    data.extend(rec(117, 0x1234, 1));
    // A time extend of 1 << 27.
    data.extend_from_slice(&(30u32).to_le_bytes());
    data.extend_from_slice(&1u32.to_le_bytes());
    // type_len 0: the length word (36 + 4) first.
    data.extend_from_slice(&(7u32 << 5).to_le_bytes());
    data.extend_from_slice(&40u32.to_le_bytes());
    data.extend(rec(118, 0x5678, 2));
    let mut page = vec![0u8; 4096];
    page[0..8].copy_from_slice(&1000u64.to_le_bytes());
    page[8..16].copy_from_slice(&(data.len() as u64 | RB_MISSED_EVENTS).to_le_bytes());
    page[16..16 + data.len()].copy_from_slice(&data);
    let mut out = Vec::new();
    assert!(decode_page(&page, &tdp, &set, &mut out), "the missed-events flag");
    assert_eq!(out.len(), 2);
    assert_eq!(
        out[0],
        (1005, Event::SpteChanged { as_id: 0, gfn: 0x1234, level: 1, old: 0, new: 0x6000_0000_0000_0807 })
    );
    assert_eq!(out[1], (1005 + (1 << 27) + 7, Event::SetSpte { gfn: 0x5678, level: 2 }));
}
