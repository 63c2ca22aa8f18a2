//! Kernel coverage as a picture: the KCOV PCs a lab run reached, mapped to source lines of
//! KVM's MMU, guest_memfd and the memslot/attribute parts of kvm_main.c with the lab build's
//! vmlinux, as one HTML page with a per-file summary.
//!
//! What could be reached comes from the binary: KCOV's compiler pass puts a call to
//! `__sanitizer_cov_trace_pc` in every basic block, and the PC KCOV records is that call's
//! return address, so the instruction after each such call is one coverable PC (as syzkaller
//! computes it).

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The files the page shows, and for kvm_main.c the functions that count (memslots and
/// attributes); every function of the others counts. KVM's TDX code and the TDX host code
/// (`vmx/tdx.c`, `virt/vmx/tdx/tdx.c`) show where the kernel has them (the `--tdx` flavour).
fn wanted(file: &str, func: &str) -> bool {
    let tdx = ["arch/x86/kvm/vmx/tdx.c", "arch/x86/virt/vmx/tdx/tdx.c"];
    if file.starts_with("arch/x86/kvm/mmu/") && file.ends_with(".c")
        || file == "virt/kvm/guest_memfd.c"
        || tdx.contains(&file)
    {
        return true;
    }
    file == "virt/kvm/kvm_main.c"
        && ["memslot", "memory_region", "mem_attr", "memory_attributes", "gfn_range", "guest_memfd", "gmem"]
            .iter()
            .any(|k| func.contains(k))
}

/// One source line's place: file (relative to the tree), line, function.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Loc {
    file: String,
    line: u32,
    func: String,
}

/// Every coverable PC of KVM's code in `vmlinux`, cached beside it.
fn coverable(vmlinux: &Path) -> Result<Vec<u64>, String> {
    let cache = PathBuf::from(format!("{}.coverable", vmlinux.display()));
    if let Ok(s) = std::fs::read_to_string(&cache) {
        return Ok(s.lines().filter_map(|l| u64::from_str_radix(l, 16).ok()).collect());
    }
    // KVM is built in as one archive (arch/x86/kvm/built-in.a, virt/kvm's files included),
    // so its code is one address range: from the first to the last kvm_ text symbol.
    let nm = Command::new("nm").arg("-n").arg(vmlinux).output().map_err(|e| format!("nm: {e}"))?;
    let syms: Vec<(u64, String)> = String::from_utf8_lossy(&nm.stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let a = u64::from_str_radix(w.next()?, 16).ok()?;
            let t = w.next()?;
            let n = w.next()?;
            matches!(t, "t" | "T").then(|| (a, n.to_string()))
        })
        .collect();
    // The same for the TDX host code (arch/x86/virt/vmx/tdx/tdx.c, its tdh_ wrappers), where the
    // kernel has it and outside KVM's range: the --tdx flavour.
    let range = |prefix: &str| {
        let ix: Vec<usize> = (0..syms.len()).filter(|&i| syms[i].1.starts_with(prefix)).collect();
        let (lo, hi) = (*ix.first()?, *ix.last()?);
        Some((syms[lo].0, syms.get(hi + 1).map(|s| s.0).unwrap_or(u64::MAX)))
    };
    let kvm = range("kvm_").ok_or(format!("{}: no kvm_ symbols", vmlinux.display()))?;
    let mut ranges = vec![kvm];
    ranges.extend(range("tdh_").filter(|&(s, e)| e <= kvm.0 || s >= kvm.1));
    let mut out = Vec::new();
    for (start, stop) in ranges {
        let mut child = Command::new("objdump")
            .args(["-d", "--no-show-raw-insn"])
            .arg(format!("--start-address=0x{start:x}"))
            .arg(format!("--stop-address=0x{stop:x}"))
            .arg(vmlinux)
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("objdump: {e} (binutils)"))?;
        let mut after_call = false;
        for line in BufReader::new(child.stdout.take().expect("piped")).lines().map_while(Result::ok) {
            let Some((addr, rest)) = line.trim_start().split_once(":\t") else { continue };
            let Ok(a) = u64::from_str_radix(addr, 16) else { continue };
            if after_call {
                out.push(a);
            }
            after_call = rest.contains("<__sanitizer_cov_trace_pc>");
        }
        let _ = child.wait();
    }
    let text: String = out.iter().map(|a| format!("{a:x}\n")).collect();
    let _ = std::fs::write(&cache, text);
    Ok(out)
}

/// Source places of `pcs` (addr2line -f), paths relative to the kernel tree.
fn locate(vmlinux: &Path, pcs: &[u64]) -> Result<Vec<Loc>, String> {
    let mut child = Command::new("addr2line")
        .args(["-f", "-e"])
        .arg(vmlinux)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("addr2line: {e} (binutils)"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let input: String = pcs.iter().map(|p| format!("{p:x}\n")).collect();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().map_err(|e| format!("addr2line: {e}"))?;
    let _ = writer.join();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    Ok(lines
        .chunks(2)
        .map(|c| {
            let func = c[0].to_string();
            let (file, line) = c.get(1).and_then(|l| l.rsplit_once(':')).unwrap_or(("?", "0"));
            // Relative to the tree (virt/kvm is built from arch/x86/kvm as ../../../virt/kvm).
            let file = normalize(file);
            let file = ["arch/", "virt/", "mm/", "include/", "kernel/", "lib/"]
                .iter()
                .filter_map(|d| file.find(&format!("/{d}")).map(|i| file[i + 1..].to_string()))
                .next()
                .unwrap_or(file);
            let line = line.split_whitespace().next().unwrap_or("0").parse().unwrap_or(0);
            Loc { file: file.to_string(), line, func }
        })
        .collect())
}

/// `a/b/../c` as `a/c`.
fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            ".." => {
                parts.pop();
            }
            "." => {}
            p => parts.push(p),
        }
    }
    parts.join("/")
}

#[derive(Default)]
struct FileCov {
    coverable: BTreeSet<u32>,
    covered: BTreeSet<u32>,
    funcs: BTreeSet<String>,
    funcs_reached: BTreeSet<String>,
}

/// The numbers a person reads first.
pub struct Summary {
    /// (file, lines covered, lines coverable, functions reached, functions)
    pub files: Vec<(String, usize, usize, usize, usize)>,
}

impl Summary {
    pub fn file(&self, name: &str) -> Option<&(String, usize, usize, usize, usize)> {
        self.files.iter().find(|f| f.0 == name)
    }
}

/// Write the page for the `reached` PCs to `out`; `tree` is the kernel source the vmlinux was
/// built from.
pub fn write_page(vmlinux: &Path, tree: &Path, reached: &BTreeSet<u64>, out: &Path) -> Result<Summary, String> {
    let all = coverable(vmlinux)?;
    let locs = locate(vmlinux, &all)?;
    let mut files: BTreeMap<String, FileCov> = BTreeMap::new();
    for (pc, loc) in all.iter().zip(&locs) {
        if !wanted(&loc.file, &loc.func) {
            continue;
        }
        let f = files.entry(loc.file.clone()).or_default();
        f.coverable.insert(loc.line);
        f.funcs.insert(loc.func.clone());
        if reached.contains(pc) {
            f.covered.insert(loc.line);
            f.funcs_reached.insert(loc.func.clone());
        }
    }
    let pct = |a: usize, b: usize| if b == 0 { 0.0 } else { 100.0 * a as f64 / b as f64 };
    let mut html = String::from(
        "<!doctype html><meta charset=utf-8><title>privmem: kernel coverage</title><style>\
         body{font:13px sans-serif}table{border-collapse:collapse}td,th{padding:2px 8px;border:1px solid #ccc}\
         pre{font:12px monospace;margin:0}.c{background:#c8f0c8}.u{background:#f6c6c6}.bar{background:#eee;width:200px}\
         .bar div{background:#4a4;height:10px}</style><h1>Kernel coverage of the lab run</h1>\
         <p>Lines of KVM's MMU, guest_memfd, the memslot/attribute parts of kvm_main.c and, where the kernel has them, KVM's and the host's TDX code that KCOV saw \
         (green) or could have seen (red).</p><table><tr><th>file<th>lines<th><th>functions",
    );
    let mut summary = Summary { files: Vec::new() };
    for (name, f) in &files {
        let (c, t) = (f.covered.len(), f.coverable.len());
        let (fr, ft) = (f.funcs_reached.len(), f.funcs.len());
        summary.files.push((name.clone(), c, t, fr, ft));
        html += &format!(
            "<tr><td><a href='#{name}'>{name}</a><td>{c}/{t} ({:.1}%)<td><div class=bar><div style='width:{:.0}%'></div></div><td>{fr}/{ft} ({:.1}%)",
            pct(c, t),
            pct(c, t),
            pct(fr, ft)
        );
    }
    html += "</table>";
    for (name, f) in &files {
        let src = std::fs::read_to_string(tree.join(name)).unwrap_or_default();
        html += &format!("<h2 id='{name}'>{name}</h2><pre>");
        for (i, line) in src.lines().enumerate() {
            let n = i as u32 + 1;
            let class = if f.covered.contains(&n) {
                " class=c"
            } else if f.coverable.contains(&n) {
                " class=u"
            } else {
                ""
            };
            let esc = line.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
            html += &format!("<span{class}>{n:5} {esc}</span>\n");
        }
        html += "</pre>";
    }
    crate::report::write_atomic(out, html.as_bytes()).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(summary)
}

/// One kernel source file's coverage on `lab --coverage`'s page.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FileCoverage {
    pub file: String,
    pub lines_covered: usize,
    pub lines: usize,
    pub functions_reached: usize,
    pub functions: usize,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CoverageSummary {
    pub page: String,
    pub files: Vec<FileCoverage>,
}

/// `privmem lab --coverage PAGE`: the PCs the run reached, as lines of the lab kernel's KVM sources. The
/// kernel must be a KCOV build (`build-kernel.sh --debug`): its vmlinux and source tree sit
/// beside it in the cache.
pub fn lab_page(kernel: &Path, reached: &BTreeSet<u64>, page: &Path) -> Result<CoverageSummary, String> {
    if reached.is_empty() {
        return Err("--coverage: the lab kernel recorded no coverage (build it with `ci/lab/build-kernel.sh --debug`, which has KCOV)".into());
    }
    let name = kernel.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let key = name
        .strip_prefix("bzImage-")
        .ok_or(format!("--coverage: {} is not a lab build (bzImage-KEY)", kernel.display()))?;
    let dir = kernel.parent().unwrap_or(Path::new("."));
    let vmlinux = dir.join(format!("vmlinux-{key}"));
    let tree = std::fs::read_to_string(dir.join(format!("tree-{key}")))
        .map_err(|e| format!("--coverage: the build's source tree: {e}"))?;
    let s = write_page(&vmlinux, Path::new(tree.trim()), reached, page)?;
    let files = s
        .files
        .iter()
        .map(|(f, c, t, fr, ft)| FileCoverage {
            file: f.clone(),
            lines_covered: *c,
            lines: *t,
            functions_reached: *fr,
            functions: *ft,
        })
        .collect();
    Ok(CoverageSummary { page: page.display().to_string(), files })
}
