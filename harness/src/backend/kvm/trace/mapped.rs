//! A per-CPU ring buffer mapped into this process (tracefs, 6.10 and later:
//! Documentation/trace/ring-buffer-map.rst), read where it lies. Reading `trace_pipe_raw`
//! cost two system calls per step (a page copied out, then EAGAIN) under TCG; mapped, a step
//! whose events all went into the sub-buffer the writer is still filling costs none: its commit
//! word is read in place. Only a sub-buffer the writer may have left needs
//! `TRACE_MMAP_IOCTL_GET_READER`.

use super::{commit_len, decode_range, Event, Format, RB_MISSED_EVENTS};
use crate::backend::mem::Mapping;
use std::os::fd::RawFd;

/// `TRACE_MMAP_IOCTL_GET_READER` (include/uapi/linux/trace_mmap.h): `_IO('R', 0x20)`.
const GET_READER: u64 = vmm_sys_util::ioctl::ioctl_expr(vmm_sys_util::ioctl::_IOC_NONE, b'R' as u32, 0x20, 0) as u64;

/// More than one `kvmmmu` record with its header and a time extend: a sub-buffer whose data
/// ends closer than this to its end may have been left by the writer (`rb_reset_tail()` pads
/// a left sub-buffer to its end, or leaves less than `RB_EVNT_MIN_SIZE` free).
const SLACK: usize = 256;

/// `struct trace_buffer_meta` offsets (include/uapi/linux/trace_mmap.h).
mod meta {
    pub const META_PAGE_SIZE: u64 = 0;
    pub const SUBBUF_SIZE: u64 = 8;
    pub const NR_SUBBUFS: u64 = 12;
    pub const READER_LOST_EVENTS: u64 = 16;
    pub const READER_ID: u64 = 24;
    pub const READER_READ: u64 = 28;
    pub const ENTRIES: u64 = 40;
    pub const OVERRUN: u64 = 48;
    pub const READ: u64 = 56;
}

pub struct Ring {
    fd: RawFd,
    meta: Mapping,
    data: Mapping,
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

impl Ring {
    /// Map the ring buffer behind `fd` (a per-CPU `trace_pipe_raw`); None where the kernel
    /// cannot (before 6.10), and the caller reads the file instead.
    pub fn map(fd: RawFd) -> Option<Ring> {
        let meta = Mapping::file_readonly(fd, 0, 4096).ok()?;
        let meta_len = meta.read_u32(meta::META_PAGE_SIZE) as u64;
        let subbuf = meta.read_u32(meta::SUBBUF_SIZE) as usize;
        let nr = meta.read_u32(meta::NR_SUBBUFS) as usize;
        if meta_len < 64 || subbuf < 4096 || nr == 0 {
            return None;
        }
        let data = Mapping::file_readonly(fd, meta_len, subbuf * nr).ok()?;
        let id = meta.read_u32(meta::READER_ID) as usize;
        let off = meta.read_u32(meta::READER_READ) as usize;
        Some(Ring { fd, meta, data, subbuf, nr, id, off, live: false })
    }

    /// Sub-buffer `id`, as the writer has it now.
    fn subbuf(&self, id: usize) -> &[u8] {
        self.data.bytes(id * self.subbuf, self.subbuf)
    }

    fn commit(&self, id: usize) -> u64 {
        self.data.read_u64((id * self.subbuf + 8) as u64)
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
            let id = self.meta.read_u32(meta::READER_ID) as usize;
            let read = self.meta.read_u32(meta::READER_READ) as usize;
            if id >= self.nr || read + 16 > self.subbuf {
                return Err(());
            }
            lost |= self.meta.read_u64(meta::READER_LOST_EVENTS) != 0;
            if id != self.id {
                (self.id, self.off) = (id, 0);
            }
            lost |= self.commit(id) & RB_MISSED_EVENTS != 0;
            if read > self.off {
                decode_range(self.subbuf(id), self.off, read, tdp, set, out);
                self.off = read;
            }
            let unread = self
                .meta
                .read_u64(meta::ENTRIES)
                .saturating_sub(self.meta.read_u64(meta::OVERRUN).saturating_add(self.meta.read_u64(meta::READ)));
            self.live = unread == 0 && read > 0 && 16 + read + SLACK < self.subbuf;
            if unread == 0 {
                return Ok(lost);
            }
        }
        Ok(lost)
    }
}
