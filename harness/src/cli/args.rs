//! A small argument parser: positionals and `--name value` / `--flag` options, with errors that
//! say what was wrong.

use std::collections::HashMap;

pub struct Args {
    pub positional: Vec<String>,
    opts: HashMap<String, String>,
    flags: Vec<String>,
}

impl Args {
    /// `valued` names the options that take a value; anything else starting with `--` (or `-o`)
    /// is a flag if listed in `flags`, else an error.
    pub fn parse(argv: &[String], valued: &[&str], flags: &[&str]) -> Result<Args, String> {
        let mut a = Args { positional: Vec::new(), opts: HashMap::new(), flags: Vec::new() };
        let mut it = argv.iter();
        while let Some(x) = it.next() {
            if let Some(name) = x.strip_prefix("--").or_else(|| x.strip_prefix('-').filter(|n| n.len() == 1)) {
                let (name, inline) = match name.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_string())),
                    None => (name, None),
                };
                if valued.contains(&name) {
                    let v = match inline {
                        Some(v) => v,
                        None => it.next().cloned().ok_or(format!("--{name} needs a value"))?,
                    };
                    a.opts.insert(name.to_string(), v);
                } else if flags.contains(&name) && inline.is_none() {
                    a.flags.push(name.to_string());
                } else {
                    return Err(format!("unknown option `{x}`"));
                }
            } else {
                a.positional.push(x.clone());
            }
        }
        Ok(a)
    }

    pub fn flag(&self, n: &str) -> bool {
        self.flags.iter().any(|f| f == n)
    }

    pub fn get(&self, n: &str) -> Option<&str> {
        self.opts.get(n).map(|s| s.as_str())
    }

    pub fn num(&self, n: &str) -> Result<Option<u64>, String> {
        match self.get(n) {
            None => Ok(None),
            Some(v) => crate::seq::text::parse_number(v, false)
                .map(Some)
                .ok_or(format!("--{n}: expected a number, found `{v}`")),
        }
    }
}
