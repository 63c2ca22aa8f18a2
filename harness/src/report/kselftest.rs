//! `privmem export --kselftest`: a standalone C program in the style of a KVM selftest that
//! replays a default-VM sequence with plain KVM ioctls and the guest's code embedded, printing
//! one observation per step in privmem's words (`step N: value 0x..`), so its output can be
//! compared line by line with `privmem replay --backend kvm`.

use crate::seq::text::{print_op, print_outcome};
use crate::seq::*;
use privmem_guest::abi::*;
use std::fmt::Write as _;

const PRELUDE: &str = include_str!("kselftest_prelude.c");

fn prelude(source: &str, expected: &str) -> String {
    let code: Vec<String> = privmem_guest::x86_cpl3::code().iter().map(|b| format!("{b:#04x}")).collect();
    let subst: [(&str, String); 22] = [
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
    let mut s = PRELUDE.to_string();
    for (k, v) in subst {
        s = s.replace(k, &v);
    }
    s
}

/// The C program for `seq`, or why it cannot be exported.
pub fn export(seq: &Sequence, source: &str) -> Result<String, String> {
    let h = &seq.header;
    if h.vm != VmType::Default {
        return Err(format!("kselftest export covers default VMs; this sequence is vm {}", h.vm.name()));
    }
    // The expectations as the C compares them: privmem's own outcome text, by step (1-based).
    let mut exp = vec!["NULL".to_string()];
    for st in &seq.steps {
        exp.push(match &st.expect {
            Some(o) => format!("\"{}\"", print_outcome(o)),
            None => "NULL".into(),
        });
    }
    let mut out = prelude(source, &exp.join(", "));
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
    let gm = |name: &str| h.gmems.iter().position(|g| g.name == name).map(|i| i as i64).unwrap_or(-1);
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
            let mut cmds = Vec::new();
            let mut j = i;
            while j < seq.steps.len() && seq.steps[j].op.kind().is_guest() && cmds.len() < MAX_BATCH as usize {
                let c = match seq.steps[j].op {
                    Op::Read { addr, .. } => format!("{{{OP_READ}, {addr:#x}ull, 0, 0}}"),
                    Op::Write { addr, value, .. } => {
                        format!("{{{OP_WRITE}, {addr:#x}ull, {value:#x}ull, 0}}")
                    }
                    Op::Touch { addr, .. } => format!("{{{OP_TOUCH}, {addr:#x}ull, 0, 0}}"),
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
            Op::ExpectPages { .. } | Op::ExpectSept { .. } => "/* state check: not exported */".to_string(),
            other => return Err(format!("step {step}: `{}` is not exported yet", print_op(other))),
        };
        let _ = writeln!(out, "\t{line}");
        i += 1;
    }
    out.push_str("\tif (mismatches)\n\t\tprintf(\"repro: %d expectation(s) did not hold\\n\", mismatches);\n\treturn mismatches ? 1 : 0;\n}\n");
    Ok(out)
}
