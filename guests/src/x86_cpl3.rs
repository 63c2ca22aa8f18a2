//! The x86 guest for default and SW_PROTECTED VMs. It runs at CPL3 with IOPL 3 on a host: on
//! this kind of host, code at CPL0 is emulated and reads a guest_memfd slot through its
//! userspace address, while CPL3 code sees guest_memfd as hardware does. Port I/O needs no
//! privilege with IOPL 3. In the lab (nested SVM under QEMU TCG) the same code runs at CPL0,
//! where its hypercall (map-gpa) is allowed.
//!
//! Registers on entry (set by the host once): `rdi` = command page, `r12` = result page,
//! `rbx` = index of the next command. After a batch the guest writes [`crate::abi::PORT_DONE`],
//! resets `rbx` and loops, so the host only writes the next batch and runs the vCPU again. The
//! code is position independent and uses no data (no jump tables): it is copied to
//! `HARNESS_GPA + CODE_OFF` as it is.

use crate::abi::*;
use core::arch::global_asm;

global_asm!(
    ".pushsection .rodata.privmem_guest, \"a\"",
    ".balign 16",
    ".global privmem_guest_start",
    "privmem_guest_start:",
    // loop:
    crate::fetch_command!(),
    "mov r10, rbx",
    "shl r10, {res_shift}",
    "add r10, r12",
    "cmp rdx, {op_read}",
    "je 3f",
    "cmp rdx, {op_touch}",
    "je 3f",
    "cmp rdx, {op_write}",
    "je 4f",
    "cmp rdx, {op_spin}",
    "je 6f",
    "cmp rdx, {op_map_gpa}",
    "je 7f",
    "mov qword ptr [r10], {st_bad}",
    "jmp 5f",
    // read / touch
    "3:",
    "mov rax, qword ptr [r8]",
    "mov qword ptr [r10 + 8], rax",
    "mov qword ptr [r10], {st_done}",
    "jmp 5f",
    // write
    "4:",
    "mov qword ptr [r8], r9",
    "mov qword ptr [r10], {st_done}",
    // next:
    "5:",
    "inc rbx",
    "jmp 2b",
    // done: one exit for the whole batch
    "8:",
    "mov dx, {port_done}",
    "out dx, al",
    "xor ebx, ebx",
    "jmp 2b",
    // spin (the timeout self-test): never returns
    "6:",
    "jmp 6b",
    // map-gpa: KVM_HC_MAP_GPA_RANGE with rbx = GPA, rcx = pages, rdx = attributes; rax comes
    // back as the result's value. rbx (the command index) is kept across the call.
    "7:",
    "push rbx",
    "mov rbx, r8",
    "mov rcx, r9",
    "mov rdx, qword ptr [rsi + 24]",
    "mov eax, {hc_map_gpa}",
    "vmmcall",
    "pop rbx",
    "mov qword ptr [r10 + 8], rax",
    "mov qword ptr [r10], {st_done}",
    "jmp 5b",
    ".global privmem_guest_end",
    "privmem_guest_end:",
    ".popsection",
    cmd_shift = const crate::shift_of(CMD_SIZE),
    cmd_first = const CMD_FIRST,
    res_shift = const crate::shift_of(RES_SIZE),
    op_read = const OP_READ,
    op_touch = const OP_TOUCH,
    op_write = const OP_WRITE,
    op_spin = const OP_SPIN,
    op_map_gpa = const OP_MAP_GPA,
    st_done = const ST_DONE,
    st_bad = const ST_BAD_OP,
    port_done = const PORT_DONE,
    hc_map_gpa = const KVM_HC_MAP_GPA_RANGE,
);

extern "C" {
    static privmem_guest_start: u8;
    static privmem_guest_end: u8;
}

/// The guest's machine code.
pub fn code() -> &'static [u8] {
    // SAFETY: both symbols delimit one contiguous read-only block emitted above.
    unsafe {
        let s = &raw const privmem_guest_start;
        let e = &raw const privmem_guest_end;
        core::slice::from_raw_parts(s, e as usize - s as usize)
    }
}

/// Offset of the command loop from the start of the code (where the host resumes the guest
/// after an exit that cannot complete, e.g. KVM_EXIT_MEMORY_FAULT).
pub const LOOP_OFFSET: u64 = 0;

#[cfg(test)]
mod tests {
    #[test]
    fn code_is_small_and_ends_in_the_loop() {
        let c = super::code();
        assert!(c.len() > 40 && c.len() < 256, "{} bytes", c.len());
        // `out dx, al` is 0xee.
        assert!(c.contains(&0xee));
    }
}
