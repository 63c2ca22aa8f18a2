//! The `.seq` text format: one item per line, `#` comments, numbers in hex or decimal, sizes
//! with K/M/G suffixes. Parsing reports file, line, column and what was expected; printing is
//! canonical, and `parse(print(s)) == s` for every legal sequence.

use super::codes::*;
use super::header::*;
use super::kernel::Kernel;
use super::legal;
use super::op::*;
use std::fmt::{self, Write as _};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub msg: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.col, self.msg)
    }
}

impl std::error::Error for ParseError {}

#[derive(Clone, Copy)]
struct Tok<'a> {
    text: &'a str,
    col: usize,
}

struct Line<'a> {
    file: &'a str,
    line: usize,
    toks: Vec<Tok<'a>>,
    pos: usize,
    /// Column just past the last character, for "expected X, found end of line".
    end_col: usize,
}

impl<'a> Line<'a> {
    fn err_at(&self, col: usize, msg: String) -> ParseError {
        ParseError { file: self.file.to_string(), line: self.line, col, msg }
    }
    fn peek(&self) -> Option<Tok<'a>> {
        self.toks.get(self.pos).copied()
    }
    fn next(&mut self, expected: &str) -> Result<Tok<'a>, ParseError> {
        match self.peek() {
            Some(t) => {
                self.pos += 1;
                Ok(t)
            }
            None => Err(self.err_at(self.end_col, format!("expected {expected}, found end of line"))),
        }
    }
    fn fail<T>(&self, t: Tok<'a>, expected: &str) -> Result<T, ParseError> {
        Err(self.err_at(t.col, format!("expected {expected}, found `{}`", t.text)))
    }
    fn word(&mut self, expected: &str, words: &[&str]) -> Result<usize, ParseError> {
        let t = self.next(expected)?;
        match words.iter().position(|w| w.eq_ignore_ascii_case(t.text)) {
            Some(i) => Ok(i),
            None => self.fail(t, expected),
        }
    }
    fn number(&mut self, expected: &str) -> Result<u64, ParseError> {
        let t = self.next(expected)?;
        parse_number(t.text, false).ok_or(()).or_else(|_| self.fail(t, expected))
    }
    fn size(&mut self, expected: &str) -> Result<u64, ParseError> {
        let t = self.next(expected)?;
        parse_number(t.text, true).ok_or(()).or_else(|_| self.fail(t, expected))
    }
    /// `key=VALUE`, returning the value token.
    fn keyed(&mut self, key: &str) -> Result<Tok<'a>, ParseError> {
        let expected = format!("`{key}=`");
        let t = self.next(&expected)?;
        match t.text.split_once('=') {
            Some((k, v)) if k == key && !v.is_empty() => Ok(Tok { text: v, col: t.col + k.len() + 1 }),
            _ => self.fail(t, &expected),
        }
    }
    fn keyed_size(&mut self, key: &str) -> Result<u64, ParseError> {
        let v = self.keyed(key)?;
        parse_number(v.text, true).ok_or(()).or_else(|_| self.fail(v, &format!("a size after `{key}=`")))
    }
    fn flag(&mut self, name: &str) -> bool {
        match self.peek() {
            Some(t) if t.text == name => {
                self.pos += 1;
                true
            }
            _ => false,
        }
    }
    fn vcpu(&mut self) -> Result<u32, ParseError> {
        let t = self.next("`vcpuN`")?;
        match t.text.strip_prefix("vcpu").and_then(|n| n.parse::<u32>().ok()) {
            Some(n) => Ok(n),
            None => self.fail(t, "`vcpuN`"),
        }
    }
    fn level(&mut self) -> Result<Level, ParseError> {
        let i = self.word("a level (4K, 2M or 1G)", &["4K", "2M", "1G"])?;
        Ok(Level::ALL[i])
    }
    fn done(&self) -> Result<(), ParseError> {
        match self.peek() {
            None => Ok(()),
            Some(t) => self.fail(t, "end of line or `=>`"),
        }
    }
}

/// Hex (`0x..`) or decimal; with `sized`, an optional K/M/G suffix.
pub fn parse_number(s: &str, sized: bool) -> Option<u64> {
    let (digits, mult) = match s.as_bytes().last()? {
        b'K' | b'k' if sized => (&s[..s.len() - 1], 1u64 << 10),
        b'M' | b'm' if sized => (&s[..s.len() - 1], 1 << 20),
        b'G' | b'g' if sized => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let v = if let Some(h) = digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        if h.is_empty() || h.starts_with('+') {
            return None;
        }
        u64::from_str_radix(h, 16).ok()?
    } else {
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse::<u64>().ok()?
    };
    v.checked_mul(mult)
}

fn tokenize(src: &str) -> Vec<Tok<'_>> {
    let code = match src.find('#') {
        Some(i) => &src[..i],
        None => src,
    };
    let mut toks = Vec::new();
    let mut start = None;
    for (i, c) in code.char_indices() {
        if c.is_whitespace() {
            if let Some(s) = start.take() {
                toks.push(Tok { text: &code[s..i], col: s + 1 });
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        toks.push(Tok { text: &code[s..], col: s + 1 });
    }
    toks
}

const HEADER_WORDS: [&str; 7] = ["vm", "variant", "option", "vcpus", "gmem", "slot", "kernel"];

/// Parse a whole `.seq` file. `file` names it in errors.
pub fn parse(file: &str, src: &str) -> Result<Sequence, ParseError> {
    let mut header: Option<Header> = None;
    let mut steps: Vec<Step> = Vec::new();
    let mut last_line = 0;
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
            let i =
                l.word("a VM type (default, sw-protected, tdx, snp)", &["default", "sw-protected", "tdx", "snp"])?;
            l.done()?;
            header = Some(Header::new(VmType::ALL[i]));
            continue;
        };
        if HEADER_WORDS.contains(&first.text) {
            if !steps.is_empty() {
                return Err(l.err_at(first.col, format!("`{}` belongs in the header, before the first op", first.text)));
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
        steps.push(Step { op, expect });
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
            let names: Vec<&str> = Variant::ALL.iter().map(|v| v.name()).collect();
            let i = l.word("a variant (upstream, huge-v1, huge-v2, huge-v3)", &names)?;
            if h.variant.is_some() {
                return Err(l.err_at(first.col, "`variant` given twice".into()));
            }
            h.variant = Some(Variant::ALL[i]);
        }
        "option" => {
            let names: Vec<&str> = Knob::ALL.iter().map(|v| v.name()).collect();
            let at = l.peek().map(|t| t.col).unwrap_or(first.col);
            let i = l.word(&format!("an option ({})", names.join(", ")), &names)?;
            let k = Knob::ALL[i];
            if k.vm() != h.vm {
                return Err(l.err_at(at, format!("`option {}` has a meaning on vm {} only", k.name(), k.vm().name())));
            }
            if !h.options.contains(&Knob::ALL[i]) {
                h.options.push(Knob::ALL[i]);
                h.options.sort();
            }
        }
        "kernel" => {
            if !h.kernels.is_empty() {
                return Err(l.err_at(first.col, "`kernel` given twice".into()));
            }
            let names: Vec<&str> = Kernel::ALL.iter().map(|k| k.name()).collect();
            loop {
                let i = l.word(&format!("a kernel ({})", names.join(", ")), &names)?;
                if !h.kernels.contains(&Kernel::ALL[i]) {
                    h.kernels.push(Kernel::ALL[i]);
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
    l.done()
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
        let what = l.word(
            "a guest op (accept, release, read, write, touch, map-gpa)",
            &["accept", "release", "read", "write", "touch", "map-gpa"],
        )?;
        return Ok(match what {
            0 => Op::Accept { vcpu, addr: l.number("an address")?, level: l.level()? },
            1 => Op::Release { vcpu, addr: l.number("an address")?, level: l.level()? },
            2 => Op::Read { vcpu, addr: l.number("an address")?, shared: l.flag("shared") },
            3 => {
                Op::Write { vcpu, addr: l.number("an address")?, value: l.number("a value")?, shared: l.flag("shared") }
            }
            4 => Op::Touch { vcpu, addr: l.number("an address")? },
            _ => {
                let addr = l.number("an address")?;
                let size = l.size("a size")?;
                let private = l.word("`private` or `shared`", &["shared", "private"])? == 1;
                Op::MapGpa { vcpu, addr, size, private }
            }
        });
    }
    const OPS: [&str; 16] = [
        "slot-add",
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
        "mtrr-zap",
        "inject",
        "expect",
    ];
    let i = l.word("an op or `vcpuN`", &OPS)?;
    let slot_id = |l: &mut Line<'_>| -> Result<u32, ParseError> {
        let t = l.peek();
        let id = l.number("a slot id")?;
        u32::try_from(id).or_else(|_| l.fail(t.expect("consumed"), "a slot id below 2^32"))
    };
    Ok(match OPS[i] {
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
        "mtrr-zap" => Op::MtrrZap { addr: l.number("an address")?, size: l.size("a size")? },
        "inject" => {
            let i = l.word(
                "a fault (split-oom, seamcall-busy, demote-interrupted)",
                &["split-oom", "seamcall-busy", "demote-interrupted"],
            )?;
            Op::Inject(Fault::ALL[i])
        }
        _ => parse_expect_state(l)?,
    })
}

fn parse_expect_state(l: &mut Line<'_>) -> Result<Op, ParseError> {
    if l.flag("sept") {
        let addr = l.number("an address")?;
        let level = l.level()?;
        let names: Vec<&str> = SeptState::ALL.iter().map(|s| s.name()).collect();
        let i = l.word("an S-EPT state (FREE, PENDING, MAPPED, BLOCKED, ...)", &names)?;
        return Ok(Op::ExpectSept { addr, level, state: SeptState::ALL[i] });
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
    let k = l.word("an outcome (ok, err, tdx, value, exit, ve, livelock, vm-dead, pvalidate, vmcall)", &kinds)?;
    Ok(Some(match kinds[k] {
        "ok" => Outcome::Ok,
        "err" => {
            let names: Vec<&str> = Errno::ALL.iter().map(|e| e.name()).collect();
            let i = l.word("an errno name (EINVAL, EEXIST, ...)", &names)?;
            Outcome::Err(Errno::ALL[i])
        }
        "tdx" => {
            let names: Vec<&str> = TdxStatus::ALL.iter().map(|e| e.name()).collect();
            let i = l.word("a TDX status name (PAGE_SIZE_MISMATCH, ...)", &names)?;
            let level = match l.peek() {
                Some(t) if t.text != "=>" => Some(l.level()?),
                _ => None,
            };
            Outcome::Tdx(TdxStatus::ALL[i], level)
        }
        "value" => Outcome::Value(l.number("a value")?),
        "exit" => {
            let i = l.word("`mmio` or `memory-fault`", &["mmio", "memory-fault"])?;
            if i == 0 {
                Outcome::Exit(Exit::Mmio)
            } else {
                let p = l.word("`private` or `shared`", &["shared", "private"])?;
                Outcome::Exit(Exit::MemoryFault { private: p == 1 })
            }
        }
        "ve" => Outcome::Ve,
        "livelock" => Outcome::Livelock,
        "pvalidate" => {
            let names: Vec<&str> = PvalidateRc::ALL.iter().map(|e| e.name()).collect();
            let i =
                l.word("a PVALIDATE return code (SUCCESS, FAIL_INPUT, FAIL_PERMISSION, FAIL_SIZEMISMATCH)", &names)?;
            Outcome::Pvalidate(PvalidateRc::ALL[i], l.flag("no-update"))
        }
        "vmcall" => {
            let names: Vec<&str> = VmcallStatus::ALL.iter().map(|e| e.name()).collect();
            let i = l.word("a TDVMCALL status (RETRY, INVALID_OPERAND, ALIGN_ERROR, SUBFUNC_UNSUPPORTED)", &names)?;
            Outcome::Vmcall(VmcallStatus::ALL[i])
        }
        _ => Outcome::VmDead,
    }))
}

// ---------------------------------------------------------------- printing

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
        Op::MtrrZap { addr, size } => format!("mtrr-zap {} {}", fmt_addr(*addr), fmt_size(*size)),
        Op::Inject(f) => format!("inject {}", f.name()),
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
        let names: Vec<&str> = h.kernels.iter().map(|k| k.name()).collect();
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

/// Canonical text of a sequence.
pub fn print(s: &Sequence) -> String {
    let mut o = print_header(&s.header);
    for st in &s.steps {
        o.push_str(&print_step(st));
        o.push('\n');
    }
    o
}
