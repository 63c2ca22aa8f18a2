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
