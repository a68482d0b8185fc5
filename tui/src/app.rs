//! The model and its update function (Elm style): [`App`] holds everything the views draw,
//! [`Msg`] is everything that can happen, [`update`] applies one message without any I/O.
//! Work the view asks of the outside world (exporting) is queued as [`Effect`]s.

use std::ops::Range;
use std::sync::Arc;

use migscope_core::trace::{Event, EventKind, Header};
use migscope_core::verify::{Finding, Report};

use crate::index::{BLOCK, Progress, TraceIndex};
use crate::store::{Lane, Store, summary};

/// Rows held around the cursor of an indexed trace (the event list and the detail pane).
pub const NEAR_ROWS: u64 = 512;
/// Most rows decoded for the visible time range of an indexed trace; a wider view draws
/// from the index's counts.
pub const VIEW_ROWS: u64 = 1 << 16;

/// Findings held for navigation; more are counted (see [`App::dropped`]).
pub const MAX_FINDINGS: usize = 100_000;

/// A key press, independent of the terminal library.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Left,
    Right,
    Up,
    Down,
    PageUp,
    PageDown,
    Home,
    End,
    Tab,
    BackTab,
    Enter,
    Esc,
    Backspace,
    /// Mouse wheel.
    WheelUp,
    WheelDown,
}

/// Everything that can happen to the view.
#[derive(Clone, Debug, PartialEq)]
pub enum Msg {
    Key(Key),
    /// Periodic tick (live follow).
    Tick,
    /// The trace's header information (before any event: the lanes' timelines read its
    /// sources).
    Info(TraceInfo),
    /// A batch of events with their 1-based source lines (0: none), in time order.
    Events(Vec<(u64, Event)>),
    /// Findings the verifier produced (violations and warnings).
    Findings(Vec<Finding>),
    /// The verifier's report: interim while the source goes on (it may still change, except
    /// a `fail`), else final. The verdict, the blind spots and the stats pane's numbers are
    /// its own.
    Verdict {
        report: Box<Report>,
        interim: bool,
    },
    /// The source has no more events (replay loaded, or live capture ended).
    SourceDone,
    /// The outside world asks the view to close (SIGTERM, the session ended by a signal).
    Quit,
    /// The source failed; the message says why.
    SourceError(String),
    /// Something the source wants the user to know (shown in the status bar).
    Note(String),
    /// An export finished: the file written, or why not.
    Exported(Result<String, String>),
    /// How far indexing the trace file got (before [`Msg::Index`]).
    Indexing(Progress),
    /// The trace file's index: the view draws from it and holds only a window of events
    /// (asked for with [`Effect::Load`]). Events are not sent then. While a long trace is
    /// indexed, partial ones ([`TraceIndex::partial`]: the rows read so far) come first; each
    /// later one keeps the cursor.
    Index(Arc<TraceIndex>),
    /// The rows an [`Effect::Load`] asked for, decoded from the file (with their lines).
    Window {
        rows: Range<u64>,
        events: Vec<(u64, Event)>,
    },
}

/// Work for the runner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Write the retained trace as JSONL to this path (write-then-rename).
    Export(String),
    /// Decode these rows of the indexed trace and send them as [`Msg::Window`].
    Load(Range<u64>),
}

/// Where the trace came from: its name (a file name or `live`), its header (what the recorder
/// could see), and whether it is still being recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceInfo {
    pub name: String,
    pub header: Header,
    pub live: bool,
}

/// The focused pane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pane {
    Timeline,
    Events,
    Detail,
    Stats,
}

impl Pane {
    pub const fn name(self) -> &'static str {
        match self {
            Pane::Timeline => "timeline",
            Pane::Events => "events",
            Pane::Detail => "detail",
            Pane::Stats => "stats",
        }
    }
    const fn next(self) -> Pane {
        match self {
            Pane::Timeline => Pane::Events,
            Pane::Events => Pane::Detail,
            Pane::Detail => Pane::Stats,
            Pane::Stats => Pane::Timeline,
        }
    }
    const fn prev(self) -> Pane {
        match self {
            Pane::Timeline => Pane::Stats,
            Pane::Events => Pane::Timeline,
            Pane::Detail => Pane::Events,
            Pane::Stats => Pane::Detail,
        }
    }
}

/// A finding with the row of the event that caused it (if retained).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FindingRec {
    pub f: Finding,
    pub row: Option<u64>,
    pub dev: Option<usize>,
}

/// The event-list filter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// What the user typed.
    pub text: String,
    /// Matching rows (global indices, increasing); `None` when no filter is set.
    pub rows: Option<Vec<u64>>,
    devs: Option<Vec<usize>>,
    /// Kind codes ([`EventKind::code`]).
    evs: Option<Vec<u8>>,
    words: Vec<String>,
    /// Next row to scan (a text search proceeds a step per tick).
    next: u64,
    /// Where the cursor was when the filter was set: it goes to the first match from there.
    anchor: Option<u64>,
}

/// The whole view state.
#[derive(Debug)]
pub struct App {
    pub store: Store,
    pub info: TraceInfo,
    /// The verifier's latest report (None: none yet, the verdict is pending).
    pub report: Option<Box<Report>>,
    /// Whether `report` is interim.
    pub interim: bool,
    pub findings: Vec<FindingRec>,
    /// Indices into `findings` of the violations (not warnings), in time order.
    pub violations: Vec<usize>,
    /// Per device index: times of its violations, sorted (drawn on its lane).
    pub dev_viol: Vec<Vec<u64>>,
    /// Rows with findings: true for a violation, false for warnings only.
    pub row_marks: std::collections::HashMap<u64, bool>,
    /// Violations and warnings past [`MAX_FINDINGS`], counted only.
    pub dropped: (u64, u64),
    /// Findings whose event or device had not arrived yet.
    unresolved: Vec<usize>,
    /// Visible time window: `[view_start, view_start + view_span)`.
    pub view_start: u64,
    pub view_span: u64,
    /// Whether the window is still the automatic one (whole trace, or the live tail).
    pub auto_view: bool,
    /// Live: the view follows the newest events.
    pub follow: bool,
    /// Live: display frozen (events still recorded).
    pub paused: bool,
    pub focus: Pane,
    /// Selected event (global row).
    pub cursor: Option<u64>,
    /// Selected finding (index into `findings`).
    pub selected_finding: Option<usize>,
    /// Highlighted timeline lane.
    pub lane: usize,
    pub filter: Filter,
    /// Filter text being typed after `/`.
    pub input: Option<String>,
    pub show_help: bool,
    pub status: String,
    pub done: bool,
    pub quit: bool,
    pub exports: u32,
    pub effects: Vec<Effect>,
    /// Live-mode span of the followed tail.
    pub live_span: u64,
    /// Scroll offset of the stats and detail panes.
    pub scroll: u16,
    /// The trace file's index, when the view draws from it ([`Msg::Index`]); `store` then
    /// holds a window of its rows.
    pub index: Option<Arc<TraceIndex>>,
    /// Rows asked for and not arrived yet.
    loading: Option<Range<u64>>,
    /// The rows the window was asked to hold (it may hold fewer: skipped records).
    held: Range<u64>,
    /// Where the cursor goes once the window holding that time arrives.
    pending_t: Option<u64>,
}

impl App {
    /// A view over a trace that will be fed with [`Msg`]s; `live` bounds memory to about
    /// `cap` events (plus per-device summaries).
    pub fn new(info: TraceInfo, cap: Option<usize>) -> Self {
        let live = info.live;
        App {
            store: match cap {
                Some(c) => Store::with_cap(&info.header, c),
                None => Store::new(&info.header),
            },
            info,
            report: None,
            interim: false,
            findings: Vec::new(),
            violations: Vec::new(),
            dev_viol: Vec::new(),
            row_marks: std::collections::HashMap::new(),
            unresolved: Vec::new(),
            dropped: (0, 0),
            view_start: 0,
            view_span: 1,
            auto_view: true,
            follow: live,
            paused: false,
            focus: Pane::Timeline,
            cursor: None,
            selected_finding: None,
            lane: 0,
            filter: Filter::default(),
            input: None,
            show_help: false,
            status: String::new(),
            done: false,
            quit: false,
            exports: 0,
            effects: Vec::new(),
            live_span: 10_000_000_000,
            scroll: 0,
            index: None,
            loading: None,
            held: 0..0,
            pending_t: None,
        }
    }

    /// The index arrived: the lanes, segments and counts are its own from now on, the store
    /// a window of its rows.
    fn set_index(&mut self, ix: Arc<TraceIndex>) {
        // A fuller index of the same file (the partial ones come while it is built): the
        // cursor stays where the user put it.
        let again = self.index.is_some();
        let partial = ix.partial;
        self.store = Store::window(&ix, 0, &[]);
        self.index = Some(ix);
        self.loading = None;
        self.held = 0..0;
        self.cursor = match self.cursor.filter(|_| again) {
            Some(c) => Some(c.min(self.store.total.saturating_sub(1))),
            None => Some(0),
        };
        if self.auto_view {
            self.fit_view();
        }
        if partial {
            // The progress notes say how far indexing got; the findings wait for the whole.
            self.want_window();
            return;
        }
        let truncated = self
            .index
            .as_ref()
            .and_then(|ix| ix.truncated_at)
            .map(|o| format!("; the file ends inside a record at byte offset {o}"))
            .unwrap_or_default();
        self.status = format!("indexed {} events{truncated}", self.store.total);
        for i in 0..self.findings.len() {
            self.findings[i].row = None;
            self.resolve_finding(i);
        }
        self.want_window();
    }

    /// The rows of an [`Effect::Load`] arrived.
    fn set_window(&mut self, rows: Range<u64>, events: Vec<(u64, Event)>) {
        let Some(ix) = self.index.clone() else {
            return;
        };
        if self.loading.as_ref() == Some(&rows) {
            self.loading = None;
        }
        self.store = Store::window(&ix, rows.start, &events);
        self.held = rows;
        if let Some(t) = self.pending_t
            && self.store.covers(t, t.saturating_add(1), self.store.total)
        {
            self.pending_t = None;
            let g = self
                .store
                .row_at_time(t)
                .min(self.store.total.saturating_sub(1));
            self.cursor = Some(g);
        }
        self.want_window();
    }

    /// Asks for the rows the screen needs when the window does not hold them: those around
    /// the cursor, and every row of the visible time range when there are few enough.
    fn want_window(&mut self) {
        let Some(ix) = &self.index else {
            return;
        };
        let rows = ix.rows;
        if rows == 0 {
            return;
        }
        let c = self.cursor.unwrap_or(0).min(rows - 1);
        let near = c.saturating_sub(NEAR_ROWS / 2)..(c + NEAR_ROWS / 2).min(rows);
        let (v0, v1) = (self.view_start, self.view_end());
        let mut want = near.clone();
        if ix.rows_between(v0, v1) <= VIEW_ROWS {
            let a = ix.approx_row_at_time(v0).saturating_sub(1);
            let z = ix.approx_row_at_time(v1).saturating_add(BLOCK).min(rows);
            if a <= near.start && z >= near.end {
                want = a..z;
            }
        }
        let held = &self.held;
        let covered = held.start <= want.start && held.end >= want.end;
        if covered || self.loading.as_ref().is_some_and(|l| *l == want) {
            return;
        }
        self.loading = Some(want.clone());
        self.effects.push(Effect::Load(want));
    }

    /// The first row at or after time `t`: exact when the window holds it, else the start of
    /// its block (the cursor moves there once the window arrives).
    fn row_at_time(&mut self, t: u64) -> u64 {
        match &self.index {
            Some(ix) if !self.store.covers(t, t.saturating_add(1), ix.rows) => {
                self.pending_t = Some(t);
                ix.approx_row_at_time(t).min(ix.rows.saturating_sub(1))
            }
            _ => {
                self.pending_t = None;
                self.store.row_at_time(t)
            }
        }
    }

    /// The trace's header arrived: before any event (the usual case) the lanes' timelines
    /// start over with its sources.
    fn set_info(&mut self, info: TraceInfo) {
        if self.store.total == 0 {
            self.store = match self.store.cap() {
                Some(c) => Store::with_cap(&info.header, c),
                None => Store::new(&info.header),
            };
        }
        self.info = info;
    }

    /// Feeds a whole list of messages (tests, replay).
    pub fn feed(&mut self, msgs: impl IntoIterator<Item = Msg>) {
        for m in msgs {
            update(self, m);
        }
    }

    /// The time the cursor is at (or the view centre).
    pub fn cursor_t(&self) -> u64 {
        self.cursor
            .and_then(|g| self.store.t_at(g))
            .unwrap_or(self.view_start.saturating_add(self.view_span / 2))
    }

    /// End of the visible window (exclusive).
    pub fn view_end(&self) -> u64 {
        self.view_start.saturating_add(self.view_span)
    }

    fn first_t(&self) -> u64 {
        self.store.first_t.unwrap_or(0)
    }

    /// The automatic window: the whole trace (replay) or its tail (live follow).
    fn fit_view(&mut self) {
        let first = self.first_t();
        let last = self.store.last_t;
        let whole = (last - first.min(last)).max(1);
        if self.info.live && whole > self.live_span {
            self.view_span = self.live_span;
            self.view_start = last.saturating_sub(self.live_span);
        } else {
            // A little margin so the last event is not on the right edge.
            self.view_span = whole.saturating_add(whole / 20).saturating_add(1);
            self.view_start = first;
        }
    }

    /// Rows the event list shows (the filter's, or all).
    pub fn list_len(&self) -> u64 {
        if let Some(ix) = &self.index {
            return ix.rows;
        }
        match &self.filter.rows {
            Some(r) => r.len() as u64,
            None => self.store.len() as u64,
        }
    }
    /// The global row at list position `i`.
    pub fn list_row(&self, i: u64) -> Option<u64> {
        if let Some(ix) = &self.index {
            return (i < ix.rows).then_some(i);
        }
        match &self.filter.rows {
            Some(r) => r.get(i as usize).copied(),
            None => (i < self.store.len() as u64).then_some(self.store.base() + i),
        }
    }
    /// List position of the first listed row >= `g`.
    pub fn list_pos(&self, g: u64) -> u64 {
        if self.index.is_some() {
            return g;
        }
        match &self.filter.rows {
            Some(r) => r.partition_point(|&x| x < g) as u64,
            None => g.saturating_sub(self.store.base()),
        }
    }

    fn set_cursor_pos(&mut self, pos: u64) {
        let n = self.list_len();
        if n == 0 {
            self.cursor = None;
            return;
        }
        self.cursor = self.list_row(pos.min(n - 1));
        self.selected_finding = None;
        self.scroll = 0;
        self.reveal_cursor();
    }

    /// Moves the window so the cursor is visible (re-centred if it left).
    fn reveal_cursor(&mut self) {
        let t = self.cursor_t();
        if t < self.view_start || t >= self.view_end() {
            self.view_start = t.saturating_sub(self.view_span / 2);
            self.auto_view = false;
        }
    }

    /// Cursor to the listed row nearest the view centre.
    fn cursor_to_centre(&mut self) {
        let t = self.view_start.saturating_add(self.view_span / 2);
        let g = self.row_at_time(t);
        let pos = self.list_pos(g);
        let n = self.list_len();
        if n > 0 {
            self.cursor = self.list_row(pos.min(n - 1));
            self.selected_finding = None;
        }
    }

    fn pan(&mut self, dir: i64) {
        let step = (self.view_span / 8).max(1);
        self.view_start = if dir < 0 {
            self.view_start.saturating_sub(step)
        } else {
            self.view_start.saturating_add(step)
        };
        self.auto_view = false;
        self.follow = false;
        self.cursor_to_centre();
    }

    fn zoom(&mut self, zoom_in: bool) {
        let anchor = self.cursor_t();
        let old = self.view_span;
        let new = if zoom_in {
            (old / 2).max(10)
        } else {
            let whole = self.store.last_t.saturating_sub(self.first_t()).max(1);
            old.saturating_mul(2).min(whole.saturating_mul(4).max(10))
        };
        // Keep the anchor at the same relative position.
        let rel = anchor.saturating_sub(self.view_start) as f64 / old.max(1) as f64;
        let rel = rel.clamp(0.0, 1.0);
        self.view_span = new;
        self.view_start = anchor.saturating_sub((rel * new as f64) as u64);
        self.auto_view = false;
        if self.info.live {
            self.live_span = new;
        }
    }

    /// Selects finding `fi` (violation navigation).
    fn select_finding(&mut self, fi: usize) {
        let Some(rec) = self.findings.get(fi) else {
            return;
        };
        let (t, rec_row, rec_dev) = (rec.f.t, rec.row, rec.dev);
        let rule = rec.f.rule;
        let row = match rec_row {
            Some(r) => Some(r),
            // An indexed trace: the row at that time (exact once the window holds it).
            None if self.index.is_some() => Some(self.row_at_time(t)),
            None => {
                let g = self.store.row_at_time(t);
                (g < self.store.end()).then_some(g)
            }
        };
        self.selected_finding = Some(fi);
        self.cursor = row;
        self.scroll = 0;
        self.follow = false;
        if t < self.view_start || t >= self.view_end() {
            self.view_start = t.saturating_sub(self.view_span / 2);
            self.auto_view = false;
        }
        if let Some(d) = rec_dev {
            let lanes = self.store.lanes();
            if let Some(i) = lanes.iter().position(|l| *l == Lane::Dev(d)) {
                self.lane = i;
            }
        }
        let (n, total) = (
            self.violations
                .iter()
                .position(|&v| v == fi)
                .map_or(0, |p| p + 1),
            self.violations.len(),
        );
        self.status = format!("violation {n}/{total}: {rule}");
    }

    fn next_violation(&mut self, forward: bool) {
        if self.violations.is_empty() {
            self.status = "no violations".to_owned();
            return;
        }
        let cur_t = self.cursor_t();
        let cur = self.selected_finding;
        let pos = self.violations.iter().position(|&v| Some(v) == cur);
        let target = match (pos, forward) {
            (Some(p), true) => self.violations.get(p + 1).copied(),
            (Some(p), false) => p.checked_sub(1).map(|p| self.violations[p]),
            (None, true) => self
                .violations
                .iter()
                .copied()
                .find(|&v| self.findings[v].f.t >= cur_t)
                .or(Some(self.violations[0])),
            (None, false) => self
                .violations
                .iter()
                .rev()
                .copied()
                .find(|&v| self.findings[v].f.t <= cur_t)
                .or(self.violations.last().copied()),
        };
        match target {
            Some(v) => self.select_finding(v),
            None => {
                self.status = if forward {
                    "no later violation".to_owned()
                } else {
                    "no earlier violation".to_owned()
                }
            }
        }
    }

    /// Parses and applies a filter string: `dev:SUBSTR`, `ev:KIND[,KIND]` (or `kind:`), other
    /// words match the event's summary (case-insensitive). Empty clears.
    fn apply_filter(&mut self, text: &str) {
        let text = text.trim();
        if self.index.is_some() {
            self.status = "filters need every event in memory: not on an indexed trace (use `migscope export` with a filter, or a JSONL trace)".to_owned();
            return;
        }
        if text.is_empty() {
            self.filter = Filter::default();
            self.status = "filter cleared".to_owned();
            return;
        }
        let mut devs: Option<Vec<usize>> = None;
        let mut evs: Option<Vec<u8>> = None;
        let mut words = Vec::new();
        for w in text.split_whitespace() {
            if let Some(d) = w.strip_prefix("dev:") {
                let m: Vec<usize> = self
                    .store
                    .devices
                    .iter()
                    .enumerate()
                    .filter(|(_, x)| x.name.contains(d))
                    .map(|(i, _)| i)
                    .collect();
                devs.get_or_insert_with(Vec::new).extend(m);
            } else if let Some(k) = w.strip_prefix("ev:").or_else(|| w.strip_prefix("kind:")) {
                let set = evs.get_or_insert_with(Vec::new);
                for k in k.split(',') {
                    match EventKind::code_of(k) {
                        Some(e) => set.push(e),
                        None => {
                            self.status = format!("unknown event kind `{k}`");
                            return;
                        }
                    }
                }
            } else {
                words.push(w.to_lowercase());
            }
        }
        self.filter = Filter {
            text: text.to_owned(),
            rows: Some(Vec::new()),
            devs,
            evs,
            words,
            next: self.store.base(),
            // Keep the cursor near where it was.
            anchor: Some(self.cursor.unwrap_or(self.store.base())),
        };
        self.cursor = None;
        self.advance_filter();
    }

    /// Rows scanned per step by a text filter (the summary is rendered per row); filters on
    /// columns only scan everything at once (tens of ms for 10M rows).
    const TEXT_SCAN_STEP: u64 = 250_000;

    /// Scans the next rows for the filter (all of them, or one step of a text search, the rest
    /// on the following ticks), places the cursor, reports progress.
    fn advance_filter(&mut self) {
        if self.filter.rows.is_none() {
            return;
        }
        let base = self.store.base();
        let end = self.store.end();
        let from = self.filter.next.max(base);
        let budget = if self.filter.words.is_empty() {
            u64::MAX
        } else {
            Self::TEXT_SCAN_STEP
        };
        let to = from.saturating_add(budget).min(end);
        let new: Vec<u64> = (from..to).filter(|&g| self.filter_matches(g)).collect();
        self.filter.next = to;
        if let Some(rows) = self.filter.rows.as_mut() {
            // Drop matches the ring no longer holds.
            let k = rows.partition_point(|&g| g < base);
            rows.drain(..k);
            rows.extend(new);
        }
        let done = to >= end;
        if let Some(a) = self.filter.anchor {
            let pos = self.list_pos(a);
            if pos < self.list_len() {
                self.cursor = self.list_row(pos);
                self.filter.anchor = None;
            } else if done {
                let n = self.list_len();
                self.cursor = n.checked_sub(1).and_then(|i| self.list_row(i));
                self.filter.anchor = None;
            }
        }
        if to > from || self.filter.anchor.is_some() {
            let n = self.list_len();
            let text = &self.filter.text;
            self.status = if done {
                format!("filter `{text}`: {n} events")
            } else {
                let held = (end - base).max(1);
                format!(
                    "filter `{text}`: {n} events so far (searching {}%)",
                    (to - base) * 100 / held
                )
            };
        }
    }

    fn filter_matches(&self, g: u64) -> bool {
        let f = &self.filter;
        if !self
            .store
            .row_matches(g, f.devs.as_deref(), f.evs.as_deref())
        {
            return false;
        }
        if f.words.is_empty() {
            return true;
        }
        let Some((_, e)) = self.store.get(g) else {
            return false;
        };
        let s = summary(&e).to_lowercase();
        f.words.iter().all(|w| s.contains(w.as_str()))
    }

    fn export_name(&self) -> String {
        let stem = if self.info.live || self.info.name.is_empty() || self.info.name == "-" {
            "migscope-watch".to_owned()
        } else {
            let n = self.info.name.rsplit('/').next().unwrap_or(&self.info.name);
            n.strip_suffix(".jsonl").unwrap_or(n).to_owned()
        };
        format!("{stem}.export-{}.jsonl", self.exports + 1)
    }

    fn ingest(&mut self, evs: Vec<(u64, Event)>) {
        if self.index.is_some() {
            // The index is the trace: its rows are decoded from the file.
            return;
        }
        for (line, e) in &evs {
            self.store.push(*line, e);
        }
        self.advance_filter();
        // Findings that arrived before their event was stored.
        // (One more try each: a finding refers to an event already sent or in this batch.)
        for i in std::mem::take(&mut self.unresolved) {
            self.resolve_finding(i);
        }
        if self.cursor.is_some_and(|g| g < self.store.base()) {
            self.cursor = Some(self.store.base());
        }
        if self.paused {
            return;
        }
        if self.auto_view {
            self.fit_view();
        }
        if self.follow {
            self.fit_view();
            let n = self.list_len();
            self.cursor = n.checked_sub(1).and_then(|i| self.list_row(i));
        } else if self.cursor.is_none() {
            self.cursor = self.list_row(0);
        }
    }

    /// Links finding `i` to its row and device lane once they are known.
    fn resolve_finding(&mut self, i: usize) {
        let rec = &self.findings[i];
        let row = rec.row.or_else(|| match &self.index {
            // An indexed trace's rows are its events in order: line - 2.
            Some(ix) => rec
                .f
                .line
                .checked_sub(2)
                .filter(|&r| rec.f.line != 0 && r < ix.rows),
            None => (rec.f.line != 0)
                .then(|| self.store.row_of_line(rec.f.line))
                .flatten(),
        });
        let new_dev = rec.dev.is_none();
        let dev = rec.dev.or_else(|| {
            rec.f
                .dev
                .as_deref()
                .and_then(|d| self.store.device_index(d))
        });
        let (t, warning) = (rec.f.t, rec.f.warning);
        if let Some(g) = row {
            let m = self.row_marks.entry(g).or_insert(false);
            *m |= !warning;
        }
        if let Some(d) = dev.filter(|_| new_dev && !warning) {
            if self.dev_viol.len() <= d {
                self.dev_viol.resize_with(d + 1, Vec::new);
            }
            let v = &mut self.dev_viol[d];
            let p = v.partition_point(|&x| x <= t);
            v.insert(p, t);
        }
        let rec = &mut self.findings[i];
        rec.row = row;
        rec.dev = dev;
    }

    fn add_findings(&mut self, fs: Vec<Finding>) {
        for f in fs {
            // Memory stays bounded on a device that misbehaves all the time (live for hours):
            // past the cap, findings are only counted.
            if self.findings.len() >= MAX_FINDINGS {
                if f.warning {
                    self.dropped.1 += 1;
                } else {
                    self.dropped.0 += 1;
                }
                continue;
            }
            let i = self.findings.len();
            let warning = f.warning;
            self.findings.push(FindingRec {
                f,
                row: None,
                dev: None,
            });
            self.resolve_finding(i);
            let rec = &self.findings[i];
            if (rec.row.is_none() && rec.f.line != 0) || (rec.dev.is_none() && rec.f.dev.is_some())
            {
                self.unresolved.push(i);
            }
            if !warning {
                // Keep time order even if findings come late.
                let t = self.findings[i].f.t;
                let p = self
                    .violations
                    .partition_point(|&v| self.findings[v].f.t <= t);
                self.violations.insert(p, i);
            }
        }
    }

    /// Violation count and warning count (including those past the cap, not held).
    pub fn counts(&self) -> (usize, usize) {
        let v = self.violations.len();
        (
            v + self.dropped.0 as usize,
            self.findings.len() - v + self.dropped.1 as usize,
        )
    }

    fn key(&mut self, k: Key) {
        if let Some(buf) = self.input.as_mut() {
            match k {
                Key::Enter => {
                    let text = std::mem::take(buf);
                    self.input = None;
                    self.apply_filter(&text);
                }
                Key::Esc => {
                    self.input = None;
                    self.status = "filter unchanged".to_owned();
                }
                Key::Backspace => {
                    buf.pop();
                }
                Key::Char(c) => buf.push(c),
                _ => {}
            }
            return;
        }
        if self.show_help {
            // Any key closes the help; q still quits.
            self.show_help = false;
            if k == Key::Char('q') {
                self.quit = true;
            }
            return;
        }
        let lanes = self.store.lanes().len();
        match k {
            Key::Char('q') => self.quit = true,
            Key::Char('?') => self.show_help = true,
            Key::Char(' ') => {
                if self.info.live {
                    self.paused = !self.paused;
                    if !self.paused {
                        self.follow = true;
                        self.fit_view();
                    }
                    self.status = if self.paused { "paused" } else { "following" }.to_owned();
                } else {
                    self.status = "pause applies to live mode".to_owned();
                }
            }
            Key::Char('h') | Key::Left => self.pan(-1),
            Key::Char('l') | Key::Right => self.pan(1),
            Key::Char('+') | Key::Char('=') => self.zoom(true),
            Key::Char('-') | Key::Char('_') => self.zoom(false),
            Key::Tab => {
                self.focus = self.focus.next();
                self.scroll = 0;
            }
            Key::BackTab => {
                self.focus = self.focus.prev();
                self.scroll = 0;
            }
            Key::Char('n') => self.next_violation(true),
            Key::Char('N') => self.next_violation(false),
            Key::Char('/') => self.input = Some(self.filter.text.clone()),
            Key::Char('f') => {
                // Filter the list to the highlighted lane's device (toggle).
                if self.filter.rows.is_some() {
                    self.apply_filter("");
                } else if let Some(Lane::Dev(d)) = self.store.lanes().get(self.lane).copied() {
                    let name = self.store.devices[d].name.clone();
                    self.apply_filter(&format!("dev:{name}"));
                }
            }
            Key::Char('e') => {
                let name = self.export_name();
                self.exports += 1;
                self.status = format!("exporting to {name}...");
                self.effects.push(Effect::Export(name));
            }
            Key::Char('g') | Key::Home => {
                self.follow = false;
                self.fit_view();
                self.auto_view = false;
                self.view_start = self.first_t();
                self.set_cursor_pos(0);
            }
            Key::Char('G') | Key::End => {
                self.follow = self.info.live;
                self.fit_view();
                self.auto_view = !self.info.live;
                let n = self.list_len();
                self.set_cursor_pos(n.saturating_sub(1));
                if self.info.live {
                    self.paused = false;
                }
            }
            Key::Up | Key::Char('k') | Key::Down | Key::Char('j')
                if self.focus == Pane::Timeline =>
            {
                let up = matches!(k, Key::Up | Key::Char('k'));
                if up {
                    self.lane = self.lane.saturating_sub(1);
                } else if lanes > 0 {
                    self.lane = (self.lane + 1).min(lanes - 1);
                }
            }
            Key::Up | Key::Char('k') | Key::Down | Key::Char('j')
                if matches!(self.focus, Pane::Detail | Pane::Stats) =>
            {
                let up = matches!(k, Key::Up | Key::Char('k'));
                self.scroll = if up {
                    self.scroll.saturating_sub(1)
                } else {
                    self.scroll.saturating_add(1)
                };
            }
            Key::Up | Key::Char('k') => self.step_cursor(-1),
            Key::Down | Key::Char('j') => self.step_cursor(1),
            Key::PageUp => self.step_cursor(-10),
            Key::WheelUp => self.step_cursor(-3),
            Key::WheelDown => self.step_cursor(3),
            Key::PageDown => self.step_cursor(10),
            Key::Esc => {
                self.selected_finding = None;
                self.status.clear();
            }
            _ => {}
        }
    }

    fn step_cursor(&mut self, d: i64) {
        self.follow = false;
        let pos = self.cursor.map_or(0, |g| self.list_pos(g));
        let new = if d < 0 {
            pos.saturating_sub(d.unsigned_abs())
        } else {
            pos.saturating_add(d as u64)
        };
        self.set_cursor_pos(new);
    }
}

/// Applies one message to the model. No I/O: requests for the outside world go to
/// `app.effects`.
pub fn update(app: &mut App, msg: Msg) {
    match msg {
        Msg::Key(k) => app.key(k),
        Msg::Tick => {
            if app
                .filter
                .rows
                .as_ref()
                .is_some_and(|_| app.filter.next < app.store.end())
            {
                app.advance_filter();
            }
        }
        Msg::Info(info) => app.set_info(info),
        Msg::Events(evs) => app.ingest(evs),
        Msg::Findings(fs) => app.add_findings(fs),
        Msg::Verdict { report, interim } => {
            app.report = Some(report);
            app.interim = interim;
        }
        Msg::SourceDone => {
            app.done = true;
            if app.info.live {
                app.status = "capture ended".to_owned();
            }
        }
        Msg::SourceError(e) => {
            app.done = true;
            app.status = format!("error: {e}");
        }
        Msg::Note(s) => app.status = s,
        Msg::Quit => app.quit = true,
        Msg::Exported(Ok(path)) => app.status = format!("exported {path}"),
        Msg::Exported(Err(e)) => app.status = format!("export failed: {e}"),
        Msg::Indexing(p) => {
            app.status = format!(
                "indexing {}% ({} events)…",
                p.bytes.saturating_mul(100) / p.total_bytes.max(1),
                p.events
            );
        }
        Msg::Index(ix) => app.set_index(ix),
        Msg::Window { rows, events } => app.set_window(rows, events),
    }
    if app.index.is_some() {
        app.want_window();
    }
}
