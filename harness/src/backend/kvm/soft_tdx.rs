//! The lab's software TDX module from inside the lab VM, through its debugfs
//! (`/sys/kernel/debug/tdx_soft/`, `ci/lab/tdx/module/soft.c`): the S-EPT after every step,
//! and fault injection. Present only on the `--tdx` flavour booted with `tdx_soft`.

use crate::backend::{MirrorMismatch, SeptLeaf};
use crate::seq::{Level, SeptState};
use privmem_guest::abi::{BOOT_GPA, BOOT_SIZE, HARNESS_GPA, HARNESS_SIZE};
use std::collections::{BTreeMap, BTreeSet};

const DIR: &str = "/sys/kernel/debug/tdx_soft";

/// Whether this kernel answers SEAMCALLs from the software module (looked up once: the gate
/// asks for every op of every generated case).
pub fn present() -> bool {
    static PRESENT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PRESENT.get_or_init(|| {
        // The dump read after every step leaves the shim's image out (its lines were most of
        // the reading's cost); a flavour without sept_skip lists it, and `sept` filters it.
        let skip = format!("{BOOT_GPA:x} {BOOT_SIZE:x} {HARNESS_GPA:x} {HARNESS_SIZE:x}");
        let _ = std::fs::write(format!("{DIR}/sept_skip"), skip);
        std::path::Path::new(DIR).join("sept").exists()
    })
}

/// Whether a GPA (shared bit cleared) is the TD shim's own image, not a case's memory.
fn image(gpa: u64) -> bool {
    let gpa = gpa & !crate::seq::TD_SHARED_BIT;
    (HARNESS_GPA..HARNESS_GPA + HARNESS_SIZE).contains(&gpa) || (BOOT_GPA..BOOT_GPA + BOOT_SIZE).contains(&gpa)
}

/// The TDRs of the live TDs the module lists (`td TDR` lines of its dump).
pub fn tds() -> Option<BTreeSet<u64>> {
    dump_only(0);
    let text = std::fs::read_to_string(format!("{DIR}/sept")).ok()?;
    text.lines().filter_map(|l| l.strip_prefix("td ")).map(|t| u64::from_str_radix(t.trim(), 16).ok()).collect()
}

/// The gigabytes the S-EPT dump lists leaves in (empty: all), as last set.
static WINDOW: std::sync::Mutex<Vec<u64>> = std::sync::Mutex::new(Vec::new());

/// Have the S-EPT dump list leaves only in these gigabytes (every 1G entry still, so `used`
/// stays whole); empty: everywhere. A kept TD keeps every table its earlier cases made, and a
/// reading after each step of a case need not walk theirs. At most 64 (more: everywhere).
pub fn window(gibs: &std::collections::BTreeSet<u64>) {
    let list: Vec<u64> = if gibs.len() <= 64 { gibs.iter().copied().collect() } else { Vec::new() };
    let text: String = list.iter().map(|g| format!("{g:x} ")).chain(["\n".to_string()]).collect();
    if std::fs::write(format!("{DIR}/dump_gib"), text).is_ok() {
        *WINDOW.lock().unwrap_or_else(|e| e.into_inner()) = list;
    }
}

/// Have the dumps list one TD (0: all). A flavour without `dump_td` lists every TD, and
/// [`section`] finds the one asked for.
fn dump_only(tdr: u64) {
    let _ = std::fs::write(format!("{DIR}/dump_td"), format!("{tdr:x}"));
}

/// The lines of one TD's part of a dump (after its `td TDR` line).
fn section(text: &str, tdr: u64) -> Option<&str> {
    let head = format!("td {tdr:x}\n");
    let at = text.find(&head)? + head.len();
    let rest = &text[at..];
    Some(&rest[..rest.find("td ").unwrap_or(rest.len())])
}

/// One reading of a TD's S-EPT.
#[derive(Clone, Debug, Default)]
pub struct SeptDump {
    /// The case's leaves (the shim's own image left out).
    pub leaves: Vec<SeptLeaf>,
    /// The 1G regions of GPA in which the S-EPT has any entry, a leaf or a table, the image's
    /// included. KVM frees a TD's S-EPT tables only at its teardown, so a region a case used
    /// keeps its tables, and only an untouched region is as a fresh TD's.
    pub used: Gigabytes,
    /// The page each of the case's leaves maps, by GFN and level.
    pub frames: BTreeMap<(u64, Level), u64>,
}

/// The S-EPT leaves of the TD whose TDR is `tdr` (the shim's own image left out).
pub fn sept(tdr: u64) -> Option<Vec<SeptLeaf>> {
    sept_state(tdr).map(|d| d.leaves)
}

/// A TD's S-EPT as the module has it now.
pub fn sept_state(tdr: u64) -> Option<SeptDump> {
    // No S-EPT write since the last reading, no change: the dump of a case with many pages
    // costs milliseconds under the lab's TCG, and most steps (host accesses, guest reads and
    // writes of mapped pages, refused ops, another TD's SEAMCALLs) write no S-EPT entry. The
    // module's `sept_gen` is its global write count at this TD's last write (a flavour without
    // it: the SEAMCALL count, which moves more often).
    type Reading = (u64, u64, Vec<u64>, Option<SeptDump>);
    static LAST: std::sync::Mutex<Option<Reading>> = std::sync::Mutex::new(None);
    dump_only(tdr);
    let count = |f: &str| std::fs::read_to_string(format!("{DIR}/{f}")).ok().and_then(|t| t.trim().parse::<u64>().ok());
    let stamp = count("sept_gen").or_else(|| count("total"));
    let window = WINDOW.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    if let (Some(t), Some((lt, ltdr, lw, r))) = (stamp, last.as_ref()) {
        if t == *lt && tdr == *ltdr && window == *lw {
            return r.clone();
        }
    }
    let r = read_sept(tdr);
    *last = stamp.map(|t| (t, tdr, window, r.clone()));
    r
}

/// The dump of `tdr` (which [`sept_state`] has the dumps list).
fn read_sept(tdr: u64) -> Option<SeptDump> {
    let text = std::fs::read_to_string(format!("{DIR}/sept")).ok()?;
    let mut d = SeptDump {
        used: [
            BOOT_GPA >> 30,
            (BOOT_GPA + BOOT_SIZE - 1) >> 30,
            HARNESS_GPA >> 30,
            (HARNESS_GPA + HARNESS_SIZE - 1) >> 30,
        ]
        .into(),
        ..Default::default()
    };
    for line in section(&text, tdr)?.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        let [gpa, level, state, pa] = w[..] else { continue };
        let gpa = u64::from_str_radix(gpa, 16).ok()?;
        d.used.insert(gpa >> 30);
        let level = *Level::ALL.get(level.parse::<usize>().ok()?)?;
        let state = u8::from_str_radix(state, 16).ok()?;
        let state = SeptState::ALL.iter().copied().find(|s| s.value() == state)?;
        if state.is_leaf() && !image(gpa) {
            d.leaves.push((gpa >> 12, level, state));
            d.frames.insert((gpa >> 12, level), u64::from_str_radix(pa, 16).ok()? >> 12);
        }
    }
    Some(d)
}

/// Where KVM's mirror root and the module's S-EPT disagree: the first (GFN, level) at which one
/// has a leaf the other has not, or the two map different pages. The mirror is the kernel's
/// mapping view (tracefs) at the GFNs the case made private (`private`: the trace names a
/// shared-root leaf by the same GFN, and KVM zaps one side before it maps the other), the
/// shim's image left out.
pub fn mirror_mismatch(
    view: &mut super::trace::TraceView,
    dump: &SeptDump,
    sides: &Sides,
    checks: &mut u64,
) -> Option<MirrorMismatch> {
    view.drain();
    let leaves = view.leaves(crate::seq::TD_SHARED_BIT >> 12)?;
    let mirror: BTreeMap<(u64, Level), Option<u64>> = leaves
        .iter()
        .filter(|l| !image(l.gfn << 12) && sides.private.contains(l.gfn))
        .map(|l| ((l.gfn, l.level), view.pfn(l)))
        .collect();
    *checks += mirror.len().max(dump.frames.len()).max(1) as u64;
    // A GFN a concurrent group converted is left out on both sides until it settles.
    let settled = |k: &(u64, Level)| !sides.unsettled.contains(k.0);
    let first = mirror.keys().chain(dump.frames.keys()).copied().filter(settled).filter(|k| {
        let (m, s) = (mirror.get(k), dump.frames.get(k));
        m.is_none() || s.is_none() || m.copied().flatten() != s.copied()
    });
    let (gfn, level) = first.min()?;
    Some(MirrorMismatch {
        gfn,
        level,
        kernel: mirror.get(&(gfn, level)).map(|p| p.unwrap_or(0)),
        module: dump.frames.get(&(gfn, level)).copied(),
    })
}

/// Which GFNs a TD's case left private, as its conversions went: the kernel's mapping view
/// names a leaf by its GFN without the shared bit, and only a private GFN's leaf is a mirror
/// leaf. A concurrent group's conversions leave theirs unsettled (which landed last is the race
/// oracle's to say) until a later conversion settles them.
#[derive(Clone, Debug, Default)]
pub struct Sides {
    pub private: crate::model::ranges::RangeSet,
    pub unsettled: crate::model::ranges::RangeSet,
}

impl Sides {
    /// A conversion of `[addr, addr + size)` that went through, on its own.
    pub fn convert(&mut self, addr: u64, size: u64, private: bool) {
        let (s, e) = (addr >> 12, addr.saturating_add(size).div_ceil(crate::seq::PAGE));
        self.private.set(s, e, private);
        self.unsettled.remove(s, e);
    }

    /// A conversion of `[addr, addr + size)` in a concurrent group.
    pub fn race(&mut self, addr: u64, size: u64) {
        let (s, e) = (addr >> 12, addr.saturating_add(size).div_ceil(crate::seq::PAGE));
        self.private.remove(s, e);
        self.unsettled.insert(s, e);
    }
}

/// `inject seamcall-busy`: the next S-EPT SEAMCALL returns TDX_OPERAND_BUSY.
pub fn inject_sept_busy() -> Result<(), String> {
    std::fs::write(format!("{DIR}/inject"), "S-EPT busy 1").map_err(|e| format!("{DIR}/inject: {e}"))
}

/// Present leaves (GPA, level) of a shared EPT, and the gigabytes holding an MMIO SPTE.
pub type SharedLeft = (Vec<(u64, usize)>, Gigabytes);
/// 1G regions of GPA, by index (GPA >> 30).
pub type Gigabytes = std::collections::BTreeSet<u64>;

/// What KVM's shared EPT of the TD holds beyond the shim's image, as the module reads it: the
/// present leaves (GPA, level), and the 1G regions (by index, shared bit cleared) that hold an
/// MMIO SPTE. A TD reset between cases must leave no leaf. MMIO SPTEs stay: slot deletions do
/// not zap them (they are not present), and a TD's guest takes #VE on one instead of exiting,
/// so KVM never replaces it; a later case must not meet one where a fresh TD would exit.
pub fn shared_left(tdr: u64) -> Option<SharedLeft> {
    dump_only(tdr);
    let text = std::fs::read_to_string(format!("{DIR}/shared")).ok()?;
    let (mut leaves, mut mmio) = (Vec::new(), std::collections::BTreeSet::new());
    for line in section(&text, tdr)?.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        let [gpa, level, kind] = w[..] else { continue };
        let gpa = u64::from_str_radix(gpa, 16).ok()?;
        let level: usize = level.parse().ok()?;
        match kind {
            _ if image(gpa) => {}
            "leaf" => leaves.push((gpa, level)),
            "mmio" => {
                let end = (gpa & !crate::seq::TD_SHARED_BIT) + (4096u64 << (9 * level));
                mmio.extend(((gpa & !crate::seq::TD_SHARED_BIT) >> 30)..end.div_ceil(1 << 30));
            }
            _ => return None,
        }
    }
    Some((leaves, mmio))
}

/// Nothing injected left over for the next case: `inject seamcall-busy` that no S-EPT leaf took.
pub fn clear_injections() -> Result<(), String> {
    std::fs::write(format!("{DIR}/inject"), "S-EPT busy 0").map_err(|e| format!("{DIR}/inject: {e}"))
}

/// How long (µs) a vCPU's guest runs on after its batch with the module's lock let go, while a
/// concurrent group runs: long enough under TCG for the group's host ops to meet it inside.
pub const GROUP_RUN_ON_US: u32 = 2000;

/// Set the module's `run_on` (0: VP.ENTER under the module's lock throughout). A flavour
/// without it runs groups with no vCPU inside during host SEAMCALLs, and says so by `Err`.
pub fn run_on(us: u32) -> Result<(), String> {
    std::fs::write(format!("{DIR}/run_on"), us.to_string()).map_err(|e| format!("{DIR}/run_on: {e}"))
}

/// What vCPUs inside a TD met since boot (`contention`): `(name, count)` in the module's order.
pub fn contention() -> Option<Vec<(String, u64)>> {
    let text = std::fs::read_to_string(format!("{DIR}/contention")).ok()?;
    let words: Vec<&str> = text.split_whitespace().collect();
    words.chunks(2).map(|w| Some((w.first()?.to_string(), w.get(1)?.parse().ok()?))).collect()
}
