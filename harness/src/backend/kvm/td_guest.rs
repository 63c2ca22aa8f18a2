//! One guest op on a TD's vCPU: the TD shim's command written, KVM_RUN until the shim's batch
//! ends (the guest's MapGPA conversions done on the way, as a VMM does them), the shim's result
//! read back. The sequential runner ([`super::cvm_ops`]) and concurrent groups
//! ([`super::cvm_together`]) both run guest ops this way.

use super::cvm::{KVM_HC_MAP_GPA_RANGE, KVM_SYSTEM_EVENT_TDX_FATAL};
use super::cvm_run::Slot;
use super::host_ops::{guest_conversion, SlotSides};
use crate::backend::mem::Mapping;
use crate::backend::vcpu::Watchdog;
use crate::backend::RunError;
use crate::seq::*;
use kvm_ioctls::VcpuExit;
use privmem_guest::abi::{
    CMD_FIRST, CMD_OFF, CMD_STRIDE, MAP_GPA_ENCRYPTED, OP_READ, OP_TD_ACCEPT, OP_TD_MAP_GPA, OP_TOUCH, OP_WRITE,
    PORT_DONE, ST_DONE, ST_EXC,
};
use std::os::fd::AsRawFd;
use std::time::Instant;

/// The backend's watchdog and the window a KVM_RUN or a pre-fault may go without progress: a
/// signal then ends the ioctl (EINTR), and the step is a timeout, not a lab that hangs (KVM
/// retries a fault it cannot resolve inside the ioctl until a signal is pending).
pub struct Watch<'a> {
    pub dog: &'a Watchdog,
    pub window: std::time::Duration,
    /// How concurrent groups' threads are released in this run (offsets by repetition).
    pub release: super::together::Release,
}

/// Disarms the watchdog on every way out.
pub(super) struct Disarm<'a>(pub(super) &'a Watchdog);
impl Drop for Disarm<'_> {
    fn drop(&mut self) {
        self.0.disarm();
    }
}

/// The parts of a TD a guest op's thread uses besides its vCPU (shared by a group's threads).
pub(super) struct GuestSide<'a> {
    pub vm: &'a kvm_ioctls::VmFd,
    pub gmems: &'a [std::os::fd::OwnedFd],
    pub slots: &'a std::collections::BTreeMap<u32, Slot>,
    pub finalized: bool,
}

/// A conversion the guest asked for (MapGPA), as the runner did it.
pub(super) struct Conversion {
    pub gpa: u64,
    pub size: u64,
    pub private: bool,
    pub ok: bool,
}

/// Write vCPU `v`'s one-command batch for `op`; the command's opcode.
pub(super) fn write_command(shared: &Mapping, op: &Op, step: usize) -> Result<u64, RunError> {
    let v = op.vcpu().unwrap_or(0) as u64;
    let cmd = crate::backend::emulated::shim_command(op, crate::backend::emulated::Platform::Td)
        .ok_or_else(|| RunError::Guest { step, detail: format!("`{}` has no TD shim command", text::print_op(op)) })?;
    let page = CMD_OFF + v * CMD_STRIDE;
    for (k, w) in [cmd.0, cmd.1, cmd.2, cmd.3].iter().enumerate() {
        shared.write_u64(page + CMD_FIRST + k as u64 * 8, *w);
    }
    shared.write_u64(page + 0x1000, 0);
    shared.write_u64(page, 1);
    Ok(cmd.0)
}

/// KVM_RUN until the shim's batch is done; an outcome that ends it early (a memory fault, the
/// TD dead, KVM_RUN refused before FINALIZE), and the MapGPA conversions done for the guest.
pub(super) fn run_guest(
    side: &GuestSide<'_>,
    vcpu: &mut kvm_ioctls::VcpuFd,
    step: usize,
    dog: &Watchdog,
    window: std::time::Duration,
) -> Result<(Option<Outcome>, Vec<Conversion>), RunError> {
    let guest = |d: String| RunError::Guest { step, detail: d };
    let mut conversions = Vec::new();
    let _d = Disarm(dog);
    dog.arm(window);
    let mut since = Instant::now();
    loop {
        match vcpu.run() {
            Ok(VcpuExit::IoOut(PORT_DONE, _)) => return Ok((None, conversions)),
            Ok(VcpuExit::Hypercall(h)) if h.nr == KVM_HC_MAP_GPA_RANGE as u64 => {
                let private = h.args[2] & MAP_GPA_ENCRYPTED != 0;
                let slots = side.slots.values().map(|sl| SlotSides {
                    gpa: sl.gpa,
                    size: sl.size,
                    shared: Some(&sl.anon),
                    gmem: sl.gmem.map(|(i, off)| (side.gmems[i].as_raw_fd(), off)),
                });
                // An exit KVM hands to userspace is progress.
                since = Instant::now();
                dog.arm(window);
                *h.ret = guest_conversion(side.vm, slots, h.args[0], h.args[1], private);
                let size = h.args[1].saturating_mul(PAGE);
                conversions.push(Conversion { gpa: h.args[0], size, private, ok: *h.ret == 0 });
            }
            // KVM_MEMORY_EXIT_FLAG_PRIVATE says which side the fault wanted.
            Ok(VcpuExit::MemoryFault { flags, .. }) => {
                return Ok((Some(Outcome::Exit(Exit::MemoryFault { private: flags & (1 << 3) != 0 })), conversions))
            }
            Ok(VcpuExit::SystemEvent(ty, _)) if ty == KVM_SYSTEM_EVENT_TDX_FATAL => {
                return Ok((Some(Outcome::VmDead), conversions))
            }
            Ok(VcpuExit::Intr) if since.elapsed() >= window => return Err(RunError::Timeout { step }),
            Err(e) if matches!(e.errno(), libc::EINTR | libc::EAGAIN) && since.elapsed() >= window => {
                return Err(RunError::Timeout { step })
            }
            Ok(VcpuExit::Intr) => continue,
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
            Ok(other) => return Err(guest(format!("unexpected exit {other:?}"))),
            // KVM_RUN before FINALIZE: the outcome the model gives such a guest op.
            Err(e) if e.errno() == libc::EINVAL && !side.finalized => {
                return Ok((Some(Outcome::Err(Errno::EINVAL)), conversions))
            }
            // KVM has the VM bugged or dead (a KVM_BUG_ON, TDX_BUG_ON): an outcome, so that
            // the case goes on to its end and the kernel's report of why is read with it.
            Err(e) if e.errno() == libc::EIO => return Ok((Some(Outcome::Err(Errno::EIO)), conversions)),
            Err(e) => return Err(guest(format!("KVM_RUN: {e}"))),
        }
    }
}

/// The shim's result for vCPU `v`'s batch of one command `cmd`, as an outcome.
pub(super) fn read_result(shared: &Mapping, v: usize, cmd: u64, step: usize) -> Result<Outcome, RunError> {
    let page = CMD_OFF + v as u64 * CMD_STRIDE;
    let (status, value) = (shared.read_u64(page + 0x1000), shared.read_u64(page + 0x1008));
    use crate::backend::emulated::trap as decode;
    Ok(match (status, cmd) {
        (ST_EXC, _) => Outcome::Ve,
        (ST_DONE, OP_READ) => Outcome::Value(value),
        (ST_DONE, OP_WRITE | OP_TOUCH) => Outcome::Ok,
        (ST_DONE, OP_TD_ACCEPT) => decode::tdx_outcome(value).unwrap_or(Outcome::Value(value)),
        (ST_DONE, OP_TD_MAP_GPA) => decode::vmcall_outcome(value).unwrap_or(Outcome::Value(value)),
        _ => {
            return Err(RunError::Guest {
                step,
                detail: format!("the shim's result: status {status:#x}, value {value:#x}"),
            })
        }
    })
}
