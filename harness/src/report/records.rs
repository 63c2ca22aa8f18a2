//! The records privmem prints with `--json` and the lab's VMs send to its host side, one serde
//! struct each. They travel as the variants of [`crate::wire::Line`], which adds each line's
//! `type` and `format`; readers ignore fields they do not know.

use crate::backend::caps::Caps;
use crate::oracle::diff::RealStep;
use crate::oracle::Finding;
use serde::{Deserialize, Serialize};

/// What a command that makes one thing of each input made (`print`, `export`, `coverage`,
/// `argcheck`, `plan`, with `--json`): the input, the file written or the text itself.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Made {
    pub command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// One scenario's result: a replayed `.seq` (on the model, real KVM or the emulated shims) or a
/// program the lab ran. TAP, JUnit and the lab's host side read it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ScenarioResult {
    pub file: String,
    /// Whether every expectation held; absent where the scenario did not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
    /// Why it did not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Input that could not be read, or what a failed program printed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    /// GFN comparisons the kernel's mapping view made (real backends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapping_checks: Option<u64>,
    /// Each step's outcome and leaves on the real kernel (`lab --baseline` compares them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub real: Option<Vec<RealStep>>,
    /// The case as the backend made it runnable (`replay --adapt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapted: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<String>,
    /// Run by the TD or SNP shim in emulated mode (not conformance), with its counts.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub emulated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<crate::backend::emulated::Counts>,
}

/// How a scenario ended, as TAP, JUnit and the summaries count it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    Failed,
    Skipped,
}

impl ScenarioResult {
    pub fn ran(file: &str, findings: Vec<Finding>) -> ScenarioResult {
        ScenarioResult {
            file: file.into(),
            ok: Some(findings.is_empty()),
            signatures: findings.iter().map(|f| f.signature()).collect(),
            findings,
            ..Default::default()
        }
    }

    pub fn skip(file: &str, why: &str) -> ScenarioResult {
        ScenarioResult { file: file.into(), skipped: Some(why.into()), ..Default::default() }
    }

    /// A scenario that could not be read, or a program that failed with this output.
    pub fn failed(file: &str, error: &str) -> ScenarioResult {
        ScenarioResult { file: file.into(), ok: Some(false), error: Some(error.into()), ..Default::default() }
    }

    pub fn verdict(&self) -> Verdict {
        match (&self.skipped, self.ok) {
            (Some(_), _) => Verdict::Skipped,
            (None, Some(true)) => Verdict::Passed,
            _ => Verdict::Failed,
        }
    }

    /// What a failure shows: its findings' details, or the error.
    pub fn failure_details(&self) -> Vec<String> {
        let mut d: Vec<String> = self.findings.iter().map(|f| f.detail.clone()).collect();
        d.extend(self.error.clone());
        d
    }
}

/// A signature and how often a campaign hit it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Hits {
    pub signature: String,
    pub hits: u64,
}

/// A finding of a campaign, as `privmem fuzz --json` writes it when it arrives.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FindingEvent {
    pub signature: String,
    pub label: String,
    pub known: bool,
    pub file: String,
    pub sequence: String,
    pub seconds: f64,
    pub detail: String,
    /// The finding itself (kind, step (1-based in JSON), op, state, ...).
    pub finding: Finding,
}

/// A program `privmem exec` ran, and how it ended.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExecRecord {
    pub file: String,
    pub exit: Option<i32>,
    pub output: String,
}

/// The kernel PCs a command reached (KCOV), sorted.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CoverageRecord {
    pub source: String,
    pub pcs: Vec<u64>,
}

/// The end of a `privmem fuzz` campaign (also the `summary` event the lab reads).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FuzzSummary {
    pub backend: String,
    pub seed: u64,
    pub cases: u64,
    pub ops: u64,
    pub seconds: f64,
    /// Cases the host could not run (it lacks a capability).
    pub skipped: u64,
    /// Open file descriptors and RSS at the start and the end, for soak runs.
    pub open_fds: [usize; 2],
    pub rss_kib: [u64; 2],
    pub mapping_checks: u64,
    pub views_lost: u64,
    /// Real backends: time in set-up, steps and reset; per op kind (and `view`); VMs made.
    pub phase_seconds: Vec<f64>,
    pub op_seconds: std::collections::BTreeMap<String, f64>,
    /// The reset's time by part (slots, attributes, view, mmio, rewarm, teardown).
    #[serde(default)]
    pub reset_seconds: std::collections::BTreeMap<String, f64>,
    pub fresh_vms: u64,
    /// Why VMs were not kept for the next case, per reason (those that happened).
    #[serde(default)]
    pub fresh_vm_reasons: std::collections::BTreeMap<String, u64>,
    /// Kernel coverage: PCs reached, cases kept for them, whether they steered generation.
    pub pcs: usize,
    pub corpus: usize,
    pub feedback: bool,
    pub mapped_cases: u64,
    pub mapped_unchecked: u64,
    /// Recorded kernel differences that showed.
    pub known: Vec<String>,
    pub exec_per_sec: f64,
    /// The campaign stopped before its budget: the lab's time was nearly up.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopped_early: bool,
    pub findings: Vec<Hits>,
    pub files: Vec<String>,
}

/// A case whose two kernels' outcomes differ (`lab --baseline`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Difference {
    /// Only one of the two kernels runs the case (or the labs adapted it differently).
    OneSided { case: String, runs_on_one_only: bool, kernel: Option<String>, baseline: Option<String> },
    /// The model, run as each kernel's release, differs at this step, and the two kernels do
    /// not: a rule of the model's kernel table is wrong for one of them (a missed backport).
    Predicted {
        case: String,
        predicted_step: usize,
        op: String,
        /// The model's outcome as each kernel's release.
        model_kernel: String,
        model_baseline: String,
        sequence: String,
    },
    /// The first step where they differ, on each kernel.
    Step {
        case: String,
        step: usize,
        op: String,
        kernel: Option<RealStep>,
        baseline: Option<RealStep>,
        /// Why the difference is expected (the model's kernel rules, corpus/known); None: look.
        explained: Option<String>,
        sequence: String,
    },
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BaselineRecord {
    pub kernel: String,
    pub baseline: String,
    pub cases: usize,
    pub compared: usize,
    pub explained: usize,
    pub unexplained: usize,
    /// Cases where the model's rules predict a difference the two kernels do not show.
    #[serde(default)]
    pub predicted_absent: usize,
    /// The releases the model ran as for each kernel, and any drift (a release past the table).
    #[serde(default)]
    pub model_kernel: Option<String>,
    #[serde(default)]
    pub model_baseline: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<String>,
    pub one_sided: usize,
    pub differences: Vec<Difference>,
}

/// `privmem bench`: the model's throughput and the cost of a range op.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ModelBench {
    pub model_ops_per_sec: f64,
    pub model_tdx_ops_per_sec: f64,
    pub model_snp_ops_per_sec: f64,
    /// A 64 GiB range op over a 2 MiB one: near 1 where ranges are not walked page by page.
    pub range_cost_ratio: f64,
    pub range_op_64g_ns: f64,
    pub range_op_2m_ns: f64,
}

/// `privmem bench --backend kvm`: a reused VM against a fresh one per case, in one run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct KvmBench {
    pub backend: String,
    pub fresh_vm_exec_per_sec: f64,
    pub reused_vm_exec_per_sec: f64,
    /// The headline: the 16-op cases a campaign generates for this host.
    pub reuse_speedup: f64,
    pub generated_fresh_vm_exec_per_sec: f64,
    pub generated_reused_vm_exec_per_sec: f64,
    /// A fixed hand-written mix with more host ops between guest batches.
    pub fixed_mix_reuse_speedup: f64,
    pub exits_per_guest_op: f64,
    pub fresh_vms_created: u64,
}

/// `privmem bench --backend lab`: today's lab path against the new one, in one run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LabBench {
    pub lab_fresh_cases_per_sec: f64,
    pub lab_cases_per_sec: f64,
    pub lab_speedup: f64,
    pub lab_debug_cases_per_sec: Option<f64>,
    pub debug_cost_ratio: Option<f64>,
    pub cases: [u64; 2],
    pub mapping_checks: u64,
    /// Each interleaved round's (fresh, reused) cases per second; the figures above are the
    /// best of each.
    #[serde(default)]
    pub rounds: Vec<[f64; 2]>,
    /// The same campaign with concurrent groups (`--groups`: each case with groups repeated
    /// with other offsets), and its cases per second against the sequential campaign's.
    #[serde(default)]
    pub lab_concurrent_cases_per_sec: f64,
    #[serde(default)]
    pub concurrent_vs_sequential: f64,
}

/// `privmem bench --backend lab --tdx --json`: TD cases per second on the software TDX module,
/// a kept TD (td_reuse) against a fresh TD per case, on two mixes of generated TD cases.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LabTdxBench {
    /// TDs built as a VMM builds them (`--td-finalized`): fresh TD per case, kept TD.
    pub finalized_cases_per_sec: [f64; 2],
    pub finalized_speedup: f64,
    /// The campaign's own mix (some cases build their TD: init-mem before finalize, or none).
    pub generated_cases_per_sec: [f64; 2],
    pub generated_speedup: f64,
    /// Fresh TDs the kept-TD runs built, of their cases: [finalized, generated] as (fresh, cases).
    pub fresh_tds: [[u64; 2]; 2],
    /// Each round's figures in the order above; the figures above are the best of each.
    pub rounds: Vec<[f64; 4]>,
}

/// `privmem shrink --json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ShrinkRecord {
    pub signature: String,
    pub steps_before: usize,
    pub steps_after: usize,
    pub out: String,
}

/// `privmem corpus export --json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CorpusExport {
    pub exported: usize,
    pub dir: String,
}

/// What a finding was found on: privmem's version, the kernel (release and the named kernel
/// the model ran as), the lab's config key, and on a real backend its capabilities.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FoundOn {
    pub privmem: String,
    pub model_kernel: Option<String>,
    pub kernel_release: Option<String>,
    /// Where the kernel's release is past what the model's table knows (a difference may be a
    /// stable backport the table lacks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lab_config: Option<String>,
    pub caps: Option<Caps>,
}

/// Where a finding came from, in its `.json` beside the `.seq`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FindingOrigin {
    pub backend: String,
    pub label: String,
    /// A campaign's seed and case number (`privmem fuzz`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case: Option<u64>,
    /// Replays of the case that showed the finding again (real backends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replays_confirmed: Option<u32>,
    #[serde(default)]
    pub known: bool,
    /// The lab kernel it ran on (`privmem lab`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// `--plant`: the seeded model bug the campaign ran with (its findings are that bug's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planted: Option<String>,
    pub found_on: FoundOn,
}

/// A finding's `.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FindingFile {
    pub signature: String,
    pub finding: Finding,
    pub sequence: String,
    /// The command that replays it, the `.seq`'s path last.
    pub replay: String,
    #[serde(rename = "extra")]
    pub origin: FindingOrigin,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_and_failure_details() {
        assert_eq!(ScenarioResult::skip("a", "no TDX").verdict(), Verdict::Skipped);
        assert_eq!(ScenarioResult::ran("a", vec![]).verdict(), Verdict::Passed);
        let f = ScenarioResult::failed("a", "exit 1");
        assert_eq!((f.verdict(), f.failure_details()), (Verdict::Failed, vec!["exit 1".to_string()]));
    }
}
