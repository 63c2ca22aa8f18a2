//! KVM's generic paths: memslot changes, memory attributes, guest_memfd hole punching,
//! pre-fault, host access, and the stage-2 fault path for default and SW_PROTECTED VMs. Where
//! TDX differs, these call into [`super::tdx`].

use super::attrs;
use super::lpage::{self, Backing};
use super::memslot::{self, Change};
use super::stage2::Leaf;
use super::variant::{GmemPath, ZapSplit};
use super::*;

impl Model {
    fn vm_facts(&self) -> memslot::VmFacts {
        memslot::VmFacts {
            vm: self.h.vm,
            phys_bits: self.host.phys_bits,
            kernel: self.kernel,
            address_spaces: self.host.address_spaces(self.h.vm),
        }
    }

    pub(crate) fn slot_add(&mut self, spec: &SlotSpec) -> Result<(), Errno> {
        let gm = spec.gmem.as_ref().and_then(|b| self.gmem_index(&b.gmem)).map(|i| (i, &self.gmems[i]));
        let uregion = self.mem.alloc(spec.size / PAGE);
        let facts = self.vm_facts();
        match self.slots.check_add(&facts, spec, gm, uregion)? {
            Change::Create(slot) => {
                if let Some((fi, start)) = slot.gmem {
                    self.gmems[fi].bind(start, start + slot.npages, slot.id);
                }
                self.touch_range(slot.base_gfn, slot.end_gfn());
                self.slots.insert(slot);
                Ok(())
            }
            Change::Delete(old) => self.slot_delete(old.id),
            Change::Move { .. } | Change::MoveRefused { .. } | Change::Nothing => Ok(()),
        }
    }

    pub(crate) fn slot_delete(&mut self, id: u32) -> Result<(), Errno> {
        let Change::Delete(old) = self.slots.check_delete(id)? else { unreachable!() };
        let (s, e) = (old.base_gfn, old.end_gfn());
        if self.is_tdx() {
            // Leaf-first: each private leaf is blocked, tracked and removed by the module.
            self.tdx_zap_private(s, e, ZapSplit::Whole).map_err(|_| Errno::EIO)?;
        }
        self.flush_shadow_memslot(id, s, e);
        // The guest's inhibit lives in the slot's lpage_info and goes with it.
        self.inhibit.remove(s, e);
        if let Some((fi, start)) = old.gmem {
            self.gmems[fi].unbind(start);
        }
        // The harness unmaps the slot's userspace memory with it.
        self.mem.clear(old.uregion, old.npages);
        self.slots.remove(id);
        self.guest.forget(s, e);
        Ok(())
    }

    /// `kvm_arch_flush_shadow_memslot()` for a slot going away (DELETE or MOVE): on a default
    /// VM with `KVM_X86_QUIRK_SLOT_ZAP_ALL` (on unless userspace disables it; 6.12 and later)
    /// every root is zapped, all leaves of every slot with it; otherwise only the slot's range.
    /// Only address space 0 is the model's to map: an SMM slot's own range is in the other.
    fn flush_shadow_memslot(&mut self, id: u32, s: u64, e: u64) {
        if self.h.vm == VmType::Default && !self.h.has(Knob::NoSlotZapAll) {
            self.unmap_range(false, 0, u64::MAX);
        } else if memslot::as_id(id) == 0 {
            self.unmap_range(false, s, e);
        }
    }

    pub(crate) fn slot_move(&mut self, id: u32, gpa: u64) -> Result<(), Errno> {
        let (old, new_base) = match self.slots.check_move(self.h.vm, id, gpa, self.host.phys_bits)? {
            Change::Move { old, new_base } => (old, new_base),
            Change::MoveRefused { old, errno } => {
                self.flush_shadow_memslot(id, old.base_gfn, old.end_gfn());
                return Err(errno);
            }
            _ => return Ok(()),
        };
        self.flush_shadow_memslot(id, old.base_gfn, old.end_gfn());
        // A MOVE allocates the slot's lpage_info afresh: no inhibit comes along.
        self.inhibit.remove(old.base_gfn, old.end_gfn());
        self.guest.forget(old.base_gfn, old.end_gfn());
        self.slots.remove(id);
        let mut moved = old;
        moved.base_gfn = new_base;
        self.guest.forget(moved.base_gfn, moved.end_gfn());
        self.touch_range(moved.base_gfn, moved.end_gfn());
        self.slots.insert(moved);
        Ok(())
    }

    pub(crate) fn set_attributes(&mut self, addr: u64, size: u64, private: bool) -> Result<(), Errno> {
        if self.pol.in_place {
            return self.convert_in_place(addr, size, private);
        }
        let (s, e) = attrs::check_args(addr, size)?;
        // Nothing to change: KVM returns 0 without zapping anything.
        if self.attrs.uniform(s, e) == Some(private) {
            return Ok(());
        }
        self.convert_range(s, e, private, self.pol.attr_split())
    }

    /// Convert GFNs `[s, e)`: zap the old attribute's mappings, splitting a TD's huge private
    /// leaves as `how` says, then set the attributes. kvm_arch_pre_set_memory_attributes() zaps
    /// the old attribute's mappings only: on a TD, going shared zaps the mirror root and going
    /// private the direct (shared) root, through kvm_gfn_range_filter_to_root_types() (D1).
    /// Other VMs have the one root.
    fn convert_range(&mut self, s: u64, e: u64, private: bool, how: ZapSplit) -> Result<(), Errno> {
        if self.is_tdx() && !private {
            self.tdx_zap_private(s, e, how)?;
        } else {
            self.unmap_range(false, s, e);
        }
        self.attrs.set(s, e, private);
        self.guest.forget(s, e);
        // Neighbouring huge ranges may now be mixed: check them too.
        self.touch_range(s & !511, (e + 511) & !511);
        Ok(())
    }

    /// fallocate(PUNCH_HOLE|KEEP_SIZE) on the guest_memfd behind `[addr, addr + size)`, one
    /// call per memslot piece, as the selftests' `vm_guest_mem_fallocate` does.
    pub(crate) fn punch(&mut self, addr: u64, size: u64, keep_size: bool) -> Result<(), Errno> {
        let s = addr / PAGE;
        let e = addr.saturating_add(size.max(1)).div_ceil(PAGE);
        let pieces = self.gmem_pieces(s, e)?;
        // Then the kernel's checks, in vfs_fallocate's and guest_memfd's order.
        if size == 0 {
            return Err(Errno::EINVAL);
        }
        if !keep_size {
            return Err(Errno::EOPNOTSUPP);
        }
        if !addr.is_multiple_of(PAGE) || !size.is_multiple_of(PAGE) {
            return Err(Errno::EINVAL);
        }
        for p in pieces {
            let (ps, pe) = (s.max(p.base_gfn), e.min(p.end_gfn()));
            let (fi, off) = p.gmem.expect("checked");
            self.punch_file(fi, off + (ps - p.base_gfn), off + (pe - p.base_gfn))?;
        }
        Ok(())
    }

    /// The memslots covering GFNs `[s, e)`, each bound to guest_memfd. The harness resolves a
    /// guest_memfd call's range through them first: a part with no guest_memfd slot is an
    /// error (ENOENT) before any call.
    fn gmem_pieces(&self, s: u64, e: u64) -> Result<Vec<memslot::Slot>, Errno> {
        let pieces: Vec<_> = self.slots.overlapping(s, e);
        let mut covered = s;
        for p in &pieces {
            if p.base_gfn > covered || p.gmem.is_none() {
                return Err(Errno::ENOENT);
            }
            covered = p.end_gfn();
        }
        if covered < e {
            return Err(Errno::ENOENT);
        }
        Ok(pieces)
    }

    /// `option in-place-conversion`: guest_memfd keeps private/shared, and the harness converts
    /// each memslot piece through the file behind it, one call per piece as for `punch`. The
    /// guest_memfd path splits before it zaps (docs/model.md §5), so a piece converts whole or
    /// not at all; an error stops with the earlier pieces converted (and the guest told so by
    /// their new attributes: no partial conversion).
    fn convert_in_place(&mut self, addr: u64, size: u64, private: bool) -> Result<(), Errno> {
        let (s, e) = attrs::check_args(addr, size)?;
        if self.attrs.uniform(s, e) == Some(private) {
            return Ok(());
        }
        // Memory without guest_memfd is shared and stays so: going shared it is skipped; going
        // private there is nothing to convert it through.
        let pieces = if private {
            self.gmem_pieces(s, e)?
        } else {
            self.slots.overlapping(s, e).into_iter().filter(|p| p.gmem.is_some()).collect()
        };
        for p in pieces {
            let (ps, pe) = (s.max(p.base_gfn), e.min(p.end_gfn()));
            if self.attrs.uniform(ps, pe) != Some(private) {
                self.convert_range(ps, pe, private, self.pol.gmem_split(GmemPath::Convert))?;
            }
        }
        Ok(())
    }

    /// KVM_PRE_FAULT_MEMORY, called until the whole range is done or a call fails. Costs one
    /// piece per leaf run or 2M region, not one per page.
    pub(crate) fn prefault(&mut self, addr: u64, size: u64) -> Result<(), Errno> {
        if !addr.is_multiple_of(PAGE) || !size.is_multiple_of(PAGE) || size == 0 || addr.checked_add(size).is_none() {
            return Err(Errno::EINVAL);
        }
        if let Some(td) = &self.td {
            if !td.runnable() {
                return Err(Errno::EOPNOTSUPP);
            }
            // kvm_arch_vcpu_pre_fault_memory(): a GFN with the shared bit is an alias (D5).
            if addr & crate::seq::TD_SHARED_BIT != 0 {
                return Err(Errno::EINVAL);
            }
        }
        if self.rmp.is_some() && !self.snp_launched {
            return Err(Errno::EOPNOTSUPP);
        }
        let (mut gfn, e) = (addr / PAGE, (addr + size) / PAGE);
        let mut tries = 0;
        while gfn < e {
            let private = self.h.vm.has_private_mem() && self.attrs.is_private(gfn);
            let Some(slot_end) = self.slots.find(gfn).map(|s| s.end_gfn()) else {
                // As for a guest access: a private GFN with no slot is a memory fault (EFAULT).
                return Err(if private { Errno::EFAULT } else { Errno::ENOENT });
            };
            let mirror = private && self.is_tdx();
            let root = if mirror { &self.mirror } else { &self.shared };
            if let Some((rs, run)) = root.runs_in(gfn, gfn + 1).first().copied() {
                // Already mapped: an expensive no-op, skipped a whole run at a time.
                gfn = rs + run.pages();
                tries = 0;
                continue;
            }
            tries += 1;
            if tries > LIVELOCK_EXITS {
                self.violate(ViolationKind::Livelock, format!("pre-fault of gfn {gfn:#x} retries forever"));
                return Err(Errno::EINTR);
            }
            let req = FaultReq { gfn, private, write: false, accept: None };
            match self.handle_fault(req, true) {
                Ok(()) => {}
                Err(Outcome::Exit(Exit::MemoryFault { .. })) => return Err(Errno::EFAULT),
                Err(Outcome::Exit(Exit::Mmio)) => return Err(Errno::ENOENT),
                Err(Outcome::Err(e)) => return Err(e),
                Err(_) => return Err(Errno::EIO),
            }
            // If that fault mapped 4K, the rest of its 2M region (same slot, same attribute,
            // nothing mapped yet) takes the same decision: map it as one run.
            let root = if mirror { &self.mirror } else { &self.shared };
            if let Some((_, l)) = root.get(gfn) {
                if l.level == Level::L4K {
                    let mut stop = e.min(slot_end).min((gfn | 511) + 1);
                    if let Some((ns, _)) = root.runs_in(gfn + 1, stop).first() {
                        stop = stop.min((*ns).max(gfn + 1));
                    }
                    if self.h.vm.has_private_mem() {
                        stop = stop.min(self.attrs.next_change(gfn, stop));
                    }
                    if stop > gfn + 1 {
                        self.map_4k_run(gfn + 1, stop, private);
                    }
                }
            }
        }
        Ok(())
    }

    /// Map `[s, e)` (one slot, one attribute, inside one 2M region, nothing mapped) at 4K, as
    /// the faults one page at a time would.
    fn map_4k_run(&mut self, s: u64, e: u64, private: bool) {
        let slot = self.slots.find(s).expect("caller checked").clone();
        let gmem = slot.gmem_index(s).filter(|(fi, _)| private || self.gmems[*fi].gmem_only());
        let Some((fi, idx)) = gmem else {
            let pfn = slot.uregion + (s - slot.base_gfn);
            self.map_leaf(false, s, Leaf { count: e - s, ..Leaf::one(Level::L4K, pfn, false, false) });
            return;
        };
        let n = e - s;
        for (off, len, pfn) in self.gmems[fi].frame_runs(idx, n, &mut self.mem) {
            let g = s + off;
            if self.is_tdx() {
                if self.td.as_mut().expect("tdx").page_aug_range(g, Level::L4K, len, pfn) != TdxStatus::Success {
                    return; // the page-at-a-time loop picks up from here
                }
                self.map_leaf(true, g, Leaf { count: len, ..Leaf::one(Level::L4K, pfn, true, false) });
            } else {
                if let Some(rmp) = self.rmp.as_mut().filter(|_| private) {
                    // SNP: each page's own fault would assign it 4K in the RMP; a page already
                    // assigned (e.g. under a 2M entry) is left to the page-at-a-time path.
                    if rmp.any(pfn, len) {
                        return;
                    }
                    rmp.assign(pfn, g, Level::L4K, len);
                }
                self.map_leaf(false, g, Leaf { count: len, ..Leaf::one(Level::L4K, pfn, private, false) });
            }
        }
    }

    /// The frame the host reaches at `gfn` through the slot's shared view: guest_memfd's mmap
    /// for an init-shared file, else the slot's userspace memory.
    fn host_frame(&mut self, gfn: u64) -> Result<u64, Errno> {
        let slot = self.slots.find(gfn).ok_or(Errno::EFAULT)?.clone();
        if let Some((fi, idx)) = slot.gmem_index(gfn) {
            if self.gmems[fi].decl.init_shared {
                let (b, f) = self.gmems[fi].get_or_alloc(idx, &mut self.mem)?;
                return Ok(f.pfn + (idx - b));
            }
        }
        Ok(slot.uregion + (gfn - slot.base_gfn))
    }

    pub(crate) fn host_write(&mut self, addr: u64, value: u64) -> Result<(), Errno> {
        let gfn = addr / PAGE;
        let pfn = self.host_frame(gfn)?;
        self.mem.write(pfn, value);
        if !(self.h.vm.has_private_mem() && self.attrs.is_private(gfn)) {
            self.guest.forget(gfn, gfn + 1);
        }
        Ok(())
    }

    pub(crate) fn host_read(&mut self, addr: u64) -> Outcome {
        match self.host_frame(addr / PAGE) {
            Ok(pfn) => Outcome::Value(self.mem.read(pfn)),
            Err(e) => Outcome::Err(e),
        }
    }

    /// One attempt of a guest op on the vCPU: it completes, or exits to the host with a fault.
    pub fn attempt(&mut self, op: &Op) -> Attempt {
        if self.dead {
            return Attempt::Done(Outcome::VmDead);
        }
        if self.is_tdx() {
            return self.tdx_attempt(op);
        }
        if self.rmp.is_some() {
            return self.snp_attempt(op);
        }
        let (addr, write) = match *op {
            Op::Read { addr, .. } | Op::Touch { addr, .. } => (addr, false),
            Op::Write { addr, .. } => (addr, true),
            Op::MapGpa { addr, size, private, .. } => return Attempt::Done(self.hc_map_gpa(addr, size, private)),
            // TDX and SNP guest ops on a VM without them (the legality checks keep them out of
            // generated cases); host ops never come here. Listed, so a new op is placed.
            Op::Accept { .. } | Op::Release { .. } | crate::seq::host_ops!() => {
                return Attempt::Done(Outcome::Err(Errno::EINVAL))
            }
        };
        let gfn = addr / PAGE;
        let private = self.h.vm.has_private_mem() && self.attrs.is_private(gfn);
        let Some(slot) = self.slots.find(gfn) else {
            // A private GFN needs guest_memfd before it needs a slot: KVM reports the missing
            // backing as a private memory fault, not MMIO (observed on the lab's 6.12).
            return Attempt::Done(Outcome::Exit(if private {
                Exit::MemoryFault { private: true }
            } else {
                Exit::Mmio
            }));
        };
        // The fault path takes the private branch before it looks at the slot's flags
        // (6.12: `__kvm_faultin_pfn()` -> `kvm_faultin_pfn_private()`; 7.3:
        // `__kvm_mmu_faultin_pfn()` -> `kvm_mmu_faultin_pfn_gmem()`): a write to a PRIVATE GFN
        // of a read-only slot without guest_memfd is a private memory fault, not the read-only
        // slot's MMIO exit.
        if write && slot.readonly && !private {
            return Attempt::Done(Outcome::Exit(Exit::Mmio));
        }
        self.log_breaks_huge(gfn, write);
        match self.shared.get(gfn) {
            Some((b, l)) => Attempt::Done(self.guest_access(op, gfn, l.pfn + (gfn - b))),
            None => Attempt::Exit(FaultReq { gfn, private, write, accept: None }),
        }
    }

    /// A guest access that reached a frame: read, write or touch it, checking the guest's view.
    pub(crate) fn guest_access(&mut self, op: &Op, gfn: u64, pfn: u64) -> Outcome {
        match *op {
            Op::Write { value, .. } => {
                self.mem.write(pfn, value);
                self.guest.wrote(gfn, value);
                self.log_write(gfn);
                Outcome::Ok
            }
            Op::Read { .. } => {
                let v = self.mem.read(pfn);
                if let Some(b) = self.guest.belief(gfn) {
                    if b != v {
                        self.violate(
                            ViolationKind::SilentDataLoss,
                            format!("gfn {gfn:#x}: guest wrote {b:#x}, reads {v:#x}, saw no event"),
                        );
                        self.guest.forget(gfn, gfn + 1);
                    }
                }
                Outcome::Value(v)
            }
            _ => Outcome::Ok,
        }
    }

    /// The host's answer to a guest exit: `Ok` resumes the guest (which retries), `Err` ends the
    /// guest op with an exit to userspace or an error from KVM_RUN. `prefault` marks the
    /// KVM_PRE_FAULT_MEMORY path (no accept level; `huge-v1` forces 4K there).
    pub fn handle_fault(&mut self, req: FaultReq, prefault: bool) -> Result<(), Outcome> {
        if self.rmp.is_some() {
            if req.private {
                return self.snp_private_fault(req);
            }
            if self.attrs.is_private(req.gfn) {
                return Err(Outcome::Exit(Exit::MemoryFault { private: false }));
            }
        }
        if self.is_tdx() {
            if req.private {
                return self.tdx_private_fault(req, prefault);
            }
            // A shared access to a private GFN: the attribute disagrees.
            if self.attrs.is_private(req.gfn) {
                return Err(Outcome::Exit(Exit::MemoryFault { private: false }));
            }
            // No slot: KVM installs a TD's MMIO SPTE without SUPPRESS_VE, so the retried access
            // is a #VE in the guest (whose handler would ask for MMIO by TDVMCALL; the shim's
            // reports it). Seen in the lab's software-module mode.
            if !prefault && self.slots.find(req.gfn).is_none() {
                return Err(Outcome::Ve);
            }
        }
        self.map_fault(req)
    }

    /// The stage-2 fault path of the shared (direct) root, and of every root on default and
    /// SW_PROTECTED VMs.
    fn map_fault(&mut self, req: FaultReq) -> Result<(), Outcome> {
        let Some(slot) = self.slots.find(req.gfn).cloned() else {
            return Err(Outcome::Exit(Exit::Mmio));
        };
        let gmem_idx = slot.gmem_index(req.gfn);
        let backing = if req.private {
            // A private GFN with no guest_memfd: KVM_EXIT_MEMORY_FAULT, -EFAULT.
            let Some((fi, idx)) = gmem_idx else {
                return Err(Outcome::Exit(Exit::MemoryFault { private: true }));
            };
            if self.gmems[fi].get_or_alloc(idx, &mut self.mem).is_err() {
                return Err(Outcome::Exit(Exit::MemoryFault { private: true }));
            }
            Backing::Gmem { idx }
        } else {
            match gmem_idx {
                // A guest_memfd-only slot (6.18, a file created with MMAP): shared faults come
                // from guest_memfd too.
                Some((fi, idx)) if self.gmems[fi].gmem_only() => {
                    if self.gmems[fi].get_or_alloc(idx, &mut self.mem).is_err() {
                        return Err(Outcome::Exit(Exit::MemoryFault { private: false }));
                    }
                    Backing::Gmem { idx }
                }
                _ => Backing::User(self.host.backing(slot.gmem.is_some())),
            }
        };
        let gm = gmem_idx.map(|(fi, _)| &self.gmems[fi]);
        let attrs = self.h.vm.has_private_mem().then_some(&self.attrs);
        let (level, thp) = lpage::max_level(&slot, req.gfn, attrs, gm, backing);
        let base = req.gfn & !(level.pages() - 1);
        let pfn = match backing {
            Backing::Gmem { idx } => {
                let fi = gmem_idx.expect("gmem backing").0;
                self.gmems[fi].pfn_at(idx - (req.gfn - base)).expect("allocated above")
            }
            Backing::User(_) => slot.uregion + (base - slot.base_gfn),
        };
        // A huge leaf replaces whatever smaller leaves the range had (the TDP MMU installs it
        // over the old table).
        self.unmap_range(false, base, base + level.pages());
        self.map_leaf(false, base, Leaf::one(level, pfn, req.private, thp));
        Ok(())
    }
}
