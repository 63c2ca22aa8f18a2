//! Memory attributes (KVM_SET_MEMORY_ATTRIBUTES): which GFNs are PRIVATE, and the ioctl's
//! argument rules. The state is a [`RangeSet`] of private GFNs.

use super::ranges::RangeSet;
use crate::seq::{Errno, PAGE};

pub const KVM_MEMORY_ATTRIBUTE_PRIVATE: u64 = kvm_bindings::KVM_MEMORY_ATTRIBUTE_PRIVATE as u64;

#[derive(Clone, Debug, Default)]
pub struct Attrs {
    private: RangeSet,
}

/// The ioctl's argument checks (`kvm_vm_ioctl_set_mem_attributes`): flags 0, attributes a subset
/// of the supported ones, non-empty, no wrap, page aligned. Returns the GFN range.
pub fn check_args(addr: u64, size: u64) -> Result<(u64, u64), Errno> {
    if size == 0 || addr.checked_add(size).is_none() {
        return Err(Errno::EINVAL);
    }
    if !addr.is_multiple_of(PAGE) || !size.is_multiple_of(PAGE) {
        return Err(Errno::EINVAL);
    }
    Ok((addr / PAGE, (addr + size) / PAGE))
}

impl Attrs {
    pub fn is_private(&self, gfn: u64) -> bool {
        self.private.contains(gfn)
    }
    /// `Some(private)` when `[s, e)` has one attribute throughout, `None` when mixed.
    pub fn uniform(&self, s: u64, e: u64) -> Option<bool> {
        self.private.uniform(s, e)
    }
    /// The first GFN in `(s, e)` whose attribute differs from `s`'s, or `e`.
    pub fn next_change(&self, s: u64, e: u64) -> u64 {
        self.private.next_change(s, e)
    }

    pub fn set(&mut self, s: u64, e: u64, private: bool) {
        self.private.set(s, e, private)
    }
}
