//! Every status code, state value and errno the model uses is the exact value of its
//! source (the kernel's uAPI and errno headers, the TDX module's ABI).

use privmem::seq::{Errno, Level, SeptState, TdxStatus};

#[test]
fn tdx_status_codes_are_the_spec_values() {
    let spec: [(&str, u64); 15] = [
        ("SUCCESS", 0),
        ("INTERRUPTED_RESTARTABLE", 0x8000000400000000),
        ("OPERAND_INVALID", 0xC000010000000000),
        ("OPERAND_BUSY", 0x8000020000000000),
        ("PREVIOUS_TLB_EPOCH_BUSY", 0x8000020100000000),
        ("OP_STATE_INCORRECT", 0xC000060800000000),
        ("EPT_WALK_FAILED", 0xC0000B0000000000),
        ("EPT_ENTRY_NOT_PRESENT", 0xC0000B0300000000),
        ("GPA_RANGE_NOT_BLOCKED", 0xC0000B0600000000),
        ("GPA_RANGE_ALREADY_BLOCKED", 0x00000B0700000000),
        ("TLB_TRACKING_NOT_DONE", 0xC0000B0800000000),
        ("EPT_INVALID_PROMOTE_CONDITIONS", 0xC0000B0900000000),
        ("PAGE_ALREADY_ACCEPTED", 0x00000B0A00000000),
        ("PAGE_SIZE_MISMATCH", 0xC0000B0B00000000),
        ("EPT_ENTRY_STATE_INCORRECT", 0xC0000B0D00000000),
    ];
    assert_eq!(TdxStatus::ALL.len(), spec.len());
    for (name, value) in spec {
        let s = TdxStatus::ALL.iter().find(|s| s.name() == name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(s.value(), value, "{name}");
        // KVM compares the upper 32 bits: operand ids in the low bits do not change the class.
        assert_eq!(TdxStatus::from_value(value | 0x12), Some(*s));
    }
}

#[test]
fn sept_states_are_the_spec_values() {
    let spec = [
        ("FREE", 0),
        ("BLOCKED", 1),
        ("PENDING", 2),
        ("PENDING_BLOCKED", 3),
        ("MAPPED", 4),
        ("NL_BLOCKED", 0x81),
        ("NL_MAPPED", 0x84),
    ];
    for (name, v) in spec {
        let s = SeptState::ALL.iter().find(|s| s.name() == name).unwrap();
        assert_eq!(s.value(), v, "{name}");
    }
}

#[test]
fn errnos_are_linux_x86_64_values() {
    let libc_values = [
        (Errno::EPERM, libc::EPERM),
        (Errno::ENOENT, libc::ENOENT),
        (Errno::EINTR, libc::EINTR),
        (Errno::EIO, libc::EIO),
        (Errno::E2BIG, libc::E2BIG),
        (Errno::EBADF, libc::EBADF),
        (Errno::EAGAIN, libc::EAGAIN),
        (Errno::ENOMEM, libc::ENOMEM),
        (Errno::EFAULT, libc::EFAULT),
        (Errno::EBUSY, libc::EBUSY),
        (Errno::EEXIST, libc::EEXIST),
        (Errno::EINVAL, libc::EINVAL),
        (Errno::EFBIG, libc::EFBIG),
        (Errno::ENOSPC, libc::ENOSPC),
        (Errno::ENOTTY, libc::ENOTTY),
        (Errno::ERANGE, libc::ERANGE),
        (Errno::ENOSYS, libc::ENOSYS),
        (Errno::EOPNOTSUPP, libc::EOPNOTSUPP),
    ];
    assert_eq!(libc_values.len(), Errno::ALL.len());
    for (e, v) in libc_values {
        assert_eq!(e.value(), v, "{}", e.name());
        assert_eq!(Errno::from_value(v), Some(e));
    }
}

#[test]
fn levels_convert_in_one_place() {
    assert_eq!([Level::L4K, Level::L2M, Level::L1G].map(|l| l.tdx_level()), [0, 1, 2]);
    assert_eq!([Level::L4K, Level::L2M, Level::L1G].map(|l| l.pg_level()), [1, 2, 3]);
    assert_eq!(Level::from_tdx_level(1), Some(Level::L2M));
}

#[test]
fn pvalidate_return_codes_are_the_documented_values() {
    use privmem::seq::PvalidateRc;
    let spec = [("SUCCESS", 0), ("FAIL_INPUT", 1), ("FAIL_PERMISSION", 2), ("FAIL_SIZEMISMATCH", 6)];
    assert_eq!(PvalidateRc::ALL.len(), spec.len());
    for (name, v) in spec {
        let rc = PvalidateRc::ALL.iter().find(|r| r.name() == name).unwrap();
        assert_eq!(rc.value(), v, "{name}");
    }
}

/// docs/model.md §5's table of variant rules has a column for every variant the language
/// knows, and the README's sequence language names every option and injected fault.
#[test]
fn the_docs_name_every_variant_option_and_fault() {
    use privmem::seq::{Fault, Knob, Variant};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let model = std::fs::read_to_string(root.join("docs/model.md")).unwrap();
    let header = model
        .lines()
        .find(|l| l.starts_with("| rule (`Policy::"))
        .expect("docs/model.md §5 has the table of variant rules");
    for v in Variant::ALL {
        assert!(header.contains(&format!("| {} ", v.name())), "no column for {} in: {header}", v.name());
    }
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    for k in Knob::ALL {
        assert!(readme.contains(k.name()), "README.md does not name the option {}", k.name());
    }
    for f in Fault::ALL {
        assert!(readme.contains(f.name()), "README.md does not name `inject {}`", f.name());
    }
}
