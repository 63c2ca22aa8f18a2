//! Running a sequence's ops on a real TD or SNP guest that [`super::cvm_run`] set up (or, for a
//! TD, that [`super::td_reuse`] kept from an earlier case): host ops as ioctls, guest ops as
//! commands of the shim.

use super::cvm_run::{unsupported, CvmGuest, Slot};
use super::raw;
use super::td_guest::{read_result, run_guest, write_command, Conversion, Disarm, GuestSide, Watch};
use crate::backend::mem::Mapping;
use crate::backend::{Observed, RealTrace, RunError};
use crate::model::attrs::KVM_MEMORY_ATTRIBUTE_PRIVATE as PRIVATE;
use crate::seq::*;
use kvm_ioctls::{Kvm, VcpuExit};
use privmem_guest::abi::{CMD_OFF, CMD_STRIDE, PORT_DONE, VALUE_OFFSET};
use std::os::fd::AsRawFd;
use std::time::Instant;

/// Run `seq` on a fresh TD or SNP guest.
pub fn run(kvm: &Kvm, seq: &Sequence, watch: &Watch) -> Result<RealTrace, RunError> {
    if let Some(why) = unsupported(seq) {
        return Err(RunError::Unsupported(why));
    }
    run_on(&mut CvmGuest::build(kvm, seq)?, seq, false, None, watch)
}

/// Run `seq` on `g`, built for it or kept from an earlier case and given this case's files and
/// slots. With `skip_finalize` (a TD finalized at an earlier case) the case's first `finalize`
/// is not issued (FINALIZE was checked at the TD's first case): that step is not checked.
/// With the kernel's mapping view (`view`), KVM's mirror root is held to the module's S-EPT
/// after every step too.
pub(super) fn run_on(
    g: &mut CvmGuest,
    seq: &Sequence,
    skip_finalize: bool,
    mut view: Option<&mut super::trace::TraceView>,
    watch: &Watch,
) -> Result<RealTrace, RunError> {
    let mut skip_finalize = skip_finalize;
    let n = seq.steps.len();
    let mut t = RealTrace { observed: vec![Observed::NotChecked; n], views: vec![None; n], ..Default::default() };
    // The lab's software TDX module: its S-EPT after every step, held to the model's.
    let module = super::soft_tdx::present();
    t.sept = vec![None; n];
    t.serial_guest_ops = true;
    let mut next = 0;
    for (i, st) in seq.steps.iter().enumerate() {
        if i < next {
            continue;
        }
        let t0 = Instant::now();
        let group = seq.group_at(i);
        if group.len() > 1 {
            next = group.end;
            let outcomes = super::cvm_together::run_group(g, seq, group.clone(), watch)?;
            let stop = outcomes.iter().any(|(_, o)| matches!(o, Outcome::Exit(Exit::MemoryFault { .. })));
            for (k, o) in outcomes {
                t.observed[k] = Observed::Outcome(o);
            }
            super::count_time(st.op.kind() as usize, t0);
            after_step(g, &mut t, view.as_deref_mut(), group.end - 1);
            if stop {
                // A memory fault: that TD vCPU cannot be resumed past the access.
                break;
            }
            continue;
        }
        let o = match &st.op {
            Op::Finalize if std::mem::take(&mut skip_finalize) => continue,
            Op::Finalize => g.finalize().map(|_| Outcome::Ok).unwrap_or_else(errno),
            Op::TdxCmd(c) => g.tdx_cmd(c)?,
            Op::InitMem { addr, pages, measure } => {
                // The source: the slot's shared memory at the same GPAs (what the host wrote
                // there is what the model's added pages hold, as a VMM loading its image in
                // place), zeroes past the slot.
                let in_slot = g
                    .slot_at(*addr)
                    .filter(|s| *addr + *pages * PAGE <= s.gpa + s.size)
                    .map(|s| s.anon.addr() + (*addr & !0xfff) - s.gpa);
                let zero = match in_slot {
                    Some(_) => None,
                    None => Some(
                        Mapping::anon((*pages * PAGE).clamp(PAGE, 1 << 30) as usize)
                            .map_err(|e| RunError::Setup(format!("mmap: {e}")))?,
                    ),
                };
                let source_addr = in_slot.or(zero.as_ref().map(Mapping::addr)).expect("one of the two");
                let mut r = super::cvm::KvmTdxInitMemRegion { source_addr, gpa: *addr, nr_pages: *pages };
                let mut cmd = super::cvm::KvmTdxCmd {
                    id: super::cvm::KVM_TDX_INIT_MEM_REGION,
                    flags: if *measure { super::cvm::KVM_TDX_MEASURE_MEMORY_REGION } else { 0 },
                    data: &mut r as *mut _ as u64,
                    ..Default::default()
                };
                super::cvm_run::vcpu_encrypt_op(&g.vcpus[0], &mut cmd).map(|_| Outcome::Ok).unwrap_or_else(errno)
            }
            Op::Private { addr, size } | Op::Shared { addr, size } => {
                let private = matches!(st.op, Op::Private { .. });
                let a = kvm_bindings::kvm_memory_attributes {
                    address: *addr,
                    size: *size,
                    attributes: if private { PRIVATE } else { 0 },
                    flags: 0,
                };
                match g.vm.set_memory_attributes(a) {
                    Ok(()) => {
                        g.attrs_set.push((*addr, *size));
                        g.private_gfns.convert(*addr, *size, private);
                        Outcome::Ok
                    }
                    Err(e) => errno(e.errno()),
                }
            }
            Op::Punch { addr, size, keep_size } => {
                let slots =
                    g.slots.values().map(|s| (s.gpa, s.size, s.gmem.map(|(i, off)| (g.gmems[i].as_raw_fd(), off))));
                super::host_ops::punch_gpa_range(slots, *addr, *size, *keep_size)
            }
            Op::Prefault { vcpu, addr, size } => match g.vcpus.get(*vcpu as usize) {
                // The op pre-faults its whole range: the kernel returns after partial progress
                // (0, range advanced), so ask again until done or an error, as host_ops does.
                Some(v) => {
                    let (mut gpa, mut left) = (*addr, *size);
                    let _d = Disarm(watch.dog);
                    watch.dog.arm(watch.window);
                    let mut since = Instant::now();
                    loop {
                        match raw::pre_fault(v, gpa, left) {
                            Ok((_, 0)) => break Outcome::Ok,
                            Ok((g, l)) => {
                                (gpa, left) = (g, l);
                                since = Instant::now();
                                watch.dog.arm(watch.window);
                            }
                            Err(libc::EINTR) if since.elapsed() >= watch.window => {
                                return Err(RunError::Timeout { step: i })
                            }
                            Err(libc::EINTR) => continue,
                            Err(e) => break errno(e),
                        }
                    }
                }
                None => continue,
            },
            Op::HostRead { addr } => match g.host(*addr) {
                Some((m, off)) => Outcome::Value(m.read_u64(off)),
                None => Outcome::Err(Errno::EFAULT),
            },
            Op::HostWrite { addr, value } => match g.host(*addr) {
                Some((m, off)) => {
                    m.write_u64(off, *value);
                    Outcome::Ok
                }
                None => Outcome::Err(Errno::EFAULT),
            },
            op if op.kind().is_guest() => match g.guest_op(op, i, watch)? {
                o @ Outcome::Exit(Exit::MemoryFault { .. }) => {
                    // A memory fault: the TD cannot be resumed past the access.
                    t.observed[i] = Observed::Outcome(o);
                    break;
                }
                o => o,
            },
            Op::Inject(Fault::SeamcallBusy) if module => match super::soft_tdx::inject_sept_busy() {
                Ok(()) => Outcome::Ok,
                Err(e) => return Err(RunError::Setup(e)),
            },
            _ => continue,
        };
        t.observed[i] = Observed::Outcome(o);
        super::count_time(st.op.kind() as usize, t0);
        after_step(g, &mut t, view.as_deref_mut(), i);
    }
    Ok(t)
}

/// After step `i` (or a group ending at it), in the lab's software module: its S-EPT, held to
/// the model's by the oracle, and KVM's mirror root held to it here.
fn after_step(g: &CvmGuest, t: &mut RealTrace, view: Option<&mut super::trace::TraceView>, i: usize) {
    let t0 = Instant::now();
    if let (true, Some(tdr)) = (super::soft_tdx::present(), g.soft_tdr) {
        let dump = super::soft_tdx::sept_state(tdr);
        if let (Some(v), Some(d)) = (view, dump.as_ref()) {
            if let Some(m) = super::soft_tdx::mirror_mismatch(v, d, &g.private_gfns, &mut t.mirror_checks) {
                t.mirror.push((i, m));
            }
        }
        t.sept[i] = dump.map(|d| d.leaves);
        super::count_time(super::OP_NANOS.len() - 1, t0);
    }
}

fn errno(e: i32) -> Outcome {
    Outcome::Err(Errno::from_raw(e))
}

impl CvmGuest {
    fn slot_at(&self, gpa: u64) -> Option<&Slot> {
        self.slots.values().find(|s| gpa >= s.gpa && gpa - s.gpa < s.size)
    }
    fn host(&self, gpa: u64) -> Option<(&Mapping, u64)> {
        let s = self.slot_at(gpa)?;
        Some((&s.anon, (gpa & !0xfff) - s.gpa + VALUE_OFFSET))
    }

    /// End vCPU `v`'s batch where a memory fault left it (the access would be retried at the
    /// next entry): the batch's command count set to none, KVM_RUN until the batch end. Only
    /// the lab's software module reads the count again at each entry, so this is for it alone
    /// (a TD's reset, `td_reuse`); a real TD would retry the access.
    pub(super) fn end_batch(&mut self, v: usize, watch: &Watch) -> bool {
        self.shared.write_u64(CMD_OFF + v as u64 * CMD_STRIDE, 0);
        let Some(vcpu) = self.vcpus.get_mut(v) else { return false };
        let _d = Disarm(watch.dog);
        watch.dog.arm(watch.window);
        for _ in 0..16 {
            match vcpu.run() {
                Ok(VcpuExit::IoOut(PORT_DONE, _)) => return true,
                Ok(VcpuExit::Intr) => continue,
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
                _ => return false,
            }
        }
        false
    }

    /// One guest op as one batch of the shim (a memory fault exit ends it with that outcome).
    fn guest_op(&mut self, op: &Op, step: usize, watch: &Watch) -> Result<Outcome, RunError> {
        let v = op.vcpu().unwrap_or(0) as usize;
        let cmd = write_command(&self.shared, op, step)?;
        let side = GuestSide { vm: &self.vm, gmems: &self.gmems, slots: &self.slots, finalized: self.finalized };
        let vcpu = self.vcpus.get_mut(v).ok_or_else(|| RunError::Guest { step, detail: format!("no vCPU {v}") })?;
        let (early, conversions) = run_guest(&side, vcpu, step, watch.dog, watch.window)?;
        self.converted(&conversions);
        match early {
            Some(o) => Ok(o),
            None => read_result(&self.shared, v, cmd, step),
        }
    }

    /// Record a conversion of a concurrent group: its GFNs unsettled, and set back at reset.
    pub(super) fn raced(&mut self, gpa: u64, size: u64) {
        self.private_gfns.race(gpa, size);
        self.attrs_set.push((gpa, size));
    }

    /// Record the guest's MapGPA conversions: which GFNs are private, what a reset sets back.
    pub(super) fn converted(&mut self, conversions: &[Conversion]) {
        for c in conversions {
            if c.ok {
                self.private_gfns.convert(c.gpa, c.size, c.private);
            }
            // Whether or not all of it went through (the attributes may have, and not the
            // punch after): a reset that cannot set it back keeps no TD.
            self.attrs_set.push((c.gpa, c.size));
        }
    }
}
