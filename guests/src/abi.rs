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

/// Confidential-VM shim commands (`x86_cvm`), TDX: `TDG.MEM.PAGE.ACCEPT` of the address with
/// the level in the value (0 4K, 1 2M, 2 1G); the result's value is RAX.
pub const OP_TD_ACCEPT: u64 = 6;
/// TDX: `TDG.VP.VMCALL<MapGPA>` of the address (the shared bit included: it says which way)
/// and the size in the value; the result's value is R10 (the TDVMCALL status).
pub const OP_TD_MAP_GPA: u64 = 7;
/// SEV-SNP: `PVALIDATE` of the address, page size in the value (0 4K, 1 2M), validate (1) or
/// rescind (0) in the third word; the result's value is RAX, with the carry flag in bit 32.
pub const OP_SNP_PVALIDATE: u64 = 8;
/// SEV-SNP: page-state changes over the GHCB MSR protocol, one 4K page at a time, from the
/// address for the value's page count, to the state in the third word (1 private, 2 shared);
/// the result's value is the first non-zero response error (GHCBData[63:32]), else 0.
pub const OP_SNP_PSC: u64 = 9;

/// Result status: the command ran to completion.
pub const ST_DONE: u64 = 1;
/// Result status: an exception ended the command (#VE or #VC, delivered by the platform); the
/// value is what the handler learnt (the #VE's GPA from `TDG.VP.VEINFO.GET`, the #VC's error
/// code).
pub const ST_EXC: u64 = 2;
/// The guest did not know the opcode.
pub const ST_BAD_OP: u64 = 0xbad;

/// The guest writes the batch's end to this port (`out dx, al`): one exit per batch.
pub const PORT_DONE: u16 = 0xe0;

/// Emulated mode (`privmem replay --backend emulated`): the shim's #UD and #GP handlers report
/// here, with the trapped context's registers pushed on its stack, so that the host can answer
/// an instruction the machine lacks (TDCALL, PVALIDATE; the GHCB MSR) from the model.
pub const PORT_TRAP_UD: u16 = 0xe1;
pub const PORT_TRAP_GP: u16 = 0xe2;

/// The confidential-VM shim's boot region, below 4 GiB where 32-bit code can reach it: the
/// PML4, the identity PDPT (private), the PDPT of the shared alias, and the boot code page whose
/// last 16 bytes hold the reset vector (0xFFFF_FFF0).
pub const BOOT_GPA: u64 = 0xffff_c000;
pub const BOOT_SIZE: u64 = 0x4000;
pub const BOOT_PML4: u64 = BOOT_GPA;
pub const BOOT_PDPT: u64 = BOOT_GPA + 0x1000;
pub const BOOT_PDPT_SHARED: u64 = BOOT_GPA + 0x2000;
pub const BOOT_CODE: u64 = BOOT_GPA + 0x3000;
/// The boot GDT (null, 64-bit code 0x08, data 0x10, 32-bit code 0x18) and its descriptor.
pub const BOOT_GDT: u64 = BOOT_CODE + 0x800;
pub const BOOT_GDTR: u64 = BOOT_CODE + 0x7f0;
/// The memslot of the boot region.
pub const BOOT_SLOT: u32 = 32762;
/// The shim's IDT (256 gates) and its descriptor, in the harness slot.
pub const IDT_OFF: u64 = 0x98000;
pub const IDTR_OFF: u64 = 0x99000;
/// Which platform the shim is on: [`FLAVOUR_TD`] or [`FLAVOUR_SNP`] (a word in the image).
pub const FLAVOUR_OFF: u64 = 0x99010;
pub const FLAVOUR_TD: u64 = 1;
pub const FLAVOUR_SNP: u64 = 2;
/// A stack for the boot path (before the shim knows its vCPU index).
pub const BOOT_STACK_TOP: u64 = 0xc1000;
/// The shim's page directories where the vCPU lacks 1G pages: one per GiB of the identity
/// map, then one per GiB of the shared alias (1 MiB in all).
pub const CVM_PD_OFF: u64 = 0x200000;
/// Shared accesses go through the high-half alias: PML4 entry 256 maps the same GPAs with the
/// shared bit set (TDX) or the C-bit clear (SNP) in its entries.
pub const SHARED_VA: u64 = 0xffff_8000_0000_0000;

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
