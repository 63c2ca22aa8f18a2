//! Ships the corpus's known things in the binary: the documented hazards (`corpus/hazards/`)
//! and the recorded kernel differences (`corpus/known/`), so that an installed privmem, or the
//! lab's static one, knows them wherever it runs (`src/known.rs`).

use std::fmt::Write as _;
use std::path::Path;

/// What the tests that need this machine's parts look for, probed once here: a test whose need
/// is missing is `#[ignore]`d with its reason (`cfg(privmem_no_...)`), so `cargo test` says it
/// did not run. `PRIVMEM_STRICT_SKIPS=1` (CI) makes a missing need a build error instead; it
/// also probes again (the probe is not redone when only the machine changed: a cache directory
/// of kernel trees is too large to watch).
fn probe_test_needs() {
    println!("cargo:rerun-if-env-changed=PRIVMEM_STRICT_SKIPS");
    println!("cargo:rerun-if-env-changed=PRIVMEM_LAB_CACHE");
    let kvm = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok();
    let gcc = std::process::Command::new("gcc").arg("--version").output().is_ok_and(|o| o.status.success());
    // The lab cache's 7.3 uAPI headers (ci/lab/build-kernel.sh --version 7.3 installs them).
    let cache = std::env::var_os("PRIVMEM_LAB_CACHE").map(std::path::PathBuf::from).or_else(|| {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(std::path::PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
        Some(base.join("privmem-lab"))
    });
    let uapi = cache.as_ref().and_then(|c| std::fs::read_dir(c).ok()).is_some_and(|rd| {
        rd.flatten().any(|e| {
            e.file_name().to_string_lossy().starts_with("headers-7.3") && e.path().join("include/linux/kvm.h").is_file()
        })
    });
    let mut missing = Vec::new();
    for (cfg, have, what) in [
        ("privmem_no_kvm", kvm, "/dev/kvm, read-write"),
        ("privmem_no_gcc", gcc, "gcc"),
        (
            "privmem_no_uapi73",
            uapi,
            "Linux 7.3's uAPI headers in the lab cache (bash ci/lab/build-kernel.sh --version 7.3)",
        ),
    ] {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        if !have {
            println!("cargo:rustc-cfg={cfg}");
            missing.push(what);
        }
    }
    if std::env::var_os("PRIVMEM_STRICT_SKIPS").is_some_and(|v| v != "0") && !missing.is_empty() {
        panic!("PRIVMEM_STRICT_SKIPS: tests would be skipped; this machine lacks: {}", missing.join("; "));
    }
}

/// The software TDX module's core (`ci/lab/tdx/module/seam.c`), the same source the lab's TDX
/// kernel builds in, as a static library for `src/seam.rs`: privmem holds it to its model.
/// Freestanding: no libc calls, so the object links into the glibc and the static musl binary.
fn build_seam() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/lab/tdx/module");
    for f in ["seam.c", "seam.h"] {
        println!("cargo:rerun-if-changed={}", src.join(f).display());
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let obj = out.join("seam.o");
    let cc = std::env::var("CC").unwrap_or_else(|_| "gcc".into());
    let ok = std::process::Command::new(&cc)
        .args(["-c", "-O2", "-fPIC", "-ffreestanding", "-fno-stack-protector", "-Wall", "-Werror"])
        .args(["-Wno-unused-parameter", "-fno-tree-loop-distribute-patterns", "-o"])
        .arg(&obj)
        .arg(src.join("seam.c"))
        .status()
        .unwrap_or_else(|e| panic!("{cc} (the software TDX module's core, ci/lab/tdx/module/seam.c): {e}"));
    assert!(ok.success(), "{cc} could not build ci/lab/tdx/module/seam.c");
    let lib = out.join("libprivmem_seam.a");
    let _ = std::fs::remove_file(&lib);
    let ok = std::process::Command::new("ar").arg("rcs").arg(&lib).arg(&obj).status().expect("ar (binutils)");
    assert!(ok.success(), "ar could not archive seam.o");
    println!("cargo:rustc-link-search=native={}", out.display());
    println!("cargo:rustc-link-lib=static=privmem_seam");
}

fn main() {
    probe_test_needs();
    build_seam();
    // `privmem --version`: the checkout's `git describe`, or the crate's version outside one.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for f in [".git/HEAD", ".git/index", ".git/refs"] {
        println!("cargo:rerun-if-changed={}", repo.join(f).display());
    }
    let describe = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty", "--tags"])
        .current_dir(&repo)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success() && repo.join(".git").exists())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| format!("{} (no checkout)", env!("CARGO_PKG_VERSION")));
    println!("cargo:rustc-env=PRIVMEM_DESCRIBE={describe}");
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus");
    let mut o = String::from("&[\n");
    for dir in ["hazards", "known"] {
        let d = corpus.join(dir);
        println!("cargo:rerun-if-changed={}", d.display());
        let mut files: Vec<_> = std::fs::read_dir(&d)
            .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "seq")).collect())
            .unwrap_or_default();
        files.sort();
        for f in files {
            println!("cargo:rerun-if-changed={}", f.display());
            let name = f.file_name().expect("a file").to_string_lossy();
            let _ = writeln!(o, "    (\"corpus/{dir}/{name}\", include_str!({:?})),", f.display().to_string());
        }
    }
    o.push(']');
    let out = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("known_files.rs");
    std::fs::write(out, o).expect("write known_files.rs");
}
