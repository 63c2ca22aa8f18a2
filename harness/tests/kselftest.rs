//! The exported standalone C reproducer compiles with gcc here and, run against this host's
//! KVM, prints the same observations as `privmem replay --backend kvm` does for every step; a
//! scenario this host cannot run (another kernel's, or SW_PROTECTED here) exits 4 in C.
//! SW_PROTECTED reproducers run for real in the lab (ci/lab/kselftests.sh).

use privmem::backend::kvm::KvmBackend;
use privmem::backend::{Backend, Observed, RunError};
use privmem::seq::text::{parse, print_outcome};
use std::path::Path;
use std::process::Command;

#[test]
#[cfg_attr(privmem_no_kvm, ignore = "needs /dev/kvm")]
#[cfg_attr(privmem_no_gcc, ignore = "needs gcc")]
fn exported_c_matches_the_kvm_backend() {
    let mut k = KvmBackend::open().expect("needs /dev/kvm");
    Command::new("gcc").arg("--version").output().expect("needs gcc");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus");
    let dir = std::env::temp_dir().join(format!("privmem-kselftest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (mut compared, mut skipped) = (0, 0);
    for f in privmem::corpus::seq_files(&root) {
        let src = std::fs::read_to_string(&f).unwrap();
        let seq = parse("s", &src).unwrap();
        let Ok(c) = privmem::report::kselftest::export(&seq, &f.display().to_string()) else {
            continue;
        };
        let stem = f.file_stem().unwrap().to_string_lossy().into_owned();
        let (cfile, bin) = (dir.join(format!("{stem}.c")), dir.join(&stem));
        std::fs::write(&cfile, &c).unwrap();
        let cc = Command::new("gcc").args(["-O2", "-Wall", "-Werror", "-o"]).arg(&bin).arg(&cfile).output().unwrap();
        assert!(cc.status.success(), "{}: gcc failed:\n{}", f.display(), String::from_utf8_lossy(&cc.stderr));
        let out = Command::new(&bin).output().unwrap();
        // A scenario that holds on other kernels, or needs a VM type this host lacks, is a
        // kselftest skip (exit 4) in C, as the backend refuses it.
        let here = k.caps.kernel;
        let holds = here.is_none_or(|h| privmem::model::kernel::holds_on(&seq.header, h));
        if !holds || (seq.header.vm != privmem::seq::VmType::Default && !k.caps.sw_protected) {
            assert_eq!(out.status.code(), Some(4), "{}: {}", f.display(), String::from_utf8_lossy(&out.stderr));
            skipped += 1;
            continue;
        }
        let real = match k.run(&seq) {
            Ok(r) => r,
            Err(RunError::Unsupported(why)) => {
                eprintln!("skip {}: {why}", f.display());
                continue;
            }
            Err(e) => panic!("{}: {e}", f.display()),
        };
        // The reproducer asserts the scenario's expectations: it fails where a recorded kernel
        // difference shows, and passes elsewhere.
        let known = !privmem::oracle::diff::known_divergences(&src, k.caps.kernel).is_empty()
            && src.contains("# known-divergence");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(if known { 1 } else { 0 }), "{}: {stdout}", f.display());
        let got: Vec<String> = stdout
            .lines()
            .filter(|l| !(l.contains(": expected ") || l.starts_with("repro:") || (known && l.contains(": pages_4k="))))
            .map(String::from)
            .collect();
        let want: Vec<String> = real
            .observed
            .iter()
            .enumerate()
            .filter_map(|(i, o)| match o {
                Observed::Outcome(o) => Some(format!("step {}: {}", i + 1, print_outcome(o))),
                // Mapping counts where the scenario holds; a recorded kernel bug's counts are
                // its own (the C and the backend may each catch the prefetch differently).
                Observed::Pages([a, b, c]) if !known => {
                    Some(format!("step {}: pages_4k={a} pages_2m={b} pages_1g={c}", i + 1))
                }
                _ => None,
            })
            .collect();
        assert_eq!(got, want, "{}: the C reproducer and the KVM backend disagree", f.display());
        compared += 1;
    }
    eprintln!("{compared} reproducers agree with the KVM backend; {skipped} skip (exit 4) as the backend does");
    assert!(compared >= 6, "only {compared} default-VM scenarios compared");
    assert!(skipped > 0, "no reproducer skipped: the kernel and VM-type gates went untested");
}
