//! The software module against privmem's model of the module: the same S-EPT SEAMCALL sequence
//! on both ([`run`]), every status compared (KVM compares the class, the upper 32 bits) and,
//! after every call, every S-EPT entry at 1G and below (state and, for leaves, page). The fuzz
//! target `seam_diff` and `tests/seam.rs` drive it; CI runs both.

use super::{leaf, GuestAccept, Regs, SoftModule, F_HUGE_PAGES};
use crate::model::sept::{AcceptWalk, Td};
use crate::seq::{Level, SeptState, TdxStatus};
use arbitrary::{Arbitrary, Unstructured};
use std::collections::BTreeMap;

/// The GPA window the sequences use: 4 GiB, four 1G entries.
const WINDOW_GFNS: u64 = 1 << 20;

/// One host or guest step on the S-EPT, as KVM (or the guest) issues it.
#[derive(Clone, Copy, Debug)]
pub enum Step {
    /// TDH.MEM.SEPT.ADD of the table under the entry at `level` (2M or 1G; 4K is refused).
    SeptAdd { gfn: u32, level: u8 },
    /// TDH.MEM.PAGE.ADD + the 16 MR.EXTENDs KVM issues after it (build time only).
    Add { gfn: u32 },
    /// TDH.MR.FINALIZE.
    Finalize,
    /// TDH.MEM.PAGE.AUG at `level` with fresh pages.
    Aug { gfn: u32, level: u8 },
    /// TDH.MEM.RANGE.BLOCK.
    Block { gfn: u32, level: u8 },
    /// TDH.MEM.TRACK, then KVM's kick of every vCPU.
    Track,
    /// TDH.MEM.PAGE.REMOVE.
    Remove { gfn: u32, level: u8 },
    /// The guest's TDG.MEM.PAGE.ACCEPT.
    Accept { gfn: u32, level: u8 },
    /// TDH.MEM.PAGE.DEMOTE of the leaf at `level` with a fresh S-EPT page.
    Demote { gfn: u32, level: u8 },
    /// TDH.MEM.PAGE.PROMOTE of the non-leaf at `level`.
    Promote { gfn: u32, level: u8 },
}

/// Fuzz input: GFNs mostly inside a few 2M regions, so that steps meet on the same entries.
impl<'a> Arbitrary<'a> for Step {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Step> {
        let kind = u.int_in_range(0u8..=9)?;
        let near = u.ratio(3u8, 4)?;
        let gfn = if near { u.int_in_range(0u32..=3)? * 512 + u.int_in_range(0u32..=3)? } else { u.arbitrary()? };
        let level = u.int_in_range(0u8..=2)?;
        Ok(match kind {
            0 => Step::SeptAdd { gfn, level },
            1 => Step::Add { gfn },
            2 => Step::Finalize,
            3 => Step::Aug { gfn, level },
            4 => Step::Block { gfn, level },
            5 => Step::Track,
            6 => Step::Remove { gfn, level },
            7 => Step::Accept { gfn, level },
            // The series resizes at 2M: mostly there.
            8 => Step::Demote { gfn, level: if u.ratio(3u8, 4)? { 1 } else { level } },
            _ => Step::Promote { gfn, level: if u.ratio(3u8, 4)? { 1 } else { level } },
        })
    }
}

/// The steps fuzz bytes decode to (at most 64).
pub fn steps(data: &[u8]) -> Vec<Step> {
    let mut u = Unstructured::new(data);
    let mut v = Vec::new();
    while v.len() < 64 && !u.is_empty() {
        match Step::arbitrary(&mut u) {
            Ok(s) => v.push(s),
            Err(_) => break,
        }
    }
    v
}

fn level(l: u8) -> Level {
    match l % 3 {
        0 => Level::L4K,
        1 => Level::L2M,
        _ => Level::L1G,
    }
}

fn gpa_of(gfn: u32, l: Level) -> u64 {
    let gfn = u64::from(gfn) % WINDOW_GFNS;
    (gfn & !(l.pages() - 1)) << 12
}

/// Status classes, as KVM compares them.
fn class(st: u64) -> u64 {
    st >> 32
}

/// What the two disagree on, first: the step, and what each said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    pub step: usize,
    pub what: String,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "step {}: {}", self.step + 1, self.what)
    }
}

/// The model's S-EPT as (gpa, level) → (state, pfn of a leaf).
fn model_entries(td: &Td) -> BTreeMap<(u64, u8), (u8, u64)> {
    let mut m = BTreeMap::new();
    for l in [Level::L1G, Level::L2M, Level::L4K] {
        for (first, e) in td.runs_in(0, WINDOW_GFNS, l) {
            for i in 0..e.count {
                let gfn = first + i * l.pages();
                let pfn = if e.state.is_leaf() { e.pfn + i * l.pages() } else { 0 };
                m.insert((gfn << 12, l as u8), (e.state.value(), pfn));
            }
        }
    }
    m
}

/// How many steps of each kind both sides carried out (the agreement on successes is the part
/// that moves the S-EPT; a differential that never got that far checked little).
pub type Succeeded = BTreeMap<&'static str, u64>;

fn name(step: &Step) -> &'static str {
    match step {
        Step::SeptAdd { .. } => "SEPT.ADD",
        Step::Add { .. } => "PAGE.ADD",
        Step::Finalize => "FINALIZE",
        Step::Aug { .. } => "PAGE.AUG",
        Step::Block { .. } => "RANGE.BLOCK",
        Step::Track => "TRACK",
        Step::Remove { .. } => "PAGE.REMOVE",
        Step::Accept { .. } => "ACCEPT",
        Step::Demote { .. } => "PAGE.DEMOTE",
        Step::Promote { .. } => "PAGE.PROMOTE",
    }
}

/// Run `steps` on a fresh TD of each; the first disagreement, if any, else what succeeded.
pub fn run(steps: &[Step]) -> Result<Succeeded, Divergence> {
    let mut done = Succeeded::new();
    let fail = |step: usize, what: String| Divergence { step, what };
    let mut soft = SoftModule::boot(1, F_HUGE_PAGES).map_err(|e| fail(0, format!("module boot: {e}")))?;
    let (tdr, _vp) = soft.build_td(33, 0).map_err(|e| fail(0, format!("TD build: {e}")))?;
    let mut model = Td::new(false);
    // The table under the first 1G entry is there from the start, as after KVM's first private
    // fault: sequences spend their steps on the 2M and 4K entries where the leaves meet (the
    // other three 1G entries still begin empty).
    let mut r = Regs { rcx: 2, rdx: tdr, r8: soft.alloc(), ..Default::default() };
    let (st, want) = (soft.call(leaf::MEM_SEPT_ADD, &mut r), model.sept_add(0, Level::L1G));
    if st != 0 || want != TdxStatus::Success {
        return Err(fail(0, format!("the first 1G table: module {st:#x}, model {want:?}")));
    }
    // The model's pfns are the module's page frames.
    for (i, step) in steps.iter().enumerate() {
        let (real, want) = match *step {
            Step::SeptAdd { gfn, level: l } => {
                let l = level(l);
                let page = soft.alloc();
                let mut r = Regs { rcx: gpa_of(gfn, l) | l as u64, rdx: tdr, r8: page, ..Default::default() };
                let st = soft.call(leaf::MEM_SEPT_ADD, &mut r);
                (st, model.sept_add(gpa_of(gfn, l) >> 12, l).value())
            }
            Step::Add { gfn } => {
                let page = soft.alloc();
                let src = soft.alloc();
                let gpa = gpa_of(gfn, Level::L4K);
                let mut r = Regs { rcx: gpa, rdx: tdr, r8: page, r9: src, ..Default::default() };
                let st = soft.call(leaf::MEM_PAGE_ADD, &mut r);
                if st == 0 {
                    for chunk in 0..16 {
                        let mut r = Regs { rcx: gpa + chunk * 256, rdx: tdr, ..Default::default() };
                        let st = soft.call(leaf::MR_EXTEND, &mut r);
                        if st != 0 {
                            return Err(fail(i, format!("MR.EXTEND after a successful PAGE.ADD: {st:#x}")));
                        }
                    }
                }
                (st, model.page_add(gpa >> 12, page >> 12).value())
            }
            Step::Finalize => {
                let mut r = Regs { rcx: tdr, ..Default::default() };
                let st = soft.call(leaf::MR_FINALIZE, &mut r);
                let want = if model.runnable() {
                    TdxStatus::OpStateIncorrect
                } else {
                    model.op_state = crate::model::sept::OpState::Runnable;
                    TdxStatus::Success
                };
                (st, want.value())
            }
            Step::Aug { gfn, level: l } => {
                let l = level(l);
                let page = soft.alloc_aligned(l.pages().min(512));
                let gpa = gpa_of(gfn, l);
                let mut r = Regs { rcx: gpa | l as u64, rdx: tdr, r8: page, ..Default::default() };
                let st = soft.call(leaf::MEM_PAGE_AUG, &mut r);
                let want = if !model.runnable() {
                    TdxStatus::OpStateIncorrect
                } else {
                    model.page_aug(gpa >> 12, l, page >> 12)
                };
                (st, want.value())
            }
            Step::Block { gfn, level: l } => {
                let l = level(l);
                let gpa = gpa_of(gfn, l);
                let mut r = Regs { rcx: gpa | l as u64, rdx: tdr, ..Default::default() };
                (soft.call(leaf::MEM_RANGE_BLOCK, &mut r), model.block(gpa >> 12, l).value())
            }
            Step::Track => {
                let mut r = Regs { rcx: tdr, ..Default::default() };
                let st = soft.call(leaf::MEM_TRACK, &mut r);
                let want = if model.runnable() {
                    let w = model.track();
                    model.kick();
                    w
                } else {
                    TdxStatus::OpStateIncorrect
                };
                (st, want.value())
            }
            Step::Remove { gfn, level: l } => {
                let l = level(l);
                let gpa = gpa_of(gfn, l);
                let mut r = Regs { rcx: gpa | l as u64, rdx: tdr, ..Default::default() };
                (soft.call(leaf::MEM_PAGE_REMOVE, &mut r), model.page_remove(gpa >> 12, l).value())
            }
            Step::Demote { gfn, level: l } => {
                let l = level(l);
                let gpa = gpa_of(gfn, l);
                let page = soft.alloc();
                let mut r = Regs { rcx: gpa | l as u64, rdx: tdr, r8: page, ..Default::default() };
                (soft.call(leaf::MEM_PAGE_DEMOTE, &mut r), model.demote(gpa >> 12, l).value())
            }
            Step::Promote { gfn, level: l } => {
                let l = level(l);
                let gpa = gpa_of(gfn, l);
                let mut r = Regs { rcx: gpa | l as u64, rdx: tdr, ..Default::default() };
                (soft.call(leaf::MEM_PAGE_PROMOTE, &mut r), model.promote(gpa >> 12, l).value())
            }
            Step::Accept { gfn, level: l } => {
                let l = level(l);
                let gpa = gpa_of(gfn, l);
                if !model.runnable() {
                    continue;
                }
                let real = soft.guest_accept(tdr, gpa, l as u8);
                let want = model.accept(gpa >> 12, l);
                let same = match (real, want) {
                    (GuestAccept::Exit, AcceptWalk::EptViolation) => true,
                    (GuestAccept::Rax(0), AcceptWalk::Accepted { .. }) => true,
                    (GuestAccept::Rax(rax), AcceptWalk::Status(st, lv)) => {
                        class(rax) == class(st.value()) && lv.is_none_or(|lv| rax & 7 == lv as u64)
                    }
                    _ => false,
                };
                if !same {
                    return Err(fail(i, format!("{step:?}: module {real:x?}, model {want:?}")));
                }
                if real == GuestAccept::Rax(0) {
                    *done.entry(name(step)).or_default() += 1;
                }
                continue;
            }
        };
        if class(real) != class(want) {
            return Err(fail(i, format!("{step:?}: module {real:#018x}, model {want:#018x}")));
        }
        if real == 0 {
            *done.entry(name(step)).or_default() += 1;
        }
        compare(&mut soft, tdr, &model).map_err(|w| fail(i, format!("after {step:?}: {w}")))?;
    }
    Ok(done)
}

/// Every S-EPT entry at 1G and below, on both sides.
fn compare(soft: &mut SoftModule, tdr: u64, model: &Td) -> Result<(), String> {
    let real: BTreeMap<(u64, u8), (u8, u64)> = soft
        .sept(tdr)
        .into_iter()
        .map(|e| {
            let leaf = SeptState::ALL.iter().any(|s| s.value() == e.state && s.is_leaf());
            ((e.gpa, e.level), (e.state, if leaf { e.pa >> 12 } else { 0 }))
        })
        .collect();
    let want = model_entries(model);
    if real == want {
        return Ok(());
    }
    let first = real
        .iter()
        .find(|(k, v)| want.get(k) != Some(v))
        .map(|(k, v)| format!("module has {:#x}@{} = {:?}, model {:?}", k.0, k.1, v, want.get(k)))
        .or_else(|| {
            want.iter()
                .find(|(k, _)| !real.contains_key(k))
                .map(|(k, v)| format!("model has {:#x}@{} = {:?}, module nothing", k.0, k.1, v))
        })
        .unwrap_or_default();
    Err(first)
}
