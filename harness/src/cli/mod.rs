//! The `privmem` command. Exit codes: 0 all held, 1 a finding or a failed expectation, 2 bad
//! input or usage.

mod args;
mod bench;
pub mod corpus_cmd;
mod emulated;
pub mod events;
mod fuzz;
mod interrupt;
mod lab_baseline;
mod lab_build;
mod lab_cmd;
mod lab_files;
mod replay;
mod shrink_cmd;
pub mod spec;

pub use args::Args;

use crate::seq::{text, Knob, Sequence, Variant, VmType};

/// The top-level usage, made from the commands' own option tables.
pub fn usage() -> String {
    let mut o = String::from(
        "privmem: fuzzing and conformance harness for confidential-VM private memory under KVM\n\nusage:\n",
    );
    for sp in spec::SPECS {
        o.push_str(&sp.summary());
        o.push('\n');
    }
    o.push_str(
        "\n`privmem CMD --help` lists a command's options.\n\
         VM types: default, sw-protected, tdx, snp; variants: upstream, huge-v1, huge-v2, huge-v3.\n\
         Exit status: 0 all held, 1 a finding or failed expectation, 2 bad input or usage, 4 everything skipped (--tap).",
    );
    o
}

pub fn main(argv: Vec<String>) -> i32 {
    let Some((cmd, rest)) = argv.split_first() else {
        eprintln!("{}", usage());
        return 2;
    };
    // `privmem CMD --help`: the command's own option table.
    if rest.iter().any(|a| a == "--help" || a == "-h") {
        if let Some(sp) = spec::SPECS.iter().find(|s| s.name == cmd) {
            print!("{}", sp.usage());
            return 0;
        }
    }
    let r = match cmd.as_str() {
        "replay" => replay::run(rest),
        "fuzz" => fuzz::run(rest),
        "shrink" => shrink_cmd::run(rest),
        "bench" => bench::run(rest),
        "print" => print(rest),
        "caps" => caps(rest),
        "corpus" => corpus_cmd::run(rest),
        "export" => export(rest),
        "lab" => lab_cmd::run(rest),
        "coverage" => coverage(rest),
        "argcheck" => argcheck(rest),
        "plan" => plan(rest),
        "exec" => exec(rest),
        "help" | "--help" | "-h" => {
            println!("{}", usage());
            Ok(0)
        }
        other => Err(format!("unknown command `{other}`")),
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

fn export(argv: &[String]) -> Result<i32, String> {
    let a = spec::Spec::get("export").parse(argv)?;
    // `--kselftest=upstream FILE` or `--kselftest=standalone FILE`; `--kselftest FILE` is the
    // standalone flavour, as before.
    let (flavour, file) = match a.get("kselftest") {
        Some(f @ ("upstream" | "standalone")) => {
            (f, a.positional.first().map(String::as_str).ok_or("export: name the scenario FILE")?)
        }
        Some(file) => ("standalone", file),
        None => return Err("export: usage: privmem export --kselftest=upstream|standalone FILE -o OUT.c".into()),
    };
    let out = a.get("o").or(a.get("out")).ok_or("export: -o OUT.c is required")?;
    let (src, seq) = load_source(file)?;
    let c = match flavour {
        "upstream" => {
            let k = a.get("kernel").map(crate::model::kernel::kernel_arg).transpose()?.map(|m| m.release);
            crate::report::kselftest_upstream::export(&seq, file, &src, k)
        }
        _ => crate::report::kselftest::export(&seq, file),
    }
    .map_err(|e| format!("{file}: {e}"))?;
    crate::report::write_atomic(std::path::Path::new(out), c.as_bytes()).map_err(|e| format!("{out}: {e}"))?;
    println!("wrote {out} ({flavour}, {} steps)", seq.steps.len());
    Ok(0)
}

/// `privmem coverage [FILE|DIR...] [--runs N --vm T --variant V --seed N] -o OUT.html`
fn coverage(argv: &[String]) -> Result<i32, String> {
    use crate::campaign::{Campaign, CampaignConfig};
    use crate::oracle::run::run_model_cov;
    let a = spec::Spec::get("coverage").parse(argv)?;
    let out = a.get("o").or(a.get("out")).unwrap_or("coverage.html");
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
    if let Some(runs) = a.num("runs")? {
        let gen = crate::seq::gen::GenConfig {
            vm: a.get("vm").map(parse_vm).transpose()?,
            variant: a.get("variant").map(parse_variant).transpose()?,
            max_ops: 24,
            hazards: parse_hazards(a.get("hazards"))?,
        };
        let mut c = Campaign::new(CampaignConfig {
            gen,
            against: None,
            seed: a.num("seed")?.unwrap_or(1),
            ..Default::default()
        });
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
    crate::report::write_atomic(std::path::Path::new(out), page.as_bytes()).map_err(|e| format!("{out}: {e}"))?;
    println!("wrote {out} ({} sequences)", seqs.len());
    Ok(0)
}

/// `privmem plan FILE...`: the TDX or SNP set-up of each scenario (`backend/kvm/cvm.rs`).
fn plan(argv: &[String]) -> Result<i32, String> {
    let a = spec::Spec::get("plan").parse(argv)?;
    if a.positional.is_empty() {
        return Err("plan: name at least one FILE".into());
    }
    for p in &a.positional {
        let s = load(p)?;
        match crate::backend::kvm::cvm::plan_text(&s) {
            Some(t) => print!("# {p}: vm {}\n{t}", s.header.vm.name()),
            None => println!("# {p}: vm {} needs no confidential-VM set-up", s.header.vm.name()),
        }
    }
    Ok(0)
}

/// `privmem exec PROGRAM...`: run each program (made executable first: the lab's initramfs
/// carries them as plain files) and print one JSON record per program with its exit status and
/// output. Exit 0 when each passed or skipped (kselftest's 4), else 1.
fn exec(argv: &[String]) -> Result<i32, String> {
    use std::os::unix::fs::PermissionsExt;
    let a = spec::Spec::get("exec").parse(argv)?;
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
        let e = events::Event::Exec(events::ExecEvent { file: p.clone(), exit: code, output: text });
        println!("{}", e.to_json());
    }
    Ok(rc)
}

/// `privmem argcheck [--emit DIR]`: the tables of `model/argcheck.rs`, or their family.
fn argcheck(argv: &[String]) -> Result<i32, String> {
    let a = spec::Spec::get("argcheck").parse(argv)?;
    match a.get("emit") {
        Some(dir) => {
            for (name, text) in crate::model::argcheck::family() {
                let p = std::path::Path::new(dir).join(&name);
                crate::report::write_atomic(&p, text.as_bytes()).map_err(|e| format!("{}: {e}", p.display()))?;
            }
            println!("wrote the argument-check family to {dir}");
        }
        None => print!("{}", crate::model::argcheck::markdown()),
    }
    Ok(0)
}

fn caps(argv: &[String]) -> Result<i32, String> {
    let a = spec::Spec::get("caps").parse(argv)?;
    let c = crate::backend::caps::Caps::probe();
    if a.flag("json") {
        println!("{}", crate::report::records::Record::to_json(&c));
    } else {
        print!("{}", c.words());
    }
    Ok(0)
}

fn print(argv: &[String]) -> Result<i32, String> {
    let a = spec::Spec::get("print").parse(argv)?;
    for p in &a.positional {
        if a.flag("bin") {
            // A fuzzer input, as the targets see it (no expectations).
            let mut s = crate::seq::codec::decode(&std::fs::read(p).map_err(|e| format!("{p}: {e}"))?);
            s.steps.iter_mut().for_each(|st| st.expect = None);
            print!("{}", text::print(&s));
        } else {
            let (src, s) = load_source(p)?;
            print!("{}", crate::seq::print::print_keeping_comments(&src, &s));
        }
    }
    Ok(0)
}
