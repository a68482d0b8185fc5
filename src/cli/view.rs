//! `migscope view` (replay a trace in the timeline TUI) and `migscope watch` (live: follow a
//! growing trace). Converts trace events and verifier findings into the view's own types and
//! streams them to it from a loader thread, so a large trace is browsable while it loads.

use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use migscope_tui as tui;

use crate::capture::{Capture, CaptureOptions, kernel_release};
use crate::session::sinks::trace::{Dest, TraceOut};
use crate::session::sinks::tui::{self as tui_sink, Pace};
use crate::session::sources::{file::FileSource, probe::Probe};
use crate::session::{self, Session, Signals, Stop, Until};
use crate::trace::jsonl::{JsonlWriter, TraceError};
use crate::trace::{
    Corruption, DataDir, DmaSource, Event, EventKind, Format, Header, IrqKind, RegStage,
};
use crate::verify::{self, Options};

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
    let file = FileSource::whole(reader);
    run_on_file(
        file,
        info,
        true,
        None,
        name,
        Arc::new(Mutex::new(header)),
        &args.rules,
    )
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
                Some(args.window),
                name,
                header,
                &args.rules,
            )
        }
        None => watch_probe(args),
    }
}

/// `view` and `watch --follow`: a trace file into the verifier and the view.
fn run_on_file(
    file: std::io::Result<FileSource>,
    info: tui::TraceInfo,
    known: bool,
    window: Option<usize>,
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
    let (sink, view) = tui_sink::start(
        info,
        known,
        window,
        Pace::Wait,
        Arc::clone(&header),
        stop.clone(),
    );
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

/// A trace event in the view's terms.
fn tui_irq_kind(k: IrqKind) -> tui::IrqKind {
    match k {
        IrqKind::Msi => tui::IrqKind::Msi,
        IrqKind::Msix => tui::IrqKind::Msix,
        IrqKind::Intx => tui::IrqKind::Intx,
    }
}

fn core_irq_kind(k: tui::IrqKind) -> IrqKind {
    match k {
        tui::IrqKind::Msi => IrqKind::Msi,
        tui::IrqKind::Msix => IrqKind::Msix,
        tui::IrqKind::Intx => IrqKind::Intx,
    }
}

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
            kind: tui_irq_kind(*kind),
            vector: *vector,
        },
        EventKind::IrqBin {
            dev,
            kind,
            vector,
            n,
            window,
        } => K::IrqBin {
            dev: dev.clone(),
            kind: tui_irq_kind(*kind),
            vector: *vector,
            n: *n,
            window: *window,
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
            kind: core_irq_kind(*kind),
            vector: *vector,
        },
        K::IrqBin {
            dev,
            kind,
            vector,
            n,
            window,
        } => EventKind::IrqBin {
            dev: dev.clone(),
            kind: core_irq_kind(*kind),
            vector: *vector,
            n: *n,
            window: *window,
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
/// benchmarks): the same session `view` runs, with a sink that collects instead of drawing.
pub fn load_messages(path: &Path, opts: Options) -> Result<Vec<tui::Msg>, LoadError> {
    let reader = open_trace(path)?;
    let name = path.display().to_string();
    let rt = session::runtime()?;
    let (sink, rx) = tui_sink::collect();
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
            EventKind::IrqBin {
                dev: d(),
                kind: IrqKind::Msi,
                vector: 0,
                n: 2000,
                window: (5, 9_999_999),
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
