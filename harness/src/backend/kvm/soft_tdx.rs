//! The lab's software TDX module from inside the lab VM, through its debugfs
//! (`/sys/kernel/debug/tdx_soft/`, `ci/lab/tdx/module/soft.c`): the S-EPT after every step,
//! and fault injection. Present only on the `--tdx` flavour booted with `tdx_soft`.

use crate::backend::SeptLeaf;
use crate::seq::{Level, SeptState};
use privmem_guest::abi::{BOOT_GPA, BOOT_SIZE, HARNESS_GPA, HARNESS_SIZE};

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
pub fn tds() -> Option<Gigabytes> {
    let text = std::fs::read_to_string(format!("{DIR}/sept")).ok()?;
    text.lines().filter_map(|l| l.strip_prefix("td ")).map(|t| u64::from_str_radix(t.trim(), 16).ok()).collect()
}

/// The lines of one TD's part of a dump (after its `td TDR` line).
fn section(text: &str, tdr: u64) -> Option<&str> {
    let head = format!("td {tdr:x}\n");
    let at = text.find(&head)? + head.len();
    let rest = &text[at..];
    Some(&rest[..rest.find("td ").unwrap_or(rest.len())])
}

/// The S-EPT leaves of the TD whose TDR is `tdr` (the shim's own image left out).
pub fn sept(tdr: u64) -> Option<Vec<SeptLeaf>> {
    sept_state(tdr).map(|(leaves, _)| leaves)
}

/// A TD's S-EPT leaves (as [`sept`]), and the 1G regions of GPA (by index: GPA >> 30) in which
/// its S-EPT has any entry, a leaf or a table, the image's included. KVM frees a TD's S-EPT
/// tables only at its teardown, so a region a case used keeps its tables, and only an
/// untouched region is as a fresh TD's.
pub fn sept_state(tdr: u64) -> Option<(Vec<SeptLeaf>, Gigabytes)> {
    // No SEAMCALL since the last reading, no change: the dump of a case with many pages costs
    // milliseconds under the lab's TCG, and most steps (host accesses, guest reads of mapped
    // pages, refused ops) make no SEAMCALL at all.
    type Reading = (u64, u64, Option<(Vec<SeptLeaf>, Gigabytes)>);
    static LAST: std::sync::Mutex<Option<Reading>> = std::sync::Mutex::new(None);
    let total = std::fs::read_to_string(format!("{DIR}/total")).ok().and_then(|t| t.trim().parse::<u64>().ok());
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    if let (Some(t), Some((lt, ltdr, r))) = (total, last.as_ref()) {
        if t == *lt && tdr == *ltdr {
            return r.clone();
        }
    }
    let r = read_sept(tdr);
    *last = total.map(|t| (t, tdr, r.clone()));
    r
}

fn read_sept(tdr: u64) -> Option<(Vec<SeptLeaf>, Gigabytes)> {
    let text = std::fs::read_to_string(format!("{DIR}/sept")).ok()?;
    let mut v = Vec::new();
    let mut used: Gigabytes =
        [BOOT_GPA >> 30, (BOOT_GPA + BOOT_SIZE - 1) >> 30, HARNESS_GPA >> 30, (HARNESS_GPA + HARNESS_SIZE - 1) >> 30]
            .into();
    for line in section(&text, tdr)?.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        let [gpa, level, state, _pa] = w[..] else { continue };
        let gpa = u64::from_str_radix(gpa, 16).ok()?;
        used.insert(gpa >> 30);
        let level = *Level::ALL.get(level.parse::<usize>().ok()?)?;
        let state = u8::from_str_radix(state, 16).ok()?;
        let state = SeptState::ALL.iter().copied().find(|s| s.value() == state)?;
        if state.is_leaf() && !image(gpa) {
            v.push((gpa >> 12, level, state));
        }
    }
    Some((v, used))
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
