//! The kernel's own view of its stage-2 mappings, read from the `kvmmmu` tracepoints through a
//! private tracefs instance (so that the global buffer and anyone else's tracing are left
//! alone).
//!
//! - TDP MMU (the lab, TDX and SNP hosts): every SPTE change goes through
//!   `handle_changed_spte()`, which fires `kvm_tdp_mmu_spte_changed` (gfn, level, old and new
//!   SPTE, address space); removed page tables report each child. Replaying the events gives
//!   the exact set of present leaves.
//! - Shadow MMU (this PVM host, `kvm.tdp_mmu=N`): `kvm_mmu_set_spte` fires for every leaf
//!   installed, with its level, but rmap-based zaps (`kvm_zap_rmap()`, mmu notifiers) fire
//!   nothing. So on the shadow MMU the view is the leaves installed during a step (their level
//!   is exact), not the whole map.

use crate::backend::view::{KLeaf, Mmu};
use crate::seq::Level;
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const TRACEFS: &str = "/sys/kernel/tracing";

/// `SPTE_MMU_PRESENT_MASK` (arch/x86/kvm/mmu/spte.h, 6.1 and later): set in every present SPTE,
/// clear in MMIO, removed (frozen) and non-present ones.
const SPTE_PRESENT: u64 = 1 << 11;
/// `PT_PAGE_SIZE_MASK`: a present SPTE above 4K with this bit is a huge leaf.
const SPTE_LARGE: u64 = 1 << 7;
/// The frame address in an SPTE (`SPTE_BASE_ADDR_MASK`, bits 12 to 51).
const SPTE_ADDR: u64 = ((1 << 52) - 1) & !0xfff;
/// `SHADOW_NONPRESENT_VALUE` (64-bit) and `FROZEN_SPTE`: the non-present values that cache
/// nothing. Any other non-present, non-zero SPTE caches an MMIO access.
const NONPRESENT: u64 = 1 << 63;
/// `FROZEN_SPTE` moved: `| 0x5a0` in 6.12, `| 0x1a0` in 7.3, where bit 10 joined
/// `SPTE_MMIO_ALLOWED_MASK` (arch/x86/kvm/mmu/spte.h of each). Neither can be an MMIO SPTE on
/// either kernel: those carry the MMIO value (bit 0 on NPT, bits 1-2 on EPT). Taking 7.3's
/// frozen children of a removed page table for MMIO SPTEs left hundreds of them "cached" at
/// 2M- and 1G-aligned GFNs in the view, and a fresh VM after most SW_PROTECTED cases.
const FROZEN: [u64; 2] = [NONPRESENT | 0x5a0, NONPRESENT | 0x1a0];

fn is_mmio(spte: u64) -> bool {
    spte & SPTE_PRESENT == 0 && spte != 0 && spte != NONPRESENT && !FROZEN.contains(&spte)
}

/// Which MMU the host's KVM runs: `kvm.tdp_mmu` says (the TDP MMU needs EPT/NPT, which the
/// module parameter already accounts for at load).
pub fn host_mmu() -> Mmu {
    match std::fs::read_to_string("/sys/module/kvm/parameters/tdp_mmu") {
        Ok(s) if s.trim() == "Y" => Mmu::Tdp,
        _ => Mmu::Shadow,
    }
}

/// Where an event's fields are in its binary record, from the event's `format` file (offsets
/// can differ between kernels).
#[derive(Clone, Copy, Debug, Default)]
struct Format {
    id: u16,
    gfn: usize,
    level: usize,
    /// TDP: old and new SPTE and the address space; shadow: unused.
    old: usize,
    new: usize,
    as_id: usize,
}

impl Format {
    fn read(dir: &Path) -> Result<Format, String> {
        let text = std::fs::read_to_string(dir.join("format")).map_err(|e| format!("{}: {e}", dir.display()))?;
        let offset = |name: &str| -> usize {
            text.lines()
                .find(|l| l.contains(&format!(" {name};")))
                .and_then(|l| l.split("offset:").nth(1))
                .and_then(|r| r.split(';').next())
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0)
        };
        let id = std::fs::read_to_string(dir.join("id")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        Ok(Format {
            id,
            gfn: offset("gfn"),
            level: offset("level"),
            old: offset("old_spte"),
            new: offset("new_spte"),
            as_id: offset("as_id"),
        })
    }
}

/// One event, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    SpteChanged { as_id: u8, gfn: u64, level: u8, old: u64, new: u64 },
    SetSpte { gfn: u64, level: u8 },
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes"))).unwrap_or(0)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes"))).unwrap_or(0)
}

/// `RB_MISSED_EVENTS` in a page's commit word: the kernel dropped events before this page.
const RB_MISSED_EVENTS: u64 = 1 << 31;

/// The data length in a page's commit word (its high bits are flags).
fn commit_len(commit: u64) -> usize {
    (commit & 0x0fff_ffff) as usize
}

/// Decode one ring-buffer page as `trace_pipe_raw` hands it out (`events/header_page` and
/// `header_event`): a timestamp, a commit word (data length, and flags in its high bits), then
/// records with a 32-bit header of 5 bits type/length and 27 bits time delta. Pushes
/// (timestamp, event); returns whether events were missed.
fn decode_page(page: &[u8], tdp: &Format, set: &Format, out: &mut Vec<(u64, Event)>) -> bool {
    let commit = u64_at(page, 8);
    decode_range(page, 0, commit_len(commit), tdp, set, out);
    commit & RB_MISSED_EVENTS != 0
}

/// Decode the records of a page whose data offsets are in `from..to` (the timestamps still
/// add up from the page's start): a mapped sub-buffer is read in parts as the writer fills it.
fn decode_range(page: &[u8], from: usize, to: usize, tdp: &Format, set: &Format, out: &mut Vec<(u64, Event)>) {
    let mut ts = u64_at(page, 0);
    let data = &page[16.min(page.len())..(16 + to).min(page.len())];
    let mut off = 0;
    while off + 4 <= data.len() {
        let h = u32_at(data, off);
        let (kind, delta) = (h & 0x1f, (h >> 5) as u64);
        let (rec, next) = match kind {
            29 => {
                // Padding; a zero one ends the page.
                let a0 = u32_at(data, off + 4) as usize;
                if delta == 0 && a0 == 0 {
                    break;
                }
                (None, off + 4 + a0)
            }
            30 => {
                ts += (u32_at(data, off + 4) as u64) << 27 | delta;
                (None, off + 8)
            }
            31 => {
                ts = (u32_at(data, off + 4) as u64) << 27 | delta;
                (None, off + 8)
            }
            0 => {
                ts += delta;
                let a0 = u32_at(data, off + 4) as usize;
                (Some(off + 8..off + 4 + a0), off + 4 + a0)
            }
            n => {
                ts += delta;
                (Some(off + 4..off + 4 + n as usize * 4), off + 4 + n as usize * 4)
            }
        };
        if let Some(r) = rec.filter(|r| r.end <= data.len() && r.start < r.end && off >= from) {
            let e = &data[r];
            let id = u16::from_le_bytes([e[0], e.get(1).copied().unwrap_or(0)]);
            if id == tdp.id && tdp.id != 0 {
                out.push((
                    ts,
                    Event::SpteChanged {
                        as_id: e.get(tdp.as_id).copied().unwrap_or(0),
                        gfn: u64_at(e, tdp.gfn),
                        level: e.get(tdp.level).copied().unwrap_or(0),
                        old: u64_at(e, tdp.old),
                        new: u64_at(e, tdp.new),
                    },
                ));
            } else if id == set.id && set.id != 0 {
                out.push((
                    ts,
                    Event::SetSpte { gfn: u64_at(e, set.gfn), level: e.get(set.level).copied().unwrap_or(0) },
                ));
            }
        }
        off = next.max(off + 4);
    }
}

/// A tracefs instance with the `kvmmmu` leaf events on, read after every step. The binary
/// per-CPU pipes are read, not `trace_pipe`: the kernel then formats no text (in the lab,
/// under TCG, that formatting cost more than the comparison itself).
pub struct TraceView {
    dir: PathBuf,
    /// One per CPU (a vCPU thread may migrate: events are merged by timestamp). Taken in `drop`:
    /// tracefs refuses to remove an instance with an open file.
    pipes: Vec<std::fs::File>,
    /// Each pipe's ring buffer mapped (6.10 and later), read in place; None: read the pipe.
    rings: Vec<Option<mapped::Ring>>,
    tdp_fmt: Format,
    set_fmt: Format,
    pub mmu: Mmu,
    /// TDP: present leaves by (gfn, address space, level), so that iteration is already in the
    /// order a step's view is compared in and "below a GFN" is a range. The level is part of
    /// the key: when a 2M leaf replaces a page table, its event comes first and the removed 4K
    /// children's after, at the same GFN. The value is the leaf's frame (the SPTE's address bits),
    /// which tells a shared leaf from a private one ([`TraceView::pfn`]).
    leaves: BTreeMap<(u64, u8, Level), u64>,
    /// The last view handed out and its limit: most steps change no leaf (a guest read of a
    /// mapped page, a host op, an ioctl that fails), and the view after them is that one
    /// again, shared rather than copied. Dropped whenever a leaf comes or goes.
    snapshot: Option<(u64, Arc<[KLeaf]>)>,
    /// TDP: cached MMIO SPTEs, which outlive memslot changes (only their generation goes stale).
    mmio: std::collections::BTreeSet<(u8, u64)>,
    /// Shadow: leaves installed since the last [`TraceView::take_installed`].
    installed: Vec<KLeaf>,
    /// Events the kernel dropped (ring buffer overrun); a view with losses is not compared.
    lost: bool,
    page: Vec<u8>,
    events: Vec<(u64, Event)>,
}

fn write(p: &Path, s: &str) -> Result<(), String> {
    std::fs::write(p, s).map_err(|e| format!("{}: {e}", p.display()))
}

/// Mount tracefs where it is not mounted yet (the lab's initramfs, a fresh host).
fn ensure_tracefs() -> Result<(), String> {
    if Path::new(TRACEFS).join("instances").is_dir() {
        return Ok(());
    }
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
    let (src, dst, fs) = (c("nodev"), c(TRACEFS), c("tracefs"));
    // SAFETY: mount(2) with valid C strings and no data.
    let r = unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) };
    if r != 0 || !Path::new(TRACEFS).join("instances").is_dir() {
        return Err(format!("no tracefs at {TRACEFS} ({})", std::io::Error::last_os_error()));
    }
    Ok(())
}

impl TraceView {
    /// Open a private instance; `pid` limits events to that thread (None: every task, as in the
    /// lab, where this process is the only user of KVM).
    pub fn open(pid: Option<i32>) -> Result<TraceView, String> {
        ensure_tracefs()?;
        let events = Path::new(TRACEFS).join("events/kvmmmu");
        if !events.join("kvm_mmu_set_spte").is_dir() {
            return Err("the kernel has no kvmmmu trace events".into());
        }
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = Path::new(TRACEFS).join(format!("instances/privmem-{}-{n}", std::process::id()));
        std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mmu = host_mmu();
        let name = match mmu {
            Mmu::Tdp => "kvm_tdp_mmu_spte_changed",
            Mmu::Shadow => "kvm_mmu_set_spte",
        };
        let setup = || -> Result<(Vec<std::fs::File>, Format, Format), String> {
            // A 1G pre-fault's worth of 4K leaves does not fit: overruns are detected and the
            // case's view dropped instead.
            write(&dir.join("buffer_size_kb"), "8192")?;
            if let Some(p) = pid {
                write(&dir.join("set_event_pid"), &p.to_string())?;
                // The threads of a concurrent group are this thread's children: traced too.
                write(&dir.join("options/event-fork"), "1")?;
            }
            write(&dir.join(format!("events/kvmmmu/{name}/enable")), "1")?;
            let tdp = Format::read(&events.join("kvm_tdp_mmu_spte_changed"))?;
            let set = Format::read(&events.join("kvm_mmu_set_spte"))?;
            let mut pipes = Vec::new();
            let mut cpus: Vec<PathBuf> = std::fs::read_dir(dir.join("per_cpu"))
                .map_err(|e| format!("{}: {e}", dir.display()))?
                .flatten()
                .map(|d| d.path())
                .collect();
            cpus.sort();
            for c in cpus {
                let p = c.join("trace_pipe_raw");
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(&p)
                    .map_err(|e| format!("{}: {e}", p.display()))?;
                pipes.push(f);
            }
            Ok((pipes, tdp, set))
        };
        let (pipes, tdp_fmt, set_fmt) = match setup() {
            Ok(p) => p,
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                return Err(e);
            }
        };
        use std::os::fd::AsRawFd;
        let rings: Vec<_> = pipes.iter().map(|p| mapped::Ring::map(p.as_raw_fd())).collect();
        Ok(TraceView {
            dir,
            pipes,
            rings,
            tdp_fmt,
            set_fmt,
            mmu,
            leaves: BTreeMap::new(),
            snapshot: None,
            mmio: Default::default(),
            installed: Vec::new(),
            lost: false,
            // A read hands out one sub-buffer (a page unless buffer_subbuf_size_kb grew it).
            page: vec![0; 1 << 16],
            events: Vec::new(),
        })
    }

    /// Forget everything (a fresh VM: no leaf of the old one can matter).
    pub fn reset(&mut self) {
        self.drain();
        self.leaves.clear();
        self.snapshot = None;
        self.mmio.clear();
        self.installed.clear();
        self.lost = false;
    }

    /// Read every event the kernel has committed so far, on every CPU, and apply them in
    /// timestamp order.
    pub fn drain(&mut self) {
        self.events.clear();
        for (pipe, ring) in self.pipes.iter_mut().zip(self.rings.iter_mut()) {
            if let Some(r) = ring {
                match r.drain(&self.tdp_fmt, &self.set_fmt, &mut self.events) {
                    Ok(lost) => {
                        self.lost |= lost;
                        continue;
                    }
                    // The kernel refused the mapped read: the file from now on.
                    Err(()) => *ring = None,
                }
            }
            // A read returns one page (or the part of one the writer has committed). A short
            // page does not mean the reader caught up: the rest of a page read in part before
            // comes short too, with full pages behind it. Only EAGAIN says so.
            while let Ok(n) = pipe.read(&mut self.page) {
                if n == 0 {
                    break;
                }
                self.lost |= decode_page(&self.page[..n], &self.tdp_fmt, &self.set_fmt, &mut self.events);
            }
        }
        let mut events = std::mem::take(&mut self.events);
        events.sort_by_key(|(ts, _)| *ts);
        for (_, e) in &events {
            self.apply(*e);
        }
        self.events = events;
    }

    /// Whether the kernel dropped events since the last reset (a page came with
    /// `RB_MISSED_EVENTS`: the writer overran the reader).
    pub fn check_lost(&mut self) -> bool {
        self.drain();
        self.lost
    }

    fn apply(&mut self, e: Event) {
        let level = |l: u8| match l {
            1 => Some(Level::L4K),
            2 => Some(Level::L2M),
            3 => Some(Level::L1G),
            _ => None,
        };
        match e {
            Event::SpteChanged { as_id, gfn, level: lv, old, new } => {
                let Some(l) = level(lv) else { return };
                let leaf = |s: u64| s & SPTE_PRESENT != 0 && (l == Level::L4K || s & SPTE_LARGE != 0);
                let gone = leaf(old) && self.leaves.remove(&(gfn, as_id, l)).is_some();
                let came = leaf(new) && self.leaves.insert((gfn, as_id, l), (new & SPTE_ADDR) >> 12).is_none();
                if gone || came {
                    self.snapshot = None;
                }
                let key = (as_id, gfn);
                if is_mmio(new) {
                    self.mmio.insert(key);
                } else if l == Level::L4K {
                    self.mmio.remove(&key);
                }
            }
            Event::SetSpte { gfn, level: lv } => {
                if let Some(l) = level(lv) {
                    self.installed.push(KLeaf { gfn, level: l, root: 0 });
                }
            }
        }
    }

    /// The present leaves below `limit_gfn` (TDP), in GFN order, then root, then level; None if
    /// events were lost.
    pub fn leaves(&mut self, limit_gfn: u64) -> Option<Arc<[KLeaf]>> {
        if self.lost {
            return None;
        }
        match &self.snapshot {
            Some((limit, v)) if *limit == limit_gfn => Some(v.clone()),
            _ => {
                let v: Arc<[KLeaf]> = self
                    .leaves
                    .range(..(limit_gfn, 0, Level::L4K))
                    .map(|(&(gfn, root, level), _)| KLeaf { gfn, level, root })
                    .collect();
                self.snapshot = Some((limit_gfn, v.clone()));
                Some(v)
            }
        }
    }

    /// Present leaves by level (4K, 2M, 1G): those below `limit_gfn`, and those at or above it
    /// that the trace saw (TDP); None if events were lost.
    pub fn level_counts(&self, limit_gfn: u64) -> Option<([u64; 3], [u64; 3])> {
        if self.lost {
            return None;
        }
        let (mut below, mut above) = ([0u64; 3], [0u64; 3]);
        for &(gfn, _, level) in self.leaves.keys() {
            let n = if gfn < limit_gfn { &mut below } else { &mut above };
            n[level as usize] += 1;
        }
        Some((below, above))
    }

    /// The frame of a present leaf (TDP), from its SPTE.
    pub fn pfn(&self, leaf: &KLeaf) -> Option<u64> {
        self.leaves.get(&(leaf.gfn, leaf.root, leaf.level)).copied()
    }

    /// The leaves installed since the last call (shadow MMU), below `limit_gfn`.
    pub fn take_installed(&mut self, limit_gfn: u64) -> Option<Vec<KLeaf>> {
        let v = std::mem::take(&mut self.installed);
        if self.lost {
            return None;
        }
        Some(v.into_iter().filter(|l| l.gfn < limit_gfn).collect())
    }

    /// Whether a present leaf, and whether a cached MMIO SPTE, is left below `limit_gfn` (TDP):
    /// a reset is proved clean only if no leaf is.
    pub fn left_below(&self, limit_gfn: u64) -> (bool, bool) {
        (
            self.leaves.first_key_value().is_some_and(|((g, _, _), _)| *g < limit_gfn),
            self.mmio.iter().any(|(_, g)| *g < limit_gfn),
        )
    }

    /// The GFNs below `limit_gfn` with an MMIO SPTE, in address space 0.
    pub fn mmio_below(&self, limit_gfn: u64) -> Vec<u64> {
        self.mmio.iter().filter(|(a, g)| *a == 0 && *g < limit_gfn).map(|(_, g)| *g).collect()
    }

    /// Forget the MMIO SPTEs: the memslot generation moved past them, so the next access to
    /// their GFNs faults afresh (`check_mmio_spte()` in `mmu.c`).
    pub fn forget_mmio(&mut self) {
        self.mmio.clear();
    }

    pub fn lost(&self) -> bool {
        self.lost
    }
}

impl Drop for TraceView {
    fn drop(&mut self) {
        let _ = std::fs::write(self.dir.join("events/enable"), "0");
        self.rings.clear();
        self.pipes.clear();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

mod mapped;
#[cfg(test)]
mod tests;
