//! The `.seq` lexer: tokens with their columns, a line cursor whose errors name file, line,
//! column and what was expected, and numbers with size suffixes.

use super::header::Level;
use std::fmt;
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub msg: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.col, self.msg)
    }
}

impl std::error::Error for ParseError {}

#[derive(Clone, Copy)]
pub(super) struct Tok<'a> {
    pub(super) text: &'a str,
    pub(super) col: usize,
}

pub(super) struct Line<'a> {
    pub(super) file: &'a str,
    pub(super) line: usize,
    pub(super) toks: Vec<Tok<'a>>,
    pub(super) pos: usize,
    /// Column just past the last character, for "expected X, found end of line".
    pub(super) end_col: usize,
}

/// A token as an error message shows it: a long one cut, with its length said.
fn shown(t: &str) -> String {
    const MAX: usize = 48;
    match t.char_indices().nth(MAX) {
        None => t.to_string(),
        Some((at, _)) => format!("{}… ({} bytes)", &t[..at], t.len()),
    }
}

impl<'a> Line<'a> {
    pub(super) fn err_at(&self, col: usize, msg: String) -> ParseError {
        ParseError { file: self.file.to_string(), line: self.line, col, msg }
    }
    pub(super) fn peek(&self) -> Option<Tok<'a>> {
        self.toks.get(self.pos).copied()
    }
    pub(super) fn next(&mut self, expected: &str) -> Result<Tok<'a>, ParseError> {
        match self.peek() {
            Some(t) => {
                self.pos += 1;
                Ok(t)
            }
            None => Err(self.err_at(self.end_col, format!("expected {expected}, found end of line"))),
        }
    }
    pub(super) fn fail<T>(&self, t: Tok<'a>, expected: &str) -> Result<T, ParseError> {
        Err(self.err_at(t.col, format!("expected {expected}, found `{}`", shown(t.text))))
    }
    pub(super) fn word(&mut self, expected: &str, words: &[&str]) -> Result<usize, ParseError> {
        let t = self.next(expected)?;
        match words.iter().position(|w| w.eq_ignore_ascii_case(t.text)) {
            Some(i) => Ok(i),
            None => self.fail(t, expected),
        }
    }
    /// One of `words`, returned as the word itself (so callers match on names, not positions).
    pub(super) fn choose(&mut self, expected: &str, words: &[&'static str]) -> Result<&'static str, ParseError> {
        let i = self.word(expected, words)?;
        Ok(words[i])
    }
    /// A word of the list `T` declares (`what` says what it is: "a variant").
    pub(super) fn pick<T: super::words::Word>(&mut self, what: &str) -> Result<T, ParseError> {
        let expected = format!("{what} ({})", T::listed());
        let t = self.next(&expected)?;
        match T::from_word(t.text) {
            Some(x) => Ok(x),
            None => self.fail(t, &expected),
        }
    }
    pub(super) fn number(&mut self, expected: &str) -> Result<u64, ParseError> {
        let t = self.next(expected)?;
        parse_number(t.text, false).ok_or(()).or_else(|_| self.fail(t, expected))
    }
    pub(super) fn size(&mut self, expected: &str) -> Result<u64, ParseError> {
        let t = self.next(expected)?;
        parse_number(t.text, true).ok_or(()).or_else(|_| self.fail(t, expected))
    }
    /// `key=VALUE`, returning the value token.
    pub(super) fn keyed(&mut self, key: &str) -> Result<Tok<'a>, ParseError> {
        let expected = format!("`{key}=`");
        let t = self.next(&expected)?;
        match t.text.split_once('=') {
            Some((k, v)) if k == key && !v.is_empty() => Ok(Tok { text: v, col: t.col + k.len() + 1 }),
            Some((k, _)) if k == key => {
                Err(self.err_at(t.col + k.len() + 1, format!("expected a value after `{key}=`, found nothing")))
            }
            _ => self.fail(t, &expected),
        }
    }
    pub(super) fn keyed_size(&mut self, key: &str) -> Result<u64, ParseError> {
        let v = self.keyed(key)?;
        parse_number(v.text, true).ok_or(()).or_else(|_| self.fail(v, &format!("a size after `{key}=`")))
    }
    pub(super) fn flag(&mut self, name: &str) -> bool {
        match self.peek() {
            Some(t) if t.text == name => {
                self.pos += 1;
                true
            }
            _ => false,
        }
    }
    pub(super) fn vcpu(&mut self) -> Result<u32, ParseError> {
        let t = self.next("`vcpuN`")?;
        match t.text.strip_prefix("vcpu").and_then(|n| n.parse::<u32>().ok()) {
            Some(n) => Ok(n),
            None => self.fail(t, "`vcpuN`"),
        }
    }
    pub(super) fn level(&mut self) -> Result<Level, ParseError> {
        self.pick::<Level>("a level")
    }
    pub(super) fn done(&self) -> Result<(), ParseError> {
        match self.peek() {
            None => Ok(()),
            Some(t) => self.fail(t, "end of line or `=>`"),
        }
    }
    /// The end of a header line, which takes no expectation.
    pub(super) fn done_header(&self) -> Result<(), ParseError> {
        match self.peek() {
            None => Ok(()),
            Some(t) if t.text == "=>" => Err(self.err_at(
                t.col,
                "expected end of line: a header line takes no `=>`; its op form does (`slot-add`, `gmem-create`)"
                    .into(),
            )),
            Some(t) => self.fail(t, "end of line"),
        }
    }
}

/// Hex (`0x..`) or decimal; with `sized`, an optional K/M/G suffix.
pub fn parse_number(s: &str, sized: bool) -> Option<u64> {
    let (digits, mult) = match s.as_bytes().last()? {
        b'K' | b'k' if sized => (&s[..s.len() - 1], 1u64 << 10),
        b'M' | b'm' if sized => (&s[..s.len() - 1], 1 << 20),
        b'G' | b'g' if sized => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let v = if let Some(h) = digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        if h.is_empty() || h.starts_with('+') {
            return None;
        }
        u64::from_str_radix(h, 16).ok()?
    } else {
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse::<u64>().ok()?
    };
    v.checked_mul(mult)
}

pub(super) fn tokenize(src: &str) -> Vec<Tok<'_>> {
    let code = match src.find('#') {
        Some(i) => &src[..i],
        None => src,
    };
    let mut toks = Vec::new();
    let mut start = None;
    for (i, c) in code.char_indices() {
        if c.is_whitespace() {
            if let Some(s) = start.take() {
                toks.push(Tok { text: &code[s..i], col: s + 1 });
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        toks.push(Tok { text: &code[s..], col: s + 1 });
    }
    toks
}
