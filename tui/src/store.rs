//! Compact columnar event storage with the indexes drawing needs: per-device state segments,
//! per-device tick lists (DMA, IRQ, data, transitions), per-context map lists, incremental
//! per-device statistics, and an optional ring bound for live mode.
//!
//! Rows are addressed by a *global index* (`base + row`) that stays valid when the ring drops
//! old rows. Times are assumed non-decreasing (the trace format requires it); the time column
//! is the time index, searched with binary search.

use std::collections::HashMap;

use crate::model::{
    DataDir, DataFile, DeviceDecl, DmaSrc, Ev, EvKind, Flags, IrqKind, PrecopyInfo, State,
    TimelineEvent,
};

/// Marks "no device" in the device column.
const NO_DEV: u16 = u16::MAX;
/// Lanes the 16-bit device column can tell apart.
const MAX_DEVICES: usize = NO_DEV as usize;
/// Quiesce durations kept per device for the median (min, max and count are exact).
pub const QUIESCE_SAMPLES: usize = 4096;
/// Marks "no pid" in the pid column.
const NO_PID: u32 = u32::MAX;

/// What a device was doing over a span of time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegState {
    Stable(State),
    /// Between `set` and `set_done`: from (if known) toward `to`.
    Transition {
        from: Option<State>,
        to: State,
    },
    /// After a failed SET, until the next GET or reset.
    Unknown,
}

impl SegState {
    pub fn label(self) -> String {
        match self {
            SegState::Stable(s) => s.name().to_owned(),
            SegState::Transition { from: Some(f), to } => format!("{f}->{to}"),
            SegState::Transition { from: None, to } => format!("?->{to}"),
            SegState::Unknown => "UNKNOWN".to_owned(),
        }
    }
    /// Index into per-state counters: 0..8 states, 8 transition, 9 unknown.
    pub const fn slot(self) -> usize {
        match self {
            SegState::Stable(s) => s as usize,
            SegState::Transition { .. } => 8,
            SegState::Unknown => 9,
        }
    }
    pub fn slot_name(slot: usize) -> &'static str {
        match slot {
            0..8 => State::ALL[slot].name(),
            8 => "in-transition",
            _ => "unknown",
        }
    }
}

/// A state segment starting at `t` (it ends where the next one starts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seg {
    pub t: u64,
    pub st: SegState,
    /// Global index of the event that began it (None for the initial state).
    pub row: Option<u64>,
}

/// Incremental per-device summary; survives ring compaction.
#[derive(Clone, Debug, Default)]
pub struct DevStats {
    /// Successful SETs.
    pub transitions: u64,
    pub failed_sets: u64,
    /// Durations (ns) of SETs into a quiescent state, set -> set_done: a sample of at most
    /// [`QUIESCE_SAMPLES`] (every other one is dropped when full), for the median.
    pub quiesce_ns: Vec<u64>,
    /// Exact count, min and max of those durations.
    pub quiesce_count: u64,
    pub quiesce_min: u64,
    pub quiesce_max: u64,
    /// Every `stride`-th duration enters the sample (doubles each time the sample is halved).
    quiesce_stride: u64,
    /// Per state slot (see [`SegState::slot`]): DMA evidence and interrupts.
    pub dma: [u64; 10],
    pub irq: [u64; 10],
    pub data_bytes: u64,
}

impl DevStats {
    /// (min, median, max) of the quiesce durations.
    pub fn quiesce_summary(&self) -> Option<(u64, u64, u64)> {
        let mut v = self.quiesce_ns.clone();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        Some((self.quiesce_min, v[v.len() / 2], self.quiesce_max))
    }

    fn add_quiesce(&mut self, ns: u64) {
        if self.quiesce_count == 0 {
            self.quiesce_min = ns;
        }
        self.quiesce_count += 1;
        self.quiesce_min = self.quiesce_min.min(ns);
        self.quiesce_max = self.quiesce_max.max(ns);
        let stride = self.quiesce_stride.max(1);
        if !(self.quiesce_count - 1).is_multiple_of(stride) {
            return;
        }
        if self.quiesce_ns.len() >= QUIESCE_SAMPLES {
            // Keep every other sample and take half as many from now on: a uniform sample.
            let mut k = 0;
            self.quiesce_ns.retain(|_| {
                k += 1;
                k % 2 == 1
            });
            self.quiesce_stride = stride * 2;
            if !(self.quiesce_count - 1).is_multiple_of(self.quiesce_stride) {
                return;
            }
        }
        self.quiesce_ns.push(ns);
    }
}

/// One device lane.
#[derive(Clone, Debug)]
pub struct Device {
    pub name: String,
    pub ctx: usize,
    pub flags: Flags,
    pub initial: State,
    pub driver: Option<String>,
    /// The device's own evidence sources, as declared.
    pub sources: std::collections::BTreeMap<String, String>,
    /// Whether a `device` event declared it (otherwise it appeared in an event first).
    pub declared: bool,
    pub segs: Vec<Seg>,
    /// Rows by kind, as local row numbers (rebased on compaction).
    pub dma: Vec<u32>,
    pub irq: Vec<u32>,
    /// `data` rows and the driver's size reports (`precopy_info`, `data_size`).
    pub data: Vec<u32>,
    /// set / step / set_done / get / reset rows.
    pub fsm: Vec<u32>,
    pub stats: DevStats,
    /// The open SET: (time it began, target).
    open_set: Option<(u64, State)>,
}

impl Device {
    /// The state segment in force at `t`, if any.
    pub fn seg_at(&self, t: u64) -> Option<&Seg> {
        let i = self.segs.partition_point(|s| s.t <= t);
        i.checked_sub(1).and_then(|i| self.segs.get(i))
    }
    pub fn current(&self) -> Option<SegState> {
        self.segs.last().map(|s| s.st)
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
#[derive(Debug, Default)]
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
}

/// The interrupt kind stored as byte `s` (its `IrqKind` discriminant).
fn irq_kind_of(s: u8) -> IrqKind {
    IrqKind::ALL
        .get(s as usize)
        .copied()
        .unwrap_or(IrqKind::Msi)
}

impl Store {
    /// The window (t0, t1) kept for local row `r` (a windowed `dma`, an `irq_bin`).
    fn window_of(&self, r: usize) -> Option<(u64, u64)> {
        let k = self.windows.partition_point(|w| (w.0 as usize) < r);
        self.windows
            .get(k)
            .filter(|w| w.0 as usize == r)
            .map(|w| (w.1, w.2))
    }

    /// A store keeping every event.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store keeping at most about `cap` recent events (live mode); per-device summaries
    /// and state segments are kept for the whole run.
    pub fn with_cap(cap: usize) -> Self {
        Store {
            cap: Some(cap.max(16)),
            ..Self::default()
        }
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
    pub fn ev_at(&self, g: u64) -> Option<Ev> {
        self.local(g).and_then(|r| Ev::from_u8(self.ev[r]))
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
    pub fn last_of_before(&self, list: &[u32], t: u64, ev: Ev, limit: usize) -> Option<u64> {
        let i = list.partition_point(|&r| self.t[r as usize] <= t);
        list[..i]
            .iter()
            .rev()
            .take(limit)
            .find(|&&r| self.ev[r as usize] == ev as u8)
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

    /// The device index, creating an undeclared device (context `?`, RUNNING) if new.
    fn dev_id(&mut self, name: &str, t: u64) -> usize {
        if let Some(&i) = self.dev_ids.get(name) {
            return i;
        }
        self.add_device(
            &DeviceDecl {
                dev: name.to_owned(),
                ctx: "?".to_owned(),
                flags: Flags::default(),
                state: State::Running,
                driver: None,
                sources: Default::default(),
            },
            t,
            None,
            false,
        )
    }

    fn add_device(&mut self, d: &DeviceDecl, t: u64, row: Option<u64>, declared: bool) -> usize {
        let ctx = self.ctx_id(&d.ctx);
        if let Some(&i) = self.dev_ids.get(&d.dev) {
            // A re-declaration (or a declaration after first use) updates the lane.
            let old_ctx = self.devices[i].ctx;
            if old_ctx != ctx {
                self.ctxs[old_ctx].devs.retain(|&x| x != i);
                self.ctxs[ctx].devs.push(i);
            }
            let dv = &mut self.devices[i];
            dv.ctx = ctx;
            dv.flags = d.flags;
            dv.initial = d.state;
            dv.driver = d.driver.clone();
            dv.sources = d.sources.clone();
            dv.declared = declared;
            dv.segs.push(Seg {
                t,
                st: SegState::Stable(d.state),
                row,
            });
            return i;
        }
        // The device column is 16 bits; past that many lanes, the rest share the last one.
        if self.devices.len() >= MAX_DEVICES {
            return MAX_DEVICES - 1;
        }
        let i = self.devices.len();
        self.devices.push(Device {
            name: d.dev.clone(),
            ctx,
            flags: d.flags,
            initial: d.state,
            driver: d.driver.clone(),
            sources: d.sources.clone(),
            declared,
            segs: vec![Seg {
                t,
                st: SegState::Stable(d.state),
                row,
            }],
            dma: Vec::new(),
            irq: Vec::new(),
            data: Vec::new(),
            fsm: Vec::new(),
            stats: DevStats::default(),
            open_set: None,
        });
        self.ctxs[ctx].devs.push(i);
        self.dev_ids.insert(d.dev.clone(), i);
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

    fn push_seg(&mut self, d: usize, t: u64, st: SegState, row: u64) {
        let dv = &mut self.devices[d];
        if dv.segs.last().map(|s| s.st) == Some(st) {
            return;
        }
        dv.segs.push(Seg {
            t,
            st,
            row: Some(row),
        });
    }

    /// Appends one event.
    pub fn push(&mut self, e: &TimelineEvent) {
        let t = e.t;
        if self.first_t.is_none() {
            self.first_t = Some(t);
        }
        if t < self.last_t {
            self.out_of_order += 1;
        }
        self.last_t = self.last_t.max(t);
        self.total += 1;
        let row = self.t.len() as u32;
        let g = self.base + row as u64;
        let mut dev = NO_DEV;
        let (mut s, mut x, mut a, mut b) = (0u8, 0i32, 0u64, 0u64);
        match &e.kind {
            EvKind::Device(d) => {
                let i = self.add_device(d, t, Some(g), true);
                dev = i as u16;
                s = d.state as u8;
                x = d.flags.0 as i32;
                a = self.intern(&d.ctx) as u64;
                b = d.driver.as_deref().map_or(0, |n| self.intern(n) as u64 + 1);
            }
            EvKind::Set { dev: n, to } => {
                let i = self.dev_id(n, t);
                dev = i as u16;
                s = *to as u8;
                let from = match self.devices[i].current() {
                    Some(SegState::Stable(f)) => Some(f),
                    Some(SegState::Transition { from, .. }) => from,
                    _ => None,
                };
                self.devices[i].open_set = Some((t, *to));
                self.devices[i].fsm.push(row);
                self.push_seg(i, t, SegState::Transition { from, to: *to }, g);
            }
            EvKind::Step { dev: n, from, to } => {
                let i = self.dev_id(n, t);
                dev = i as u16;
                s = (*from as u8) | ((*to as u8) << 4);
                self.devices[i].fsm.push(row);
            }
            EvKind::SetDone {
                dev: n,
                to,
                ret,
                data_fd,
            } => {
                let i = self.dev_id(n, t);
                dev = i as u16;
                s = (*to as u8) | if data_fd.is_some() { 0x10 } else { 0 };
                x = *ret;
                a = data_fd.map_or(0, |fd| fd as i64 as u64);
                self.devices[i].fsm.push(row);
                let open = self.devices[i].open_set.take();
                if *ret == 0 {
                    let dv = &mut self.devices[i];
                    dv.stats.transitions += 1;
                    if let Some((t0, _)) = open.filter(|_| to.quiescent()) {
                        dv.stats.add_quiesce(t.saturating_sub(t0));
                    }
                    self.push_seg(i, t, SegState::Stable(*to), g);
                } else {
                    self.devices[i].stats.failed_sets += 1;
                    self.push_seg(i, t, SegState::Unknown, g);
                }
            }
            EvKind::Get { dev: n, state } => {
                let i = self.dev_id(n, t);
                dev = i as u16;
                s = *state as u8;
                self.devices[i].fsm.push(row);
                if self.devices[i].current() == Some(SegState::Unknown) {
                    self.push_seg(i, t, SegState::Stable(*state), g);
                }
            }
            EvKind::Reset { dev: n, ret } => {
                let i = self.dev_id(n, t);
                dev = i as u16;
                x = *ret;
                self.devices[i].fsm.push(row);
                if *ret == 0 {
                    self.devices[i].open_set = None;
                    self.push_seg(i, t, SegState::Stable(State::Running), g);
                }
            }
            EvKind::Dma {
                dev: n,
                src,
                iova,
                len,
                write,
                window,
                p2p,
            } => {
                let i = self.dev_id(n, t);
                dev = i as u16;
                s = (*src as u8)
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
                let slot = self.devices[i].current().map_or(9, SegState::slot);
                let dv = &mut self.devices[i];
                dv.dma.push(row);
                dv.stats.dma[slot] += 1;
            }
            EvKind::Irq {
                dev: n,
                kind,
                vector,
            } => {
                let i = self.dev_id(n, t);
                dev = i as u16;
                s = *kind as u8;
                x = *vector as i32;
                let slot = self.devices[i].current().map_or(9, SegState::slot);
                let dv = &mut self.devices[i];
                dv.irq.push(row);
                dv.stats.irq[slot] += 1;
            }
            EvKind::IrqBin {
                dev: n,
                kind,
                vector,
                n: count,
                window: (t0, t1),
            } => {
                let i = self.dev_id(n, t);
                dev = i as u16;
                s = *kind as u8;
                x = *vector as i32;
                a = *count;
                self.windows.push((row, *t0, *t1));
                let slot = self.devices[i].current().map_or(9, SegState::slot);
                let dv = &mut self.devices[i];
                dv.irq.push(row);
                dv.stats.irq[slot] += *count;
            }
            EvKind::Map { ctx, iova, len } | EvKind::Unmap { ctx, iova, len } => {
                let c = self.ctx_id(ctx);
                x = self.intern(ctx) as i32;
                a = *iova;
                b = *len;
                self.ctxs[c].maps.push(row);
            }
            // s: the direction, 0x10 when a file is named (kept in `files`).
            EvKind::Data {
                dev: n,
                dir,
                bytes,
                file,
            } => {
                let i = self.dev_id(n, t);
                dev = i as u16;
                s = *dir as u8;
                a = *bytes;
                if let Some(f) = file {
                    s |= 0x10;
                    self.files.push((row, *f));
                }
                let dv = &mut self.devices[i];
                dv.data.push(row);
                dv.stats.data_bytes += bytes;
            }
            EvKind::Lost { n, source, dev: d } => {
                a = *n;
                x = self.intern(source) as i32;
                b = d.as_ref().map_or(0, |d| u64::from(self.intern(d)) + 1);
                self.lost += n;
                self.notes.push(row);
            }
            EvKind::Mark { label } => {
                x = self.intern(label) as i32;
                self.notes.push(row);
            }
            EvKind::End => self.end_seen = true,
            // s: 1 for a value; x: the errno, or precopy's flags word.
            EvKind::PrecopyInfo { dev: n, result } => {
                let i = self.dev_id(n, t);
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
                self.devices[i].data.push(row);
            }
            EvKind::DataSize { dev: n, result } => {
                let i = self.dev_id(n, t);
                dev = i as u16;
                match result {
                    Ok(bytes) => {
                        s = 1;
                        a = *bytes;
                    }
                    Err(e) => x = *e,
                }
                self.devices[i].data.push(row);
            }
            // x: ret; a: bytes; b: the corruption's name.
            EvKind::CorruptLoad {
                dev: n,
                corruption,
                bytes,
                ret,
            } => {
                let i = self.dev_id(n, t);
                dev = i as u16;
                x = *ret;
                a = *bytes;
                b = u64::from(self.intern(corruption));
                self.devices[i].data.push(row);
            }
            // x: the stage's name; a: bar; b: the registers as `offset=value,...` (hex).
            EvKind::Regs {
                dev: n,
                stage,
                bar,
                regs,
            } => {
                let i = self.dev_id(n, t);
                dev = i as u16;
                x = self.intern(stage) as i32;
                a = u64::from(*bar);
                let text: Vec<String> = regs.iter().map(|(o, v)| format!("{o:x}={v:x}")).collect();
                b = u64::from(self.intern(&text.join(",")));
                self.devices[i].data.push(row);
            }
            EvKind::PrecopyInfoV2 { dev: n, ret } => {
                let i = self.dev_id(n, t);
                dev = i as u16;
                x = *ret;
                self.devices[i].data.push(row);
            }
        }
        self.t.push(t);
        self.line.push(e.line);
        self.pid.push(e.pid.unwrap_or(NO_PID));
        self.dev.push(dev);
        self.ev.push(e.kind.ev() as u8);
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

    /// Reconstructs the event at a global index.
    pub fn get(&self, g: u64) -> Option<TimelineEvent> {
        let r = self.local(g)?;
        let devname = || {
            self.devices
                .get(self.dev[r] as usize)
                .map(|d| d.name.clone())
                .unwrap_or_default()
        };
        let st = |v: u8| State::from_u32(u32::from(v & 0x0f)).unwrap_or(State::Error);
        let (s, x, a, b) = (self.s[r], self.x[r], self.a[r], self.b[r]);
        let kind = match Ev::from_u8(self.ev[r])? {
            Ev::Device => {
                let dv = self.devices.get(self.dev[r] as usize)?;
                EvKind::Device(DeviceDecl {
                    dev: dv.name.clone(),
                    ctx: self.string(a as u32),
                    flags: Flags(x as u32),
                    state: st(s),
                    driver: (b != 0).then(|| self.string((b - 1) as u32)),
                    sources: dv.sources.clone(),
                })
            }
            Ev::Set => EvKind::Set {
                dev: devname(),
                to: st(s),
            },
            Ev::Step => EvKind::Step {
                dev: devname(),
                from: st(s),
                to: st(s >> 4),
            },
            Ev::SetDone => EvKind::SetDone {
                dev: devname(),
                to: st(s),
                ret: x,
                data_fd: (s & 0x10 != 0).then_some(a as i64 as i32),
            },
            Ev::Get => EvKind::Get {
                dev: devname(),
                state: st(s),
            },
            Ev::Reset => EvKind::Reset {
                dev: devname(),
                ret: x,
            },
            Ev::Dma => EvKind::Dma {
                dev: devname(),
                src: DmaSrc::ALL
                    .get((s & 0x07) as usize)
                    .copied()
                    .unwrap_or(DmaSrc::Witness),
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
            Ev::Irq => EvKind::Irq {
                dev: devname(),
                kind: irq_kind_of(s),
                vector: x as u32,
            },
            Ev::Map => EvKind::Map {
                ctx: self.string(x as u32),
                iova: a,
                len: b,
            },
            Ev::Unmap => EvKind::Unmap {
                ctx: self.string(x as u32),
                iova: a,
                len: b,
            },
            Ev::Data => EvKind::Data {
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
            Ev::Lost => EvKind::Lost {
                n: a,
                source: self.string(x as u32),
                dev: (b != 0).then(|| self.string((b - 1) as u32)),
            },
            Ev::Mark => EvKind::Mark {
                label: self.string(x as u32),
            },
            Ev::End => EvKind::End,
            Ev::PrecopyInfo => EvKind::PrecopyInfo {
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
            Ev::DataSize => EvKind::DataSize {
                dev: devname(),
                result: if s == 1 { Ok(a) } else { Err(x) },
            },
            Ev::CorruptLoad => EvKind::CorruptLoad {
                dev: devname(),
                corruption: self.string(b as u32),
                bytes: a,
                ret: x,
            },
            Ev::Regs => EvKind::Regs {
                dev: devname(),
                stage: self.string(x as u32),
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
            Ev::PrecopyInfoV2 => EvKind::PrecopyInfoV2 {
                dev: devname(),
                ret: x,
            },
            Ev::IrqBin => EvKind::IrqBin {
                dev: devname(),
                kind: irq_kind_of(s),
                vector: x as u32,
                n: a,
                window: self.window_of(r).unwrap_or((self.t[r], self.t[r])),
            },
        };
        Some(TimelineEvent {
            t: self.t[r],
            line: self.line[r],
            pid: (self.pid[r] != NO_PID).then_some(self.pid[r]),
            kind,
        })
    }

    /// Every retained event, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = TimelineEvent> + '_ {
        (self.base..self.end()).filter_map(|g| self.get(g))
    }

    /// Whether row `g` passes a device / kind filter (cheap: columns only).
    pub fn row_matches(&self, g: u64, dev: Option<&[usize]>, evs: Option<&[Ev]>) -> bool {
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
            && !evs.iter().any(|e| *e as u8 == self.ev[r])
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
pub fn summary(e: &TimelineEvent) -> String {
    match &e.kind {
        EvKind::Device(d) => format!(
            "device {} ctx={} flags={} state={}{}",
            d.dev,
            d.ctx,
            d.flags.names().collect::<Vec<_>>().join(","),
            d.state,
            d.driver
                .as_deref()
                .map(|x| format!(" driver={x}"))
                .unwrap_or_default()
        ),
        EvKind::Set { dev, to } => format!("set {dev} -> {to}"),
        EvKind::Step { dev, from, to } => format!("step {dev} {from} -> {to}"),
        EvKind::SetDone { dev, to, ret, .. } => {
            if *ret == 0 {
                format!("set_done {dev} {to} ok")
            } else {
                format!("set_done {dev} {to} ret={ret}")
            }
        }
        EvKind::Get { dev, state } => format!("get {dev} = {state}"),
        EvKind::Reset { dev, ret } => format!("reset {dev} ret={ret}"),
        EvKind::Dma {
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
        EvKind::Irq { dev, kind, vector } => format!("irq {dev} {}[{vector}]", kind.name()),
        EvKind::IrqBin {
            dev,
            kind,
            vector,
            n,
            window: (t0, t1),
        } => format!(
            "irq_bin {dev} {}[{vector}] x{n} in [{t0}, {t1}]",
            kind.name()
        ),
        EvKind::Map { ctx, iova, len } => format!("map {ctx} {iova:#x}+{len:#x}"),
        EvKind::Unmap { ctx, iova, len } => format!("unmap {ctx} {iova:#x}+{len:#x}"),
        EvKind::Data {
            dev,
            dir,
            bytes,
            file: None,
        } => format!("data {dev} {} {bytes} B", dir.name()),
        EvKind::Data {
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
        EvKind::Lost {
            n,
            source,
            dev: None,
        } => format!("lost {n} ({source})"),
        EvKind::Lost {
            n,
            source,
            dev: Some(d),
        } => format!("lost {n} ({source}, {d})"),
        EvKind::Mark { label } => format!("mark {label}"),
        EvKind::End => "end".to_owned(),
        EvKind::PrecopyInfo { dev, result: Ok(p) } => format!(
            "precopy_info {dev} initial {} B dirty {} B flags {:#x}",
            p.initial_bytes, p.dirty_bytes, p.flags
        ),
        EvKind::PrecopyInfo {
            dev,
            result: Err(e),
        } => format!("precopy_info {dev} ret={e}"),
        EvKind::DataSize { dev, result: Ok(b) } => format!("data_size {dev} {b} B"),
        EvKind::DataSize {
            dev,
            result: Err(e),
        } => format!("data_size {dev} ret={e}"),
        EvKind::CorruptLoad {
            dev,
            corruption,
            bytes,
            ret,
        } => format!("corrupt_load {dev} {corruption} {bytes} B ret={ret}"),
        EvKind::Regs {
            dev,
            stage,
            bar,
            regs,
        } => {
            let r: Vec<String> = regs.iter().map(|(o, v)| format!("{o:#x}={v:#x}")).collect();
            format!("regs {dev} {stage} bar{bar} {}", r.join(" "))
        }
        EvKind::PrecopyInfoV2 { dev, ret } => format!("precopy_info_v2 {dev} ret={ret}"),
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

    fn ev(t: u64, kind: EvKind) -> TimelineEvent {
        TimelineEvent {
            t,
            line: t + 2,
            pid: None,
            kind,
        }
    }

    #[test]
    fn round_trips_every_kind() {
        let evs = vec![
            ev(
                0,
                EvKind::Device(DeviceDecl {
                    dev: "a".into(),
                    ctx: "vm".into(),
                    flags: Flags(3),
                    state: State::Running,
                    driver: Some("drv".into()),
                    sources: Default::default(),
                }),
            ),
            ev(
                1,
                EvKind::Set {
                    dev: "a".into(),
                    to: State::RunningP2p,
                },
            ),
            ev(
                2,
                EvKind::Step {
                    dev: "a".into(),
                    from: State::Running,
                    to: State::RunningP2p,
                },
            ),
            ev(
                3,
                EvKind::SetDone {
                    dev: "a".into(),
                    to: State::RunningP2p,
                    ret: 0,
                    data_fd: Some(-1),
                },
            ),
            ev(
                4,
                EvKind::Dma {
                    dev: "a".into(),
                    src: DmaSrc::MdevDma,
                    iova: 0x1000,
                    len: 4096,
                    write: true,
                    window: Some((3, 4)),
                    p2p: Some(true),
                },
            ),
            ev(
                5,
                EvKind::Irq {
                    dev: "a".into(),
                    kind: IrqKind::Intx,
                    vector: 7,
                },
            ),
            ev(
                5,
                EvKind::IrqBin {
                    dev: "a".into(),
                    kind: IrqKind::Msix,
                    vector: 2,
                    n: 4000,
                    window: (1, 5),
                },
            ),
            ev(
                6,
                EvKind::Map {
                    ctx: "vm".into(),
                    iova: 1,
                    len: 2,
                },
            ),
            ev(
                7,
                EvKind::Data {
                    dev: "a".into(),
                    dir: DataDir::Load,
                    bytes: 9,
                    file: None,
                },
            ),
            ev(
                8,
                EvKind::Lost {
                    n: 3,
                    source: "ring".into(),
                    dev: None,
                },
            ),
            ev(9, EvKind::Mark { label: "hi".into() }),
            ev(
                10,
                EvKind::Reset {
                    dev: "a".into(),
                    ret: -5,
                },
            ),
            ev(
                10,
                EvKind::PrecopyInfo {
                    dev: "a".into(),
                    result: Ok(PrecopyInfo {
                        initial_bytes: u64::MAX,
                        dirty_bytes: 3,
                        flags: u32::MAX,
                    }),
                },
            ),
            ev(
                10,
                EvKind::PrecopyInfo {
                    dev: "a".into(),
                    result: Err(-22),
                },
            ),
            ev(
                10,
                EvKind::DataSize {
                    dev: "a".into(),
                    result: Ok(80),
                },
            ),
            ev(
                10,
                EvKind::DataSize {
                    dev: "a".into(),
                    result: Err(-25),
                },
            ),
            ev(11, EvKind::End),
        ];
        let mut s = Store::new();
        for e in &evs {
            s.push(e);
        }
        let back: Vec<_> = s.iter().collect();
        assert_eq!(back, evs);
        assert_eq!(s.lost, 3);
        assert!(s.end_seen);
        let d = &s.devices[0];
        assert_eq!(d.stats.transitions, 1);
        assert_eq!(d.stats.quiesce_ns, vec![2]);
        assert_eq!(d.stats.quiesce_summary(), Some((2, 2, 2)));
        assert_eq!(d.stats.dma[State::RunningP2p as usize], 1);
        assert_eq!(d.segs.len(), 3);
        // Size reports tick on the data list; only `data` moves bytes.
        assert_eq!(d.data.len(), 5);
        assert_eq!(d.stats.data_bytes, 9);
    }

    #[test]
    fn ring_bound_keeps_recent_rows_and_summaries() {
        let mut s = Store::with_cap(100);
        for t in 0..1000u64 {
            s.push(&ev(
                t,
                EvKind::Irq {
                    dev: "a".into(),
                    kind: IrqKind::Msi,
                    vector: 0,
                },
            ));
        }
        assert!(s.len() <= 100);
        assert_eq!(s.end(), 1000);
        assert_eq!(s.total, 1000);
        assert_eq!(s.devices[0].stats.irq[State::Running as usize], 1000);
        assert_eq!(s.devices[0].irq.len(), s.len());
        assert_eq!(s.t_at(999), Some(999));
        assert_eq!(s.t_at(s.base()), Some(s.base()));
    }

    #[test]
    fn durations_have_units() {
        assert_eq!(fmt_dur(500), "500ns");
        assert_eq!(fmt_dur(1_500), "1.5us");
        assert_eq!(fmt_dur(13_000_000), "13ms");
        assert_eq!(fmt_dur(2_000_000_000), "2s");
    }

    #[test]
    fn quiesce_samples_stay_bounded_with_exact_extremes() {
        let mut st = DevStats::default();
        for ns in 1..=100_000u64 {
            st.add_quiesce(ns);
        }
        assert!(st.quiesce_ns.len() <= QUIESCE_SAMPLES);
        assert_eq!(st.quiesce_count, 100_000);
        let (mn, md, mx) = st.quiesce_summary().expect("summary");
        assert_eq!((mn, mx), (1, 100_000));
        assert!((40_000..60_000).contains(&md), "median {md}");
    }
}
