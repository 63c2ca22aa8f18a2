//! Running a case: guest ops of one vCPU as one batch on its command page, host ops between
//! them, and the kernel's view after every step.

use super::*;

/// vCPU `v`'s command page and its result page.
fn command_pages(v: u32) -> (u64, u64) {
    let cmd = CMD_OFF + v as u64 * CMD_STRIDE;
    (cmd, cmd + 0x1000)
}

/// Write guest ops as vCPU `v`'s commands.
pub(super) fn write_commands(harness: &Mapping, v: u32, ops: &[(usize, &Op)]) -> Result<(), RunError> {
    let (cmd, res) = command_pages(v);
    for (i, (_, op)) in ops.iter().enumerate() {
        let (code, addr, value, attrs) = match **op {
            Op::Read { addr, .. } => (OP_READ, (addr & !0xfff) + VALUE_OFFSET, 0, 0),
            Op::Write { addr, value, .. } => (OP_WRITE, (addr & !0xfff) + VALUE_OFFSET, value, 0),
            Op::Touch { addr, .. } => (OP_TOUCH, (addr & !0xfff) + VALUE_OFFSET, 0, 0),
            // The GPA as it is (KVM checks its alignment), the size in pages.
            Op::MapGpa { addr, size, private, .. } => {
                (OP_MAP_GPA, addr, size / 4096, if private { MAP_GPA_ENCRYPTED } else { 0 })
            }
            _ => return Err(RunError::Unsupported(format!("guest op `{}` on this guest", text::print_op(op)))),
        };
        let c = cmd + CMD_FIRST + i as u64 * CMD_SIZE;
        harness.write_u64(c, code);
        harness.write_u64(c + 8, addr);
        harness.write_u64(c + 16, value);
        harness.write_u64(c + 24, attrs);
        harness.write_u64(res + i as u64 * RES_SIZE, 0);
    }
    harness.write_u64(cmd, ops.len() as u64);
    Ok(())
}

/// The outcomes of vCPU `v`'s commands, from the exits its run took and its result page.
pub(super) fn read_results(
    harness: &Mapping,
    v: u32,
    ops: &[(usize, &Op)],
    exits: &[(u64, CmdExit)],
) -> Result<Vec<Outcome>, RunError> {
    let (_, res) = command_pages(v);
    let mut out = Vec::with_capacity(ops.len());
    for (i, (step, op)) in ops.iter().enumerate() {
        let o = match exits.iter().find(|(k, _)| *k == i as u64) {
            Some((_, CmdExit::Mmio)) => Outcome::Exit(Exit::Mmio),
            Some((_, CmdExit::MemoryFault { private })) => Outcome::Exit(Exit::MemoryFault { private: *private }),
            None => {
                let status = harness.read_u64(res + i as u64 * RES_SIZE);
                if status != ST_DONE {
                    return Err(RunError::Guest { step: *step, detail: format!("command {i} status {status:#x}") });
                }
                let value = harness.read_u64(res + i as u64 * RES_SIZE + 8);
                match op {
                    Op::Read { .. } => Outcome::Value(value),
                    // The hypercall's return: 0, or a negative KVM errno.
                    Op::MapGpa { .. } if value != 0 => errno_of((value as i64).unsigned_abs() as i32),
                    _ => Outcome::Ok,
                }
            }
        };
        out.push(o);
    }
    Ok(out)
}

/// How many of vCPU `v`'s `n` commands are done (the batch's progress).
pub(super) fn commands_done(harness: &Mapping, v: u32, n: u64) -> u64 {
    let (_, res) = command_pages(v);
    (0..n).filter(|i| harness.read_u64(res + i * RES_SIZE) == ST_DONE).count() as u64
}

impl KvmBackend {
    /// Run consecutive guest ops of one vCPU as one batch.
    pub(super) fn guest_batch(&mut self, v: u32, ops: &[(usize, &Op)], t: &mut RealTrace) -> Result<(), RunError> {
        let st = self.vm.as_mut().expect("prepared");
        write_commands(&st.harness, v, ops)?;
        let n = ops.len() as u64;
        let first = ops.first().map(|o| o.0).unwrap_or(0);
        let (mut exits, mut runs) = (Vec::new(), 0);
        loop {
            let harness = &st.harness;
            let done = || commands_done(harness, v, n);
            let r = guest::run_batch(&mut st.vcpus[v as usize], n, self.timeout, &self.watchdog, done);
            match r {
                Ok((e, r)) => {
                    exits.extend(e);
                    runs += r;
                    break;
                }
                Err(BatchError::MapGpa(m, e, r)) => {
                    exits.extend(e);
                    runs += r;
                    // Userspace's half of the guest's MapGPA: convert, answer, run on.
                    let ret = Self::map_gpa_exit(st, m);
                    // The exit was KVM_EXIT_HYPERCALL, so `hypercall` is the union's live field; KVM
                    // reads `ret` back into the guest's rax on the next run.
                    st.vcpus[v as usize].get_kvm_run().__bindgen_anon_1.hypercall.ret = ret;
                }
                Err(BatchError::Timeout) => return Err(RunError::Timeout { step: first }),
                Err(BatchError::Guest(d)) => return Err(RunError::Guest { step: first, detail: d }),
            }
        }
        t.exits += runs;
        t.guest_ops += ops.len() as u64;
        st.harness_warm = true;
        for ((step, _), o) in ops.iter().zip(read_results(&st.harness, v, ops, &exits)?) {
            t.observed[*step] = Observed::Outcome(o);
        }
        Ok(())
    }

    pub(super) fn run_steps(&mut self, seq: &Sequence) -> Result<RealTrace, RunError> {
        let h = &seq.header;
        let st = self.vm.as_mut().expect("prepared");
        st.plain_backing.clear();
        for g in &h.gmems {
            Self::gmem_create(st, g).map_err(|e| RunError::ioctl("KVM_CREATE_GUEST_MEMFD", e))?;
        }
        for s in &h.slots {
            if let Outcome::Err(e) = Self::slot_add(st, h, s) {
                return Err(RunError::Setup(format!("slot {}: {}", s.id, e.name())));
            }
        }
        let mut t = RealTrace {
            observed: vec![Observed::NotChecked; seq.steps.len()],
            views: vec![None; seq.steps.len()],
            fault_fired: vec![None; seq.steps.len()],
            backing: vec![None; seq.steps.len()],
            ..Default::default()
        };
        // The header's slots are in place: what the kernel mapped so far is not the case's.
        let _ = self.step_view();
        // Reports before the first step (slot set-up) count against the first.
        if let Some(k) = self.kmsg.as_mut() {
            t.splats.extend(k.splats().into_iter().map(|s| (0, s)));
        }
        let mut i = 0;
        while i < seq.steps.len() {
            let op = &seq.steps[i].op;
            let group = seq.group_at(i);
            if group.len() > 1 {
                let t0 = Instant::now();
                self.run_together(seq, group.clone(), &mut t)?;
                count_time(op.kind() as usize, t0);
                i = group.end;
                self.observe(&mut t, i - 1);
                t.backing[i - 1] = self.leaf_backing(&t.views[i - 1]);
                continue;
            }
            if op.kind().is_guest() {
                let v = op.vcpu().expect("guest op");
                let end = seq.guest_batch_end(i, MAX_BATCH as usize);
                let batch: Vec<(usize, &Op)> = (i..end).map(|j| (j, &seq.steps[j].op)).collect();
                let n = batch.len();
                let t0 = Instant::now();
                self.guest_batch(v, &batch, &mut t)?;
                count_time(op.kind() as usize, t0);
                i += n;
                let t0 = Instant::now();
                self.observe(&mut t, i - 1);
                count_time(OP_NANOS.len() - 1, t0);
            } else {
                let t0 = Instant::now();
                let armed = i.checked_sub(1).and_then(|p| match seq.steps[p].op {
                    Op::FailNth { n } => Some(n),
                    _ => None,
                });
                t.observed[i] = match armed {
                    Some(n) => {
                        let (o, fired) = self.host_op_failing(h, op, n);
                        t.fault_fired[i] = Some(fired);
                        o
                    }
                    None => self.host_op(h, op),
                };
                count_time(op.kind() as usize, t0);
                let t0 = Instant::now();
                self.observe(&mut t, i);
                count_time(OP_NANOS.len() - 1, t0);
                i += 1;
            }
        }
        if self.view.as_mut().is_some_and(|v| v.check_lost()) {
            // Events were dropped somewhere in the case: no view of it is trustworthy.
            t.views_lost = t.views.iter().filter(|v| v.is_some()).count() as u64;
            t.views.iter_mut().for_each(|v| *v = None);
        }
        let st = self.vm.as_mut().expect("prepared");
        let plain = std::mem::take(&mut st.plain_backing);
        t.host = HostFacts {
            address_spaces: Some(self.caps.address_spaces.max(1)),
            // One fact for all plain slots of the case: where they differ, the host's choice.
            plain: match plain.split_first() {
                Some((first, rest)) if rest.iter().all(|b| b == first) => *first,
                _ => UserBacking::Unknown,
            },
            gmem_shared: mem::shmem_backing(),
            phys_bits: self.max_gpa_bits,
            shadow_mmu: trace::host_mmu() == Mmu::Shadow,
        };
        Ok(t)
    }
}
