//! The wire: every line privmem prints with `--json`, and every line that crosses the lab's
//! results port, as one serde-tagged enum. The writer and every reader (the lab's host side
//! reading what runs in the lab VM, `bench` reading `lab`, `lab --baseline` reading `replay`,
//! the tests) go through [`Line`], so a record cannot be written one way and read another.
//!
//! Each line is one JSON object whose `type` names the variant, with `format` ([`FORMAT`]).
//! Readers ignore fields they do not know, and a line of a `type` they do not know reads as
//! [`Line::Unknown`], so a newer writer does not break an older reader.

use crate::backend::caps::Caps;
use crate::lab::plan::JobKind;
use crate::lab::profile::ProfileRecord;
use crate::lab::record::LabRecord;
use crate::oracle::progress::StuckCase;
use crate::report::records::{
    BaselineRecord, CorpusExport, CoverageRecord, ExecRecord, FindingEvent, FuzzSummary, KvmBench, LabBench,
    LabTdxBench, Made, ModelBench, ScenarioResult, ShrinkRecord,
};
use serde::{Deserialize, Serialize};

/// Bumped when a line changes incompatibly. 2: one tagged enum (no `event` key), kernel PCs as
/// numbers, real outcomes typed, the lab's own lines (`lab.job`, `lab.done`, `lab.stuck`).
pub const FORMAT: u64 = 2;

/// One line of privmem's machine-readable output.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Line {
    /// What the host (or the lab kernel) offers: `privmem caps --json`, each lab VM's first line.
    #[serde(rename = "caps")]
    Caps(Caps),
    /// One scenario's result (`replay --json`, the lab's corpus).
    #[serde(rename = "replay")]
    Replay(ScenarioResult),
    /// A finding of a campaign, when it arrives.
    #[serde(rename = "fuzz.finding")]
    Finding(Box<FindingEvent>),
    /// The end of a campaign.
    #[serde(rename = "fuzz.summary")]
    Summary(FuzzSummary),
    /// A program `privmem exec` ran, and how it ended.
    #[serde(rename = "exec")]
    Exec(ExecRecord),
    /// The kernel PCs a command reached.
    #[serde(rename = "coverage")]
    Coverage(CoverageRecord),
    /// A campaign's cpu-clock samples (`--profile`).
    #[serde(rename = "profile")]
    Profile(ProfileRecord),
    /// The lab VM finished one job of its plan, with that job's exit status.
    #[serde(rename = "lab.job")]
    JobDone { job: JobKind, rc: i32 },
    /// The lab VM finished its plan; the worst exit status of its jobs, and whether they were
    /// stopped early because the plan's deadline neared.
    #[serde(rename = "lab.done")]
    LabDone {
        rc: i32,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        stopped: bool,
        /// The software TDX module's contention counters at the end (`--tdx`): what vCPUs
        /// inside a TD met, by name.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tdx_module: Vec<(String, u64)>,
    },
    /// A case has been running for long: the lab VM's watchdog says which, once per case.
    #[serde(rename = "lab.stuck")]
    Stuck(StuckCase),
    /// `privmem lab`'s summary.
    #[serde(rename = "lab")]
    Lab(Box<LabRecord>),
    #[serde(rename = "lab.baseline")]
    Baseline(BaselineRecord),
    #[serde(rename = "bench")]
    ModelBench(ModelBench),
    #[serde(rename = "bench.kvm")]
    KvmBench(KvmBench),
    #[serde(rename = "bench.lab")]
    LabBench(LabBench),
    #[serde(rename = "bench.lab.tdx")]
    LabTdxBench(LabTdxBench),
    #[serde(rename = "shrink")]
    Shrink(ShrinkRecord),
    #[serde(rename = "corpus.export")]
    CorpusExport(CorpusExport),
    /// What a command that makes one thing of each input made (print, export, coverage, ...).
    #[serde(rename = "made")]
    Made(Made),
    /// A line of a `type` this privmem does not know (a newer writer's).
    #[serde(other)]
    Unknown,
}

impl Line {
    /// The line as JSON text, with its `format`.
    pub fn json(&self) -> String {
        let mut v = serde_json::to_value(self).expect("wire lines are plain data");
        if let Some(o) = v.as_object_mut() {
            o.insert("format".into(), FORMAT.into());
        }
        v.to_string()
    }

    /// Print the line on standard output, as one line.
    pub fn print(&self) {
        println!("{}", self.json());
    }

    /// A line of output: None where it is no JSON object (console text), an error where it is
    /// one that does not read as the line its `type` names.
    pub fn parse(text: &str) -> Option<Result<Line, String>> {
        let t = text.trim();
        if !t.starts_with('{') {
            return None;
        }
        Some(serde_json::from_str::<Line>(t).map_err(|e| {
            let ty = serde_json::from_str::<serde_json::Value>(t)
                .ok()
                .and_then(|v| v.get("type").and_then(|x| x.as_str()).map(String::from));
            match ty {
                Some(ty) => format!("a `{ty}` line that does not read: {e}"),
                None => format!("a JSON line that is no privmem line: {e}"),
            }
        }))
    }
}

macro_rules! from_record {
    ($($t:ty => $v:ident $(boxed $b:tt)?),* $(,)?) => {$(
        impl From<$t> for Line {
            fn from(r: $t) -> Line {
                Line::$v(from_record!(@wrap r $($b)?))
            }
        }
    )*};
    (@wrap $r:ident) => { $r };
    (@wrap $r:ident box) => { Box::new($r) };
}

from_record! {
    Caps => Caps,
    ScenarioResult => Replay,
    FindingEvent => Finding boxed box,
    FuzzSummary => Summary,
    ExecRecord => Exec,
    CoverageRecord => Coverage,
    ProfileRecord => Profile,
    StuckCase => Stuck,
    LabRecord => Lab boxed box,
    BaselineRecord => Baseline,
    ModelBench => ModelBench,
    KvmBench => KvmBench,
    LabBench => LabBench,
    LabTdxBench => LabTdxBench,
    ShrinkRecord => Shrink,
    CorpusExport => CorpusExport,
    Made => Made,
}

/// Print a record as its wire line.
pub fn print(r: impl Into<Line>) {
    r.into().print();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oracle::{Finding, FindingKind};

    fn finding() -> Finding {
        Finding {
            kind: FindingKind::Divergence,
            step: Some(2),
            op: Some(crate::seq::OpKind::Private),
            state: "ok/err EINVAL".into(),
            detail: "step 3: the model allows ok".into(),
            context: "sw-protected".into(),
        }
    }

    #[test]
    fn a_line_reads_back_as_written() {
        let r =
            ScenarioResult { steps: Some(5), mapping_checks: Some(9), ..ScenarioResult::ran("a.seq", vec![finding()]) };
        let text = Line::from(r).json();
        // Step numbers are 1-based where a person reads them, 0-based inside.
        assert!(text.contains("\"step\":3") && text.contains("\"type\":\"replay\""), "{text}");
        assert!(text.contains(&format!("\"format\":{FORMAT}")), "{text}");
        let Some(Ok(Line::Replay(back))) = Line::parse(&text) else { panic!("{text}") };
        assert_eq!(back.findings, vec![finding()]);
        assert_eq!((back.steps, back.signatures.len()), (Some(5), 1));
        let job = Line::JobDone { job: JobKind::Fuzz, rc: 1 }.json();
        assert!(matches!(Line::parse(&job), Some(Ok(Line::JobDone { job: JobKind::Fuzz, rc: 1 }))), "{job}");
    }

    #[test]
    fn console_text_unknown_types_and_broken_lines_are_told_apart() {
        assert!(Line::parse("[    1.2] kvm: loaded").is_none());
        let newer = r#"{"type":"fuzz.progress","cases":3,"format":9}"#;
        assert!(matches!(Line::parse(newer), Some(Ok(Line::Unknown))));
        let broken = Line::parse(r#"{"type":"replay","file":7}"#).unwrap().unwrap_err();
        assert!(broken.contains("`replay` line"), "{broken}");
        assert!(Line::parse(r#"{"type":"lab.done","rc":0"#).unwrap().is_err(), "a cut line is an error");
    }

    #[test]
    fn kernel_pcs_travel_as_numbers() {
        let c = CoverageRecord { source: "fuzz".into(), pcs: vec![0xffff_ffff_8123_4567] };
        let text = Line::from(c).json();
        assert!(text.contains("18446744071581156711"), "{text}");
        let Some(Ok(Line::Coverage(back))) = Line::parse(&text) else { panic!("{text}") };
        assert_eq!(back.pcs, vec![0xffff_ffff_8123_4567]);
    }

    #[test]
    fn the_lab_record_gives_the_rate_bench_reads() {
        let f = |cases, skipped, seconds| FuzzSummary { cases, skipped, seconds, ..Default::default() };
        let r = LabRecord { fuzz: vec![f(100, 10, 3.0), f(80, 0, 4.0)], ..Default::default() };
        let Some(Ok(Line::Lab(back))) = Line::parse(&Line::from(r).json()) else { panic!() };
        assert_eq!(back.fuzz_rate(), (170.0 / 4.0, 170));
    }
}
