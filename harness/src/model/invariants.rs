//! docs/model.md §9, checked after every step over the GFN ranges the step touched (so a step costs
//! the pieces it touched, not the size of the VM). The aliasing and freed-page rules are
//! checked where frames are mapped and freed ([`Model::map_leaf`], [`Model::punch`]); silent
//! data loss and livelock where guest ops run.

use super::*;

pub fn check(m: &mut Model, dirty: &[(u64, u64)]) {
    let mut bad: Vec<(&'static str, String)> = Vec::new();
    let runnable = m.td.as_ref().map(|t| t.runnable());
    // Align to 2M and merge, so a split's touched pages cost one pass.
    let mut spans: Vec<(u64, u64)> = dirty.iter().map(|&(s, e)| (s & !511, e.saturating_add(511) & !511)).collect();
    spans.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(spans.len());
    for (s, e) in spans {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    for (s, e) in merged {
        for (root, mirror) in [(&m.shared, false), (&m.mirror, true)] {
            for (b, l) in root.runs_in(s, e) {
                let end = b + l.pages();
                // A run may cross from one slot into an adjacent one, but no leaf may: walk the
                // slots under the run; they must cover it, meeting at leaf boundaries.
                let mut at = b;
                let mut all_gmem = true;
                let mut leaf_cut = false;
                for sl in m.slots.overlapping(b, end) {
                    if sl.base_gfn > at {
                        break;
                    }
                    all_gmem &= sl.gmem.is_some();
                    if sl.end_gfn() < end && (sl.end_gfn() - b) % l.level.pages() != 0 {
                        leaf_cut = true;
                    }
                    at = sl.end_gfn();
                }
                let covered = at >= end;
                if l.private {
                    // Every present private leaf lies inside a guest_memfd memslot, and every
                    // GFN under it is PRIVATE.
                    if !covered || !all_gmem {
                        bad.push((
                            "private-leaf-outside-gmem-slot",
                            format!("private leaf at gfn {b:#x} ({})", l.level.name()),
                        ));
                    }
                    if m.attrs.uniform(b, end) != Some(true) {
                        bad.push((
                            "private-leaf-over-shared-gfn",
                            format!("private leaf at gfn {b:#x} covers shared GFNs"),
                        ));
                    }
                    if runnable == Some(false) && l.level != Level::L4K {
                        bad.push((
                            "huge-private-leaf-during-build",
                            format!("{} private leaf at gfn {b:#x} while INITIALIZED", l.level.name()),
                        ));
                    }
                }
                if !covered {
                    bad.push((
                        "leaf-outside-memslot",
                        format!("{} leaf run at gfn {b:#x} not inside memslots", l.level.name()),
                    ));
                }
                if l.level > Level::L4K {
                    // No huge leaf spans a slot boundary, mixed attributes, or a smaller folio.
                    if leaf_cut {
                        bad.push(("huge-leaf-spans-slots", format!("{} leaf at gfn {b:#x}", l.level.name())));
                    }
                    for k in 0..l.count {
                        let lb = b + k * l.level.pages();
                        let le = lb + l.level.pages();
                        let slot = m.slots.find(lb);
                        if m.h.vm.has_private_mem() && m.attrs.uniform(lb, le).is_none() {
                            bad.push(("huge-leaf-mixed-attributes", format!("{} leaf at gfn {lb:#x}", l.level.name())));
                        }
                        if let Some((fi, idx)) = slot.and_then(|sl| sl.gmem_index(lb)) {
                            let gmem_backed = l.private || m.gmems[fi].gmem_only();
                            let folio = m.gmems[fi].folio_at(idx);
                            if gmem_backed && !folio.is_some_and(|(fb, f)| fb == idx && f.order >= l.level) {
                                bad.push((
                                    "leaf-exceeds-folio",
                                    format!("{} leaf at gfn {lb:#x} over a smaller folio", l.level.name()),
                                ));
                            }
                        }
                    }
                }
                if let (Some(rmp), true) = (&m.rmp, l.private) {
                    // SNP: the NPT level never exceeds the RMP entry's size, and private pages
                    // are assigned.
                    for k in 0..l.count.min(1024) {
                        let pfn = l.pfn + k * l.level.pages();
                        match rmp.entry(pfn) {
                            Some((_, e)) if e.size >= l.level => {}
                            Some(_) => bad.push((
                                "npt-above-rmp-size",
                                format!(
                                    "{} NPT leaf at gfn {:#x} over a smaller RMP entry",
                                    l.level.name(),
                                    b + k * l.level.pages()
                                ),
                            )),
                            None => bad.push((
                                "private-page-not-assigned",
                                format!(
                                    "private leaf at gfn {:#x} maps a hypervisor-owned page",
                                    b + k * l.level.pages()
                                ),
                            )),
                        }
                    }
                }
                if mirror && !sept_matches(m, b, &l) {
                    bad.push((
                        "mirror-sept-disagree",
                        format!("mirror leaves at gfn {b:#x} (+{} {}) differ from the S-EPT", l.count, l.level.name()),
                    ));
                }
            }
        }
        if let Some(td) = &m.td {
            for (b, l, r) in td.leaves_in(s, e) {
                // Every S-EPT leaf has a mirror leaf at the same level and page.
                let mut at = b;
                for (mb, ml) in m.mirror.runs_in(b, b + r.span()) {
                    let ok = ml.level == l && mb <= at && ml.pfn.wrapping_sub(mb) == r.pfn.wrapping_sub(b);
                    if !ok {
                        break;
                    }
                    at = mb + ml.pages();
                }
                if at < b + r.span() {
                    bad.push((
                        "mirror-sept-disagree",
                        format!("S-EPT leaf at gfn {at:#x} ({}) missing from the mirror", l.name()),
                    ));
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

/// Whether the S-EPT has the same leaves (level, page) over a mirror run.
fn sept_matches(m: &Model, b: u64, l: &stage2::Leaf) -> bool {
    let Some(td) = &m.td else { return false };
    let end = b + l.pages();
    let mut at = b;
    for (rb, r) in td.runs_in(b, end, l.level) {
        if rb > at || !r.state.is_leaf() || r.pfn.wrapping_sub(rb) != l.pfn.wrapping_sub(b) {
            return false;
        }
        at = rb + r.span();
    }
    at >= end
}
