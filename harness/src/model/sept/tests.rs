use super::*;

/// The rows of `check_tdaccept_failure()` (TDX module 1.5, `tdg_mem_page_accept.c`): the
/// requested size (4K or 2M) against every S-EPT state, at the requested level and at the
/// level above it, with the walk's answer.
#[test]
fn accept_walk_follows_the_module_table() {
    use SeptState::*;
    #[derive(Debug, PartialEq)]
    enum Want {
        Ok,
        Violation,
        Already(Level),
        SizeMismatch(Level),
    }
    let at_level = |st: SeptState, l: Level| match st {
        Pending => Want::Ok,
        Mapped => Want::Already(l),
        NlMapped | NlBlocked => Want::SizeMismatch(l),
        Free | Blocked | PendingBlocked => Want::Violation,
    };
    let above = |st: SeptState, l: Level| match st {
        Mapped => Want::Already(l),
        // A mapped non-leaf is walked through: the outcome is the requested level's.
        NlMapped => Want::Ok,
        _ => Want::Violation,
    };
    let mut rows = 0;
    for req in [Level::L4K, Level::L2M] {
        let up = req.above().expect("4K and 2M have a level above");
        for (where_, l) in [("at", req), ("above", up)] {
            for st in SeptState::ALL {
                let mut td = Td::new(true);
                td.op_state = OpState::Runnable;
                // Mapped non-leaves from the top down to `l`, then the state under test;
                // below it (when the walk passes through) a PENDING leaf at `req`.
                let mut x = Level::L1G;
                while x > l {
                    td.set(0, x, Entry::new(NlMapped, 0, x));
                    x = x.below().unwrap();
                }
                if st != Free {
                    td.set(0, l, Entry::new(st, if st.is_leaf() { 0x1000 } else { 0 }, l));
                }
                if l != req && st == NlMapped {
                    td.set(0, req, Entry::new(Pending, 0x2000, req));
                }
                let want = if where_ == "at" { at_level(st, l) } else { above(st, l) };
                let got = match td.accept(0, req) {
                    AcceptWalk::Accepted { .. } => Want::Ok,
                    AcceptWalk::EptViolation => Want::Violation,
                    AcceptWalk::Status(TdxStatus::PageAlreadyAccepted, Some(gl)) => Want::Already(gl),
                    AcceptWalk::Status(TdxStatus::PageSizeMismatch, Some(gl)) => Want::SizeMismatch(gl),
                    AcceptWalk::Status(other, l) => panic!("{req:?} {where_} {st:?}: {other:?} {l:?}"),
                };
                assert_eq!(got, want, "ACCEPT {} with {} {where_} the requested level", req.name(), st.name());
                rows += 1;
            }
        }
    }
    assert_eq!(rows, 2 * 2 * SeptState::ALL.len());
    // 1G is not an ACCEPT size in 1.5 (verify_page_info_input(.., LVL_PT, LVL_PD)).
    assert_eq!(Td::new(true).accept(0, Level::L1G), AcceptWalk::Status(TdxStatus::OperandInvalid, None));
}

fn runnable_td_with_2m_pending() -> Td {
    let mut td = Td::new(true);
    assert_eq!(td.sept_add(0, Level::L1G), TdxStatus::Success);
    td.op_state = OpState::Runnable;
    assert_eq!(td.page_aug(0, Level::L2M, 512), TdxStatus::Success);
    td
}

#[test]
fn demote_needs_block_and_track_while_runnable() {
    let mut td = runnable_td_with_2m_pending();
    assert_eq!(td.demote(0, Level::L2M), TdxStatus::GpaRangeNotBlocked);
    assert_eq!(td.block(0, Level::L2M), TdxStatus::Success);
    assert_eq!(td.block(0, Level::L2M), TdxStatus::GpaRangeAlreadyBlocked);
    assert_eq!(td.demote(0, Level::L2M), TdxStatus::TlbTrackingNotDone);
    assert_eq!(td.track(), TdxStatus::Success);
    assert_eq!(td.demote(0, Level::L2M), TdxStatus::TlbTrackingNotDone, "tracked only after the kick");
    td.kick();
    assert_eq!(td.demote(0, Level::L2M), TdxStatus::Success);
    assert_eq!(td.state(0, Level::L2M), SeptState::NlMapped);
    assert_eq!(td.state(5, Level::L4K), SeptState::Pending, "children carry the unblocked state");
    assert_eq!(td.entry(5, Level::L4K).unwrap().pfn, 517);
}

#[test]
fn accept_table() {
    let mut td = runnable_td_with_2m_pending();
    assert_eq!(td.accept(3, Level::L4K), AcceptWalk::EptViolation, "4K inside a PENDING 2M leaf exits");
    assert_eq!(td.accept(0, Level::L1G), AcceptWalk::Status(TdxStatus::OperandInvalid, None));
    assert!(matches!(td.accept(0, Level::L2M), AcceptWalk::Accepted { base: 0, .. }));
    assert_eq!(td.accept(0, Level::L2M), AcceptWalk::Status(TdxStatus::PageAlreadyAccepted, Some(Level::L2M)));
    assert_eq!(td.accept(7, Level::L4K), AcceptWalk::Status(TdxStatus::PageAlreadyAccepted, Some(Level::L2M)));
    assert_eq!(td.accept(512, Level::L2M), AcceptWalk::EptViolation, "FREE entry");
    // A 4K table under 2M: a 2M accept is a size mismatch.
    assert_eq!(td.sept_add(512, Level::L2M), TdxStatus::Success);
    assert_eq!(td.accept(512, Level::L2M), AcceptWalk::Status(TdxStatus::PageSizeMismatch, Some(Level::L2M)));
    assert_eq!(td.page_aug(512, Level::L2M, 0), TdxStatus::EptEntryStateIncorrect, "2M AUG over a 4K table");
}

#[test]
fn promote_conditions() {
    let mut td = runnable_td_with_2m_pending();
    td.block(0, Level::L2M);
    td.track();
    td.kick();
    td.demote(0, Level::L2M);
    assert!(matches!(td.accept(0, Level::L4K), AcceptWalk::Accepted { .. }));
    td.block(0, Level::L2M);
    td.track();
    td.kick();
    assert_eq!(td.promote(0, Level::L2M), TdxStatus::EptInvalidPromoteConditions, "511 PENDING + 1 MAPPED");
    td.busy_next = true;
    assert_eq!(td.page_remove(0, Level::L4K), TdxStatus::OperandBusy);
    assert_eq!(td.page_remove(0, Level::L4K), TdxStatus::GpaRangeNotBlocked);
}

#[test]
fn page_add_only_during_build() {
    let mut td = Td::new(true);
    assert_eq!(td.page_add(0, 9), TdxStatus::EptWalkFailed);
    td.sept_add(0, Level::L1G);
    td.sept_add(0, Level::L2M);
    assert_eq!(td.page_add(0, 9), TdxStatus::Success);
    assert_eq!(td.page_add(0, 9), TdxStatus::EptEntryStateIncorrect);
    td.op_state = OpState::Runnable;
    assert_eq!(td.page_add(1, 10), TdxStatus::OpStateIncorrect);
    assert_eq!(td.sept_remove(0, Level::L2M), TdxStatus::EptEntryStateIncorrect, "table not empty");
}
