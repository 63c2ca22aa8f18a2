//! The confidential-VM shim: the command interpreter of [`crate::x86_cpl3`] for TDX and SEV-SNP
//! guests, with their own instructions for what a confidential guest does: `TDG.MEM.PAGE.ACCEPT`
//! and `TDG.VP.VMCALL<MapGPA>` on TDX, `PVALIDATE` and page-state changes over the GHCB MSR
//! protocol on SNP, and handlers for the exceptions the platform delivers (#VE with
//! `TDG.VP.VEINFO.GET`, #VC with its error code). Same command page, same result page, same
//! opcodes for plain accesses.
//!
//! Two pieces of code:
//! - the boot page ([`boot_code`]), at [`crate::abi::BOOT_CODE`] below 4 GiB: a TD vCPU starts
//!   at the reset vector in 32-bit protected mode with paging off and EFER.LME set (the TDX
//!   module's initial state); the page enables PAE and paging with the boot PML4 and jumps to
//!   64-bit code. An SNP vCPU starts in 64-bit mode at the main code (its registers are the
//!   host's to set before launch), with its vCPU index in `r9`.
//! - the main code ([`code`]), at `HARNESS_GPA + CODE_OFF`: loads the IDT the image holds, learns
//!   its vCPU index (`TDG.VP.INFO` on a TD), and runs the command loop. Registers in the loop:
//!   `rdi` command page, `rbp` result page, `rbx` next command (the TDX and GHCB calls use rax,
//!   rcx, rdx and r8 to r15). The command and result pages are the one part of the image the
//!   host must read and write, so the shim reaches them through the shared alias
//!   ([`crate::abi::SHARED_VA`]): on a TD or SNP guest they are shared memory; the code, page
//!   tables, IDT and stacks stay private.
//!
//! A batch ends with the done port (`out` on SNP; `TDG.VP.VMCALL<Instruction.IO>` on a TD, whose
//! port I/O would raise #VE). The index is reset *before* that, so an exception the platform
//! delivers while the vCPU waits for the next batch ends command 0 of that batch: that is how
//! the emulated mode delivers #VE and #VC at a known point.
//!
//! In emulated mode (an ordinary VM) TDCALL and PVALIDATE raise #UD and the GHCB MSR #GP; the
//! handlers push the registers those instructions use and report to [`crate::abi::PORT_TRAP_UD`]
//! or [`crate::abi::PORT_TRAP_GP`], where the host answers by rewriting the pushed registers and
//! the frame's RIP. On a real TD or SNP guest those handlers never run.

use crate::abi::*;
use core::arch::global_asm;

global_asm!(
    ".pushsection .rodata.privmem_cvm_boot, \"a\"",
    ".balign 16",
    ".global privmem_cvm_boot_start",
    "privmem_cvm_boot_start:",
    ".code32",
    "lgdt [{gdtr}]",
    "mov eax, cr4",
    "or eax, 0x20",
    "mov cr4, eax",
    "mov eax, {pml4}",
    "mov cr3, eax",
    "mov eax, cr0",
    "or eax, 0x80000000",
    "mov cr0, eax",
    // jmp far 0x08:boot64: into 64-bit mode (EFER.LME was set, paging is on).
    ".byte 0xea",
    ".long {boot_code} + (3f - privmem_cvm_boot_start)",
    ".word 0x08",
    ".code64",
    "3:",
    "mov eax, 0x10",
    "mov ds, ax",
    "mov es, ax",
    "mov ss, ax",
    "movabs rax, {main}",
    "jmp rax",
    ".global privmem_cvm_boot_end",
    "privmem_cvm_boot_end:",
    ".popsection",
    gdtr = const BOOT_GDTR,
    pml4 = const BOOT_PML4,
    boot_code = const BOOT_CODE,
    main = const HARNESS_GPA + CODE_OFF,
);

global_asm!(
    // The registers the trap handlers push, in the order the host reads them from the stack
    // (`harness/src/backend/emulated/trap.rs`, SAVED: r15 at the top).
    ".macro push_trap_regs",
    "push rax",
    "push rcx",
    "push rdx",
    "push r8",
    "push r9",
    "push r10",
    "push r11",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    ".endm",
    ".macro pop_trap_regs",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop r11",
    "pop r10",
    "pop r9",
    "pop r8",
    "pop rdx",
    "pop rcx",
    "pop rax",
    ".endm",
    ".pushsection .rodata.privmem_cvm, \"a\"",
    ".balign 16",
    ".global privmem_cvm_start",
    "privmem_cvm_start:",
    "movabs rsp, {boot_stack}",
    "movabs rax, {idtr}",
    "lidt [rax]",
    "movabs rax, {flavour}",
    "cmp qword ptr [rax], {td}",
    "jne 1f",
    // TDG.VP.INFO: r9[31:0] is this vCPU's index.
    "mov eax, 1",
    ".byte 0x66, 0x0f, 0x01, 0xcc",
    "1:",
    "mov r9d, r9d",
    "mov rax, r9",
    "imul rax, rax, {cmd_stride}",
    "movabs rdi, {cmd_base}",
    "add rdi, rax",
    "lea rbp, [rdi + 0x1000]",
    "mov rax, r9",
    "inc rax",
    "imul rax, rax, {stack_size}",
    "movabs rsp, {stack_base}",
    "add rsp, rax",
    "xor ebx, ebx",
    // Touch what delivering #VE or #VC reads and writes (the stack, the IDT's gates, the GDT's
    // code segment, the handlers' code) before the platform delivers one: a delivery that
    // faults in nested paging lost the injected event under QEMU's TCG (the lab), where
    // nothing had touched the boot GDT of an SNP guest, which starts in 64-bit mode.
    "push rax",
    "pop rax",
    "movabs rax, {idt}",
    "mov rcx, qword ptr [rax + 20 * 16]",
    "mov rcx, qword ptr [rax + 29 * 16]",
    "movabs rax, {gdt}",
    "mov rcx, qword ptr [rax + 8]",
    "lea rax, [rip + privmem_cvm_ve]",
    "mov cl, byte ptr [rax]",
    "lea rax, [rip + privmem_cvm_vc]",
    "mov cl, byte ptr [rax]",

    // loop:
    crate::fetch_command!(),
    "mov r14, qword ptr [rsi + 24]",
    "cmp rdx, {op_read}",
    "je 3f",
    "cmp rdx, {op_touch}",
    "je 3f",
    "cmp rdx, {op_write}",
    "je 4f",
    "cmp rdx, {op_accept}",
    "je 10f",
    "cmp rdx, {op_map_gpa}",
    "je 11f",
    "cmp rdx, {op_pvalidate}",
    "je 12f",
    "cmp rdx, {op_psc}",
    "je 13f",
    "mov r10, rbx",
    "shl r10, {res_shift}",
    "add r10, rbp",
    "mov qword ptr [r10], {st_bad}",
    "jmp 5f",
    // read / touch
    "3:",
    "mov rax, qword ptr [r8]",
    "jmp 9f",
    // write
    "4:",
    "mov qword ptr [r8], r9",
    "xor eax, eax",
    "jmp 9f",
    // TDG.MEM.PAGE.ACCEPT: rcx = GPA | level
    "10:",
    "mov rcx, r8",
    "or rcx, r9",
    "mov eax, 6",
    ".byte 0x66, 0x0f, 0x01, 0xcc",
    "jmp 9f",
    // TDG.VP.VMCALL<MapGPA>: r10 = 0 (standard), r11 = 0x10001, r12 = GPA, r13 = size;
    // rcx exposes r10 to r13. The status comes back in r10.
    "11:",
    "xor r10d, r10d",
    "mov r11d, 0x10001",
    "mov r12, r8",
    "mov r13, r9",
    "mov ecx, 0x3c00",
    "xor eax, eax",
    ".byte 0x66, 0x0f, 0x01, 0xcc",
    "mov rax, r10",
    "jmp 9f",
    // PVALIDATE: rax = address, ecx = page size, edx = validate; rc in eax, CF = no update.
    "12:",
    "mov rax, r8",
    "mov ecx, r9d",
    "mov edx, r14d",
    ".byte 0xf2, 0x0f, 0x01, 0xff",
    "setc cl",
    "movzx ecx, cl",
    "shl rcx, 32",
    "mov eax, eax",
    "or rax, rcx",
    "jmp 9f",
    // Page-state changes, GHCB MSR protocol: per 4K page, write the request
    // (GFN << 12 | op << 52 | 0x014) to the GHCB MSR, VMGEXIT, read the response (0x015,
    // error in [63:32]).
    "13:",
    "mov r13, r9",
    "mov r15, r8",
    "xor r11d, r11d",
    "14:",
    "test r13, r13",
    "jz 15f",
    "mov rax, r15",
    "shr rax, 12",
    "shl rax, 12",
    "mov rdx, r14",
    "shl rdx, 52",
    "or rax, rdx",
    "or rax, 0x14",
    "mov rdx, rax",
    "shr rdx, 32",
    "mov ecx, 0xc0010130",
    "wrmsr",
    ".byte 0xf3, 0x0f, 0x01, 0xd9",
    "mov ecx, 0xc0010130",
    "rdmsr",
    "shl rdx, 32",
    "or rax, rdx",
    "mov rdx, rax",
    "and edx, 0xfff",
    "cmp edx, 0x15",
    "jne 16f",
    "shr rax, 32",
    "jnz 16f",
    "add r15, 0x1000",
    "dec r13",
    "jmp 14b",
    "16:",
    "mov r11, rax",
    "15:",
    "mov rax, r11",
    // the command's value is rax, its status done
    "9:",
    "mov r10, rbx",
    "shl r10, {res_shift}",
    "add r10, rbp",
    "mov qword ptr [r10 + 8], rax",
    "mov qword ptr [r10], {st_done}",
    "5:",
    "inc rbx",
    "jmp 2b",
    // done: the index back to 0 first, then tell the host.
    "8:",
    "xor ebx, ebx",
    "movabs rax, {flavour}",
    "cmp qword ptr [rax], {td}",
    "jne 17f",
    // TDG.VP.VMCALL<Instruction.IO>: r11 = 30, r12 = size, r13 = 1 (out), r14 = port, r15 = value.
    "xor r10d, r10d",
    "mov r11d, 30",
    "mov r12d, 1",
    "mov r13d, 1",
    "mov r14d, {port_done}",
    "xor r15d, r15d",
    "mov ecx, 0xfc00",
    "xor eax, eax",
    ".byte 0x66, 0x0f, 0x01, 0xcc",
    "jmp 2b",
    "17:",
    "mov dx, {port_done}",
    "out dx, al",
    "jmp 2b",
    // #UD: an instruction this machine lacks (emulated mode): let the host answer.
    ".balign 16",
    ".global privmem_cvm_ud",
    "privmem_cvm_ud:",
    "push_trap_regs",
    "mov dx, {port_ud}",
    "out dx, al",
    "pop_trap_regs",
    "iretq",
    // #GP (error code on the stack): the GHCB MSR in emulated mode.
    ".balign 16",
    ".global privmem_cvm_gp",
    "privmem_cvm_gp:",
    "push_trap_regs",
    "mov dx, {port_gp}",
    "out dx, al",
    "pop_trap_regs",
    "add rsp, 8",
    "iretq",
    // #VE: TDG.VP.VEINFO.GET (r9 = the GPA), and the current command ends with it.
    ".balign 16",
    ".global privmem_cvm_ve",
    "privmem_cvm_ve:",
    "push rax",
    "push rcx",
    "push rdx",
    "push r8",
    "push r9",
    "push r10",
    "mov eax, 3",
    ".byte 0x66, 0x0f, 0x01, 0xcc",
    "mov r10, rbx",
    "shl r10, {res_shift}",
    "add r10, rbp",
    "mov qword ptr [r10 + 8], r9",
    "mov qword ptr [r10], {st_exc}",
    "inc rbx",
    "pop r10",
    "pop r9",
    "pop r8",
    "pop rdx",
    "pop rcx",
    "pop rax",
    "iretq",
    // #VC (error code on the stack): the current command ends with the error code. QEMU's
    // TCG pushes no error code for vector 29 (it knows the architectural ones only), so the
    // frame's shape decides: with a code, CS (0x08) sits 16 bytes above it; without, RFLAGS
    // (bit 1 always set) is there. Without a code the value is all ones.
    ".balign 16",
    ".global privmem_cvm_vc",
    "privmem_cvm_vc:",
    "push r10",
    "push rax",
    "mov r10, rbx",
    "shl r10, {res_shift}",
    "add r10, rbp",
    "cmp qword ptr [rsp + 32], 0x08",
    "jne 1f",
    "mov rax, qword ptr [rsp + 16]",
    "mov qword ptr [r10 + 8], rax",
    "mov qword ptr [r10], {st_exc}",
    "inc rbx",
    "pop rax",
    "pop r10",
    "add rsp, 8",
    "iretq",
    "1:",
    "mov qword ptr [r10 + 8], -1",
    "mov qword ptr [r10], {st_exc}",
    "inc rbx",
    "pop rax",
    "pop r10",
    "iretq",
    ".global privmem_cvm_end",
    "privmem_cvm_end:",
    ".popsection",
    boot_stack = const HARNESS_GPA + BOOT_STACK_TOP,
    idtr = const HARNESS_GPA + IDTR_OFF,
    idt = const HARNESS_GPA + IDT_OFF,
    gdt = const BOOT_GDT,
    flavour = const HARNESS_GPA + FLAVOUR_OFF,
    td = const FLAVOUR_TD,
    cmd_stride = const CMD_STRIDE,
    cmd_base = const SHARED_VA | (HARNESS_GPA + CMD_OFF),
    stack_size = const STACK_SIZE,
    stack_base = const HARNESS_GPA + STACK_OFF,
    cmd_shift = const crate::shift_of(CMD_SIZE),
    cmd_first = const CMD_FIRST,
    res_shift = const crate::shift_of(RES_SIZE),
    op_read = const OP_READ,
    op_touch = const OP_TOUCH,
    op_write = const OP_WRITE,
    op_accept = const OP_TD_ACCEPT,
    op_map_gpa = const OP_TD_MAP_GPA,
    op_pvalidate = const OP_SNP_PVALIDATE,
    op_psc = const OP_SNP_PSC,
    st_bad = const ST_BAD_OP,
    st_done = const ST_DONE,
    st_exc = const ST_EXC,
    port_done = const PORT_DONE,
    port_ud = const PORT_TRAP_UD,
    port_gp = const PORT_TRAP_GP,
);

extern "C" {
    static privmem_cvm_boot_start: u8;
    static privmem_cvm_boot_end: u8;
    static privmem_cvm_start: u8;
    static privmem_cvm_end: u8;
    static privmem_cvm_ud: u8;
    static privmem_cvm_gp: u8;
    static privmem_cvm_ve: u8;
    static privmem_cvm_vc: u8;
}

fn span(s: *const u8, e: *const u8) -> &'static [u8] {
    // SAFETY: both symbols delimit one contiguous read-only block emitted above.
    unsafe { core::slice::from_raw_parts(s, e as usize - s as usize) }
}

/// The boot page's code (placed at [`crate::abi::BOOT_CODE`]; the reset vector jumps to it).
pub fn boot_code() -> &'static [u8] {
    span(&raw const privmem_cvm_boot_start, &raw const privmem_cvm_boot_end)
}

/// The main code (placed at `HARNESS_GPA + CODE_OFF`).
pub fn code() -> &'static [u8] {
    span(&raw const privmem_cvm_start, &raw const privmem_cvm_end)
}

/// Offsets in [`code`] of the exception handlers the image's IDT points at: (vector, offset).
pub fn handlers() -> [(u8, u64); 4] {
    let base = &raw const privmem_cvm_start as usize;
    let off = |p: *const u8| (p as usize - base) as u64;
    [
        (6, off(&raw const privmem_cvm_ud)),
        (13, off(&raw const privmem_cvm_gp)),
        (20, off(&raw const privmem_cvm_ve)),
        (29, off(&raw const privmem_cvm_vc)),
    ]
}

#[cfg(test)]
mod tests {
    #[test]
    fn boot_page_fits_below_the_reset_vector_and_handlers_are_inside_the_code() {
        assert!(super::boot_code().len() < 0x7f0, "the boot code must leave room for the GDT");
        let n = super::code().len() as u64;
        for (_, off) in super::handlers() {
            assert!(off < n && off % 16 == 0);
        }
    }
}
