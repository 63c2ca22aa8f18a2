//! The lab's software TDX module (`ci/lab/tdx/module/seam.c`) on its own: the rules it must
//! enforce as the real module does, and the differential against privmem's model.

use privmem::seam::diff;
use privmem::seam::{leaf, Regs, SoftModule};

const SUCCESS: u64 = 0;
const PAGE_METADATA_INCORRECT: u64 = 0xC000_0300_0000_0000;
const GPA_RANGE_NOT_BLOCKED: u64 = 0xC000_0B06_0000_0000;
const TLB_TRACKING_NOT_DONE: u64 = 0xC000_0B08_0000_0000;
const TD_ASSOCIATED_PAGES_EXIST: u64 = 0xC000_0400_0000_0000;
const LIFECYCLE_STATE_INCORRECT: u64 = 0xC000_0607_0000_0000;
const OP_STATE_INCORRECT: u64 = 0xC000_0608_0000_0000;
const SYS_NOT_READY: u64 = 0xC000_0505_0000_0000;
const FLUSHVP_NOT_DONE: u64 = 0x8000_0824_0000_0000;
const PT_NDA: u8 = 0;
const PT_REG: u8 = 3;

fn call(m: &mut SoftModule, rax: u64, r: Regs) -> (u64, Regs) {
    let mut r = r;
    let st = m.call(rax, &mut r);
    (st >> 32 << 32, r)
}

fn regs(rcx: u64, rdx: u64, r8: u64) -> Regs {
    Regs { rcx, rdx, r8, ..Default::default() }
}

#[test]
fn boot_reports_what_linux_7_3_needs() {
    let mut m = SoftModule::boot(1, 0).expect("boot");
    // features0: NO_RBP_MOD (bit 18, tdx.c check_features) and TOPOLOGY_ENUM (bit 20, KVM).
    let (st, r) = call(&mut m, leaf::SYS_RD, regs(0, 0x0A00_0003_0000_0008, 0));
    assert_eq!(st, SUCCESS);
    assert_eq!(r.r8 & (1 << 18 | 1 << 20), 1 << 18 | 1 << 20);
    // KVM's tdcs_nr_pages and tdcx_nr_pages come from these sizes.
    let (_, r) = call(&mut m, leaf::SYS_RD, regs(0, 0x9800_0001_0000_0100, 0));
    assert_eq!(r.r8, 4 * 4096);
    // An unknown field is an error (KVM's CPUID probing relies on errors).
    let (st, _) = call(&mut m, leaf::SYS_RD, regs(0, 0x9800_0001_0000_0300, 0));
    assert_ne!(st, SUCCESS);
}

#[test]
fn leaves_before_init_are_refused() {
    // A second module instance, not booted by hand: SYS.INIT done by boot; here the first
    // leaf after a fresh boot's TDMR init is fine, and a second SYS.INIT is refused.
    let mut m = SoftModule::boot(1, 0).expect("boot");
    let (st, _) = call(&mut m, leaf::SYS_INIT, Regs::default());
    assert_ne!(st, SUCCESS, "SYS.INIT twice");
    assert_ne!(SYS_NOT_READY, 0);
}

#[test]
fn a_td_lives_and_dies_as_kvm_drives_it() {
    let mut m = SoftModule::boot(1, 0).expect("boot");
    let (tdr, vp) = m.build_td(40, 0).expect("TD");
    // A 2M table under the 1G entry at GPA 0, then a 4K table.
    let pd = m.alloc();
    assert_eq!(call(&mut m, leaf::MEM_SEPT_ADD, regs(2, tdr, pd)).0, SUCCESS);
    let pt = m.alloc();
    assert_eq!(call(&mut m, leaf::MEM_SEPT_ADD, regs(1, tdr, pt)).0, SUCCESS);
    // PAGE.ADD at build time; the same page twice is refused by the PAMT.
    let (page, src) = (m.alloc(), m.alloc());
    m.write(src, &[0x1234]);
    let add = Regs { rcx: 0x1000, rdx: tdr, r8: page, r9: src, ..Default::default() };
    assert_eq!(call(&mut m, leaf::MEM_PAGE_ADD, add).0, SUCCESS);
    assert_eq!(m.page_type(page), Some((PT_REG, tdr)));
    let again = Regs { rcx: 0x2000, ..add };
    assert_eq!(call(&mut m, leaf::MEM_PAGE_ADD, again).0, PAGE_METADATA_INCORRECT);
    // AUG only once runnable.
    let aug_page = m.alloc();
    assert_eq!(call(&mut m, leaf::MEM_PAGE_AUG, regs(0x3000, tdr, aug_page)).0, OP_STATE_INCORRECT);
    assert_eq!(call(&mut m, leaf::MR_FINALIZE, regs(tdr, 0, 0)).0, SUCCESS);
    assert_eq!(call(&mut m, leaf::MEM_PAGE_AUG, regs(0x3000, tdr, aug_page)).0, SUCCESS);
    assert_eq!(m.guest_accept(tdr, 0x3000, 0), privmem::seam::GuestAccept::Rax(0));
    // REMOVE needs BLOCK, then TRACK.
    assert_eq!(call(&mut m, leaf::MEM_PAGE_REMOVE, regs(0x3000, tdr, 0)).0, GPA_RANGE_NOT_BLOCKED);
    assert_eq!(call(&mut m, leaf::MEM_RANGE_BLOCK, regs(0x3000, tdr, 0)).0, SUCCESS);
    assert_eq!(call(&mut m, leaf::MEM_PAGE_REMOVE, regs(0x3000, tdr, 0)).0, TLB_TRACKING_NOT_DONE);
    assert_eq!(call(&mut m, leaf::MEM_TRACK, regs(tdr, 0, 0)).0, SUCCESS);
    assert_eq!(call(&mut m, leaf::MEM_PAGE_REMOVE, regs(0x3000, tdr, 0)).0, SUCCESS);
    assert_eq!(m.page_type(aug_page), Some((PT_NDA, 0)));
    // Teardown in KVM's order: the TDR can't go while the TD owns pages, nor before the keys.
    assert_eq!(call(&mut m, leaf::PHYMEM_PAGE_RECLAIM, regs(pd, 0, 0)).0, LIFECYCLE_STATE_INCORRECT);
    assert_eq!(call(&mut m, leaf::MNG_VPFLUSHDONE, regs(tdr, 0, 0)).0, FLUSHVP_NOT_DONE);
    assert_eq!(call(&mut m, leaf::VP_FLUSH, regs(vp, 0, 0)).0, SUCCESS);
    assert_eq!(call(&mut m, leaf::MNG_VPFLUSHDONE, regs(tdr, 0, 0)).0, SUCCESS);
    assert_eq!(call(&mut m, leaf::MNG_KEY_FREEID, regs(tdr, 0, 0)).0, SUCCESS);
    assert_eq!(call(&mut m, leaf::PHYMEM_PAGE_RECLAIM, regs(tdr, 0, 0)).0, TD_ASSOCIATED_PAGES_EXIST);
    // The added page is still the TD's: REMOVE it now that the TD is torn down? KVM zaps the
    // leaves before it frees the HKID; a page left over is reclaimed directly.
    assert_eq!(call(&mut m, leaf::PHYMEM_PAGE_RECLAIM, regs(page, 0, 0)).0, SUCCESS);
    for p in [pt, pd, vp] {
        assert_eq!(call(&mut m, leaf::PHYMEM_PAGE_RECLAIM, regs(p, 0, 0)).0, SUCCESS, "reclaim {p:#x}");
    }
    let sept = m.sept(tdr);
    assert!(!sept.is_empty(), "the S-EPT is still readable until the TDR goes");
}

/// A small deterministic generator (xorshift) for the differential's input bytes.
fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn the_module_agrees_with_the_model() {
    let mut ran = 0;
    let mut done = diff::Succeeded::new();
    for seed in 1..=400u64 {
        let steps = diff::steps(&bytes(seed, 400));
        match diff::run(&steps) {
            Err(d) => panic!("seed {seed}: {d}\nsteps: {:#?}", &steps[..=d.step.min(steps.len() - 1)]),
            Ok(s) => s.into_iter().for_each(|(k, n)| *done.entry(k).or_default() += n),
        }
        ran += steps.len();
    }
    assert!(ran > 10_000, "only {ran} steps ran");
    // Agreement on refusals alone would say little: every leaf succeeded somewhere.
    eprintln!("succeeded: {done:?}");
    for k in ["SEPT.ADD", "PAGE.ADD", "PAGE.AUG", "RANGE.BLOCK", "TRACK", "PAGE.REMOVE", "ACCEPT", "PAGE.DEMOTE"] {
        assert!(done.get(k).copied().unwrap_or(0) > 0, "no successful {k} in {done:?}");
    }
}

/// The huge-page series' split as KVM issues it (BLOCK, TRACK, DEMOTE), the guest's ACCEPTs
/// after it, and a PROMOTE back: on the module and the model, step by step.
#[test]
fn a_2m_leaf_is_demoted_and_promoted_as_the_series_does() {
    use diff::Step::*;
    let gfn = 512; // the 2M region at 2M
    let steps = [
        SeptAdd { gfn: 0, level: 2 },
        Finalize,
        Aug { gfn, level: 1 },
        // DEMOTE of an unblocked leaf of a runnable TD: refused.
        Demote { gfn, level: 1 },
        Block { gfn, level: 1 },
        // Blocked, not yet tracked: refused.
        Demote { gfn, level: 1 },
        Track,
        Demote { gfn, level: 1 },
        // Now 512 PENDING 4K leaves: the guest accepts at 4K; a 2M ACCEPT is a size mismatch.
        Accept { gfn, level: 1 },
        Accept { gfn: gfn + 3, level: 0 },
        // Mixed states under the table: PROMOTE refuses (after BLOCK and TRACK).
        Block { gfn, level: 1 },
        Track,
        Promote { gfn, level: 1 },
    ];
    let done = diff::run(&steps).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(done.get("PAGE.DEMOTE"), Some(&1), "{done:?}");
    assert_eq!(done.get("ACCEPT"), Some(&1), "{done:?}");
    assert_eq!(done.get("PAGE.PROMOTE"), None, "{done:?}");
    // All PENDING below: PROMOTE gives the 2M leaf back.
    let steps = [
        SeptAdd { gfn: 0, level: 2 },
        Finalize,
        Aug { gfn, level: 1 },
        Block { gfn, level: 1 },
        Track,
        Demote { gfn, level: 1 },
        Block { gfn, level: 1 },
        Track,
        Promote { gfn, level: 1 },
        Accept { gfn, level: 1 },
    ];
    let done = diff::run(&steps).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(done.get("PAGE.PROMOTE"), Some(&1), "{done:?}");
    assert_eq!(done.get("ACCEPT"), Some(&1), "{done:?}");
}

/// DEMOTE without the huge-page switch is no leaf; ENHANCED_DEMOTE is reported only with it.
#[test]
fn demote_and_its_feature_bit_are_behind_the_switch() {
    const FEATURES0: u64 = 0x0A00_0003_0000_0008;
    const ENHANCED: u64 = 1 << 51;
    for (flags, bit) in [(0, false), (privmem::seam::F_HUGE_PAGES, false), (3, true)] {
        let mut m = SoftModule::boot(1, flags).expect("boot");
        let (_, r) = call(&mut m, leaf::SYS_RD, regs(0, FEATURES0, 0));
        assert_eq!(r.r8 & ENHANCED != 0, bit, "flags {flags}");
        let (tdr, _) = m.build_td(41, 0).expect("TD");
        let page = m.alloc();
        let (st, _) = call(&mut m, leaf::MEM_PAGE_DEMOTE, regs(1 << 21 | 1, tdr, page));
        // With the switch: the walk fails (no table yet), an S-EPT status; without: no leaf.
        assert_eq!(st == 0xC000_0100_0000_0000, flags == 0, "flags {flags}: {st:#x}");
    }
}

const OPERAND_BUSY: u64 = 0x8000_0200_0000_0000;
const PREVIOUS_TLB_EPOCH_BUSY: u64 = 0x8000_0201_0000_0000;
const EXIT_OTHER_SMI: u64 = 6;
const EXIT_EPT_VIOLATION: u64 = 48;
const EXIT_TDCALL: u64 = 77;

/// A runnable TD with a 4K table at GPA 0, the shim's pages, and PENDING 4K pages at `gfns`.
fn runnable_td(m: &mut SoftModule, hkid: u64, gfns: &[u64]) -> (u64, u64, u64, u64) {
    let (tdr, vp) = m.build_td(hkid, 0).expect("TD");
    for level in [2, 1] {
        let t = m.alloc();
        assert_eq!(call(m, leaf::MEM_SEPT_ADD, regs(level, tdr, t)).0, SUCCESS);
    }
    assert_eq!(call(m, leaf::MR_FINALIZE, regs(tdr, 0, 0)).0, SUCCESS);
    for gfn in gfns {
        let p = m.alloc();
        assert_eq!(call(m, leaf::MEM_PAGE_AUG, regs(gfn << 12, tdr, p)).0, SUCCESS);
    }
    let (cmd, res) = m.shim_pages(vp).expect("shim pages");
    (tdr, vp, cmd, res)
}

/// TDH.VP.ENTER: the exit reason (the whole RAX: an exit is a status of class 0).
fn enter(m: &mut SoftModule, vp: u64) -> u64 {
    m.call(leaf::VP_ENTER, &mut regs(vp, 0, 0))
}

/// One command for the shim's next batch: (op, address, value).
fn command(m: &mut SoftModule, cmd: u64, c: (u64, u64, u64)) {
    m.write(cmd + 64, &[c.0, c.1, c.2, 0]);
    m.write(cmd, &[1]);
}

/// The module's TLB tracking counts each vCPU in the epoch it entered until it exits: while one
/// is inside (its guest running with the lock let go), a page blocked and tracked since is not
/// yet removable, and a second TRACK is refused; once it is out, both go through. KVM's kick
/// after TRACK is what gets it out.
#[test]
fn a_vcpu_inside_holds_back_track_and_remove() {
    let mut m = SoftModule::boot(1, 0).expect("boot");
    let (tdr, vp, cmd, res) = runnable_td(&mut m, 42, &[1]);
    // The guest accepts the page (sequentially: no run-on yet).
    command(&mut m, cmd, (6, 0x1000, 0));
    assert_eq!(enter(&mut m, vp), EXIT_TDCALL);
    assert_eq!(m.read(res + 8), 0, "ACCEPT's status");
    // Now the guest reads it and runs on after its batch; meanwhile KVM zaps the page.
    command(&mut m, cmd, (1, 0x1000, 0));
    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let log = seen.clone();
    m.while_inside(
        2000,
        Some(Box::new(move |us, other| {
            if us == 2000 && log.borrow().is_empty() {
                let mut st = |rax, r: Regs| {
                    let mut r = r;
                    log.borrow_mut().push(other.call(rax, &mut r) >> 32 << 32);
                };
                st(leaf::MEM_RANGE_BLOCK, regs(0x1000, tdr, 0));
                st(leaf::MEM_TRACK, regs(tdr, 0, 0));
                st(leaf::MEM_PAGE_REMOVE, regs(0x1000, tdr, 0));
                st(leaf::MEM_TRACK, regs(tdr, 0, 0));
            }
            false
        })),
    );
    assert_eq!(enter(&mut m, vp), EXIT_TDCALL, "the batch ends at the done port");
    assert_eq!(*seen.borrow(), vec![SUCCESS, SUCCESS, TLB_TRACKING_NOT_DONE, PREVIOUS_TLB_EPOCH_BUSY]);
    m.while_inside(0, None);
    // The vCPU is out: the REMOVE goes through.
    assert_eq!(call(&mut m, leaf::MEM_PAGE_REMOVE, regs(0x1000, tdr, 0)).0, SUCCESS);
    let c = m.contention();
    assert_eq!((c[3], c[4]), (1, 1), "epoch_busy, untracked_inside: {c:?}");
    assert!(c[0] >= 3, "host SEAMCALLs that met the vCPU inside: {c:?}");
}

/// The guest's ACCEPT holds its S-EPT entry while it runs: the host's BLOCK of that entry gets
/// OPERAND_BUSY and priority, the guest lets go and, with the host's kick pending, exits
/// without accepting; the BLOCK then goes through, and the ACCEPT retried at the next entry
/// meets a blocked entry (an EPT violation to the host).
#[test]
fn a_guest_accept_holds_its_entry_against_the_host() {
    let mut m = SoftModule::boot(1, 0).expect("boot");
    let (tdr, vp, cmd, res) = runnable_td(&mut m, 43, &[2]);
    command(&mut m, cmd, (6, 0x2000, 0));
    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let log = seen.clone();
    m.while_inside(
        2000,
        Some(Box::new(move |us, other| {
            let first = log.borrow().is_empty();
            if us == 250 && first {
                let mut r = regs(0x2000, tdr, 0);
                log.borrow_mut().push(other.call(leaf::MEM_RANGE_BLOCK, &mut r) >> 32 << 32);
            }
            // After the BUSY, KVM kicks every vCPU: an interrupt is pending from then on.
            !first
        })),
    );
    assert_eq!(enter(&mut m, vp), EXIT_OTHER_SMI, "the run ends for the kick");
    assert_eq!(*seen.borrow(), vec![OPERAND_BUSY]);
    assert_eq!(m.read(res), 0, "no result: the ACCEPT is retried at the next entry");
    m.while_inside(0, None);
    assert_eq!(call(&mut m, leaf::MEM_RANGE_BLOCK, regs(0x2000, tdr, 0)).0, SUCCESS);
    assert_eq!(enter(&mut m, vp), EXIT_EPT_VIOLATION, "the retried ACCEPT meets the blocked entry");
    let c = m.contention();
    assert_eq!((c[1], c[2], c[5]), (1, 1, 1), "entry_busy, host_priority, interrupted_runs: {c:?}");
}

/// The host's priority on an entry lasts until a host leaf on it goes through: a guest ACCEPT
/// waits for that (here no interrupt comes, and the host never comes back), and after its
/// waits run out goes ahead, as the real module's timeout would end the wait.
#[test]
fn a_guest_waits_for_the_host_s_priority_then_goes_ahead() {
    let mut m = SoftModule::boot(1, 0).expect("boot");
    let (tdr, vp, cmd, res) = runnable_td(&mut m, 44, &[0]);
    // GPA 0, 4K: the entry whose key would look like an empty slot without its tag.
    command(&mut m, cmd, (6, 0, 0));
    let busy = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let log = busy.clone();
    m.while_inside(
        2000,
        Some(Box::new(move |us, other| {
            if us == 250 && log.borrow().is_empty() {
                let mut r = regs(0, tdr, 0);
                log.borrow_mut().push(other.call(leaf::MEM_RANGE_BLOCK, &mut r) >> 32 << 32);
            }
            false
        })),
    );
    assert_eq!(enter(&mut m, vp), EXIT_TDCALL, "the batch ends");
    assert_eq!(*busy.borrow(), vec![OPERAND_BUSY], "the entry at GPA 0 was held");
    assert_eq!((m.read(res), m.read(res + 8)), (1, 0), "the ACCEPT went ahead and succeeded");
    let c = m.contention();
    assert_eq!((c[1], c[2]), (1, 17), "entry_busy, and the waits for priority (1 + 16): {c:?}");
}
