//! The host/guest command ABI. Every address here is a guest-physical address, identity mapped
//! by the guest's page tables.

/// The harness memslot: page tables, code, stacks, command and result pages. Sequences may not
/// touch `[HARNESS_GPA, HARNESS_GPA + HARNESS_SIZE)` (the parser refuses it).
pub const HARNESS_GPA: u64 = 0x1f_c000_0000;
pub const HARNESS_SIZE: u64 = 4 << 20;
/// The memslot id the harness uses; sequences may not use it.
pub const HARNESS_SLOT: u32 = 32763;
/// The guest's page tables identity-map `[0, IDENTITY_LIMIT)` with 1G pages, user-accessible.
pub const IDENTITY_LIMIT: u64 = 128 << 30;

/// Offsets inside the harness slot.
pub const PML4_OFF: u64 = 0;
pub const PDPT_OFF: u64 = 0x1000;
/// One page directory per GiB, used only where the host lacks 1G pages.
pub const PD_OFF: u64 = 0x2000;
pub const GDT_OFF: u64 = 0x90000;
pub const CODE_OFF: u64 = 0xa0000;
/// Per-vCPU stack (grows down from `STACK_OFF + (v + 1) * STACK_SIZE`).
pub const STACK_OFF: u64 = 0xb0000;
pub const STACK_SIZE: u64 = 0x2000;
/// Per-vCPU command page and result page.
pub const CMD_OFF: u64 = 0x100000;
pub const CMD_STRIDE: u64 = 0x2000;
pub const MAX_VCPUS: u64 = 8;

/// The command page: `count` at offset 0, commands from offset [`CMD_FIRST`].
pub const CMD_FIRST: u64 = 64;
pub const CMD_SIZE: u64 = 32;
/// The result page follows the command page: one [`RES_SIZE`]-byte result per command.
pub const RES_SIZE: u64 = 16;
/// Commands per batch.
pub const MAX_BATCH: u64 = 120;

/// Command opcodes (`op` field).
pub const OP_READ: u64 = 1;
pub const OP_WRITE: u64 = 2;
pub const OP_TOUCH: u64 = 3;
/// Spin forever: no sequence op makes it; the backend's self-test of its per-case timeout uses it.
pub const OP_SPIN: u64 = 4;
/// The KVM_HC_MAP_GPA_RANGE hypercall (`vmmcall`, rax 12): the command's address is the GPA,
/// its value the page count, its third word the attributes; the hypercall's return (rax) is
/// the result's value. Only at CPL0 (the lab): at CPL3 KVM answers -KVM_EPERM.
pub const OP_MAP_GPA: u64 = 5;
pub const KVM_HC_MAP_GPA_RANGE: u64 = 12;
/// `KVM_MAP_GPA_RANGE_ENCRYPTED` (`KVM_MAP_GPA_RANGE_ENC_STAT(1)`): to private.
pub const MAP_GPA_ENCRYPTED: u64 = 1 << 4;

/// Result status: the command ran to completion.
pub const ST_DONE: u64 = 1;
/// The guest did not know the opcode.
pub const ST_BAD_OP: u64 = 0xbad;

/// The guest writes the batch's end to this port (`out dx, al`): one exit per batch.
pub const PORT_DONE: u16 = 0xe0;

/// Where in each 4 KiB page the one 64-bit value of the model lives.
pub const VALUE_OFFSET: u64 = 0;

/// Guest-physical address of vCPU `v`'s command page.
pub fn cmd_page(v: u64) -> u64 {
    HARNESS_GPA + CMD_OFF + v * CMD_STRIDE
}

/// Guest-physical address of vCPU `v`'s result page.
pub fn res_page(v: u64) -> u64 {
    cmd_page(v) + 0x1000
}

/// Guest-physical address of the top of vCPU `v`'s stack.
pub fn stack_top(v: u64) -> u64 {
    HARNESS_GPA + STACK_OFF + (v + 1) * STACK_SIZE
}
