//! Host ops: what userspace does between guest batches (memslots, attributes, hole punches,
//! pre-faults, host reads and writes, guest_memfd files), and its half of the guest's MapGPA.

use super::*;
use crate::model::attrs::KVM_MEMORY_ATTRIBUTE_PRIVATE as PRIVATE;

/// Leaves by level, as `expect pages_*` writes them.
fn fmt_levels(p: [u64; 3]) -> String {
    format!("pages_4k={} pages_2m={} pages_1g={}", p[0], p[1], p[2])
}

impl KvmBackend {
    /// The host's view of the page at `gpa`: (mapping, offset).
    pub(super) fn host_view(st: &VmState, gpa: u64) -> Option<(&Mapping, u64)> {
        let (_, sl) = st.slots.iter().find(|(_, sl)| gpa >= sl.gpa && gpa < sl.gpa + sl.size)?;
        let off = (gpa & !0xfff) - sl.gpa + VALUE_OFFSET;
        if let Some(m) = &sl.anon {
            return Some((m, off));
        }
        let (fi, goff) = sl.gmem?;
        Some((st.gmems[fi].map.as_ref()?, goff + off))
    }

    pub(super) fn punch(st: &VmState, addr: u64, size: u64, keep_size: bool) -> Outcome {
        let slots =
            st.slots.values().map(|sl| (sl.gpa, sl.size, sl.gmem.map(|(fi, off)| (st.gmems[fi].fd.as_raw_fd(), off))));
        punch_gpa_range(slots, addr, size, keep_size)
    }

    pub(super) fn host_op(&mut self, h: &Header, op: &Op) -> Observed {
        // The harness's own leaves are known as `baseline`: after a zap of every root, map them
        // all back (every vCPU, as at set-up) before the counters are read, or a case's page
        // counts would be short by the harness's missing leaves.
        if matches!(op, Op::ExpectPages { .. }) && self.vm.as_ref().is_some_and(|s| !s.harness_exact) {
            if let Err(e) = self.warm_vcpus() {
                return Observed::HarnessError(format!("mapping its own pages back after a zap: {e}"));
            }
        }
        let limit = self.prefault_limit();
        let st = self.vm.as_mut().expect("prepared");
        let o = match op {
            Op::SlotAdd(s) => Self::slot_add(st, h, s),
            Op::SlotDelete { .. }
            | Op::SlotMove { .. }
            | Op::SlotUpdate { .. }
            | Op::GetDirtyLog { .. }
            | Op::ClearDirtyLog { .. }
            | Op::DirtyLogProtect { .. }
            | Op::Private { .. }
            | Op::Shared { .. }
            | Op::Punch { .. }
            | Op::Prefault { .. }
            | Op::HostWrite { .. }
            | Op::HostRead { .. }
            | Op::Fallocate { .. } => {
                let vcpu = op.vcpu().map(|v| &st.vcpus[v as usize]);
                let (o, effect) = Self::shared_op(st, vcpu, &self.watchdog, limit, op);
                Self::apply(st, effect);
                return o;
            }
            Op::ExpectPages { .. } => {
                // With the TDP view every leaf of the case's memory is known: those are the
                // case's pages, and the counters must be them plus the harness's own, or the
                // harness has lost track (its error, never the kernel's).
                let counters = st.stats.as_ref().and_then(|s| s.pages());
                if let Some(v) = self.view.as_mut().filter(|v| v.mmu == Mmu::Tdp) {
                    v.drain();
                    if let (Some((case, _)), Some(p), Some(b)) =
                        (v.level_counts(HARNESS_GPA >> 12), counters, st.baseline)
                    {
                        let total = [0, 1, 2].map(|i| case[i] + b[i]);
                        if total != p {
                            return Observed::HarnessError(format!(
                                "the page counters say {} but the mapping view has {} of the case's and the harness has {} of its own",
                                fmt_levels(p),
                                fmt_levels(case),
                                fmt_levels(b)
                            ));
                        }
                        return Observed::Pages(case);
                    }
                }
                // Without it, the counters less the harness's leaves as learned at set-up (all
                // of them are mapped again: see the re-warm above).
                return match counters.zip(st.baseline) {
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
            // Armed for the next step by the runner (`run_steps`).
            Op::FailNth { .. } => Outcome::Ok,
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
            // TDX build ops and injected model faults are refused by `unsupported` before the
            // run; guest ops run in batches. Listed, so that a new op is placed.
            Op::InitMem { .. } | Op::Finalize | Op::TdxCmd(_) | Op::MtrrZap { .. } | Op::Inject(_) => {
                Outcome::Err(Errno::ENOSYS)
            }
            crate::seq::guest_ops!() => Outcome::Err(Errno::ENOSYS),
        };
        Observed::Outcome(o)
    }

    /// Userspace's handling of KVM_HC_MAP_GPA_RANGE ([`guest_conversion`]) on this VM, and the
    /// attributes' record the reset sets back. Returns the hypercall's return for the guest.
    pub(super) fn map_gpa_exit(st: &mut VmState, m: guest::MapGpaExit) -> u64 {
        let private = m.attrs & MAP_GPA_ENCRYPTED != 0;
        let slots = st.slots.values().map(|sl| SlotSides {
            gpa: sl.gpa,
            size: sl.size,
            shared: sl.anon.as_ref(),
            gmem: sl.gmem.map(|(fi, off)| (st.gmems[fi].fd.as_raw_fd(), off)),
        });
        let ret = guest_conversion(&st.vm, slots, m.gpa, m.pages, private);
        if ret == 0 {
            st.private.set(m.gpa, m.gpa + m.pages * PAGE, private);
        }
        ret
    }
}

/// A memslot's two sides, for [`guest_conversion`]: its userspace memory (where the backend
/// owns it) and its guest_memfd file and offset.
pub(super) struct SlotSides<'a> {
    pub gpa: u64,
    pub size: u64,
    pub shared: Option<&'a Mapping>,
    pub gmem: Option<(std::os::fd::RawFd, u64)>,
}

/// Userspace's half of a guest's conversion (KVM_HC_MAP_GPA_RANGE, which TDX MapGPA and SNP
/// page-state changes reach too), as the selftests' `private_mem_conversions_test.c` and the
/// model do it: set the attributes, then drop the side the range left (punch guest_memfd going
/// shared, zero the shared memory going private). The return is the hypercall's: 0 or a
/// negative errno.
pub(super) fn guest_conversion<'a>(
    vm: &VmFd,
    slots: impl Iterator<Item = SlotSides<'a>>,
    gpa: u64,
    pages: u64,
    private: bool,
) -> u64 {
    let Some(end) = pages.checked_mul(PAGE).and_then(|len| gpa.checked_add(len)) else {
        return -(libc::EINVAL as i64) as u64;
    };
    let a = kvm_bindings::kvm_memory_attributes {
        address: gpa,
        size: end - gpa,
        attributes: if private { PRIVATE } else { 0 },
        flags: 0,
    };
    if let Err(e) = vm.set_memory_attributes(a) {
        return -(e.errno() as i64) as u64;
    }
    for sl in slots {
        let (s, e) = (gpa.max(sl.gpa), end.min(sl.gpa + sl.size));
        if s >= e {
            continue;
        }
        match (private, sl.gmem, sl.shared) {
            (false, Some((fd, off)), _) => {
                let _ = raw::punch_hole(fd, off + (s - sl.gpa), e - s, true);
            }
            (true, _, Some(anon)) => {
                for p in (s..e).step_by(PAGE as usize) {
                    anon.write_u64(p - sl.gpa + VALUE_OFFSET, 0);
                }
            }
            _ => {}
        }
    }
    0
}

/// What a host op run with shared access leaves for the harness's own records, applied once
/// the op (or its concurrent group) is done: [`KvmBackend::apply`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Effect {
    None,
    SlotGone(u32),
    SlotMoved(u32, u64),
    SlotFlags(u32, u32),
    /// The attributes of `[start, end)` became private (true) or shared.
    Attrs(u64, u64, bool),
    /// KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 was set to these flags.
    DirtyProtect(u64),
}

impl KvmBackend {
    /// A host op with the n-th allocation of its thread failing (`/proc/thread-self/fail-nth`);
    /// also whether the fault fired (the file reads 0 once it has).
    pub(super) fn host_op_failing(&mut self, h: &Header, op: &Op, n: u32) -> (Observed, bool) {
        const FAIL_NTH: &str = "/proc/thread-self/fail-nth";
        if std::fs::write(FAIL_NTH, n.to_string()).is_err() {
            return (Observed::HarnessError(format!("{FAIL_NTH} cannot be written")), false);
        }
        let o = self.host_op(h, op);
        let left = std::fs::read_to_string(FAIL_NTH).ok().and_then(|s| s.trim().parse::<u64>().ok());
        let _ = std::fs::write(FAIL_NTH, "0");
        (o, left == Some(0))
    }

    /// How long a pre-fault may go without progress before it is an EINTR outcome.
    pub(super) fn prefault_limit(&self) -> Duration {
        let st = self.vm.as_ref().expect("prepared");
        // Where every vCPU's root is obsolete (a slot deletion zapped every root and no vCPU has
        // run since), 6.12's pre-fault never completes: one tick without progress is that
        // livelock, not a slow lab, and waiting three more buys nothing.
        let obsolete =
            st.zaps_all && !st.harness_warm && self.caps.kernel.and_then(|k| k.line()) == Some(Kernel::V6_12);
        if obsolete {
            Duration::ZERO
        } else {
            PREFAULT_STALL
        }
    }

    /// The harness's records after a host op.
    pub(super) fn apply(st: &mut VmState, e: Effect) {
        match e {
            Effect::None => {}
            Effect::SlotGone(id) => {
                st.slots.remove(&id);
                st.memslot_zapped();
            }
            Effect::SlotMoved(id, gpa) => {
                if let Some(sl) = st.slots.get_mut(&id) {
                    sl.gpa = gpa;
                }
                st.memslot_zapped();
            }
            Effect::SlotFlags(id, flags) => {
                if let Some(sl) = st.slots.get_mut(&id) {
                    sl.flags = flags;
                }
            }
            Effect::Attrs(s, e, private) => st.private.set(s, e, private),
            Effect::DirtyProtect(flags) => st.dirty_protect = flags,
        }
    }

    /// The host ops that need only shared access to the VM (and, for a pre-fault, its vCPU):
    /// what a concurrent group's threads run. Each ioctl's arguments come from the harness's
    /// records as they were before the op.
    pub(super) fn shared_op(
        st: &VmState,
        vcpu: Option<&VcpuFd>,
        watchdog: &Watchdog,
        prefault_limit: Duration,
        op: &Op,
    ) -> (Observed, Effect) {
        let mut effect = Effect::None;
        let o = match op {
            Op::SlotDelete { id } => {
                let r = kvm_userspace_memory_region2 { slot: *id, ..Default::default() };
                // SAFETY: deleting a slot.
                match unsafe { st.vm.set_user_memory_region2(r) } {
                    Ok(()) => {
                        effect = Effect::SlotGone(*id);
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
                            effect = Effect::SlotMoved(*id, *gpa);
                            Outcome::Ok
                        }
                        Err(e) => errno_of(e.errno()),
                    }
                }
            },
            Op::SlotUpdate { id, log_dirty, readonly, gmem } => match st.slots.get(id) {
                None => Outcome::Err(Errno::ENOENT),
                Some(sl) => {
                    let mut r = Self::slot_region(*id, sl, sl.gpa, sl.size, st);
                    r.flags = if *log_dirty { kvm_bindings::KVM_MEM_LOG_DIRTY_PAGES } else { 0 }
                        | if *readonly { raw::KVM_MEM_READONLY } else { 0 };
                    (r.guest_memfd, r.guest_memfd_offset) = (0, 0);
                    if let Some(b) = gmem {
                        r.flags |= raw::KVM_MEM_GUEST_MEMFD;
                        let fd = st.gmems.iter().find(|g| g.decl.name == b.gmem).map(|g| g.fd.as_raw_fd());
                        (r.guest_memfd, r.guest_memfd_offset) = (fd.unwrap_or(-1) as u32, b.offset);
                    }
                    // SAFETY: the slot's own memory and file; only the flags differ.
                    match unsafe { st.vm.set_user_memory_region2(r) } {
                        Ok(()) => {
                            effect = Effect::SlotFlags(*id, r.flags);
                            Outcome::Ok
                        }
                        Err(e) => errno_of(e.errno()),
                    }
                }
            },
            Op::GetDirtyLog { id } => {
                let pages = st.slots.get(id).map(|sl| sl.size / PAGE).unwrap_or(0);
                return match raw::get_dirty_log(&st.vm, *id, pages) {
                    Ok(dirty) => (Observed::DirtyLog(dirty), effect),
                    Err(e) => (Observed::Outcome(errno_of(e)), effect),
                };
            }
            Op::ClearDirtyLog { id, first, pages } => {
                let slot_pages = st.slots.get(id).map(|sl| sl.size / PAGE).unwrap_or(0);
                match raw::clear_dirty_log(&st.vm, *id, *first, *pages as u32, slot_pages) {
                    Ok(()) => Outcome::Ok,
                    Err(e) => errno_of(e),
                }
            }
            Op::DirtyLogProtect { flags } => {
                let cap = kvm_bindings::kvm_enable_cap {
                    cap: kvm_bindings::KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
                    args: [*flags, 0, 0, 0],
                    ..Default::default()
                };
                match st.vm.enable_cap(&cap) {
                    Ok(()) => {
                        effect = Effect::DirtyProtect(*flags);
                        Outcome::Ok
                    }
                    Err(e) => errno_of(e.errno()),
                }
            }
            Op::Private { addr, size } | Op::Shared { addr, size } => {
                let attributes = if matches!(op, Op::Private { .. }) { PRIVATE } else { 0 };
                let a = kvm_bindings::kvm_memory_attributes { address: *addr, size: *size, attributes, flags: 0 };
                match st.vm.set_memory_attributes(a) {
                    Ok(()) => {
                        effect = Effect::Attrs(*addr, addr.saturating_add(*size), attributes != 0);
                        Outcome::Ok
                    }
                    Err(e) => errno_of(e.errno()),
                }
            }
            Op::Punch { addr, size, keep_size } => Self::punch(st, *addr, *size, *keep_size),
            Op::Prefault { addr, size, .. } => {
                let Some(vcpu) = vcpu else {
                    return (Observed::HarnessError("a pre-fault without its vCPU".into()), effect);
                };
                // The kernel's pre-fault loop stops on a signal and nowhere else: with progress
                // it returns 0 with the range advanced, without any -EINTR. A tick of signals
                // measures progress; a pre-fault that makes none for `prefault_limit` (6.12 on an
                // obsolete root, found by the lab) is an EINTR outcome, not a hung lab, and
                // costs a second, not a whole guest window.
                let (mut gpa, mut left) = (*addr, *size);
                let mut stalled = Duration::ZERO;
                loop {
                    watchdog.arm(PREFAULT_TICK);
                    let r = raw::pre_fault(vcpu, gpa, left);
                    watchdog.disarm();
                    match r {
                        Ok((_, 0)) => break Outcome::Ok,
                        Ok((g, l)) => {
                            (gpa, left, stalled) = (g, l, Duration::ZERO);
                        }
                        Err(e) if e == libc::EINTR && stalled < prefault_limit => stalled += PREFAULT_TICK,
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
            _ => return (Observed::HarnessError(format!("`{}` is not a shared host op", op.kind().name())), effect),
        };
        (Observed::Outcome(o), effect)
    }
}

/// The `punch` op on a VM whose slots are `(gpa, size, guest_memfd fd and offset)`: resolve the
/// page-rounded range through the slots first (as the model does), in pages, so a range that
/// ends at the top of the address space does not wrap; a part outside every guest_memfd slot is
/// ENOENT. Default, SW_PROTECTED and TD runners share it.
pub(super) fn punch_gpa_range(
    slots: impl Iterator<Item = (u64, u64, Option<(i32, u64)>)> + Clone,
    addr: u64,
    size: u64,
    keep_size: bool,
) -> Outcome {
    let s = addr / 4096;
    let e = addr.saturating_add(size.max(1)).div_ceil(4096);
    let mut pieces = Vec::new();
    let mut at = s;
    while at < e {
        let Some((gpa, sz, gmem)) =
            slots.clone().find(|(gpa, sz, gmem)| at >= gpa / 4096 && at < (gpa + sz) / 4096 && gmem.is_some())
        else {
            return Outcome::Err(Errno::ENOENT);
        };
        let end = e.min((gpa + sz) / 4096);
        let (fd, off) = gmem.expect("filtered");
        pieces.push((fd, off + (at * 4096 - gpa), (end - at) * 4096));
        at = end;
    }
    let s = s * 4096;
    let Some(&(first_fd, first_off, _)) = pieces.first() else {
        return Outcome::Err(Errno::ENOENT);
    };
    let aligned = addr.is_multiple_of(4096) && size.is_multiple_of(4096) && size > 0;
    if !aligned || !keep_size {
        // Let the kernel judge the exact arguments.
        let off = first_off + (addr - s);
        return match raw::punch_hole(first_fd, off, size, keep_size) {
            Ok(()) => Outcome::Ok,
            Err(e) => errno_of(e),
        };
    }
    for (fd, off, len) in pieces {
        if let Err(e) = raw::punch_hole(fd, off, len, true) {
            return errno_of(e);
        }
    }
    Outcome::Ok
}
