//! TD reuse across cases. A TD costs most of a TD case to build (INIT_VM, INIT_VCPU, the shim's
//! image page by page through PAGE.ADD and MR.EXTEND, FINALIZE) and to tear down (a reclaim per
//! page), so a finalized TD serves the cases after it where its reset proves it as good as
//! fresh for them:
//! - the case fits: it finalizes first (nothing before its first `finalize` but attribute
//!   changes, which do the same on a built TD), and wants no more vCPUs than the TD has (a TD
//!   built where TDs are kept has two, what generated cases ask for at most; a vCPU a case does
//!   not name is created and initialized, and never entered);
//! - its memory goes where the TD's S-EPT has never had an entry. KVM frees a TD's S-EPT tables
//!   only at teardown, and a table left at 2M or 1G changes what ACCEPT meets (a walk that
//!   stops at a missing table exits to KVM; one that meets a table returns
//!   PAGE_SIZE_MISMATCH). So the case runs moved by whole gigabytes to GPA no earlier case
//!   touched (every address below the shim's identity map, the slots' too; the S-EPT it reads
//!   back is moved back), within the identity map and off its image. What lies past the
//!   identity map (MapGPA and conversions at the GPA width's edges) stays where it is, on
//!   gigabytes no earlier case used; a case with an op across the map's end gets a fresh TD;
//! - the reset (`CvmGuest::detach`: slot deletions, files closed, attributes back to shared)
//!   went through, the case ended cleanly (the TD is alive, the kernel reported nothing; a vCPU
//!   a memory fault left mid-access had its batch ended, `CvmGuest::end_batch`, which only the
//!   software module allows), and the module shows no S-EPT leaf and nothing in
//!   KVM's shared EPT (leaf or MMIO SPTE) outside the shim's image.
//!
//! On a reused TD the case's first `finalize` is not issued: it is reported as not checked (the
//! TD's FINALIZE was checked at the case that built it). Where the TDX module is not privmem's
//! (a real TDX host) nothing shows the EPTs, so every TD case gets a fresh TD.

use super::cvm_run::CvmGuest;
use super::gate::op_span;
use super::*;
use std::collections::BTreeSet;

/// TDs kept at once: one that a case does not fit waits for the cases that do (a case that
/// builds its TD, or reaches past the identity map, gets a fresh one meanwhile).
const KEPT_TDS: usize = 2;

/// The vCPUs a TD built where TDs are kept has at least: as many as a generated case asks for.
const KEPT_VCPUS: u32 = 2;

/// A GPA gigabyte, the unit a case is moved by (a 1G S-EPT entry's span).
const GIB: u64 = 1 << 30;

/// A TD kept for the next case, and the gigabytes no case may be moved onto: those its S-EPT
/// has entries in, and those its shared EPT has an MMIO SPTE in.
pub(super) struct KeptTd {
    g: CvmGuest,
    used: BTreeSet<u64>,
}

/// Past the identity map, how many gigabytes one op or slot may reach and still be placed (a
/// conversion of half the GPA space is not worth a set of its gigabytes).
const FAR_GIBS: u64 = 1024;

/// The gigabytes a case's memory and ops reach: below the shim's identity map (`near`: moved)
/// and past it (`far`: not moved; a MapGPA or conversion there is at the GPA width's edges,
/// where moving it would change what it means).
struct Footprint {
    near: BTreeSet<u64>,
    far: BTreeSet<u64>,
}

/// The span of a slot or an op, where it has one.
fn spans(seq: &Sequence) -> impl Iterator<Item = Option<(u64, u64)>> + '_ {
    let slots = seq.header.slots.iter().filter(|s| s.size > 0).map(|s| Some((s.gpa, s.gpa.checked_add(s.size)?)));
    slots.chain(seq.steps.iter().filter(|st| st.op.addr().is_some()).map(|st| op_span(&st.op)))
}

/// Whether a span lies wholly below the identity map's end (it moves with the case).
fn near(s: u64, e: u64) -> bool {
    s < e && e <= IDENTITY_LIMIT
}

/// A case's footprint, or None where one op or slot reaches across the identity map's end (or
/// over too much GPA past it): such a case is not moved.
fn footprint(seq: &Sequence) -> Option<Footprint> {
    let mut f = Footprint { near: BTreeSet::new(), far: BTreeSet::new() };
    for r in spans(seq) {
        let (s, e) = r?;
        let gibs = s / GIB..e.div_ceil(GIB);
        if near(s, e) {
            f.near.extend(gibs);
        } else if s >= IDENTITY_LIMIT && gibs.end - gibs.start <= FAR_GIBS {
            f.far.extend(gibs);
        } else {
            return None;
        }
    }
    Some(f)
}

/// How far to move a case's near gigabytes so that they meet none in `used`, staying below the
/// identity map's end: the least such multiple of a gigabyte. Its far ones stay where they are,
/// so none of them may be used (moved near ones stay below them).
fn move_by(fp: &Footprint, used: &BTreeSet<u64>) -> Option<u64> {
    if fp.far.iter().any(|r| used.contains(r)) {
        return None;
    }
    let top = IDENTITY_LIMIT / GIB;
    let fits = |k: u64| fp.near.iter().all(|&r| r + k < top && !used.contains(&(r + k)));
    (0..top).find(|&k| fits(k)).map(|k| k * GIB)
}

/// `seq` with every guest address below the identity map moved up by `by` (header slots and
/// ops; a shared-bit address by its GPA).
fn moved(seq: &Sequence, by: u64) -> Sequence {
    let mut s = seq.clone();
    for sl in s.header.slots.iter_mut().filter(|sl| sl.size > 0 && near(sl.gpa, sl.gpa.saturating_add(sl.size))) {
        sl.gpa += by;
    }
    for st in &mut s.steps {
        let stays = op_span(&st.op).is_none_or(|(s, e)| !near(s, e));
        if let Some(a) = st.op.addr_mut().filter(|_| !stays) {
            *a += by;
        }
    }
    s
}

/// A GFN the moved case saw, where the case's own addresses are (a far one was not moved).
fn moved_back(gfn: u64, by: u64) -> u64 {
    if gfn < IDENTITY_LIMIT >> 12 {
        gfn.saturating_sub(by >> 12)
    } else {
        gfn
    }
}

/// Where `seq` runs on the kept TD (moved by how much), or why it cannot.
fn placement(k: &KeptTd, seq: &Sequence) -> Result<u64, Fresh> {
    if k.g.vcpus.len() < seq.header.vcpus.max(1) as usize {
        return Err(Fresh::MoreVcpus);
    }
    // A finalized TD serves a case that finalizes first (its FINALIZE not issued again); an
    // unfinalized one (kept after a case that never finalized) serves any case whole.
    if k.g.finalized && !finalizes_first(seq) {
        return Err(Fresh::TdBuiltInCase);
    }
    let fp = footprint(seq).ok_or(Fresh::TdCaseFar)?;
    move_by(&fp, &k.used).ok_or(Fresh::TdNoRoom)
}

/// Whether nothing comes before the case's first `finalize` but attribute changes (which do the
/// same on a finalized TD: no page is mapped before FINALIZE without init-mem or pre-fault).
fn finalizes_first(seq: &Sequence) -> bool {
    let first = seq.steps.iter().find(|st| !matches!(st.op, Op::Private { .. } | Op::Shared { .. }));
    first.is_some_and(|st| matches!(st.op, Op::Finalize))
}

/// Why the TD cannot serve another case after `t`, before its reset, if it cannot.
fn unclean(t: &Result<RealTrace, RunError>) -> Option<Fresh> {
    let Ok(t) = t else { return Some(Fresh::UncleanEnd) };
    let dead = t.observed.iter().any(|o| matches!(o, Observed::Outcome(Outcome::VmDead)));
    (dead || !t.splats.is_empty()).then_some(Fresh::UncleanEnd)
}

/// The vCPU a memory fault left in the middle of its batch (the case ends at that step).
fn stuck_vcpu(seq: &Sequence, t: &Result<RealTrace, RunError>) -> Option<usize> {
    let t = t.as_ref().ok()?;
    let i = t.observed.iter().position(|o| matches!(o, Observed::Outcome(Outcome::Exit(Exit::MemoryFault { .. }))))?;
    Some(seq.steps[i].op.vcpu().unwrap_or(0) as usize)
}

impl KvmBackend {
    /// A TD case: on a kept TD where it fits, else on a fresh one (the kept ones wait for cases
    /// that fit them); the TD is kept after the case where its reset proves it clean. What the
    /// kernel reported during the case, its reset or the TD's teardown is the case's, at its
    /// last step.
    pub(super) fn run_td(&mut self, seq: &Sequence) -> Result<RealTrace, RunError> {
        if let Some(why) = cvm_run::unsupported(seq) {
            return Err(RunError::Unsupported(why));
        }
        if !self.reuse {
            self.tds.clear();
        }
        // The first kept TD that fits (a finalized one first where the case finalizes first,
        // keeping unfinalized ones for the cases that build their TD), or the reason the first
        // one does not.
        let mut placed = Err(if self.reuse { Fresh::NoVmYet } else { Fresh::ReuseOff });
        let ff = finalizes_first(seq);
        self.tds.sort_by_key(|k| k.g.finalized != ff);
        for (i, k) in self.tds.iter().enumerate() {
            match placement(k, seq) {
                Ok(by) => {
                    placed = Ok((i, by));
                    break;
                }
                Err(w) if placed == Err(Fresh::NoVmYet) => placed = Err(w),
                Err(_) => {}
            }
        }
        self.report_between_cases();
        let t0 = Instant::now();
        // Kernel coverage (KCOV, where the flavour has it) of the case: the TD's build where it
        // has one, its ops, its reset or the TD's teardown.
        if let Some(k) = self.kcov.as_mut() {
            k.start();
        }
        let (mut g, by) = match placed {
            Ok((i, by)) => {
                let mut k = self.tds.remove(i);
                k.g.attach(&moved(seq, by).header)?;
                (k.g, Some(by))
            }
            Err(why) => {
                if why != Fresh::NoVmYet {
                    fresh_because(why);
                }
                self.fresh_vms += 1;
                FRESH_VMS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // Where TDs are kept, a fresh one has room for the vCPUs generated cases ask
                // for (two), so that a one-vCPU case's TD can serve a two-vCPU case after it.
                let vcpus = if self.reuse { KEPT_VCPUS } else { 1 };
                (CvmGuest::build_with(&self.kvm, seq, vcpus)?, None)
            }
        };
        let skip_finalize = by.is_some() && g.finalized;
        // The S-EPT readings after each step walk the case's gigabytes only (a kept TD keeps
        // every earlier case's tables); the reset's proof walks everything.
        if soft_tdx::present() {
            let fp = by.and_then(|by| Some((footprint(seq)?, by)));
            let gibs = fp.map(|(f, by)| f.near.iter().map(|g| g + by / GIB).chain(f.far).collect());
            soft_tdx::window(&gibs.unwrap_or_default());
        }
        let t1 = Instant::now();
        // The mirror root is read from the mapping view where it sees every SPTE (TDP MMU). The
        // view starts empty: no TD has a leaf of a case now (a kept one's reset proved it, a
        // fresh one has none), and a torn-down TD's leaves go without events.
        let watch = td_guest::Watch { dog: &self.watchdog, window: self.timeout, release: self.release };
        let mut view = self.view.as_mut().filter(|v| v.mmu == Mmu::Tdp);
        if let Some(v) = view.as_deref_mut() {
            v.reset();
        }
        let mut r = match by {
            Some(by) => cvm_ops::run_on(&mut g, &moved(seq, by), skip_finalize, view, &watch).map(|mut t| {
                // The S-EPT the case saw, where the case's own addresses are.
                for leaves in t.sept.iter_mut().flatten() {
                    leaves.iter_mut().for_each(|l| l.0 = moved_back(l.0, by));
                }
                t.mirror.iter_mut().for_each(|(_, m)| m.gfn = moved_back(m.gfn, by));
                t
            }),
            None => cvm_ops::run_on(&mut g, seq, false, view, &watch),
        };
        let last = seq.steps.len().saturating_sub(1);
        let t2 = Instant::now();
        let mut clock = ResetClock::start();
        let mut keep = match unclean(&r) {
            _ if !self.reuse => Err(Fresh::ReuseOff),
            _ if !soft_tdx::present() || g.soft_tdr.is_none() => Err(Fresh::NoTdView),
            Some(w) => Err(w),
            None => Ok(()),
        };
        if let (Ok(()), Some(v)) = (keep, stuck_vcpu(seq, &r)) {
            let watch = td_guest::Watch { dog: &self.watchdog, window: self.timeout, release: self.release };
            if !g.end_batch(v, &watch) {
                keep = Err(Fresh::UncleanEnd);
            }
        }
        let keep = keep.and_then(|()| self.reset_td(&mut g, seq, &mut clock));
        let mut splats = self.kmsg.as_mut().map(|k| k.splats()).unwrap_or_default();
        match keep {
            Ok(used) if splats.is_empty() => {
                let finalized = g.finalized;
                self.tds.push(KeptTd { g, used });
                // Too many: the one with the least room left goes, among those of the new
                // one's kind (finalized or not) where there are two, so both kinds stay.
                if self.tds.len() > KEPT_TDS {
                    let same = self.tds.iter().filter(|k| k.g.finalized == finalized).count() > 1;
                    let most_used = (0..self.tds.len())
                        .filter(|&i| !same || self.tds[i].g.finalized == finalized)
                        .max_by_key(|&i| self.tds[i].used.len())
                        .expect("not empty");
                    drop(self.tds.remove(most_used));
                    self.report_between_cases();
                }
            }
            keep => {
                // Counted at the next build (as "reuse off"), not twice.
                match keep {
                    Err(Fresh::ReuseOff) => {}
                    Err(w) => fresh_because(w),
                    Ok(_) => fresh_because(Fresh::UncleanEnd),
                }
                drop(g);
                clock.lap(part::TEARDOWN);
                splats.extend(self.kmsg.as_mut().map(|k| k.splats()).unwrap_or_default());
            }
        }
        if let Ok(t) = r.as_mut() {
            t.splats.extend(splats.into_iter().map(|s| (last, s)));
            if let Some(k) = self.kcov.as_mut() {
                t.pcs = k.collect();
            }
        }
        let t3 = Instant::now();
        for (i, d) in [t1 - t0, t2 - t1, t3 - t2].iter().enumerate() {
            PHASE_NANOS[i].fetch_add(d.as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }

    /// Take the case's memory off the TD and prove it gone: the gigabytes no later case may
    /// be moved onto, when the TD can serve another case.
    fn reset_td(&mut self, g: &mut CvmGuest, seq: &Sequence, clock: &mut ResetClock) -> Result<BTreeSet<u64>, Fresh> {
        if seq.steps.iter().any(|st| matches!(st.op, Op::Inject(_))) && soft_tdx::clear_injections().is_err() {
            return Err(Fresh::UncleanEnd);
        }
        if let Err(e) = g.detach() {
            eprintln!("privmem: a TD's reset: {e}");
            return Err(Fresh::SlotDeletionFailed);
        }
        clock.lap(part::SLOTS);
        let tdr = g.soft_tdr.ok_or(Fresh::NoTdView)?;
        soft_tdx::window(&BTreeSet::new());
        let proof = (soft_tdx::sept_state(tdr), soft_tdx::shared_left(tdr));
        clock.lap(part::VIEW);
        match proof {
            (Some(soft_tdx::SeptDump { leaves, mut used, .. }), Some((sh, mmio)))
                if leaves.is_empty() && sh.is_empty() =>
            {
                // Gigabytes with an MMIO SPTE are not used again: a later case's shared access
                // there would meet it (a #VE where a fresh TD's guest exits to KVM).
                used.extend(mmio);
                Ok(used)
            }
            _ => Err(Fresh::TdMappingsLeft),
        }
    }

    /// What the kernel reported while no case ran (an earlier VM's teardown): said, not blamed
    /// on the next case.
    pub(super) fn report_between_cases(&mut self) {
        for s in self.kmsg.as_mut().map(|k| k.splats()).unwrap_or_default() {
            eprintln!("privmem: kernel report between cases (an earlier VM's teardown): {}", s.title);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seq::text::parse;

    #[test]
    fn a_case_moves_past_used_gigabytes_and_stays_below_the_identity_map() {
        let s = parse(
            "s",
            "vm tdx\ngmem g size=4M\nslot 0 gpa=0x13fe00000 size=4M gmem=g offset=0\nfinalize\nvcpu0 accept 0x140000000 4K\n",
        )
        .unwrap();
        // The slot straddles gigabytes 4 and 5.
        let fp = footprint(&s).unwrap();
        assert_eq!(fp.near.iter().copied().collect::<Vec<_>>(), [4, 5]);
        assert!(fp.far.is_empty());
        let used: BTreeSet<u64> = [3, 4, 6, 127].into();
        // Up by 1: 5 and 6 (6 used); by 2: 6 (used); by 3: 7 and 8.
        assert_eq!(move_by(&fp, &used), Some(3 * GIB));
        let m = moved(&s, 3 * GIB);
        assert_eq!(m.header.slots[0].gpa, 0x13fe00000 + 3 * GIB);
        assert_eq!(m.steps[1].op.addr(), Some(0x140000000 + 3 * GIB));
        // Nothing free up to the identity map's end: no move.
        let all: BTreeSet<u64> = (0..128).filter(|r| *r != 4).collect();
        assert_eq!(move_by(&fp, &all), None);
        // An op across the identity map's end: the case is not moved.
        let across = parse("s", "vm tdx\nfinalize\nprivate 0x1fffe00000 4M\n").unwrap();
        assert!(footprint(&across).is_none());
    }

    #[test]
    fn ops_past_the_identity_map_stay_where_they_are() {
        let s = parse(
            "s",
            "vm tdx\ngmem g size=2M\nslot 0 gpa=0x100000000 size=2M gmem=g offset=0\nfinalize\n\
             private 0x100000000 4K\nvcpu0 map-gpa 0x7ffffffff000 4K private\nvcpu0 map-gpa 0x800100000000 4K shared\n",
        )
        .unwrap();
        let fp = footprint(&s).unwrap();
        assert_eq!(fp.near.iter().copied().collect::<Vec<_>>(), [4]);
        // The MAXPA-edge MapGPA is far; the shared-bit one is gigabyte 4 by its GPA.
        assert_eq!(fp.far.iter().copied().collect::<Vec<_>>(), [(0x7ffffffff000 >> 30)]);
        let m = moved(&s, 2 * GIB);
        assert_eq!(m.header.slots[0].gpa, 0x100000000 + 2 * GIB);
        assert_eq!(m.steps[1].op.addr(), Some(0x100000000 + 2 * GIB));
        assert_eq!(m.steps[2].op.addr(), Some(0x7ffffffff000));
        assert_eq!(m.steps[3].op.addr(), Some(0x800100000000 + 2 * GIB));
        // A far gigabyte an earlier case used: no move (it cannot go elsewhere).
        assert_eq!(move_by(&fp, &[0x7ffffffff000 >> 30].into()), None);
        assert_eq!(moved_back((0x100000000 + 2 * GIB) >> 12, 2 * GIB), 0x100000);
        assert_eq!(moved_back(0x7ffffffff, 2 * GIB), 0x7ffffffff);
    }
}
