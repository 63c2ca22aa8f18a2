//! The header of a sequence: the VM type and TDX variant, policy options, the guest_memfd files
//! and memslots it starts with, the kernels it holds on; and the sizes and mapping levels
//! everything counts in.

use super::kernel::{Kernel, KernelRange, Release};
use super::words::words;
use serde::Serialize;

pub const PAGE: u64 = 4096;
/// The shared bit of a TD's GPAs: the model's TDs have a 48-bit GPA width (GPAW 48), so it
/// is bit 47. A GPA with it set is the shared alias. A fact of the guest's address space, so
/// it lives with the language, not in the model's TDX file (the slots need it too).
pub const TD_SHARED_BIT: u64 = 1 << 47;
pub const SZ_2M: u64 = 2 << 20;
pub const SZ_1G: u64 = 1 << 30;

words! {
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize)]
    pub enum VmType {
        Default = "default",
        SwProtected = "sw-protected",
        Tdx = "tdx",
        Snp = "snp",
    }
}

impl VmType {
    /// The KVM_CREATE_VM type number (docs/model.md §2).
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

words! {
    /// The KVM TDX variants of docs/model.md §5.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize)]
    pub enum Variant {
        Upstream = "upstream",
        HugeV1 = "huge-v1",
        HugeV2 = "huge-v2",
        HugeV3 = "huge-v3",
        /// Sean Christopherson's "[RFC PATCH v5 00/45] TDX: Dynamic PAMT + S-EPT Hugepage".
        HugeV5 = "huge-v5",
    }
}

impl Variant {
    pub fn is_huge(self) -> bool {
        !matches!(self, Variant::Upstream)
    }
}

words! {
    /// Policy knobs (`option NAME`): proposals a variant can switch on (docs/model.md §5).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize)]
    pub enum Knob {
        IgnoreAcceptLevel = "ignore-accept-level",
        Promote = "promote",
        ZapPrivateOnMtrr = "zap-private-on-mtrr",
        NoEnhancedDemote = "no-enhanced-demote",
        SeptVeDisable = "sept-ve-disable",
        /// Disable `KVM_X86_QUIRK_SLOT_ZAP_ALL` (KVM_CAP_DISABLE_QUIRKS2): a memslot DELETE/MOVE
        /// then zaps only the slot's own range. Not a TDX proposal: the quirk is real uAPI and
        /// exists on default VMs only (`kvm_arch_flush_shadow_memslot()`, 6.12).
        NoSlotZapAll = "no-slot-zap-all",
        /// guest_memfd keeps private/shared itself (`kvm.vm_memory_attributes=N`, the
        /// configuration v3 was tested in): `private`/`shared` convert through the guest_memfd
        /// behind each memslot piece, and nothing is punched afterwards.
        InPlaceConversion = "in-place-conversion",
        /// kvm_intel's `tdx_huge_page=N` (v3, v5): private memory maps at 4K.
        NoTdxHugePage = "no-tdx-huge-page",
    }
}

impl Knob {
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
        self.hazard_trigger().is_some()
    }

    /// For a hazard knob, the op through which its documented hazard shows (in the shape
    /// `known.rs` gives a reproducer): a finding under the knob is that hazard where its
    /// reproducer goes through it, whatever the variant.
    pub fn hazard_trigger(self) -> Option<&'static str> {
        match self {
            Knob::IgnoreAcceptLevel => Some("accept-4K"),
            Knob::ZapPrivateOnMtrr => Some("mtrr-zap"),
            _ => None,
        }
    }
}

words! {
    /// Mapping levels. `pg_level` numbering lives in exactly one place: [`Level::pg_level`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize)]
    pub enum Level {
        L4K = "4K",
        L2M = "2M",
        L1G = "1G",
    }
}

impl Level {
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
    /// The kernels the sequence holds on (`kernel ..=6.12.117 6.18`), sorted; empty: every
    /// kernel.
    pub kernels: Vec<KernelRange>,
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
    /// The release the model runs the sequence as: the newest known release
    /// (`model::kernel::KNOWN`) in any range it names, else the newest range's first release;
    /// with no `kernel` line, the newest known release of the newest mainline.
    pub fn kernel(&self) -> Release {
        let known = crate::model::kernel::KNOWN.iter().copied().filter(|&k| self.names_kernel(k)).max();
        match self.kernels.iter().map(|r| r.lo).max() {
            None => crate::model::kernel::newest_of(Kernel::NEWEST_MAINLINE),
            Some(lo) => known.unwrap_or(lo),
        }
    }
    /// Whether the sequence names release `k` among the kernels it holds on (or names none).
    pub fn names_kernel(&self, k: Release) -> bool {
        self.kernels.is_empty() || self.kernels.iter().any(|r| r.contains(k))
    }
    /// Run the sequence as release `k` from now on.
    pub fn set_kernel(&mut self, k: Release) {
        self.kernels = vec![KernelRange::exactly(k)];
    }
    pub fn has(&self, k: Knob) -> bool {
        self.options.contains(&k)
    }
    /// The variant in force: `upstream` unless one is named.
    pub fn variant(&self) -> Variant {
        self.variant.unwrap_or(Variant::Upstream)
    }
}
