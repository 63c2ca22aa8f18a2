//! The corpus on disk: walking it (the known things it records ship in the binary: known.rs).

use std::path::{Path, PathBuf};

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
