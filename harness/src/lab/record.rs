//! `privmem lab`'s summary record: the corpus's results and the campaigns' summaries from every
//! lab VM, as `lab --json` prints it and `bench --backend lab` reads it.

use super::coverage::CoverageSummary;
use crate::report::records::{FindingEvent, FuzzSummary, ScenarioResult};
use serde::{Deserialize, Serialize};

/// `privmem lab`: the corpus's results and the campaigns' summaries from every lab VM.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LabRecord {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub results: Vec<ScenarioResult>,
    pub fuzz_findings: Vec<FindingEvent>,
    pub fuzz: Vec<FuzzSummary>,
    /// Every lab VM finished its commands.
    pub completed: bool,
    pub jobs: u64,
    pub wall_seconds: f64,
    pub fuzz_cases: u64,
    pub pcs: usize,
    pub coverage: Option<CoverageSummary>,
    pub mapping_checks: u64,
    pub mapped_unchecked: u64,
    pub files: Vec<String>,
    /// The lab kernel's release, the release the model ran as, and any drift between them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_release: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_kernel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<String>,
    /// `--tdx`: what vCPUs inside a TD met in the software module (`contention`), by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tdx_module: Vec<(String, u64)>,
    /// `--profile`: where the lab VMs' CPU went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<super::profile::LabProfile>,
}

impl LabRecord {
    /// Fuzz cases per second over the lab VMs: the cases that ran (the ones the lab kernel could
    /// not run cost next to nothing) over the longest campaign (they run side by side).
    pub fn fuzz_rate(&self) -> (f64, u64) {
        let cases: u64 = self.fuzz.iter().map(|f| f.cases - f.skipped).sum();
        let secs = self.fuzz.iter().map(|f| f.seconds).fold(0.0, f64::max);
        (cases as f64 / secs.max(1e-9), cases)
    }
}
