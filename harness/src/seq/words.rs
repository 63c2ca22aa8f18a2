//! The language's word lists, each declared once: an enum's variants with the word the
//! language writes for each (and, for codes, the number the kernel or the TDX module uses), so
//! that `ALL`, `name()`, `value()` and the parser's lookup cannot disagree. The parser looks a
//! word up by name ([`Word::from_word`]); no list is indexed by position.

/// What the parser needs of a word list.
pub trait Word: Copy + 'static {
    const WORDS: &'static [Self];
    fn word(self) -> &'static str;
    fn from_word(s: &str) -> Option<Self> {
        Self::WORDS.iter().copied().find(|x| x.word().eq_ignore_ascii_case(s))
    }
    /// The words, for an error message: `a, b or c`.
    fn listed() -> String {
        let w: Vec<&str> = Self::WORDS.iter().map(|x| x.word()).collect();
        match w.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => w.join(""),
        }
    }
}

/// Declare an enum of the language with its words (`Variant = "word"`), and with
/// `enum Name: Type` a number for each (`Variant = "word" => number`).
macro_rules! words {
    ($(#[$m:meta])* pub enum $t:ident { $($(#[$vm:meta])* $v:ident = $w:literal),+ $(,)? }) => {
        $(#[$m])*
        pub enum $t { $($(#[$vm])* $v),+ }
        impl $t {
            pub const ALL: [$t; [$($w),+].len()] = [$($t::$v),+];
            pub fn name(self) -> &'static str {
                match self { $($t::$v => $w),+ }
            }
        }
        impl $crate::seq::words::Word for $t {
            const WORDS: &'static [$t] = &$t::ALL;
            fn word(self) -> &'static str {
                self.name()
            }
        }
    };
    ($(#[$m:meta])* pub enum $t:ident : $n:ty { $($(#[$vm:meta])* $v:ident = $w:literal => $x:expr),+ $(,)? }) => {
        $crate::seq::words::words! { $(#[$m])* pub enum $t { $($(#[$vm])* $v = $w),+ } }
        impl $t {
            pub fn value(self) -> $n {
                match self { $($t::$v => $x),+ }
            }
        }
    };
}
pub(crate) use words;

#[cfg(test)]
mod tests {
    use super::Word;
    use crate::seq::*;

    fn round_trip<T: Word + PartialEq + std::fmt::Debug>() {
        let mut seen = std::collections::BTreeSet::new();
        for &x in T::WORDS {
            assert!(seen.insert(x.word().to_ascii_lowercase()), "{} twice", x.word());
            assert_eq!(T::from_word(x.word()), Some(x));
        }
    }

    /// Every word list reads each of its words back as the same variant: the parser looks words
    /// up by name, so no reordering of a list can swap two of them.
    #[test]
    fn every_word_reads_back_as_itself() {
        round_trip::<VmType>();
        round_trip::<Variant>();
        round_trip::<Knob>();
        round_trip::<Level>();
        round_trip::<Kernel>();
        round_trip::<Fault>();
        round_trip::<OpKind>();
        round_trip::<TdxStatus>();
        round_trip::<SeptState>();
        round_trip::<VmcallStatus>();
        round_trip::<PvalidateRc>();
        round_trip::<Errno>();
        assert_eq!(Level::listed(), "4K, 2M or 1G");
    }
}
