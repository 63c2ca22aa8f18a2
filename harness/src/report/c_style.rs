//! The kernel's C style for the code the exporters write: what checkpatch asks of it.

use std::fmt::Write as _;

/// The kernel's style (and checkpatch) wants a function's declarations first: the body's
/// top-level `int gmem_x = -1;` and `void *hvaN = ...;` lines become declarations at the top of
/// `main` and, where they computed something, assignments where they stood.
pub fn hoist_declarations(body: &str) -> (String, String) {
    let (mut decls, mut rest) = (String::new(), String::new());
    for l in body.lines() {
        let decl = ["\tint ", "\tvoid *"].iter().find_map(|p| l.strip_prefix(p).map(|r| (*p, r)));
        match decl.and_then(|(p, r)| r.split_once(" = ").map(|(var, init)| (p, var, init))) {
            Some(("\tint ", var, init)) => {
                let _ = writeln!(decls, "\tint {var} = {init}");
            }
            Some((p, var, init)) => {
                let _ = writeln!(decls, "{p}{var};");
                let _ = writeln!(rest, "\t{var} = {init}");
            }
            None => {
                rest.push_str(l);
                rest.push('\n');
            }
        }
    }
    (decls, rest)
}
