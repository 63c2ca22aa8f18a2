//! Building a confidential guest before it runs: KVM_TDX_INIT_MEM_REGION page by page
//! (`tdx_vcpu_init_mem_region()`), and FINALIZE (KVM_TDX_FINALIZE_VM, SNP_LAUNCH_FINISH).

use super::sept::OpState;
use super::stage2::Leaf;
use super::*;
use crate::seq::TD_SHARED_BIT;

/// KVM_MAX_CPUID_ENTRIES: the most `cpuid.nent` INIT_VM takes, the room the harness gives.
const MAX_CPUID_ENTRIES: u32 = 256;
/// KVM_SUPPORTED_TDX_TD_ATTRS (7.3): SEPT_VE_DISABLE, the one attribute KVM lets a TD have.
const SUPPORTED_TD_ATTRS: u64 = 1 << 28;

impl Model {
    /// A TDX command with its arguments written out (`tdx-cmd`), checked in the order 7.3's
    /// `tdx_vm_ioctl()`, `tdx_vcpu_unlocked_ioctl()` and `tdx_vcpu_ioctl()` check them. The
    /// case's TD is initialized with its vCPUs initialized (the harness's build); a new TD is
    /// not (INIT_VM), or initialized with its vCPUs created only (a vCPU command).
    pub(crate) fn tdx_cmd(&mut self, c: &TdxCmd) -> Result<(), Errno> {
        // tdx_get_cmd(): hw_error is KVM's to write, on every path.
        if c.hw_error != 0 {
            return Err(Errno::EINVAL);
        }
        let nent = c.nent.unwrap_or(MAX_CPUID_ENTRIES);
        if c.vcpu.is_none() {
            return match c.id {
                // tdx_get_capabilities(): flags, then room for the configurable leaves (every
                // module has at least one; none has more than KVM_MAX_CPUID_ENTRIES).
                0 if c.flags != 0 => Err(Errno::EINVAL),
                0 if nent == 0 => Err(Errno::E2BIG),
                0 => Ok(()),
                1 => Self::tdx_init_vm(c, nent),
                // FINALIZE_VM is `finalize`; INIT_VCPU, INIT_MEM_REGION and GET_CPUID are vCPU
                // commands.
                _ => Err(Errno::EINVAL),
            };
        }
        // tdx_vcpu_unlocked_ioctl(): no vCPU command once the TD is runnable; then the locked
        // tdx_vcpu_ioctl() (GET_CPUID, an unknown id) checks the same first.
        if !c.new_td && self.td_ref().runnable() {
            return Err(Errno::EINVAL);
        }
        match c.id {
            // tdx_vcpu_init(): flags, then the vCPU's state (the case's are initialized).
            2 if c.flags != 0 || !c.new_td => Err(Errno::EINVAL),
            2 => Ok(()),
            // tdx_vcpu_get_cpuid(): room for the TD's leaves (fewer than 256 on any module).
            5 if nent == 0 => Err(Errno::E2BIG),
            5 => Ok(()),
            _ => Err(Errno::EINVAL),
        }
    }

    /// KVM_TDX_INIT_VM (`tdx_td_init()`, `setup_tdparams()`), every check before the TDX module
    /// is asked: the harness's CPUID and XFAM but for what the command writes out.
    fn tdx_init_vm(c: &TdxCmd, nent: u32) -> Result<(), Errno> {
        // The case's TD is initialized (state), then flags.
        if !c.new_td || c.flags != 0 {
            return Err(Errno::EINVAL);
        }
        if nent > MAX_CPUID_ENTRIES {
            return Err(Errno::E2BIG);
        }
        if c.reserved || c.padding {
            return Err(Errno::EINVAL);
        }
        // Attributes and XFAM within the supported sets; a 48-bit (or, with 5-level EPT, 52)
        // GPA width in CPUID 0x80000008; every entry one the module lets a VMM configure (the
        // harness's entries, and zeroes past them, which match none).
        let unsupported = c.attrs & !SUPPORTED_TD_ATTRS != 0 || c.bad_xfam;
        let width = c.gpaw.is_some_and(|w| w != 48);
        let unmatched = c.nent.is_some();
        if unsupported || width || unmatched {
            return Err(Errno::EINVAL);
        }
        Ok(())
    }

    /// KVM_TDX_INIT_MEM_REGION (`tdx_vcpu_init_mem_region()`): after the argument checks, one
    /// `kvm_gmem_populate()` per 4K page, so a page that cannot be added (no guest_memfd slot,
    /// not PRIVATE, already added) ends the call with the pages before it added (D3). The model
    /// takes the pages a 2M region (one piece) at a time up to the first such page.
    pub(crate) fn init_mem(&mut self, addr: u64, pages: u64, measure: bool) -> Result<(), Errno> {
        if self.td_ref().runnable() || !addr.is_multiple_of(PAGE) || pages == 0 {
            return Err(Errno::EINVAL);
        }
        let s = addr / PAGE;
        let e = s.checked_add(pages).filter(|&e| e.checked_mul(PAGE).is_some()).ok_or(Errno::EINVAL)?;
        // vt_is_tdx_private_gpa() on the first and last page: no shared bit.
        if addr & TD_SHARED_BIT != 0 || ((e - 1) * PAGE) & TD_SHARED_BIT != 0 {
            return Err(Errno::EINVAL);
        }
        let mut gfn = s;
        while gfn < e {
            // kvm_gmem_populate(): the slot must be a guest_memfd one, the page PRIVATE.
            let slot = self.slots.find(gfn).cloned().ok_or(Errno::EINVAL)?;
            let (fi, idx) = slot.gmem_index(gfn).ok_or(Errno::EINVAL)?;
            if !self.attrs.is_private(gfn) {
                return Err(Errno::EINVAL);
            }
            let mut stop = e.min(slot.end_gfn()).min((gfn | 511) + 1);
            stop = stop.min(self.attrs.next_change(gfn, stop));
            if let Some((ms, ml)) = self.mirror.runs_in(gfn, stop).first().copied() {
                if ms <= gfn || ml.level > Level::L4K {
                    // Already added: the folio is up to date (EEXIST until 6.18); from 7.3 the
                    // map comes back spurious (EIO).
                    return Err(if self.rule(super::kernel::Rule::InitMemAddedEio) {
                        Errno::EIO
                    } else {
                        Errno::EEXIST
                    });
                }
                stop = ms;
            }
            for tl in [Level::L1G, Level::L2M] {
                if self.td_ref().entry(gfn, tl).is_none() {
                    let st = self.seamcall(|td| td.sept_add(gfn, tl));
                    if st != TdxStatus::Success {
                        return Err(self.tdx_bug("TDH.MEM.SEPT.ADD", st));
                    }
                }
            }
            let n = stop - gfn;
            for (off, len, pfn) in self.gmems[fi].frame_runs(idx, n, &mut self.mem) {
                let g = gfn + off;
                let st = self.seamcall(|td| td.page_add_range(g, len, pfn));
                if st != TdxStatus::Success {
                    return Err(Errno::EIO);
                }
                let src = slot.uregion + (g - slot.base_gfn);
                self.mem.copy(src, pfn, len);
                self.map_leaf(true, g, Leaf { count: len, ..Leaf::one(Level::L4K, pfn, true, false) });
                // The initial image is the guest's own, accepted data.
                self.guest.accepted(g, g + len);
                for (off, v) in self.mem.values(src, len) {
                    self.guest.wrote(g + off, v);
                }
                if measure {
                    for k in 0..len {
                        let v = self.mem.read(pfn + k);
                        self.td_mut().mr_extend(g + k, v);
                    }
                }
            }
            gfn = stop;
        }
        Ok(())
    }

    pub(crate) fn finalize(&mut self) -> Result<(), Errno> {
        if self.rmp.is_some() {
            // SNP_LAUNCH_FINISH.
            if self.snp_launched {
                return Err(Errno::EINVAL);
            }
            self.snp_launched = true;
            return Ok(());
        }
        let td = self.td_mut();
        if td.op_state != OpState::Initialized {
            return Err(Errno::EINVAL);
        }
        td.op_state = OpState::Runnable;
        Ok(())
    }
}
