//! Variant comparison: run one sequence under two KVM variants and report the first step where
//! what the guest sees differs.

use super::finding::{Finding, FindingKind};
use super::run::run_model;
use crate::seq::text::{print_op, print_outcome};
use crate::seq::{Outcome, Sequence, Variant};

/// The outcome's kind without its payload, so the signature does not depend on values.
fn label(o: &Outcome) -> String {
    match o {
        Outcome::Value(_) => "value".into(),
        Outcome::Tdx(s, _) => format!("tdx-{}", s.name()),
        other => print_outcome(other).replace(' ', "-"),
    }
}

/// Run `seq` under `a` and `b`; a finding for the first guest op whose outcome differs.
pub fn compare_variants(seq: &Sequence, a: Variant, b: Variant) -> Option<Finding> {
    let with = |v: Variant| {
        let mut s = seq.clone();
        s.header.variant = Some(v);
        for st in &mut s.steps {
            st.expect = None;
        }
        run_model(&s)
    };
    let (ta, tb) = (with(a), with(b));
    if ta.outcomes.len() != tb.outcomes.len() {
        return None;
    }
    for (i, st) in seq.steps.iter().enumerate() {
        if !st.op.kind().is_guest() || ta.outcomes[i] == tb.outcomes[i] {
            continue;
        }
        return Some(Finding {
            context: super::finding::context_of(&seq.header),
            kind: FindingKind::VariantDiff,
            step: Some(i),
            op: Some(st.op.kind()),
            state: format!("{}:{}/{}:{}", a.name(), label(&ta.outcomes[i]), b.name(), label(&tb.outcomes[i])),
            detail: format!(
                "step {} `{}`: {} gives {}, {} gives {}",
                i + 1,
                print_op(&st.op),
                a.name(),
                print_outcome(&ta.outcomes[i]),
                b.name(),
                print_outcome(&tb.outcomes[i])
            ),
        });
    }
    None
}
