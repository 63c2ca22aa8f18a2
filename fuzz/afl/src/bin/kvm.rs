//! AFL++ entry point `kvm`: the same body as the cargo-fuzz target.
fn main() {
    afl::fuzz!(|data: &[u8]| privmem::fuzzing::check(&privmem::fuzzing::kvm(data)));
}
