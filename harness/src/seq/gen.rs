//! Generation of sequences with `arbitrary`, and `fixup`.
//!
//! The generator lays out memory the way the interesting bugs need it (guest_memfd files that
//! may be huge, slots on 2M/1G boundaries or a page off), then draws ops whose addresses and
//! sizes cluster on 2M/1G boundaries, ±1 page, and ranges that straddle slots and folios.
//! Swarm testing: each case enables a random subset of op kinds, so rare interactions are not
//! drowned by common ops.

use super::header::*;
use super::legal;
use super::op::*;
use arbitrary::{Result, Unstructured};

/// What a campaign asks the generator for.
#[derive(Clone, Debug, Default)]
pub struct GenConfig {
    pub vm: Option<VmType>,
    pub variant: Option<Variant>,
    /// Hazard knobs ([`Knob::is_hazard`]) the generator may turn on; none unless asked, so that
    /// a documented hazard's findings never stand in front of a new bug.
    pub hazards: Vec<Knob>,
    /// Upper bound on generated ops.
    pub max_ops: usize,
    /// Whether ops may run together (concurrent groups): where a backend overlaps them, or
    /// on the model, where each group is one serialization.
    pub groups: bool,
    /// Conversions of 16G to 64G now and then: page by page in the kernel, long enough under
    /// the lab's TCG to meet the soft-lockup and RCU-stall detectors where a loop forgets to
    /// reschedule (`--large-conversions`, opt-in: each costs seconds).
    pub large_conversions: bool,
    /// TDX and SNP guests finalize first (their memory made private before), as a VMM builds
    /// them: no `init-mem` before, and never left unfinalized (`--td-finalized`).
    pub finalized: bool,
}

const GPA_BASES: [u64; 4] = [0x1_0000_0000, 0x4000_0000, 0x8000_0000, 0x2_0000_0000];

fn pick<T: Copy>(u: &mut Unstructured<'_>, xs: &[T]) -> Result<T> {
    Ok(xs[u.choose_index(xs.len())?])
}

pub fn generate(u: &mut Unstructured<'_>, cfg: &GenConfig) -> Result<Sequence> {
    let vm = match cfg.vm {
        Some(v) => v,
        None => pick(u, &[VmType::Default, VmType::SwProtected, VmType::Tdx, VmType::Tdx, VmType::Snp])?,
    };
    let mut h = Header::new(vm);
    if vm == VmType::Tdx {
        h.variant = Some(match cfg.variant {
            Some(v) => v,
            None => pick(u, &Variant::ALL)?,
        });
    }
    for k in Knob::ALL {
        let wanted = !k.is_hazard() || cfg.hazards.contains(&k);
        if k.vm() == vm && u.ratio(1, 6)? && wanted {
            h.options.push(k);
        }
    }
    h.vcpus = if u.ratio(1, 3)? { 2 } else { 1 };

    // Memory layout: one or two guest_memfd files, each bound by one slot; sometimes a plain
    // slot (no guest_memfd) beside them.
    let nfiles = if u.ratio(1, 3)? { 2 } else { 1 };
    let mut gpa = pick(u, &GPA_BASES)?;
    for i in 0..nfiles {
        let size = pick(u, &[SZ_2M, 2 * SZ_2M, 4 * SZ_2M, SZ_2M + PAGE, 8 * SZ_2M])?;
        let huge = u.ratio(2, 3)?;
        let (mmap, init_shared) = match vm {
            VmType::Default => {
                let m = u.ratio(4, 5)?;
                (m, m && u.ratio(5, 6)?)
            }
            VmType::SwProtected => (false, false),
            _ => (false, false),
        };
        let name = format!("g{i}");
        h.gmems.push(GmemDecl { name: name.clone(), size, huge, mmap, init_shared });
        let offset = if u.ratio(1, 8)? { PAGE } else { 0 };
        let slot_size = size - offset;
        let misalign = if u.ratio(1, 8)? { PAGE } else { 0 };
        h.slots.push(SlotSpec {
            id: i as u32,
            gpa: gpa + misalign,
            size: slot_size & !(PAGE - 1),
            gmem: Some(GmemBinding { gmem: name, offset }),
            readonly: false,
        });
        // Adjacent slots half the time, so ranges straddle them.
        gpa += (slot_size + misalign + SZ_2M - 1) & !(SZ_2M - 1);
        if u.ratio(1, 2)? {
            gpa += SZ_2M;
        }
    }
    if u.ratio(1, 4)? {
        h.slots.push(SlotSpec {
            id: 7,
            gpa,
            size: SZ_2M,
            gmem: None,
            readonly: vm == VmType::Default && u.ratio(1, 4)?,
        });
    }

    // Swarm: a random subset of the op kinds the VM gives meaning to.
    let candidates: Vec<OpKind> = OpKind::ALL
        .iter()
        .copied()
        .filter(|k| !k.is_check())
        .filter(|k| sample_op(*k, &h).is_some_and(|op| legal::check_op(&h, &op).is_ok()))
        .collect();
    let mut enabled: Vec<OpKind> = candidates.iter().copied().filter(|_| u.ratio(1, 2).unwrap_or(false)).collect();
    if !enabled.iter().any(|k| k.is_guest()) {
        enabled.push(if vm == VmType::Tdx { OpKind::Accept } else { OpKind::Read });
    }

    let mut s = Sequence::new(h);
    let ranges: Vec<(u64, u64)> = s.header.slots.iter().map(|sl| (sl.gpa, sl.gpa + sl.size)).collect();
    // Most TDX and SNP hazards live after FINALIZE: usually make the memory private and finalize first.
    if matches!(vm, VmType::Tdx | VmType::Snp) && (cfg.finalized || u.ratio(4, 5)?) {
        for &(a, b) in ranges.iter().take(2) {
            s.push(Op::Private { addr: a, size: b - a });
        }
        if vm == VmType::Tdx && !cfg.finalized && u.ratio(1, 3)? {
            s.push(Op::InitMem { addr: ranges[0].0, pages: pick(u, &[1, 2, 16, 512])?, measure: u.ratio(1, 2)? });
        }
        s.push(Op::Finalize);
    } else if vm == VmType::SwProtected && u.ratio(1, 2)? {
        let (a, b) = ranges[0];
        s.push(Op::Private { addr: a, size: b - a });
    }
    let max = cfg.max_ops.clamp(1, legal::MAX_STEPS - s.steps.len());
    let n = u.int_in_range(1..=max)?;
    for _ in 0..n {
        if u.is_empty() {
            break;
        }
        // Now and then the op runs together with the ones before it (a race); half of those
        // times it is chosen to conflict with the op before (a fault in the range a conversion
        // or a slot change touches, or the reverse), where the races live.
        let together = cfg.groups && !s.steps.is_empty() && u.ratio(1, 3)?;
        let conflict = match s.steps.last() {
            Some(prev) if together && u.ratio(1, 2)? => gen_conflict(u, &prev.op, &s.header, &enabled)?,
            _ => None,
        };
        let mut op = match conflict {
            Some(op) => op,
            None => {
                let mut kind = pick(u, &enabled)?;
                // A TDX command probes one argument check of a build ioctl (on a new TD it is a
                // TD's creation and teardown): a few per case, not one op in every few.
                if kind == OpKind::TdxCmd && !u.ratio(1, 4)? {
                    kind = pick(u, &enabled)?;
                }
                gen_op(u, kind, &s.header, &ranges)?
            }
        };
        if let (true, Op::Private { addr, size } | Op::Shared { addr, size }) = (cfg.large_conversions, &mut op) {
            if u.ratio(1, 4)? {
                *addr &= !(SZ_1G - 1);
                *size = pick(u, &[16 * SZ_1G, 32 * SZ_1G, 64 * SZ_1G])?;
            }
        }
        if legal::check_op(&s.header, &op).is_ok() {
            s.steps.push(Step { op, expect: None, together });
            legal::normalize_groups(&mut s);
        }
    }
    Ok(s)
}

/// An op that touches what `prev` touches, the other side of a race: a guest access inside the
/// range or slot a host op changes, or a conversion, punch or slot change under a guest access.
/// Kinds come from the case's enabled ones; None where none fits.
fn gen_conflict(u: &mut Unstructured<'_>, prev: &Op, h: &Header, enabled: &[OpKind]) -> Result<Option<Op>> {
    let slot_of = |id: u32| h.slots.iter().find(|s| s.id == id).map(|s| (s.gpa, s.gpa + s.size));
    let range = match prev {
        Op::Private { addr, size } | Op::Shared { addr, size } | Op::Punch { addr, size, .. } => {
            Some((*addr, addr.saturating_add(*size)))
        }
        Op::SlotDelete { id } | Op::SlotMove { id, .. } | Op::SlotUpdate { id, .. } => slot_of(*id),
        _ => None,
    };
    if let Some((a, b)) = range.filter(|(a, b)| a < b) {
        let guests: Vec<OpKind> = enabled.iter().copied().filter(|k| k.is_guest() && *k != OpKind::MapGpa).collect();
        if guests.is_empty() {
            return Ok(None);
        }
        let pages = ((b - a) / PAGE).clamp(1, 1 << 20);
        let addr = a + u.int_in_range(0..=pages - 1)? * PAGE;
        let kind = pick(u, &guests)?;
        let mut op = gen_op(u, kind, h, &[(a, b)])?;
        if let Some(x) = op.addr_mut() {
            *x = addr;
        }
        return Ok(Some(op));
    }
    let Some(addr) = prev.addr().filter(|_| prev.kind().is_guest()) else {
        return Ok(None);
    };
    let hosts = [OpKind::Private, OpKind::Shared, OpKind::Punch, OpKind::SlotDelete, OpKind::SlotMove];
    let hosts: Vec<OpKind> = hosts.into_iter().filter(|k| enabled.contains(k)).collect();
    if hosts.is_empty() {
        return Ok(None);
    }
    let base = addr & !(SZ_2M - 1);
    let size = pick(u, &[PAGE, SZ_2M])?;
    let at = if size == PAGE { addr & !(PAGE - 1) } else { base };
    let slot = h.slots.iter().find(|s| (s.gpa..s.gpa + s.size).contains(&addr)).map(|s| s.id);
    Ok(match pick(u, &hosts)? {
        OpKind::Private => Some(Op::Private { addr: at, size }),
        OpKind::Shared => Some(Op::Shared { addr: at, size }),
        OpKind::Punch => Some(Op::Punch { addr: at, size, keep_size: true }),
        OpKind::SlotDelete => slot.map(|id| Op::SlotDelete { id }),
        _ => slot.map(|id| Op::SlotMove { id, gpa: 0x3_0000_0000 }),
    })
}

/// A placeholder op of a kind, to ask `legal` whether the kind means anything on this VM.
fn sample_op(k: OpKind, h: &Header) -> Option<Op> {
    let g = |f: fn(u32) -> Op| Some(f(0));
    match k {
        OpKind::SlotAdd => Some(Op::SlotAdd(SlotSpec { id: 9, gpa: 0, size: PAGE, gmem: None, readonly: false })),
        OpKind::SlotDelete => Some(Op::SlotDelete { id: 0 }),
        OpKind::SlotMove => Some(Op::SlotMove { id: 0, gpa: 0 }),
        OpKind::Private => Some(Op::Private { addr: 0, size: PAGE }),
        OpKind::Shared => Some(Op::Shared { addr: 0, size: PAGE }),
        OpKind::Punch => (!h.gmems.is_empty()).then_some(Op::Punch { addr: 0, size: PAGE, keep_size: true }),
        OpKind::Prefault => g(|v| Op::Prefault { vcpu: v, addr: 0, size: PAGE }),
        OpKind::HostWrite => Some(Op::HostWrite { addr: 0, value: 1 }),
        OpKind::HostRead => Some(Op::HostRead { addr: 0 }),
        OpKind::InitMem => Some(Op::InitMem { addr: 0, pages: 1, measure: false }),
        OpKind::Finalize => Some(Op::Finalize),
        OpKind::TdxCmd => Some(Op::TdxCmd(TdxCmd::default())),
        OpKind::MtrrZap => Some(Op::MtrrZap { addr: 0, size: PAGE }),
        OpKind::Inject => Some(Op::Inject(Fault::SplitOom)),
        OpKind::Accept => g(|v| Op::Accept { vcpu: v, addr: 0, level: Level::L4K }),
        OpKind::Release => g(|v| Op::Release { vcpu: v, addr: 0, level: Level::L4K }),
        OpKind::Read => g(|v| Op::Read { vcpu: v, addr: 0, shared: false }),
        OpKind::Write => g(|v| Op::Write { vcpu: v, addr: 0, value: 1, shared: false }),
        OpKind::Touch => g(|v| Op::Touch { vcpu: v, addr: 0 }),
        OpKind::MapGpa => g(|v| Op::MapGpa { vcpu: v, addr: 0, size: PAGE, private: false }),
        OpKind::GmemCreate => Some(Op::GmemCreate {
            decl: GmemDecl { name: "x".into(), size: PAGE, huge: false, mmap: false, init_shared: false },
            raw: 0,
        }),
        OpKind::Fallocate => h.gmems.first().map(|g| Op::Fallocate {
            gmem: g.name.clone(),
            offset: 0,
            len: PAGE,
            punch: false,
            keep_size: true,
        }),
        OpKind::FailNth => Some(Op::FailNth { n: 1 }),
        OpKind::SlotUpdate => Some(Op::SlotUpdate { id: 0, log_dirty: true, readonly: false, gmem: None }),
        OpKind::GetDirtyLog => Some(Op::GetDirtyLog { id: 0 }),
        OpKind::ClearDirtyLog => Some(Op::ClearDirtyLog { id: 0, first: 0, pages: 64 }),
        OpKind::DirtyLogProtect => Some(Op::DirtyLogProtect { flags: 1 }),
        OpKind::ExpectPages | OpKind::ExpectSept => None,
    }
}

/// Where the kernel's arithmetic breaks, as syzkaller's special values: the sign bit of a
/// 64-bit offset and a page below it, the top page of the address space, the guest physical
/// address widths (TDX's 48 and 52 bits) and the shared bits they imply.
pub const INT_EDGES: [u64; 8] =
    [(1 << 63) - PAGE, 1 << 63, 0u64.wrapping_sub(PAGE), 1 << 47, 1 << 48, (1 << 48) - PAGE, 1 << 51, 1 << 52];

/// An integer edge relative to `base` (a slot end, a file size): exactly there, a page either
/// side, or the size whose sum with `base` wraps to zero or just past it.
fn gen_edge(u: &mut Unstructured<'_>, base: u64) -> Result<u64> {
    Ok(match u.int_in_range(0..=5)? {
        0 => pick(u, &INT_EDGES)?,
        1 => base,
        2 => base.wrapping_add(PAGE),
        3 => base.wrapping_sub(PAGE),
        4 => 0u64.wrapping_sub(base),
        _ => 0u64.wrapping_sub(base).wrapping_add(PAGE),
    })
}

/// An address near something that matters: a slot's ends, a 2M or 1G boundary inside it, ±1
/// page; now and then an integer edge.
fn gen_addr(u: &mut Unstructured<'_>, ranges: &[(u64, u64)]) -> Result<u64> {
    if u.ratio(1, 24)? {
        return pick(u, &INT_EDGES);
    }
    let (a, b) = pick(u, ranges)?;
    let base = match u.int_in_range(0..=5)? {
        0 => a,
        1 => b.saturating_sub(PAGE),
        2 => (a + SZ_2M) & !(SZ_2M - 1),
        3 => {
            let pages = ((b - a) / PAGE).max(1);
            a + u.int_in_range(0..=pages - 1)? * PAGE
        }
        4 => {
            let n2m = ((b - a) / SZ_2M).max(1);
            (a & !(SZ_2M - 1)) + u.int_in_range(0..=n2m)? * SZ_2M
        }
        _ => (a + SZ_1G - 1) & !(SZ_1G - 1),
    };
    Ok(match u.int_in_range(0..=7)? {
        0 => base.wrapping_sub(PAGE),
        1 => base.wrapping_add(PAGE),
        2 if u.ratio(1, 8)? => base + 8, // an unaligned address: EINVAL paths
        _ => base,
    })
}

fn gen_size(u: &mut Unstructured<'_>, ranges: &[(u64, u64)], addr: u64) -> Result<u64> {
    if u.ratio(1, 24)? {
        // Sizes whose sum with the start wraps, or that end at or just past an edge.
        return gen_edge(u, addr);
    }
    Ok(match u.int_in_range(0..=7)? {
        0 | 1 => PAGE,
        2 | 3 => SZ_2M,
        4 => SZ_2M + PAGE,
        5 => SZ_2M - PAGE,
        6 => {
            // to the end of some slot: straddles slots and folios
            let (_, b) = pick(u, ranges)?;
            if b > addr {
                b - addr
            } else {
                PAGE
            }
        }
        _ => pick(u, &[0, SZ_1G, PAGE * 3, 12])?,
    })
}

fn gen_op(u: &mut Unstructured<'_>, k: OpKind, h: &Header, ranges: &[(u64, u64)]) -> Result<Op> {
    let vcpu = u.int_in_range(0..=h.vcpus - 1)?;
    let addr = gen_addr(u, ranges)?;
    let level = |u: &mut Unstructured<'_>| -> Result<Level> {
        Ok(match u.int_in_range(0..=9)? {
            0..=4 => Level::L4K,
            5..=8 => Level::L2M,
            _ => Level::L1G,
        })
    };
    let value = |u: &mut Unstructured<'_>| -> Result<u64> { u.int_in_range(1..=0xffff) };
    Ok(match k {
        OpKind::SlotAdd => {
            let g = if h.gmems.is_empty() { None } else { Some(h.gmems[u.choose_index(h.gmems.len())?].clone()) };
            let id = u.int_in_range(0..=9)?;
            let gmem = match g {
                Some(g) if u.ratio(2, 3)? => {
                    // Now and then an offset at an edge: the file's size ± a page, 2^63 - 4K
                    // (which a signed `offset + size > i_size` lets through), 2^64 - 4K.
                    let offset = if u.ratio(1, 8)? { gen_edge(u, g.size)? } else { pick(u, &[0, PAGE, SZ_2M])? };
                    Some(GmemBinding { gmem: g.name, offset })
                }
                _ => None,
            };
            let gpa = pick(u, &[addr & !(SZ_2M - 1), addr, 0x3_0000_0000])?;
            let size =
                if u.ratio(1, 16)? { gen_edge(u, gpa)? & !(PAGE - 1) } else { pick(u, &[SZ_2M, PAGE, 2 * SZ_2M])? };
            Op::SlotAdd(SlotSpec { id, gpa, size, gmem, readonly: u.ratio(1, 8)? })
        }
        OpKind::SlotDelete => Op::SlotDelete { id: u.int_in_range(0..=9)? },
        // Early allocations mostly: most ioctls allocate a handful of times.
        OpKind::FailNth => Op::FailNth { n: pick(u, &[1, 1, 2, 3, 5, 8, 16])? },
        OpKind::SlotUpdate => {
            // Mostly the one update that succeeds (logging on or off a plain slot), now and
            // then each refusal: READONLY or GUEST_MEMFD changed, a guest_memfd slot.
            let id = pick(u, &[7, 7, 7, 0, 1, 9])?;
            let gmem = match h.gmems.first() {
                Some(g) if u.ratio(1, 8)? => Some(GmemBinding { gmem: g.name.clone(), offset: 0 }),
                _ => None,
            };
            let readonly = h.slots.iter().any(|s| s.id == id && s.readonly) ^ u.ratio(1, 8)?;
            Op::SlotUpdate { id, log_dirty: u.ratio(2, 3)?, readonly, gmem }
        }
        OpKind::GetDirtyLog => Op::GetDirtyLog { id: pick(u, &[7, 7, 7, 0, 9])? },
        // Mostly manual protect, with or without initially set; now and then off, or a
        // refused value (initially set alone, an unknown bit).
        OpKind::DirtyLogProtect => Op::DirtyLogProtect { flags: pick(u, &[1, 3, 3, 1, 0, 2, 5, 1 << 63])? },
        OpKind::ClearDirtyLog => {
            let first = pick(u, &[0, 0, 64, 1, 512])?;
            Op::ClearDirtyLog { id: pick(u, &[7, 7, 0])?, first, pages: pick(u, &[64, 512, 448, 1, 0, 65])? }
        }
        OpKind::SlotMove => {
            Op::SlotMove { id: u.int_in_range(0..=9)?, gpa: pick(u, &[0x3_0000_0000, addr & !(SZ_2M - 1)])? }
        }
        OpKind::Private => Op::Private { addr, size: gen_size(u, ranges, addr)? },
        OpKind::Shared => Op::Shared { addr, size: gen_size(u, ranges, addr)? },
        OpKind::Punch => Op::Punch { addr, size: gen_size(u, ranges, addr)?, keep_size: !u.ratio(1, 16)? },
        OpKind::Prefault => Op::Prefault { vcpu, addr, size: gen_size(u, ranges, addr)? },
        OpKind::HostWrite => Op::HostWrite { addr, value: value(u)? },
        OpKind::HostRead => Op::HostRead { addr },
        OpKind::InitMem => Op::InitMem { addr, pages: pick(u, &[1, 2, 512, 0])?, measure: u.ratio(1, 2)? },
        OpKind::Finalize => Op::Finalize,
        OpKind::TdxCmd => Op::TdxCmd(gen_tdx_cmd(u, vcpu)?),
        OpKind::MtrrZap => Op::MtrrZap { addr, size: gen_size(u, ranges, addr)? },
        OpKind::Inject => Op::Inject(pick(u, &Fault::ALL)?),
        OpKind::Accept => {
            let l = level(u)?;
            let l = if h.vm == VmType::Snp && l == Level::L1G { Level::L4K } else { l };
            Op::Accept { vcpu, addr: addr & !(PAGE - 1), level: l }
        }
        OpKind::Release => Op::Release { vcpu, addr, level: if u.ratio(1, 2)? { Level::L4K } else { Level::L2M } },
        OpKind::Read => Op::Read { vcpu, addr, shared: h.vm.has_shared_alias() && u.ratio(1, 4)? },
        OpKind::Write => Op::Write { vcpu, addr, value: value(u)?, shared: h.vm.has_shared_alias() && u.ratio(1, 4)? },
        OpKind::Touch => Op::Touch { vcpu, addr },
        OpKind::MapGpa => Op::MapGpa { vcpu, addr, size: gen_size(u, ranges, addr)?, private: u.ratio(1, 2)? },
        OpKind::GmemCreate => {
            // A fresh name; sizes and flags at the edges of KVM_CREATE_GUEST_MEMFD's checks.
            let name = format!("x{}", u.int_in_range(0..=999)?);
            let size = if u.ratio(1, 4)? { gen_edge(u, SZ_2M)? } else { pick(u, &[PAGE, SZ_2M, 0, 0x1800])? };
            let raw = if u.ratio(1, 8)? { 1 << u.int_in_range(2..=63)? } else { 0 };
            let (mmap, init_shared) = (u.ratio(1, 3)?, u.ratio(1, 4)?);
            Op::GmemCreate { decl: GmemDecl { name, size, huge: false, mmap, init_shared }, raw }
        }
        OpKind::Fallocate => {
            // sample_op offers fallocate only where the header declares a guest_memfd.
            let g = &h.gmems[u.choose_index(h.gmems.len())?];
            let offset = if u.ratio(1, 4)? { gen_edge(u, g.size)? } else { pick(u, &[0, PAGE, g.size - PAGE])? };
            let len = if u.ratio(1, 4)? { gen_edge(u, g.size)? } else { pick(u, &[PAGE, SZ_2M, g.size, 0])? };
            Op::Fallocate { gmem: g.name.clone(), offset, len, punch: u.ratio(1, 2)?, keep_size: !u.ratio(1, 16)? }
        }
        OpKind::ExpectPages | OpKind::ExpectSept => Op::Finalize,
    })
}

/// A mutated TD case back in `--td-finalized`'s shape: attribute changes, its `finalize`,
/// then the rest. A mutation that put a step before the `finalize` (or took it away) would make
/// a case that builds its TD, which that campaign is not about (and which no kept finalized TD
/// serves): the first `finalize` moves up to just after the leading attribute changes, or one
/// is put there.
pub fn finalize_first(s: &mut Sequence) {
    if s.header.vm != VmType::Tdx {
        return;
    }
    let lead = s.steps.iter().take_while(|st| matches!(st.op, Op::Private { .. } | Op::Shared { .. })).count();
    match s.steps.iter().position(|st| matches!(st.op, Op::Finalize)) {
        Some(i) if i == lead => return,
        Some(i) => {
            let f = s.steps.remove(i);
            s.steps.insert(lead, f);
        }
        None => s.steps.insert(lead, Step { op: Op::Finalize, expect: None, together: false }),
    }
    s.steps[lead].together = false;
    legal::normalize_groups(s);
}

/// Make any (mutated) sequence legal: clamp counts, drop what the VM type has no meaning for,
/// repair references. Idempotent; a legal sequence comes back unchanged.
pub fn fixup(s: &mut Sequence) {
    let h = &mut s.header;
    h.vcpus = h.vcpus.clamp(1, legal::MAX_VCPUS);
    if h.vm != VmType::Tdx {
        h.variant = None;
    }
    let vm = h.vm;
    h.options.retain(|k| k.vm() == vm);
    h.options.sort();
    h.options.dedup();
    let vm = h.vm;
    let mut seen = Vec::new();
    h.gmems.retain_mut(|g| {
        if vm.has_private_mem() {
            g.init_shared = false;
        }
        if matches!(vm, VmType::Tdx | VmType::Snp) {
            g.mmap = false;
        }
        let ok = legal::check_gmem(vm, g).is_ok() && !seen.contains(&g.name);
        seen.push(g.name.clone());
        ok
    });
    h.gmems.truncate(legal::MAX_GMEMS);
    let names: Vec<String> = h.gmems.iter().map(|g| g.name.clone()).collect();
    let fix_slot = |sl: &mut SlotSpec| {
        if sl.gmem.as_ref().is_some_and(|b| !names.contains(&b.gmem)) {
            sl.gmem = None;
        }
    };
    h.slots.iter_mut().for_each(&fix_slot);
    h.slots.truncate(legal::MAX_HEADER_SLOTS);
    let vcpus = h.vcpus;
    for st in s.steps.iter_mut() {
        if let Some(v) = st.op.vcpu_mut() {
            *v %= vcpus;
        }
        if let Op::SlotAdd(sl) = &mut st.op {
            fix_slot(sl);
        }
        if let Op::ExpectPages { p4k, p2m, p1g } = &mut st.op {
            if p4k.is_none() && p2m.is_none() && p1g.is_none() {
                *p4k = Some(vec![0]);
            }
            for set in [p4k, p2m, p1g].into_iter().flatten() {
                set.sort_unstable();
                set.dedup();
                set.truncate(4);
                if set.is_empty() {
                    set.push(0);
                }
            }
        }
    }
    let h = &s.header;
    s.steps.retain(|st| legal::check_op(h, &st.op).is_ok());
    s.steps.truncate(legal::MAX_STEPS);
    legal::normalize_groups(s);
}

/// A TDX command one field off the harness's own build, at that field's check: the flags, a
/// nonzero hw_error, cpuid.nent at KVM_MAX_CPUID_ENTRIES's edge, attributes KVM does and does
/// not support, XFAM, the GPA width, reserved bytes and padding. Now
/// and then on the other fd (a VM command on a vCPU), an unknown id, or a TD of its own.
fn gen_tdx_cmd(u: &mut Unstructured<'_>, vcpu: u32) -> Result<TdxCmd> {
    let id = pick(u, &[0, 1, 2, 5, 0, 1, 2, 5, 6, u32::MAX])?;
    let on_vcpu = matches!(id, 2 | 5) != u.ratio(1, 8)?;
    let mut c = TdxCmd { id, vcpu: on_vcpu.then_some(vcpu), new_td: u.ratio(1, 3)?, ..Default::default() };
    match u.int_in_range(0..=6)? {
        0 => c.flags = pick(u, &[1, 0x8000_0000])?,
        1 => c.hw_error = pick(u, &[1, u64::MAX])?,
        2 => c.nent = Some(pick(u, &[256, 257, u32::MAX])?),
        3 => c.attrs = pick(u, &[1, 1 << 28, 1 << 63])?,
        4 => c.bad_xfam = true,
        5 => c.gpaw = Some(pick(u, &[0, 47, 48, 53, 255])?),
        _ => (c.reserved, c.padding) = if u.ratio(1, 2)? { (true, false) } else { (false, true) },
    }
    if c.id == 0 && u.ratio(1, 4)? {
        c.nent = Some(0);
    }
    Ok(c)
}
