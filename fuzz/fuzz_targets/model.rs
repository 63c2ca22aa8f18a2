#![no_main]
//! cargo-fuzz target `model`: glue around `privmem::fuzzing::model`.
use libfuzzer_sys::{fuzz_mutator, fuzz_target};

fuzz_target!(|data: &[u8]| privmem::fuzzing::check(&privmem::fuzzing::model(data)));

fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
    privmem::fuzzing::mutate(data, size, max_size, seed, libfuzzer_sys::fuzzer_mutate)
});
