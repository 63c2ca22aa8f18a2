//! A compact binary codec for fuzz inputs.
//!
//! Every byte string decodes to a legal sequence (ops with no meaning for the decoded VM type
//! are dropped, a truncated op is dropped), and every legal sequence encodes to bytes that decode
//! back to it exactly, so corpus files become libFuzzer and AFL seeds.
//!
//! Layout: `vm variant+5*kernels options vcpus ngmem {gmem} nslot {slot} {op expect}`. Numbers are LEB128;
//! addresses and sizes are page numbers when page aligned (low bit 0), else a tagged pair.
//!
//! **Stability.** Saved fuzzer inputs and crash artifacts are these bytes, so the numbers are
//! an interface (as SYZOS's command IDs are): an op's number is its index in `OpKind::ALL`, a
//! VM type's, variant's, knob's, errno's and status's their index in their `ALL`, and a kernel
//! line's its [`kernel_bit`]. New ones are appended, never inserted; a kernel line added later
//! has no bit and is written as a range. `golden_bytes_are_stable` pins the numbers.

use super::codes::*;
use super::header::*;
use super::kernel::{Kernel, KernelRange, Release};
use super::legal;
use super::op::*;

const NAME_CHARS: &[u8; 64] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-";

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

/// Raised when the input ends in the middle of an item.
struct Eof;

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, Eof> {
        let v = *self.b.get(self.i).ok_or(Eof)?;
        self.i += 1;
        Ok(v)
    }
    fn varint(&mut self) -> Result<u64, Eof> {
        let mut v: u64 = 0;
        for shift in (0..70).step_by(7) {
            let b = self.byte()?;
            if shift < 64 {
                v |= ((b & 0x7f) as u64) << shift;
            }
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Ok(v)
    }
    fn addr(&mut self) -> Result<u64, Eof> {
        let v = self.varint()?;
        if v & 1 == 0 {
            return Ok((v >> 1).wrapping_shl(12));
        }
        let low = (v >> 1) & 0xfff;
        let high = self.varint()?;
        Ok(high.wrapping_shl(12) | low)
    }
    fn level(&mut self) -> Result<Level, Eof> {
        Ok(pick(&Level::ALL, self.byte()?))
    }
    fn flag(&mut self) -> Result<bool, Eof> {
        Ok(self.byte()? & 1 == 1)
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn byte(&mut self, b: u8) {
        self.0.push(b);
    }
    fn varint(&mut self, mut v: u64) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(b);
                return;
            }
            self.0.push(b | 0x80);
        }
    }
    fn addr(&mut self, a: u64) {
        if a & 0xfff == 0 {
            self.varint((a >> 12) << 1);
        } else {
            self.varint(((a & 0xfff) << 1) | 1);
            self.varint(a >> 12);
        }
    }
    fn level(&mut self, l: Level) {
        self.byte(l as u8);
    }
    fn flag(&mut self, f: bool) {
        self.byte(f as u8);
    }
}

/// A kernel line's bit in the variant byte's mask: fixed per line, below [`RANGES_FOLLOW`]. A
/// line added later gets none (the header is then written as ranges), so that no saved input
/// changes meaning.
fn kernel_bit(k: Kernel) -> Option<u8> {
    match k {
        Kernel::V6_12 => Some(0),
        Kernel::V6_18 => Some(1),
        Kernel::V7_3 => Some(2),
        Kernel::Next => Some(3),
    }
}

/// `all[b mod len]`: a byte picks one of a list (the list's length is the only modulus).
fn pick<T: Copy>(all: &[T], b: u8) -> T {
    all[b as usize % all.len()]
}

/// The variant byte's first form: 1 + the variant's index (0: none) + VARIANT_CHOICES × the
/// kernel mask, for the first four variants (upstream to huge-v3), which fixed the modulus.
const VARIANT_CHOICES: u8 = 5;
/// The second form, for variants appended later, in the bytes the first never reaches (its
/// largest is 4 + 5 × 31): EXTENDED_VARIANTS + 32 × (index − 4) + the kernel mask. Every
/// encoded case keeps its bytes; an arbitrary input with such a byte (which the encoder never
/// wrote) now decodes to an appended variant, as an appended list entry moves a `pick`.
const EXTENDED_VARIANTS: u8 = VARIANT_CHOICES * 32;
const _: () = assert!(Variant::ALL.len() <= 4 + (256 - EXTENDED_VARIANTS as usize) / 32);

/// The variant byte for `variant` (1 + index, 0 for none) and a kernel mask below 32.
fn variant_byte(variant: u8, mask: u8) -> u8 {
    if variant < VARIANT_CHOICES {
        variant + VARIANT_CHOICES * mask
    } else {
        EXTENDED_VARIANTS + 32 * (variant - VARIANT_CHOICES) + mask
    }
}

/// The inverse of [`variant_byte`]: (1 + index or 0, kernel mask).
fn split_variant_byte(vb: u8) -> (u8, u8) {
    if vb < EXTENDED_VARIANTS {
        (vb % VARIANT_CHOICES, vb / VARIANT_CHOICES)
    } else {
        (VARIANT_CHOICES + (vb - EXTENDED_VARIANTS) / 32, (vb - EXTENDED_VARIANTS) % 32)
    }
}

// The knobs are one byte's bits: a ninth needs a second byte (appended, so old inputs keep
// their meaning).
const _: () = assert!(Knob::ALL.len() <= 8);

fn knob_mask(opts: &[Knob]) -> u8 {
    opts.iter().fold(0, |m, k| m | 1 << (*k as u8))
}

/// Decode any byte string into a legal sequence.
pub fn decode(bytes: &[u8]) -> Sequence {
    let mut r = Reader { b: bytes, i: 0 };
    let header = decode_header(&mut r);
    let mut seq = Sequence::new(header);
    while seq.steps.len() < legal::MAX_STEPS {
        match decode_step(&mut r, &seq.header) {
            Ok(Some(mut st)) => {
                // A step joins the group before it only where the group may take it.
                if st.together {
                    let start = seq.steps.iter().rposition(|s| !s.together);
                    let group: Vec<&Op> = match start {
                        Some(k) => seq.steps[k..].iter().map(|s| &s.op).collect(),
                        None => Vec::new(),
                    };
                    st.together = !group.is_empty() && legal::check_join(&group, &st.op).is_ok();
                }
                seq.steps.push(st)
            }
            Ok(None) => {}
            Err(Eof) => break,
        }
    }
    seq
}

/// A guest_memfd name: a length byte, then one byte per character of [`NAME_CHARS`].
fn decode_name(r: &mut Reader<'_>) -> Result<String, Eof> {
    let len = 1 + r.byte()? as usize % legal::MAX_NAME;
    let mut name = String::with_capacity(len);
    for _ in 0..len {
        name.push(NAME_CHARS[(r.byte()? % 64) as usize] as char);
    }
    Ok(name)
}

fn encode_name(w: &mut Writer, name: &str) {
    w.byte((name.len() - 1) as u8);
    for b in name.bytes() {
        w.byte(NAME_CHARS.iter().position(|c| *c == b).unwrap_or(0) as u8);
    }
}

/// In the variant byte's kernel mask: the header names releases or ranges, listed after it.
/// Above every line's bit, so that a header of whole lines encodes as it always has.
const RANGES_FOLLOW: u8 = 1 << 4;

fn decode_header(r: &mut Reader<'_>) -> Header {
    let mut h = Header::new(VmType::Tdx);
    let _ = (|| -> Result<(), Eof> {
        h.vm = pick(&VmType::ALL, r.byte()?);
        // The variant byte carries the mask of kernel lines the case holds on; with
        // RANGES_FOLLOW, a count and each range's two releases follow instead (`kernel
        // 6.12.118..`).
        let vb = r.byte()?;
        let (v, kmask) = split_variant_byte(vb);
        if kmask & RANGES_FOLLOW != 0 {
            for _ in 0..r.byte()? as usize % (legal::MAX_KERNEL_RANGES + 1) {
                let mut rel = || -> Result<Release, Eof> {
                    Ok(Release::new(r.varint()? as u16, r.varint()? as u16, r.varint()? as u16))
                };
                let (lo, hi) = (rel()?, rel()?);
                let ok = lo.line().is_some()
                    && lo.same_line(hi)
                    && lo <= hi
                    && hi.patch < u16::MAX
                    && (!lo.is_next() || (lo, hi) == (Release::NEXT, Release::NEXT));
                if ok && !h.kernels.contains(&KernelRange { lo, hi }) {
                    h.kernels.push(KernelRange { lo, hi });
                }
            }
            h.kernels.sort();
        } else {
            h.kernels = Kernel::ALL
                .iter()
                .copied()
                .filter(|&k| kernel_bit(k).is_some_and(|b| kmask & (1 << b) != 0))
                .map(KernelRange::line)
                .collect();
        }
        let mask = r.byte()?;
        if h.vm == VmType::Tdx {
            h.variant = if v == 0 { None } else { Variant::ALL.get(v as usize - 1).copied() };
        }
        let vm = h.vm;
        h.options = Knob::ALL.iter().copied().filter(|k| mask & (1 << (*k as u8)) != 0 && k.vm() == vm).collect();
        h.vcpus = 1 + (r.byte()? as u32 % legal::MAX_VCPUS);
        let ngmem = r.byte()? as usize % (legal::MAX_GMEMS + 1);
        for _ in 0..ngmem {
            let name = decode_name(r)?;
            let size = r.addr()?;
            let f = r.byte()?;
            let mut g = GmemDecl { name, size, huge: f & 1 != 0, mmap: f & 2 != 0, init_shared: f & 4 != 0 };
            if legal::check_gmem(h.vm, &g).is_err() {
                g.mmap &= !matches!(h.vm, VmType::Tdx | VmType::Snp);
                g.init_shared &= !h.vm.has_private_mem();
            }
            if legal::check_gmem(h.vm, &g).is_ok() && !h.gmems.iter().any(|o| o.name == g.name) {
                h.gmems.push(g);
            }
        }
        let nslot = r.byte()? as usize % (legal::MAX_HEADER_SLOTS + 1);
        for _ in 0..nslot {
            let s = decode_slot(r, &h)?;
            if legal::check_slot(&h, &s).is_ok() {
                h.slots.push(s);
            }
        }
        Ok(())
    })();
    // Only kernels the header can be set up on; none left means every kernel.
    let hh = h.clone();
    h.kernels.retain(|&k| crate::model::kernel::range_allows(&hh, k));
    h
}

fn decode_slot(r: &mut Reader<'_>, h: &Header) -> Result<SlotSpec, Eof> {
    let id = r.varint()? as u32;
    let gpa = r.addr()?;
    let size = r.addr()?;
    let f = r.byte()?;
    let gmem = if f & 1 != 0 && !h.gmems.is_empty() {
        let idx = r.byte()? as usize % h.gmems.len();
        Some(GmemBinding { gmem: h.gmems[idx].name.clone(), offset: r.addr()? })
    } else {
        None
    };
    Ok(SlotSpec { id, gpa, size, gmem, readonly: f & 2 != 0 })
}

/// A decoded count set holds 1 to this many values (a generated one holds fewer).
const COUNT_SET_MAX: u8 = 4;

fn decode_count_set(r: &mut Reader<'_>) -> Result<CountSet, Eof> {
    let n = 1 + r.byte()? % COUNT_SET_MAX;
    let mut v = Vec::with_capacity(n as usize);
    for _ in 0..n {
        v.push(r.varint()?);
    }
    v.sort_unstable();
    v.dedup();
    Ok(v)
}

/// In a step's kind byte: the step runs together with the one before (the kinds' indices stay
/// below it; bytes the encoder never wrote, so old inputs keep their meaning).
const TOGETHER: u8 = 0x80;
const _: () = assert!(OpKind::ALL.len() < TOGETHER as usize);

/// `tdx-cmd`: a byte of which fields follow and the flags, then the id and the numbers.
fn decode_tdx_cmd(r: &mut Reader<'_>, vcpus: u32) -> Result<TdxCmd, Eof> {
    let m = r.byte()?;
    let mut c = TdxCmd {
        new_td: m & 2 != 0,
        bad_xfam: m & 8 != 0,
        reserved: m & 16 != 0,
        padding: m & 32 != 0,
        ..Default::default()
    };
    // INIT_MEM_REGION and FINALIZE_VM are ops of their own.
    c.id = match r.varint()? as u32 {
        3 | 4 => 6,
        id => id,
    };
    if m & 1 != 0 {
        c.vcpu = Some(r.byte()? as u32 % vcpus.max(1));
    }
    c.flags = r.varint()? as u32;
    c.hw_error = r.varint()?;
    if m & 64 != 0 {
        c.nent = Some(r.varint()? as u32);
    }
    c.attrs = r.varint()?;
    if m & 128 != 0 {
        c.gpaw = Some(match r.byte()? {
            52 => 48,
            w => w,
        });
    }
    Ok(c)
}

fn encode_tdx_cmd(w: &mut Writer, c: &TdxCmd) {
    let bits =
        [c.vcpu.is_some(), c.new_td, false, c.bad_xfam, c.reserved, c.padding, c.nent.is_some(), c.gpaw.is_some()];
    w.byte(bits.iter().enumerate().map(|(i, b)| (*b as u8) << i).sum());
    w.varint(c.id as u64);
    if let Some(v) = c.vcpu {
        w.byte(v as u8);
    }
    w.varint(c.flags as u64);
    w.varint(c.hw_error);
    if let Some(n) = c.nent {
        w.varint(n as u64);
    }
    w.varint(c.attrs);
    if let Some(g) = c.gpaw {
        w.byte(g);
    }
}

fn decode_step(r: &mut Reader<'_>, h: &Header) -> Result<Option<Step>, Eof> {
    let kb = r.byte()?;
    let together = kb & TOGETHER != 0;
    let kind = pick(&OpKind::ALL, kb & !TOGETHER);
    let vcpus = h.vcpus;
    let vcpu = |r: &mut Reader<'_>| -> Result<u32, Eof> { Ok(r.byte()? as u32 % vcpus) };
    let op = match kind {
        OpKind::SlotAdd => Op::SlotAdd(decode_slot(r, h)?),
        OpKind::SlotDelete => Op::SlotDelete { id: r.varint()? as u32 },
        OpKind::SlotMove => Op::SlotMove { id: r.varint()? as u32, gpa: r.addr()? },
        OpKind::SlotUpdate => {
            let id = r.varint()? as u32;
            let f = r.byte()?;
            let gmem = if f & 4 != 0 && !h.gmems.is_empty() {
                let idx = r.byte()? as usize % h.gmems.len();
                Some(GmemBinding { gmem: h.gmems[idx].name.clone(), offset: r.addr()? })
            } else {
                None
            };
            Op::SlotUpdate { id, log_dirty: f & 1 != 0, readonly: f & 2 != 0, gmem }
        }
        OpKind::GetDirtyLog => Op::GetDirtyLog { id: r.varint()? as u32 },
        OpKind::DirtyLogProtect => Op::DirtyLogProtect { flags: r.varint()? },
        OpKind::ClearDirtyLog => Op::ClearDirtyLog { id: r.varint()? as u32, first: r.varint()?, pages: r.varint()? },
        OpKind::Private => Op::Private { addr: r.addr()?, size: r.addr()? },
        OpKind::Shared => Op::Shared { addr: r.addr()?, size: r.addr()? },
        OpKind::Punch => Op::Punch { addr: r.addr()?, size: r.addr()?, keep_size: !r.flag()? },
        OpKind::Prefault => Op::Prefault { vcpu: vcpu(r)?, addr: r.addr()?, size: r.addr()? },
        OpKind::HostWrite => Op::HostWrite { addr: r.addr()?, value: r.varint()? },
        OpKind::HostRead => Op::HostRead { addr: r.addr()? },
        OpKind::InitMem => Op::InitMem { addr: r.addr()?, pages: r.varint()?, measure: r.flag()? },
        OpKind::Finalize => Op::Finalize,
        OpKind::TdxCmd => Op::TdxCmd(decode_tdx_cmd(r, vcpus)?),
        OpKind::MtrrZap => Op::MtrrZap { addr: r.addr()?, size: r.addr()? },
        OpKind::Inject => Op::Inject(pick(&Fault::ALL, r.byte()?)),
        OpKind::FailNth => Op::FailNth { n: (r.varint()? as u32).max(1) },
        OpKind::Accept => Op::Accept { vcpu: vcpu(r)?, addr: r.addr()?, level: r.level()? },
        OpKind::Release => Op::Release { vcpu: vcpu(r)?, addr: r.addr()?, level: r.level()? },
        OpKind::Read => Op::Read { vcpu: vcpu(r)?, addr: r.addr()?, shared: r.flag()? },
        OpKind::Write => Op::Write { vcpu: vcpu(r)?, addr: r.addr()?, value: r.varint()?, shared: r.flag()? },
        OpKind::Touch => Op::Touch { vcpu: vcpu(r)?, addr: r.addr()? },
        OpKind::MapGpa => Op::MapGpa { vcpu: vcpu(r)?, addr: r.addr()?, size: r.addr()?, private: r.flag()? },
        OpKind::ExpectPages => {
            let m = r.byte()?;
            let mut sets = [None, None, None];
            for (i, s) in sets.iter_mut().enumerate() {
                if m & (1 << i) != 0 {
                    *s = Some(decode_count_set(r)?);
                }
            }
            if sets.iter().all(|s| s.is_none()) {
                sets[0] = Some(vec![0]);
            }
            let [p4k, p2m, p1g] = sets;
            Op::ExpectPages { p4k, p2m, p1g }
        }
        OpKind::GmemCreate => {
            let name = decode_name(r)?;
            let size = r.addr()?;
            let f = r.byte()?;
            let decl = GmemDecl { name, size, huge: f & 1 != 0, mmap: f & 2 != 0, init_shared: f & 4 != 0 };
            Op::GmemCreate { decl, raw: r.varint()? }
        }
        OpKind::Fallocate => {
            let gmem = decode_name(r)?;
            let (offset, len) = (r.addr()?, r.addr()?);
            let f = r.byte()?;
            Op::Fallocate { gmem, offset, len, punch: f & 1 != 0, keep_size: f & 2 == 0 }
        }
        OpKind::ExpectSept => {
            Op::ExpectSept { addr: r.addr()?, level: r.level()?, state: pick(&SeptState::ALL, r.byte()?) }
        }
    };
    let expect = decode_outcome(r)?;
    Ok(legal::check_op(h, &op).is_ok().then_some(Step { op, expect, together }))
}

/// The outcome tags `decode_outcome` reads (0: no expectation); `encode_outcome` writes the same.
const OUTCOME_TAGS: u8 = 13;

fn decode_outcome(r: &mut Reader<'_>) -> Result<Option<Outcome>, Eof> {
    Ok(Some(match r.byte()? % OUTCOME_TAGS {
        0 => return Ok(None),
        1 => Outcome::Ok,
        2 => Outcome::Err(pick(&Errno::ALL, r.byte()?)),
        3 => {
            let s = pick(&TdxStatus::ALL, r.byte()?);
            let l = r.byte()? % (Level::ALL.len() as u8 + 1);
            Outcome::Tdx(s, if l == 0 { None } else { Some(Level::ALL[l as usize - 1]) })
        }
        4 => Outcome::Value(r.varint()?),
        5 => Outcome::Exit(Exit::Mmio),
        6 => Outcome::Exit(Exit::MemoryFault { private: false }),
        7 => Outcome::Exit(Exit::MemoryFault { private: true }),
        8 => Outcome::Ve,
        9 => Outcome::Livelock,
        10 => Outcome::VmDead,
        11 => {
            let b = r.byte()?;
            Outcome::Pvalidate(PvalidateRc::ALL[(b & 3) as usize], b & 4 != 0)
        }
        _ => Outcome::Vmcall(pick(&VmcallStatus::ALL, r.byte()?)),
    }))
}

/// Encode a legal sequence. `decode(&encode(s)) == s`.
pub fn encode(s: &Sequence) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(64 + s.steps.len() * 6));
    let h = &s.header;
    w.byte(VmType::ALL.iter().position(|v| *v == h.vm).unwrap_or(0) as u8);
    // Whole lines with a bit go in the mask; anything else is written as ranges.
    let lines: Option<Vec<u8>> =
        h.kernels.iter().map(|r| r.kernel().filter(|&k| KernelRange::line(k) == *r).and_then(kernel_bit)).collect();
    let variant = h.variant.map(|v| v as u8 + 1).unwrap_or(0);
    match lines {
        Some(lines) => w.byte(variant_byte(variant, lines.iter().fold(0, |m, &b| m | 1 << b))),
        None => {
            w.byte(variant_byte(variant, RANGES_FOLLOW));
            w.byte(h.kernels.len() as u8);
            for r in &h.kernels {
                for x in [r.lo, r.hi] {
                    [x.major, x.minor, x.patch].into_iter().for_each(|n| w.varint(n as u64));
                }
            }
        }
    }
    w.byte(knob_mask(&h.options));
    w.byte((h.vcpus.saturating_sub(1)) as u8);
    w.byte(h.gmems.len() as u8);
    for g in &h.gmems {
        encode_name(&mut w, &g.name);
        w.addr(g.size);
        w.byte(g.huge as u8 | (g.mmap as u8) << 1 | (g.init_shared as u8) << 2);
    }
    w.byte(h.slots.len() as u8);
    for sl in &h.slots {
        encode_slot(&mut w, h, sl);
    }
    for st in &s.steps {
        encode_step(&mut w, h, st);
    }
    w.0
}

fn encode_slot(w: &mut Writer, h: &Header, s: &SlotSpec) {
    w.varint(s.id as u64);
    w.addr(s.gpa);
    w.addr(s.size);
    w.byte(s.gmem.is_some() as u8 | (s.readonly as u8) << 1);
    if let Some(b) = &s.gmem {
        w.byte(h.gmems.iter().position(|g| g.name == b.gmem).unwrap_or(0) as u8);
        w.addr(b.offset);
    }
}

fn encode_step(w: &mut Writer, h: &Header, st: &Step) {
    let kind = st.op.kind();
    w.byte(OpKind::ALL.iter().position(|k| *k == kind).unwrap_or(0) as u8 | if st.together { TOGETHER } else { 0 });
    match &st.op {
        Op::SlotUpdate { id, log_dirty, readonly, gmem } => {
            w.varint(*id as u64);
            w.byte(*log_dirty as u8 | (*readonly as u8) << 1 | (gmem.is_some() as u8) << 2);
            if let Some(b) = gmem {
                w.byte(h.gmems.iter().position(|g| g.name == b.gmem).unwrap_or(0) as u8);
                w.addr(b.offset);
            }
        }
        Op::GetDirtyLog { id } => w.varint(*id as u64),
        Op::DirtyLogProtect { flags } => w.varint(*flags),
        Op::ClearDirtyLog { id, first, pages } => {
            w.varint(*id as u64);
            w.varint(*first);
            w.varint(*pages);
        }
        Op::SlotAdd(s) => encode_slot(w, h, s),
        Op::GmemCreate { decl, raw } => {
            encode_name(w, &decl.name);
            w.addr(decl.size);
            w.byte(decl.huge as u8 | (decl.mmap as u8) << 1 | (decl.init_shared as u8) << 2);
            w.varint(*raw);
        }
        Op::Fallocate { gmem, offset, len, punch, keep_size } => {
            encode_name(w, gmem);
            w.addr(*offset);
            w.addr(*len);
            w.byte(*punch as u8 | (!*keep_size as u8) << 1);
        }
        Op::SlotDelete { id } => w.varint(*id as u64),
        Op::SlotMove { id, gpa } => {
            w.varint(*id as u64);
            w.addr(*gpa);
        }
        Op::Private { addr, size } | Op::Shared { addr, size } | Op::MtrrZap { addr, size } => {
            w.addr(*addr);
            w.addr(*size);
        }
        Op::Punch { addr, size, keep_size } => {
            w.addr(*addr);
            w.addr(*size);
            w.flag(!keep_size);
        }
        Op::Prefault { vcpu, addr, size } => {
            w.byte(*vcpu as u8);
            w.addr(*addr);
            w.addr(*size);
        }
        Op::HostWrite { addr, value } => {
            w.addr(*addr);
            w.varint(*value);
        }
        Op::HostRead { addr } => w.addr(*addr),
        Op::InitMem { addr, pages, measure } => {
            w.addr(*addr);
            w.varint(*pages);
            w.flag(*measure);
        }
        Op::Finalize => {}
        Op::TdxCmd(c) => encode_tdx_cmd(w, c),
        Op::Inject(f) => w.byte(*f as u8),
        Op::FailNth { n } => w.varint(*n as u64),
        Op::Accept { vcpu, addr, level } | Op::Release { vcpu, addr, level } => {
            w.byte(*vcpu as u8);
            w.addr(*addr);
            w.level(*level);
        }
        Op::Read { vcpu, addr, shared } => {
            w.byte(*vcpu as u8);
            w.addr(*addr);
            w.flag(*shared);
        }
        Op::Write { vcpu, addr, value, shared } => {
            w.byte(*vcpu as u8);
            w.addr(*addr);
            w.varint(*value);
            w.flag(*shared);
        }
        Op::Touch { vcpu, addr } => {
            w.byte(*vcpu as u8);
            w.addr(*addr);
        }
        Op::MapGpa { vcpu, addr, size, private } => {
            w.byte(*vcpu as u8);
            w.addr(*addr);
            w.addr(*size);
            w.flag(*private);
        }
        Op::ExpectPages { p4k, p2m, p1g } => {
            let sets = [p4k, p2m, p1g];
            w.byte(sets.iter().enumerate().fold(0, |m, (i, s)| m | ((s.is_some() as u8) << i)));
            for s in sets.into_iter().flatten() {
                // The decoder reads 1..=4 members; longer sets are clipped by `fixup`.
                w.byte((s.len().clamp(1, 4) - 1) as u8);
                for v in s.iter().take(4) {
                    w.varint(*v);
                }
            }
        }
        Op::ExpectSept { addr, level, state } => {
            w.addr(*addr);
            w.level(*level);
            w.byte(*state as u8);
        }
    }
    encode_outcome(w, st.expect.as_ref());
}

fn encode_outcome(w: &mut Writer, o: Option<&Outcome>) {
    let Some(o) = o else {
        w.byte(0);
        return;
    };
    match o {
        Outcome::Ok => w.byte(1),
        Outcome::Err(e) => {
            w.byte(2);
            w.byte(Errno::ALL.iter().position(|x| x == e).unwrap_or(0) as u8); // (generated: names only)
        }
        Outcome::Tdx(s, l) => {
            w.byte(3);
            w.byte(*s as u8);
            w.byte(l.map(|l| l as u8 + 1).unwrap_or(0));
        }
        Outcome::Value(v) => {
            w.byte(4);
            w.varint(*v);
        }
        Outcome::Exit(Exit::Mmio) => w.byte(5),
        Outcome::Exit(Exit::MemoryFault { private: false }) => w.byte(6),
        Outcome::Exit(Exit::MemoryFault { private: true }) => w.byte(7),
        Outcome::Ve => w.byte(8),
        Outcome::Livelock => w.byte(9),
        Outcome::VmDead => w.byte(10),
        Outcome::Pvalidate(rc, no_update) => {
            w.byte(11);
            w.byte(*rc as u8 | (*no_update as u8) << 2);
        }
        Outcome::Vmcall(st) => {
            w.byte(12);
            w.byte(*st as u8);
        }
    }
}

#[cfg(test)]
mod golden {
    use super::*;

    /// Two headers (whole lines; a release range) and ops with expectations of each kind the
    /// codec tags: their bytes are the codec's interface (saved inputs and crash artifacts).
    const CASES: [(&str, &str); 2] = [
        (
            "vm tdx\nvariant huge-v3\nkernel 6.18 7.3\ngmem g size=2M\nslot 0 gpa=0x100000000 size=2M gmem=g offset=0\n\
             private 0x100000000 2M => ok\nfinalize => ok\nvcpu0 accept 0x100000000 4K => tdx PAGE_ALREADY_ACCEPTED 4K\n\
             shared 0x100000000 4K => err EINVAL\n",
            GOLDEN_0,
        ),
        ("vm sw-protected\nkernel 6.12.118..\nslot 0 gpa=0x40000000 size=2M\nvcpu0 write 0x40000000 7\n", GOLDEN_1),
    ];
    const GOLDEN_0: &str =
        "02220000010006800800010080808001800801000003808080018008010a010d008080800100030c01048080800102020b";
    const GOLDEN_1: &str = "015001060c76060cfeff0300000001008080208008001000808020070000";

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn appended_variants_round_trip_in_the_second_form() {
        for kernel in ["kernel 6.18 7.3 next\n", "kernel 7.3.4..\n", ""] {
            let text = format!("vm tdx\nvariant huge-v5\n{kernel}gmem g size=2M\nfinalize => ok\n");
            let s = crate::seq::text::parse("v5", &text).unwrap();
            let bytes = encode(&s);
            assert!(bytes[1] >= EXTENDED_VARIANTS, "{text}");
            assert_eq!(crate::seq::text::print(&decode(&bytes)), crate::seq::text::print(&s));
        }
    }

    #[test]
    fn golden_bytes_are_stable() {
        for (text, golden) in CASES {
            let s = crate::seq::text::parse("golden", text).unwrap();
            let bytes = encode(&s);
            assert_eq!(
                hex(&bytes),
                golden,
                "the codec's numbers moved (append new ones; see the module's note):\n{text}"
            );
            assert_eq!(crate::seq::text::print(&decode(&bytes)), crate::seq::text::print(&s));
        }
    }
}
