//! The reference model of KVM private memory (docs/model.md), one file per piece of state:
//! guest_memfd ([`gmem`]), memslots ([`memslot`]), memory attributes ([`attrs`]), large-page
//! info ([`lpage`]), stage-2 roots ([`stage2`]), the TDX module's S-EPT ([`sept`]), the guest's
//! view ([`guest`]), host pages ([`memory`]); KVM's generic paths ([`kvm`]), its TDX side
//! ([`tdx`]) and the variants ([`variant`]). It is deterministic, has no I/O, and checks its own
//! invariants ([`invariants`]) after every step; a broken invariant is a [`Violation`], never
//! a panic.

pub mod argcheck;
pub mod attrs;
pub mod build;
pub mod convert;
pub mod dirty_log;
pub mod gmem;
pub mod gmem_ops;
pub mod guest;
pub mod invariants;
pub mod kernel;
pub mod kvm;
pub mod lpage;
pub mod memory;
pub mod memslot;
pub mod ranges;
pub mod rmp;
pub mod seeded;
pub mod sept;
pub mod snp;
pub mod stage2;
pub mod tdx;
pub mod variant;

use crate::seq::*;
use attrs::Attrs;
use gmem::Gmem;
use guest::GuestView;
use lpage::UserBacking;
use memory::Memory;
use memslot::Slots;
use ranges::{RangeSet, Run, RunMap};
use sept::Td;
use stage2::LeafMap;
use std::collections::BTreeMap;
use variant::Policy;

/// An ACCEPT (or any guest access) that needs more host exits than this is a livelock.
pub const LIVELOCK_EXITS: u32 = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum ViolationKind {
    /// A rule of docs/model.md §9 broke; the name says which.
    Invariant(&'static str),
    /// A guest op did not finish within [`LIVELOCK_EXITS`] host exits.
    Livelock,
    /// An accepted page's value changed or vanished with no event the guest could see.
    SilentDataLoss,
    /// The modelled kernel reaches one of its own KVM_BUG_ONs or WARNs (the name says which):
    /// a splat on a real kernel, the VM dead after a KVM_BUG_ON.
    KvmBug(&'static str),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub kind: ViolationKind,
    pub detail: String,
}

/// A guest access that needs the host: an EPT violation (or NPF) exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultReq {
    pub gfn: u64,
    pub private: bool,
    pub write: bool,
    /// The level an ACCEPT asked for (TDX extended exit qualification).
    pub accept: Option<Level>,
}

/// One attempt of a guest op: it finished, or it exited to the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    Done(Outcome),
    Exit(FaultReq),
}

/// One S-EPT state's counts: `[level][op kind]`, sized from the levels and the ops.
pub type SeptCounts = [[u64; OpKind::ALL.len()]; Level::ALL.len()];

/// What the model covered, for coverage pictures and liveness tests.
#[derive(Clone, Debug, Default)]
pub struct Coverage {
    /// (op kind, outcome label) pairs seen.
    pub outcomes: BTreeMap<(OpKind, &'static str), u64>,
    /// S-EPT state × level × op kind, sampled at the op's address after the op; indexed by
    /// `[state][level][op kind]` so counting costs no allocation.
    pub sept: Vec<SeptCounts>,
    pub splits: u64,
    pub split_failures: u64,
    pub promote_attempts: u64,
    pub promote_failures: u64,
    pub partial_conversions: u64,
    /// Present leaves per level (4K, 2M, 1G) when each case ended, summed; and how many of the
    /// 2M ones the host's THP decides.
    pub final_leaves: [u64; 3],
    pub final_thp_leaves: u64,
}

/// A run of mapped frames and the GFN the first is mapped at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rmap {
    pub pages: u64,
    pub gfn: u64,
}

impl Run for Rmap {
    fn span(&self) -> u64 {
        self.pages
    }
    fn step(&self) -> u64 {
        1
    }
    fn head(&self, off: u64) -> Self {
        Rmap { pages: off, gfn: self.gfn }
    }
    fn tail(&self, off: u64) -> Self {
        Rmap { pages: self.pages - off, gfn: self.gfn + off }
    }
    fn joins(&self, n: &Self) -> bool {
        n.gfn == self.gfn + self.pages
    }
    fn join(&self, n: &Self) -> Self {
        Rmap { pages: self.pages + n.pages, gfn: self.gfn }
    }
}

/// Facts about the host a real backend established for a case, which the model cannot know
/// by itself: the page size behind each kind of slot's userspace memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct HostFacts {
    /// Slots with no guest_memfd.
    pub plain: UserBacking,
    /// The userspace (shared) side of guest_memfd slots.
    pub gmem_shared: UserBacking,
    /// The GPA width KVM allows memslots up to (`kvm_mmu_max_gfn()`); None: 52 bits.
    pub phys_bits: Option<u8>,
    /// Memslot address spaces of a default VM (KVM_CAP_MULTI_ADDRESS_SPACE: 2 with KVM_SMM, the
    /// upstream default, else 1); None: 2.
    pub address_spaces: Option<u16>,
    /// KVM runs its shadow MMU (no EPT/NPT: a PVM host), not the TDP MMU; what dirty logging
    /// does to huge leaves differs.
    pub shadow_mmu: bool,
}

impl HostFacts {
    /// `kvm_arch_nr_memslot_as_ids()`: one address space where the VM has private memory.
    pub fn address_spaces(&self, vm: VmType) -> u16 {
        if vm.has_private_mem() {
            1
        } else {
            self.address_spaces.unwrap_or(2)
        }
    }

    pub fn backing(&self, gmem_slot: bool) -> UserBacking {
        if gmem_slot {
            self.gmem_shared
        } else {
            self.plain
        }
    }
}

/// The one rule for page counters where the host's THP decides some 2M leaves: each such leaf
/// is either that 2M leaf or between 1 and 512 4K leaves (the guest touched at least the page
/// that faulted). `want` gives, per level (4K, 2M, 1G), the counts that would do (None: any).
/// Whether some choice of THP outcomes gives counts that all do.
pub fn pages_feasible(model: ([u64; 3], u64), want: [Option<&[u64]>; 3]) -> bool {
    let ([c4, c2, c1], thp) = model;
    let ok = |w: Option<&[u64]>, lo: u64, hi: u64| w.is_none_or(|w| w.iter().any(|v| (lo..=hi).contains(v)));
    ok(want[2], c1, c1)
        && (0..=thp.min(c2))
            .any(|taken| ok(want[1], c2 - taken, c2 - taken) && ok(want[0], c4 + taken, c4 + 512 * taken))
}

#[derive(Clone)]
pub struct Model {
    pub h: Header,
    /// The kernel the model behaves as (`Header::kernel`): see [`kernel::RULES`].
    pub kernel: Release,
    pub pol: Policy,
    pub mem: Memory,
    pub gmems: Vec<Gmem>,
    pub slots: Slots,
    pub attrs: Attrs,
    /// The shared (direct) root; on default and SW_PROTECTED VMs the only root.
    pub shared: LeafMap,
    /// TDX: the mirror root that shadows the S-EPT.
    pub mirror: LeafMap,
    pub td: Option<Td>,
    /// SEV-SNP: the RMP, and whether SNP_LAUNCH_FINISH ran.
    pub rmp: Option<rmp::Rmp>,
    pub snp_launched: bool,
    pub guest: GuestView,
    /// 2M ranges (as 2M-aligned GFN ranges) where the guest's 4K accept inhibits 2M (v2/v3).
    pub inhibit: RangeSet,
    /// `inject split-oom`: the next split's allocation fails.
    pub split_oom_next: bool,
    /// `inject pamt-oom`: the next split's Dynamic PAMT top-up fails (where there is one).
    pub pamt_oom_next: bool,
    pub dead: bool,
    /// The fault path's shared-lock split WARN_ON_ONCE has fired (v2, v3).
    pub warned_shared_split: bool,
    /// What the last KVM_GET_DIRTY_LOG must and may report (taken by the runner).
    pub dirty_report: Option<dirty_log::DirtyReport>,
    /// KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2's args[0] (`dirty-log-protect`): bit 0 manual
    /// protect, bit 1 initially set.
    pub dirty_protect: u64,
    /// Mapped frames by pfn, as runs. Catches a host page mapped at two GFNs.
    rmap: RunMap<Rmap>,
    /// GFN ranges the current step touched; invariants are checked there.
    dirty: Vec<(u64, u64)>,
    /// Violations raised by the current step.
    pub violations: Vec<Violation>,
    /// What a real backend made of the host memory behind slots (unknown on the model alone).
    pub host: HostFacts,
    pub cov: Coverage,
}

impl Model {
    /// A model for `h`, with the header's guest_memfd files and slots created. A header slot
    /// that KVM would refuse is an error naming it.
    pub fn new(h: &Header) -> Result<Model, String> {
        let kernel = h.kernel();
        kernel::header_allows(h, kernel)?;
        let mut m = Model {
            h: h.clone(),
            kernel,
            pol: Policy::new(h),
            mem: Memory::new(),
            gmems: h.gmems.iter().cloned().map(Gmem::new).collect(),
            slots: Slots::default(),
            attrs: Attrs::default(),
            shared: LeafMap::default(),
            mirror: LeafMap::default(),
            td: None,
            rmp: None,
            snp_launched: false,
            guest: GuestView::default(),
            inhibit: RangeSet::default(),
            split_oom_next: false,
            pamt_oom_next: false,
            dead: false,
            warned_shared_split: false,
            dirty_report: None,
            dirty_protect: 0,
            rmap: RunMap::default(),
            dirty: Vec::new(),
            violations: Vec::new(),
            host: HostFacts::default(),
            cov: Coverage::default(),
        };
        if h.vm == VmType::Snp {
            m.rmp = Some(rmp::Rmp::default());
        }
        if h.vm == VmType::Tdx {
            m.td = Some(Td::new(m.pol.enhanced_demote));
        }
        for g in &h.gmems {
            if let Err(e) = gmem_ops::check_gmem_create(kernel, h.vm, g, 0) {
                return Err(format!("gmem {}: KVM_CREATE_GUEST_MEMFD fails with {}", g.name, e.name()));
            }
        }
        for s in &h.slots {
            if let Err(e) = m.slot_add(s) {
                return Err(format!("slot {}: KVM_SET_USER_MEMORY_REGION2 fails with {}", s.id, e.name()));
            }
        }
        m.violations.clear();
        Ok(m)
    }

    pub fn gmem_index(&self, name: &str) -> Option<usize> {
        self.gmems.iter().position(|g| g.decl.name == name)
    }

    pub fn is_tdx(&self) -> bool {
        self.td.is_some()
    }

    pub(crate) fn violate(&mut self, kind: ViolationKind, detail: String) {
        self.violations.push(Violation { kind, detail });
    }

    pub(crate) fn touch_range(&mut self, s: u64, e: u64) {
        self.dirty.push((s, e));
    }

    /// Map a leaf (or run of leaves) in a root, keeping the reverse map that catches aliasing.
    pub(crate) fn map_leaf(&mut self, mirror: bool, base: u64, leaf: stage2::Leaf) {
        let pages = leaf.pages();
        if let Some((p, r)) = self.rmap.overlapping(leaf.pfn, leaf.pfn + pages).first().copied() {
            self.violate(
                ViolationKind::Invariant("host-page-aliased"),
                format!(
                    "pfn {:#x} mapped at gfn {base:#x} while already mapped at gfn {:#x} (pfn {p:#x})",
                    leaf.pfn, r.gfn
                ),
            );
        } else {
            self.rmap.insert(leaf.pfn, Rmap { pages, gfn: base });
        }
        let root = if mirror { &mut self.mirror } else { &mut self.shared };
        root.insert(base, leaf);
        self.dirty.push((base, base + pages));
        if !mirror {
            self.log_mapped(base, base + pages);
        }
    }

    /// Unmap every leaf overlapping `[s, e)` in a root (huge leaves whole); returns the runs.
    pub(crate) fn unmap_range(&mut self, mirror: bool, s: u64, e: u64) -> Vec<(u64, stage2::Leaf)> {
        let root = if mirror { &mut self.mirror } else { &mut self.shared };
        let v = root.remove_range(s, e);
        for (b, l) in &v {
            self.rmap.remove_range(l.pfn, l.pfn + l.pages());
            self.dirty.push((*b, b + l.pages()));
        }
        v
    }

    /// The GFN a frame in `[pfn, pfn + pages)` is mapped at, if any is.
    pub(crate) fn frame_mapped(&self, pfn: u64, pages: u64) -> Option<u64> {
        let (p, r) = self.rmap.overlapping(pfn, pfn + pages).first().copied()?;
        Some(r.gfn + pfn.saturating_sub(p))
    }

    /// Run one non-guest op (host op or state check). Guest ops go through [`Model::attempt`]
    /// and [`Model::handle_fault`], driven by [`crate::oracle::run`].
    pub fn host_op(&mut self, op: &Op) -> Outcome {
        if self.dead {
            return Outcome::Err(Errno::EIO);
        }
        let r = match op {
            Op::SlotAdd(s) => self.slot_add(s),
            Op::SlotDelete { id } => self.slot_delete(*id),
            Op::SlotMove { id, gpa } => self.slot_move(*id, *gpa),
            Op::SlotUpdate { id, log_dirty, readonly, gmem } => {
                self.slot_update(*id, *log_dirty, *readonly, gmem.as_ref())
            }
            Op::GetDirtyLog { id } => self.get_dirty_log(*id).map(|r| self.dirty_report = Some(r)),
            Op::ClearDirtyLog { id, first, pages } => self.clear_dirty_log(*id, *first, *pages),
            Op::DirtyLogProtect { flags } => self.dirty_log_protect(*flags),
            Op::Private { addr, size } => self.set_attributes(*addr, *size, true),
            Op::Shared { addr, size } => self.set_attributes(*addr, *size, false),
            Op::Punch { addr, size, keep_size } => self.punch(*addr, *size, *keep_size),
            Op::Prefault { vcpu: _, addr, size } => self.prefault(*addr, *size),
            Op::HostWrite { addr, value } => self.host_write(*addr, *value),
            Op::HostRead { addr } => return self.host_read(*addr),
            Op::InitMem { addr, pages, measure } => self.init_mem(*addr, *pages, *measure),
            Op::Finalize => self.finalize(),
            Op::TdxCmd(c) => self.tdx_cmd(c),
            Op::MtrrZap { addr, size } => self.mtrr_zap(*addr, *size),
            Op::Inject(f) => {
                match f {
                    Fault::SplitOom => self.split_oom_next = true,
                    // Armed only where a split tops up a PAMT cache; elsewhere there is no such
                    // allocation to fail.
                    Fault::PamtOom => self.pamt_oom_next = self.pol.dynamic_pamt(),
                    Fault::SeamcallBusy => {
                        if let Some(td) = self.td.as_mut() {
                            td.busy_next = true
                        }
                    }
                    Fault::DemoteInterrupted => {
                        if let Some(td) = self.td.as_mut() {
                            td.interrupt_next_demote = true
                        }
                    }
                }
                Ok(())
            }
            Op::GmemCreate { decl, raw } => self.gmem_create(decl, *raw),
            // The runner gives the next host op its failed alternative (oracle::race).
            Op::FailNth { .. } => Ok(()),
            Op::Fallocate { gmem, offset, len, punch, keep_size } => {
                self.fallocate(gmem, *offset, *len, *punch, *keep_size)
            }
            Op::ExpectPages { .. } | Op::ExpectSept { .. } => Ok(()),
            // Listed, not a wildcard: a new op must be placed here or in `attempt()`.
            crate::seq::guest_ops!() => unreachable!("guest ops run through attempt()"),
        };
        match r {
            Ok(()) => Outcome::Ok,
            Err(e) => Outcome::Err(e),
        }
    }

    /// Present leaves per level across all roots (what the VM stats `pages_*` count), with the
    /// number of 2M leaves whose level the host's THP decides.
    pub fn page_counts(&self) -> ([u64; 3], u64) {
        let a = self.shared.counts();
        let b = self.mirror.counts();
        ([a[0] + b[0], a[1] + b[1], a[2] + b[2]], self.shared.thp_leaves())
    }

    /// Check an `expect` op against the model's state: `Err` says what the model has.
    pub fn check(&self, op: &Op) -> Result<(), String> {
        match op {
            Op::ExpectPages { p4k, p2m, p1g } => {
                let ([c4, c2, c1], thp) = self.page_counts();
                let ranges = [(c4, c4 + 512 * thp), (c2 - thp, c2), (c1, c1)];
                if pages_feasible(self.page_counts(), [p4k.as_deref(), p2m.as_deref(), p1g.as_deref()]) {
                    Ok(())
                } else {
                    let r = |(lo, hi): (u64, u64)| {
                        if lo == hi {
                            lo.to_string()
                        } else {
                            format!("{lo}..={hi}")
                        }
                    };
                    Err(format!(
                        "model has pages_4k={} pages_2m={} pages_1g={}",
                        r(ranges[0]),
                        r(ranges[1]),
                        r(ranges[2])
                    ))
                }
            }
            Op::ExpectSept { addr, level, state } => {
                let got = self.td.as_ref().map(|td| td.state(addr / PAGE, *level)).unwrap_or(SeptState::Free);
                if got == *state {
                    Ok(())
                } else {
                    Err(format!("S-EPT entry at {addr:#x} level {} is {}", level.name(), got.name()))
                }
            }
            _ => Ok(()),
        }
    }

    /// Check docs/model.md §9 over what the last step touched; returns the step's violations.
    pub fn end_step(&mut self, op: &Op) -> Vec<Violation> {
        let dirty = std::mem::take(&mut self.dirty);
        invariants::check(self, &dirty);
        if let Some(td) = &self.td {
            if let Some(a) = op.addr() {
                if self.cov.sept.is_empty() {
                    self.cov.sept = vec![[[0; OpKind::ALL.len()]; Level::ALL.len()]; SeptState::ALL.len()];
                }
                for l in Level::ALL {
                    let st = td.state(a / PAGE, l) as usize;
                    self.cov.sept[st][l as usize][op.kind() as usize] += 1;
                }
            }
        }
        std::mem::take(&mut self.violations)
    }
}
