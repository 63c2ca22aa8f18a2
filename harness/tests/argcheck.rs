//! The argument-check tables (`model/argcheck.rs`): the family in `corpus/argcheck/` is the
//! tables' own (PRIVMEM_BLESS=1 rewrites it), every row fails with its errno on the model as
//! every kernel it holds on, and its edge does what it says.

use privmem::model::argcheck::{family, tables};
use privmem::oracle::run_model;
use privmem::seq::text::parse;
use std::path::Path;

#[test]
fn the_family_in_the_corpus_is_the_tables_own() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus/argcheck");
    let fam = family();
    if std::env::var_os("PRIVMEM_BLESS").is_some() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in &fam {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }
    let mut on_disk: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    on_disk.sort();
    let mut want: Vec<String> = fam.iter().map(|(n, _)| n.clone()).collect();
    want.sort();
    assert_eq!(on_disk, want, "corpus/argcheck is stale: run PRIVMEM_BLESS=1 cargo test --test argcheck");
    for (name, text) in &fam {
        assert_eq!(&std::fs::read_to_string(dir.join(name)).unwrap(), text, "{name} is stale");
    }
}

#[test]
fn every_row_fails_with_its_errno_on_the_model() {
    let mut rows = 0;
    for (name, text) in family() {
        let seq = parse(&name, &text).unwrap_or_else(|e| panic!("{e}"));
        let kernels = privmem::model::kernel::kernels_for(&seq.header);
        assert!(!kernels.is_empty(), "{name}: holds on no kernel");
        for k in kernels {
            let mut s = seq.clone();
            s.header.set_kernel(k);
            let t = run_model(&s);
            assert!(t.findings.is_empty(), "{name} as {k}: {:?}", t.findings);
        }
        rows += 1;
    }
    let total: usize = tables().iter().map(|t| t.checks.len()).sum();
    assert_eq!(rows, total);
    assert!(total >= 40, "{total} rows");
}
