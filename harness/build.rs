//! Ships the corpus's known things in the binary: the documented hazards (`corpus/hazards/`)
//! and the recorded kernel differences (`corpus/known/`), so that an installed privmem, or the
//! lab's static one, knows them wherever it runs (`src/known.rs`).

use std::fmt::Write as _;
use std::path::Path;

fn main() {
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
