//! The corpus on disk: walking it, and the known kernel differences its scenarios record.

use std::path::{Path, PathBuf};

/// The repository's `corpus/` (or, inside the lab's initramfs, `/corpus`).
pub fn root() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus");
    match p.canonicalize() {
        Ok(p) => p,
        Err(_) if Path::new("/corpus").is_dir() => PathBuf::from("/corpus"),
        Err(_) => p,
    }
}

/// Every `.seq` file under `root`, sorted.
pub fn seq_files(root: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "seq") {
                v.push(p);
            }
        }
    }
    v.sort();
    v
}
