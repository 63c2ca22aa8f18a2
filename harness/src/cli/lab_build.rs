//! What a lab run is built from: this checkout, the lab kernel of a version (built or reused by
//! `ci/lab/build-kernel.sh`) and the static privmem the lab runs as init.

use std::path::{Path, PathBuf};

pub fn repo() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    p.canonicalize().unwrap_or(p)
}

/// The lab kernel of a name in `ci/lab/kernels`, built or reused by
/// `ci/lab/build-kernel.sh`; the time it took is printed, so a cold build shows its cost.
pub fn default_kernel(version: &str) -> Result<PathBuf, String> {
    flavour_kernel(version, &[])
}

/// The 7.3 flavour with privmem's software TDX module (`build-kernel.sh --tdx`).
pub fn tdx_kernel() -> Result<PathBuf, String> {
    flavour_kernel(crate::lab::kernels::tdx().name, &["--tdx"])
}

fn flavour_kernel(version: &str, flavour: &[&str]) -> Result<PathBuf, String> {
    let script = repo().join("ci/lab/build-kernel.sh");
    eprintln!(
        "lab: building (or reusing) the {version} kernel{} with {}",
        flavour.iter().map(|f| format!(" {f}")).collect::<String>(),
        script.display()
    );
    let t0 = std::time::Instant::now();
    let out = std::process::Command::new("bash")
        .arg(&script)
        .args(["--version", version])
        .args(flavour)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("{}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!("{} --version {version} failed", script.display()));
    }
    eprintln!("lab: kernel {version} ready in {:.1} s", t0.elapsed().as_secs_f64());
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// A kernel named by lab kernel name (`ci/lab/kernels`: built or reused) or by a bzImage path.
pub fn resolve_kernel(k: &str) -> Result<PathBuf, String> {
    match crate::lab::kernels::named(k) {
        Some(_) => default_kernel(k),
        None => Ok(PathBuf::from(k)),
    }
}

pub const BUILD_INIT: &str = "build it with `rustup target add x86_64-unknown-linux-musl && \
     cargo build --release --target x86_64-unknown-linux-musl -p privmem`, or name one with --init";

/// The static privmem the lab runs as `/init`, built from this checkout so that it is never
/// older than the privmem reading its output: the musl target installed first (a fresh
/// machine has the pinned toolchain but not its targets), then an incremental build.
pub fn build_init() -> Result<PathBuf, String> {
    let out = repo().join("target/x86_64-unknown-linux-musl/release/privmem");
    if !repo().join("Cargo.toml").is_file() {
        return Ok(out); // not a checkout: whatever is there, or the error names the command
    }
    let run = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .current_dir(repo())
            .stdout(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
    };
    let target = "x86_64-unknown-linux-musl";
    let installed =
        std::process::Command::new("rustup").args(["target", "list", "--installed"]).current_dir(repo()).output();
    // No rustup: the toolchain came some other way and must bring its own targets.
    if let Ok(o) = installed {
        if !String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == target) {
            eprintln!("lab: installing the {target} target (rustup target add {target})");
            if !run("rustup", &["target", "add", target]).unwrap_or(false) {
                return Err(format!("rustup target add {target} failed; {BUILD_INIT}"));
            }
        }
    }
    match run("cargo", &["build", "--release", "--quiet", "--target", target, "-p", "privmem"]) {
        Ok(true) => Ok(out),
        _ => Err(format!("building the lab's static privmem failed; {BUILD_INIT}")),
    }
}
