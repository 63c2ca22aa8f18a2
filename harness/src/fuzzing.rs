//! Engine-independent fuzz target bodies. The cargo-fuzz targets (`fuzz/fuzz_targets/`) and the
//! AFL entry points (`fuzz/afl/`) are a few lines of glue around these functions, as in
//! wasmtime's `crates/fuzzing`: inputs are decoded with the binary codec, so every byte string
//! is a legal sequence and corpus files are seeds.

use crate::backend::kvm::KvmBackend;
use crate::backend::Backend;
use crate::campaign::{mutate_sequence, Rng};
use crate::oracle::compare::compare_variants;
use crate::oracle::diff::check_real;
use crate::oracle::{run_model, Finding};
use crate::seq::codec::{decode, encode};
use crate::seq::gen::fixup;
use crate::seq::text::{parse, print};
use crate::seq::{Sequence, Variant, VmType};
use std::sync::Mutex;

/// A fuzz target's verdict: the findings, which the glue turns into a crash (libFuzzer/AFL
/// report it and keep the input).
///
/// `PRIVMEM_FUZZ_IGNORE` (comma-separated signature prefixes, e.g. `livelock:` once H1 is
/// known) keeps a campaign going past findings it already has.
pub fn check(findings: &[Finding]) {
    static IGNORE: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let ignore = IGNORE.get_or_init(|| {
        std::env::var("PRIVMEM_FUZZ_IGNORE")
            .unwrap_or_default()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    });
    if let Some(f) = findings.iter().find(|f| !ignore.iter().any(|p| f.signature().starts_with(p.as_str()))) {
        panic!("privmem finding {}: {}", f.signature(), f.detail);
    }
}

/// The input as a fuzz case: expectations (from seeds, then mutated) are not the oracle here.
fn case(data: &[u8]) -> Sequence {
    let mut s = decode(data);
    for st in &mut s.steps {
        st.expect = None;
    }
    s
}

/// Findings a fuzz target reports: not failed `expect` checks, which mutation breaks at will,
/// nor a header KVM refuses (a mutated slot, not a bug).
fn oracle_findings(f: Vec<Finding>) -> Vec<Finding> {
    use crate::oracle::FindingKind::{Expectation, Setup};
    f.into_iter().filter(|f| !matches!(f.kind, Expectation | Setup)).collect()
}

/// `model`: invariants, livelock, silent data loss; VM type and variant come from the input.
pub fn model(data: &[u8]) -> Vec<Finding> {
    oracle_findings(run_model(&case(data)).findings)
}

/// `variants`: the input's TDX sequence under two variants chosen by its last byte.
pub fn variants(data: &[u8]) -> Vec<Finding> {
    let Some((&pick, rest)) = data.split_last() else {
        return Vec::new();
    };
    let mut s = case(rest);
    if s.header.vm != VmType::Tdx {
        return Vec::new();
    }
    let a = Variant::ALL[(pick & 3) as usize];
    let b = Variant::ALL[((pick >> 2) & 3) as usize];
    if a == b {
        return Vec::new();
    }
    s.header.variant = Some(a);
    compare_variants(&s, a, b).into_iter().collect()
}

/// `text`: the parser never panics, and what parses prints canonically and parses back.
pub fn text(data: &[u8]) -> Vec<Finding> {
    let src = String::from_utf8_lossy(data);
    if let Ok(s) = parse("fuzz", &src) {
        let printed = print(&s);
        let back = parse("printed", &printed).expect("printed text parses");
        assert_eq!(back, s, "parse(print(s)) != s");
        assert_eq!(print(&back), printed, "printing is not canonical");
    }
    Vec::new()
}

/// `codec`: every byte string decodes to a legal sequence that encodes back exactly.
pub fn codec(data: &[u8]) -> Vec<Finding> {
    let s = decode(data);
    crate::seq::legal::check_sequence(&s).expect("decoded sequences are legal");
    assert_eq!(decode(&encode(&s)), s, "decode(encode(s)) != s");
    Vec::new()
}

/// One KVM backend per process, set up once and reused across inputs.
static KVM: Mutex<Option<Result<KvmBackend, String>>> = Mutex::new(None);

/// `kvm`: the input's sequence (adapted to what the host offers) on the model and on real KVM;
/// divergence, timeout and guest failure are findings.
pub fn kvm(data: &[u8]) -> Vec<Finding> {
    let mut guard = KVM.lock().unwrap_or_else(|e| e.into_inner());
    let backend = guard.get_or_insert_with(|| {
        let mut k = KvmBackend::open()?;
        k.footing()?;
        Ok(k)
    });
    let Ok(k) = backend.as_mut() else {
        return Vec::new();
    };
    let s = k.adapt(&case(data));
    let c = check_real(k, &s);
    let mut f = oracle_findings(c.model.findings);
    f.extend(c.diff.findings);
    f
}

/// The structure-aware mutator: edit the op list (drop, duplicate, swap, nudge an address by a
/// page or to a 2M boundary, flip a level) and run `fixup`; part of the time fall back to the
/// engine's byte mutation. Returns the new length written into `data`.
pub fn mutate(
    data: &mut [u8],
    size: usize,
    max_size: usize,
    seed: u32,
    byte_mutate: impl FnOnce(&mut [u8], usize, usize) -> usize,
) -> usize {
    let mut rng = Rng::new(seed as u64 ^ 0x5eed);
    if rng.next_u64().is_multiple_of(4) {
        return byte_mutate(data, size, max_size);
    }
    let mut s = decode(&data[..size.min(data.len())]);
    mutate_sequence(&mut s, &mut rng);
    fixup(&mut s);
    let bytes = encode(&s);
    if bytes.len() > max_size {
        return byte_mutate(data, size, max_size);
    }
    data[..bytes.len()].copy_from_slice(&bytes);
    bytes.len()
}
