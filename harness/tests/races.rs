//! Concurrent groups, dirty logging and injected faults: the language, the race oracle held to
//! made-up kernel observations (what a buggy kernel would give), and real overlap on
//! `/dev/kvm`.

use privmem::backend::kvm::KvmBackend;
use privmem::backend::{Backend, Observed, RealTrace};
use privmem::oracle::diff::{check_real, collide_seed, diff};
use privmem::oracle::run::{run_model, run_model_with, RunOpts};
use privmem::oracle::FindingKind;
use privmem::seq::text::{parse, print};
use privmem::seq::{codec, Errno, Outcome, Sequence};

fn seq(src: &str) -> Sequence {
    parse("t.seq", src).unwrap_or_else(|e| panic!("{e}"))
}

const GROUP: &str = "vm default\nvcpus 2\nslot 7 gpa=0x100000000 size=2M\nvcpu0 write 0x100000000 0x1\n\
                     together {\n    slot-delete 7\n    vcpu0 read 0x100000000\n}\nvcpu1 read 0x100000000\n";

#[test]
fn a_group_prints_parses_and_encodes_back() {
    let s = seq(GROUP);
    assert_eq!(s.group_at(3), 3..4, "the last read runs alone");
    assert_eq!(s.group_at(1), 1..3);
    assert_eq!(print(&s), "vm default\nvcpus 2\nslot 7 gpa=0x100000000 size=2M\nvcpu0 write 0x100000000 0x1\ntogether {\n    slot-delete 7\n    vcpu0 read 0x100000000\n}\nvcpu1 read 0x100000000\n");
    assert_eq!(codec::decode(&codec::encode(&s)), s);
}

#[test]
fn groups_that_cannot_be_are_parse_errors_with_their_place() {
    let cases = [
        ("vm default\nvcpus 2\ntogether {\nvcpu0 read 0x1000\n}\n", 5, "needs two or more"),
        ("vm default\nvcpus 2\ntogether {\nvcpu0 read 0x1000\nvcpu0 write 0x1000 1\n}\n", 5, "one op of a group"),
        ("vm default\ntogether {\nvcpu0 read 0x1000\ntogether {\n", 4, "cannot hold another"),
        ("vm default\nvcpus 2\ntogether {\nvcpu0 read 0x1000\nvcpu1 read 0x2000\n", 5, "expected `}`"),
        ("vm default\n}\n", 2, "no open"),
        ("vm default\ntogether {\nvcpu0 read 0x1000\nfail-nth 2\n}\n", 4, "cannot run together"),
        ("vm default\ntogether {\nvcpu0 read 0x1000\nprefault vcpu0 0x1000 4K\n}\n", 4, "cannot run together"),
        ("vm default\ntogether {\nslot-delete 1\nslot-move 1 gpa=0x1000\n}\n", 4, "slot 1 is changed"),
        ("vm default\nvcpus 2\ntogether {\nvcpu0 write 0x1000 1\nvcpu1 write 0x2000 1\n}\n", 5, "one guest write"),
        ("vm default\nclear-dirty-log 7 first=0 pages=0x100000000\n", 2, "32 bits"),
    ];
    for (src, line, what) in cases {
        let e = parse("bad.seq", src).expect_err(src);
        assert_eq!(e.line, line, "{src}: {e}");
        assert!(e.msg.contains(what), "{src}: {e}");
    }
}

/// A made-up real run: the given outcomes per step, nothing else observed.
fn observed(outcomes: &[Outcome]) -> RealTrace {
    RealTrace { observed: outcomes.iter().cloned().map(Observed::Outcome).collect(), ..Default::default() }
}

#[test]
fn the_race_oracle_takes_any_serialization_and_names_the_group_when_none_fits() {
    let s = seq(GROUP);
    fn opts(r: &RealTrace) -> RunOpts<'_> {
        RunOpts { real: Some(r), ..Default::default() }
    }
    // The read before the deletion (value 1) or after it (MMIO): both are serializations.
    for read in [Outcome::Value(1), Outcome::Exit(privmem::seq::Exit::Mmio)] {
        let r = observed(&[Outcome::Ok, Outcome::Ok, read, Outcome::Exit(privmem::seq::Exit::Mmio)]);
        let t = run_model_with(&s, &opts(&r)).0;
        assert!(t.findings.is_empty(), "{read:?}: {:?}", t.findings);
        assert!(diff(&s, &t, &r).findings.is_empty());
    }
    // A read that gives a value nobody wrote: no order gives it.
    let r = observed(&[Outcome::Ok, Outcome::Ok, Outcome::Value(7), Outcome::Exit(privmem::seq::Exit::Mmio)]);
    let t = run_model_with(&s, &opts(&r)).0;
    let f = t.findings.iter().find(|f| f.kind == FindingKind::Race).expect("a race finding");
    // Each order misses the read alone: the finding is named by it, as a divergence would be.
    assert_eq!((f.state.as_str(), f.step), ("model:exit-mmio/real:value", Some(2)));
    assert!(f.detail.contains("tried 2 order(s)") && f.detail.contains("2 3: ok, exit mmio"), "{}", f.detail);
    assert!(f.detail.contains("closest order 2 3: all but step 3"), "{}", f.detail);
    // Two steps no order gives: the group's kinds name it.
    let r = observed(&[
        Outcome::Ok,
        Outcome::Err(Errno::EINVAL),
        Outcome::Value(7),
        Outcome::Exit(privmem::seq::Exit::Mmio),
    ]);
    let t = run_model_with(&s, &opts(&r)).0;
    let f = t.findings.iter().find(|f| f.kind == FindingKind::Race).expect("a race finding");
    assert_eq!(f.state, "no-serialization:slot-delete+read");
    // The group's steps are the race finding's, not divergences one by one.
    assert!(diff(&s, &t, &r).findings.is_empty());
}

#[test]
fn dirty_logging_on_the_model_follows_the_kernel_rules() {
    let s = seq("vm default\nslot 7 gpa=0x100000000 size=4M\nvcpu0 write 0x100000000 1\nslot-update 7 log-dirty\n\
                 vcpu0 write 0x100001000 2\nvcpu0 write 0x100001000 3\nvcpu0 read 0x100203000\nget-dirty-log 7\n\
                 clear-dirty-log 7 first=1 pages=64\nclear-dirty-log 7 first=0 pages=1088\nslot-update 7 readonly\n\
                 slot-update 8 log-dirty\nslot-update 7\nget-dirty-log 7\n");
    let t = run_model(&s);
    let rep = t.dirty[5].as_ref().expect("a report");
    assert_eq!(rep.must, vec![1], "the one page written while logging");
    assert!(rep.may.contains(&0x203), "a read fault may dirty its page: {:?}", rep.may);
    assert!(rep.allows(&[1, 0x203]).is_ok() && rep.allows(&[1]).is_ok());
    assert!(rep.allows(&[]).unwrap_err().contains("page 1"));
    assert!(rep.allows(&[1, 5]).unwrap_err().contains("page 5"));
    let e = |x| Outcome::Err(x);
    assert_eq!(t.outcomes[6], e(Errno::EINVAL), "first page not a multiple of 64");
    assert_eq!(t.outcomes[7], e(Errno::EINVAL), "past the slot");
    assert_eq!(t.outcomes[8], e(Errno::EINVAL), "READONLY differs");
    assert_eq!(t.outcomes[9], e(Errno::ENOENT), "no slot 8: no call to make");
    assert_eq!(t.outcomes[10], Outcome::Ok, "logging off");
    assert_eq!(t.outcomes[11], e(Errno::ENOENT), "logging off: no bitmap");
}

#[test]
fn logging_splits_huge_leaves_and_turning_it_off_recovers_or_zaps_by_release() {
    let src = |k: &str| {
        format!(
            "vm default\nkernel {k}\nslot 7 gpa=0x100000000 size=2M\nvcpu0 write 0x100000000 1\n\
             slot-update 7 log-dirty\nexpect pages_4k=512 pages_2m=0\nslot-update 7\nexpect {}\n",
            if k == "7.3" { "pages_2m=1 pages_4k=0" } else { "pages_2m=0 pages_4k=0" }
        )
    };
    for k in ["6.12", "7.3"] {
        let mut s = seq(&src(k));
        // THP decides a plain slot's level unless the host says: make it huge.
        let opts = RunOpts {
            host: privmem::model::HostFacts { plain: privmem::backend::view::UserBacking::Huge, ..Default::default() },
            ..Default::default()
        };
        s.header.set_kernel(privmem::seq::Release::new(
            if k == "7.3" { 7 } else { 6 },
            if k == "7.3" { 3 } else { 12 },
            118,
        ));
        let t = run_model_with(&s, &opts).0;
        assert!(t.findings.is_empty(), "{k}: {:?}", t.findings);
    }
}

#[test]
fn a_failed_allocation_is_the_op_done_or_not_done_with_enomem() {
    let s = seq("vm sw-protected\ngmem g size=2M\nslot 0 gpa=0x100000000 size=2M gmem=g offset=0\n\
                 fail-nth 3\nprivate 0x100000000 2M\nvcpu0 read 0x100000000\n");
    let fired = |o: Outcome| {
        let mut r = observed(&[Outcome::Ok, o, Outcome::Value(0)]);
        r.fault_fired = vec![None, Some(true), None];
        r
    };
    for o in [Outcome::Ok, Outcome::Err(Errno::ENOMEM)] {
        let r = fired(o);
        let t = run_model_with(&s, &RunOpts { real: Some(&r), ..Default::default() }).0;
        assert!(t.findings.is_empty() && diff(&s, &t, &r).findings.is_empty(), "{o:?}: {:?}", t.findings);
    }
    let r = fired(Outcome::Err(Errno::EFAULT));
    let t = run_model_with(&s, &RunOpts { real: Some(&r), ..Default::default() }).0;
    let f = t.findings.iter().find(|f| f.state.starts_with("injected-fault:")).expect("a finding");
    assert!(f.detail.contains("allocation 3"), "{}", f.detail);
    // Where the fault did not fire, only the op done is right.
    let mut r = fired(Outcome::Err(Errno::ENOMEM));
    r.fault_fired[1] = Some(false);
    let t = run_model_with(&s, &RunOpts { real: Some(&r), ..Default::default() }).0;
    assert!(!diff(&s, &t, &r).findings.is_empty());
}

#[test]
fn the_collide_seed_ignores_expectations() {
    let s = seq(GROUP);
    let mut with = s.clone();
    with.steps[0].expect = Some(Outcome::Ok);
    assert_eq!(collide_seed(&s), collide_seed(&with));
    let mut other = s.clone();
    other.steps[0].op = privmem::seq::Op::HostRead { addr: 0x100000000 };
    assert_ne!(collide_seed(&s), collide_seed(&other));
}

/// On real KVM: a deletion racing two vCPUs' reads, every repetition held to the model.
#[test]
fn real_overlap_on_kvm_is_always_some_serialization() {
    let mut k = match KvmBackend::open() {
        Ok(k) => k,
        Err(e) => return privmem_skip(&e),
    };
    let s = seq(GROUP);
    if let Some(why) = k.unsupported(&s) {
        return privmem_skip(&why);
    }
    for rep in 0..16 {
        k.release_as(collide_seed(&s), rep);
        let real = k.run(&s).expect("runs");
        let t = privmem::oracle::diff::run_model_against(&s, &real);
        assert!(t.findings.is_empty(), "repetition {rep}: {:?}", t.findings);
        let d = diff(&s, &t, &real);
        assert!(d.findings.is_empty(), "repetition {rep}: {:?}", d.findings);
    }
    // And through check_real, which repeats with other offsets itself.
    let c = check_real(&mut k, &s);
    assert!(c.diff.findings.is_empty() && c.model.findings.is_empty());
}

/// Dirty logging on real KVM: the bitmap lies between what the guest wrote and what it touched.
#[test]
fn dirty_logging_on_kvm_reports_every_written_page() {
    let mut k = match KvmBackend::open() {
        Ok(k) => k,
        Err(e) => return privmem_skip(&e),
    };
    let s = seq("vm default\nslot 7 gpa=0x100000000 size=4M\nvcpu0 write 0x100000000 1\nvcpu0 read 0x100200000\n\
                 slot-update 7 log-dirty\nvcpu0 write 0x100000000 2\nvcpu0 write 0x100003000 2\nvcpu0 read 0x100004000\n\
                 get-dirty-log 7\nget-dirty-log 7\nvcpu0 write 0x100005000 2\nclear-dirty-log 7 first=0 pages=64\n\
                 get-dirty-log 7\nslot-update 7\nget-dirty-log 7 => err ENOENT\n");
    if let Some(why) = k.unsupported(&s) {
        return privmem_skip(&why);
    }
    let c = check_real(&mut k, &s);
    assert!(c.diff.findings.is_empty() && c.model.findings.is_empty(), "{:?} {:?}", c.diff.findings, c.model.findings);
    let bits = |i: usize| match &c.steps[i].outcome {
        Observed::DirtyLog(b) => b.clone(),
        o => panic!("step {}: {o:?}", i + 1),
    };
    assert!(bits(6).contains(&0) && bits(6).contains(&3), "{:?}", bits(6));
    assert!(bits(7).is_empty(), "GET without manual protect clears: {:?}", bits(7));
    assert!(bits(10).is_empty(), "CLEAR took page 5 away: {:?}", bits(10));
}

fn privmem_skip(why: &str) {
    if std::env::var_os("PRIVMEM_STRICT_SKIPS").is_some_and(|v| v != "0") {
        panic!("PRIVMEM_STRICT_SKIPS: would skip: {why}");
    }
    eprintln!("skipped: {why}");
}

/// A guest write that raced a conversion of its page on a SW_PROTECTED VM: the fault started
/// shared, the page turned private before the fault held it, and KVM exited to userspace with
/// KVM_EXIT_MEMORY_FAULT (shared). Found by a lab campaign on a stock 7.3.4 (seed 1), where the
/// oracle called it a race; no order of whole ops gives that exit, but a fault that loses to a
/// conversion does.
#[test]
fn a_fault_that_loses_to_a_conversion_exits_with_what_it_started_as() {
    use privmem::seq::Exit;
    let s = seq("vm sw-protected\nvcpus 1\ngmem g0 size=2M\nslot 0 gpa=0x100000000 size=2M gmem=g0 offset=0\n\
                 together {\n    private 0x100000000 2M\n    private 0x100000000 2M\n    shared 0x100000000 4K\n    \
                 punch 0x100800000 4K no-keep-size\n    vcpu0 write 0x10017c000 0x1\n}\n");
    let run = |exit: bool| {
        let r = observed(&[
            Outcome::Ok,
            Outcome::Ok,
            Outcome::Ok,
            Outcome::Err(Errno::ENOENT),
            Outcome::Exit(Exit::MemoryFault { private: exit }),
        ]);
        let t = run_model_with(&s, &RunOpts { real: Some(&r), ..Default::default() }).0;
        (t.findings.clone(), diff(&s, &t, &r).findings)
    };
    let (f, d) = run(false);
    assert!(f.is_empty() && d.is_empty(), "{f:?} {d:?}");
    // A fault that started private: the page was never private and then shared again.
    let (f, _) = run(true);
    let r = f.iter().find(|f| f.kind == FindingKind::Race).expect("a race finding");
    assert_eq!(r.state, "model:ok/real:exit-memory-fault-private", "{}", r.detail);
}

/// Two orders fit a group and leave different states: a write before a conversion of its page
/// (zapped with it) or after (a private leaf). Where the group's own view says nothing, the
/// order whose continuation explains the later steps is taken, not the first.
#[test]
fn the_race_oracle_keeps_the_order_the_rest_of_the_run_explains() {
    use privmem::backend::view::StepView;
    let s = seq("vm sw-protected\nvcpus 1\ngmem g0 size=2M\nslot 0 gpa=0x100000000 size=2M gmem=g0 offset=0\n\
                 together {\n    private 0x100000000 2M\n    vcpu0 write 0x10017c000 0x1\n}\npunch 0x100177000 4K\n");
    let mut r = observed(&[Outcome::Ok, Outcome::Ok, Outcome::Ok]);
    // No view after the group; after the punch, no leaf at all.
    r.views = vec![None, None, Some(StepView::Leaves(Vec::new().into()))];
    let t = privmem::oracle::diff::run_model_against(&s, &r);
    assert!(t.findings.is_empty(), "{:?}", t.findings);
    assert!(diff(&s, &t, &r).findings.is_empty(), "{:?}", diff(&s, &t, &r).findings);
    // Program order alone (the write after the conversion) leaves a private leaf there.
    let alone = run_model_with(&s, &RunOpts { leaves_at: vec![false, false, true], ..Default::default() }).0;
    assert!(!diff(&s, &alone, &r).findings.is_empty(), "the test needs the two orders to differ");
}

fn generated(n: usize, seed: u64, cfg: &privmem::seq::gen::GenConfig) -> Vec<Sequence> {
    let mut rng = privmem::campaign::Rng::new(seed);
    let mut buf = vec![0u8; 1024];
    let mut v = Vec::new();
    while v.len() < n {
        rng.fill(&mut buf);
        if let Ok(s) = privmem::seq::gen::generate(&mut arbitrary::Unstructured::new(&buf), cfg) {
            v.push(s);
        }
    }
    v
}

/// Races live where two ops touch the same GFNs: with groups, the generator puts a guest access
/// inside the slot a deletion removes into the deletion's group (the other side of
/// `fault-ignores-invalid-slot`), and a conversion over a guest access's page, often.
#[test]
fn the_generator_joins_ops_that_touch_the_same_gfns() {
    use privmem::seq::Op;
    let cfg = privmem::seq::gen::GenConfig {
        vm: Some(privmem::seq::VmType::SwProtected),
        max_ops: 24,
        groups: true,
        ..Default::default()
    };
    let (mut delete_access, mut convert_access) = (0, 0);
    for s in generated(3000, 5, &cfg) {
        for i in 0..s.steps.len() {
            let g = s.group_at(i);
            if g.start != i || g.len() < 2 {
                continue;
            }
            let ops: Vec<&Op> = g.clone().map(|k| &s.steps[k].op).collect();
            let access = |lo: u64, hi: u64| {
                ops.iter().any(|o| o.kind().is_guest() && o.addr().is_some_and(|a| (lo..hi).contains(&a)))
            };
            for o in &ops {
                match o {
                    Op::SlotDelete { id } => {
                        if let Some(sl) = s.header.slots.iter().find(|sl| sl.id == *id) {
                            delete_access += usize::from(access(sl.gpa, sl.gpa + sl.size));
                        }
                    }
                    Op::Private { addr, size } | Op::Shared { addr, size } => {
                        convert_access += usize::from(access(*addr, addr + size));
                    }
                    _ => {}
                }
            }
        }
    }
    assert!(delete_access >= 100, "a deletion and an access of its slot in {delete_access} groups");
    assert!(convert_access >= 200, "a conversion and an access in its range in {convert_access} groups");
}

/// `--large-conversions`: some conversions are 16G, 32G or 64G from a 1G boundary; without it
/// none is (the integer edges make other huge sizes, which the real backends leave out).
#[test]
fn large_conversions_are_opt_in() {
    use privmem::seq::Op;
    let big = |large| {
        let cfg = privmem::seq::gen::GenConfig { max_ops: 24, large_conversions: large, ..Default::default() };
        generated(2000, 9, &cfg)
            .iter()
            .flat_map(|s| s.steps.iter())
            .filter(|st| {
                matches!(st.op, Op::Private { size, addr } | Op::Shared { size, addr }
                if [16u64 << 30, 32 << 30, 64 << 30].contains(&size) && addr % (1 << 30) == 0)
            })
            .count()
    };
    assert_eq!(big(false), 0);
    assert!(big(true) >= 50, "{} large conversions", big(true));
}

/// A kernel difference corpus/known records shows in a group too: a read racing the conversion
/// of a slot-less GFN it touched as MMIO gets the stale MMIO SPTE in either order (found by a
/// lab campaign with groups on stock 7.3.4). The race finding is named by the read's outcomes,
/// and the recorded divergence covers it.
#[test]
fn a_known_divergence_inside_a_group_is_known() {
    use privmem::oracle::diff::same_access_divergence;
    use privmem::seq::Exit;
    let s = seq("vm sw-protected\nvcpus 1\nvcpu0 write 0xfffff000 0x1\nprivate 0xffe00000 2M\n\
                 together {\n    private 0xfffff000 4K\n    vcpu0 read 0xfffff000\n}\n");
    let r = observed(&[Outcome::Exit(Exit::Mmio), Outcome::Ok, Outcome::Ok, Outcome::Exit(Exit::Mmio)]);
    let t = run_model_with(&s, &RunOpts { real: Some(&r), ..Default::default() }).0;
    let f = t.findings.iter().find(|f| f.kind == FindingKind::Race).expect("a race finding");
    let sig = f.signature();
    assert_eq!(sig, "race:read:model:exit-memory-fault-private/real:exit-mmio@sw-protected");
    assert!(same_access_divergence("divergence:read:model:exit-memory-fault-private/real:exit-mmio", &sig));
    assert!(!same_access_divergence("divergence:read:model:ok/real:exit-mmio", &sig));
}

/// After a group, a leaf's memory must be the side its GFN is on under every order: the slot's
/// shared page behind a GFN every order leaves private is what a fault that ignored an
/// invalidation leaves (ci/lab/planted/fault-ignores-invalidation).
#[test]
fn a_leaf_on_the_wrong_side_of_a_conversion_is_a_race() {
    let s = seq("vm sw-protected\nvcpus 1\ngmem g0 size=2M\nslot 0 gpa=0x100000000 size=2M gmem=g0 offset=0\n\
                 together {\n    private 0x100000000 2M\n    vcpu0 read 0x100002000\n}\n");
    let run = |shared_page: bool| {
        let mut r = observed(&[Outcome::Ok, Outcome::Value(0)]);
        r.backing = vec![None, Some(vec![(0x100002, shared_page)])];
        privmem::oracle::diff::run_model_against(&s, &r).findings
    };
    let f = run(true);
    let r = f.iter().find(|f| f.kind == FindingKind::Race).expect("a race finding");
    assert_eq!(r.state, "shared-leaf-for-private-gfn", "{}", r.detail);
    assert!(run(false).is_empty(), "guest_memfd's page behind a private GFN: {:?}", run(false));
    // Where the orders disagree on the GFN's side, either memory is allowed.
    let s = seq("vm sw-protected\nvcpus 1\ngmem g0 size=2M\nslot 0 gpa=0x100000000 size=2M gmem=g0 offset=0\n\
                 together {\n    private 0x100000000 2M\n    shared 0x100002000 4K\n    vcpu0 read 0x100002000\n}\n");
    for shared_page in [true, false] {
        let mut r = observed(&[Outcome::Ok, Outcome::Ok, Outcome::Value(0)]);
        r.backing = vec![None, None, Some(vec![(0x100002, shared_page)])];
        let f = privmem::oracle::diff::run_model_against(&s, &r).findings;
        assert!(!f.iter().any(|f| f.state.contains("-leaf-for-")), "{f:?}");
    }
}

/// A GFN an earlier group left on an order-dependent side (`private` over it and `shared` of
/// it together) is judged by a later group under the order the rest of the run explains: the
/// guest_memfd page behind it after the later group says the earlier `shared` came first.
/// (A false `private-leaf-for-shared-gfn` of a stock 7.3.4 lab campaign, seed 2.)
#[test]
fn a_later_group_is_judged_under_the_order_that_explains_the_earlier_one() {
    let s = seq("vm sw-protected\nvcpus 1\ngmem g0 size=2M\nslot 0 gpa=0x200001000 size=2M gmem=g0 offset=0\n\
                 together {\n    private 0x200001000 2M\n    vcpu0 touch 0x20019f000\n    shared 0x20019f000 4K\n}\n\
                 together {\n    fallocate g0 0x1000 2M punch no-keep-size\n    private 0x200201000 2M\n}\n");
    // A punch without KEEP_SIZE is EOPNOTSUPP (guest_memfd keeps its size).
    let mut r = observed(&[Outcome::Ok, Outcome::Ok, Outcome::Ok, Outcome::Err(Errno::EOPNOTSUPP), Outcome::Ok]);
    r.backing = vec![None, None, Some(vec![(0x20019f, false)]), None, Some(vec![(0x20019f, false)])];
    let f = privmem::oracle::diff::run_model_against(&s, &r).findings;
    assert!(f.is_empty(), "{f:?}");
}

/// Manual protect with initially-set: every page is reported until cleared, GET clears
/// nothing, and a bitmap that lacks an initially-set page is a divergence.
#[test]
fn manual_protect_with_initially_set_reports_every_page_until_cleared() {
    let src = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../corpus/default/dirty-log-manual-protect-initially-set.seq"),
    )
    .unwrap();
    let s = seq(&src);
    let t = run_model(&s);
    assert!(t.findings.is_empty(), "{:?}", t.findings);
    let first = t.dirty[3].as_ref().expect("the first GET");
    assert_eq!(first.must_ranges, vec![(0, 1024)]);
    assert!(first.allows(&(0..1024).collect::<Vec<_>>()).is_ok());
    assert!(first.allows(&(1..1024).collect::<Vec<_>>()).unwrap_err().contains("initially set"));
    for k in [6, 7] {
        let r = t.dirty[k].as_ref().expect("a GET after the clear");
        assert_eq!((r.must.as_slice(), r.must_ranges.is_empty()), (&[0x201u64][..], true), "step {}", k + 1);
    }
    // Levels (TDP MMU, a huge host backing): logging on leaves the 2M leaf, the clear splits it.
    let s = seq("vm default\nslot 7 gpa=0x100000000 size=2M\ndirty-log-protect manual initially-set\n\
                 vcpu0 write 0x100000000 1\nslot-update 7 log-dirty\nexpect pages_2m=1 pages_4k=0\n\
                 clear-dirty-log 7 first=0 pages=512\nexpect pages_4k=512 pages_2m=0\n");
    let opts = RunOpts {
        host: privmem::model::HostFacts { plain: privmem::backend::view::UserBacking::Huge, ..Default::default() },
        ..Default::default()
    };
    let t = run_model_with(&s, &opts).0;
    assert!(t.findings.is_empty(), "{:?}", t.findings);
    // Refused flags, as x86 has them.
    let bad =
        seq("vm default\ndirty-log-protect initially-set\ndirty-log-protect flags=0x5\ndirty-log-protect manual\n");
    let t = run_model(&bad);
    assert_eq!(t.outcomes, vec![Outcome::Err(Errno::EINVAL), Outcome::Err(Errno::EINVAL), Outcome::Ok]);
}
