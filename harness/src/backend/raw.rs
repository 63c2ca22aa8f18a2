//! What `kvm-ioctls` does not wrap: pre-fault, the stats fd, fallocate on guest_memfd, the
//! slot memory's PAGEMAP_SCAN. Constants and structs come from kvm-bindings where it has them,
//! ioctl numbers from vmm-sys-util's encoding (the one kvm-ioctls uses), so each has one source
//! here; what kvm-bindings 0.14 lacks is defined below and says so.

use kvm_bindings::{kvm_pre_fault_memory, KVMIO};
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use vmm_sys_util::ioctl::{ioctl_expr, _IOC_NONE, _IOC_READ, _IOC_WRITE};

pub use kvm_bindings::{
    KVM_CAP_GUEST_MEMFD, KVM_CAP_MEMORY_ATTRIBUTES, KVM_CAP_MEMORY_FAULT_INFO, KVM_CAP_PRE_FAULT_MEMORY,
    KVM_CAP_USER_MEMORY2, KVM_CAP_VM_TYPES, KVM_MEM_GUEST_MEMFD, KVM_MEM_READONLY,
};

/// Not in kvm-bindings 0.14 (Linux 6.18 uAPI): `KVM_CAP_GUEST_MEMFD_FLAGS` and the
/// guest_memfd creation flags.
pub const KVM_CAP_GUEST_MEMFD_FLAGS: u32 = 244;
pub const GUEST_MEMFD_FLAG_MMAP: u64 = 1 << 0;
pub const GUEST_MEMFD_FLAG_INIT_SHARED: u64 = 1 << 1;

/// `_IO(KVMIO, nr)`.
pub const fn kvm_io(nr: u32) -> u64 {
    ioctl_expr(_IOC_NONE, KVMIO, nr, 0) as u64
}

/// `_IOW(KVMIO, nr, T)`.
pub const fn kvm_iow<T>(nr: u32) -> u64 {
    ioctl_expr(_IOC_WRITE, KVMIO, nr, size_of::<T>() as u32) as u64
}

/// `_IOWR(KVMIO, nr, T)`.
pub const fn kvm_iowr<T>(nr: u32) -> u64 {
    ioctl_expr(_IOC_READ | _IOC_WRITE, KVMIO, nr, size_of::<T>() as u32) as u64
}

pub const KVM_PRE_FAULT_MEMORY: u64 = kvm_iowr::<kvm_pre_fault_memory>(0xd5);
pub const KVM_GET_STATS_FD: u64 = kvm_io(0xce);

pub const KVM_GET_DIRTY_LOG: u64 = kvm_iow::<kvm_bindings::kvm_dirty_log>(0x42);
pub const KVM_CLEAR_DIRTY_LOG: u64 = kvm_iowr::<kvm_bindings::kvm_clear_dirty_log>(0xc0);

/// KVM_GET_DIRTY_LOG of a slot of `pages` pages: the pages reported dirty, in order.
pub fn get_dirty_log(vm: &impl AsRawFd, slot: u32, pages: u64) -> Result<Vec<u64>, i32> {
    let mut bitmap = vec![0u64; pages.div_ceil(64).max(1) as usize];
    let mut a = kvm_bindings::kvm_dirty_log { slot, ..Default::default() };
    a.__bindgen_anon_1.dirty_bitmap = bitmap.as_mut_ptr().cast();
    // SAFETY: the bitmap holds the slot's ALIGN(npages, 64) bits, as the kernel writes them.
    let r = unsafe { libc::ioctl(vm.as_raw_fd(), KVM_GET_DIRTY_LOG as _, &a as *const kvm_bindings::kvm_dirty_log) };
    if r < 0 {
        return Err(errno());
    }
    Ok((0..pages).filter(|p| bitmap[(p / 64) as usize] & (1 << (p % 64)) != 0).collect())
}

/// KVM_CLEAR_DIRTY_LOG of `[first, first + pages)`, every bit set. `slot_pages` bounds the
/// mask the kernel reads (it refuses a range past the slot before reading it).
pub fn clear_dirty_log(vm: &impl AsRawFd, slot: u32, first: u64, pages: u32, slot_pages: u64) -> Result<(), i32> {
    let words = (pages as u64).min(slot_pages).div_ceil(64).max(1) as usize;
    let mut mask = vec![u64::MAX; words];
    let mut a = kvm_bindings::kvm_clear_dirty_log { slot, num_pages: pages, first_page: first, ..Default::default() };
    a.__bindgen_anon_1.dirty_bitmap = mask.as_mut_ptr().cast();
    // SAFETY: the mask holds every bit the kernel may read for a range inside the slot.
    let r = unsafe {
        libc::ioctl(vm.as_raw_fd(), KVM_CLEAR_DIRTY_LOG as _, &a as *const kvm_bindings::kvm_clear_dirty_log)
    };
    if r < 0 {
        return Err(errno());
    }
    Ok(())
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

/// KVM_PRE_FAULT_MEMORY once; returns what is left to do.
pub fn pre_fault(vcpu: &impl AsRawFd, gpa: u64, size: u64) -> Result<(u64, u64), i32> {
    let mut a = kvm_pre_fault_memory { gpa, size, ..Default::default() };
    // SAFETY: the argument is a properly sized, initialised struct the kernel reads and writes.
    let r = unsafe { libc::ioctl(vcpu.as_raw_fd(), KVM_PRE_FAULT_MEMORY as _, &mut a as *mut kvm_pre_fault_memory) };
    if r < 0 {
        return Err(errno());
    }
    Ok((a.gpa, a.size))
}

/// fallocate(PUNCH_HOLE [| KEEP_SIZE]) on a guest_memfd.
pub fn punch_hole(fd: RawFd, offset: u64, len: u64, keep_size: bool) -> Result<(), i32> {
    let mode = libc::FALLOC_FL_PUNCH_HOLE | if keep_size { libc::FALLOC_FL_KEEP_SIZE } else { 0 };
    // SAFETY: plain syscall on an fd we own.
    let r = unsafe { libc::fallocate(fd, mode, offset as i64, len as i64) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

/// The VM stats fd, with the offsets of `pages_4k`, `pages_2m`, `pages_1g` in its data.
pub struct Stats {
    fd: OwnedFd,
    offsets: [Option<u64>; 3],
}

impl Stats {
    pub fn open(vm: &impl AsRawFd) -> Option<Stats> {
        // SAFETY: KVM_GET_STATS_FD takes no argument and returns a new fd.
        let fd = unsafe { libc::ioctl(vm.as_raw_fd(), KVM_GET_STATS_FD as _, 0) };
        if fd < 0 {
            return None;
        }
        // SAFETY: the kernel just handed us this fd; it closes on every return below.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut hdr = [0u32; 6];
        if !pread(fd.as_raw_fd(), bytes_of_mut(&mut hdr), 0) {
            return None;
        }
        let [_flags, name_size, num_desc, _id_off, desc_off, data_off] = hdr;
        let desc_size = 16 + name_size as usize;
        let mut buf = vec![0u8; desc_size * num_desc as usize];
        if !pread(fd.as_raw_fd(), &mut buf, desc_off as u64) {
            return None;
        }
        let mut offsets = [None; 3];
        for d in buf.chunks(desc_size) {
            let off = u32::from_ne_bytes(d[8..12].try_into().unwrap_or_default());
            let name = &d[16..];
            let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(name.len())];
            for (i, want) in [b"pages_4k".as_slice(), b"pages_2m", b"pages_1g"].iter().enumerate() {
                if name == *want {
                    offsets[i] = Some(data_off as u64 + off as u64);
                }
            }
        }
        Some(Stats { fd, offsets })
    }

    /// `[pages_4k, pages_2m, pages_1g]`, or None if the host does not count them.
    pub fn pages(&self) -> Option<[u64; 3]> {
        let mut out = [0u64; 3];
        for (i, o) in self.offsets.iter().enumerate() {
            let mut v = [0u64; 1];
            if !pread(self.fd.as_raw_fd(), bytes_of_mut(&mut v), (*o)?) {
                return None;
            }
            out[i] = v[0];
        }
        Some(out)
    }
}

fn bytes_of_mut<T: Copy>(v: &mut [T]) -> &mut [u8] {
    // SAFETY: plain integer arrays reinterpreted as bytes.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, std::mem::size_of_val(v)) }
}

fn pread(fd: RawFd, buf: &mut [u8], off: u64) -> bool {
    // SAFETY: reading into a buffer we own.
    let r = unsafe { libc::pread(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), off as i64) };
    r == buf.len() as isize
}

/// `PAGEMAP_SCAN` on /proc/self/pagemap (include/uapi/linux/fs.h, 6.7+): the slot memory's
/// backing checked in one ioctl (`mem.rs`).
pub const PAGEMAP_SCAN: u64 = ioctl_expr(_IOC_READ | _IOC_WRITE, b'f' as u32, 16, size_of::<PmScanArg>() as u32) as u64;
pub const PAGE_IS_PRESENT: u64 = 1 << 3;
pub const PAGE_IS_HUGE: u64 = 1 << 6;

/// struct page_region.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PageRegion {
    pub start: u64,
    pub end: u64,
    pub categories: u64,
}

/// struct pm_scan_arg.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PmScanArg {
    pub size: u64,
    pub flags: u64,
    pub start: u64,
    pub end: u64,
    pub walk_end: u64,
    pub vec: u64,
    pub vec_len: u64,
    pub max_pages: u64,
    pub category_inverted: u64,
    pub category_mask: u64,
    pub category_anyof_mask: u64,
    pub return_mask: u64,
}
