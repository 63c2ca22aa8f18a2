//! guest_memfd files as userspace drives them: KVM_CREATE_GUEST_MEMFD's checks, fallocate(2)
//! (allocate and punch) in the kernel's order, and the punch of a file range with the zap of the
//! GFNs bound there.

use super::variant::GmemPath;
use super::*;

/// `kvm_gmem_create()`'s checks for `decl` (plus `raw` flag bits) on a VM of type `vm` under
/// kernel `k`.
pub fn check_gmem_create(k: Release, vm: VmType, decl: &GmemDecl, raw: u64) -> Result<(), Errno> {
    let flags = raw | decl.mmap as u64 | (decl.init_shared as u64) << 1;
    let supported =
        if super::kernel::Rule::GmemMmapFlags.holds(k) { 1 | (!vm.has_private_mem() as u64) << 1 } else { 0 };
    if flags & !supported != 0 {
        return Err(Errno::EINVAL);
    }
    if (decl.size as i64) <= 0 || !decl.size.is_multiple_of(PAGE) {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

impl Model {
    /// `kvm_gmem_punch_hole()` over file pages `[is, ie)`: the GFNs bound there are zapped
    /// (kvm_gmem_invalidate_begin), then the folios are freed.
    pub(crate) fn punch_file(&mut self, fi: usize, is: u64, ie: u64) -> Result<(), Errno> {
        let mut zapped = Vec::new();
        for (bs, be, id) in self.gmems[fi].bindings_in(is, ie) {
            let Some(slot) = self.slots.get(id) else { continue };
            zapped.push((slot.base_gfn + (is.max(bs) - bs), slot.base_gfn + (ie.min(be) - bs)));
        }
        // Its private/shared filter only picks a root where there are two (TDX's mirror); with
        // one root everything mapped there goes, shared leaves too (observed on 6.18: punching
        // an MMAP file zaps the guest's shared mapping; found by AFL on the model: a
        // SW_PROTECTED MMAP file left a shared guest_memfd leaf over a freed page). On a TD the
        // bindings' huge leaves are split as the variant's guest_memfd path does (all bindings
        // before any zap from v2 on: docs/model.md §5).
        if self.is_tdx() {
            self.tdx_zap_pieces(&zapped, self.pol.gmem_split(GmemPath::Punch))?;
        } else {
            for &(ps, pe) in &zapped {
                self.unmap_range(false, ps, pe);
            }
        }
        let freed = self.gmems[fi].punch(is, ie, &mut self.mem);
        for &(pfn, n) in &freed {
            // Freed guest_memfd pages go back to the hypervisor in the RMP.
            if let Some(r) = self.rmp.as_mut() {
                r.make_shared(pfn, n);
            }
        }
        for (pfn, n) in freed {
            if let Some(g) = self.frame_mapped(pfn, n) {
                self.violate(
                    ViolationKind::Invariant("freed-page-still-mapped"),
                    format!("guest_memfd freed pfn {pfn:#x} (+{n}) but it stays mapped at gfn {g:#x}"),
                );
            }
        }
        for (ps, pe) in zapped {
            self.guest.forget(ps, pe);
            self.touch_range(ps, pe);
        }
        Ok(())
    }

    /// KVM_CREATE_GUEST_MEMFD (`kvm_gmem_create()`): the flags against what the kernel supports
    /// for this VM (none before 6.18; MMAP, and INIT_SHARED where the VM has no private memory,
    /// from `kvm_gmem_get_supported_flags()`), then a size that is positive as a signed `loff_t`
    /// and page aligned.
    pub(crate) fn gmem_create(&mut self, decl: &GmemDecl, raw: u64) -> Result<(), Errno> {
        check_gmem_create(self.kernel, self.h.vm, decl, raw)?;
        let g = Gmem::new(decl.clone());
        match self.gmem_index(&decl.name) {
            // The name is the harness's: a second file of that name takes it over.
            Some(i) => self.gmems[i] = g,
            None => self.gmems.push(g),
        }
        Ok(())
    }

    /// fallocate(2) on a guest_memfd at file offsets, in `vfs_fallocate()`'s order, then
    /// `kvm_gmem_fallocate()`'s, then `kvm_gmem_allocate()`'s size rule (punching past the end
    /// is fine).
    pub(crate) fn fallocate(
        &mut self,
        name: &str,
        offset: u64,
        len: u64,
        punch: bool,
        keep: bool,
    ) -> Result<(), Errno> {
        let fi = self.gmem_index(name).ok_or(Errno::EBADF)?;
        if (offset as i64) < 0 || (len as i64) <= 0 {
            return Err(Errno::EINVAL);
        }
        if punch && !keep {
            return Err(Errno::EOPNOTSUPP);
        }
        // check_add_overflow() on loff_t, then s_maxbytes (MAX_LFS_FILESIZE, the same bound).
        if (offset as i64).checked_add(len as i64).is_none() {
            return Err(Errno::EFBIG);
        }
        if !keep {
            return Err(Errno::EOPNOTSUPP);
        }
        if !offset.is_multiple_of(PAGE) || !len.is_multiple_of(PAGE) {
            return Err(Errno::EINVAL);
        }
        let (is, ie) = (offset / PAGE, (offset + len) / PAGE);
        if punch {
            return self.punch_file(fi, is, ie.min(self.gmems[fi].pages()));
        }
        if offset + len > self.gmems[fi].decl.size {
            return Err(Errno::EINVAL);
        }
        self.gmems[fi].alloc_range(is, ie, &mut self.mem);
        Ok(())
    }
}
