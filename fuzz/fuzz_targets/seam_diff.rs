#![no_main]
//! cargo-fuzz target `seam_diff`: the lab's software TDX module (`ci/lab/tdx/module/seam.c`)
//! against privmem's model of the module, step by step (`privmem::seam::diff`).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(d) = privmem::seam::diff::run(&privmem::seam::diff::steps(data)) {
        panic!("the software TDX module and the model disagree: {d}");
    }
});
