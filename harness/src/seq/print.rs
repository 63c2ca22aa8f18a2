//! The canonical text of sequences: what `privmem print` writes, findings carry and the parser
//! reads back (`parse(print(s)) == s`). Sizes in the unit a person would write, hex where no
//! unit gives a small number.

use super::codes::*;
use super::header::*;
use super::op::*;
use std::fmt::Write as _;

/// A size in the unit a person would write (`2M`, `4K`, `3G`), or in hex where no unit gives a
/// small number: the integer edges the generator draws (2^63, 2^64 - 4K) read as what they are.
pub fn fmt_size(v: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")];
    for (m, u) in UNITS {
        if v != 0 && v.is_multiple_of(m) && v / m < 1 << 20 {
            return format!("{}{u}", v / m);
        }
    }
    if v < 4096 {
        format!("{v}")
    } else {
        format!("{v:#x}")
    }
}

pub fn fmt_addr(v: u64) -> String {
    format!("{v:#x}")
}

fn fmt_set(s: &[u64]) -> String {
    s.iter().map(|n| n.to_string()).collect::<Vec<_>>().join("|")
}

fn fmt_slot(s: &SlotSpec) -> String {
    let mut o = format!("{} gpa={} size={}", s.id, fmt_addr(s.gpa), fmt_size(s.size));
    if let Some(b) = &s.gmem {
        let _ = write!(o, " gmem={} offset={}", b.gmem, fmt_size(b.offset));
    }
    if s.readonly {
        o.push_str(" readonly");
    }
    o
}

pub fn print_op(op: &Op) -> String {
    let sh = |s: bool| if s { " shared" } else { "" };
    match op {
        Op::SlotAdd(s) => format!("slot-add {}", fmt_slot(s)),
        Op::SlotDelete { id } => format!("slot-delete {id}"),
        Op::SlotMove { id, gpa } => format!("slot-move {id} gpa={}", fmt_addr(*gpa)),
        Op::SlotUpdate { id, log_dirty, readonly, gmem } => {
            let mut o = format!("slot-update {id}");
            if *log_dirty {
                o.push_str(" log-dirty");
            }
            if *readonly {
                o.push_str(" readonly");
            }
            if let Some(b) = gmem {
                let _ = write!(o, " gmem={} offset={}", b.gmem, fmt_size(b.offset));
            }
            o
        }
        Op::GetDirtyLog { id } => format!("get-dirty-log {id}"),
        Op::DirtyLogProtect { flags } => match flags {
            0 => "dirty-log-protect off".into(),
            1 => "dirty-log-protect manual".into(),
            2 => "dirty-log-protect initially-set".into(),
            3 => "dirty-log-protect manual initially-set".into(),
            f => format!("dirty-log-protect flags={f:#x}"),
        },
        Op::ClearDirtyLog { id, first, pages } => format!("clear-dirty-log {id} first={first} pages={pages}"),
        Op::Private { addr, size } => format!("private {} {}", fmt_addr(*addr), fmt_size(*size)),
        Op::Shared { addr, size } => format!("shared {} {}", fmt_addr(*addr), fmt_size(*size)),
        Op::Punch { addr, size, keep_size } => {
            format!("punch {} {}{}", fmt_addr(*addr), fmt_size(*size), if *keep_size { "" } else { " no-keep-size" })
        }
        Op::Prefault { vcpu, addr, size } => format!("prefault vcpu{vcpu} {} {}", fmt_addr(*addr), fmt_size(*size)),
        Op::HostWrite { addr, value } => format!("host-write {} {value:#x}", fmt_addr(*addr)),
        Op::HostRead { addr } => format!("host-read {}", fmt_addr(*addr)),
        Op::InitMem { addr, pages, measure } => {
            format!("init-mem {} {pages}{}", fmt_addr(*addr), if *measure { " measure" } else { "" })
        }
        Op::Finalize => "finalize".into(),
        Op::TdxCmd(c) => {
            let mut o = format!("tdx-cmd {}", c.name());
            let mut kv = |k: &str, v: Option<String>| {
                if let Some(v) = v {
                    o.push_str(&format!(" {k}{v}"));
                }
            };
            kv("vcpu=", c.vcpu.map(|v| v.to_string()));
            kv("new-td", c.new_td.then(String::new));
            kv("flags=", (c.flags != 0).then(|| format!("{:#x}", c.flags)));
            kv("hw-error=", (c.hw_error != 0).then(|| format!("{:#x}", c.hw_error)));
            kv("nent=", c.nent.map(|n| n.to_string()));
            kv("attrs=", (c.attrs != 0).then(|| format!("{:#x}", c.attrs)));
            kv("bad-xfam", c.bad_xfam.then(String::new));
            kv("gpaw=", c.gpaw.map(|w| w.to_string()));
            kv("reserved", c.reserved.then(String::new));
            kv("padding", c.padding.then(String::new));
            o
        }
        Op::MtrrZap { addr, size } => format!("mtrr-zap {} {}", fmt_addr(*addr), fmt_size(*size)),
        Op::Inject(f) => format!("inject {}", f.name()),
        Op::FailNth { n } => format!("fail-nth {n}"),
        Op::Accept { vcpu, addr, level } => {
            format!("vcpu{vcpu} accept {} {}", fmt_addr(*addr), level.name())
        }
        Op::Release { vcpu, addr, level } => {
            format!("vcpu{vcpu} release {} {}", fmt_addr(*addr), level.name())
        }
        Op::Read { vcpu, addr, shared } => {
            format!("vcpu{vcpu} read {}{}", fmt_addr(*addr), sh(*shared))
        }
        Op::Write { vcpu, addr, value, shared } => {
            format!("vcpu{vcpu} write {} {value:#x}{}", fmt_addr(*addr), sh(*shared))
        }
        Op::Touch { vcpu, addr } => format!("vcpu{vcpu} touch {}", fmt_addr(*addr)),
        Op::MapGpa { vcpu, addr, size, private } => format!(
            "vcpu{vcpu} map-gpa {} {} {}",
            fmt_addr(*addr),
            fmt_size(*size),
            if *private { "private" } else { "shared" }
        ),
        Op::ExpectPages { p4k, p2m, p1g } => {
            let mut o = String::from("expect");
            for (k, v) in [("pages_4k", p4k), ("pages_2m", p2m), ("pages_1g", p1g)] {
                if let Some(v) = v {
                    let _ = write!(o, " {k}={}", fmt_set(v));
                }
            }
            o
        }
        Op::ExpectSept { addr, level, state } => {
            format!("expect sept {} {} {}", fmt_addr(*addr), level.name(), state.name())
        }
        Op::GmemCreate { decl, raw } => {
            let mut o = format!("gmem-create {}", fmt_gmem(decl));
            if *raw != 0 {
                let _ = write!(o, " flags={raw:#x}");
            }
            o
        }
        Op::Fallocate { gmem, offset, len, punch, keep_size } => format!(
            "fallocate {gmem} {} {}{}{}",
            fmt_addr(*offset),
            fmt_size(*len),
            if *punch { " punch" } else { "" },
            if *keep_size { "" } else { " no-keep-size" }
        ),
    }
}

/// `NAME size=S [huge] [mmap] [init-shared]`, as a header `gmem` line and `gmem-create` write it.
fn fmt_gmem(g: &GmemDecl) -> String {
    let mut o = format!("{} size={}", g.name, fmt_size(g.size));
    for (on, w) in [(g.huge, "huge"), (g.mmap, "mmap"), (g.init_shared, "init-shared")] {
        if on {
            let _ = write!(o, " {w}");
        }
    }
    o
}

pub fn print_outcome(o: &Outcome) -> String {
    match o {
        Outcome::Ok => "ok".into(),
        Outcome::Err(e) => format!("err {}", e.name()),
        Outcome::Tdx(s, None) => format!("tdx {}", s.name()),
        Outcome::Tdx(s, Some(l)) => format!("tdx {} {}", s.name(), l.name()),
        Outcome::Value(v) => format!("value {v:#x}"),
        Outcome::Exit(Exit::Mmio) => "exit mmio".into(),
        Outcome::Exit(Exit::MemoryFault { private }) => {
            format!("exit memory-fault {}", if *private { "private" } else { "shared" })
        }
        Outcome::Ve => "ve".into(),
        Outcome::Livelock => "livelock".into(),
        Outcome::VmDead => "vm-dead".into(),
        Outcome::Pvalidate(rc, no_update) => {
            format!("pvalidate {}{}", rc.name(), if *no_update { " no-update" } else { "" })
        }
        Outcome::Vmcall(st) => format!("vmcall {}", st.name()),
    }
}

pub fn print_step(s: &Step) -> String {
    match &s.expect {
        Some(e) => format!("{} => {}", print_op(&s.op), print_outcome(e)),
        None => print_op(&s.op),
    }
}

pub fn print_header(h: &Header) -> String {
    let mut o = format!("vm {}\n", h.vm.name());
    if let Some(v) = h.variant {
        let _ = writeln!(o, "variant {}", v.name());
    }
    for k in &h.options {
        let _ = writeln!(o, "option {}", k.name());
    }
    if !h.kernels.is_empty() {
        let names: Vec<String> = h.kernels.iter().map(|k| k.to_string()).collect();
        let _ = writeln!(o, "kernel {}", names.join(" "));
    }
    let _ = writeln!(o, "vcpus {}", h.vcpus);
    for g in &h.gmems {
        let _ = writeln!(o, "gmem {}", fmt_gmem(g));
    }
    for s in &h.slots {
        let _ = writeln!(o, "slot {}", fmt_slot(s));
    }
    o
}

/// What goes before step `k` and after it for its concurrent group: `together {` before a
/// group's first step, `}` after its last; a group's steps are indented.
fn group_marks(s: &Sequence, k: usize) -> (bool, bool, &'static str) {
    let opens = s.steps.get(k + 1).is_some_and(|n| n.together) && !s.steps[k].together;
    let inside = s.steps[k].together || opens;
    let closes = s.steps[k].together && !s.steps.get(k + 1).is_some_and(|n| n.together);
    (opens, closes, if inside { "    " } else { "" })
}

/// Canonical text of a sequence.
pub fn print(s: &Sequence) -> String {
    let mut o = print_header(&s.header);
    for (k, st) in s.steps.iter().enumerate() {
        let (opens, closes, indent) = group_marks(s, k);
        if opens {
            o.push_str("together {\n");
        }
        let _ = writeln!(o, "{indent}{}", print_step(st));
        if closes {
            o.push_str("}\n");
        }
    }
    o
}

/// Canonical text of a sequence read from `src`, keeping the source's comments where they
/// were: those before the first op above the header, each op's leading comments above it and
/// its trailing one after it, the last ones at the end. `# known-divergence:` markers and the
/// scenario's prose survive `privmem print`.
pub fn print_keeping_comments(src: &str, s: &Sequence) -> String {
    // The ops are the last `steps.len()` lines with code (header lines all come first).
    let code_lines: Vec<usize> = src
        .lines()
        .enumerate()
        .filter(|(_, l)| {
            let t = l.trim_start();
            let brace = t.starts_with("together") || t.starts_with('}');
            !t.is_empty() && !t.starts_with('#') && !brace
        })
        .map(|(i, _)| i)
        .collect();
    let first_step = code_lines.len().saturating_sub(s.steps.len());
    let step_line: std::collections::HashMap<usize, usize> =
        code_lines[first_step..].iter().enumerate().map(|(k, &i)| (i, k)).collect();
    let mut head = Vec::new();
    let mut before: Vec<Vec<&str>> = vec![Vec::new(); s.steps.len()];
    let mut trailing: Vec<Option<&str>> = vec![None; s.steps.len()];
    let mut pending: Vec<&str> = Vec::new();
    for (i, l) in src.lines().enumerate() {
        let t = l.trim_start();
        let inline = l.find('#').map(|c| &l[c..]);
        if t.starts_with('#') {
            pending.push(t);
        } else if let Some(&k) = step_line.get(&i) {
            before[k] = std::mem::take(&mut pending);
            trailing[k] = inline;
        } else if t.starts_with("together") || t.starts_with('}') {
            // The printer writes the group's braces itself.
        } else if !t.is_empty() {
            head.append(&mut pending);
            head.extend(inline);
        }
    }
    let mut o = String::new();
    for c in head {
        let _ = writeln!(o, "{c}");
    }
    o.push_str(&print_header(&s.header));
    for (k, st) in s.steps.iter().enumerate() {
        let (opens, closes, indent) = group_marks(s, k);
        if opens {
            o.push_str("together {\n");
        }
        for c in &before[k] {
            let _ = writeln!(o, "{indent}{c}");
        }
        match trailing[k] {
            Some(c) => {
                let _ = writeln!(o, "{indent}{}  {c}", print_step(st));
            }
            None => {
                let _ = writeln!(o, "{indent}{}", print_step(st));
            }
        }
        if closes {
            o.push_str("}\n");
        }
    }
    for c in pending {
        let _ = writeln!(o, "{c}");
    }
    o
}
