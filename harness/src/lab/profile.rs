//! Where a lab campaign's CPU goes: a cpu-clock profile of the lab VM (`privmem lab --profile`),
//! the kernel's share by function (from the lab kernel's vmlinux), privmem's own and the nested
//! guest's. It showed `clear_page_erms` at 12% (TCG runs `rep stosb` a byte at a time), and
//! that the rest is the cases' own kernel work: what a kernel change makes slower shows here.

use crate::backend::mem::Mapping;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// One sample every 500 µs of CPU time: under TCG each sample's interrupt is dear (at 100 µs a
/// campaign ran at less than half its speed).
const PERIOD_NS: u64 = 500_000;
/// Each CPU's sample buffer: 16 bytes a sample, so about 2 min of CPU time; a longer campaign
/// keeps its last 2 min and says so (`dropped`).
const PAGES: usize = 1024;
/// `PERF_RECORD_SAMPLE`, and the CPU modes of a record's `misc` (include/uapi/linux/perf_event.h).
const RECORD_SAMPLE: u32 = 9;
const MISC_CPUMODE_MASK: u16 = 7;
const MISC_KERNEL: u16 = 1;
const MISC_USER: u16 = 2;
/// Call-chain entries at or above this are context markers (`PERF_CONTEXT_MAX`), not frames.
const CONTEXT_MAX: u64 = -4095i64 as u64;
/// Frames kept of each kernel sample: its function and the callers that say why it ran.
const FRAMES: usize = 4;
/// perf_event_open(2)'s `PERF_FLAG_FD_CLOEXEC`.
const PERF_FLAG_FD_CLOEXEC: u64 = 8;
/// `PERF_EVENT_IOC_DISABLE`: `_IO('$', 1)`.
const IOC_DISABLE: u64 = vmm_sys_util::ioctl::ioctl_expr(vmm_sys_util::ioctl::_IOC_NONE, b'$' as u32, 1, 0) as u64;

/// The samples of a campaign, as the lab VM sends them.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ProfileRecord {
    pub period_ns: u64,
    /// Samples in the kernel, in user space (privmem) and in the nested guest.
    pub kernel: u64,
    pub user: u64,
    pub guest: u64,
    /// The oldest samples were overwritten.
    pub dropped: bool,
    /// Kernel samples by call chain: the instruction pointer, then up to three callers.
    pub chains: Vec<(Vec<u64>, u64)>,
}

/// One CPU's event and its sample buffer (a metadata page, then `PAGES` pages).
struct Cpu {
    fd: OwnedFd,
    buf: Mapping,
}

/// A sampler on every online CPU, all tasks, from `start` to `finish`.
pub struct Sampler {
    cpus: Vec<Cpu>,
}

fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }).max(1) as usize
}

impl Sampler {
    pub fn start() -> Result<Sampler, String> {
        // struct perf_event_attr as far as PERF_ATTR_SIZE_VER0 (64 bytes): type SOFTWARE (1),
        // size, config CPU_CLOCK (0), sample_period, sample_type IP|CALLCHAIN (0x21), and of
        // the flags only exclude_callchain_user (bit 22: user stacks are not walked); enabled
        // at once.
        let mut attr = [0u64; 8];
        attr[0] = 1 | (64 << 32);
        attr[2] = PERIOD_NS;
        attr[3] = 0x21;
        attr[5] = 1 << 22;
        let mut cpus = Vec::new();
        for cpu in 0..online_cpus() {
            // SAFETY: perf_event_open(2) with an attr we own; the fd is checked.
            let fd = unsafe {
                libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), -1i32, cpu as i32, -1i32, PERF_FLAG_FD_CLOEXEC)
            } as i32;
            if fd < 0 {
                return Err(format!("perf_event_open (cpu-clock, CPU {cpu}): {}", std::io::Error::last_os_error()));
            }
            // SAFETY: the kernel just handed us this fd.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let buf =
                Mapping::file(fd.as_raw_fd(), 0, (PAGES + 1) * 4096).map_err(|e| format!("perf sample buffer: {e}"))?;
            cpus.push(Cpu { fd, buf });
        }
        Ok(Sampler { cpus })
    }

    /// Stop and read every sample.
    pub fn finish(self) -> ProfileRecord {
        let mut r = ProfileRecord { period_ns: PERIOD_NS, ..Default::default() };
        let mut chains: HashMap<Vec<u64>, u64> = HashMap::new();
        for c in &self.cpus {
            // SAFETY: a no-argument ioctl on our perf fd.
            unsafe { libc::ioctl(c.fd.as_raw_fd(), IOC_DISABLE as _, 0) };
            // data_head, at offset 1024 of the metadata page; the data pages follow that page.
            let head = c.buf.read_u64(1024);
            let data = c.buf.bytes(4096, PAGES * 4096);
            let size = data.len() as u64;
            r.dropped |= head > size;
            let byte = |o: u64| data[(o % size) as usize];
            let le = |o: u64, n: u64| (0..n).rev().fold(0u64, |v, i| v << 8 | byte(o + i) as u64);
            let mut off = head.saturating_sub(size);
            while off + 8 <= head {
                let (kind, misc, len) = (le(off, 4) as u32, le(off + 4, 2) as u16, le(off + 6, 2));
                if len == 0 {
                    break;
                }
                if kind == RECORD_SAMPLE {
                    match misc & MISC_CPUMODE_MASK {
                        MISC_KERNEL => {
                            r.kernel += 1;
                            // ip, nr, then nr entries (the ip again first, context markers).
                            let ip = le(off + 8, 8);
                            let nr = le(off + 16, 8).min((len.saturating_sub(24)) / 8);
                            let mut chain = vec![ip];
                            for i in 0..nr {
                                let f = le(off + 24 + 8 * i, 8);
                                if chain.len() == FRAMES {
                                    break;
                                }
                                if f < CONTEXT_MAX && !(chain.len() == 1 && f == ip) {
                                    chain.push(f);
                                }
                            }
                            *chains.entry(chain).or_default() += 1;
                        }
                        MISC_USER => r.user += 1,
                        _ => r.guest += 1,
                    }
                }
                off += len;
            }
        }
        r.chains = chains.into_iter().collect();
        r.chains.sort();
        r
    }
}

/// The lab VMs' records as one.
pub fn merge(records: &[ProfileRecord]) -> Option<ProfileRecord> {
    let first = records.first()?;
    let mut chains: HashMap<Vec<u64>, u64> = HashMap::new();
    for (c, n) in records.iter().flat_map(|r| r.chains.iter()) {
        *chains.entry(c.clone()).or_default() += n;
    }
    let mut chains: Vec<(Vec<u64>, u64)> = chains.into_iter().collect();
    chains.sort();
    Some(ProfileRecord {
        period_ns: first.period_ns,
        kernel: records.iter().map(|r| r.kernel).sum(),
        user: records.iter().map(|r| r.user).sum(),
        guest: records.iter().map(|r| r.guest).sum(),
        dropped: records.iter().any(|r| r.dropped),
        chains,
    })
}

/// Kernel samples by function, most first, from `vmlinux`'s symbols (`nm -n`).
pub fn by_function(vmlinux: &Path, r: &ProfileRecord) -> Result<Vec<Function>, String> {
    let out = std::process::Command::new("nm")
        .args(["-n", "--defined-only"])
        .arg(vmlinux)
        .output()
        .map_err(|e| format!("nm {}: {e} (binutils)", vmlinux.display()))?;
    if !out.status.success() {
        return Err(format!("nm {}: {}", vmlinux.display(), String::from_utf8_lossy(&out.stderr).trim()));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let syms: Vec<(u64, &str)> = text
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (a, t, n) = (w.next()?, w.next()?, w.next()?);
            matches!(t, "t" | "T" | "w" | "W").then(|| Some((u64::from_str_radix(a, 16).ok()?, n))).flatten()
        })
        .collect();
    Ok(bucket(&syms, &r.chains))
}

/// A kernel function's samples, and the caller chains that led there (most first).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Function {
    pub name: String,
    pub samples: u64,
    /// "caller <- its caller <- ...", with their samples.
    pub callers: Vec<(String, u64)>,
}

/// `chains` counted by the function (the last symbol at or below each address, in `syms`
/// sorted by address) they fall in, each with its callers; most samples first.
fn bucket(syms: &[(u64, &str)], chains: &[(Vec<u64>, u64)]) -> Vec<Function> {
    let name = |ip: &u64| {
        let i = syms.partition_point(|(a, _)| a <= ip);
        if i == 0 {
            "?"
        } else {
            syms[i - 1].1
        }
    };
    let mut by: HashMap<&str, (u64, HashMap<String, u64>)> = HashMap::new();
    for (chain, n) in chains {
        let Some(ip) = chain.first() else { continue };
        let e = by.entry(name(ip)).or_default();
        e.0 += n;
        let callers: Vec<&str> = chain[1..].iter().map(name).collect();
        if !callers.is_empty() {
            *e.1.entry(callers.join(" <- ")).or_default() += n;
        }
    }
    let most = |a: &(String, u64), b: &(String, u64)| b.1.cmp(&a.1).then(a.0.cmp(&b.0));
    let mut v: Vec<Function> = by
        .into_iter()
        .map(|(k, (samples, callers))| {
            let mut callers: Vec<(String, u64)> = callers.into_iter().collect();
            callers.sort_by(most);
            callers.truncate(5);
            Function { name: k.to_string(), samples, callers }
        })
        .collect();
    v.sort_by(|a, b| b.samples.cmp(&a.samples).then(a.name.cmp(&b.name)));
    v
}

/// A campaign's profile as `privmem lab --profile` reports it: the samples' split and the
/// kernel's by function.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LabProfile {
    pub period_ns: u64,
    pub kernel: u64,
    pub user: u64,
    pub guest: u64,
    pub dropped: bool,
    /// Kernel samples by function, most first; empty where the kernel's symbols were not at
    /// hand (then `symbols_error` says why).
    pub functions: Vec<Function>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbols_error: Option<String>,
}

impl LabProfile {
    /// Symbolized with the vmlinux the lab build keeps beside `bzImage-KEY` (`vmlinux-KEY`).
    pub fn of(kernel: &Path, r: ProfileRecord) -> LabProfile {
        let name = kernel.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let vmlinux = kernel.with_file_name(name.replacen("bzImage", "vmlinux", 1));
        let (functions, symbols_error) = match by_function(&vmlinux, &r) {
            Ok(f) => (f, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        LabProfile {
            period_ns: r.period_ns,
            kernel: r.kernel,
            user: r.user,
            guest: r.guest,
            dropped: r.dropped,
            functions,
            symbols_error,
        }
    }

    /// The split, then the `top` kernel functions.
    pub fn print(&self, top: usize) {
        let total = (self.kernel + self.user + self.guest).max(1) as f64;
        let pct = |n: u64| 100.0 * n as f64 / total;
        println!(
            "lab profile: {} samples, one per {} µs of CPU time{}: kernel {:.1}%, privmem {:.1}%, nested guest {:.1}%",
            self.kernel + self.user + self.guest,
            self.period_ns / 1000,
            if self.dropped { " (the campaign's last ones)" } else { "" },
            pct(self.kernel),
            pct(self.user),
            pct(self.guest)
        );
        if let Some(e) = &self.symbols_error {
            println!("  (kernel functions not named: {e})");
        }
        for f in self.functions.iter().take(top) {
            println!("  {:5.1}%  {}", pct(f.samples), f.name);
            // Where a function is hot, who called it says why (a lock's unlock, a udelay).
            for (chain, n) in f.callers.iter().take(2).filter(|(_, n)| pct(*n) >= 0.5) {
                println!("            {:5.1}%  <- {chain}", pct(*n));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_count_under_the_function_they_fall_in() {
        let syms = [(0x1000, "a"), (0x1100, "b"), (0x1200, "c")];
        let one = |ip: u64, n: u64| (vec![ip], n);
        let v = bucket(&syms, &[one(0x1004, 2), one(0x1100, 1), one(0x11ff, 4), one(0x0fff, 1), one(0x9000, 3)]);
        let f = |name: &str, samples| Function { name: name.into(), samples, callers: vec![] };
        assert_eq!(v, vec![f("b", 5), f("c", 3), f("a", 2), f("?", 1)]);
    }

    #[test]
    fn callers_say_why_a_function_ran() {
        let syms = [(0x1000, "udelay"), (0x2000, "try_check_zero"), (0x3000, "kvm_set_memslot")];
        let v = bucket(&syms, &[(vec![0x1001, 0x2004, 0x3008], 3), (vec![0x1002, 0x2004], 1), (vec![0x1003], 1)]);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].samples, 5);
        assert_eq!(
            v[0].callers,
            vec![("try_check_zero <- kvm_set_memslot".to_string(), 3), ("try_check_zero".to_string(), 1)]
        );
    }

    #[test]
    fn records_merge() {
        let a = ProfileRecord { period_ns: 1, kernel: 2, user: 1, chains: vec![(vec![5], 2)], ..Default::default() };
        let b = ProfileRecord {
            period_ns: 1,
            kernel: 1,
            guest: 3,
            dropped: true,
            chains: vec![(vec![5], 1)],
            ..Default::default()
        };
        let m = merge(&[a, b]).expect("two records");
        assert_eq!((m.kernel, m.user, m.guest, m.dropped, m.chains.clone()), (3, 1, 3, true, vec![(vec![5], 3)]));
        let Some(Ok(crate::wire::Line::Profile(back))) = crate::wire::Line::parse(&crate::wire::Line::from(m).json())
        else {
            panic!("a profile line")
        };
        assert_eq!(back.chains, vec![(vec![5], 3)]);
    }
}
