//! guest_memfd files (`virt/kvm/guest_memfd.c`): size, folios or holes per offset, folio order,
//! bindings to memslots, and KVM's rules for punching holes.

use super::memory::Memory;
use super::ranges::{Run, RunMap};
use crate::seq::{Errno, GmemDecl, Level, PAGE};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Folio {
    /// 4K, or 2M for a huge folio.
    pub order: Level,
    /// First frame of the folio; a 2M folio is 512 contiguous, aligned frames.
    pub pfn: u64,
    /// As a run: this many folios of this order in a row, frames contiguous.
    pub count: u64,
}

super::ranges::leveled_run!(Folio, order, pfn);

#[derive(Clone, Debug)]
pub struct Gmem {
    pub decl: GmemDecl,
    /// Folio runs by first page index. Indices not covered are holes.
    folios: RunMap<Folio>,
    /// Bound index ranges: start -> (end, slot id). A range binds to one slot at most.
    bindings: BTreeMap<u64, (u64, u32)>,
}

const HUGE_PAGES: u64 = 512;

impl Gmem {
    pub fn new(decl: GmemDecl) -> Gmem {
        Gmem { decl, folios: RunMap::default(), bindings: BTreeMap::new() }
    }

    /// Linux 6.18: a slot bound to a file created with GUEST_MEMFD_FLAG_MMAP is
    /// "guest_memfd only" (KVM_MEMSLOT_GMEM_ONLY): shared faults are served from the file too,
    /// not from the slot's userspace address. (Observed on 6.18: MMAP without INIT_SHARED is
    /// enough.)
    pub fn gmem_only(&self) -> bool {
        self.decl.mmap
    }

    pub fn pages(&self) -> u64 {
        self.decl.size / PAGE
    }

    /// The folio holding page `idx`, with its first index.
    pub fn folio_at(&self, idx: u64) -> Option<(u64, Folio)> {
        self.folios.item(idx)
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
        self.alloc_range(idx, idx + 1, mem);
        Ok(self.folio_at(idx).expect("just allocated"))
    }

    /// Allocate folios for every hole in `[s, e)` (clipped to the file), by the same rule as
    /// [`Gmem::get_or_alloc`], costing one piece per hole rather than one per page.
    pub fn alloc_range(&mut self, s: u64, e: u64, mem: &mut Memory) {
        let e = e.min(self.pages());
        let mut at = s;
        while at < e {
            if let Some((fs, f)) = self.folios.get(at) {
                at = fs + f.span();
                continue;
            }
            // The hole runs to the next folio or the end.
            let next = self.folios.overlapping(at, e).first().map(|x| x.0).unwrap_or(e).min(e);
            let hbase = at & !(HUGE_PAGES - 1);
            if self.decl.huge
                && at == hbase
                && hbase + HUGE_PAGES <= self.pages()
                && !self.folios.has_any(hbase, hbase + HUGE_PAGES)
            {
                let pfn = mem.alloc(HUGE_PAGES);
                self.folios.insert(hbase, Folio { order: Level::L2M, pfn, count: 1 });
                at = hbase + HUGE_PAGES;
                continue;
            }
            // 4K folios up to the next 2M boundary where a huge folio might start, or the hole's end.
            let stop = if self.decl.huge { next.min(hbase + HUGE_PAGES) } else { next };
            if self.decl.huge
                && at != hbase
                && !self.folios.has_any(hbase, hbase + HUGE_PAGES)
                && hbase + HUGE_PAGES <= self.pages()
            {
                // The 2M range is wholly a hole: the fault allocates the huge folio.
                let pfn = mem.alloc(HUGE_PAGES);
                self.folios.insert(hbase, Folio { order: Level::L2M, pfn, count: 1 });
                at = hbase + HUGE_PAGES;
                continue;
            }
            let n = stop - at;
            let pfn = mem.alloc(n);
            self.folios.insert(at, Folio { order: Level::L4K, pfn, count: n });
            at = stop;
        }
    }

    /// The folio run holding page `idx`, uncut, with its first index.
    pub fn folio_run(&self, idx: u64) -> Option<(u64, Folio)> {
        self.folios.get(idx)
    }

    /// Allocate `[idx, idx + n)` and return it as runs of contiguous frames:
    /// `(offset from idx, pages, first pfn)`, one per folio run.
    pub fn frame_runs(&mut self, idx: u64, n: u64, mem: &mut Memory) -> Vec<(u64, u64, u64)> {
        self.alloc_range(idx, idx + n, mem);
        let mut v = Vec::new();
        let mut off = 0;
        while off < n {
            let i = idx + off;
            let Some((fb, f)) = self.folio_run(i) else { break };
            let len = (fb + f.span() - i).min(n - off);
            v.push((off, len, f.pfn + (i - fb)));
            off += len;
        }
        v
    }

    /// The frame backing page `idx`, if allocated.
    pub fn pfn_at(&self, idx: u64) -> Option<u64> {
        self.folios.get(idx).map(|(b, f)| f.pfn + (idx - b))
    }

    /// Free the folios in `[start, end)` (page indices), splitting huge folios that straddle
    /// the ends, as truncation does. Returns the freed frame ranges `(pfn, pages)`.
    pub fn punch(&mut self, start: u64, end: u64, mem: &mut Memory) -> Vec<(u64, u64)> {
        let end = end.min(self.pages());
        if start >= end {
            return Vec::new();
        }
        for edge in [start, end] {
            if let Some((b, f)) = self.folio_at(edge) {
                if f.order == Level::L2M && b != edge {
                    self.folios.remove_range(b, b + 1);
                    self.folios.insert(b, Folio { order: Level::L4K, pfn: f.pfn, count: HUGE_PAGES });
                }
            }
        }
        let mut freed = Vec::new();
        for (_, f) in self.folios.remove_range(start, end) {
            mem.clear(f.pfn, f.span());
            freed.push((f.pfn, f.span()));
        }
        freed
    }

    /// Whether `[start, end)` can be bound: inside the file and not bound to another slot.
    /// Whether `[start, end)` lies inside the file (`kvm_gmem_bind()`'s size check).
    pub fn inside(&self, start: u64, end: u64) -> bool {
        end <= self.pages() && start < end
    }

    /// Whether `[start, end)` is inside the file and no slot holds any of it.
    pub fn can_bind(&self, start: u64, end: u64) -> bool {
        if !self.inside(start, end) {
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

    /// The bound ranges overlapping `[start, end)`: (range start, range end, slot id).
    pub fn bindings_in(&self, start: u64, end: u64) -> Vec<(u64, u64, u32)> {
        if start >= end {
            return Vec::new();
        }
        let first = self.bindings.range(..=start).next_back().filter(|(_, &(e, _))| e > start).map(|(&b, _)| b);
        self.bindings
            .range(first.unwrap_or(start)..end)
            .map(|(&b, &(e, id))| (b, e, id))
            .filter(|&(b, e, _)| b < end && e > start)
            .collect()
    }

    pub fn unbind(&mut self, start: u64) {
        self.bindings.remove(&start);
    }
}
