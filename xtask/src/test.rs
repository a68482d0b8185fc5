//! `cargo xtask test`: the full suite as CI runs it — set-up, every cargo test of the default
//! members (unit, property, CLI, TUI, and the privileged eBPF probe tests when root), the
//! release artefacts (`cargo xtask dist`, checked), then every lab scenario on 6.12 and on the 6.1 baseline. A lab that cannot run here is reported as
//! skipped with the reason, never as passed.

use std::process::Command;

use anyhow::{Context as _, Result};

use crate::{EXIT_SKIPPED, setup};

pub fn run(skip_lab: bool) -> Result<u8> {
    setup::toolchain()?;
    setup::test_tools()?;
    eprintln!("xtask test: cargo test");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .arg("test")
        .status()
        .context("cannot run cargo test")?;
    let cargo_ok = status.success();
    // The release artefacts, checked (dpkg-deb --info/--contents, SHA256SUMS, static); the
    // lab below boots the binary packed in the tarball.
    eprintln!("xtask test: cargo xtask dist");
    let dist_line = match crate::dist::run_dist() {
        Ok(d) => format!(
            "dist: {} and {} checked ({})",
            d.tarball.display(),
            d.deb.display(),
            d.version_line
        ),
        Err(e) => format!("dist: FAILED: {e:#}"),
    };
    let dist_ok = !dist_line.starts_with("dist: FAILED");
    let mut lab_line = "lab: not run (--skip-lab)".to_owned();
    let mut lab_code = 0u8;
    if !skip_lab {
        let (code, line) = crate::ci()?;
        lab_code = code;
        lab_line = line;
    }
    eprintln!(
        "xtask test: cargo test {}",
        if cargo_ok { "passed" } else { "FAILED" }
    );
    eprintln!("xtask test: {dist_line}");
    eprintln!("xtask test: {lab_line}");
    Ok(if !cargo_ok || !dist_ok {
        1
    } else if lab_code == EXIT_SKIPPED {
        0
    } else {
        lab_code
    })
}
