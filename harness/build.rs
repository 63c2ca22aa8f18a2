//! Ships the corpus's known things in the binary: the documented hazards (`corpus/hazards/`)
//! and the recorded kernel differences (`corpus/known/`), so that an installed privmem, or the
//! lab's static one, knows them wherever it runs (`src/known.rs`).

use std::fmt::Write as _;
use std::path::Path;

fn main() {
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
