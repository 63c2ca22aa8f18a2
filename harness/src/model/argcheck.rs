//! The argument checks of the ioctls privmem drives, one table per ioctl, in the order the
//! kernel makes them, each row citing the function that makes it and the kernels it holds on.
//! Each row carries the op that fails exactly that check (every earlier one passing) and, where
//! there is one, the op just on the passing side of the same boundary: together the generated
//! family `corpus/argcheck/` (`privmem argcheck --emit DIR` writes it; a test keeps it current),
//! which runs on the model as every kernel, on this host and in the lab.
//!
//! Paths userspace cannot take through privmem's language are listed as `unreachable`: the
//! harness always passes its own page-aligned userspace address and its own guest_memfd fds.

use crate::seq::words::Word;
use crate::seq::{Errno, Kernel, KernelRange};

pub struct Check {
    pub function: String,
    pub check: String,
    pub errno: Errno,
    /// The kernels the row holds on; empty: all.
    pub kernels: Vec<KernelRange>,
    /// Extra header lines (a VM type of its own, a `gmem`), replacing the table's `vm` line
    /// when they start with `vm`.
    pub header: String,
    /// The op failing this check, `OP => err ERRNO`, after any set-up lines before it.
    pub hit: String,
    /// The op on the passing side of the boundary, with its outcome.
    pub edge: Option<String>,
}

pub struct Table {
    pub ioctl: String,
    pub short: String,
    pub header: String,
    pub checks: Vec<Check>,
    /// Checks of the kernel's that the language cannot reach, and why.
    pub unreachable: Vec<String>,
}

/// The tables are data, kept in `argcheck.tables` beside this file (its header says the format).
const SOURCE: &str = include_str!("argcheck.tables");

/// The tables, read once. The file is compiled in and a test reads it, so a malformed line is a
/// defect of this build: the message names its line.
pub fn tables() -> &'static [Table] {
    static T: std::sync::OnceLock<Vec<Table>> = std::sync::OnceLock::new();
    T.get_or_init(|| parse(SOURCE).unwrap_or_else(|e| panic!("harness/src/model/argcheck.tables:{e}")))
}

fn push_line(s: &mut String, l: &str) {
    if !s.is_empty() {
        s.push('\n');
    }
    s.push_str(l);
}

/// Parse the tables' text; an error is `LINE: what was wrong`.
pub fn parse(text: &str) -> Result<Vec<Table>, String> {
    let mut tables: Vec<Table> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let at = |what: String| format!("{}: {what}", n + 1);
        if raw.trim().is_empty() || raw.starts_with('#') {
            continue;
        }
        let indented = raw.starts_with("  ");
        let (word, rest) =
            raw.trim().split_once(' ').ok_or_else(|| at(format!("expected `WORD TEXT`, found `{raw}`")))?;
        let table = tables.last_mut();
        match (indented, word, table) {
            (false, "table", _) => tables.push(Table {
                ioctl: rest.into(),
                short: String::new(),
                header: String::new(),
                checks: Vec::new(),
                unreachable: Vec::new(),
            }),
            (false, "short", Some(t)) => t.short = rest.into(),
            (false, "header", Some(t)) => push_line(&mut t.header, rest),
            (false, "unreachable", Some(t)) => t.unreachable.push(rest.into()),
            (false, "check", Some(t)) => t.checks.push(Check {
                function: rest.into(),
                check: String::new(),
                errno: Errno::EINVAL,
                kernels: Vec::new(),
                header: String::new(),
                hit: String::new(),
                edge: None,
            }),
            (true, _, Some(t)) => {
                let c = t.checks.last_mut().ok_or_else(|| at("an indented line before any `check`".into()))?;
                match word {
                    "when" => c.check = rest.into(),
                    "errno" => c.errno = Errno::from_word(rest).ok_or_else(|| at(format!("no errno `{rest}`")))?,
                    "kernels" => {
                        c.kernels = rest
                            .split_whitespace()
                            .map(|k| KernelRange::parse(k).map_err(|e| at(format!("`{k}`: expected {e}"))))
                            .collect::<Result<_, _>>()?
                    }
                    "header" => push_line(&mut c.header, rest),
                    "hit" => push_line(&mut c.hit, rest),
                    "edge" => push_line(c.edge.get_or_insert_with(String::new), rest),
                    w => return Err(at(format!("expected when, errno, kernels, header, hit or edge, found `{w}`"))),
                }
            }
            (false, w, None) => return Err(at(format!("`{w}` before any `table`"))),
            (false, w, Some(_)) => {
                return Err(at(format!("expected table, short, header, check or unreachable, found `{w}`")))
            }
            (true, _, None) => return Err(at("an indented line before any `table`".into())),
        }
    }
    for t in &tables {
        if let Some(c) = t.checks.iter().find(|c| c.check.is_empty() || c.hit.is_empty()) {
            return Err(format!("the check of {} in {} lacks `when` or `hit`", c.function, t.ioctl));
        }
    }
    Ok(tables)
}

impl Check {
    /// The kernels the row holds on.
    pub fn kernels(&self) -> Vec<KernelRange> {
        if self.kernels.is_empty() {
            Kernel::ALL.map(KernelRange::line).to_vec()
        } else {
            self.kernels.clone()
        }
    }
}

/// The family: one scenario per row, `(file name, text)`.
pub fn family() -> Vec<(String, String)> {
    let mut v = Vec::new();
    for t in tables() {
        for (i, c) in t.checks.iter().enumerate() {
            let mut o = format!(
                "# {}: {} ({}), {}. Generated from harness/src/model/argcheck.tables: edit the table, not this file.\n",
                t.ioctl,
                c.check,
                c.function,
                c.errno.name()
            );
            let (vm_line, rest) = match c.header.strip_prefix("vm ") {
                Some(_) => (c.header.as_str(), ""),
                None => (t.header.as_str(), c.header.as_str()),
            };
            let mut lines = vm_line.lines();
            if let Some(first) = lines.next() {
                o.push_str(first);
                o.push('\n');
            }
            if !c.kernels.is_empty() {
                let names: Vec<String> = c.kernels.iter().map(|k| k.to_string()).collect();
                o.push_str(&format!("kernel {}\n", names.join(" ")));
            }
            for l in lines.chain(rest.lines()) {
                o.push_str(l);
                o.push('\n');
            }
            o.push_str(&c.hit);
            o.push('\n');
            if let Some(e) = &c.edge {
                o.push_str(e);
                o.push('\n');
            }
            v.push((format!("{}-{:02}.seq", t.short, i + 1), o));
        }
    }
    v
}

/// The tables as Markdown, for `privmem argcheck`.
pub fn markdown() -> String {
    let mut o = String::new();
    for t in tables() {
        o.push_str(&format!("## {}\n\n| # | function | check | errno | kernels |\n|---|---|---|---|---|\n", t.ioctl));
        for (i, c) in t.checks.iter().enumerate() {
            let k: Vec<String> = c.kernels().iter().map(|k| k.to_string()).collect();
            o.push_str(&format!(
                "| {} | `{}` | {} | {} | {} |\n",
                i + 1,
                c.function,
                c.check,
                c.errno.name(),
                k.join(" ")
            ));
        }
        for u in &t.unreachable {
            o.push_str(&format!("\nNot reachable from the language: {u}.\n"));
        }
        o.push('\n');
    }
    o
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_tables_read_and_a_bad_line_is_named() {
        assert!(super::tables().len() >= 6);
        let e = super::parse("table T\nshort t\ncheck f()\n  when x\n  errno ENOPE\n").err().unwrap();
        assert_eq!(e, "5: no errno `ENOPE`");
        let e = super::parse("check f()\n").err().unwrap();
        assert_eq!(e, "1: `check` before any `table`");
        let e = super::parse("table T\ncheck f()\n  errno EINVAL\n").err().unwrap();
        assert!(e.contains("lacks `when` or `hit`"), "{e}");
    }
}
