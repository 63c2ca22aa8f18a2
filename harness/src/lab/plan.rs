//! What one lab VM runs: a typed plan, written into its initramfs as `/lab/plan.json` by the
//! host side and run in order by privmem as PID 1 (`cli/lab_init.rs`). Each job is a privmem
//! command; [`Job::argv`] is the one place a job becomes that command's arguments.

use serde::{Deserialize, Serialize};

/// Where the plan sits in the lab's initramfs.
pub const PLAN_PATH: &str = "lab/plan.json";
/// Where the scenarios and programs sit in the lab's initramfs.
pub const FILES_DIR: &str = "corpus";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub jobs: Vec<Job>,
    /// Seconds after boot by which the host side stops waiting: the lab VM's watchdog names the
    /// case in progress a little before (`lab.stuck`), so that a lab out of time says where.
    pub deadline_secs: u64,
}

/// Which kind of job a `lab.job` line reports on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    Caps,
    Replay,
    Exec,
    Fuzz,
}

impl JobKind {
    pub fn name(self) -> &'static str {
        match self {
            JobKind::Caps => "caps",
            JobKind::Replay => "replay",
            JobKind::Exec => "exec",
            JobKind::Fuzz => "fuzz",
        }
    }
}

/// The backend a replay job runs its scenarios on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplayOn {
    /// The lab kernel's KVM.
    Kvm,
    /// The TD and SNP shims on the lab kernel's KVM, the model answering their traps.
    Emulated,
}

/// How long a campaign runs: a number of cases, or seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Budget {
    Runs(u64),
    Seconds(u64),
}

/// A seeded campaign against the lab kernel's KVM.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FuzzJob {
    pub vm: String,
    pub budget: Budget,
    pub seed: Option<u64>,
    pub fresh_vm: bool,
    pub no_view: bool,
    pub no_feedback: bool,
    pub groups: bool,
    #[serde(default)]
    pub large_conversions: bool,
    #[serde(default)]
    pub td_finalized: bool,
    pub print_cases: bool,
    pub profile: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "lowercase")]
pub enum Job {
    /// What the lab kernel offers (always first: the host side models its release).
    Caps,
    /// The scenarios (names under [`FILES_DIR`]); `adapt` reports each case as the backend made
    /// it runnable (what `lab --baseline` compares).
    Replay {
        on: ReplayOn,
        files: Vec<String>,
        adapt: bool,
    },
    /// Programs to run (`lab --exec`: exported kselftests).
    Exec {
        files: Vec<String>,
    },
    Fuzz(FuzzJob),
}

impl Job {
    pub fn kind(&self) -> JobKind {
        match self {
            Job::Caps => JobKind::Caps,
            Job::Replay { .. } => JobKind::Replay,
            Job::Exec { .. } => JobKind::Exec,
            Job::Fuzz(_) => JobKind::Fuzz,
        }
    }

    /// The privmem command line (without the program name) that runs the job in the lab VM.
    pub fn argv(&self) -> Vec<String> {
        let s = |x: &[&str]| x.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let files = |f: &[String]| f.iter().map(|n| format!("/{FILES_DIR}/{n}")).collect::<Vec<_>>();
        match self {
            Job::Caps => s(&["caps", "--json"]),
            Job::Replay { on, files: f, adapt } => {
                let backend = match on {
                    ReplayOn::Kvm => "kvm",
                    ReplayOn::Emulated => "emulated",
                };
                let mut a = s(&["replay", "--backend", backend, "--json"]);
                if *adapt {
                    a.push("--adapt".into());
                }
                a.extend(files(f));
                a
            }
            Job::Exec { files: f } => {
                let mut a = s(&["exec"]);
                a.extend(files(f));
                a
            }
            Job::Fuzz(z) => {
                let mut a = s(&["fuzz", "--backend", "kvm", "--json", "--out", "/tmp/findings", "--vm", &z.vm]);
                match z.budget {
                    Budget::Runs(r) => a.extend(["--runs".into(), r.to_string()]),
                    Budget::Seconds(t) => a.extend(["--time".into(), t.to_string()]),
                }
                if let Some(seed) = z.seed {
                    a.extend(["--seed".into(), seed.to_string()]);
                }
                for (on, flag) in [
                    (z.fresh_vm, "--fresh-vm"),
                    (z.no_view, "--no-view"),
                    (z.no_feedback, "--no-feedback"),
                    (z.groups, "--groups"),
                    (z.large_conversions, "--large-conversions"),
                    (z.td_finalized, "--td-finalized"),
                    (z.print_cases, "--print-cases"),
                    (z.profile, "--profile"),
                ] {
                    if on {
                        a.push(flag.into());
                    }
                }
                a
            }
        }
    }
}

impl Plan {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a plan is plain data")
    }

    pub fn from_bytes(b: &[u8]) -> Result<Plan, String> {
        serde_json::from_slice(b).map_err(|e| format!("/{PLAN_PATH}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fuzz() -> Job {
        Job::Fuzz(FuzzJob {
            vm: "sw-protected".into(),
            budget: Budget::Runs(250),
            seed: Some(2),
            fresh_vm: false,
            no_view: true,
            no_feedback: false,
            groups: false,
            large_conversions: false,
            td_finalized: false,
            print_cases: false,
            profile: true,
        })
    }

    #[test]
    fn a_plan_reads_back_as_written() {
        let p = Plan {
            jobs: vec![Job::Caps, Job::Replay { on: ReplayOn::Kvm, files: vec!["a.seq".into()], adapt: true }, fuzz()],
            deadline_secs: 300,
        };
        assert_eq!(Plan::from_bytes(&p.to_bytes()).unwrap(), p);
        assert!(Plan::from_bytes(b"{\"jobs\":[{\"job\":\"format-disk\"}]}").is_err());
    }

    /// Every job's command line is one the CLI takes, with the options the job says.
    #[test]
    fn every_job_is_a_command_the_cli_parses() {
        use clap::Parser;
        let jobs = [
            Job::Caps,
            Job::Replay { on: ReplayOn::Emulated, files: vec!["tdx__x.seq".into()], adapt: false },
            Job::Exec { files: vec!["t".into()] },
            fuzz(),
        ];
        for j in &jobs {
            let argv = j.argv();
            let cli =
                crate::cli::commands::Cli::try_parse_from(std::iter::once("privmem".to_string()).chain(argv.clone()));
            assert!(cli.is_ok(), "{argv:?}: {}", cli.err().map(|e| e.to_string()).unwrap_or_default());
        }
        let a = fuzz().argv().join(" ");
        assert!(a.contains("--runs 250 --seed 2 --no-view --profile"), "{a}");
        assert!(jobs[1].argv().ends_with(&["/corpus/tdx__x.seq".to_string()]));
    }
}
