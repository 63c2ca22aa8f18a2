//! The real KVM backend: runs a sequence on `/dev/kvm` with the minimal guest. One VM is
//! reused across cases with a full reset (slots deleted, guest_memfd closed, guest registers
//! rewritten); a fresh VM replaces it whenever the reset cannot be proved clean (the VM's page
//! counters did not return to their baseline, a case timed out or the guest failed).

pub mod cvm;
pub mod guest;
pub mod kcov;
pub mod kmsg;
pub mod mem;
pub mod raw;
pub mod trace;

use super::caps::Caps;
use super::view::{Mmu, StepView, UserBacking};
use super::{Backend, Observed, RealTrace, RunError};
use crate::model::ranges::RangeSet;
use crate::model::HostFacts;
use crate::seq::*;
use guest::{BatchError, CmdExit, Watchdog};
use kvm_bindings::{kvm_create_guest_memfd, kvm_userspace_memory_region2};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use mem::Mapping;
use privmem_guest::abi::*;
use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};
use trace::TraceView;

struct RGmem {
    fd: OwnedFd,
    decl: GmemDecl,
    /// The file's own mapping, for `mmap` files.
    map: Option<Mapping>,
}

struct RSlot {
    gpa: u64,
    size: u64,
    flags: u32,
    uaddr: u64,
    /// The slot's anonymous memory, unless its userspace address is guest_memfd's mapping.
    anon: Option<Mapping>,
    gmem: Option<(usize, u64)>,
}

struct VmState {
    vm: VmFd,
    vm_type: VmType,
    vcpus: Vec<VcpuFd>,
    harness: Mapping,
    stats: Option<raw::Stats>,
    /// Page counters with only the harness slot mapped and the guest idle.
    baseline: Option<[u64; 3]>,
    /// Page counters right after a slot deletion zapped everything, before the guest ran.
    post_zap: Option<[u64; 3]>,
    /// Deleting or moving a slot zaps the harness's own leaves too (a shadow-paging host).
    zaps_all: bool,
    /// The harness's leaves are mapped (the guest ran since the last zap).
    harness_warm: bool,
    /// The GPA ranges that are PRIVATE now: attributes are per VM and outlive slots, so the
    /// reset sets them back to shared, and only them (6.12 stores attributes page by page: a
    /// range set back twice costs twice).
    private: RangeSet,
    slots: BTreeMap<u32, RSlot>,
    gmems: Vec<RGmem>,
    /// Cases run on this VM.
    cases: u64,
    /// `KVM_X86_QUIRK_SLOT_ZAP_ALL` was disabled on this VM (`option no-slot-zap-all`).
    slot_zap_all_off: bool,
    /// What each plain slot's memory of the case turned out to be (checked in smaps).
    plain_backing: Vec<UserBacking>,
}

/// Time spent in set-up, steps and reset, summed over cases (where a case's time goes).
pub static PHASE_NANOS: [std::sync::atomic::AtomicU64; 3] =
    [std::sync::atomic::AtomicU64::new(0), std::sync::atomic::AtomicU64::new(0), std::sync::atomic::AtomicU64::new(0)];

/// Time per op kind (guest batches under their first op's kind), and in the view's reading
/// (the last slot): where a step's time goes, for `fuzz --json`'s summary.
pub static OP_NANOS: [std::sync::atomic::AtomicU64; OpKind::ALL.len() + 1] =
    [const { std::sync::atomic::AtomicU64::new(0) }; OpKind::ALL.len() + 1];

fn count_time(slot: usize, since: Instant) {
    OP_NANOS[slot].fetch_add(since.elapsed().as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
}

/// A pre-fault is looked at this often, and given up (EINTR) after this long with no page done.
const PREFAULT_TICK: Duration = Duration::from_millis(100);
const PREFAULT_STALL: Duration = Duration::from_millis(300);

/// The largest attribute range a generated case sets on a real kernel (4M pages), and in the
/// lab (16K pages, as pre-faults): Linux stores attributes page by page, and under TCG a 16G
/// conversion costs seconds; a few such ops were half a lab campaign's time, and ranges from
/// 64M to 1G still a third. Larger ranges stay on the model, in scenarios and on a host.
const MAX_ATTR_RANGE: u64 = 16 << 30;
const MAX_ATTR_RANGE_LAB: u64 = 64 << 20;
/// The largest range a generated case pre-faults on a real kernel.
const MAX_PREFAULT: u64 = 64 << 20;

/// The CPU's physical address width, from /proc/cpuinfo (`address sizes : 40 bits physical`).
fn cpu_phys_bits() -> Option<u8> {
    let s = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let l = s.lines().find(|l| l.starts_with("address sizes"))?;
    l.split(':').nth(1)?.split_whitespace().next()?.parse().ok()
}

/// Privmem is the lab VM's init: the machine is disposable.
fn in_lab() -> bool {
    std::process::id() == 1
}

/// Guest accesses and host accesses of guest memory.
fn is_access(op: &Op) -> bool {
    op.kind().is_guest() || matches!(op, Op::HostRead { .. } | Op::HostWrite { .. })
}

/// Whether a slot binds guest_memfd past the file's end (`offset + size` beyond it, or
/// wrapping): Linux 6.18 accepts some such bindings (a signed `offset + size > i_size`), and
/// memory behind them is nobody's to touch on a shared host.
fn binds_past_file(h: &Header, s: &SlotSpec) -> bool {
    let Some(b) = &s.gmem else { return false };
    let file = h.gmems.iter().find(|g| g.name == b.gmem).map(|g| g.size).unwrap_or(0);
    b.offset.checked_add(s.size).is_none_or(|e| e > file)
}

/// A slot-add step's slot, if the step is one.
fn added_slot(op: &Op) -> Option<&SlotSpec> {
    match op {
        Op::SlotAdd(s) => Some(s),
        _ => None,
    }
}

/// Whether any slot of the sequence, in its header or added by a step, binds past its file.
fn past_file_binding(seq: &Sequence) -> bool {
    let h = &seq.header;
    h.slots.iter().chain(seq.steps.iter().filter_map(|st| added_slot(&st.op))).any(|s| binds_past_file(h, s))
}

/// The most PRIVATE pages a reset sets back to shared before it prefers a fresh VM.
const RESET_ATTR_PAGES: u64 = 16384;

pub struct KvmBackend {
    kvm: Kvm,
    pub caps: Caps,
    vm: Option<VmState>,
    /// Reuse one VM across cases (else a fresh VM per case).
    pub reuse: bool,
    pub timeout: Duration,
    pub fresh_vms: u64,
    watchdog: Watchdog,
    /// The footing check's verdict, taken before the first run.
    footing: Option<Result<(), String>>,
    /// The kernel's mapping view (tracefs), and why there is none where there is none.
    view: Option<TraceView>,
    pub view_error: Option<String>,
    /// The kernel's own reports (/dev/kmsg), where this process may read them.
    kmsg: Option<kmsg::Kmsg>,
    /// The kernel's coverage of this thread (KCOV), where the kernel has it.
    kcov: Option<kcov::Kcov>,
    /// The GPA width memslots may reach: `kvm_mmu_max_gfn()` is the CPU's physical address
    /// width with TDP (the lab), 52 bits with shadow paging (this host).
    max_gpa_bits: Option<u8>,
}

fn errno_of(e: i32) -> Outcome {
    Outcome::Err(Errno::from_value(e).unwrap_or(Errno::EIO))
}

impl KvmBackend {
    /// Which kernel this is and which the model runs as, in words.
    pub fn kernel_words(&self) -> String {
        match self.caps.kernel {
            Some(k) => format!("kernel: Linux {}, modelled as {}", self.caps.release, k.name()),
            None => format!(
                "kernel: Linux {}, older than every modelled kernel; modelled as each scenario says",
                self.caps.release
            ),
        }
    }

    /// A backend with the kernel's mapping view where the host has one.
    pub fn open() -> Result<KvmBackend, String> {
        Self::open_with(true)
    }

    /// `view: false` runs without the mapping view (the baseline of `bench --backend lab`).
    pub fn open_with(view: bool) -> Result<KvmBackend, String> {
        let kvm = Kvm::new().map_err(|e| format!("/dev/kvm: {e}"))?;
        Ok(KvmBackend {
            kvm,
            caps: Caps::probe(),
            vm: None,
            reuse: true,
            // The window a guest batch may go without progress: the lab (privmem as PID 1,
            // nested KVM under TCG) runs guests some fifty times slower than a real host.
            timeout: Duration::from_secs(if std::process::id() == 1 { 10 } else { 2 }),
            fresh_vms: 0,
            watchdog: Watchdog::new(),
            footing: None,
            view: None,
            view_error: if view { None } else { Some("turned off (--no-view)".into()) },
            kmsg: kmsg::Kmsg::open().ok(),
            kcov: kcov::Kcov::open().ok(),
            max_gpa_bits: match trace::host_mmu() {
                Mmu::Tdp => cpu_phys_bits(),
                Mmu::Shadow => Some(52),
            },
        }
        .with_view())
    }

    /// Open the kernel's mapping view: a tracefs instance limited to this thread, or to every
    /// task when privmem is the lab's PID 1 (nothing else runs VMs there). `PRIVMEM_VIEW=off`
    /// turns it off.
    fn with_view(mut self) -> KvmBackend {
        if self.view_error.is_some() {
            return self;
        }
        if std::env::var("PRIVMEM_VIEW").is_ok_and(|v| v == "off") {
            self.view_error = Some("turned off (PRIVMEM_VIEW=off)".into());
            return self;
        }
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let pid = (std::process::id() != 1).then_some(tid);
        match TraceView::open(pid) {
            Ok(v) => self.view = Some(v),
            Err(e) => self.view_error = Some(e),
        }
        self
    }

    /// Whether the backend records kernel coverage (KCOV).
    pub fn has_coverage(&self) -> bool {
        self.kcov.is_some()
    }

    /// Which view of the kernel's mappings this backend has, in words.
    pub fn view_name(&self) -> String {
        match (&self.view, &self.view_error) {
            (Some(v), _) if v.mmu == Mmu::Tdp => "tracefs, TDP MMU (every leaf, exact)".into(),
            (Some(_), _) => "tracefs, shadow MMU (leaves installed per step; zaps are not traced)".into(),
            (None, Some(e)) => format!("none: {e}"),
            (None, None) => "none".into(),
        }
    }

    /// What the kernel says after step `i`: its mappings, and any report it printed.
    fn observe(&mut self, t: &mut RealTrace, i: usize) {
        t.views[i] = self.step_view();
        if let Some(k) = self.kmsg.as_mut() {
            t.splats.extend(k.splats().into_iter().map(|s| (i, s)));
        }
    }

    /// The view after a step (None where the backend has none).
    fn step_view(&mut self) -> Option<StepView> {
        let v = self.view.as_mut()?;
        v.drain();
        let limit = HARNESS_GPA >> 12;
        match v.mmu {
            Mmu::Tdp => v.leaves(limit).map(StepView::Leaves),
            Mmu::Shadow => v.take_installed(limit).map(StepView::Installed),
        }
    }

    fn fresh_vm(&mut self, vm_type: VmType, slot_zap_all_off: bool) -> Result<VmState, RunError> {
        self.fresh_vms += 1;
        if let Some(v) = self.view.as_mut() {
            v.reset();
        }
        let vm = self
            .kvm
            .create_vm_with_type(vm_type.kvm_type())
            .map_err(|e| RunError::Setup(format!("KVM_CREATE_VM: {e}")))?;
        if slot_zap_all_off {
            let cap = kvm_bindings::kvm_enable_cap {
                cap: kvm_bindings::KVM_CAP_DISABLE_QUIRKS2,
                args: [kvm_bindings::KVM_X86_QUIRK_SLOT_ZAP_ALL as u64, 0, 0, 0],
                ..Default::default()
            };
            vm.enable_cap(&cap).map_err(|e| RunError::Setup(format!("KVM_CAP_DISABLE_QUIRKS2: {e}")))?;
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
            vm.enable_cap(&cap).map_err(|e| RunError::Setup(format!("KVM_CAP_EXIT_HYPERCALL: {e}")))?;
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
        unsafe { vm.set_user_memory_region2(region) }.map_err(|e| RunError::Setup(format!("harness slot: {e}")))?;
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
            private: RangeSet::default(),
            slots: BTreeMap::new(),
            gmems: Vec::new(),
            cases: 0,
            slot_zap_all_off,
            plain_backing: Vec::new(),
        })
    }

    /// A VM of the right type with `n` vCPUs at the start of the command loop.
    fn prepare(&mut self, vm_type: VmType, n: u32, slot_zap_all_off: bool) -> Result<(), RunError> {
        // A VM with fewer vCPUs is replaced: new vCPUs would touch harness pages after the
        // baseline was taken.
        // On VMs with private memory the lab's kernel showed state surviving the reset (the
        // memory-fault flags of a slot-less private GFN changed with what an earlier case had
        // done: a cached MMIO SPTE outlives slot deletions). Page counters cannot see that, so
        // such VMs are reused only where the view sees every SPTE (TDP MMU) and the reset then
        // proves that no leaf and no MMIO SPTE of the case is left; else a fresh VM per case.
        let proved = self.view.as_ref().is_some_and(|v| v.mmu == Mmu::Tdp);
        let reusable = self.reuse
            && (vm_type == VmType::Default || (vm_type == VmType::SwProtected && proved))
            && self.vm.as_ref().is_some_and(|s| {
                s.vm_type == vm_type && s.vcpus.len() >= n as usize && s.slot_zap_all_off == slot_zap_all_off
            });
        if !reusable {
            self.vm = None;
            self.vm = Some(self.fresh_vm(vm_type, slot_zap_all_off)?);
        }
        let st = self.vm.as_mut().expect("just set");
        while st.vcpus.len() < n as usize {
            let v = st.vcpus.len() as u64;
            let vcpu = st.vm.create_vcpu(v).map_err(|e| RunError::Setup(format!("KVM_CREATE_VCPU: {e}")))?;
            // CPL0 in the lab, where it runs properly (and the guest's hypercall needs it);
            // CPL3 on a host, where CPL0 code is emulated and reads the userspace address.
            guest::init_vcpu(&self.kvm, &vcpu, v, in_lab()).map_err(|e| RunError::Setup(format!("vCPU init: {e}")))?;
            st.vcpus.push(vcpu);
        }
        for (v, vcpu) in st.vcpus.iter().enumerate() {
            guest::reset_regs(vcpu, v as u64).map_err(|e| RunError::Setup(format!("KVM_SET_REGS: {e}")))?;
        }
        Ok(())
    }

    /// Delete the case's slots and close its guest_memfd files; keep the VM only if the reset
    /// is proved clean: the page counters are exactly what they are with only the harness
    /// mapped (or, where deleting a slot zaps every root, with nothing mapped), so no leaf of
    /// the case survived.
    fn reset(&mut self, clean_run: bool) {
        let Some(st) = self.vm.as_mut() else { return };
        let ids: Vec<u32> = st.slots.keys().copied().collect();
        let mut ok = clean_run;
        for id in ids {
            let r = kvm_userspace_memory_region2 { slot: id, ..Default::default() };
            // SAFETY: deleting a slot; no memory is handed to KVM.
            ok &= unsafe { st.vm.set_user_memory_region2(r) }.is_ok();
            st.harness_warm &= !st.zaps_all;
        }
        st.slots.clear();
        st.gmems.clear();
        st.cases += 1;
        // Past this many pages a fresh VM is cheaper than setting them back (measured in the
        // lab: 0.7 µs a page against 15 ms a fresh VM).
        let private_pages: u64 = st.private.iter().map(|(s, e)| (e - s) >> 12).sum();
        let small = private_pages <= RESET_ATTR_PAGES;
        ok &= small;
        for (address, end) in std::mem::take(&mut st.private).iter().filter(|_| small) {
            let a = kvm_bindings::kvm_memory_attributes { address, size: end - address, attributes: 0, flags: 0 };
            ok &= st.vm.set_memory_attributes(a).is_ok();
        }
        // MMIO SPTEs of slot-less GFNs are not leaves and survive the slot deletions above
        // (6.12 zaps every root on a slot deletion for default VMs only). On a default VM a
        // later slot there bumps the MMIO generation and they are refaulted; on a VM with
        // private memory they would keep answering MMIO for a GFN converted to private, so such
        // a VM is kept only if the view below proves none is left (`prepare`).
        let expected = if st.harness_warm { st.baseline } else { st.post_zap };
        let now = st.stats.as_ref().and_then(|s| s.pages());
        ok &= expected.is_some() && now == expected;
        // Where the view sees every leaf (TDP MMU), it proves the reset too: no leaf of the
        // case's memory is left.
        if let Some(v) = self.view.as_mut().filter(|v| v.mmu == Mmu::Tdp) {
            v.drain();
            ok &= !v.lost() && !v.any_left_below(HARNESS_GPA >> 12);
        }
        if !ok || !self.reuse {
            self.vm = None;
        }
    }

    fn gmem_create(st: &mut VmState, g: &GmemDecl) -> Result<(), i32> {
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

    fn slot_add(st: &mut VmState, h: &Header, s: &SlotSpec) -> Outcome {
        let gmem = s.gmem.as_ref().and_then(|b| h.gmems.iter().position(|g| g.name == b.gmem).map(|i| (i, b.offset)));
        let mut flags = if s.readonly { raw::KVM_MEM_READONLY } else { 0 };
        let (mut anon, mut uaddr) = (None, 0);
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
                st.harness_warm &= !st.zaps_all;
                Outcome::Ok
            }
            Ok(()) => {
                st.slots.insert(s.id, RSlot { gpa: s.gpa, size: s.size, flags, uaddr, anon, gmem });
                Outcome::Ok
            }
            Err(e) => errno_of(e.errno()),
        }
    }

    fn slot_region(id: u32, sl: &RSlot, gpa: u64, size: u64, st: &VmState) -> kvm_userspace_memory_region2 {
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

    /// The host's view of the page at `gpa`: (mapping, offset).
    fn host_view(st: &VmState, gpa: u64) -> Option<(&Mapping, u64)> {
        let (_, sl) = st.slots.iter().find(|(_, sl)| gpa >= sl.gpa && gpa < sl.gpa + sl.size)?;
        let off = (gpa & !0xfff) - sl.gpa + VALUE_OFFSET;
        if let Some(m) = &sl.anon {
            return Some((m, off));
        }
        let (fi, goff) = sl.gmem?;
        Some((st.gmems[fi].map.as_ref()?, goff + off))
    }

    fn punch(st: &VmState, addr: u64, size: u64, keep_size: bool) -> Outcome {
        // Resolve the page-rounded range through the slots first (as the model does), in
        // pages: a range that ends at the top of the address space must not wrap.
        let s = addr / 4096;
        let e = addr.saturating_add(size.max(1)).div_ceil(4096);
        let mut pieces = Vec::new();
        let mut at = s;
        while at < e {
            let Some((_, sl)) = st
                .slots
                .iter()
                .find(|(_, sl)| at >= sl.gpa / 4096 && at < (sl.gpa + sl.size) / 4096 && sl.gmem.is_some())
            else {
                return Outcome::Err(Errno::ENOENT);
            };
            let end = e.min((sl.gpa + sl.size) / 4096);
            let (fi, off) = sl.gmem.expect("filtered");
            pieces.push((fi, off + (at * 4096 - sl.gpa), (end - at) * 4096));
            at = end;
        }
        let s = s * 4096;
        let Some(&(first_fi, first_off, _)) = pieces.first() else {
            return Outcome::Err(Errno::ENOENT);
        };
        let aligned = addr.is_multiple_of(4096) && size.is_multiple_of(4096) && size > 0;
        if !aligned || !keep_size {
            // Let the kernel judge the exact arguments.
            let off = first_off + (addr - s);
            return match raw::punch_hole(st.gmems[first_fi].fd.as_raw_fd(), off, size, keep_size) {
                Ok(()) => Outcome::Ok,
                Err(e) => errno_of(e),
            };
        }
        for (fi, off, len) in pieces {
            if let Err(e) = raw::punch_hole(st.gmems[fi].fd.as_raw_fd(), off, len, true) {
                return errno_of(e);
            }
        }
        Outcome::Ok
    }

    fn host_op(&mut self, h: &Header, op: &Op) -> Observed {
        let st = self.vm.as_mut().expect("prepared");
        let o = match op {
            Op::SlotAdd(s) => Self::slot_add(st, h, s),
            Op::SlotDelete { id } => {
                let r = kvm_userspace_memory_region2 { slot: *id, ..Default::default() };
                // SAFETY: deleting a slot.
                match unsafe { st.vm.set_user_memory_region2(r) } {
                    Ok(()) => {
                        st.slots.remove(id);
                        st.harness_warm &= !st.zaps_all;
                        Outcome::Ok
                    }
                    Err(e) => errno_of(e.errno()),
                }
            }
            Op::SlotMove { id, gpa } => match st.slots.get(id) {
                None => Outcome::Err(Errno::ENOENT),
                Some(sl) => {
                    let r = Self::slot_region(*id, sl, *gpa, sl.size, st);
                    // SAFETY: same userspace memory, new GPA.
                    match unsafe { st.vm.set_user_memory_region2(r) } {
                        Ok(()) => {
                            st.slots.get_mut(id).expect("present").gpa = *gpa;
                            st.harness_warm &= !st.zaps_all;
                            Outcome::Ok
                        }
                        Err(e) => errno_of(e.errno()),
                    }
                }
            },
            Op::Private { addr, size } | Op::Shared { addr, size } => {
                let attributes = if matches!(op, Op::Private { .. }) { 1 << 3 } else { 0 };
                let a = kvm_bindings::kvm_memory_attributes { address: *addr, size: *size, attributes, flags: 0 };
                match st.vm.set_memory_attributes(a) {
                    Ok(()) => {
                        st.private.set(*addr, addr.saturating_add(*size), attributes != 0);
                        Outcome::Ok
                    }
                    Err(e) => errno_of(e.errno()),
                }
            }
            Op::Punch { addr, size, keep_size } => Self::punch(st, *addr, *size, *keep_size),
            Op::Prefault { vcpu, addr, size } => {
                // The kernel's pre-fault loop stops on a signal and nowhere else: with progress
                // it returns 0 with the range advanced, without any -EINTR. A tick of signals
                // measures progress; a pre-fault that makes none for PREFAULT_STALL (6.12 on an
                // obsolete root, found by the lab) is an EINTR outcome, not a hung lab, and
                // costs a second, not a whole guest window.
                let (mut gpa, mut left) = (*addr, *size);
                let mut stalled = Duration::ZERO;
                loop {
                    self.watchdog.arm(PREFAULT_TICK);
                    let r = raw::pre_fault(&st.vcpus[*vcpu as usize], gpa, left);
                    self.watchdog.disarm();
                    match r {
                        Ok((_, 0)) => break Outcome::Ok,
                        Ok((g, l)) => {
                            (gpa, left, stalled) = (g, l, Duration::ZERO);
                        }
                        Err(e) if e == libc::EINTR && stalled < PREFAULT_STALL => stalled += PREFAULT_TICK,
                        Err(e) => break errno_of(e),
                    }
                }
            }
            Op::HostWrite { addr, value } => match Self::host_view(st, *addr) {
                Some((m, off)) => {
                    m.write_u64(off, *value);
                    Outcome::Ok
                }
                None => Outcome::Err(Errno::EFAULT),
            },
            Op::HostRead { addr } => match Self::host_view(st, *addr) {
                Some((m, off)) => Outcome::Value(m.read_u64(off)),
                None => Outcome::Err(Errno::EFAULT),
            },
            Op::ExpectPages { .. } => {
                let harness = if st.harness_warm { st.baseline } else { st.post_zap };
                return match st.stats.as_ref().and_then(|s| s.pages()).zip(harness) {
                    // Less the harness's own mappings.
                    Some((p, b)) => Observed::Pages([
                        p[0].saturating_sub(b[0]),
                        p[1].saturating_sub(b[1]),
                        p[2].saturating_sub(b[2]),
                    ]),
                    None => Observed::NotChecked,
                };
            }
            Op::ExpectSept { .. } => return Observed::NotChecked,
            Op::GmemCreate { decl, raw } => {
                let flags = *raw
                    | if decl.mmap { raw::GUEST_MEMFD_FLAG_MMAP } else { 0 }
                    | if decl.init_shared { raw::GUEST_MEMFD_FLAG_INIT_SHARED } else { 0 };
                let args = kvm_create_guest_memfd { size: decl.size, flags, ..Default::default() };
                match st.vm.create_guest_memfd(args) {
                    Ok(fd) => {
                        // SAFETY: the kernel just handed us this fd.
                        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                        // Named for `fallocate`; slots bind header files only.
                        st.gmems.push(RGmem { fd, decl: decl.clone(), map: None });
                        Outcome::Ok
                    }
                    Err(e) => errno_of(e.errno()),
                }
            }
            Op::Fallocate { gmem, offset, len, punch, keep_size } => {
                // A name the case never created is fd -1: the kernel's EBADF, as the model says.
                let fd = st.gmems.iter().rev().find(|g| g.decl.name == *gmem).map(|g| g.fd.as_raw_fd()).unwrap_or(-1);
                let mode = if *keep_size { libc::FALLOC_FL_KEEP_SIZE } else { 0 }
                    | if *punch { libc::FALLOC_FL_PUNCH_HOLE } else { 0 };
                // SAFETY: fallocate(2) on an fd of ours (or -1); no memory is passed.
                if unsafe { libc::fallocate(fd, mode, *offset as i64, *len as i64) } == 0 {
                    Outcome::Ok
                } else {
                    errno_of(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))
                }
            }
            // Refused by `unsupported` before the run.
            _ => Outcome::Err(Errno::ENOSYS),
        };
        Observed::Outcome(o)
    }

    /// Userspace's handling of KVM_HC_MAP_GPA_RANGE, as the selftests' and the model's: set the
    /// attributes, then drop the side the range left (punch guest_memfd going shared, zero the
    /// shared memory going private). Returns the hypercall's return for the guest.
    fn map_gpa_exit(st: &mut VmState, m: guest::MapGpaExit) -> u64 {
        let private = m.attrs & MAP_GPA_ENCRYPTED != 0;
        let Some(end) = m.pages.checked_mul(4096).and_then(|len| m.gpa.checked_add(len)) else {
            return -(libc::EINVAL as i64) as u64;
        };
        let a = kvm_bindings::kvm_memory_attributes {
            address: m.gpa,
            size: end - m.gpa,
            attributes: if private { 1 << 3 } else { 0 },
            flags: 0,
        };
        if let Err(e) = st.vm.set_memory_attributes(a) {
            return -(e.errno() as i64) as u64;
        }
        st.private.set(m.gpa, end, private);
        for sl in st.slots.values() {
            let (s, e) = (m.gpa.max(sl.gpa), end.min(sl.gpa + sl.size));
            if s >= e {
                continue;
            }
            match (private, sl.gmem, &sl.anon) {
                (false, Some((fi, off)), _) => {
                    let _ = raw::punch_hole(st.gmems[fi].fd.as_raw_fd(), off + (s - sl.gpa), e - s, true);
                }
                (true, _, Some(anon)) => {
                    for p in (s..e).step_by(4096) {
                        anon.write_u64(p - sl.gpa + VALUE_OFFSET, 0);
                    }
                }
                _ => {}
            }
        }
        0
    }

    /// Run consecutive guest ops of one vCPU as one batch.
    fn guest_batch(&mut self, v: u32, ops: &[(usize, &Op)], t: &mut RealTrace) -> Result<(), RunError> {
        let st = self.vm.as_mut().expect("prepared");
        let cmd = CMD_OFF + v as u64 * CMD_STRIDE;
        let res = cmd + 0x1000;
        for (i, (_, op)) in ops.iter().enumerate() {
            let (code, addr, value, attrs) = match **op {
                Op::Read { addr, .. } => (OP_READ, (addr & !0xfff) + VALUE_OFFSET, 0, 0),
                Op::Write { addr, value, .. } => (OP_WRITE, (addr & !0xfff) + VALUE_OFFSET, value, 0),
                Op::Touch { addr, .. } => (OP_TOUCH, (addr & !0xfff) + VALUE_OFFSET, 0, 0),
                // The GPA as it is (KVM checks its alignment), the size in pages.
                Op::MapGpa { addr, size, private, .. } => {
                    (OP_MAP_GPA, addr, size / 4096, if private { MAP_GPA_ENCRYPTED } else { 0 })
                }
                _ => return Err(RunError::Unsupported(format!("guest op `{}` on this guest", text::print_op(op)))),
            };
            let c = cmd + CMD_FIRST + i as u64 * CMD_SIZE;
            st.harness.write_u64(c, code);
            st.harness.write_u64(c + 8, addr);
            st.harness.write_u64(c + 16, value);
            st.harness.write_u64(c + 24, attrs);
            st.harness.write_u64(res + i as u64 * RES_SIZE, 0);
        }
        st.harness.write_u64(cmd, ops.len() as u64);
        let n = ops.len() as u64;
        let first = ops.first().map(|o| o.0).unwrap_or(0);
        let (mut exits, mut runs) = (Vec::new(), 0);
        loop {
            let harness = &st.harness;
            let done = || (0..n).filter(|i| harness.read_u64(res + i * RES_SIZE) == ST_DONE).count() as u64;
            let r = guest::run_batch(&mut st.vcpus[v as usize], n, self.timeout, &self.watchdog, done);
            match r {
                Ok((e, r)) => {
                    exits.extend(e);
                    runs += r;
                    break;
                }
                Err(BatchError::MapGpa(m, e, r)) => {
                    exits.extend(e);
                    runs += r;
                    // Userspace's half of the guest's MapGPA: convert, answer, run on.
                    let ret = Self::map_gpa_exit(st, m);
                    // The exit was KVM_EXIT_HYPERCALL, so `hypercall` is the union's live field; KVM
                    // reads `ret` back into the guest's rax on the next run.
                    st.vcpus[v as usize].get_kvm_run().__bindgen_anon_1.hypercall.ret = ret;
                }
                Err(BatchError::Timeout) => return Err(RunError::Timeout { step: first }),
                Err(BatchError::Guest(d)) => return Err(RunError::Guest { step: first, detail: d }),
            }
        }
        t.exits += runs;
        t.guest_ops += ops.len() as u64;
        st.harness_warm = true;
        for (i, (step, op)) in ops.iter().enumerate() {
            let o = match exits.iter().find(|(k, _)| *k == i as u64) {
                Some((_, CmdExit::Mmio)) => Outcome::Exit(Exit::Mmio),
                Some((_, CmdExit::MemoryFault { private })) => Outcome::Exit(Exit::MemoryFault { private: *private }),
                None => {
                    let status = st.harness.read_u64(res + i as u64 * RES_SIZE);
                    if status != ST_DONE {
                        return Err(RunError::Guest { step: *step, detail: format!("command {i} status {status:#x}") });
                    }
                    let value = st.harness.read_u64(res + i as u64 * RES_SIZE + 8);
                    match op {
                        Op::Read { .. } => Outcome::Value(value),
                        // The hypercall's return: 0, or a negative KVM errno.
                        Op::MapGpa { .. } if value != 0 => errno_of((value as i64).unsigned_abs() as i32),
                        _ => Outcome::Ok,
                    }
                }
            };
            t.observed[*step] = Observed::Outcome(o);
        }
        Ok(())
    }

    /// Run a guest that never returns (the guest's spin command) and report what the backend
    /// made of it: the per-case timeout must fire, and the next case must run on a fresh VM.
    pub fn self_test_timeout(&mut self) -> Result<RunError, String> {
        self.prepare(VmType::Default, 1, false).map_err(|e| e.to_string())?;
        self.ensure_baseline().map_err(|e| e.to_string())?;
        let st = self.vm.as_mut().expect("prepared");
        st.harness.write_u64(CMD_OFF + CMD_FIRST, OP_SPIN);
        st.harness.write_u64(CMD_OFF, 1);
        let harness = &st.harness;
        let done = || (harness.read_u64(CMD_OFF + 0x1000) == ST_DONE) as u64;
        let r = guest::run_batch(&mut st.vcpus[0], 1, self.timeout, &self.watchdog, done);
        let e = match r {
            Err(BatchError::Timeout) => RunError::Timeout { step: 0 },
            Err(BatchError::Guest(d)) => RunError::Guest { step: 0, detail: d },
            Err(BatchError::MapGpa(..)) => {
                RunError::Guest { step: 0, detail: "a MapGPA exit from the spinning guest".into() }
            }
            Ok(_) => return Err("the spinning guest returned".into()),
        };
        self.reset(false);
        Ok(e)
    }

    /// Prove the ground the backend stands on: the guest reads guest_memfd, not the userspace
    /// address of a guest_memfd slot (different patterns in each), and a punched page reads
    /// zero. `Err` names what the guest saw instead.
    pub fn footing(&mut self) -> Result<(), String> {
        if let Some(r) = &self.footing {
            return r.clone();
        }
        let r = self.check_footing();
        self.footing = Some(r.clone());
        r
    }

    fn check_footing(&mut self) -> Result<(), String> {
        const GPA: u64 = 0x1_0000_0000;
        const IN_GMEM: u64 = 0x600d_0000_0000_f00d;
        const IN_UADDR: u64 = 0xbad0_0000_0000_0b0b;
        if !self.caps.guest_memfd || self.caps.guest_memfd_flags & 3 != 3 {
            // Nothing on this host can put a guest_memfd page in front of the guest.
            return Ok(());
        }
        self.prepare(VmType::Default, 1, false).map_err(|e| e.to_string())?;
        self.ensure_baseline().map_err(|e| e.to_string())?;
        let st = self.vm.as_mut().expect("prepared");
        let g = GmemDecl { name: "footing".into(), size: 2 << 20, huge: false, mmap: true, init_shared: true };
        Self::gmem_create(st, &g).map_err(|e| format!("KVM_CREATE_GUEST_MEMFD: errno {e}"))?;
        let anon = Mapping::anon(2 << 20).map_err(|e| e.to_string())?;
        anon.write_u64(VALUE_OFFSET, IN_UADDR);
        let gm = st.gmems[0].map.as_ref().ok_or("guest_memfd mmap failed")?;
        gm.write_u64(VALUE_OFFSET, IN_GMEM);
        let region = kvm_userspace_memory_region2 {
            slot: 0,
            flags: raw::KVM_MEM_GUEST_MEMFD,
            guest_phys_addr: GPA,
            memory_size: 2 << 20,
            userspace_addr: anon.addr(),
            guest_memfd_offset: 0,
            guest_memfd: st.gmems[0].fd.as_raw_fd() as u32,
            ..Default::default()
        };
        // SAFETY: `anon` lives in the RSlot until the reset deletes the slot.
        unsafe { st.vm.set_user_memory_region2(region) }.map_err(|e| format!("guest_memfd slot: {e}"))?;
        st.slots.insert(
            0,
            RSlot {
                gpa: GPA,
                size: 2 << 20,
                flags: region.flags,
                uaddr: anon.addr(),
                anon: Some(anon),
                gmem: Some((0, 0)),
            },
        );
        let read = Op::Read { vcpu: 0, addr: GPA, shared: false };
        let mut t = RealTrace { observed: vec![Observed::NotChecked], ..Default::default() };
        let verdict = (|| {
            self.guest_batch(0, &[(0, &read)], &mut t).map_err(|e| e.to_string())?;
            match t.observed[0] {
                Observed::Outcome(Outcome::Value(IN_GMEM)) => {}
                Observed::Outcome(Outcome::Value(IN_UADDR)) => {
                    return Err(format!(
                        "the guest read the slot's userspace address ({IN_UADDR:#x}), not guest_memfd ({IN_GMEM:#x}): \
                         guest code is being emulated (CPL0?)"
                    ))
                }
                ref o => return Err(format!("the guest read {o:?} where guest_memfd holds {IN_GMEM:#x}")),
            }
            let st = self.vm.as_ref().expect("prepared");
            raw::punch_hole(st.gmems[0].fd.as_raw_fd(), 0, 4096, true).map_err(|e| format!("punch: errno {e}"))?;
            self.guest_batch(0, &[(0, &read)], &mut t).map_err(|e| e.to_string())?;
            match t.observed[0] {
                Observed::Outcome(Outcome::Value(0)) => Ok(()),
                ref o => Err(format!("a punched guest_memfd page read {o:?}, not zero")),
            }
        })();
        self.reset(verdict.is_ok());
        verdict
    }

    /// On a fresh VM, learn the page counters a clean reset returns to: with the harness warm
    /// (`baseline`), and right after a slot deletion (`post_zap`; on a shadow-paging host that
    /// zaps every root, the harness's leaves included).
    fn ensure_baseline(&mut self) -> Result<(), RunError> {
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
    fn scratch_slot_cycle(st: &mut VmState) -> Result<(), RunError> {
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
            unsafe { st.vm.set_user_memory_region2(r) }.map_err(|e| RunError::Setup(format!("scratch slot: {e}")))?;
        }
        Ok(())
    }

    /// Let every vCPU run one command against the harness's own memory, so that the code,
    /// command and result pages (and whatever KVM prefetches around them) are mapped; then
    /// record the page counters as the baseline a clean reset returns to.
    fn warm_up(&mut self) -> Result<(), RunError> {
        let n = self.vm.as_ref().map(|s| s.vcpus.len()).unwrap_or(0);
        for v in 0..n {
            let warm = Op::Read { vcpu: v as u32, addr: HARNESS_GPA + CODE_OFF, shared: false };
            let mut t = RealTrace { observed: vec![Observed::NotChecked], ..Default::default() };
            self.guest_batch(v as u32, &[(0, &warm)], &mut t)?;
            if t.observed[0] == Observed::Outcome(Outcome::Exit(Exit::Mmio)) {
                return Err(RunError::Setup("the guest cannot read its own code page".into()));
            }
        }
        let st = self.vm.as_mut().expect("prepared");
        st.baseline = st.stats.as_ref().and_then(|s| s.pages());
        for (v, vcpu) in st.vcpus.iter().enumerate() {
            guest::reset_regs(vcpu, v as u64).map_err(|e| RunError::Setup(format!("KVM_SET_REGS: {e}")))?;
        }
        Ok(())
    }

    fn run_steps(&mut self, seq: &Sequence) -> Result<RealTrace, RunError> {
        let h = &seq.header;
        let st = self.vm.as_mut().expect("prepared");
        st.plain_backing.clear();
        for g in &h.gmems {
            Self::gmem_create(st, g)
                .map_err(|e| RunError::Setup(format!("gmem {}: KVM_CREATE_GUEST_MEMFD: errno {e}", g.name)))?;
        }
        for s in &h.slots {
            if let Outcome::Err(e) = Self::slot_add(st, h, s) {
                return Err(RunError::Setup(format!("slot {}: {}", s.id, e.name())));
            }
        }
        let mut t = RealTrace {
            observed: vec![Observed::NotChecked; seq.steps.len()],
            views: vec![None; seq.steps.len()],
            ..Default::default()
        };
        // The header's slots are in place: what the kernel mapped so far is not the case's.
        let _ = self.step_view();
        // Reports before the first step (slot set-up) count against the first.
        if let Some(k) = self.kmsg.as_mut() {
            t.splats.extend(k.splats().into_iter().map(|s| (0, s)));
        }
        let mut i = 0;
        while i < seq.steps.len() {
            let op = &seq.steps[i].op;
            if op.kind().is_guest() {
                let v = op.vcpu().expect("guest op");
                let mut batch = vec![(i, op)];
                while i + batch.len() < seq.steps.len() && batch.len() < MAX_BATCH as usize {
                    let next = &seq.steps[i + batch.len()].op;
                    if !next.kind().is_guest() || next.vcpu() != Some(v) {
                        break;
                    }
                    batch.push((i + batch.len(), next));
                }
                let n = batch.len();
                let t0 = Instant::now();
                self.guest_batch(v, &batch, &mut t)?;
                count_time(op.kind() as usize, t0);
                i += n;
                let t0 = Instant::now();
                self.observe(&mut t, i - 1);
                count_time(OP_NANOS.len() - 1, t0);
            } else {
                let t0 = Instant::now();
                t.observed[i] = self.host_op(h, op);
                count_time(op.kind() as usize, t0);
                let t0 = Instant::now();
                self.observe(&mut t, i);
                count_time(OP_NANOS.len() - 1, t0);
                i += 1;
            }
        }
        if self.view.as_mut().is_some_and(|v| v.check_lost()) {
            // Events were dropped somewhere in the case: no view of it is trustworthy.
            t.views_lost = t.views.iter().filter(|v| v.is_some()).count() as u64;
            t.views.iter_mut().for_each(|v| *v = None);
        }
        let st = self.vm.as_mut().expect("prepared");
        let plain = std::mem::take(&mut st.plain_backing);
        t.host = HostFacts {
            address_spaces: Some(self.caps.address_spaces.max(1)),
            // One fact for all plain slots of the case: where they differ, the host's choice.
            plain: match plain.split_first() {
                Some((first, rest)) if rest.iter().all(|b| b == first) => *first,
                _ => UserBacking::Unknown,
            },
            gmem_shared: mem::shmem_backing(),
            phys_bits: self.max_gpa_bits,
        };
        Ok(t)
    }
}

impl Backend for KvmBackend {
    fn name(&self) -> &'static str {
        "kvm"
    }

    fn kernel(&self) -> Option<Kernel> {
        self.caps.kernel
    }

    fn unsupported(&self, seq: &Sequence) -> Option<String> {
        let h = &seq.header;
        let c = &self.caps;
        if !c.kvm {
            return Some(format!("/dev/kvm ({})", c.error.clone().unwrap_or_default()));
        }
        if c.vm_types & (1 << h.vm.kvm_type()) == 0 {
            return Some(format!("VM type {} ({}) in KVM_CAP_VM_TYPES", h.vm.kvm_type(), h.vm.name()));
        }
        if matches!(h.vm, VmType::Tdx | VmType::Snp) {
            return Some(format!("{} VM setup in the KVM backend (not built yet)", h.vm.name()));
        }
        if h.has(Knob::NoSlotZapAll) && c.quirks2 & kvm_bindings::KVM_X86_QUIRK_SLOT_ZAP_ALL as u64 == 0 {
            return Some("KVM_X86_QUIRK_SLOT_ZAP_ALL in KVM_CAP_DISABLE_QUIRKS2".into());
        }
        if past_file_binding(seq) && !in_lab() && seq.steps.iter().any(|st| is_access(&st.op)) {
            return Some(
                "memory accesses through a guest_memfd binding past the file's end on a shared host (the lab runs them)"
                    .into(),
            );
        }
        if h.vcpus as u64 > MAX_VCPUS {
            return Some(format!("more than {MAX_VCPUS} vCPUs in the guest's layout"));
        }
        if !h.gmems.is_empty() && !c.guest_memfd {
            return Some("KVM_CAP_GUEST_MEMFD".into());
        }
        if !h.gmems.is_empty() && h.vm == VmType::Default && c.guest_memfd_flags == 0 {
            // Before Linux 6.18 only VMs with private memory may bind guest_memfd.
            return Some("guest_memfd on a default VM (Linux 6.18+, KVM_CAP_GUEST_MEMFD_FLAGS)".into());
        }
        for g in &h.gmems {
            if g.huge {
                return Some("huge guest_memfd folios (no such guest_memfd flag in this kernel)".into());
            }
            if g.mmap && c.guest_memfd_flags & raw::GUEST_MEMFD_FLAG_MMAP == 0 {
                return Some("GUEST_MEMFD_FLAG_MMAP in KVM_CAP_GUEST_MEMFD_FLAGS".into());
            }
            if g.init_shared && c.guest_memfd_flags & raw::GUEST_MEMFD_FLAG_INIT_SHARED == 0 {
                return Some("GUEST_MEMFD_FLAG_INIT_SHARED in KVM_CAP_GUEST_MEMFD_FLAGS".into());
            }
        }
        for st in &seq.steps {
            match &st.op {
                Op::GmemCreate { decl, .. } if decl.huge => {
                    return Some("huge guest_memfd folios (no such guest_memfd flag in this kernel)".into())
                }
                Op::GmemCreate { .. } if !c.guest_memfd => return Some("KVM_CAP_GUEST_MEMFD".into()),
                Op::MapGpa { .. } if !in_lab() => {
                    return Some(
                        "map-gpa: the guest's hypercall needs CPL0, which runs properly in the lab only".into(),
                    )
                }
                // A scenario's expectations assume the upstream default (KVM_SMM: two address
                // spaces on default VMs); the model knows the host's, but the text does not.
                Op::SlotAdd(sl)
                    if crate::model::memslot::as_id(sl.id) > 0
                        && h.vm == VmType::Default
                        && c.address_spaces < 2
                        && st.expect.is_some() =>
                {
                    return Some(
                        "a second memslot address space (KVM_CAP_MULTI_ADDRESS_SPACE 2: CONFIG_KVM_SMM)".into(),
                    )
                }
                Op::Prefault { .. } if !c.pre_fault_memory => return Some("KVM_CAP_PRE_FAULT_MEMORY".into()),
                Op::Private { .. } | Op::Shared { .. } if c.memory_attributes & (1 << 3) == 0 => {
                    return Some("KVM_MEMORY_ATTRIBUTE_PRIVATE in KVM_CAP_MEMORY_ATTRIBUTES".into())
                }
                // A map-gpa only names its range; the guest does not touch it.
                op if op.kind().is_guest()
                    && !matches!(op, Op::MapGpa { .. })
                    && op.addr().is_some_and(|a| a >= IDENTITY_LIMIT) =>
                {
                    return Some(format!(
                        "guest addresses beyond the guest's {} GiB identity map",
                        IDENTITY_LIMIT >> 30
                    ));
                }
                _ => {}
            }
        }
        None
    }

    /// Drop what this host cannot run from a generated case: huge folios, pre-fault and
    /// attributes when the host lacks them, VM types it does not offer, addresses beyond the
    /// guest's identity map.
    fn adapt(&self, seq: &Sequence) -> Sequence {
        let c = &self.caps;
        let mut s = seq.clone();
        if c.vm_types & (1 << s.header.vm.kvm_type()) == 0 || matches!(s.header.vm, VmType::Tdx | VmType::Snp) {
            s.header.vm = VmType::Default;
        }
        for st in &mut s.steps {
            if let Op::GmemCreate { decl, .. } = &mut st.op {
                decl.huge = false;
            }
        }
        for g in &mut s.header.gmems {
            g.huge = false;
            if s.header.vm == VmType::Default && c.guest_memfd_flags & 3 == 3 {
                g.mmap |= g.init_shared;
            }
        }
        if s.header.vm == VmType::Default && (c.guest_memfd_flags == 0 || !c.guest_memfd) {
            // Before 6.18 a default VM cannot bind guest_memfd: plain slots instead, so the
            // case runs rather than being skipped whole.
            s.header.gmems.clear();
            s.header.slots.iter_mut().for_each(|sl| sl.gmem = None);
            s.steps.iter_mut().for_each(|st| {
                if let Op::SlotAdd(sl) = &mut st.op {
                    sl.gmem = None;
                }
            });
        }
        s.steps.retain(|st| match &st.op {
            // A pre-fault maps every page of its range: over a huge slot that is gigabytes of
            // page tables and memory, and minutes.
            Op::Prefault { size, .. } if *size > MAX_PREFAULT => false,
            Op::Prefault { .. } => c.pre_fault_memory,
            // Linux stores attributes page by page (6.12: an xa_reserve per page before
            // anything else): a range of 2^47 bytes is allocated until the lab kernel runs out
            // of memory and panics. Such ranges stay on the model.
            // A guest's map-gpa becomes the same conversion, done by the harness on its exit.
            Op::Private { size, .. } | Op::Shared { size, .. } | Op::MapGpa { size, .. }
                if *size > if in_lab() { MAX_ATTR_RANGE_LAB } else { MAX_ATTR_RANGE } =>
            {
                false
            }
            Op::Private { .. } | Op::Shared { .. } => c.memory_attributes & (1 << 3) != 0,
            op => {
                op.addr().is_none_or(|a| a < IDENTITY_LIMIT) || !op.kind().is_guest() || matches!(op, Op::MapGpa { .. })
            }
        });
        // On a shared host a case ends at a binding past the file's end: whether the kernel
        // takes it is the finding (6.18 does: corpus/known/kvm-gmem-binding-offset-overflow),
        // and nothing may touch memory behind it. In the lab everything after it runs too.
        if !in_lab() {
            let h = &s.header;
            if h.slots.iter().any(|sl| binds_past_file(h, sl)) {
                s.steps.retain(|st| !is_access(&st.op));
            }
            let h = &s.header;
            let first = s.steps.iter().position(|st| added_slot(&st.op).is_some_and(|sl| binds_past_file(h, sl)));
            if let Some(i) = first {
                s.steps.truncate(i + 1);
            }
        }
        crate::seq::gen::fixup(&mut s);
        s
    }

    fn run(&mut self, seq: &Sequence) -> Result<RealTrace, RunError> {
        if let Some(why) = self.unsupported(seq) {
            return Err(RunError::Unsupported(why));
        }
        if let Err(why) = self.footing() {
            return Err(RunError::Setup(format!("footing check failed, refusing to run: {why}")));
        }
        let t0 = Instant::now();
        if let Some(k) = self.kcov.as_mut() {
            k.start();
        }
        self.prepare(seq.header.vm, seq.header.vcpus, seq.header.has(Knob::NoSlotZapAll))?;
        self.ensure_baseline()?;
        // What the kernel reported while an earlier VM of another type went away is not this
        // case's: say so rather than blame the case (its own replay will show it again).
        for s in self.kmsg.as_mut().map(|k| k.splats()).unwrap_or_default() {
            eprintln!("privmem: kernel report between cases (an earlier VM's teardown): {}", s.title);
        }
        let t1 = Instant::now();
        let mut r = self.run_steps(seq);
        let t2 = Instant::now();
        self.reset(r.is_ok());
        // The reset (slot deletions, and the VM's teardown where it was not proved clean) is
        // the case's own doing: what the kernel reported there is the case's, at its last step.
        if let (Ok(t), Some(k)) = (r.as_mut(), self.kmsg.as_mut()) {
            let last = seq.steps.len().saturating_sub(1);
            t.splats.extend(k.splats().into_iter().map(|s| (last, s)));
        }
        if let (Ok(t), Some(k)) = (r.as_mut(), self.kcov.as_mut()) {
            t.pcs = k.collect();
        }
        let t3 = Instant::now();
        for (i, d) in [t1 - t0, t2 - t1, t3 - t2].iter().enumerate() {
            PHASE_NANOS[i].fetch_add(d.as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }
}
