//! Stage-2 tables as KVM's TDP MMU keeps them: present leaves with their level and frame, per
//! root (the shared/direct root, and for TDX the mirror root that shadows the S-EPT). Leaves
//! are kept as runs of alike leaves with contiguous frames.
//!
//! Only leaves are kept: KVM's page-table pages matter to the model through the S-EPT (TDX),
//! where the TDX module owns them.

use super::ranges::RunMap;
use crate::seq::Level;

/// One leaf, or (as a run) `count` alike leaves in a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    pub level: Level,
    /// Frame of the first leaf; the run's frames are contiguous.
    pub pfn: u64,
    /// Mapped by a private fault (guest_memfd backing).
    pub private: bool,
    /// The level was the model's guess where the host's THP decides: real KVM may have mapped
    /// this range with 4K leaves instead.
    pub thp: bool,
    pub count: u64,
}

impl Leaf {
    pub fn one(level: Level, pfn: u64, private: bool, thp: bool) -> Leaf {
        Leaf { level, pfn, private, thp, count: 1 }
    }
    pub fn pages(&self) -> u64 {
        self.level.pages() * self.count
    }
}

super::ranges::leveled_run!(Leaf, level, pfn, private, thp);

#[derive(Clone, Debug, Default)]
pub struct LeafMap {
    runs: RunMap<Leaf>,
    counts: [u64; 3],
    thp: u64,
}

impl LeafMap {
    /// The leaf mapping `gfn`, with its first GFN.
    pub fn get(&self, gfn: u64) -> Option<(u64, Leaf)> {
        self.runs.item(gfn)
    }

    /// Runs overlapping `[s, e)`, uncut.
    pub fn runs_in(&self, s: u64, e: u64) -> Vec<(u64, Leaf)> {
        self.runs.overlapping(s, e)
    }

    pub fn has_any(&self, s: u64, e: u64) -> bool {
        self.runs.has_any(s, e)
    }

    /// Install a leaf (or run); the caller has removed whatever it replaces.
    pub fn insert(&mut self, base: u64, leaf: Leaf) {
        self.counts[leaf.level as usize] += leaf.count;
        self.thp += leaf.thp as u64 * leaf.count;
        self.runs.insert(base, leaf);
    }

    /// Remove every leaf overlapping `[s, e)` (a huge leaf that overlaps is removed whole, as
    /// the TDP MMU zaps it). Returns the removed runs.
    pub fn remove_range(&mut self, s: u64, e: u64) -> Vec<(u64, Leaf)> {
        let v = self.runs.remove_range(s, e);
        for (_, l) in &v {
            self.counts[l.level as usize] -= l.count;
            self.thp -= l.thp as u64 * l.count;
        }
        v
    }

    /// Present leaves per level: 4K, 2M, 1G.
    pub fn counts(&self) -> [u64; 3] {
        self.counts
    }

    /// How many leaves carry a THP-dependent level.
    pub fn thp_leaves(&self) -> u64 {
        self.thp
    }
}
