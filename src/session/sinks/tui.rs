//! The live timeline as a sink: the TUI runs on its own thread (a pure view: it draws what it
//! is sent), fed through a bounded channel.
//!
//! A file can wait, so reading one (`view`, `watch --follow`) waits for the view
//! ([`Pace::Wait`]). A recording cannot ([`Pace::Live`]): the sink never blocks, and what the
//! view has not taken yet waits in a backlog. Past [`BACKLOG`] events the backlog *drops to
//! summaries*: interrupts, DMA, maps, data and marks are only counted (the view says how many
//! it skipped) while the events that shape the lanes (declarations, SETs, steps, GETs, resets,
//! losses, `end`), the findings and the latest verdict still go through. The trace and the
//! verifier get every event whatever the view does.

use super::frames::FrameTimes;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use migscope_tui as tui;

use crate::cli::view::{export, trace_info};
use crate::session::Stop;
use crate::trace::{Event, EventKind, Header};
use crate::verify::{Finding, Report};

/// Messages in flight to the view.
const CHANNEL: usize = 64;
/// Events per message.
const BATCH: usize = 4096;
/// Events waiting for a slow view before the backlog drops to summaries.
pub const BACKLOG: usize = 1 << 16;

/// Whether the source can wait for the view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    /// A file: the session waits while the view is full.
    Wait,
    /// A recording: never waits (see the module docs).
    Live,
}

/// The session's end of the view.
pub struct TuiSink {
    tx: SyncSender<tui::Msg>,
    pace: Pace,
    events: Vec<(u64, Event)>,
    findings: Vec<Finding>,
    backlog: VecDeque<tui::Msg>,
    backlog_events: usize,
    /// Events the backlog dropped, by `ev`.
    skipped: BTreeMap<&'static str, u64>,
    /// The latest report not sent yet, and whether it is interim.
    verdict: Option<(Box<Report>, bool)>,
    closed: bool,
    /// Whether the view learns the trace's header from the session (it was started before
    /// the header was known).
    send_info: bool,
    gone: Arc<Gone>,
}

/// Set by the view's thread once the view is closed (the terminal restored).
#[derive(Default)]
pub struct Gone {
    flag: AtomicBool,
    notify: Notify,
}

impl Gone {
    fn set(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }

    /// Resolves once the view is closed.
    pub async fn wait(&self) {
        while !self.flag.load(Ordering::SeqCst) {
            self.notify.notified().await;
        }
    }
}

/// Log lines for the view's status bar from any thread (dropped when the view is full).
#[derive(Clone)]
pub struct Notes(SyncSender<tui::Msg>);

impl Notes {
    pub fn say(&self, line: &str) {
        let _ = self.0.try_send(tui::Msg::Note(line.to_owned()));
    }
}

/// The view's thread.
pub struct View {
    thread: std::thread::JoinHandle<std::io::Result<()>>,
}

impl View {
    /// Waits for the user to close the view (or for [`TuiSink::quit`]); the terminal is
    /// restored by then.
    pub fn join(self) -> Result<(), String> {
        match self.thread.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("terminal: {e}")),
            Err(_) => Err("the view panicked (the terminal was restored)".to_owned()),
        }
    }
}

/// Starts the view on its own thread, showing `info` until the session knows the trace's
/// header (when `info` already has it, say so with `known`). Closing it (`q`) asks `stop` to
/// end the session; its `e` exports what it holds with `header` (set once known).
pub fn start(
    info: tui::TraceInfo,
    known: bool,
    window: Option<usize>,
    pace: Pace,
    header: Arc<Mutex<Header>>,
    stop: Stop,
) -> (TuiSink, View) {
    let (tx, rx) = sync_channel(CHANNEL);
    let gone = Arc::new(Gone::default());
    let gone_v = Arc::clone(&gone);
    let thread = std::thread::spawn(move || {
        let r = run_view(info, window, rx, &header, &stop);
        gone_v.set();
        r
    });
    (TuiSink::new(tx, pace, !known, gone), View { thread })
}

/// A sink whose messages are collected instead of shown (tests, benchmarks): the receiver
/// must be drained on another thread while the session runs.
pub fn collect() -> (TuiSink, Receiver<tui::Msg>) {
    let (tx, rx) = sync_channel(CHANNEL);
    (TuiSink::new(tx, Pace::Wait, false, Arc::default()), rx)
}

fn run_view(
    info: tui::TraceInfo,
    window: Option<usize>,
    rx: Receiver<tui::Msg>,
    header: &Mutex<Header>,
    stop: &Stop,
) -> std::io::Result<()> {
    let app = tui::App::new(info, window);
    let mut frames = FrameTimes::from_env();
    let r = tui::term::run_timed(
        app,
        rx,
        &mut |app, out| {
            let h = header.lock().map(|h| h.clone()).unwrap_or_default();
            export(app, &h, out)
        },
        &mut |d| {
            if let Some(f) = frames.as_mut() {
                f.add(d);
            }
        },
    );
    stop.request("the view was closed");
    // The terminal is restored by now: the summary lands on the user's stderr.
    if let Some(f) = &frames {
        eprintln!("{}", f.summary());
    }
    r.map(|_| ())
}

/// Whether the view must show `ev` even when it is behind (it shapes the lanes).
fn shapes_lanes(ev: &EventKind) -> bool {
    matches!(
        ev,
        EventKind::Device { .. }
            | EventKind::Set { .. }
            | EventKind::Step { .. }
            | EventKind::SetDone { .. }
            | EventKind::Get { .. }
            | EventKind::Reset { .. }
            | EventKind::Lost { .. }
            | EventKind::End
    )
}

impl TuiSink {
    fn new(tx: SyncSender<tui::Msg>, pace: Pace, send_info: bool, gone: Arc<Gone>) -> TuiSink {
        TuiSink {
            tx,
            pace,
            events: Vec::new(),
            findings: Vec::new(),
            backlog: VecDeque::new(),
            backlog_events: 0,
            skipped: BTreeMap::new(),
            verdict: None,
            closed: false,
            send_info,
            gone,
        }
    }

    /// Log lines for the status bar.
    pub fn notes(&self) -> Notes {
        Notes(self.tx.clone())
    }

    /// The trace's header (name and sources in the view's header).
    pub fn header(&mut self, name: &str, h: &Header, live: bool) {
        if self.send_info {
            self.send(tui::Msg::Info(trace_info(name, h, live)));
        }
    }

    pub fn event(&mut self, line: u64, ev: &Event) {
        if self.closed {
            return;
        }
        if self.pace == Pace::Live && self.backlog_events >= BACKLOG && !shapes_lanes(&ev.kind) {
            *self.skipped.entry(ev.kind.ev()).or_default() += 1;
            return;
        }
        self.events.push((line, ev.clone()));
        if self.events.len() >= BATCH {
            self.flush();
        }
    }

    pub fn findings(&mut self, fs: &[Finding]) {
        if !self.closed {
            self.findings.extend_from_slice(fs);
        }
    }

    /// A verdict update (only the latest one waits for a slow view).
    pub fn verdict(&mut self, r: &Report, interim: bool) {
        self.verdict = Some((Box::new(r.clone()), interim));
    }

    pub fn note(&mut self, s: &str) {
        self.send(tui::Msg::Note(s.to_owned()));
    }

    /// Sends what is pending: events before the findings that refer to them, then the
    /// verdict.
    pub fn flush(&mut self) {
        if !self.events.is_empty() {
            let evs = std::mem::take(&mut self.events);
            self.send(tui::Msg::Events(evs));
        }
        if !self.findings.is_empty() {
            let fs = std::mem::take(&mut self.findings);
            self.send(tui::Msg::Findings(fs));
        }
        if let Some((report, interim)) = self.verdict.take() {
            // A newer verdict replaces one still waiting.
            self.backlog
                .retain(|m| !matches!(m, tui::Msg::Verdict { .. }));
            self.send(tui::Msg::Verdict { report, interim });
        }
        self.drain_backlog();
    }

    /// The source ended (`error`: why it could not be read on).
    pub fn done(&mut self, error: Option<String>) {
        self.flush();
        self.send(match error {
            Some(e) => tui::Msg::SourceError(e),
            None => tui::Msg::SourceDone,
        });
        self.drain_backlog();
    }

    /// Closes the view (the session was ended from outside it).
    pub fn quit(&mut self) {
        self.flush();
        // Whatever is still waiting is not worth keeping the user's terminal for.
        self.backlog.clear();
        if let Err(TrySendError::Full(_)) = self.tx.try_send(tui::Msg::Quit) {
            // The view drains its channel every frame: it takes the Quit within one.
            let _ = self.tx.send(tui::Msg::Quit);
        }
    }

    /// Whether the view is closed (by the user, or it failed).
    pub fn closed(&self) -> bool {
        self.closed || self.gone.flag.load(Ordering::SeqCst)
    }

    /// What resolves once the view is closed.
    pub fn closing(&self) -> Arc<Gone> {
        Arc::clone(&self.gone)
    }

    fn send(&mut self, m: tui::Msg) {
        if self.closed {
            return;
        }
        match self.pace {
            Pace::Wait => {
                if self.tx.send(m).is_err() {
                    self.closed = true;
                }
            }
            Pace::Live => {
                if let tui::Msg::Events(e) = &m {
                    self.backlog_events += e.len();
                }
                self.backlog.push_back(m);
                self.drain_backlog();
            }
        }
    }

    fn drain_backlog(&mut self) {
        while let Some(m) = self.backlog.pop_front() {
            let n = match &m {
                tui::Msg::Events(e) => e.len(),
                _ => 0,
            };
            match self.tx.try_send(m) {
                Ok(()) => self.backlog_events -= n,
                Err(TrySendError::Full(m)) => {
                    self.backlog.push_front(m);
                    return;
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.closed = true;
                    self.backlog.clear();
                    return;
                }
            }
        }
        if !self.skipped.is_empty() {
            let what: Vec<String> = std::mem::take(&mut self.skipped)
                .into_iter()
                .map(|(ev, n)| format!("{n} {ev}"))
                .collect();
            let note = format!(
                "the view fell behind and skipped {} (the trace and the verdict have every event)",
                what.join(", ")
            );
            let _ = self.tx.try_send(tui::Msg::Note(note));
        }
    }
}
