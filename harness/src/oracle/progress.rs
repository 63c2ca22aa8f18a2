//! The case in progress, for the lab VM's watchdog: a case that runs for long, or still runs
//! when the lab's time is nearly up, is named on the results port (`lab.stuck`), so that a lab
//! that runs out of time says which case hung it (a hang is a finding). Off unless armed (the
//! lab's PID 1 arms it): outside the lab, a case costs nothing here.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// A case that has been running for long, as the lab VM's watchdog reports it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StuckCase {
    /// The job running it (`replay`, `fuzz`) and the case's number in that job.
    pub command: String,
    pub case: u64,
    /// The case's text.
    pub sequence: String,
    pub seconds: u64,
}

struct Running {
    case: u64,
    /// Printed only if the case is named: a case costs a clone, not a print.
    sequence: crate::seq::Sequence,
    since: Instant,
    reported: bool,
}

static ARMED: AtomicBool = AtomicBool::new(false);
static STOP: AtomicBool = AtomicBool::new(false);
static CASES: AtomicU64 = AtomicU64::new(0);
static CURRENT: Mutex<Option<Running>> = Mutex::new(None);
static COMMAND: Mutex<String> = Mutex::new(String::new());

/// Start keeping the case in progress (the lab's PID 1).
pub fn arm() {
    ARMED.store(true, Ordering::SeqCst);
}

/// The job that runs the next cases.
pub fn job(command: &str) {
    *COMMAND.lock().unwrap_or_else(|e| e.into_inner()) = command.to_string();
    CASES.store(0, Ordering::SeqCst);
}

/// Ask the running job to stop after its case in progress (the lab's time is nearly up: a
/// campaign ends with its summary rather than be killed without one).
pub fn stop() {
    STOP.store(true, Ordering::SeqCst);
}

/// Whether the running job should stop after its case in progress.
pub fn stopping() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Until dropped, `seq` is the case in progress.
pub struct Guard(bool);

pub fn running(seq: &crate::seq::Sequence) -> Guard {
    if !ARMED.load(Ordering::Relaxed) {
        return Guard(false);
    }
    let case = CASES.fetch_add(1, Ordering::SeqCst) + 1;
    let r = Running { case, sequence: seq.clone(), since: Instant::now(), reported: false };
    *CURRENT.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
    Guard(true)
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.0 {
            *CURRENT.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }
}

/// The case in progress if it has run for `after` seconds or more (or `now` is set: the lab's
/// time is nearly up) and was not reported yet; reported once.
pub fn overdue(after: u64, now: bool) -> Option<StuckCase> {
    let mut cur = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
    let r = cur.as_mut()?;
    let seconds = r.since.elapsed().as_secs();
    if r.reported || !(now || seconds >= after) {
        return None;
    }
    r.reported = true;
    let command = COMMAND.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Some(StuckCase { command, case: r.case, sequence: crate::seq::text::print(&r.sequence), seconds })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_case_is_named_once_when_overdue_and_forgotten_when_done() {
        let seq = crate::seq::text::parse("t", "vm default\nslot 0 gpa=0x100000000 size=2M\n").unwrap();
        assert!(!running(&seq).0, "off unless armed");
        arm();
        job("fuzz");
        let g = running(&seq);
        assert_eq!(overdue(3600, false), None, "not overdue yet");
        let s = overdue(3600, true).expect("the lab's time is up: named");
        assert_eq!((s.command.as_str(), s.case), ("fuzz", 1));
        assert!(s.sequence.contains("slot 0"), "{}", s.sequence);
        assert_eq!(overdue(0, true), None, "named once");
        drop(g);
        assert_eq!(overdue(0, true), None, "no case in progress");
    }
}
