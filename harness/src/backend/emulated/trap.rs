//! Answering the shim's trapped instructions in emulated mode: TDCALL and PVALIDATE (#UD), the
//! GHCB MSR (#GP). The shim's handler pushed the registers these instructions use; the host
//! reads them from the stack, checks them against the guest op it is running (the shim's
//! register ABI), writes the answer the model gives back into the pushed registers, and moves
//! the exception frame's RIP past the instruction.

use crate::seq::*;

/// The registers the trap handlers push, in the order they sit on the stack from RSP up: a
/// register's number is its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reg {
    R15,
    R14,
    R13,
    R12,
    R11,
    R10,
    R9,
    R8,
    Rdx,
    Rcx,
    Rax,
}

/// How many registers the handlers push.
pub const SAVED: usize = Reg::Rax as usize + 1;

/// The trapped context: the pushed registers, the frame's RIP and RFLAGS.
#[derive(Clone, Debug, Default)]
pub struct Trapped {
    pub regs: [u64; SAVED],
    pub rip: u64,
    pub rflags: u64,
}

impl Trapped {
    pub fn get(&self, r: Reg) -> u64 {
        self.regs[r as usize]
    }
    pub fn set(&mut self, r: Reg, v: u64) {
        self.regs[r as usize] = v;
    }
}

/// The instructions the shim may trap on, by their bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insn {
    Tdcall,
    Pvalidate,
    Wrmsr,
    Rdmsr,
}

impl Insn {
    pub fn decode(bytes: &[u8]) -> Option<(Insn, u64)> {
        match bytes {
            [0x66, 0x0f, 0x01, 0xcc, ..] => Some((Insn::Tdcall, 4)),
            [0xf2, 0x0f, 0x01, 0xff, ..] => Some((Insn::Pvalidate, 4)),
            [0x0f, 0x30, ..] => Some((Insn::Wrmsr, 2)),
            [0x0f, 0x32, ..] => Some((Insn::Rdmsr, 2)),
            _ => None,
        }
    }
}

/// TDCALL leaves and TDVMCALL subfunctions the shim uses (TDX module ABI; Linux's
/// `asm/shared/tdx.h`).
pub const TDG_VP_VMCALL: u64 = 0;
pub const TDG_VP_INFO: u64 = 1;
pub const TDG_VP_VEINFO_GET: u64 = 3;
pub const TDG_MEM_PAGE_ACCEPT: u64 = 6;
pub const TDVMCALL_MAP_GPA: u64 = 0x10001;
pub const TDVMCALL_IO: u64 = 30;
/// The GHCB MSR (`MSR_AMD64_SEV_ES_GHCB`) and the page-state-change codes of its protocol.
pub const MSR_GHCB: u64 = 0xc001_0130;
pub const GHCB_PSC_REQ: u64 = 0x014;
pub const GHCB_PSC_RESP: u64 = 0x015;
/// `EXIT_REASON_EPT_VIOLATION`, what `TDG.VP.VEINFO.GET` reports for an access to a pending page.
pub const EXIT_REASON_EPT_VIOLATION: u64 = 48;
/// The #VC error code the emulated mode delivers for an access to a page PVALIDATE has not
/// validated. 0x404 is the AMD APM's name for it as this project read it; nothing here can
/// check it (it waits for an SNP host).
pub const VC_PAGE_NOT_VALIDATED: u64 = 0x404;

/// The statuses whose operand is the S-EPT level the walk stopped at (`tdg_mem_page_accept.c`:
/// `api_error_with_operand_id(TDX_PAGE_ALREADY_ACCEPTED, ept_level)`, 0 for 4K).
fn status_has_level(s: TdxStatus) -> bool {
    matches!(s, TdxStatus::PageAlreadyAccepted | TdxStatus::PageSizeMismatch)
}

/// A TDX status as the module returns it in RAX: the status in the high half, its operand in
/// the low bits (the level, 0-based, for the two statuses that carry one; RCX, operand 1, for
/// OPERAND_INVALID of ACCEPT's GPA). Emulated mode answers the shim in the same ABI.
pub fn tdx_rax(o: &Outcome) -> Option<u64> {
    match o {
        Outcome::Ok => Some(0),
        Outcome::Tdx(s, Some(l)) if status_has_level(*s) => {
            Some(s.value() | Level::ALL.iter().position(|x| x == l).unwrap_or(0) as u64)
        }
        Outcome::Tdx(TdxStatus::OperandInvalid, _) => Some(TdxStatus::OperandInvalid.value() | 1),
        Outcome::Tdx(s, _) => Some(s.value()),
        _ => None,
    }
}

/// The outcome a shim's ACCEPT result (RAX) stands for.
pub fn tdx_outcome(rax: u64) -> Option<Outcome> {
    if rax == 0 {
        return Some(Outcome::Ok);
    }
    let s = TdxStatus::ALL.iter().copied().find(|s| s.value() == rax & 0xffff_ffff_0000_0000)?;
    let level = if status_has_level(s) { Some(*Level::ALL.get((rax & 0xff) as usize)?) } else { None };
    Some(Outcome::Tdx(s, level))
}

/// R10 of a MapGPA in emulated mode, and back.
pub fn vmcall_r10(o: &Outcome) -> Option<u64> {
    match o {
        Outcome::Ok => Some(0),
        Outcome::Vmcall(s) => Some(s.value()),
        _ => None,
    }
}

pub fn vmcall_outcome(r10: u64) -> Option<Outcome> {
    if r10 == 0 {
        return Some(Outcome::Ok);
    }
    VmcallStatus::ALL.iter().copied().find(|s| s.value() == r10).map(Outcome::Vmcall)
}

/// PVALIDATE's RAX and carry flag, and back from the shim's result (CF in bit 32).
pub fn pvalidate_regs(o: &Outcome) -> Option<(u64, bool)> {
    match o {
        Outcome::Pvalidate(rc, cf) => Some((rc.value() as u64, *cf)),
        _ => None,
    }
}

pub fn pvalidate_outcome(v: u64) -> Option<Outcome> {
    let rc = PvalidateRc::ALL.iter().copied().find(|r| r.value() as u64 == v & 0xffff_ffff)?;
    Some(Outcome::Pvalidate(rc, v >> 32 & 1 == 1))
}
