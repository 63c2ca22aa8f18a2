//! The repository's own style rules, each with the reason it exists and a self-test (a sample
//! it must flag, and one it must pass), in the way of syzkaller's `executor/style_test.go`.
//! Formatting and lints are rustfmt's and clippy's (`undocumented_unsafe_blocks` among them,
//! Cargo.toml); these are the rules no tool has.

use std::path::{Path, PathBuf};

/// A rule: its name, why it exists, and the check of one file (its path from the repository
/// root, its text): each violation as a line number and what is wrong.
struct Rule {
    name: &'static str,
    why: &'static str,
    applies: fn(&str) -> bool,
    check: fn(&str, &str) -> Vec<(usize, String)>,
    /// A file (path, text) the rule must flag, and one it must pass.
    bad: (&'static str, &'static str),
    good: (&'static str, &'static str),
}

fn lines_matching(text: &str, hit: impl Fn(&str) -> Option<String>) -> Vec<(usize, String)> {
    text.lines().enumerate().filter_map(|(i, l)| hit(l).map(|w| (i + 1, w))).collect()
}

/// The lab kernels' names, from their one table.
fn lab_kernel_names() -> Vec<String> {
    let t = std::fs::read_to_string(root().join("ci/lab/kernels")).expect("ci/lab/kernels");
    t.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split_whitespace().next().map(String::from)).collect()
}

const RULES: &[Rule] = &[
    Rule {
        name: "no-shared-docs",
        why: "the founding spec and design live outside the repository; a citation of them is one a \
              reader of the repository cannot follow (the repository's own docs/ and the sources it \
              checks against are what to cite)",
        applies: |p| p.ends_with(".rs") || p.ends_with(".md") || p.ends_with(".sh") || p.ends_with(".c"),
        check: |_, text| {
            lines_matching(text, |l| {
                // Spelled in pieces, so that the rule does not flag itself.
                [concat!("DESIGN", ".md"), concat!("SPEC", ".md")]
                    .iter()
                    .find(|d| l.contains(*d))
                    .map(|d| format!("cites {d}"))
            })
        },
        bad: ("harness/src/x.rs", concat!("//! See `DESIGN", ".md` in the shared folder.\n")),
        good: ("harness/src/x.rs", "//! See docs/model.md.\n"),
    },
    Rule {
        name: "lab-kernels-from-the-table",
        why: "a lab kernel named as a literal in the CLI or the lab is a place the next kernel must \
              be added by hand; ci/lab/kernels is the one table (lab/kernels.rs reads it)",
        applies: |p| {
            (p.starts_with("harness/src/cli/") || p.starts_with("harness/src/lab/")) && !p.ends_with("lab/kernels.rs")
        },
        check: |_, text| {
            let names = lab_kernel_names();
            lines_matching(text, |l| {
                let code = l.split("//").next().unwrap_or("");
                names
                    .iter()
                    .find(|n| code.contains(&format!("\"{n}\"")))
                    .map(|n| format!("the lab kernel \"{n}\" as a literal"))
            })
        },
        bad: ("harness/src/cli/lab_cmd.rs", "let v = a.kernel.unwrap_or(\"6.12\");\n"),
        good: ("harness/src/cli/lab_cmd.rs", "let v = a.kernel.unwrap_or(kernels::default().name); // 6.12\n"),
    },
    Rule {
        name: "core-does-not-print",
        why: "the language, the model, the oracle and the shrinker are libraries the fuzz targets \
              call millions of times; what they find goes back as values, and the CLI says it",
        applies: |p| {
            ["harness/src/seq/", "harness/src/model/", "harness/src/oracle/", "harness/src/shrink/"]
                .iter()
                .any(|d| p.starts_with(d))
        },
        check: |_, text| {
            let tests = text.find("#[cfg(test)]").unwrap_or(text.len());
            lines_matching(&text[..tests], |l| {
                ["println!", "eprintln!", "print!(", "eprint!("]
                    .iter()
                    .find(|m| l.contains(*m) && !l.trim_start().starts_with("//"))
                    .map(|m| format!("{m} in the core"))
            })
        },
        bad: ("harness/src/model/kvm.rs", "fn f() { eprintln!(\"hi\"); }\n"),
        good: ("harness/src/model/kvm.rs", "fn f() {}\n#[cfg(test)]\nmod t { fn g() { println!(\"ok\"); } }\n"),
    },
    Rule {
        name: "layout-describes-the-tree",
        why: "the README's layout section is how a newcomer finds things: every directory and \
              top-level file of harness/src, and every top-level directory, is in it",
        applies: |p| p == "README.md",
        check: |_, text| {
            let layout = text.split("## Layout").nth(1).and_then(|t| t.split("\n## ").next()).unwrap_or("");
            let mut missing = Vec::new();
            let src = root().join("harness/src");
            for e in std::fs::read_dir(&src).expect("harness/src").flatten() {
                let n = e.file_name().to_string_lossy().to_string();
                if n == "lib.rs" || n == "main.rs" {
                    continue;
                }
                let shown = if e.path().is_dir() { format!("harness/src/{n}/") } else { format!("harness/src/{n}") };
                if !layout.contains(&shown) {
                    missing.push((0, format!("{shown} is not in the layout section")));
                }
            }
            for d in ["harness/", "guests/", "fuzz/", "ci/lab/", "docs/", "corpus/"] {
                if !layout.contains(d) {
                    missing.push((0, format!("{d} is not in the layout section")));
                }
            }
            missing
        },
        bad: ("README.md", "## Layout\n\n```\nharness/src/seq/  the language\n```\n"),
        good: ("README.md", ""), // the real README: checked over the tree below
    },
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The repository's files the rules read: tracked sources and docs, no build output.
fn files() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root()).unwrap_or(&p).display().to_string();
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with('.') || ["target", "corpus"].contains(&name.as_str()) || rel.starts_with("fuzz/corpus")
            {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(t) = std::fs::read_to_string(&p) {
                out.push((rel, t));
            }
        }
    }
    out
}

#[test]
fn each_rule_flags_its_bad_sample_and_passes_its_good_one() {
    for r in RULES {
        assert!(!r.why.is_empty(), "{}: a rule says why it exists", r.name);
        let (p, t) = r.bad;
        assert!((r.applies)(p) && !(r.check)(p, t).is_empty(), "{}: does not flag its bad sample", r.name);
        let (p, t) = r.good;
        // The layout rule's good sample is the README itself, checked below.
        if r.name != "layout-describes-the-tree" {
            assert!((r.check)(p, t).is_empty(), "{}: flags its good sample: {:?}", r.name, (r.check)(p, t));
        }
    }
}

#[test]
fn the_repository_keeps_every_rule() {
    let files = files();
    assert!(files.iter().any(|(p, _)| p == "README.md"), "the walk found the README");
    let mut bad = Vec::new();
    for r in RULES {
        for (p, t) in files.iter().filter(|(p, _)| (r.applies)(p)) {
            for (line, what) in (r.check)(p, t) {
                bad.push(format!("{p}:{line}: {what}  [{}: {}]", r.name, r.why));
            }
        }
    }
    assert!(bad.is_empty(), "style:\n{}", bad.join("\n"));
}

/// Why no two files may import each other, even through others: a circle is two files that can
/// only be understood, tested and changed together (the review that asked for this rule found
/// five, among them the lab calling the CLI and the CLI calling the lab).
const NO_CIRCLES_WHY: &str = "files in an import circle can only be read, tested and changed together";

/// The module path of a file under harness/src (`backend/kvm/vm.rs` is backend::kvm::vm).
fn module_of(rel: &str) -> Vec<String> {
    let mut parts: Vec<String> = rel.trim_end_matches(".rs").split('/').map(String::from).collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

/// The paths a file names (`crate::a::b`, `super::c`), outside comments and its tests, as
/// module paths from the crate root.
fn named_paths(rel: &str, text: &str) -> Vec<Vec<String>> {
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    let me = module_of(rel);
    let mut out = Vec::new();
    for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
        for (start, root) in [("crate::", None), ("super::", Some(me[..me.len().saturating_sub(1)].to_vec()))] {
            let mut rest = line;
            while let Some(i) = rest.find(start) {
                let before = rest[..i].chars().last();
                rest = &rest[i + start.len()..];
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    continue;
                }
                let mut path = root.clone().unwrap_or_default();
                let mut segs = rest.split("::");
                for seg in segs.by_ref() {
                    let ident: String = seg.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    if ident.is_empty() {
                        break;
                    }
                    if ident == "super" {
                        path.pop();
                    } else {
                        path.push(ident.clone());
                    }
                    if ident.len() != seg.len() {
                        break;
                    }
                }
                out.push(path);
            }
        }
    }
    out
}

/// The import circles among `files` (path under harness/src, text): each a list of files.
fn circles(files: &[(String, String)]) -> Vec<Vec<String>> {
    use std::collections::{BTreeMap, BTreeSet};
    let by_module: BTreeMap<Vec<String>, usize> =
        files.iter().enumerate().map(|(i, (p, _))| (module_of(p), i)).collect();
    let edges: Vec<BTreeSet<usize>> = files
        .iter()
        .enumerate()
        .map(|(i, (p, t))| {
            named_paths(p, t)
                .into_iter()
                .filter_map(|path| (1..=path.len()).rev().find_map(|n| by_module.get(&path[..n]).copied()))
                .filter(|&j| j != i)
                .collect()
        })
        .collect();
    // Tarjan's strongly connected components; a component of two or more is a circle.
    struct T<'a> {
        edges: &'a [BTreeSet<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        stack: Vec<usize>,
        on: Vec<bool>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(t: &mut T, v: usize) {
        t.index[v] = Some(t.next);
        t.low[v] = t.next;
        t.next += 1;
        t.stack.push(v);
        t.on[v] = true;
        for &w in t.edges[v].clone().iter() {
            match t.index[w] {
                None => {
                    visit(t, w);
                    t.low[v] = t.low[v].min(t.low[w]);
                }
                Some(iw) if t.on[w] => t.low[v] = t.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(t.low[v]) == t.index[v] {
            let mut c = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on[w] = false;
                c.push(w);
                if w == v {
                    break;
                }
            }
            if c.len() > 1 {
                t.out.push(c);
            }
        }
    }
    let n = files.len();
    let mut t = T {
        edges: &edges,
        index: vec![None; n],
        low: vec![0; n],
        stack: Vec::new(),
        on: vec![false; n],
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if t.index[v].is_none() {
            visit(&mut t, v);
        }
    }
    t.out.into_iter().map(|c| c.into_iter().map(|i| files[i].0.clone()).collect()).collect()
}

#[test]
fn the_circle_rule_flags_its_sample_and_passes_a_chain() {
    let f = |p: &str, t: &str| (p.to_string(), t.to_string());
    let circle = [
        f("lab/mod.rs", "fn init() { crate::cli::main(vec![]); }\n"),
        f("cli/mod.rs", "use crate::lab::boot;\n"),
        f("cli/x.rs", "use super::y;\n"),
    ];
    assert_eq!(circles(&circle).len(), 1, "{NO_CIRCLES_WHY}");
    let chain = [
        f("lab/mod.rs", "// crate::cli::main is not called here\nfn init() {}\n"),
        f("cli/mod.rs", "use crate::lab::boot;\n#[cfg(test)]\nmod t { use crate::cli::x; }\n"),
        f("cli/x.rs", "use super::super::lab;\n"),
    ];
    assert!(circles(&chain).is_empty(), "{:?}", circles(&chain));
}

#[test]
fn no_import_circles_between_files() {
    let src = root().join("harness/src");
    let files: Vec<(String, String)> = files()
        .into_iter()
        .filter_map(|(p, t)| Some((p.strip_prefix("harness/src/")?.to_string(), t)))
        .filter(|(p, _)| p.ends_with(".rs"))
        .collect();
    assert!(files.len() > 50 && src.is_dir(), "the walk found harness/src");
    let c = circles(&files);
    assert!(
        c.is_empty(),
        "import circles ({NO_CIRCLES_WHY}):\n{}",
        c.iter().map(|c| c.join(" -> ")).collect::<Vec<_>>().join("\n")
    );
}
