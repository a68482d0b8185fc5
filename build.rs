//! Builds the eBPF probe (`probe-ebpf`) for the bpf target with aya-build and leaves the object
//! in `OUT_DIR/probe`, which `capture` embeds. Checks the eBPF toolchain first so a missing piece
//! is one clear error naming the command that installs it.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, anyhow};

const NIGHTLY: &str = "nightly";

fn main() -> anyhow::Result<()> {
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
    )
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
