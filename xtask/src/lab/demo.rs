//! `cargo xtask demo`: a short lab run (good device, early_p2p device, two-device ordering)
//! and its result: the TUI replay when a terminal is attached, the check report otherwise.

use anyhow::Result;

use super::Kernel;

pub fn run(_kernel: Kernel) -> Result<u8> {
    anyhow::bail!("demo: not wired yet")
}
