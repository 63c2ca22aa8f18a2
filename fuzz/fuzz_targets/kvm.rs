#![no_main]
//! cargo-fuzz target `kvm`: glue around `privmem::fuzzing::kvm`.
use libfuzzer_sys::{fuzz_mutator, fuzz_target};

fuzz_target!(|data: &[u8]| privmem::fuzzing::check(&privmem::fuzzing::kvm(data)));

fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
    privmem::fuzzing::mutate(data, size, max_size, seed, libfuzzer_sys::fuzzer_mutate)
});
