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

/// `privmem fuzz` of huge-v3 with the planted model bug (new findings, none of them a documented
/// hazard), `extra` appended.
fn planted_fuzz(seed: &str, out: &std::path::Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec![
        "fuzz",
        "--vm",
        "tdx",
        "--variant",
        "huge-v3",
        "--plant",
        "huge-v3-split-ignored",
        "--runs",
        "3000",
        "--seed",
        seed,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    privmem(&args)
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
    // H1, huge-v1's documented livelock, is known; the planted bug makes huge-v3 livelock anew.
    let (code, out, _) = planted_fuzz("5", &d, &["--json"]);
    assert_eq!(code, 1, "the planted bug must yield findings: {out}");
    let summary: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert!(summary["exec_per_sec"].as_f64().unwrap() > 0.0);
    let mut seen_livelock = false;
    for e in std::fs::read_dir(&d).unwrap() {
        // A finding is a directory: its case, its record and its report, whole.
        let dir = e.unwrap().path();
        assert!(dir.is_dir() && !dir.file_name().unwrap().to_string_lossy().starts_with('.'), "{}", dir.display());
        let p = dir.join("case.seq");
        {
            let text = std::fs::read_to_string(&p).unwrap();
            let sig = text.lines().next().unwrap().trim_start_matches("# finding: ").to_string();
            seen_livelock |= sig.starts_with("livelock:");
            assert!(text.contains("# replay: privmem replay --plant huge-v3-split-ignored"), "{text}");
            let (code, out, _) =
                privmem(&["replay", "--plant", "huge-v3-split-ignored", "--json", p.to_str().unwrap()]);
            assert_eq!(code, 1, "{}", p.display());
            let (code, _, _) = privmem(&["replay", p.to_str().unwrap()]);
            assert_eq!(code, 0, "{}: without the plant, huge-v3 holds", p.display());
            let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
            let sigs: Vec<&str> = r["signatures"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
            assert!(sigs.contains(&sig.as_str()), "{} replays to {sigs:?}, not {sig}", p.display());
            assert!(dir.join("finding.json").exists() && dir.join("REPORT.md").exists());
        }
    }
    assert!(seen_livelock, "the planted huge-v3 bug shows as a livelock");
    // The README's first command: the documented hazards come up and are known, exit 0.
    let (code, out, _) = privmem(&["fuzz", "--runs", "200000", "--seed", "1", "--out", d.join("h").to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let (_, _, err) = privmem(&["fuzz", "--runs", "200000", "--seed", "1", "--out", d.join("h").to_str().unwrap()]);
    assert!(err.contains("known: H1 (corpus/hazards/H1-touch-then-accept-4k.seq)"), "{err}");
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
    // v3 against Sean's v5: the punch that v3 splits first and v5 zaps whole (H12, H13).
    let h12 = corpus("hazards/H12-punch-splits-first.seq");
    let (code, out, _) = privmem(&["replay", "--against", "huge-v5", &h12]);
    assert_eq!(code, 1);
    assert!(out.contains("variant-diff:read:huge-v3:value/huge-v5:ve"), "{out}");
    let (code, out, _) = privmem(&[
        "fuzz",
        "--vm",
        "tdx",
        "--variant",
        "huge-v3",
        "--against",
        "huge-v5",
        "--runs",
        "5000",
        "--seed",
        "1",
        "--out",
        d.join("v5").to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("/huge-v5:"), "{out}");
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
    use clap::CommandFactory;
    let cli = privmem::cli::commands::Cli::command();
    let (_, top, _) = privmem(&["--help"]);
    for sub in cli.get_subcommands() {
        let name = sub.get_name();
        assert!(top.contains(name), "the top-level usage lacks {name}");
        let (code, out, err) = privmem(&[name, "--help"]);
        assert_eq!(code, 0, "privmem {name} --help: {err}");
        let (code, help, _) = privmem(&["help", name]);
        assert_eq!((code, help.as_str()), (0, out.as_str()), "privmem help {name}");
        for a in sub.get_arguments().filter_map(|a| a.get_long()) {
            assert!(out.contains(&format!("--{a}")), "privmem {name} --help lacks --{a}:\n{out}");
        }
        // The parser takes exactly those: anything else is refused, pointing at --help.
        let (code, _, err) = privmem(&[name, "--no-such-option"]);
        assert_eq!(code, 2, "privmem {name}");
        assert!(err.contains("--help"), "{err}");
    }
    // A near miss names the option meant; libFuzzer's one-dash habit too.
    let (code, _, err) = privmem(&["fuzz", "--rns", "10"]);
    assert_eq!(code, 2);
    assert!(err.contains("--runs"), "{err}");
    let (code, _, err) = privmem(&["fuzz", "-runs=10"]);
    assert_eq!(code, 2);
    assert!(err.contains("--runs=10"), "{err}");
    let (code, out, _) = privmem(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("privmem ") && out.trim().len() > "privmem ".len(), "{out}");
    let (code, out, _) = privmem(&["completions", "bash"]);
    assert_eq!(code, 0);
    assert!(out.contains("privmem") && out.contains("--kernel-version"), "completions name the options");
    let d = tmpdir("man");
    let (code, _, err) = privmem(&["man", "-o", d.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let page = std::fs::read_to_string(d.join("privmem-fuzz.1")).unwrap();
    assert!(page.contains(".TH") && page.contains("runs"), "{page}");
}

#[test]
fn every_command_takes_json_and_dash_is_stdin_and_stdout() {
    use clap::CommandFactory;
    for sub in privmem::cli::commands::Cli::command().get_subcommands() {
        let has = sub.get_arguments().any(|a| a.get_long() == Some("json"));
        assert!(has || matches!(sub.get_name(), "exec" | "completions" | "man"), "{} lacks --json", sub.get_name());
    }
    let src = std::fs::read_to_string(corpus("default/plain-slot-read-write.seq")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_privmem"))
        .args(["export", "--kselftest=standalone", "-", "-o", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), src.as_bytes()).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("int main"));
    let (code, out, _) = privmem(&["print", "--json", &corpus("default/plain-slot-read-write.seq")]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["type"], "made");
    // A corpus root that is not there is an error, not an export of nothing.
    let (code, _, err) =
        privmem(&["corpus", "export", "--libfuzzer", tmpdir("seeds").to_str().unwrap(), "/nonexistent"]);
    assert_eq!(code, 2, "{err}");
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

#[test]
fn campaigns_into_one_out_keep_every_reproducer_and_clean_up_after_a_kill() {
    let d = tmpdir("two-campaigns");
    // A temporary a killed campaign left (its pid long gone) is removed by the next run.
    let stale = d.join(".livelock-00000000-00000000.tmp-999999999-0");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("case.seq"), "half").unwrap();
    let run = |seed: &str| {
        let d = d.clone();
        let seed = seed.to_string();
        std::thread::spawn(move || planted_fuzz(&seed, &d, &["--json"]))
    };
    let (a, b) = (run("5"), run("6"));
    let files: Vec<String> = [a.join().unwrap(), b.join().unwrap()]
        .iter()
        .flat_map(|(code, out, _)| {
            assert_eq!(*code, 1, "{out}");
            let s: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
            s["files"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_string()).collect::<Vec<_>>()
        })
        .collect();
    // Every reproducer either campaign reported is on disk, whole, with its own record.
    for f in &files {
        let p = std::path::Path::new(f);
        let rec: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(p.with_file_name("finding.json")).unwrap()).unwrap();
        let text = std::fs::read_to_string(p).unwrap();
        assert!(text.ends_with(rec["sequence"].as_str().unwrap()), "{f}: the .seq and the .json disagree");
    }
    let left: Vec<_> =
        std::fs::read_dir(&d).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with('.')).collect();
    assert!(left.is_empty(), "temporaries left: {:?}", left.iter().map(|e| e.file_name()).collect::<Vec<_>>());
}

#[test]
fn outputs_are_checked_before_the_campaign_and_a_closed_pipe_is_quiet() {
    let (code, _, err) = privmem(&["fuzz", "--runs", "10", "--junit", "/nonexistent-dir/j.xml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/nonexistent-dir/j.xml"), "{err}");
    let d = tmpdir("ro-out");
    let file = d.join("a-file");
    std::fs::write(&file, "").unwrap();
    let (code, _, err) = privmem(&["fuzz", "--runs", "10", "--out", file.join("sub").to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    // `privmem -h | head -1`: the reader goes away; privmem ends by SIGPIPE, not a panic.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_privmem"))
        .args(["replay", &corpus("default/plain-slot-read-write.seq"), &corpus("default/slot-errno.seq")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_ne!(out.status.code(), Some(101), "{err}");
}

#[test]
fn sigint_ends_a_campaign_with_its_summary_and_junit() {
    let d = tmpdir("sigint");
    let junit = d.join("fuzz.xml");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_privmem"))
        .args(["fuzz", "--time", "60", "--seed", "3", "--json", "--out"])
        .arg(d.join("findings"))
        .arg("--junit")
        .arg(&junit)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["type"], "fuzz.summary");
    assert!(last["seconds"].as_f64().unwrap() < 30.0);
    assert!(std::fs::read_to_string(&junit).unwrap().contains("<testsuite"));
}

/// A full disk: the campaign fails with the error, and what is in `--out` is whole findings
/// only, with no temporaries left.
#[test]
#[ignore = "mounts a 24 KiB tmpfs, so it needs root; .ci/run runs it (cargo test -- --ignored)"]
fn a_full_disk_leaves_only_whole_findings() {
    let d = tmpdir("full-disk");
    let st = Command::new("mount").args(["-t", "tmpfs", "-o", "size=24k", "tmpfs"]).arg(&d).status().unwrap();
    assert!(st.success(), "mount -t tmpfs {} (root needed)", d.display());
    let (code, out, err) = planted_fuzz("1", &d, &["--hazards", "all"]);
    // What is there, read before the tmpfs goes.
    let listing: Vec<(String, Vec<bool>)> = std::fs::read_dir(&d)
        .unwrap()
        .flatten()
        .map(|e| {
            let files = ["case.seq", "finding.json", "REPORT.md"].map(|f| e.path().join(f).exists()).to_vec();
            (e.file_name().to_string_lossy().into_owned(), files)
        })
        .collect();
    let _ = Command::new("umount").arg(&d).status();
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(!listing.is_empty(), "a finding fitted before the disk was full");
    for (name, files) in &listing {
        assert!(!name.starts_with('.'), "a temporary was left: {name}");
        assert!(files.iter().all(|&x| x), "{name} is not whole: {files:?}");
    }
}
