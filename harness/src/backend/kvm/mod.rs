//! The real KVM backend: runs a sequence on `/dev/kvm` with the minimal guest. One VM is
//! reused across cases with a full reset (slots deleted, guest_memfd closed, guest registers
//! rewritten); a fresh VM replaces it whenever the reset cannot be proved clean (the VM's page
//! counters did not return to their baseline, a case timed out or the guest failed).
//!
//! One job per file: VM life and reset ([`vm`]), host ops ([`host_ops`]), guest batches and
//! the run of a case ([`batch`]), the footing check and self-tests ([`footing`]), capability
//! gating ([`gate`]); TDX/SNP set-up ([`cvm`]), the guest ([`guest`]), the kernel's view
//! ([`trace`]), its reports ([`kmsg`]) and coverage ([`kcov`]).

mod batch;
pub mod cvm;
pub mod cvm_ops;
pub mod cvm_run;
mod cvm_together;
mod footing;
mod gate;
pub mod guest;
mod host_ops;
pub mod kcov;
pub mod kmsg;
mod mmio;
pub mod soft_tdx;
mod td_guest;
mod td_reuse;
mod together;
/// The uAPI layer lives beside the backends (caps and the mappings read it too).
pub use super::raw;
pub mod trace;
mod vm;

use super::caps::Caps;
use super::view::{Mmu, StepView, UserBacking};
use super::{Backend, Observed, RealTrace, RunError};
use crate::backend::mem::{self, Mapping};
pub(crate) use crate::backend::vcpu::in_lab;
use crate::model::ranges::RangeSet;
use crate::model::HostFacts;
use crate::seq::*;
use guest::{BatchError, CmdExit, Watchdog};
use kvm_bindings::{kvm_create_guest_memfd, kvm_userspace_memory_region2};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use privmem_guest::abi::*;
use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};
use trace::TraceView;

struct RGmem {
    fd: OwnedFd,
    decl: GmemDecl,
    /// The file's own mapping, for `mmap` files.
    map: Option<Mapping>,
}

struct RSlot {
    gpa: u64,
    size: u64,
    flags: u32,
    uaddr: u64,
    /// The slot's anonymous memory, unless its userspace address is guest_memfd's mapping;
    /// with the length asked for and the backing where it came from `Mapping::anon_known`.
    anon: Option<Mapping>,
    known: Option<(usize, UserBacking)>,
    gmem: Option<(usize, u64)>,
}

/// A deleted slot's plain memory goes back to the pool for a later slot.
impl Drop for RSlot {
    fn drop(&mut self) {
        if let (Some(m), Some((len, backing))) = (self.anon.take(), self.known) {
            Mapping::recycle(len, m, backing);
        }
    }
}

struct VmState {
    vm: VmFd,
    vm_type: VmType,
    vcpus: Vec<VcpuFd>,
    harness: Mapping,
    stats: Option<raw::Stats>,
    /// Page counters with only the harness slot mapped and the guest idle.
    baseline: Option<[u64; 3]>,
    /// Page counters right after a slot deletion zapped everything, before the guest ran.
    post_zap: Option<[u64; 3]>,
    /// Deleting or moving a slot zaps the harness's own leaves too (a shadow-paging host).
    zaps_all: bool,
    /// The harness's leaves are mapped (the guest ran since the last zap).
    harness_warm: bool,
    /// The harness's leaves are exactly those of `baseline`: every vCPU re-warmed since the
    /// last zap (one guest batch maps back only its own vCPU's pages).
    harness_exact: bool,
    /// The GPA ranges that are PRIVATE now: attributes are per VM and outlive slots, so the
    /// reset sets them back to shared, and only them (6.12 stores attributes page by page: a
    /// range set back twice costs twice).
    private: RangeSet,
    slots: BTreeMap<u32, RSlot>,
    gmems: Vec<RGmem>,
    /// Cases run on this VM.
    cases: u64,
    /// KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2's flags as a case set them (`dirty-log-protect`): per
    /// VM, so the reset sets them back to 0.
    dirty_protect: u64,
    /// `KVM_X86_QUIRK_SLOT_ZAP_ALL` was disabled on this VM (`option no-slot-zap-all`).
    slot_zap_all_off: bool,
    /// What each plain slot's memory of the case turned out to be (checked in smaps).
    plain_backing: Vec<UserBacking>,
}

/// Time spent in set-up, steps and reset, summed over cases (where a case's time goes).
pub static PHASE_NANOS: [std::sync::atomic::AtomicU64; 3] =
    [std::sync::atomic::AtomicU64::new(0), std::sync::atomic::AtomicU64::new(0), std::sync::atomic::AtomicU64::new(0)];

/// The reset's time, by part ([`RESET_PARTS`] names them): what a reused VM costs that a
/// fresh one does not, and what a fresh one costs to throw away.
pub static RESET_NANOS: [std::sync::atomic::AtomicU64; RESET_PARTS.len()] =
    [const { std::sync::atomic::AtomicU64::new(0) }; RESET_PARTS.len()];
pub const RESET_PARTS: [&str; 6] = ["slots", "attributes", "view", "mmio", "rewarm", "teardown"];
/// [`RESET_PARTS`] by name.
mod part {
    pub const SLOTS: usize = 0;
    pub const ATTRIBUTES: usize = 1;
    pub const VIEW: usize = 2;
    pub const MMIO: usize = 3;
    pub const REWARM: usize = 4;
    pub const TEARDOWN: usize = 5;
}

/// Laps of one reset into [`RESET_NANOS`].
struct ResetClock(Instant);

impl ResetClock {
    fn start() -> ResetClock {
        ResetClock(Instant::now())
    }

    fn lap(&mut self, part: usize) {
        let now = Instant::now();
        RESET_NANOS[part].fetch_add((now - self.0).as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
        self.0 = now;
    }
}

/// VMs created in this process, for `fuzz --json`'s summary: how often a reset was not proved
/// clean (or reuse is off).
pub static FRESH_VMS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Why a VM was not kept for the next case: what to look at when the lab makes more fresh VMs
/// than it should. Counted per reason ([`FRESH_WHY_COUNTS`], indexed by the reason).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fresh {
    ReuseOff,
    AnotherVmType,
    NotReusableHere,
    UncleanEnd,
    SlotDeletionFailed,
    TooManyPrivatePages,
    CountersOffBaseline,
    LeafLeft,
    MoreVcpus,
    AnotherQuirk,
    NoVmYet,
    ViewLostEvents,
    MmioLeft,
    TdBuiltInCase,
    TdMappingsLeft,
    NoTdView,
    TdNoRoom,
    TdCaseFar,
}

impl Fresh {
    pub const ALL: [Fresh; 18] = [
        Fresh::ReuseOff,
        Fresh::AnotherVmType,
        Fresh::NotReusableHere,
        Fresh::UncleanEnd,
        Fresh::SlotDeletionFailed,
        Fresh::TooManyPrivatePages,
        Fresh::CountersOffBaseline,
        Fresh::LeafLeft,
        Fresh::MoreVcpus,
        Fresh::AnotherQuirk,
        Fresh::NoVmYet,
        Fresh::ViewLostEvents,
        Fresh::MmioLeft,
        Fresh::TdBuiltInCase,
        Fresh::TdMappingsLeft,
        Fresh::NoTdView,
        Fresh::TdNoRoom,
        Fresh::TdCaseFar,
    ];

    /// The reason in words (the keys of `fuzz --json`'s `fresh_vm_reasons`).
    pub fn name(self) -> &'static str {
        match self {
            Fresh::ReuseOff => "reuse off",
            Fresh::AnotherVmType => "another VM type",
            Fresh::NotReusableHere => "VM type not reusable here (SW_PROTECTED without the TDP view)",
            Fresh::UncleanEnd => "the case did not end cleanly",
            Fresh::SlotDeletionFailed => "a slot deletion failed",
            Fresh::TooManyPrivatePages => "too many private pages to set back",
            Fresh::CountersOffBaseline => "page counters not back at the baseline",
            Fresh::LeafLeft => "the view saw a leaf of the case left",
            Fresh::MoreVcpus => "more vCPUs",
            Fresh::AnotherQuirk => "another quirk setting",
            Fresh::NoVmYet => "no VM yet",
            Fresh::ViewLostEvents => "the view lost events",
            Fresh::MmioLeft => "MMIO SPTEs that could not be cleared",
            Fresh::TdBuiltInCase => "the case builds its TD (a step before its first finalize, or none)",
            Fresh::TdMappingsLeft => "the TD's reset left an S-EPT leaf or a shared EPT entry",
            Fresh::NoTdView => "no view of a TD's EPTs (the TDX module is not privmem's)",
            Fresh::TdNoRoom => "no gigabyte of GPA the kept TD has not used for the case's memory",
            Fresh::TdCaseFar => "the case reaches past the TD shim's identity map (it is not moved)",
        }
    }

    /// A VM of another type or quirk setting is parked for the cases that want it, not dropped.
    pub fn parks(self) -> bool {
        matches!(self, Fresh::AnotherVmType | Fresh::AnotherQuirk)
    }
}

pub static FRESH_WHY_COUNTS: [std::sync::atomic::AtomicU64; Fresh::ALL.len()] =
    [const { std::sync::atomic::AtomicU64::new(0) }; Fresh::ALL.len()];

fn fresh_because(why: Fresh) {
    FRESH_WHY_COUNTS[why as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Time per op kind (guest batches under their first op's kind), and in the view's reading
/// (the last slot): where a step's time goes, for `fuzz --json`'s summary.
pub static OP_NANOS: [std::sync::atomic::AtomicU64; OpKind::ALL.len() + 1] =
    [const { std::sync::atomic::AtomicU64::new(0) }; OpKind::ALL.len() + 1];

fn count_time(slot: usize, since: Instant) {
    OP_NANOS[slot].fetch_add(since.elapsed().as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
}

/// A pre-fault is looked at this often, and given up (EINTR) after this long with no page done.
const PREFAULT_TICK: Duration = Duration::from_millis(50);
const PREFAULT_STALL: Duration = Duration::from_millis(150);

/// The largest attribute range a generated case sets on a real kernel (4M pages), and in the
/// lab (16K pages, as pre-faults): Linux stores attributes page by page, and under TCG a 16G
/// conversion costs seconds; a few such ops were half a lab campaign's time, and ranges from
/// 64M to 1G still a third. Larger ranges stay on the model, in scenarios and on a host.
const MAX_ATTR_RANGE: u64 = 16 << 30;
const MAX_ATTR_RANGE_LAB: u64 = 64 << 20;
/// With `--large-conversions`, which asks for conversions long enough to meet a lockup detector.
const MAX_ATTR_RANGE_LARGE: u64 = 64 << 30;
static LARGE_CONVERSIONS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Let generated cases convert up to 64G at once (`--large-conversions`).
pub fn allow_large_conversions() {
    LARGE_CONVERSIONS.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// The largest attribute range a generated case sets here.
fn max_attr_range() -> u64 {
    if LARGE_CONVERSIONS.load(std::sync::atomic::Ordering::Relaxed) {
        MAX_ATTR_RANGE_LARGE
    } else if in_lab() {
        MAX_ATTR_RANGE_LAB
    } else {
        MAX_ATTR_RANGE
    }
}
/// The largest range a generated case pre-faults on a real kernel.
const MAX_PREFAULT: u64 = 64 << 20;

/// The CPU's physical address width, from /proc/cpuinfo (`address sizes : 40 bits physical`).
fn cpu_phys_bits() -> Option<u8> {
    let s = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let l = s.lines().find(|l| l.starts_with("address sizes"))?;
    l.split(':').nth(1)?.split_whitespace().next()?.parse().ok()
}

/// Guest accesses and host accesses of guest memory.
fn is_access(op: &Op) -> bool {
    op.kind().is_guest() || matches!(op, Op::HostRead { .. } | Op::HostWrite { .. })
}

/// Whether a slot binds guest_memfd past the file's end (`offset + size` beyond it, or
/// wrapping): Linux 6.18 accepts some such bindings (a signed `offset + size > i_size`), and
/// memory behind them is nobody's to touch on a shared host.
fn binds_past_file(h: &Header, s: &SlotSpec) -> bool {
    let Some(b) = &s.gmem else { return false };
    let file = h.gmems.iter().find(|g| g.name == b.gmem).map(|g| g.size).unwrap_or(0);
    b.offset.checked_add(s.size).is_none_or(|e| e > file)
}

/// A slot-add step's slot, if the step is one.
fn added_slot(op: &Op) -> Option<&SlotSpec> {
    match op {
        Op::SlotAdd(s) => Some(s),
        _ => None,
    }
}

/// Whether any slot of the sequence, in its header or added by a step, binds past its file.
fn past_file_binding(seq: &Sequence) -> bool {
    let h = &seq.header;
    h.slots.iter().chain(seq.steps.iter().filter_map(|st| added_slot(&st.op))).any(|s| binds_past_file(h, s))
}

/// The most PRIVATE pages a reset sets back to shared before it prefers a fresh VM.
const RESET_ATTR_PAGES: u64 = 16384;
/// VMs parked for other types and quirk settings (default, SW_PROTECTED, each with and
/// without the slot-zap-all quirk).
const PARKED_MAX: usize = 3;

pub struct KvmBackend {
    kvm: Kvm,
    pub caps: Caps,
    vm: Option<VmState>,
    /// Finalized TDs proved clean by their resets, kept for later TD cases (td_reuse).
    tds: Vec<td_reuse::KeptTd>,
    /// Reused VMs of other types or quirk settings, proved clean, kept for later cases.
    parked: Vec<VmState>,
    /// The memory behind the slots that clear MMIO SPTEs (`MMIO_SPAN` pages, private and
    /// never written: every page reads as the zero page, so nothing is allocated), made once.
    /// Made per clean-up as shmem, its set-up and teardown cost more than the clean-up.
    mmio_backing: Option<Mapping>,
    /// Reuse one VM across cases (else a fresh VM per case).
    pub reuse: bool,
    pub timeout: Duration,
    pub fresh_vms: u64,
    watchdog: Watchdog,
    /// The footing check's verdict, taken before the first run.
    footing: Option<Result<(), String>>,
    /// The kernel's mapping view (tracefs), and why there is none where there is none.
    view: Option<TraceView>,
    pub view_error: Option<String>,
    /// The kernel's own reports (/dev/kmsg), where this process may read them.
    kmsg: Option<kmsg::Kmsg>,
    /// The kernel's coverage of this thread (KCOV), where the kernel has it.
    kcov: Option<kcov::Kcov>,
    /// The GPA width memslots may reach: `kvm_mmu_max_gfn()` is the CPU's physical address
    /// width with TDP (the lab), 52 bits with shadow paging (this host).
    max_gpa_bits: Option<u8>,
    /// How the threads of concurrent groups are released in this run, and their watchdogs.
    release: together::Release,
    lane_watchdogs: Vec<Watchdog>,
}

fn errno_of(e: i32) -> Outcome {
    Outcome::Err(Errno::from_raw(e))
}

impl VmState {
    /// A memslot was deleted or moved: where that zaps every root, the harness's own leaves
    /// went too.
    fn memslot_zapped(&mut self) {
        self.harness_warm &= !self.zaps_all;
        self.harness_exact &= !self.zaps_all;
    }
}

impl KvmBackend {
    /// Which kernel this is and which the model runs as, in words.
    pub fn kernel_words(&self) -> String {
        match self.caps.kernel {
            Some(k) => format!(
                "kernel: Linux {}, modelled as {k}{}",
                self.caps.release,
                self.caps.drift.as_deref().map(|d| format!(" ({d})")).unwrap_or_default()
            ),
            None => format!(
                "kernel: Linux {}, older than every modelled kernel; modelled as each scenario says",
                self.caps.release
            ),
        }
    }

    /// A backend with the kernel's mapping view where the host has one.
    pub fn open() -> Result<KvmBackend, String> {
        Self::open_with(true)
    }

    /// `view: false` runs without the mapping view (the baseline of `bench --backend lab`).
    pub fn open_with(view: bool) -> Result<KvmBackend, String> {
        let kvm = Kvm::new().map_err(|e| format!("/dev/kvm: {e}"))?;
        Ok(KvmBackend {
            kvm,
            caps: Caps::probe(),
            vm: None,
            tds: Vec::new(),
            parked: Vec::new(),
            mmio_backing: None,
            reuse: true,
            // The window a guest batch may go without progress: the lab (privmem as PID 1,
            // nested KVM under TCG) runs guests some fifty times slower than a real host.
            timeout: Duration::from_secs(if std::process::id() == 1 { 10 } else { 2 }),
            fresh_vms: 0,
            watchdog: Watchdog::new(),
            footing: None,
            view: None,
            view_error: if view { None } else { Some("turned off (--no-view)".into()) },
            kmsg: kmsg::Kmsg::open().ok(),
            kcov: kcov::Kcov::open().ok(),
            max_gpa_bits: match trace::host_mmu() {
                Mmu::Tdp => cpu_phys_bits(),
                Mmu::Shadow => Some(52),
            },
            release: together::Release::default(),
            lane_watchdogs: Vec::new(),
        }
        .with_view())
    }

    /// Open the kernel's mapping view: a tracefs instance limited to this thread, or to every
    /// task when privmem is the lab's PID 1 (nothing else runs VMs there). `PRIVMEM_VIEW=off`
    /// turns it off.
    fn with_view(mut self) -> KvmBackend {
        if self.view_error.is_some() {
            return self;
        }
        if std::env::var("PRIVMEM_VIEW").is_ok_and(|v| v == "off") {
            self.view_error = Some("turned off (PRIVMEM_VIEW=off)".into());
            return self;
        }
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let pid = (std::process::id() != 1).then_some(tid);
        match TraceView::open(pid) {
            Ok(v) => self.view = Some(v),
            Err(e) => self.view_error = Some(e),
        }
        self
    }

    /// Whether the backend records kernel coverage (KCOV).
    pub fn has_coverage(&self) -> bool {
        self.kcov.is_some()
    }

    /// Which view of the kernel's mappings this backend has, in words.
    pub fn view_name(&self) -> String {
        match (&self.view, &self.view_error) {
            (Some(v), _) if v.mmu == Mmu::Tdp => "tracefs, TDP MMU (every leaf, exact)".into(),
            (Some(_), _) => "tracefs, shadow MMU (leaves installed per step; zaps are not traced)".into(),
            (None, Some(e)) => format!("none: {e}"),
            (None, None) => "none".into(),
        }
    }

    /// What the kernel says after step `i`: its mappings, and any report it printed.
    fn observe(&mut self, t: &mut RealTrace, i: usize) {
        t.views[i] = self.step_view();
        if let Some(k) = self.kmsg.as_mut() {
            t.splats.extend(k.splats().into_iter().map(|s| (i, s)));
        }
    }

    /// Which leaves of `view` map a slot's shared page, for the slots whose shared and private
    /// memory differ (a guest_memfd slot with its own anonymous memory): the leaf's frame
    /// against the one /proc/self/pagemap gives for the slot's userspace page. None without a
    /// full view (TDP) or where pagemap hides frames (not root).
    fn leaf_backing(&self, view: &Option<StepView>) -> Option<Vec<(u64, bool)>> {
        let Some(StepView::Leaves(leaves)) = view else { return None };
        let (v, st) = (self.view.as_ref()?, self.vm.as_ref()?);
        let pagemap = crate::backend::mem::Pagemap::open()?;
        let mut out = Vec::new();
        for k in leaves.iter().filter(|k| k.root == 0) {
            let Some(sl) = st.slots.values().find(|s| (s.gpa >> 12..(s.gpa + s.size) >> 12).contains(&k.gfn)) else {
                continue;
            };
            if sl.gmem.is_none() || sl.anon.is_none() {
                continue;
            }
            let user = pagemap.pfn(sl.uaddr + (k.gfn - (sl.gpa >> 12)) * 4096)?;
            out.push((k.gfn, v.pfn(k).is_some_and(|p| p == user && user != 0)));
        }
        Some(out)
    }

    /// The view after a step (None where the backend has none).
    fn step_view(&mut self) -> Option<StepView> {
        let v = self.view.as_mut()?;
        v.drain();
        let limit = HARNESS_GPA >> 12;
        match v.mmu {
            Mmu::Tdp => v.leaves(limit).map(StepView::Leaves),
            Mmu::Shadow => v.take_installed(limit).map(StepView::Installed),
        }
    }
}

impl Backend for KvmBackend {
    fn name(&self) -> &'static str {
        "kvm"
    }

    fn kernel(&self) -> Option<Release> {
        self.caps.kernel
    }

    fn unsupported(&self, seq: &Sequence) -> Option<String> {
        self.unsupported_here(seq)
    }

    fn adapt(&self, seq: &Sequence) -> Sequence {
        self.adapt_here(seq)
    }

    fn overlaps(&self) -> bool {
        true
    }

    fn release_as(&mut self, seed: u64, repetition: u32) {
        self.release = together::Release { seed, repetition };
    }

    fn run(&mut self, seq: &Sequence) -> Result<RealTrace, RunError> {
        if let Some(why) = self.unsupported(seq) {
            return Err(RunError::Unsupported(why));
        }
        // A TD or an SNP guest: its own set-up and runner (see cvm_run), built and torn down
        // within the case. What the kernel reported meanwhile (a TDX_BUG_ON's warning, at a
        // zap or at the teardown) is the case's, at its last step.
        if matches!(seq.header.vm, VmType::Tdx | VmType::Snp) {
            self.vm = None;
            if seq.header.vm == VmType::Tdx {
                return self.run_td(seq);
            }
            self.report_between_cases();
            let watch = td_guest::Watch { dog: &self.watchdog, window: self.timeout, release: self.release };
            let mut r = cvm_ops::run(&self.kvm, seq, &watch);
            if let (Ok(t), Some(k)) = (r.as_mut(), self.kmsg.as_mut()) {
                let last = seq.steps.len().saturating_sub(1);
                t.splats.extend(k.splats().into_iter().map(|s| (last, s)));
            }
            return r;
        }
        if let Err(why) = self.footing() {
            return Err(RunError::Setup(format!("footing check failed, refusing to run: {why}")));
        }
        let t0 = Instant::now();
        if let Some(k) = self.kcov.as_mut() {
            k.start();
        }
        self.prepare(seq.header.vm, seq.header.vcpus, seq.header.has(Knob::NoSlotZapAll))?;
        self.ensure_baseline()?;
        self.settle_mmio(seq)?;
        // What the kernel reported while an earlier VM of another type went away is not this
        // case's: say so rather than blame the case (its own replay will show it again).
        self.report_between_cases();
        let t1 = Instant::now();
        let mut r = self.run_steps(seq);
        let t2 = Instant::now();
        self.reset(r.is_ok());
        // The reset (slot deletions, and the VM's teardown where it was not proved clean) is
        // the case's own doing: what the kernel reported there is the case's, at its last step.
        if let (Ok(t), Some(k)) = (r.as_mut(), self.kmsg.as_mut()) {
            let last = seq.steps.len().saturating_sub(1);
            t.splats.extend(k.splats().into_iter().map(|s| (last, s)));
        }
        // A case that failed an allocation in the kernel: anything it leaked (kmemleak, in the
        // lab's debug kernel) is the case's, at its last step.
        if let (Ok(t), true) = (r.as_mut(), seq.steps.iter().any(|st| matches!(st.op, Op::FailNth { .. }))) {
            let last = seq.steps.len().saturating_sub(1);
            t.splats.extend(kmsg::kmemleak_scan().unwrap_or_default().into_iter().map(|s| (last, s)));
        }
        if let (Ok(t), Some(k)) = (r.as_mut(), self.kcov.as_mut()) {
            t.pcs = k.collect();
        }
        let t3 = Instant::now();
        for (i, d) in [t1 - t0, t2 - t1, t3 - t2].iter().enumerate() {
            PHASE_NANOS[i].fetch_add(d.as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }
}

#[cfg(test)]
mod fresh_tests {
    use super::Fresh;

    #[test]
    fn each_reason_counts_in_its_own_slot() {
        for (i, f) in Fresh::ALL.iter().enumerate() {
            assert_eq!(*f as usize, i, "{f:?}: Fresh::ALL is in declaration order");
        }
        let names: std::collections::BTreeSet<_> = Fresh::ALL.iter().map(|f| f.name()).collect();
        assert_eq!(names.len(), Fresh::ALL.len(), "each reason has its own words");
    }
}
