//! privmem's minimal guest: one command interpreter, and the command/result layout that the
//! host and the guest share (defined once, here).
//!
//! The host writes a batch of commands into the vCPU's command page, runs the vCPU, and reads
//! results from its result page: consecutive guest ops cost one exit, not one each. The guest's
//! code, stack, page tables and command pages live in the harness memslot at [`abi::HARNESS_GPA`],
//! which no sequence can address.

pub mod abi;
pub mod x86_cpl3;
pub mod x86_cvm;
