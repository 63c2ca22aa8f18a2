//! docs/model.md §9 as a table: each invariant is one function with its name (the finding's
//! state) and what it says, checked after every step over the GFN ranges the step touched (so
//! a step costs the pieces it touched, not the size of the VM). The aliasing and freed-page
//! rules are checked where frames are mapped and freed ([`Model::map_leaf`], [`Model::punch`]);
//! silent data loss and livelock where guest ops run.

use super::*;

/// One leaf run of a root, with what the slots under it say.
pub struct LeafRun<'a> {
    pub m: &'a Model,
    pub base: u64,
    pub leaf: stage2::Leaf,
    /// The run is in the mirror (private) root of a TD.
    pub mirror: bool,
    /// The slots under the run cover it without a gap.
    pub covered: bool,
    /// Every slot under the run is bound to guest_memfd.
    pub all_gmem: bool,
    /// A slot boundary falls inside one of the run's leaves.
    pub leaf_cut: bool,
}

impl LeafRun<'_> {
    fn end(&self) -> u64 {
        self.base + self.leaf.pages()
    }
    /// The first GFN of each leaf of the run.
    fn leaves(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.leaf.count).map(|k| self.base + k * self.leaf.level.pages())
    }
    fn name(&self) -> &'static str {
        self.leaf.level.name()
    }
}

/// An invariant: its name, its rule, and its check of one leaf run (the details of each
/// breach; empty when it holds).
pub struct Invariant {
    pub name: &'static str,
    pub doc: &'static str,
    pub check: fn(&LeafRun) -> Vec<String>,
}

fn one(broken: bool, detail: impl FnOnce() -> String) -> Vec<String> {
    if broken {
        vec![detail()]
    } else {
        Vec::new()
    }
}

pub const INVARIANTS: &[Invariant] = &[
    Invariant {
        name: "private-leaf-outside-gmem-slot",
        doc: "Every present private leaf lies inside guest_memfd memslots.",
        check: |r| {
            one(r.leaf.private && (!r.covered || !r.all_gmem), || {
                format!("private leaf at gfn {:#x} ({})", r.base, r.name())
            })
        },
    },
    Invariant {
        name: "private-leaf-over-shared-gfn",
        doc: "Every GFN under a private leaf is PRIVATE.",
        check: |r| {
            one(r.leaf.private && r.m.attrs.uniform(r.base, r.end()) != Some(true), || {
                format!("private leaf at gfn {:#x} covers shared GFNs", r.base)
            })
        },
    },
    Invariant {
        name: "huge-private-leaf-during-build",
        doc: "While a TD is being built (INITIALIZED), private memory is mapped at 4K only.",
        check: |r| {
            let building = r.m.td.as_ref().map(|t| t.runnable()) == Some(false);
            one(r.leaf.private && building && r.leaf.level != Level::L4K, || {
                format!("{} private leaf at gfn {:#x} while INITIALIZED", r.name(), r.base)
            })
        },
    },
    Invariant {
        name: "leaf-outside-memslot",
        doc: "Every leaf lies inside memslots.",
        check: |r| one(!r.covered, || format!("{} leaf run at gfn {:#x} not inside memslots", r.name(), r.base)),
    },
    Invariant {
        name: "huge-leaf-spans-slots",
        doc: "No huge leaf spans a memslot boundary.",
        check: |r| one(r.leaf.level > Level::L4K && r.leaf_cut, || format!("{} leaf at gfn {:#x}", r.name(), r.base)),
    },
    Invariant {
        name: "huge-leaf-mixed-attributes",
        doc: "On a VM with private memory, no huge leaf covers GFNs of both attributes.",
        check: |r| {
            if r.leaf.level == Level::L4K || !r.m.h.vm.has_private_mem() {
                return Vec::new();
            }
            let n = r.leaf.level.pages();
            r.leaves()
                .filter(|&lb| r.m.attrs.uniform(lb, lb + n).is_none())
                .map(|lb| format!("{} leaf at gfn {lb:#x}", r.name()))
                .collect()
        },
    },
    Invariant {
        name: "leaf-exceeds-folio",
        doc: "A huge leaf backed by guest_memfd maps a folio at least as large, starting with it.",
        check: |r| {
            if r.leaf.level == Level::L4K {
                return Vec::new();
            }
            r.leaves()
                .filter(|&lb| {
                    let Some((fi, idx)) = r.m.slots.find(lb).and_then(|sl| sl.gmem_index(lb)) else { return false };
                    let backed = r.leaf.private || r.m.gmems[fi].gmem_only();
                    let folio = r.m.gmems[fi].folio_at(idx);
                    backed && !folio.is_some_and(|(fb, f)| fb == idx && f.order >= r.leaf.level)
                })
                .map(|lb| format!("{} leaf at gfn {lb:#x} over a smaller folio", r.name()))
                .collect()
        },
    },
    Invariant {
        name: "npt-above-rmp-size",
        doc: "SNP: a private NPT leaf is never larger than the RMP entry of its page.",
        check: |r| rmp_check(r, true),
    },
    Invariant {
        name: "private-page-not-assigned",
        doc: "SNP: every page a private NPT leaf maps is assigned to the guest in the RMP.",
        check: |r| rmp_check(r, false),
    },
    Invariant {
        name: "mirror-sept-disagree",
        doc: "TDX: the mirror root and the S-EPT have the same leaves (level and page).",
        check: |r| {
            one(r.mirror && !sept_matches(r.m, r.base, &r.leaf), || {
                format!("mirror leaves at gfn {:#x} (+{} {}) differ from the S-EPT", r.base, r.leaf.count, r.name())
            })
        },
    },
];

/// The SNP RMP rules over a private run: `size` the level rule, else the assignment rule.
fn rmp_check(r: &LeafRun, size: bool) -> Vec<String> {
    let (Some(rmp), true) = (&r.m.rmp, r.leaf.private) else { return Vec::new() };
    let mut out = Vec::new();
    for k in 0..r.leaf.count.min(1024) {
        let pfn = r.leaf.pfn + k * r.leaf.level.pages();
        let gfn = r.base + k * r.leaf.level.pages();
        match (rmp.entry(pfn), size) {
            (Some((_, e)), true) if e.size < r.leaf.level => {
                out.push(format!("{} NPT leaf at gfn {gfn:#x} over a smaller RMP entry", r.name()))
            }
            (None, false) => out.push(format!("private leaf at gfn {gfn:#x} maps a hypervisor-owned page")),
            _ => {}
        }
    }
    out
}

pub fn check(m: &mut Model, dirty: &[(u64, u64)]) {
    let mut bad: Vec<(&'static str, String)> = Vec::new();
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
                let run = run_of(m, b, l, mirror);
                for inv in INVARIANTS {
                    bad.extend((inv.check)(&run).into_iter().map(|d| (inv.name, d)));
                }
            }
        }
        if let Some(td) = &m.td {
            for (b, l, r) in td.leaves_in(s, e) {
                // The other half of mirror-sept-disagree: every S-EPT leaf has a mirror leaf at
                // the same level and page.
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

/// A run with what the slots under it say. A run may cross from one slot into an adjacent
/// one, but no leaf may: walk the slots under the run; they must cover it, meeting at leaf
/// boundaries.
pub fn run_of(m: &Model, b: u64, l: stage2::Leaf, mirror: bool) -> LeafRun<'_> {
    let end = b + l.pages();
    let (mut at, mut all_gmem, mut leaf_cut) = (b, true, false);
    for sl in m.slots.overlapping(b, end) {
        if sl.base_gfn > at {
            break;
        }
        all_gmem &= sl.gmem.is_some();
        if sl.end_gfn() < end && !(sl.end_gfn() - b).is_multiple_of(l.level.pages()) {
            leaf_cut = true;
        }
        at = sl.end_gfn();
    }
    LeafRun { m, base: b, leaf: l, mirror, covered: at >= end, all_gmem, leaf_cut }
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

#[cfg(test)]
#[path = "invariants_tests.rs"]
mod tests;
