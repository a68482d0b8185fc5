//! Developer tasks: the lab VM, the demo, the full test suite (the CI entry), set-up.

mod agree;
mod bench;
mod dist;
mod lab;
mod progress;
mod setup;
mod test;

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};

use lab::runner::{self, Options, Outcome};
use lab::{Kernel, scenario};

/// Exit status when the machine cannot run the lab VM at all (automake's "skipped").
pub(crate) const EXIT_SKIPPED: u8 = 77;

#[derive(Parser)]
#[command(name = "xtask", about = "migscope developer tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the lab: Debian's kernel in QEMU with edu devices, our edu-mig variant driver,
    /// migscope inside; every scenario's verdict checked. Exit 0 all as expected, 1 not,
    /// 77 skipped (this machine cannot run the VM; says why).
    Lab(LabArgs),
    /// A short lab demo: a good device, an early_p2p device, two-device ordering.
    Demo(DemoArgs),
    /// The lab on 6.12 (all scenarios), then the 6.1 baseline.
    Ci,
    /// The full test suite (what `.ci/run` runs): set-up, `cargo test`, then `ci`.
    Test {
        /// Only set-up and `cargo test`.
        #[arg(long)]
        skip_lab: bool,
    },
    /// The release: a static (musl) migscope with the probe embedded, man pages and shell
    /// completions, packed as a tarball and a .deb with SHA256SUMS in target/dist (checked).
    Dist,
    /// Install what building and testing needs (nightly + rust-src, bpf-linker, musl target,
    /// tmux, xmllint), idempotently.
    Setup,
}

#[derive(clap::Args)]
struct LabArgs {
    #[command(subcommand)]
    step: Option<LabStep>,
    /// Run only this scenario (repeatable); `--scenario list` lists them.
    #[arg(long = "scenario", value_name = "NAME")]
    scenarios: Vec<String>,
    /// Print `{"scenarios":[...]}` on stdout.
    #[arg(long)]
    json: bool,
    /// Guest kernel.
    #[arg(long, value_enum, default_value = "6.12")]
    kernel: Kernel,
    /// Keep the initramfs under target/lab/vm-<kernel>/.
    #[arg(long)]
    keep: bool,
    /// Echo the guest console.
    #[arg(long, short)]
    verbose: bool,
    /// Refresh the private apt lists.
    #[arg(long)]
    refresh: bool,
}

#[derive(Subcommand)]
enum LabStep {
    /// Only fetch and build (packages, vmlinux, module, static migscope).
    Fetch,
}

#[derive(clap::Args)]
struct DemoArgs {
    /// Guest kernel.
    #[arg(long, value_enum, default_value = "6.12")]
    kernel: Kernel,
}

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("bench") {
        return bench::main(std::env::args().skip(2).collect());
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<u8> {
    match cli.cmd {
        Cmd::Lab(a) => {
            setup::toolchain()?;
            lab_cmd(a)
        }
        Cmd::Demo(a) => {
            setup::toolchain()?;
            lab::demo::run(a.kernel)
        }
        Cmd::Ci => {
            setup::toolchain()?;
            ci().map(|(code, _)| code)
        }
        Cmd::Test { skip_lab } => test::run(skip_lab),
        Cmd::Dist => dist::main(),
        Cmd::Setup => {
            setup::toolchain()?;
            setup::test_tools()?;
            Ok(0)
        }
    }
}

fn select(names: &[String]) -> Result<Vec<&'static scenario::Scenario>> {
    if names.iter().any(|n| n == "list") {
        for s in scenario::ALL {
            let when = if s.on_request {
                " (only when named)"
            } else {
                ""
            };
            println!("{:<26} expect {:<12} {}{when}", s.name, s.expected, s.about);
        }
        std::process::exit(0);
    }
    if names.is_empty() {
        return Ok(scenario::ALL.iter().filter(|s| !s.on_request).collect());
    }
    names
        .iter()
        .map(|n| match scenario::find(n) {
            Some(s) => Ok(s),
            None => bail!("unknown scenario {n} (try --scenario list)"),
        })
        .collect()
}

fn lab_cmd(a: LabArgs) -> Result<u8> {
    if let Some(LabStep::Fetch) = a.step {
        runner::prepare(a.kernel, a.refresh)?;
        return Ok(0);
    }
    let opts = Options {
        scenarios: select(&a.scenarios)?,
        kernel: a.kernel,
        json: a.json,
        keep: a.keep,
        verbose: a.verbose,
        refresh: a.refresh,
    };
    report(&opts, runner::run(&opts)?)
}

fn report(
    opts: &Options,
    (outcome, results): (Outcome, Vec<runner::ScenarioResult>),
) -> Result<u8> {
    if opts.json {
        let mut v = runner::summary_json(&results);
        if let Outcome::Skipped(why) = &outcome {
            v["skipped"] = serde_json::Value::String(why.clone());
        }
        println!("{v}");
    } else {
        runner::print_table(&results);
    }
    Ok(match outcome {
        Outcome::Ok => {
            eprintln!(
                "lab: {} scenarios as expected ({})",
                results.len(),
                opts.kernel.name()
            );
            0
        }
        Outcome::Unexpected => {
            eprintln!(
                "lab: UNEXPECTED verdicts on {} (see target/lab/<scenario>/)",
                opts.kernel.name()
            );
            1
        }
        Outcome::Skipped(why) => {
            eprintln!("lab: SKIPPED: this machine cannot run the lab VM: {why}");
            EXIT_SKIPPED
        }
    })
}

/// Every lab scenario on 6.12, then on 6.1. Returns the worst exit code and a closing line
/// `lab: N passed, N failed, N skipped` counting scenarios.
pub(crate) fn ci() -> Result<(u8, String)> {
    let mut worst = 0u8;
    let (mut passed, mut failed, mut skipped) = (0usize, 0usize, 0usize);
    let mut notes = Vec::new();
    for kernel in [Kernel::K612, Kernel::K61] {
        let opts = Options {
            scenarios: scenario::ALL.iter().filter(|s| !s.on_request).collect(),
            kernel,
            json: false,
            keep: false,
            verbose: false,
            refresh: false,
        };
        // Scenarios this kernel cannot run (PRE_COPY on 6.1, device DMA logging where the
        // kernel has no iova_bitmap): skipped with their reason, as the runner skips them.
        let (outcome, results, not_here) = match runner::cannot_fetch() {
            Some(why) => (Outcome::Skipped(why), Vec::new(), 0),
            None => {
                let p = runner::prepare(kernel, false)?;
                let not_here = opts
                    .scenarios
                    .iter()
                    .filter(|s| runner::skip_reason(s, kernel, &p.kernel).is_some())
                    .count();
                let (outcome, results) = runner::run_prepared(&p, &opts)?;
                (outcome, results, not_here)
            }
        };
        skipped += not_here;
        let wanted = opts.scenarios.len() - not_here;
        if let Outcome::Skipped(why) = &outcome {
            skipped += wanted;
            notes.push(format!("{} skipped: {why}", kernel.name()));
        } else {
            let ok = results.iter().filter(|r| r.ok).count();
            passed += ok;
            failed += results.len() - ok;
            // A scenario that never reported (VM died) counts as failed.
            failed += wanted.saturating_sub(results.len());
        }
        let code = report(&opts, (outcome, results))?;
        if code != EXIT_SKIPPED {
            worst = worst.max(code);
        }
    }
    if worst == 0 && passed == 0 && skipped > 0 {
        worst = EXIT_SKIPPED;
    }
    let mut line = format!("lab: {passed} passed, {failed} failed, {skipped} skipped");
    if !notes.is_empty() {
        line.push_str(&format!(" ({})", notes.join("; ")));
    }
    println!("{line}");
    Ok((worst, line))
}
