//! privmem as PID 1 in the lab's initramfs: mount what it needs, quiet the console, run the
//! plan's jobs in order (each a privmem command), report each job's end and the plan's on the
//! results port, and power off. A watchdog thread names the case in progress when it runs for
//! long or when the plan's deadline nears (`lab.stuck`).

use crate::lab::plan::{Plan, PLAN_PATH};
use crate::oracle::progress;
use crate::wire::Line;
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

/// A case running this long is named on the results port (once).
const STUCK_SECS: u64 = 60;
/// How long before the plan's deadline the jobs are asked to stop after their case in progress
/// (a campaign then ends with its summary), and how long before it a case still running is
/// named, whatever its age.
const STOP_MARGIN_SECS: u64 = 30;
const NAME_MARGIN_SECS: u64 = 10;
/// The console's log level once the lab is up: only KERN_EMERG and KERN_ALERT (panics, oopses)
/// reach the serial console. Under TCG each console character costs an emulated port write,
/// and a WARN storm on the console once slowed a lab past its deadline; the splat oracle reads
/// `/dev/kmsg`, which keeps every level.
const CONSOLE_LOGLEVEL: libc::c_int = 2;
/// syslog(2)'s SYSLOG_ACTION_CONSOLE_LEVEL.
const SYSLOG_ACTION_CONSOLE_LEVEL: libc::c_int = 8;

pub fn init_main() -> ! {
    let mount = |src: &str, dst: &str, fs: &str| {
        let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
        let (src, dst, fs) = (c(src), c(dst), c(fs));
        // SAFETY: plain mount(2) with valid C strings that outlive the call.
        unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) };
    };
    mount("proc", "/proc", "proc");
    mount("sysfs", "/sys", "sysfs");
    mount("devtmpfs", "/dev", "devtmpfs");
    mount("tmpfs", "/tmp", "tmpfs");
    // Where the kernel has debugfs (the debug flavour): clear_warn_once and KCOV live there.
    mount("debugfs", "/sys/kernel/debug", "debugfs");
    stdout_to_results_port();
    // SAFETY: syslog(2) with a null buffer: the console-level action reads none.
    unsafe { libc::klogctl(SYSLOG_ACTION_CONSOLE_LEVEL, std::ptr::null_mut(), CONSOLE_LOGLEVEL) };
    let started = Instant::now();
    let plan = std::fs::read(format!("/{PLAN_PATH}")).map_err(|e| format!("/{PLAN_PATH}: {e}"));
    let rc = match plan.and_then(|b| Plan::from_bytes(&b)) {
        Ok(plan) => run(&plan, started),
        Err(e) => {
            eprintln!("privmem lab init: {e}");
            2
        }
    };
    let tdx_module = match crate::backend::kvm::soft_tdx::present() {
        true => crate::backend::kvm::soft_tdx::contention().unwrap_or_default(),
        false => Vec::new(),
    };
    Line::LabDone { rc, stopped: progress::stopping(), tdx_module }.print();
    power_off()
}

fn run(plan: &Plan, started: Instant) -> i32 {
    progress::arm();
    let at = |margin: u64| (plan.deadline_secs > margin).then(|| plan.deadline_secs - margin);
    let (stop_at, name_at) = (at(STOP_MARGIN_SECS), at(NAME_MARGIN_SECS));
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = started.elapsed().as_secs();
        if stop_at.is_some_and(|t| now >= t) {
            progress::stop();
        }
        if let Some(s) = progress::overdue(STUCK_SECS, name_at.is_some_and(|t| now >= t)) {
            Line::from(s).print();
        }
    });
    let mut rc = 0;
    for job in &plan.jobs {
        if progress::stopping() {
            break;
        }
        let kind = job.kind();
        progress::job(kind.name());
        let r = std::panic::catch_unwind(|| super::main(job.argv())).unwrap_or(101);
        Line::JobDone { job: kind, rc: r }.print();
        rc = rc.max(r);
    }
    rc
}

/// In the lab VM: send stdout to the results port (ttyS1), leaving the console (stderr and the
/// kernel's messages) on ttyS0. Without the port, stdout stays put.
fn stdout_to_results_port() {
    let Ok(f) = std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NOCTTY).open("/dev/ttyS1") else {
        return;
    };
    use std::os::fd::AsRawFd;
    // SAFETY: termios calls on an open tty fd, then duplicating it onto stdout; the File is
    // leaked so the fd stays valid.
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

fn power_off() -> ! {
    // The results port's last bytes (the done line) leave the UART before power-off.
    let _ = std::io::Write::flush(&mut std::io::stdout());
    // SAFETY: draining stdout's tty, syncing and powering off the lab VM; nothing else runs.
    unsafe {
        libc::tcdrain(1);
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}
