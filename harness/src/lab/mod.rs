//! The lab: private memory on real KVM under QEMU TCG. A small kernel (ci/lab/, one of the table
//! in [`kernels`]) boots with an initramfs holding a static privmem as `/init`, the scenarios and
//! a typed [`plan::Plan`] of the jobs to run; privmem runs them against the nested KVM
//! (SW_PROTECTED VMs, attributes, MEMORY_FAULT, pre-fault) and prints wire lines
//! ([`crate::wire::Line`]), which the host side's [`collect::Collector`] takes as they arrive.
//! The PID-1 side is `cli/lab_init.rs`.
//!
//! Results and the kernel's console go out on two serial ports: the console (ttyS0) carries
//! the kernel's messages, and privmem's stdout goes to ttyS1. On one port a printk could land
//! in the middle of a result line and lose that case (seen in CI: one JSON line of 393, broken
//! by a kernel message, and a baseline run that failed with "a lab VM gave no result").

pub mod collect;
pub mod coverage;
pub mod cpio;
pub mod kernels;
pub mod plan;
pub mod profile;
pub mod record;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// Build the initramfs: `/init` (a static privmem), the plan, and the named files under
/// [`plan::FILES_DIR`].
pub fn initramfs(init: &[u8], plan: &plan::Plan, files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut w = cpio::Writer::default();
    for d in ["dev", "proc", "sys", "tmp", "lab", plan::FILES_DIR] {
        w.dir(d);
    }
    w.file("init", 0o755, init);
    w.file(plan::PLAN_PATH, 0o644, &plan.to_bytes());
    for (name, data) in files {
        w.file(&format!("{}/{name}", plan::FILES_DIR), 0o644, data);
    }
    w.finish()
}

/// Which serial port a lab VM's line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    /// ttyS0: the kernel's console (its messages, privmem's stderr).
    Console,
    /// ttyS1: privmem's stdout, wire lines only.
    Results,
}

/// What the line handler tells the boot loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The VM said it is done: stop reading and power it off.
    Done,
}

/// How a lab VM's boot ended (everything it printed went to the line handler as it came).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The handler saw the done line.
    Done,
    /// The VM ran past the time limit and was killed; what QEMU said on stderr.
    TimedOut { limit_secs: u64, qemu: String },
    /// QEMU exited before the done line (a kernel panic, most likely).
    Exited,
}

/// PIDs of the QEMU children (one per lab VM running at once), for the Ctrl-C handler: nothing
/// is left running on any exit path. Atomics, because a signal handler may not take a lock.
static CHILDREN: [AtomicI32; 16] = [const { AtomicI32::new(0) }; 16];

extern "C" fn on_interrupt(sig: libc::c_int) {
    for c in &CHILDREN {
        let pid = c.load(Ordering::SeqCst);
        if pid > 0 {
            // SAFETY: kill(2) is async-signal-safe and takes any pid.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    // SAFETY: _exit(2) is async-signal-safe; nothing runs after it.
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
    mode: BootMode,
    limit: Duration,
    mut on_line: impl FnMut(Port, &str) -> Flow,
) -> Result<Ended, String> {
    for attempt in 1..=BOOT_TRIES {
        match boot_once(kernel, initrd, mode, limit, &mut on_line) {
            Err(BootError::BrokenClock(line)) => {
                eprintln!("lab: boot {attempt} came up with a broken clock (\"{line}\"; TCG under load), booting again")
            }
            Err(BootError::Other(e)) => return Err(e),
            Ok(ended) => return Ok(ended),
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
    mode: BootMode,
    limit: Duration,
    on_line: &mut impl FnMut(Port, &str) -> Flow,
) -> Result<Ended, BootError> {
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
        .args(["-machine", "pc", "-cpu", LAB_CPU, "-accel", "tcg", "-m", "2G", "-smp", mode.cpus(), "-no-reboot"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(format!("console=ttyS0 panic=-1 transparent_hugepage=always{}{}", tsc_hint(), mode.cmdline()))
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
    let (tx, rx) = std::sync::mpsc::channel::<(Port, String)>();
    let forward = |port: Port, r: Box<dyn Read + Send>, tx: std::sync::mpsc::Sender<(Port, String)>| {
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines().map_while(Result::ok) {
                if tx.send((port, line)).is_err() {
                    break;
                }
            }
        })
    };
    forward(Port::Console, Box::new(stdout), tx.clone());
    // Opening the FIFO for reading waits for QEMU to open it; QEMU holds it read-write, so
    // the reader sees EOF only when QEMU is gone. The file is unlinked as soon as it is open.
    {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            if let Ok(f) = std::fs::File::open(&fifo) {
                let _ = std::fs::remove_file(&fifo);
                forward(Port::Results, Box::new(f), tx);
            }
        });
    }
    let start = Instant::now();
    let mut done = false;
    let mut timed_out = false;
    let mut broken = None;
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok((port, l)) => {
                let l = l.trim_end_matches('\r');
                if port == Port::Console && BROKEN_CLOCK.iter().any(|m| l.contains(m)) {
                    broken = Some(l.to_string());
                    break;
                }
                if on_line(port, l) == Flow::Done {
                    done = true;
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
    // What the VM printed before it was killed or died is still in the pipes: nothing it saw
    // is lost (the forwarding threads end at EOF, QEMU being gone).
    if !done && broken.is_none() {
        while let Ok((port, l)) = rx.recv_timeout(Duration::from_millis(300)) {
            if on_line(port, l.trim_end_matches('\r')) == Flow::Done {
                done = true;
                break;
            }
        }
    }
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
    if timed_out && !done {
        let mut qemu = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut qemu);
        }
        return Ok(Ended::TimedOut { limit_secs: limit.as_secs(), qemu });
    }
    Ok(if done { Ended::Done } else { Ended::Exited })
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

/// One lab VM to boot: its initramfs and what its files are called.
pub struct VmSpec {
    pub initrd: Vec<u8>,
    pub names: Vec<(String, String)>,
    /// The boot mode's kernel parameters, after the lab's own ([`BootMode::cmdline`]).
    pub mode: BootMode,
}

/// How a lab kernel boots: as an ordinary KVM host (kvm_amd on TCG's SVM), or with privmem's
/// software TDX module answering every SEAMCALL (the `--tdx` flavour, docs/tdx-lab.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BootMode {
    #[default]
    Standard,
    /// `tdx_soft`: kvm_intel with TDX on the simulated module. `nohibernate` because TDX host
    /// support refuses to start while hibernation is possible.
    SoftTdx,
    /// The same, the module offering the huge-page interface (`tdx_soft_huge`): with
    /// ENHANCED_DEMOTE_INTERRUPTIBILITY unless `interruptible`.
    SoftTdxHuge { interruptible: bool },
}

impl BootMode {
    /// The lab VM's CPUs: KVM caps a TD's vCPUs at the host's present CPUs (tdx_vm_init), and
    /// the corpus's TDX scenarios use two.
    pub fn cpus(self) -> &'static str {
        match self {
            BootMode::Standard => "1",
            BootMode::SoftTdx | BootMode::SoftTdxHuge { .. } => "2",
        }
    }

    pub fn cmdline(self) -> &'static str {
        match self {
            BootMode::Standard => "",
            BootMode::SoftTdx => " tdx_soft nohibernate kvm_intel.tdx=1",
            BootMode::SoftTdxHuge { interruptible: false } => " tdx_soft tdx_soft_huge nohibernate kvm_intel.tdx=1",
            BootMode::SoftTdxHuge { interruptible: true } => {
                " tdx_soft tdx_soft_huge=interruptible nohibernate kvm_intel.tdx=1"
            }
        }
    }
}

/// Boot each VM (at once, one thread each) and read its lines through a [`collect::Collector`];
/// `on_line` sees each wire line as it arrives, with that VM's index and collector, to act on it
/// then (print a result, write a finding). `PRIVMEM_LAB_VERBOSE` echoes the VMs' lines on
/// stderr; `PRIVMEM_LAB_RECORD=DIR` records them (`vmJ.console`, a port letter per line) for
/// the collector's offline tests.
pub fn run_vms(
    kernel: &Path,
    vms: Vec<VmSpec>,
    limit: Duration,
    on_line: &(dyn Fn(usize, &collect::Collector, &crate::wire::Line) + Sync),
) -> Vec<Result<collect::VmOutcome, String>> {
    let verbose = std::env::var_os("PRIVMEM_LAB_VERBOSE").is_some();
    let record = std::env::var_os("PRIVMEM_LAB_RECORD").map(std::path::PathBuf::from);
    std::thread::scope(|sc| {
        let handles: Vec<_> = vms
            .into_iter()
            .enumerate()
            .map(|(j, vm)| {
                let record = record.clone();
                sc.spawn(move || {
                    let initrd = std::env::temp_dir().join(format!("privmem-lab-{}-{j}.cpio", std::process::id()));
                    std::fs::write(&initrd, &vm.initrd).map_err(|e| format!("{}: {e}", initrd.display()))?;
                    let mut c = collect::Collector::new(vm.names);
                    let mut rec = Vec::new();
                    let ended = boot(kernel, &initrd, vm.mode, limit, |port, l| {
                        if verbose {
                            eprintln!("lab{j}| {l}");
                        }
                        if record.is_some() {
                            rec.push(format!("{} {l}", if port == Port::Console { 'C' } else { 'R' }));
                        }
                        let (line, flow) = c.feed(port, l);
                        if let Some(line) = line {
                            on_line(j, &c, &line);
                        }
                        flow
                    });
                    let _ = std::fs::remove_file(&initrd);
                    if let Some(dir) = &record {
                        let p = dir.join(format!("vm{j}.console"));
                        let _ = std::fs::create_dir_all(dir);
                        std::fs::write(&p, rec.join("\n") + "\n").map_err(|e| format!("{}: {e}", p.display()))?;
                    }
                    Ok(c.finish(ended?))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("lab VM thread panicked".into()))).collect()
    })
}
