//! The lab: Debian's QEMU and kernels, our edu-mig variant driver, a static migscope, an
//! initramfs, and scenarios run in a VM with their verdicts checked on the host.

pub mod cpio;
pub mod demo;
pub mod fetch;
pub mod guest;
pub mod qemutrace;
pub mod runner;
pub mod scenario;
pub mod storm;
pub mod vm;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Guest kernels: 6.12 from bookworm-backports (main), Debian 12's own 6.1 (baseline).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kernel {
    #[value(name = "6.12")]
    K612,
    #[value(name = "6.1")]
    K61,
}

impl Kernel {
    pub fn name(self) -> &'static str {
        match self {
            Kernel::K612 => "6.12",
            Kernel::K61 => "6.1",
        }
    }
    pub fn suite(self) -> &'static str {
        match self {
            Kernel::K612 => "bookworm-backports",
            Kernel::K61 => "bookworm",
        }
    }
}

/// Workspace paths.
pub struct Paths {
    pub root: PathBuf,
    /// What is fetched from Debian (packages, kernels, QEMU): identical for every checkout, so
    /// `MIGSCOPE_LAB_CACHE` may point several checkouts at one copy.
    pub cache: PathBuf,
    /// What is built from this checkout's sources (edu-mig, the self-test): never shared.
    pub build: PathBuf,
    pub out: PathBuf,
}

impl Paths {
    pub fn new() -> Result<Self> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("xtask has no parent directory")?
            .to_path_buf();
        let cache = std::env::var_os("MIGSCOPE_LAB_CACHE")
            .filter(|v| !v.is_empty())
            .map_or_else(|| root.join("target/lab-cache"), PathBuf::from);
        Ok(Paths {
            cache,
            build: root.join("target/lab-build"),
            out: root.join("target/lab"),
            root,
        })
    }
}

/// Runs a command, failing with its stderr when it exits non-zero.
pub fn run_checked(c: &mut Command) -> Result<()> {
    let out = c.output().with_context(|| format!("spawning {c:?}"))?;
    if !out.status.success() {
        bail!(
            "{c:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Runs a command and returns its stdout.
pub fn run_output(c: &mut Command) -> Result<String> {
    let out = c.output().with_context(|| format!("spawning {c:?}"))?;
    if !out.status.success() {
        bail!(
            "{c:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
