//! The operation language: what a test case is made of.
//!
//! A [`Sequence`] is a header (VM type, variant, memory layout) and an ordered list of
//! [`Step`]s. Each step is one host or guest operation, optionally followed by the outcome the
//! author expects. State checks (`expect pages_*`, `expect sept`) are steps too, so they sit at
//! the point of the sequence where they are meant.

use super::words::words;
use super::*;
use serde::Serialize;

words! {
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
    pub enum Fault {
        SplitOom = "split-oom",
        SeamcallBusy = "seamcall-busy",
        DemoteInterrupted = "demote-interrupted",
        /// Dynamic PAMT: the next split's PAMT cache top-up fails (huge-v5).
        PamtOom = "pamt-oom",
    }
}

/// `struct kvm_tdx_cmd`'s ids the language names (`enum kvm_tdx_cmd_id`); INIT_MEM_REGION and
/// FINALIZE_VM are ops of their own (`init-mem`, `finalize`).
pub const TDX_CMD_NAMES: [(u32, &str); 4] = [(0, "capabilities"), (1, "init-vm"), (2, "init-vcpu"), (5, "get-cpuid")];

/// `tdx-cmd`: a TDX command, on the case's TD or a TD of its own, with the fields a VMM fills
/// as the harness's build does except those written out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct TdxCmd {
    /// `kvm_tdx_cmd.id`: a named one, or any other as `id=N`.
    pub id: u32,
    /// On this vCPU's fd (`vcpu=N`); on the VM's otherwise.
    pub vcpu: Option<u32>,
    /// On a TD created for the command and destroyed after it (`new-td`): not initialized
    /// for INIT_VM; for a vCPU command, initialized with the vCPU created, nothing more.
    pub new_td: bool,
    pub flags: u32,
    /// `hw_error` as userspace passes it (KVM writes it; nonzero in is refused).
    pub hw_error: u64,
    /// `cpuid.nent` (CAPABILITIES, INIT_VM, GET_CPUID); None: the harness's own (room for
    /// KVM_MAX_CPUID_ENTRIES; for INIT_VM the entries it fills).
    pub nent: Option<u32>,
    /// INIT_VM's attributes.
    pub attrs: u64,
    /// INIT_VM with XFAM bit 63, which no module supports (`bad-xfam`).
    pub bad_xfam: bool,
    /// INIT_VM's guest physical address width in CPUID 0x80000008 (None: 48).
    pub gpaw: Option<u8>,
    /// INIT_VM with a nonzero reserved byte (`reserved`), nonzero `cpuid.padding` (`padding`).
    pub reserved: bool,
    pub padding: bool,
}

impl TdxCmd {
    /// The command's name in the language (`id=N` for an unnamed one).
    pub fn name(&self) -> String {
        TDX_CMD_NAMES.iter().find(|(i, _)| *i == self.id).map_or(format!("id={}", self.id), |(_, n)| n.to_string())
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
    /// KVM_SET_USER_MEMORY_REGION2 on an existing slot, its GPA, size and userspace address as
    /// they are, with these flags: LOG_DIRTY_PAGES, READONLY, and GUEST_MEMFD with a binding
    /// (that file at that offset). On a slot id with no slot the call is a DELETE (size 0).
    SlotUpdate {
        id: u32,
        log_dirty: bool,
        readonly: bool,
        gmem: Option<GmemBinding>,
    },
    /// KVM_GET_DIRTY_LOG of a slot: the outcome is how many pages the bitmap reports dirty.
    GetDirtyLog {
        id: u32,
    },
    /// KVM_CLEAR_DIRTY_LOG of `pages` pages from page `first` of a slot, every bit set.
    ClearDirtyLog {
        id: u32,
        first: u64,
        pages: u64,
    },
    /// KVM_ENABLE_CAP(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2) with `flags` as args[0]: bit 0
    /// MANUAL_PROTECT_ENABLE, bit 1 INITIALLY_SET.
    DirtyLogProtect {
        flags: u64,
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
    /// A TDX command (KVM_MEMORY_ENCRYPT_OP) with its arguments written out: the argument
    /// checks of the build ioctls, which the harness's own well-formed build never meets.
    TdxCmd(TdxCmd),
    MtrrZap {
        addr: u64,
        size: u64,
    },
    Inject(Fault),
    /// A fault injected into the kernel, syzkaller's way: the next step, if it is a host op,
    /// runs with `/proc/thread-self/fail-nth` at `n` (its ioctl's n-th allocation fails).
    FailNth {
        n: u32,
    },
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

words! {
    /// The kinds of op, for swarm testing, coverage and finding signatures.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize)]
    pub enum OpKind {
        SlotAdd = "slot-add",
        SlotDelete = "slot-delete",
        SlotMove = "slot-move",
        Private = "private",
        Shared = "shared",
        Punch = "punch",
        Prefault = "prefault",
        HostWrite = "host-write",
        HostRead = "host-read",
        InitMem = "init-mem",
        Finalize = "finalize",
        MtrrZap = "mtrr-zap",
        Inject = "inject",
        Accept = "accept",
        Release = "release",
        Read = "read",
        Write = "write",
        Touch = "touch",
        MapGpa = "map-gpa",
        ExpectPages = "expect-pages",
        ExpectSept = "expect-sept",
        GmemCreate = "gmem-create",
        Fallocate = "fallocate",
        SlotUpdate = "slot-update",
        GetDirtyLog = "get-dirty-log",
        ClearDirtyLog = "clear-dirty-log",
        FailNth = "fail-nth",
        DirtyLogProtect = "dirty-log-protect",
        // Last: the binary codec writes a kind by its place in this list.
        TdxCmd = "tdx-cmd",
    }
}

impl OpKind {
    pub fn is_guest(self) -> bool {
        matches!(self, OpKind::Accept | OpKind::Release | OpKind::Read | OpKind::Write | OpKind::Touch | OpKind::MapGpa)
    }
    pub fn is_check(self) -> bool {
        matches!(self, OpKind::ExpectPages | OpKind::ExpectSept)
    }

    /// Whether an op of this kind may run at the same time as others (`together`): guest
    /// accesses and the host ops a VMM issues while vCPUs run. Not the checks, the TDX build,
    /// injected faults (the model's, not the kernel's), MapGPA (its host half is the harness's
    /// own conversion between exits), the ops that make new things (a slot's memory, a
    /// file), which the harness prepares on its own thread, or userspace's own reads and writes
    /// of guest memory, whose order is userspace's, not the kernel's. Nor a pre-fault: it is
    /// one fault per page (and a loop in userspace), each its own point of serialization,
    /// which the oracle's one-op granularity cannot hold.
    pub fn joinable(self) -> bool {
        !self.is_check()
            && !matches!(
                self,
                OpKind::InitMem
                    | OpKind::Prefault
                    | OpKind::HostRead
                    | OpKind::HostWrite
                    | OpKind::Finalize
                    | OpKind::TdxCmd
                    | OpKind::Inject
                    | OpKind::FailNth
                    | OpKind::MapGpa
                    | OpKind::GmemCreate
                    | OpKind::SlotAdd
            )
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
            // Listed, not a wildcard: a new op says here whether it has an address.
            Op::SlotDelete { .. }
            | Op::SlotUpdate { .. }
            | Op::GetDirtyLog { .. }
            | Op::ClearDirtyLog { .. }
            | Op::DirtyLogProtect { .. }
            | Op::Finalize
            | Op::TdxCmd(_)
            | Op::FailNth { .. }
            | Op::Inject(_)
            | Op::ExpectPages { .. }
            | Op::GmemCreate { .. }
            | Op::Fallocate { .. } => None,
        }
    };
}

/// The pattern of every op a vCPU runs (the guest's), for dispatches that route them elsewhere:
/// a match naming `guest_ops!()` and `host_ops!()` is exhaustive, so a new op is placed in one
/// of the two lists and every such match follows.
macro_rules! guest_ops {
    () => {
        $crate::seq::Op::Accept { .. }
            | $crate::seq::Op::Release { .. }
            | $crate::seq::Op::Read { .. }
            | $crate::seq::Op::Write { .. }
            | $crate::seq::Op::Touch { .. }
            | $crate::seq::Op::MapGpa { .. }
    };
}
pub(crate) use guest_ops;

/// The pattern of every op the host runs (and the state checks): the complement of
/// [`guest_ops`].
macro_rules! host_ops {
    () => {
        $crate::seq::Op::SlotAdd(_)
            | $crate::seq::Op::SlotDelete { .. }
            | $crate::seq::Op::SlotMove { .. }
            | $crate::seq::Op::SlotUpdate { .. }
            | $crate::seq::Op::GetDirtyLog { .. }
            | $crate::seq::Op::ClearDirtyLog { .. }
            | $crate::seq::Op::DirtyLogProtect { .. }
            | $crate::seq::Op::Private { .. }
            | $crate::seq::Op::Shared { .. }
            | $crate::seq::Op::Punch { .. }
            | $crate::seq::Op::Prefault { .. }
            | $crate::seq::Op::HostWrite { .. }
            | $crate::seq::Op::HostRead { .. }
            | $crate::seq::Op::InitMem { .. }
            | $crate::seq::Op::Finalize
            | $crate::seq::Op::TdxCmd(_)
            | $crate::seq::Op::MtrrZap { .. }
            | $crate::seq::Op::Inject(_)
            | $crate::seq::Op::FailNth { .. }
            | $crate::seq::Op::ExpectPages { .. }
            | $crate::seq::Op::ExpectSept { .. }
            | $crate::seq::Op::GmemCreate { .. }
            | $crate::seq::Op::Fallocate { .. }
    };
}
pub(crate) use host_ops;

/// The field holding the vCPU an op runs on, as [`op_addr_field`] does for addresses: one
/// exhaustive list for [`Op::vcpu`] and [`Op::vcpu_mut`].
macro_rules! op_vcpu_field {
    ($op:expr) => {
        match $op {
            Op::Prefault { vcpu, .. }
            | Op::Accept { vcpu, .. }
            | Op::Release { vcpu, .. }
            | Op::Read { vcpu, .. }
            | Op::Write { vcpu, .. }
            | Op::Touch { vcpu, .. }
            | Op::MapGpa { vcpu, .. } => Some(vcpu),
            Op::SlotAdd(_)
            | Op::SlotDelete { .. }
            | Op::SlotMove { .. }
            | Op::SlotUpdate { .. }
            | Op::GetDirtyLog { .. }
            | Op::ClearDirtyLog { .. }
            | Op::DirtyLogProtect { .. }
            | Op::Private { .. }
            | Op::Shared { .. }
            | Op::Punch { .. }
            | Op::HostWrite { .. }
            | Op::HostRead { .. }
            | Op::InitMem { .. }
            | Op::Finalize
            | Op::TdxCmd(_)
            | Op::MtrrZap { .. }
            | Op::Inject(_)
            | Op::FailNth { .. }
            | Op::ExpectPages { .. }
            | Op::ExpectSept { .. }
            | Op::GmemCreate { .. }
            | Op::Fallocate { .. } => None,
        }
    };
}

impl Op {
    pub fn kind(&self) -> OpKind {
        match self {
            Op::SlotAdd(_) => OpKind::SlotAdd,
            Op::SlotDelete { .. } => OpKind::SlotDelete,
            Op::SlotMove { .. } => OpKind::SlotMove,
            Op::SlotUpdate { .. } => OpKind::SlotUpdate,
            Op::GetDirtyLog { .. } => OpKind::GetDirtyLog,
            Op::ClearDirtyLog { .. } => OpKind::ClearDirtyLog,
            Op::DirtyLogProtect { .. } => OpKind::DirtyLogProtect,
            Op::Private { .. } => OpKind::Private,
            Op::Shared { .. } => OpKind::Shared,
            Op::Punch { .. } => OpKind::Punch,
            Op::Prefault { .. } => OpKind::Prefault,
            Op::HostWrite { .. } => OpKind::HostWrite,
            Op::HostRead { .. } => OpKind::HostRead,
            Op::InitMem { .. } => OpKind::InitMem,
            Op::Finalize => OpKind::Finalize,
            Op::TdxCmd(_) => OpKind::TdxCmd,
            Op::MtrrZap { .. } => OpKind::MtrrZap,
            Op::Inject(_) => OpKind::Inject,
            Op::FailNth { .. } => OpKind::FailNth,
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
        op_vcpu_field!(self).copied()
    }

    /// The vCPU a guest op runs on, to edit it.
    pub fn vcpu_mut(&mut self) -> Option<&mut u32> {
        op_vcpu_field!(self)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Step {
    pub op: Op,
    pub expect: Option<Outcome>,
    /// The step runs at the same time as the one before it: a maximal run of such steps after
    /// a plain one is a concurrent group (`together { … }`), see [`Sequence::group_at`].
    pub together: bool,
}

/// The most ops in one concurrent group: the race oracle runs every serialization on the
/// model (5! = 120 runs of the group).
pub const MAX_GROUP: usize = 5;

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
        self.steps.push(Step { op, expect: None, together: false });
    }

    /// The steps of the concurrent group that starts at step `i`: `i` alone when the next step
    /// does not run together with it.
    pub fn group_at(&self, i: usize) -> std::ops::Range<usize> {
        let n = 1 + self.steps[i + 1..].iter().take_while(|st| st.together).count();
        i..i + n
    }

    /// Whether any steps run together.
    pub fn has_groups(&self) -> bool {
        self.steps.iter().any(|st| st.together)
    }

    /// The one rule for batching guest ops: the batch starting at step `i` (a guest op) runs
    /// to the first step that is not a guest op of the same vCPU, `max` steps at most; returns
    /// its end. The KVM backend runs such a batch in one KVM_RUN, the standalone C in one
    /// `batch()` call.
    pub fn guest_batch_end(&self, i: usize, max: usize) -> usize {
        let v = self.steps[i].op.vcpu();
        let same = |st: &Step| st.op.kind().is_guest() && st.op.vcpu() == v && !st.together;
        let after = self.steps[i + 1..].iter().take(max.saturating_sub(1)).take_while(|st| same(st)).count();
        // A step that starts a group is its group's, not a batch's.
        let starts_group = |k: usize| self.steps.get(k + 1).is_some_and(|st| st.together);
        let mut end = i + 1 + after;
        while end > i + 1 && starts_group(end - 1) {
            end -= 1;
        }
        end
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_guest_batch_is_one_vcpu_s_consecutive_guest_ops() {
        let src = "vm default\nvcpus 2\nslot 0 gpa=0x100000000 size=2M\nvcpu0 read 0x100000000\n\
                   vcpu0 write 0x100001000 1\nvcpu1 read 0x100000000\nvcpu1 touch 0x100000000\n\
                   host-read 0x100000000\nvcpu1 read 0x100000000\n";
        let seq = crate::seq::text::parse("t.seq", src).unwrap();
        assert_eq!(seq.guest_batch_end(0, 120), 2);
        assert_eq!(seq.guest_batch_end(0, 1), 1);
        assert_eq!(seq.guest_batch_end(2, 120), 4);
        assert_eq!(seq.guest_batch_end(5, 120), 6);
    }
}
