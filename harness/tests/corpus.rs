//! `cargo test` replays every scenario in `corpus/` on the model, as every kernel it holds on:
//! every expectation must hold and no finding may appear that the scenario does not document.

use privmem::oracle::run_model;
use privmem::seq::text::parse;
use std::path::{Path, PathBuf};

fn corpus_files() -> Vec<PathBuf> {
    privmem::corpus::seq_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus"))
}

#[test]
fn every_corpus_scenario_holds_on_the_model() {
    let files = corpus_files();
    assert!(files.len() >= 30, "corpus has {} scenarios", files.len());
    let mut failures = Vec::new();
    let mut runs = 0;
    for f in &files {
        let src = std::fs::read_to_string(f).unwrap();
        let seq = parse(&f.display().to_string(), &src).unwrap_or_else(|e| panic!("{e}"));
        assert!(seq.steps.iter().any(|s| s.expect.is_some()), "{}: a scenario without expectations", f.display());
        let kernels = privmem::model::kernel::kernels_for(&seq.header);
        assert!(!kernels.is_empty(), "{}: holds on no kernel", f.display());
        for k in kernels {
            let mut as_k = seq.clone();
            as_k.header.set_kernel(k);
            runs += 1;
            for finding in run_model(&as_k).findings {
                failures.push(format!("{} (as {k}): {} {}", f.display(), finding.signature(), finding.detail));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(runs > files.len(), "{runs} runs: the corpus replays on one kernel only");
}

#[test]
fn hazard_corpus_names_h1_to_h14() {
    let names: Vec<String> =
        corpus_files().iter().filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())).collect();
    for h in 1..=14 {
        assert!(names.iter().any(|n| n.starts_with(&format!("H{h}-"))), "no hazard file for H{h}");
    }
}

#[test]
fn a_wrong_expectation_is_reported() {
    let src = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus/hazards/H1-touch-then-accept-4k.seq"),
    )
    .unwrap();
    // Claim the hazard is absent: the model must disagree.
    let wrong = src.replace("=> livelock", "=> ok");
    let t = run_model(&parse("H1-wrong", &wrong).unwrap());
    let sigs: Vec<String> = t.findings.iter().map(|f| f.signature()).collect();
    assert!(sigs.contains(&"expectation:accept:expected-ok@tdx/huge-v1".to_string()), "{sigs:?}");
    assert!(
        sigs.contains(&"livelock:accept:no-progress@tdx/huge-v1".to_string()),
        "an undocumented livelock is a finding: {sigs:?}"
    );
}

#[test]
fn exported_seeds_decode_back_to_their_scenarios() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus");
    let out = std::env::temp_dir().join(format!("privmem-seeds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let written = privmem::cli::corpus_cmd::export(&root, &out).unwrap();
    assert_eq!(written.len(), corpus_files().len());
    for (seed, scenario) in written.iter().zip(corpus_files()) {
        let bytes = std::fs::read(seed).unwrap();
        let want = parse("s", &std::fs::read_to_string(&scenario).unwrap()).unwrap();
        assert_eq!(privmem::seq::codec::decode(&bytes), want, "{} does not decode back", seed.display());
    }
}

#[test]
fn every_known_divergence_names_kernels_that_parse() {
    // A marker word that does not parse would silently un-mark a known divergence.
    for f in corpus_files() {
        let src = std::fs::read_to_string(&f).unwrap();
        for l in src.lines().filter_map(|l| l.strip_prefix(privmem::oracle::diff::KNOWN_MARKER)) {
            if let Some((_, on)) = l.split_once(" on ") {
                for w in on.split_whitespace() {
                    if let Err(e) = privmem::seq::KernelRange::parse(w) {
                        panic!("{}: `{w}`: expected {e}", f.display());
                    }
                }
            }
        }
    }
}

/// The hazards re-checked against huge-v3 and huge-v5 (docs/model.md §8): each hazard scenario
/// with a variant runs again as v3 and as v5, and the guest-visible outcomes differ exactly
/// where the table there says so. `privmem replay --against huge-v5 FILE` shows each.
#[test]
fn hazards_against_v3_and_v5_differ_where_documented() {
    use privmem::oracle::compare::compare_variants;
    use privmem::seq::Variant;
    let differs: &[(&str, Variant)] = &[
        ("H1-touch-then-accept-4k.seq", Variant::HugeV3),
        ("H1-touch-then-accept-4k.seq", Variant::HugeV5),
        ("H10-two-vcpus-accept-race.seq", Variant::HugeV3),
        ("H10-two-vcpus-accept-race.seq", Variant::HugeV5),
        ("H12-punch-splits-first.seq", Variant::HugeV5),
        ("H2-enomem-partial-conversion-v3.seq", Variant::HugeV5),
        ("H2-enomem-partial-conversion.seq", Variant::HugeV5),
        ("H2-enomem-partial-conversion-v2.seq", Variant::HugeV5),
        ("H13-v5-attributes-zap-whole-leaf.seq", Variant::HugeV3),
        ("H13-v5-punch-zaps-whole-leaf.seq", Variant::HugeV3),
        ("H14-v2-demote-interrupted-kvm-bug.seq", Variant::HugeV3),
        ("H14-v2-demote-interrupted-kvm-bug.seq", Variant::HugeV5),
    ];
    let mut wrong = Vec::new();
    for f in corpus_files().iter().filter(|p| p.parent().is_some_and(|d| d.ends_with("hazards"))) {
        let seq = parse(&f.display().to_string(), &std::fs::read_to_string(f).unwrap()).unwrap();
        let Some(own) = seq.header.variant else { continue };
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        for v in [Variant::HugeV3, Variant::HugeV5].into_iter().filter(|&v| v != own) {
            let got = compare_variants(&seq, own, v);
            if got.is_some() != differs.contains(&(name.as_str(), v)) {
                wrong.push(format!("{name} against {}: {:?}", v.name(), got.map(|f| f.detail)));
            }
        }
    }
    assert!(wrong.is_empty(), "docs/model.md §8's table no longer holds:\n{}", wrong.join("\n"));
}
