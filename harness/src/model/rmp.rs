//! The SEV-SNP Reverse Map Table: per 4K host page, whether it is assigned to the guest, its
//! page size (a 2M entry covers 512 pages), whether the guest validated it, and the GPA it is
//! assigned at. RMPUPDATE (assign / make shared) and PSMASH live here; PVALIDATE's checks are in
//! [`super::snp`]. Entries are kept as runs of alike entries, keyed by pfn.

use super::ranges::RunMap;
use crate::seq::Level;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RmpEntry {
    /// 2M entry (512 pages) or 4K.
    pub size: Level,
    pub validated: bool,
    /// GFN of the first page of the first entry of the run.
    pub gfn: u64,
    pub count: u64,
}

super::ranges::leveled_run!(RmpEntry, size, gfn, validated);

#[derive(Clone, Debug, Default)]
pub struct Rmp {
    entries: RunMap<RmpEntry>,
    pub psmashes: u64,
}

impl Rmp {
    /// The entry covering `pfn`: its first pfn and the one-entry run. None: hypervisor-owned.
    pub fn entry(&self, pfn: u64) -> Option<(u64, RmpEntry)> {
        self.entries.item(pfn)
    }

    /// Whether any page of `[pfn, pfn + pages)` is assigned.
    pub fn any(&self, pfn: u64, pages: u64) -> bool {
        self.entries.has_any(pfn, pfn + pages)
    }

    /// RMPUPDATE: assign `n` entries of `size` from `pfn` to the guest at `gfn`, not validated.
    pub fn assign(&mut self, pfn: u64, gfn: u64, size: Level, n: u64) {
        self.entries.remove_range(pfn, pfn + n * size.pages());
        self.entries.insert(pfn, RmpEntry { size, validated: false, gfn, count: n });
    }

    /// RMPUPDATE back to hypervisor-owned (the host freed or reclaimed the pages).
    pub fn make_shared(&mut self, pfn: u64, pages: u64) {
        // A 2M entry partly freed is smashed first, as KVM does before reclaiming 4K pages.
        for edge in [pfn, pfn + pages] {
            if let Some((b, e)) = self.entry(edge) {
                if e.size == Level::L2M && b != edge {
                    self.psmash(b);
                }
            }
        }
        self.entries.remove_range(pfn, pfn + pages);
    }

    /// PSMASH: a 2M entry becomes 512 4K entries carrying its state.
    pub fn psmash(&mut self, pfn: u64) -> bool {
        let Some((b, e)) = self.entry(pfn) else { return false };
        if e.size != Level::L2M {
            return false;
        }
        self.psmashes += 1;
        self.entries.remove_range(b, b + 512);
        self.entries.insert(b, RmpEntry { size: Level::L4K, count: 512, ..e });
        true
    }

    pub fn set_validated(&mut self, pfn: u64, size: Level, v: bool) {
        if let Some((b, e)) = self.entry(pfn) {
            debug_assert_eq!(e.size, size);
            self.entries.remove_range(b, b + size.pages());
            self.entries.insert(b, RmpEntry { validated: v, ..e });
        }
    }
}
