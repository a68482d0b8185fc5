//! `migscope view` (replay a trace in the timeline TUI) and `migscope watch` (live: follow a
//! growing trace): session configurations whose TUI sink streams the core's events, findings
//! and reports to the view (it speaks the core's types), so a large trace is browsable while it
//! loads.

use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use migscope_tui as tui;

use crate::capture::{Capture, CaptureOptions, HooksMode, IrqDetail, kernel_release};
use crate::session::sinks::trace::{Dest, TraceOut};
use crate::session::sinks::tui::{self as tui_sink, Pace};
use crate::session::sources::{file::FileSource, probe::Probe};
use crate::session::{self, Session, Signals, Stop, Until};
use crate::trace::jsonl::{JsonlWriter, TraceError};
use crate::trace::{Format, Header};
use crate::verify::Options;

use super::RuleArgs;

#[derive(Debug, clap::Args)]
pub struct ViewArgs {
    /// Trace to replay (JSONL or native, told apart by content; `-` reads standard input).
    /// Exits 0 when closed with `q`, 3 when the trace cannot be read or there is no terminal.
    pub trace: PathBuf,
    #[command(flatten)]
    pub rules: RuleArgs,
}

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// Instead of the probe: follow a trace file another process is writing (`migscope record
    /// -o` and `drive -o` write as they go), showing events and the interim verdict as they are
    /// appended, until its `end` event (`FILE.partial` is followed while the writer has not
    /// renamed it; waits for it to appear).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["pid", "ring_bytes", "output"])]
    pub follow: Option<PathBuf>,
    /// Probe: record only this process and its children (default: every VFIO user).
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
    /// Probe: ring buffer size in bytes (default 1 MiB).
    #[arg(long, value_name = "BYTES")]
    pub ring_bytes: Option<u32>,
    /// Probe: interrupts one by one: `quiesce` (default) from a quiescing SET until the device may DMA
    /// again, counted per 25 ms in `irq_bin` events otherwise; `all`: every one an `irq`.
    #[arg(long, value_enum, value_name = "WHICH", default_value_t = IrqDetail::Quiesce)]
    pub irq_detail: IrqDetail,
    /// Probe: how VFIO's syscalls are hooked (as `record --hooks`).
    #[arg(long, value_enum, value_name = "HOW", default_value_t = HooksMode::Auto)]
    pub hooks: HooksMode,
    /// Probe: also write the whole trace here (JSONL, write-then-rename when the view closes);
    /// the view itself holds only the last `--window` events.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Events held in memory (older ones leave the window; per-device summaries stay).
    #[arg(long, default_value_t = DEFAULT_WINDOW, value_name = "N")]
    pub window: usize,
    #[command(flatten)]
    pub rules: RuleArgs,
}

/// Events the live views hold by default (`watch --window`, `drive --tui`).
pub const DEFAULT_WINDOW: usize = 1_000_000;

pub fn run_view(args: ViewArgs) -> i32 {
    if !io::stdout().is_terminal() {
        return super::unusable(
            "`view` needs a terminal (use `migscope check` for a report on a pipe)",
        );
    }
    let name = args.trace.display().to_string();
    let reader = match open_trace(&args.trace) {
        Ok(r) => r,
        Err(e) => return super::unusable(e),
    };
    let header = reader.header().clone();
    let info = trace_info(&name, &header, false);
    // A native file is indexed (bounded memory at any length); JSONL is held in the view.
    let held = if reader.format() == Format::Native && args.trace.as_os_str() != "-" {
        Held::Index(args.trace.clone())
    } else {
        Held::All
    };
    let file = FileSource::whole(reader);
    run_on_file(
        file,
        info,
        true,
        held,
        name,
        Arc::new(Mutex::new(header)),
        &args.rules,
    )
}

/// Indexes the native trace `path` on its own thread for the view (`tx`): the index saved
/// beside it (`T.mgt.idx`) when it is valid for the trace as it is, else progress while it
/// reads, then the index (or a note saying why not), saved beside the trace for the next
/// open. Stops when the view is gone.
pub fn spawn_indexer(path: PathBuf, tx: std::sync::mpsc::SyncSender<tui::Msg>) {
    std::thread::spawn(move || {
        let mut last = std::time::Instant::now();
        // The overview of the rows read so far, while a long trace is indexed (dropped when
        // the view has not taken the last one yet).
        let partial = tx.clone();
        let mut publish = move |ix: tui::index::TraceIndex| {
            let _ = partial.try_send(tui::Msg::Index(Arc::new(ix)));
        };
        let r = tui::index::TraceIndex::open_publishing(
            &path,
            |p| {
                if last.elapsed() < std::time::Duration::from_millis(200) {
                    return true;
                }
                last = std::time::Instant::now();
                !matches!(
                    tx.try_send(tui::Msg::Indexing(p)),
                    Err(std::sync::mpsc::TrySendError::Disconnected(_))
                )
            },
            Some(tui::index::Publish {
                first: tui::index::FIRST_PUBLISH,
                send: &mut publish,
            }),
        );
        let (ix, how) = match r {
            Ok(x) => x,
            Err(tui::index::IndexError::Cancelled) => return,
            Err(e) => {
                let _ = tx.send(tui::Msg::Note(format!("cannot index the trace: {e}")));
                return;
            }
        };
        let _ = tx.send(tui::Msg::Index(Arc::new(ix)));
        // The index still works when it cannot be saved for the next open: say why once.
        if let tui::index::Opened::Built { saved: Err(e), .. } = how {
            let _ = tx.send(tui::Msg::Note(e));
        }
    });
}

pub fn run_watch(args: WatchArgs) -> i32 {
    if !io::stdout().is_terminal() {
        return super::unusable("`watch` needs a terminal");
    }
    match args.follow.clone() {
        Some(path) => {
            let name = path.display().to_string();
            let info = trace_info(&name, &Header::default(), true);
            let header = Arc::new(Mutex::new(Header::default()));
            let file = FileSource::follow(path);
            run_on_file(
                file,
                info,
                false,
                Held::Window(args.window),
                name,
                header,
                &args.rules,
            )
        }
        None => watch_probe(args),
    }
}

/// What the view holds of a trace file.
enum Held {
    /// Every event (`view` of JSONL).
    All,
    /// The last N events (`watch --follow`).
    Window(usize),
    /// A window of rows decoded through the file's index (`view` of a native file).
    Index(PathBuf),
}

/// `view` and `watch --follow`: a trace file into the verifier and the view.
fn run_on_file(
    file: std::io::Result<FileSource>,
    info: tui::TraceInfo,
    known: bool,
    held: Held,
    name: String,
    header: Arc<Mutex<Header>>,
    rules: &RuleArgs,
) -> i32 {
    let session::Started {
        rt, mut signals, ..
    } = match session::start(None) {
        Ok(s) => s,
        Err(e) => return super::unusable(error_chain(&e)),
    };
    let entered = rt.enter();
    let file = match file {
        Ok(f) => f,
        Err(e) => return super::unusable(format!("{name}: cannot read: {e}")),
    };
    let stop = Stop::new();
    let window = match held {
        Held::Window(n) => Some(n),
        Held::All | Held::Index(_) => None,
    };
    let (mut sink, view) = tui_sink::start(
        info,
        known,
        window,
        Pace::Wait,
        Arc::clone(&header),
        stop.clone(),
    );
    if let Held::Index(path) = held {
        sink.summaries_only();
        spawn_indexer(path, sink.view_sender());
    }
    let session = Session {
        file: Some(file),
        sinks: session::Sinks {
            verify: Some(rules.options()),
            tui: Some(sink),
            name,
            header_out: Some(header),
            ..session::Sinks::default()
        },
        stop: stop.clone(),
        ..Session::new()
    };
    drop(entered);
    finish_view(&rt, session, &mut signals, &stop, view)
        .map_or_else(super::unusable, |_| super::exit::PASS)
}

/// Runs a session with a view to its end, keeps the view open until the user closes it (or a
/// signal does), and waits for the terminal to be restored.
fn finish_view(
    rt: &tokio::runtime::Runtime,
    session: Session,
    signals: &mut Signals,
    stop: &Stop,
    view: tui_sink::View,
) -> Result<session::Ended, String> {
    let ended = rt.block_on(session.run(Some(signals)));
    let mut ended = match ended {
        Ok(e) => e,
        Err(e) => {
            stop.request("the session failed");
            let _ = view.join();
            return Err(error_chain(&e));
        }
    };
    rt.block_on(ended.linger(signals));
    drop(ended.tui.take());
    view.join()?;
    Ok(ended)
}

/// Live from the eBPF probe (needs root or CAP_BPF + CAP_PERFMON): the probe into the
/// verifier (interim verdicts while it runs, the final one when it ends) and the view, and
/// into a trace file with `-o`. With `--pid` the session ends when that process exits; the
/// view stays open with the final verdict.
fn watch_probe(args: WatchArgs) -> i32 {
    let session::Started {
        rt,
        mut signals,
        process,
    } = match session::start(args.pid) {
        Ok(s) => s,
        Err(e) => return super::unusable(error_chain(&e)),
    };
    let entered = rt.enter();
    let opts = CaptureOptions {
        pids: args.pid.map(|p| vec![p]),
        ring_bytes: args.ring_bytes,
        irq_detail: args.irq_detail,
        hooks: args.hooks,
    };
    // Started before the terminal is taken, so a refusal is a plain error message.
    let cap = match Capture::start(&opts) {
        Ok(c) => c,
        Err(e) => return super::unusable(super::capture_error(&e)),
    };
    let probe = match Probe::new(cap) {
        Ok(p) => p,
        Err(e) => return super::unusable(format!("failed to watch the ring buffer: {e}")),
    };
    let mut sources = probe.sources();
    for (src, why) in super::record::NOT_RECORDED {
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
    let name = match args.pid {
        Some(p) => format!("probe (pid {p})"),
        None => "probe".to_owned(),
    };
    let stop = Stop::new();
    let header_out = Arc::new(Mutex::new(header.clone()));
    let (sink, view) = tui_sink::start(
        trace_info(&name, &header, true),
        true,
        Some(args.window),
        Pace::Live,
        Arc::clone(&header_out),
        stop.clone(),
    );
    let session = Session {
        probe: Some(probe),
        header,
        until: Until {
            duration: None,
            process,
        },
        sinks: session::Sinks {
            trace: args
                .output
                .clone()
                .map(|p| TraceOut::new(Dest::File(p), Format::Jsonl)),
            verify: Some(args.rules.options()),
            tui: Some(sink),
            name,
            header_out: Some(header_out),
            ..session::Sinks::default()
        },
        stop: stop.clone(),
        ..Session::new()
    };
    drop(entered);
    let ended = match finish_view(&rt, session, &mut signals, &stop, view) {
        Ok(e) => e,
        Err(e) => return super::unusable(e),
    };
    if let Some(e) = &ended.trace_error {
        return super::unusable(format!("failed to write the trace: {}", error_chain(e)));
    }
    if let Some(p) = &args.output {
        eprintln!("migscope: wrote {} events to {}", ended.events, p.display());
    }
    super::exit::PASS
}

use super::error_chain;

/// A trace reader of either format, movable to the loader thread.
pub use crate::trace::AnyReader as ViewReader;

/// The one place a trace file is opened for the view: [`crate::trace::open_any`] (JSONL or
/// native by content, `-` for standard input), whose readers can move to the loader thread.
pub fn open_trace(path: &Path) -> Result<ViewReader, TraceError> {
    crate::trace::open_any(path)
}

/// The view's description of a trace header.
pub fn trace_info(name: &str, h: &Header, live: bool) -> tui::TraceInfo {
    tui::TraceInfo {
        name: name.to_owned(),
        header: h.clone(),
        live,
    }
}

/// Verifies a whole trace and returns everything the view needs, as messages (tests and
/// benchmarks): the same session `view` runs, with a sink that collects instead of drawing.
pub fn load_messages(path: &Path, opts: Options) -> Result<Vec<tui::Msg>, LoadError> {
    verify_messages(path, opts, false)
}

/// [`load_messages`]; with `summaries_only`, as the session feeds a view that draws from the
/// trace's index (`TuiSink::summaries_only`: findings, verdicts and notes, no events).
pub fn verify_messages(
    path: &Path,
    opts: Options,
    summaries_only: bool,
) -> Result<Vec<tui::Msg>, LoadError> {
    let reader = open_trace(path)?;
    let name = path.display().to_string();
    let rt = session::runtime()?;
    let (mut sink, rx) = tui_sink::collect();
    if summaries_only {
        sink.summaries_only();
    }
    let file = FileSource::whole(reader).map_err(LoadError::Io)?;
    let session = Session {
        file: Some(file),
        sinks: session::Sinks {
            verify: Some(opts),
            tui: Some(sink),
            name,
            ..session::Sinks::default()
        },
        ..Session::new()
    };
    let collector = std::thread::spawn(move || rx.into_iter().collect::<Vec<_>>());
    let ended = rt.block_on(session.run(None));
    // The sink goes with the session's end: the collector sees the channel close.
    let ended = ended.map(|mut e| {
        drop(e.tui.take());
        e
    });
    let msgs = collector.join().map_err(|_| LoadError::Collector)?;
    match ended?.source_error {
        Some(e) => Err(LoadError::Read(e)),
        None => Ok(msgs),
    }
}

/// [`load_messages`] as `view` runs it on a native file: the index first (built here, on
/// this thread), then the session's messages to a view that draws from the index (findings,
/// verdicts, no events: `TuiSink::summaries_only`). Tests and benchmarks.
pub fn load_indexed(path: &Path, opts: Options) -> Result<Vec<tui::Msg>, LoadError> {
    let ix = tui::index::TraceIndex::build(path, |_| true).map_err(LoadError::Index)?;
    let msgs = verify_messages(path, opts, true)?;
    Ok(std::iter::once(tui::Msg::Index(Arc::new(ix)))
        .chain(msgs)
        .collect())
}

/// Why [`load_messages`] could not load a trace.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Open(#[from] TraceError),
    #[error("{0}")]
    Read(String),
    #[error("cannot start the reader")]
    Io(#[source] io::Error),
    #[error(transparent)]
    Session(#[from] session::SessionError),
    #[error("the collecting thread panicked")]
    Collector,
    #[error(transparent)]
    Index(tui::index::IndexError),
}

/// Writes the events the view holds as a JSONL trace (write-then-rename); an indexed trace
/// is the whole file, read again.
pub fn export(app: &tui::App, header: &Header, path: &str) -> Result<String, String> {
    let p = Path::new(path);
    let mut w = JsonlWriter::create(p, header).map_err(|e| e.to_string())?;
    if let Some(ix) = &app.index {
        let r = crate::trace::open_any(&ix.path).map_err(|e| e.to_string())?;
        for x in r {
            let (_, e) = x.map_err(|e| e.to_string())?;
            w.write(&e).map_err(|e| e.to_string())?;
        }
    }
    for (_, e) in app.store.iter().filter(|_| app.index.is_none()) {
        w.write(&e).map_err(|e| e.to_string())?;
    }
    w.finish().map_err(|e| e.to_string())?;
    Ok(p.display().to_string())
}
