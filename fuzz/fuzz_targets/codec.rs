#![no_main]
//! cargo-fuzz target `codec`: glue around `privmem::fuzzing::codec`.
use libfuzzer_sys::{fuzz_mutator, fuzz_target};

fuzz_target!(|data: &[u8]| privmem::fuzzing::check(&privmem::fuzzing::codec(data)));

fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
    privmem::fuzzing::mutate(data, size, max_size, seed, libfuzzer_sys::fuzzer_mutate)
});
