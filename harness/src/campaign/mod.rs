//! In-process fuzzing campaigns on the model: generate a case from seeded random bytes, run it,
//! deduplicate findings by signature, shrink new ones. Engine-independent: `privmem fuzz`, the
//! liveness tests and the cargo-fuzz targets all call into here.

use crate::backend::Backend;
use crate::oracle::compare::compare_variants;
use crate::oracle::diff::{check_real, same_access_divergence};
use crate::oracle::finding::signature_covers;
use crate::oracle::{run_model, Finding, FindingKind};
use crate::seq::gen::{generate, GenConfig};
use crate::seq::{Sequence, Variant};
use crate::shrink::shrink;
use arbitrary::Unstructured;
use std::collections::{HashMap, HashSet};

mod mutate;
pub use mutate::{mutate_sequence, Rng};

#[derive(Clone, Debug, Default)]
pub struct CampaignConfig {
    pub gen: GenConfig,
    /// Compare against this variant (TDX).
    pub against: Option<Variant>,
    pub seed: u64,
    /// Signatures (or `kind:op:` prefixes) not to report, as `-ignore` does for the fuzz targets.
    pub ignore: Vec<String>,
}

/// A new (first-seen) finding with its shrunk reproducer.
#[derive(Clone, Debug)]
pub struct NewFinding {
    pub finding: Finding,
    pub seq: Sequence,
    pub case: u64,
    /// Of three replays of the shrunk sequence, how many showed the same signature: 3 is
    /// reproducible, fewer is flaky.
    pub confirmed: u32,
    /// A kernel difference the corpus already records, or a documented hazard.
    pub known: bool,
    /// The documented hazard it is (`H1 (corpus/hazards/H1-….seq)`), where it is one.
    pub hazard: Option<String>,
}

impl NewFinding {
    pub fn label(&self) -> &'static str {
        if self.known {
            return "known";
        }
        match self.confirmed {
            3 => "reproducible",
            0 => "not-reproduced",
            _ => "flaky",
        }
    }
}

pub struct Campaign {
    pub cfg: CampaignConfig,
    rng: Rng,
    buf: Vec<u8>,
    pub cases: u64,
    pub ops: u64,
    /// Signature -> how many times it was hit.
    pub seen: HashMap<String, u64>,
    /// A real backend each case also runs on, held to the model by the differential oracle.
    pub real: Option<Box<dyn Backend>>,
    /// Cases the real backend could not run (missing capability).
    pub skipped: u64,
    /// GFN comparisons of the kernel's mapping view with the model, and steps whose view was lost.
    pub mapping_checks: u64,
    pub views_lost: u64,
    /// Cases in which the kernel mapped something, and those of them with no GFN comparison.
    pub mapped_cases: u64,
    pub mapped_unchecked: u64,
    /// Known kernel differences (signatures from `# known-divergence` lines): reported as known.
    pub known: Vec<String>,
    /// Coverage-guided: keep the cases that reach kernel PCs no earlier case reached, and draw
    /// half the new cases by mutating them (where the real backend records coverage).
    pub feedback: bool,
    /// Every kernel PC the campaign's cases reached.
    pub covered: HashSet<u64>,
    /// The kept cases.
    pub corpus: Vec<Sequence>,
    /// The last real run's PCs.
    last_pcs: Vec<u64>,
    /// Print each case to stderr before it runs.
    pub print_cases: bool,
}

impl Campaign {
    pub fn new(mut cfg: CampaignConfig) -> Campaign {
        if cfg.gen.max_ops == 0 {
            cfg.gen.max_ops = 24;
        }
        let rng = Rng::new(cfg.seed);
        Campaign {
            cfg,
            rng,
            buf: vec![0; 1024],
            cases: 0,
            ops: 0,
            seen: HashMap::new(),
            real: None,
            skipped: 0,
            mapping_checks: 0,
            views_lost: 0,
            mapped_cases: 0,
            mapped_unchecked: 0,
            known: Vec::new(),
            feedback: true,
            covered: HashSet::new(),
            corpus: Vec::new(),
            last_pcs: Vec::new(),
            print_cases: false,
        }
    }

    /// Generate the next case: half the time, once the corpus has cases, a mutation of one.
    pub fn next_case(&mut self) -> Sequence {
        if self.feedback && !self.corpus.is_empty() && self.rng.next_u64().is_multiple_of(2) {
            let i = (self.rng.next_u64() % self.corpus.len() as u64) as usize;
            let mut s = self.corpus[i].clone();
            for _ in 0..1 + self.rng.next_u64() % 3 {
                mutate_sequence(&mut s, &mut self.rng);
            }
            crate::seq::gen::fixup(&mut s);
            if self.cfg.gen.finalized {
                crate::seq::gen::finalize_first(&mut s);
            }
            return match &self.real {
                Some(b) => b.adapt(&s),
                None => s,
            };
        }
        loop {
            let len = 64 + (self.rng.next_u64() % 900) as usize;
            self.rng.fill(&mut self.buf[..len]);
            let mut u = Unstructured::new(&self.buf[..len]);
            if let Ok(s) = generate(&mut u, &self.cfg.gen) {
                return match &self.real {
                    Some(b) => b.adapt(&s),
                    None => s,
                };
            }
        }
    }

    /// The findings of one sequence under this campaign's oracles.
    pub fn findings_of(&mut self, s: &Sequence) -> Vec<Finding> {
        let mut f = match self.real.as_mut() {
            Some(real) => {
                let c = check_real(real.as_mut(), s);
                self.skipped += c.unsupported.is_some() as u64;
                self.mapping_checks += c.diff.mapping_checks;
                self.views_lost += c.diff.views_lost;
                self.mapped_cases += c.diff.kernel_mapped as u64;
                self.mapped_unchecked += (c.diff.kernel_mapped && c.diff.mapping_checks == 0) as u64;
                self.last_pcs = c.pcs;
                let mut f = c.model.findings;
                f.extend(c.diff.findings);
                f
            }
            None => run_model(s).findings,
        };
        if let (Some(b), Some(a)) = (self.cfg.against, s.header.variant) {
            f.extend(compare_variants(s, a, b));
        }
        f.retain(|x| !self.cfg.ignore.iter().any(|i| signature_covers(i, &x.signature())));
        f
    }

    /// Whether a finding is one the corpus records as a known kernel difference.
    pub fn is_known(&self, f: &Finding) -> bool {
        self.known.iter().any(|k| same_access_divergence(k, &f.signature()))
    }

    /// Run one case; returns the findings never seen before, shrunk.
    pub fn step(&mut self) -> Vec<NewFinding> {
        let s = self.next_case();
        self.cases += 1;
        self.ops += s.steps.len() as u64;
        let mut out = Vec::new();
        if self.print_cases {
            eprintln!("case {}:\n{}", self.cases, crate::seq::text::print(&s));
        }
        let found = self.findings_of(&s);
        // Coverage of the case itself (shrinking below runs other cases).
        let before = self.covered.len();
        self.covered.extend(std::mem::take(&mut self.last_pcs));
        if self.feedback && self.covered.len() > before {
            self.corpus.push(s.clone());
        }
        for f in found {
            let sig = f.signature();
            let n = self.seen.entry(sig.clone()).or_insert(0);
            *n += 1;
            if *n > 1 {
                continue;
            }
            if self.is_known(&f) {
                // A kernel difference corpus/known records: reported as known and not written,
                // so not shrunk either (on a real kernel that costs hundreds of runs a time).
                let seq = s.clone();
                out.push(NewFinding { finding: f, seq, case: self.cases, confirmed: 0, known: true, hazard: None });
                continue;
            }
            let shrunk = shrink(&s, |c| self.findings_of(c).iter().any(|g| g.signature() == sig));
            let finding = self.findings_of(&shrunk).into_iter().find(|g| g.signature() == sig).unwrap_or(f);
            let confirmed =
                (0..3).filter(|_| self.findings_of(&shrunk).iter().any(|g| g.signature() == sig)).count() as u32;
            let hazard = crate::known::hazard_of(&finding, &shrunk).map(|h| h.label());
            let known = self.is_known(&finding) || hazard.is_some();
            // A real kernel's finding carries the outcomes a correct kernel gives, so that its
            // reproducer fails where the kernel diverged (a model finding replays as it is).
            let seq = match self.real.as_ref() {
                Some(real) if matches!(finding.kind, FindingKind::Divergence | FindingKind::KernelSplat) => {
                    crate::oracle::with_model_expectations(&shrunk, real.kernel())
                }
                _ => shrunk,
            };
            out.push(NewFinding { finding, seq, case: self.cases, confirmed, known, hazard });
        }
        out
    }
}
