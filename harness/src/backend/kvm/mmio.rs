//! Leftover MMIO SPTEs on a kept VM with private memory. Slot deletions do not zap them (they
//! are not present), and a stale one answers its GFN as shared: harmless while the GFN stays
//! shared (the fault goes on as a fresh VM's would), wrong once it is private. So they are
//! cleared only before a case that can make one of their GFNs private, and before the VM is
//! parked; that took the clean-up out of most resets.

use super::*;

/// MMIO SPTEs a reset replaces (a guest read each, in one batch) before a fresh VM is cheaper.
const MMIO_CLEAR_MAX: usize = MAX_BATCH as usize;
/// Slots a reset adds and deletes to clear them (each addition and deletion is an SRCU grace
/// period).
const MMIO_CLEAR_SLOTS: usize = 8;
/// Pages one such slot spans: up to 1G of guest physical space.
const MMIO_SPAN: u64 = 1 << 18;

impl KvmBackend {
    /// Before a case on a kept VM with private memory: clear the MMIO SPTEs earlier cases left
    /// if this case can make one of their GFNs private; where they cannot be cleared, the case
    /// gets a fresh VM. Its time counts as the reset's MMIO part.
    pub(super) fn settle_mmio(&mut self, seq: &Sequence) -> Result<(), RunError> {
        let t0 = Instant::now();
        let left = self.mmio_left();
        let settled =
            left.is_empty() || !left.iter().any(|g| may_become_private(seq, *g)) || self.clear_mmio_sptes(&left);
        RESET_NANOS[part::MMIO].fetch_add(t0.elapsed().as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
        if settled {
            return Ok(());
        }
        fresh_because(Fresh::MmioLeft);
        self.vm = None;
        self.prepare(seq.header.vm, seq.header.vcpus, seq.header.has(Knob::NoSlotZapAll))?;
        self.ensure_baseline()
    }

    /// Clear whatever MMIO SPTEs the current VM has left (before it is parked); false if they
    /// could not be.
    pub(super) fn clear_left_mmio(&mut self) -> bool {
        let left = self.mmio_left();
        left.is_empty() || self.clear_mmio_sptes(&left)
    }

    /// The MMIO SPTEs below the harness that matter: on a VM with private memory, as the view
    /// (TDP MMU, where it sees every SPTE) has them.
    fn mmio_left(&mut self) -> Vec<u64> {
        let private_mem = self.vm.as_ref().is_some_and(|s| s.vm_type != VmType::Default);
        match self.view.as_mut().filter(|v| v.mmu == Mmu::Tdp && private_mem) {
            Some(v) => {
                v.drain();
                v.mmio_below(HARNESS_GPA >> 12)
            }
            None => Vec::new(),
        }
    }

    /// Replace the MMIO SPTEs a case left at slot-less GFNs, so that the VM can be kept. Slot
    /// deletions do not zap them (they are not present), and a memslot update alone does not
    /// make them inert on a VM with private memory: a fault on a stale one has the reserved bit
    /// set, so it is handled as shared whatever the attributes say, and a private GFN exits with
    /// a memory fault instead of mapping (kvm_mmu_page_fault(): "emulated MMIO is shared-only";
    /// 6.12 and 7.3). So the GFNs get slots, each is pre-faulted (or read by the guest), so that
    /// a leaf replaces its SPTE, and the slots' deletion zaps those leaves. The view then proves
    /// none is left. One slot spans the GFNs within [`MMIO_SPAN`] of each other: two memslot
    /// updates (each an SRCU grace period) per span, not per GFN. Past [`MMIO_CLEAR_MAX`] GFNs
    /// or [`MMIO_CLEAR_SLOTS`] spans a fresh VM is cheaper.
    pub(super) fn clear_mmio_sptes(&mut self, gfns: &[u64]) -> bool {
        let Some(st) = self.vm.as_mut() else { return false };
        let spans = mmio_spans(gfns);
        if gfns.len() > MMIO_CLEAR_MAX || spans.len() > MMIO_CLEAR_SLOTS || st.vcpus.is_empty() {
            return false;
        }
        if self.mmio_backing.is_none() {
            self.mmio_backing = Mapping::anon_private(MMIO_SPAN as usize * 4096).ok();
        }
        let Some(uaddr) = self.mmio_backing.as_ref().map(|m| m.addr()) else { return false };
        let st = self.vm.as_mut().expect("checked above");
        // Every span's slot starts at the same zero pages: they are only read.
        let region = |i: usize, size: u64| kvm_userspace_memory_region2 {
            slot: i as u32,
            guest_phys_addr: spans[i].0 << 12,
            memory_size: size,
            userspace_addr: uaddr,
            ..Default::default()
        };
        let mut added = 0;
        for (i, &(_, n)) in spans.iter().enumerate() {
            // SAFETY: `mmio_backing` lives as long as the backend, past the slots' deletion below.
            if unsafe { st.vm.set_user_memory_region2(region(i, n << 12)) }.is_err() {
                break;
            }
            added += 1;
        }
        let mut ok = added == spans.len();
        // A pre-fault maps a leaf over each MMIO SPTE with no guest entry (under TCG the nested
        // guest's entry and exit were most of the clean-up); where the kernel has none, or the
        // vCPU's root may be obsolete (6.12's pre-fault livelock), the guest reads each GFN.
        let root_valid = st.harness_warm || !st.zaps_all;
        let prefault = self.caps.pre_fault_memory && root_valid;
        if ok && prefault {
            for g in gfns {
                self.watchdog.arm(PREFAULT_TICK);
                ok &= matches!(raw::pre_fault(&st.vcpus[0], g << 12, 4096), Ok((_, 0)));
                self.watchdog.disarm();
            }
        } else if ok {
            let reads: Vec<Op> = gfns.iter().map(|g| Op::Read { vcpu: 0, addr: g << 12, shared: false }).collect();
            let batch: Vec<(usize, &Op)> = reads.iter().enumerate().collect();
            let mut t = RealTrace { observed: vec![Observed::NotChecked; reads.len()], ..Default::default() };
            ok = self.guest_batch(0, &batch, &mut t).is_ok()
                && t.observed.iter().all(|o| matches!(o, Observed::Outcome(Outcome::Value(_))));
        }
        let st = self.vm.as_mut().expect("checked above");
        for i in 0..added {
            // SAFETY: deleting a slot; no memory is handed to KVM.
            ok &= unsafe { st.vm.set_user_memory_region2(region(i, 0)) }.is_ok();
            st.memslot_zapped();
        }
        let Some(v) = self.view.as_mut() else { return false };
        v.drain();
        ok && !v.lost() && v.left_below(HARNESS_GPA >> 12) == (false, false)
    }
}

/// Whether a step of `seq` can make `gfn` private: a conversion, or a guest's MapGPA to
/// private, whose range (pages rounded out) holds it.
fn may_become_private(seq: &Sequence, gfn: u64) -> bool {
    seq.steps.iter().any(|s| match s.op {
        Op::Private { addr, size } | Op::MapGpa { addr, size, private: true, .. } => {
            // In 128 bits: a range that runs off the top still holds the last pages.
            let end = (addr as u128 + size as u128 + 4095) >> 12;
            (addr >> 12) as u128 <= gfn as u128 && (gfn as u128) < end
        }
        _ => false,
    })
}

/// The slots that clear MMIO SPTEs at `gfns` (sorted): (first GFN, pages), each over the GFNs
/// within [`MMIO_SPAN`] pages of its first.
fn mmio_spans(gfns: &[u64]) -> Vec<(u64, u64)> {
    let mut spans: Vec<(u64, u64)> = Vec::new();
    for &g in gfns {
        match spans.last_mut() {
            Some((first, n)) if g - *first < MMIO_SPAN => *n = g - *first + 1,
            _ => spans.push((g, 1)),
        }
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_conversions_to_private_over_a_gfn_matter() {
        let seq = |op: Op| Sequence {
            header: Header::new(VmType::SwProtected),
            steps: vec![Step { op, expect: None, together: false }],
        };
        let private = seq(Op::Private { addr: 0x1000, size: 0x2000 });
        assert!(may_become_private(&private, 2));
        assert!(!may_become_private(&private, 3));
        let map = |private| seq(Op::MapGpa { vcpu: 0, addr: 0x1800, size: 0x1000, private });
        assert!(may_become_private(&map(true), 2), "pages rounded out");
        assert!(!may_become_private(&map(false), 1));
        assert!(!may_become_private(&seq(Op::Shared { addr: 0, size: 1 << 40 }), 5));
        assert!(may_become_private(&seq(Op::Private { addr: u64::MAX - 0xfff, size: 0x2000 }), u64::MAX >> 12));
    }

    #[test]
    fn mmio_spans_group_near_gfns() {
        assert_eq!(mmio_spans(&[]), vec![]);
        assert_eq!(mmio_spans(&[0x10, 0x12, 0x400]), vec![(0x10, 0x3f1)]);
        let far = 0x10 + MMIO_SPAN;
        assert_eq!(mmio_spans(&[0x10, far - 1, far, far + 2]), vec![(0x10, MMIO_SPAN), (far, 3)]);
    }
}
