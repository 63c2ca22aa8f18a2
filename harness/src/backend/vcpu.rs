//! What every vCPU runner needs, the KVM backend's and the emulated shims' alike: flat
//! segments, whether CPUID offers 1G pages, the per-case watchdog that kicks a vCPU out of
//! KVM_RUN, and whether privmem runs as the lab VM's init.

use kvm_bindings::{kvm_segment, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::Kvm;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

/// A flat 4 GiB segment (DPL from the selector's RPL).
pub fn seg(selector: u16, type_: u8, l: u8, db: u8) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: (selector & 3) as u8,
        db,
        s: 1,
        l,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Whether the host's supported CPUID offers 1G pages (CPUID 0x80000001 EDX bit 26).
pub fn has_gib_pages(kvm: &Kvm) -> bool {
    kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map(|c| c.as_slice().iter().any(|e| e.function == 0x8000_0001 && e.edx & (1 << 26) != 0))
        .unwrap_or(false)
}

/// Kicks a vCPU thread out of KVM_RUN when a case overruns its time: a signal (no SA_RESTART)
/// makes KVM_RUN return EINTR. Arming and disarming are two atomic stores (no wake-ups on the
/// hot path); the watchdog thread polls every few milliseconds and re-fires until disarmed, so
/// a signal that lands just before KVM_RUN is entered is not lost.
pub struct Watchdog {
    /// Deadline in nanoseconds since `epoch`, 0 when disarmed.
    deadline: Arc<AtomicU64>,
    tid: Arc<AtomicU64>,
    epoch: Instant,
}

extern "C" fn on_kick(_: libc::c_int) {}

impl Watchdog {
    pub fn new() -> Watchdog {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            // SAFETY: installing a no-op handler without SA_RESTART.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_kick as *const () as usize;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(libc::SIGUSR2, &sa, std::ptr::null_mut());
            }
        });
        let w =
            Watchdog { deadline: Arc::new(AtomicU64::new(0)), tid: Arc::new(AtomicU64::new(0)), epoch: Instant::now() };
        let (deadline, tid, epoch) = (Arc::clone(&w.deadline), Arc::clone(&w.tid), w.epoch);
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(5));
            let d = deadline.load(Ordering::Acquire);
            if d != 0 && epoch.elapsed().as_nanos() as u64 >= d {
                // SAFETY: signalling a live thread of this process (the one that armed us).
                unsafe { libc::pthread_kill(tid.load(Ordering::Acquire) as libc::pthread_t, libc::SIGUSR2) };
            }
        });
        w
    }

    pub fn arm(&self, timeout: Duration) {
        // SAFETY: pthread_self has no preconditions.
        self.tid.store(unsafe { libc::pthread_self() } as u64, Ordering::Release);
        let d = (self.epoch.elapsed() + timeout).as_nanos() as u64;
        self.deadline.store(d.max(1), Ordering::Release);
    }

    pub fn disarm(&self) {
        self.deadline.store(0, Ordering::Release);
    }
}

impl Default for Watchdog {
    fn default() -> Self {
        Watchdog::new()
    }
}

/// Whether this process is the lab VM's init (PID 1): nested KVM under QEMU's TCG.
pub(crate) fn in_lab() -> bool {
    std::process::id() == 1
}
