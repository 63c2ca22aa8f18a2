//! The `privmem` command. Exit codes: 0 all held, 1 a finding or a failed expectation, 2 bad
//! input or usage.

mod bench;
pub mod commands;
pub mod corpus_cmd;
mod emulated;
mod fuzz;
mod interrupt;
mod lab_baseline;
mod lab_build;
mod lab_cmd;
mod lab_files;
pub mod lab_init;
mod replay;
mod shrink_cmd;

use crate::report::records::{ExecRecord, Made};
use crate::seq::{text, Knob, Sequence, Variant, VmType};
use crate::wire::Line;

/// `privmem ARGS...` (without the program name): the exit status.
pub fn main(argv: Vec<String>) -> i32 {
    use clap::Parser;
    use commands::Command as C;
    // `-runs=10`, libFuzzer's habit: a long option with one dash would read as a cluster of
    // short ones; name the option meant instead.
    let maybe = argv.iter().any(|x| x.len() > 2 && x.starts_with('-') && !x.starts_with("--"));
    let longs: Vec<String> = match maybe {
        false => Vec::new(),
        true => {
            use clap::CommandFactory;
            let c = commands::Cli::command();
            c.get_subcommands().flat_map(|s| s.get_arguments().filter_map(|a| a.get_long().map(String::from))).collect()
        }
    };
    let single_dash_long = |x: &&String| {
        x.strip_prefix('-')
            .is_some_and(|n| !n.starts_with('-') && longs.iter().any(|l| l == n.split('=').next().unwrap_or(n)))
    };
    if let Some(x) = argv.iter().find(single_dash_long) {
        eprintln!("privmem: unknown option `{x}`: options take two dashes here (`-{x}`)");
        return 2;
    }
    let cli = match commands::Cli::try_parse_from(std::iter::once("privmem".to_string()).chain(argv)) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            let _ = e.print();
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => 0,
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => 2,
                _ => 2,
            };
        }
    };
    let r = match &cli.command {
        C::Replay(a) => replay::run(a),
        C::Fuzz(a) => fuzz::run(a),
        C::Shrink(a) => shrink_cmd::run(a),
        C::Bench(a) => bench::run(a),
        C::Print(a) => print(a),
        C::Caps(a) => caps(a),
        C::Corpus(a) => corpus_cmd::run(a),
        C::Export(a) => export(a),
        C::Lab(a) => lab_cmd::run(a),
        C::Coverage(a) => coverage(a),
        C::Argcheck(a) => argcheck(a),
        C::Plan(a) => plan(a),
        C::Exec(a) => exec(a),
        C::Completions(a) => completions(a),
        C::Man(a) => man(a),
    };
    match r {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("privmem: {msg}");
            2
        }
    }
}

/// Read and parse a `.seq` file; the error is ready to print (file:line:col: ...).
pub fn load(path: &str) -> Result<Sequence, String> {
    load_source(path).map(|(_, s)| s)
}

/// Like [`load`], also returning the file's text (its comments carry markers).
pub fn load_source(path: &str) -> Result<(String, Sequence), String> {
    let src = read_text(path)?;
    let shown = if path == "-" { "<stdin>" } else { path };
    let seq = text::parse(shown, &src).map_err(|e| e.to_string())?;
    Ok((src, seq))
}

/// A `.seq` file's text (`-`: standard input). Bytes that are not UTF-8 are an error at their
/// line and column, with the likely cause: a fuzzer input in the binary codec.
pub fn read_text(path: &str) -> Result<String, String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    let r = match path {
        "-" => std::io::stdin().read_to_end(&mut bytes),
        p => std::fs::File::open(p).and_then(|mut f| f.read_to_end(&mut bytes)),
    };
    let shown = if path == "-" { "<stdin>" } else { path };
    r.map_err(|e| format!("{shown}: {e}"))?;
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let before = &e.as_bytes()[..at];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let col = at - before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1) + 1;
        format!(
            "{shown}:{line}:{col}: expected UTF-8 text, found byte {:#04x} (a fuzzer input in the binary codec replays with `--bin`)",
            e.as_bytes()[at]
        )
    })
}

/// `--plant BUG`: plant that seeded model bug for this process (fuzz, replay, shrink).
pub fn plant_arg(name: Option<&str>) -> Result<Option<crate::model::seeded::SeededBug>, String> {
    use crate::model::seeded::{plant, SeededBug};
    let Some(p) = name else { return Ok(None) };
    let names: Vec<_> = SeededBug::ALL.iter().map(|b| b.name()).collect();
    let bug = SeededBug::ALL.into_iter().find(|b| b.name() == p);
    let bug = bug.ok_or(format!("--plant: unknown seeded bug `{p}` ({})", names.join(", ")))?;
    plant(Some(bug));
    Ok(Some(bug))
}

pub fn parse_vm(s: &str) -> Result<VmType, String> {
    VmType::ALL.iter().copied().find(|v| v.name() == s).ok_or(format!("unknown VM type `{s}`"))
}

pub fn parse_variant(s: &str) -> Result<Variant, String> {
    Variant::ALL.iter().copied().find(|v| v.name() == s).ok_or(format!("unknown variant `{s}`"))
}

/// `--hazards all|NAME,NAME`: the hazard knobs a campaign may turn on (none by default).
pub fn parse_hazards(s: Option<&str>) -> Result<Vec<Knob>, String> {
    let hazards = || Knob::ALL.into_iter().filter(|k| k.is_hazard());
    match s {
        None => Ok(Vec::new()),
        Some("all") => Ok(hazards().collect()),
        Some(list) => list
            .split(',')
            .map(|n| {
                hazards().find(|k| k.name() == n).ok_or_else(|| {
                    let names: Vec<_> = hazards().map(Knob::name).collect();
                    format!("--hazards: unknown hazard `{n}` (all, {})", names.join(", "))
                })
            })
            .collect(),
    }
}

fn export(a: &commands::ExportArgs) -> Result<i32, String> {
    // `--kselftest=upstream FILE` or `--kselftest=standalone FILE`; `--kselftest FILE` is the
    // standalone flavour, as before.
    let (flavour, file) = match a.kselftest.as_deref() {
        Some(f @ ("upstream" | "standalone")) => {
            (f, a.positional.first().map(String::as_str).ok_or("export: name the scenario FILE")?)
        }
        Some(file) => ("standalone", file),
        None => return Err("export: usage: privmem export --kselftest=upstream|standalone FILE -o OUT.c".into()),
    };
    let out = a.out.as_deref().ok_or("export: -o OUT.c is required")?;
    let (src, seq) = load_source(file)?;
    let c = match flavour {
        "upstream" => {
            let k = a.kernel.as_deref().map(crate::model::kernel::kernel_arg).transpose()?.map(|m| m.release);
            crate::report::kselftest_upstream::export(&seq, file, &src, k)
        }
        _ => crate::report::kselftest::export(&seq, file),
    }
    .map_err(|e| format!("{file}: {e}"))?;
    write_out(out, c.as_bytes())?;
    let made = Made {
        command: "export".into(),
        file: Some(file.to_string()),
        out: Some(out.to_string()),
        steps: Some(seq.steps.len()),
        text: None,
    };
    say(a.json, out, &made, &format!("wrote {out} ({flavour}, {} steps)", seq.steps.len()));
    Ok(0)
}

/// `privmem coverage [FILE|DIR...] [--runs N --vm T --variant V --seed N] -o OUT.html`
fn coverage(a: &commands::CoverageArgs) -> Result<i32, String> {
    use crate::campaign::{Campaign, CampaignConfig};
    use crate::oracle::run::run_model_cov;
    let out = a.out.as_deref().unwrap_or("coverage.html");
    let mut seqs = Vec::new();
    for p in &a.positional {
        let path = std::path::Path::new(p);
        if path.is_dir() {
            for f in corpus_cmd::seq_files(path) {
                seqs.push(load(&f.display().to_string())?);
            }
        } else {
            seqs.push(load(p)?);
        }
    }
    if let Some(runs) = a.runs {
        let gen = crate::seq::gen::GenConfig {
            vm: a.vm.as_deref().map(parse_vm).transpose()?,
            variant: a.variant.as_deref().map(parse_variant).transpose()?,
            max_ops: 24,
            hazards: parse_hazards(a.hazards.as_deref())?,
            ..Default::default()
        };
        let mut c =
            Campaign::new(CampaignConfig { gen, against: None, seed: a.seed.unwrap_or(1), ..Default::default() });
        seqs.extend((0..runs).map(|_| c.next_case()));
    }
    if seqs.is_empty() {
        return Err("coverage: name FILEs or DIRs, or --runs N".into());
    }
    let mut total = crate::model::Coverage::default();
    for s in &seqs {
        if let (_, Some(cov)) = run_model_cov(s) {
            crate::report::coverage::merge(&mut total, &cov);
        }
    }
    let title =
        if a.positional.is_empty() { format!("{} generated cases", seqs.len()) } else { a.positional.join(" ") };
    let page = crate::report::coverage::html(&total, &title, seqs.len());
    write_out(out, page.as_bytes())?;
    let made =
        Made { command: "coverage".into(), out: Some(out.to_string()), steps: Some(seqs.len()), ..Default::default() };
    say(a.json, out, &made, &format!("wrote {out} ({} sequences)", seqs.len()));
    Ok(0)
}

/// `privmem plan FILE...`: the TDX or SNP set-up of each scenario (`backend/kvm/cvm.rs`).
fn plan(a: &commands::PlanArgs) -> Result<i32, String> {
    if a.positional.is_empty() {
        return Err("plan: name at least one FILE".into());
    }
    for p in &a.positional {
        let s = load(p)?;
        let t = crate::backend::kvm::cvm::plan_text(&s);
        if a.json {
            let made = Made { command: "plan".into(), file: Some(p.clone()), text: t, ..Default::default() };
            Line::from(made).print();
            continue;
        }
        match t {
            Some(t) => print!("# {p}: vm {}\n{t}", s.header.vm.name()),
            None => println!("# {p}: vm {} needs no confidential-VM set-up", s.header.vm.name()),
        }
    }
    Ok(0)
}

/// `privmem exec PROGRAM...`: run each program (made executable first: the lab's initramfs
/// carries them as plain files) and print one JSON record per program with its exit status and
/// output. Exit 0 when each passed or skipped (kselftest's 4), else 1.
fn exec(a: &commands::ExecArgs) -> Result<i32, String> {
    use std::os::unix::fs::PermissionsExt;
    let mut rc = 0;
    for p in &a.positional {
        let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755));
        let child = std::process::Command::new(p)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("{p}: {e}"))?;
        // A test that hangs is a failure with its output so far, not a hung lab.
        let pid = child.id() as libc::pid_t;
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let d2 = done.clone();
        let killer = std::thread::spawn(move || {
            for _ in 0..300 {
                std::thread::sleep(std::time::Duration::from_millis(100));
                if d2.load(std::sync::atomic::Ordering::Acquire) {
                    return false;
                }
            }
            // SAFETY: signalling our own child, which has not been reaped (we wait below).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            true
        });
        let out = child.wait_with_output().map_err(|e| format!("{p}: {e}"))?;
        done.store(true, std::sync::atomic::Ordering::Release);
        let timed_out = killer.join().unwrap_or(false);
        let code = out.status.code();
        if !matches!(code, Some(0) | Some(4)) {
            rc = 1;
        }
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        if timed_out {
            text.push_str("\nprivmem exec: killed after 30 s");
        }
        Line::from(ExecRecord { file: p.clone(), exit: code, output: text }).print();
    }
    Ok(rc)
}

/// `privmem argcheck [--emit DIR]`: the tables of `model/argcheck.rs`, or their family.
fn argcheck(a: &commands::ArgcheckArgs) -> Result<i32, String> {
    match a.emit.as_deref() {
        Some(dir) => {
            for (name, text) in crate::model::argcheck::family() {
                let p = std::path::Path::new(dir).join(&name);
                crate::report::write_atomic(&p, text.as_bytes()).map_err(|e| format!("{}: {e}", p.display()))?;
                if a.json {
                    let made =
                        Made { command: "argcheck".into(), out: Some(p.display().to_string()), ..Default::default() };
                    Line::from(made).print();
                }
            }
            if !a.json {
                println!("wrote the argument-check family to {dir}");
            }
        }
        None if a.json => {
            let made = Made {
                command: "argcheck".into(),
                text: Some(crate::model::argcheck::markdown()),
                ..Default::default()
            };
            Line::from(made).print();
        }
        None => print!("{}", crate::model::argcheck::markdown()),
    }
    Ok(0)
}

fn caps(a: &commands::CapsArgs) -> Result<i32, String> {
    let c = crate::backend::caps::Caps::probe();
    if a.json {
        Line::from(c).print();
    } else {
        print!("{}", c.words());
    }
    Ok(0)
}

fn print(a: &commands::PrintArgs) -> Result<i32, String> {
    for p in &a.positional {
        let (t, n) = if a.bin {
            // A fuzzer input, as the targets see it (no expectations).
            let mut s = crate::seq::codec::decode(&std::fs::read(p).map_err(|e| format!("{p}: {e}"))?);
            s.steps.iter_mut().for_each(|st| st.expect = None);
            (text::print(&s), s.steps.len())
        } else {
            let (src, s) = load_source(p)?;
            (crate::seq::print::print_keeping_comments(&src, &s), s.steps.len())
        };
        match a.json {
            true => {
                let made = Made {
                    command: "print".into(),
                    file: Some(p.clone()),
                    steps: Some(n),
                    text: Some(t),
                    ..Default::default()
                };
                Line::from(made).print();
            }
            false => print!("{t}"),
        }
    }
    Ok(0)
}

/// Write a command's output file; `-` is standard output.
pub(super) fn write_out(out: &str, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    match out {
        "-" => std::io::stdout().write_all(bytes).map_err(|e| format!("<stdout>: {e}")),
        p => crate::report::write_atomic(std::path::Path::new(p), bytes).map_err(|e| format!("{p}: {e}")),
    }
}

/// Say what a command made: its record with `--json`, else a line (on stderr where the output
/// itself went to standard output).
fn say(json: bool, out: &str, made: &Made, words: &str) {
    match (json, out) {
        (true, "-") => eprintln!("{}", Line::from(made.clone()).json()),
        (true, _) => Line::from(made.clone()).print(),
        (false, "-") => eprintln!("{words}"),
        (false, _) => println!("{words}"),
    }
}

/// `privmem completions SHELL`: the shell's completion script, from the declarations.
fn completions(a: &commands::CompletionsArgs) -> Result<i32, String> {
    use clap::CommandFactory;
    clap_complete::generate(a.shell, &mut commands::Cli::command(), "privmem", &mut std::io::stdout());
    Ok(0)
}

/// `privmem man [-o DIR]`: `privmem.1` and a page per command (`privmem-fuzz.1`, ...).
fn man(a: &commands::ManArgs) -> Result<i32, String> {
    use clap::CommandFactory;
    let dir = std::path::Path::new(&a.out);
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let cmd = commands::Cli::command();
    let mut pages = vec![("privmem".to_string(), cmd.clone())];
    for sub in cmd.get_subcommands() {
        let name = format!("privmem-{}", sub.get_name());
        pages.push((name.clone(), sub.clone().name(name)));
    }
    for (name, c) in pages {
        let mut buf = Vec::new();
        clap_mangen::Man::new(c).render(&mut buf).map_err(|e| format!("{name}: {e}"))?;
        let path = dir.join(format!("{name}.1"));
        crate::report::write_atomic(&path, &buf).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(0)
}
