//! The corpus on this host's real KVM: every scenario the host can run must agree with the
//! model on every op; scenarios it cannot run are skipped naming the missing capability; a
//! scenario marked `known-divergence: kvm SIGNATURE` must still show that divergence (a real
//! kernel difference kept as a regression sample). Needs /dev/kvm: without it the tests are
//! ignored, saying so (`cfg(privmem_no_kvm)`, probed by build.rs).

use privmem::backend::kvm::KvmBackend;
use privmem::backend::{Backend, RunError};
use privmem::oracle::diff::{check_real, diff, same_access_divergence};
use privmem::oracle::run::{run_model_with, RunOpts};
use privmem::seq::text::parse;
use std::path::{Path, PathBuf};

fn backend() -> KvmBackend {
    KvmBackend::open().unwrap_or_else(|e| panic!("needs /dev/kvm: {e}"))
}

/// A need only the run shows (the kernel's tracing for the view, a transparent huge page the
/// host may not give): said and passed, except under `PRIVMEM_STRICT_SKIPS` (CI), where a
/// skip fails.
fn skip(why: &str) {
    if std::env::var_os("PRIVMEM_STRICT_SKIPS").is_some_and(|v| v != "0") {
        panic!("PRIVMEM_STRICT_SKIPS: would skip: {why}");
    }
    eprintln!("skipping: {why}");
}

fn corpus_files() -> Vec<PathBuf> {
    privmem::corpus::seq_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus"))
}

#[test]
#[cfg_attr(privmem_no_kvm, ignore = "needs /dev/kvm")]
fn footing_holds_on_this_host() {
    let mut k = backend();
    k.footing().expect("the guest must read guest_memfd and see zero after a punch");
}

#[test]
#[cfg_attr(privmem_no_kvm, ignore = "needs /dev/kvm")]
fn corpus_agrees_with_real_kvm() {
    let mut k = backend();
    let (mut ran, mut skipped, mut failures, mut mapping_checks) = (0, 0, Vec::new(), 0);
    for f in corpus_files() {
        let src = std::fs::read_to_string(&f).unwrap();
        let seq = parse(&f.display().to_string(), &src).unwrap();
        let known = privmem::oracle::diff::known_divergences(&src, k.caps.kernel).into_iter().next();
        let known = known.as_deref();
        let c = check_real(&mut k, &seq);
        match c.unsupported {
            Some(why) => {
                eprintln!("skip {}: {why}", f.display());
                skipped += 1;
            }
            None => {
                ran += 1;
                mapping_checks += c.diff.mapping_checks;
                let sigs: Vec<String> =
                    c.diff.findings.iter().map(|d| format!("{} ({})", d.signature(), d.detail)).collect();
                match known {
                    Some(sig)
                        if !sigs.iter().any(|s| same_access_divergence(sig, s.split(' ').next().unwrap_or(""))) =>
                    {
                        failures.push(format!(
                        "{}: the known divergence {sig} no longer reproduces (fixed kernel? update the file): {sigs:?}",
                        f.display()
                    ))
                    }
                    Some(_) => {}
                    None if !sigs.is_empty() => failures.push(format!("{}: {}", f.display(), sigs.join("; "))),
                    None => {}
                }
            }
        }
    }
    eprintln!("real KVM: {ran} scenarios ran, {skipped} skipped, {mapping_checks} GFN comparisons ({})", k.view_name());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    if k.view_error.is_none() {
        assert!(mapping_checks > 0, "the mapping view compared nothing over the corpus");
    }
    if k.caps.guest_memfd {
        assert!(ran >= 8, "only {ran} scenarios ran on a host with guest_memfd");
    }
}

#[test]
#[cfg_attr(privmem_no_kvm, ignore = "needs /dev/kvm")]
fn reuse_proves_resets_clean() {
    let mut k = backend();
    let seq =
        parse("t", "vm default\nslot 1 gpa=0x200000 size=2M\nvcpu0 write 0x200000 5\nvcpu0 read 0x200000 => value 5\n")
            .unwrap();
    for _ in 0..20 {
        let t = k.run(&seq).expect("runs");
        assert_eq!(t.guest_ops, 2);
        assert_eq!(t.exits, 1, "two guest ops in a row cost one exit");
    }
    assert!(k.fresh_vms <= 2, "{} VMs for 20 cases: the reset was never proved clean", k.fresh_vms);
}

#[test]
#[cfg_attr(privmem_no_kvm, ignore = "needs /dev/kvm")]
fn unsupported_ops_name_the_capability() {
    let mut k = backend();
    let seq = parse(
        "t",
        "vm default\ngmem g size=2M huge mmap init-shared\nslot 0 gpa=0x100000000 size=2M gmem=g offset=0\n",
    )
    .unwrap();
    match k.run(&seq) {
        // The first thing this host lacks is named: guest_memfd itself where it has none.
        Err(RunError::Unsupported(why)) if !k.caps.guest_memfd => assert!(why.contains("KVM_CAP_GUEST_MEMFD"), "{why}"),
        Err(RunError::Unsupported(why)) => assert!(why.contains("huge guest_memfd"), "{why}"),
        other => panic!("{other:?}"),
    }
    if !k.caps.pre_fault_memory {
        let seq = parse("t", "vm default\nslot 0 gpa=0x100000 size=4K\nprefault vcpu0 0x100000 4K\n").unwrap();
        assert_eq!(k.run(&seq).unwrap_err(), RunError::Unsupported("KVM_CAP_PRE_FAULT_MEMORY".into()));
    }
}

#[test]
#[cfg_attr(privmem_no_kvm, ignore = "needs /dev/kvm")]
fn a_hung_guest_times_out_and_the_backend_goes_on() {
    let mut k = backend();
    k.timeout = std::time::Duration::from_millis(300);
    let start = std::time::Instant::now();
    assert_eq!(k.self_test_timeout().unwrap(), RunError::Timeout { step: 0 });
    assert!(start.elapsed() < std::time::Duration::from_secs(5), "took {:?}", start.elapsed());
    let seq =
        parse("t", "vm default\nslot 1 gpa=0x200000 size=2M\nvcpu0 write 0x200000 5\nvcpu0 read 0x200000 => value 5\n")
            .unwrap();
    let t = k.run(&seq).expect("the backend runs the next case after a timeout");
    assert_eq!(t.observed.len(), 2);
}

/// The kernel's view sees the level it mapped, and the oracle holds the model to it: a plain
/// slot on memory the backend made huge maps the written GFN with a 2M leaf; a model told the
/// memory was small (so it expects a 4K leaf) must then show a `mapping` divergence naming
/// the GFN.
#[test]
#[cfg_attr(privmem_no_kvm, ignore = "needs /dev/kvm")]
fn the_mapping_view_sees_levels_and_the_oracle_compares_them() {
    let mut k = backend();
    if let Some(why) = &k.view_error {
        skip(&format!("no mapping view on this host ({why})"));
        return;
    }
    let seq = parse(
        "t",
        "vm default\nslot 1 gpa=0x40000000 size=4M\nvcpu0 write 0x40201000 5\nhost-read 0x40201000 => value 5\n",
    )
    .unwrap();
    let real = k.run(&seq).expect("runs");
    use privmem::backend::view::UserBacking;
    if real.host.plain != UserBacking::Huge {
        // THP can fail on a fragmented host: then there is no huge leaf to see.
        skip(&format!("the host gave the slot no transparent huge page ({:?})", real.host.plain));
        return;
    }
    let leaves = match &real.views[0] {
        Some(v) => v.leaves().to_vec(),
        None => panic!("no view after the guest write"),
    };
    let gfn = 0x40201000u64 >> 12;
    let hit =
        leaves.iter().find(|l| gfn >= l.gfn && gfn < l.gfn + l.level.pages()).expect("the written GFN has a leaf");
    assert_eq!(hit.level, privmem::seq::Level::L2M, "the kernel mapped huge memory with {hit:?}");
    // The right facts: no divergence, and comparisons were made.
    let opts = RunOpts {
        host: real.host,
        leaves_at: real.views.iter().map(Option::is_some).collect(),
        real: Some(&real),
        ..Default::default()
    };
    let d = diff(&seq, &run_model_with(&seq, &opts).0, &real);
    assert!(d.findings.is_empty(), "{:?}", d.findings);
    assert!(d.mapping_checks > 0);
    // Wrong facts: the model expects 4K, the kernel has 2M.
    let mut wrong = opts.clone();
    wrong.host.plain = UserBacking::Small;
    let d = diff(&seq, &run_model_with(&seq, &wrong).0, &real);
    let f = d.findings.iter().find(|f| f.state.starts_with("mapping:")).expect("a mapping divergence");
    assert_eq!(f.state, "mapping:model:4k/real:2m");
    assert!(f.detail.contains(&format!("{:#x}", gfn)), "{}", f.detail);
}
