//! The kernels the model can be. A [`Kernel`] is a line (`6.12`, `6.18`, `7.3`, kvm-x86
//! `next`); a [`Release`] is one exact release (`6.12.118`), which is what a host or lab kernel
//! is and what the model runs as, since stable lines take backports (6.12.118 took 7.2's
//! guest_memfd binding rework). A sequence's `kernel` header line lists the [`KernelRange`]s it
//! holds on: a line, a release or a range inside one line. What differs between releases is the
//! table in `model/kernel.rs`.

use super::words::words;
use serde::Serialize;
use std::fmt;

words! {
    /// Ordered by age. The lines the model's table knows releases of.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub enum Kernel {
        /// Debian 12's 6.12 LTS: the lab's first kernel.
        V6_12 = "6.12",
        /// This project's development host.
        V6_18 = "6.18",
        /// Mainline as of the last review; Debian trixie-backports; the lab's second kernel.
        V7_3 = "7.3",
        /// kvm-x86 `next`: what the huge-page series is developed against.
        Next = "next",
    }
}

impl Kernel {
    pub const NEWEST_MAINLINE: Kernel = Kernel::V7_3;

    pub fn from_name(s: &str) -> Option<Kernel> {
        Kernel::ALL.into_iter().find(|k| k.name() == s)
    }

    /// The line's first release (`6.12` is 6.12.0; `next` is [`Release::NEXT`]).
    pub fn first(self) -> Release {
        match self {
            Kernel::Next => Release::NEXT,
            k => Release::parse(k.name()).expect("a line's name is a release"),
        }
    }
}

/// One exact kernel release, `major.minor.patch` (a mainline release is patch 0: `7.2.0`), or
/// kvm-x86 `next`, newer than every release. Ordered as the kernel's own
/// `LINUX_VERSION_CODE` orders them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Release {
    pub major: u16,
    pub minor: u16,
    pub patch: u16,
}

impl Release {
    pub const NEXT: Release = Release { major: u16::MAX, minor: 0, patch: 0 };

    pub const fn new(major: u16, minor: u16, patch: u16) -> Release {
        Release { major, minor, patch }
    }

    /// `6.12.118`, `7.3` (patch 0) or `next`; nothing else.
    pub fn parse(s: &str) -> Option<Release> {
        if s == "next" {
            return Some(Release::NEXT);
        }
        let parts: Vec<&str> = s.split('.').collect();
        if !(2..=3).contains(&parts.len())
            || parts.iter().any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
        {
            return None;
        }
        let n = |i: usize| parts.get(i).map_or(Some(0), |p| p.parse::<u16>().ok().filter(|&v| v < u16::MAX));
        Some(Release::new(n(0)?, n(1)?, n(2)?))
    }

    /// The release a `uname -r` string names: its leading `major.minor[.patch]`, whatever
    /// suffix the build added (`6.18.44-fc-v1147`, `7.3.4+bpo-amd64`, `7.4.0-rc1`).
    pub fn from_uname(release: &str) -> Option<Release> {
        let head: String = release.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
        Release::parse(head.trim_end_matches('.'))
    }

    pub fn is_next(self) -> bool {
        self == Release::NEXT
    }

    /// Whether the two are of one line (same major.minor; `next` only with itself).
    pub fn same_line(self, o: Release) -> bool {
        (self.major, self.minor) == (o.major, o.minor)
    }

    /// The line this release belongs to, where it is one the table knows.
    pub fn line(self) -> Option<Kernel> {
        Kernel::ALL.into_iter().find(|k| k.first().same_line(self))
    }

    /// The last release of this one's line: the range end a bare line name stands for.
    fn line_end(self) -> Release {
        if self.is_next() {
            self
        } else {
            Release::new(self.major, self.minor, u16::MAX - 1)
        }
    }
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_next() {
            f.write_str("next")
        } else {
            write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
        }
    }
}

/// Written as the language writes it (`"6.12.118"`).
impl Serialize for Release {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Release {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Release, D::Error> {
        let s = String::deserialize(d)?;
        Release::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("not a kernel release: `{s}`")))
    }
}

/// Releases a sequence (or a known-divergence marker) holds on, inside one line, both ends
/// included: a whole line (`6.12`), one release (`6.12.118`), or a range written as Rust
/// writes one: `6.12.0..=6.12.117`, `6.12.118..` (to the line's end), `..=6.12.117` (from its
/// start).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KernelRange {
    pub lo: Release,
    pub hi: Release,
}

impl KernelRange {
    pub const fn exactly(r: Release) -> KernelRange {
        KernelRange { lo: r, hi: r }
    }

    pub fn line(k: Kernel) -> KernelRange {
        let first = k.first();
        KernelRange { lo: first, hi: first.line_end() }
    }

    pub fn contains(self, r: Release) -> bool {
        self.lo <= r && r <= self.hi
    }

    /// The line it lies in, where the table knows it.
    pub fn kernel(self) -> Option<Kernel> {
        self.lo.line()
    }

    /// Parse one word of a `kernel` line; the error says what was expected.
    pub fn parse(s: &str) -> Result<KernelRange, String> {
        const EXPECTED: &str =
            "a kernel: a line (6.12, 6.18, 7.3 or next), a release (6.12.118) or a range in one line (6.12.0..=6.12.117, 6.12.118.., ..=6.12.117)";
        let rel = |x: &str| Release::parse(x).filter(|r| r.line().is_some()).ok_or_else(|| EXPECTED.to_string());
        let r = if let Some((lo, hi)) = s.split_once("..") {
            let hi = match hi {
                "" => None,
                h => Some(rel(h.strip_prefix('=').ok_or_else(|| format!("{EXPECTED}: an upper end is `..=`"))?)?),
            };
            let lo = if lo.is_empty() { None } else { Some(rel(lo)?) };
            match (lo, hi) {
                (Some(lo), Some(hi)) => KernelRange { lo, hi },
                (Some(lo), None) => KernelRange { lo, hi: lo.line_end() },
                (None, Some(hi)) => KernelRange { lo: Release::new(hi.major, hi.minor, 0), hi },
                (None, None) => return Err(EXPECTED.into()),
            }
        } else if let Some(k) = Kernel::from_name(s) {
            KernelRange::line(k)
        } else {
            KernelRange::exactly(rel(s)?)
        };
        if !r.lo.same_line(r.hi) || r.lo > r.hi {
            return Err(format!("{EXPECTED}: `{s}` is not an ascending range inside one line"));
        }
        Ok(r)
    }
}

impl fmt::Display for KernelRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.kernel().map(KernelRange::line);
        let (start, end) = (self.lo.patch == 0, self.hi == self.lo.line_end());
        match () {
            _ if Some(*self) == whole => write!(f, "{}", self.kernel().expect("a line").name()),
            _ if self.lo == self.hi => write!(f, "{}", self.lo),
            _ if end => write!(f, "{}..", self.lo),
            _ if start => write!(f, "..={}", self.hi),
            _ => write!(f, "{}..={}", self.lo, self.hi),
        }
    }
}

impl Serialize for KernelRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Written as its name (`"6.12"`), as the sequence language writes it.
impl Serialize for Kernel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Kernel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Kernel, D::Error> {
        let s = String::deserialize(d)?;
        Kernel::from_name(&s).ok_or_else(|| serde::de::Error::custom(format!("no named kernel `{s}`")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uname_strings_name_their_release() {
        assert_eq!(Release::from_uname("6.18.44-fc-v1147"), Some(Release::new(6, 18, 44)));
        assert_eq!(Release::from_uname("6.12.118"), Some(Release::new(6, 12, 118)));
        assert_eq!(Release::from_uname("7.3.4+bpo-amd64"), Some(Release::new(7, 3, 4)));
        assert_eq!(Release::from_uname("7.4.0-rc1"), Some(Release::new(7, 4, 0)));
        assert_eq!(Release::from_uname("7.2"), Some(Release::new(7, 2, 0)));
        assert_eq!(Release::from_uname("garbage"), None);
        assert_eq!(Release::from_uname(""), None);
        assert!(Release::new(6, 12, 118) > Release::new(6, 12, 117));
        assert!(Release::new(6, 18, 0) > Release::new(6, 12, 999));
        assert!(Release::NEXT > Release::new(99, 0, 0));
        assert_eq!(Release::new(6, 12, 118).line(), Some(Kernel::V6_12));
        assert_eq!(Release::new(6, 16, 3).line(), None);
    }

    #[test]
    fn ranges_read_and_print_back() {
        for (word, lo, hi) in [
            ("6.12", Release::new(6, 12, 0), Release::new(6, 12, u16::MAX - 1)),
            ("6.12.118", Release::new(6, 12, 118), Release::new(6, 12, 118)),
            ("6.12.118..", Release::new(6, 12, 118), Release::new(6, 12, u16::MAX - 1)),
            ("..=6.12.117", Release::new(6, 12, 0), Release::new(6, 12, 117)),
            ("6.12.100..=6.12.117", Release::new(6, 12, 100), Release::new(6, 12, 117)),
            ("next", Release::NEXT, Release::NEXT),
        ] {
            let r = KernelRange::parse(word).unwrap();
            assert_eq!((r.lo, r.hi), (lo, hi), "{word}");
            assert_eq!(r.to_string(), word);
        }
        for bad in ["6.12..7.3", "6.12.118..6.12.200", "6.12.118..=6.12.100", "..", "6.16.1", "6", "6.12.x", "6.12.-1"]
        {
            assert!(KernelRange::parse(bad).is_err(), "{bad}");
        }
        let r = KernelRange::parse("6.12.118..").unwrap();
        assert!(r.contains(Release::new(6, 12, 119)) && !r.contains(Release::new(6, 12, 117)));
        assert!(!r.contains(Release::new(6, 18, 0)));
    }
}
