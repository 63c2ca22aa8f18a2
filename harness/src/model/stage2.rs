//! Stage-2 tables as KVM's TDP MMU keeps them: present leaves with their level and frame, per
//! root (the shared/direct root, and for TDX the mirror root that shadows the S-EPT).
//!
//! Only leaves are kept: KVM's page-table pages matter to the model through the S-EPT (TDX),
//! where the TDX module owns them.

use crate::seq::Level;
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    pub level: Level,
    pub pfn: u64,
    /// Mapped by a private fault (guest_memfd backing).
    pub private: bool,
    /// The level was the model's guess where the host's THP decides: real KVM may have mapped
    /// this range with 4K leaves instead.
    pub thp: bool,
}

#[derive(Clone, Debug, Default)]
pub struct LeafMap {
    map: BTreeMap<u64, Leaf>,
    counts: [u64; 3],
    thp: u64,
}

impl LeafMap {
    /// The leaf mapping `gfn`, with its first GFN.
    pub fn get(&self, gfn: u64) -> Option<(u64, Leaf)> {
        let (&b, &l) = self.map.range(..=gfn).next_back()?;
        (gfn < b + l.level.pages()).then_some((b, l))
    }

    /// Leaves overlapping `[s, e)`, in order.
    pub fn overlapping(&self, s: u64, e: u64) -> Vec<(u64, Leaf)> {
        let mut v = Vec::new();
        if let Some(x) = self.get(s) {
            if x.0 < s {
                v.push(x);
            }
        }
        v.extend(self.map.range(s..e).map(|(&b, &l)| (b, l)));
        v
    }

    pub fn has_any(&self, s: u64, e: u64) -> bool {
        self.get(s).is_some() || self.map.range(s..e).next().is_some()
    }

    /// Install a leaf; the caller has removed whatever it replaces.
    pub fn insert(&mut self, base: u64, leaf: Leaf) {
        debug_assert!(!self.has_any(base, base + leaf.level.pages()));
        self.counts[leaf.level as usize] += 1;
        self.thp += leaf.thp as u64;
        self.map.insert(base, leaf);
    }

    pub fn remove(&mut self, base: u64) -> Option<Leaf> {
        let l = self.map.remove(&base)?;
        self.counts[l.level as usize] -= 1;
        self.thp -= l.thp as u64;
        Some(l)
    }

    /// Remove every leaf overlapping `[s, e)` (a huge leaf that overlaps is removed whole, as
    /// the TDP MMU zaps it). Returns what was removed.
    pub fn remove_overlapping(&mut self, s: u64, e: u64) -> Vec<(u64, Leaf)> {
        let v = self.overlapping(s, e);
        for (b, _) in &v {
            self.remove(*b);
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

    pub fn iter(&self) -> impl Iterator<Item = (u64, Leaf)> + '_ {
        self.map.iter().map(|(&b, &l)| (b, l))
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
