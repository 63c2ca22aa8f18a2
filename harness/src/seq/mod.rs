//! The operation language: ops and sequences, their text format, a binary codec for fuzz
//! inputs, generation and `fixup`, and the table of which ops each VM type gives meaning to.

pub mod codec;
pub mod codes;
pub mod gen;
pub mod header;
pub mod kernel;
pub mod legal;
pub mod lex;
pub mod op;
pub mod print;
pub mod text;
pub mod words;

pub use codes::*;
pub use header::*;
pub use kernel::{Kernel, KernelRange, Release};
pub use op::*;
