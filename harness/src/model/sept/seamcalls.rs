//! The SEAMCALLs KVM makes on the S-EPT (TDX module 1.5, `tdh_mem_*`): adding and augmenting
//! pages, blocking, tracking and unblocking, demoting and promoting, removing; each checks the
//! entry states the module checks and answers with its status.

use super::*;

impl Td {
    /// The precondition of removing, demoting or promoting an entry of a RUNNABLE TD: blocked
    /// (`GPA_RANGE_NOT_BLOCKED` otherwise), and tracked since (`TLB_TRACKING_NOT_DONE`).
    fn blocked_and_tracked(&self, e: &Entry) -> Result<(), TdxStatus> {
        if self.runnable() {
            if !e.state.is_blocked() {
                return Err(TdxStatus::GpaRangeNotBlocked);
            }
            if !self.tracked(e) {
                return Err(TdxStatus::TlbTrackingNotDone);
            }
        }
        Ok(())
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

    /// What DEMOTE (a leaf) and PROMOTE (a non-leaf) check first, in the module's order: the
    /// level has one below it, the walk reaches the level, the entry there exists and is of the
    /// wanted kind, and it is blocked and tracked. Returns the child level and the entry.
    fn resize_target(&mut self, gfn: u64, level: Level, leaf: bool) -> Result<(Level, Entry), TdxStatus> {
        self.enter()?;
        let child = level.below().ok_or(TdxStatus::OperandInvalid)?;
        if !self.parent_ok(gfn, level) {
            return Err(TdxStatus::EptWalkFailed);
        }
        let e =
            self.entry(gfn, level).filter(|e| e.state.is_leaf() == leaf).ok_or(TdxStatus::EptEntryStateIncorrect)?;
        self.blocked_and_tracked(&e)?;
        Ok((child, e))
    }

    /// TDH.MEM.PAGE.DEMOTE: a 2M (or 1G) leaf becomes a non-leaf over 512 children carrying
    /// its unblocked state.
    pub fn demote(&mut self, gfn: u64, level: Level) -> TdxStatus {
        Self::ok((|| {
            let (child, e) = self.resize_target(gfn, level, true)?;
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
            let (child, _) = self.resize_target(gfn, level, false)?;
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
            // The module walks to the entry first: a missing table on the way is a walk failure.
            if !self.parent_ok(gfn, level) {
                return Err(TdxStatus::EptWalkFailed);
            }
            let runs = self.covered(gfn, level, n).ok_or(TdxStatus::EptEntryStateIncorrect)?;
            for (_, r) in &runs {
                if !r.state.is_leaf() {
                    return Err(TdxStatus::EptEntryStateIncorrect);
                }
                self.blocked_and_tracked(r)?;
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
            self.blocked_and_tracked(&e)?;
            self.free(gfn, level, 1);
            Ok(())
        })())
    }
}
