//! The upstream exporter's parts that are not the test's body: moving a scenario clear of the
//! selftest library's own memory, and picking the helpers the body calls.

use crate::seq::*;

const GUEST_AND_HELPERS: &str = include_str!("kselftest_upstream_helpers.c");

/// Move a scenario that uses memory below 1 GiB up by 4 GiB, where nothing else it uses would
/// move past 2^40.
pub fn shift_low(seq: &mut Sequence) {
    const SHIFT: u64 = 4 << 30;
    let addrs: Vec<u64> = seq
        .header
        .slots
        .iter()
        .filter(|s| s.size > 0)
        .map(|s| s.gpa)
        .chain(seq.steps.iter().filter_map(|st| st.op.addr()))
        .collect();
    if !addrs.iter().any(|&a| a < 1 << 30) || addrs.iter().any(|&a| a >= 1 << 40) {
        return;
    }
    for s in &mut seq.header.slots {
        s.gpa += SHIFT;
    }
    for st in &mut seq.steps {
        if let Some(a) = st.op.addr_mut() {
            *a += SHIFT;
        }
    }
}

/// The helpers the test's body uses: a helper follows a `//@NAME` marker line and is kept when
/// the body calls NAME (`//@` alone: always), so that -Wunused-function has nothing to say.
pub fn helpers(body: &str) -> String {
    let mut out = String::new();
    let mut keep = true;
    for l in GUEST_AND_HELPERS.lines() {
        if let Some(name) = l.strip_prefix("//@") {
            keep = name.is_empty() || body.contains(name);
            continue;
        }
        if keep {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}
