//! Bad input gets file, line, column and what was expected — never a panic.

use privmem::seq::text::parse;

fn err(src: &str) -> String {
    parse("t.seq", src).expect_err("must not parse").to_string()
}

#[test]
fn errors_name_file_line_column_and_expectation() {
    assert_eq!(err("vm tdx\nvcpu0 accept 0x1000 3M\n"), "t.seq:2:21: expected a level (4K, 2M or 1G), found `3M`");
    assert_eq!(err("vm tdx\nprivate 0xzz 4K\n"), "t.seq:2:9: expected an address, found `0xzz`");
    assert_eq!(
        err("\n# c\nslot 0 gpa=0 size=4K\n"),
        "t.seq:3:1: expected `vm default|sw-protected|tdx|snp` as the first line, found `slot`"
    );
    assert_eq!(
        err("vm tdx\nfinalize => maybe\n"),
        "t.seq:2:13: expected an outcome (ok, err, tdx, value, exit, ve, livelock, vm-dead, pvalidate, vmcall), found `maybe`"
    );
    assert_eq!(err("vm tdx\nprivate 0x1000\n"), "t.seq:2:15: expected a size, found end of line");
    assert_eq!(
        err("vm tdx\nslot 0 gpa=0x0 size=4K gmem=nope offset=0\n"),
        "t.seq:2:1: no guest_memfd named `nope` in the header"
    );
}

#[test]
fn ops_without_meaning_for_the_vm_are_errors_with_a_reason() {
    let e = err("vm default\nvcpu0 accept 0x1000 4K\n");
    assert!(e.starts_with("t.seq:2:1: accept is TDX ACCEPT or SNP PVALIDATE, not on vm default"), "{e}");
    let e = err("vm sw-protected\ngmem g size=2M init-shared\n");
    assert!(e.contains("init-shared guest_memfd is only for VMs without private memory"), "{e}");
    let e = err("vm default\nprivate 0x0 4K\n");
    assert!(e.contains("memory attributes exist only on VMs with private memory"), "{e}");
    let e = err("vm tdx\nvcpus 2\nvcpu2 touch 0x0\n");
    assert!(e.contains("vcpu2 does not exist"), "{e}");
    let e = err("vm default\nvariant huge-v1\n");
    assert!(e.starts_with("t.seq:2:1: `variant` is a TDX policy"), "{e}");
    let e = err("vm tdx\nfinalize\nvcpus 2\n");
    assert!(e.contains("belongs in the header"), "{e}");
}

#[test]
fn numbers_and_sizes() {
    let s = parse("t", "vm tdx\nprivate 4096 1G\nprivate 0x10 2m\nprivate 0 12\n").unwrap();
    use privmem::seq::Op;
    assert_eq!(s.steps[0].op, Op::Private { addr: 4096, size: 1 << 30 });
    assert_eq!(s.steps[1].op, Op::Private { addr: 16, size: 2 << 20 });
    assert_eq!(s.steps[2].op, Op::Private { addr: 0, size: 12 });
    assert!(err("vm tdx\nprivate 0 99999999999999999999G\n").contains("expected a size"));
}
