//! The exported C reproducer compiles with gcc here and, run against this host's KVM, prints
//! the same observations as `privmem replay --backend kvm` does for every step.

use privmem::backend::kvm::KvmBackend;
use privmem::backend::{Backend, Observed, RunError};
use privmem::seq::text::{parse, print_outcome};
use std::path::Path;
use std::process::Command;

#[test]
fn exported_c_matches_the_kvm_backend() {
    let Ok(mut k) = KvmBackend::open() else {
        eprintln!("skipping: needs /dev/kvm");
        return;
    };
    if Command::new("gcc").arg("--version").output().is_err() {
        eprintln!("skipping: needs gcc");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus");
    let dir = std::env::temp_dir().join(format!("privmem-kselftest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut compared = 0;
    for f in privmem::cli::corpus_cmd::seq_files(&root) {
        let src = std::fs::read_to_string(&f).unwrap();
        let seq = parse("s", &src).unwrap();
        let Ok(c) = privmem::report::kselftest::export(&seq, &f.display().to_string()) else {
            continue;
        };
        let real = match k.run(&seq) {
            Ok(r) => r,
            Err(RunError::Unsupported(why)) => {
                eprintln!("skip {}: {why}", f.display());
                continue;
            }
            Err(e) => panic!("{}: {e}", f.display()),
        };
        let stem = f.file_stem().unwrap().to_string_lossy().into_owned();
        let (cfile, bin) = (dir.join(format!("{stem}.c")), dir.join(&stem));
        std::fs::write(&cfile, c).unwrap();
        let cc = Command::new("gcc").args(["-O2", "-Wall", "-Werror", "-o"]).arg(&bin).arg(&cfile).output().unwrap();
        assert!(cc.status.success(), "{}: gcc failed:\n{}", f.display(), String::from_utf8_lossy(&cc.stderr));
        let out = Command::new(&bin).output().unwrap();
        // The reproducer asserts the scenario's expectations: it fails where a recorded kernel
        // difference shows, and passes elsewhere.
        let known = !privmem::oracle::diff::known_divergences(&src, k.caps.kernel).is_empty()
            && src.contains("# known-divergence");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(if known { 1 } else { 0 }), "{}: {stdout}", f.display());
        let got: Vec<String> = stdout
            .lines()
            .filter(|l| !l.contains(": expected ") && !l.starts_with("repro:"))
            .map(String::from)
            .collect();
        let want: Vec<String> = real
            .observed
            .iter()
            .enumerate()
            .filter_map(|(i, o)| match o {
                Observed::Outcome(o) => Some(format!("step {}: {}", i + 1, print_outcome(o))),
                _ => None,
            })
            .collect();
        assert_eq!(got, want, "{}: the C reproducer and the KVM backend disagree", f.display());
        compared += 1;
    }
    assert!(compared >= 6, "only {compared} default-VM scenarios compared");
}
