//! Running a case in emulated mode: each guest op as one command of the shim, the model's
//! outcome as the answer to whatever the shim traps on, the shim's result read back.

use super::*;
use std::time::{Duration, Instant};

/// A shim command: opcode, address, value, third word.
type Cmd = (u64, u64, u64, u64);

/// How long a command may run before the case is a timeout (TCG in the lab is slow).
const LIMIT: Duration = Duration::from_secs(20);

enum TrapEnd {
    Continue,
    BatchDone,
}

impl EmulatedBackend {
    /// One guest op through the shim; None when its outcome is the host's (not run).
    pub(super) fn guest_step(
        &mut self,
        vm: &mut Vm,
        op: &Op,
        o: &Outcome,
        step: usize,
    ) -> Result<Option<Outcome>, RunError> {
        let td = vm.platform == Platform::Td;
        let v = op.vcpu().unwrap_or(0) as usize;
        if v >= vm.vcpus.len() {
            return Ok(None);
        }
        if !vm.booted[v] {
            // The first run boots the shim (the TD from its reset vector) to an empty batch.
            self.run_batch(vm, v, &[], Pending::None, None, step)?;
            vm.booted[v] = true;
        }
        let Some(cmd) = shim_command(op, vm.platform) else { return Ok(None) };
        let (cmd, pending, inject): (Cmd, Pending, Option<(u8, Option<u32>)>) = match (op, o) {
            (Op::Read { addr, .. } | Op::Write { addr, .. } | Op::Touch { addr, .. }, Outcome::Ve) if plain(*addr) => {
                let exc = if td { (20, None) } else { (29, Some(VC_PAGE_NOT_VALIDATED as u32)) };
                // Memory behind the access, so that a lost injection shows as a completed
                // access (and is injected again) rather than as an MMIO exit.
                vm.page(*addr).map_err(RunError::Setup)?;
                ((OP_TOUCH, cmd.1, 0, 0), Pending::VeInfo { gpa: *addr }, Some(exc))
            }
            (Op::Read { addr, .. }, Outcome::Value(x)) if plain(*addr) => {
                let (m, off) = vm.page(*addr).map_err(RunError::Setup)?;
                m.write_u64(off, *x);
                (cmd, Pending::None, None)
            }
            (Op::Write { addr, .. } | Op::Touch { addr, .. }, Outcome::Ok) if plain(*addr) => {
                vm.page(*addr).map_err(RunError::Setup)?;
                (cmd, Pending::None, None)
            }
            (Op::Accept { addr, level, .. }, o) if td => match tdx_rax(o) {
                Some(rax) => (cmd, Pending::Accept { rcx: addr | level.tdx_level(), rax }, None),
                None => return Ok(None),
            },
            (Op::MapGpa { size, .. }, o) if td => match vmcall_r10(o) {
                Some(r10) => (cmd, Pending::MapGpa { gpa: cmd.1, size: *size, r10 }, None),
                None => return Ok(None),
            },
            (Op::Accept { addr, .. } | Op::Release { addr, .. }, o) if !td => match pvalidate_regs(o) {
                Some(answer) => (cmd, Pending::Pvalidate { rax: *addr, size: cmd.2, validate: cmd.3, answer }, None),
                None => return Ok(None),
            },
            (Op::MapGpa { addr, size, .. }, Outcome::Ok) if !td && addr.is_multiple_of(4096) => {
                (cmd, Pending::Psc { next: *addr, end: addr + size, op: cmd.3 }, None)
            }
            _ => return Ok(None),
        };
        let res = CMD_OFF + v as u64 * CMD_STRIDE + 0x1000;
        self.run_batch(vm, v, &[cmd], pending.clone(), inject, step)?;
        // Under QEMU's TCG (the lab) an injected event is now and then lost on its way into the
        // nested guest (an exit while it is delivered, its exit interrupt info not kept): the
        // access then completes. Inject again, a few times, and count it.
        for _ in 0..3 {
            if inject.is_none() || vm.harness.read_u64(res) != ST_DONE {
                break;
            }
            self.counts.injections_lost += 1;
            self.run_batch(vm, v, &[cmd], pending.clone(), inject, step)?;
        }
        let (status, value) = (vm.harness.read_u64(res), vm.harness.read_u64(res + 8));
        let bad = |what: &str| RunError::Guest {
            step,
            detail: format!(
                "emulated: the shim's result for `{}` is {what} (status {status:#x}, value {value:#x})",
                crate::seq::text::print_op(op)
            ),
        };
        let got = match (status, cmd.0) {
            (ST_EXC, _) if inject.is_some() => {
                // The handler must have learnt what the platform said: the GPA, or the error code.
                let want = if td { cmd.1 & !SHARED_VA & !0xfff } else { VC_PAGE_NOT_VALIDATED };
                let got = if td { value & !0xfff } else { value };
                // All ones: the platform delivered #VC without its error code (QEMU's TCG).
                if !td && got == u64::MAX {
                    self.counts.vc_code_dropped += 1;
                } else if got != want {
                    return Err(bad("not what the exception carried"));
                }
                Outcome::Ve
            }
            (ST_DONE, OP_READ) => Outcome::Value(value),
            (ST_DONE, OP_WRITE) => {
                let (m, off) = vm.page(cmd.1 & !SHARED_VA).map_err(RunError::Setup)?;
                if m.read_u64(off) != cmd.2 {
                    return Err(bad("a write that did not reach memory"));
                }
                Outcome::Ok
            }
            (ST_DONE, OP_TOUCH) => Outcome::Ok,
            (ST_DONE, OP_TD_ACCEPT) => tdx_outcome(value).ok_or_else(|| bad("no TDX status"))?,
            (ST_DONE, OP_TD_MAP_GPA) => vmcall_outcome(value).ok_or_else(|| bad("no TDVMCALL status"))?,
            (ST_DONE, OP_SNP_PVALIDATE) => pvalidate_outcome(value).ok_or_else(|| bad("no PVALIDATE code"))?,
            (ST_DONE, OP_SNP_PSC) if value == 0 => Outcome::Ok,
            _ => return Err(bad("unexpected")),
        };
        if inject.is_some() {
            self.counts.injected += 1;
        }
        Ok(Some(got))
    }

    /// Run `cmds` on vCPU `v` to the batch's end, answering traps from `pending`.
    fn run_batch(
        &mut self,
        vm: &mut Vm,
        v: usize,
        cmds: &[Cmd],
        mut pending: Pending,
        inject: Option<(u8, Option<u32>)>,
        step: usize,
    ) -> Result<(), RunError> {
        let cmd = CMD_OFF + v as u64 * CMD_STRIDE;
        for (i, c) in cmds.iter().enumerate() {
            let at = cmd + CMD_FIRST + i as u64 * CMD_SIZE;
            for (k, w) in [c.0, c.1, c.2, c.3].iter().enumerate() {
                vm.harness.write_u64(at + k as u64 * 8, *w);
            }
            vm.harness.write_u64(cmd + 0x1000 + i as u64 * RES_SIZE, 0);
        }
        vm.harness.write_u64(cmd, cmds.len() as u64);
        let guest = |detail: String| RunError::Guest { step, detail: format!("emulated: {detail}") };
        if let Some((nr, code)) = inject {
            // First let KVM finish the exit it is in (the batch end's port write), as KVM wants
            // before userspace changes vCPU state: where SVM gives no next RIP, completing it
            // emulates the instruction, and x86_emulate_instruction() clears the exception
            // queue. KVM_RUN with immediate_exit completes it and returns.
            vm.vcpus[v].set_kvm_immediate_exit(1);
            let r = vm.vcpus[v].run().map(|_| ()).map_err(|e| e.errno());
            vm.vcpus[v].set_kvm_immediate_exit(0);
            if r != Err(libc::EINTR) && r.is_err() {
                return Err(guest(format!("KVM_RUN (immediate exit): {r:?}")));
            }
            let mut ev = vm.vcpus[v].get_vcpu_events().map_err(|e| guest(format!("KVM_GET_VCPU_EVENTS: {e}")))?;
            ev.exception.injected = 1;
            ev.exception.nr = nr;
            ev.exception.has_error_code = code.is_some() as u8;
            ev.exception.error_code = code.unwrap_or(0);
            ev.flags = 0;
            vm.vcpus[v].set_vcpu_events(&ev).map_err(|e| guest(format!("KVM_SET_VCPU_EVENTS: {e}")))?;
        }
        let start = Instant::now();
        // Where the vCPU is, for an error: a shim that hangs or faults says where.
        let at = |vm: &Vm| {
            let r = vm.vcpus[v].get_regs().map(|r| format!("rip {:#x} rsp {:#x} rax {:#x}", r.rip, r.rsp, r.rax));
            let s = vm.vcpus[v]
                .get_sregs()
                .map(|s| format!("cr0 {:#x} cr3 {:#x} efer {:#x} cs.l {}", s.cr0, s.cr3, s.efer, s.cs.l));
            format!("{}; {}", r.unwrap_or_default(), s.unwrap_or_default())
        };
        loop {
            if start.elapsed() > LIMIT {
                return Err(guest(format!("no batch end within {}s ({})", LIMIT.as_secs(), at(vm))));
            }
            self.watchdog.arm(LIMIT);
            let r = vm.vcpus[v].run();
            self.watchdog.disarm();
            let how = match r {
                Ok(VcpuExit::IoOut(PORT_DONE, _)) => return Ok(()),
                Ok(VcpuExit::IoOut(PORT_TRAP_UD, _)) => Via::Stack { error_code: false },
                Ok(VcpuExit::IoOut(PORT_TRAP_GP, _)) => Via::Stack { error_code: true },
                // Some hosts' KVM (this project's, PVM) report an instruction they cannot
                // emulate to userspace instead of raising #UD: the same answer, in the live
                // registers (the shim's #UD handler is then not exercised).
                Ok(VcpuExit::InternalError) => Via::Registers,
                Ok(VcpuExit::Intr) => continue,
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
                Ok(other) => {
                    let what = format!("{other:?}");
                    return Err(guest(format!("unexpected exit {what} ({})", at(vm))));
                }
                Err(e) => return Err(guest(format!("KVM_RUN: {e}"))),
            };
            self.counts.traps += 1;
            match self.trap(vm, v, how, &mut pending).map_err(guest)? {
                TrapEnd::BatchDone => return Ok(()),
                TrapEnd::Continue => {}
            }
        }
    }

    /// Answer one trapped instruction: read the pushed registers and the frame, check the
    /// instruction's operands against the op being run, write the answer back.
    fn trap(&mut self, vm: &mut Vm, v: usize, how: Via, pending: &mut Pending) -> Result<TrapEnd, String> {
        let mut regs = vm.vcpus[v].get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
        let rd = |vm: &Vm, gva: u64| vm.read_u64(gva).ok_or(format!("the trap frame at {gva:#x} is outside the image"));
        let mut t = Trapped::default();
        let frame = match how {
            Via::Stack { error_code } => {
                for i in 0..SAVED {
                    t.regs[i] = rd(vm, regs.rsp + i as u64 * 8)?;
                }
                let frame = regs.rsp + SAVED as u64 * 8 + if error_code { 8 } else { 0 };
                t.rip = rd(vm, frame)?;
                t.rflags = rd(vm, frame + 16)?;
                frame
            }
            Via::Registers => {
                t.regs = live(&regs);
                t.rip = regs.rip;
                t.rflags = regs.rflags;
                0
            }
        };
        let bytes = vm.read_bytes(t.rip, 4).ok_or(format!("the trapped RIP {:#x} is outside the image", t.rip))?;
        let Some((insn, len)) = Insn::decode(&bytes) else {
            return Err(format!("{how:?} at {:#x}: {bytes:02x?} is not an instruction the shim traps on", t.rip));
        };
        let mut end = TrapEnd::Continue;
        let mut extra = 0;
        let leaf = t.get(Reg::Rax);
        match (insn, &mut *pending) {
            (Insn::Tdcall, _) if leaf == TDG_VP_INFO => {
                t.set(Reg::Rax, 0);
                t.set(Reg::Rcx, 48);
                t.set(Reg::Rdx, 0);
                t.set(Reg::R8, vm.vcpus.len() as u64 | (vm.vcpus.len() as u64) << 32);
                t.set(Reg::R9, v as u64);
            }
            (Insn::Tdcall, Pending::Accept { rcx, rax }) if leaf == TDG_MEM_PAGE_ACCEPT => {
                if t.get(Reg::Rcx) != *rcx {
                    return Err(format!("TDG.MEM.PAGE.ACCEPT with rcx {:#x}, the op says {rcx:#x}", t.get(Reg::Rcx)));
                }
                // The harness's own test: a platform that answers otherwise must be seen.
                let rax = if self.tamper { TdxStatus::PageAlreadyAccepted.value() } else { *rax };
                t.set(Reg::Rax, rax);
                *pending = Pending::None;
            }
            (Insn::Tdcall, Pending::VeInfo { gpa }) if leaf == TDG_VP_VEINFO_GET => {
                t.set(Reg::Rax, 0);
                t.set(Reg::Rcx, EXIT_REASON_EPT_VIOLATION);
                t.set(Reg::Rdx, 0);
                t.set(Reg::R8, *gpa);
                t.set(Reg::R9, *gpa);
                t.set(Reg::R10, 0);
                *pending = Pending::None;
            }
            (Insn::Tdcall, _) if leaf == TDG_VP_VMCALL && t.get(Reg::R10) == 0 && t.get(Reg::R11) == TDVMCALL_IO => {
                if t.get(Reg::R14) != PORT_DONE as u64 || t.get(Reg::R13) != 1 {
                    return Err(format!("TDVMCALL<Instruction.IO> to port {:#x}, not the done port", t.get(Reg::R14)));
                }
                t.set(Reg::R10, 0);
                end = TrapEnd::BatchDone;
            }
            (Insn::Tdcall, Pending::MapGpa { gpa, size, r10 })
                if leaf == TDG_VP_VMCALL && t.get(Reg::R11) == TDVMCALL_MAP_GPA =>
            {
                if (t.get(Reg::R12), t.get(Reg::R13)) != (*gpa, *size) {
                    return Err(format!(
                        "TDVMCALL<MapGPA>({:#x}, {:#x}), the op says ({gpa:#x}, {size:#x})",
                        t.get(Reg::R12),
                        t.get(Reg::R13)
                    ));
                }
                t.set(Reg::R10, *r10);
                *pending = Pending::None;
            }
            (Insn::Pvalidate, Pending::Pvalidate { rax, size, validate, answer }) => {
                let got = (t.get(Reg::Rax), t.get(Reg::Rcx) & 0xffff_ffff, t.get(Reg::Rdx) & 0xffff_ffff);
                if got != (*rax, *size, *validate) {
                    return Err(format!("PVALIDATE{got:x?}, the op says ({rax:#x}, {size}, {validate})"));
                }
                t.set(Reg::Rax, answer.0);
                t.rflags = (t.rflags & !1) | (answer.1 ^ self.tamper) as u64;
                *pending = Pending::None;
            }
            (Insn::Wrmsr, Pending::Psc { next, op, .. }) if t.get(Reg::Rcx) & 0xffff_ffff == MSR_GHCB => {
                let req = (t.get(Reg::Rdx) << 32) | (t.get(Reg::Rax) & 0xffff_ffff);
                let want = (*next & 0x000f_ffff_ffff_f000) | (*op << 52) | GHCB_PSC_REQ;
                if req != want {
                    return Err(format!("GHCB MSR request {req:#x}, the op says {want:#x}"));
                }
                // The VMGEXIT that follows is the hypervisor's turn, which this answer is: the
                // host takes both (an ordinary VM has no GHCB, and a VMMCALL there is KVM's).
                let next_insn = vm.read_bytes(t.rip + 2, 4).unwrap_or_default();
                if next_insn != [0xf3, 0x0f, 0x01, 0xd9] {
                    return Err(format!("the GHCB MSR write is not followed by VMGEXIT ({next_insn:02x?})"));
                }
                extra = 4;
            }
            (Insn::Rdmsr, Pending::Psc { next, end: last, .. }) if t.get(Reg::Rcx) & 0xffff_ffff == MSR_GHCB => {
                // The model converted the whole range at once; each page's response is success.
                t.set(Reg::Rax, GHCB_PSC_RESP);
                t.set(Reg::Rdx, 0);
                *next += 4096;
                if *next >= *last {
                    *pending = Pending::None;
                }
            }
            (i, p) => {
                return Err(format!("{i:?} (rax {leaf:#x}, r11 {:#x}) while the op expects {p:?}", t.get(Reg::R11)))
            }
        }
        t.rip += len + extra;
        match how {
            Via::Stack { .. } => {
                for i in 0..SAVED {
                    vm.write_u64(regs.rsp + i as u64 * 8, t.regs[i]);
                }
                vm.write_u64(frame, t.rip);
                vm.write_u64(frame + 16, t.rflags);
            }
            Via::Registers => {
                set_live(&mut regs, &t.regs);
                regs.rip = t.rip;
                regs.rflags = t.rflags;
                vm.vcpus[v].set_regs(&regs).map_err(|e| format!("KVM_SET_REGS: {e}"))?;
            }
        }
        Ok(end)
    }
}

/// How a trapped instruction reached the host: through the shim's handler (the registers
/// pushed on its stack, the exception frame above them), or as KVM's report of an instruction
/// it could not emulate (the live registers).
#[derive(Clone, Copy, Debug)]
enum Via {
    Stack { error_code: bool },
    Registers,
}

/// The live registers in [`Reg`]'s order, and back.
fn live(r: &kvm_regs) -> [u64; 11] {
    [r.r15, r.r14, r.r13, r.r12, r.r11, r.r10, r.r9, r.r8, r.rdx, r.rcx, r.rax]
}

fn set_live(r: &mut kvm_regs, v: &[u64; 11]) {
    [r.r15, r.r14, r.r13, r.r12, r.r11, r.r10, r.r9, r.r8, r.rdx, r.rcx, r.rax] = *v;
}

/// Whether a guest access can go to plain memory in the emulated VM (inside the identity map,
/// clear of the boot region and the harness).
fn plain(addr: u64) -> bool {
    // Whole 2M regions: a scenario page becomes a 2M memslot.
    let (s, e) = (addr & !(SZ_2M - 1), (addr & !(SZ_2M - 1)) + SZ_2M);
    let clear = |b: u64, n: u64| e <= b || s >= b + n;
    addr < IDENTITY_LIMIT && clear(BOOT_GPA, BOOT_SIZE) && clear(HARNESS_GPA, HARNESS_SIZE)
}

impl Vm {
    /// The host's view of guest memory at `gpa` (identity: the shim's VAs are GPAs), where the
    /// image or a scenario page has it.
    fn at(&self, gpa: u64) -> Option<(&Mapping, u64)> {
        if (HARNESS_GPA..HARNESS_GPA + HARNESS_SIZE).contains(&gpa) {
            return Some((&self.harness, gpa - HARNESS_GPA));
        }
        if (BOOT_GPA..BOOT_GPA + BOOT_SIZE).contains(&gpa) {
            return Some((&self.boot, gpa - BOOT_GPA));
        }
        let base = gpa & !(SZ_2M - 1);
        self.pages.get(&base).map(|m| (m, gpa - base))
    }
    fn read_u64(&self, gpa: u64) -> Option<u64> {
        self.at(gpa).filter(|(m, o)| *o as usize + 8 <= m.len).map(|(m, o)| m.read_u64(o))
    }
    fn write_u64(&self, gpa: u64, v: u64) {
        if let Some((m, o)) = self.at(gpa) {
            m.write_u64(o, v);
        }
    }
    fn read_bytes(&self, gpa: u64, n: usize) -> Option<Vec<u8>> {
        (0..n as u64)
            .map(|i| self.at(gpa + i).map(|(m, o)| m.read_u64(o & !7).to_le_bytes()[(o & 7) as usize]))
            .collect()
    }
    /// The plain page behind a scenario GPA, its 2M region made a memslot on first use.
    fn page(&mut self, gpa: u64) -> Result<(&Mapping, u64), String> {
        let base = gpa & !(SZ_2M - 1);
        if !self.pages.contains_key(&base) {
            let m = Mapping::anon(SZ_2M as usize).map_err(|e| format!("mmap: {e}"))?;
            let r = kvm_userspace_memory_region {
                slot: self.next_slot,
                guest_phys_addr: base,
                memory_size: SZ_2M,
                userspace_addr: m.addr(),
                flags: 0,
            };
            // SAFETY: the mapping is kept in `pages` as long as the VM.
            unsafe { self.vm.set_user_memory_region(r) }.map_err(|e| format!("KVM_SET_USER_MEMORY_REGION: {e}"))?;
            self.next_slot += 1;
            self.pages.insert(base, m);
        }
        let off = (gpa & !0xfff) - base + VALUE_OFFSET;
        Ok((&self.pages[&base], off))
    }
}
