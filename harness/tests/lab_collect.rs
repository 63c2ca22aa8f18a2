//! The lab's collector offline, on consoles recorded from real lab VMs
//! (`PRIVMEM_LAB_RECORD=DIR privmem lab ...`: a port letter, C for the console and R for the
//! results port, then the line): what `privmem lab` makes of a finished VM, of one stopped near
//! its deadline, and of one killed mid-campaign.

use privmem::lab::collect::{Collector, LabOutcome, VmOutcome};
use privmem::lab::{Ended, Flow, Port};
use std::path::Path;

fn recorded(name: &str) -> Vec<(Port, String)> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/lab").join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    text.lines()
        .filter_map(|l| match l.split_at_checked(2) {
            Some(("C ", rest)) => Some((Port::Console, rest.to_string())),
            Some(("R ", rest)) => Some((Port::Results, rest.to_string())),
            _ => None,
        })
        .collect()
}

/// Feed the first `upto` lines, as the boot loop does: stop at the done line.
fn collect(lines: &[(Port, String)], upto: usize, ended: Ended) -> (VmOutcome, bool) {
    let mut c = Collector::new(Vec::new());
    let mut done = false;
    for (port, l) in &lines[..upto] {
        if c.feed(*port, l).1 == Flow::Done {
            done = true;
            break;
        }
    }
    (c.finish(ended), done)
}

#[test]
fn a_finished_lab_vm_reads_whole() {
    let lines = recorded("6.12.118-corpus-and-fuzz.console");
    let (vm, done) = collect(&lines, lines.len(), Ended::Done);
    assert!(done, "the recording ends with lab.done");
    assert_eq!(vm.problem(), None);
    assert!(vm.c.unreadable.is_empty(), "{:?}", vm.c.unreadable);
    let caps = vm.c.seen.caps.as_ref().expect("the caps line");
    assert!(caps.release.starts_with("6.12.118"), "{}", caps.release);
    assert!(!vm.c.seen.results.is_empty() && vm.c.seen.summaries.len() == 1, "results and a campaign summary");
    assert_eq!(vm.c.jobs.iter().map(|(j, _)| j.name()).collect::<Vec<_>>(), ["caps", "replay", "fuzz"]);
    let o = LabOutcome::of(&[vm]);
    assert_eq!((o.failed, o.completed, o.setup_failed.as_deref()), (0, 1, None));
    assert!(
        o.passed > 0 && o.mapping_checks > 0 && o.fuzz_cases() > 0,
        "{} {} {}",
        o.passed,
        o.mapping_checks,
        o.fuzz_cases()
    );
    // The console's tail is kept for messages, and it is the kernel's.
    assert!(o.problems.is_empty());
}

#[test]
fn a_lab_vm_killed_mid_campaign_keeps_what_it_printed() {
    let lines = recorded("6.12.118-corpus-and-fuzz.console");
    // Cut just after the corpus: the campaign was running when the VM was killed.
    let replay_done = lines
        .iter()
        .position(|(p, l)| *p == Port::Results && l.contains("\"lab.job\"") && l.contains("\"replay\""))
        .expect("the replay job's end");
    let (whole, _) = collect(&lines, lines.len(), Ended::Done);
    let (cut, done) = collect(&lines, replay_done + 1, Ended::TimedOut { limit_secs: 300, qemu: String::new() });
    assert!(!done);
    assert_eq!(cut.c.seen.results.len(), whole.c.seen.results.len(), "every scenario result before the cut is kept");
    assert!(cut.c.seen.summaries.is_empty(), "no campaign summary came");
    let p = cut.problem().expect("a VM out of time is a problem");
    assert!(p.contains("did not finish within 300s"), "{p}");
    assert_eq!(cut.hang(), None, "no case was named: no hang finding, the lab says it ran out of time");
}

#[test]
fn a_lab_vm_stopped_near_its_deadline_says_so_and_keeps_its_summary() {
    let lines = recorded("6.12.118-stopped-early.console");
    let (vm, done) = collect(&lines, lines.len(), Ended::Done);
    assert!(done && vm.c.stopped, "lab.done says the jobs were stopped");
    let s = vm.c.seen.summaries.first().expect("the stopped campaign's summary");
    assert!(s.stopped_early && s.cases > 0, "{s:?}");
    let p = vm.problem().expect("stopping early is reported");
    assert!(p.contains("ran out of time") && p.contains(&format!("{} fuzz cases ran", s.cases)), "{p}");
}
