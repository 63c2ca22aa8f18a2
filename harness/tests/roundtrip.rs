//! Text and binary round trips, and robustness against arbitrary input: no input makes the
//! parser, the codec or the model panic.

use arbitrary::Unstructured;
use privmem::campaign::Rng;
use privmem::oracle::run_model;
use privmem::seq::codec::{decode, encode};
use privmem::seq::gen::{fixup, generate, GenConfig};
use privmem::seq::legal::check_sequence;
use privmem::seq::text::{parse, print};
use privmem::seq::Op;

fn generated(n: usize, seed: u64) -> Vec<privmem::seq::Sequence> {
    let mut rng = Rng::new(seed);
    let mut buf = vec![0u8; 1024];
    let cfg = GenConfig { max_ops: 32, groups: true, ..Default::default() };
    let mut v = Vec::new();
    while v.len() < n {
        rng.fill(&mut buf);
        if let Ok(s) = generate(&mut Unstructured::new(&buf), &cfg) {
            v.push(s);
        }
    }
    v
}

#[test]
fn print_then_parse_is_identity_on_generated_sequences() {
    for s in generated(5000, 11) {
        let text = print(&s);
        let back = parse("gen", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(back, s, "{text}");
        assert_eq!(print(&back), text, "printing is canonical");
    }
}

/// The generator reaches every op kind the language has (a new op is generated, not only
/// parsed), so the round trips above cover it.
#[test]
fn every_op_kind_is_generated() {
    let seen: std::collections::BTreeSet<_> =
        generated(5000, 11).iter().flat_map(|s| s.steps.iter().map(|st| st.op.kind())).collect();
    let missing: Vec<_> =
        privmem::seq::OpKind::ALL.iter().filter(|k| !k.is_check() && !seen.contains(k)).map(|k| k.name()).collect();
    assert!(missing.is_empty(), "never generated: {missing:?}");
}

#[test]
fn encode_then_decode_is_identity() {
    for s in generated(5000, 12) {
        assert_eq!(decode(&encode(&s)), s, "{}", print(&s));
    }
}

#[test]
fn random_bytes_never_panic_parser_or_codec() {
    let mut rng = Rng::new(13);
    let mut buf = vec![0u8; 512];
    let words = [
        "vm tdx\n",
        "vm default\n",
        "vm sw-protected\n",
        "gmem g size=2M huge\n",
        "slot 0 gpa=0x1000 size=4K\n",
        "vcpu0 accept 0x1000 2M",
        " => ",
        "tdx PAGE_SIZE_MISMATCH",
        "expect pages_4k=1|2",
        "0x",
        "=",
        "\n",
        "#",
        "private 0x0 4K",
        "punch ",
        "1G",
        "18446744073709551615",
        "vcpu9",
        "expect sept 0x0 2M PENDING",
    ];
    for i in 0..100_000u32 {
        let len = (rng.next_u64() % 512) as usize;
        rng.fill(&mut buf[..len]);
        // The codec: any bytes decode to a legal sequence that prints and parses back.
        let s = decode(&buf[..len]);
        assert!(check_sequence(&s).is_ok());
        if i % 8 == 0 {
            let text = print(&s);
            assert_eq!(parse("decoded", &text).unwrap_or_else(|e| panic!("{e}\n{text}")), s);
            assert_eq!(decode(&encode(&s)), s);
            let _ = run_model(&s);
        }
        // The parser: raw bytes, and a soup of real tokens.
        let _ = parse("random", &String::from_utf8_lossy(&buf[..len]));
        let mut soup = String::new();
        for b in &buf[..len.min(40)] {
            soup.push_str(words[*b as usize % words.len()]);
        }
        let _ = parse("soup", &soup);
    }
}

#[test]
fn fixup_makes_mutated_sequences_legal_and_is_idempotent() {
    let mut rng = Rng::new(14);
    for mut s in generated(2000, 15) {
        // Mutate: change the VM type, the vCPU count, and scramble vCPU indices.
        s.header.vm = privmem::seq::VmType::ALL[(rng.next_u64() % 3) as usize];
        s.header.vcpus = (rng.next_u64() % 12) as u32;
        for st in &mut s.steps {
            if let Some(v) = st.op.vcpu_mut() {
                *v = (rng.next_u64() % 9) as u32;
            }
        }
        fixup(&mut s);
        assert!(check_sequence(&s).is_ok(), "{}", print(&s));
        let once = s.clone();
        fixup(&mut s);
        assert_eq!(s, once);
    }
}

/// `--td-finalized` campaigns: a mutated TD case goes back to attribute changes, `finalize`,
/// then the rest, and stays legal.
#[test]
fn mutated_td_cases_finalize_first_again() {
    let mut rng = Rng::new(16);
    let tds = generated(3000, 17).into_iter().filter(|s| s.header.vm == privmem::seq::VmType::Tdx);
    for mut s in tds.take(300) {
        for _ in 0..3 {
            privmem::campaign::mutate_sequence(&mut s, &mut rng);
        }
        fixup(&mut s);
        privmem::seq::gen::finalize_first(&mut s);
        let first = s.steps.iter().find(|st| !matches!(st.op, Op::Private { .. } | Op::Shared { .. }));
        assert!(first.is_some_and(|st| st.op == Op::Finalize), "{}", print(&s));
        assert!(check_sequence(&s).is_ok(), "{}", print(&s));
    }
}

#[test]
fn kernel_releases_and_ranges_round_trip_through_text_and_codec() {
    let src =
        "vm sw-protected\nkernel 6.12.100..=6.12.117 6.12.118.. 6.18 7.3.4 next\nslot 0 gpa=0x100000000 size=2M\n\
               vcpu0 read 0x100000000 => value 0x0\n";
    let s = parse("k", src).unwrap();
    assert_eq!(print(&s).lines().nth(1), Some("kernel 6.12.100..=6.12.117 6.12.118.. 6.18 7.3.4 next"));
    assert_eq!(decode(&encode(&s)), s);
    // The model runs as the newest known release of the last range named.
    assert_eq!(s.header.kernel(), privmem::seq::Release::NEXT);
    let s = parse("k", &src.replace(" 7.3.4 next", "")).unwrap();
    assert_eq!(s.header.kernel(), privmem::seq::Release::new(6, 18, 44));
    for bad in ["kernel 6.12..7.3", "kernel 6.16.1", "kernel 6.12.118..=6.12.100"] {
        let e = parse("bad", &format!("vm default\n{bad}\n")).unwrap_err().to_string();
        assert!(e.contains("bad:2:8") && e.contains("a kernel"), "{e}");
    }
}

#[test]
fn printing_a_scenario_keeps_its_comments_and_is_canonical() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus");
    for f in privmem::corpus::seq_files(&root) {
        let src = std::fs::read_to_string(&f).unwrap();
        let s = parse("src", &src).unwrap();
        let out = privmem::seq::print::print_keeping_comments(&src, &s);
        assert_eq!(parse("printed", &out).unwrap(), s, "{}", f.display());
        assert_eq!(privmem::seq::print::print_keeping_comments(&out, &s), out, "{}: not idempotent", f.display());
        for c in src.lines().filter(|l| l.trim_start().starts_with('#')) {
            assert!(out.contains(c.trim_start()), "{}: lost `{c}`", f.display());
        }
    }
}
