//! KVM's SEV-SNP side (`arch/x86/kvm/svm/sev.c`) and the guest's PVALIDATE: private faults
//! assign guest_memfd pages in the RMP at the largest size the folio allows, the NPT level never
//! exceeds the RMP entry's size, a 4K PVALIDATE inside a 2M entry (or an NPT mapping smaller
//! than a 2M entry) makes KVM PSMASH and zap the 512 pages from the faulting one, and a 2M
//! PVALIDATE over 4K entries is FAIL_SIZEMISMATCH to the guest.

use super::lpage::{self, Backing};
use super::stage2::Leaf;
use super::*;

impl Model {
    pub(crate) fn snp_attempt(&mut self, op: &Op) -> Attempt {
        if !self.snp_launched {
            // KVM_RUN before SNP_LAUNCH_FINISH.
            return Attempt::Done(Outcome::Err(Errno::EINVAL));
        }
        match *op {
            Op::Accept { addr, level, .. } => self.pvalidate(addr, level, true),
            Op::Release { addr, level, .. } => self.pvalidate(addr, level, false),
            Op::MapGpa { addr, size, private, .. } => Attempt::Done(self.map_gpa(addr, size, private)),
            Op::Read { addr, shared, .. } | Op::Write { addr, shared, .. } => self.snp_access(op, addr, !shared),
            Op::Touch { addr, .. } => self.snp_access(op, addr, true),
            // Host ops never come here; listed, so that a new op is placed.
            crate::seq::host_ops!() => Attempt::Done(Outcome::Err(Errno::EINVAL)),
        }
    }

    fn snp_access(&mut self, op: &Op, addr: u64, private: bool) -> Attempt {
        let gfn = addr / PAGE;
        let write = matches!(op, Op::Write { .. });
        let Some((b, l)) = self.shared.get(gfn).filter(|(_, l)| l.private == private) else {
            return Attempt::Exit(FaultReq { gfn, private, write, accept: None });
        };
        let pfn = l.pfn + (gfn - b);
        if !private {
            return Attempt::Done(match *op {
                Op::Read { .. } => Outcome::Value(self.mem.read(pfn)),
                Op::Write { value, .. } => {
                    self.mem.write(pfn, value);
                    Outcome::Ok
                }
                _ => Outcome::Ok,
            });
        }
        let validated = self.rmp.as_ref().and_then(|r| r.entry(pfn)).is_some_and(|(_, e)| e.validated);
        if !validated {
            // #VC: the page is not validated.
            if let Some(v) = self.guest.belief(gfn) {
                self.violate(
                    ViolationKind::SilentDataLoss,
                    format!("gfn {gfn:#x}: the guest validated it and wrote {v:#x}; it came back unvalidated with no event it saw"),
                );
                self.guest.forget(gfn, gfn + 1);
            }
            return Attempt::Done(Outcome::Ve);
        }
        Attempt::Done(self.guest_access(op, gfn, pfn))
    }

    /// PVALIDATE (validate or rescind) of `level` at `addr`.
    fn pvalidate(&mut self, addr: u64, level: Level, validate: bool) -> Attempt {
        if level == Level::L1G || !addr.is_multiple_of(level.bytes()) {
            return Attempt::Done(Outcome::Pvalidate(PvalidateRc::FailInput, false));
        }
        let gfn = addr / PAGE;
        let Some((b, l)) = self.shared.get(gfn).filter(|(_, l)| l.private) else {
            return Attempt::Exit(FaultReq { gfn, private: true, write: false, accept: Some(level) });
        };
        let pfn = l.pfn + (gfn - b);
        let Some((_, e)) = self.rmp.as_ref().and_then(|r| r.entry(pfn)) else {
            return Attempt::Done(Outcome::Pvalidate(PvalidateRc::FailInput, false));
        };
        if level == Level::L2M && e.size == Level::L4K {
            return Attempt::Done(Outcome::Pvalidate(PvalidateRc::FailSizeMismatch, false));
        }
        if level == Level::L4K && e.size == Level::L2M {
            // Nested page fault with the size-mismatch bit: KVM PSMASHes and retries.
            return Attempt::Exit(FaultReq { gfn, private: true, write: false, accept: Some(level) });
        }
        if e.validated == validate {
            return Attempt::Done(Outcome::Pvalidate(PvalidateRc::Success, true));
        }
        self.rmp.as_mut().expect("snp").set_validated(pfn, level, validate);
        if !validate {
            // The guest gave the page up: it holds no belief about it any more.
            self.guest.forget(gfn, gfn + level.pages());
        }
        self.touch_range(gfn, gfn + level.pages());
        Attempt::Done(Outcome::Pvalidate(PvalidateRc::Success, false))
    }

    /// A private (C-bit) fault of an SNP guest.
    pub(crate) fn snp_private_fault(&mut self, req: FaultReq) -> Result<(), Outcome> {
        let gfn = req.gfn;
        if !self.attrs.is_private(gfn) {
            return Err(Outcome::Exit(Exit::MemoryFault { private: true }));
        }
        let Some(slot) = self.slots.find(gfn).cloned() else {
            return Err(Outcome::Exit(Exit::MemoryFault { private: true }));
        };
        let Some((fi, idx)) = slot.gmem_index(gfn) else {
            return Err(Outcome::Exit(Exit::MemoryFault { private: true }));
        };
        if self.gmems[fi].get_or_alloc(idx, &mut self.mem).is_err() {
            return Err(Outcome::Exit(Exit::MemoryFault { private: true }));
        }
        if let Some((b, l)) = self.shared.get(gfn).filter(|(_, l)| l.private) {
            let pfn = l.pfn + (gfn - b);
            if req.accept == Some(Level::L4K) {
                let rmp = self.rmp.as_mut().expect("snp");
                if let Some((rb, e)) = rmp.entry(pfn) {
                    if e.size == Level::L2M {
                        // Size mismatch: sev_handle_rmp_fault() PSMASHes the 2M entry and
                        // zaps [gfn, gfn + 512) from the faulting page, not from a 2M base (D6).
                        rmp.psmash(rb);
                        self.unmap_range(false, gfn, gfn + 512);
                    }
                    // Already 4K: a spurious race; the guest retries.
                }
            }
            return Ok(());
        }
        let (mut level, _) =
            lpage::max_level(&slot, gfn, Some(&self.attrs), Some(&self.gmems[fi]), Backing::Gmem { idx });
        let base_gfn = gfn & !(level.pages() - 1);
        let pfn = self.gmems[fi].pfn_at(idx - (gfn - base_gfn)).expect("allocated");
        let rmp = self.rmp.as_mut().expect("snp");
        match rmp.entry(pfn + (gfn - base_gfn)) {
            None => {
                // Prepare the page (sev_gmem_prepare(), sev_gmem_make_private() in 7.3): one
                // 2M entry only where the folio is 2M and none of its 2M range is assigned
                // (is_large_rmp_possible()); else the faulting page alone, leaving the assigned
                // and validated pages beside it as they are (D11: the firmware would refuse a
                // 2M RMPUPDATE over them).
                let (fb, f) = self.gmems[fi].folio_at(idx).expect("allocated");
                if f.order == Level::L2M && level == Level::L2M && !rmp.any(f.pfn, 512) {
                    rmp.assign(f.pfn, base_gfn, Level::L2M, 1);
                } else {
                    level = Level::L4K;
                    let p = f.pfn + (idx - fb);
                    rmp.assign(p, gfn, Level::L4K, 1);
                }
            }
            Some((rb, e)) => {
                if e.size == Level::L4K {
                    level = Level::L4K;
                } else if level == Level::L4K {
                    // An NPT mapping smaller than the 2M entry: the access takes an RMP #NPF,
                    // and sev_handle_rmp_fault() PSMASHes and zaps [gfn, gfn + 512) (D6)
                    // before the 4K mapping is made again.
                    rmp.psmash(rb);
                    self.unmap_range(false, gfn, gfn + 512);
                }
            }
        }
        let base = gfn & !(level.pages() - 1);
        let pfn = self.gmems[fi].pfn_at(idx - (gfn - base)).expect("allocated");
        self.unmap_range(false, base, base + level.pages());
        self.map_leaf(false, base, Leaf::one(level, pfn, true, false));
        Ok(())
    }
}
