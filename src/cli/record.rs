//! `migscope record`: the probe alone, e.g. beside a running QEMU, as a streaming session into
//! a trace file (and the verifier with `--check`). Records until Ctrl-C, SIGTERM,
//! `--duration` or the traced process's exit, then writes a complete trace ending in `end`
//! (a file is written as `<FILE>.partial`, flushed at least every 100 ms, and renamed when
//! complete).

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use crate::capture::{Capture, CaptureOptions, HooksMode, IrqDetail, kernel_release};
use crate::session::sinks::trace::{Dest, TraceOut};
use crate::session::sources::probe::Probe;
use crate::session::{self, Session, Stop, Until};
use crate::trace::{Event, Format, Header, source};

fn parse_duration(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("`{s}` is not a usable duration"))
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write the trace here; default: standard output (JSONL).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The trace's format: `jsonl` (TRACE-FORMAT.md) or `native` (with -o only).
    #[arg(long, default_value = "jsonl", value_parser = super::parse_format)]
    pub format: Format,
    /// Record only this process and its children (default: every VFIO user).
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Verify the trace at the end and exit with the verdict's code (0 pass, 1 fail,
    /// 2 inconclusive).
    #[arg(long)]
    pub check: bool,
    /// Verifier options, with --check only (`record` alone has no DMA witness for PCI
    /// devices: `--accept-blind dma` accepts that).
    #[command(flatten)]
    pub rules: super::RuleArgs,
    /// Ring buffer size in bytes (default 1 MiB).
    #[arg(long, value_name = "BYTES")]
    pub ring_bytes: Option<u32>,
    /// Interrupts one by one: `quiesce` (default) from a quiescing SET until the device may DMA
    /// again, counted per 25 ms in `irq_bin` events otherwise; `all`: every one an `irq`.
    #[arg(long, value_enum, value_name = "WHICH", default_value_t = IrqDetail::Quiesce)]
    pub irq_detail: IrqDetail,
    /// How VFIO's syscalls are hooked: `direct` (kprobes on the VFIO file operations, so
    /// unrelated syscalls of the host pay nothing), `tracepoint` (the syscall tracepoints),
    /// `auto` (direct where every needed kprobe attaches, else tracepoints). Default
    /// `tracepoint` (direct is not yet proven on the whole lab). The trace header's `hooks`
    /// says which was used.
    #[arg(long, value_enum, value_name = "HOW", default_value_t = HooksMode::Auto)]
    pub hooks: HooksMode,
}

/// The DMA witnesses `drive` has and the probe alone does not: named, so a checker says why a
/// quiesced device's DMA could not be seen.
pub const NOT_RECORDED: [(&str, &str); 3] = [
    (
        source::WITNESS,
        "unavailable: record does not own the DMA buffers (drive fingerprints its own)",
    ),
    (
        source::DIRTY_LOG,
        "unavailable: record decodes only the DMA logging REPORTs a VMM makes (`dirty_report`s over their ranges and windows), never a device's whole quiescent time",
    ),
    (
        source::IOMMU_DIRTY,
        "unavailable: record does not read IOMMU dirty bitmaps",
    ),
];

pub fn run(args: Args) -> i32 {
    if !args.check && !args.rules.is_default() {
        return super::unusable(format!(
            "{}: verifier options only apply with --check",
            args.rules.check_flags().join(" ")
        ));
    }
    if args.format == Format::Native && args.output.is_none() {
        return super::unusable("--format native needs -o FILE (standard output carries JSONL)");
    }
    // The runtime, the signals and the traced process come first (session::start).
    let session::Started {
        rt,
        mut signals,
        process,
    } = match session::start(args.pid) {
        Ok(s) => s,
        Err(e) => return super::unusable(chain(&e)),
    };
    // Registered with this runtime: the ring buffer.
    let entered = rt.enter();
    let opts = CaptureOptions {
        pids: args.pid.map(|p| vec![p]),
        ring_bytes: args.ring_bytes,
        irq_detail: args.irq_detail,
        hooks: args.hooks,
    };
    let cap = match Capture::start(&opts) {
        Ok(c) => c,
        Err(e) => return super::unusable(super::capture_error(&e)),
    };
    let attached = cap.hooks().iter().filter(|h| h.attached()).count();
    let hooks = cap.hooks().len();
    let host = crate::capture::diagnose::Host::read();
    for line in crate::capture::diagnose::hook_summary(cap.hooks(), &host) {
        eprintln!("migscope: {line}");
    }
    let probe = match Probe::new(cap) {
        Ok(p) => p,
        Err(e) => return super::unusable(format!("failed to watch the ring buffer: {e}")),
    };
    let mut sources = probe.sources();
    for (src, why) in NOT_RECORDED {
        sources
            .entry(src.to_owned())
            .or_insert_with(|| why.to_owned());
    }
    let header = Header {
        kernel: kernel_release(),
        sources,
        hooks: Some(probe.hooks_path()),
        ..Header::default()
    };
    let hooks_path = probe.hooks_path();
    let dest = match &args.output {
        Some(p) => Dest::File(p.clone()),
        None => Dest::Stdout,
    };
    let trace = TraceOut::new(dest, args.format);
    let name = trace.name();
    let progress = Rc::new(RefCell::new(super::progress::Record::start()));
    let (p1, p2) = (Rc::clone(&progress), Rc::clone(&progress));
    let stop = Stop::new();
    let session = Session {
        probe: Some(probe),
        controller: None,
        file: None,
        header,
        until: Until {
            duration: args.duration,
            process,
        },
        sinks: session::Sinks {
            trace: Some(trace),
            verify: args.check.then(|| args.rules.options()),
            tui: None,
            name: name.clone(),
            watch: vec![Box::new(move |ev: &Event| p1.borrow_mut().saw(ev))],
            flushed: Some(Box::new(move |_, bytes| p2.borrow().show(bytes))),
            header_out: None,
        },
        stop: stop.clone(),
        pid: std::process::id(),
    };
    // Announced once records flow to the trace (SIGINT/SIGTERM are ours since `run` began).
    eprintln!(
        "migscope: recording ({attached} of {hooks} hooks attached, hooks {}){}; Ctrl-C to stop",
        hooks_path,
        args.pid
            .map(|p| format!(", pid {p} and children"))
            .unwrap_or_default()
    );
    drop(entered);
    let ended = rt.block_on(session.run(Some(&mut signals)));
    progress.borrow().finish();
    let ended = match ended {
        Ok(e) => e,
        Err(e) => return super::unusable(chain(&e)),
    };
    if ended.stopped.as_deref() == Some("the traced process exited") {
        eprintln!("migscope: traced process exited");
    }
    if let Some(e) = &ended.trace_error {
        return super::unusable(format!("failed to write the trace: {}", chain(e)));
    }
    eprintln!("migscope: wrote {} events to {name}", ended.events);
    match ended.report {
        Some(r) => {
            eprint!("{}", super::check::human(&r, &name));
            r.verdict.exit_code()
        }
        None => super::exit::PASS,
    }
}

use super::error_chain as chain;
