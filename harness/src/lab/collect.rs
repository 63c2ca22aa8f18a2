//! The lab's host side, pure: each lab VM's lines (console and results port) in, one
//! [`VmOutcome`] per VM and one [`LabOutcome`] for the lab out. `privmem lab`, `lab --baseline`
//! and `lab --exec` all read their VMs through it; it runs offline on recorded consoles
//! (`tests/lab_collect.rs`). Nothing here prints or writes: the caller acts on each line as it
//! arrives (a finding is written then, not at the end) and on the outcome.

use super::plan::JobKind;
use super::profile::ProfileRecord;
use super::{Ended, Flow, Port};
use crate::backend::caps::Caps;
use crate::oracle::progress::StuckCase;
use crate::report::records::{ExecRecord, FindingEvent, FuzzSummary, ScenarioResult, Verdict};
use crate::wire::Line;
use std::collections::{BTreeSet, VecDeque};

/// Console lines kept per VM, for the messages that show why a VM stopped.
const CONSOLE_TAIL: usize = 60;

/// What lab VMs reported: one VM's, or every VM's summed.
#[derive(Debug, Default)]
pub struct Seen {
    pub caps: Option<Caps>,
    pub results: Vec<ScenarioResult>,
    pub findings: Vec<FindingEvent>,
    pub summaries: Vec<FuzzSummary>,
    pub profiles: Vec<ProfileRecord>,
    pub pcs: BTreeSet<u64>,
}

impl Seen {
    /// Add another VM's: the first caps stand (every VM runs the same kernel).
    fn absorb(&mut self, o: &Seen) {
        if self.caps.is_none() {
            self.caps = o.caps.clone();
        }
        self.results.extend(o.results.iter().cloned());
        self.findings.extend(o.findings.iter().cloned());
        self.summaries.extend(o.summaries.iter().cloned());
        self.profiles.extend(o.profiles.iter().cloned());
        self.pcs.extend(o.pcs.iter().copied());
    }
}

/// One lab VM's lines, as they arrive.
#[derive(Debug, Default)]
pub struct Collector {
    /// The files' names in the initramfs and as the user named them.
    names: Vec<(String, String)>,
    console: VecDeque<String>,
    pub seen: Seen,
    /// Each finished job and its exit status.
    pub jobs: Vec<(JobKind, i32)>,
    /// The plan's end, with the worst exit status.
    pub done: Option<i32>,
    /// The plan's jobs were stopped early: its deadline neared.
    pub stopped: bool,
    /// The software TDX module's contention counters at the plan's end (`--tdx`).
    pub tdx_module: Vec<(String, u64)>,
    /// The last case the VM's watchdog named (still running for long, or when time ran out).
    pub stuck: Option<StuckCase>,
    /// Results-port lines that did not read.
    pub unreadable: Vec<String>,
}

impl Collector {
    /// A collector that shows result files by the names the user gave (`names`: initramfs
    /// name, shown name).
    pub fn new(names: Vec<(String, String)>) -> Collector {
        Collector { names, ..Default::default() }
    }

    fn shown(&self, file: &str) -> String {
        let name = file.rsplit('/').next().unwrap_or(file);
        self.names.iter().find(|(n, _)| n == name).map(|(_, s)| s.clone()).unwrap_or(file.to_string())
    }

    /// Take one line; the line as read (None: console text, or a line that did not read) and
    /// whether the VM is done.
    pub fn feed(&mut self, port: Port, text: &str) -> (Option<Line>, Flow) {
        if port == Port::Console {
            if self.console.len() == CONSOLE_TAIL {
                self.console.pop_front();
            }
            self.console.push_back(text.to_string());
            return (None, Flow::Continue);
        }
        let line = match Line::parse(text) {
            None => return (None, Flow::Continue),
            Some(Err(e)) => {
                self.unreadable.push(e);
                return (None, Flow::Continue);
            }
            Some(Ok(l)) => l,
        };
        let mut flow = Flow::Continue;
        match &line {
            Line::Caps(c) => self.seen.caps = Some(c.clone()),
            Line::Replay(r) => {
                let mut r = r.clone();
                r.file = self.shown(&r.file);
                self.seen.results.push(r);
            }
            Line::Exec(e) => {
                let r = exec_result(e, &self.shown(&e.file));
                self.seen.results.push(r);
            }
            Line::Finding(f) => self.seen.findings.push((**f).clone()),
            Line::Summary(s) => self.seen.summaries.push(s.clone()),
            Line::Coverage(c) => self.seen.pcs.extend(c.pcs.iter().copied()),
            Line::Profile(p) => self.seen.profiles.push(p.clone()),
            Line::JobDone { job, rc } => self.jobs.push((*job, *rc)),
            Line::Stuck(s) => self.stuck = Some(s.clone()),
            Line::LabDone { rc, stopped, tdx_module } => {
                self.done = Some(*rc);
                self.stopped = *stopped;
                self.tdx_module = tdx_module.clone();
                flow = Flow::Done;
            }
            // Lines of the commands the lab does not run there, and newer writers' lines.
            Line::Lab(_)
            | Line::Baseline(_)
            | Line::ModelBench(_)
            | Line::KvmBench(_)
            | Line::LabBench(_)
            | Line::LabTdxBench(_)
            | Line::Shrink(_)
            | Line::CorpusExport(_)
            | Line::Made(_)
            | Line::Unknown => {}
        }
        (Some(line), flow)
    }

    /// The VM's outcome, once its boot ended.
    pub fn finish(mut self, ended: Ended) -> VmOutcome {
        let console = std::mem::take(&mut self.console).into_iter().collect();
        VmOutcome { console, ended, c: self }
    }
}

/// A program `privmem exec` ran, as a scenario's result: exit 0 passed, 4 skipped (kselftest's
/// KSFT_SKIP), anything else failed with its output.
fn exec_result(e: &ExecRecord, shown: &str) -> ScenarioResult {
    match e.exit {
        Some(0) => ScenarioResult::ran(shown, vec![]),
        Some(4) => ScenarioResult::skip(shown, "the program skipped (exit 4)"),
        _ => ScenarioResult::failed(shown, &e.output),
    }
}

/// One lab VM, after its boot.
#[derive(Debug)]
pub struct VmOutcome {
    pub c: Collector,
    pub ended: Ended,
    /// The console's last lines.
    pub console: Vec<String>,
}

impl VmOutcome {
    /// A job that could not run: exit 2 (an error) or a panic's 101 (1 is a job's own verdict:
    /// a scenario failed, or findings).
    pub fn failed_job(&self) -> Option<(JobKind, i32)> {
        self.c.jobs.iter().copied().find(|&(_, rc)| rc == 2 || rc >= 100)
    }

    /// The console's last `n` lines, for messages.
    pub fn console_tail(&self, n: usize) -> String {
        self.console[self.console.len().saturating_sub(n)..].join("\n")
    }

    /// What went wrong with this VM, if anything: a job that could not run, a VM that died or
    /// ran out of time (naming the case in progress where its watchdog said).
    pub fn problem(&self) -> Option<String> {
        if let Some((job, rc)) = self.failed_job() {
            return Some(format!("`privmem {}` failed (exit {rc})", job.name()));
        }
        match &self.ended {
            Ended::Done if self.c.stopped => Some(format!(
                "the VM ran out of time: its jobs stopped early ({} fuzz cases ran, {} scenarios); everything they reported is kept",
                self.c.seen.summaries.iter().map(|s| s.cases).sum::<u64>(),
                self.c.seen.results.len()
            )),
            Ended::Done => None,
            Ended::Exited => Some("the VM stopped before its jobs finished (a kernel panic?)".into()),
            Ended::TimedOut { limit_secs, qemu } => Some(format!(
                "the VM did not finish within {limit_secs}s (killed){}{}",
                match &self.c.stuck {
                    Some(s) => format!(
                        "; case {} of `{}` was in progress ({} s when last named)",
                        s.case, s.command, s.seconds
                    ),
                    None => String::new(),
                },
                if qemu.is_empty() { String::new() } else { format!("; qemu: {}", qemu.trim()) }
            )),
        }
    }

    /// The case a VM that ran out of time or died was running, where its watchdog named one: a
    /// hang is a finding of its own.
    pub fn hang(&self) -> Option<&StuckCase> {
        (self.ended != Ended::Done).then_some(self.c.stuck.as_ref()).flatten()
    }
}

/// Every lab VM's outcome, summed: what `privmem lab` reports.
#[derive(Debug, Default)]
pub struct LabOutcome {
    pub seen: Seen,
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    /// VMs that finished their plan with every job run.
    pub completed: usize,
    pub mapping_checks: u64,
    pub mapped_unchecked: u64,
    /// The software TDX module's contention counters, summed over the VMs (`--tdx`).
    pub tdx_module: Vec<(String, u64)>,
    /// Per VM that went wrong: its index, what went wrong, its console's end.
    pub problems: Vec<(usize, String, String)>,
    pub unreadable: Vec<String>,
    /// The first case that could not run at all (a timeout or a set-up error): the lab is
    /// broken, not the kernel.
    pub setup_failed: Option<String>,
}

impl LabOutcome {
    pub fn of(vms: &[VmOutcome]) -> LabOutcome {
        let mut o = LabOutcome::default();
        for (j, vm) in vms.iter().enumerate() {
            o.seen.absorb(&vm.c.seen);
            o.unreadable.extend(vm.c.unreadable.iter().cloned());
            for (name, n) in &vm.c.tdx_module {
                match o.tdx_module.iter_mut().find(|(k, _)| k == name) {
                    Some((_, sum)) => *sum += n,
                    None => o.tdx_module.push((name.clone(), *n)),
                }
            }
            match vm.problem() {
                Some(p) => o.problems.push((j, p, vm.console_tail(30))),
                None => o.completed += 1,
            }
        }
        for r in &o.seen.results {
            o.mapping_checks += r.mapping_checks.unwrap_or(0);
            match r.verdict() {
                Verdict::Passed => o.passed += 1,
                Verdict::Failed => o.failed += 1,
                Verdict::Skipped => o.skipped += 1,
            }
        }
        for s in &o.seen.summaries {
            o.mapping_checks += s.mapping_checks;
            o.mapped_unchecked += s.mapped_unchecked;
        }
        let first = o.seen.results.iter().find(|r| r.verdict() != Verdict::Skipped);
        if first.is_some_and(|r| r.signatures.iter().any(|x| x.starts_with("timeout:") || x.starts_with("setup:"))) {
            o.setup_failed = first.and_then(|r| r.failure_details().into_iter().next()).or(Some("?".into()));
        }
        o
    }

    pub fn fuzz_cases(&self) -> u64 {
        self.seen.summaries.iter().map(|f| f.cases).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(c: &mut Collector, lines: &[(Port, &str)]) -> Flow {
        lines.iter().map(|(p, l)| c.feed(*p, l).1).last().unwrap_or(Flow::Continue)
    }

    #[test]
    fn lines_become_results_and_the_done_line_ends_the_vm() {
        let mut c = Collector::new(vec![("corpus__a.seq".into(), "corpus/a.seq".into())]);
        let r = Line::from(ScenarioResult::ran("/corpus/corpus__a.seq", vec![])).json();
        let flow = feed(
            &mut c,
            &[
                (Port::Console, "[    0.1] Linux version 6.12.118"),
                (Port::Results, &r),
                (Port::Results, r#"{"type":"lab.job","job":"replay","rc":0}"#),
                (Port::Results, r#"{"type":"replay","file":7}"#),
                (Port::Results, r#"{"type":"lab.done","rc":0}"#),
            ],
        );
        assert_eq!(flow, Flow::Done);
        assert_eq!(c.seen.results[0].file, "corpus/a.seq", "shown as the user named it");
        assert_eq!(c.unreadable.len(), 1);
        let vm = c.finish(Ended::Done);
        assert_eq!((vm.problem(), vm.console_tail(5).as_str()), (None, "[    0.1] Linux version 6.12.118"));
        let o = LabOutcome::of(&[vm]);
        assert_eq!((o.passed, o.failed, o.completed), (1, 0, 1));
    }

    #[test]
    fn a_vm_out_of_time_names_the_case_it_was_running() {
        let mut c = Collector::new(vec![]);
        let s = StuckCase { command: "fuzz".into(), case: 41, sequence: "vm default\n".into(), seconds: 75 };
        feed(&mut c, &[(Port::Results, &Line::from(s.clone()).json())]);
        let vm = c.finish(Ended::TimedOut { limit_secs: 300, qemu: String::new() });
        assert_eq!(vm.hang(), Some(&s));
        let p = vm.problem().unwrap();
        assert!(p.contains("within 300s") && p.contains("case 41 of `fuzz`"), "{p}");
        let o = LabOutcome::of(&[vm]);
        assert_eq!((o.completed, o.problems.len()), (0, 1));
    }

    #[test]
    fn a_job_that_could_not_run_is_named_and_a_verdict_is_not() {
        let mut c = Collector::new(vec![]);
        feed(
            &mut c,
            &[
                (Port::Results, r#"{"type":"lab.job","job":"replay","rc":1}"#),
                (Port::Results, r#"{"type":"lab.job","job":"fuzz","rc":2}"#),
                (Port::Results, r#"{"type":"lab.done","rc":2}"#),
            ],
        );
        let vm = c.finish(Ended::Done);
        assert_eq!(vm.failed_job(), Some((JobKind::Fuzz, 2)));
        assert!(vm.problem().unwrap().contains("`privmem fuzz` failed (exit 2)"));
        assert_eq!(vm.hang(), None, "a VM that finished hung nowhere");
    }
}
