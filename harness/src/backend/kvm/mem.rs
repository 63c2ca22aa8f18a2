//! Host memory for the guest: anonymous 2M-aligned mappings (so the host's THP can back them
//! with huge pages, as the model assumes) and mappings of guest_memfd files.

use std::os::fd::RawFd;

pub struct Mapping {
    pub ptr: *mut u8,
    pub len: usize,
}

// The mapping is plain memory owned by this value.
unsafe impl Send for Mapping {}

const ALIGN: usize = 2 << 20;

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
