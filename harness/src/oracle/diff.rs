//! The differential oracle: every outcome a real backend observed must be one the model allows.

use super::finding::{Finding, FindingKind};
use super::run::Trace;
use crate::backend::{Observed, RealTrace, RunError};
use crate::seq::text::{print_op, print_outcome};
use crate::seq::Sequence;

/// Whether real page counters fall inside what the model allows (THP may turn each of its
/// THP-decided 2M leaves into up to 512 4K leaves).
pub fn pages_allowed(model: ([u64; 3], u64), real: [u64; 3]) -> bool {
    let ([c4, c2, c1], thp) = model;
    let taken = c2 - real[1].min(c2);
    real[1] <= c2 && taken <= thp && real[0] >= c4 && real[0] <= c4 + 512 * taken && real[2] == c1
}

fn fmt_pages(p: [u64; 3]) -> String {
    format!("pages_4k={} pages_2m={} pages_1g={}", p[0], p[1], p[2])
}

/// Divergence findings of a real run against the model's trace of the same sequence: the
/// first step where they part (later steps often follow from it), then the rest.
pub fn diff(seq: &Sequence, model: &Trace, real: &RealTrace) -> Vec<Finding> {
    let mut out = Vec::new();
    for (i, st) in seq.steps.iter().enumerate() {
        let (ok, m, r) = match (&real.observed[i], model.pages[i]) {
            (Observed::NotChecked, _) => continue,
            (Observed::Pages(p), Some(mp)) => {
                let ([c4, c2, c1], thp) = mp;
                let allowed = if thp == 0 {
                    fmt_pages([c4, c2, c1])
                } else {
                    format!("{} (THP: up to {thp} of the 2M as 4K)", fmt_pages([c4, c2, c1]))
                };
                (pages_allowed(mp, *p), (allowed, "pages"), (fmt_pages(*p), "pages"))
            }
            (Observed::Pages(_), None) => continue,
            (Observed::Outcome(o), _) => {
                let mo = &model.outcomes[i];
                (mo == o, (print_outcome(mo), mo.label()), (print_outcome(o), o.label()))
            }
        };
        if ok {
            continue;
        }
        let ((m, ml), (r, rl)) = (m, r);
        out.push(Finding {
            kind: FindingKind::Divergence,
            step: Some(i),
            op: Some(st.op.kind()),
            // Labels, not values, so that the signature deduplicates.
            state: format!("model:{ml}/real:{rl}"),
            detail: format!("step {} `{}`: the model allows {m}; real KVM gave {r}", i + 1, print_op(&st.op)),
        });
    }
    out
}

/// A real run's error as a finding (None when the host simply cannot run the sequence).
pub fn error_finding(seq: &Sequence, e: &RunError) -> Option<Finding> {
    let (kind, step, state) = match e {
        RunError::Unsupported(_) => return None,
        RunError::Timeout { step } => (FindingKind::Timeout, Some(*step), "guest-timeout".to_string()),
        RunError::Guest { step, .. } => (FindingKind::Divergence, Some(*step), "guest-failed".to_string()),
        RunError::Setup(_) => (FindingKind::Setup, None, "backend-setup".to_string()),
    };
    Some(Finding {
        kind,
        step,
        op: step.and_then(|s| seq.steps.get(s)).map(|s| s.op.kind()),
        state,
        detail: e.to_string(),
    })
}

/// The comment line with which a scenario records a real kernel difference it is known to show.
pub const KNOWN_MARKER: &str = "# known-divergence: kvm ";

/// The divergence signatures a scenario's source records as known.
pub fn known_divergences(src: &str) -> Vec<String> {
    src.lines().filter_map(|l| l.strip_prefix(KNOWN_MARKER)).map(|s| s.trim().to_string()).collect()
}

/// Whether two divergence signatures differ at most in which guest access showed them (a read,
/// write or touch of the same GFN takes the same path in KVM).
pub fn same_access_divergence(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        let mut p: Vec<&str> = s.splitn(3, ':').collect();
        if p.len() == 3 && matches!(p[1], "read" | "write" | "touch") {
            p[1] = "access";
        }
        p.join(":")
    };
    norm(a) == norm(b)
}
