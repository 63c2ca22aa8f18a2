//! SPEC.md §9, checked after every step over the GFN ranges the step touched (so a step costs
//! what it touched, not the size of the VM). The aliasing and freed-page rules are checked where
//! frames are mapped and freed ([`Model::map_leaf`], [`Model::punch`]); silent data loss and
//! livelock where guest ops run.

use super::*;

pub fn check(m: &mut Model, dirty: &[(u64, u64)]) {
    let mut bad: Vec<(&'static str, String)> = Vec::new();
    let runnable = m.td.as_ref().map(|t| t.runnable());
    for &(s0, e0) in dirty {
        let (s, e) = (s0 & !511, (e0 + 511) & !511);
        for (root, mirror) in [(&m.shared, false), (&m.mirror, true)] {
            for (b, l) in root.overlapping(s, e) {
                let end = b + l.level.pages();
                let slot = m.slots.find(b);
                let in_one_slot = slot.is_some_and(|sl| sl.contains(end - 1));
                if l.private {
                    // Every present private leaf lies inside a guest_memfd memslot, and every
                    // GFN under it is PRIVATE.
                    if !in_one_slot || slot.is_some_and(|sl| sl.gmem.is_none()) {
                        bad.push(("private-leaf-outside-gmem-slot", format!("private leaf at gfn {b:#x} ({})", l.level.name())));
                    }
                    if m.attrs.uniform(b, end) != Some(true) {
                        bad.push(("private-leaf-over-shared-gfn", format!("private leaf at gfn {b:#x} covers shared GFNs")));
                    }
                    if runnable == Some(false) && l.level != Level::L4K {
                        bad.push(("huge-private-leaf-during-build", format!("{} private leaf at gfn {b:#x} while INITIALIZED", l.level.name())));
                    }
                }
                if l.level > Level::L4K {
                    // No huge leaf spans a slot boundary, mixed attributes, or a smaller folio.
                    if !in_one_slot {
                        bad.push(("huge-leaf-spans-slots", format!("{} leaf at gfn {b:#x}", l.level.name())));
                    }
                    if m.h.vm.has_private_mem() && m.attrs.uniform(b, end).is_none() {
                        bad.push(("huge-leaf-mixed-attributes", format!("{} leaf at gfn {b:#x}", l.level.name())));
                    }
                    if let Some(sl) = slot {
                        if let Some((fi, idx)) = sl.gmem_index(b) {
                            let gmem_backed = l.private || m.gmems[fi].decl.init_shared;
                            let folio = m.gmems[fi].folio_at(idx);
                            if gmem_backed && !folio.is_some_and(|(fb, f)| fb == idx && f.order >= l.level) {
                                bad.push(("leaf-exceeds-folio", format!("{} leaf at gfn {b:#x} over a smaller folio", l.level.name())));
                            }
                        }
                    }
                }
                if mirror {
                    // The mirror and the S-EPT agree on every present leaf.
                    let agree = m.td.as_ref().and_then(|td| td.leaf(b)).is_some_and(|(sb, sl, se)| sb == b && sl == l.level && se.pfn == l.pfn);
                    if !agree {
                        bad.push(("mirror-sept-disagree", format!("mirror leaf at gfn {b:#x} ({}) has no matching S-EPT leaf", l.level.name())));
                    }
                }
            }
        }
        if let Some(td) = &m.td {
            for (b, l, _) in td.leaves_in(s, e) {
                if m.mirror.get(b).is_none_or(|(mb, ml)| mb != b || ml.level != l) {
                    bad.push(("mirror-sept-disagree", format!("S-EPT leaf at gfn {b:#x} ({}) missing from the mirror", l.name())));
                }
            }
        }
    }
    bad.sort();
    bad.dedup();
    for (name, detail) in bad {
        m.violate(ViolationKind::Invariant(name), detail);
    }
}
