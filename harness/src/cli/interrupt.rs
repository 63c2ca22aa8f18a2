//! Ctrl-C during a campaign: the first SIGINT asks the campaign to stop after the case it is
//! running (its findings are already on disk), so that it still prints its summary, its JSON
//! record and its JUnit file, and exits 130; a second one ends privmem at once.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    REQUESTED.store(true, Ordering::Relaxed);
    // SAFETY: signal() is async-signal-safe; the next SIGINT takes the default action.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
    }
}

/// Catch SIGINT from now on.
pub fn catch() {
    let handler: extern "C" fn(libc::c_int) = on_sigint;
    // SAFETY: the handler only stores to an atomic and resets the disposition.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
    }
}

/// Whether SIGINT came since [`catch`].
pub fn requested() -> bool {
    REQUESTED.load(Ordering::Relaxed)
}

/// The exit status of a campaign that SIGINT stopped (128 + SIGINT, as a shell reports it).
pub const EXIT: i32 = 130;
