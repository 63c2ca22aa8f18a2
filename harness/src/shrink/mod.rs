//! Delta debugging over a failing sequence, keeping the same finding signature: remove chunks
//! of steps (halving the chunk size down to one), then header slots and files nothing needs,
//! then simplify what remains (fewer vCPUs, no options).

use crate::seq::gen::fixup;
use crate::seq::legal;
use crate::seq::Sequence;

/// Shrink `seq` while `still_fails` holds. `still_fails(seq)` must be true on entry.
pub fn shrink(seq: &Sequence, mut still_fails: impl FnMut(&Sequence) -> bool) -> Sequence {
    let mut best = seq.clone();
    let mut budget = 4000u32;
    let mut try_it = |cand: Sequence, best: &mut Sequence, budget: &mut u32| -> bool {
        if *budget == 0 || legal::check_sequence(&cand).is_err() {
            return false;
        }
        *budget -= 1;
        if still_fails(&cand) {
            *best = cand;
            true
        } else {
            false
        }
    };
    loop {
        let before = (best.steps.len(), best.header.slots.len(), best.header.gmems.len());
        // Steps: chunks from half the length down to single steps.
        let mut chunk = best.steps.len().div_ceil(2).max(1);
        loop {
            let mut i = 0;
            while i < best.steps.len() {
                let mut cand = best.clone();
                let end = (i + chunk).min(cand.steps.len());
                cand.steps.drain(i..end);
                legal::normalize_groups(&mut cand);
                if !try_it(cand, &mut best, &mut budget) {
                    i += chunk;
                }
            }
            if chunk == 1 {
                break;
            }
            chunk /= 2;
        }
        // Ops that need not run together: each group's ops one at a time, then each op apart.
        for i in 0..best.steps.len() {
            if i < best.steps.len() && best.steps[i].together {
                let mut cand = best.clone();
                cand.steps[i].together = false;
                legal::normalize_groups(&mut cand);
                try_it(cand, &mut best, &mut budget);
            }
        }
        // Expectations that are not needed.
        for i in 0..best.steps.len() {
            if best.steps[i].expect.is_some() {
                let mut cand = best.clone();
                cand.steps[i].expect = None;
                try_it(cand, &mut best, &mut budget);
            }
        }
        // Header slots, then files.
        let mut i = 0;
        while i < best.header.slots.len() {
            let mut cand = best.clone();
            cand.header.slots.remove(i);
            if !try_it(cand, &mut best, &mut budget) {
                i += 1;
            }
        }
        let mut i = 0;
        while i < best.header.gmems.len() {
            let mut cand = best.clone();
            cand.header.gmems.remove(i);
            fixup(&mut cand);
            if !try_it(cand, &mut best, &mut budget) {
                i += 1;
            }
        }
        // Options and vCPUs.
        let mut i = 0;
        while i < best.header.options.len() {
            let mut cand = best.clone();
            cand.header.options.remove(i);
            if !try_it(cand, &mut best, &mut budget) {
                i += 1;
            }
        }
        // Simpler numbers: small values, page- and 2M-aligned sizes.
        for i in 0..best.steps.len() {
            for simpler in simpler_ops(&best.steps[i].op) {
                let mut cand = best.clone();
                cand.steps[i].op = simpler;
                if try_it(cand, &mut best, &mut budget) {
                    break;
                }
            }
        }
        if best.header.vcpus > 1 {
            let mut cand = best.clone();
            cand.header.vcpus = 1;
            fixup(&mut cand);
            try_it(cand, &mut best, &mut budget);
        }
        if (best.steps.len(), best.header.slots.len(), best.header.gmems.len()) == before || budget == 0 {
            return best;
        }
    }
}

/// Candidate simplifications of one op's numbers, most readable first.
fn simpler_ops(op: &crate::seq::Op) -> Vec<crate::seq::Op> {
    use crate::seq::{Op, PAGE, SZ_2M};
    let mut v = Vec::new();
    let sizes = |size: u64| -> Vec<u64> {
        [PAGE, SZ_2M, size.next_multiple_of(SZ_2M), size.next_multiple_of(PAGE)]
            .into_iter()
            .filter(|&s| s < size || (s != size && s % SZ_2M == 0))
            .collect()
    };
    match op.clone() {
        Op::Write { vcpu, addr, value, shared } if value > 1 => v.push(Op::Write { vcpu, addr, value: 1, shared }),
        Op::HostWrite { addr, value } if value > 1 => v.push(Op::HostWrite { addr, value: 1 }),
        Op::Private { addr, size } => v.extend(sizes(size).into_iter().map(|size| Op::Private { addr, size })),
        Op::Shared { addr, size } => v.extend(sizes(size).into_iter().map(|size| Op::Shared { addr, size })),
        Op::Punch { addr, size, keep_size } => {
            v.extend(sizes(size).into_iter().map(|size| Op::Punch { addr, size, keep_size }))
        }
        Op::MtrrZap { addr, size } => v.extend(sizes(size).into_iter().map(|size| Op::MtrrZap { addr, size })),
        Op::Prefault { vcpu, addr, size } => {
            v.extend(sizes(size).into_iter().map(|size| Op::Prefault { vcpu, addr, size }))
        }
        Op::MapGpa { vcpu, addr, size, private } => {
            v.extend(sizes(size).into_iter().map(|size| Op::MapGpa { vcpu, addr, size, private }))
        }
        _ => {}
    }
    v
}
