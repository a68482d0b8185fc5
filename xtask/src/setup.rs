//! Installs what building and testing migscope needs on a fresh machine, idempotently: the
//! nightly toolchain with rust-src, clippy and bpf-linker (the eBPF probe), the musl target
//! (the lab's static guest binary), and the Debian tools the tests drive (tmux, xmllint).

use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

/// bpf-linker 0.10.x links rustc's own LLVM; 0.11+ wants a system LLVM Debian 12 lacks.
const BPF_LINKER_VERSION: &str = "0.10.3";

fn quiet_ok(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn output(cmd: &mut Command) -> Option<String> {
    cmd.stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

fn run(what: &str, cmd: &mut Command) -> Result<()> {
    eprintln!("setup: {what}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run: {what}"))?;
    if !status.success() {
        bail!("setup step failed ({status}): {what}");
    }
    Ok(())
}

/// nightly + rust-src + clippy + bpf-linker + the musl target.
pub fn toolchain() -> Result<()> {
    if !quiet_ok(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])) {
        run(
            "rustup toolchain install nightly --profile minimal --component rust-src",
            Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
                "--component",
                "rust-src",
            ]),
        )?;
    }
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .unwrap_or_default();
    // rust-src builds the probe; clippy lints it for the bpf target (.ci/run).
    for component in ["rust-src", "clippy"] {
        if !installed.lines().any(|l| l.starts_with(component)) {
            run(
                &format!("rustup component add {component} --toolchain nightly"),
                Command::new("rustup").args([
                    "component",
                    "add",
                    component,
                    "--toolchain",
                    "nightly",
                ]),
            )?;
        }
    }
    let linker = output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if !linker.contains(BPF_LINKER_VERSION) {
        run(
            &format!("cargo install bpf-linker --version {BPF_LINKER_VERSION} --locked"),
            Command::new("cargo").args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
            ]),
        )?;
    }
    let targets =
        output(Command::new("rustup").args(["target", "list", "--installed"])).unwrap_or_default();
    if !targets
        .lines()
        .any(|l| l.trim() == "x86_64-unknown-linux-musl")
    {
        run(
            "rustup target add x86_64-unknown-linux-musl",
            Command::new("rustup").args(["target", "add", "x86_64-unknown-linux-musl"]),
        )?;
    }
    Ok(())
}

/// Debian packages the tests use (tmux for the TUI end-to-end test, xmllint for the JUnit
/// schema test). Missing ones are installed when we are root with apt-get; otherwise those
/// tests say SKIP and why.
pub fn test_tools() -> Result<()> {
    let missing: Vec<&str> = [("tmux", "tmux"), ("xmllint", "libxml2-utils")]
        .into_iter()
        .filter(|(bin, _)| !quiet_ok(Command::new("sh").args(["-c", &format!("command -v {bin}")])))
        .map(|(_, pkg)| pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let root = output(Command::new("id").arg("-u")).is_some_and(|s| s.trim() == "0");
    if !root || !quiet_ok(Command::new("sh").args(["-c", "command -v apt-get"])) {
        eprintln!(
            "setup: not installing {} (needs root and apt-get); the tests that use them will SKIP",
            missing.join(" ")
        );
        return Ok(());
    }
    run(
        "apt-get update",
        Command::new("apt-get").args(["-q", "update"]),
    )?;
    let mut cmd = Command::new("apt-get");
    cmd.args(["-q", "install", "-y", "--no-install-recommends"])
        .args(&missing);
    cmd.env("DEBIAN_FRONTEND", "noninteractive");
    run(
        &format!("apt-get install -y {}", missing.join(" ")),
        &mut cmd,
    )
}
