//! A finding's signature, `kind:op:state[@context]`: what deduplicates findings, what a corpus
//! records as a known divergence and what `--ignore` names. The state may hold `:` itself
//! (`model:ok/real:EINTR`); the context is the VM type, variant and options
//! (`tdx/huge-v3+promote`).

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Signature {
    pub kind: String,
    /// The op kind, `-` where none; empty in a recorded pattern that covers every op.
    pub op: String,
    /// Empty, or ending in `:`, in a recorded pattern that covers every state under it.
    pub state: String,
    pub context: Option<String>,
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.kind, self.op, self.state)?;
        match &self.context {
            Some(c) => write!(f, "@{c}"),
            None => Ok(()),
        }
    }
}

impl FromStr for Signature {
    type Err = String;
    fn from_str(s: &str) -> Result<Signature, String> {
        let (body, context) = match s.split_once('@') {
            Some((b, c)) => (b, Some(c.to_string())),
            None => (s, None),
        };
        let Some((kind, rest)) = body.split_once(':') else {
            return Err(format!("`{s}`: a signature is kind:op:state[@context]"));
        };
        let (op, state) = rest.split_once(':').unwrap_or((rest, ""));
        if kind.is_empty() {
            return Err(format!("`{s}`: a signature starts with its finding kind"));
        }
        Ok(Signature { kind: kind.into(), op: op.into(), state: state.into(), context })
    }
}

impl Signature {
    /// Whether this signature, as a person recorded it (a known divergence, `--ignore`), covers
    /// `actual`: without a context it covers every configuration; an empty op every op; an
    /// empty state, or one ending in `:`, every state under it.
    pub fn covers(&self, actual: &Signature) -> bool {
        let state = if self.state.is_empty() || self.state.ends_with(':') {
            actual.state.starts_with(&self.state)
        } else {
            actual.state == self.state
        };
        self.kind == actual.kind
            && (self.op.is_empty() || self.op == actual.op)
            && state
            && self.context.as_ref().is_none_or(|c| actual.context.as_ref() == Some(c))
    }

    /// [`Signature::covers`] with reads, writes and touches taken as one access: a recorded
    /// kernel difference shows on whichever access a case makes.
    pub fn covers_any_access(&self, actual: &Signature) -> bool {
        let access = |s: &Signature| {
            let mut s = s.clone();
            if matches!(s.op.as_str(), "read" | "write" | "touch") {
                s.op = "access".into();
            }
            s
        };
        access(self).covers(&access(actual))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_read_back_as_written_and_cover_as_recorded() {
        let full = "divergence:prefault:model:ok/real:EINTR@sw-protected";
        let s: Signature = full.parse().unwrap();
        assert_eq!(
            (s.kind.as_str(), s.op.as_str(), s.state.as_str()),
            ("divergence", "prefault", "model:ok/real:EINTR")
        );
        assert_eq!(s.context.as_deref(), Some("sw-protected"));
        assert_eq!(s.to_string(), full);
        let p = |x: &str| x.parse::<Signature>().unwrap();
        // Without a context: every configuration; with one: that one only.
        assert!(p("divergence:prefault:model:ok/real:EINTR").covers(&s));
        assert!(!p("divergence:prefault:model:ok/real:EINTR@tdx").covers(&s));
        // Prefixes: a kind, a kind and op, a state ending in `:`.
        assert!(
            p("divergence:").covers(&s)
                && p("divergence:prefault:").covers(&s)
                && p("divergence:prefault:model:").covers(&s)
        );
        assert!(!p("divergence:read:").covers(&s) && !p("invariant:").covers(&s));
        assert!(!p("divergence:prefault:model:ok").covers(&s), "a state is whole unless it ends in `:`");
        // Any access.
        let read = p("divergence:read:model:value/real:value@default");
        assert!(p("divergence:touch:model:value/real:value").covers_any_access(&read));
        assert!(!p("divergence:touch:model:value/real:value").covers(&read));
        assert!("nothing".parse::<Signature>().is_err() && ":x:y".parse::<Signature>().is_err());
    }
}
