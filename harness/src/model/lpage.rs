//! Large-page info: why KVM refuses a 2M/1G mapping at a GFN (slot head/tail misalignment,
//! mixed attributes, a smaller backing folio). Derived on demand from slots, attributes and
//! guest_memfd rather than kept per slot, so it can never go stale.

use super::attrs::Attrs;
use super::gmem::Gmem;
use super::memslot::Slot;
use crate::seq::Level;
use serde::Serialize;

/// What the host's userspace backing of plain slots was, as the backend made it and checked it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UserBacking {
    /// Not known: the kernel's level for userspace-backed memory is the host's THP choice.
    #[default]
    Unknown,
    /// Every 2M-aligned 2M range of the slot's memory is one transparent huge page.
    Huge,
    /// Small pages only (MADV_NOHUGEPAGE, or shmem with huge pages off).
    Small,
}

/// The backing a fault resolved to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// guest_memfd page index (in `Slot::gmem`'s file).
    Gmem { idx: u64 },
    /// The slot's userspace mapping: its level is what the host's page tables map there,
    /// known when the backend made and checked that memory, else the host's THP choice.
    User(UserBacking),
}

/// The largest level KVM may map `gfn` at, and whether that level is the host's THP choice.
/// `attrs` is given for VMs with private memory (mixed attributes refuse a huge mapping).
pub fn max_level(slot: &Slot, gfn: u64, attrs: Option<&Attrs>, gmem: Option<&Gmem>, backing: Backing) -> (Level, bool) {
    // No backing offers 1G (no hugetlbfs, guest_memfd folios are at most 2M), so 2M is the
    // only huge level to consider.
    let l = Level::L2M;
    // kvm_mmu_hugepage_adjust(): a dirty-tracked slot maps 4K.
    if slot.log.is_some() {
        return (Level::L4K, false);
    }
    let base = gfn & !(l.pages() - 1);
    // Head/tail: the huge range must lie inside the slot. The userspace address is 2M aligned,
    // so a slot whose GPA is not is misaligned for every huge page (KVM compares base_gfn ^ ugfn).
    if base < slot.base_gfn || base + l.pages() > slot.end_gfn() || !slot.base_gfn.is_multiple_of(l.pages()) {
        return (Level::L4K, false);
    }
    if let Some(a) = attrs {
        if a.uniform(base, base + l.pages()).is_none() {
            return (Level::L4K, false);
        }
    }
    match backing {
        Backing::User(UserBacking::Unknown) => (l, true),
        Backing::User(UserBacking::Huge) => (l, false),
        Backing::User(UserBacking::Small) => (Level::L4K, false),
        Backing::Gmem { idx } => {
            let first = idx - (gfn - base);
            match gmem.and_then(|g| g.folio_at(idx)) {
                Some((fb, f)) if f.order >= l && fb == first => (l, false),
                _ => (Level::L4K, false),
            }
        }
    }
}
