//! Building a confidential guest before it runs: KVM_TDX_INIT_MEM_REGION page by page
//! (`tdx_vcpu_init_mem_region()`), and FINALIZE (KVM_TDX_FINALIZE_VM, SNP_LAUNCH_FINISH).

use super::sept::OpState;
use super::stage2::Leaf;
use super::*;
use crate::seq::TD_SHARED_BIT;

impl Model {
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
