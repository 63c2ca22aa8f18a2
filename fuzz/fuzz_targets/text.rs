#![no_main]
//! cargo-fuzz target `text`: glue around `privmem::fuzzing::text`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| privmem::fuzzing::check(&privmem::fuzzing::text(data)));
