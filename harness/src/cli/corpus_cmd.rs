//! `privmem corpus export --libfuzzer DIR [ROOT]`: turn `corpus/**/*.seq` into seed inputs for
//! libFuzzer and AFL (the binary codec), one file per scenario, named after it.

use super::load;
use crate::report::write_atomic;
use crate::seq::codec::encode;
use std::path::{Path, PathBuf};

pub use crate::corpus::seq_files;

/// Export; returns the files written.
pub fn export(root: &Path, out: &Path) -> Result<Vec<PathBuf>, String> {
    let mut written = Vec::new();
    for f in seq_files(root) {
        let seq = load(&f.display().to_string())?;
        let rel = f.strip_prefix(root).unwrap_or(&f).with_extension("");
        let name = rel.to_string_lossy().replace(['/', '\\'], "__");
        let dst = out.join(name);
        write_atomic(&dst, &encode(&seq)).map_err(|e| format!("{}: {e}", dst.display()))?;
        written.push(dst);
    }
    Ok(written)
}

pub fn run(a: &super::commands::CorpusArgs) -> Result<i32, String> {
    match a.positional.first().map(String::as_str) {
        Some("export") => {}
        _ => return Err("corpus: usage: privmem corpus export --libfuzzer DIR [ROOT]".into()),
    }
    let out = a.libfuzzer.as_deref().ok_or("corpus export: --libfuzzer DIR is required")?;
    let root = a.positional.get(1).map(String::as_str).unwrap_or("corpus");
    if !Path::new(root).is_dir() {
        return Err(format!("corpus export: {root}: not a directory"));
    }
    let files = export(Path::new(root), Path::new(out))?;
    if files.is_empty() {
        return Err(format!("corpus export: {root}: no .seq files under it"));
    }
    if a.json {
        let r = crate::report::records::CorpusExport { exported: files.len(), dir: out.to_string() };
        crate::wire::print(r);
    } else {
        println!("exported {} seeds from {root} to {out}", files.len());
    }
    Ok(0)
}
