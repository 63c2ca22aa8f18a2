//! Dirty logging: KVM_SET_USER_MEMORY_REGION2 on an existing slot (FLAGS_ONLY),
//! KVM_GET_DIRTY_LOG and KVM_CLEAR_DIRTY_LOG, and what logging does to mapping levels
//! (`kvm_mmu_slot_apply_flags()` in x86.c, `kvm_mmu_hugepage_adjust()`). The rules, with the
//! functions they follow in 6.12 and 7.3, are in docs/slot-updates-and-dirty-logging.md.
//!
//! The bitmap is not exact from the model's side: a read fault maps a writable SPTE where the
//! host page is writable and marks the page dirty then (`make_spte()`), and whether the host
//! page is writable is the host's business. So the model keeps two sets per slot: the pages
//! the kernel must report (the guest wrote them) and the pages it may (faulted in otherwise),
//! and a real bitmap is held to lie between them.

use super::kernel::Rule;
use super::lpage::{self, Backing};
use super::memslot::{self, DirtyLog, Slot, KVM_USER_MEM_SLOTS};
use super::stage2::Leaf;
use super::*;

/// What a KVM_GET_DIRTY_LOG must and may report, as page offsets in the slot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirtyReport {
    pub must: Vec<u64>,
    pub may: Vec<u64>,
    /// Ranges of pages that must be reported too (KVM_DIRTY_LOG_INITIALLY_SET).
    pub must_ranges: Vec<(u64, u64)>,
}

/// KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE and KVM_DIRTY_LOG_INITIALLY_SET (include/uapi/linux/kvm.h).
pub const MANUAL_PROTECT: u64 = 1;
pub const INITIALLY_SET: u64 = 2;

impl DirtyReport {
    /// Whether a real bitmap (page offsets set) is one the model allows; else the first page
    /// that is wrong and why.
    pub fn allows(&self, real: &[u64]) -> Result<(), String> {
        if let Some(p) = self.must.iter().find(|p| real.binary_search(p).is_err()) {
            return Err(format!("page {p} of the slot was written by the guest and is not reported dirty"));
        }
        let in_ranges = |p: u64| self.must_ranges.iter().any(|&(s, e)| (s..e).contains(&p));
        for &(s, e) in &self.must_ranges {
            let (a, b) = (real.partition_point(|&p| p < s), real.partition_point(|&p| p < e));
            if (b - a) as u64 != e - s {
                let missing = (s..e).find(|p| real.binary_search(p).is_err()).unwrap_or(s);
                return Err(format!(
                    "page {missing} of the slot was set when logging began (initially set) and is not reported dirty"
                ));
            }
        }
        if let Some(p) = real
            .iter()
            .find(|&&p| self.must.binary_search(&p).is_err() && self.may.binary_search(&p).is_err() && !in_ranges(p))
        {
            return Err(format!("page {p} of the slot is reported dirty; the guest neither wrote nor faulted it"));
        }
        Ok(())
    }
}

impl Model {
    /// Whether the host runs KVM's TDP MMU (the model's default: real hardware with EPT/NPT).
    fn tdp_mmu(&self) -> bool {
        !self.host.shadow_mmu
    }

    /// KVM_SET_USER_MEMORY_REGION2 on slot `id` with its GPA, size and userspace address and
    /// these flags. `kvm_set_memory_region()`'s checks in its order; the only change that
    /// succeeds is LOG_DIRTY_PAGES toggled on a slot without guest_memfd (FLAGS_ONLY).
    pub(crate) fn slot_update(
        &mut self,
        id: u32,
        log_dirty: bool,
        readonly: bool,
        gmem: Option<&GmemBinding>,
    ) -> Result<(), Errno> {
        // The harness has no GPA, size or address to issue the call with (as for slot-move).
        let Some(old) = self.slots.get(id).cloned() else {
            return Err(Errno::ENOENT);
        };
        if id as u16 as u32 >= KVM_USER_MEM_SLOTS {
            return Err(Errno::EINVAL);
        }
        // check_memory_region_flags().
        if gmem.is_some() && (log_dirty || (!self.h.vm.has_private_mem() && !self.rule(Rule::GmemOnDefaultVm))) {
            return Err(Errno::EINVAL);
        }
        if readonly && (gmem.is_some() || matches!(self.h.vm, VmType::Tdx | VmType::Snp)) {
            return Err(Errno::EINVAL);
        }
        if let Some(b) = gmem {
            if !b.offset.is_multiple_of(PAGE) || b.offset.checked_add(old.npages * PAGE).is_none() {
                return Err(Errno::EINVAL);
            }
        }
        // An existing slot: "private memslots are immutable", and READONLY or GUEST_MEMFD that
        // differ are refused.
        if gmem.is_some() || old.gmem.is_some() || readonly != old.readonly {
            return Err(Errno::EINVAL);
        }
        match (old.log.is_some(), log_dirty) {
            (false, true) => self.logging_on(&old),
            (true, false) => self.logging_off(&old),
            _ => {}
        }
        Ok(())
    }

    /// FLAGS_ONLY, logging on: an empty bitmap; with the TDP MMU, eager splitting
    /// (`kvm_mmu_slot_try_split_huge_pages()`, on by default) turns the slot's huge leaves into
    /// 4K leaves of the same frames. The shadow MMU keeps them write-protected until a write.
    fn logging_on(&mut self, slot: &Slot) {
        // Initially all set: every bit set, no page write-protected and nothing split, since
        // every page counts as dirty already (`kvm_prepare_memory_region()`,
        // `kvm_mmu_slot_apply_flags()`); KVM_CLEAR_DIRTY_LOG splits and protects later.
        if self.dirty_protect & INITIALLY_SET != 0 {
            let mut log = DirtyLog::default();
            log.initially.insert(0, slot.npages);
            if let Some(s) = self.slots.get_mut(slot.id) {
                s.log = Some(log);
            }
            return;
        }
        if self.tdp_mmu() {
            for (b, l) in self.shared.runs_in(slot.base_gfn, slot.end_gfn()) {
                if l.level != Level::L4K {
                    self.unmap_range(false, b, b + l.pages());
                    self.map_leaf(false, b, Leaf { level: Level::L4K, count: l.pages(), ..l });
                }
            }
        }
        if let Some(s) = self.slots.get_mut(slot.id) {
            s.log = Some(DirtyLog::default());
        }
    }

    /// FLAGS_ONLY, logging off: the bitmap goes; the TDP MMU of 7.3 makes each range that may
    /// be huge again one huge leaf in place (`kvm_mmu_recover_huge_pages()`), 6.12 and the
    /// shadow MMU zap its small leaves (`kvm_mmu_zap_collapsible_sptes()`), and faults map
    /// them huge later.
    fn logging_off(&mut self, slot: &Slot) {
        if let Some(s) = self.slots.get_mut(slot.id) {
            s.log = None;
        }
        let slot = self.slots.get(slot.id).cloned().expect("updated above");
        let recover = self.tdp_mmu() && self.rule(Rule::RecoverHugePages);
        let l2m = Level::L2M.pages();
        let mut base = slot.base_gfn.next_multiple_of(l2m);
        while base + l2m <= slot.end_gfn() {
            let runs = self.shared.runs_in(base, base + l2m);
            let small = runs.iter().any(|(_, l)| l.level == Level::L4K);
            let backing = Backing::User(self.host.backing(false));
            let attrs = self.h.vm.has_private_mem().then_some(&self.attrs);
            let (level, thp) = lpage::max_level(&slot, base, attrs, None, backing);
            if small && level >= Level::L2M {
                self.unmap_range(false, base, base + l2m);
                if recover {
                    let pfn = slot.uregion + (base - slot.base_gfn);
                    self.map_leaf(false, base, Leaf::one(Level::L2M, pfn, false, thp));
                }
            }
            base += l2m;
        }
    }

    /// The slot a dirty-log ioctl names, after the checks both ioctls make first: the slot id
    /// and its address space (EINVAL).
    fn log_slot_id(&self, id: u32) -> Result<(), Errno> {
        if id as u16 as u32 >= KVM_USER_MEM_SLOTS || memslot::as_id(id) >= self.host.address_spaces(self.h.vm) {
            return Err(Errno::EINVAL);
        }
        Ok(())
    }

    /// KVM_GET_DIRTY_LOG: report the bitmap; without manual protect also clear it (and
    /// write-protect what it reported), with it leave both to KVM_CLEAR_DIRTY_LOG
    /// (`kvm_get_dirty_log_protect()`). Returns what the report must and may hold.
    pub(crate) fn get_dirty_log(&mut self, id: u32) -> Result<DirtyReport, Errno> {
        self.log_slot_id(id)?;
        let manual = self.dirty_protect & MANUAL_PROTECT != 0;
        let log = self.slots.get_mut(id).and_then(|s| s.log.as_mut()).ok_or(Errno::ENOENT)?;
        let taken = if manual { log.clone() } else { std::mem::take(log) };
        Ok(DirtyReport {
            must: taken.must.into_iter().collect(),
            may: taken.may.into_iter().collect(),
            must_ranges: taken.initially.iter().collect(),
        })
    }

    /// KVM_ENABLE_CAP(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2): no flags, and args[0] within
    /// MANUAL_PROTECT, plus INITIALLY_SET where MANUAL_PROTECT is asked for (x86's
    /// KVM_DIRTY_LOG_MANUAL_CAPS). Any time, slots logging or not: the next GET, CLEAR and
    /// logging-on go by it.
    pub(crate) fn dirty_log_protect(&mut self, flags: u64) -> Result<(), Errno> {
        let allowed = if flags & MANUAL_PROTECT != 0 { MANUAL_PROTECT | INITIALLY_SET } else { MANUAL_PROTECT };
        if flags & !allowed != 0 {
            return Err(Errno::EINVAL);
        }
        self.dirty_protect = flags;
        Ok(())
    }

    /// KVM_CLEAR_DIRTY_LOG of `[first, first + pages)` with every bit set in the mask.
    pub(crate) fn clear_dirty_log(&mut self, id: u32, first: u64, pages: u64) -> Result<(), Errno> {
        self.log_slot_id(id)?;
        if !first.is_multiple_of(64) {
            return Err(Errno::EINVAL);
        }
        let slot = self.slots.get_mut(id).ok_or(Errno::ENOENT)?;
        let npages = slot.npages;
        let log = slot.log.as_mut().ok_or(Errno::ENOENT)?;
        if first > npages || pages > npages - first || (pages < npages - first && !pages.is_multiple_of(64)) {
            return Err(Errno::EINVAL);
        }
        let end = first + pages;
        log.must.retain(|p| !(first..end).contains(p));
        log.may.retain(|p| !(first..end).contains(p));
        // Initially set: the first clear of a page that was set splits its huge leaf (eager
        // splitting, TDP MMU) and write-protects it (`kvm_arch_mmu_enable_log_dirty_pt_masked()`):
        // huge leaves in a logging slot are only ever ones mapped before logging began, in
        // pages still initially set.
        let first_clear: Vec<(u64, u64)> =
            log.initially.iter().map(|(s, e)| (s.max(first), e.min(end))).filter(|(s, e)| s < e).collect();
        log.initially.remove(first, end);
        let (base, init_set) = (slot.base_gfn, self.dirty_protect & INITIALLY_SET != 0);
        if init_set && self.tdp_mmu() {
            for (s, e) in first_clear {
                for (b, l) in self.shared.runs_in(base + s, base + e) {
                    if l.level != Level::L4K {
                        self.unmap_range(false, b, b + l.pages());
                        self.map_leaf(false, b, Leaf { level: Level::L4K, count: l.pages(), ..l });
                    }
                }
            }
        }
        Ok(())
    }

    /// A guest write reached `gfn`: its page is dirty where its slot logs.
    pub(crate) fn log_write(&mut self, gfn: u64) {
        let Some(id) = self.slots.find(gfn).filter(|s| s.log.is_some()).map(|s| s.id) else {
            return;
        };
        let s = self.slots.get_mut(id).expect("found");
        let off = gfn - s.base_gfn;
        if let Some(l) = s.log.as_mut() {
            l.must.insert(off);
        }
    }

    /// A fault mapped `[s, e)` of the shared root: the pages may be reported dirty where their
    /// slot logs (a writable SPTE marks its page: `make_spte()`).
    pub(crate) fn log_mapped(&mut self, s: u64, e: u64) {
        let Some(id) = self.slots.find(s).filter(|sl| sl.log.is_some()).map(|sl| sl.id) else {
            return;
        };
        let sl = self.slots.get_mut(id).expect("found");
        let (b, end) = (sl.base_gfn, sl.end_gfn().min(e));
        if let Some(l) = sl.log.as_mut() {
            l.may.extend((s..end).map(|g| g - b));
        }
    }

    /// A write to a huge leaf of a logging slot (the shadow MMU kept it write-protected):
    /// the leaf goes and the fault maps 4K (`kvm_mmu_hugepage_adjust()` refuses huge pages
    /// for a dirty-tracked slot). True where that happened.
    pub(crate) fn log_breaks_huge(&mut self, gfn: u64, write: bool) -> bool {
        // A page still initially set was never write-protected: the write goes through.
        let logging = self
            .slots
            .find(gfn)
            .is_some_and(|s| s.log.as_ref().is_some_and(|l| !l.initially.contains(gfn - s.base_gfn)));
        match self.shared.get(gfn) {
            Some((b, l)) if write && logging && l.level != Level::L4K => {
                self.unmap_range(false, b, b + l.pages());
                true
            }
            _ => false,
        }
    }
}
