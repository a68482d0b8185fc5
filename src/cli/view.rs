//! `migscope view` (replay a trace in the timeline TUI) and `migscope watch` (live: follow a
//! growing trace). Converts trace events and verifier findings into the view's own types and
//! streams them to it from a loader thread, so a large trace is browsable while it loads.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::mpsc::{Sender, channel};
use std::time::Duration;

use migscope_tui as tui;

use crate::capture::{Capture, CaptureOptions, kernel_release, monotonic_ns};
use crate::trace::jsonl::{JsonlReader, JsonlWriter, TraceError, partial_path};
use crate::trace::{Corruption, DataDir, DmaSource, Event, EventKind, Header, IrqKind, RegStage};
use crate::verify::{self, Options, Verdict, Verifier};

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
    /// -o` writes as it goes; `drive -o` writes when its plan ends), showing events as they are
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
    /// Probe: also write the whole trace here (JSONL, write-then-rename when the view closes);
    /// the view itself holds only the last `--window` events.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Events held in memory (older ones leave the window; per-device summaries stay).
    #[arg(long, default_value_t = 1_000_000, value_name = "N")]
    pub window: usize,
    #[command(flatten)]
    pub rules: RuleArgs,
}

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
    let opts = args.rules.options();
    let (tx, rx) = channel();
    let loader = std::thread::spawn(move || {
        let batch = Rc::new(RefCell::new(Batch::default()));
        if let Err(e) = stream(reader, opts, &tx, &batch, false) {
            let _ = tx.send(tui::Msg::SourceError(e.to_string()));
        }
    });
    let app = tui::App::new(info, None);
    let res = tui::term::run(app, rx, &mut |app, path| export(app, &header, path));
    // The loader stops by itself when the view is gone (its sends fail); do not wait for a
    // long trace to finish loading before returning.
    drop(loader);
    match res {
        Ok(_) => super::exit::PASS,
        Err(e) => super::unusable(format!("terminal: {e}")),
    }
}

pub fn run_watch(args: WatchArgs) -> i32 {
    if !io::stdout().is_terminal() {
        return super::unusable("`watch` needs a terminal");
    }
    match args.follow.clone() {
        Some(path) => watch_file(path, args),
        None => watch_probe(args),
    }
}

/// How often the probe is drained while watching.
const DRAIN_EVERY: Duration = Duration::from_millis(20);

/// Live from the eBPF probe (needs root or CAP_BPF + CAP_PERFMON).
fn watch_probe(args: WatchArgs) -> i32 {
    let opts = CaptureOptions {
        pids: args.pid.map(|p| vec![p]),
        ring_bytes: args.ring_bytes,
    };
    // Started before the terminal is taken, so a refusal is a plain error message.
    let cap = match Capture::start(&opts) {
        Ok(c) => c,
        Err(e) => return super::unusable(super::capture_error(&e)),
    };
    let header = Header {
        kernel: kernel_release(),
        sources: cap.sources(),
        ..Header::default()
    };
    let mut sink = match &args.output {
        Some(p) => match JsonlWriter::create(p, &header) {
            Ok(w) => Some(w),
            Err(e) => return super::unusable(e),
        },
        None => None,
    };
    let name = match args.pid {
        Some(p) => format!("probe (pid {p})"),
        None => "probe".to_owned(),
    };
    let info = trace_info(&name, &header, true);
    let verifier_opts = args.rules.options();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_r = stop.clone();
    let (tx, rx) = channel();
    let th_header = header.clone();
    let capture = std::thread::spawn(move || -> Result<u64, String> {
        let mut cap = cap;
        let mut v = Verifier::new(&th_header, verifier_opts);
        // Lines as the JSONL form of this trace would number them (header = line 1).
        let line = std::cell::Cell::new(1u64);
        let last_t = std::cell::Cell::new(0u64);
        let mut forward = |evs: Vec<Event>,
                           sink: &mut Option<JsonlWriter<std::io::BufWriter<File>>>|
         -> Result<bool, String> {
            let mut batch = Vec::with_capacity(evs.len());
            let mut found = Vec::new();
            for ev in &evs {
                line.set(line.get() + 1);
                last_t.set(last_t.get().max(ev.t));
                found.extend(v.push(line.get(), ev).iter().map(to_finding));
                batch.push(to_timeline(line.get(), ev));
                if let Some(w) = sink.as_mut() {
                    w.write(ev).map_err(|e| e.to_string())?;
                }
            }
            if let Some(w) = sink.as_mut() {
                w.flush().map_err(|e| e.to_string())?;
            }
            let alive = (batch.is_empty() || tx.send(tui::Msg::Events(batch)).is_ok())
                && (found.is_empty() || tx.send(tui::Msg::Findings(found)).is_ok());
            Ok(alive)
        };
        while !stop_r.load(std::sync::atomic::Ordering::Relaxed) {
            let evs = cap.drain().map_err(|e| error_chain(&e))?;
            if !forward(evs, &mut sink)? {
                break;
            }
            std::thread::sleep(DRAIN_EVERY);
        }
        // Detach, keep what is left, close the trace cleanly.
        let mut evs = cap.stop().map_err(|e| error_chain(&e))?;
        evs.push(Event {
            t: last_t.get().max(monotonic_ns()),
            pid: None,
            kind: EventKind::End,
        });
        forward(evs, &mut sink)?;
        if let Some(w) = sink {
            w.finish().map_err(|e| e.to_string())?;
        }
        Ok(line.get() - 1)
    });
    let app = tui::App::new(info, Some(args.window));
    let res = tui::term::run(app, rx, &mut |app, out| export(app, &header, out));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let recorded = capture.join();
    if let Err(e) = res {
        return super::unusable(format!("terminal: {e}"));
    }
    match recorded {
        Ok(Ok(n)) => {
            if let Some(p) = &args.output {
                eprintln!("migscope: wrote {n} events to {}", p.display());
            }
            super::exit::PASS
        }
        Ok(Err(e)) => super::unusable(format!("capture: {e}")),
        Err(_) => super::unusable("capture thread panicked"),
    }
}

use super::error_chain;

/// Opens the trace to follow: `path`, or `path.partial` while a writer (`record -o`,
/// `drive -o`) has not renamed it yet; waits for either to appear. `None` when the view is
/// gone or the file cannot be opened (the view is told why).
fn wait_for_trace(path: &Path, tx: &Sender<tui::Msg>) -> Option<File> {
    let partial = partial_path(path);
    let mut told = false;
    loop {
        for p in [path, partial.as_path()] {
            match File::open(p) {
                Ok(f) => {
                    let _ = tx.send(tui::Msg::Note(format!("following {}", p.display())));
                    return Some(f);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    let _ = tx.send(tui::Msg::SourceError(format!(
                        "{}: cannot open: {e}",
                        p.display()
                    )));
                    return None;
                }
            }
        }
        if !told {
            told = true;
            let msg = format!("waiting for {} to appear", path.display());
            if tx.send(tui::Msg::Note(msg)).is_err() {
                return None;
            }
        }
        if tx.send(tui::Msg::Tick).is_err() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Follows a growing trace file.
fn watch_file(path: PathBuf, args: WatchArgs) -> i32 {
    let name = path.display().to_string();
    let opts = args.rules.options();
    let (tx, rx) = channel();
    let header = std::sync::Arc::new(std::sync::Mutex::new(Header::default()));
    let header_w = header.clone();
    let loader_name = name.clone();
    std::thread::spawn(move || {
        let Some(file) = wait_for_trace(&path, &tx) else {
            return;
        };
        let batch = Rc::new(RefCell::new(Batch::default()));
        let tail = Tail {
            file,
            batch: batch.clone(),
            tx: tx.clone(),
        };
        let reader = match JsonlReader::new(&loader_name, BufReader::with_capacity(1 << 16, tail)) {
            Ok(r) => ViewReader::Jsonl(r),
            Err(e) => {
                let _ = tx.send(tui::Msg::SourceError(e.to_string()));
                return;
            }
        };
        if let Ok(mut h) = header_w.lock() {
            *h = reader.header().clone();
        }
        let _ = tx.send(tui::Msg::Info(trace_info(
            &loader_name,
            reader.header(),
            true,
        )));
        if let Err(e) = stream(reader, opts, &tx, &batch, true) {
            let _ = tx.send(tui::Msg::SourceError(e.to_string()));
        }
    });
    let app = tui::App::new(
        trace_info(&name, &Header::default(), true),
        Some(args.window),
    );
    let res = tui::term::run(app, rx, &mut |app, out| {
        let h = header.lock().map(|h| h.clone()).unwrap_or_default();
        export(app, &h, out)
    });
    match res {
        Ok(_) => super::exit::PASS,
        Err(e) => super::unusable(format!("terminal: {e}")),
    }
}

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
        kernel: h.kernel.clone(),
        tool: h.tool.clone(),
        sources: h
            .sources
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        live,
    }
}

/// Events and findings not yet sent to the view.
#[derive(Default)]
struct Batch {
    events: Vec<tui::TimelineEvent>,
    findings: Vec<tui::Finding>,
}

/// Events per message while loading.
const BATCH: usize = 4096;

/// Sends the pending batch (events before the findings that refer to them). False when the
/// view is gone.
fn flush(tx: &Sender<tui::Msg>, batch: &RefCell<Batch>) -> bool {
    let mut b = batch.borrow_mut();
    if !b.events.is_empty()
        && tx
            .send(tui::Msg::Events(std::mem::take(&mut b.events)))
            .is_err()
    {
        return false;
    }
    if !b.findings.is_empty()
        && tx
            .send(tui::Msg::Findings(std::mem::take(&mut b.findings)))
            .is_err()
    {
        return false;
    }
    true
}

/// Reads every event, verifies it, and streams both to the view. `live`: stop at `end`, and
/// send interim verdicts.
fn stream<R: BufRead>(
    mut reader: ViewReader<R>,
    opts: Options,
    tx: &Sender<tui::Msg>,
    batch: &RefCell<Batch>,
    live: bool,
) -> Result<(), TraceError> {
    let mut v = Verifier::new(reader.header(), opts);
    let mut warned = 0;
    while let Some(item) = reader.next_event() {
        let (line, ev) = item?;
        for w in v.forward_warnings(reader.warnings(), &mut warned) {
            batch.borrow_mut().findings.push(tui::Finding {
                rule: verify::rule::UNKNOWN_EVENT.to_owned(),
                dev: None,
                t: ev.t,
                line: w.line,
                detail: w.msg.clone(),
                explain: verify::rule::explain(verify::rule::UNKNOWN_EVENT).to_owned(),
                warning: true,
            });
        }
        let found = v.push(line, &ev);
        let end = matches!(ev.kind, EventKind::End);
        {
            let mut b = batch.borrow_mut();
            b.events.push(to_timeline(line, &ev));
            b.findings.extend(found.iter().map(to_finding));
        }
        if (batch.borrow().events.len() >= BATCH || end) && !flush(tx, batch) {
            return Ok(());
        }
        if live && end {
            break;
        }
    }
    if let Some(off) = reader.truncated_at() {
        let _ = tx.send(tui::Msg::SourceError(format!(
            "the trace ends inside a record at byte {off} (truncated)"
        )));
    }
    let report = v.finish();
    // Findings only `finish` produces (they have no event line).
    batch.borrow_mut().findings.extend(
        report
            .warnings
            .iter()
            .filter(|f| verify::rule::AT_FINISH.contains(&f.rule))
            .map(to_finding),
    );
    if !flush(tx, batch) {
        return Ok(());
    }
    let _ = tx.send(tui::Msg::Verdict(tui::VerdictUpdate {
        verdict: match report.verdict {
            Verdict::Pass => tui::Verdict::Pass,
            Verdict::Fail => tui::Verdict::Fail,
            Verdict::Inconclusive => tui::Verdict::Inconclusive,
        },
        blind_spots: report
            .blind_spots
            .iter()
            .map(|b| match report.blind_spot_details.get(b) {
                Some(why) => format!("{b}: {why}"),
                None => b.clone(),
            })
            .collect(),
    }));
    let _ = tx.send(tui::Msg::SourceDone);
    Ok(())
}

/// A growing file: at its current end, sends what is pending to the view and waits for more
/// (the trace's `end` event or the view going away ends the wait).
struct Tail {
    file: File,
    batch: Rc<RefCell<Batch>>,
    tx: Sender<tui::Msg>,
}

impl Read for Tail {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = self.file.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            if !flush(&self.tx, &self.batch) || self.tx.send(tui::Msg::Tick).is_err() {
                // The view is gone: report end of input.
                return Ok(0);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A trace event in the view's terms.
pub fn to_timeline(line: u64, ev: &Event) -> tui::TimelineEvent {
    use tui::EvKind as K;
    let kind = match &ev.kind {
        EventKind::Device {
            dev,
            flags,
            ctx,
            state: st,
            driver,
            sources,
        } => K::Device(tui::DeviceDecl {
            dev: dev.clone(),
            ctx: ctx.clone(),
            flags: *flags,
            state: *st,
            driver: driver.clone(),
            sources: sources.clone(),
        }),
        EventKind::Set { dev, to } => K::Set {
            dev: dev.clone(),
            to: *to,
        },
        EventKind::Step { dev, from, to } => K::Step {
            dev: dev.clone(),
            from: *from,
            to: *to,
        },
        EventKind::SetDone {
            dev,
            to,
            ret,
            data_fd,
        } => K::SetDone {
            dev: dev.clone(),
            to: *to,
            ret: *ret,
            data_fd: *data_fd,
        },
        EventKind::Get { dev, state: st } => K::Get {
            dev: dev.clone(),
            state: *st,
        },
        EventKind::Reset { dev, ret } => K::Reset {
            dev: dev.clone(),
            ret: *ret,
        },
        EventKind::Dma {
            dev,
            src,
            iova,
            len,
            write,
            window,
            p2p,
        } => K::Dma {
            dev: dev.clone(),
            src: match src {
                DmaSource::Witness => tui::DmaSrc::Witness,
                DmaSource::DirtyLog => tui::DmaSrc::DirtyLog,
                DmaSource::IommuDirty => tui::DmaSrc::IommuDirty,
                DmaSource::MdevDma => tui::DmaSrc::MdevDma,
                DmaSource::Fault => tui::DmaSrc::Fault,
            },
            iova: *iova,
            len: *len,
            write: *write,
            window: *window,
            p2p: *p2p,
        },
        EventKind::Irq { dev, kind, vector } => K::Irq {
            dev: dev.clone(),
            kind: match kind {
                IrqKind::Msi => tui::IrqKind::Msi,
                IrqKind::Msix => tui::IrqKind::Msix,
                IrqKind::Intx => tui::IrqKind::Intx,
            },
            vector: *vector,
        },
        EventKind::Map { ctx, iova, len } => K::Map {
            ctx: ctx.clone(),
            iova: *iova,
            len: *len,
        },
        EventKind::Unmap { ctx, iova, len } => K::Unmap {
            ctx: ctx.clone(),
            iova: *iova,
            len: *len,
        },
        EventKind::Data {
            dev,
            dir,
            bytes,
            file,
        } => K::Data {
            dev: dev.clone(),
            dir: match dir {
                DataDir::Save => tui::DataDir::Save,
                DataDir::Load => tui::DataDir::Load,
            },
            bytes: *bytes,
            file: file.map(|f| tui::DataFile {
                fd: f.fd,
                fd_gen: f.fd_gen,
                reset_gen: f.reset_gen,
            }),
        },
        EventKind::Lost { n, source, dev } => K::Lost {
            n: *n,
            source: source.clone(),
            dev: dev.clone(),
        },
        EventKind::Mark { label } => K::Mark {
            label: label.clone(),
        },
        EventKind::End => K::End,
        EventKind::PrecopyInfo { dev, result } => K::PrecopyInfo {
            dev: dev.clone(),
            result: *result,
        },
        EventKind::DataSize { dev, result } => K::DataSize {
            dev: dev.clone(),
            result: *result,
        },
        EventKind::CorruptLoad {
            dev,
            corruption,
            bytes,
            ret,
        } => K::CorruptLoad {
            dev: dev.clone(),
            corruption: corruption.name().to_owned(),
            bytes: *bytes,
            ret: *ret,
        },
        EventKind::Regs {
            dev,
            stage,
            bar,
            regs,
        } => K::Regs {
            dev: dev.clone(),
            stage: stage.name().to_owned(),
            bar: *bar,
            regs: regs.iter().map(|(o, v)| (*o, *v)).collect(),
        },
        EventKind::PrecopyInfoV2 { dev, ret } => K::PrecopyInfoV2 {
            dev: dev.clone(),
            ret: *ret,
        },
    };
    tui::TimelineEvent {
        t: ev.t,
        line,
        pid: ev.pid,
        kind,
    }
}

/// The view's event back in trace terms (export).
pub fn from_timeline(e: &tui::TimelineEvent) -> Event {
    use tui::EvKind as K;
    let kind = match &e.kind {
        K::Device(d) => EventKind::Device {
            dev: d.dev.clone(),
            flags: d.flags,
            ctx: d.ctx.clone(),
            state: d.state,
            driver: d.driver.clone(),
            sources: d.sources.clone(),
        },
        K::Set { dev, to } => EventKind::Set {
            dev: dev.clone(),
            to: *to,
        },
        K::Step { dev, from, to } => EventKind::Step {
            dev: dev.clone(),
            from: *from,
            to: *to,
        },
        K::SetDone {
            dev,
            to,
            ret,
            data_fd,
        } => EventKind::SetDone {
            dev: dev.clone(),
            to: *to,
            ret: *ret,
            data_fd: *data_fd,
        },
        K::Get { dev, state } => EventKind::Get {
            dev: dev.clone(),
            state: *state,
        },
        K::Reset { dev, ret } => EventKind::Reset {
            dev: dev.clone(),
            ret: *ret,
        },
        K::Dma {
            dev,
            src,
            iova,
            len,
            write,
            window,
            p2p,
        } => EventKind::Dma {
            dev: dev.clone(),
            src: match src {
                tui::DmaSrc::Witness => DmaSource::Witness,
                tui::DmaSrc::DirtyLog => DmaSource::DirtyLog,
                tui::DmaSrc::IommuDirty => DmaSource::IommuDirty,
                tui::DmaSrc::MdevDma => DmaSource::MdevDma,
                tui::DmaSrc::Fault => DmaSource::Fault,
            },
            iova: *iova,
            len: *len,
            write: *write,
            window: *window,
            p2p: *p2p,
        },
        K::Irq { dev, kind, vector } => EventKind::Irq {
            dev: dev.clone(),
            kind: match kind {
                tui::IrqKind::Msi => IrqKind::Msi,
                tui::IrqKind::Msix => IrqKind::Msix,
                tui::IrqKind::Intx => IrqKind::Intx,
            },
            vector: *vector,
        },
        K::Map { ctx, iova, len } => EventKind::Map {
            ctx: ctx.clone(),
            iova: *iova,
            len: *len,
        },
        K::Unmap { ctx, iova, len } => EventKind::Unmap {
            ctx: ctx.clone(),
            iova: *iova,
            len: *len,
        },
        K::Data {
            dev,
            dir,
            bytes,
            file,
        } => EventKind::Data {
            dev: dev.clone(),
            dir: match dir {
                tui::DataDir::Save => DataDir::Save,
                tui::DataDir::Load => DataDir::Load,
            },
            bytes: *bytes,
            file: file.map(|f| crate::trace::DataFile {
                fd: f.fd,
                fd_gen: f.fd_gen,
                reset_gen: f.reset_gen,
            }),
        },
        K::Lost { n, source, dev } => EventKind::Lost {
            n: *n,
            source: source.clone(),
            dev: dev.clone(),
        },
        K::Mark { label } => EventKind::Mark {
            label: label.clone(),
        },
        K::End => EventKind::End,
        K::PrecopyInfo { dev, result } => EventKind::PrecopyInfo {
            dev: dev.clone(),
            result: *result,
        },
        K::DataSize { dev, result } => EventKind::DataSize {
            dev: dev.clone(),
            result: *result,
        },
        // The view holds only what a trace gave it: names it was given are known.
        K::CorruptLoad {
            dev,
            corruption,
            bytes,
            ret,
        } => EventKind::CorruptLoad {
            dev: dev.clone(),
            corruption: Corruption::from_name(corruption).unwrap_or(Corruption::Empty),
            bytes: *bytes,
            ret: *ret,
        },
        K::Regs {
            dev,
            stage,
            bar,
            regs,
        } => EventKind::Regs {
            dev: dev.clone(),
            stage: RegStage::from_name(stage).unwrap_or(RegStage::Saved),
            bar: *bar,
            regs: regs.iter().copied().collect(),
        },
        K::PrecopyInfoV2 { dev, ret } => EventKind::PrecopyInfoV2 {
            dev: dev.clone(),
            ret: *ret,
        },
    };
    Event {
        t: e.t,
        pid: e.pid,
        kind,
    }
}

/// A verifier finding in the view's terms.
pub fn to_finding(f: &verify::Finding) -> tui::Finding {
    tui::Finding {
        rule: f.rule.to_owned(),
        dev: f.dev.clone(),
        t: f.t,
        line: f.line,
        detail: f.detail.clone(),
        explain: verify::rule::explain(f.rule).to_owned(),
        warning: f.warning,
    }
}

/// Verifies a whole trace and returns everything the view needs, as messages (tests and
/// non-interactive use; the interactive commands stream the same messages from a thread).
pub fn load_messages(path: &Path, opts: Options) -> Result<Vec<tui::Msg>, TraceError> {
    let reader = open_trace(path)?;
    let (tx, rx) = channel();
    let batch = RefCell::new(Batch::default());
    stream(reader, opts, &tx, &batch, false)?;
    drop(tx);
    Ok(rx.into_iter().collect())
}

/// Writes the events the view holds as a JSONL trace (write-then-rename).
pub fn export(app: &tui::App, header: &Header, path: &str) -> Result<String, String> {
    let p = Path::new(path);
    let mut w = JsonlWriter::create(p, header).map_err(|e| e.to_string())?;
    for e in app.store.iter() {
        w.write(&from_timeline(&e)).map_err(|e| e.to_string())?;
    }
    w.finish().map_err(|e| e.to_string())?;
    Ok(p.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MigFlags, MigState, PrecopyInfo};

    #[test]
    fn every_event_kind_survives_the_view_and_back() {
        let d = || "0000:00:02.0".to_owned();
        let kinds = vec![
            EventKind::Device {
                dev: d(),
                flags: MigFlags(7),
                ctx: "vm".into(),
                state: MigState::Stop,
                driver: Some("edu-mig".into()),
                sources: [("witness".to_owned(), "ok".to_owned())].into(),
            },
            EventKind::Set {
                dev: d(),
                to: MigState::PreCopy,
            },
            EventKind::Step {
                dev: d(),
                from: MigState::Running,
                to: MigState::PreCopy,
            },
            EventKind::SetDone {
                dev: d(),
                to: MigState::PreCopy,
                ret: 0,
                data_fd: Some(9),
            },
            EventKind::Get {
                dev: d(),
                state: MigState::PreCopy,
            },
            EventKind::Reset { dev: d(), ret: -5 },
            EventKind::Dma {
                dev: d(),
                src: DmaSource::DirtyLog,
                iova: 1 << 40,
                len: 4096,
                write: true,
                window: Some((1, 2)),
                p2p: Some(false),
            },
            EventKind::Irq {
                dev: d(),
                kind: IrqKind::Msix,
                vector: 3,
            },
            EventKind::Map {
                ctx: "vm".into(),
                iova: 1,
                len: 2,
            },
            EventKind::Unmap {
                ctx: "vm".into(),
                iova: 1,
                len: 2,
            },
            EventKind::Data {
                dev: d(),
                dir: DataDir::Save,
                bytes: 80,
                file: None,
            },
            EventKind::Data {
                dev: d(),
                dir: DataDir::Save,
                bytes: 80,
                file: Some(crate::trace::DataFile {
                    fd: 7,
                    fd_gen: 0,
                    reset_gen: u64::MAX,
                }),
            },
            EventKind::PrecopyInfoV2 { dev: d(), ret: 0 },
            EventKind::PrecopyInfo {
                dev: d(),
                result: Ok(PrecopyInfo {
                    initial_bytes: 80,
                    dirty_bytes: 0,
                    flags: 0,
                }),
            },
            EventKind::PrecopyInfo {
                dev: d(),
                result: Err(-22),
            },
            EventKind::DataSize {
                dev: d(),
                result: Ok(80),
            },
            EventKind::CorruptLoad {
                dev: d(),
                corruption: Corruption::BitFlip,
                bytes: 88,
                ret: 0,
            },
            EventKind::CorruptLoad {
                dev: d(),
                corruption: Corruption::Oversized,
                bytes: 65624,
                ret: -28,
            },
            EventKind::Regs {
                dev: d(),
                stage: RegStage::Restored,
                bar: 0,
                regs: [(0x4, 0x1234), (0x80, 0x18_0000)].into_iter().collect(),
            },
            EventKind::DataSize {
                dev: d(),
                result: Err(-25),
            },
            EventKind::Lost {
                n: 1,
                source: "fsm_step".into(),
                dev: Some(d()),
            },
            EventKind::Mark {
                label: "note".into(),
            },
            EventKind::End,
        ];
        for (i, kind) in kinds.into_iter().enumerate() {
            let ev = Event {
                t: i as u64,
                pid: Some(7),
                kind,
            };
            assert_eq!(from_timeline(&to_timeline(i as u64 + 2, &ev)), ev);
        }
    }
}
