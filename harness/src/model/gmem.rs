//! guest_memfd files (`virt/kvm/guest_memfd.c`): size, folios or holes per offset, folio order,
//! bindings to memslots, and KVM's rules for punching holes.

use super::memory::Memory;
use crate::seq::{Errno, GmemDecl, Level, PAGE};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Folio {
    /// 4K, or 2M for a huge folio.
    pub order: Level,
    /// First frame of the folio; a 2M folio is 512 contiguous, aligned frames.
    pub pfn: u64,
}

#[derive(Clone, Debug)]
pub struct Gmem {
    pub decl: GmemDecl,
    /// Folio start index -> folio. Indices not covered are holes.
    folios: BTreeMap<u64, Folio>,
    /// Bound index ranges: start -> (end, slot id). A range binds to one slot at most.
    bindings: BTreeMap<u64, (u64, u32)>,
}

const HUGE_PAGES: u64 = 512;

impl Gmem {
    pub fn new(decl: GmemDecl) -> Gmem {
        Gmem { decl, folios: BTreeMap::new(), bindings: BTreeMap::new() }
    }

    pub fn pages(&self) -> u64 {
        self.decl.size / PAGE
    }

    /// The folio holding page `idx`, with its first index.
    pub fn folio_at(&self, idx: u64) -> Option<(u64, Folio)> {
        let (&base, &f) = self.folios.range(..=idx).next_back()?;
        (idx < base + f.order.pages()).then_some((base, f))
    }

    /// Whether `[start, end)` holds no folio at all.
    fn is_hole(&self, start: u64, end: u64) -> bool {
        self.folio_at(start).is_none() && self.folios.range(start..end).next().is_none()
    }

    /// The folio for page `idx`, allocating one if it is a hole: 2M when the file is huge and
    /// the 2M-aligned index range lies wholly inside the file and is wholly a hole (a partly
    /// punched huge folio leaves 4K folios behind), else 4K.
    pub fn get_or_alloc(&mut self, idx: u64, mem: &mut Memory) -> Result<(u64, Folio), Errno> {
        if idx >= self.pages() {
            return Err(Errno::EINVAL);
        }
        if let Some(f) = self.folio_at(idx) {
            return Ok(f);
        }
        let hbase = idx & !(HUGE_PAGES - 1);
        let f = if self.decl.huge && hbase + HUGE_PAGES <= self.pages() && self.is_hole(hbase, hbase + HUGE_PAGES) {
            (hbase, Folio { order: Level::L2M, pfn: mem.alloc(HUGE_PAGES) })
        } else {
            (idx, Folio { order: Level::L4K, pfn: mem.alloc(1) })
        };
        self.folios.insert(f.0, f.1);
        Ok(f)
    }

    /// The frame backing page `idx`, if allocated.
    pub fn pfn_at(&self, idx: u64) -> Option<u64> {
        self.folio_at(idx).map(|(b, f)| f.pfn + (idx - b))
    }

    /// Free the folios in `[start, end)` (page indices), splitting huge folios that straddle
    /// the ends, as truncation does. Returns the freed frame ranges `(pfn, pages)`.
    pub fn punch(&mut self, start: u64, end: u64, mem: &mut Memory) -> Vec<(u64, u64)> {
        let end = end.min(self.pages());
        for edge in [start, end] {
            if let Some((b, f)) = self.folio_at(edge) {
                if f.order == Level::L2M && b != edge {
                    self.folios.remove(&b);
                    for i in 0..HUGE_PAGES {
                        self.folios.insert(b + i, Folio { order: Level::L4K, pfn: f.pfn + i });
                    }
                }
            }
        }
        let keys: Vec<u64> = self.folios.range(start..end).map(|(&k, _)| k).collect();
        let mut freed = Vec::with_capacity(keys.len());
        for k in keys {
            let f = self.folios.remove(&k).expect("present");
            mem.clear(f.pfn, f.order.pages());
            freed.push((f.pfn, f.order.pages()));
        }
        freed
    }

    /// Whether `[start, end)` can be bound: inside the file and not bound to another slot.
    pub fn can_bind(&self, start: u64, end: u64) -> bool {
        if end > self.pages() || start >= end {
            return false;
        }
        if let Some((_, &(e, _))) = self.bindings.range(..=start).next_back() {
            if e > start {
                return false;
            }
        }
        self.bindings.range(start..end).next().is_none()
    }

    pub fn bind(&mut self, start: u64, end: u64, slot: u32) {
        self.bindings.insert(start, (end, slot));
    }

    pub fn unbind(&mut self, start: u64) {
        self.bindings.remove(&start);
    }

    /// Bindings overlapping `[start, end)`: `(start, end, slot)`.
    pub fn bindings_in(&self, start: u64, end: u64) -> Vec<(u64, u64, u32)> {
        let mut v: Vec<(u64, u64, u32)> = Vec::new();
        if let Some((&s, &(e, id))) = self.bindings.range(..start).next_back() {
            if e > start {
                v.push((s, e, id));
            }
        }
        v.extend(self.bindings.range(start..end).map(|(&s, &(e, id))| (s, e, id)));
        v
    }

    pub fn folio_count(&self) -> usize {
        self.folios.len()
    }
}
