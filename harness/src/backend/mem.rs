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
// SAFETY: every access through `&self` is a bounds-checked volatile read or write of memory a
// guest shares anyway; the threads of a concurrent group touch it as the guest's vCPUs do.
unsafe impl Sync for Mapping {}

const ALIGN: usize = 2 << 20;
/// Slot memory larger than this is not faulted in ahead (its page size stays the host's choice).
const PREFAULT_LIMIT: usize = 256 << 20;

/// Plain slot memory that deleted slots handed back, for the next slot of the same length
/// (any VM's): faulting fresh memory in, zeroed, is the dearest part of adding a slot under
/// TCG. Kept up to [`POOL_BYTES`], oldest out first.
static POOL: std::sync::Mutex<Vec<(usize, Mapping, UserBacking)>> = std::sync::Mutex::new(Vec::new());
const POOL_BYTES: usize = 512 << 20;

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

/// /proc/self/pagemap, opened once for a batch of lookups.
pub struct Pagemap(std::fs::File);

impl Pagemap {
    pub fn open() -> Option<Pagemap> {
        std::fs::File::open("/proc/self/pagemap").ok().map(Pagemap)
    }

    /// The frame behind userspace address `addr`: Some(0) where no page is present, None where
    /// the file cannot be read or hides frames (it shows them to CAP_SYS_ADMIN only, as zero).
    pub fn pfn(&self, addr: u64) -> Option<u64> {
        use std::os::unix::fs::FileExt;
        let mut b = [0u8; 8];
        self.0.read_exact_at(&mut b, (addr >> 12) * 8).ok()?;
        let e = u64::from_le_bytes(b);
        let present = e & (1 << 63) != 0;
        let pfn = e & ((1 << 55) - 1);
        match (present, pfn) {
            (false, _) => Some(0),
            (true, 0) => None,
            (true, p) => Some(p),
        }
    }
}

/// `AnonHugePages` of the mapping that starts at `addr`, in KiB, from /proc/self/smaps.
/// Whether all of `[addr, addr + len)` is mapped by present huge PMDs: one PAGEMAP_SCAN
/// ioctl on /proc/self/pagemap (6.7+, `pagemap_scan_thp_entry()` in fs/proc/task_mmu.c: a
/// PMD-mapped THP is PAGE_IS_HUGE|PAGE_IS_PRESENT). None where the kernel lacks the ioctl.
/// Under TCG it is far cheaper than /proc/self/smaps, which walks every mapping's pages.
fn pmd_mapped(addr: u64, len: u64) -> Option<bool> {
    use super::raw::{PageRegion, PmScanArg, PAGEMAP_SCAN, PAGE_IS_HUGE, PAGE_IS_PRESENT};
    let f = std::fs::File::open("/proc/self/pagemap").ok()?;
    let mut regions: [PageRegion; 8] = Default::default();
    let mut arg = PmScanArg {
        size: std::mem::size_of::<PmScanArg>() as u64,
        start: addr,
        end: addr + len,
        vec: regions.as_mut_ptr() as u64,
        vec_len: regions.len() as u64,
        category_mask: PAGE_IS_HUGE | PAGE_IS_PRESENT,
        return_mask: PAGE_IS_HUGE,
        ..Default::default()
    };
    // SAFETY: `arg` and `regions` are live, sized as the kernel expects, and outlive the call.
    let n = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&f), PAGEMAP_SCAN as _, &mut arg) };
    if n < 0 {
        return None;
    }
    // Matching pages come back merged into regions; all of them huge is one region, whole.
    let got: u64 = regions[..n as usize].iter().map(|r| r.end - r.start).sum();
    Some(arg.walk_end == addr + len && got == len)
}

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

    /// Private anonymous memory (reads of untouched pages see the zero page).
    pub fn anon_private(len: usize) -> std::io::Result<Mapping> {
        Self::anon_with(len, libc::MAP_PRIVATE)
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
        let pooled = {
            let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
            pool.iter().position(|(l, _, _)| *l == len).map(|i| pool.remove(i))
        };
        if let Some((_, m, backing)) = pooled {
            // Still huge? Reclaim or compaction may have split a THP since.
            let whole = (m.len / ALIGN * ALIGN) as u64;
            if backing != UserBacking::Huge || pmd_mapped(m.addr(), whole) == Some(true) {
                return Ok((m, backing));
            }
        }
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
        let whole = (chunks * ALIGN) as u64;
        let huge = pmd_mapped(m.addr(), whole).unwrap_or_else(|| anon_huge_kib(m.addr()) == Some(whole / 1024));
        let backing = if huge { UserBacking::Huge } else { UserBacking::Unknown };
        Ok((m, backing))
    }

    /// Hand memory from [`Mapping::anon_known`] back for a later slot of the same `len`. The
    /// only words of slot memory the harness ever reads or writes, from the guest or the host,
    /// are each page's `VALUE_OFFSET` word; those are zeroed, so the memory reads as a fresh
    /// slot's. The pages stay faulted in, with the same backing.
    pub fn recycle(len: usize, m: Mapping, backing: UserBacking) {
        if backing == UserBacking::Unknown || m.len > PREFAULT_LIMIT {
            return;
        }
        let value = privmem_guest::abi::VALUE_OFFSET;
        for page in (0..m.len as u64).step_by(4096) {
            if m.read_u64(page + value) != 0 {
                m.write_u64(page + value, 0);
            }
        }
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        pool.push((len, m, backing));
        while pool.iter().map(|(_, m, _)| m.len).sum::<usize>() > POOL_BYTES {
            pool.remove(0);
        }
    }

    /// A shared mapping of `len` bytes of `fd` from `offset`.
    pub fn file(fd: RawFd, offset: u64, len: usize) -> std::io::Result<Mapping> {
        Self::file_with(fd, offset, len, libc::PROT_READ | libc::PROT_WRITE)
    }

    /// As [`Mapping::file`], read-only (what a tracefs ring buffer allows).
    pub fn file_readonly(fd: RawFd, offset: u64, len: usize) -> std::io::Result<Mapping> {
        Self::file_with(fd, offset, len, libc::PROT_READ)
    }

    fn file_with(fd: RawFd, offset: u64, len: usize, prot: libc::c_int) -> std::io::Result<Mapping> {
        // SAFETY: mapping a file we own; the kernel validates fd and range.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd, offset as i64) };
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

    pub fn read_u32(&self, off: u64) -> u32 {
        assert!(off as usize + 4 <= self.len);
        // SAFETY: as read_u64.
        unsafe { std::ptr::read_volatile(self.ptr.add(off as usize) as *const u32) }
    }

    /// `len` bytes from `off`, as they are now (the kernel may be writing past them).
    pub fn bytes(&self, off: usize, len: usize) -> &[u8] {
        assert!(off + len <= self.len);
        // SAFETY: bounds checked above, inside the mapping, which lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.add(off), len) }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-ioctl check and the smaps count agree, on huge and on small memory.
    #[test]
    fn pagemap_scan_agrees_with_smaps() {
        let len = 4 << 20;
        let (m, backing) = Mapping::anon_known(len).unwrap();
        let Some(huge) = pmd_mapped(m.addr(), len as u64) else {
            eprintln!("skipped: this kernel has no PAGEMAP_SCAN");
            return;
        };
        assert_eq!(huge, anon_huge_kib(m.addr()) == Some(4096));
        assert_eq!(huge, backing == UserBacking::Huge);
        let small = Mapping::anon_with(len, libc::MAP_PRIVATE).unwrap();
        // SAFETY: advice on our own mapping.
        unsafe { libc::madvise(small.ptr as *mut libc::c_void, small.len, libc::MADV_NOHUGEPAGE) };
        small.write_u64(0, 1);
        assert_eq!(pmd_mapped(small.addr(), len as u64), Some(false));
    }

    /// pagemap: no frame for a page never touched; for a touched one, the frame (root) or None
    /// (pagemap hides it); two pages of one small mapping are two frames.
    #[test]
    fn pagemap_gives_the_frame_of_a_touched_page() {
        let m = Mapping::anon_with(2 << 12, libc::MAP_PRIVATE).unwrap();
        let pm = Pagemap::open().unwrap();
        assert_eq!(pm.pfn(m.addr()), Some(0), "untouched");
        m.write_u64(0, 1);
        m.write_u64(4096, 2);
        match (pm.pfn(m.addr()), pm.pfn(m.addr() + 4096)) {
            (Some(a), Some(b)) => assert!(a != 0 && b != 0 && a != b, "{a:#x} {b:#x}"),
            (None, None) => eprintln!("pagemap hides frames here (not CAP_SYS_ADMIN)"),
            other => panic!("{other:?}"),
        }
    }

    /// Recycled slot memory comes back for the next slot of its length, with every page's
    /// value word zero again and nothing else touched.
    #[test]
    fn recycled_memory_reads_as_a_fresh_slot() {
        let len = 2 << 20 | 8 << 12; // an odd length no other test asks for
        let (m, backing) = Mapping::anon_known(len).unwrap();
        if backing == UserBacking::Unknown {
            eprintln!("skipped: the backing could not be checked here");
            return;
        }
        let value = privmem_guest::abi::VALUE_OFFSET;
        m.write_u64(value, 0x1234);
        m.write_u64((len - 4096) as u64 + value, 0x5678);
        let addr = m.addr();
        Mapping::recycle(len, m, backing);
        let (again, b) = Mapping::anon_known(len).unwrap();
        assert_eq!((again.addr(), b), (addr, backing), "the pooled mapping serves the same length");
        for page in (0..len as u64).step_by(4096) {
            assert_eq!(again.read_u64(page + value), 0, "page {page:#x}");
        }
    }
}
