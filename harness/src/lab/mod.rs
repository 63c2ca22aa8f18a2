//! The lab: private memory on real KVM under QEMU TCG. A small kernel (ci/lab/) boots with an
//! initramfs holding a static privmem as `/init`, the scenarios and the command to run; privmem
//! runs them against the nested KVM (SW_PROTECTED VMs, attributes, MEMORY_FAULT, pre-fault)
//! and prints JSON lines on the serial console, which the host side collects.

pub mod coverage;
pub mod cpio;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// The line the guest side prints when it is done, with the command's exit code.
pub const DONE: &str = "PRIVMEM-LAB-DONE";

/// Build the initramfs: `/init` (a static privmem), `/lab/args` (one argument per line), and
/// the named files under `/corpus/`.
pub fn initramfs(init: &[u8], args: &[String], files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut w = cpio::Writer::default();
    for d in ["dev", "proc", "sys", "tmp", "lab", "corpus"] {
        w.dir(d);
    }
    w.file("init", 0o755, init);
    w.file("lab/args", 0o644, args.join("\n").as_bytes());
    for (name, data) in files {
        w.file(&format!("corpus/{name}"), 0o644, data);
    }
    w.finish()
}

/// PIDs of the QEMU children (one per lab VM running at once), for the Ctrl-C handler: nothing
/// is left running on any exit path. Atomics, because a signal handler may not take a lock.
static CHILDREN: [AtomicI32; 16] = [const { AtomicI32::new(0) }; 16];

extern "C" fn on_interrupt(sig: libc::c_int) {
    for c in &CHILDREN {
        let pid = c.load(Ordering::SeqCst);
        if pid > 0 {
            // SAFETY: kill and _exit are async-signal-safe.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    unsafe { libc::_exit(128 + sig) };
}

/// Remember a child in a free slot; returns the slot.
fn register(pid: i32) -> Option<usize> {
    CHILDREN.iter().position(|c| c.compare_exchange(0, pid, Ordering::SeqCst, Ordering::SeqCst).is_ok())
}

/// Boot `kernel` with `initrd` under QEMU TCG and return the serial console's lines. The run is
/// killed at `limit`; the child also dies with us (PR_SET_PDEATHSIG) and on Ctrl-C.
/// What the lab kernel prints when it booted without a working timer. Under TCG on a loaded
/// machine the boot-time calibrations (TSC against the PIT, then the local APIC timer against
/// the TSC) can fail; the kernel then runs on the PIT and jiffies, and a nested guest never
/// returns from VMRUN: every case "times out at step 1". Such a boot is useless, not a finding.
const BROKEN_CLOCK: [&str; 2] =
    ["APIC timer disabled due to verification failure", "Switched to clocksource refined-jiffies"];

/// Under TCG the guest's TSC is the host's, so the host's TSC frequency spares the lab kernel
/// its boot-time TSC calibration against the PIT, the first thing load breaks.
fn tsc_hint() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let constant = cpuinfo.lines().any(|l| l.starts_with("flags") && l.contains(" constant_tsc"));
    let mhz = cpuinfo.lines().find_map(|l| {
        l.strip_prefix("cpu MHz").and_then(|r| r.trim_start_matches([' ', '\t', ':']).trim().parse::<f64>().ok())
    });
    match mhz {
        Some(m) if constant && m > 100.0 => format!(" tsc_early_khz={} tsc=reliable", (m * 1000.0) as u64),
        _ => String::new(),
    }
}

/// Boots tried before a broken clock is reported as an error.
const BOOT_TRIES: u32 = 6;

/// Boot as [`boot_once`] does, booting again (up to [`BOOT_TRIES`] times) when the kernel came
/// up with a broken clock; says so on stderr.
pub fn boot(
    kernel: &Path,
    initrd: &Path,
    limit: Duration,
    mut on_line: impl FnMut(&str),
) -> Result<Vec<String>, String> {
    for attempt in 1..=BOOT_TRIES {
        match boot_once(kernel, initrd, limit, &mut on_line) {
            Err(BootError::BrokenClock(line)) => {
                eprintln!("lab: boot {attempt} came up with a broken clock (\"{line}\"; TCG under load), booting again")
            }
            Err(BootError::Other(e)) => return Err(e),
            Ok(lines) => return Ok(lines),
        }
    }
    Err(format!("the lab kernel came up with a broken clock {BOOT_TRIES} times in a row (machine too loaded?)"))
}

enum BootError {
    BrokenClock(String),
    Other(String),
}

fn boot_once(
    kernel: &Path,
    initrd: &Path,
    limit: Duration,
    on_line: &mut impl FnMut(&str),
) -> Result<Vec<String>, BootError> {
    let qemu = std::env::var("PRIVMEM_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into());
    let mut cmd = Command::new(&qemu);
    cmd.args(["-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-monitor", "none"])
        .args(["-machine", "pc", "-cpu", "max", "-accel", "tcg", "-m", "2G", "-smp", "1", "-no-reboot"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(format!("console=ttyS0 panic=-1 transparent_hugepage=always{}", tsc_hint()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: prctl in the child before exec only.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| BootError::Other(format!("{qemu}: {e} (install qemu-system-x86; ci/lab/build-kernel.sh does)")))?;
    let slot = register(child.id() as i32);
    // SAFETY: installing a handler that only kills the child and exits.
    unsafe {
        libc::signal(libc::SIGINT, on_interrupt as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_interrupt as *const () as libc::sighandler_t);
    }
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let mut lines = Vec::new();
    let mut timed_out = false;
    let mut broken = None;
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(l) => {
                let l = l.trim_end_matches('\r').to_string();
                on_line(&l);
                let done = l.starts_with(DONE);
                if BROKEN_CLOCK.iter().any(|m| l.contains(m)) {
                    broken = Some(l.clone());
                    break;
                }
                lines.push(l);
                if done {
                    break;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if start.elapsed() > limit {
            timed_out = true;
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    if let Some(s) = slot {
        CHILDREN[s].store(0, Ordering::SeqCst);
    }
    if let Some(l) = broken {
        return Err(BootError::BrokenClock(l));
    }
    if timed_out {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        return Err(BootError::Other(format!(
            "the lab VM did not finish within {}s (killed){}",
            limit.as_secs(),
            if err.is_empty() { String::new() } else { format!("; qemu: {err}") }
        )));
    }
    Ok(lines)
}

/// When privmem is PID 1 in the lab's initramfs: mount what it needs, run the command in
/// `/lab/args`, print the done line and power off.
pub fn init_main() -> ! {
    let mount = |src: &str, dst: &str, fs: &str| {
        let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
        let (src, dst, fs) = (c(src), c(dst), c(fs));
        // SAFETY: plain mount(2) with valid C strings.
        unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) };
    };
    mount("proc", "/proc", "proc");
    mount("sysfs", "/sys", "sysfs");
    mount("devtmpfs", "/dev", "devtmpfs");
    mount("tmpfs", "/tmp", "tmpfs");
    // Where the kernel has debugfs (the debug flavour): clear_warn_once and KCOV live there.
    mount("debugfs", "/sys/kernel/debug", "debugfs");
    // Commands, one argument per line, separated by a line `--next--`.
    let text = std::fs::read_to_string("/lab/args").unwrap_or_default();
    let mut rc = 0;
    for cmd in text.split("\n--next--\n") {
        let args: Vec<String> = cmd.lines().filter(|l| !l.is_empty()).map(String::from).collect();
        if args.is_empty() {
            continue;
        }
        let r = std::panic::catch_unwind(|| crate::cli::main(args.clone())).unwrap_or(101);
        println!("PRIVMEM-LAB-CMD {} rc={r}", args.first().map(String::as_str).unwrap_or(""));
        rc = rc.max(r);
    }
    println!("{DONE} rc={rc}");
    // SAFETY: flushing and powering off the lab VM; nothing else runs.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}
