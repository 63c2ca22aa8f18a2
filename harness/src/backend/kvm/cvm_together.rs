//! Concurrent groups on a real TD: each op of a `together { … }` group on its own thread (a
//! guest op on its vCPU's), all released by one barrier. In the lab, the software TDX module
//! lets a vCPU's guest run on with the module's lock let go while the group runs (`run_on`),
//! so the group's host ops meet vCPUs inside the TD: KVM's kick after TRACK, its BUSY retries
//! (`tdh_do_no_vcpus()`), and the module's per-vCPU epochs and host-priority entry locks all
//! come into play, as on hardware. The race oracle then holds the outcomes to some
//! serialization of the group on the model.

use super::cvm_run::CvmGuest;
use super::host_ops::punch_gpa_range;
use super::td_guest::{read_result, run_guest, write_command, Conversion, GuestSide, Watch};
use crate::backend::vcpu::Watchdog;
use crate::backend::RunError;
use crate::model::attrs::KVM_MEMORY_ATTRIBUTE_PRIVATE as PRIVATE;
use crate::seq::*;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::sync::{Barrier, OnceLock};

/// One watchdog per lane, made once (each has its own thread for the life of the process).
fn lane_dogs() -> &'static [Watchdog] {
    static DOGS: OnceLock<Vec<Watchdog>> = OnceLock::new();
    DOGS.get_or_init(|| (0..MAX_GROUP).map(|_| Watchdog::new()).collect())
}

/// What one lane did.
enum Lane {
    Guest {
        early: Option<Outcome>,
        conversions: Vec<Conversion>,
        cmd: u64,
    },
    /// A host op, and the attribute range it changed if it went through.
    Host {
        outcome: Outcome,
        attrs: Option<(u64, u64)>,
    },
}

/// A TD group may hold what the runner issues and a group may hold: guest ops, attribute
/// changes and punches.
pub fn supported(op: &Op) -> bool {
    op.kind().is_guest() || matches!(op, Op::Private { .. } | Op::Shared { .. } | Op::Punch { .. })
}

/// Run the group `range` of `seq` on `g`: each step's outcome.
pub(super) fn run_group(
    g: &mut CvmGuest,
    seq: &Sequence,
    range: Range<usize>,
    watch: &Watch,
) -> Result<Vec<(usize, Outcome)>, RunError> {
    if range.len() > MAX_GROUP {
        return Err(RunError::Unsupported(format!("a group of {} ops (at most {MAX_GROUP})", range.len())));
    }
    if let Some(k) = range.clone().find(|&k| !supported(&seq.steps[k].op)) {
        let op = text::print_op(&seq.steps[k].op);
        return Err(RunError::Unsupported(format!("`{op}` in a concurrent group on a TD")));
    }
    // Every guest command is in place before any thread starts.
    let mut cmds = vec![0; range.len()];
    for (j, k) in range.clone().enumerate() {
        let op = &seq.steps[k].op;
        if op.kind().is_guest() {
            cmds[j] = write_command(&g.shared, op, k)?;
        }
    }
    let module = super::soft_tdx::present();
    if module {
        super::soft_tdx::run_on(super::soft_tdx::GROUP_RUN_ON_US).map_err(RunError::Setup)?;
    }
    let side = GuestSide { vm: &g.vm, gmems: &g.gmems, slots: &g.slots, finalized: g.finalized };
    let mut vcpus: Vec<Option<&mut kvm_ioctls::VcpuFd>> = g.vcpus.iter_mut().map(Some).collect();
    let barrier = Barrier::new(range.len());
    let dogs = lane_dogs();
    let results: Vec<Result<Lane, RunError>> = std::thread::scope(|sc| {
        let handles: Vec<_> = range
            .clone()
            .enumerate()
            .map(|(j, k)| {
                let op = &seq.steps[k].op;
                let vcpu = op
                    .vcpu()
                    .filter(|_| op.kind().is_guest())
                    .and_then(|v| vcpus.get_mut(v as usize))
                    .and_then(Option::take);
                let (side, barrier, dog, cmd) = (&side, &barrier, &dogs[j], cmds[j]);
                sc.spawn(move || {
                    barrier.wait();
                    match vcpu {
                        Some(vcpu) => run_guest(side, vcpu, k, dog, watch.window)
                            .map(|(early, conversions)| Lane::Guest { early, conversions, cmd }),
                        None if op.kind().is_guest() => Err(RunError::Guest { step: k, detail: "no such vCPU".into() }),
                        None => {
                            std::thread::sleep(watch.release.td_host_delay(k));
                            Ok(host_lane(side, op))
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(RunError::Setup("a group's thread panicked".into()))))
            .collect()
    });
    if module {
        super::soft_tdx::run_on(0).map_err(RunError::Setup)?;
    }
    let mut out = Vec::new();
    for (k, r) in range.zip(results) {
        let o = match r? {
            Lane::Guest { early, conversions, cmd } => {
                // Which of the group's conversions landed last is not known here: their GFNs
                // stay unsettled (out of the mirror comparison) until a later conversion, and
                // a reset sets every one back.
                for c in &conversions {
                    g.raced(c.gpa, c.size);
                }
                let v = seq.steps[k].op.vcpu().unwrap_or(0) as usize;
                match early {
                    Some(o) => o,
                    None => read_result(&g.shared, v, cmd, k)?,
                }
            }
            Lane::Host { outcome, attrs } => {
                if let Some((gpa, size)) = attrs {
                    g.raced(gpa, size);
                }
                outcome
            }
        };
        out.push((k, o));
    }
    Ok(out)
}

/// A host op of a group, on its thread.
fn host_lane(side: &GuestSide<'_>, op: &Op) -> Lane {
    match *op {
        Op::Private { addr, size } | Op::Shared { addr, size } => {
            let private = matches!(op, Op::Private { .. });
            let a = kvm_bindings::kvm_memory_attributes {
                address: addr,
                size,
                attributes: if private { PRIVATE } else { 0 },
                flags: 0,
            };
            match side.vm.set_memory_attributes(a) {
                Ok(()) => Lane::Host { outcome: Outcome::Ok, attrs: Some((addr, size)) },
                Err(e) => Lane::Host { outcome: Outcome::Err(Errno::from_raw(e.errno())), attrs: None },
            }
        }
        Op::Punch { addr, size, keep_size } => {
            let slots =
                side.slots.values().map(|s| (s.gpa, s.size, s.gmem.map(|(i, off)| (side.gmems[i].as_raw_fd(), off))));
            Lane::Host { outcome: punch_gpa_range(slots, addr, size, keep_size), attrs: None }
        }
        _ => unreachable!("run_group refuses other ops first"),
    }
}
