//! What privmem knows before it runs anything: the documented hazards of the series
//! (`corpus/hazards/`, H1-H14) and the kernel differences the corpus records
//! (`corpus/known/`), shipped in the binary by `build.rs`, plus any `--known DIR` a campaign
//! adds. A campaign reports a finding that matches one as known ("known: H1 (...)"), never as
//! a new bug.
//!
//! A hazard's signature is coarse (`livelock:accept:no-progress@tdx/huge-v1` would cover any
//! livelocking ACCEPT there), so a finding matches a hazard by more than it: the same kind, op
//! and state, in the same VM type and variant (options may differ: H1 under `promote` is still
//! H1), and the same shape of reproducer, the op sequence of the shrunk case up to the step
//! that shows it, with reads, writes and touches taken as one access. A hazard documented under
//! a hazard knob (H6's `ignore-accept-level`, H8's `zap-private-on-mtrr`: the knob is the bug)
//! is matched by a finding of its kind under that knob, in any variant, whose reproducer goes
//! through the op the knob changes (`Knob::hazard_trigger`). A hazard a variant's posting
//! documents whichever way a campaign reaches it (huge-v5's over-zap, huge-v2's KVM_BUG_ON on an
//! interrupted DEMOTE) names the ops it shows through in its file, `# shows through: shared
//! punch`: a finding of its kind and state in that VM type and variant whose reproducer goes
//! through one of them is that hazard.

use crate::oracle::run_model;
use crate::oracle::signature::Signature;
use crate::seq::{Op, Sequence};
use std::path::Path;
use std::sync::OnceLock;

/// `(path, text)` of every shipped scenario.
pub const FILES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/known_files.rs"));

/// A documented hazard: what it shows, and the reproducer's shape.
#[derive(Clone, Debug)]
pub struct Hazard {
    /// `H1`, from the file name.
    pub id: String,
    pub file: String,
    /// The finding's signature without the options part of its context.
    pub signature: Signature,
    pub shape: Vec<String>,
    /// The hazard knobs the scenario turns on.
    pub knobs: Vec<crate::seq::Knob>,
    /// `# shows through: OP...`: the ops (as [`shape`] names them) through which the variant's
    /// documented hazard shows, whatever the rest of the reproducer.
    pub through: Vec<String>,
    /// The scenario, expectations set aside: a `through` hazard must still show when it runs
    /// under a finding's options.
    scenario: Sequence,
}

impl Hazard {
    /// Whether the documented scenario, run under `options` instead of its own, still shows
    /// this hazard: an option that takes the hazard away (in-place conversion for H2 and H13,
    /// no huge pages at all) makes a finding under it news, not this hazard.
    fn shows_under(&self, options: &[crate::seq::Knob]) -> bool {
        let mut s = self.scenario.clone();
        s.header.options = options.iter().copied().filter(|k| k.vm() == s.header.vm).collect();
        run_model(&s).findings.iter().any(|f| {
            f.signature()
                .parse::<Signature>()
                .is_ok_and(|g| g.kind == self.signature.kind && g.state == self.signature.state)
        })
    }
}

impl Hazard {
    /// How a campaign names it: `H1 (corpus/hazards/H1-touch-then-accept-4k.seq)`.
    pub fn label(&self) -> String {
        format!("{} ({})", self.id, self.file)
    }
}

/// A signature's context without its options (`tdx/huge-v1+promote` -> `tdx/huge-v1`).
fn without_options(s: &Signature) -> Signature {
    let mut s = s.clone();
    s.context = s.context.map(|c| c.split('+').next().unwrap_or_default().to_string());
    s
}

/// One op's place in a reproducer's shape: its kind, with the guest's accesses taken as one,
/// and the level of an ACCEPT (a 4K and a 2M ACCEPT take different paths).
fn shape_of(op: &Op) -> Option<String> {
    let k = op.kind();
    if k.is_check() {
        return None;
    }
    Some(match op {
        Op::Read { .. } | Op::Write { .. } | Op::Touch { .. } => "access".into(),
        Op::Accept { level, .. } => format!("accept-{}", level.name()),
        // Each injected fault takes its own path.
        Op::Inject(f) => format!("inject-{}", f.name()),
        _ => k.name().to_string(),
    })
}

/// The shape of `seq` up to and including step `upto`.
pub fn shape(seq: &Sequence, upto: usize) -> Vec<String> {
    seq.steps.iter().take(upto + 1).filter_map(|s| shape_of(&s.op)).collect()
}

/// Every hazard the shipped scenarios document: each `H*.seq` but the `-fixed` ones (which
/// show the fix) whose model run, expectations set aside, shows a hazard finding.
pub fn hazards() -> &'static [Hazard] {
    static H: OnceLock<Vec<Hazard>> = OnceLock::new();
    H.get_or_init(|| {
        // The hazards as the series documents them: a model bug planted for this process
        // (`--plant`) must not make a fixed scenario look like a documented hazard.
        let planted = crate::model::seeded::planted();
        crate::model::seeded::plant(None);
        let mut v = Vec::new();
        let documented = |p: &&(&str, &str)| p.0.starts_with("corpus/hazards/") && !p.0.ends_with("-fixed.seq");
        for (path, text) in FILES.iter().filter(documented) {
            let Ok(mut seq) = crate::seq::text::parse(path, text) else { continue };
            seq.steps.iter_mut().for_each(|s| s.expect = None);
            let id = path.rsplit('/').next().unwrap_or(path).split('-').next().unwrap_or_default().to_string();
            let through: Vec<String> = text
                .lines()
                .filter_map(|l| l.strip_prefix("# shows through:"))
                .flat_map(|l| l.split_whitespace().map(str::to_string))
                .collect();
            for f in run_model(&seq).findings.into_iter().filter(|f| f.is_hazard()) {
                let (Ok(sig), Some(step)) = (f.signature().parse::<Signature>(), f.step) else { continue };
                v.push(Hazard {
                    id: id.clone(),
                    file: path.to_string(),
                    signature: without_options(&sig),
                    shape: shape(&seq, step),
                    knobs: seq.header.options.iter().copied().filter(|k| k.is_hazard()).collect(),
                    through: through.clone(),
                    scenario: seq.clone(),
                });
            }
        }
        crate::model::seeded::plant(planted);
        v
    })
}

/// The documented hazard a finding (with its shrunk reproducer) is, if any.
pub fn hazard_of(f: &crate::oracle::Finding, seq: &Sequence) -> Option<&'static Hazard> {
    if !f.is_hazard() {
        return None;
    }
    let sig = without_options(&f.signature().parse::<Signature>().ok()?);
    let shape = shape(seq, f.step?);
    let vm = |s: &Signature| s.context.as_deref().map(|c| c.split('/').next().unwrap_or_default().to_string());
    hazards().iter().find(|h| match h.knobs.is_empty() {
        true if !h.through.is_empty() => {
            h.signature.kind == sig.kind
                && h.signature.state == sig.state
                && h.signature.context == sig.context
                && shape.iter().any(|s| h.through.contains(s))
                && h.shows_under(&seq.header.options)
        }
        true => h.signature == sig && h.shape == shape,
        false => {
            h.signature.kind == sig.kind
                && vm(&h.signature) == vm(&sig)
                && h.knobs
                    .iter()
                    .all(|k| seq.header.has(*k) && k.hazard_trigger().is_some_and(|t| shape.iter().any(|s| s == t)))
        }
    })
}

/// The sources of every scenario that may record known kernel differences: the shipped ones
/// and those under each of `extra` (`--known DIR`).
pub fn sources(extra: &[&Path]) -> Vec<String> {
    let mut v: Vec<String> = FILES.iter().map(|(_, t)| t.to_string()).collect();
    for d in extra {
        v.extend(crate::corpus::seq_files(d).iter().filter_map(|f| std::fs::read_to_string(f).ok()));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hazards_ship_in_the_binary_with_their_shapes() {
        let h1 = hazards().iter().find(|h| h.id == "H1").expect("H1 documented");
        assert_eq!(h1.signature.to_string(), "livelock:accept:no-progress@tdx/huge-v1");
        assert_eq!(h1.shape, ["private", "finalize", "access", "accept-4K"]);
        assert!(FILES.iter().any(|(p, _)| p.starts_with("corpus/known/")));
        assert!(hazards().iter().all(|h| !h.file.contains("-fixed")), "a fixed scenario documents no hazard");
    }

    #[test]
    fn a_finding_is_a_hazard_by_its_signature_and_its_shape() {
        let h1 = |access: &str, opts: &str, extra: &str| {
            let src = format!(
                "vm tdx\nvariant huge-v1\n{opts}gmem g size=4M huge\nslot 0 gpa=0x40000000 size=4M gmem=g offset=0\n\
                 private 0x40000000 2M\nfinalize\n{extra}vcpu0 {access} 0x40000000\nvcpu0 accept 0x40001000 4K\n"
            );
            let seq = crate::seq::text::parse("h1", &src).unwrap();
            let f = run_model(&seq).findings.into_iter().find(|f| f.is_hazard()).expect("the livelock");
            hazard_of(&f, &seq).map(|h| h.id.clone())
        };
        assert_eq!(h1("touch", "", "").as_deref(), Some("H1"));
        assert_eq!(h1("read", "option promote\n", "").as_deref(), Some("H1"), "options and the access may differ");
        // H1 names the op it shows through (a 4K ACCEPT: huge-v1 ignores every fault-path
        // split), so another shape through it is H1 too.
        assert_eq!(h1("touch", "", "shared 0x40200000 2M\n").as_deref(), Some("H1"));
        // H2 shows through a failed split: in huge-v1, the partial conversion with an extra
        // op before it is still H2.
        let h2 = |extra: &str| {
            let src = format!(
                "vm tdx\nvariant huge-v1\ngmem a size=2M huge\ngmem b size=4M huge\n\
                 slot 0 gpa=0x100000000 size=2M gmem=a offset=0\nslot 1 gpa=0x100200000 size=4M gmem=b offset=0\n\
                 private 0x100000000 6M\nfinalize\nvcpu0 accept 0x100000000 2M\nvcpu0 accept 0x100200000 2M\n\
                 {extra}inject split-oom\nshared 0x100000000 3M\nvcpu0 read 0x100000000\n"
            );
            crate::seq::text::parse("h2", &src).unwrap()
        };
        for extra in ["", "vcpu0 write 0x100200000 0x5\n"] {
            let seq = h2(extra);
            let f = run_model(&seq).findings.into_iter().find(|f| f.is_hazard()).expect("the data loss");
            assert_eq!(hazard_of(&f, &seq).map(|h| h.id.as_str()), Some("H2"), "{extra}");
        }
        // A hazard knob's hazard in another variant, through the knob's op: H8.
        let src = "vm tdx\nvariant huge-v3\noption zap-private-on-mtrr\ngmem g0 size=2M huge\n\
                   slot 0 gpa=0x100001000 size=2M gmem=g0 offset=0\nprivate 0x100001000 2M\ninit-mem 0x100001000 2\n\
                   finalize\nmtrr-zap 0x100001000 4K\nvcpu0 write 0x100001000 0x1\n";
        let seq = crate::seq::text::parse("h8", src).unwrap();
        let f = run_model(&seq).findings.into_iter().find(|f| f.is_hazard()).expect("the data loss");
        assert_eq!(hazard_of(&f, &seq).map(|h| h.id.as_str()), Some("H8"));
        // A hazard that names the ops it shows through (H13: huge-v5's over-zap), reached by
        // another of them and another shape; and by none of them, which is reported.
        let v5 = |host: &str| {
            crate::seq::text::parse(
                "h13",
                &format!(
                    "vm tdx\nvariant huge-v5\noption promote\ngmem g0 size=2052K huge\n\
                     slot 0 gpa=0x40000000 size=2052K gmem=g0 offset=0\nprivate 0x40000000 2M\nfinalize\n\
                     vcpu0 accept 0x40000000 2M\n{host}\nvcpu0 accept 0x40000000 4K\n"
                ),
            )
            .unwrap()
        };
        let seq = v5("fallocate g0 0x1000 2052K punch");
        let f = run_model(&seq).findings.into_iter().find(|f| f.is_hazard()).expect("the data loss");
        assert_eq!(hazard_of(&f, &seq).map(|h| h.id.as_str()), Some("H13"));
        assert!(hazard_of(&f, &v5("mtrr-zap 0x40000000 4K")).is_none(), "not through an op H13 names");
        // An option that takes the hazard away makes a finding under it news: huge-v5's
        // attribute over-zap does not happen where guest_memfd converts in place.
        use crate::seq::Knob;
        let attrs = hazards().iter().find(|h| h.file.contains("H13-v5-attributes")).expect("H13 documented");
        assert!(attrs.shows_under(&[Knob::Promote]));
        assert!(!attrs.shows_under(&[Knob::InPlaceConversion]));
        assert!(!attrs.shows_under(&[Knob::NoTdxHugePage]));
    }
}
