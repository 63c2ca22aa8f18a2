//! The TDX module's side: the S-EPT with its entry states, the TD's op state, TLB epoch and
//! measurement, the host SEAMCALLs with their preconditions and status codes, and the guest's
//! TDG.MEM.PAGE.ACCEPT walk (SPEC.md §4, module 1.5 `tdh_mem_*.c`, `tdg_mem_page_accept.c`).

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

    /// TDH.MEM.PAGE.ADD: 4K only, build only.
    pub fn page_add(&mut self, gfn: u64, pfn: u64) -> TdxStatus {
        self.page_add_range(gfn, 1, pfn)
    }

    /// PAGE.ADD of `n` 4K pages in one 2M table, as KVM issues them one after another.
    pub fn page_add_range(&mut self, gfn: u64, n: u64, pfn: u64) -> TdxStatus {
        Self::ok((|| {
            self.enter()?;
            if self.op_state != OpState::Initialized {
                return Err(TdxStatus::OpStateIncorrect);
            }
            if !self.parent_ok(gfn, Level::L4K) {
                return Err(TdxStatus::EptWalkFailed);
            }
            if !self.all_free(gfn, Level::L4K, n) {
                return Err(TdxStatus::EptEntryStateIncorrect);
            }
            self.set(gfn, Level::L4K, Entry { count: n, ..Entry::new(SeptState::Mapped, pfn, Level::L4K) });
            Ok(())
        })())
    }

    /// TDH.MR.EXTEND over one page's worth of chunks: fold the page into MRTD.
    pub fn mr_extend(&mut self, gfn: u64, content: u64) {
        for chunk in 0..16u64 {
            for b in [gfn, chunk, content] {
                self.mrtd = (self.mrtd ^ b).wrapping_mul(0x0100_0000_01b3);
            }
        }
    }

    /// TDH.MEM.SEPT.ADD: the FREE entry at `level` (2M or 1G) becomes a non-leaf over a new
    /// table of 512 FREE entries.
    pub fn sept_add(&mut self, gfn: u64, level: Level) -> TdxStatus {
        Self::ok((|| {
            self.enter()?;
            if level == Level::L4K {
                return Err(TdxStatus::OperandInvalid);
            }
            if !self.parent_ok(gfn, level) {
                return Err(TdxStatus::EptWalkFailed);
            }
            if self.entry(gfn, level).is_some() {
                return Err(TdxStatus::EptEntryStateIncorrect);
            }
            self.set(gfn, level, Entry::new(SeptState::NlMapped, 0, level));
            Ok(())
        })())
    }

    /// TDH.MEM.PAGE.AUG: a PENDING leaf at exactly `level` (4K or 2M).
    pub fn page_aug(&mut self, gfn: u64, level: Level, pfn: u64) -> TdxStatus {
        self.page_aug_range(gfn, level, 1, pfn)
    }

    /// PAGE.AUG of `n` entries at `level` under one parent, one after another.
    pub fn page_aug_range(&mut self, gfn: u64, level: Level, n: u64, pfn: u64) -> TdxStatus {
        Self::ok((|| {
            self.enter()?;
            if level == Level::L1G {
                return Err(TdxStatus::OperandInvalid);
            }
            if !self.parent_ok(gfn, level) {
                return Err(TdxStatus::EptWalkFailed);
            }
            if !self.all_free(align(gfn, level), level, n) {
                return Err(TdxStatus::EptEntryStateIncorrect);
            }
            self.set(gfn, level, Entry { count: n, ..Entry::new(SeptState::Pending, pfn, level) });
            Ok(())
        })())
    }

    /// TDH.MEM.RANGE.BLOCK.
    pub fn block(&mut self, gfn: u64, level: Level) -> TdxStatus {
        Self::ok((|| {
            self.enter()?;
            if !self.parent_ok(gfn, level) {
                return Err(TdxStatus::EptWalkFailed);
            }
            let Some(e) = self.entry(gfn, level) else {
                return Err(TdxStatus::EptEntryStateIncorrect);
            };
            if e.state.is_blocked() {
                return Err(TdxStatus::GpaRangeAlreadyBlocked);
            }
            self.block_runs(align(gfn, level), level, 1);
            Ok(())
        })())
    }

    fn block_runs(&mut self, s: u64, level: Level, n: u64) {
        let epoch = self.epoch;
        let runs = self.levels[level as usize].remove_range(s, s + n * level.pages());
        for (rs, mut r) in runs {
            if !r.state.is_blocked() {
                r.state = match r.state {
                    SeptState::Mapped => SeptState::Blocked,
                    SeptState::Pending => SeptState::PendingBlocked,
                    _ => SeptState::NlBlocked,
                };
                r.blocked_epoch = epoch;
            }
            self.levels[level as usize].insert(rs, r);
        }
    }

    /// RANGE.BLOCK of `n` present entries at `level`, one call each as KVM issues them; an
    /// entry already blocked is skipped (GPA_RANGE_ALREADY_BLOCKED is not an error to KVM).
    pub fn block_range(&mut self, gfn: u64, level: Level, n: u64) -> TdxStatus {
        Self::ok((|| {
            self.enter()?;
            if self.covered(gfn, level, n).is_none() {
                return Err(TdxStatus::EptEntryStateIncorrect);
            }
            self.block_runs(gfn, level, n);
            Ok(())
        })())
    }

    /// TDH.MEM.TRACK: advance the epoch. KVM then kicks every vCPU ([`Td::kick`]).
    pub fn track(&mut self) -> TdxStatus {
        Self::ok((|| {
            self.enter()?;
            self.epoch += 1;
            Ok(())
        })())
    }

    /// Every vCPU has left the TD since the last TRACK: blocked entries are now tracked.
    pub fn kick(&mut self) {
        self.flushed_epoch = self.epoch;
    }

    /// TDH.MEM.RANGE.UNBLOCK.
    pub fn unblock(&mut self, gfn: u64, level: Level) -> TdxStatus {
        Self::ok((|| {
            self.enter()?;
            let Some(mut e) = self.entry(gfn, level) else {
                return Err(TdxStatus::EptEntryStateIncorrect);
            };
            if !e.state.is_blocked() {
                return Err(TdxStatus::EptEntryStateIncorrect);
            }
            if self.runnable() && !self.tracked(&e) {
                return Err(TdxStatus::TlbTrackingNotDone);
            }
            e.state = unblocked(e.state);
            e.blocked_epoch = 0;
            self.set(gfn, level, e);
            Ok(())
        })())
    }

    /// TDH.MEM.PAGE.DEMOTE: a 2M (or 1G) leaf becomes a non-leaf over 512 children carrying
    /// its unblocked state.
    pub fn demote(&mut self, gfn: u64, level: Level) -> TdxStatus {
        Self::ok((|| {
            self.enter()?;
            let child = level.below().ok_or(TdxStatus::OperandInvalid)?;
            let Some(e) = self.entry(gfn, level) else {
                return Err(TdxStatus::EptEntryStateIncorrect);
            };
            if !e.state.is_leaf() {
                return Err(TdxStatus::EptEntryStateIncorrect);
            }
            if self.runnable() {
                if !e.state.is_blocked() {
                    return Err(TdxStatus::GpaRangeNotBlocked);
                }
                if !self.tracked(&e) {
                    return Err(TdxStatus::TlbTrackingNotDone);
                }
            }
            if self.interrupt_next_demote && !self.enhanced_demote {
                self.interrupt_next_demote = false;
                return Err(TdxStatus::InterruptedRestartable);
            }
            let base = align(gfn, level);
            self.set(base, child, Entry { count: 512, ..Entry::new(unblocked(e.state), e.pfn, child) });
            self.set(base, level, Entry::new(SeptState::NlMapped, 0, level));
            Ok(())
        })())
    }

    /// TDH.MEM.PAGE.PROMOTE: 512 children, all leaves, all MAPPED or all PENDING, contiguous and
    /// aligned, become one leaf; the parent must be blocked and tracked while RUNNABLE.
    pub fn promote(&mut self, gfn: u64, level: Level) -> TdxStatus {
        Self::ok((|| {
            self.enter()?;
            let child = level.below().ok_or(TdxStatus::OperandInvalid)?;
            let Some(p) = self.entry(gfn, level) else {
                return Err(TdxStatus::EptEntryStateIncorrect);
            };
            if p.state.is_leaf() {
                return Err(TdxStatus::EptEntryStateIncorrect);
            }
            if self.runnable() {
                if p.state != SeptState::NlBlocked {
                    return Err(TdxStatus::GpaRangeNotBlocked);
                }
                if !self.tracked(&p) {
                    return Err(TdxStatus::TlbTrackingNotDone);
                }
            }
            let base = align(gfn, level);
            let runs = self.covered(base, child, 512).ok_or(TdxStatus::EptInvalidPromoteConditions)?;
            let first = runs[0].1;
            let want = first.state;
            if !matches!(want, SeptState::Mapped | SeptState::Pending) || first.pfn % level.pages() != 0 {
                return Err(TdxStatus::EptInvalidPromoteConditions);
            }
            let uniform =
                runs.iter().all(|(rs, r)| r.state == want && r.pfn.wrapping_sub(*rs) == first.pfn.wrapping_sub(base));
            if !uniform {
                return Err(TdxStatus::EptInvalidPromoteConditions);
            }
            self.free(base, child, 512);
            self.set(base, level, Entry::new(want, first.pfn, level));
            Ok(())
        })())
    }

    /// TDH.MEM.PAGE.REMOVE: a leaf becomes FREE (blocked and tracked while RUNNABLE).
    pub fn page_remove(&mut self, gfn: u64, level: Level) -> TdxStatus {
        self.page_remove_range(align(gfn, level), level, 1)
    }

    /// PAGE.REMOVE of `n` leaves at `level`, one call each as KVM issues them.
    pub fn page_remove_range(&mut self, gfn: u64, level: Level, n: u64) -> TdxStatus {
        Self::ok((|| {
            self.enter()?;
            let runs = self.covered(gfn, level, n).ok_or(TdxStatus::EptEntryStateIncorrect)?;
            for (_, r) in &runs {
                if !r.state.is_leaf() {
                    return Err(TdxStatus::EptEntryStateIncorrect);
                }
                if self.runnable() {
                    if !r.state.is_blocked() {
                        return Err(TdxStatus::GpaRangeNotBlocked);
                    }
                    if !self.tracked(r) {
                        return Err(TdxStatus::TlbTrackingNotDone);
                    }
                }
            }
            self.free(gfn, level, n);
            Ok(())
        })())
    }

    /// TDH.MEM.SEPT.REMOVE: a non-leaf over an empty table becomes FREE.
    pub fn sept_remove(&mut self, gfn: u64, level: Level) -> TdxStatus {
        Self::ok((|| {
            self.enter()?;
            let Some(e) = self.entry(gfn, level) else {
                return Err(TdxStatus::EptEntryStateIncorrect);
            };
            if e.state.is_leaf() || !self.children_empty(gfn, level) {
                return Err(TdxStatus::EptEntryStateIncorrect);
            }
            if self.runnable() {
                if e.state != SeptState::NlBlocked {
                    return Err(TdxStatus::GpaRangeNotBlocked);
                }
                if !self.tracked(&e) {
                    return Err(TdxStatus::TlbTrackingNotDone);
                }
            }
            self.free(gfn, level, 1);
            Ok(())
        })())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows of `check_tdaccept_failure()` (TDX module 1.5, `tdg_mem_page_accept.c`): the
    /// requested size (4K or 2M) against every S-EPT state, at the requested level and at the
    /// level above it, with the walk's answer.
    #[test]
    fn accept_walk_follows_the_module_table() {
        use SeptState::*;
        #[derive(Debug, PartialEq)]
        enum Want {
            Ok,
            Violation,
            Already(Level),
            SizeMismatch(Level),
        }
        let at_level = |st: SeptState, l: Level| match st {
            Pending => Want::Ok,
            Mapped => Want::Already(l),
            NlMapped | NlBlocked => Want::SizeMismatch(l),
            Free | Blocked | PendingBlocked => Want::Violation,
        };
        let above = |st: SeptState, l: Level| match st {
            Mapped => Want::Already(l),
            // A mapped non-leaf is walked through: the outcome is the requested level's.
            NlMapped => Want::Ok,
            _ => Want::Violation,
        };
        let mut rows = 0;
        for req in [Level::L4K, Level::L2M] {
            let up = req.above().expect("4K and 2M have a level above");
            for (where_, l) in [("at", req), ("above", up)] {
                for st in SeptState::ALL {
                    let mut td = Td::new(true);
                    td.op_state = OpState::Runnable;
                    // Mapped non-leaves from the top down to `l`, then the state under test;
                    // below it (when the walk passes through) a PENDING leaf at `req`.
                    let mut x = Level::L1G;
                    while x > l {
                        td.set(0, x, Entry::new(NlMapped, 0, x));
                        x = x.below().unwrap();
                    }
                    if st != Free {
                        td.set(0, l, Entry::new(st, if st.is_leaf() { 0x1000 } else { 0 }, l));
                    }
                    if l != req && st == NlMapped {
                        td.set(0, req, Entry::new(Pending, 0x2000, req));
                    }
                    let want = if where_ == "at" { at_level(st, l) } else { above(st, l) };
                    let got = match td.accept(0, req) {
                        AcceptWalk::Accepted { .. } => Want::Ok,
                        AcceptWalk::EptViolation => Want::Violation,
                        AcceptWalk::Status(TdxStatus::PageAlreadyAccepted, Some(gl)) => Want::Already(gl),
                        AcceptWalk::Status(TdxStatus::PageSizeMismatch, Some(gl)) => Want::SizeMismatch(gl),
                        AcceptWalk::Status(other, l) => panic!("{req:?} {where_} {st:?}: {other:?} {l:?}"),
                    };
                    assert_eq!(got, want, "ACCEPT {} with {} {where_} the requested level", req.name(), st.name());
                    rows += 1;
                }
            }
        }
        assert_eq!(rows, 2 * 2 * SeptState::ALL.len());
        // 1G is not an ACCEPT size in 1.5 (verify_page_info_input(.., LVL_PT, LVL_PD)).
        assert_eq!(Td::new(true).accept(0, Level::L1G), AcceptWalk::Status(TdxStatus::OperandInvalid, None));
    }

    fn runnable_td_with_2m_pending() -> Td {
        let mut td = Td::new(true);
        assert_eq!(td.sept_add(0, Level::L1G), TdxStatus::Success);
        td.op_state = OpState::Runnable;
        assert_eq!(td.page_aug(0, Level::L2M, 512), TdxStatus::Success);
        td
    }

    #[test]
    fn demote_needs_block_and_track_while_runnable() {
        let mut td = runnable_td_with_2m_pending();
        assert_eq!(td.demote(0, Level::L2M), TdxStatus::GpaRangeNotBlocked);
        assert_eq!(td.block(0, Level::L2M), TdxStatus::Success);
        assert_eq!(td.block(0, Level::L2M), TdxStatus::GpaRangeAlreadyBlocked);
        assert_eq!(td.demote(0, Level::L2M), TdxStatus::TlbTrackingNotDone);
        assert_eq!(td.track(), TdxStatus::Success);
        assert_eq!(td.demote(0, Level::L2M), TdxStatus::TlbTrackingNotDone, "tracked only after the kick");
        td.kick();
        assert_eq!(td.demote(0, Level::L2M), TdxStatus::Success);
        assert_eq!(td.state(0, Level::L2M), SeptState::NlMapped);
        assert_eq!(td.state(5, Level::L4K), SeptState::Pending, "children carry the unblocked state");
        assert_eq!(td.entry(5, Level::L4K).unwrap().pfn, 517);
    }

    #[test]
    fn accept_table() {
        let mut td = runnable_td_with_2m_pending();
        assert_eq!(td.accept(3, Level::L4K), AcceptWalk::EptViolation, "4K inside a PENDING 2M leaf exits");
        assert_eq!(td.accept(0, Level::L1G), AcceptWalk::Status(TdxStatus::OperandInvalid, None));
        assert!(matches!(td.accept(0, Level::L2M), AcceptWalk::Accepted { base: 0, .. }));
        assert_eq!(td.accept(0, Level::L2M), AcceptWalk::Status(TdxStatus::PageAlreadyAccepted, Some(Level::L2M)));
        assert_eq!(td.accept(7, Level::L4K), AcceptWalk::Status(TdxStatus::PageAlreadyAccepted, Some(Level::L2M)));
        assert_eq!(td.accept(512, Level::L2M), AcceptWalk::EptViolation, "FREE entry");
        // A 4K table under 2M: a 2M accept is a size mismatch.
        assert_eq!(td.sept_add(512, Level::L2M), TdxStatus::Success);
        assert_eq!(td.accept(512, Level::L2M), AcceptWalk::Status(TdxStatus::PageSizeMismatch, Some(Level::L2M)));
        assert_eq!(td.page_aug(512, Level::L2M, 0), TdxStatus::EptEntryStateIncorrect, "2M AUG over a 4K table");
    }

    #[test]
    fn promote_conditions() {
        let mut td = runnable_td_with_2m_pending();
        td.block(0, Level::L2M);
        td.track();
        td.kick();
        td.demote(0, Level::L2M);
        assert!(matches!(td.accept(0, Level::L4K), AcceptWalk::Accepted { .. }));
        td.block(0, Level::L2M);
        td.track();
        td.kick();
        assert_eq!(td.promote(0, Level::L2M), TdxStatus::EptInvalidPromoteConditions, "511 PENDING + 1 MAPPED");
        td.busy_next = true;
        assert_eq!(td.page_remove(0, Level::L4K), TdxStatus::OperandBusy);
        assert_eq!(td.page_remove(0, Level::L4K), TdxStatus::GpaRangeNotBlocked);
    }

    #[test]
    fn page_add_only_during_build() {
        let mut td = Td::new(true);
        assert_eq!(td.page_add(0, 9), TdxStatus::EptWalkFailed);
        td.sept_add(0, Level::L1G);
        td.sept_add(0, Level::L2M);
        assert_eq!(td.page_add(0, 9), TdxStatus::Success);
        assert_eq!(td.page_add(0, 9), TdxStatus::EptEntryStateIncorrect);
        td.op_state = OpState::Runnable;
        assert_eq!(td.page_add(1, 10), TdxStatus::OpStateIncorrect);
        assert_eq!(td.sept_remove(0, Level::L2M), TdxStatus::EptEntryStateIncorrect, "table not empty");
    }
}
