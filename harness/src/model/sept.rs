//! The TDX module's side: the S-EPT with its entry states, the TD's op state, TLB epoch and
//! measurement, the host SEAMCALLs with their preconditions and status codes, and the guest's
//! TDG.MEM.PAGE.ACCEPT walk (docs/model.md §4, module 1.5 `tdh_mem_*.c`, `tdg_mem_page_accept.c`).

use super::ranges::{Run, RunMap};
use crate::seq::{Level, SeptState, TdxStatus};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpState {
    /// After INIT_VM, during build.
    Initialized,
    /// After FINALIZE.
    Runnable,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub state: SeptState,
    /// The page of a leaf (0 for a non-leaf).
    pub pfn: u64,
    /// TLB epoch at which the entry was blocked.
    pub blocked_epoch: u64,
    /// As a run: this many alike entries in a row at one level; leaves' pages contiguous.
    pub count: u64,
    /// Pages per entry (the level's size), so a run knows its own span.
    pub step: u64,
}

impl Entry {
    fn new(state: SeptState, pfn: u64, level: Level) -> Entry {
        Entry { state, pfn, blocked_epoch: 0, count: 1, step: level.pages() }
    }
}

impl Run for Entry {
    fn span(&self) -> u64 {
        self.step * self.count
    }
    fn step(&self) -> u64 {
        self.step
    }
    fn head(&self, off: u64) -> Self {
        Entry { count: off / self.step, ..*self }
    }
    fn tail(&self, off: u64) -> Self {
        let pfn = if self.state.is_leaf() { self.pfn + off } else { 0 };
        Entry { pfn, count: self.count - off / self.step, ..*self }
    }
    fn joins(&self, n: &Self) -> bool {
        n.state == self.state
            && n.step == self.step
            && n.blocked_epoch == self.blocked_epoch
            && (!self.state.is_leaf() || n.pfn == self.pfn + self.span())
    }
    fn join(&self, n: &Self) -> Self {
        Entry { count: self.count + n.count, ..*self }
    }
}

/// What the guest's ACCEPT walk decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcceptWalk {
    /// A PENDING leaf at the requested level: it becomes MAPPED; the caller zeroes its pages.
    Accepted { base: u64, pfn: u64 },
    /// A status returned to the guest, with the level reported in the low bits.
    Status(TdxStatus, Option<Level>),
    /// EPT-violation exit to the host carrying the requested level.
    EptViolation,
}

/// What an ordinary guest access to a private GPA finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessWalk {
    Mapped { pfn: u64 },
    Pending,
    EptViolation,
}

#[derive(Clone, Debug)]
pub struct Td {
    pub op_state: OpState,
    /// Entry runs per level (index = TDX level), keyed by first GFN. Absent means FREE. The
    /// entries above 1G (the PML4/PML5 tables) are taken as always present.
    levels: [RunMap<Entry>; 3],
    pub epoch: u64,
    /// The epoch every vCPU has been kicked out of: blocked entries with an older epoch are
    /// tracked.
    pub flushed_epoch: u64,
    pub mrtd: u64,
    /// `inject seamcall-busy`: the next host SEAMCALL returns OPERAND_BUSY and does nothing.
    pub busy_next: bool,
    /// `inject demote-interrupted`: the next DEMOTE returns INTERRUPTED_RESTARTABLE, unless the
    /// module has ENHANCED_DEMOTE_INTERRUPTIBILITY.
    pub interrupt_next_demote: bool,
    pub enhanced_demote: bool,
}

fn align(gfn: u64, l: Level) -> u64 {
    gfn & !(l.pages() - 1)
}

impl Td {
    pub fn new(enhanced_demote: bool) -> Td {
        Td {
            op_state: OpState::Initialized,
            levels: Default::default(),
            epoch: 1,
            flushed_epoch: 1,
            mrtd: 0xcbf2_9ce4_8422_2325,
            busy_next: false,
            interrupt_next_demote: false,
            enhanced_demote,
        }
    }

    pub fn runnable(&self) -> bool {
        self.op_state == OpState::Runnable
    }

    /// The entry at `level` covering `gfn` (FREE if absent).
    pub fn entry(&self, gfn: u64, level: Level) -> Option<Entry> {
        self.levels[level as usize].item(gfn).map(|(_, e)| e)
    }

    pub fn state(&self, gfn: u64, level: Level) -> SeptState {
        self.entry(gfn, level).map(|e| e.state).unwrap_or(SeptState::Free)
    }

    /// Whether the walk reaches `level` for `gfn`: every entry above is a non-leaf.
    fn parent_ok(&self, gfn: u64, level: Level) -> bool {
        let mut l = Level::L1G;
        while l > level {
            match self.entry(gfn, l) {
                Some(e) if !e.state.is_leaf() => {}
                _ => return false,
            }
            l = l.below().expect("above 4K");
        }
        true
    }

    /// The present leaf covering `gfn`, if the walk finds one.
    pub fn leaf(&self, gfn: u64) -> Option<(u64, Level, Entry)> {
        for l in [Level::L1G, Level::L2M, Level::L4K] {
            match self.entry(gfn, l) {
                None => return None,
                Some(e) if e.state.is_leaf() => return Some((align(gfn, l), l, e)),
                Some(_) => {}
            }
        }
        None
    }

    /// Leaf runs overlapping `[s, e)`, uncut, in order: `(first gfn, level, run)`.
    pub fn leaves_in(&self, s: u64, e: u64) -> Vec<(u64, Level, Entry)> {
        let mut v = Vec::new();
        for l in Level::ALL {
            for (b, en) in self.levels[l as usize].overlapping(s, e) {
                if en.state.is_leaf() {
                    v.push((b, l, en));
                }
            }
        }
        v.sort_by_key(|x| x.0);
        v
    }

    /// Entry runs at `level` overlapping `[s, e)`, uncut.
    pub fn runs_in(&self, s: u64, e: u64, level: Level) -> Vec<(u64, Entry)> {
        self.levels[level as usize].overlapping(s, e)
    }

    fn tracked(&self, e: &Entry) -> bool {
        e.blocked_epoch < self.flushed_epoch
    }

    /// Set the entries of `[gfn, gfn + e.span())` at `l` to the run `e`.
    fn set(&mut self, gfn: u64, l: Level, e: Entry) {
        let b = align(gfn, l);
        self.levels[l as usize].remove_range(b, b + e.span());
        self.levels[l as usize].insert(b, e);
    }

    fn free(&mut self, gfn: u64, l: Level, n: u64) {
        let b = align(gfn, l);
        self.levels[l as usize].remove_range(b, b + n * l.pages());
    }

    fn children_empty(&self, gfn: u64, l: Level) -> bool {
        let Some(c) = l.below() else { return true };
        let b = align(gfn, l);
        !self.levels[c as usize].has_any(b, b + l.pages())
    }

    /// Common entry: counts the call and consumes an injected OPERAND_BUSY.
    fn enter(&mut self) -> Result<(), TdxStatus> {
        if self.busy_next {
            self.busy_next = false;
            return Err(TdxStatus::OperandBusy);
        }
        Ok(())
    }

    fn ok(r: Result<(), TdxStatus>) -> TdxStatus {
        r.err().unwrap_or(TdxStatus::Success)
    }

    /// Whether every entry of `[s, s + n * level)` at `level` is free.
    fn all_free(&self, s: u64, level: Level, n: u64) -> bool {
        !self.levels[level as usize].has_any(s, s + n * level.pages())
    }

    /// The entry runs covering `[s, s + n * level)` at `level`, if every entry is present.
    fn covered(&self, s: u64, level: Level, n: u64) -> Option<Vec<(u64, Entry)>> {
        let e = s + n * level.pages();
        let runs = self.levels[level as usize].overlapping(s, e);
        let mut at = s;
        for (rs, r) in &runs {
            if *rs > at {
                return None;
            }
            at = rs + r.span();
        }
        (at >= e).then_some(runs)
    }

    /// TDG.MEM.PAGE.ACCEPT's walk (`tdg_mem_page_accept.c`, `check_tdaccept_failure()`): the
    /// walk stops at the requested level or at the first entry it cannot pass. Above the
    /// requested level a guest-accessible leaf is PAGE_ALREADY_ACCEPTED at its level and
    /// anything else but a mapped non-leaf is an EPT violation; at the requested level a
    /// non-free non-leaf (mapped or blocked) is PAGE_SIZE_MISMATCH (D10), a guest-accessible
    /// leaf PAGE_ALREADY_ACCEPTED, PENDING is accepted, the rest an EPT violation.
    pub fn accept(&mut self, gfn: u64, level: Level) -> AcceptWalk {
        if level == Level::L1G {
            return AcceptWalk::Status(TdxStatus::OperandInvalid, None);
        }
        for l in [Level::L1G, Level::L2M, Level::L4K] {
            let Some(e) = self.entry(gfn, l) else {
                return AcceptWalk::EptViolation;
            };
            if l == level {
                return match e.state {
                    SeptState::Pending => {
                        let base = align(gfn, l);
                        self.set(base, l, Entry { state: SeptState::Mapped, ..e });
                        AcceptWalk::Accepted { base, pfn: e.pfn }
                    }
                    SeptState::Mapped => AcceptWalk::Status(TdxStatus::PageAlreadyAccepted, Some(l)),
                    SeptState::NlMapped | SeptState::NlBlocked => {
                        AcceptWalk::Status(TdxStatus::PageSizeMismatch, Some(l))
                    }
                    SeptState::Free | SeptState::Blocked | SeptState::PendingBlocked => AcceptWalk::EptViolation,
                };
            }
            match e.state {
                SeptState::Mapped => return AcceptWalk::Status(TdxStatus::PageAlreadyAccepted, Some(l)),
                SeptState::NlMapped => {}
                _ => return AcceptWalk::EptViolation,
            }
        }
        AcceptWalk::EptViolation
    }

    /// An ordinary private access (not ACCEPT).
    pub fn access(&self, gfn: u64) -> AccessWalk {
        match self.leaf(gfn) {
            Some((b, _, e)) if e.state == SeptState::Mapped => AccessWalk::Mapped { pfn: e.pfn + (gfn - b) },
            Some((_, _, e)) if e.state == SeptState::Pending => AccessWalk::Pending,
            _ => AccessWalk::EptViolation,
        }
    }
}

pub fn unblocked(s: SeptState) -> SeptState {
    match s {
        SeptState::Blocked => SeptState::Mapped,
        SeptState::PendingBlocked => SeptState::Pending,
        SeptState::NlBlocked => SeptState::NlMapped,
        other => other,
    }
}

mod seamcalls;
#[cfg(test)]
mod tests;
