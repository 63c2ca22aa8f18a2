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
    *PRESENT.get_or_init(|| std::path::Path::new(DIR).join("sept").exists())
}

/// The case's S-EPT leaves (the shim's own image left out): the last TD the module lists,
/// which during a case is its only one.
pub fn sept() -> Option<Vec<SeptLeaf>> {
    let text = std::fs::read_to_string(format!("{DIR}/sept")).ok()?;
    let last = text.rsplit("td ").next()?;
    let image = |gpa: u64| {
        (HARNESS_GPA..HARNESS_GPA + HARNESS_SIZE).contains(&gpa) || (BOOT_GPA..BOOT_GPA + BOOT_SIZE).contains(&gpa)
    };
    let mut v = Vec::new();
    for line in last.lines().skip(1) {
        let w: Vec<&str> = line.split_whitespace().collect();
        let [gpa, level, state, _pa] = w[..] else { continue };
        let gpa = u64::from_str_radix(gpa, 16).ok()?;
        let level = *Level::ALL.get(level.parse::<usize>().ok()?)?;
        let state = u8::from_str_radix(state, 16).ok()?;
        let state = SeptState::ALL.iter().copied().find(|s| s.value() == state)?;
        if state.is_leaf() && !image(gpa) {
            v.push((gpa >> 12, level, state));
        }
    }
    Some(v)
}

/// `inject seamcall-busy`: the next S-EPT SEAMCALL returns TDX_OPERAND_BUSY.
pub fn inject_sept_busy() -> Result<(), String> {
    std::fs::write(format!("{DIR}/inject"), "S-EPT busy 1").map_err(|e| format!("{DIR}/inject: {e}"))
}
