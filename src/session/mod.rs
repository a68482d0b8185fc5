//! The streaming session: [`sources`] -> [`merge`] -> [`sinks`], once, for every command that
//! reads events as they happen. `record` is the probe into a trace file (and a verifier with
//! `--check`); `watch --pid` the probe into the verifier and the view (and a file with `-o`);
//! `drive` the controller and the probe into a trace file and the verifier (and the view with
//! `--tui`); `view` and `watch --follow` a trace file into the verifier and the view.
//!
//! One event loop (tokio, current thread) waits on whatever is ready: the probe's ring buffer,
//! the controller's channel, the file reader's channel, a signal, the stop request, the flush
//! tick ([`sinks::trace::FLUSH_EVERY`]: the trace reaches its file at least that often, the
//! probe's trickle is read, interim verdicts go to the view), `--duration`, the traced
//! process's exit. Memory is bounded whatever the length: the merger holds only what its
//! watermarks keep back, the sinks write or summarise as they go.
//!
//! One stop path ([`Stop`]): SIGINT, SIGTERM, `q` in the view, `--duration` and the traced
//! process's exit only ask for a stop. Then the file reader stops, the controller (told
//! through the same flag) ends its plan and returns every device to RUNNING while its events
//! are still recorded, the probe is detached and read one last time, what the merger holds
//! leaves, `end` closes the trace, the verifier gives its final verdict, and a view that did
//! not ask for the stop is closed (the terminal restored). A session that ends by itself (the
//! plan is done, the file is read) leaves an open view to the user.

pub mod merge;
pub mod sinks;
pub mod sources;
mod stop;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{Signal, SignalKind, signal};

pub use stop::{Stop, pid_exit};

use crate::capture::{CaptureError, monotonic_ns};
use crate::trace::{Event, EventKind, Header, jsonl::TraceError};
use crate::verify::{Finding, Options, Report};
use merge::{Merger, Origin};
use sinks::trace::{FLUSH_EVERY, TraceOut};
use sinks::tui::TuiSink;
use sinks::verdict::VerdictSink;
use sources::controller::{ControllerSource, Sent};
use sources::file::{FileMsg, FileSource};
use sources::probe::Probe;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("failed to set up the event loop")]
    Runtime(#[source] std::io::Error),
    #[error("failed to install a signal handler")]
    Signals(#[source] std::io::Error),
    #[error("cannot watch process {pid}")]
    Process {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to read the probe")]
    Capture(#[from] CaptureError),
}

/// SIGINT and SIGTERM, taken from the default action as early as a command can (before the
/// probe loads: a Ctrl-C while it loads still ends in a complete trace).
pub struct Signals {
    int: Signal,
    term: Signal,
}

impl Signals {
    /// Must be called inside the session's runtime.
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }
}

/// The runtime every session runs on (one thread: the sources and sinks are cheap; the
/// controller and the view have their own threads).
pub fn runtime() -> Result<tokio::runtime::Runtime, SessionError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(SessionError::Runtime)
}

/// What every live command sets up first, before the probe loads or a device is touched.
pub struct Started {
    pub rt: tokio::runtime::Runtime,
    /// SIGINT and SIGTERM are the session's from here on: a Ctrl-C while the probe loads
    /// still ends in a complete trace.
    pub signals: Signals,
    /// The traced process's exit (`--pid`; it must exist before anything is written).
    pub process: Option<AsyncFd<std::os::fd::OwnedFd>>,
}

/// The runtime, the signals and the traced process of a session about to start.
pub fn start(pid: Option<u32>) -> Result<Started, SessionError> {
    let rt = runtime()?;
    let entered = rt.enter();
    let signals = Signals::install().map_err(SessionError::Signals)?;
    let process = match pid {
        Some(pid) => Some(pid_exit(pid).map_err(|source| SessionError::Process { pid, source })?),
        None => None,
    };
    drop(entered);
    Ok(Started {
        rt,
        signals,
        process,
    })
}

/// What ends a recording besides a stop request.
#[derive(Default)]
pub struct Until {
    pub duration: Option<Duration>,
    /// The traced process (`--pid`): the recording ends when it exits.
    pub process: Option<AsyncFd<std::os::fd::OwnedFd>>,
}

/// Sees each event as it leaves the merger.
pub type Watcher = Box<dyn FnMut(&Event)>;

/// The sinks of a session.
#[derive(Default)]
pub struct Sinks {
    pub trace: Option<TraceOut>,
    /// Verifier options: the events are verified as they leave the merger.
    pub verify: Option<Options>,
    pub tui: Option<TuiSink>,
    /// The name the view shows for the trace.
    pub name: String,
    /// Each event as it leaves (progress lines, drive's conformance steps), in order.
    pub watch: Vec<Watcher>,
    /// Called after each flush with the trace's size so far (progress).
    pub flushed: Option<Box<dyn FnMut(u64, u64)>>,
    /// Set to the trace's header once known (the view exports with it).
    pub header_out: Option<Arc<Mutex<Header>>>,
}

/// How a session ended.
pub struct Ended {
    /// The trace's header; `None` when it never became known (a controller whose set-up
    /// failed, a file that could not be opened).
    pub header: Option<Header>,
    /// Events that left the merger (`end` included).
    pub events: u64,
    /// The final verdict, when verified.
    pub report: Option<Report>,
    /// Why a stop was asked for, if it was.
    pub stopped: Option<String>,
    /// The trace could not be written (or completed); what was written is kept.
    pub trace_error: Option<TraceError>,
    /// A file source could not be read on.
    pub source_error: Option<String>,
    /// The view, when the session had one and it is still open (see [`Ended::linger`]).
    pub tui: Option<TuiSink>,
}

impl Ended {
    /// Keeps an open view until the user closes it or a signal arrives (which closes it, the
    /// terminal restored): a session that ended without a signal (the plan is done, the file
    /// is read, the traced process exited, `--duration`) leaves its view, with the final
    /// verdict, to the user.
    pub async fn linger(&mut self, signals: &mut Signals) {
        let Some(tui) = self.tui.as_mut() else {
            return;
        };
        let closed = tui.closing();
        if tui.closed() {
            return;
        }
        tokio::select! {
            _ = signals.int.recv() => tui.quit(),
            _ = signals.term.recv() => tui.quit(),
            _ = closed.wait() => {}
        }
    }
}

/// One session's sources and sinks.
pub struct Session {
    pub probe: Option<Probe>,
    pub controller: Option<ControllerSource>,
    pub file: Option<FileSource>,
    /// A recording's header (the probe's sources, what the command adds); completed by the
    /// controller's own sources when it is ready. Unused for a file (it has its own).
    pub header: Header,
    pub until: Until,
    pub sinks: Sinks,
    pub stop: Stop,
    /// The process whose ioctl events the controller records itself.
    pub pid: u32,
}

/// The sinks once the header is known.
struct Live {
    sinks: Sinks,
    verdict: Option<VerdictSink>,
    /// Line of the last event (the header is line 1), for a recording.
    line: u64,
    events: u64,
    header: Option<Header>,
    /// Events that left before the header was known (a controller still setting up).
    early: Vec<Event>,
    trace_error: Option<TraceError>,
    live: bool,
    last_t: u64,
}

impl Live {
    fn begin(&mut self, header: &Header) {
        if self.header.is_some() {
            return;
        }
        self.header = Some(header.clone());
        if let Some(h) = &self.sinks.header_out
            && let Ok(mut h) = h.lock()
        {
            *h = header.clone();
        }
        if let Some(t) = self.sinks.trace.as_mut()
            && let Err(e) = t.begin(header)
        {
            self.trace_error = Some(e);
        }
        if let Some(opts) = self.sinks.verify.clone() {
            self.verdict = Some(VerdictSink::new(header, opts));
        }
        let name = self.sinks.name.clone();
        if let Some(tui) = self.sinks.tui.as_mut() {
            tui.header(&name, header, self.live);
        }
        for ev in std::mem::take(&mut self.early) {
            self.line += 1;
            let line = self.line;
            self.take(line, &ev);
        }
    }

    /// A recorded event, numbered as the JSONL form of the trace numbers its lines.
    fn record(&mut self, ev: Event) {
        if self.header.is_none() {
            self.early.push(ev);
            return;
        }
        self.line += 1;
        let line = self.line;
        self.take(line, &ev);
    }

    fn take(&mut self, line: u64, ev: &Event) {
        self.events += 1;
        self.last_t = self.last_t.max(ev.t);
        if self.trace_error.is_none()
            && let Some(t) = self.sinks.trace.as_mut()
            && let Err(e) = t.write(ev)
        {
            self.trace_error = Some(e);
        }
        let found = match self.verdict.as_mut() {
            Some(v) => v.push(line, ev),
            None => Vec::new(),
        };
        if let Some(tui) = self.sinks.tui.as_mut() {
            tui.event(line, ev);
            tui.findings(&found);
        }
        for w in self.sinks.watch.iter_mut() {
            w(ev);
        }
    }

    fn findings(&mut self, f: &[Finding]) {
        if let Some(tui) = self.sinks.tui.as_mut() {
            tui.findings(f);
        }
    }

    /// The flush tick's work: the trace to its file, an interim verdict, the view's batch.
    fn tick(&mut self, force: bool) {
        if self.trace_error.is_none()
            && let Some(t) = self.sinks.trace.as_mut()
        {
            if let Err(e) = t.flush(force) {
                self.trace_error = Some(e);
            }
            if let Some(f) = self.sinks.flushed.as_mut() {
                f(t.events(), t.bytes());
            }
        }
        if let (Some(v), Some(tui)) = (self.verdict.as_mut(), self.sinks.tui.as_mut())
            && let Some(r) = v.interim()
        {
            tui.verdict(&r, true);
        }
        if let Some(tui) = self.sinks.tui.as_mut() {
            tui.flush();
        }
    }
}

impl Default for Session {
    fn default() -> Self {
        Session::new()
    }
}

impl Session {
    /// A session with no source and no sink yet (the commands fill in theirs).
    pub fn new() -> Session {
        Session {
            probe: None,
            controller: None,
            file: None,
            header: Header::default(),
            until: Until::default(),
            sinks: Sinks::default(),
            stop: Stop::new(),
            pid: std::process::id(),
        }
    }

    /// Runs until the sources end or a stop is asked for, then ends the way the module docs
    /// say.
    /// `signals`: the command's SIGINT and SIGTERM (`None`: a library caller keeps the
    /// process's own signal handling).
    pub async fn run(mut self, mut signals: Option<&mut Signals>) -> Result<Ended, SessionError> {
        let mut origins = Vec::new();
        if self.probe.is_some() {
            origins.push(Origin::Probe);
        }
        if self.controller.is_some() {
            origins.push(Origin::Controller);
        }
        let pair = self.header.source_ok(crate::trace::source::TRANSITIONS);
        let mut merger = Merger::new(&origins, self.pid, pair);
        let recording = self.file.is_none();
        let waits_ready = self.controller.is_some();
        let mut live = Live {
            sinks: std::mem::take(&mut self.sinks),
            verdict: None,
            line: 1,
            events: 0,
            header: None,
            early: Vec::new(),
            trace_error: None,
            live: recording || self.file.as_ref().is_some_and(FileSource::growing),
            last_t: 0,
        };
        if recording && !waits_ready {
            live.begin(&self.header);
        }
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let deadline = tokio::time::sleep(self.until.duration.unwrap_or(Duration::MAX / 4));
        tokio::pin!(deadline);
        let has_deadline = self.until.duration.is_some();
        let mut stopping = false;
        let mut by_signal = false;
        let mut ctl_live = self.controller.is_some();
        let mut file_live = self.file.is_some();
        let mut source_error = None;
        let mut truncated_at = None;
        loop {
            tokio::select! {
                biased;
                why = signalled(&mut signals) => {
                    by_signal = true;
                    self.stop.request(why);
                }
                _ = self.stop.requested_async(), if !stopping => {}
                r = readable(&mut self.probe) => {
                    r.map_err(SessionError::Runtime)?;
                    self.poll_controller(&mut merger, &mut live, &mut ctl_live);
                    self.read_probe(&mut merger)?;
                }
                m = recv_controller(&mut self.controller), if ctl_live => {
                    match m {
                        Some(m) => {
                            self.take_controller(m, &mut merger, &mut live);
                            self.poll_controller(&mut merger, &mut live, &mut ctl_live);
                        }
                        None => {
                            ctl_live = false;
                            merger.end(Origin::Controller);
                        }
                    }
                }
                m = recv_file(&mut self.file), if file_live => match m {
                    Some(FileMsg::Header(h)) => live.begin(&h),
                    Some(FileMsg::Events(evs, warnings)) => {
                        let t = evs.first().map_or(0, |(_, e)| e.t);
                        if let Some(v) = live.verdict.as_mut() {
                            let w = v.warnings(&warnings, t);
                            live.findings(&w);
                        }
                        for (line, ev) in evs {
                            live.take(line, &ev);
                        }
                    }
                    Some(FileMsg::Note(n)) => {
                        if let Some(tui) = live.sinks.tui.as_mut() {
                            tui.note(&n);
                        }
                    }
                    Some(FileMsg::Done { truncated_at: at }) => {
                        truncated_at = at;
                        file_live = false;
                    }
                    Some(FileMsg::Error(e)) => {
                        source_error = Some(e);
                        file_live = false;
                    }
                    None => file_live = false,
                },
                _ = tick.tick() => {
                    self.poll_controller(&mut merger, &mut live, &mut ctl_live);
                    if self.probe.is_some() {
                        self.read_probe(&mut merger)?;
                    }
                    for ev in merger.release() {
                        live.record(ev);
                    }
                    live.tick(false);
                }
                _ = &mut deadline, if has_deadline && !stopping => {
                    self.stop.request("--duration elapsed");
                }
                _ = exited(&self.until.process), if self.until.process.is_some() && !stopping => {
                    self.stop.request("the traced process exited");
                }
            }
            if self.stop.requested() && !stopping {
                stopping = true;
                if let Some(f) = &self.file {
                    f.stop();
                }
            }
            for ev in merger.release() {
                live.record(ev);
            }
            let sources_done = !ctl_live && !file_live;
            if sources_done && (stopping || self.controller.is_some() || self.file.is_some()) {
                break;
            }
        }
        // The last of the probe, after the controller's cleanup: detached, then read.
        if let Some(p) = self.probe.take() {
            for ev in p.stop()? {
                merger.push(Origin::Probe, ev);
            }
        }
        for ev in merger.finish() {
            live.record(ev);
        }
        if recording && live.header.is_some() {
            let end = Event {
                t: monotonic_ns().max(live.last_t),
                pid: None,
                kind: EventKind::End,
            };
            live.record(end);
        }
        live.tick(true);
        let report = live.verdict.take().map(VerdictSink::finish);
        let stopped = self.stop.why();
        let asked_by_view = live.sinks.tui.as_ref().is_some_and(TuiSink::closed);
        if let Some(tui) = live.sinks.tui.as_mut() {
            if let Some(r) = &report {
                // Findings only the end produces (they have no event line).
                let at_end: Vec<Finding> = r
                    .warnings
                    .iter()
                    .filter(|f| crate::verify::rule::AT_FINISH.contains(&f.rule))
                    .cloned()
                    .collect();
                tui.findings(&at_end);
                tui.verdict(r, false);
            }
            let why = source_error.clone().or_else(|| {
                truncated_at
                    .map(|off| format!("the trace ends inside a record at byte {off} (truncated)"))
            });
            tui.done(why);
            // A signal closes the view with the session; any other end leaves it, with the
            // final verdict, to the user ([`Ended::linger`]).
            if by_signal && !asked_by_view {
                tui.quit();
            }
        }
        let mut trace_error = live.trace_error.take();
        if let Some(t) = live.sinks.trace.take()
            && trace_error.is_none()
            && t.begun()
            && let Err(e) = t.finish()
        {
            trace_error = Some(e);
        }
        Ok(Ended {
            header: live.header.take(),
            events: live.events,
            report,
            stopped,
            trace_error,
            source_error,
            tui: live.sinks.tui.take(),
        })
    }

    fn read_probe(&mut self, merger: &mut Merger) -> Result<(), SessionError> {
        if let Some(p) = self.probe.as_mut() {
            let (evs, w) = p.read()?;
            for ev in evs {
                merger.push(Origin::Probe, ev);
            }
            merger.advance(Origin::Probe, w);
        }
        Ok(())
    }

    /// Takes what the controller sent so far and how far it got (its watermark first: see
    /// [`sources::controller`]).
    fn poll_controller(&mut self, merger: &mut Merger, live: &mut Live, ctl_live: &mut bool) {
        if !*ctl_live {
            return;
        }
        let Some(c) = self.controller.as_mut() else {
            return;
        };
        let w = c.watermark();
        let mut got = Vec::new();
        loop {
            match c.try_recv() {
                Ok(m) => got.push(m),
                Err(gone) => {
                    if gone {
                        *ctl_live = false;
                    }
                    break;
                }
            }
        }
        for m in got {
            self.take_controller(m, merger, live);
        }
        if *ctl_live {
            merger.advance(Origin::Controller, w);
        } else {
            merger.end(Origin::Controller);
        }
    }

    fn take_controller(&mut self, m: Sent, merger: &mut Merger, live: &mut Live) {
        match m {
            Sent::Event(ev) => merger.push(Origin::Controller, ev),
            Sent::Ready(sources) => {
                // The controller's own evidence overrides what the probe says of the same
                // source.
                for (k, v) in sources {
                    self.header.sources.insert(k, v);
                }
                live.begin(&self.header);
            }
        }
    }
}

async fn signalled(s: &mut Option<&mut Signals>) -> &'static str {
    match s {
        Some(s) => tokio::select! {
            _ = s.int.recv() => "SIGINT",
            _ = s.term.recv() => "SIGTERM",
        },
        None => std::future::pending().await,
    }
}

async fn readable(p: &mut Option<Probe>) -> std::io::Result<()> {
    match p {
        Some(p) => p.readable().await,
        None => std::future::pending().await,
    }
}

async fn recv_controller(c: &mut Option<ControllerSource>) -> Option<Sent> {
    match c {
        Some(c) => c.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv_file(f: &mut Option<FileSource>) -> Option<FileMsg> {
    match f {
        Some(f) => f.recv().await,
        None => std::future::pending().await,
    }
}

async fn exited(fd: &Option<AsyncFd<std::os::fd::OwnedFd>>) {
    match fd {
        Some(fd) => {
            let _ = fd.readable().await;
        }
        None => std::future::pending().await,
    }
}
