//! The kernels the model can be: the named Linux releases privmem is held against. A sequence's
//! `kernel` header line lists those it holds on; the model runs as the newest of them (or as
//! [`Kernel::NEWEST_MAINLINE`] when none is named), and a real backend runs it as the kernel it
//! is on. What differs between them is the table in `model/kernel.rs`.

use super::words::words;
use serde::Serialize;

words! {
    /// Ordered by age: a rule that holds "since" a kernel holds for every later one.
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

    /// The kernel a `uname -r` release models: its major.minor when it is one of ours, else
    /// the nearest older one (a 6.19 behaves as 6.18 did until a rule says otherwise). None
    /// for a release older than every kernel here.
    pub fn from_release(release: &str) -> Option<Kernel> {
        let mut it = release.split(|c: char| !c.is_ascii_digit());
        let major: u32 = it.next()?.parse().ok()?;
        let minor: u32 = it.next()?.parse().ok()?;
        let v = (major, minor);
        [(Kernel::V7_3, (7, 3)), (Kernel::V6_18, (6, 18)), (Kernel::V6_12, (6, 12))]
            .into_iter()
            .find(|(_, at)| v >= *at)
            .map(|(k, _)| k)
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
    fn releases_map_to_the_kernel_they_behave_as() {
        assert_eq!(Kernel::from_release("6.18.44-pvm"), Some(Kernel::V6_18));
        assert_eq!(Kernel::from_release("6.12.117"), Some(Kernel::V6_12));
        assert_eq!(Kernel::from_release("6.16.0"), Some(Kernel::V6_12));
        assert_eq!(Kernel::from_release("7.3.4+bpo-amd64"), Some(Kernel::V7_3));
        assert_eq!(Kernel::from_release("7.4.0-rc1"), Some(Kernel::V7_3));
        assert_eq!(Kernel::from_release("6.6.1"), None);
        assert_eq!(Kernel::from_release("garbage"), None);
    }
}
