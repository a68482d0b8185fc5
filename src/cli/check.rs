//! `migscope check`: verify a trace against the rules; the CI gate.

use std::path::PathBuf;

use crate::verify::{self, Options, Report};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Trace to check (JSONL or native, told apart by content; `-` reads standard input).
    pub file: PathBuf,
    /// Print the verdict as JSON (TRACE-FORMAT.md "Verdict"); the same as `--format json`.
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// How to print the verdict: `text` (for people), `json` (TRACE-FORMAT.md "Verdict") or
    /// `github` (GitHub Actions workflow commands: `::error file=F,line=L,title=RULE::...` per
    /// violation, `::warning` per warning and blind spot).
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutputFormat,
    #[command(flatten)]
    pub rules: super::RuleArgs,
    /// Also write the verdict as JUnit XML to FILE (for CI test reporters).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
    Github,
}

impl Args {
    pub fn options(&self) -> Options {
        self.rules.options()
    }

    fn output(&self) -> OutputFormat {
        if self.json {
            OutputFormat::Json
        } else {
            self.format
        }
    }
}

pub fn run(args: Args) -> i32 {
    match verify::check_path(&args.file, args.options()) {
        Ok(report) => {
            let name = args.file.display().to_string();
            match args.output() {
                OutputFormat::Json => println!("{}", report.to_json()),
                OutputFormat::Text => print!("{}", human(&report, &name)),
                OutputFormat::Github => print!("{}", crate::export::github::render(&report, &name)),
            }
            if let Some(j) = &args.junit
                && let Err(e) =
                    crate::export::junit::write(&report, &crate::export::trace_name(&args.file), j)
            {
                return super::unusable(e);
            }
            report.verdict.exit_code()
        }
        Err(e) => {
            if args.output() == OutputFormat::Github {
                let name = args.file.display().to_string();
                print!(
                    "{}",
                    crate::export::github::render_error(&name, e.line(), &e.to_string())
                );
            }
            if let Some(j) = &args.junit
                && let Err(je) = crate::export::junit::write_error(
                    &crate::export::trace_name(&args.file),
                    &e.to_string(),
                    j,
                )
            {
                eprintln!("migscope: {je}");
            }
            super::unusable(e)
        }
    }
}

/// The human report: one line per violation, then warnings and blind spots, then a summary.
pub fn human(r: &Report, name: &str) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let line = |o: &mut String, kind: &str, f: &verify::Finding| {
        let _ = writeln!(
            o,
            "{kind} {:<24} {:<14} t={:<14} line {:<6} {}",
            f.rule,
            f.dev.as_deref().unwrap_or("-"),
            f.t,
            f.line,
            f.detail
        );
    };
    for v in &r.violations {
        line(&mut o, "VIOLATION", v);
    }
    for w in &r.warnings {
        line(&mut o, "warning  ", w);
    }
    for b in &r.blind_spots {
        let why = r
            .blind_spot_details
            .get(b)
            .map(String::as_str)
            .unwrap_or("");
        let _ = writeln!(o, "blind spot {b}: {why}");
    }
    let _ = writeln!(
        o,
        "{name}: {} — {} events, {} devices, {} violation(s){}, {} warning(s), {} blind spot(s){}",
        r.verdict.name().to_uppercase(),
        r.events,
        r.devices.len(),
        r.violations.len(),
        if r.dropped_findings > 0 {
            format!(" (+{} not stored)", r.dropped_findings)
        } else {
            String::new()
        },
        r.warnings.len(),
        r.blind_spots.len(),
        if r.violations.is_empty() {
            String::new()
        } else {
            format!(" [{}]", r.violated_rules().join(", "))
        }
    );
    for (dev, d) in &r.devices {
        if d.quiesce_count > 0 {
            let _ = writeln!(
                o,
                "  {dev}: {} quiesce(s), max {:.3} ms; {} DMA / {} IRQ evidence, {} / {} while quiesced",
                d.quiesce_count,
                d.quiesce_max_ns as f64 / 1e6,
                d.dma,
                d.irq,
                d.dma_quiesced,
                d.irq_quiesced
            );
        }
    }
    o
}
