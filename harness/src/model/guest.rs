//! The guest's view: which pages it believes accepted (TDX) or written, and what it last wrote
//! there. The oracle for silent data loss compares what a guest access sees with this view.

use std::collections::BTreeMap;

#[derive(Clone, Debug, Default)]
pub struct GuestView {
    /// GFN -> the value the guest last wrote (0 after an ACCEPT zeroed the page).
    believed: BTreeMap<u64, u64>,
    /// GFN ranges the guest accepted as a whole 2M page, kept as range starts -> end, so a 2M
    /// accept costs one entry, not 512.
    accepted_ranges: BTreeMap<u64, u64>,
}

impl GuestView {
    /// What the guest believes `gfn` holds, if it believes the page is its own.
    pub fn belief(&self, gfn: u64) -> Option<u64> {
        if let Some(&v) = self.believed.get(&gfn) {
            return Some(v);
        }
        let (_, &e) = self.accepted_ranges.range(..=gfn).next_back()?;
        (gfn < e).then_some(0)
    }

    /// The guest accepted `[s, e)`: it holds zeroes now.
    pub fn accepted(&mut self, s: u64, e: u64) {
        self.forget(s, e);
        if e - s == 1 {
            self.believed.insert(s, 0);
        } else {
            self.accepted_ranges.insert(s, e);
        }
    }

    pub fn wrote(&mut self, gfn: u64, v: u64) {
        self.believed.insert(gfn, v);
    }

    /// An event the guest can see happened over `[s, e)`: it no longer holds beliefs there.
    pub fn forget(&mut self, s: u64, e: u64) {
        let keys: Vec<u64> = self.believed.range(s..e).map(|(&k, _)| k).collect();
        for k in keys {
            self.believed.remove(&k);
        }
        let mut cut: Vec<(u64, u64)> = Vec::new();
        if let Some((&b, &be)) = self.accepted_ranges.range(..s).next_back() {
            if be > s {
                cut.push((b, be));
            }
        }
        cut.extend(self.accepted_ranges.range(s..e).map(|(&b, &be)| (b, be)));
        for (b, be) in cut {
            self.accepted_ranges.remove(&b);
            // Keep the parts outside [s, e) as per-page beliefs.
            for g in (b..be).filter(|g| *g < s || *g >= e) {
                self.believed.insert(g, 0);
            }
        }
    }
}
