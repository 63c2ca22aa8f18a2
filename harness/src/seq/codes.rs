//! The codes a step's outcome is written in: errno values, TDX module statuses, S-EPT states,
//! TDVMCALL statuses, PVALIDATE return codes, exits; and the outcome itself.

use super::words::words;
use super::Level;
use serde::{Deserialize, Serialize};

/// Errno names the model and backends report (values as on x86-64 Linux); an errno the list
/// does not name is kept as its number ([`Errno::Other`], written `err 123`), never folded into
/// another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Errno {
    EPERM,
    ENOENT,
    EINTR,
    EIO,
    E2BIG,
    EBADF,
    EAGAIN,
    ENOMEM,
    EFAULT,
    EBUSY,
    EEXIST,
    EINVAL,
    EFBIG,
    ENOSPC,
    ENOTTY,
    ERANGE,
    ENOSYS,
    EOPNOTSUPP,
    /// A kernel errno without a name here (only real backends report one).
    Other(i32),
}

impl Errno {
    pub const ALL: [Errno; 18] = [
        Errno::EPERM,
        Errno::ENOENT,
        Errno::EINTR,
        Errno::EIO,
        Errno::E2BIG,
        Errno::EBADF,
        Errno::EAGAIN,
        Errno::ENOMEM,
        Errno::EFAULT,
        Errno::EBUSY,
        Errno::EEXIST,
        Errno::EINVAL,
        Errno::EFBIG,
        Errno::ENOSPC,
        Errno::ENOTTY,
        Errno::ERANGE,
        Errno::ENOSYS,
        Errno::EOPNOTSUPP,
    ];
    pub fn value(self) -> i32 {
        match self {
            Errno::EPERM => 1,
            Errno::ENOENT => 2,
            Errno::EINTR => 4,
            Errno::EIO => 5,
            Errno::E2BIG => 7,
            Errno::EBADF => 9,
            Errno::EAGAIN => 11,
            Errno::ENOMEM => 12,
            Errno::EFAULT => 14,
            Errno::EBUSY => 16,
            Errno::EEXIST => 17,
            Errno::EINVAL => 22,
            Errno::EFBIG => 27,
            Errno::ENOSPC => 28,
            Errno::ENOTTY => 25,
            Errno::ERANGE => 34,
            Errno::ENOSYS => 38,
            Errno::EOPNOTSUPP => 95,
            Errno::Other(n) => n,
        }
    }
    pub fn from_value(v: i32) -> Option<Errno> {
        Errno::ALL.iter().copied().find(|e| e.value() == v)
    }
    /// The errno a kernel returned: its name, or its number kept.
    pub fn from_raw(v: i32) -> Errno {
        Errno::from_value(v).unwrap_or(Errno::Other(v))
    }
    pub fn name(self) -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed(match self {
            Errno::Other(n) => return std::borrow::Cow::Owned(n.to_string()),
            Errno::EPERM => "EPERM",
            Errno::ENOENT => "ENOENT",
            Errno::EINTR => "EINTR",
            Errno::EIO => "EIO",
            Errno::E2BIG => "E2BIG",
            Errno::EBADF => "EBADF",
            Errno::EAGAIN => "EAGAIN",
            Errno::ENOMEM => "ENOMEM",
            Errno::EFAULT => "EFAULT",
            Errno::EBUSY => "EBUSY",
            Errno::EEXIST => "EEXIST",
            Errno::EINVAL => "EINVAL",
            Errno::EFBIG => "EFBIG",
            Errno::ENOSPC => "ENOSPC",
            Errno::ENOTTY => "ENOTTY",
            Errno::ERANGE => "ERANGE",
            Errno::ENOSYS => "ENOSYS",
            Errno::EOPNOTSUPP => "EOPNOTSUPP",
        })
    }
}

/// The named errnos as a word list (an [`Errno::Other`] is written as its number instead).
impl super::words::Word for Errno {
    const WORDS: &'static [Errno] = &Errno::ALL;
    fn word(self) -> &'static str {
        match self.name() {
            std::borrow::Cow::Borrowed(n) => n,
            std::borrow::Cow::Owned(_) => "",
        }
    }
}

words! {
    /// TDX module status codes (docs/model.md §4). The value is the 64-bit status with the operand bits
    /// clear; KVM compares the upper 32 bits.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
    pub enum TdxStatus: u64 {
        Success = "SUCCESS" => 0,
        InterruptedRestartable = "INTERRUPTED_RESTARTABLE" => 0x8000_0004_0000_0000,
        OperandInvalid = "OPERAND_INVALID" => 0xC000_0100_0000_0000,
        OperandBusy = "OPERAND_BUSY" => 0x8000_0200_0000_0000,
        PreviousTlbEpochBusy = "PREVIOUS_TLB_EPOCH_BUSY" => 0x8000_0201_0000_0000,
        OpStateIncorrect = "OP_STATE_INCORRECT" => 0xC000_0608_0000_0000,
        EptWalkFailed = "EPT_WALK_FAILED" => 0xC000_0B00_0000_0000,
        EptEntryNotPresent = "EPT_ENTRY_NOT_PRESENT" => 0xC000_0B03_0000_0000,
        GpaRangeNotBlocked = "GPA_RANGE_NOT_BLOCKED" => 0xC000_0B06_0000_0000,
        GpaRangeAlreadyBlocked = "GPA_RANGE_ALREADY_BLOCKED" => 0x0000_0B07_0000_0000,
        TlbTrackingNotDone = "TLB_TRACKING_NOT_DONE" => 0xC000_0B08_0000_0000,
        EptInvalidPromoteConditions = "EPT_INVALID_PROMOTE_CONDITIONS" => 0xC000_0B09_0000_0000,
        PageAlreadyAccepted = "PAGE_ALREADY_ACCEPTED" => 0x0000_0B0A_0000_0000,
        PageSizeMismatch = "PAGE_SIZE_MISMATCH" => 0xC000_0B0B_0000_0000,
        EptEntryStateIncorrect = "EPT_ENTRY_STATE_INCORRECT" => 0xC000_0B0D_0000_0000,
    }
}

impl TdxStatus {
    /// KVM compares the class in the upper 32 bits, not the operand id below.
    pub fn from_value(v: u64) -> Option<TdxStatus> {
        TdxStatus::ALL.iter().copied().find(|s| s.value() >> 32 == v >> 32)
    }
}

words! {
    /// S-EPT entry states with the values the TDX module reports (docs/model.md §4).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
    pub enum SeptState: u8 {
        Free = "FREE" => 0,
        Blocked = "BLOCKED" => 1,
        Pending = "PENDING" => 2,
        PendingBlocked = "PENDING_BLOCKED" => 3,
        Mapped = "MAPPED" => 4,
        NlBlocked = "NL_BLOCKED" => 0x81,
        NlMapped = "NL_MAPPED" => 0x84,
    }
}

impl SeptState {
    pub fn is_leaf(self) -> bool {
        matches!(self, SeptState::Blocked | SeptState::Pending | SeptState::PendingBlocked | SeptState::Mapped)
    }
    pub fn is_blocked(self) -> bool {
        matches!(self, SeptState::Blocked | SeptState::PendingBlocked | SeptState::NlBlocked)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Exit {
    Mmio,
    MemoryFault { private: bool },
}

/// What one op did, as a backend observes it. Also the expectation syntax after `=>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Outcome {
    Ok,
    Err(Errno),
    /// A TDX status returned to the guest, with the level the module reports in the low bits.
    Tdx(TdxStatus, Option<Level>),
    Value(u64),
    Exit(Exit),
    Ve,
    Livelock,
    VmDead,
    /// SEV-SNP PVALIDATE's return code; `no_update` is the carry flag (nothing changed).
    Pvalidate(PvalidateRc, bool),
    /// A TDVMCALL status KVM returned to the guest (R10), KVM_RUN going on (D9: MapGPA's
    /// argument errors and retries reach the guest, not the VMM).
    Vmcall(VmcallStatus),
}

words! {
    /// TDVMCALL statuses (`arch/x86/include/asm/shared/tdx.h`), the failing ones KVM returns.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
    pub enum VmcallStatus: u64 {
        Retry = "RETRY" => 1,
        InvalidOperand = "INVALID_OPERAND" => 0x8000_0000_0000_0000,
        AlignError = "ALIGN_ERROR" => 0x8000_0000_0000_0002,
        SubfuncUnsupported = "SUBFUNC_UNSUPPORTED" => 0x8000_0000_0000_0003,
    }
}

words! {
    /// PVALIDATE return codes (AMD APM vol. 2; docs/model.md §7).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
    pub enum PvalidateRc: u32 {
        Success = "SUCCESS" => 0,
        FailInput = "FAIL_INPUT" => 1,
        FailPermission = "FAIL_PERMISSION" => 2,
        FailSizeMismatch = "FAIL_SIZEMISMATCH" => 6,
    }
}

impl Outcome {
    /// The outcome's kind without its payload.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Err(Errno::Other(_)) => "errno",
            Outcome::Err(e) => match e.name() {
                std::borrow::Cow::Borrowed(n) => n,
                std::borrow::Cow::Owned(_) => "errno",
            },
            Outcome::Tdx(s, _) => s.name(),
            Outcome::Value(_) => "value",
            Outcome::Exit(Exit::Mmio) => "exit-mmio",
            Outcome::Exit(Exit::MemoryFault { private: true }) => "exit-memory-fault-private",
            Outcome::Exit(Exit::MemoryFault { private: false }) => "exit-memory-fault-shared",
            Outcome::Ve => "ve",
            Outcome::Livelock => "livelock",
            Outcome::VmDead => "vm-dead",
            Outcome::Pvalidate(rc, _) => rc.name(),
            Outcome::Vmcall(st) => st.name(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seq::text::{parse, print};

    #[test]
    fn an_errno_without_a_name_is_kept_as_its_number() {
        assert_eq!(Errno::from_raw(22), Errno::EINVAL);
        assert_eq!(Errno::from_raw(133), Errno::Other(133));
        assert_eq!(Errno::Other(133).value(), 133);
        let s =
            parse("t", "vm default\nslot-add 0 gpa=0x100000000 size=2M => err 133\nslot-delete 7 => err 22\n").unwrap();
        assert_eq!(s.steps[0].expect, Some(Outcome::Err(Errno::Other(133))));
        assert_eq!(s.steps[1].expect, Some(Outcome::Err(Errno::EINVAL)));
        let text = print(&s);
        assert!(text.contains("=> err 133") && text.contains("=> err EINVAL"), "{text}");
        assert!(parse("t", "vm default\nslot-delete 7 => err 99999999999\n").is_err());
        // A header line takes no expectation, and says so.
        let e = parse("t", "vm default\nslot 0 gpa=0x100000000 size=2M => err EINVAL\n").unwrap_err();
        assert_eq!((e.line, e.col), (2, 32));
        assert!(e.msg.contains("header line takes no `=>`"), "{}", e.msg);
    }
}
