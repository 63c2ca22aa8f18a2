//! Every subcommand's options, declared once with clap's derive: the parser takes exactly
//! these, and `--help`, `help SUB`, the shell completions (`privmem completions SHELL`) and the
//! man page (`privmem man`) are made from the same declarations. Numbers take the language's
//! forms (`0x10`, `4K`).

use clap::{Args, Parser, Subcommand};

pub use crate::VERSION;

/// A number as the sequence language writes one (decimal, `0x` hex, `K`/`M`/`G` suffixes).
fn number(s: &str) -> Result<u64, String> {
    crate::seq::text::parse_number(s, false).ok_or_else(|| format!("expected a number, found `{s}`"))
}

#[derive(Parser, Debug)]
#[command(
    name = "privmem",
    version = VERSION,
    about = "privmem: fuzzing and conformance harness for confidential-VM private memory under KVM",
    after_help = "VM types: default, sw-protected, tdx, snp; variants: upstream, huge-v1, huge-v2, huge-v3, huge-v5.\n\
                  Exit status: 0 all held, 1 a finding or failed expectation, 2 bad input or usage, 4 everything skipped (--tap), 130 interrupted."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    #[command(about = "run scenarios and check every expectation")]
    Replay(ReplayArgs),
    #[command(about = "a fuzz campaign on the model or on real KVM")]
    Fuzz(FuzzArgs),
    #[command(about = "the scenarios and a fuzz campaign on a nested KVM under QEMU TCG")]
    Lab(LabArgs),
    #[command(about = "shrink a finding's sequence")]
    Shrink(ShrinkArgs),
    #[command(about = "throughput figures, as ratios against a baseline in the same run")]
    Bench(BenchArgs),
    #[command(about = "parse and print canonically")]
    Print(PrintArgs),
    #[command(about = "what this host's KVM offers, and what it lacks")]
    Caps(CapsArgs),
    #[command(about = "corpus files as fuzzer seeds")]
    Corpus(CorpusArgs),
    #[command(about = "a C reproducer: a kselftest in the kernel's idiom (upstream) or self-contained")]
    Export(ExportArgs),
    #[command(about = "a page of the model states the cases reach")]
    Coverage(CoverageArgs),
    #[command(about = "the ioctls' argument checks in kernel order, or their scenario family")]
    Argcheck(ArgcheckArgs),
    #[command(about = "the ioctls that set up a TD or SNP guest")]
    Plan(PlanArgs),
    #[command(about = "run test programs and report each one's exit (what `lab --exec` runs inside)")]
    Exec(ExecArgs),
    #[command(about = "shell completions for privmem, on standard output")]
    Completions(CompletionsArgs),
    #[command(about = "privmem's man pages (privmem.1 and one per command), written to a directory")]
    Man(ManArgs),
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    #[arg(value_enum, help = "the shell")]
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    #[arg(short = 'o', long = "out", value_name = "DIR", default_value = ".", help = "where the pages go")]
    pub out: String,
}

#[derive(Args, Debug, Default)]
pub struct ReplayArgs {
    #[arg(
        long = "backend",
        value_name = "model|kvm|emulated",
        help = "where to run them (default: model; emulated: the TD/SNP shims, the model answering)"
    )]
    pub backend: Option<String>,
    #[arg(
        long = "kernel",
        value_name = "RELEASE|6.12|6.18|7.3|next",
        help = "the release the model runs as (6.12.118; a line: its newest known release)"
    )]
    pub kernel: Option<String>,
    #[arg(long = "against", value_name = "VARIANT", help = "also compare two TDX variants")]
    pub against: Option<String>,
    #[arg(long = "junit", value_name = "FILE", help = "write JUnit XML")]
    pub junit: Option<String>,
    #[arg(long = "bin", help = "the files are fuzzer inputs in the binary codec")]
    pub bin: bool,
    #[arg(long = "adapt", help = "make generated cases runnable on this backend first")]
    pub adapt: bool,
    #[arg(
        long = "plant",
        value_name = "BUG",
        help = "replay with a seeded model bug planted (a --plant campaign's findings)"
    )]
    pub plant: Option<String>,
    #[arg(long = "tap", help = "TAP 13 output; exit 4 when everything was skipped")]
    pub tap: bool,
    #[arg(long = "json", help = "machine-readable output, one JSON record per line")]
    pub json: bool,
    #[arg(value_name = "FILE", help = "FILE...")]
    pub positional: Vec<String>,
}

/// What `fuzz` and `lab` campaigns share: how long, from which seed, where findings go, and how
/// a real backend runs the cases.
#[derive(Args, Debug, Default)]
pub struct CampaignArgs {
    #[arg(long = "time", value_name = "S", value_parser = number, help = "fuzz for S seconds")]
    pub time: Option<u64>,
    #[arg(long = "runs", value_name = "N", value_parser = number, help = "fuzz N cases")]
    pub runs: Option<u64>,
    #[arg(long = "seed", value_name = "N", value_parser = number, help = "seed of the case stream")]
    pub seed: Option<u64>,
    #[arg(long = "out", value_name = "DIR", help = "where findings are written (default: findings)")]
    pub out: Option<String>,
    #[arg(long = "junit", value_name = "FILE", help = "write JUnit XML")]
    pub junit: Option<String>,
    #[arg(long = "fresh-vm", help = "real KVM: a fresh VM per case")]
    pub fresh_vm: bool,
    #[arg(long = "no-view", help = "real KVM: without the kernel's mapping view")]
    pub no_view: bool,
    #[arg(long = "no-feedback", help = "no coverage-guided mutation")]
    pub no_feedback: bool,
    #[arg(long = "groups", help = "concurrent groups (`together`) in generated cases")]
    pub groups: bool,
    #[arg(
        long = "large-conversions",
        help = "conversions of 16G to 64G now and then (slow: for the lockup and RCU-stall detectors of a debug kernel)"
    )]
    pub large_conversions: bool,
    #[arg(
        long = "td-finalized",
        help = "generated TDs finalize first, as a VMM builds them (no init-mem before; with a kept TD, no TD build per case)"
    )]
    pub td_finalized: bool,
}

#[derive(Args, Debug, Default)]
pub struct FuzzArgs {
    #[command(flatten)]
    pub c: CampaignArgs,
    #[arg(long = "vm", value_name = "T|any", help = "VM type of the generated cases")]
    pub vm: Option<String>,
    #[arg(long = "variant", value_name = "V", help = "TDX variant")]
    pub variant: Option<String>,
    #[arg(long = "against", value_name = "V", help = "compare with another TDX variant")]
    pub against: Option<String>,
    #[arg(long = "max-ops", value_name = "N", value_parser = number, help = "ops per generated case at most")]
    pub max_ops: Option<u64>,
    #[arg(long = "backend", value_name = "model|kvm", help = "where cases run")]
    pub backend: Option<String>,
    #[arg(long = "timeout-ms", value_name = "N", value_parser = number, help = "real KVM: a guest window without progress")]
    pub timeout_ms: Option<u64>,
    #[arg(long = "hazards", value_name = "all|H,H", help = "hazard options the generator may turn on")]
    pub hazards: Option<String>,
    #[arg(long = "ignore", value_name = "SIG,SIG", help = "signatures not to report")]
    pub ignore: Option<String>,
    #[arg(long = "plant", value_name = "BUG", help = "plant a seeded model bug")]
    pub plant: Option<String>,
    #[arg(
        long = "known",
        value_name = "DIR,DIR",
        help = "more scenarios whose known-divergence markers count as known"
    )]
    pub known: Option<String>,
    #[arg(long = "print-cases", help = "print each case before it runs")]
    pub print_cases: bool,
    #[arg(long = "profile", help = "sample the CPU (kernel, user, guest) over the campaign; the lab passes it")]
    pub profile: bool,
    #[arg(long = "json", help = "machine-readable output, one JSON record per line")]
    pub json: bool,
}

#[derive(Args, Debug, Default)]
pub struct LabArgs {
    #[command(flatten)]
    pub c: CampaignArgs,
    #[arg(long = "kernel", value_name = "BZIMAGE|6.12|7.3", help = "the lab kernel (default: Debian's 6.12, built)")]
    pub kernel: Option<String>,
    #[arg(long = "kernel-version", value_name = "6.12|7.3", help = "build (or reuse) and boot that version")]
    pub kernel_version: Option<String>,
    #[arg(long = "baseline", value_name = "K", help = "run the same cases on kernel K too and list the differences")]
    pub baseline: Option<String>,
    #[arg(long = "init", value_name = "PRIVMEM", help = "the static privmem to run as init")]
    pub init: Option<String>,
    #[arg(long = "timeout", value_name = "S", value_parser = number, help = "kill the lab VM after S seconds")]
    pub timeout: Option<u64>,
    #[arg(long = "jobs", value_name = "N", value_parser = number, help = "lab VMs at once (default: the cores)")]
    pub jobs: Option<u64>,
    #[arg(long = "coverage", value_name = "PAGE", help = "write the kernel coverage page (debug kernel)")]
    pub coverage: Option<String>,
    #[arg(long = "vm", value_name = "T|any", help = "VM type of the campaign (default: sw-protected)")]
    pub vm: Option<String>,
    #[arg(long = "tap", help = "TAP 13 output for the scenarios; exit 4 when everything was skipped")]
    pub tap: bool,
    #[arg(long = "exec", help = "the FILEs are test programs (exported kselftests) to run there, not scenarios")]
    pub exec: bool,
    #[arg(
        long = "profile",
        help = "where the lab VM's CPU went over the campaign: the kernel by function, privmem, the guest"
    )]
    pub profile: bool,
    #[arg(
        long = "emulated",
        help = "run the TD and SNP shims there in emulated mode (default: the corpus's TDX and SNP scenarios)"
    )]
    pub emulated: bool,
    #[arg(
        long = "tdx",
        help = "boot 7.3 with privmem's software TDX module (simulated): the corpus's TDX scenarios run through KVM's real tdx.c",
        conflicts_with_all = ["emulated", "exec", "baseline"]
    )]
    pub tdx: bool,
    #[arg(
        long = "tdx-huge",
        value_name = "DEMOTE",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "enhanced",
        value_parser = ["enhanced", "interruptible"],
        requires = "tdx",
        help = "with --tdx: the module offers the huge-page interface (2M AUG, DEMOTE, PROMOTE) for a --kernel carrying the series; `enhanced` (default) reports ENHANCED_DEMOTE_INTERRUPTIBILITY, `interruptible` does not"
    )]
    pub tdx_huge: Option<String>,
    #[arg(long = "json", help = "machine-readable output, one JSON record per line")]
    pub json: bool,
    #[arg(value_name = "FILE", help = "[FILE...]")]
    pub positional: Vec<String>,
}

#[derive(Args, Debug, Default)]
pub struct ShrinkArgs {
    #[arg(short = 'o', long = "out", value_name = "OUT", help = "output file")]
    pub out: Option<String>,
    #[arg(
        long = "backend",
        value_name = "model|kvm",
        help = "where the finding shows (default: model; kvm: a real kernel's finding)"
    )]
    pub backend: Option<String>,
    #[arg(long = "plant", value_name = "BUG", help = "shrink with a seeded model bug planted")]
    pub plant: Option<String>,
    #[arg(long = "json", help = "machine-readable output, one JSON record per line")]
    pub json: bool,
    #[arg(value_name = "FILE", help = "FILE")]
    pub positional: Vec<String>,
}

#[derive(Args, Debug, Default)]
pub struct BenchArgs {
    #[arg(long = "backend", value_name = "model|kvm|lab", help = "what to measure (default: model)")]
    pub backend: Option<String>,
    #[arg(long = "kernel", value_name = "BZIMAGE", help = "lab: the kernel")]
    pub kernel: Option<String>,
    #[arg(long = "debug-kernel", value_name = "BZIMAGE", help = "lab: also the debug flavour")]
    pub debug_kernel: Option<String>,
    #[arg(long = "tdx", help = "lab: TD cases on the software TDX module, a kept TD against a fresh TD per case")]
    pub tdx: bool,
    #[arg(long = "json", help = "machine-readable output, one JSON record per line")]
    pub json: bool,
}

#[derive(Args, Debug, Default)]
pub struct PrintArgs {
    #[arg(long = "json", help = "machine-readable output, one JSON record per line")]
    pub json: bool,
    #[arg(long = "bin", help = "fuzzer inputs")]
    pub bin: bool,
    #[arg(value_name = "FILE", help = "FILE...")]
    pub positional: Vec<String>,
}

#[derive(Args, Debug, Default)]
pub struct CapsArgs {
    #[arg(long = "json", help = "machine-readable output, one JSON record per line")]
    pub json: bool,
}

#[derive(Args, Debug, Default)]
pub struct CorpusArgs {
    #[arg(long = "libfuzzer", value_name = "DIR", help = "where the seeds go")]
    pub libfuzzer: Option<String>,
    #[arg(long = "json", help = "machine-readable output, one JSON record per line")]
    pub json: bool,
    #[arg(value_name = "ROOT", help = "export [ROOT]")]
    pub positional: Vec<String>,
}

#[derive(Args, Debug, Default)]
pub struct ExportArgs {
    #[arg(long = "json", help = "machine-readable output, one JSON record per line")]
    pub json: bool,
    #[arg(
        long = "kselftest",
        value_name = "upstream|standalone|FILE",
        help = "the flavour, then FILE; a FILE alone: standalone"
    )]
    pub kselftest: Option<String>,
    #[arg(
        long = "kernel",
        value_name = "RELEASE|6.12|6.18|7.3|next",
        help = "upstream: the kernel release the test is for (refused where the scenario does not hold)"
    )]
    pub kernel: Option<String>,
    #[arg(short = 'o', long = "out", value_name = "OUT.c", help = "output file")]
    pub out: Option<String>,
    #[arg(value_name = "FILE", help = "[FILE]")]
    pub positional: Vec<String>,
}

#[derive(Args, Debug, Default)]
pub struct CoverageArgs {
    #[arg(long = "json", help = "machine-readable output, one JSON record per line")]
    pub json: bool,
    #[arg(short = 'o', long = "out", value_name = "OUT.html", help = "output page")]
    pub out: Option<String>,
    #[arg(long = "runs", value_name = "N", value_parser = number, help = "generated cases")]
    pub runs: Option<u64>,
    #[arg(long = "vm", value_name = "T", help = "their VM type")]
    pub vm: Option<String>,
    #[arg(long = "variant", value_name = "V", help = "their TDX variant")]
    pub variant: Option<String>,
    #[arg(long = "seed", value_name = "N", value_parser = number, help = "their seed")]
    pub seed: Option<u64>,
    #[arg(long = "hazards", value_name = "all|H,H", help = "hazard options they may turn on")]
    pub hazards: Option<String>,
    #[arg(value_name = "FILE|DIR", help = "[FILE|DIR...]")]
    pub positional: Vec<String>,
}

#[derive(Args, Debug, Default)]
pub struct ArgcheckArgs {
    #[arg(long = "json", help = "machine-readable output, one JSON record per line")]
    pub json: bool,
    #[arg(long = "emit", value_name = "DIR", help = "write the family there")]
    pub emit: Option<String>,
}

#[derive(Args, Debug, Default)]
pub struct PlanArgs {
    #[arg(long = "json", help = "machine-readable output, one JSON record per line")]
    pub json: bool,
    #[arg(value_name = "FILE", help = "FILE...")]
    pub positional: Vec<String>,
}

#[derive(Args, Debug, Default)]
pub struct ExecArgs {
    #[arg(value_name = "PROGRAM", help = "PROGRAM...")]
    pub positional: Vec<String>,
}
