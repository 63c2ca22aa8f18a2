//! The operation language: what a test case is made of.
//!
//! A [`Sequence`] is a header (VM type, variant, memory layout) and an ordered list of
//! [`Step`]s. Each step is one host or guest operation, optionally followed by the outcome the
//! author expects. State checks (`expect pages_*`, `expect sept`) are steps too, so they sit at
//! the point of the sequence where they are meant.

use super::kernel::Kernel;
use serde::Serialize;

pub const PAGE: u64 = 4096;
pub const SZ_2M: u64 = 2 << 20;
pub const SZ_1G: u64 = 1 << 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum VmType {
    Default,
    SwProtected,
    Tdx,
    Snp,
}

impl VmType {
    pub const ALL: [VmType; 4] = [VmType::Default, VmType::SwProtected, VmType::Tdx, VmType::Snp];
    pub fn name(self) -> &'static str {
        match self {
            VmType::Default => "default",
            VmType::SwProtected => "sw-protected",
            VmType::Tdx => "tdx",
            VmType::Snp => "snp",
        }
    }
    /// The KVM_CREATE_VM type number (SPEC.md §2).
    pub fn kvm_type(self) -> u64 {
        match self {
            VmType::Default => 0,
            VmType::SwProtected => 1,
            VmType::Snp => 4,
            VmType::Tdx => 5,
        }
    }
    /// VM types with private memory and memory attributes.
    pub fn has_private_mem(self) -> bool {
        !matches!(self, VmType::Default)
    }
    /// VM types whose guest addresses private and shared memory through different aliases.
    pub fn has_shared_alias(self) -> bool {
        matches!(self, VmType::Tdx | VmType::Snp)
    }
}

/// The KVM TDX variants of SPEC.md §5.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Variant {
    Upstream,
    HugeV1,
    HugeV2,
    HugeV3,
}

impl Variant {
    pub const ALL: [Variant; 4] = [Variant::Upstream, Variant::HugeV1, Variant::HugeV2, Variant::HugeV3];
    pub fn name(self) -> &'static str {
        match self {
            Variant::Upstream => "upstream",
            Variant::HugeV1 => "huge-v1",
            Variant::HugeV2 => "huge-v2",
            Variant::HugeV3 => "huge-v3",
        }
    }
    pub fn is_huge(self) -> bool {
        !matches!(self, Variant::Upstream)
    }
}

/// Policy knobs (`option NAME`): proposals a variant can switch on (SPEC.md §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Knob {
    IgnoreAcceptLevel,
    Promote,
    ZapPrivateOnMtrr,
    NoEnhancedDemote,
    SeptVeDisable,
    /// Disable `KVM_X86_QUIRK_SLOT_ZAP_ALL` (KVM_CAP_DISABLE_QUIRKS2): a memslot DELETE/MOVE
    /// then zaps only the slot's own range. Not a TDX proposal: the quirk is real uAPI and
    /// exists on default VMs only (`kvm_arch_flush_shadow_memslot()`, 6.12).
    NoSlotZapAll,
}

impl Knob {
    pub const ALL: [Knob; 6] = [
        Knob::IgnoreAcceptLevel,
        Knob::Promote,
        Knob::ZapPrivateOnMtrr,
        Knob::NoEnhancedDemote,
        Knob::SeptVeDisable,
        Knob::NoSlotZapAll,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Knob::IgnoreAcceptLevel => "ignore-accept-level",
            Knob::Promote => "promote",
            Knob::ZapPrivateOnMtrr => "zap-private-on-mtrr",
            Knob::NoEnhancedDemote => "no-enhanced-demote",
            Knob::SeptVeDisable => "sept-ve-disable",
            Knob::NoSlotZapAll => "no-slot-zap-all",
        }
    }

    /// The VM type a knob has a meaning on.
    pub fn vm(self) -> VmType {
        match self {
            Knob::NoSlotZapAll => VmType::Default,
            _ => VmType::Tdx,
        }
    }

    /// A hazard: a proposal whose documented findings (livelock, data loss) would arrive first
    /// in any campaign that turns it on, so campaigns turn it on only when asked.
    pub fn is_hazard(self) -> bool {
        matches!(self, Knob::IgnoreAcceptLevel | Knob::ZapPrivateOnMtrr)
    }
}

/// Mapping levels. `pg_level` numbering lives in exactly one place: [`Level::pg_level`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Level {
    L4K,
    L2M,
    L1G,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::L4K, Level::L2M, Level::L1G];
    pub fn name(self) -> &'static str {
        match self {
            Level::L4K => "4K",
            Level::L2M => "2M",
            Level::L1G => "1G",
        }
    }
    pub fn bytes(self) -> u64 {
        match self {
            Level::L4K => PAGE,
            Level::L2M => SZ_2M,
            Level::L1G => SZ_1G,
        }
    }
    pub fn pages(self) -> u64 {
        self.bytes() / PAGE
    }
    /// TDX module numbering (0, 1, 2).
    pub fn tdx_level(self) -> u64 {
        self as u64
    }
    /// KVM `pg_level` numbering (1, 2, 3).
    pub fn pg_level(self) -> u8 {
        self as u8 + 1
    }
    pub fn from_tdx_level(l: u64) -> Option<Level> {
        Level::ALL.get(l as usize).copied()
    }
    pub fn below(self) -> Option<Level> {
        match self {
            Level::L4K => None,
            Level::L2M => Some(Level::L4K),
            Level::L1G => Some(Level::L2M),
        }
    }
    pub fn above(self) -> Option<Level> {
        match self {
            Level::L4K => Some(Level::L2M),
            Level::L2M => Some(Level::L1G),
            Level::L1G => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Fault {
    SplitOom,
    SeamcallBusy,
    DemoteInterrupted,
}

impl Fault {
    pub const ALL: [Fault; 3] = [Fault::SplitOom, Fault::SeamcallBusy, Fault::DemoteInterrupted];
    pub fn name(self) -> &'static str {
        match self {
            Fault::SplitOom => "split-oom",
            Fault::SeamcallBusy => "seamcall-busy",
            Fault::DemoteInterrupted => "demote-interrupted",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct GmemDecl {
    pub name: String,
    pub size: u64,
    pub huge: bool,
    pub mmap: bool,
    pub init_shared: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct GmemBinding {
    pub gmem: String,
    pub offset: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct SlotSpec {
    pub id: u32,
    pub gpa: u64,
    pub size: u64,
    pub gmem: Option<GmemBinding>,
    pub readonly: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Header {
    pub vm: VmType,
    pub variant: Option<Variant>,
    /// Kept sorted and without duplicates so that printing is canonical.
    pub options: Vec<Knob>,
    pub vcpus: u32,
    pub gmems: Vec<GmemDecl>,
    pub slots: Vec<SlotSpec>,
    /// The kernels the sequence holds on (`kernel 6.12 6.18`), sorted; empty: every kernel.
    pub kernels: Vec<Kernel>,
}

impl Header {
    pub fn new(vm: VmType) -> Header {
        Header {
            vm,
            variant: None,
            options: Vec::new(),
            vcpus: 1,
            gmems: Vec::new(),
            slots: Vec::new(),
            kernels: Vec::new(),
        }
    }
    /// The kernel the model runs the sequence as: the newest it names, else the newest
    /// mainline.
    pub fn kernel(&self) -> Kernel {
        self.kernels.last().copied().unwrap_or(Kernel::NEWEST_MAINLINE)
    }
    /// Whether the sequence names `k` among the kernels it holds on (or names none).
    pub fn names_kernel(&self, k: Kernel) -> bool {
        self.kernels.is_empty() || self.kernels.contains(&k)
    }
    /// Run the sequence as `k` from now on.
    pub fn set_kernel(&mut self, k: Kernel) {
        self.kernels = vec![k];
    }
    pub fn has(&self, k: Knob) -> bool {
        self.options.contains(&k)
    }
    /// The variant in force: `upstream` unless one is named.
    pub fn variant(&self) -> Variant {
        self.variant.unwrap_or(Variant::Upstream)
    }
}

/// Errno names the model and backends report (values as on x86-64 Linux).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
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
        }
    }
    pub fn from_value(v: i32) -> Option<Errno> {
        Errno::ALL.iter().copied().find(|e| e.value() == v)
    }
    pub fn name(self) -> &'static str {
        match self {
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
        }
    }
}

/// TDX module status codes (SPEC.md §4). The value is the 64-bit status with the operand bits
/// clear; KVM compares the upper 32 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum TdxStatus {
    Success,
    InterruptedRestartable,
    OperandInvalid,
    OperandBusy,
    PreviousTlbEpochBusy,
    OpStateIncorrect,
    EptWalkFailed,
    EptEntryNotPresent,
    GpaRangeNotBlocked,
    GpaRangeAlreadyBlocked,
    TlbTrackingNotDone,
    EptInvalidPromoteConditions,
    PageAlreadyAccepted,
    PageSizeMismatch,
    EptEntryStateIncorrect,
}

impl TdxStatus {
    pub const ALL: [TdxStatus; 15] = [
        TdxStatus::Success,
        TdxStatus::InterruptedRestartable,
        TdxStatus::OperandInvalid,
        TdxStatus::OperandBusy,
        TdxStatus::PreviousTlbEpochBusy,
        TdxStatus::OpStateIncorrect,
        TdxStatus::EptWalkFailed,
        TdxStatus::EptEntryNotPresent,
        TdxStatus::GpaRangeNotBlocked,
        TdxStatus::GpaRangeAlreadyBlocked,
        TdxStatus::TlbTrackingNotDone,
        TdxStatus::EptInvalidPromoteConditions,
        TdxStatus::PageAlreadyAccepted,
        TdxStatus::PageSizeMismatch,
        TdxStatus::EptEntryStateIncorrect,
    ];
    pub fn value(self) -> u64 {
        match self {
            TdxStatus::Success => 0,
            TdxStatus::InterruptedRestartable => 0x8000_0004_0000_0000,
            TdxStatus::OperandInvalid => 0xC000_0100_0000_0000,
            TdxStatus::OperandBusy => 0x8000_0200_0000_0000,
            TdxStatus::PreviousTlbEpochBusy => 0x8000_0201_0000_0000,
            TdxStatus::OpStateIncorrect => 0xC000_0608_0000_0000,
            TdxStatus::EptWalkFailed => 0xC000_0B00_0000_0000,
            TdxStatus::EptEntryNotPresent => 0xC000_0B03_0000_0000,
            TdxStatus::GpaRangeNotBlocked => 0xC000_0B06_0000_0000,
            TdxStatus::GpaRangeAlreadyBlocked => 0x0000_0B07_0000_0000,
            TdxStatus::TlbTrackingNotDone => 0xC000_0B08_0000_0000,
            TdxStatus::EptInvalidPromoteConditions => 0xC000_0B09_0000_0000,
            TdxStatus::PageAlreadyAccepted => 0x0000_0B0A_0000_0000,
            TdxStatus::PageSizeMismatch => 0xC000_0B0B_0000_0000,
            TdxStatus::EptEntryStateIncorrect => 0xC000_0B0D_0000_0000,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            TdxStatus::Success => "SUCCESS",
            TdxStatus::InterruptedRestartable => "INTERRUPTED_RESTARTABLE",
            TdxStatus::OperandInvalid => "OPERAND_INVALID",
            TdxStatus::OperandBusy => "OPERAND_BUSY",
            TdxStatus::PreviousTlbEpochBusy => "PREVIOUS_TLB_EPOCH_BUSY",
            TdxStatus::OpStateIncorrect => "OP_STATE_INCORRECT",
            TdxStatus::EptWalkFailed => "EPT_WALK_FAILED",
            TdxStatus::EptEntryNotPresent => "EPT_ENTRY_NOT_PRESENT",
            TdxStatus::GpaRangeNotBlocked => "GPA_RANGE_NOT_BLOCKED",
            TdxStatus::GpaRangeAlreadyBlocked => "GPA_RANGE_ALREADY_BLOCKED",
            TdxStatus::TlbTrackingNotDone => "TLB_TRACKING_NOT_DONE",
            TdxStatus::EptInvalidPromoteConditions => "EPT_INVALID_PROMOTE_CONDITIONS",
            TdxStatus::PageAlreadyAccepted => "PAGE_ALREADY_ACCEPTED",
            TdxStatus::PageSizeMismatch => "PAGE_SIZE_MISMATCH",
            TdxStatus::EptEntryStateIncorrect => "EPT_ENTRY_STATE_INCORRECT",
        }
    }
    /// KVM compares the class in the upper 32 bits, not the operand id below.
    pub fn from_value(v: u64) -> Option<TdxStatus> {
        TdxStatus::ALL.iter().copied().find(|s| s.value() >> 32 == v >> 32)
    }
}

/// S-EPT entry states with the values the TDX module reports (SPEC.md §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum SeptState {
    Free,
    Blocked,
    Pending,
    PendingBlocked,
    Mapped,
    NlBlocked,
    NlMapped,
}

impl SeptState {
    pub const ALL: [SeptState; 7] = [
        SeptState::Free,
        SeptState::Blocked,
        SeptState::Pending,
        SeptState::PendingBlocked,
        SeptState::Mapped,
        SeptState::NlBlocked,
        SeptState::NlMapped,
    ];
    pub fn value(self) -> u8 {
        match self {
            SeptState::Free => 0,
            SeptState::Blocked => 1,
            SeptState::Pending => 2,
            SeptState::PendingBlocked => 3,
            SeptState::Mapped => 4,
            SeptState::NlBlocked => 0x81,
            SeptState::NlMapped => 0x84,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            SeptState::Free => "FREE",
            SeptState::Blocked => "BLOCKED",
            SeptState::Pending => "PENDING",
            SeptState::PendingBlocked => "PENDING_BLOCKED",
            SeptState::Mapped => "MAPPED",
            SeptState::NlBlocked => "NL_BLOCKED",
            SeptState::NlMapped => "NL_MAPPED",
        }
    }
    pub fn is_leaf(self) -> bool {
        matches!(self, SeptState::Blocked | SeptState::Pending | SeptState::PendingBlocked | SeptState::Mapped)
    }
    pub fn is_blocked(self) -> bool {
        matches!(self, SeptState::Blocked | SeptState::PendingBlocked | SeptState::NlBlocked)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Exit {
    Mmio,
    MemoryFault { private: bool },
}

/// What one op did, as a backend observes it. Also the expectation syntax after `=>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
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

/// TDVMCALL statuses (`arch/x86/include/asm/shared/tdx.h`), the failing ones KVM returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum VmcallStatus {
    Retry,
    InvalidOperand,
    AlignError,
    SubfuncUnsupported,
}

impl VmcallStatus {
    pub const ALL: [VmcallStatus; 4] =
        [VmcallStatus::Retry, VmcallStatus::InvalidOperand, VmcallStatus::AlignError, VmcallStatus::SubfuncUnsupported];
    pub fn value(self) -> u64 {
        match self {
            VmcallStatus::Retry => 1,
            VmcallStatus::InvalidOperand => 0x8000_0000_0000_0000,
            VmcallStatus::AlignError => 0x8000_0000_0000_0002,
            VmcallStatus::SubfuncUnsupported => 0x8000_0000_0000_0003,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            VmcallStatus::Retry => "RETRY",
            VmcallStatus::InvalidOperand => "INVALID_OPERAND",
            VmcallStatus::AlignError => "ALIGN_ERROR",
            VmcallStatus::SubfuncUnsupported => "SUBFUNC_UNSUPPORTED",
        }
    }
}

/// PVALIDATE return codes (AMD APM vol. 2; SPEC.md §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum PvalidateRc {
    Success,
    FailInput,
    FailPermission,
    FailSizeMismatch,
}

impl PvalidateRc {
    pub const ALL: [PvalidateRc; 4] =
        [PvalidateRc::Success, PvalidateRc::FailInput, PvalidateRc::FailPermission, PvalidateRc::FailSizeMismatch];
    pub fn value(self) -> u32 {
        match self {
            PvalidateRc::Success => 0,
            PvalidateRc::FailInput => 1,
            PvalidateRc::FailPermission => 2,
            PvalidateRc::FailSizeMismatch => 6,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            PvalidateRc::Success => "SUCCESS",
            PvalidateRc::FailInput => "FAIL_INPUT",
            PvalidateRc::FailPermission => "FAIL_PERMISSION",
            PvalidateRc::FailSizeMismatch => "FAIL_SIZEMISMATCH",
        }
    }
}

impl Outcome {
    /// The outcome's kind without its payload.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Err(e) => e.name(),
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

/// A set of values for a page counter: `pages_2m=0|1`.
pub type CountSet = Vec<u64>;

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Op {
    // host
    SlotAdd(SlotSpec),
    SlotDelete {
        id: u32,
    },
    SlotMove {
        id: u32,
        gpa: u64,
    },
    Private {
        addr: u64,
        size: u64,
    },
    Shared {
        addr: u64,
        size: u64,
    },
    /// fallocate(PUNCH_HOLE) on the guest_memfd behind a GPA range; `keep_size: false` drops the
    /// required KEEP_SIZE flag to exercise KVM's flag rule.
    Punch {
        addr: u64,
        size: u64,
        keep_size: bool,
    },
    Prefault {
        vcpu: u32,
        addr: u64,
        size: u64,
    },
    HostWrite {
        addr: u64,
        value: u64,
    },
    HostRead {
        addr: u64,
    },
    InitMem {
        addr: u64,
        pages: u64,
        measure: bool,
    },
    Finalize,
    MtrrZap {
        addr: u64,
        size: u64,
    },
    Inject(Fault),
    /// KVM_CREATE_GUEST_MEMFD as an op with an outcome: the declared flags plus `raw` bits
    /// (flags no kernel knows, to hit the flag check). Named like a header `gmem`.
    GmemCreate {
        decl: GmemDecl,
        raw: u64,
    },
    /// fallocate(2) on a guest_memfd by name at a file offset: allocating (mode KEEP_SIZE) or
    /// punching (PUNCH_HOLE|KEEP_SIZE); `keep_size: false` drops KEEP_SIZE.
    Fallocate {
        gmem: String,
        offset: u64,
        len: u64,
        punch: bool,
        keep_size: bool,
    },
    // guest
    Accept {
        vcpu: u32,
        addr: u64,
        level: Level,
    },
    Release {
        vcpu: u32,
        addr: u64,
        level: Level,
    },
    Read {
        vcpu: u32,
        addr: u64,
        shared: bool,
    },
    Write {
        vcpu: u32,
        addr: u64,
        value: u64,
        shared: bool,
    },
    Touch {
        vcpu: u32,
        addr: u64,
    },
    MapGpa {
        vcpu: u32,
        addr: u64,
        size: u64,
        private: bool,
    },
    // state checks
    ExpectPages {
        p4k: Option<CountSet>,
        p2m: Option<CountSet>,
        p1g: Option<CountSet>,
    },
    ExpectSept {
        addr: u64,
        level: Level,
        state: SeptState,
    },
}

/// The kinds of op, for swarm testing, coverage and finding signatures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum OpKind {
    SlotAdd,
    SlotDelete,
    SlotMove,
    Private,
    Shared,
    Punch,
    Prefault,
    HostWrite,
    HostRead,
    InitMem,
    Finalize,
    MtrrZap,
    Inject,
    Accept,
    Release,
    Read,
    Write,
    Touch,
    MapGpa,
    ExpectPages,
    ExpectSept,
    GmemCreate,
    Fallocate,
}

impl OpKind {
    pub const ALL: [OpKind; 23] = [
        OpKind::SlotAdd,
        OpKind::SlotDelete,
        OpKind::SlotMove,
        OpKind::Private,
        OpKind::Shared,
        OpKind::Punch,
        OpKind::Prefault,
        OpKind::HostWrite,
        OpKind::HostRead,
        OpKind::InitMem,
        OpKind::Finalize,
        OpKind::MtrrZap,
        OpKind::Inject,
        OpKind::Accept,
        OpKind::Release,
        OpKind::Read,
        OpKind::Write,
        OpKind::Touch,
        OpKind::MapGpa,
        OpKind::ExpectPages,
        OpKind::ExpectSept,
        OpKind::GmemCreate,
        OpKind::Fallocate,
    ];
    pub fn name(self) -> &'static str {
        match self {
            OpKind::SlotAdd => "slot-add",
            OpKind::SlotDelete => "slot-delete",
            OpKind::SlotMove => "slot-move",
            OpKind::Private => "private",
            OpKind::Shared => "shared",
            OpKind::Punch => "punch",
            OpKind::Prefault => "prefault",
            OpKind::HostWrite => "host-write",
            OpKind::HostRead => "host-read",
            OpKind::InitMem => "init-mem",
            OpKind::Finalize => "finalize",
            OpKind::MtrrZap => "mtrr-zap",
            OpKind::Inject => "inject",
            OpKind::Accept => "accept",
            OpKind::Release => "release",
            OpKind::Read => "read",
            OpKind::Write => "write",
            OpKind::Touch => "touch",
            OpKind::MapGpa => "map-gpa",
            OpKind::ExpectPages => "expect-pages",
            OpKind::ExpectSept => "expect-sept",
            OpKind::GmemCreate => "gmem-create",
            OpKind::Fallocate => "fallocate",
        }
    }
    pub fn is_guest(self) -> bool {
        matches!(self, OpKind::Accept | OpKind::Release | OpKind::Read | OpKind::Write | OpKind::Touch | OpKind::MapGpa)
    }
    pub fn is_check(self) -> bool {
        matches!(self, OpKind::ExpectPages | OpKind::ExpectSept)
    }
}

/// The field holding an op's guest address, by shared or mutable reference (binding modes
/// follow the scrutinee), so [`Op::addr`] and [`Op::addr_mut`] share one list of ops.
macro_rules! op_addr_field {
    ($op:expr) => {
        match $op {
            Op::Private { addr, .. }
            | Op::Shared { addr, .. }
            | Op::Punch { addr, .. }
            | Op::Prefault { addr, .. }
            | Op::HostWrite { addr, .. }
            | Op::HostRead { addr }
            | Op::InitMem { addr, .. }
            | Op::MtrrZap { addr, .. }
            | Op::Accept { addr, .. }
            | Op::Release { addr, .. }
            | Op::Read { addr, .. }
            | Op::Write { addr, .. }
            | Op::Touch { addr, .. }
            | Op::MapGpa { addr, .. }
            | Op::ExpectSept { addr, .. }
            | Op::SlotAdd(SlotSpec { gpa: addr, .. })
            | Op::SlotMove { gpa: addr, .. } => Some(addr),
            _ => None,
        }
    };
}

impl Op {
    pub fn kind(&self) -> OpKind {
        match self {
            Op::SlotAdd(_) => OpKind::SlotAdd,
            Op::SlotDelete { .. } => OpKind::SlotDelete,
            Op::SlotMove { .. } => OpKind::SlotMove,
            Op::Private { .. } => OpKind::Private,
            Op::Shared { .. } => OpKind::Shared,
            Op::Punch { .. } => OpKind::Punch,
            Op::Prefault { .. } => OpKind::Prefault,
            Op::HostWrite { .. } => OpKind::HostWrite,
            Op::HostRead { .. } => OpKind::HostRead,
            Op::InitMem { .. } => OpKind::InitMem,
            Op::Finalize => OpKind::Finalize,
            Op::MtrrZap { .. } => OpKind::MtrrZap,
            Op::Inject(_) => OpKind::Inject,
            Op::Accept { .. } => OpKind::Accept,
            Op::Release { .. } => OpKind::Release,
            Op::Read { .. } => OpKind::Read,
            Op::Write { .. } => OpKind::Write,
            Op::Touch { .. } => OpKind::Touch,
            Op::MapGpa { .. } => OpKind::MapGpa,
            Op::ExpectPages { .. } => OpKind::ExpectPages,
            Op::ExpectSept { .. } => OpKind::ExpectSept,
            Op::GmemCreate { .. } => OpKind::GmemCreate,
            Op::Fallocate { .. } => OpKind::Fallocate,
        }
    }
    /// The guest address an op is about (a slot's GPA for slot ops).
    pub fn addr(&self) -> Option<u64> {
        op_addr_field!(self).copied()
    }

    /// The guest address an op is about, to edit it (mutators, shrinking).
    pub fn addr_mut(&mut self) -> Option<&mut u64> {
        op_addr_field!(self)
    }

    /// The vCPU a guest op (or pre-fault) runs on.
    pub fn vcpu(&self) -> Option<u32> {
        match *self {
            Op::Prefault { vcpu, .. }
            | Op::Accept { vcpu, .. }
            | Op::Release { vcpu, .. }
            | Op::Read { vcpu, .. }
            | Op::Write { vcpu, .. }
            | Op::Touch { vcpu, .. }
            | Op::MapGpa { vcpu, .. } => Some(vcpu),
            _ => None,
        }
    }
    pub fn vcpu_mut(&mut self) -> Option<&mut u32> {
        match self {
            Op::Prefault { vcpu, .. }
            | Op::Accept { vcpu, .. }
            | Op::Release { vcpu, .. }
            | Op::Read { vcpu, .. }
            | Op::Write { vcpu, .. }
            | Op::Touch { vcpu, .. }
            | Op::MapGpa { vcpu, .. } => Some(vcpu),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Step {
    pub op: Op,
    pub expect: Option<Outcome>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Sequence {
    pub header: Header,
    pub steps: Vec<Step>,
}

impl Sequence {
    pub fn new(header: Header) -> Sequence {
        Sequence { header, steps: Vec::new() }
    }
    pub fn push(&mut self, op: Op) {
        self.steps.push(Step { op, expect: None });
    }
}
