//! Reports: findings written atomically as a replayable `.seq` and a `.json` beside it.

pub mod c_style;
pub mod coverage;
pub mod junit;
pub mod kselftest;
pub mod kselftest_upstream;
pub mod kselftest_upstream_parts;
pub mod records;
pub mod tap;

use crate::oracle::Finding;
use crate::seq::{text, Sequence};
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Write `bytes` to `path` so that a reader (or an interrupted run) sees the old file or the
/// whole new one, never a part: write a temporary file beside it, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp =
        dir.join(format!(".{}.tmp{}", path.file_name().and_then(|n| n.to_str()).unwrap_or("out"), std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// privmem's own version for a finding: `git describe` of the checkout it was built from, or
/// the crate version where it was built outside one (build.rs).
pub fn privmem_version() -> String {
    crate::VERSION.to_string()
}

/// What a finding was found on, for its `.json`: privmem's version, the kernel (release and
/// the named kernel the model ran as), and, on a real backend, its capabilities.
pub fn provenance(model_kernel: crate::seq::Release, caps: Option<&crate::backend::caps::Caps>) -> records::FoundOn {
    records::FoundOn {
        privmem: privmem_version(),
        model_kernel: Some(model_kernel.to_string()),
        kernel_release: caps.map(|c| c.release.clone()),
        drift: caps.and_then(|c| c.drift.clone()),
        lab_config: None,
        caps: caps.cloned(),
    }
}

/// A stable short name for a signature: FNV-1a, hex.
pub fn sig_hash(sig: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in sig.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The text of a finding's reproducer: comments saying what it shows and how to replay it
/// (`replay` is the command, the file's path last), then the sequence.
pub fn finding_seq_text(signature: &str, detail: &str, sequence: &str, replay: &str) -> String {
    let mut o = String::new();
    o.push_str(&format!("# finding: {signature}\n"));
    for line in detail.lines() {
        o.push_str(&format!("# {line}\n"));
    }
    o.push_str(&format!("# replay: {replay} FILE\n"));
    o.push_str(sequence);
    o
}

/// Write a finding as the directory `<dir>/<kind>-<hash>-<hash>/`; returns its `case.seq`.
pub fn write_finding(
    dir: &Path,
    f: &Finding,
    seq: &Sequence,
    replay_args: &str,
    origin: records::FindingOrigin,
) -> std::io::Result<PathBuf> {
    let replay = format!("privmem replay{replay_args}");
    write_finding_files(dir, f, &text::print(seq), &replay, origin)
}

/// A finding's directory name: its kind, its signature's hash and its reproducer's, so that two
/// reproducers never share a name and the same one found twice (by two campaigns into one
/// `--out`) is one directory.
pub fn finding_name(signature: &str, sequence: &str) -> String {
    let kind = signature.parse::<crate::oracle::signature::Signature>().map(|s| s.kind).unwrap_or("finding".into());
    format!("{kind}-{}-{}", &sig_hash(signature)[..8], &sig_hash(sequence)[..8])
}

/// The marker of a directory or file being written (`.NAME.tmp-PID-N`), which
/// [`clean_temporaries`] removes once its writer is gone.
const TMP_MARK: &str = ".tmp-";

/// The one writer of finding files, for findings made here and those a lab VM reported. Every
/// file (`case.seq`, `finding.json`, `REPORT.md`, the C reproducers, `kernel.log`) is written in
/// a temporary directory, which is then renamed into place as one unit: a finding is there
/// whole or not at all, whenever the run is stopped.
pub fn write_finding_files(
    dir: &Path,
    finding: &Finding,
    sequence: &str,
    replay: &str,
    origin: records::FindingOrigin,
) -> std::io::Result<PathBuf> {
    static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let signature = &finding.signature();
    let detail = &finding.detail;
    let name = finding_name(signature, sequence);
    let place = dir.join(&name);
    let seq_path = place.join("case.seq");
    if seq_path.exists() {
        return Ok(seq_path);
    }
    std::fs::create_dir_all(dir)?;
    let n = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}{TMP_MARK}{}-{n}", std::process::id()));
    std::fs::create_dir(&tmp)?;
    let written = (|| {
        write_atomic(&tmp.join("case.seq"), finding_seq_text(signature, detail, sequence, replay).as_bytes())?;
        let json = records::FindingFile {
            signature: signature.clone(),
            finding: finding.clone(),
            sequence: sequence.into(),
            replay: format!("{replay} {}", seq_path.display()),
            origin,
        };
        write_atomic(&tmp.join("finding.json"), serde_json::to_string_pretty(&json).unwrap_or_default().as_bytes())?;
        write_report_dir(&tmp, signature, detail, sequence, &json.replay, &json.origin)?;
        std::fs::File::open(&tmp)?.sync_all()
    })();
    let placed = written.and_then(|()| std::fs::rename(&tmp, &place));
    match placed {
        Ok(()) => Ok(seq_path),
        // Another campaign placed the same reproducer first: it is on disk, whole.
        Err(_) if seq_path.exists() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(seq_path)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

/// Remove what writers that are gone left half-written in `dir` (a campaign killed between
/// its writes): `.NAME.tmp-PID-N` directories and `write_atomic`'s `.NAME.tmpPID` files whose
/// process no longer runs. A live campaign's are left alone. Returns how many went.
pub fn clean_temporaries(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix('.') else { continue };
        let Some((_, tail)) = rest.rsplit_once(".tmp") else { continue };
        let digits: String = tail.trim_start_matches('-').chars().take_while(|c| c.is_ascii_digit()).collect();
        let Ok(pid) = digits.parse::<i32>() else { continue };
        // SAFETY: signal 0 only asks whether the process exists.
        let alive = pid > 0
            && (unsafe { libc::kill(pid, 0) } == 0
                || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM));
        if alive {
            continue;
        }
        let p = e.path();
        let gone = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
        removed += gone.is_ok() as usize;
    }
    removed
}

/// An output directory a run will write into, checked before the run starts: created, with
/// a file written and removed there, and what earlier runs left half-written cleaned up.
pub fn prepare_out_dir(dir: &Path) -> Result<(), String> {
    let probe = dir.join(format!(".probe{TMP_MARK}{}-0", std::process::id()));
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&probe, b""))
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| format!("{}: cannot write findings there: {e}", dir.display()))?;
    let n = clean_temporaries(dir);
    if n > 0 {
        eprintln!(
            "privmem: removed {n} half-written temporar{} an earlier run left in {}",
            if n == 1 { "y" } else { "ies" },
            dir.display()
        );
    }
    Ok(())
}

/// An output file a run will write at its end (`--junit`), checked before the run starts.
pub fn check_out_file(path: &Path) -> Result<(), String> {
    let existed = path.exists();
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("{}: cannot write it: {e}", path.display()))?;
    if !existed {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// The rest of a finding's directory, ready to send to the KVM list: the reproducer in both C
/// flavours where the VM type allows, the kernel's log excerpt where it reported something, and
/// a `REPORT.md` in the shape of a bug report.
fn write_report_dir(
    d: &Path,
    signature: &str,
    detail: &str,
    sequence: &str,
    replay: &str,
    origin: &records::FindingOrigin,
) -> std::io::Result<()> {
    let found = &origin.found_on;
    let mut notes = Vec::new();
    let kernel = found.model_kernel.as_deref().and_then(crate::seq::Release::parse);
    match text::parse("case.seq", sequence) {
        Ok(seq) => {
            match kselftest_upstream::export(&seq, "case.seq", sequence, kernel) {
                Ok(c) => write_atomic(&d.join("privmem_case.c"), c.as_bytes())?,
                Err(e) => notes.push(format!("no upstream kselftest: {e}")),
            }
            match kselftest::export(&seq, "case.seq") {
                Ok(c) => write_atomic(&d.join("repro.c"), c.as_bytes())?,
                Err(e) => notes.push(format!("no standalone C: {e}")),
            }
        }
        Err(e) => notes.push(format!("the sequence does not parse: {e}")),
    }
    let log = detail.split_once("the kernel reported:\n").map(|(_, l)| l.to_string());
    if let Some(l) = &log {
        write_atomic(&d.join("kernel.log"), l.as_bytes())?;
    }
    let kind = signature.parse::<crate::oracle::signature::Signature>().map(|s| s.kind).unwrap_or("finding".into());
    let mut r = String::new();
    let _ = writeln!(r, "# {signature}\n");
    if let Some(p) = &origin.planted {
        let _ = writeln!(
            r,
            "**Planted:** found with the seeded model bug `{p}` planted (`--plant`): it shows the harness at work, not a bug of KVM or of the series.\n"
        );
    }
    let _ = writeln!(r, "## What happened\n\n{}\n", detail.lines().next().unwrap_or(""));
    let _ = writeln!(
        r,
        "## What the model expected\n\n{}\n",
        match kind.as_str() {
            "divergence" => "The outcome or mapping the model allows is in the line above (`the model allows ...`); the kernel did otherwise.",
            "kernel-splat" => "No kernel report: the model's run of the case is clean.",
            "livelock" => "Every guest access finishes within a bounded number of host exits.",
            "silent-data-loss" => "A page the guest accepted keeps its value until an event the guest sees.",
            _ => "See the finding's detail in the `.json`.",
        }
    );
    let _ = writeln!(
        r,
        "## Where\n\n- kernel: {} (modelled as {})\n- privmem: {}\n- lab config: {}\n",
        found.kernel_release.as_deref().unwrap_or("(the model alone)"),
        found.model_kernel.as_deref().unwrap_or("?"),
        found.privmem,
        found.lab_config.as_deref().unwrap_or("-")
    );
    if let Some(d) = &found.drift {
        let _ = writeln!(r, "**Drift:** {d}.\n");
    }
    let _ = writeln!(r, "## Reproduce\n\n    {replay}\n");
    if d.join("privmem_case.c").exists() {
        r.push_str("A KVM selftest of it: `privmem_case.c`, for `tools/testing/selftests/kvm/x86/`.\n");
    }
    if d.join("repro.c").exists() {
        r.push_str("A self-contained C reproducer: `repro.c` (`gcc -o repro repro.c && ./repro`).\n");
    }
    if log.is_some() {
        r.push_str("The kernel's report: `kernel.log`.\n");
    }
    for n in &notes {
        let _ = writeln!(r, "\n({n})");
    }
    let _ = writeln!(r, "\n## The case\n\n```\n{}```", sequence);
    write_atomic(&d.join("REPORT.md"), r.as_bytes())
}
