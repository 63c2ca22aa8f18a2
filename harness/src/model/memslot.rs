//! Memslots (`virt/kvm/kvm_main.c`, `__kvm_set_memory_region`) and KVM's errno rules for them.

use super::gmem::Gmem;
use crate::seq::{Errno, Release, SlotSpec, VmType, PAGE};
use std::collections::{BTreeMap, BTreeSet};

/// A slot's dirty bitmap, by page offset in the slot (a MOVE keeps it, as KVM keeps the
/// bitmap).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirtyLog {
    /// Pages the guest wrote since logging began or their bit was last cleared.
    pub must: BTreeSet<u64>,
    /// Pages a fault mapped since then (reads, pre-faults): reported or not.
    pub may: BTreeSet<u64>,
    /// With KVM_DIRTY_LOG_INITIALLY_SET: the pages set when logging began and not cleared
    /// since (ranges of page offsets; a slot may be large).
    pub initially: super::ranges::RangeSet,
}

/// x86: KVM_MEM_SLOTS_NUM (SHRT_MAX) less the internal slots.
pub const KVM_USER_MEM_SLOTS: u32 = 32764;
/// KVM_MEM_MAX_NR_PAGES.
pub const KVM_MEM_MAX_NR_PAGES: u64 = (1 << 31) - 1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    pub id: u32,
    pub base_gfn: u64,
    pub npages: u64,
    /// guest_memfd file index and first page index in it.
    pub gmem: Option<(usize, u64)>,
    pub readonly: bool,
    /// First frame of the slot's userspace (shared) backing. The harness maps it 2M aligned,
    /// so its alignment never disallows a huge mapping by itself.
    pub uregion: u64,
    /// KVM_MEM_LOG_DIRTY_PAGES, and the dirty bitmap: see [`super::dirty_log`].
    pub log: Option<DirtyLog>,
}

/// What a memslot's checks depend on beyond the slots: the VM type, the host's GPA width, the
/// kernel the model runs as, and the VM's memslot address spaces.
#[derive(Clone, Copy, Debug)]
pub struct VmFacts {
    pub vm: VmType,
    pub phys_bits: Option<u8>,
    pub kernel: Release,
    pub address_spaces: u16,
}

/// The address space a slot number names (bits 16 and up: 1 is x86's SMM address space), and
/// its id within it (the low 16 bits), as `kvm_set_memory_region()` splits `slot`.
pub fn as_id(slot: u32) -> u16 {
    (slot >> 16) as u16
}

impl Slot {
    pub fn end_gfn(&self) -> u64 {
        self.base_gfn + self.npages
    }
    pub fn contains(&self, gfn: u64) -> bool {
        gfn >= self.base_gfn && gfn < self.end_gfn()
    }
    /// guest_memfd page index of `gfn`.
    pub fn gmem_index(&self, gfn: u64) -> Option<(usize, u64)> {
        self.gmem.map(|(f, off)| (f, off + (gfn - self.base_gfn)))
    }
}

#[derive(Clone, Debug, Default)]
pub struct Slots {
    by_id: BTreeMap<u32, Slot>,
    /// base GFN -> id, for lookup by address: the guest's address space (0).
    by_gfn: BTreeMap<u64, u32>,
    /// The same for address space 1 (SMM, default VMs with KVM_SMM): slots there may overlap
    /// address space 0's and are never what a (non-SMM) guest access finds.
    smm_by_gfn: BTreeMap<u64, u32>,
}

/// What a successful KVM_SET_USER_MEMORY_REGION2 call changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Create(Slot),
    Delete(Slot),
    Move {
        old: Slot,
        new_base: u64,
    },
    /// Same GPA, same flags: KVM returns 0 and changes nothing.
    Nothing,
    /// A move refused by `kvm_arch_prepare_memory_region()`, which runs after
    /// `kvm_invalidate_memslot()` has flushed the old slot's mappings (`kvm_set_memslot()` in
    /// virt/kvm/kvm_main.c, 6.12 and 7.3): the slot stays, its leaves are gone, the call fails.
    MoveRefused {
        old: Slot,
        errno: Errno,
    },
}

/// One past the last GFN a memslot may reach (`kvm_arch_prepare_memory_region()` against
/// `kvm_mmu_max_gfn()`): with TDP, the host's physical address width (`shadow_phys_bits`,
/// which a real backend reports); 52 bits with shadow paging or where it is not known. A TD's
/// slots stay below its shared bit.
pub fn max_gfn(vm: VmType, phys_bits: Option<u8>) -> u64 {
    match vm {
        VmType::Tdx => crate::seq::TD_SHARED_BIT / crate::seq::PAGE,
        _ => 1 << (phys_bits.unwrap_or(52).clamp(13, 52) - 12),
    }
}

impl Slots {
    /// A slot's flags and bitmap, to change them (its place in the GPA space stays).
    pub fn get_mut(&mut self, id: u32) -> Option<&mut Slot> {
        self.by_id.get_mut(&id)
    }

    pub fn get(&self, id: u32) -> Option<&Slot> {
        self.by_id.get(&id)
    }

    pub fn find(&self, gfn: u64) -> Option<&Slot> {
        let (_, id) = self.by_gfn.range(..=gfn).next_back()?;
        let s = &self.by_id[id];
        s.contains(gfn).then_some(s)
    }

    /// Slots of the guest's address space overlapping `[start, end)`, in GFN order.
    pub fn overlapping(&self, start: u64, end: u64) -> Vec<Slot> {
        self.overlapping_in(0, start, end)
    }

    fn gfn_map(&self, as_id: u16) -> &BTreeMap<u64, u32> {
        if as_id == 0 {
            &self.by_gfn
        } else {
            &self.smm_by_gfn
        }
    }

    fn overlapping_in(&self, as_id: u16, start: u64, end: u64) -> Vec<Slot> {
        let map = self.gfn_map(as_id);
        let mut v = Vec::new();
        if let Some((_, id)) = map.range(..=start).next_back() {
            let s = &self.by_id[id];
            if s.contains(start) {
                v.push(s.clone());
            }
        }
        for (_, id) in map.range(start.saturating_add(1)..end) {
            v.push(self.by_id[id].clone());
        }
        v
    }

    fn overlaps(&self, as_id: u16, base: u64, end: u64, except: Option<u32>) -> bool {
        self.overlapping_in(as_id, base, end).iter().any(|s| Some(s.id) != except)
    }

    /// KVM's checks for a slot-add (a create, or a modify if the id exists), in KVM's order.
    /// `gmem` resolves the binding's file. Returns the change to apply.
    pub fn check_add(
        &self,
        vm: &VmFacts,
        spec: &SlotSpec,
        gmem: Option<(usize, &Gmem)>,
        uregion: u64,
    ) -> Result<Change, Errno> {
        let VmFacts { vm, phys_bits, kernel, address_spaces } = *vm;
        use super::kernel::Rule;
        // kvm_vm_ioctl_set_memory_region(): the id within its address space, before any other
        // check.
        if spec.id as u16 as u32 >= KVM_USER_MEM_SLOTS {
            return Err(Errno::EINVAL);
        }
        // check_memory_region_flags: guest_memfd only where the VM type allows it.
        if spec.gmem.is_some() && !vm.has_private_mem() && !Rule::GmemOnDefaultVm.holds(kernel) {
            return Err(Errno::EINVAL);
        }
        // check_memory_region_flags: no READONLY for VMs with protected state.
        if spec.readonly && matches!(vm, VmType::Tdx | VmType::Snp) {
            return Err(Errno::EINVAL);
        }
        // Observed on 6.18: KVM_MEM_READONLY together with KVM_MEM_GUEST_MEMFD is EINVAL.
        if spec.readonly && spec.gmem.is_some() {
            return Err(Errno::EINVAL);
        }
        if !spec.size.is_multiple_of(PAGE) || !spec.gpa.is_multiple_of(PAGE) {
            return Err(Errno::EINVAL);
        }
        if let Some(b) = &spec.gmem {
            if b.offset % PAGE != 0 || b.offset.checked_add(spec.size).is_none() {
                return Err(Errno::EINVAL);
            }
        }
        // kvm_set_memory_region(): an address space the VM has (two on x86 with SMM, one where
        // the VM has private memory).
        if as_id(spec.id) >= address_spaces {
            return Err(Errno::EINVAL);
        }
        let Some(end) = spec.gpa.checked_add(spec.size) else {
            return Err(Errno::EINVAL);
        };
        let npages = spec.size / PAGE;
        if npages > KVM_MEM_MAX_NR_PAGES {
            return Err(Errno::EINVAL);
        }
        let base = spec.gpa / PAGE;
        if let Some(old) = self.by_id.get(&spec.id) {
            if spec.size == 0 {
                return Ok(Change::Delete(old.clone()));
            }
            // A slot-add always brings a new userspace mapping, and guest_memfd slots are
            // immutable: both make a modify EINVAL.
            return Err(Errno::EINVAL);
        }
        if spec.size == 0 {
            return Err(Errno::EINVAL);
        }
        if self.overlaps(as_id(spec.id), base, end / PAGE, None) {
            return Err(Errno::EEXIST);
        }
        if end / PAGE > max_gfn(vm, phys_bits) {
            return Err(Errno::EINVAL);
        }
        let binding = match (&spec.gmem, gmem) {
            (Some(b), Some((fi, g))) => {
                let start = b.offset / PAGE;
                if !g.inside(start, start + npages) {
                    return Err(Errno::EINVAL);
                }
                if !g.can_bind(start, start + npages) {
                    return Err(if Rule::GmemRebindEexist.holds(kernel) { Errno::EEXIST } else { Errno::EINVAL });
                }
                Some((fi, start))
            }
            (Some(_), None) => return Err(Errno::EBADF),
            _ => None,
        };
        Ok(Change::Create(Slot {
            id: spec.id,
            base_gfn: base,
            npages,
            gmem: binding,
            readonly: spec.readonly,
            uregion,
            log: None,
        }))
    }

    pub fn check_delete(&self, id: u32) -> Result<Change, Errno> {
        if id as u16 as u32 >= KVM_USER_MEM_SLOTS {
            return Err(Errno::EINVAL);
        }
        self.by_id.get(&id).map(|s| Change::Delete(s.clone())).ok_or(Errno::EINVAL)
    }

    /// A move keeps the userspace address, size and flags and changes the GPA.
    pub fn check_move(&self, vm: VmType, id: u32, gpa: u64, phys_bits: Option<u8>) -> Result<Change, Errno> {
        let Some(old) = self.by_id.get(&id) else {
            // The harness has no size or address to issue the call with.
            return Err(Errno::ENOENT);
        };
        if !gpa.is_multiple_of(PAGE) {
            return Err(Errno::EINVAL);
        }
        if old.gmem.is_some() {
            // "Private memslots are immutable, they can only be deleted."
            return Err(Errno::EINVAL);
        }
        let base = gpa / PAGE;
        // `guest_phys_addr + memory_size < guest_phys_addr` in bytes, as kvm_set_memory_region()
        // checks before the slot is looked at: an end of exactly 2^64 wraps too, and nothing is
        // flushed (unlike MoveRefused below).
        if old.npages.checked_mul(PAGE).and_then(|size| gpa.checked_add(size)).is_none() {
            return Err(Errno::EINVAL);
        }
        let end = base + old.npages;
        if base == old.base_gfn {
            return Ok(Change::Nothing);
        }
        if self.overlaps(as_id(id), base, end, Some(id)) {
            return Err(Errno::EEXIST);
        }
        if end > max_gfn(vm, phys_bits) {
            return Ok(Change::MoveRefused { old: old.clone(), errno: Errno::EINVAL });
        }
        Ok(Change::Move { old: old.clone(), new_base: base })
    }

    pub fn insert(&mut self, s: Slot) {
        let map = if as_id(s.id) == 0 { &mut self.by_gfn } else { &mut self.smm_by_gfn };
        map.insert(s.base_gfn, s.id);
        self.by_id.insert(s.id, s);
    }

    pub fn remove(&mut self, id: u32) -> Option<Slot> {
        let s = self.by_id.remove(&id)?;
        let map = if as_id(s.id) == 0 { &mut self.by_gfn } else { &mut self.smm_by_gfn };
        map.remove(&s.base_gfn);
        Some(s)
    }
}
