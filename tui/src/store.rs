//! Compact columnar storage of the core's trace [`Event`]s with the indexes drawing needs:
//! per-device state segments, per-device tick lists (DMA, IRQ, data, transitions), per-context
//! map lists, and an optional ring bound for live mode.
//!
//! The state segments are the core's own: the store feeds every event to a
//! [`Verifier`] that keeps its [`DeviceTimeline`](migscope_core::verify::DeviceTimeline)
//! segments, the same ones the Perfetto and Markdown exports draw, so a lane shows what the
//! rules judged. The store counts nothing the verifier reports: quiesces, evidence while
//! quiesced and violations are the [`Report`](migscope_core::verify::Report)'s (the stats pane).
//!
//! Rows are addressed by a *global index* (`base + row`) that stays valid when the ring drops
//! old rows. Times are assumed non-decreasing (the trace format requires it); the time column
//! is the time index, searched with binary search.

use std::collections::{BTreeMap, HashMap};

use migscope_core::model::{MigFlags, MigState, PrecopyInfo};
use migscope_core::trace::{
    Corruption, DataDir, DataFile, DmaSource, EV_NAMES, Event, EventKind, Header, IrqKind, RegStage,
};
use migscope_core::verify::{Options, SegKind, Segment, Verifier};

use crate::index::{Tick, TraceIndex, tick};

/// Marks "no device" in the device column.
const NO_DEV: u16 = u16::MAX;
/// Lanes the 16-bit device column can tell apart.
const MAX_DEVICES: usize = NO_DEV as usize;
/// Marks "no pid" in the pid column.
const NO_PID: u32 = u32::MAX;

/// A state segment starting at `t`: what the core's timeline says the device was doing (it
/// ends where the next one starts; the last one is still open).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seg {
    pub t: u64,
    pub what: SegKind,
    /// Global index of the event that began it (None when it was not held).
    pub row: Option<u64>,
}

/// A lane's short label of a segment: `RUNNING`, `UNKNOWN`, `RUNNING->STOP`.
pub fn seg_label(what: &SegKind) -> String {
    let n = |s: &Option<MigState>| s.map_or("UNKNOWN", MigState::name);
    match what {
        SegKind::State(s) => n(s).to_owned(),
        SegKind::Transition { from, to, .. } => format!("{}->{}", n(from), to.name()),
    }
}

/// One device lane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub name: String,
    pub ctx: usize,
    pub flags: MigFlags,
    pub driver: Option<String>,
    /// The device's own evidence sources, as declared.
    pub sources: BTreeMap<String, String>,
    /// Whether a `device` event declared it (otherwise it appeared in an event first).
    pub declared: bool,
    pub segs: Vec<Seg>,
    /// Rows by kind, as local row numbers (rebased on compaction).
    pub dma: Vec<u32>,
    pub irq: Vec<u32>,
    /// `data` rows and the driver's size reports (`precopy_info`, `data_size`, ...).
    pub data: Vec<u32>,
    /// set / step / set_done / get / reset rows.
    pub fsm: Vec<u32>,
}

impl Device {
    /// The state segment in force at `t`, if any.
    pub fn seg_at(&self, t: u64) -> Option<&Seg> {
        let i = self.segs.partition_point(|s| s.t <= t);
        i.checked_sub(1).and_then(|i| self.segs.get(i))
    }
    pub fn current(&self) -> Option<SegKind> {
        self.segs.last().map(|s| s.what)
    }
}

/// A migration context (a VM): its devices and its map/unmap rows.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub name: String,
    pub devs: Vec<usize>,
    pub maps: Vec<u32>,
}

/// The event store.
pub struct Store {
    t: Vec<u64>,
    line: Vec<u64>,
    pid: Vec<u32>,
    dev: Vec<u16>,
    ev: Vec<u8>,
    s: Vec<u8>,
    x: Vec<i32>,
    a: Vec<u64>,
    b: Vec<u64>,
    /// Sparse DMA and irq_bin windows: (local row, t0, t1), rows increasing.
    windows: Vec<(u32, u64, u64)>,
    /// Sparse `data` files: (local row, file), rows increasing.
    files: Vec<(u32, DataFile)>,
    strings: Vec<String>,
    string_ids: HashMap<String, u32>,
    /// Rows dropped from the front by the ring bound.
    base: u64,
    /// Ring bound (live); `None` keeps everything (replay).
    cap: Option<usize>,
    /// The core's timelines (its findings are the session's business, not the store's).
    timelines: Verifier,
    pub devices: Vec<Device>,
    dev_ids: HashMap<String, usize>,
    pub ctxs: Vec<Ctx>,
    ctx_ids: HashMap<String, usize>,
    /// `lost` and `mark` rows (about the whole trace, drawn on every context lane).
    pub notes: Vec<u32>,
    pub first_t: Option<u64>,
    pub last_t: u64,
    /// Events seen in total (including those the ring dropped).
    pub total: u64,
    /// Sum of `lost` events' `n`.
    pub lost: u64,
    pub end_seen: bool,
    /// Events whose time went backwards (kept, but the time index is approximate there).
    pub out_of_order: u64,
    /// A window of an indexed trace ([`Store::window`]): lanes, segments and totals are the
    /// index's.
    window: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("rows", &self.t.len())
            .field("base", &self.base)
            .field("cap", &self.cap)
            .field("devices", &self.devices.len())
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

/// The interrupt kind stored as column byte `s` (its position in `IrqKind::ALL`).
fn irq_kind_of(s: u8) -> IrqKind {
    IrqKind::ALL
        .get(usize::from(s))
        .copied()
        .unwrap_or(IrqKind::Msi)
}

/// Position of `x` in `all` (the core's `ALL` tables), as a column byte.
fn pos<T: PartialEq>(all: &[T], x: &T) -> u8 {
    all.iter().position(|a| a == x).unwrap_or(0) as u8
}

impl Store {
    /// The window (t0, t1) kept for local row `r` (a windowed `dma`, an `irq_bin`, a
    /// `dirty_report`).
    fn window_of(&self, r: usize) -> Option<(u64, u64)> {
        let k = self.windows.partition_point(|w| (w.0 as usize) < r);
        self.windows
            .get(k)
            .filter(|w| w.0 as usize == r)
            .map(|w| (w.1, w.2))
    }

    /// A store keeping every event of a trace with this header (its sources say which
    /// transitions the timelines can see).
    pub fn new(header: &Header) -> Self {
        Self::build(header, None)
    }

    /// A store keeping at most about `cap` recent events (live mode); the state segments are
    /// kept for the whole run.
    pub fn with_cap(header: &Header, cap: usize) -> Self {
        Self::build(header, Some(cap.max(16)))
    }

    fn build(header: &Header, cap: Option<usize>) -> Self {
        let mut timelines = Verifier::new(header, Options::default());
        timelines.keep_segments();
        Store {
            t: Vec::new(),
            line: Vec::new(),
            pid: Vec::new(),
            dev: Vec::new(),
            ev: Vec::new(),
            s: Vec::new(),
            x: Vec::new(),
            a: Vec::new(),
            b: Vec::new(),
            windows: Vec::new(),
            files: Vec::new(),
            strings: Vec::new(),
            string_ids: HashMap::new(),
            base: 0,
            cap,
            timelines,
            devices: Vec::new(),
            dev_ids: HashMap::new(),
            ctxs: Vec::new(),
            ctx_ids: HashMap::new(),
            notes: Vec::new(),
            first_t: None,
            last_t: 0,
            total: 0,
            lost: 0,
            end_seen: false,
            out_of_order: 0,
            window: false,
        }
    }

    /// The events of rows `base..` of an indexed trace (`evs`, in order, with their lines):
    /// its lanes are the index's devices and contexts in the index's order (so device indices
    /// are the index's), each with the index's state segments over the window's time range;
    /// the totals (events, lost, `end`, first and last times) are the whole trace's.
    pub fn window(ix: &TraceIndex, base: u64, evs: &[(u64, Event)]) -> Self {
        let mut s = Self::build(&ix.header, None);
        s.window = true;
        for c in &ix.ctxs {
            s.ctx_id(&c.name);
        }
        for d in ix.devices.iter().map(|d| &d.facts) {
            let ctx = ix.ctxs.get(d.ctx).map_or("?", |c| c.name.as_str());
            s.add_device(
                &d.name,
                ctx,
                d.flags,
                d.driver.as_deref(),
                &d.sources,
                d.declared,
            );
        }
        for (c, ixc) in s.ctxs.iter_mut().zip(&ix.ctxs) {
            c.devs.clone_from(&ixc.devs);
        }
        s.base = base;
        s.first_t = ix.first_t;
        for (line, e) in evs {
            s.push(*line, e);
        }
        let t0 = evs.first().map_or(0, |x| x.1.t);
        let t1 = evs.last().map_or(0, |x| x.1.t);
        for (dv, ixd) in s.devices.iter_mut().zip(&ix.devices) {
            dv.segs = ixd.segs.range(t0, t1.saturating_add(1));
        }
        s.last_t = ix.last_t;
        s.total = ix.rows;
        s.lost = ix.lost;
        s.end_seen = ix.end_seen;
        s
    }

    /// Whether this is a window of an indexed trace.
    pub fn is_window(&self) -> bool {
        self.window
    }

    /// Whether the held rows are every event with a time in `[t0, t1)`: rows before the
    /// first held one are earlier than `t0` (or there are none), rows after the last held
    /// one are not earlier than `t1` (or there are none; `rows`: how many the trace has).
    pub fn covers(&self, t0: u64, t1: u64, rows: u64) -> bool {
        let (Some(&first), Some(&last)) = (self.t.first(), self.t.last()) else {
            return rows == 0;
        };
        (self.base == 0 || first < t0) && (self.end() >= rows || last >= t1)
    }

    /// The ring bound, if any.
    pub fn cap(&self) -> Option<usize> {
        self.cap
    }

    pub fn len(&self) -> usize {
        self.t.len()
    }
    pub fn is_empty(&self) -> bool {
        self.t.is_empty()
    }
    /// Global index of the first retained row.
    pub fn base(&self) -> u64 {
        self.base
    }
    /// Global index one past the last row.
    pub fn end(&self) -> u64 {
        self.base + self.t.len() as u64
    }
    pub fn local(&self, g: u64) -> Option<usize> {
        let r = g.checked_sub(self.base)?;
        ((r as usize) < self.t.len()).then_some(r as usize)
    }
    pub fn t_at(&self, g: u64) -> Option<u64> {
        self.local(g).map(|r| self.t[r])
    }
    pub fn t_local(&self, r: usize) -> u64 {
        self.t[r]
    }
    /// The `ev` of a row.
    pub fn ev_at(&self, g: u64) -> Option<&'static str> {
        self.local(g)
            .and_then(|r| EV_NAMES.get(self.ev[r] as usize).copied())
    }
    pub fn line_at(&self, g: u64) -> Option<u64> {
        self.local(g).map(|r| self.line[r])
    }
    /// Device index of a row.
    pub fn dev_at(&self, g: u64) -> Option<usize> {
        self.local(g)
            .and_then(|r| (self.dev[r] != NO_DEV).then_some(self.dev[r] as usize))
    }

    /// Global index of the first row with time >= `t`.
    pub fn row_at_time(&self, t: u64) -> u64 {
        self.base + self.t.partition_point(|&x| x < t) as u64
    }
    /// Global index of the row with this source line, if retained.
    pub fn row_of_line(&self, line: u64) -> Option<u64> {
        let r = self.line.partition_point(|&l| l < line);
        (self.line.get(r) == Some(&line)).then_some(self.base + r as u64)
    }
    /// Number of rows of `list` (local rows, increasing) with time in `[t0, t1)`.
    pub fn count_in(&self, list: &[u32], t0: u64, t1: u64) -> usize {
        let lo = list.partition_point(|&r| self.t[r as usize] < t0);
        let hi = list.partition_point(|&r| self.t[r as usize] < t1);
        hi.saturating_sub(lo)
    }
    /// Last row of `list` with time < `t` (global).
    pub fn last_before(&self, list: &[u32], t: u64) -> Option<u64> {
        let i = list.partition_point(|&r| self.t[r as usize] < t);
        i.checked_sub(1).map(|i| self.base + list[i] as u64)
    }

    /// The last row of `list` with time <= `t` and kind `ev`, looking back at most `limit`
    /// rows (a SET's steps sit between it and its set_done).
    pub fn last_of_before(&self, list: &[u32], t: u64, ev: &str, limit: usize) -> Option<u64> {
        let code = EventKind::code_of(ev)?;
        let i = list.partition_point(|&r| self.t[r as usize] <= t);
        list[..i]
            .iter()
            .rev()
            .take(limit)
            .find(|&&r| self.ev[r as usize] == code)
            .map(|&r| self.base + r as u64)
    }

    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.string_ids.get(s) {
            return id;
        }
        let id = self.strings.len() as u32;
        self.strings.push(s.to_owned());
        self.string_ids.insert(s.to_owned(), id);
        id
    }
    fn string(&self, id: u32) -> String {
        self.strings.get(id as usize).cloned().unwrap_or_default()
    }

    fn ctx_id(&mut self, name: &str) -> usize {
        if let Some(&i) = self.ctx_ids.get(name) {
            return i;
        }
        let i = self.ctxs.len();
        self.ctxs.push(Ctx {
            name: name.to_owned(),
            devs: Vec::new(),
            maps: Vec::new(),
        });
        self.ctx_ids.insert(name.to_owned(), i);
        i
    }

    /// The device index, creating an undeclared device (context `?`) if new.
    fn dev_id(&mut self, name: &str) -> usize {
        if let Some(&i) = self.dev_ids.get(name) {
            return i;
        }
        self.add_device(
            name,
            "?",
            MigFlags::default(),
            None,
            &BTreeMap::new(),
            false,
        )
    }

    fn add_device(
        &mut self,
        name: &str,
        ctx: &str,
        flags: MigFlags,
        driver: Option<&str>,
        sources: &BTreeMap<String, String>,
        declared: bool,
    ) -> usize {
        let ctx = self.ctx_id(ctx);
        if let Some(&i) = self.dev_ids.get(name) {
            // A re-declaration (or a declaration after first use) updates the lane's facts;
            // its history is the timeline's (a re-declaration is no transition).
            let old_ctx = self.devices[i].ctx;
            if old_ctx != ctx {
                self.ctxs[old_ctx].devs.retain(|&x| x != i);
                self.ctxs[ctx].devs.push(i);
            }
            let dv = &mut self.devices[i];
            dv.ctx = ctx;
            dv.flags = flags;
            dv.driver = driver.map(str::to_owned);
            dv.sources.clone_from(sources);
            dv.declared = declared;
            return i;
        }
        // The device column is 16 bits; past that many lanes, the rest share the last one.
        if self.devices.len() >= MAX_DEVICES {
            return MAX_DEVICES - 1;
        }
        let i = self.devices.len();
        self.devices.push(Device {
            name: name.to_owned(),
            ctx,
            flags,
            driver: driver.map(str::to_owned),
            sources: sources.clone(),
            declared,
            segs: Vec::new(),
            dma: Vec::new(),
            irq: Vec::new(),
            data: Vec::new(),
            fsm: Vec::new(),
        });
        self.ctxs[ctx].devs.push(i);
        self.dev_ids.insert(name.to_owned(), i);
        i
    }

    pub fn device_index(&self, name: &str) -> Option<usize> {
        self.dev_ids.get(name).copied()
    }

    /// Lanes in drawing order: contexts in order of appearance, devices within.
    pub fn lanes(&self) -> Vec<Lane> {
        let mut out = Vec::new();
        for (ci, c) in self.ctxs.iter().enumerate() {
            if c.devs.is_empty() && c.maps.is_empty() {
                continue;
            }
            out.push(Lane::Ctx(ci));
            out.extend(c.devs.iter().map(|&d| Lane::Dev(d)));
        }
        out
    }

    /// Takes the segments the timelines closed and the one now open for device `d` (named
    /// `name`) into its lane. `g` is the row of the event that changed it.
    fn sync_segments(&mut self, d: Option<(usize, &str)>, t: u64, g: u64) {
        let mut closed: Vec<(String, Segment)> = Vec::new();
        for (name, s) in self.timelines.drain_segments() {
            closed.push((name.to_owned(), s));
        }
        for (name, s) in closed {
            let Some(&i) = self.dev_ids.get(&name) else {
                continue;
            };
            // The closed segment's final word (a request's return, whether it was a quiesce).
            if let Some(seg) = self.devices[i]
                .segs
                .iter_mut()
                .rev()
                .find(|x| x.t == s.start)
            {
                seg.what = s.what;
            }
        }
        let Some((i, name)) = d else { return };
        let Some(open) = self.timelines.timeline(name).map(|tl| tl.open_segment(t)) else {
            return;
        };
        let segs = &mut self.devices[i].segs;
        match segs.last_mut() {
            Some(last) if last.t == open.start => {
                if last.what != open.what {
                    last.what = open.what;
                    last.row = Some(g);
                }
            }
            _ => segs.push(Seg {
                t: open.start,
                what: open.what,
                row: Some(g),
            }),
        }
    }

    /// Appends one event (`line`: its 1-based line in the source, 0 when none).
    pub fn push(&mut self, line: u64, e: &Event) {
        let t = e.t;
        if self.first_t.is_none() {
            self.first_t = Some(t);
        }
        if t < self.last_t {
            self.out_of_order += 1;
        }
        self.last_t = self.last_t.max(t);
        self.total += 1;
        // The core's timelines first: the findings are the session's verifier's to report.
        // (A window of an indexed trace takes its segments from the index instead.)
        if !self.window {
            drop(self.timelines.push(line, e));
        }
        let row = self.t.len() as u32;
        let g = self.base + row as u64;
        let mut dev = NO_DEV;
        let (mut s, mut x, mut a, mut b) = (0u8, 0i32, 0u64, 0u64);
        match &e.kind {
            EventKind::Device {
                dev: n,
                flags,
                ctx,
                state,
                driver,
                sources,
            } => {
                // A window's lanes are the index's (its last declaration), not this row's.
                let i = if self.window {
                    self.dev_id(n)
                } else {
                    self.add_device(n, ctx, *flags, driver.as_deref(), sources, true)
                };
                dev = i as u16;
                s = *state as u8;
                x = flags.0 as i32;
                a = u64::from(self.intern(ctx));
                b = driver
                    .as_deref()
                    .map_or(0, |n| u64::from(self.intern(n)) + 1);
            }
            EventKind::Set { dev: n, to } => {
                let i = self.dev_id(n);
                dev = i as u16;
                s = *to as u8;
            }
            EventKind::Step { dev: n, from, to } => {
                let i = self.dev_id(n);
                dev = i as u16;
                s = (*from as u8) | ((*to as u8) << 4);
            }
            EventKind::SetDone {
                dev: n,
                to,
                ret,
                data_fd,
            } => {
                let i = self.dev_id(n);
                dev = i as u16;
                s = (*to as u8) | if data_fd.is_some() { 0x10 } else { 0 };
                x = *ret;
                a = data_fd.map_or(0, |fd| fd as i64 as u64);
            }
            EventKind::Get { dev: n, state } => {
                let i = self.dev_id(n);
                dev = i as u16;
                s = *state as u8;
            }
            EventKind::Reset { dev: n, ret } => {
                let i = self.dev_id(n);
                dev = i as u16;
                x = *ret;
            }
            EventKind::Dma {
                dev: n,
                src,
                iova,
                len,
                write,
                window,
                p2p,
            } => {
                let i = self.dev_id(n);
                dev = i as u16;
                s = pos(&DmaSource::ALL, src)
                    | if *write { 0x08 } else { 0 }
                    | match p2p {
                        None => 0,
                        Some(false) => 0x10,
                        Some(true) => 0x30,
                    }
                    | if window.is_some() { 0x40 } else { 0 };
                a = *iova;
                b = *len;
                if let Some((t0, t1)) = window {
                    self.windows.push((row, *t0, *t1));
                }
            }
            EventKind::Irq {
                dev: n,
                kind,
                vector,
            } => {
                let i = self.dev_id(n);
                dev = i as u16;
                s = pos(&IrqKind::ALL, kind);
                x = *vector as i32;
            }
            EventKind::IrqBin {
                dev: n,
                kind,
                vector,
                n: count,
                window: (t0, t1),
            } => {
                let i = self.dev_id(n);
                dev = i as u16;
                s = pos(&IrqKind::ALL, kind);
                x = *vector as i32;
                a = *count;
                self.windows.push((row, *t0, *t1));
                self.devices[i].irq.push(row);
            }
            EventKind::Map { ctx, iova, len } | EventKind::Unmap { ctx, iova, len } => {
                let c = self.ctx_id(ctx);
                x = self.intern(ctx) as i32;
                a = *iova;
                b = *len;
                self.ctxs[c].maps.push(row);
            }
            // s: the direction, 0x10 when a file is named (kept in `files`).
            EventKind::Data {
                dev: n,
                dir,
                bytes,
                file,
            } => {
                let i = self.dev_id(n);
                dev = i as u16;
                s = match dir {
                    DataDir::Save => 0,
                    DataDir::Load => 1,
                };
                a = *bytes;
                if let Some(f) = file {
                    s |= 0x10;
                    self.files.push((row, *f));
                }
            }
            EventKind::Lost { n, source, dev: d } => {
                a = *n;
                x = self.intern(source) as i32;
                b = d.as_ref().map_or(0, |d| u64::from(self.intern(d)) + 1);
                self.lost += n;
                self.notes.push(row);
            }
            EventKind::Mark { label } => {
                x = self.intern(label) as i32;
                self.notes.push(row);
            }
            EventKind::End => self.end_seen = true,
            // s: 1 for a value; x: the errno, or precopy's flags word.
            EventKind::PrecopyInfo { dev: n, result } => {
                let i = self.dev_id(n);
                dev = i as u16;
                match result {
                    Ok(p) => {
                        s = 1;
                        x = p.flags as i32;
                        a = p.initial_bytes;
                        b = p.dirty_bytes;
                    }
                    Err(e) => x = *e,
                }
            }
            EventKind::DataSize { dev: n, result } => {
                let i = self.dev_id(n);
                dev = i as u16;
                match result {
                    Ok(bytes) => {
                        s = 1;
                        a = *bytes;
                    }
                    Err(e) => x = *e,
                }
            }
            // s: the corruption; x: ret; a: bytes.
            EventKind::CorruptLoad {
                dev: n,
                corruption,
                bytes,
                ret,
            } => {
                let i = self.dev_id(n);
                dev = i as u16;
                s = pos(&Corruption::ALL, corruption);
                x = *ret;
                a = *bytes;
            }
            // s: the stage; a: bar; b: the registers as `offset=value,...` (hex).
            EventKind::Regs {
                dev: n,
                stage,
                bar,
                regs,
            } => {
                let i = self.dev_id(n);
                dev = i as u16;
                s = pos(&RegStage::ALL, stage);
                a = u64::from(*bar);
                let text: Vec<String> = regs.iter().map(|(o, v)| format!("{o:x}={v:x}")).collect();
                b = u64::from(self.intern(&text.join(",")));
            }
            EventKind::PrecopyInfoV2 { dev: n, ret } => {
                let i = self.dev_id(n);
                dev = i as u16;
                x = *ret;
            }
            // a: iova; b: len; s: log2 of page_size; x: dirty pages (as u32 bits); the window
            // in `windows`.
            EventKind::DirtyReport {
                dev: n,
                iova,
                len,
                page_size,
                window: (t0, t1),
                dirty_pages,
            } => {
                let i = self.dev_id(n);
                dev = i as u16;
                a = *iova;
                b = *len;
                s = page_size.trailing_zeros() as u8;
                x = (*dirty_pages).min(u64::from(u32::MAX)) as u32 as i32;
                self.windows.push((row, *t0, *t1));
            }
        }
        if let Some(k) = tick(&e.kind)
            && let Some(dv) = self.devices.get_mut(dev as usize)
        {
            match k {
                Tick::Dma => dv.dma.push(row),
                Tick::Irq => dv.irq.push(row),
                Tick::Data => dv.data.push(row),
                Tick::Fsm => dv.fsm.push(row),
            }
        }
        // A window's segments are the index's.
        if !self.window {
            if let Some(n) = e.kind.dev() {
                let i = dev as usize;
                self.sync_segments(Some((i, n)), t, g);
            } else if matches!(e.kind, EventKind::End) {
                // `end` leaves an open request unfinished: every lane's open segment says so.
                for i in 0..self.devices.len() {
                    let name = self.devices[i].name.clone();
                    self.sync_segments(Some((i, &name)), t, g);
                }
            }
        }
        self.t.push(t);
        self.line.push(line);
        self.pid.push(e.pid.unwrap_or(NO_PID));
        self.dev.push(dev);
        self.ev.push(e.kind.code());
        self.s.push(s);
        self.x.push(x);
        self.a.push(a);
        self.b.push(b);
        if let Some(cap) = self.cap
            && self.t.len() > cap
        {
            self.compact(self.t.len() - cap * 3 / 4);
        }
    }

    /// Drops the oldest `n` rows (ring bound), rebasing every row list.
    fn compact(&mut self, n: usize) {
        let n = n.min(self.t.len());
        self.t.drain(..n);
        self.line.drain(..n);
        self.pid.drain(..n);
        self.dev.drain(..n);
        self.ev.drain(..n);
        self.s.drain(..n);
        self.x.drain(..n);
        self.a.drain(..n);
        self.b.drain(..n);
        let n32 = n as u32;
        let rebase = |v: &mut Vec<u32>| {
            let k = v.partition_point(|&r| r < n32);
            v.drain(..k);
            for r in v.iter_mut() {
                *r -= n32;
            }
        };
        for d in &mut self.devices {
            rebase(&mut d.dma);
            rebase(&mut d.irq);
            rebase(&mut d.data);
            rebase(&mut d.fsm);
            // Keep the state history bounded too, but never the segment in force.
            if d.segs.len() > 4096 {
                let k = d.segs.len() - 2048;
                d.segs.drain(..k);
            }
        }
        for c in &mut self.ctxs {
            rebase(&mut c.maps);
        }
        rebase(&mut self.notes);
        let k = self.windows.partition_point(|w| w.0 < n32);
        self.windows.drain(..k);
        for w in &mut self.windows {
            w.0 -= n32;
        }
        let k = self.files.partition_point(|f| f.0 < n32);
        self.files.drain(..k);
        for f in &mut self.files {
            f.0 -= n32;
        }
        self.base += n as u64;
    }

    /// The event at a global index, with its source line.
    pub fn get(&self, g: u64) -> Option<(u64, Event)> {
        let r = self.local(g)?;
        let devname = || {
            self.devices
                .get(self.dev[r] as usize)
                .map(|d| d.name.clone())
                .unwrap_or_default()
        };
        let st = |v: u8| MigState::from_u32(u32::from(v & 0x0f)).unwrap_or(MigState::Error);
        let (s, x, a, b) = (self.s[r], self.x[r], self.a[r], self.b[r]);
        let kind = match *EV_NAMES.get(self.ev[r] as usize)? {
            "device" => {
                let dv = self.devices.get(self.dev[r] as usize)?;
                EventKind::Device {
                    dev: dv.name.clone(),
                    flags: MigFlags(x as u32),
                    ctx: self.string(a as u32),
                    state: st(s),
                    driver: (b != 0).then(|| self.string((b - 1) as u32)),
                    sources: dv.sources.clone(),
                }
            }
            "set" => EventKind::Set {
                dev: devname(),
                to: st(s),
            },
            "step" => EventKind::Step {
                dev: devname(),
                from: st(s),
                to: st(s >> 4),
            },
            "set_done" => EventKind::SetDone {
                dev: devname(),
                to: st(s),
                ret: x,
                data_fd: (s & 0x10 != 0).then_some(a as i64 as i32),
            },
            "get" => EventKind::Get {
                dev: devname(),
                state: st(s),
            },
            "reset" => EventKind::Reset {
                dev: devname(),
                ret: x,
            },
            "dma" => EventKind::Dma {
                dev: devname(),
                src: DmaSource::ALL
                    .get((s & 0x07) as usize)
                    .copied()
                    .unwrap_or(DmaSource::Witness),
                iova: a,
                len: b,
                write: s & 0x08 != 0,
                window: if s & 0x40 != 0 {
                    self.window_of(r)
                } else {
                    None
                },
                p2p: match s & 0x30 {
                    0x10 => Some(false),
                    0x30 => Some(true),
                    _ => None,
                },
            },
            "irq" => EventKind::Irq {
                dev: devname(),
                kind: irq_kind_of(s),
                vector: x as u32,
            },
            "map" => EventKind::Map {
                ctx: self.string(x as u32),
                iova: a,
                len: b,
            },
            "unmap" => EventKind::Unmap {
                ctx: self.string(x as u32),
                iova: a,
                len: b,
            },
            "data" => EventKind::Data {
                dev: devname(),
                dir: if s & 0x0f == 1 {
                    DataDir::Load
                } else {
                    DataDir::Save
                },
                bytes: a,
                file: if s & 0x10 != 0 {
                    let k = self.files.partition_point(|f| (f.0 as usize) < r);
                    self.files.get(k).filter(|f| f.0 as usize == r).map(|f| f.1)
                } else {
                    None
                },
            },
            "lost" => EventKind::Lost {
                n: a,
                source: self.string(x as u32),
                dev: (b != 0).then(|| self.string((b - 1) as u32)),
            },
            "mark" => EventKind::Mark {
                label: self.string(x as u32),
            },
            "end" => EventKind::End,
            "precopy_info" => EventKind::PrecopyInfo {
                dev: devname(),
                result: if s == 1 {
                    Ok(PrecopyInfo {
                        initial_bytes: a,
                        dirty_bytes: b,
                        flags: x as u32,
                    })
                } else {
                    Err(x)
                },
            },
            "data_size" => EventKind::DataSize {
                dev: devname(),
                result: if s == 1 { Ok(a) } else { Err(x) },
            },
            "corrupt_load" => EventKind::CorruptLoad {
                dev: devname(),
                corruption: *Corruption::ALL.get(s as usize)?,
                bytes: a,
                ret: x,
            },
            "regs" => EventKind::Regs {
                dev: devname(),
                stage: *RegStage::ALL.get(s as usize)?,
                bar: a as u32,
                regs: self
                    .string(b as u32)
                    .split(',')
                    .filter_map(|kv| {
                        let (o, v) = kv.split_once('=')?;
                        Some((
                            u64::from_str_radix(o, 16).ok()?,
                            u64::from_str_radix(v, 16).ok()?,
                        ))
                    })
                    .collect(),
            },
            "precopy_info_v2" => EventKind::PrecopyInfoV2 {
                dev: devname(),
                ret: x,
            },
            "irq_bin" => EventKind::IrqBin {
                dev: devname(),
                kind: IrqKind::ALL
                    .get(usize::from(s))
                    .copied()
                    .unwrap_or(IrqKind::Msi),
                vector: x as u32,
                n: a,
                window: self.window_of(r).unwrap_or((self.t[r], self.t[r])),
            },
            "dirty_report" => EventKind::DirtyReport {
                dev: devname(),
                iova: a,
                len: b,
                page_size: 1u64.checked_shl(u32::from(s)).unwrap_or(0),
                window: self.window_of(r).unwrap_or((0, 0)),
                dirty_pages: u64::from(x as u32),
            },
            _ => return None,
        };
        Some((
            self.line[r],
            Event {
                t: self.t[r],
                pid: (self.pid[r] != NO_PID).then_some(self.pid[r]),
                kind,
            },
        ))
    }

    /// Every retained event with its line, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = (u64, Event)> + '_ {
        (self.base..self.end()).filter_map(|g| self.get(g))
    }

    /// Whether row `g` passes a device / kind-code filter (cheap: columns only).
    pub fn row_matches(&self, g: u64, dev: Option<&[usize]>, evs: Option<&[u8]>) -> bool {
        let Some(r) = self.local(g) else {
            return false;
        };
        if let Some(devs) = dev {
            let d = self.dev[r];
            if d == NO_DEV || !devs.contains(&(d as usize)) {
                return false;
            }
        }
        if let Some(evs) = evs
            && !evs.contains(&self.ev[r])
        {
            return false;
        }
        true
    }
}

/// One row of the timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// A context header: its name and its map/unmap ticks.
    Ctx(usize),
    Dev(usize),
}

/// One-line summary of an event (event list, search).
pub fn summary(e: &Event) -> String {
    match &e.kind {
        EventKind::Device {
            dev,
            flags,
            ctx,
            state,
            driver,
            ..
        } => format!(
            "device {dev} ctx={ctx} flags={} state={state}{}",
            flags.names().collect::<Vec<_>>().join(","),
            driver
                .as_deref()
                .map(|x| format!(" driver={x}"))
                .unwrap_or_default()
        ),
        EventKind::Set { dev, to } => format!("set {dev} -> {to}"),
        EventKind::Step { dev, from, to } => format!("step {dev} {from} -> {to}"),
        EventKind::SetDone { dev, to, ret, .. } => {
            if *ret == 0 {
                format!("set_done {dev} {to} ok")
            } else {
                format!("set_done {dev} {to} ret={ret}")
            }
        }
        EventKind::Get { dev, state } => format!("get {dev} = {state}"),
        EventKind::Reset { dev, ret } => format!("reset {dev} ret={ret}"),
        EventKind::Dma {
            dev,
            src,
            iova,
            len,
            write,
            window,
            p2p,
        } => format!(
            "dma {dev} {} {} {iova:#x}+{len}{}{}",
            src.name(),
            if *write { "write" } else { "read" },
            if window.is_some() { " windowed" } else { "" },
            if *p2p == Some(true) { " p2p" } else { "" }
        ),
        EventKind::Irq { dev, kind, vector } => format!("irq {dev} {}[{vector}]", kind.name()),
        EventKind::IrqBin {
            dev,
            kind,
            vector,
            n,
            window: (t0, t1),
        } => format!(
            "irq_bin {dev} {}[{vector}] x{n} in [{t0}, {t1}]",
            kind.name()
        ),
        EventKind::Map { ctx, iova, len } => format!("map {ctx} {iova:#x}+{len:#x}"),
        EventKind::Unmap { ctx, iova, len } => format!("unmap {ctx} {iova:#x}+{len:#x}"),
        EventKind::Data {
            dev,
            dir,
            bytes,
            file: None,
        } => format!("data {dev} {} {bytes} B", dir.name()),
        EventKind::Data {
            dev,
            dir,
            bytes,
            file: Some(f),
        } => format!(
            "data {dev} {} {bytes} B fd {} gen {} (reset gen {})",
            dir.name(),
            f.fd,
            f.fd_gen,
            f.reset_gen
        ),
        EventKind::Lost {
            n,
            source,
            dev: None,
        } => format!("lost {n} ({source})"),
        EventKind::Lost {
            n,
            source,
            dev: Some(d),
        } => format!("lost {n} ({source}, {d})"),
        EventKind::Mark { label } => format!("mark {label}"),
        EventKind::End => "end".to_owned(),
        EventKind::PrecopyInfo { dev, result: Ok(p) } => format!(
            "precopy_info {dev} initial {} B dirty {} B flags {:#x}",
            p.initial_bytes, p.dirty_bytes, p.flags
        ),
        EventKind::PrecopyInfo {
            dev,
            result: Err(e),
        } => format!("precopy_info {dev} ret={e}"),
        EventKind::DataSize { dev, result: Ok(b) } => format!("data_size {dev} {b} B"),
        EventKind::DataSize {
            dev,
            result: Err(e),
        } => format!("data_size {dev} ret={e}"),
        EventKind::CorruptLoad {
            dev,
            corruption,
            bytes,
            ret,
        } => format!(
            "corrupt_load {dev} {} {bytes} B ret={ret}",
            corruption.name()
        ),
        EventKind::Regs {
            dev,
            stage,
            bar,
            regs,
        } => {
            let r: Vec<String> = regs.iter().map(|(o, v)| format!("{o:#x}={v:#x}")).collect();
            format!("regs {dev} {} bar{bar} {}", stage.name(), r.join(" "))
        }
        EventKind::PrecopyInfoV2 { dev, ret } => format!("precopy_info_v2 {dev} ret={ret}"),
        EventKind::DirtyReport {
            dev,
            iova,
            len,
            window: (t0, t1),
            dirty_pages,
            ..
        } => format!("dirty_report {dev} {iova:#x}+{len} ({t0}, {t1}] {dirty_pages} dirty"),
    }
}

/// A duration with a unit (ns, µs, ms, s), about 4 significant digits.
pub fn fmt_dur(ns: u64) -> String {
    let f = ns as f64;
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        trim(format!("{:.3}", f / 1e3)) + "us"
    } else if ns < 1_000_000_000 {
        trim(format!("{:.3}", f / 1e6)) + "ms"
    } else {
        trim(format!("{:.3}", f / 1e9)) + "s"
    }
}

fn trim(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "0000:00:02.0";

    fn ev(t: u64, kind: EventKind) -> Event {
        Event {
            t,
            pid: Some(7),
            kind,
        }
    }

    fn declare(state: MigState) -> EventKind {
        EventKind::Device {
            dev: D.into(),
            flags: MigFlags(3),
            ctx: "vm".into(),
            state,
            driver: Some("drv".into()),
            sources: [("witness".to_owned(), "ok".to_owned())].into(),
        }
    }

    /// Every kind of the core's vocabulary comes back out of the columns as it went in (the
    /// view's export writes what `get` returns).
    #[test]
    fn round_trips_every_kind() {
        let d = || D.to_owned();
        let kinds = vec![
            declare(MigState::Stop),
            EventKind::Set {
                dev: d(),
                to: MigState::RunningP2p,
            },
            EventKind::Step {
                dev: d(),
                from: MigState::Running,
                to: MigState::RunningP2p,
            },
            EventKind::SetDone {
                dev: d(),
                to: MigState::RunningP2p,
                ret: 0,
                data_fd: Some(-1),
            },
            EventKind::Get {
                dev: d(),
                state: MigState::PreCopy,
            },
            EventKind::Reset { dev: d(), ret: -5 },
            EventKind::Dma {
                dev: d(),
                src: DmaSource::MdevDma,
                iova: 1 << 40,
                len: 4096,
                write: true,
                window: Some((3, 4)),
                p2p: Some(true),
            },
            EventKind::Dma {
                dev: d(),
                src: DmaSource::Fault,
                iova: 1,
                len: 2,
                write: false,
                window: None,
                p2p: Some(false),
            },
            EventKind::Irq {
                dev: d(),
                kind: IrqKind::Intx,
                vector: 7,
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
                dir: DataDir::Load,
                bytes: 9,
                file: None,
            },
            EventKind::Data {
                dev: d(),
                dir: DataDir::Save,
                bytes: 80,
                file: Some(DataFile {
                    fd: 7,
                    fd_gen: 0,
                    reset_gen: u64::MAX,
                }),
            },
            EventKind::IrqBin {
                dev: d(),
                kind: IrqKind::Msix,
                vector: 2,
                n: 4000,
                window: (1, 5),
            },
            EventKind::Lost {
                n: 3,
                source: "ring".into(),
                dev: None,
            },
            EventKind::Lost {
                n: 1,
                source: "fsm_step".into(),
                dev: Some(d()),
            },
            EventKind::Mark { label: "hi".into() },
            EventKind::PrecopyInfo {
                dev: d(),
                result: Ok(PrecopyInfo {
                    initial_bytes: u64::MAX,
                    dirty_bytes: 3,
                    flags: u32::MAX,
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
            EventKind::DataSize {
                dev: d(),
                result: Err(-25),
            },
            EventKind::PrecopyInfoV2 { dev: d(), ret: 0 },
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
            EventKind::DirtyReport {
                dev: d(),
                iova: 0x10_0000,
                len: 0x4000,
                page_size: 4096,
                window: (17, 19),
                dirty_pages: 2,
            },
            EventKind::End,
        ];
        let evs: Vec<(u64, Event)> = kinds
            .into_iter()
            .enumerate()
            .map(|(i, k)| (i as u64 + 2, ev(i as u64, k)))
            .collect();
        let mut s = Store::new(&Header::default());
        for (line, e) in &evs {
            s.push(*line, e);
        }
        assert_eq!(s.iter().collect::<Vec<_>>(), evs);
        assert_eq!(s.lost, 4);
        assert!(s.end_seen);
        assert_eq!(s.ev_at(s.base() + 5), Some("reset"));
    }

    fn seg(t: u64, what: SegKind) -> (u64, SegKind) {
        (t, what)
    }

    fn segs(s: &Store) -> Vec<(u64, SegKind)> {
        s.devices[0].segs.iter().map(|x| (x.t, x.what)).collect()
    }

    /// The lane is the core's timeline: one quiesce RUNNING -> RUNNING_P2P, then STOP and
    /// STOP_COPY from there (no second or third quiesce), and a re-declaration while
    /// quiesced (new sources, same history) keeps the device where it was. The view's old
    /// state machine restarted the lane at the declared RUNNING and counted every SET into a
    /// quiescent state.
    #[test]
    fn lanes_follow_the_cores_timeline() {
        use MigState::{Running, RunningP2p, Stop, StopCopy};
        let set = |to| EventKind::Set { dev: D.into(), to };
        let done = |to| EventKind::SetDone {
            dev: D.into(),
            to,
            ret: 0,
            data_fd: None,
        };
        let evs = [
            declare(Running),
            set(RunningP2p),
            done(RunningP2p),
            declare(Running),
            set(Stop),
            done(Stop),
            set(StopCopy),
            done(StopCopy),
        ];
        let mut s = Store::new(&Header::default());
        for (i, k) in evs.into_iter().enumerate() {
            s.push(i as u64 + 2, &ev(i as u64 * 10, k));
        }
        let tr = |from, to, quiesce| SegKind::Transition {
            from: Some(from),
            to,
            ret: Some(0),
            quiesce,
        };
        assert_eq!(
            segs(&s),
            vec![
                seg(0, SegKind::State(Some(Running))),
                seg(10, tr(Running, RunningP2p, true)),
                seg(20, SegKind::State(Some(RunningP2p))),
                seg(40, tr(RunningP2p, Stop, false)),
                seg(50, SegKind::State(Some(Stop))),
                seg(60, tr(Stop, StopCopy, false)),
                seg(70, SegKind::State(Some(StopCopy))),
            ]
        );
        // The set row began the request's segment.
        assert_eq!(s.devices[0].segs[1].row, Some(1));
    }

    /// A SET that fails after arcs ran leaves the state unknown until a GET tells.
    #[test]
    fn a_failed_set_leaves_the_lane_unknown_until_a_get() {
        let mut s = Store::new(&Header::default());
        let kinds = [
            declare(MigState::Running),
            EventKind::Set {
                dev: D.into(),
                to: MigState::Stop,
            },
            EventKind::Step {
                dev: D.into(),
                from: MigState::Running,
                to: MigState::RunningP2p,
            },
            EventKind::SetDone {
                dev: D.into(),
                to: MigState::Stop,
                ret: -5,
                data_fd: None,
            },
            EventKind::Get {
                dev: D.into(),
                state: MigState::RunningP2p,
            },
        ];
        for (i, k) in kinds.into_iter().enumerate() {
            s.push(i as u64 + 2, &ev(i as u64 * 10, k));
        }
        let whats: Vec<String> = s.devices[0]
            .segs
            .iter()
            .map(|x| seg_label(&x.what))
            .collect();
        assert_eq!(
            whats,
            ["RUNNING", "RUNNING->STOP", "UNKNOWN", "RUNNING_P2P"]
        );
    }

    #[test]
    fn ring_bound_keeps_recent_rows_and_the_state_history() {
        let mut s = Store::with_cap(&Header::default(), 100);
        for t in 0..1000u64 {
            s.push(
                t + 2,
                &ev(
                    t,
                    EventKind::Irq {
                        dev: "a".into(),
                        kind: IrqKind::Msi,
                        vector: 0,
                    },
                ),
            );
        }
        assert!(s.len() <= 100);
        assert_eq!(s.end(), 1000);
        assert_eq!(s.total, 1000);
        assert_eq!(s.devices[0].irq.len(), s.len());
        assert_eq!(s.t_at(999), Some(999));
        assert_eq!(s.t_at(s.base()), Some(s.base()));
        assert_eq!(
            segs(&s),
            vec![seg(0, SegKind::State(Some(MigState::Running)))]
        );
    }

    #[test]
    fn durations_have_units() {
        assert_eq!(fmt_dur(500), "500ns");
        assert_eq!(fmt_dur(1_500), "1.5us");
        assert_eq!(fmt_dur(13_000_000), "13ms");
        assert_eq!(fmt_dur(2_000_000_000), "2s");
    }
}
