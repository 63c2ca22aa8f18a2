//! A per-CPU ring buffer mapped into this process (tracefs, 6.10 and later:
//! Documentation/trace/ring-buffer-map.rst), read where it lies. Reading `trace_pipe_raw`
//! cost two system calls per step (a page copied out, then EAGAIN) under TCG; mapped, a step
//! whose events all went into the sub-buffer the writer is still filling costs none: its commit
//! word is read in place. Only a sub-buffer the writer may have left needs
//! `TRACE_MMAP_IOCTL_GET_READER`.

use super::{commit_len, decode_range, u32_at, Event, Format, RB_MISSED_EVENTS};
use std::os::fd::RawFd;

/// `TRACE_MMAP_IOCTL_GET_READER` (include/uapi/linux/trace_mmap.h): `_IO('R', 0x20)`.
const GET_READER: u64 = vmm_sys_util::ioctl::ioctl_expr(vmm_sys_util::ioctl::_IOC_NONE, b'R' as u32, 0x20, 0) as u64;

/// More than one `kvmmmu` record with its header and a time extend: a sub-buffer whose data
/// ends closer than this to its end may have been left by the writer (`rb_reset_tail()` pads
/// a left sub-buffer to its end, or leaves less than `RB_EVNT_MIN_SIZE` free).
const SLACK: usize = 256;

/// `struct trace_buffer_meta` offsets (include/uapi/linux/trace_mmap.h).
mod meta {
    pub const META_PAGE_SIZE: usize = 0;
    pub const SUBBUF_SIZE: usize = 8;
    pub const NR_SUBBUFS: usize = 12;
    pub const READER_LOST_EVENTS: usize = 16;
    pub const READER_ID: usize = 24;
    pub const READER_READ: usize = 28;
    pub const ENTRIES: usize = 40;
    pub const OVERRUN: usize = 48;
    pub const READ: usize = 56;
}

pub struct Ring {
    fd: RawFd,
    meta: *mut libc::c_void,
    meta_len: usize,
    data: *mut libc::c_void,
    data_len: usize,
    subbuf: usize,
    nr: usize,
    /// The reader sub-buffer, and how far into its data this side has decoded (the kernel
    /// learns it at the next GET_READER, which consumes the sub-buffer up to its commit).
    id: usize,
    off: usize,
    /// The reader sub-buffer is the one the writer fills: it was not full, with nothing else
    /// unread, when the kernel last handed it over (only the writer's sub-buffer is ever short
    /// of full). New events then show in its commit word without a system call.
    live: bool,
}

fn map(len: usize, fd: RawFd, offset: usize) -> Option<*mut libc::c_void> {
    // SAFETY: a read-only shared mapping of a tracefs file we hold open.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, fd, offset as i64) };
    (p != libc::MAP_FAILED).then_some(p)
}

impl Ring {
    /// Map the ring buffer behind `fd` (a per-CPU `trace_pipe_raw`); None where the kernel
    /// cannot (before 6.10), and the caller reads the file instead.
    pub fn map(fd: RawFd) -> Option<Ring> {
        let meta = map(4096, fd, 0)?;
        // SAFETY: the meta page is mapped, 4096 bytes.
        let m = unsafe { std::slice::from_raw_parts(meta as *const u8, 4096) };
        let meta_len = u32_at(m, meta::META_PAGE_SIZE) as usize;
        let subbuf = u32_at(m, meta::SUBBUF_SIZE) as usize;
        let nr = u32_at(m, meta::NR_SUBBUFS) as usize;
        let unmap_meta = || {
            // SAFETY: unmapping what was mapped above.
            unsafe { libc::munmap(meta, 4096) };
        };
        if meta_len < 64 || subbuf < 4096 || nr == 0 {
            unmap_meta();
            return None;
        }
        let Some(data) = map(subbuf * nr, fd, meta_len) else {
            unmap_meta();
            return None;
        };
        let mut r =
            Ring { fd, meta, meta_len: 4096, data, data_len: subbuf * nr, subbuf, nr, id: 0, off: 0, live: false };
        r.id = r.meta_u32(meta::READER_ID) as usize;
        r.off = r.meta_u32(meta::READER_READ) as usize;
        Some(r)
    }

    fn meta_u32(&self, at: usize) -> u32 {
        // SAFETY: `at` is inside the mapped meta page; the kernel updates it (volatile).
        unsafe { std::ptr::read_volatile((self.meta as *const u8).add(at) as *const u32) }
    }

    fn meta_u64(&self, at: usize) -> u64 {
        // SAFETY: as meta_u32.
        unsafe { std::ptr::read_volatile((self.meta as *const u8).add(at) as *const u64) }
    }

    /// Sub-buffer `id`, as the writer has it now.
    fn subbuf(&self, id: usize) -> &[u8] {
        // SAFETY: id < nr (checked by the callers), inside the data mapping.
        unsafe { std::slice::from_raw_parts((self.data as *const u8).add(id * self.subbuf), self.subbuf) }
    }

    fn commit(&self, id: usize) -> u64 {
        // SAFETY: the commit word of a mapped sub-buffer, written by the kernel (volatile).
        unsafe { std::ptr::read_volatile((self.data as *const u8).add(id * self.subbuf + 8) as *const u64) }
    }

    /// Decode every event committed since the last drain. Returns whether events were lost,
    /// or Err if the kernel refused GET_READER (the caller then reads the file).
    pub fn drain(&mut self, tdp: &Format, set: &Format, out: &mut Vec<(u64, Event)>) -> Result<bool, ()> {
        let mut lost = false;
        // Each GET_READER hands over at most one new sub-buffer.
        for _ in 0..self.nr + 2 {
            if self.live {
                let commit = self.commit(self.id);
                let len = commit_len(commit);
                lost |= commit & RB_MISSED_EVENTS != 0;
                if 16 + len + SLACK < self.subbuf {
                    if len > self.off {
                        decode_range(self.subbuf(self.id), self.off, len, tdp, set, out);
                        self.off = len;
                    }
                    return Ok(lost);
                }
                // Full, or nearly: the writer may have moved on to the next sub-buffer.
            }
            // SAFETY: a no-argument ioctl on a tracefs file we hold open.
            if unsafe { libc::ioctl(self.fd, GET_READER as _) } < 0 {
                return Err(());
            }
            let id = self.meta_u32(meta::READER_ID) as usize;
            let read = self.meta_u32(meta::READER_READ) as usize;
            if id >= self.nr || read + 16 > self.subbuf {
                return Err(());
            }
            lost |= self.meta_u64(meta::READER_LOST_EVENTS) != 0;
            if id != self.id {
                (self.id, self.off) = (id, 0);
            }
            lost |= self.commit(id) & RB_MISSED_EVENTS != 0;
            if read > self.off {
                decode_range(self.subbuf(id), self.off, read, tdp, set, out);
                self.off = read;
            }
            let unread = self
                .meta_u64(meta::ENTRIES)
                .saturating_sub(self.meta_u64(meta::OVERRUN).saturating_add(self.meta_u64(meta::READ)));
            self.live = unread == 0 && read > 0 && 16 + read + SLACK < self.subbuf;
            if unread == 0 {
                return Ok(lost);
            }
        }
        Ok(lost)
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: unmapping what `map` mapped; nothing refers to it after this.
        unsafe {
            libc::munmap(self.data, self.data_len);
            libc::munmap(self.meta, self.meta_len);
        }
    }
}

// The raw pointers are only ever read through by the one TraceView that owns them.
unsafe impl Send for Ring {}
