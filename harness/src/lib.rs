//! privmem: a fuzzing and conformance harness for the private memory of confidential VMs under
//! Linux KVM. The README says how to use it, `docs/model.md` what the model holds.
//!
//! - [`seq`]: the operation language (ops, text format, binary codec, generation, fixup)
//! - [`model`]: the executable model of KVM and the TDX module
//! - [`oracle`]: running sequences and turning what happened into findings
//! - [`shrink`]: delta debugging that keeps a finding
//! - [`report`]: findings on disk
//! - [`wire`]: every line of `--json` output and of the lab's results port
//! - [`lab`]: real KVM under QEMU TCG
//! - [`cli`]: the `privmem` command

/// privmem's version: the checkout's `git describe` (build.rs), or the crate's outside one.
pub const VERSION: &str = env!("PRIVMEM_DESCRIBE");

pub mod backend;
pub mod campaign;
pub mod cli;
pub mod corpus;
pub mod fuzzing;
pub mod known;
pub mod lab;
pub mod model;
pub mod oracle;
pub mod report;
pub mod seam;
pub mod seq;
pub mod shrink;
pub mod wire;
