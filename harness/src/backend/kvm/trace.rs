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

const TRACEFS: &str = "/sys/kernel/tracing";

/// `SPTE_MMU_PRESENT_MASK` (arch/x86/kvm/mmu/spte.h, 6.1 and later): set in every present SPTE,
/// clear in MMIO, removed (frozen) and non-present ones.
const SPTE_PRESENT: u64 = 1 << 11;
/// `PT_PAGE_SIZE_MASK`: a present SPTE above 4K with this bit is a huge leaf.
const SPTE_LARGE: u64 = 1 << 7;
/// `SHADOW_NONPRESENT_VALUE` (64-bit) and `FROZEN_SPTE`: the two non-present values that cache
/// nothing. Any other non-present, non-zero SPTE caches an MMIO access.
const NONPRESENT: u64 = 1 << 63;
const FROZEN: u64 = NONPRESENT | 0x5a0;

fn is_mmio(spte: u64) -> bool {
    spte & SPTE_PRESENT == 0 && spte != 0 && spte != NONPRESENT && spte != FROZEN
}

/// Which MMU the host's KVM runs: `kvm.tdp_mmu` says (the TDP MMU needs EPT/NPT, which the
/// module parameter already accounts for at load).
pub fn host_mmu() -> Mmu {
    match std::fs::read_to_string("/sys/module/kvm/parameters/tdp_mmu") {
        Ok(s) if s.trim() == "Y" => Mmu::Tdp,
        _ => Mmu::Shadow,
    }
}

/// A tracefs instance with the `kvmmmu` leaf events on, read after every step.
pub struct TraceView {
    dir: PathBuf,
    /// Taken in `drop`: tracefs refuses to remove an instance with an open file.
    pipe: Option<std::fs::File>,
    pub mmu: Mmu,
    /// TDP: present leaves by (address space, gfn).
    leaves: BTreeMap<(u8, u64), Level>,
    /// TDP: cached MMIO SPTEs, which outlive memslot changes (only their generation goes stale).
    mmio: std::collections::BTreeSet<(u8, u64)>,
    /// Shadow: leaves installed since the last [`TraceView::take_installed`].
    installed: Vec<KLeaf>,
    /// Events the kernel dropped (ring buffer overrun); a view with losses is not compared.
    lost: bool,
    buf: Vec<u8>,
    partial: String,
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
        let names: &[&str] = match mmu {
            Mmu::Tdp => &["kvm_tdp_mmu_spte_changed"],
            Mmu::Shadow => &["kvm_mmu_set_spte"],
        };
        let setup = || -> Result<std::fs::File, String> {
            // Large enough for a 1G pre-fault's worth of 4K leaves per CPU is not possible;
            // overruns are detected and the case's view dropped instead.
            write(&dir.join("buffer_size_kb"), "8192")?;
            if let Some(p) = pid {
                write(&dir.join("set_event_pid"), &p.to_string())?;
            }
            for e in names {
                write(&dir.join(format!("events/kvmmmu/{e}/enable")), "1")?;
            }
            let pipe = dir.join("trace_pipe");
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&pipe)
                .map_err(|e| format!("{}: {e}", pipe.display()))
        };
        let pipe = match setup() {
            Ok(p) => p,
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                return Err(e);
            }
        };
        Ok(TraceView {
            dir,
            pipe: Some(pipe),
            mmu,
            leaves: BTreeMap::new(),
            mmio: Default::default(),
            installed: Vec::new(),
            lost: false,
            buf: vec![0; 1 << 16],
            partial: String::new(),
        })
    }

    /// Forget everything (a fresh VM: no leaf of the old one can matter).
    pub fn reset(&mut self) {
        self.drain();
        self.leaves.clear();
        self.mmio.clear();
        self.installed.clear();
        self.lost = false;
    }

    fn overruns(&self) -> u64 {
        let Ok(rd) = std::fs::read_dir(self.dir.join("per_cpu")) else { return 0 };
        rd.flatten()
            .filter_map(|d| std::fs::read_to_string(d.path().join("stats")).ok())
            .flat_map(|s| {
                s.lines()
                    .filter_map(|l| l.strip_prefix("overrun: ").and_then(|n| n.trim().parse::<u64>().ok()))
                    .collect::<Vec<_>>()
            })
            .sum()
    }

    /// Read every event the kernel has committed so far and apply it.
    pub fn drain(&mut self) {
        let Some(mut pipe) = self.pipe.take() else { return };
        loop {
            match pipe.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => {
                    let text = String::from_utf8_lossy(&self.buf[..n]).into_owned();
                    self.partial.push_str(&text);
                    let mut rest = String::new();
                    let complete = self.partial.ends_with('\n');
                    let lines: Vec<String> = self.partial.lines().map(String::from).collect();
                    for (i, l) in lines.iter().enumerate() {
                        if i + 1 == lines.len() && !complete {
                            rest = l.clone();
                        } else {
                            self.apply(l);
                        }
                    }
                    self.partial = rest;
                }
                Err(_) => break, // EAGAIN: nothing more committed.
            }
        }
        self.pipe = Some(pipe);
    }

    /// Check the ring buffer for dropped events (once a case: it reads a file per CPU).
    pub fn check_lost(&mut self) -> bool {
        self.lost |= self.overruns() > 0;
        self.lost
    }

    fn apply(&mut self, line: &str) {
        // `... event: name value name value ...`: the value after a field's name; levels and
        // address-space ids are decimal, everything else hex (the events' print formats).
        let words: Vec<&str> = line.split_ascii_whitespace().collect();
        let field = |name: &str| -> Option<u64> {
            let v = words.iter().position(|w| *w == name).and_then(|i| words.get(i + 1))?;
            if name == "level" || name == "id" {
                v.parse().ok()
            } else {
                u64::from_str_radix(v, 16).ok()
            }
        };
        let level = |l: u64| match l {
            1 => Some(Level::L4K),
            2 => Some(Level::L2M),
            3 => Some(Level::L1G),
            _ => None,
        };
        if line.contains("kvm_tdp_mmu_spte_changed:") {
            let (Some(asid), Some(gfn), Some(lv), Some(old), Some(new)) =
                (field("id"), field("gfn"), field("level"), field("old_spte"), field("new_spte"))
            else {
                return;
            };
            let Some(l) = level(lv) else { return };
            let leaf = |s: u64| s & SPTE_PRESENT != 0 && (l == Level::L4K || s & SPTE_LARGE != 0);
            let key = (asid as u8, gfn);
            if leaf(old) {
                self.leaves.remove(&key);
            }
            if leaf(new) {
                self.leaves.insert(key, l);
            }
            if is_mmio(new) {
                self.mmio.insert(key);
            } else {
                self.mmio.remove(&key);
            }
        } else if line.contains("kvm_mmu_set_spte:") {
            let (Some(gfn), Some(lv)) = (field("gfn"), field("level")) else { return };
            if let Some(l) = level(lv) {
                self.installed.push(KLeaf { gfn, level: l, root: 0 });
            }
        }
    }

    /// The present leaves below `limit_gfn` (TDP), in GFN order; None if events were lost.
    pub fn leaves(&self, limit_gfn: u64) -> Option<Vec<KLeaf>> {
        if self.lost {
            return None;
        }
        Some(
            self.leaves
                .iter()
                .filter(|((_, g), _)| *g < limit_gfn)
                .map(|(&(root, gfn), &level)| KLeaf { gfn, level, root })
                .collect(),
        )
    }

    /// The leaves installed since the last call (shadow MMU), below `limit_gfn`.
    pub fn take_installed(&mut self, limit_gfn: u64) -> Option<Vec<KLeaf>> {
        let v = std::mem::take(&mut self.installed);
        if self.lost {
            return None;
        }
        Some(v.into_iter().filter(|l| l.gfn < limit_gfn).collect())
    }

    /// Whether any present leaf or cached MMIO SPTE is left below `limit_gfn` (TDP): a reset
    /// is proved clean only if not.
    pub fn any_left_below(&self, limit_gfn: u64) -> bool {
        self.leaves.keys().chain(self.mmio.iter()).any(|(_, g)| *g < limit_gfn)
    }

    pub fn lost(&self) -> bool {
        self.lost
    }
}

impl Drop for TraceView {
    fn drop(&mut self) {
        let _ = std::fs::write(self.dir.join("events/enable"), "0");
        self.pipe = None;
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(mmu: Mmu) -> TraceView {
        TraceView {
            dir: PathBuf::new(),
            pipe: None,
            mmu,
            leaves: BTreeMap::new(),
            mmio: Default::default(),
            installed: Vec::new(),
            lost: false,
            buf: Vec::new(),
            partial: String::new(),
        }
    }

    // Lines as trace_pipe prints them (the events' print formats, Linux 6.12).
    const MAP_2M: &str = " privmem-1 [000] ..... 12.5: kvm_tdp_mmu_spte_changed: as id 0 gfn 40200 level 2 \
                          old_spte 8000000000000000 new_spte 600000000abc08f7";
    const ZAP_2M: &str = " privmem-1 [000] ..... 12.6: kvm_tdp_mmu_spte_changed: as id 0 gfn 40200 level 2 \
                          old_spte 600000000abc08f7 new_spte 8000000000000000";
    const MMIO: &str = " privmem-1 [000] ..... 12.7: kvm_tdp_mmu_spte_changed: as id 0 gfn 90000 level 1 \
                        old_spte 8000000000000000 new_spte 8010000000000006";
    const TABLE: &str = " privmem-1 [000] ..... 12.8: kvm_tdp_mmu_spte_changed: as id 0 gfn 40000 level 3 \
                         old_spte 8000000000000000 new_spte 6000000001234807";

    #[test]
    fn tdp_events_rebuild_the_leaves() {
        let mut v = view(Mmu::Tdp);
        v.apply(MAP_2M);
        v.apply(TABLE); // a page table, not a leaf
        assert_eq!(v.leaves(u64::MAX), Some(vec![KLeaf { gfn: 0x40200, level: Level::L2M, root: 0 }]));
        v.apply(MMIO);
        assert!(v.any_left_below(u64::MAX));
        v.apply(ZAP_2M);
        assert_eq!(v.leaves(u64::MAX), Some(vec![]));
        assert!(v.any_left_below(0x90001), "the MMIO SPTE is still cached");
        assert!(!v.any_left_below(0x90000));
    }

    #[test]
    fn shadow_events_list_installed_leaves() {
        let mut v = view(Mmu::Shadow);
        v.apply(" privmem-1 [001] ..... 3.1: kvm_mmu_set_spte: gfn 100000 spte 80000001234567 (rw-u) level 2 at ffff888104a3c000");
        v.apply(" privmem-1 [001] ..... 3.2: kvm_mmu_set_spte: gfn 1fc0000 spte 8000000abcd007 (rw-u) level 1 at ffff888104a3c008");
        assert_eq!(v.take_installed(0x1fc0000), Some(vec![KLeaf { gfn: 0x100000, level: Level::L2M, root: 0 }]));
        assert_eq!(v.take_installed(u64::MAX), Some(vec![]), "taken once");
    }
}
