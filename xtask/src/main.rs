//! Developer tasks: the lab VM, the demo, the CI entry.

mod lab;

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};

use lab::runner::{self, Options, Outcome};
use lab::{Kernel, scenario};

/// Exit status when the machine cannot run the lab VM at all (automake's "skipped").
const EXIT_SKIPPED: u8 = 77;

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
    /// The CI entry: the lab on 6.12 (all scenarios), then the 6.1 baseline.
    Ci,
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
        Cmd::Lab(a) => lab_cmd(a),
        Cmd::Demo(a) => lab::demo::run(a.kernel),
        Cmd::Ci => ci(),
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
            println!("{:<22} expect {:<12} {}{when}", s.name, s.expected, s.about);
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

fn ci() -> Result<u8> {
    let mut worst = 0u8;
    for kernel in [Kernel::K612, Kernel::K61] {
        let opts = Options {
            scenarios: scenario::ALL.iter().filter(|s| !s.on_request).collect(),
            kernel,
            json: false,
            keep: false,
            verbose: false,
            refresh: false,
        };
        let code = report(&opts, runner::run(&opts)?)?;
        if code == EXIT_SKIPPED {
            return Ok(EXIT_SKIPPED);
        }
        worst = worst.max(code);
    }
    Ok(worst)
}
