//! Host memory for the guest: anonymous 2M-aligned mappings (so the host's THP can back them
//! with huge pages, as the model assumes) and mappings of guest_memfd files.

use crate::backend::view::UserBacking;
use std::os::fd::RawFd;

pub struct Mapping {
    pub ptr: *mut u8,
    pub len: usize,
}

// SAFETY: the mapping is plain memory owned by this value.
unsafe impl Send for Mapping {}

const ALIGN: usize = 2 << 20;
/// Slot memory larger than this is not faulted in ahead (its page size stays the host's choice).
const PREFAULT_LIMIT: usize = 256 << 20;

fn sysfs_choice(path: &str) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    let a = s.find('[')? + 1;
    Some(s[a..a + s[a..].find(']')?].to_string())
}

/// Whether anonymous memory can get transparent huge pages with MADV_HUGEPAGE.
fn thp_possible() -> bool {
    matches!(sysfs_choice("/sys/kernel/mm/transparent_hugepage/enabled").as_deref(), Some("always" | "madvise"))
}

/// What backs MAP_SHARED|MAP_ANONYMOUS memory (shmem): small pages where shmem's huge pages are
/// off, else the host's choice.
pub fn shmem_backing() -> UserBacking {
    static ONCE: std::sync::OnceLock<UserBacking> = std::sync::OnceLock::new();
    *ONCE.get_or_init(shmem_backing_now)
}

fn shmem_backing_now() -> UserBacking {
    let top = sysfs_choice("/sys/kernel/mm/transparent_hugepage/shmem_enabled");
    let per_size = sysfs_choice("/sys/kernel/mm/transparent_hugepage/hugepages-2048kB/shmem_enabled");
    let top_off = matches!(top.as_deref(), Some("never" | "deny"));
    let size_off = matches!(per_size.as_deref(), None | Some("never" | "inherit"));
    if top_off && size_off {
        UserBacking::Small
    } else {
        UserBacking::Unknown
    }
}

/// `AnonHugePages` of the mapping that starts at `addr`, in KiB, from /proc/self/smaps.
fn anon_huge_kib(addr: u64) -> Option<u64> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let head = format!("{addr:x}-");
    let at = smaps.lines().position(|l| l.starts_with(&head))?;
    smaps
        .lines()
        .skip(at + 1)
        .take_while(|l| !l.contains('-') || l.contains(':'))
        .find_map(|l| l.strip_prefix("AnonHugePages:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

impl Mapping {
    /// Anonymous shared memory of `len` bytes, 2M aligned.
    pub fn anon(len: usize) -> std::io::Result<Mapping> {
        Self::anon_with(len, libc::MAP_SHARED)
    }

    fn anon_with(len: usize, share: libc::c_int) -> std::io::Result<Mapping> {
        let len = len.max(4096);
        let total = len + ALIGN;
        // SAFETY: a fresh anonymous mapping; the excess is unmapped below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_READ | libc::PROT_WRITE,
                share | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let start = (p as usize).div_ceil(ALIGN) * ALIGN;
        let head = start - p as usize;
        // SAFETY: trimming our own mapping to the aligned window.
        unsafe {
            if head > 0 {
                libc::munmap(p, head);
            }
            let tail = total - head - len;
            if tail > 0 {
                libc::munmap((start + len) as *mut libc::c_void, tail);
            }
        }
        Ok(Mapping { ptr: start as *mut u8, len })
    }

    /// Private anonymous memory whose page size is known: with huge pages where the host's THP
    /// allows them (MADV_HUGEPAGE, each 2M faulted in now and checked in /proc/self/smaps), else
    /// small pages only (MADV_NOHUGEPAGE). Memory too large to fault in ahead is left to the
    /// host's choice and says so.
    pub fn anon_known(len: usize) -> std::io::Result<(Mapping, UserBacking)> {
        if len > PREFAULT_LIMIT {
            // Shared memory, as before: private memory not faulted in ahead would back a guest
            // read with the zero page, which a later host write replaces (COW) and KVM unmaps.
            return Ok((Self::anon(len)?, UserBacking::Unknown));
        }
        let m = Self::anon_with(len, libc::MAP_PRIVATE)?;
        let huge = thp_possible();
        let advice = if huge { libc::MADV_HUGEPAGE } else { libc::MADV_NOHUGEPAGE };
        // SAFETY: advice on our own mapping.
        if unsafe { libc::madvise(m.ptr as *mut libc::c_void, m.len, advice) } != 0 {
            return Ok((m, UserBacking::Unknown));
        }
        // Every page is written now (zero: what a fresh slot holds). A write, not a read: a
        // read maps the (huge) zero page, which a later host write would replace by COW,
        // unmapping it from the guest behind the model's back. One write per 2M faults in a
        // whole THP; the tail beyond the last 2M is small pages.
        let chunks = m.len / ALIGN;
        let step = if huge { ALIGN } else { 4096 };
        let mut off = 0;
        while off < m.len {
            m.write_u64(off as u64, 0);
            off += if off + ALIGN <= chunks * ALIGN { step } else { 4096 };
        }
        if !huge {
            return Ok((m, UserBacking::Small));
        }
        let backing = if anon_huge_kib(m.addr()) == Some((chunks * ALIGN / 1024) as u64) {
            UserBacking::Huge
        } else {
            UserBacking::Unknown
        };
        Ok((m, backing))
    }

    /// A shared mapping of `len` bytes of `fd` from `offset`.
    pub fn file(fd: RawFd, offset: u64, len: usize) -> std::io::Result<Mapping> {
        // SAFETY: mapping a file we own; the kernel validates fd and range.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                offset as i64,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Mapping { ptr: p as *mut u8, len })
    }

    pub fn read_u64(&self, off: u64) -> u64 {
        assert!(off as usize + 8 <= self.len);
        // SAFETY: bounds checked above; volatile because the guest writes it concurrently.
        unsafe { std::ptr::read_volatile(self.ptr.add(off as usize) as *const u64) }
    }

    pub fn write_u64(&self, off: u64, v: u64) {
        assert!(off as usize + 8 <= self.len);
        // SAFETY: as above.
        unsafe { std::ptr::write_volatile(self.ptr.add(off as usize) as *mut u64, v) }
    }

    pub fn write_bytes(&self, off: u64, b: &[u8]) {
        assert!(off as usize + b.len() <= self.len);
        // SAFETY: as above.
        unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), self.ptr.add(off as usize), b.len()) }
    }

    pub fn addr(&self) -> u64 {
        self.ptr as u64
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what we mapped.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}
