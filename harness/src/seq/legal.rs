//! Which ops and header items a VM type gives meaning to.
//!
//! One table, used by the parser (an op with no meaning is a parse error with this reason), by
//! the codec (such ops are dropped while decoding) and by `fixup`.

use super::header::*;
use super::op::*;

/// Limits that keep sequences small enough to run fast and print readably.
pub const MAX_VCPUS: u32 = 8;
pub const MAX_GMEMS: usize = 4;
pub const MAX_HEADER_SLOTS: usize = 8;
/// Kernels (lines, releases, ranges) a `kernel` header line may name.
pub const MAX_KERNEL_RANGES: usize = 8;
pub const MAX_NAME: usize = 16;
pub const MAX_STEPS: usize = 256;

pub fn check_header(h: &Header) -> Result<(), String> {
    if h.vcpus == 0 || h.vcpus > MAX_VCPUS {
        return Err(format!("vcpus must be 1..={MAX_VCPUS}"));
    }
    if h.variant.is_some() && h.vm != VmType::Tdx {
        return Err(format!("`variant` selects a KVM TDX variant; vm {} has none", h.vm.name()));
    }
    if let Some(k) = h.options.iter().find(|k| k.vm() != h.vm) {
        return Err(format!(
            "`option {}` has a meaning on vm {} only, not on vm {}",
            k.name(),
            k.vm().name(),
            h.vm.name()
        ));
    }
    if h.gmems.len() > MAX_GMEMS {
        return Err(format!("at most {MAX_GMEMS} guest_memfd files"));
    }
    if h.slots.len() > MAX_HEADER_SLOTS {
        return Err(format!("at most {MAX_HEADER_SLOTS} header slots"));
    }
    for (i, g) in h.gmems.iter().enumerate() {
        check_gmem(h.vm, g)?;
        if h.gmems[..i].iter().any(|o| o.name == g.name) {
            return Err(format!("guest_memfd `{}` declared twice", g.name));
        }
    }
    for s in &h.slots {
        check_slot(h, s)?;
    }
    Ok(())
}

pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!("a name is 1..={MAX_NAME} characters"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err("a name is letters, digits, `_` and `-`".into());
    }
    if name.starts_with("vcpu") {
        return Err("names starting with `vcpu` are reserved".into());
    }
    Ok(())
}

pub fn check_gmem(vm: VmType, g: &GmemDecl) -> Result<(), String> {
    check_name(&g.name)?;
    if g.init_shared && vm.has_private_mem() {
        // Linux 6.18: GUEST_MEMFD_FLAG_INIT_SHARED only where the VM has no private memory.
        return Err(format!("init-shared guest_memfd is only for VMs without private memory, not vm {}", vm.name()));
    }
    if g.mmap && matches!(vm, VmType::Tdx | VmType::Snp) {
        return Err(format!("mmap of guest_memfd has no meaning for vm {}: its memory is private", vm.name()));
    }
    Ok(())
}

/// The harness guest's memslot id and GPA window: no sequence may use them, so the guest's own
/// code, stack and command pages cannot be disturbed on a real backend.
pub use privmem_guest::abi::{HARNESS_GPA, HARNESS_SIZE, HARNESS_SLOT};

fn in_harness_window(addr: u64, size: u64) -> bool {
    let end = addr.saturating_add(size.max(1));
    addr < HARNESS_GPA + HARNESS_SIZE && end > HARNESS_GPA
}

pub fn check_slot(h: &Header, s: &SlotSpec) -> Result<(), String> {
    if s.id == HARNESS_SLOT {
        return Err(format!("slot id {HARNESS_SLOT} is reserved for the harness guest"));
    }
    if in_harness_window(s.gpa, s.size) {
        return Err(format!(
            "GPAs {HARNESS_GPA:#x}..{:#x} are reserved for the harness guest",
            HARNESS_GPA + HARNESS_SIZE
        ));
    }
    if let Some(b) = &s.gmem {
        if !h.gmems.iter().any(|g| g.name == b.gmem) {
            return Err(format!("no guest_memfd named `{}` in the header", b.gmem));
        }
    }
    Ok(())
}

/// Why `op` means nothing on this header's VM, if it doesn't.
pub fn check_op(h: &Header, op: &Op) -> Result<(), String> {
    let vm = h.vm;
    if let Some(v) = op.vcpu() {
        if v >= h.vcpus {
            return Err(format!("vcpu{v} does not exist (vcpus {})", h.vcpus));
        }
    }
    let window = match *op {
        Op::SlotMove { id, gpa } => Some((gpa, 1)).filter(|_| id != HARNESS_SLOT).or(Some((HARNESS_GPA, 1))),
        Op::SlotDelete { id } if id == HARNESS_SLOT => Some((HARNESS_GPA, 1)),
        Op::Private { addr, size }
        | Op::Shared { addr, size }
        | Op::Punch { addr, size, .. }
        | Op::Prefault { addr, size, .. }
        | Op::MtrrZap { addr, size }
        | Op::MapGpa { addr, size, .. } => Some((addr, size)),
        Op::InitMem { addr, pages, .. } => Some((addr, pages.saturating_mul(4096))),
        _ => op.addr().map(|a| (a, 1)),
    };
    if let Some((a, sz)) = window {
        if in_harness_window(a, sz) {
            return Err(format!(
                "slot {HARNESS_SLOT} and GPAs {HARNESS_GPA:#x}..{:#x} are reserved for the harness guest",
                HARNESS_GPA + HARNESS_SIZE
            ));
        }
    }
    let need = |ok: bool, what: &str| {
        if ok {
            Ok(())
        } else {
            Err(format!("{what}, not on vm {}", vm.name()))
        }
    };
    match op {
        Op::SlotAdd(s) => check_slot(h, s),
        Op::SlotUpdate { id, .. } | Op::GetDirtyLog { id } | Op::ClearDirtyLog { id, .. } if *id == HARNESS_SLOT => {
            Err(format!("slot id {HARNESS_SLOT} is reserved for the harness guest"))
        }
        Op::ClearDirtyLog { pages, .. } if *pages > u32::MAX as u64 => {
            Err("clear-dirty-log's page count is 32 bits (`num_pages`)".into())
        }
        Op::SlotUpdate { gmem: Some(b), .. } if !h.gmems.iter().any(|g| g.name == b.gmem) => {
            Err(format!("no guest_memfd named `{}` in the header", b.gmem))
        }
        Op::Private { .. } | Op::Shared { .. } => {
            need(vm.has_private_mem(), "memory attributes exist only on VMs with private memory")
        }
        Op::InitMem { .. } => need(vm == VmType::Tdx, "init-mem is the TDX build step (KVM_TDX_INIT_MEM_REGION)"),
        Op::Finalize => need(matches!(vm, VmType::Tdx | VmType::Snp), "finalize ends a TDX or SNP build"),
        Op::TdxCmd(c) => {
            need(vm == VmType::Tdx, "tdx-cmd is a TDX command (KVM_MEMORY_ENCRYPT_OP)").and_then(|_| tdx_cmd(c, h))
        }
        Op::MtrrZap { .. } => need(vm == VmType::Tdx, "mtrr-zap studies zapping TDX private memory"),
        Op::Inject(_) => need(vm == VmType::Tdx, "injected faults target TDX SEAMCALLs and splits"),
        Op::Accept { .. } => need(matches!(vm, VmType::Tdx | VmType::Snp), "accept is TDX ACCEPT or SNP PVALIDATE"),
        Op::Release { .. } => need(vm == VmType::Snp, "release is SNP PVALIDATE(rescind)"),
        Op::MapGpa { .. } => need(
            matches!(vm, VmType::Tdx | VmType::Snp | VmType::SwProtected),
            "map-gpa is a TDX MapGPA, an SNP page-state change or a SW_PROTECTED guest's KVM_HC_MAP_GPA_RANGE",
        ),
        Op::Read { shared: true, .. } | Op::Write { shared: true, .. } => {
            need(vm.has_shared_alias(), "a `shared` alias exists only for TDX and SNP guests")
        }
        Op::ExpectSept { .. } => need(vm == VmType::Tdx, "the S-EPT exists only on TDX"),
        Op::GmemCreate { decl, .. } => match check_name(&decl.name) {
            Err(e) => Err(e),
            Ok(()) if h.gmems.iter().any(|g| g.name == decl.name) => {
                Err(format!("guest_memfd `{}` is a header file; gmem-create needs a new name", decl.name))
            }
            Ok(()) => Ok(()),
        },
        _ => Ok(()),
    }
    .and_then(|_| match op {
        Op::Release { level: Level::L1G, .. } => Err("PVALIDATE is 4K or 2M".into()),
        Op::Accept { level: Level::L1G, .. } if vm == VmType::Snp => Err("PVALIDATE is 4K or 2M".into()),
        _ => Ok(()),
    })
}

/// Why `op` may not join a concurrent group that already holds `group`, if it may not: every
/// op joinable, [`MAX_GROUP`] at most, one op per vCPU (a vCPU is one thread).
pub fn check_join(group: &[&Op], op: &Op) -> Result<(), String> {
    if !op.kind().joinable() {
        return Err(format!("`{}` cannot run together with other ops", op.kind().name()));
    }
    if let Some(first) = group.iter().find(|o| !o.kind().joinable()) {
        return Err(format!("`{}` cannot run together with other ops", first.kind().name()));
    }
    if group.len() >= MAX_GROUP {
        return Err(format!("at most {MAX_GROUP} ops run together"));
    }
    if let Some(v) = op.vcpu() {
        if group.iter().any(|o| o.vcpu() == Some(v)) {
            return Err(format!("vcpu{v} runs one op of a group: a vCPU is one thread"));
        }
    }
    // Two writes of guest memory in one group leave a value either order explains, and the
    // oracle goes on from one order only: one write per group.
    if matches!(op, Op::Write { .. }) && group.iter().any(|o| matches!(o, Op::Write { .. })) {
        return Err("one guest write per group: which of two writes lands last is not KVM's to say".into());
    }
    // Each slot op is issued with the slot's GPA, size and address as they were before the
    // group: two on one slot would be other calls than the ops say.
    if let Some(id) = slot_of(op) {
        if group.iter().any(|o| slot_of(o) == Some(id)) {
            return Err(format!("slot {id} is changed by one op of a group"));
        }
    }
    Ok(())
}

/// The slot a memslot op changes.
fn slot_of(op: &Op) -> Option<u32> {
    match op {
        Op::SlotDelete { id } | Op::SlotMove { id, .. } | Op::SlotUpdate { id, .. } => Some(*id),
        _ => None,
    }
}

/// Make every `together` flag legal: the first step starts a group, and a step that may not
/// join the group before it starts its own (after edits that removed or moved steps).
pub fn normalize_groups(s: &mut Sequence) {
    let mut start = 0;
    for i in 0..s.steps.len() {
        let joins = i > 0 && s.steps[i].together && {
            let group: Vec<&Op> = s.steps[start..i].iter().map(|st| &st.op).collect();
            check_join(&group, &s.steps[i].op).is_ok()
        };
        s.steps[i].together = joins;
        if !joins {
            start = i;
        }
    }
}

pub fn check_sequence(s: &Sequence) -> Result<(), (usize, String)> {
    check_header(&s.header).map_err(|e| (usize::MAX, e))?;
    if s.steps.len() > MAX_STEPS {
        return Err((MAX_STEPS, format!("at most {MAX_STEPS} steps")));
    }
    for (i, st) in s.steps.iter().enumerate() {
        check_op(&s.header, &st.op).map_err(|e| (i, e))?;
        if st.together {
            if i == 0 {
                return Err((i, "the first step has nothing to run together with".into()));
            }
            let start = (0..i).rev().find(|&k| !s.steps[k].together).unwrap_or(0);
            let group: Vec<&Op> = s.steps[start..i].iter().map(|st| &st.op).collect();
            check_join(&group, &st.op).map_err(|e| (i, e))?;
        }
    }
    Ok(())
}

/// A `tdx-cmd` the model answers: a CPUID count the TDX module decides (CAPABILITIES below its
/// configurable leaves, GET_CPUID below the TD's leaves, INIT_VM's entries) only at the ends
/// that hold on every module: 0, or the room for KVM_MAX_CPUID_ENTRIES and past it.
fn tdx_cmd(c: &crate::seq::TdxCmd, h: &Header) -> Result<(), String> {
    let between = c.nent.is_some_and(|n| n > 0 && n < 256) || (c.id == 1 && c.nent == Some(0));
    if between && matches!(c.id, 0 | 1 | 5) {
        return Err("nent is 0 (not INIT_VM's), or 256 and up: a count between depends on the TDX module".into());
    }
    match c.vcpu {
        Some(v) if v >= h.vcpus.max(1) && !c.new_td => Err(format!("vcpu={v}: the case has {} vCPUs", h.vcpus.max(1))),
        Some(v) if v >= 8 => Err(format!("vcpu={v}: a new TD's vCPU is below 8")),
        _ => Ok(()),
    }
}
