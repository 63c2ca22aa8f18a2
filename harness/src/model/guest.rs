//! The guest's view: which pages it believes accepted (TDX) or written, and what it last wrote
//! there. The oracle for silent data loss compares what a guest access sees with this view.

use super::ranges::RangeSet;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default)]
pub struct GuestView {
    /// GFN -> the value the guest last wrote there.
    written: BTreeMap<u64, u64>,
    /// GFNs the guest accepted (holding zeroes unless `written` says otherwise), as ranges, so
    /// a 2M accept costs one piece.
    accepted: RangeSet,
}

impl GuestView {
    /// What the guest believes `gfn` holds, if it believes the page is its own.
    pub fn belief(&self, gfn: u64) -> Option<u64> {
        if let Some(&v) = self.written.get(&gfn) {
            return Some(v);
        }
        self.accepted.contains(gfn).then_some(0)
    }

    /// The guest accepted `[s, e)`: it holds zeroes now.
    pub fn accepted(&mut self, s: u64, e: u64) {
        self.forget(s, e);
        self.accepted.insert(s, e);
    }

    pub fn wrote(&mut self, gfn: u64, v: u64) {
        self.written.insert(gfn, v);
    }

    /// An event the guest can see happened over `[s, e)`: it no longer holds beliefs there.
    pub fn forget(&mut self, s: u64, e: u64) {
        let keys: Vec<u64> = self.written.range(s..e).map(|(&k, _)| k).collect();
        for k in keys {
            self.written.remove(&k);
        }
        self.accepted.remove(s, e);
    }
}
