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
    let has_map_gpa = seq.steps.iter().any(|st| matches!(st.op, Op::MapGpa { .. }));
    let vm_type = match h.vm {
        VmType::Default => "KVM_X86_DEFAULT_VM",
        VmType::SwProtected => "KVM_X86_SW_PROTECTED_VM",
        other => return Err(format!("vm {}: the selftest library has no {} set-up yet", other.name(), other.name())),
    };
    if h.vcpus != 1 {
        return Err("more than one vCPU: the export runs one".into());
    }
    // The model's outcomes drive the steps the scenario leaves without `=>`.
    let model = run_model(seq);
    // The library keeps its own memory low: the scenario's must be at or above 1 GiB.
    let low = |a: u64| a < (1 << 30);
    let slot_id = |id: u32| if id < 1000 { id + 10 } else { id };
    let mut cmds: Vec<String> = vec!["\t{ CMD_NOP, 0, 0 },\t/* warm-up: the baseline */".into()];
    let mut body = String::new();
    let mut gmems: BTreeMap<String, (String, bool, bool)> = BTreeMap::new();
    let mut slots: BTreeMap<u32, SlotRec> = BTreeMap::new();
    let mut hva_n = 0;
    for o in &h.options {
        match o {
            Knob::NoSlotZapAll => {
                body.push_str("\tvm_enable_cap(vm, KVM_CAP_DISABLE_QUIRKS2, KVM_X86_QUIRK_SLOT_ZAP_ALL);\n")
            }
            k => return Err(format!("option {}: not exported", k.name())),
        }
    }
    let gmem_decl = |g: &GmemDecl, raw: u64, body: &mut String| -> Result<String, String> {
        if g.huge {
            return Err(format!("gmem {}: huge guest_memfd folios have no kernel flag", g.name));
        }
        let flags = raw | g.mmap as u64 | (g.init_shared as u64) << 1;
        let var = format!("gmem_{}", g.name.replace('-', "_"));
        let _ = writeln!(body, "\tint {var} = -1;\t/* gmem {} */", g.name);
        Ok(format!("{var} = __vm_create_guest_memfd(vm, {:#x}ull, {flags:#x})", g.size))
    };
    for g in &h.gmems {
        let call = gmem_decl(g, 0, &mut body)?;
        let var = format!("gmem_{}", g.name.replace('-', "_"));
        let _ = writeln!(body, "\t{call};\n\tTEST_ASSERT({var} >= 0, \"gmem {}\");", g.name);
        gmems.insert(g.name.clone(), (var, g.mmap, g.init_shared));
    }
    let mut slot_add = |s: &SlotSpec,
                        gmems: &BTreeMap<String, (String, bool, bool)>,
                        body: &mut String|
     -> Result<(String, SlotRec), String> {
        if low(s.gpa) && s.size > 0 {
            return Err(format!(
                "slot {} at {:#x}: below 1 GiB the selftest library keeps its own memory",
                s.id, s.gpa
            ));
        }
        let hva = format!("hva{hva_n}");
        hva_n += 1;
        let (flags, fd, off) = match &s.gmem {
            Some(b) => {
                let (var, mmap, init_shared) = gmems.get(&b.gmem).ok_or(format!("gmem {}", b.gmem))?;
                // A guest_memfd-only slot's userspace address is the file's own mapping.
                if *mmap && *init_shared {
                    let _ = writeln!(
                        body,
                        "\tvoid *{hva} = mmap(NULL, {:#x}ull, PROT_READ | PROT_WRITE, MAP_SHARED, {var}, {:#x});",
                        s.size, b.offset
                    );
                } else {
                    let _ = writeln!(body, "\tvoid *{hva} = slot_memory({:#x}ull);", s.size);
                }
                ("KVM_MEM_GUEST_MEMFD", var.clone(), b.offset)
            }
            None => {
                let _ = writeln!(body, "\tvoid *{hva} = slot_memory({:#x}ull);", s.size.max(0x1000));
                ("0", "0".to_string(), 0)
            }
        };
        let flags = if s.readonly {
            if flags == "0" {
                "KVM_MEM_READONLY"
            } else {
                "KVM_MEM_GUEST_MEMFD | KVM_MEM_READONLY"
            }
        } else {
            flags
        };
        let call = format!(
            "__vm_set_user_memory_region2(vm, {}, {flags}, {:#x}ull, {:#x}ull, {hva}, {fd}, {off:#x}ull)",
            slot_id(s.id),
            s.gpa,
            s.size
        );
        let shared_is_file = s.gmem.as_ref().and_then(|b| gmems.get(&b.gmem)).is_some_and(|g| g.1 && g.2);
        let clear = if shared_is_file { "NULL".to_string() } else { hva.clone() };
        let punch = if s.gmem.is_some() { fd.clone() } else { "-1".to_string() };
        Ok((call, SlotRec { gpa: s.gpa, size: s.size, flags, hva, fd, off, clear, punch }))
    };
    for s in &h.slots {
        let (call, rec) = slot_add(s, &gmems, &mut body)?;
        let _ = writeln!(body, "\tr = {call};\n\tEXPECT_OK(r, \"header slot {}\");", s.id);
        if has_map_gpa {
            let _ = writeln!(body, "{}", rec.register(slot_id(s.id)));
        }
        slots.insert(s.id, rec);
    }
    let _ = writeln!(body, "\twarm_baseline(0);");
    let mut cmd_ix = 1u64;
    // The 1G regions the guest's accesses touch, which its page tables must map.
    let mut gigs = std::collections::BTreeSet::new();
    for (i, st) in seq.steps.iter().enumerate() {
        let step = i + 1;
        let what = format!("step {step} `{}`", print_op(&st.op).replace('"', "'"));
        let _ = writeln!(body, "\n\t/* {what} */");
        let expect = st.expect;
        let got = model.outcomes.get(i).copied().unwrap_or(Outcome::Ok);
        let check = |r: &str, body: &mut String| match &expect {
            Some(Outcome::Ok) => {
                let _ = writeln!(body, "\tEXPECT_OK({r}, \"{what}\");");
            }
            Some(Outcome::Err(e)) => {
                let _ = writeln!(body, "\tEXPECT_ERRNO({r}, {}, \"{what}\");", e.name());
            }
            _ => {}
        };
        match &st.op {
            Op::Read { addr, .. } | Op::Write { addr, .. } | Op::Touch { addr, .. } => {
                if low(*addr) {
                    return Err(format!("{what}: below 1 GiB the selftest library keeps its own memory"));
                }
                let gpa = addr & !0xfff;
                gigs.insert(gpa & !((1 << 30) - 1));
                let (op, val) = match st.op {
                    Op::Write { value, .. } => ("CMD_WRITE", value),
                    _ => ("CMD_READ", 0),
                };
                cmds.push(format!("\t{{ {op}, {gpa:#x}ull, {val:#x}ull }},\t/* step {step} */"));
                let k = cmd_ix;
                cmd_ix += 1;
                match expect.as_ref().unwrap_or(&got) {
                    Outcome::Value(v) if expect.is_some() => {
                        let _ = writeln!(body, "\tTEST_ASSERT_EQ(guest_sync({k}), {v:#x}ull);");
                    }
                    Outcome::Value(_) | Outcome::Ok => {
                        let _ = writeln!(body, "\tguest_sync({k});");
                    }
                    Outcome::Exit(Exit::MemoryFault { private }) => {
                        let f = if *private { "KVM_MEMORY_EXIT_FLAG_PRIVATE" } else { "0" };
                        let _ = writeln!(body, "\tguest_memory_fault({k}, {f});");
                    }
                    Outcome::Exit(Exit::Mmio) => {
                        let _ = writeln!(body, "\tguest_mmio({k});");
                    }
                    o => return Err(format!("{what}: the outcome `{}` is not exported", print_outcome(o))),
                }
            }
            Op::SlotAdd(s) => {
                if s.size == 0 {
                    let _ = writeln!(
                        body,
                        "\tr = __vm_set_user_memory_region2(vm, {}, 0, 0, 0, NULL, 0, 0);",
                        slot_id(s.id)
                    );
                    if got == Outcome::Ok {
                        slots.remove(&s.id);
                    }
                } else {
                    let (call, rec) = slot_add(s, &gmems, &mut body)?;
                    let _ = writeln!(body, "\tr = {call};");
                    if got == Outcome::Ok {
                        if has_map_gpa {
                            let _ = writeln!(body, "{}", rec.register(slot_id(s.id)));
                        }
                        slots.insert(s.id, rec);
                    }
                }
                check("r", &mut body);
            }
            Op::SlotDelete { id } => {
                let _ =
                    writeln!(body, "\tr = __vm_set_user_memory_region2(vm, {}, 0, 0, 0, NULL, 0, 0);", slot_id(*id));
                if got == Outcome::Ok {
                    slots.remove(id);
                    if has_map_gpa {
                        let _ = writeln!(body, "\tpm_slot_del({});", slot_id(*id));
                    }
                }
                check("r", &mut body);
            }
            Op::SlotMove { id, gpa } => {
                let Some(rec) = slots.get(id) else {
                    return Err(format!("{what}: a move of a slot the export does not hold"));
                };
                let _ = writeln!(
                    body,
                    "\tr = __vm_set_user_memory_region2(vm, {}, {}, {gpa:#x}ull, {:#x}ull, {}, {}, {:#x}ull);",
                    slot_id(*id),
                    rec.flags,
                    rec.size,
                    rec.hva,
                    rec.fd,
                    rec.off
                );
                check("r", &mut body);
                if got == Outcome::Ok {
                    if let Some(r) = slots.get_mut(id) {
                        r.gpa = *gpa;
                        if has_map_gpa {
                            let _ = writeln!(body, "{}", r.register(slot_id(*id)));
                        }
                    }
                }
            }
            Op::MapGpa { addr, size, private, .. } => {
                let attrs = if *private { "KVM_MAP_GPA_RANGE_ENCRYPTED" } else { "0" };
                cmds.push(format!(
                    "\t{{ CMD_MAP_GPA, {addr:#x}ull, {:#x}ull, {attrs} }},\t/* step {step} */",
                    size / 4096
                ));
                let k = cmd_ix;
                cmd_ix += 1;
                match expect.as_ref().unwrap_or(&got) {
                    Outcome::Ok => {
                        let _ = writeln!(body, "\tTEST_ASSERT_EQ(guest_sync({k}), 0);");
                    }
                    Outcome::Err(e) => {
                        let _ = writeln!(body, "\tTEST_ASSERT_EQ(guest_sync({k}), (uint64_t)-{});", e.name());
                    }
                    o => return Err(format!("{what}: the outcome `{}` is not exported", print_outcome(o))),
                }
            }
            Op::Private { addr, size } | Op::Shared { addr, size } => {
                let a = if matches!(st.op, Op::Private { .. }) { "KVM_MEMORY_ATTRIBUTE_PRIVATE" } else { "0" };
                let _ = writeln!(
                    body,
                    "\tattr = (struct kvm_memory_attributes){{ .address = {addr:#x}ull, .size = {size:#x}ull, .attributes = {a} }};\n\tr = __vm_ioctl(vm, KVM_SET_MEMORY_ATTRIBUTES, &attr);"
                );
                check("r", &mut body);
            }
            Op::GmemCreate { decl, raw } => {
                let call = gmem_decl(decl, *raw, &mut body)?;
                let var = format!("gmem_{}", decl.name.replace('-', "_"));
                let _ = writeln!(body, "\t{call};\n\tr = {var} < 0 ? -1 : 0;");
                check("r", &mut body);
                gmems.insert(decl.name.clone(), (var, decl.mmap, decl.init_shared));
            }
            Op::Fallocate { gmem, offset, len, punch, keep_size } => {
                let fd = gmems.get(gmem).map(|g| g.0.clone()).unwrap_or("-1".into());
                let mode = match (punch, keep_size) {
                    (true, true) => "FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE",
                    (true, false) => "FALLOC_FL_PUNCH_HOLE",
                    (false, true) => "FALLOC_FL_KEEP_SIZE",
                    (false, false) => "0",
                };
                let _ = writeln!(body, "\tr = fallocate({fd}, {mode}, {:#x}ll, {:#x}ll);", *offset as i64, *len as i64);
                check("r", &mut body);
            }
            Op::Prefault { addr, size, .. } => {
                let _ = writeln!(
                    body,
                    "\trange = (struct kvm_pre_fault_memory){{ .gpa = {addr:#x}ull, .size = {size:#x}ull }};\n\tdo {{\n\t\tr = __vcpu_ioctl(vcpu, KVM_PRE_FAULT_MEMORY, &range);\n\t}} while (r >= 0 && range.size);\n\tr = r < 0 ? -1 : 0;"
                );
                check("r", &mut body);
            }
            Op::Punch { addr, size, keep_size } => {
                // Through the slots, as privmem's host op does: one fallocate per guest_memfd
                // slot piece; a part with no guest_memfd slot is privmem's own ENOENT.
                let (s0, e0) = (addr / 4096, addr.saturating_add((*size).max(1)).div_ceil(4096));
                let mut pieces = Vec::new();
                let mut at = s0;
                while at < e0 {
                    let Some(r) = slots.values().find(|r| {
                        r.flags.contains("GUEST_MEMFD") && at >= r.gpa / 4096 && at < (r.gpa + r.size) / 4096
                    }) else {
                        break;
                    };
                    let end = e0.min((r.gpa + r.size) / 4096);
                    pieces.push((r.fd.clone(), r.off + (at * 4096 - r.gpa), (end - at) * 4096));
                    at = end;
                }
                if at < e0 || pieces.is_empty() {
                    if matches!(expect, Some(Outcome::Err(Errno::ENOENT)) | None) {
                        let _ = writeln!(body, "\t/* no guest_memfd slot there: privmem's own ENOENT */");
                        continue;
                    }
                    return Err(format!("{what}: a punch outside guest_memfd slots"));
                }
                let aligned = addr % 4096 == 0 && size % 4096 == 0 && *size > 0;
                if !aligned || !keep_size {
                    // The kernel judges the exact arguments.
                    let (fd, off, _) = &pieces[0];
                    let mode =
                        if *keep_size { "FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE" } else { "FALLOC_FL_PUNCH_HOLE" };
                    let _ = writeln!(
                        body,
                        "\tr = fallocate({fd}, {mode}, {:#x}ll, {:#x}ll);",
                        off + (addr - s0 * 4096),
                        size
                    );
                } else {
                    let _ = writeln!(body, "\tr = 0;");
                    for (fd, off, len) in &pieces {
                        let _ = writeln!(
                            body,
                            "\tif (!r)\n\t\tr = fallocate({fd}, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, {off:#x}ll, {len:#x}ll);"
                        );
                    }
                }
                check("r", &mut body);
            }
            Op::HostWrite { addr, .. } | Op::HostRead { addr } => {
                // Through the slot's userspace memory, as privmem's host ops go; outside every
                // slot there is nothing to touch (privmem's own EFAULT, not the kernel's).
                let Some(rec) = slots.values().find(|r| *addr >= r.gpa && *addr - r.gpa < r.size) else {
                    if matches!(expect, Some(Outcome::Err(Errno::EFAULT)) | None) {
                        let _ = writeln!(body, "	/* no slot there: nothing to touch */");
                        continue;
                    }
                    return Err(format!("{what}: a host access outside the slots"));
                };
                let ptr = format!("*(uint64_t *)((uint8_t *){} + {:#x})", rec.hva, (addr & !0xfff) - rec.gpa);
                match (&st.op, &expect) {
                    (Op::HostWrite { value, .. }, _) => {
                        let _ = writeln!(body, "	WRITE_ONCE({ptr}, {value:#x}ull);");
                    }
                    (_, Some(Outcome::Value(v))) => {
                        let _ = writeln!(body, "	TEST_ASSERT_EQ(READ_ONCE({ptr}), {v:#x}ull);");
                    }
                    _ => {}
                }
            }
            Op::ExpectPages { p4k, p2m, p1g } => {
                let k = cmd_ix;
                cmd_ix += 1;
                cmds.push(format!("\t{{ CMD_NOP, 0, 0 }},\t/* step {step}: the library's pages back */"));
                let _ = writeln!(body, "\tguest_sync({k});");
                for (name, set, base) in
                    [("pages_4k", p4k, "base_4k"), ("pages_2m", p2m, "base_2m"), ("pages_1g", p1g, "base_1g")]
                {
                    if let Some(set) = set {
                        let conds: Vec<String> = set.iter().map(|v| format!("n == {base} + {v}")).collect();
                        let _ = writeln!(
                            body,
                            "\tn = PAGES({name});\n\tTEST_ASSERT({}, \"{what}: {name} %lu\", (unsigned long)(n - {base}));",
                            conds.join(" || ")
                        );
                    }
                }
            }
            other => return Err(format!("{what}: `{}` is not exported", print_op(other))),
        }
    }
    let mut out = format!("// SPDX-License-Identifier: GPL-2.0-only\n/*\n * {source}, exported by `privmem export --kselftest=upstream`.\n *\n");
    for l in src_text.lines() {
        let _ = writeln!(out, " * {}", l.replace("*/", "* /"));
    }
    out.push_str(" */\n");
    out.push_str(&PRELUDE.replace("@HAS_MAP_GPA@", if has_map_gpa { "1" } else { "0" }));
    let _ = writeln!(out, "\nstatic struct guest_cmd cmds[] = {{\n{}\n}};\n", cmds.join("\n"));
    out.push_str(&super::kselftest_upstream_parts::helpers(&body));
    let (decls, body) = super::c_style::hoist_declarations(&body);
    let _ = writeln!(
        out,
        "\nint main(void)\n{{\n\tconst struct vm_shape shape = {{ .mode = VM_MODE_DEFAULT, .type = {vm_type} }};\n\tstruct kvm_memory_attributes attr;\n\tstruct kvm_pre_fault_memory range;\n{decls}\tuint64_t n;\n\tint r;\n"
    );
    if h.vm == VmType::SwProtected {
        out.push_str("\tTEST_REQUIRE(kvm_check_cap(KVM_CAP_VM_TYPES) & BIT(KVM_X86_SW_PROTECTED_VM));\n");
    }
    out.push_str(
        "\tvm = vm_create_shape_with_one_vcpu(shape, &vcpu, guest_code);\n\tvcpu_regs_get(vcpu, &entry_regs);\n",
    );
    if has_map_gpa {
        out.push_str("\tvm_enable_cap(vm, KVM_CAP_EXIT_HYPERCALL, BIT_ULL(KVM_HC_MAP_GPA_RANGE));\n");
    }
    // The guest's view of the scenario's GPAs: identity, in 1G pages, so that the hardware's
    // walk touches no page-table page the warm-up did not (their leaves would count).
    for g in gigs {
        let _ = writeln!(out, "\tvirt_map_level(vm, {g:#x}ull, {g:#x}ull, 1ull << 30, PG_LEVEL_1G);");
    }
    out.push_str(&body);
    out.push_str("\n\t(void)attr;\n\t(void)range;\n\t(void)n;\n\tkvm_vm_free(vm);\n\treturn 0;\n}\n");
    Ok(out)
}
