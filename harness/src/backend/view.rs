//! The kernel's view: what a real backend says the kernel mapped after a step, in the shape of
//! the model's stage-2 leaves, and the rule that holds one to the other.

use crate::model::stage2::Leaf;
use crate::seq::Level;
use serde::Serialize;

/// Which MMU the kernel runs, and so how complete its trace view is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mmu {
    Tdp,
    Shadow,
}

/// One leaf the kernel has: its first GFN, its level, and the root (address space id on the
/// TDP MMU) it lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct KLeaf {
    pub gfn: u64,
    pub level: Level,
    pub root: u8,
}

/// What the kernel said after one step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepView {
    /// Every present leaf of the case's memory (TDP MMU trace); shared with the steps before
    /// it where no leaf changed.
    Leaves(std::sync::Arc<[KLeaf]>),
    /// The leaves the kernel installed during the step (shadow MMU trace: zaps are not traced).
    Installed(Vec<KLeaf>),
}

impl StepView {
    /// The leaves, whichever view they are.
    pub fn leaves(&self) -> &[KLeaf] {
        match self {
            StepView::Leaves(l) => l,
            StepView::Installed(l) => l,
        }
    }
}

/// The host's backing of plain slots is a fact the model takes in (`model/lpage.rs`).
pub use crate::model::lpage::UserBacking;

/// The first difference between the kernel's leaves and the model's, if any: (GFN, what the
/// model has there, what the kernel has there), and how many GFN comparisons were made.
pub struct Mismatch {
    pub gfn: u64,
    pub model: String,
    pub kernel: String,
    /// Labels (not values), for the signature.
    pub labels: (&'static str, &'static str),
}

fn level_label(l: Level) -> &'static str {
    match l {
        Level::L4K => "4k",
        Level::L2M => "2m",
        Level::L1G => "1g",
    }
}

fn describe(model: &[(u64, Leaf)], at: u64) -> (String, &'static str) {
    match model.iter().find(|(b, l)| at >= *b && at < b + l.pages()) {
        Some((b, l)) => {
            let base = b + (at - b) / l.level.pages() * l.level.pages();
            let thp = if l.thp { " (THP decides)" } else { "" };
            (format!("a {} leaf at gfn {base:#x}{thp}", l.level.name()), level_label(l.level))
        }
        None => ("no leaf".into(), "none"),
    }
}

fn describe_kernel(k: &[KLeaf], s: u64, e: u64) -> (String, &'static str) {
    let inside: Vec<&KLeaf> = k.iter().filter(|l| l.gfn < e && l.gfn + l.level.pages() > s).collect();
    match inside.as_slice() {
        [] => ("no leaf".into(), "none"),
        [one] => (format!("a {} leaf at gfn {:#x}", one.level.name(), one.gfn), level_label(one.level)),
        many => {
            let l = many[0].level;
            (format!("{} leaves from gfn {:#x} (first {})", many.len(), many[0].gfn, l.name()), level_label(l))
        }
    }
}

/// Hold the kernel's full leaf set (TDP) to the model's leaves. A model leaf whose level the
/// host's THP decides may be a 2M leaf or any non-empty set of 4K leaves inside it; every other
/// leaf must be the same leaf. Returns the comparisons made and the first mismatch.
pub fn compare_leaves(model: &[(u64, Leaf)], kernel: &[KLeaf]) -> (u64, Option<Mismatch>) {
    // Both sides are sorted and their leaves do not overlap, so one walk compares them: the
    // kernel leaves inside a model leaf's range must be exactly that leaf (or, where THP
    // decides, 4K leaves only), and every kernel leaf must fall in some model leaf's range.
    let mut checks = 0;
    let mut next = 0; // first kernel leaf not yet matched
    let mismatch = |checks, at: u64, e: u64| {
        let (m, ml) = describe(model, at);
        let (k, kl) = describe_kernel(kernel, at, e);
        (checks, Some(Mismatch { gfn: at, model: m, kernel: k, labels: (ml, kl) }))
    };
    for (base, run) in model {
        let step = run.level.pages();
        for i in 0..run.count {
            let b = base + i * step;
            checks += 1;
            if next < kernel.len() && kernel[next].gfn < b {
                // A kernel leaf before this model leaf that no model leaf covers.
                let g = kernel[next].gfn;
                return mismatch(checks, g, g + kernel[next].level.pages());
            }
            let end = kernel[next..].partition_point(|k| k.gfn < b + step) + next;
            let inside = &kernel[next..end];
            let exact = matches!(inside, [k] if k.gfn == b && k.level == run.level);
            let thp_small = run.thp && !inside.is_empty() && inside.iter().all(|k| k.level == Level::L4K);
            if !(exact || thp_small) {
                return mismatch(checks, b, b + step);
            }
            next = end;
        }
    }
    if let Some(k) = kernel.get(next) {
        return mismatch(checks + 1, k.gfn, k.gfn + k.level.pages());
    }
    (checks + kernel.len() as u64, None)
}

/// Hold the leaves a shadow MMU installed during a step to the model's leaves after it. A leaf
/// the model does not have is a prefetch (the shadow MMU maps neighbours of a faulting GFN) and
/// is not compared; one the model has must have the model's level (or 4K where THP decides).
pub fn compare_installed(model: &[(u64, Leaf)], kernel: &[KLeaf]) -> (u64, Option<Mismatch>) {
    let mut checks = 0;
    for k in kernel {
        let ke = k.gfn + k.level.pages();
        let Some((b, l)) = model.iter().find(|(b, l)| k.gfn < b + l.pages() && *b < ke) else {
            continue;
        };
        checks += 1;
        let ok = k.level == l.level || (l.thp && k.level == Level::L4K);
        if !ok {
            let at = k.gfn.max(*b);
            let base = b + (at - b) / l.level.pages() * l.level.pages();
            let (m, ml) = describe(model, base);
            let kl = level_label(k.level);
            let kd = format!("installed a {} leaf at gfn {:#x}", k.level.name(), k.gfn);
            return (checks, Some(Mismatch { gfn: k.gfn, model: m, kernel: kd, labels: (ml, kl) }));
        }
    }
    (checks, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(gfn: u64, level: Level) -> KLeaf {
        KLeaf { gfn, level, root: 0 }
    }

    fn m(base: u64, level: Level, count: u64, thp: bool) -> (u64, Leaf) {
        (base, Leaf { level, pfn: 0, private: false, thp, count })
    }

    #[test]
    fn the_same_leaves_agree() {
        let model = [m(0x100, Level::L4K, 2, false), m(0x200, Level::L2M, 1, false)];
        let kernel = [k(0x100, Level::L4K), k(0x101, Level::L4K), k(0x200, Level::L2M)];
        let (checks, mm) = compare_leaves(&model, &kernel);
        assert!(mm.is_none());
        assert_eq!(checks, 6);
    }

    #[test]
    fn a_lost_promotion_is_a_mismatch() {
        // The model maps 2M (no THP choice); the kernel made 4K leaves.
        let model = [m(0x200, Level::L2M, 1, false)];
        let kernel = [k(0x200, Level::L4K), k(0x201, Level::L4K)];
        let mm = compare_leaves(&model, &kernel).1.expect("mismatch");
        assert_eq!((mm.gfn, mm.labels), (0x200, ("2m", "4k")));
    }

    #[test]
    fn where_thp_decides_4k_leaves_stand_for_the_2m() {
        let model = [m(0x200, Level::L2M, 1, true)];
        assert!(compare_leaves(&model, &[k(0x205, Level::L4K), k(0x2ff, Level::L4K)]).1.is_none());
        assert!(compare_leaves(&model, &[k(0x200, Level::L2M)]).1.is_none());
        // But not nothing at all.
        assert_eq!(compare_leaves(&model, &[]).1.expect("mismatch").labels, ("2m", "none"));
    }

    #[test]
    fn a_leaf_the_model_does_not_have_is_a_mismatch() {
        let model = [m(0x100, Level::L4K, 1, false)];
        let mm = compare_leaves(&model, &[k(0x100, Level::L4K), k(0x400, Level::L4K)]).1.expect("mismatch");
        assert_eq!((mm.gfn, mm.labels), (0x400, ("none", "4k")));
        let mm = compare_leaves(&model, &[k(0x50, Level::L4K), k(0x100, Level::L4K)]).1.expect("mismatch");
        assert_eq!(mm.gfn, 0x50);
    }

    #[test]
    fn installed_leaves_are_held_to_the_model_where_it_maps() {
        let model = [m(0x200, Level::L2M, 1, false)];
        // A prefetched neighbour the model does not map is not compared.
        assert_eq!(compare_installed(&model, &[k(0x600, Level::L4K)]).0, 0);
        let (checks, mm) = compare_installed(&model, &[k(0x201, Level::L4K)]);
        assert_eq!((checks, mm.expect("mismatch").labels), (1, ("2m", "4k")));
    }
}
