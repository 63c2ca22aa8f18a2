//! VM life and reset: a fresh VM or a reused one proved clean, the per-case guest_memfd files
//! and slots, the reset between cases, and the page-counter baselines a clean reset returns to.

use super::*;

impl KvmBackend {
    pub(super) fn fresh_vm(&mut self, vm_type: VmType, slot_zap_all_off: bool) -> Result<VmState, RunError> {
        self.fresh_vms += 1;
        FRESH_VMS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(v) = self.view.as_mut() {
            v.reset();
        }
        let vm = self
            .kvm
            .create_vm_with_type(vm_type.kvm_type())
            .map_err(|e| RunError::ioctl("KVM_CREATE_VM", e.errno()))?;
        if slot_zap_all_off {
            let cap = kvm_bindings::kvm_enable_cap {
                cap: kvm_bindings::KVM_CAP_DISABLE_QUIRKS2,
                args: [kvm_bindings::KVM_X86_QUIRK_SLOT_ZAP_ALL as u64, 0, 0, 0],
                ..Default::default()
            };
            vm.enable_cap(&cap).map_err(|e| RunError::ioctl("KVM_CAP_DISABLE_QUIRKS2", e.errno()))?;
        }
        // The guest's MapGPA reaches userspace as KVM_EXIT_HYPERCALL (KVM_HC_MAP_GPA_RANGE), as
        // in private_mem_conversions_test.c; where the kernel offers it.
        if vm_type == VmType::SwProtected
            && vm.check_extension_raw(cvm::KVM_CAP_EXIT_HYPERCALL as _) as u64 & (1 << cvm::KVM_HC_MAP_GPA_RANGE) != 0
        {
            let cap = kvm_bindings::kvm_enable_cap {
                cap: cvm::KVM_CAP_EXIT_HYPERCALL,
                args: [1 << cvm::KVM_HC_MAP_GPA_RANGE, 0, 0, 0],
                ..Default::default()
            };
            vm.enable_cap(&cap).map_err(|e| RunError::ioctl("KVM_CAP_EXIT_HYPERCALL", e.errno()))?;
        }
        let harness = Mapping::anon(HARNESS_SIZE as usize).map_err(|e| RunError::Setup(format!("mmap: {e}")))?;
        guest::build_harness(&harness, guest::has_gib_pages(&self.kvm));
        let region = kvm_userspace_memory_region2 {
            slot: HARNESS_SLOT,
            flags: 0,
            guest_phys_addr: HARNESS_GPA,
            memory_size: HARNESS_SIZE,
            userspace_addr: harness.addr(),
            ..Default::default()
        };
        // SAFETY: the mapping outlives the slot (both live in VmState, the slot is dropped
        // with the VM).
        unsafe { vm.set_user_memory_region2(region) }
            .map_err(|e| RunError::ioctl("KVM_SET_USER_MEMORY_REGION2", e.errno()))?;
        let stats = raw::Stats::open(&vm);
        Ok(VmState {
            vm,
            vm_type,
            vcpus: Vec::new(),
            harness,
            stats,
            baseline: None,
            post_zap: None,
            zaps_all: false,
            harness_warm: false,
            harness_exact: false,
            private: RangeSet::default(),
            slots: BTreeMap::new(),
            gmems: Vec::new(),
            cases: 0,
            dirty_protect: 0,
            slot_zap_all_off,
            plain_backing: Vec::new(),
        })
    }

    /// A VM of the right type with `n` vCPUs at the start of the command loop.
    pub(super) fn prepare(&mut self, vm_type: VmType, n: u32, slot_zap_all_off: bool) -> Result<(), RunError> {
        // A VM with fewer vCPUs is replaced: new vCPUs would touch harness pages after the
        // baseline was taken.
        // On VMs with private memory the lab's kernel showed state surviving the reset (the
        // memory-fault flags of a slot-less private GFN changed with what an earlier case had
        // done: a cached MMIO SPTE outlives slot deletions). Page counters cannot see that, so
        // such VMs are reused only where the view sees every SPTE (TDP MMU) and the reset then
        // proves that no leaf and no MMIO SPTE of the case is left; else a fresh VM per case.
        let proved = self.view.as_ref().is_some_and(|v| v.mmu == Mmu::Tdp);
        let why = match &self.vm {
            _ if !self.reuse => Some(Fresh::ReuseOff),
            None => Some(Fresh::NoVmYet),
            Some(s) if s.vm_type != vm_type => Some(Fresh::AnotherVmType),
            Some(s) if s.vcpus.len() < n as usize => Some(Fresh::MoreVcpus),
            Some(s) if s.slot_zap_all_off != slot_zap_all_off => Some(Fresh::AnotherQuirk),
            _ if !(vm_type == VmType::Default || (vm_type == VmType::SwProtected && proved)) => {
                Some(Fresh::NotReusableHere)
            }
            _ => None,
        };
        if let Some(i) = why {
            // A VM of another type or quirk setting, proved clean by its reset, waits for the
            // cases that want it (a campaign mixes VM types); a parked one that fits comes back
            // instead of a fresh VM. Parked VMs do not run, and none has a leaf below the harness
            // (nor, with private memory, an MMIO SPTE), so the view (which sees every VM's
            // events) stays right.
            if i.parks() {
                // The view forgets a parked VM's MMIO SPTEs when it comes back: it leaves
                // without any that could misroute a private access, or is not kept.
                if !self.clear_left_mmio() {
                    fresh_because(Fresh::MmioLeft);
                    self.vm = None;
                }
                self.parked.extend(self.vm.take());
                if self.parked.len() > PARKED_MAX {
                    self.parked.remove(0);
                }
            }
            let fits = |s: &VmState| {
                s.vm_type == vm_type && s.vcpus.len() >= n as usize && s.slot_zap_all_off == slot_zap_all_off
            };
            let here = vm_type == VmType::Default || (vm_type == VmType::SwProtected && proved);
            match self.parked.iter().position(fits).filter(|_| self.reuse && here) {
                Some(p) => {
                    self.vm = Some(self.parked.remove(p));
                    if let Some(v) = self.view.as_mut() {
                        v.reset();
                    }
                }
                None => {
                    // A VM the reset already dropped was counted there.
                    if self.vm.is_some() || i != Fresh::NoVmYet {
                        fresh_because(i);
                    }
                    self.vm = None;
                    self.vm = Some(self.fresh_vm(vm_type, slot_zap_all_off)?);
                }
            }
        }
        let st = self.vm.as_mut().expect("just set");
        while st.vcpus.len() < n as usize {
            let v = st.vcpus.len() as u64;
            let vcpu = st.vm.create_vcpu(v).map_err(|e| RunError::ioctl("KVM_CREATE_VCPU", e.errno()))?;
            // CPL0 in the lab, where it runs properly (and the guest's hypercall needs it);
            // CPL3 on a host, where CPL0 code is emulated and reads the userspace address.
            guest::init_vcpu(&self.kvm, &vcpu, v, in_lab()).map_err(|e| RunError::Setup(format!("vCPU init: {e}")))?;
            st.vcpus.push(vcpu);
        }
        for (v, vcpu) in st.vcpus.iter().enumerate() {
            guest::reset_regs(vcpu, v as u64)
                .map_err(|e| RunError::ioctl("KVM_SET_REGS", e.raw_os_error().unwrap_or(0)))?;
        }
        Ok(())
    }

    /// Delete the case's slots and close its guest_memfd files; keep the VM only if the reset
    /// is proved clean: the page counters are exactly what they are with only the harness
    /// mapped (or, where deleting a slot zaps every root, with nothing mapped), so no leaf of
    /// the case survived.
    pub(super) fn reset(&mut self, clean_run: bool) {
        let Some(st) = self.vm.as_mut() else { return };
        let mut clock = ResetClock::start();
        let ids: Vec<u32> = st.slots.keys().copied().collect();
        // The first reason the VM cannot be kept.
        let mut why = (!clean_run).then_some(Fresh::UncleanEnd);
        for id in ids {
            let r = kvm_userspace_memory_region2 { slot: id, ..Default::default() };
            // SAFETY: deleting a slot; no memory is handed to KVM.
            if unsafe { st.vm.set_user_memory_region2(r) }.is_err() {
                why = why.or(Some(Fresh::SlotDeletionFailed));
            }
            st.memslot_zapped();
        }
        st.slots.clear();
        st.gmems.clear();
        st.cases += 1;
        if st.dirty_protect != 0 {
            let cap = kvm_bindings::kvm_enable_cap {
                cap: kvm_bindings::KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
                ..Default::default()
            };
            if st.vm.enable_cap(&cap).is_err() {
                why = why.or(Some(Fresh::UncleanEnd));
            }
            st.dirty_protect = 0;
        }
        clock.lap(part::SLOTS);
        // Past this many pages a fresh VM is cheaper than setting them back (measured in the
        // lab: 0.7 µs a page against 15 ms a fresh VM).
        let private_pages: u64 = st.private.iter().map(|(s, e)| (e - s) >> 12).sum();
        let small = private_pages <= RESET_ATTR_PAGES;
        if !small {
            why = why.or(Some(Fresh::TooManyPrivatePages));
        }
        for (address, end) in std::mem::take(&mut st.private).iter().filter(|_| small) {
            let a = kvm_bindings::kvm_memory_attributes { address, size: end - address, attributes: 0, flags: 0 };
            if st.vm.set_memory_attributes(a).is_err() {
                why = why.or(Some(Fresh::TooManyPrivatePages));
            }
        }
        clock.lap(part::ATTRIBUTES);
        // MMIO SPTEs of slot-less GFNs are not leaves and survive the slot deletions above
        // (6.12 zaps every root on a slot deletion for default VMs only). They are left: the
        // deletions moved the memslot generation, so the next access to their GFN faults
        // afresh (`check_mmio_spte()`) as on a fresh VM. Only a private GFN is answered
        // differently (as shared), so on a VM with private memory they are cleared before a
        // case that can make their GFNs private, and before the VM is parked (mmio.rs).
        let expected = if st.harness_warm { st.baseline } else { st.post_zap };
        let now = st.stats.as_ref().and_then(|s| s.pages());
        if !(expected.is_some() && now == expected) {
            why = why.or(Some(Fresh::CountersOffBaseline));
        }
        // Where the view sees every leaf (TDP MMU), it proves the reset too: no leaf of the
        // case's memory is left.
        if let Some(v) = self.view.as_mut().filter(|v| v.mmu == Mmu::Tdp) {
            v.drain();
            let (leaf, _) = v.left_below(HARNESS_GPA >> 12);
            if v.lost() {
                why = why.or(Some(Fresh::ViewLostEvents));
            } else if leaf {
                why = why.or(Some(Fresh::LeafLeft));
            }
        }
        clock.lap(part::VIEW);
        if !self.reuse {
            why = Some(Fresh::ReuseOff);
        }
        // Where the deletions zapped every root (a default VM with KVM_X86_QUIRK_SLOT_ZAP_ALL),
        // each vCPU still holds an obsolete one until it next runs. A fresh VM's vCPUs hold
        // valid roots, and a pre-fault on an obsolete root never completes on 6.12 (corpus/
        // known/lab-prefault-obsolete-root-livelock.seq): run each vCPU once, so the next case
        // starts where a fresh VM would, with the harness warm and the page counters at the
        // baseline.
        if why.is_none() && self.vm.as_ref().is_some_and(|s| !s.harness_warm) {
            let back = self.warm_vcpus().is_ok()
                && self
                    .vm
                    .as_ref()
                    .is_some_and(|s| s.baseline.is_some() && s.stats.as_ref().and_then(|x| x.pages()) == s.baseline);
            if !back {
                why = Some(Fresh::CountersOffBaseline);
            }
        }
        clock.lap(part::REWARM);
        if let Some(i) = why {
            fresh_because(i);
            self.vm = None;
        }
        clock.lap(part::TEARDOWN);
    }

    pub(super) fn gmem_create(st: &mut VmState, g: &GmemDecl) -> Result<(), i32> {
        let flags = if g.mmap { raw::GUEST_MEMFD_FLAG_MMAP } else { 0 }
            | if g.init_shared { raw::GUEST_MEMFD_FLAG_INIT_SHARED } else { 0 };
        let fd = st
            .vm
            .create_guest_memfd(kvm_create_guest_memfd { size: g.size, flags, ..Default::default() })
            .map_err(|e| e.errno())?;
        // SAFETY: the kernel just handed us this fd.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let map = if g.mmap { Mapping::file(fd.as_raw_fd(), 0, g.size as usize).ok() } else { None };
        st.gmems.push(RGmem { fd, decl: g.clone(), map });
        Ok(())
    }

    pub(super) fn slot_add(st: &mut VmState, h: &Header, s: &SlotSpec) -> Outcome {
        let gmem = s.gmem.as_ref().and_then(|b| h.gmems.iter().position(|g| g.name == b.gmem).map(|i| (i, b.offset)));
        let mut flags = if s.readonly { raw::KVM_MEM_READONLY } else { 0 };
        let (mut anon, mut uaddr, mut known) = (None, 0, None);
        if let Some((fi, off)) = gmem {
            flags |= raw::KVM_MEM_GUEST_MEMFD;
            let g = &st.gmems[fi];
            // A guest_memfd-only slot's userspace address is the file's own mapping.
            if let (true, Some(m)) = (g.decl.init_shared, &g.map) {
                if off.checked_add(s.size).is_some_and(|e| e <= m.len as u64) {
                    uaddr = m.addr() + off;
                }
            }
        }
        if uaddr == 0 {
            let len = (s.size.min(1 << 40) as usize).div_ceil(4096) * 4096;
            // Plain slots get memory whose page size is known (the model is told); a
            // guest_memfd slot's shared side stays shmem, as the C reproducer has it.
            let m = if gmem.is_none() {
                Mapping::anon_known(len).map(|(m, b)| {
                    st.plain_backing.push(b);
                    known = Some((len, b));
                    m
                })
            } else {
                Mapping::anon(len)
            };
            match m {
                Ok(m) => {
                    uaddr = m.addr();
                    anon = Some(m);
                }
                Err(_) => return Outcome::Err(Errno::ENOMEM),
            }
        }
        let region = kvm_userspace_memory_region2 {
            slot: s.id,
            flags,
            guest_phys_addr: s.gpa,
            memory_size: s.size,
            userspace_addr: uaddr,
            guest_memfd_offset: gmem.map(|g| g.1).unwrap_or(0),
            guest_memfd: gmem.map(|(fi, _)| st.gmems[fi].fd.as_raw_fd() as u32).unwrap_or(0),
            ..Default::default()
        };
        // SAFETY: the userspace memory lives in the RSlot (or the gmem mapping) for as long as
        // the slot exists.
        match unsafe { st.vm.set_user_memory_region2(region) } {
            Ok(()) if s.size == 0 => {
                st.slots.remove(&s.id);
                st.memslot_zapped();
                Outcome::Ok
            }
            Ok(()) => {
                st.slots.insert(s.id, RSlot { gpa: s.gpa, size: s.size, flags, uaddr, anon, known, gmem });
                Outcome::Ok
            }
            Err(e) => {
                if let (Some(m), Some((len, b))) = (anon, known) {
                    Mapping::recycle(len, m, b);
                }
                errno_of(e.errno())
            }
        }
    }

    pub(super) fn slot_region(id: u32, sl: &RSlot, gpa: u64, size: u64, st: &VmState) -> kvm_userspace_memory_region2 {
        kvm_userspace_memory_region2 {
            slot: id,
            flags: sl.flags,
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: sl.uaddr,
            guest_memfd_offset: sl.gmem.map(|g| g.1).unwrap_or(0),
            guest_memfd: sl.gmem.map(|(fi, _)| st.gmems[fi].fd.as_raw_fd() as u32).unwrap_or(0),
            ..Default::default()
        }
    }

    /// On a fresh VM, learn the page counters a clean reset returns to: with the harness warm
    /// (`baseline`), and right after a slot deletion (`post_zap`; on a shadow-paging host that
    /// zaps every root, the harness's leaves included).
    pub(super) fn ensure_baseline(&mut self) -> Result<(), RunError> {
        if self.vm.as_ref().is_none_or(|s| s.baseline.is_some()) {
            return Ok(());
        }
        self.warm_up()?;
        let st = self.vm.as_mut().expect("prepared");
        Self::scratch_slot_cycle(st)?;
        st.post_zap = st.stats.as_ref().and_then(|s| s.pages());
        self.warm_up()?;
        let st = self.vm.as_mut().expect("prepared");
        st.zaps_all = st.post_zap != st.baseline;
        Ok(())
    }

    /// Add and delete a one-page slot: on x86 that zaps every root.
    pub(super) fn scratch_slot_cycle(st: &mut VmState) -> Result<(), RunError> {
        let scratch = Mapping::anon(4096).map_err(|e| RunError::Setup(format!("mmap: {e}")))?;
        for size in [4096, 0] {
            let r = kvm_userspace_memory_region2 {
                slot: 0,
                guest_phys_addr: 0,
                memory_size: size,
                userspace_addr: scratch.addr(),
                ..Default::default()
            };
            // SAFETY: `scratch` outlives the slot, which is deleted right away.
            unsafe { st.vm.set_user_memory_region2(r) }
                .map_err(|e| RunError::ioctl("KVM_SET_USER_MEMORY_REGION2", e.errno()))?;
        }
        Ok(())
    }

    /// Let every vCPU run one command against the harness's own memory, so that the code,
    /// command and result pages (and whatever KVM prefetches around them) are mapped; then
    /// record the page counters as the baseline a clean reset returns to.
    pub(super) fn warm_up(&mut self) -> Result<(), RunError> {
        self.warm_vcpus()?;
        let st = self.vm.as_mut().expect("prepared");
        st.baseline = st.stats.as_ref().and_then(|s| s.pages());
        for (v, vcpu) in st.vcpus.iter().enumerate() {
            guest::reset_regs(vcpu, v as u64)
                .map_err(|e| RunError::ioctl("KVM_SET_REGS", e.raw_os_error().unwrap_or(0)))?;
        }
        Ok(())
    }

    /// Run every vCPU once against the harness's own memory: its code and stack pages mapped,
    /// and its MMU root loaded afresh.
    pub(super) fn warm_vcpus(&mut self) -> Result<(), RunError> {
        let n = self.vm.as_ref().map(|s| s.vcpus.len()).unwrap_or(0);
        for v in 0..n {
            let warm = Op::Read { vcpu: v as u32, addr: HARNESS_GPA + CODE_OFF, shared: false };
            // The top page of the vCPU's stack too: the first exception or call of a case
            // would map it, and the page counters would miss their baseline by one leaf (a
            // reused VM thrown away for nothing).
            let stack = Op::Read { vcpu: v as u32, addr: stack_top(v as u64) - 8, shared: false };
            let mut t = RealTrace { observed: vec![Observed::NotChecked; 2], ..Default::default() };
            self.guest_batch(v as u32, &[(0, &warm), (1, &stack)], &mut t)?;
            if t.observed[0] == Observed::Outcome(Outcome::Exit(Exit::Mmio)) {
                return Err(RunError::Setup("the guest cannot read its own code page".into()));
            }
        }
        if let Some(st) = self.vm.as_mut() {
            st.harness_exact = true;
        }
        Ok(())
    }
}
