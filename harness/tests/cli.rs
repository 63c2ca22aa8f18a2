//! The `privmem` command end to end: exit codes, findings written as they occur and replaying
//! to the same signature, shrink, bench's JSON fields.

use std::path::Path;
use std::process::Command;

fn privmem(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_privmem")).args(args).output().expect("run privmem");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn corpus(p: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus").join(p).display().to_string()
}

fn tmpdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("privmem-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn replay_exit_codes() {
    let (code, out, _) = privmem(&["replay", &corpus("hazards/H1-touch-then-accept-4k.seq")]);
    assert_eq!(code, 0, "{out}");
    let d = tmpdir("replay");
    let bad = d.join("bad.seq");
    std::fs::write(&bad, "vm tdx\nfinalize => tdx\n").unwrap();
    let (code, _, err) = privmem(&["replay", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("bad.seq:2:16: expected a TDX status (SUCCESS, "), "{err}");
    let wrong = d.join("wrong.seq");
    std::fs::write(&wrong, "vm tdx\nfinalize => ok\nfinalize => ok\n").unwrap();
    let (code, out, _) = privmem(&["replay", wrong.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.contains("expected ok, got err EINVAL"), "{out}");
    let (code, _, _) = privmem(&["replay", "--no-such-flag"]);
    assert_eq!(code, 2);
}

#[test]
fn fuzz_writes_findings_that_replay_to_the_same_signature() {
    let d = tmpdir("fuzz");
    let (code, out, _) = privmem(&[
        "fuzz",
        "--vm",
        "tdx",
        "--variant",
        "huge-v1",
        "--runs",
        "3000",
        "--seed",
        "5",
        "--out",
        d.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 1, "huge-v1 must yield findings: {out}");
    let summary: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert!(summary["exec_per_sec"].as_f64().unwrap() > 0.0);
    let mut seen_livelock = false;
    for e in std::fs::read_dir(&d).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "seq") {
            let text = std::fs::read_to_string(&p).unwrap();
            let sig = text.lines().next().unwrap().trim_start_matches("# finding: ").to_string();
            seen_livelock |= sig.starts_with("livelock:");
            let (code, out, _) = privmem(&["replay", "--json", p.to_str().unwrap()]);
            assert_eq!(code, 1, "{}", p.display());
            let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
            let sigs: Vec<&str> = r["signatures"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
            assert!(sigs.contains(&sig.as_str()), "{} replays to {sigs:?}, not {sig}", p.display());
            assert!(p.with_extension("json").exists());
        }
    }
    assert!(seen_livelock, "huge-v1 fuzzing from an empty start reports a livelock");
}

#[test]
fn variant_comparison_finds_differences() {
    let d = tmpdir("against");
    let (code, out, _) = privmem(&[
        "fuzz",
        "--variant",
        "huge-v1",
        "--against",
        "huge-v3",
        "--runs",
        "2000",
        "--seed",
        "3",
        "--out",
        d.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("variant-diff:"), "{out}");
    let h1 = corpus("hazards/H1-touch-then-accept-4k.seq");
    let (code, out, _) = privmem(&["replay", "--against", "huge-v3", &h1]);
    assert_eq!(code, 1);
    assert!(out.contains("variant-diff:accept:huge-v1:livelock/huge-v3:ok"), "{out}");
}

#[test]
fn shrink_keeps_the_finding() {
    let d = tmpdir("shrink");
    let big = d.join("big.seq");
    let src =
        std::fs::read_to_string(corpus("hazards/H1-touch-then-accept-4k.seq")).unwrap().replace(" => livelock", "")
            + "vcpu0 touch 0x100100000\nhost-read 0x100000000\n";
    std::fs::write(&big, src).unwrap();
    let out_path = d.join("small.seq");
    let (code, out, err) = privmem(&["shrink", big.to_str().unwrap(), "-o", out_path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let small = std::fs::read_to_string(&out_path).unwrap();
    assert!(small.contains("vcpu0 accept 0x100001000 4K"), "{small}");
    assert!(!small.contains("host-read"), "{small}");
    let (code, out, _) = privmem(&["replay", out_path.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.contains("livelock:accept:no-progress"));
}

#[test]
fn bench_json_fields() {
    let (code, out, _) = privmem(&["bench", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["model_ops_per_sec"].as_f64().unwrap() > 0.0);
    assert!(v["range_cost_ratio"].as_f64().unwrap() > 0.0);
}

#[test]
fn coverage_draws_a_page() {
    let d = tmpdir("coverage");
    let out = d.join("cov.html");
    let (code, _, err) = privmem(&["coverage", &corpus("hazards"), "-o", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let page = std::fs::read_to_string(&out).unwrap();
    assert!(page.contains("<svg") && page.contains("PENDING 2M") && page.contains("huge-leaf splits"));
}

#[test]
fn fuzzer_artifacts_replay_to_the_same_signature() {
    // A crash input of the `model` target: H1's sequence in the binary codec.
    let src = std::fs::read_to_string(corpus("hazards/H1-touch-then-accept-4k.seq")).unwrap();
    let mut seq = privmem::seq::text::parse("h1", &src).unwrap();
    seq.steps.iter_mut().for_each(|s| s.expect = None);
    let bytes = privmem::seq::codec::encode(&seq);
    let want: Vec<String> = privmem::fuzzing::model(&bytes).iter().map(|f| f.signature()).collect();
    assert!(want.contains(&"livelock:accept:no-progress@tdx/huge-v1".to_string()), "{want:?}");
    let d = tmpdir("artifact");
    let art = d.join("crash-h1");
    std::fs::write(&art, &bytes).unwrap();
    let (code, out, _) = privmem(&["replay", "--bin", "--json", art.to_str().unwrap()]);
    assert_eq!(code, 1);
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let got: Vec<&str> = r["signatures"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert!(want.iter().all(|w| got.contains(&w.as_str())), "{got:?} vs {want:?}");
}

#[test]
fn the_cvm_plan_is_the_one_the_docs_write_down() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let doc = std::fs::read_to_string(root.join("docs/cvm-setup.md")).unwrap();
    let block = doc.split("```\n").nth(1).expect("a fenced block in docs/cvm-setup.md");
    // The docs name the files relative to the repository, as the nightly dry run does.
    let (code, out, err) = privmem(&["plan", &corpus("tdx/shared-alias.seq"), &corpus("snp/validate-then-access.seq")]);
    assert_eq!(code, 0, "{err}");
    let out = out.replace(&format!("{}/", root.join("corpus").display()), "corpus/");
    assert_eq!(out, block, "docs/cvm-setup.md and `privmem plan` disagree");
    assert!(out.contains("KVM_TDX_INIT_MEM_REGION") && out.contains("KVM_SEV_SNP_LAUNCH_UPDATE"));
}

#[test]
fn every_command_answers_help_with_every_option_its_parser_takes() {
    for sp in privmem::cli::spec::SPECS {
        let (code, out, err) = privmem(&[sp.name, "--help"]);
        assert_eq!(code, 0, "privmem {} --help: {err}", sp.name);
        for o in sp.opts {
            let dash = if o.name.len() == 1 { "-" } else { "--" };
            assert!(
                out.contains(&format!("{dash}{} ", o.name)) || out.contains(&format!("{dash}{}\n", o.name)),
                "privmem {} --help lacks {dash}{}:\n{out}",
                sp.name,
                o.name
            );
        }
        // The parser takes exactly those: an option not in the table is refused, pointing at --help.
        let (code, _, err) = privmem(&[sp.name, "--no-such-option"]);
        assert_eq!(code, 2, "privmem {}", sp.name);
        assert!(err.contains("--help"), "{err}");
        let (_, top, _) = privmem(&["--help"]);
        assert!(top.contains(&format!("privmem {}", sp.name)), "the top-level usage lacks {}", sp.name);
    }
}

#[test]
fn replay_tap_exits_4_when_everything_is_skipped() {
    let (code, out, _) = privmem(&["replay", "--tap", "--kernel", "6.12", &corpus("tdx/shared-alias.seq")]);
    assert_eq!(code, 4, "{out}");
    assert!(out.starts_with("TAP version 13\n1..1\nok 1 - "), "{out}");
    assert!(out.contains("# SKIP"), "{out}");
    let (code, out, _) = privmem(&["replay", "--tap", &corpus("default/slot-errno.seq")]);
    assert_eq!(code, 0, "{out}");
}
