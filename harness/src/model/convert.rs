//! Conversions the guest asks for: TDX MapGPA (statuses to the guest, 2M chunks from the GPA),
//! SNP page-state changes, and a SW_PROTECTED guest's KVM_HC_MAP_GPA_RANGE; userspace's half of
//! each (set the attributes, drop the side the range left) is one function.

use super::*;
use crate::seq::TD_SHARED_BIT;

/// The first GPA past a TD vCPU's MAXPHYADDR (52 bits: see [`Model::tdx_map_gpa`]).
const TD_MAXPA_LIMIT: u64 = 1 << 52;

impl Model {
    /// TDG.VP.VMCALL<MapGPA> as `tdx_map_gpa()` takes it: the argument checks answer the guest
    /// with a TDVMCALL status and KVM_RUN goes on (D9); then KVM exits to userspace with
    /// KVM_HC_MAP_GPA_RANGE for chunks of at most 2M counted from the GPA, and userspace
    /// converts each (see [`Model::map_gpa`]). The op's address has no shared bit; `private`
    /// chooses which alias the guest names.
    pub(crate) fn tdx_map_gpa(&mut self, addr: u64, size: u64, private: bool) -> Outcome {
        let gpa = if private { addr } else { addr | TD_SHARED_BIT };
        // kvm_vcpu_is_legal_gpa(): below the vCPU's MAXPHYADDR (CPUID 0x80000008 EAX[7:0]),
        // not the TD's GPAW. The TDX module gives every TD the native MAXPA, and refuses a
        // platform whose native MAXPA is not 52 (TDH.SYS.INIT), so it is 52 whatever the GPAW;
        // GPAW 48 only places the shared bit. Both ends must name the same alias.
        let legal = |g: u64| g < TD_MAXPA_LIMIT;
        let Some(last) = gpa.checked_add(size).filter(|&e| e > gpa).map(|e| e - 1) else {
            return Outcome::Vmcall(VmcallStatus::InvalidOperand);
        };
        if !legal(gpa) || !legal(last) || (gpa & TD_SHARED_BIT) != (last & TD_SHARED_BIT) {
            return Outcome::Vmcall(VmcallStatus::InvalidOperand);
        }
        if !gpa.is_multiple_of(PAGE) || !size.is_multiple_of(PAGE) {
            return Outcome::Vmcall(VmcallStatus::AlignError);
        }
        match self.map_gpa_chunks(addr, size, private, addr) {
            // Userspace answers a chunk it could not convert with EINVAL, which KVM passes on to
            // the guest as INVALID_OPERAND.
            Outcome::Err(_) => Outcome::Vmcall(VmcallStatus::InvalidOperand),
            o => o,
        }
    }

    /// The guest's MapGPA, as KVM and the selftests handle it: KVM exits to userspace with
    /// KVM_HC_MAP_GPA_RANGE one 2M chunk at a time; userspace converts the chunk, then punches
    /// the side it left (guest_memfd when going shared, the shared memory when going private).
    /// Chunks here end on 2M boundaries (SNP); a TD's are counted from its GPA.
    pub(crate) fn map_gpa(&mut self, addr: u64, size: u64, private: bool) -> Outcome {
        if !addr.is_multiple_of(PAGE) || !size.is_multiple_of(PAGE) || size == 0 || addr.checked_add(size).is_none() {
            return Outcome::Err(Errno::EINVAL);
        }
        self.map_gpa_chunks(addr, size, private, 0)
    }

    /// KVM_HC_MAP_GPA_RANGE from a SW_PROTECTED guest (`__kvm_emulate_hypercall()`): the
    /// guest passes the GPA and `size / 4K` pages; an unaligned GPA, no pages or a wrapping
    /// range is -KVM_EINVAL to the guest without an exit; else one exit with the whole range,
    /// which userspace converts (as `private_mem_conversions_test.c` does) and answers 0.
    pub(crate) fn hc_map_gpa(&mut self, addr: u64, size: u64, private: bool) -> Outcome {
        let pages = size / PAGE;
        let gfn = addr / PAGE;
        if !addr.is_multiple_of(PAGE) || pages == 0 || gfn.checked_add(pages).is_none() {
            return Outcome::Err(Errno::EINVAL);
        }
        // Userspace cannot set attributes over a range whose end wraps in bytes: EINVAL back.
        let Some(end) = addr.checked_add(pages * PAGE) else {
            return Outcome::Err(Errno::EINVAL);
        };
        match self.convert_for_guest(addr, end, private) {
            Ok(()) => Outcome::Ok,
            Err(e) => Outcome::Err(e),
        }
    }

    /// Convert `[addr, addr + size)` chunk by chunk, chunks being 2M long from `origin`.
    fn map_gpa_chunks(&mut self, addr: u64, size: u64, private: bool, origin: u64) -> Outcome {
        let chunk_after = |a: u64| origin + ((a - origin) / SZ_2M + 1) * SZ_2M;
        let (mut a, end) = (addr, addr + size);
        while a < end {
            // KVM exits once per 2M chunk. Outside memslots a chunk can neither fail nor punch
            // anything, so a run of slot-less chunks up to the next slot is taken at once (the
            // same outcome, in O(slots) rather than O(size / 2M)).
            let in_slot = self.slots.find(a / PAGE).is_some();
            let next_slot = self.slots.overlapping(a / PAGE, end.div_ceil(PAGE)).first().map(|s| s.base_gfn * PAGE);
            let next = if in_slot {
                chunk_after(a)
            } else {
                match next_slot.filter(|&n| n > a) {
                    // The start of the chunk holding the next slot's first page.
                    Some(n) if n - a >= SZ_2M => origin + ((n - origin) / SZ_2M) * SZ_2M,
                    Some(_) => chunk_after(a),
                    None => end,
                }
            };
            let chunk_end = next.min(end);
            if let Err(e) = self.convert_for_guest(a, chunk_end, private) {
                return Outcome::Err(e);
            }
            a = chunk_end;
        }
        Outcome::Ok
    }

    /// Userspace's conversion of `[a, e)` for the guest: the attributes, then the side left is
    /// dropped (guest_memfd punched going shared, the shared memory cleared going private).
    fn convert_for_guest(&mut self, a: u64, e: u64, private: bool) -> Result<(), Errno> {
        self.set_attributes(a, e - a, private)?;
        if self.pol.in_place {
            // One page serves both sides: nothing is left behind to drop.
            return Ok(());
        }
        let (s, e) = (a / PAGE, e / PAGE);
        for sl in self.slots.overlapping(s, e) {
            let (ps, pe) = (s.max(sl.base_gfn), e.min(sl.end_gfn()));
            if private {
                self.mem.clear(sl.uregion + (ps - sl.base_gfn), pe - ps);
            } else if sl.gmem.is_some() {
                self.punch(ps * PAGE, (pe - ps) * PAGE, true)?;
            }
        }
        self.guest.forget(s, e);
        Ok(())
    }
}
