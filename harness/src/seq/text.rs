//! The `.seq` text format: one item per line, `#` comments, numbers in hex or decimal, sizes
//! with K/M/G suffixes. Parsing reports file, line, column and what was expected; printing is
//! canonical, and `parse(print(s)) == s` for every legal sequence.

use super::codes::*;
use super::header::*;
use super::kernel::KernelRange;
use super::legal;
use super::op::*;

// The printer lives beside the parser; `text::print*` are its names too.
pub use super::print::*;

pub use super::lex::{parse_number, ParseError};
use super::lex::{tokenize, Line, Tok};

const HEADER_WORDS: [&str; 7] = ["vm", "variant", "option", "vcpus", "gmem", "slot", "kernel"];

/// Parse a whole `.seq` file. `file` names it in errors.
pub fn parse(file: &str, src: &str) -> Result<Sequence, ParseError> {
    let mut header: Option<Header> = None;
    let mut steps: Vec<Step> = Vec::new();
    let mut last_line = 0;
    // Header lines said once at most (`kernel` checks its own).
    let mut once: Vec<&str> = Vec::new();
    // An open `together {`: its line, and how many ops it holds so far.
    let mut group: Option<(usize, usize)> = None;
    for (idx, raw) in src.lines().enumerate() {
        last_line = idx + 1;
        let toks = tokenize(raw);
        if toks.is_empty() {
            continue;
        }
        let end_col = toks.last().map(|t| t.col + t.text.len()).unwrap_or(1);
        let mut l = Line { file, line: idx + 1, toks, pos: 0, end_col };
        let first = l.peek().expect("non-empty");
        let Some(h) = header.as_mut() else {
            if first.text != "vm" {
                return l.fail(first, "`vm default|sw-protected|tdx|snp` as the first line");
            }
            l.pos += 1;
            let vm = l.pick::<VmType>("a VM type")?;
            l.done_header()?;
            header = Some(Header::new(vm));
            continue;
        };
        if first.text == "together" {
            l.pos += 1;
            let brace = l.next("`{` after `together`")?;
            if brace.text != "{" {
                return l.fail(brace, "`{` after `together`");
            }
            l.done()?;
            if let Some((open, _)) = group {
                return Err(
                    l.err_at(first.col, format!("a `together` group cannot hold another (line {open} opened one)"))
                );
            }
            group = Some((idx + 1, 0));
            continue;
        }
        if first.text == "}" {
            l.pos += 1;
            l.done()?;
            match group.take() {
                None => return Err(l.err_at(first.col, "`}` with no open `together {`".into())),
                Some((open, n)) if n < 2 => {
                    return Err(l.err_at(
                        first.col,
                        format!("the `together` group of line {open} holds {n} op(s): it needs two or more"),
                    ))
                }
                Some(_) => {}
            }
            continue;
        }
        if HEADER_WORDS.contains(&first.text) {
            if !steps.is_empty() || group.is_some() {
                return Err(l.err_at(first.col, format!("`{}` belongs in the header, before the first op", first.text)));
            }
            if matches!(first.text, "vcpus" | "variant") {
                if once.contains(&first.text) {
                    return Err(l.err_at(first.col, format!("`{}` given twice", first.text)));
                }
                once.push(first.text);
            }
            parse_header_line(&mut l, h)?;
            continue;
        }
        let op_col = first.col;
        let op = parse_op(&mut l)?;
        let expect = parse_expect(&mut l)?;
        l.done()?;
        if let Err(why) = legal::check_op(h, &op) {
            return Err(l.err_at(op_col, why));
        }
        if steps.len() >= legal::MAX_STEPS {
            return Err(l.err_at(op_col, format!("at most {} steps in a sequence", legal::MAX_STEPS)));
        }
        let together = match group.as_mut() {
            Some((_, n)) => {
                let before: Vec<&Op> = steps[steps.len() - *n..].iter().map(|st| &st.op).collect();
                if let Err(why) = legal::check_join(&before, &op) {
                    return Err(l.err_at(op_col, why));
                }
                *n += 1;
                *n > 1
            }
            None => false,
        };
        steps.push(Step { op, expect, together });
    }
    if let Some((open, _)) = group {
        return Err(ParseError {
            file: file.into(),
            line: last_line.max(1),
            col: 1,
            msg: format!("expected `}}` closing the `together {{` of line {open}, found end of file"),
        });
    }
    let Some(header) = header else {
        return Err(ParseError {
            file: file.into(),
            line: last_line.max(1),
            col: 1,
            msg: "expected `vm TYPE`, found end of file".into(),
        });
    };
    if let Err(why) = legal::check_header(&header) {
        return Err(ParseError { file: file.into(), line: 1, col: 1, msg: why });
    }
    Ok(Sequence { header, steps })
}

fn parse_header_line(l: &mut Line<'_>, h: &mut Header) -> Result<(), ParseError> {
    let first = l.next("a header item")?;
    match first.text {
        "vm" => return Err(l.err_at(first.col, "`vm` given twice".into())),
        "variant" if h.vm != VmType::Tdx => {
            return Err(l.err_at(first.col, format!("`{}` is a TDX policy; vm {} has none", first.text, h.vm.name())));
        }
        "variant" => {
            let v = l.pick::<Variant>("a variant")?;
            if h.variant.is_some() {
                return Err(l.err_at(first.col, "`variant` given twice".into()));
            }
            h.variant = Some(v);
        }
        "option" => {
            let at = l.peek().map(|t| t.col).unwrap_or(first.col);
            let k = l.pick::<Knob>("an option")?;
            if k.vm() != h.vm {
                return Err(l.err_at(at, format!("`option {}` has a meaning on vm {} only", k.name(), k.vm().name())));
            }
            if !h.options.contains(&k) {
                h.options.push(k);
                h.options.sort();
            }
        }
        "kernel" => {
            if !h.kernels.is_empty() {
                return Err(l.err_at(first.col, "`kernel` given twice".into()));
            }
            loop {
                let t = l.next("a kernel")?;
                let k = match KernelRange::parse(t.text) {
                    Ok(k) => k,
                    Err(e) => return l.fail(t, &e),
                };
                if !h.kernels.contains(&k) {
                    if h.kernels.len() == legal::MAX_KERNEL_RANGES {
                        return l.fail(t, &format!("at most {} kernels", legal::MAX_KERNEL_RANGES));
                    }
                    h.kernels.push(k);
                }
                if l.peek().is_none() {
                    break;
                }
            }
            h.kernels.sort();
        }
        "vcpus" => {
            let t = l.peek();
            let n = l.number("a vCPU count")?;
            if n == 0 || n > legal::MAX_VCPUS as u64 {
                return l.fail(t.expect("consumed"), &format!("a vCPU count 1..={}", legal::MAX_VCPUS));
            }
            h.vcpus = n as u32;
        }
        "gmem" => {
            let (g, _) = parse_gmem_decl(l, false)?;
            if let Err(why) = legal::check_gmem(h.vm, &g) {
                return Err(l.err_at(first.col, why));
            }
            if h.gmems.iter().any(|o| o.name == g.name) {
                return Err(l.err_at(first.col, format!("guest_memfd `{}` declared twice", g.name)));
            }
            if h.gmems.len() >= legal::MAX_GMEMS {
                return Err(l.err_at(first.col, format!("at most {} guest_memfd files", legal::MAX_GMEMS)));
            }
            h.gmems.push(g);
        }
        "slot" => {
            let s = parse_slot_spec(l)?;
            if let Err(why) = legal::check_slot(h, &s) {
                return Err(l.err_at(first.col, why));
            }
            if h.slots.len() >= legal::MAX_HEADER_SLOTS {
                return Err(l.err_at(first.col, format!("at most {} header slots", legal::MAX_HEADER_SLOTS)));
            }
            h.slots.push(s);
        }
        _ => unreachable!("caller checked HEADER_WORDS"),
    }
    l.done_header()
}

/// `tdx-cmd NAME|id=N` and its fields in any order: `vcpu=N`, `new-td`,
/// `flags=N`, `hw-error=N`, `nent=N`, `attrs=N`, `bad-xfam`, `gpaw=N`, `reserved`, `padding`.
fn parse_tdx_cmd(l: &mut Line<'_>) -> Result<TdxCmd, ParseError> {
    let names: Vec<&str> = TDX_CMD_NAMES.iter().map(|(_, n)| *n).collect();
    let what = format!("a TDX command ({} or id=N)", names.join(", "));
    let mut c = TdxCmd::default();
    let first = l.peek().ok_or_else(|| l.err_at(l.end_col, format!("expected {what}, found end of line")))?;
    let u32_of = |l: &Line<'_>, t: Tok<'_>, v: u64, what: &str| u32::try_from(v).or_else(|_| l.fail(t, what));
    if first.text.starts_with("id=") {
        let v = l.keyed_size("id")?;
        c.id = u32_of(l, first, v, "an id below 2^32")?;
        if matches!(c.id, 3 | 4) {
            return l.fail(first, "an id other than 3 and 4 (`init-mem` and `finalize` are ops of their own)");
        }
    } else {
        let n = l.choose(&what, &names)?;
        c.id = TDX_CMD_NAMES.iter().find(|(_, w)| *w == n).expect("listed").0;
    }
    const FIELDS: &str =
        "`vcpu=N`, `new-td`, `flags=N`, `hw-error=N`, `nent=N`, `attrs=N`, `bad-xfam`, `gpaw=N`, `reserved`, `padding` or `=>`";
    while let Some(t) = l.peek() {
        if t.text == "=>" {
            break;
        }
        let key = t.text.split_once('=').map_or(t.text, |(k, _)| k);
        match key {
            "new-td" | "bad-xfam" | "reserved" | "padding" => {
                let f = match key {
                    "new-td" => &mut c.new_td,
                    "bad-xfam" => &mut c.bad_xfam,
                    "reserved" => &mut c.reserved,
                    _ => &mut c.padding,
                };
                if std::mem::replace(f, true) {
                    return l.fail(t, FIELDS);
                }
                l.pos += 1;
            }
            "vcpu" | "flags" | "hw-error" | "nent" | "attrs" | "gpaw" => {
                let v = l.keyed_size(key)?;
                match key {
                    "vcpu" => c.vcpu = Some(u32_of(l, t, v, "a vCPU below 2^32")?),
                    "flags" => c.flags = u32_of(l, t, v, "flags below 2^32 (a __u32)")?,
                    "hw-error" => c.hw_error = v,
                    "nent" => c.nent = Some(u32_of(l, t, v, "nent below 2^32 (a __u32)")?),
                    "attrs" => c.attrs = v,
                    _ => match u8::try_from(v) {
                        Ok(52) => {
                            return l.fail(t, "a width other than 52 (52 holds where the platform has 5-level EPT)")
                        }
                        Ok(w) => c.gpaw = Some(w),
                        Err(_) => return l.fail(t, "a width below 256"),
                    },
                }
            }
            _ => return l.fail(t, FIELDS),
        }
    }
    Ok(c)
}

/// `NAME size=S [huge] [mmap] [init-shared]`, and with `raw` a `flags=N` of extra flag bits
/// (a header `gmem` line, or a `gmem-create` op).
fn parse_gmem_decl(l: &mut Line<'_>, raw: bool) -> Result<(GmemDecl, u64), ParseError> {
    let name = l.next("a guest_memfd name")?;
    if let Err(why) = legal::check_name(name.text) {
        return Err(l.err_at(name.col, why));
    }
    let size = l.keyed_size("size")?;
    let mut g = GmemDecl { name: name.text.to_string(), size, huge: false, mmap: false, init_shared: false };
    let mut flags = 0;
    while let Some(t) = l.peek() {
        match t.text {
            "huge" if !g.huge => g.huge = true,
            "mmap" if !g.mmap => g.mmap = true,
            "init-shared" if !g.init_shared => g.init_shared = true,
            "=>" if raw => break,
            f if raw && f.starts_with("flags=") => {
                flags = l.keyed_size("flags")?;
                continue;
            }
            _ if raw => return l.fail(t, "`huge`, `mmap`, `init-shared`, `flags=N` or `=>`"),
            _ => return l.fail(t, "`huge`, `mmap`, `init-shared` or end of line"),
        }
        l.pos += 1;
    }
    Ok((g, flags))
}

fn parse_slot_spec(l: &mut Line<'_>) -> Result<SlotSpec, ParseError> {
    let t = l.peek();
    let id = l.number("a slot id")?;
    if id > u32::MAX as u64 {
        return l.fail(t.expect("consumed"), "a slot id below 2^32");
    }
    let gpa = {
        let v = l.keyed("gpa")?;
        parse_number(v.text, true).ok_or(()).or_else(|_| l.fail(v, "an address after `gpa=`"))?
    };
    let size = l.keyed_size("size")?;
    let mut gmem = None;
    if matches!(l.peek(), Some(t) if t.text.starts_with("gmem=")) {
        let name = l.keyed("gmem")?;
        let offset = l.keyed_size("offset")?;
        gmem = Some(GmemBinding { gmem: name.text.to_string(), offset });
    }
    let readonly = l.flag("readonly");
    Ok(SlotSpec { id: id as u32, gpa, size, gmem, readonly })
}

fn parse_op(l: &mut Line<'_>) -> Result<Op, ParseError> {
    let first = l.peek().expect("non-empty line");
    if first.text.starts_with("vcpu") {
        let vcpu = l.vcpu()?;
        let what = l.choose(
            "a guest op (accept, release, read, write, touch, map-gpa)",
            &["accept", "release", "read", "write", "touch", "map-gpa"],
        )?;
        return Ok(match what {
            "accept" => Op::Accept { vcpu, addr: l.number("an address")?, level: l.level()? },
            "release" => Op::Release { vcpu, addr: l.number("an address")?, level: l.level()? },
            "read" => Op::Read { vcpu, addr: l.number("an address")?, shared: l.flag("shared") },
            "write" => {
                Op::Write { vcpu, addr: l.number("an address")?, value: l.number("a value")?, shared: l.flag("shared") }
            }
            "touch" => Op::Touch { vcpu, addr: l.number("an address")? },
            "map-gpa" => {
                let addr = l.number("an address")?;
                let size = l.size("a size")?;
                let private = l.choose("`private` or `shared`", &["shared", "private"])? == "private";
                Op::MapGpa { vcpu, addr, size, private }
            }
            _ => unreachable!("choose returns a listed word"),
        });
    }
    const OPS: [&str; 22] = [
        "fail-nth",
        "slot-add",
        "slot-update",
        "get-dirty-log",
        "clear-dirty-log",
        "dirty-log-protect",
        "gmem-create",
        "fallocate",
        "slot-delete",
        "slot-move",
        "private",
        "shared",
        "punch",
        "prefault",
        "host-write",
        "host-read",
        "init-mem",
        "finalize",
        "tdx-cmd",
        "mtrr-zap",
        "inject",
        "expect",
    ];
    let op = l.choose("an op or `vcpuN`", &OPS)?;
    let slot_id = |l: &mut Line<'_>| -> Result<u32, ParseError> {
        let t = l.peek();
        let id = l.number("a slot id")?;
        u32::try_from(id).or_else(|_| l.fail(t.expect("consumed"), "a slot id below 2^32"))
    };
    Ok(match op {
        "slot-add" => Op::SlotAdd(parse_slot_spec(l)?),
        "gmem-create" => {
            let (decl, raw) = parse_gmem_decl(l, true)?;
            Op::GmemCreate { decl, raw }
        }
        "fallocate" => {
            let name = l.next("a guest_memfd name")?;
            let gmem = name.text.to_string();
            let (offset, len) = (l.size("a file offset")?, l.size("a length")?);
            let punch = l.flag("punch");
            Op::Fallocate { gmem, offset, len, punch, keep_size: !l.flag("no-keep-size") }
        }
        "slot-delete" => Op::SlotDelete { id: slot_id(l)? },
        "slot-update" => {
            let id = slot_id(l)?;
            let log_dirty = l.flag("log-dirty");
            let readonly = l.flag("readonly");
            let mut gmem = None;
            if matches!(l.peek(), Some(t) if t.text.starts_with("gmem=")) {
                let name = l.keyed("gmem")?;
                let offset = l.keyed_size("offset")?;
                gmem = Some(GmemBinding { gmem: name.text.to_string(), offset });
            }
            Op::SlotUpdate { id, log_dirty, readonly, gmem }
        }
        "get-dirty-log" => Op::GetDirtyLog { id: slot_id(l)? },
        "dirty-log-protect" => {
            // `manual`, `manual initially-set`, `off`, or the raw args[0] as `flags=N`.
            let what = "`manual`, `manual initially-set`, `off` or `flags=N`";
            let flags = if matches!(l.peek(), Some(t) if t.text.starts_with("flags=")) {
                let v = l.keyed("flags")?;
                parse_number(v.text, false).ok_or(()).or_else(|_| l.fail(v, "a number after `flags=`"))?
            } else if l.flag("off") {
                0
            } else {
                let manual = l.flag("manual");
                let init = l.flag("initially-set");
                if !manual && !init {
                    let t = l.next(what)?;
                    return l.fail(t, what);
                }
                manual as u64 | (init as u64) << 1
            };
            Op::DirtyLogProtect { flags }
        }
        "clear-dirty-log" => {
            let id = slot_id(l)?;
            let first = l.keyed_size("first")?;
            let pages = l.keyed_size("pages")?;
            Op::ClearDirtyLog { id, first, pages }
        }
        "slot-move" => {
            let id = slot_id(l)?;
            let v = l.keyed("gpa")?;
            let gpa = parse_number(v.text, true).ok_or(()).or_else(|_| l.fail(v, "an address after `gpa=`"))?;
            Op::SlotMove { id, gpa }
        }
        "private" => Op::Private { addr: l.number("an address")?, size: l.size("a size")? },
        "shared" => Op::Shared { addr: l.number("an address")?, size: l.size("a size")? },
        "punch" => {
            Op::Punch { addr: l.number("an address")?, size: l.size("a size")?, keep_size: !l.flag("no-keep-size") }
        }
        "prefault" => Op::Prefault { vcpu: l.vcpu()?, addr: l.number("an address")?, size: l.size("a size")? },
        "host-write" => Op::HostWrite { addr: l.number("an address")?, value: l.number("a value")? },
        "host-read" => Op::HostRead { addr: l.number("an address")? },
        "init-mem" => {
            Op::InitMem { addr: l.number("an address")?, pages: l.number("a page count")?, measure: l.flag("measure") }
        }
        "finalize" => Op::Finalize,
        "tdx-cmd" => Op::TdxCmd(parse_tdx_cmd(l)?),
        "mtrr-zap" => Op::MtrrZap { addr: l.number("an address")?, size: l.size("a size")? },
        "inject" => Op::Inject(l.pick::<Fault>("a fault")?),
        "fail-nth" => {
            let t = l.peek();
            let n = l.number("the allocation to fail (1 is the first)")?;
            match u32::try_from(n) {
                Ok(n) if n > 0 => Op::FailNth { n },
                _ => return l.fail(t.expect("consumed"), "an allocation number 1..2^32"),
            }
        }
        _ => parse_expect_state(l)?,
    })
}

fn parse_expect_state(l: &mut Line<'_>) -> Result<Op, ParseError> {
    if l.flag("sept") {
        let addr = l.number("an address")?;
        let level = l.level()?;
        let state = l.pick::<SeptState>("an S-EPT state")?;
        return Ok(Op::ExpectSept { addr, level, state });
    }
    let (mut p4k, mut p2m, mut p1g) = (None, None, None);
    while let Some(t) = l.peek() {
        if t.text == "=>" {
            break;
        }
        l.pos += 1;
        let Some((k, v)) = t.text.split_once('=') else {
            return l.fail(t, "`sept` or `pages_4k=N`, `pages_2m=N`, `pages_1g=N`");
        };
        let slot = match k {
            "pages_4k" => &mut p4k,
            "pages_2m" => &mut p2m,
            "pages_1g" => &mut p1g,
            _ => return l.fail(t, "`pages_4k=`, `pages_2m=` or `pages_1g=`"),
        };
        if slot.is_some() {
            return Err(l.err_at(t.col, format!("`{k}` given twice")));
        }
        let mut set: Vec<u64> = Vec::new();
        if v.split('|').count() > 4 {
            return Err(l.err_at(t.col, format!("at most 4 counts in `{k}=`")));
        }
        for part in v.split('|') {
            match parse_number(part, false) {
                Some(n) => set.push(n),
                None => {
                    return Err(l.err_at(t.col + k.len() + 1, format!("expected a count or `N|M` set, found `{v}`")))
                }
            }
        }
        set.sort_unstable();
        set.dedup();
        *slot = Some(set);
    }
    if p4k.is_none() && p2m.is_none() && p1g.is_none() {
        return Err(l.err_at(l.end_col, "expected `sept` or at least one `pages_*=N`, found end of line".into()));
    }
    Ok(Op::ExpectPages { p4k, p2m, p1g })
}

fn parse_expect(l: &mut Line<'_>) -> Result<Option<Outcome>, ParseError> {
    if !l.flag("=>") {
        return Ok(None);
    }
    let kinds = ["ok", "err", "tdx", "value", "exit", "ve", "livelock", "vm-dead", "pvalidate", "vmcall"];
    let kind = l.choose("an outcome (ok, err, tdx, value, exit, ve, livelock, vm-dead, pvalidate, vmcall)", &kinds)?;
    Ok(Some(match kind {
        "ok" => Outcome::Ok,
        "err" => match l.peek() {
            // An errno without a name here, by number (`err 133`), as a real backend reports it.
            Some(t) if t.text.starts_with(|c: char| c.is_ascii_digit()) => {
                let n = l.number("an errno name or number")?;
                let n = i32::try_from(n).map_err(|_| l.err_at(t.col, format!("errno {n} is out of range")))?;
                Outcome::Err(Errno::from_raw(n))
            }
            _ => Outcome::Err(l.pick::<Errno>("an errno name or number")?),
        },
        "tdx" => {
            let status = l.pick::<TdxStatus>("a TDX status")?;
            let level = match l.peek() {
                Some(t) if t.text != "=>" => Some(l.level()?),
                _ => None,
            };
            Outcome::Tdx(status, level)
        }
        "value" => Outcome::Value(l.number("a value")?),
        "exit" => {
            if l.choose("`mmio` or `memory-fault`", &["mmio", "memory-fault"])? == "mmio" {
                Outcome::Exit(Exit::Mmio)
            } else {
                let p = l.choose("`private` or `shared`", &["shared", "private"])?;
                Outcome::Exit(Exit::MemoryFault { private: p == "private" })
            }
        }
        "ve" => Outcome::Ve,
        "livelock" => Outcome::Livelock,
        "pvalidate" => Outcome::Pvalidate(l.pick::<PvalidateRc>("a PVALIDATE return code")?, l.flag("no-update")),
        "vmcall" => Outcome::Vmcall(l.pick::<VmcallStatus>("a TDVMCALL status")?),
        "vm-dead" => Outcome::VmDead,
        _ => unreachable!("choose returns a listed word"),
    }))
}
