//! `migscope export`: convert a trace between JSONL and the native format, or turn it into a
//! Perfetto timeline or a Markdown bug report.

use std::{path::PathBuf, time::Instant};

use crate::{
    export::{ExportError, markdown, perfetto},
    trace::{JsonlWriter, NativeWriter, TraceError, open_any},
    verify::Options,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Chrome trace-event JSON for ui.perfetto.dev and chrome://tracing.
    Perfetto,
    /// A self-contained Markdown bug report.
    Markdown,
    /// The JSONL interchange format (TRACE-FORMAT.md).
    Jsonl,
    /// The compact native binary format.
    Native,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Trace to export (JSONL or native, told apart by content; `-` reads standard input).
    pub file: PathBuf,
    /// What to produce.
    #[arg(long, short = 'f', value_enum)]
    pub format: Format,
    /// Output file (written as FILE.partial, then renamed).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: PathBuf,
    /// Markdown: remove IOVAs and other hex addresses, pids and this host's name.
    #[arg(long)]
    pub redact: bool,
    /// Markdown: include the summary of a `migscope doctor --json` output saved in FILE.
    #[arg(long, value_name = "FILE")]
    pub doctor: Option<PathBuf>,
    /// Verification options for the verdict in reports (as in `check`).
    #[command(flatten)]
    pub rules: super::RuleArgs,
}

impl Args {
    fn options(&self) -> Options {
        self.rules.options()
    }
}

/// Converts between the two trace formats; returns the number of events and whether the
/// input ended inside a record (native, cut recording).
pub fn convert(
    input: &std::path::Path,
    output: &std::path::Path,
    to: crate::trace::Format,
) -> Result<(u64, Option<u64>), TraceError> {
    let mut r = open_any(input)?;
    let header = r.header().clone();
    let mut n = 0;
    match to {
        crate::trace::Format::Jsonl => {
            let mut w = JsonlWriter::create(output, &header)?;
            while let Some(item) = r.next_event() {
                w.write(&item?.1)?;
                n += 1;
            }
            w.finish()?;
        }
        crate::trace::Format::Native => {
            let mut w = NativeWriter::create(output, &header)?;
            while let Some(item) = r.next_event() {
                w.write(&item?.1)?;
                n += 1;
            }
            w.finish()?;
            crate::session::sinks::trace::save_sidecar(output);
        }
    }
    Ok((n, r.truncated_at()))
}

pub fn run(args: Args) -> i32 {
    let started = Instant::now();
    let res: Result<String, ExportError> = match args.format {
        Format::Jsonl | Format::Native => {
            let to = if args.format == Format::Jsonl {
                crate::trace::Format::Jsonl
            } else {
                crate::trace::Format::Native
            };
            convert(&args.file, &args.output, to)
                .map(|(n, cut)| {
                    let mut s = format!("{n} events");
                    if let Some(off) = cut {
                        s.push_str(&format!(
                            " (the input ends inside a record at byte offset {off}: a cut recording; every complete event was kept)"
                        ));
                    }
                    s
                })
                .map_err(ExportError::from)
        }
        Format::Perfetto => {
            perfetto::export(&args.file, &args.output, args.options()).map(|(report, c)| {
                format!(
                    "{} device track(s), {} slice(s), {} instant(s), {} violation(s); verdict {}",
                    c.devices,
                    c.slices,
                    c.instants,
                    c.violations,
                    report.verdict.name()
                )
            })
        }
        Format::Markdown => {
            let opts = markdown::MdOptions {
                verify: args.options(),
                redact: args.redact,
                hostname: args
                    .redact
                    .then(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
                    .flatten(),
                doctor: args.doctor.clone(),
                check_flags: check_flags(&args),
            };
            markdown::export(&args.file, &args.output, &opts)
                .map(|report| format!("verdict {}", report.verdict.name()))
        }
    };
    match res {
        Ok(what) => {
            eprintln!(
                "migscope: wrote {} ({what}) in {:.2} s",
                args.output.display(),
                started.elapsed().as_secs_f64()
            );
            super::exit::PASS
        }
        Err(e) => super::unusable(e),
    }
}

/// The `check` options equivalent to this export's verification options, for "reproduce".
fn check_flags(args: &Args) -> Vec<String> {
    args.rules.check_flags()
}
