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
    /// Every present leaf of the case's memory (TDP MMU trace).
    Leaves(Vec<KLeaf>),
    /// The leaves the kernel installed during the step (shadow MMU trace: zaps are not traced).
    Installed(Vec<KLeaf>),
}

/// What the host's userspace backing of plain slots was, as the backend made it and checked it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UserBacking {
    /// Not known: the kernel's level for userspace-backed memory is the host's THP choice.
    #[default]
    Unknown,
    /// Every 2M-aligned 2M range of the slot's memory is one transparent huge page.
    Huge,
    /// Small pages only (MADV_NOHUGEPAGE, or shmem with huge pages off).
    Small,
}

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
    let mut checks = 0;
    let mut covered = vec![false; kernel.len()];
    let in_range = |s: u64, e: u64| kernel.partition_point(|k| k.gfn < s)..kernel.partition_point(|k| k.gfn < e);
    for (base, run) in model {
        let step = run.level.pages();
        for i in 0..run.count {
            let b = base + i * step;
            checks += 1;
            let r = in_range(b, b + step);
            let found: Vec<usize> = r.clone().collect();
            let exact = found.len() == 1 && kernel[found[0]].gfn == b && kernel[found[0]].level == run.level;
            let thp_small = run.thp && !found.is_empty() && found.iter().all(|&j| kernel[j].level == Level::L4K);
            // A huge kernel leaf that starts before `b` and covers it.
            if exact || thp_small {
                found.iter().for_each(|&j| covered[j] = true);
                continue;
            }
            let (m, ml) = describe(model, b);
            let (k, kl) = describe_kernel(kernel, b, b + step);
            return (checks, Some(Mismatch { gfn: b, model: m, kernel: k, labels: (ml, kl) }));
        }
    }
    if let Some(j) = covered.iter().position(|c| !c) {
        checks += 1;
        let g = kernel[j].gfn;
        let (m, ml) = describe(model, g);
        let (k, kl) = describe_kernel(kernel, g, g + kernel[j].level.pages());
        return (checks, Some(Mismatch { gfn: g, model: m, kernel: k, labels: (ml, kl) }));
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
