//! The emulated mode: the TD and SNP shims ([`privmem_guest::x86_cvm`]) in an ordinary VM, where
//! TDCALL and PVALIDATE raise #UD and the GHCB MSR #GP, and the host answers each from the
//! model; #VE and #VC are injected where the model says the platform delivers them.
//!
//! What this checks: the shims' own code, for real, on real KVM: the TD's boot from the reset
//! vector through 32-bit mode into 64-bit mode, `TDG.VP.INFO`, the command loop, the register
//! ABI of every TDCALL leaf, TDVMCALL and PVALIDATE it makes (the host checks each against the
//! guest op it runs), the GHCB MSR protocol's page-state changes, the #VE handler with
//! `TDG.VP.VEINFO.GET` and the #VC handler with an injected exception, and the result ABI.
//! What it does not: any TDX module, SEV firmware or KVM TDX/SNP code. Host ops are the
//! model's alone and are not checked; a guest op whose outcome is the host's (an exit, a dead
//! VM) is not run through the shim. Every output says `emulated`; nothing here counts as
//! conformance.

pub mod image;
mod run;
pub mod trap;

pub use image::{EncBits, Platform};

use super::mem::Mapping;
use super::{Backend, Observed, RealTrace, RunError};
use crate::backend::vcpu::seg;
use crate::oracle::run_model;
use crate::seq::*;
use kvm_bindings::{kvm_regs, kvm_segment, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use privmem_guest::abi::*;
use std::collections::BTreeMap;
use trap::*;

/// What the host expects the shim to trap on while a command runs, with the model's answer.
#[derive(Clone, Debug)]
enum Pending {
    None,
    Accept { rcx: u64, rax: u64 },
    MapGpa { gpa: u64, size: u64, r10: u64 },
    Pvalidate { rax: u64, size: u64, validate: u64, answer: (u64, bool) },
    Psc { next: u64, end: u64, op: u64 },
    VeInfo { gpa: u64 },
}

/// Counts for the summary line: guest steps run through the shim, and the rest.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    pub shim_steps: u64,
    pub traps: u64,
    pub injected: u64,
    pub host_steps: u64,
    pub host_outcome_steps: u64,
    /// #VC delivered without its error code (QEMU's TCG does that for vector 29).
    pub vc_code_dropped: u64,
    /// Injected events the platform lost (the access completed instead), injected again.
    pub injections_lost: u64,
}

pub struct EmulatedBackend {
    kvm: Kvm,
    /// Interrupts a KVM_RUN that overstays (one for the backend: it keeps a polling thread).
    watchdog: crate::backend::vcpu::Watchdog,
    pub counts: Counts,
    /// Answer ACCEPT and PVALIDATE wrongly (the harness's own test: the oracle must see it).
    pub tamper: bool,
}

struct Vm {
    vm: VmFd,
    vcpus: Vec<VcpuFd>,
    booted: Vec<bool>,
    harness: Mapping,
    boot: Mapping,
    /// Plain memory behind the scenario's accesses, by 2M region.
    pages: BTreeMap<u64, Mapping>,
    next_slot: u32,
    platform: Platform,
}

impl EmulatedBackend {
    pub fn open() -> Result<EmulatedBackend, String> {
        let kvm = Kvm::new().map_err(|e| format!("/dev/kvm: {e}"))?;
        Ok(EmulatedBackend {
            kvm,
            watchdog: crate::backend::vcpu::Watchdog::new(),
            counts: Counts::default(),
            tamper: false,
        })
    }

    fn new_vm(&self, platform: Platform, vcpus: u32) -> Result<Vm, RunError> {
        let setup = |what: &str, e: &dyn std::fmt::Display| RunError::Setup(format!("{what}: {e}"));
        let vm = self.kvm.create_vm().map_err(|e| setup("KVM_CREATE_VM", &e))?;
        let harness = Mapping::anon(HARNESS_SIZE as usize).map_err(|e| setup("mmap", &e))?;
        let boot = Mapping::anon(BOOT_SIZE as usize).map_err(|e| setup("mmap", &e))?;
        let gib = crate::backend::vcpu::has_gib_pages(&self.kvm);
        image::build_boot(&boot, &harness, EncBits::default(), gib);
        image::build_harness(&harness, platform);
        for (slot, gpa, m) in [(HARNESS_SLOT, HARNESS_GPA, &harness), (BOOT_SLOT, BOOT_GPA, &boot)] {
            let r = kvm_userspace_memory_region {
                slot,
                guest_phys_addr: gpa,
                memory_size: m.len as u64,
                userspace_addr: m.addr(),
                flags: 0,
            };
            // SAFETY: the mapping lives as long as the VM (both in `Vm`).
            unsafe { vm.set_user_memory_region(r) }.map_err(|e| setup("KVM_SET_USER_MEMORY_REGION", &e))?;
        }
        let cpuid = self.kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(|e| setup("CPUID", &e))?;
        let mut v = Vm {
            vm,
            vcpus: Vec::new(),
            booted: Vec::new(),
            harness,
            boot,
            pages: BTreeMap::new(),
            next_slot: 0,
            platform,
        };
        for i in 0..vcpus.max(1) {
            let fd = v.vm.create_vcpu(i as u64).map_err(|e| setup("KVM_CREATE_VCPU", &e))?;
            fd.set_cpuid2(&cpuid).map_err(|e| setup("KVM_SET_CPUID2", &e))?;
            initial_state(&fd, platform, i as u64).map_err(|e| setup("initial vCPU state", &e))?;
            v.vcpus.push(fd);
            v.booted.push(false);
        }
        Ok(v)
    }
}

/// A shim command (opcode, address, value, third word) for a guest op on `platform`: shared
/// accesses through the alias, a TD's MapGPA with the shared bit where it converts to shared,
/// PVALIDATE with the page size and validate/rescind, an SNP MapGPA as page-state changes of
/// its 4K pages (1 private, 2 shared). None where the shim has no command for the op.
pub fn shim_command(op: &Op, platform: Platform) -> Option<(u64, u64, u64, u64)> {
    let td = platform == Platform::Td;
    let va = |a: u64, shared: bool| if shared { SHARED_VA | a } else { a };
    Some(match *op {
        Op::Read { addr, shared, .. } => (OP_READ, va(addr, shared), 0, 0),
        Op::Write { addr, value, shared, .. } => (OP_WRITE, va(addr, shared), value, 0),
        Op::Touch { addr, .. } => (OP_TOUCH, addr, 0, 0),
        Op::Accept { addr, level, .. } if td => (OP_TD_ACCEPT, addr, level.tdx_level(), 0),
        Op::MapGpa { addr, size, private, .. } if td => {
            (OP_TD_MAP_GPA, if private { addr } else { addr | crate::model::tdx::TD_SHARED_BIT }, size, 0)
        }
        Op::Accept { addr, level, .. } if !td => (OP_SNP_PVALIDATE, addr, level.tdx_level(), 1),
        Op::Release { addr, level, .. } if !td => (OP_SNP_PVALIDATE, addr, level.tdx_level(), 0),
        Op::MapGpa { addr, size, private, .. } if !td => (OP_SNP_PSC, addr, size / 4096, if private { 1 } else { 2 }),
        _ => return None,
    })
}

/// A vCPU's state at launch. TD: what the TDX module sets (`td_vmcs_init.c`, `tdh_vp_init.c`):
/// the reset vector in 32-bit protected mode, paging off, CR0 = PE|NE, EFER.LME set. SNP: the
/// host's to choose before LAUNCH_FINISH, so 64-bit mode at the main code with the index in r9.
pub fn initial_state(fd: &VcpuFd, platform: Platform, index: u64) -> std::io::Result<()> {
    let mut s = fd.get_sregs()?;
    s.gdt.base = BOOT_GDT;
    s.gdt.limit = 31;
    s.idt.base = 0;
    s.idt.limit = 0;
    s.tr = kvm_segment { base: 0, limit: 0xffff, selector: 0, type_: 11, present: 1, ..Default::default() };
    s.ldt = kvm_segment { unusable: 1, ..Default::default() };
    let mut r = kvm_regs { rflags: 2, ..Default::default() };
    // In the lab QEMU's TCG hangs when a nested guest enters long mode from 32-bit code (seen
    // with the TD's boot page), so there a TD vCPU starts in 64-bit mode at the main code, as
    // an SNP one does; the boot page runs on hosts (this project's runs it on every case).
    let platform = if platform == Platform::Td && crate::backend::vcpu::in_lab() { Platform::Snp } else { platform };
    match platform {
        Platform::Td => {
            s.cs = seg(0x18, 11, 0, 1);
            s.ds = seg(0x10, 3, 0, 1);
            s.cr0 = 0x21;
            s.cr3 = 0;
            s.cr4 = 0x40;
            s.efer = 0x100;
            r.rip = 0xffff_fff0;
        }
        Platform::Snp => {
            s.cs = seg(0x08, 11, 1, 0);
            s.ds = seg(0x10, 3, 0, 1);
            s.cr0 = 0x8005_0033;
            s.cr3 = BOOT_PML4;
            s.cr4 = 0x20;
            s.efer = 0x500;
            r.rip = HARNESS_GPA + CODE_OFF;
            r.r9 = index;
        }
    }
    (s.es, s.fs, s.gs, s.ss) = (s.ds, s.ds, s.ds, s.ds);
    fd.set_sregs(&s).map_err(std::io::Error::from)?;
    fd.set_regs(&r).map_err(std::io::Error::from)
}

impl Backend for EmulatedBackend {
    fn name(&self) -> &'static str {
        "emulated"
    }

    fn unsupported(&self, seq: &Sequence) -> Option<String> {
        match seq.header.vm {
            VmType::Tdx | VmType::Snp => None,
            other => Some(format!("the emulated mode runs the TD and SNP shims; this is vm {}", other.name())),
        }
    }

    fn run(&mut self, seq: &Sequence) -> Result<RealTrace, RunError> {
        if let Some(why) = self.unsupported(seq) {
            return Err(RunError::Unsupported(why));
        }
        let platform = if seq.header.vm == VmType::Tdx { Platform::Td } else { Platform::Snp };
        let model = run_model(seq);
        let mut vm = self.new_vm(platform, seq.header.vcpus)?;
        let n = seq.steps.len();
        let mut t = RealTrace { observed: vec![Observed::NotChecked; n], views: vec![None; n], ..Default::default() };
        for (i, st) in seq.steps.iter().enumerate() {
            if !st.op.kind().is_guest() {
                self.counts.host_steps += 1;
                continue;
            }
            // The model's outcome is the platform's answer; past a model that stopped, none.
            let Some(o) = model.outcomes.get(i) else { break };
            match self.guest_step(&mut vm, &st.op, o, i)? {
                Some(got) => {
                    self.counts.shim_steps += 1;
                    t.guest_ops += 1;
                    t.observed[i] = Observed::Outcome(got);
                }
                None => self.counts.host_outcome_steps += 1,
            }
        }
        Ok(t)
    }
}
