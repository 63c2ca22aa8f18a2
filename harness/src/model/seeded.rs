//! Bugs planted in the model on purpose: the harness's own test that a campaign reports a new
//! bug even where documented hazards of the same kind exist. Off unless a test or
//! `privmem fuzz --plant NAME` turns one on; process-wide, so a test that plants one runs in a
//! test binary of its own.

use std::sync::atomic::{AtomicU8, Ordering};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeededBug {
    /// huge-v3's handling of the guest's accept level (the split and inhibit of a 4K ACCEPT
    /// over a 2M leaf) silently skipped: the ACCEPT can then loop forever, as in H6.
    HugeV3SplitIgnored,
}

impl SeededBug {
    pub const ALL: [SeededBug; 1] = [SeededBug::HugeV3SplitIgnored];
    pub fn name(self) -> &'static str {
        match self {
            SeededBug::HugeV3SplitIgnored => "huge-v3-split-ignored",
        }
    }
}

static PLANTED: AtomicU8 = AtomicU8::new(0);

pub fn plant(bug: Option<SeededBug>) {
    PLANTED.store(bug.map(|b| b as u8 + 1).unwrap_or(0), Ordering::Relaxed);
}

pub fn planted() -> Option<SeededBug> {
    match PLANTED.load(Ordering::Relaxed) {
        0 => None,
        n => SeededBug::ALL.get(n as usize - 1).copied(),
    }
}
