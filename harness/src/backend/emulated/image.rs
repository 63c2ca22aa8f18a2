//! The confidential-VM shim's memory image: the boot region below 4 GiB (page tables, the boot
//! page with its GDT and the reset vector) and the harness slot (the main code, the IDT, the
//! platform word). The same image serves a real TD (added with `KVM_TDX_INIT_MEM_REGION`), a
//! real SNP guest (`SNP_LAUNCH_UPDATE`) and the emulated mode; only the bits that mark a
//! page-table entry shared differ.

use crate::backend::mem::Mapping;
use privmem_guest::abi::*;
use privmem_guest::x86_cvm;

/// The platform the image is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    Td,
    Snp,
}

/// How a page-table entry says "shared" on the platform: the TD's shared GPA bit, set in the
/// alias's entries; SNP's C-bit, set in the private (identity) entries. Both zero in the
/// emulated mode, where an ordinary VM has neither.
#[derive(Clone, Copy, Debug, Default)]
pub struct EncBits {
    pub shared_bit: u64,
    pub c_bit: u64,
}

/// Fill the boot region (a [`BOOT_SIZE`] mapping placed at [`BOOT_GPA`]) and, where the vCPU
/// lacks 1G pages, the page directories in the harness slot (2M pages; one directory per GiB
/// and side, private then shared, from `CVM_PD_OFF`: only CR3 must be below 4 GiB).
pub fn build_boot(m: &Mapping, harness: &Mapping, bits: EncBits, gib_pages: bool) {
    const P_RW: u64 = 0x3;
    const PS: u64 = 0x80;
    let off = |gpa: u64| gpa - BOOT_GPA;
    m.write_u64(off(BOOT_PML4), BOOT_PDPT | P_RW);
    // PML4 entry 256: the high-half alias of the same GPAs, for shared accesses.
    m.write_u64(off(BOOT_PML4) + 256 * 8, BOOT_PDPT_SHARED | P_RW);
    let gibs = IDENTITY_LIMIT >> 30;
    for g in 0..gibs {
        for (side, pdpt, bit) in [(0, BOOT_PDPT, bits.c_bit), (1, BOOT_PDPT_SHARED, bits.shared_bit)] {
            if gib_pages {
                m.write_u64(off(pdpt) + g * 8, (g << 30) | bit | P_RW | PS);
                continue;
            }
            let pd = CVM_PD_OFF + (side * gibs + g) * 0x1000;
            m.write_u64(off(pdpt) + g * 8, (HARNESS_GPA + pd) | P_RW);
            for j in 0..512u64 {
                harness.write_u64(pd + j * 8, (g << 30) | (j << 21) | bit | P_RW | PS);
            }
        }
    }
    m.write_bytes(off(BOOT_CODE), x86_cvm::boot_code());
    // GDT: null, 64-bit code (0x08), data (0x10), 32-bit code (0x18); its descriptor
    // (limit, 32-bit base: what `lgdt` reads in 32-bit mode).
    let gdt: [u64; 4] = [0, 0x00af_9a00_0000_ffff, 0x00cf_9200_0000_ffff, 0x00cf_9a00_0000_ffff];
    for (i, d) in gdt.iter().enumerate() {
        m.write_u64(off(BOOT_GDT) + i as u64 * 8, *d);
    }
    m.write_u64(off(BOOT_GDTR), (gdt.len() as u64 * 8 - 1) | (BOOT_GDT << 16));
    // The reset vector, 0xFFFF_FFF0: `jmp rel32` back to the start of the boot page.
    let rv = 0xffff_fff0u64;
    let rel = (BOOT_CODE as i64 - (rv as i64 + 5)) as i32;
    let mut jmp = vec![0xe9u8];
    jmp.extend_from_slice(&rel.to_le_bytes());
    m.write_bytes(off(rv), &jmp);
}

/// Fill the harness slot's part of the image: the main code, the IDT and its descriptor, the
/// platform word.
pub fn build_harness(m: &Mapping, platform: Platform) {
    m.write_bytes(CODE_OFF, x86_cvm::code());
    for (vector, handler) in x86_cvm::handlers() {
        let addr = HARNESS_GPA + CODE_OFF + handler;
        // A 64-bit interrupt gate: offset[15:0], selector 0x08, type 0x8E (present, DPL 0),
        // offset[31:16], then offset[63:32].
        let lo = (addr & 0xffff) | (0x08 << 16) | (0x8e00u64 << 32) | ((addr >> 16) & 0xffff) << 48;
        m.write_u64(IDT_OFF + vector as u64 * 16, lo);
        m.write_u64(IDT_OFF + vector as u64 * 16 + 8, addr >> 32);
    }
    // IDTR: 16-bit limit, 64-bit base.
    m.write_u64(IDTR_OFF, (256 * 16 - 1) | ((HARNESS_GPA + IDT_OFF) << 16));
    m.write_u64(IDTR_OFF + 8, (HARNESS_GPA + IDT_OFF) >> 48);
    m.write_u64(
        FLAVOUR_OFF,
        match platform {
            Platform::Td => FLAVOUR_TD,
            Platform::Snp => FLAVOUR_SNP,
        },
    );
}
