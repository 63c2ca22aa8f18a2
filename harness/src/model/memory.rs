//! Host physical pages: allocation of page frame numbers and their contents.
//!
//! Contents are one 64-bit value per 4 KiB page (0 = zero-filled), stored only where non-zero,
//! so clearing or freeing a range costs the pages that were written, not the range's length.

use std::collections::BTreeMap;

#[derive(Clone, Debug, Default)]
pub struct Memory {
    contents: BTreeMap<u64, u64>,
    next_pfn: u64,
}

impl Memory {
    pub fn new() -> Memory {
        Memory { contents: BTreeMap::new(), next_pfn: 0x100 }
    }

    /// Allocate `pages` physically contiguous frames, naturally aligned up to 1G, as huge
    /// folios and THP backings are.
    pub fn alloc(&mut self, pages: u64) -> u64 {
        let align = pages.next_power_of_two().clamp(1, 1 << 18);
        let pfn = (self.next_pfn + align - 1) & !(align - 1);
        self.next_pfn = pfn + pages;
        pfn
    }

    pub fn read(&self, pfn: u64) -> u64 {
        self.contents.get(&pfn).copied().unwrap_or(0)
    }

    pub fn write(&mut self, pfn: u64, v: u64) {
        if v == 0 {
            self.contents.remove(&pfn);
        } else {
            self.contents.insert(pfn, v);
        }
    }

    /// Zero `[pfn, pfn + pages)`.
    pub fn clear(&mut self, pfn: u64, pages: u64) {
        let keys: Vec<u64> = self.contents.range(pfn..pfn.saturating_add(pages)).map(|(&k, _)| k).collect();
        for k in keys {
            self.contents.remove(&k);
        }
    }

    /// Non-zero values in `[pfn, pfn + pages)` as (offset, value).
    pub fn values(&self, pfn: u64, pages: u64) -> Vec<(u64, u64)> {
        self.contents.range(pfn..pfn + pages).map(|(&k, &v)| (k - pfn, v)).collect()
    }

    /// Copy `pages` frames from `src` to `dst`.
    pub fn copy(&mut self, src: u64, dst: u64, pages: u64) {
        self.clear(dst, pages);
        let vals: Vec<(u64, u64)> = self.contents.range(src..src + pages).map(|(&k, &v)| (k - src, v)).collect();
        for (off, v) in vals {
            self.contents.insert(dst + off, v);
        }
    }
}
