//! Builds the eBPF probe (`probe-ebpf`) for the bpf target with aya-build and leaves the object
//! in `OUT_DIR/probe`, which `capture` embeds. Checks the eBPF toolchain first so a missing piece
//! is one clear error naming the command that installs it. Then the facts `--version` prints:
//! the git commit (`-dirty` when a source of the binary differs from it), the SHA-256 of the
//! probe object and the aya version locked in `Cargo.lock`.
//!
//! `AYA_BUILD_SKIP=1` (or `true`, aya-build's own switch and spelling) builds without the eBPF
//! toolchain: no probe is built or embedded (an empty object), and `capture` then reports every
//! hook unavailable, "built without the probe (AYA_BUILD_SKIP)", so `record`, `watch`, `drive`
//! and `doctor` say why they see nothing instead of failing to build.

use std::{path::Path, path::PathBuf, process::Command};

use sha2::Digest as _;

use anyhow::{Context as _, anyhow};

const NIGHTLY: &str = "nightly";

/// aya-build's switch: set to `1` or `true`, nothing is built for the bpf target.
const AYA_BUILD_SKIP: &str = "AYA_BUILD_SKIP";

fn skip_probe() -> bool {
    println!("cargo:rerun-if-env-changed={AYA_BUILD_SKIP}");
    std::env::var_os(AYA_BUILD_SKIP).is_some_and(|v| v.eq("1") || v.eq_ignore_ascii_case("true"))
}

fn main() -> anyhow::Result<()> {
    if skip_probe() {
        let out_dir = std::env::var("OUT_DIR").context("OUT_DIR")?;
        // An empty object: `capture` knows it as "built without the probe".
        std::fs::write(Path::new(&out_dir).join("probe"), b"").context("writing OUT_DIR/probe")?;
        println!("cargo:warning={AYA_BUILD_SKIP} is set: building without the eBPF probe");
        return version_facts();
    }
    check_toolchain()?;
    let meta = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata failed")?;
    let pkg = meta
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "probe-ebpf")
        .ok_or_else(|| anyhow!("probe-ebpf package not found in the workspace"))?;
    let root_dir = pkg
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("probe-ebpf manifest has no parent directory"))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: pkg.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(NIGHTLY),
    )?;
    version_facts()
}

/// The sources of the binary: what `-dirty` is judged on, and what reruns this script.
const SOURCES: [&str; 8] = [
    "src",
    "core",
    "tui",
    "probe-common",
    "probe-ebpf",
    "build.rs",
    "Cargo.toml",
    "Cargo.lock",
];

/// `MIGSCOPE_GIT_COMMIT`, `MIGSCOPE_PROBE_SHA256`, `MIGSCOPE_AYA_VERSION` for `--version`.
fn version_facts() -> anyhow::Result<()> {
    let out_dir = std::env::var("OUT_DIR").context("OUT_DIR")?;
    let probe =
        std::fs::read(Path::new(&out_dir).join("probe")).context("reading the probe object")?;
    let hex: String = if probe.is_empty() {
        "none (built with AYA_BUILD_SKIP)".to_owned()
    } else {
        let hash = sha2::Sha256::digest(&probe);
        hash.iter().map(|b| format!("{b:02x}")).collect()
    };
    println!("cargo:rustc-env=MIGSCOPE_PROBE_SHA256={hex}");

    let manifest = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let root = Path::new(&manifest);
    let lock = root.join("Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let aya = std::fs::read_to_string(&lock)
        .ok()
        .and_then(|l| locked_version(&l, "aya"))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=MIGSCOPE_AYA_VERSION={aya}");

    // Packagers building from a source tarball without .git can say it themselves.
    println!("cargo:rerun-if-env-changed=MIGSCOPE_GIT_COMMIT");
    let commit = match std::env::var("MIGSCOPE_GIT_COMMIT") {
        Ok(c) if !c.is_empty() => c,
        _ => git_commit(root),
    };
    println!("cargo:rustc-env=MIGSCOPE_GIT_COMMIT={commit}");
    Ok(())
}

/// The version of `name` in a Cargo.lock text.
fn locked_version(lock: &str, name: &str) -> Option<String> {
    let mut lines = lock.lines();
    while let Some(l) = lines.next() {
        if l.trim() == format!("name = \"{name}\"") {
            let v = lines.next()?.trim().strip_prefix("version = \"")?;
            return Some(v.trim_end_matches('"').to_owned());
        }
    }
    None
}

fn git(root: &Path, args: &[&str]) -> Option<String> {
    let o = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_owned())
}

/// The commit (12 hex digits), `-dirty` when a tracked source of the binary differs from it,
/// `unknown` outside a git checkout. Reruns when HEAD, the branch or a source moves (not on
/// the index, which `git status` rewrites: staging does not change what is built).
fn git_commit(root: &Path) -> String {
    let Some(commit) = git(root, &["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".to_owned();
    };
    let mut watch = vec![
        git(root, &["rev-parse", "--git-path", "HEAD"]),
        git(root, &["rev-parse", "--git-path", "packed-refs"]),
    ];
    if let Some(r) = git(root, &["symbolic-ref", "-q", "HEAD"]) {
        watch.push(git(root, &["rev-parse", "--git-path", &r]));
    }
    for p in watch.into_iter().flatten() {
        let p = Path::new(&p);
        let p = if p.is_absolute() {
            p.to_path_buf()
        } else {
            root.join(p)
        };
        // A watched path that does not exist (no packed-refs yet) would rerun every build.
        if p.exists() {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    }
    for s in SOURCES {
        println!("cargo:rerun-if-changed={}", root.join(s).display());
    }
    let mut args = vec!["status", "--porcelain", "--untracked-files=no", "--"];
    args.extend(SOURCES);
    match git(root, &args) {
        Some(s) if s.is_empty() => commit,
        Some(_) => format!("{commit}-dirty"),
        None => format!("{commit}-unknown-state"),
    }
}

/// nightly + rust-src + bpf-linker, or one error listing what is missing and how to get it.
fn check_toolchain() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=PATH");
    let mut missing: Vec<&str> = Vec::new();
    let sysroot = Command::new("rustup")
        .args(["run", NIGHTLY, "rustc", "--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim().to_owned()));
    match sysroot {
        None => missing.push("rustup toolchain install nightly --component rust-src"),
        Some(root) => {
            if !root.join("lib/rustlib/src/rust/library/core").is_dir() {
                missing.push("rustup component add rust-src --toolchain nightly");
            }
        }
    }
    let linker_ok = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !linker_ok {
        missing.push("cargo install bpf-linker --version 0.10.3 --locked");
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(anyhow!(
            "the eBPF probe cannot be built: missing {}. Install with: {}",
            if missing.len() == 1 {
                "one tool"
            } else {
                "tools"
            },
            missing.join(" && ")
        ))
    }
}
