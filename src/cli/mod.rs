//! The command line: one binary, one subcommand per job, one file per subcommand. Exit codes
//! follow `check`: 0 pass, 1 fail, 2 inconclusive, 3 unusable input or usage error.

use clap::{Parser, Subcommand};

mod assets;
mod check;
mod doctor;
pub mod drive;
mod export;
mod fsm;
mod progress;
mod record;
pub mod view;

/// Exit codes shared by every command that produces a verdict.
pub mod exit {
    pub const PASS: i32 = 0;
    pub const FAIL: i32 = 1;
    pub const INCONCLUSIVE: i32 = 2;
    pub const UNUSABLE: i32 = 3;
}

/// `migscope --version`: the version, the git commit it was built from (`-dirty` when a source
/// differed), the SHA-256 of the embedded eBPF probe object and the aya version (build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("MIGSCOPE_GIT_COMMIT"),
    ", probe sha256 ",
    env!("MIGSCOPE_PROBE_SHA256"),
    ", aya ",
    env!("MIGSCOPE_AYA_VERSION"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "migscope",
    version = VERSION,
    about = "Trace, drive and verify VFIO device live migration",
    long_about = "migscope proves whether a VFIO device really stopped issuing DMA and interrupts \
                  when it was quiesced for live migration (RUNNING_P2P / STOP), and whether the \
                  migration state machine and multi-device ordering were respected."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Verify a trace against the rules (the CI gate).
    Check(check::Args),
    /// Explain the kernel migration FSM: paths, the full table, legacy v1 values.
    #[command(subcommand)]
    Fsm(fsm::Cmd),
    /// Record VFIO migration activity with the eBPF probe (e.g. beside a running QEMU).
    Record(record::Args),
    /// Drive real VFIO devices through a migration plan with the probe attached.
    Drive(drive::Args),
    /// Convert a trace or produce a report (JSONL, native, Perfetto, Markdown).
    Export(export::Args),
    /// Replay a trace in the timeline TUI.
    View(view::ViewArgs),
    /// Live timeline TUI over the eBPF probe (`--pid`), or over a trace being written (`--follow`).
    Watch(view::WatchArgs),
    /// What this host can see: kernel, BTF, each hook, VFIO devices, blind rules.
    Doctor(doctor::Args),
}

/// `migscope __dist-assets DIR` writes the man pages and completions into DIR for `cargo xtask
/// dist`; outside the command line (and so outside the pages and completions themselves).
pub fn dist_assets(args: &[std::ffi::OsString]) -> Option<i32> {
    let [_, cmd, dir] = args else { return None };
    if cmd != "__dist-assets" {
        return None;
    }
    let dir = std::path::Path::new(dir);
    Some(match assets::write(dir) {
        Ok(()) => exit::PASS,
        Err(e) => unusable(format!("{}: {e}", dir.display())),
    })
}

/// Runs the command line and returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    if matches!(
        cli.command,
        Command::Record(_) | Command::Drive(_) | Command::Watch(_) | Command::Doctor(_)
    ) {
        // Commands that attach the probe: tracefs first, said in one line when we mounted it
        // (when it cannot be mounted, the hooks it leaves unavailable say so, once).
        let t = crate::capture::tracefs::ensure();
        if let (crate::capture::tracefs::Tracefs::Mounted(_), Some(line)) = (&t, t.notice()) {
            eprintln!("{line}");
        }
    }
    match cli.command {
        Command::Check(a) => check::run(a),
        Command::Fsm(c) => fsm::run(c),
        Command::Record(a) => record::run(a),
        Command::Drive(a) => drive::run(a),
        Command::Export(a) => export::run(a),
        Command::View(a) => view::run_view(a),
        Command::Watch(a) => view::run_watch(a),
        Command::Doctor(a) => doctor::run(a),
    }
}

/// The verifier options every command with a verdict takes (`check`, `record --check`,
/// `export`, `view`, `watch`), with one meaning everywhere.
#[derive(Debug, Default, clap::Args)]
pub struct RuleArgs {
    /// What counts while a device is in RUNNING_P2P / PRE_COPY_P2P: `strict` (no DMA, no
    /// interrupts: the seed's NDMA meaning) or `p2p-only` (only peer-to-peer DMA counts).
    #[arg(long, default_value = "strict", value_parser = parse_policy)]
    pub p2p_policy: crate::verify::P2pPolicy,
    /// Fail a SET into a quiescent state that takes longer than N milliseconds.
    #[arg(long, value_name = "N")]
    pub max_quiesce_ms: Option<u64>,
    /// Fail any SET that stays open longer than N milliseconds (`set-timeout`: a hung arc),
    /// including one still open when the trace ends.
    #[arg(long, value_name = "N")]
    pub max_set_ms: Option<u64>,
    /// Accept a blind spot as a warning instead of an inconclusive verdict (only `dma`).
    #[arg(long, value_name = "SPOT", value_parser = ["dma"])]
    pub accept_blind: Vec<String>,
}

/// `--format` of the commands that write a trace as they record.
fn parse_format(s: &str) -> Result<crate::trace::Format, String> {
    match s {
        "jsonl" => Ok(crate::trace::Format::Jsonl),
        "native" => Ok(crate::trace::Format::Native),
        _ => Err(format!("unknown format `{s}` (expected jsonl or native)")),
    }
}

fn parse_policy(s: &str) -> Result<crate::verify::P2pPolicy, String> {
    crate::verify::P2pPolicy::parse(s)
        .ok_or_else(|| format!("unknown policy `{s}` (expected strict or p2p-only)"))
}

impl RuleArgs {
    pub fn options(&self) -> crate::verify::Options {
        crate::verify::Options {
            p2p_policy: self.p2p_policy,
            max_quiesce_ms: self.max_quiesce_ms,
            max_set_ms: self.max_set_ms,
            accept_blind_dma: self.accept_blind.iter().any(|s| s == "dma"),
        }
    }

    /// The same options as `check` flags (for "commands to reproduce").
    pub fn check_flags(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.p2p_policy == crate::verify::P2pPolicy::P2pOnly {
            v.push("--p2p-policy p2p-only".to_owned());
        }
        if let Some(n) = self.max_quiesce_ms {
            v.push(format!("--max-quiesce-ms {n}"));
        }
        if let Some(n) = self.max_set_ms {
            v.push(format!("--max-set-ms {n}"));
        }
        for b in &self.accept_blind {
            v.push(format!("--accept-blind {b}"));
        }
        v
    }

    /// Whether any option differs from its default.
    pub fn is_default(&self) -> bool {
        self.check_flags().is_empty()
    }
}

/// An error with its sources, `: `-separated (one function for every command).
pub(crate) use crate::capture::diagnose::chain as error_chain;

/// A capture that could not start, in one line naming the cause and its fix.
pub(crate) fn capture_error(e: &crate::capture::CaptureError) -> String {
    let host = crate::capture::diagnose::Host::read();
    crate::capture::diagnose::explain(e, &host)
}

/// Prints an error for a command that could not start and returns [`exit::UNUSABLE`].
pub(crate) fn unusable(err: impl std::fmt::Display) -> i32 {
    eprintln!("migscope: {err}");
    exit::UNUSABLE
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_irq_detail_help_states_the_probes_bin_width() {
        let want = format!(
            "counted per {} ms",
            probe_common::abi::IRQ_BIN_NS_DEFAULT / 1_000_000
        );
        let cmd = super::Cli::command();
        for sub in ["record", "drive", "watch"] {
            let arg = cmd
                .find_subcommand(sub)
                .and_then(|c| c.get_arguments().find(|a| a.get_id() == "irq_detail"))
                .unwrap_or_else(|| panic!("{sub} has no --irq-detail"));
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            assert!(
                help.contains(&want),
                "{sub} --irq-detail: `{help}` lacks `{want}`"
            );
        }
    }
}
