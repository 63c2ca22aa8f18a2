//! The ground the backend stands on, proved before the first case: the guest sees guest_memfd
//! where it should and a punched page reads zero; and the per-case timeout fires.

use super::*;

impl KvmBackend {
    /// Run a guest that never returns (the guest's spin command) and report what the backend
    /// made of it: the per-case timeout must fire, and the next case must run on a fresh VM.
    pub fn self_test_timeout(&mut self) -> Result<RunError, String> {
        self.prepare(VmType::Default, 1, false).map_err(|e| e.to_string())?;
        self.ensure_baseline().map_err(|e| e.to_string())?;
        let st = self.vm.as_mut().expect("prepared");
        st.harness.write_u64(CMD_OFF + CMD_FIRST, OP_SPIN);
        st.harness.write_u64(CMD_OFF, 1);
        let harness = &st.harness;
        let done = || (harness.read_u64(CMD_OFF + 0x1000) == ST_DONE) as u64;
        let r = guest::run_batch(&mut st.vcpus[0], 1, self.timeout, &self.watchdog, done);
        let e = match r {
            Err(BatchError::Timeout) => RunError::Timeout { step: 0 },
            Err(BatchError::Guest(d)) => RunError::Guest { step: 0, detail: d },
            Err(BatchError::MapGpa(..)) => {
                RunError::Guest { step: 0, detail: "a MapGPA exit from the spinning guest".into() }
            }
            Ok(_) => return Err("the spinning guest returned".into()),
        };
        self.reset(false);
        Ok(e)
    }

    /// Prove the ground the backend stands on: the guest reads guest_memfd, not the userspace
    /// address of a guest_memfd slot (different patterns in each), and a punched page reads
    /// zero. `Err` names what the guest saw instead.
    pub fn footing(&mut self) -> Result<(), String> {
        if let Some(r) = &self.footing {
            return r.clone();
        }
        let r = self.check_footing();
        self.footing = Some(r.clone());
        r
    }

    pub(super) fn check_footing(&mut self) -> Result<(), String> {
        const GPA: u64 = 0x1_0000_0000;
        const IN_GMEM: u64 = 0x600d_0000_0000_f00d;
        const IN_UADDR: u64 = 0xbad0_0000_0000_0b0b;
        if !self.caps.guest_memfd || self.caps.guest_memfd_flags & 3 != 3 {
            // Nothing on this host can put a guest_memfd page in front of the guest.
            return Ok(());
        }
        self.prepare(VmType::Default, 1, false).map_err(|e| e.to_string())?;
        self.ensure_baseline().map_err(|e| e.to_string())?;
        let st = self.vm.as_mut().expect("prepared");
        let g = GmemDecl { name: "footing".into(), size: 2 << 20, huge: false, mmap: true, init_shared: true };
        Self::gmem_create(st, &g).map_err(|e| format!("KVM_CREATE_GUEST_MEMFD: errno {e}"))?;
        let anon = Mapping::anon(2 << 20).map_err(|e| e.to_string())?;
        anon.write_u64(VALUE_OFFSET, IN_UADDR);
        let gm = st.gmems[0].map.as_ref().ok_or("guest_memfd mmap failed")?;
        gm.write_u64(VALUE_OFFSET, IN_GMEM);
        let region = kvm_userspace_memory_region2 {
            slot: 0,
            flags: raw::KVM_MEM_GUEST_MEMFD,
            guest_phys_addr: GPA,
            memory_size: 2 << 20,
            userspace_addr: anon.addr(),
            guest_memfd_offset: 0,
            guest_memfd: st.gmems[0].fd.as_raw_fd() as u32,
            ..Default::default()
        };
        // SAFETY: `anon` lives in the RSlot until the reset deletes the slot.
        unsafe { st.vm.set_user_memory_region2(region) }.map_err(|e| format!("guest_memfd slot: {e}"))?;
        st.slots.insert(
            0,
            RSlot {
                gpa: GPA,
                size: 2 << 20,
                flags: region.flags,
                uaddr: anon.addr(),
                anon: Some(anon),
                known: None,
                gmem: Some((0, 0)),
            },
        );
        let read = Op::Read { vcpu: 0, addr: GPA, shared: false };
        let mut t = RealTrace { observed: vec![Observed::NotChecked], ..Default::default() };
        let verdict = (|| {
            self.guest_batch(0, &[(0, &read)], &mut t).map_err(|e| e.to_string())?;
            match t.observed[0] {
                Observed::Outcome(Outcome::Value(IN_GMEM)) => {}
                Observed::Outcome(Outcome::Value(IN_UADDR)) => {
                    return Err(format!(
                        "the guest read the slot's userspace address ({IN_UADDR:#x}), not guest_memfd ({IN_GMEM:#x}): \
                         guest code is being emulated (CPL0?)"
                    ))
                }
                ref o => return Err(format!("the guest read {o:?} where guest_memfd holds {IN_GMEM:#x}")),
            }
            let st = self.vm.as_ref().expect("prepared");
            raw::punch_hole(st.gmems[0].fd.as_raw_fd(), 0, 4096, true).map_err(|e| format!("punch: errno {e}"))?;
            self.guest_batch(0, &[(0, &read)], &mut t).map_err(|e| e.to_string())?;
            match t.observed[0] {
                Observed::Outcome(Outcome::Value(0)) => Ok(()),
                ref o => Err(format!("a punched guest_memfd page read {o:?}, not zero")),
            }
        })();
        self.reset(verdict.is_ok());
        verdict
    }
}
