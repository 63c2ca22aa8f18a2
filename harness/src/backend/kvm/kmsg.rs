//! The kernel's own alarm: `WARNING:`, `BUG:`, KASAN (vmalloc out-of-bounds reads with
//! `KASAN_VMALLOC`), lockdep, soft-lockup, hung-task and RCU stall reports, read from
//! `/dev/kmsg` after every step, as syzkaller reads the console. A report whose text names KVM
//! (a `kvm` path or symbol anywhere in it) is the case's: on a shared host other drivers' warnings
//! are not ours, and in the lab everything that warns during a step came from our ioctls.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

/// The first line of each kind of report the kernel prints, and the kind's short name.
const STARTS: [(&str, &str); 11] = [
    // The lockup and stall detectors: a CPU or task held for seconds (a conversion too large to
    // finish, a livelock in the kernel). Named by the KVM function on the stack, not the time.
    ("watchdog: BUG: soft lockup", "soft-lockup"),
    ("INFO: task ", "hung-task"),
    ("rcu: INFO: rcu_", "rcu-stall"),
    ("WARNING: possible circular locking dependency", "lockdep"),
    ("WARNING: inconsistent lock state", "lockdep"),
    ("WARNING: suspicious RCU usage", "lockdep"),
    ("BUG: KASAN:", "KASAN"),
    ("WARNING:", "WARNING"),
    ("kernel BUG at", "BUG"),
    ("BUG:", "BUG"),
    ("general protection fault", "GPF"),
];

/// Lines kept after a report's first line: enough for the call trace.
const EXCERPT_LINES: usize = 60;

/// A report found during a step.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Splat {
    /// `KIND@where`: the kind and the code it names, without offsets or line numbers, so that
    /// the same report deduplicates across runs and kernels builds.
    pub title: String,
    /// The report as the kernel printed it.
    pub excerpt: Vec<String>,
}

pub struct Kmsg {
    file: std::fs::File,
    buf: Vec<u8>,
}

impl Kmsg {
    /// Open `/dev/kmsg` at its end: only what the kernel prints from now on is read.
    pub fn open() -> Result<Kmsg, String> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")
            .map_err(|e| format!("/dev/kmsg: {e}"))?;
        // SAFETY: lseek on our own fd; /dev/kmsg takes SEEK_END as "from now on".
        unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_END) };
        Ok(Kmsg { file, buf: vec![0; 16 << 10] })
    }

    /// The message lines printed since the last call (one record per read; EAGAIN ends).
    fn new_lines(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            match self.file.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => {
                    let rec = String::from_utf8_lossy(&self.buf[..n]);
                    // `prio,seq,ts,flags;text` then dictionary lines that start with a space.
                    if let Some(first) = rec.lines().next() {
                        if let Some((_, text)) = first.split_once(';') {
                            out.push(text.to_string());
                        }
                    }
                }
                // EPIPE: records were overwritten before we read them; go on from here.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(_) => break,
            }
        }
        out
    }

    /// The KVM reports printed since the last call. Where debugfs offers it, `WARN_ON_ONCE`
    /// is re-armed, so that a replay of the same case warns again and confirms the finding.
    pub fn splats(&mut self) -> Vec<Splat> {
        let lines = self.new_lines();
        let found = find_splats(&lines);
        if !found.is_empty() {
            let _ = std::fs::write("/sys/kernel/debug/clear_warn_once", "1");
        }
        found
    }
}

/// The reports in a run of console lines.
pub fn find_splats(lines: &[String]) -> Vec<Splat> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some((_, kind)) = STARTS.iter().find(|(s, _)| lines[i].trim_start().starts_with(s)) else {
            i += 1;
            continue;
        };
        let end = lines[i + 1..]
            .iter()
            .position(|l| STARTS.iter().any(|(s, _)| l.trim_start().starts_with(s)) || l.contains("---[ end trace"))
            .map(|p| i + 1 + p + lines[i + 1 + p].contains("---[ end trace") as usize)
            .unwrap_or(lines.len())
            .min(i + EXCERPT_LINES);
        let excerpt: Vec<String> = lines[i..end].to_vec();
        if excerpt.iter().any(|l| l.contains("kvm")) {
            let title = match *kind {
                "soft-lockup" | "hung-task" | "rcu-stall" => format!("{kind}@{}", first_kvm_frame(&excerpt)),
                // A fault names an address, which differs run to run: named by where it hit.
                "BUG" | "GPF" if lines[i].contains("page fault") || *kind == "GPF" => {
                    let what = if *kind == "GPF" { "general-protection-fault" } else { "page-fault" };
                    format!("{kind}:{what}@{}", rip(&excerpt).unwrap_or_else(|| first_kvm_frame(&excerpt)))
                }
                _ => title(kind, &lines[i]),
            };
            out.push(Splat { title, excerpt });
        }
        i = end.max(i + 1);
    }
    out
}

/// The function an oops hit, from its `RIP: 0010:tdx_sept_remove_leaf_spte+0x1c6/0x8f4` line.
fn rip(lines: &[String]) -> Option<String> {
    let at = lines.iter().find_map(|l| l.split_once("RIP: ")?.1.split_once(':').map(|(_, f)| f.to_string()))?;
    Some(at.split('+').next().unwrap_or(&at).trim().to_string())
}

/// The first call-trace frame that names KVM (` kvm_vm_set_mem_attributes+0x1f/0x90 [kvm]`,
/// `[<...>] kvm_gmem_get_pfn+0x...`), without its offset: where a lockup, a stall or a leak
/// is KVM's.
pub fn first_kvm_frame(lines: &[String]) -> String {
    lines
        .iter()
        .skip(1)
        .flat_map(|l| l.split_whitespace())
        .map(|w| w.trim_start_matches("? "))
        .filter(|w| w.contains('+') && w.contains("kvm"))
        .map(|w| w.split('+').next().unwrap_or(w).trim_start_matches(|c: char| !c.is_alphanumeric() && c != '_'))
        .next()
        .unwrap_or("kvm")
        .to_string()
}

/// `WARNING: CPU: 0 PID: 1 at arch/x86/kvm/mmu/mmu.c:6300 kvm_zap_gfn_range+0x3a/0x90` becomes
/// `WARNING@arch/x86/kvm/mmu/mmu.c:kvm_zap_gfn_range`; `BUG: KASAN: slab-use-after-free in
/// kvm_gmem_get_pfn+0x1c/0x80` becomes `KASAN:slab-use-after-free@kvm_gmem_get_pfn`.
fn title(kind: &str, line: &str) -> String {
    let sym = |s: &str| s.split('+').next().unwrap_or(s).to_string();
    if let Some((_, rest)) = line.split_once(" at ") {
        let mut w = rest.split_whitespace();
        let file = w.next().unwrap_or("").split(':').next().unwrap_or("").trim_end_matches('!');
        return match w.next() {
            Some(f) => format!("{kind}@{file}:{}", sym(f)),
            None => format!("{kind}@{file}"),
        };
    }
    if let Some((what, rest)) = line.split_once(" in ") {
        let what = what.rsplit(':').next().unwrap_or("").trim().replace(' ', "-");
        return format!("{kind}:{what}@{}", sym(rest.split_whitespace().next().unwrap_or("")));
    }
    let what = line.split_once(':').map(|(_, r)| r).unwrap_or(line);
    format!("{kind}:{}", what.trim().replace(' ', "-"))
}

/// The leaks kmemleak holds whose allocation backtrace names KVM (`/sys/kernel/debug/kmemleak`
/// after a `scan`; the debug flavour has it). kmemleak reports an object only once it is
/// older than five seconds, so a leak may belong to an earlier case than the one that asks.
pub fn kmemleak_scan() -> Option<Vec<Splat>> {
    let path = "/sys/kernel/debug/kmemleak";
    std::fs::write(path, "scan").ok()?;
    let text = std::fs::read_to_string(path).ok()?;
    let _ = std::fs::write(path, "clear");
    Some(parse_kmemleak(&text))
}

fn parse_kmemleak(text: &str) -> Vec<Splat> {
    let lines: Vec<String> = text.lines().map(String::from).collect();
    let starts: Vec<usize> =
        lines.iter().enumerate().filter(|(_, l)| l.starts_with("unreferenced object")).map(|(i, _)| i).collect();
    let mut out = Vec::new();
    for (n, &s) in starts.iter().enumerate() {
        let e = starts.get(n + 1).copied().unwrap_or(lines.len());
        let excerpt = lines[s..e].to_vec();
        if excerpt.iter().any(|l| l.contains("kvm")) {
            out.push(Splat { title: format!("kmemleak@{}", first_kvm_frame(&excerpt)), excerpt });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockups_stalls_and_leaks_are_named_by_their_kvm_frame() {
        let log = lines(
            "watchdog: BUG: soft lockup - CPU#1 stuck for 23s! [privmem:1]\n\
             Call Trace:\n <TASK>\n ? xa_store+0x10/0x20\n kvm_vm_set_mem_attributes+0x1f2/0x300 [kvm]\n\
             kvm_vm_ioctl+0x5/0x9\n\
             rcu: INFO: rcu_sched self-detected stall on CPU\n\
             \t(t=21003 jiffies g=1 q=2)\n kvm_mmu_zap_all+0x1/0x2\n",
        );
        let s = find_splats(&log);
        let t: Vec<&str> = s.iter().map(|s| s.title.as_str()).collect();
        assert_eq!(t, ["soft-lockup@kvm_vm_set_mem_attributes", "rcu-stall@kvm_mmu_zap_all"]);
        let leak = "unreferenced object 0xffff888003a1b000 (size 64):\n  comm \"privmem\", pid 1\n  backtrace (crc 0):\n\
                    \x20   [<ffffffff81234567>] __kmalloc_noprof+0x1/0x2\n    [<ffffffffa0001234>] kvm_gmem_bind+0x10/0x90\n\
                    unreferenced object 0xffff888003a1c000 (size 32):\n    [<ffffffff8100>] tty_open+0x1/0x2\n";
        let l = parse_kmemleak(leak);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].title, "kmemleak@kvm_gmem_bind");
    }

    fn lines(s: &str) -> Vec<String> {
        s.lines().map(String::from).collect()
    }

    #[test]
    fn a_kvm_warning_is_a_splat_with_a_stable_title() {
        let log = lines(
            "other: hello\n\
             WARNING: CPU: 0 PID: 1 at arch/x86/kvm/mmu/mmu.c:6300 kvm_zap_gfn_range+0x3a/0x90\n\
             Modules linked in:\n\
             Call Trace:\n \
             kvm_vm_ioctl+0x123/0x456\n\
             ---[ end trace 0000000000000000 ]---\n\
             later line",
        );
        let s = find_splats(&log);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].title, "WARNING@arch/x86/kvm/mmu/mmu.c:kvm_zap_gfn_range");
        assert_eq!(s[0].excerpt.len(), 5, "{:?}", s[0].excerpt);
    }

    #[test]
    fn kasan_and_lockdep_reports_are_named() {
        let log = lines(
            "BUG: KASAN: slab-use-after-free in kvm_gmem_get_pfn+0x1c/0x80\n\
             Read of size 8\n\
             WARNING: possible circular locking dependency detected\n\
             kvm/1234 is trying to acquire lock:",
        );
        let t: Vec<String> = find_splats(&log).into_iter().map(|s| s.title).collect();
        assert_eq!(
            t,
            ["KASAN:slab-use-after-free@kvm_gmem_get_pfn", "lockdep:possible-circular-locking-dependency-detected"]
        );
    }

    #[test]
    fn an_oops_is_named_by_where_it_hit_not_its_address() {
        let log = lines(
            "BUG: unable to handle page fault for address: ff1100000580d000\n\
             #PF: supervisor write access in kernel mode\n\
             RIP: 0010:tdx_sept_remove_leaf_spte+0x1c6/0x8f4\n\
             Call Trace:\n \
             ? kvm_tdp_mmu_unmap_gfn_range+0x96/0xb6",
        );
        let t: Vec<String> = find_splats(&log).into_iter().map(|s| s.title).collect();
        assert_eq!(t, ["BUG:page-fault@tdx_sept_remove_leaf_spte"]);
    }

    #[test]
    fn a_warning_that_does_not_name_kvm_is_not_ours() {
        let log = lines("WARNING: CPU: 1 PID: 7 at drivers/net/foo.c:12 foo_xmit+0x1/0x2\nCall Trace:\n foo_xmit");
        assert!(find_splats(&log).is_empty());
    }
}
