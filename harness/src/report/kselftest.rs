//! `privmem export --kselftest=standalone`: a self-contained C program in the style of a KVM
//! selftest that replays a default or SW_PROTECTED sequence with plain KVM ioctls and the
//! guest's code embedded, printing one observation per step in privmem's words
//! (`step N: value 0x..`), so its output can be compared line by line with
//! `privmem replay --backend kvm`, and checking each against the scenario (exit 1 on a
//! mismatch, 4 when the host lacks what it needs).

use crate::backend::kvm::guest::{GDT_LIMIT, GUEST_CR0, GUEST_CR4, GUEST_EFER, IDT_BASE_OFF, TSS_OFF};
use crate::seq::text::{print_op, print_outcome};
use crate::seq::*;
use privmem_guest::abi::*;
use std::fmt::Write as _;

const PRELUDE: &str = include_str!("kselftest_prelude.c");

/// guest_memfd files a reproducer holds (the C's `gmems[]`).
const MAX_GMEMS: usize = 16;

fn prelude(source: &str, expected: &str, seq: &Sequence) -> String {
    let code: Vec<String> = privmem_guest::x86_cpl3::code().iter().map(|b| format!("{b:#04x}")).collect();
    let private = seq.header.vm == VmType::SwProtected;
    let map_gpa = seq.steps.iter().any(|st| matches!(st.op, Op::MapGpa { .. }));
    // The kernels the scenario holds on, as the model derives them: the C skips elsewhere.
    // The C checks the release it runs on as the model would: mapped to the release the model
    // runs it as (the same table of known releases), then against the ranges the scenario holds
    // on where KVM can set its header up.
    let h = &seq.header;
    use crate::model::kernel::{range_allows, KNOWN};
    let all = h.kernels.is_empty() && crate::model::kernel::kernels_for(h).len() == KNOWN.len();
    let vcode = |r: crate::seq::Release| (r.major as u64) << 32 | (r.minor as u64) << 16 | r.patch as u64;
    let ranges: Vec<crate::seq::KernelRange> = match h.kernels.is_empty() {
        true => crate::seq::Kernel::ALL.map(crate::seq::KernelRange::line).to_vec(),
        false => h.kernels.clone(),
    };
    let kernels: Vec<String> = ranges
        .iter()
        .filter(|r| !r.lo.is_next() && range_allows(h, **r))
        .map(|r| format!("{{ {:#x}, {:#x} }} /* {r} */", vcode(r.lo), vcode(r.hi)))
        .collect();
    let known: Vec<String> =
        KNOWN.iter().filter(|k| !k.is_next()).map(|&k| format!("{:#x} /* {k} */", vcode(k))).collect();
    let subst: [(&str, String); 37] = [
        ("@KERNELS@", if all { "{ 0, 0 }".into() } else { kernels.join(", ") + ", { 0, 0 }" }),
        ("@KNOWN@", known.join(", ")),
        ("@VM_TYPE@", seq.header.vm.kvm_type().to_string()),
        // CPL0 where the VM has private memory: its hypercall needs it, and such hosts run CPL0
        // code properly (the CPL3 default is for hosts that emulate CPL0, see the C's header).
        ("@CPL0@", (private as u8).to_string()),
        ("@HAS_MAP_GPA@", (map_gpa as u8).to_string()),
        ("@MAP_GPA_ENCRYPTED@", format!("{MAP_GPA_ENCRYPTED:#x}")),
        ("@LOOP_OFFSET@", format!("{:#x}", privmem_guest::x86_cpl3::LOOP_OFFSET)),
        ("@OP_MAP_GPA@", OP_MAP_GPA.to_string()),
        ("@MAX_GMEMS@", MAX_GMEMS.to_string()),
        ("@EXPECTED@", expected.to_string()),
        ("@SOURCE@", source.replace("*/", "* /")),
        ("@HARNESS_GPA@", format!("{HARNESS_GPA:#x}")),
        ("@HARNESS_SIZE@", format!("{HARNESS_SIZE:#x}")),
        ("@HARNESS_SLOT@", HARNESS_SLOT.to_string()),
        ("@IDENTITY_LIMIT@", format!("{IDENTITY_LIMIT:#x}")),
        ("@PML4_OFF@", format!("{PML4_OFF:#x}")),
        ("@PDPT_OFF@", format!("{PDPT_OFF:#x}")),
        ("@PD_OFF@", format!("{PD_OFF:#x}")),
        ("@GDT_OFF@", format!("{GDT_OFF:#x}")),
        ("@TSS_OFF@", format!("{TSS_OFF:#x}")),
        ("@IDT_BASE_OFF@", format!("{IDT_BASE_OFF:#x}")),
        ("@GDT_LIMIT@", format!("{GDT_LIMIT:#x}")),
        ("@GUEST_CR0@", format!("{GUEST_CR0:#x}")),
        ("@GUEST_CR4@", format!("{GUEST_CR4:#x}")),
        ("@GUEST_EFER@", format!("{GUEST_EFER:#x}")),
        ("@CODE_OFF@", format!("{CODE_OFF:#x}")),
        ("@STACK_OFF@", format!("{STACK_OFF:#x}")),
        ("@STACK_SIZE@", format!("{STACK_SIZE:#x}")),
        ("@CMD_OFF@", format!("{CMD_OFF:#x}")),
        ("@CMD_FIRST@", CMD_FIRST.to_string()),
        ("@CMD_SIZE@", CMD_SIZE.to_string()),
        ("@RES_SIZE@", RES_SIZE.to_string()),
        ("@PORT_DONE@", format!("{PORT_DONE:#x}")),
        ("@VALUE_OFFSET@", format!("{VALUE_OFFSET:#x}")),
        ("@GUEST_CODE@", code.join(", ")),
        ("@OP_READ@", OP_READ.to_string()),
        ("@OP_WRITE@", OP_WRITE.to_string()),
    ];
    let cases: Vec<String> =
        Errno::ALL.iter().map(|e| format!("\tcase {}: return \"{}\";", e.value(), e.name())).collect();
    let mut s = PRELUDE.replace("@ERRNO_CASES@", &cases.join("\n"));
    for (k, v) in subst {
        s = s.replace(k, &v);
    }
    s
}

/// The C program for `seq`, or why it cannot be exported.
pub fn export(seq: &Sequence, source: &str) -> Result<String, String> {
    let h = &seq.header;
    if !matches!(h.vm, VmType::Default | VmType::SwProtected) {
        return Err(format!(
            "the standalone flavour covers default and SW_PROTECTED VMs; this sequence is vm {}",
            h.vm.name()
        ));
    }
    if seq.has_groups() {
        return Err("concurrent groups: the export runs ops one at a time, and a race needs threads".into());
    }
    // The expectations as the C compares them: privmem's own outcome text, by step (1-based).
    let mut exp = vec!["NULL".to_string()];
    for st in &seq.steps {
        exp.push(match &st.expect {
            Some(o) => format!("\"{}\"", print_outcome(o)),
            None => "NULL".into(),
        });
    }
    let mut zap_all_off = false;
    for o in &h.options {
        match o {
            Knob::NoSlotZapAll => zap_all_off = true,
            k => return Err(format!("option {}: not exported", k.name())),
        }
    }
    let mut out = prelude(source, &exp.join(", "), seq).replace("@ZAP_ALL_OFF@", if zap_all_off { "1" } else { "0" });
    for (i, g) in h.gmems.iter().enumerate() {
        if g.huge {
            return Err(format!("gmem {}: huge guest_memfd folios have no kernel flag to export", g.name));
        }
        let flags = match (g.mmap, g.init_shared) {
            (false, false) => "0",
            (true, false) => "PM_GMEM_MMAP",
            (false, true) => "PM_GMEM_INIT_SHARED",
            (true, true) => "PM_GMEM_MMAP | PM_GMEM_INIT_SHARED",
        };
        let _ = writeln!(out, "\tgmem_create({i}, {:#x}ull, {flags}); /* gmem {} */", g.size, g.name);
    }
    // guest_memfd files by index: the header's, then those the steps create.
    let gmem_ops: Vec<String> = seq
        .steps
        .iter()
        .filter_map(|st| match &st.op {
            Op::GmemCreate { decl, .. } => Some(decl.name.clone()),
            _ => None,
        })
        .collect();
    if h.gmems.len() + gmem_ops.len() > MAX_GMEMS {
        return Err(format!("more than {MAX_GMEMS} guest_memfd files"));
    }
    let names: Vec<&str> = h.gmems.iter().map(|g| g.name.as_str()).chain(gmem_ops.iter().map(String::as_str)).collect();
    let gm = |name: &str| names.iter().position(|g| *g == name).map(|i| i as i64).unwrap_or(-1);
    for s in &h.slots {
        let (g, off) = s.gmem.as_ref().map(|b| (gm(&b.gmem), b.offset)).unwrap_or((-1, 0));
        let _ = writeln!(
            out,
            "\tif (slot_add({}, {:#x}ull, {:#x}ull, {g}, {off:#x}ull, {}))\n\t\tdie(\"header slot {}\");",
            s.id, s.gpa, s.size, s.readonly as u8, s.id
        );
    }
    let mut i = 0;
    while i < seq.steps.len() {
        let op = &seq.steps[i].op;
        let step = i + 1;
        if op.kind().is_guest() {
            if op.vcpu() != Some(0) {
                return Err(format!("step {step}: the standalone flavour runs one vCPU, this op is on another"));
            }
            let mut cmds = Vec::new();
            let (mut j, end) = (i, seq.guest_batch_end(i, MAX_BATCH as usize));
            while j < end {
                let c = match seq.steps[j].op {
                    Op::Read { addr, .. } => format!("{{{OP_READ}, {addr:#x}ull, 0, 0}}"),
                    Op::Write { addr, value, .. } => {
                        format!("{{{OP_WRITE}, {addr:#x}ull, {value:#x}ull, 0}}")
                    }
                    Op::Touch { addr, .. } => format!("{{{OP_TOUCH}, {addr:#x}ull, 0, 0}}"),
                    Op::MapGpa { addr, size, private, .. } => format!(
                        "{{{OP_MAP_GPA}, {addr:#x}ull, {:#x}ull, {:#x}ull}}",
                        size / 4096,
                        if private { MAP_GPA_ENCRYPTED } else { 0 }
                    ),
                    ref other => {
                        return Err(format!("step {}: `{}` has no default-VM guest command", j + 1, print_op(other)))
                    }
                };
                let _ = writeln!(out, "\t/* step {}: {} */", j + 1, print_op(&seq.steps[j].op));
                cmds.push(c);
                j += 1;
            }
            let _ = writeln!(
                out,
                "\t{{\n\t\tstruct cmd c[] = {{ {} }};\n\t\tbatch({step}, {}, c);\n\t}}",
                cmds.join(", "),
                cmds.len()
            );
            i = j;
            continue;
        }
        let _ = writeln!(out, "\t/* step {step}: {} */", print_op(op));
        let line = match op {
            Op::SlotAdd(s) => {
                let (g, off) = s.gmem.as_ref().map(|b| (gm(&b.gmem), b.offset)).unwrap_or((-1, 0));
                format!("say({step}, slot_add({}, {:#x}ull, {:#x}ull, {g}, {off:#x}ull, {}));", s.id, s.gpa, s.size, s.readonly as u8)
            }
            Op::SlotDelete { id } => format!("say({step}, slot_delete({id}));"),
            Op::SlotMove { id, gpa } => format!("say({step}, slot_move({id}, {gpa:#x}ull));"),
            Op::Punch { addr, size, keep_size } => format!("say({step}, punch({addr:#x}ull, {size:#x}ull, {}));", *keep_size as u8),
            Op::HostWrite { addr, value } => format!(
                "p = host_ptr({addr:#x}ull);\n\tif (p) {{ *p = {value:#x}ull; say({step}, 0); }} else say({step}, EFAULT);"
            ),
            Op::HostRead { addr } => format!(
                "p = host_ptr({addr:#x}ull);\n\tif (p) {{ char b[64]; snprintf(b, sizeof(b), \"value 0x%llx\", (unsigned long long)*p); observe({step}, b); }} else say({step}, EFAULT);"
            ),
            Op::Private { addr, size } => format!("say({step}, private_({addr:#x}ull, {size:#x}ull));"),
            Op::Shared { addr, size } => format!("say({step}, shared_({addr:#x}ull, {size:#x}ull));"),
            Op::Prefault { addr, size, .. } => format!("say({step}, prefault({addr:#x}ull, {size:#x}ull));"),
            Op::GmemCreate { decl, raw } => {
                let i = gm(&decl.name);
                if decl.huge {
                    return Err(format!("gmem {}: huge guest_memfd folios have no kernel flag to export", decl.name));
                }
                let flags = raw
                    | if decl.mmap { crate::backend::kvm::raw::GUEST_MEMFD_FLAG_MMAP } else { 0 }
                    | if decl.init_shared { crate::backend::kvm::raw::GUEST_MEMFD_FLAG_INIT_SHARED } else { 0 };
                format!("say({step}, gmem_make({i}, {:#x}ull, {flags:#x}ull)); /* gmem {} */", decl.size, decl.name)
            }
            Op::Fallocate { gmem, offset, len, punch, keep_size } => format!(
                "say({step}, gmem_fallocate({}, {offset:#x}ull, {len:#x}ull, {}, {}));",
                gm(gmem),
                *punch as u8,
                *keep_size as u8
            ),
            Op::ExpectPages { p4k, p2m, p1g } => {
                let list = |set: &Option<CountSet>| match set {
                    Some(set) => {
                        let v: Vec<String> = set.iter().map(|n| n.to_string()).chain(["-1".into()]).collect();
                        format!("(const int64_t[]){{ {} }}", v.join(", "))
                    }
                    None => "NULL".into(),
                };
                format!(
                    "{{
		const int64_t *allowed[3] = {{ {}, {}, {} }};
		pages({step}, allowed);
	}}",
                    list(p4k),
                    list(p2m),
                    list(p1g)
                )
            }
            Op::ExpectSept { .. } => "/* S-EPT state: TDX only */".to_string(),
            other => return Err(format!("step {step}: `{}` is not exported yet", print_op(other))),
        };
        let _ = writeln!(out, "\t{line}");
        i += 1;
    }
    out.push_str("\tif (mismatches)\n\t\tprintf(\"repro: %d expectation(s) did not hold\\n\", mismatches);\n\treturn mismatches ? 1 : 0;\n}\n");
    Ok(out)
}
