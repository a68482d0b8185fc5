//! `cargo xtask test`: the full suite as CI runs it — set-up, every cargo test of the default
//! members (unit, property, CLI, TUI, and the privileged eBPF probe tests when root), then every
//! lab scenario on 6.12 and on the 6.1 baseline. A lab that cannot run here is reported as
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
    eprintln!("xtask test: {lab_line}");
    Ok(if !cargo_ok {
        1
    } else if lab_code == EXIT_SKIPPED {
        0
    } else {
        lab_code
    })
}
