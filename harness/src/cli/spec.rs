//! Every subcommand's options, in one table: the parser takes exactly these (`Spec::parse`),
//! `privmem CMD --help` prints them, and the top-level usage is made from them, so the three
//! cannot drift apart.

use super::Args;
use std::fmt::Write as _;

pub struct Opt {
    pub name: &'static str,
    /// The value's name for an option that takes one; None for a flag.
    pub value: Option<&'static str>,
    pub help: &'static str,
}

pub struct Spec {
    pub name: &'static str,
    pub args: &'static str,
    pub about: &'static str,
    pub opts: &'static [Opt],
}

const fn v(name: &'static str, value: &'static str, help: &'static str) -> Opt {
    Opt { name, value: Some(value), help }
}
const fn f(name: &'static str, help: &'static str) -> Opt {
    Opt { name, value: None, help }
}

// Options several commands take, said once.
const JSON: Opt = f("json", "machine-readable output, one JSON record per line");
const JUNIT: Opt = v("junit", "FILE", "write JUnit XML");
const TIME: Opt = v("time", "S", "fuzz for S seconds");
const RUNS: Opt = v("runs", "N", "fuzz N cases");
const SEED: Opt = v("seed", "N", "seed of the case stream");
const OUT: Opt = v("out", "DIR", "where findings are written (default: findings)");
const FRESH_VM: Opt = f("fresh-vm", "real KVM: a fresh VM per case");
const NO_VIEW: Opt = f("no-view", "real KVM: without the kernel's mapping view");
const NO_FEEDBACK: Opt = f("no-feedback", "no coverage-guided mutation");

pub const SPECS: &[Spec] = &[
    Spec {
        name: "replay",
        args: "FILE...",
        about: "run scenarios and check every expectation",
        opts: &[
            v(
                "backend",
                "model|kvm|emulated",
                "where to run them (default: model; emulated: the TD/SNP shims, the model answering)",
            ),
            v(
                "kernel",
                "RELEASE|6.12|6.18|7.3|next",
                "the release the model runs as (6.12.118; a line: its newest known release)",
            ),
            v("against", "VARIANT", "also compare two TDX variants"),
            JUNIT,
            f("bin", "the files are fuzzer inputs in the binary codec"),
            f("adapt", "make generated cases runnable on this backend first"),
            v("plant", "BUG", "replay with a seeded model bug planted (a --plant campaign's findings)"),
            f("tap", "TAP 13 output; exit 4 when everything was skipped"),
            JSON,
        ],
    },
    Spec {
        name: "fuzz",
        args: "",
        about: "a fuzz campaign on the model or on real KVM",
        opts: &[
            v("vm", "T|any", "VM type of the generated cases"),
            v("variant", "V", "TDX variant"),
            v("against", "V", "compare with another TDX variant"),
            TIME,
            RUNS,
            SEED,
            OUT,
            v("max-ops", "N", "ops per generated case at most"),
            v("backend", "model|kvm", "where cases run"),
            v("timeout-ms", "N", "real KVM: a guest window without progress"),
            JUNIT,
            v("hazards", "all|H,H", "hazard options the generator may turn on"),
            v("ignore", "SIG,SIG", "signatures not to report"),
            v("plant", "BUG", "plant a seeded model bug"),
            v("known", "DIR,DIR", "more scenarios whose known-divergence markers count as known"),
            FRESH_VM,
            NO_VIEW,
            NO_FEEDBACK,
            f("print-cases", "print each case before it runs"),
            f("profile", "sample the CPU (kernel, user, guest) over the campaign; the lab passes it"),
            JSON,
        ],
    },
    Spec {
        name: "lab",
        args: "[FILE...]",
        about: "the scenarios and a fuzz campaign on a nested KVM under QEMU TCG",
        opts: &[
            v("kernel", "BZIMAGE|6.12|7.3", "the lab kernel (default: Debian's 6.12, built)"),
            v("kernel-version", "6.12|7.3", "build (or reuse) and boot that version"),
            v("baseline", "K", "run the same cases on kernel K too and list the differences"),
            v("init", "PRIVMEM", "the static privmem to run as init"),
            TIME,
            RUNS,
            SEED,
            v("timeout", "S", "kill the lab VM after S seconds"),
            JUNIT,
            OUT,
            v("jobs", "N", "lab VMs at once (default: the cores)"),
            v("coverage", "PAGE", "write the kernel coverage page (debug kernel)"),
            v("vm", "T|any", "VM type of the campaign (default: sw-protected)"),
            FRESH_VM,
            NO_VIEW,
            NO_FEEDBACK,
            f("tap", "TAP 13 output for the scenarios; exit 4 when everything was skipped"),
            f("exec", "the FILEs are test programs (exported kselftests) to run there, not scenarios"),
            f("profile", "where the lab VM's CPU went over the campaign: the kernel by function, privmem, the guest"),
            f(
                "emulated",
                "run the TD and SNP shims there in emulated mode (default: the corpus's TDX and SNP scenarios)",
            ),
            JSON,
        ],
    },
    Spec {
        name: "shrink",
        args: "FILE",
        about: "shrink a finding's sequence",
        opts: &[
            v("o", "OUT", "output file"),
            v("out", "OUT", "output file"),
            v("backend", "model|kvm", "where the finding shows (default: model; kvm: a real kernel's finding)"),
            v("plant", "BUG", "shrink with a seeded model bug planted"),
            JSON,
        ],
    },
    Spec {
        name: "bench",
        args: "",
        about: "throughput figures, as ratios against a baseline in the same run",
        opts: &[
            v("backend", "model|kvm|lab", "what to measure (default: model)"),
            v("kernel", "BZIMAGE", "lab: the kernel"),
            v("debug-kernel", "BZIMAGE", "lab: also the debug flavour"),
            JSON,
        ],
    },
    Spec { name: "print", args: "FILE...", about: "parse and print canonically", opts: &[f("bin", "fuzzer inputs")] },
    Spec { name: "caps", args: "", about: "what this host's KVM offers, and what it lacks", opts: &[JSON] },
    Spec {
        name: "corpus",
        args: "export [ROOT]",
        about: "corpus files as fuzzer seeds",
        opts: &[v("libfuzzer", "DIR", "where the seeds go"), JSON],
    },
    Spec {
        name: "export",
        args: "[FILE]",
        about: "a C reproducer: a kselftest in the kernel's idiom (upstream) or self-contained",
        opts: &[
            v("kselftest", "upstream|standalone|FILE", "the flavour, then FILE; a FILE alone: standalone"),
            v(
                "kernel",
                "RELEASE|6.12|6.18|7.3|next",
                "upstream: the kernel release the test is for (refused where the scenario does not hold)",
            ),
            v("o", "OUT.c", "output file"),
            v("out", "OUT.c", "output file"),
        ],
    },
    Spec {
        name: "coverage",
        args: "[FILE|DIR...]",
        about: "a page of the model states the cases reach",
        opts: &[
            v("o", "OUT.html", "output page"),
            v("out", "OUT.html", "output page"),
            v("runs", "N", "generated cases"),
            v("vm", "T", "their VM type"),
            v("variant", "V", "their TDX variant"),
            v("seed", "N", "their seed"),
            v("hazards", "all|H,H", "hazard options they may turn on"),
        ],
    },
    Spec {
        name: "argcheck",
        args: "",
        about: "the ioctls' argument checks in kernel order, or their scenario family",
        opts: &[v("emit", "DIR", "write the family there")],
    },
    Spec { name: "plan", args: "FILE...", about: "the ioctls that set up a TD or SNP guest", opts: &[] },
    Spec {
        name: "exec",
        args: "PROGRAM...",
        about: "run test programs and report each one's exit (what `lab --exec` runs inside)",
        opts: &[],
    },
];

impl Spec {
    pub fn get(name: &str) -> &'static Spec {
        SPECS.iter().find(|s| s.name == name).expect("every command has a spec")
    }

    /// Parse `argv` with exactly this command's options.
    pub fn parse(&self, argv: &[String]) -> Result<Args, String> {
        let valued: Vec<&str> = self.opts.iter().filter(|o| o.value.is_some()).map(|o| o.name).collect();
        let flags: Vec<&str> = self.opts.iter().filter(|o| o.value.is_none()).map(|o| o.name).collect();
        Args::parse(argv, &valued, &flags).map_err(|e| format!("{e} (privmem {} --help)", self.name))
    }

    /// `privmem NAME --help`.
    pub fn usage(&self) -> String {
        let mut o =
            format!("privmem {}: {}\n\nusage: privmem {} [OPTIONS] {}\n", self.name, self.about, self.name, self.args);
        if !self.opts.is_empty() {
            o.push_str("\noptions:\n");
        }
        for opt in self.opts {
            let dash = if opt.name.len() == 1 { "-" } else { "--" };
            let left = match opt.value {
                Some(v) => format!("{dash}{} {v}", opt.name),
                None => format!("{dash}{}", opt.name),
            };
            let _ = writeln!(o, "  {left:30} {}", opt.help);
        }
        o
    }

    /// One line of the top-level usage.
    pub fn summary(&self) -> String {
        format!("  privmem {:9} {:18} {}", self.name, self.args, self.about)
    }
}
