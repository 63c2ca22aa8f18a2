//! Setting up the minimal guest: the harness memslot (page tables, GDT, code), the vCPU's
//! registers for CPL3 long mode, and running a batch of commands with a per-case timeout.

use crate::backend::mem::Mapping;
pub use crate::backend::vcpu::{has_gib_pages, seg, Watchdog};
use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
use privmem_guest::abi::*;
use std::time::{Duration, Instant};

/// Fill the harness memslot: identity page tables (1G pages, user accessible), a GDT, the code.
/// With 1G pages the guest's only page-table pages are the PML4 and the PDPT, both in the
/// harness slot and mapped by the warm-up: a guest access to a new GiB maps no page-table page
/// of its own in stage 2, which would otherwise show in `pages_4k` on a TDP host.
///
/// Where the vCPU's CPUID lacks 1G pages (PDPE1GB) the map uses 2M pages under one page
/// directory per GiB; on a TDP host each newly touched GiB then maps its directory page too.
pub fn build_harness(m: &Mapping, gib_pages: bool) {
    const P_RW_U: u64 = 0x7;
    const PS: u64 = 0x80;
    m.write_u64(PML4_OFF, (HARNESS_GPA + PDPT_OFF) | P_RW_U);
    for g in 0..(IDENTITY_LIMIT >> 30) {
        if gib_pages {
            m.write_u64(PDPT_OFF + g * 8, (g << 30) | P_RW_U | PS);
            continue;
        }
        let pd = PD_OFF + g * 0x1000;
        m.write_u64(PDPT_OFF + g * 8, (HARNESS_GPA + pd) | P_RW_U);
        for j in 0..512u64 {
            m.write_u64(pd + j * 8, ((g << 30) | (j << 21)) | P_RW_U | PS);
        }
    }
    // GDT: null, kernel code/data, user data (0x1b), user code (0x23), TSS (0x28).
    let gdt = [0u64, 0x00af_9a00_0000_ffff, 0x00cf_9200_0000_ffff, 0x00cf_f200_0000_ffff, 0x00af_fa00_0000_ffff];
    for (i, d) in gdt.iter().enumerate() {
        m.write_u64(GDT_OFF + i as u64 * 8, *d);
    }
    m.write_bytes(CODE_OFF, privmem_guest::x86_cpl3::code());
}

/// Put vCPU `v` in 64-bit mode at CPL3 with IOPL 3 (or at CPL0 with `cpl0`: the GDT's kernel
/// code and data), at the start of the command loop.
pub fn init_vcpu(kvm: &Kvm, vcpu: &VcpuFd, v: u64, cpl0: bool) -> std::io::Result<()> {
    let cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(std::io::Error::from)?;
    vcpu.set_cpuid2(&cpuid).map_err(std::io::Error::from)?;
    let mut s: kvm_sregs = vcpu.get_sregs().map_err(std::io::Error::from)?;
    let (code_sel, data_sel) = if cpl0 { (0x08, 0x10) } else { (0x23, 0x1b) };
    s.cs = seg(code_sel, 11, 1, 0);
    let data = seg(data_sel, 3, 0, 1);
    s.ds = data;
    s.es = data;
    s.fs = data;
    s.gs = data;
    s.ss = data;
    s.tr = kvm_segment {
        base: HARNESS_GPA + GDT_OFF + 0x100,
        limit: 0x67,
        selector: 0x28,
        type_: 11,
        present: 1,
        dpl: 0,
        db: 0,
        s: 0,
        l: 0,
        g: 0,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    s.ldt = kvm_segment { unusable: 1, ..Default::default() };
    s.gdt.base = HARNESS_GPA + GDT_OFF;
    s.gdt.limit = GDT_LIMIT;
    s.idt.base = HARNESS_GPA + IDT_BASE_OFF;
    s.idt.limit = 0;
    s.cr0 = GUEST_CR0;
    s.cr3 = HARNESS_GPA + PML4_OFF;
    s.cr4 = GUEST_CR4;
    s.efer = GUEST_EFER;
    vcpu.set_sregs(&s).map_err(std::io::Error::from)?;
    reset_regs(vcpu, v)
}

/// Rewrite the guest's registers: start of the command loop, empty batch index.
pub fn reset_regs(vcpu: &VcpuFd, v: u64) -> std::io::Result<()> {
    let r = kvm_regs {
        rip: HARNESS_GPA + CODE_OFF,
        rsp: stack_top(v),
        rflags: 0x3002,
        rdi: cmd_page(v),
        r12: res_page(v),
        rbx: 0,
        ..Default::default()
    };
    vcpu.set_regs(&r).map_err(std::io::Error::from)
}

/// How one command of a batch ended, where it did not simply complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmdExit {
    Mmio,
    MemoryFault { private: bool },
}

/// A KVM_HC_MAP_GPA_RANGE exit: the batch stops there; the caller converts, sets the
/// hypercall's return in `kvm_run` and runs the batch on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapGpaExit {
    pub gpa: u64,
    pub pages: u64,
    pub attrs: u64,
}

#[derive(Debug)]
pub enum BatchError {
    Timeout,
    Guest(String),
    /// Not an error: the batch stopped at a MapGPA exit (with the exits and runs so far).
    MapGpa(MapGpaExit, Vec<(u64, CmdExit)>, u64),
}

/// A slow guest is not a hung one (the lab runs under TCG, on a loaded machine): a batch times
/// out only after `window` with no progress, and in any case after this many windows.
const MAX_WINDOWS: u32 = 20;

/// The vCPU's control registers and descriptor tables, here and in the standalone C
/// reproducer (`report/kselftest.rs` writes them into its prelude): PG|WP|NE|ET|MP|PE, PAE,
/// LME|LMA; a GDT of six entries, the TSS and the (empty) IDT beside it.
pub const GUEST_CR0: u64 = 0x8005_0033;
pub const GUEST_CR4: u64 = 0x20;
pub const GUEST_EFER: u64 = 0x500;
pub const GDT_LIMIT: u16 = 0x2f;
pub const TSS_OFF: u64 = GDT_OFF + 0x100;
pub const IDT_BASE_OFF: u64 = GDT_OFF + 0x200;

/// Run the batch of `n` commands already written to the vCPU's command page until the guest
/// reports it done. Returns per-command exits (by index) and the number of KVM_RUN returns.
/// `progress` counts the commands the guest has finished; the batch times out when neither it
/// nor an exit moved for `window` (the watchdog kicks KVM_RUN out to look).
pub fn run_batch(
    vcpu: &mut VcpuFd,
    n: u64,
    window: Duration,
    watchdog: &Watchdog,
    progress: impl Fn() -> u64,
) -> Result<(Vec<(u64, CmdExit)>, u64), BatchError> {
    /// Disarms the watchdog on every way out.
    struct Disarm<'a>(&'a Watchdog);
    impl Drop for Disarm<'_> {
        fn drop(&mut self) {
            self.0.disarm();
        }
    }
    let _disarm = Disarm(watchdog);
    let mut exits = Vec::new();
    let mut runs = 0u64;
    let cap = Instant::now() + window * MAX_WINDOWS;
    let (mut seen, mut since) = (progress(), Instant::now());
    watchdog.arm(window);
    loop {
        let now = Instant::now();
        if now >= cap {
            return Err(BatchError::Timeout);
        }
        if now.duration_since(since) >= window {
            let p = progress();
            if p == seen {
                return Err(BatchError::Timeout);
            }
            (seen, since) = (p, now);
            watchdog.arm(window);
        }
        runs += 1;
        // A stale exit reason from an earlier exit must not be read as this one's: KVM fills
        // it only for the exits it reports (KVM_EXIT_MEMORY_FAULT comes with -EFAULT).
        vcpu.get_kvm_run().exit_reason = kvm_bindings::KVM_EXIT_UNKNOWN;
        let r = vcpu.run();
        let what = match r {
            Ok(VcpuExit::IoOut(port, _)) if port == PORT_DONE => return Ok((exits, runs)),
            Ok(VcpuExit::MmioRead(_, data)) => {
                data.fill(0);
                Some(CmdExit::Mmio)
            }
            Ok(VcpuExit::MmioWrite(..)) => Some(CmdExit::Mmio),
            Ok(VcpuExit::MemoryFault { flags, .. }) => Some(CmdExit::MemoryFault { private: flags & (1 << 3) != 0 }),
            Ok(VcpuExit::Hypercall(h)) if h.nr == privmem_guest::abi::KVM_HC_MAP_GPA_RANGE => {
                let m = MapGpaExit { gpa: h.args[0], pages: h.args[1], attrs: h.args[2] };
                return Err(BatchError::MapGpa(m, exits, runs));
            }
            Ok(VcpuExit::Intr) => None,
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => None,
            Ok(other) => return Err(BatchError::Guest(format!("unexpected exit {other:?}"))),
            Err(e) => return Err(BatchError::Guest(format!("KVM_RUN: {e}"))),
        };
        let Some(what) = what else { continue };
        // An exit is progress.
        since = Instant::now();
        watchdog.arm(window);
        let mut regs = vcpu.get_regs().map_err(|e| BatchError::Guest(format!("KVM_GET_REGS: {e}")))?;
        let idx = regs.rbx;
        if idx >= n {
            return Err(BatchError::Guest(format!("exit {what:?} outside any command (index {idx})")));
        }
        exits.push((idx, what));
        if let CmdExit::MemoryFault { .. } = what {
            // The access cannot complete: resume at the next command.
            regs.rbx += 1;
            regs.rip = HARNESS_GPA + CODE_OFF + privmem_guest::x86_cpl3::LOOP_OFFSET;
            vcpu.set_regs(&regs).map_err(|e| BatchError::Guest(format!("KVM_SET_REGS: {e}")))?;
        }
    }
}
