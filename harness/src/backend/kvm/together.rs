//! Concurrent groups on real KVM: each op of a `together { … }` group on its own thread (a
//! guest op on its vCPU's, a pre-fault on its vCPU's, every other host op on one of its own),
//! all released by one barrier, each then waiting its start offset: syzkaller's collide idea,
//! repeated with other offsets by [`crate::oracle::diff::check_real`]. The offsets come from
//! a seed and the repetition's number, so a replay of the same case tries the same way.
//!
//! Host ops run with shared access to the VM ([`KvmBackend::shared_op`]); the harness's own
//! records follow once every thread is done. An op the kernel asks to retry (EAGAIN, EINTR)
//! is retried on its thread, as a VMM would.

use super::batch::{commands_done, read_results, write_commands};
use super::host_ops::Effect;
use super::*;
use std::ops::Range;
use std::sync::Barrier;

/// How one run releases its groups' threads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Release {
    pub seed: u64,
    /// 0: every thread starts at once; later repetitions draw offsets.
    pub repetition: u32,
}

/// splitmix64: a seed and a counter to well-spread bits.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Release {
    /// The spin-loop iterations thread `lane` waits after the barrier: none in the first
    /// repetition, then up to 2^14 on a log scale, so that both near and far offsets occur.
    pub fn offset(&self, lane: usize) -> u64 {
        if self.repetition == 0 {
            return 0;
        }
        let x = mix(self.seed ^ mix(((self.repetition as u64) << 8) | lane as u64));
        let e = (x >> 58) % 15;
        x & ((1 << e) - 1)
    }

    /// How long a host op of a group on a TD (step `step`) waits after the release: a vCPU
    /// takes a while to get into the TD (KVM_RUN's way in, under TCG), and a host op that
    /// always came first would never meet it inside. Spread over 0-1.5 ms by the step's place
    /// and the repetition, so a case tries several offsets and a replay the same ones.
    pub fn td_host_delay(&self, step: usize) -> std::time::Duration {
        let x = mix(self.seed ^ ((self.repetition as u64) << 32) ^ step as u64);
        std::time::Duration::from_micros(x % 1500)
    }
}

/// How often a group's host op is retried when the kernel asks (EAGAIN, EINTR).
const LANE_RETRIES: u32 = 64;

/// What one thread of a group did.
struct Lane {
    observed: Observed,
    effect: Effect,
    /// KVM_RUN returns, for a guest op.
    runs: Option<u64>,
}

impl KvmBackend {
    /// Run the group `g` of `seq`, every op on its own thread at once.
    pub(super) fn run_together(&mut self, seq: &Sequence, g: Range<usize>, t: &mut RealTrace) -> Result<(), RunError> {
        while self.lane_watchdogs.len() < g.len() {
            self.lane_watchdogs.push(Watchdog::new());
        }
        let limit = self.prefault_limit();
        let (release, timeout) = (self.release, self.timeout);
        let watchdogs = &self.lane_watchdogs;
        let st = self.vm.as_mut().expect("prepared");
        // The guest's commands are in place before any thread starts.
        for k in g.clone() {
            let op = &seq.steps[k].op;
            if let (true, Some(v)) = (op.kind().is_guest(), op.vcpu()) {
                write_commands(&st.harness, v, &[(k, op)])?;
            }
        }
        let mut vcpus = std::mem::take(&mut st.vcpus);
        let shared: &VmState = st;
        let mut lanes_vcpu: Vec<Option<&mut VcpuFd>> = vcpus.iter_mut().map(Some).collect();
        let barrier = Barrier::new(g.len());
        let results: Vec<Result<Lane, RunError>> = std::thread::scope(|sc| {
            let handles: Vec<_> = g
                .clone()
                .enumerate()
                .map(|(j, k)| {
                    let op = &seq.steps[k].op;
                    let vcpu = op.vcpu().and_then(|v| lanes_vcpu.get_mut(v as usize)).and_then(Option::take);
                    let (barrier, wd) = (&barrier, &watchdogs[j]);
                    let spins = release.offset(j);
                    sc.spawn(move || {
                        barrier.wait();
                        for _ in 0..spins {
                            std::hint::spin_loop();
                        }
                        lane(shared, vcpu, wd, limit, timeout, k, op)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(RunError::Setup("a group's thread panicked".into()))))
                .collect()
        });
        let st = self.vm.as_mut().expect("prepared");
        st.vcpus = vcpus;
        let mut first_error = None;
        for (k, r) in g.clone().zip(results) {
            match r {
                Ok(l) => {
                    // The harness does not know in which order the group's conversions landed
                    // (`private X` and `shared X` together may leave X either way): every range
                    // a conversion of the group touched is recorded private, so the reset sets
                    // it shared. Found in the lab: a reused VM's next case met a private GFN.
                    let effect = match l.effect {
                        Effect::Attrs(s, e, _) => Effect::Attrs(s, e, true),
                        e => e,
                    };
                    Self::apply(st, effect);
                    if let Some(runs) = l.runs {
                        t.exits += runs;
                        t.guest_ops += 1;
                        st.harness_warm = true;
                    }
                    t.observed[k] = l.observed;
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// One op of a group, on its thread.
fn lane(
    st: &VmState,
    vcpu: Option<&mut VcpuFd>,
    wd: &Watchdog,
    prefault_limit: Duration,
    timeout: Duration,
    k: usize,
    op: &Op,
) -> Result<Lane, RunError> {
    if !op.kind().is_guest() {
        let mut tries = 0;
        loop {
            let (observed, effect) = KvmBackend::shared_op(st, vcpu.as_deref(), wd, prefault_limit, op);
            let again = matches!(observed, Observed::Outcome(Outcome::Err(Errno::EAGAIN | Errno::EINTR)));
            if again && tries < LANE_RETRIES {
                tries += 1;
                continue;
            }
            return Ok(Lane { observed, effect, runs: None });
        }
    }
    let (Some(vcpu), Some(v)) = (vcpu, op.vcpu()) else {
        return Err(RunError::Setup(format!("step {}: a guest op without its vCPU", k + 1)));
    };
    let harness = &st.harness;
    match guest::run_batch(vcpu, 1, timeout, wd, || commands_done(harness, v, 1)) {
        Ok((exits, runs)) => {
            let o = read_results(harness, v, &[(k, op)], &exits)?;
            Ok(Lane { observed: Observed::Outcome(o[0]), effect: Effect::None, runs: Some(runs) })
        }
        Err(BatchError::MapGpa(..)) => {
            Err(RunError::Guest { step: k, detail: "a MapGPA exit in a concurrent group".into() })
        }
        Err(BatchError::Timeout) => Err(RunError::Timeout { step: k }),
        Err(BatchError::Guest(d)) => Err(RunError::Guest { step: k, detail: d }),
    }
}

#[cfg(test)]
mod tests {
    use super::Release;

    #[test]
    fn the_first_repetition_starts_together_and_later_ones_spread() {
        let r0 = Release { seed: 7, repetition: 0 };
        assert!((0..5).all(|l| r0.offset(l) == 0));
        let offs: Vec<u64> =
            (1..40).flat_map(|rep| (0..4).map(move |l| Release { seed: 7, repetition: rep }.offset(l))).collect();
        assert!(offs.iter().all(|&o| o < 1 << 14));
        assert!(offs.iter().any(|&o| o > 1000) && offs.iter().any(|&o| o < 16), "{offs:?}");
        // Deterministic: a replay tries the same way.
        assert_eq!(Release { seed: 7, repetition: 3 }.offset(2), Release { seed: 7, repetition: 3 }.offset(2));
        assert_ne!(Release { seed: 7, repetition: 3 }.offset(2), Release { seed: 8, repetition: 3 }.offset(2));
    }
}
