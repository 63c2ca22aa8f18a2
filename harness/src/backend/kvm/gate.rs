//! Capability gating: which sequences this host can run (naming what it lacks), and a generated
//! case made runnable here.

use super::*;

impl KvmBackend {
    pub(super) fn unsupported_here(&self, seq: &Sequence) -> Option<String> {
        let h = &seq.header;
        let c = &self.caps;
        if !c.kvm {
            return Some(format!("/dev/kvm ({})", c.error.clone().unwrap_or_default()));
        }
        if c.vm_types & (1 << h.vm.kvm_type()) == 0 {
            return Some(format!("VM type {} ({}) in KVM_CAP_VM_TYPES", h.vm.kvm_type(), h.vm.name()));
        }
        if h.vm == VmType::Tdx && h.variant().is_huge() {
            // No kernel this project boots carries the huge-page series (7.3: 4K private
            // mappings only, no DEMOTE, order-0 guest_memfd folios).
            return Some(format!(
                "TDX huge pages (variant {}: the series is not in Linux {})",
                h.variant().name(),
                c.release
            ));
        }
        if matches!(h.vm, VmType::Tdx | VmType::Snp) {
            if wants_huge_gmem(seq) {
                return Some(NO_HUGE_GMEM.into());
            }
            // The rest (attributes, slots) is the TD's own set-up's to check (cvm_run).
            return super::cvm_run::unsupported(seq);
        }
        if h.has(Knob::NoSlotZapAll) && c.quirks2 & kvm_bindings::KVM_X86_QUIRK_SLOT_ZAP_ALL as u64 == 0 {
            return Some("KVM_X86_QUIRK_SLOT_ZAP_ALL in KVM_CAP_DISABLE_QUIRKS2".into());
        }
        if past_file_binding(seq) && !in_lab() && seq.steps.iter().any(|st| is_access(&st.op)) {
            return Some(
                "memory accesses through a guest_memfd binding past the file's end on a shared host (the lab runs them)"
                    .into(),
            );
        }
        if seq.steps.iter().any(|st| matches!(st.op, Op::FailNth { .. }))
            && !std::path::Path::new("/proc/thread-self/fail-nth").exists()
        {
            return Some(
                "fault injection (/proc/thread-self/fail-nth: CONFIG_FAULT_INJECTION, the lab's debug kernel)".into(),
            );
        }
        if h.vcpus as u64 > MAX_VCPUS {
            return Some(format!("more than {MAX_VCPUS} vCPUs in the guest's layout"));
        }
        if !h.gmems.is_empty() && !c.guest_memfd {
            return Some("KVM_CAP_GUEST_MEMFD".into());
        }
        if !h.gmems.is_empty() && h.vm == VmType::Default && c.guest_memfd_flags == 0 {
            // Before Linux 6.18 only VMs with private memory may bind guest_memfd.
            return Some("guest_memfd on a default VM (Linux 6.18+, KVM_CAP_GUEST_MEMFD_FLAGS)".into());
        }
        for g in &h.gmems {
            if g.huge {
                return Some(NO_HUGE_GMEM.into());
            }
            if g.mmap && c.guest_memfd_flags & raw::GUEST_MEMFD_FLAG_MMAP == 0 {
                return Some("GUEST_MEMFD_FLAG_MMAP in KVM_CAP_GUEST_MEMFD_FLAGS".into());
            }
            if g.init_shared && c.guest_memfd_flags & raw::GUEST_MEMFD_FLAG_INIT_SHARED == 0 {
                return Some("GUEST_MEMFD_FLAG_INIT_SHARED in KVM_CAP_GUEST_MEMFD_FLAGS".into());
            }
        }
        for st in &seq.steps {
            match &st.op {
                Op::GmemCreate { decl, .. } if decl.huge => return Some(NO_HUGE_GMEM.into()),
                Op::GmemCreate { .. } if !c.guest_memfd => return Some("KVM_CAP_GUEST_MEMFD".into()),
                Op::MapGpa { .. } if !in_lab() => {
                    return Some(
                        "map-gpa: the guest's hypercall needs CPL0, which runs properly in the lab only".into(),
                    )
                }
                // A scenario's expectations assume the upstream default (KVM_SMM: two address
                // spaces on default VMs); the model knows the host's, but the text does not.
                Op::SlotAdd(sl)
                    if crate::model::memslot::as_id(sl.id) > 0
                        && h.vm == VmType::Default
                        && c.address_spaces < 2
                        && st.expect.is_some() =>
                {
                    return Some(
                        "a second memslot address space (KVM_CAP_MULTI_ADDRESS_SPACE 2: CONFIG_KVM_SMM)".into(),
                    )
                }
                Op::Prefault { .. } if !c.pre_fault_memory => return Some("KVM_CAP_PRE_FAULT_MEMORY".into()),
                Op::Private { .. } | Op::Shared { .. } if c.memory_attributes & (1 << 3) == 0 => {
                    return Some("KVM_MEMORY_ATTRIBUTE_PRIVATE in KVM_CAP_MEMORY_ATTRIBUTES".into())
                }
                // A map-gpa only names its range; the guest does not touch it.
                op if op.kind().is_guest()
                    && !matches!(op, Op::MapGpa { .. })
                    && op.addr().is_some_and(|a| a >= IDENTITY_LIMIT) =>
                {
                    return Some(format!(
                        "guest addresses beyond the guest's {} GiB identity map",
                        IDENTITY_LIMIT >> 30
                    ));
                }
                _ => {}
            }
        }
        None
    }

    /// Drop what this host cannot run from a generated case: huge folios, pre-fault and
    /// attributes when the host lacks them, VM types it does not offer, addresses beyond the
    /// guest's identity map.
    pub(super) fn adapt_here(&self, seq: &Sequence) -> Sequence {
        let c = &self.caps;
        if seq.header.vm == VmType::Tdx && c.tdx {
            return adapt_td(seq);
        }
        let mut s = seq.clone();
        if c.vm_types & (1 << s.header.vm.kvm_type()) == 0 || matches!(s.header.vm, VmType::Tdx | VmType::Snp) {
            s.header.vm = VmType::Default;
        }
        for st in &mut s.steps {
            if let Op::GmemCreate { decl, .. } = &mut st.op {
                decl.huge = false;
            }
        }
        for g in &mut s.header.gmems {
            g.huge = false;
            if s.header.vm == VmType::Default && c.guest_memfd_flags & 3 == 3 {
                g.mmap |= g.init_shared;
            }
        }
        if s.header.vm == VmType::Default && (c.guest_memfd_flags == 0 || !c.guest_memfd) {
            // Before 6.18 a default VM cannot bind guest_memfd: plain slots instead, so the
            // case runs rather than being skipped whole.
            s.header.gmems.clear();
            s.header.slots.iter_mut().for_each(|sl| sl.gmem = None);
            s.steps.iter_mut().for_each(|st| {
                if let Op::SlotAdd(sl) = &mut st.op {
                    sl.gmem = None;
                }
            });
        }
        s.steps.retain(|st| match &st.op {
            // A pre-fault maps every page of its range: over a huge slot that is gigabytes of
            // page tables and memory, and minutes.
            Op::Prefault { size, .. } if *size > MAX_PREFAULT => false,
            Op::Prefault { .. } => c.pre_fault_memory,
            // Linux stores attributes page by page (6.12: an xa_reserve per page before
            // anything else): a range of 2^47 bytes is allocated until the lab kernel runs out
            // of memory and panics. Such ranges stay on the model.
            // A guest's map-gpa becomes the same conversion, done by the harness on its exit.
            Op::Private { size, .. } | Op::Shared { size, .. } | Op::MapGpa { size, .. }
                if *size > max_attr_range() =>
            {
                false
            }
            Op::Private { .. } | Op::Shared { .. } => c.memory_attributes & (1 << 3) != 0,
            op => {
                op.addr().is_none_or(|a| a < IDENTITY_LIMIT) || !op.kind().is_guest() || matches!(op, Op::MapGpa { .. })
            }
        });
        // On a shared host a case ends at a binding past the file's end: whether the kernel
        // takes it is the finding (6.18 does: corpus/known/kvm-gmem-binding-offset-overflow),
        // and nothing may touch memory behind it. In the lab everything after it runs too.
        if !in_lab() {
            let h = &s.header;
            if h.slots.iter().any(|sl| binds_past_file(h, sl)) {
                s.steps.retain(|st| !is_access(&st.op));
            }
            let h = &s.header;
            let first = s.steps.iter().position(|st| added_slot(&st.op).is_some_and(|sl| binds_past_file(h, sl)));
            if let Some(i) = first {
                s.steps.truncate(i + 1);
            }
        }
        crate::seq::gen::fixup(&mut s);
        s
    }
}

/// A generated TD case on a host with TDX (the lab's software module): the TD stays a TD, on
/// upstream KVM's rules (no huge pages), with the ops the runner issues.
fn adapt_td(seq: &Sequence) -> Sequence {
    let mut s = seq.clone();
    s.header.variant = None;
    s.header.options.clear();
    for g in &mut s.header.gmems {
        g.huge = false;
    }
    // The shim's page tables map [0, IDENTITY_LIMIT) (and its shared alias) only; ACCEPT and
    // MapGPA take a GPA and touch nothing.
    // Conversions and pre-faults as large as on other VMs at most (page by page in the kernel:
    // a 4G conversion under the lab's TCG outlived the lab's deadline).
    s.steps.retain(|st| {
        let access = matches!(st.op, Op::Read { .. } | Op::Write { .. } | Op::Touch { .. });
        let too_large = match st.op {
            Op::Private { size, .. } | Op::Shared { size, .. } | Op::MapGpa { size, .. } => size > max_attr_range(),
            Op::Prefault { size, .. } => size > MAX_PREFAULT,
            _ => false,
        };
        super::cvm_run::issues(&st.op, false)
            && !too_large
            && !touches_image(&st.op)
            && (!access || st.op.addr().is_none_or(|a| a < IDENTITY_LIMIT))
    });
    crate::seq::gen::fixup(&mut s);
    s
}

/// Whether an op's range meets the TD shim's own image (its boot region below 4G, the harness
/// slot): not the case's memory, which the model does not hold.
fn touches_image(op: &Op) -> bool {
    use privmem_guest::abi::{BOOT_GPA, BOOT_SIZE, HARNESS_GPA, HARNESS_SIZE};
    let Some((s, e)) = op_span(op) else { return false };
    [(BOOT_GPA, BOOT_SIZE), (HARNESS_GPA, HARNESS_SIZE)].iter().any(|&(b, n)| s < b + n && e > b)
}

/// The GPA range an op is about, shared bit cleared (a guest access's page), as [start, end).
pub(super) fn op_span(op: &Op) -> Option<(u64, u64)> {
    let addr = op.addr()?;
    let len = match *op {
        Op::Prefault { size, .. } | Op::Private { size, .. } | Op::Shared { size, .. } | Op::Punch { size, .. } => size,
        Op::MapGpa { size, .. } => size,
        Op::InitMem { pages, .. } => pages.saturating_mul(4096),
        _ => 4096,
    };
    let s = addr & !crate::seq::TD_SHARED_BIT;
    Some((s, s.saturating_add(len.max(1))))
}

/// What a kernel without huge guest_memfd folios lacks, for every VM type.
const NO_HUGE_GMEM: &str = "huge guest_memfd folios (no such guest_memfd flag in this kernel)";

/// Whether a sequence asks for huge guest_memfd folios (in its header or a created file).
fn wants_huge_gmem(seq: &Sequence) -> bool {
    seq.header.gmems.iter().any(|g| g.huge)
        || seq.steps.iter().any(|st| matches!(&st.op, Op::GmemCreate { decl, .. } if decl.huge))
}
