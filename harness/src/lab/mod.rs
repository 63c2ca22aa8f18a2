//! The lab: private memory on real KVM under QEMU TCG. A small kernel (ci/lab/) boots with an
//! initramfs holding a static privmem as `/init`, the scenarios and the command to run; privmem
//! runs them against the nested KVM (SW_PROTECTED VMs, attributes, MEMORY_FAULT, pre-fault)
//! and prints JSON lines, which the host side collects.
//!
//! Results and the kernel's console go out on two serial ports: the console (ttyS0) carries
//! the kernel's messages, and privmem's stdout goes to ttyS1. On one port a printk could land
//! in the middle of a result line and lose that case (seen in CI: one JSON line of 393, broken
//! by a kernel message, and a baseline run that failed with "a lab VM gave no result").

pub mod coverage;
pub mod cpio;
pub mod profile;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// The line the guest side prints when it is done, with the command's exit code.
pub const DONE: &str = "PRIVMEM-LAB-DONE";
/// The line it prints after each command, with that command's exit code.
const CMD_DONE: &str = "PRIVMEM-LAB-CMD";

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

/// The lab VM's CPU model (see `boot_once`).
const LAB_CPU: &str = "max,erms=off,fsrm=off";

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
    // The results port: QEMU's pipe chardev writes ttyS1 into BASE.out and reads its input
    // from BASE.in (one FIFO for both would have QEMU read back its own output: characters
    // went missing). QEMU opens both read-write, so it never blocks on us; a thread of ours
    // reads BASE.out until QEMU is gone.
    let (base, fifo) = results_fifo().map_err(BootError::Other)?;
    let mut cmd = Command::new(&qemu);
    cmd.args(["-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-monitor", "none"])
        .arg("-chardev")
        .arg(format!("pipe,id=results,path={}", base.display()))
        .args(["-serial", "chardev:results"])
        // `max` for SVM (the nested KVM), less ERMS and FSRM: with them the kernel clears pages
        // with `rep stosb`, which TCG (7.2) runs a byte at a time; clear_page_erms was 12% of a
        // lab campaign's samples (a cpu-clock profile of the lab kernel). Without, `rep stosq`:
        // campaigns ran 12% more cases per second, and nothing KVM does depends on it.
        .args(["-machine", "pc", "-cpu", LAB_CPU, "-accel", "tcg", "-m", "2G", "-smp", "1", "-no-reboot"])
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
    let forward = |r: Box<dyn Read + Send>, tx: std::sync::mpsc::Sender<String>| {
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        })
    };
    forward(Box::new(stdout), tx.clone());
    // Opening the FIFO for reading waits for QEMU to open it; QEMU holds it read-write, so
    // the reader sees EOF only when QEMU is gone. The file is unlinked as soon as it is open.
    {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            if let Ok(f) = std::fs::File::open(&fifo) {
                let _ = std::fs::remove_file(&fifo);
                forward(Box::new(f), tx);
            }
        });
    }
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
    // Unblocks the opener if QEMU died before opening the FIFO (a bad command line), then
    // removes the FIFO whoever got there first.
    let _ = std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(&fifo);
    let _ = std::fs::remove_file(&fifo);
    let _ = std::fs::remove_file(base.with_extension("in"));
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

/// New FIFOs for one lab VM's results port, unique across the lab VMs of this process: the
/// base path QEMU is given and the `.out` FIFO to read.
fn results_fifo() -> Result<(std::path::PathBuf, std::path::PathBuf), String> {
    static NEXT: AtomicI32 = AtomicI32::new(0);
    let base = std::env::temp_dir().join(format!(
        "privmem-lab-results-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    for ext in ["in", "out"] {
        let p = base.with_extension(ext);
        let _ = std::fs::remove_file(&p);
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
        // SAFETY: mkfifo(3) with a valid C string.
        if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
            return Err(format!("{}: mkfifo: {}", p.display(), std::io::Error::last_os_error()));
        }
    }
    Ok((base.clone(), base.with_extension("out")))
}

/// In the lab VM: send stdout to the results port (ttyS1), leaving the console (stderr and the
/// kernel's messages) on ttyS0. Without the port (an older host side), stdout stays put.
fn stdout_to_results_port() {
    let Ok(f) = std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NOCTTY).open("/dev/ttyS1") else {
        return;
    };
    use std::os::fd::AsRawFd;
    // SAFETY: duplicating an open fd onto stdout; the File is leaked so the fd stays valid.
    unsafe {
        // Raw output: no \n to \r\n, no echo; the host reads bytes as they are written.
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(f.as_raw_fd(), &mut t) == 0 {
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(f.as_raw_fd(), libc::TCSANOW, &t);
        }
        libc::dup2(f.as_raw_fd(), 1);
    }
    std::mem::forget(f);
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
    stdout_to_results_port();
    // Commands, one argument per line, separated by a line `--next--`.
    let text = std::fs::read_to_string("/lab/args").unwrap_or_default();
    let mut rc = 0;
    for cmd in text.split("\n--next--\n") {
        let args: Vec<String> = cmd.lines().filter(|l| !l.is_empty()).map(String::from).collect();
        if args.is_empty() {
            continue;
        }
        let r = std::panic::catch_unwind(|| crate::cli::main(args.clone())).unwrap_or(101);
        println!("{CMD_DONE} {} rc={r}", args.first().map(String::as_str).unwrap_or(""));
        rc = rc.max(r);
    }
    println!("{DONE} rc={rc}");
    // SAFETY: flushing and powering off the lab VM; nothing else runs.
    unsafe {
        // The results port's last bytes (the done line) leave the UART before power-off.
        let _ = std::io::Write::flush(&mut std::io::stdout());
        libc::tcdrain(1);
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// A lab VM's line saying one of its commands could not run: exit 2 (an error) or a panic's
/// 101 (1 is a command's own verdict: a scenario failed, or findings).
pub fn failed_command(line: &str) -> Option<(String, i32)> {
    let (cmd, rc) = line.strip_prefix(CMD_DONE)?.strip_prefix(' ')?.rsplit_once(" rc=")?;
    let rc: i32 = rc.trim().parse().ok()?;
    (rc == 2 || rc >= 100).then(|| (cmd.to_string(), rc))
}

#[cfg(test)]
mod tests {
    use super::failed_command;

    #[test]
    fn a_command_that_could_not_run_is_named() {
        assert_eq!(failed_command("PRIVMEM-LAB-CMD fuzz rc=2"), Some(("fuzz".into(), 2)));
        assert_eq!(failed_command("PRIVMEM-LAB-CMD replay rc=101"), Some(("replay".into(), 101)));
        assert_eq!(failed_command("PRIVMEM-LAB-CMD fuzz rc=1"), None, "findings are a verdict");
        assert_eq!(failed_command("PRIVMEM-LAB-CMD caps rc=0"), None);
        assert_eq!(failed_command("lab0| PRIVMEM-LAB-CMD fuzz rc=2"), None, "console lines are not results");
    }
}
