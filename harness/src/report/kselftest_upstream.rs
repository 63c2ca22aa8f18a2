//! `privmem export --kselftest=upstream`: a scenario as a KVM selftest in the kernel's own idiom,
//! for `tools/testing/selftests/kvm/x86/` (`x86_64/` before 6.14), built against that tree's
//! `kvm_util` library. The guest is C: a loop over a table of commands that reports each with
//! `GUEST_SYNC_ARGS`. Every `=>` of the scenario becomes an assertion: errnos on the `__`
//! variants, exit reasons and `memory_fault.flags`, values, and `expect pages_*` through the
//! VM's binary stats less the library's own mappings. Missing VM types are `TEST_REQUIRE`s.
//!
//! Default and SW_PROTECTED scenarios export; what the idiom cannot say (TDX/SNP ops, huge
//! guest_memfd folios) is an error naming it. A guest's map-gpa is KVM_HC_MAP_GPA_RANGE, which
//! the test answers as privmem does (`map_gpa_exit()`).

use crate::oracle::run_model;
use crate::seq::text::{print_op, print_outcome};
use crate::seq::*;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The test's includes and command table type, then (after the table) the guest and the host
/// helpers; a helper follows a `//@NAME` marker and is kept only where the test calls NAME.
const PRELUDE: &str = include_str!("kselftest_upstream_prelude.c");

struct SlotRec {
    gpa: u64,
    size: u64,
    flags: &'static str,
    hva: String,
    fd: String,
    off: u64,
    /// For userspace's half of map-gpa: the shared memory to clear (NULL where the slot's
    /// userspace is guest_memfd's own mapping) and the file to punch (-1: none).
    clear: String,
    punch: String,
}

impl SlotRec {
    fn register(&self, id: u32) -> String {
        format!(
            "\tpm_slot_set({id}, {:#x}ull, {:#x}ull, {}, {}, {:#x}ull);",
            self.gpa, self.size, self.clear, self.punch, self.off
        )
    }
}

/// The library keeps its own memory low: the scenario's must be at or above 1 GiB.
fn low(a: u64) -> bool {
    a < (1 << 30)
}

/// The test's slot number for a scenario's slot (the library's own slots sit below 10).
fn slot_id(id: u32) -> u32 {
    if id < 1000 {
        id + 10
    } else {
        id
    }
}

/// A guest_memfd the test created: its variable, and whether it is mmap()able and shared at
/// creation (then a slot's userspace address is the file's own mapping).
struct GmemRec {
    var: String,
    mmap: bool,
    init_shared: bool,
}

/// One step being written: its number, its words for messages, its expectation, and the
/// outcome the model gives (which drives steps the scenario leaves without `=>`).
struct StepCtx {
    step: usize,
    what: String,
    expect: Option<Outcome>,
    got: Outcome,
}

impl StepCtx {
    fn outcome(&self) -> &Outcome {
        self.expect.as_ref().unwrap_or(&self.got)
    }
}

/// The test as it is written: the guest's command table and `main()`'s body, with what the
/// scenario has made so far.
struct Emit {
    has_map_gpa: bool,
    cmds: Vec<String>,
    body: String,
    gmems: BTreeMap<String, GmemRec>,
    slots: BTreeMap<u32, SlotRec>,
    hva_n: usize,
    cmd_ix: u64,
    /// The 1G regions the guest's accesses touch, which its page tables must map.
    gigs: std::collections::BTreeSet<u64>,
}

/// The C test for `seq` (read from `source`), or why it cannot be exported.
pub fn export(seq: &Sequence, source: &str, src_text: &str, kernel: Option<Release>) -> Result<String, String> {
    let mut seq = seq.clone();
    if let Some(k) = kernel {
        if !crate::model::kernel::holds_on(&seq.header, k) {
            return Err(format!("the scenario does not hold on Linux {k}"));
        }
        seq.header.set_kernel(k);
    }
    // Scenarios placed below 1 GiB, where the library keeps its own memory, move up by 4 GiB:
    // alignments and distances stay, so the checks the scenario makes stay too.
    super::kselftest_upstream_parts::shift_low(&mut seq);
    let seq = &seq;
    let h = &seq.header;
    let vm_type = match h.vm {
        VmType::Default => "KVM_X86_DEFAULT_VM",
        VmType::SwProtected => "KVM_X86_SW_PROTECTED_VM",
        other => return Err(format!("vm {}: the selftest library has no {} set-up yet", other.name(), other.name())),
    };
    if h.vcpus != 1 {
        return Err("more than one vCPU: the export runs one".into());
    }
    if seq.has_groups() {
        return Err("concurrent groups: the export runs ops one at a time, and a race needs threads".into());
    }
    let model = run_model(seq);
    let mut e = Emit {
        has_map_gpa: seq.steps.iter().any(|st| matches!(st.op, Op::MapGpa { .. })),
        cmds: vec!["\t{ CMD_NOP, 0, 0 },\t/* warm-up: the baseline */".into()],
        body: String::new(),
        gmems: BTreeMap::new(),
        slots: BTreeMap::new(),
        hva_n: 0,
        cmd_ix: 1,
        gigs: Default::default(),
    };
    e.header(h)?;
    for (i, st) in seq.steps.iter().enumerate() {
        let step = i + 1;
        let what = format!("step {step} `{}`", print_op(&st.op).replace('"', "'"));
        let _ = writeln!(e.body, "\n\t/* {what} */");
        let cx = StepCtx { step, what, expect: st.expect, got: model.outcomes.get(i).copied().unwrap_or(Outcome::Ok) };
        e.step(&st.op, &cx)?;
    }
    Ok(e.finish(h.vm, vm_type, source, src_text))
}

impl Emit {
    /// The header: options, guest_memfd files, slots, then the warm-up's baseline.
    fn header(&mut self, h: &Header) -> Result<(), String> {
        for o in &h.options {
            match o {
                Knob::NoSlotZapAll => {
                    self.body.push_str("\tvm_enable_cap(vm, KVM_CAP_DISABLE_QUIRKS2, KVM_X86_QUIRK_SLOT_ZAP_ALL);\n")
                }
                k => return Err(format!("option {}: not exported", k.name())),
            }
        }
        for g in &h.gmems {
            let (var, call) = self.gmem_decl(g, 0)?;
            let _ = writeln!(self.body, "\t{call};\n\tTEST_ASSERT({var} >= 0, \"gmem {}\");", g.name);
            self.gmems.insert(g.name.clone(), GmemRec { var, mmap: g.mmap, init_shared: g.init_shared });
        }
        for s in &h.slots {
            let (call, rec) = self.slot_add(s)?;
            let _ = writeln!(self.body, "\tr = {call};\n\tEXPECT_OK(r, \"header slot {}\");", s.id);
            if self.has_map_gpa {
                let _ = writeln!(self.body, "{}", rec.register(slot_id(s.id)));
            }
            self.slots.insert(s.id, rec);
        }
        let _ = writeln!(self.body, "\twarm_baseline(0);");
        Ok(())
    }

    /// The expectation on `r`, where the step has one the test can check.
    fn check(&mut self, cx: &StepCtx, r: &str) {
        match &cx.expect {
            Some(Outcome::Ok) => {
                let _ = writeln!(self.body, "\tEXPECT_OK({r}, \"{}\");", cx.what);
            }
            Some(Outcome::Err(e)) => {
                let _ = writeln!(self.body, "\tEXPECT_ERRNO({r}, {}, \"{}\");", e.name(), cx.what);
            }
            _ => {}
        }
    }

    /// A guest command in the table; its index for `guest_sync()`.
    fn command(&mut self, line: String) -> u64 {
        self.cmds.push(line);
        self.cmd_ix += 1;
        self.cmd_ix - 1
    }

    /// A guest_memfd's variable (declared in the body) and the call that creates it.
    fn gmem_decl(&mut self, g: &GmemDecl, raw: u64) -> Result<(String, String), String> {
        if g.huge {
            return Err(format!("gmem {}: huge guest_memfd folios have no kernel flag", g.name));
        }
        let flags = raw | g.mmap as u64 | (g.init_shared as u64) << 1;
        let var = format!("gmem_{}", g.name.replace('-', "_"));
        let _ = writeln!(self.body, "\tint {var} = -1;\t/* gmem {} */", g.name);
        let call = format!("{var} = __vm_create_guest_memfd(vm, {:#x}ull, {flags:#x})", g.size);
        Ok((var, call))
    }

    /// A slot's memory and its `KVM_SET_USER_MEMORY_REGION2` call.
    fn slot_add(&mut self, s: &SlotSpec) -> Result<(String, SlotRec), String> {
        if low(s.gpa) && s.size > 0 {
            return Err(format!(
                "slot {} at {:#x}: below 1 GiB the selftest library keeps its own memory",
                s.id, s.gpa
            ));
        }
        let hva = format!("hva{}", self.hva_n);
        self.hva_n += 1;
        let (flags, fd, off) = match &s.gmem {
            Some(b) => {
                let g = self.gmems.get(&b.gmem).ok_or(format!("gmem {}", b.gmem))?;
                // A guest_memfd-only slot's userspace address is the file's own mapping.
                if g.mmap && g.init_shared {
                    let _ = writeln!(
                        self.body,
                        "\tvoid *{hva} = mmap(NULL, {:#x}ull, PROT_READ | PROT_WRITE, MAP_SHARED, {}, {:#x});",
                        s.size, g.var, b.offset
                    );
                } else {
                    let _ = writeln!(self.body, "\tvoid *{hva} = slot_memory({:#x}ull);", s.size);
                }
                ("KVM_MEM_GUEST_MEMFD", g.var.clone(), b.offset)
            }
            None => {
                let _ = writeln!(self.body, "\tvoid *{hva} = slot_memory({:#x}ull);", s.size.max(0x1000));
                ("0", "0".to_string(), 0)
            }
        };
        let flags = match (s.readonly, flags) {
            (true, "0") => "KVM_MEM_READONLY",
            (true, _) => "KVM_MEM_GUEST_MEMFD | KVM_MEM_READONLY",
            (false, f) => f,
        };
        let call = format!(
            "__vm_set_user_memory_region2(vm, {}, {flags}, {:#x}ull, {:#x}ull, {hva}, {fd}, {off:#x}ull)",
            slot_id(s.id),
            s.gpa,
            s.size
        );
        let shared_is_file =
            s.gmem.as_ref().and_then(|b| self.gmems.get(&b.gmem)).is_some_and(|g| g.mmap && g.init_shared);
        let clear = if shared_is_file { "NULL".to_string() } else { hva.clone() };
        let punch = if s.gmem.is_some() { fd.clone() } else { "-1".to_string() };
        Ok((call, SlotRec { gpa: s.gpa, size: s.size, flags, hva, fd, off, clear, punch }))
    }

    /// One step. Every op is named: a new op is exported here or refused here by name.
    fn step(&mut self, op: &Op, cx: &StepCtx) -> Result<(), String> {
        match op {
            Op::Read { addr, .. } | Op::Write { addr, .. } | Op::Touch { addr, .. } => {
                let value = match op {
                    Op::Write { value, .. } => Some(*value),
                    _ => None,
                };
                self.guest_access(*addr, value, cx)
            }
            Op::SlotAdd(s) => self.slot_add_step(s, cx),
            Op::SlotDelete { id } => {
                let _ = writeln!(
                    self.body,
                    "\tr = __vm_set_user_memory_region2(vm, {}, 0, 0, 0, NULL, 0, 0);",
                    slot_id(*id)
                );
                if cx.got == Outcome::Ok {
                    self.slots.remove(id);
                    if self.has_map_gpa {
                        let _ = writeln!(self.body, "\tpm_slot_del({});", slot_id(*id));
                    }
                }
                self.check(cx, "r");
                Ok(())
            }
            Op::SlotMove { id, gpa } => self.slot_move(*id, *gpa, cx),
            Op::MapGpa { addr, size, private, .. } => self.map_gpa(*addr, *size, *private, cx),
            Op::Private { addr, size } | Op::Shared { addr, size } => {
                let a = if matches!(op, Op::Private { .. }) { "KVM_MEMORY_ATTRIBUTE_PRIVATE" } else { "0" };
                let _ = writeln!(
                    self.body,
                    "\tattr = (struct kvm_memory_attributes){{ .address = {addr:#x}ull, .size = {size:#x}ull, .attributes = {a} }};\n\tr = __vm_ioctl(vm, KVM_SET_MEMORY_ATTRIBUTES, &attr);"
                );
                self.check(cx, "r");
                Ok(())
            }
            Op::GmemCreate { decl, raw } => {
                let (var, call) = self.gmem_decl(decl, *raw)?;
                let _ = writeln!(self.body, "\t{call};\n\tr = {var} < 0 ? -1 : 0;");
                self.check(cx, "r");
                self.gmems.insert(decl.name.clone(), GmemRec { var, mmap: decl.mmap, init_shared: decl.init_shared });
                Ok(())
            }
            Op::Fallocate { gmem, offset, len, punch, keep_size } => {
                let fd = self.gmems.get(gmem).map(|g| g.var.clone()).unwrap_or("-1".into());
                let mode = match (punch, keep_size) {
                    (true, true) => "FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE",
                    (true, false) => "FALLOC_FL_PUNCH_HOLE",
                    (false, true) => "FALLOC_FL_KEEP_SIZE",
                    (false, false) => "0",
                };
                let _ = writeln!(
                    self.body,
                    "\tr = fallocate({fd}, {mode}, {:#x}ll, {:#x}ll);",
                    *offset as i64, *len as i64
                );
                self.check(cx, "r");
                Ok(())
            }
            Op::Prefault { addr, size, .. } => {
                let _ = writeln!(
                    self.body,
                    "\trange = (struct kvm_pre_fault_memory){{ .gpa = {addr:#x}ull, .size = {size:#x}ull }};\n\tdo {{\n\t\tr = __vcpu_ioctl(vcpu, KVM_PRE_FAULT_MEMORY, &range);\n\t}} while (r >= 0 && range.size);\n\tr = r < 0 ? -1 : 0;"
                );
                self.check(cx, "r");
                Ok(())
            }
            Op::Punch { addr, size, keep_size } => self.punch(*addr, *size, *keep_size, cx),
            Op::HostWrite { addr, .. } | Op::HostRead { addr } => {
                let value = match op {
                    Op::HostWrite { value, .. } => Some(*value),
                    _ => None,
                };
                self.host_access(*addr, value, cx)
            }
            Op::ExpectPages { p4k, p2m, p1g } => {
                self.expect_pages([p4k, p2m, p1g], cx);
                Ok(())
            }
            Op::InitMem { .. }
            | Op::Finalize
            | Op::TdxCmd(_)
            | Op::MtrrZap { .. }
            | Op::SlotUpdate { .. }
            | Op::FailNth { .. }
            | Op::GetDirtyLog { .. }
            | Op::ClearDirtyLog { .. }
            | Op::DirtyLogProtect { .. }
            | Op::Inject(_)
            | Op::Accept { .. }
            | Op::Release { .. }
            | Op::ExpectSept { .. } => Err(format!("{}: `{}` is not exported", cx.what, print_op(op))),
        }
    }

    /// A guest read, write or touch: a command in the table, and what `main()` checks of it.
    fn guest_access(&mut self, addr: u64, value: Option<u64>, cx: &StepCtx) -> Result<(), String> {
        if low(addr) {
            return Err(format!("{}: below 1 GiB the selftest library keeps its own memory", cx.what));
        }
        let gpa = addr & !0xfff;
        self.gigs.insert(gpa & !((1 << 30) - 1));
        let (op, val) = match value {
            Some(v) => ("CMD_WRITE", v),
            None => ("CMD_READ", 0),
        };
        let k = self.command(format!("\t{{ {op}, {gpa:#x}ull, {val:#x}ull }},\t/* step {} */", cx.step));
        match cx.outcome() {
            Outcome::Value(v) if cx.expect.is_some() => {
                let _ = writeln!(self.body, "\tTEST_ASSERT_EQ(guest_sync({k}), {v:#x}ull);");
            }
            Outcome::Value(_) | Outcome::Ok => {
                let _ = writeln!(self.body, "\tguest_sync({k});");
            }
            Outcome::Exit(Exit::MemoryFault { private }) => {
                let f = if *private { "KVM_MEMORY_EXIT_FLAG_PRIVATE" } else { "0" };
                let _ = writeln!(self.body, "\tguest_memory_fault({k}, {f});");
            }
            Outcome::Exit(Exit::Mmio) => {
                let _ = writeln!(self.body, "\tguest_mmio({k});");
            }
            o => return Err(format!("{}: the outcome `{}` is not exported", cx.what, print_outcome(o))),
        }
        Ok(())
    }

    fn slot_add_step(&mut self, s: &SlotSpec, cx: &StepCtx) -> Result<(), String> {
        if s.size == 0 {
            let _ =
                writeln!(self.body, "\tr = __vm_set_user_memory_region2(vm, {}, 0, 0, 0, NULL, 0, 0);", slot_id(s.id));
            if cx.got == Outcome::Ok {
                self.slots.remove(&s.id);
            }
        } else {
            let (call, rec) = self.slot_add(s)?;
            let _ = writeln!(self.body, "\tr = {call};");
            if cx.got == Outcome::Ok {
                if self.has_map_gpa {
                    let _ = writeln!(self.body, "{}", rec.register(slot_id(s.id)));
                }
                self.slots.insert(s.id, rec);
            }
        }
        self.check(cx, "r");
        Ok(())
    }

    fn slot_move(&mut self, id: u32, gpa: u64, cx: &StepCtx) -> Result<(), String> {
        let Some(rec) = self.slots.get(&id) else {
            return Err(format!("{}: a move of a slot the export does not hold", cx.what));
        };
        let _ = writeln!(
            self.body,
            "\tr = __vm_set_user_memory_region2(vm, {}, {}, {gpa:#x}ull, {:#x}ull, {}, {}, {:#x}ull);",
            slot_id(id),
            rec.flags,
            rec.size,
            rec.hva,
            rec.fd,
            rec.off
        );
        self.check(cx, "r");
        if cx.got == Outcome::Ok {
            if let Some(r) = self.slots.get_mut(&id) {
                r.gpa = gpa;
                if self.has_map_gpa {
                    let _ = writeln!(self.body, "{}", r.register(slot_id(id)));
                }
            }
        }
        Ok(())
    }

    fn map_gpa(&mut self, addr: u64, size: u64, private: bool, cx: &StepCtx) -> Result<(), String> {
        let attrs = if private { "KVM_MAP_GPA_RANGE_ENCRYPTED" } else { "0" };
        let k = self.command(format!(
            "\t{{ CMD_MAP_GPA, {addr:#x}ull, {:#x}ull, {attrs} }},\t/* step {} */",
            size / 4096,
            cx.step
        ));
        match cx.outcome() {
            Outcome::Ok => {
                let _ = writeln!(self.body, "\tTEST_ASSERT_EQ(guest_sync({k}), 0);");
            }
            Outcome::Err(e) => {
                let _ = writeln!(self.body, "\tTEST_ASSERT_EQ(guest_sync({k}), (uint64_t)-{});", e.name());
            }
            o => return Err(format!("{}: the outcome `{}` is not exported", cx.what, print_outcome(o))),
        }
        Ok(())
    }

    /// Through the slots, as privmem's host op does: one fallocate per guest_memfd slot piece;
    /// a part with no guest_memfd slot is privmem's own ENOENT.
    fn punch(&mut self, addr: u64, size: u64, keep_size: bool, cx: &StepCtx) -> Result<(), String> {
        let (s0, e0) = (addr / 4096, addr.saturating_add(size.max(1)).div_ceil(4096));
        let mut pieces = Vec::new();
        let mut at = s0;
        while at < e0 {
            let Some(r) = self
                .slots
                .values()
                .find(|r| r.flags.contains("GUEST_MEMFD") && at >= r.gpa / 4096 && at < (r.gpa + r.size) / 4096)
            else {
                break;
            };
            let end = e0.min((r.gpa + r.size) / 4096);
            pieces.push((r.fd.clone(), r.off + (at * 4096 - r.gpa), (end - at) * 4096));
            at = end;
        }
        if at < e0 || pieces.is_empty() {
            if matches!(cx.expect, Some(Outcome::Err(Errno::ENOENT)) | None) {
                let _ = writeln!(self.body, "\t/* no guest_memfd slot there: privmem's own ENOENT */");
                return Ok(());
            }
            return Err(format!("{}: a punch outside guest_memfd slots", cx.what));
        }
        let aligned = addr.is_multiple_of(4096) && size.is_multiple_of(4096) && size > 0;
        if !aligned || !keep_size {
            // The kernel judges the exact arguments.
            let (fd, off, _) = &pieces[0];
            let mode = if keep_size { "FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE" } else { "FALLOC_FL_PUNCH_HOLE" };
            let _ =
                writeln!(self.body, "\tr = fallocate({fd}, {mode}, {:#x}ll, {:#x}ll);", off + (addr - s0 * 4096), size);
        } else {
            let _ = writeln!(self.body, "\tr = 0;");
            for (fd, off, len) in &pieces {
                let _ = writeln!(
                    self.body,
                    "\tif (!r)\n\t\tr = fallocate({fd}, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, {off:#x}ll, {len:#x}ll);"
                );
            }
        }
        self.check(cx, "r");
        Ok(())
    }

    /// Through the slot's userspace memory, as privmem's host ops go; outside every slot there
    /// is nothing to touch (privmem's own EFAULT, not the kernel's).
    fn host_access(&mut self, addr: u64, value: Option<u64>, cx: &StepCtx) -> Result<(), String> {
        let Some(rec) = self.slots.values().find(|r| addr >= r.gpa && addr - r.gpa < r.size) else {
            if matches!(cx.expect, Some(Outcome::Err(Errno::EFAULT)) | None) {
                let _ = writeln!(self.body, "	/* no slot there: nothing to touch */");
                return Ok(());
            }
            return Err(format!("{}: a host access outside the slots", cx.what));
        };
        let ptr = format!("*(uint64_t *)((uint8_t *){} + {:#x})", rec.hva, (addr & !0xfff) - rec.gpa);
        match (value, &cx.expect) {
            (Some(value), _) => {
                let _ = writeln!(self.body, "	WRITE_ONCE({ptr}, {value:#x}ull);");
            }
            (None, Some(Outcome::Value(v))) => {
                let _ = writeln!(self.body, "	TEST_ASSERT_EQ(READ_ONCE({ptr}), {v:#x}ull);");
            }
            _ => {}
        }
        Ok(())
    }

    fn expect_pages(&mut self, sets: [&Option<CountSet>; 3], cx: &StepCtx) {
        let k = self.command(format!("\t{{ CMD_NOP, 0, 0 }},\t/* step {}: the library's pages back */", cx.step));
        let _ = writeln!(self.body, "\tguest_sync({k});");
        for ((name, base), set) in
            [("pages_4k", "base_4k"), ("pages_2m", "base_2m"), ("pages_1g", "base_1g")].iter().zip(sets)
        {
            if let Some(set) = set {
                let conds: Vec<String> = set.iter().map(|v| format!("n == {base} + {v}")).collect();
                let _ = writeln!(
                    self.body,
                    "\tn = PAGES({name});\n\tTEST_ASSERT({}, \"{}: {name} %lu\", (unsigned long)(n - {base}));",
                    conds.join(" || "),
                    cx.what
                );
            }
        }
    }

    /// The whole test: header comment, prelude, command table, helpers, `main()`.
    fn finish(self, vm: VmType, vm_type: &str, source: &str, src_text: &str) -> String {
        let mut out = format!("// SPDX-License-Identifier: GPL-2.0-only\n/*\n * {source}, exported by `privmem export --kselftest=upstream`.\n *\n");
        for l in src_text.lines() {
            let _ = writeln!(out, " * {}", l.replace("*/", "* /"));
        }
        out.push_str(" */\n");
        out.push_str(&PRELUDE.replace("@HAS_MAP_GPA@", if self.has_map_gpa { "1" } else { "0" }));
        let _ = writeln!(out, "\nstatic struct guest_cmd cmds[] = {{\n{}\n}};\n", self.cmds.join("\n"));
        out.push_str(&super::kselftest_upstream_parts::helpers(&self.body));
        let (decls, body) = super::c_style::hoist_declarations(&self.body);
        let _ = writeln!(
            out,
            "\nint main(void)\n{{\n\tconst struct vm_shape shape = {{ .mode = VM_MODE_DEFAULT, .type = {vm_type} }};\n\tstruct kvm_memory_attributes attr;\n\tstruct kvm_pre_fault_memory range;\n{decls}\tuint64_t n;\n\tint r;\n"
        );
        if vm == VmType::SwProtected {
            out.push_str("\tTEST_REQUIRE(kvm_check_cap(KVM_CAP_VM_TYPES) & BIT(KVM_X86_SW_PROTECTED_VM));\n");
        }
        out.push_str(
            "\tvm = vm_create_shape_with_one_vcpu(shape, &vcpu, guest_code);\n\tvcpu_regs_get(vcpu, &entry_regs);\n",
        );
        if self.has_map_gpa {
            out.push_str("\tvm_enable_cap(vm, KVM_CAP_EXIT_HYPERCALL, BIT_ULL(KVM_HC_MAP_GPA_RANGE));\n");
        }
        // The guest's view of the scenario's GPAs: identity, in 1G pages, so that the
        // hardware's walk touches no page-table page the warm-up did not (their leaves would
        // count).
        for g in &self.gigs {
            let _ = writeln!(out, "\tvirt_map_level(vm, {g:#x}ull, {g:#x}ull, 1ull << 30, PG_LEVEL_1G);");
        }
        out.push_str(&body);
        out.push_str("\n\t(void)attr;\n\t(void)range;\n\t(void)n;\n\tkvm_vm_free(vm);\n\treturn 0;\n}\n");
        out
    }
}
