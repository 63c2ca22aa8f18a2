//! Kernel coverage: the PCs the kernel ran for this thread (KVM's ioctls and KVM_RUN's fault
//! path run in it), through KCOV where the kernel has it (the lab's debug flavour). The
//! campaign keeps the cases that reach new PCs; `privmem lab --coverage` maps them to lines.

use std::os::fd::AsRawFd;

/// `KCOV_INIT_TRACE` = _IOR('c', 1, unsigned long), `KCOV_ENABLE` = _IO('c', 100),
/// `KCOV_DISABLE` = _IO('c', 101) (include/uapi/linux/kcov.h); `KCOV_TRACE_PC` = 0.
// `Ioctl` is c_ulong on glibc and c_int on musl (the lab's static build).
const KCOV_INIT_TRACE: libc::Ioctl = 0x8008_6301u32 as libc::Ioctl;
const KCOV_ENABLE: libc::Ioctl = 0x6364;
const KCOV_DISABLE: libc::Ioctl = 0x6365;
const KCOV_TRACE_PC: libc::c_ulong = 0;

/// PCs one case may record (duplicates included; a case that overflows keeps its first ones).
const AREA_WORDS: usize = 1 << 20;

pub struct Kcov {
    file: std::fs::File,
    area: *mut u64,
    /// [`distinct`]'s set, kept across cases.
    table: Vec<u64>,
}

// SAFETY: the area is plain memory owned by this value, written only by the kernel for our thread.
unsafe impl Send for Kcov {}

impl Kcov {
    /// Trace this thread's PCs, where the kernel has KCOV (debugfs mounted).
    pub fn open() -> Result<Kcov, String> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/sys/kernel/debug/kcov")
            .map_err(|e| format!("/sys/kernel/debug/kcov: {e}"))?;
        let fd = file.as_raw_fd();
        // SAFETY: the KCOV protocol on our own fd: size the area, map it, enable it for this
        // thread. The mapping lives as long as `self` (unmapped in drop).
        unsafe {
            if libc::ioctl(fd, KCOV_INIT_TRACE, AREA_WORDS as libc::c_ulong) != 0 {
                return Err(format!("KCOV_INIT_TRACE: {}", std::io::Error::last_os_error()));
            }
            let area = libc::mmap(
                std::ptr::null_mut(),
                AREA_WORDS * 8,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            );
            if area == libc::MAP_FAILED {
                return Err(format!("kcov mmap: {}", std::io::Error::last_os_error()));
            }
            if libc::ioctl(fd, KCOV_ENABLE, KCOV_TRACE_PC) != 0 {
                libc::munmap(area, AREA_WORDS * 8);
                return Err(format!("KCOV_ENABLE: {}", std::io::Error::last_os_error()));
            }
            Ok(Kcov { file, area: area as *mut u64, table: vec![0; 1 << 16] })
        }
    }

    /// Start a new case: forget the PCs recorded so far.
    pub fn start(&mut self) {
        // SAFETY: word 0 of the area is the count; the kernel appends after it.
        unsafe { std::ptr::write_volatile(self.area, 0) };
    }

    /// The distinct PCs recorded since [`Kcov::start`].
    pub fn collect(&mut self) -> Vec<u64> {
        // SAFETY: the count and the PCs the kernel wrote, bounded by the area's size; the
        // kernel writes them only inside this thread's system calls, none of which runs now.
        let trace = unsafe {
            let n = (std::ptr::read_volatile(self.area) as usize).min(AREA_WORDS - 1);
            std::slice::from_raw_parts(self.area.add(1), n)
        };
        distinct(trace, &mut self.table)
    }
}

/// The distinct values of `trace` (nonzero, as kernel PCs are), sorted. A case's trace repeats
/// a few thousand PCs up to a million times, and a SipHash set over it cost a TD case more than
/// its reset: an open-addressing set with a multiplicative hash, reused (and emptied) per case.
fn distinct(trace: &[u64], table: &mut Vec<u64>) -> Vec<u64> {
    let mut out = Vec::new();
    for &pc in trace.iter().filter(|&&pc| pc != 0) {
        if (out.len() + 1) * 2 > table.len() {
            *table = vec![0; table.len() * 2];
            for &p in &out {
                insert(table, p);
            }
        }
        if insert(table, pc) {
            out.push(pc);
        }
    }
    table.fill(0);
    out.sort_unstable();
    out
}

/// Put `pc` in the set (a power-of-two table less than half full); whether it was new.
fn insert(table: &mut [u64], pc: u64) -> bool {
    let mask = table.len() - 1;
    let mut i = (pc.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as usize & mask;
    loop {
        match table[i] {
            0 => {
                table[i] = pc;
                return true;
            }
            v if v == pc => return false,
            _ => i = (i + 1) & mask,
        }
    }
}

impl Drop for Kcov {
    fn drop(&mut self) {
        // SAFETY: disabling and unmapping what `open` set up.
        unsafe {
            libc::ioctl(self.file.as_raw_fd(), KCOV_DISABLE, 0);
            libc::munmap(self.area as *mut libc::c_void, AREA_WORDS * 8);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_pcs_come_out_once_and_sorted_past_the_tables_first_size() {
        let mut table = vec![0; 4];
        let trace: Vec<u64> = (0..5000u64).map(|i| 0xffff_ffff_8100_0000 + (i * 7919 % 1500) * 4).collect();
        let d = distinct(&trace, &mut table);
        assert_eq!(d.len(), 1500);
        assert!(d.windows(2).all(|w| w[0] < w[1]));
        assert!(table.iter().all(|&v| v == 0), "emptied for the next case");
        assert_eq!(distinct(&[0, 5, 5, 0, 3], &mut table), [3, 5]);
    }
}
