//! privmem's minimal guest: one command interpreter, and the command/result layout that the
//! host and the guest share (defined once, here).
//!
//! The host writes a batch of commands into the vCPU's command page, runs the vCPU, and reads
//! results from its result page: consecutive guest ops cost one exit, not one each. The guest's
//! code, stack, page tables and command pages live in the harness memslot at [`abi::HARNESS_GPA`],
//! which no sequence can address.

pub mod abi;

/// The start of both guests' command loop, as assembly text: label 2 fetches command `rbx`
/// (`rsi` its address, `rdx` the op, `r8` the address, `r9` the value) or jumps to 8 when the
/// batch is done. The `global_asm!` using it supplies `cmd_shift` and `cmd_first` from
/// [`abi`], so the layout has one source.
macro_rules! fetch_command {
    () => {
        concat!(
            "2:\n",
            "mov rcx, qword ptr [rdi]\n",
            "cmp rbx, rcx\n",
            "jae 8f\n",
            "mov rax, rbx\n",
            "shl rax, {cmd_shift}\n",
            "lea rsi, [rdi + rax + {cmd_first}]\n",
            "mov rdx, qword ptr [rsi]\n",
            "mov r8, qword ptr [rsi + 8]\n",
            "mov r9, qword ptr [rsi + 16]\n",
        )
    };
}
pub(crate) use fetch_command;

/// `log2` of a layout size that must be a power of two (the guests index by shifting).
pub(crate) const fn shift_of(size: u64) -> u32 {
    assert!(size.is_power_of_two());
    size.trailing_zeros()
}

pub mod x86_cpl3;
pub mod x86_cvm;
