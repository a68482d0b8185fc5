//! A native trace opened in bounded memory: one pass over the file builds an index, and events
//! are decoded again only for what is on screen.
//!
//! The index holds, whatever the trace's length:
//! - a [`Checkpoint`] every [`BLOCK`] events with the block's time range (the native format is
//!   delta-coded, so a block is decoded by resuming the core's [`NativeReader`] there);
//! - the devices and contexts as declared, and the trace's string table (names: small);
//! - per lane, counts per kind ([`Tick`]) per time bucket at several zoom levels
//!   ([`Counts`]: level 0 has at most [`BUCKETS`] buckets, each level above halves them);
//! - per device, its state segments as the core's `DeviceTimeline` cut them (the index feeds
//!   every event to the core's [`Verifier`], as the event store does), compressed to a few bytes
//!   each ([`SegList`]): a lane shows what the rules judged at any zoom;
//! - `lost` and `mark` events (trace-wide notes; at most [`MAX_NOTES`] held, the rest counted).
//!
//! What grows with the trace: 56 bytes per block (~14 bytes per 1,000 events), ~4 bytes per
//! state segment, and the verifier's 24 bytes per quiesce (DESIGN.md). The counts are fixed.
//!
//! The index is read with positioned reads of 64 KiB, not mmap: the pages of a mapped file
//! count in the process's RSS once touched, and the pass touches all of them; the page cache
//! holds the file either way.
//!
//! JSONL traces are not indexed: `view` of a JSONL file holds its events in the store as
//! before (convert with `migscope export --format native` to open a long one in bounded
//! memory).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io::{self, BufReader, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

use migscope_core::model::{MigFlags, MigState};
use migscope_core::trace::{
    Checkpoint, Event, EventKind, EventRef, Header, KindRef, Name, NativeReader, TraceError,
};
use migscope_core::verify::{Options, SegKind, Verifier};

use crate::store::{Device, Seg};

pub mod sidecar;
pub use sidecar::Stale;

/// Events per block (checkpoint).
pub const BLOCK: u64 = 4096;
/// Level-0 buckets per count lane (the bucket width doubles as the trace gets longer).
pub const BUCKETS: usize = 1 << 15;
/// Notes (`lost`, `mark`) held; more are counted.
pub const MAX_NOTES: usize = 100_000;
/// When the first partial index is published while a long trace is indexed.
pub const FIRST_PUBLISH: std::time::Duration = std::time::Duration::from_millis(500);
/// The longest interval between two partial indexes (each is a copy of the index so far).
pub const MAX_PUBLISH: std::time::Duration = std::time::Duration::from_secs(4);
/// State segments per compressed chunk.
const SEG_CHUNK: usize = 64;

/// Why a trace could not be indexed or read back.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("{file}: cannot open: {source}")]
    Open { file: String, source: io::Error },
    #[error("{file}: cannot seek to byte offset {offset}: {source}")]
    Seek {
        file: String,
        offset: u64,
        source: io::Error,
    },
    /// The core reader's error (it names the file, the event's line and the byte offset).
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error("{file}: not a native trace (the index reads native traces only)")]
    NotNative { file: String },
    /// The file changed since it was indexed (shorter, or other bytes where a block was).
    #[error(
        "{file}: the block at byte offset {offset} ends after {got} of {want} events: the file changed since it was indexed"
    )]
    Changed {
        file: String,
        offset: u64,
        got: u64,
        want: u64,
    },
    #[error("indexing was cancelled")]
    Cancelled,
}

/// What a count lane counts: the store's tick lists (one fact: [`tick`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tick {
    Dma,
    Irq,
    /// `data` and the driver's size reports (`precopy_info`, `data_size`, ...).
    Data,
    /// set / step / set_done / get / reset.
    Fsm,
}

impl Tick {
    pub const ALL: [Tick; 4] = [Tick::Dma, Tick::Irq, Tick::Data, Tick::Fsm];
}

/// The device a borrowed event is about, if it is about one ([`EventKind::dev`]).
fn dev_of<'a>(k: &KindRef<'a>) -> Option<Name<'a>> {
    match *k {
        KindRef::Set { dev, .. }
        | KindRef::Step { dev, .. }
        | KindRef::SetDone { dev, .. }
        | KindRef::Get { dev, .. }
        | KindRef::Reset { dev, .. }
        | KindRef::Dma { dev, .. }
        | KindRef::Irq { dev, .. }
        | KindRef::Data { dev, .. } => Some(dev),
        KindRef::Map { .. } | KindRef::Unmap { .. } | KindRef::End => None,
        KindRef::Owned(k) => k.dev().map(Name::text),
    }
}

/// The device lane tick list an event belongs to (`None`: device declarations, and events
/// about no device).
pub fn tick(k: &EventKind) -> Option<Tick> {
    tick_ref(&k.as_ref())
}

/// [`tick`] of a borrowed event (what the index pass reads).
pub fn tick_ref(k: &KindRef<'_>) -> Option<Tick> {
    Some(match k {
        KindRef::Dma { .. } => Tick::Dma,
        KindRef::Irq { .. } => Tick::Irq,
        KindRef::Data { .. } => Tick::Data,
        KindRef::Set { .. }
        | KindRef::Step { .. }
        | KindRef::SetDone { .. }
        | KindRef::Get { .. }
        | KindRef::Reset { .. } => Tick::Fsm,
        KindRef::Map { .. } | KindRef::Unmap { .. } | KindRef::End => return None,
        KindRef::Owned(k) => return tick_owned(k),
    })
}

fn tick_owned(k: &EventKind) -> Option<Tick> {
    Some(match k {
        EventKind::Dma { .. } => Tick::Dma,
        // A bin is one tick: its `n` interrupts are in the verifier's counts (the stats pane).
        EventKind::Irq { .. } | EventKind::IrqBin { .. } => Tick::Irq,
        EventKind::Data { .. }
        | EventKind::PrecopyInfo { .. }
        | EventKind::DataSize { .. }
        | EventKind::CorruptLoad { .. }
        | EventKind::Regs { .. }
        | EventKind::PrecopyInfoV2 { .. }
        | EventKind::DirtyReport { .. } => Tick::Data,
        EventKind::Set { .. }
        | EventKind::Step { .. }
        | EventKind::SetDone { .. }
        | EventKind::Get { .. }
        | EventKind::Reset { .. } => Tick::Fsm,
        EventKind::Device { .. }
        | EventKind::Map { .. }
        | EventKind::Unmap { .. }
        | EventKind::Lost { .. }
        | EventKind::Mark { .. }
        | EventKind::End => return None,
    })
}

/// The time buckets every count lane shares: level-0 bucket `b` covers
/// `[origin + b * width, origin + (b + 1) * width)`; level `l` buckets are `2^l` of those.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buckets {
    pub origin: u64,
    pub width: u64,
}

impl Buckets {
    /// Level-0 bucket of time `t` (t >= origin).
    pub fn of(&self, t: u64) -> usize {
        (t.saturating_sub(self.origin) / self.width) as usize
    }
}

/// Counts per time bucket of one lane, at every zoom level (`levels[0]` finest; each level
/// above sums pairs of the one below).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    levels: Vec<Vec<u32>>,
}

impl Counts {
    fn add(&mut self, b: usize) {
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        let l0 = &mut self.levels[0];
        if l0.len() <= b {
            l0.resize(b + 1, 0);
        }
        l0[b] = l0[b].saturating_add(1);
    }

    /// Merges level 0's bucket pairs (the bucket width doubled).
    fn halve(&mut self) {
        if let Some(l0) = self.levels.first_mut() {
            *l0 = pair_sums(l0);
        }
    }

    /// Builds the levels above level 0.
    fn finish(&mut self) {
        self.levels.truncate(1);
        while let Some(top) = self.levels.last()
            && top.len() > 1
        {
            let up = pair_sums(top);
            self.levels.push(up);
        }
    }

    /// The counts of level `l` (empty when the lane never counted anything).
    pub fn level(&self, l: usize) -> &[u32] {
        self.levels.get(l).map_or(&[], Vec::as_slice)
    }

    /// Levels built.
    pub fn depth(&self) -> usize {
        self.levels.len()
    }

    /// Events in the level-0 buckets that overlap `[t0, t1)`: exact when `t0` and `t1` are
    /// bucket boundaries, otherwise it includes the partly covered buckets at the ends. Summed
    /// over the levels as a segment tree is (at most two buckets per level).
    pub fn around(&self, bk: &Buckets, t0: u64, t1: u64) -> u64 {
        if self.levels.is_empty() || t1 <= bk.origin || t1 <= t0 {
            return 0;
        }
        let w = bk.width.max(1);
        let mut lo = (t0.saturating_sub(bk.origin) / w) as usize;
        let mut hi = (t1 - bk.origin).div_ceil(w) as usize;
        let mut sum = 0u64;
        let mut l = 0;
        while lo < hi && l < self.levels.len() {
            let lv = &self.levels[l];
            let at = |i: usize| u64::from(lv.get(i).copied().unwrap_or(0));
            if lo & 1 == 1 {
                sum += at(lo);
                lo += 1;
            }
            if hi & 1 == 1 {
                hi -= 1;
                sum += at(hi);
            }
            lo >>= 1;
            hi >>= 1;
            l += 1;
        }
        sum
    }
}

fn pair_sums(v: &[u32]) -> Vec<u32> {
    v.chunks(2)
        .map(|c| c.iter().fold(0u32, |a, &x| a.saturating_add(x)))
        .collect()
}

/// A device's state segments, compressed: per segment a varint time delta, a varint row
/// delta (the row of the event that began it, +1; 0 for none) and 1-2 bytes of [`SegKind`]
/// (+ a zigzag varint for a failed SET's errno), in chunks of [`SEG_CHUNK`] with their first
/// time (binary search, then decode one chunk).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SegList {
    /// (first segment's time, byte offset, row base) of each chunk.
    chunks: Vec<(u64, u32, u64)>,
    bytes: Vec<u8>,
    len: usize,
    last_t: u64,
    last_row: u64,
}

const SEG_TRANSITION: u8 = 0x80;
const SEG_QUIESCE: u8 = 0x40;
const SEG_RET_ZERO: u8 = 0x10;
const SEG_RET_ERR: u8 = 0x20;
const SEG_UNKNOWN: u8 = 0x0f;

fn state_nibble(s: Option<MigState>) -> u8 {
    s.map_or(SEG_UNKNOWN, |s| s as u8)
}

fn nibble_state(b: u8) -> Option<MigState> {
    MigState::from_u32(u32::from(b & 0x0f))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(b: &[u8], i: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    while let Some(&x) = b.get(*i) {
        *i += 1;
        v |= u64::from(x & 0x7f) << shift.min(63);
        shift += 7;
        if x < 0x80 {
            break;
        }
    }
    v
}

impl SegList {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends a segment (times non-decreasing).
    fn push(&mut self, s: Seg) {
        if self.len.is_multiple_of(SEG_CHUNK) {
            self.chunks
                .push((s.t, self.bytes.len() as u32, self.last_row));
            self.last_t = s.t;
        }
        put_varint(&mut self.bytes, s.t.saturating_sub(self.last_t));
        match s.row {
            Some(r) => {
                put_varint(&mut self.bytes, r.saturating_sub(self.last_row) + 1);
                self.last_row = r;
            }
            None => put_varint(&mut self.bytes, 0),
        }
        match s.what {
            SegKind::State(st) => self.bytes.push(state_nibble(st)),
            SegKind::Transition {
                from,
                to,
                ret,
                quiesce,
            } => {
                let r = match ret {
                    None => 0,
                    Some(0) => SEG_RET_ZERO,
                    Some(_) => SEG_RET_ERR,
                };
                let q = if quiesce { SEG_QUIESCE } else { 0 };
                self.bytes
                    .extend_from_slice(&[SEG_TRANSITION | q | r | state_nibble(from), to as u8]);
                if let Some(e) = ret.filter(|&e| e != 0) {
                    let e = i64::from(e);
                    put_varint(&mut self.bytes, ((e << 1) ^ (e >> 63)) as u64);
                }
            }
        }
        self.last_t = s.t;
        self.len += 1;
    }

    /// Decodes chunk `c` into `out` (cleared first).
    fn chunk(&self, c: usize, out: &mut Vec<Seg>) {
        out.clear();
        let Some(&(mut t, off, mut row)) = self.chunks.get(c) else {
            return;
        };
        let end = self
            .chunks
            .get(c + 1)
            .map_or(self.bytes.len(), |x| x.1 as usize);
        let b = &self.bytes[..end];
        let mut i = off as usize;
        while i < end {
            t += get_varint(b, &mut i);
            let dr = get_varint(b, &mut i);
            let r = (dr != 0).then(|| {
                row += dr - 1;
                row
            });
            let k = b.get(i).copied().unwrap_or(SEG_UNKNOWN);
            i += 1;
            let what = if k & SEG_TRANSITION == 0 {
                SegKind::State(nibble_state(k))
            } else {
                let to = b
                    .get(i)
                    .and_then(|&x| MigState::from_u32(u32::from(x)))
                    .unwrap_or(MigState::Error);
                i += 1;
                let ret = if k & SEG_RET_ERR != 0 {
                    let z = get_varint(b, &mut i);
                    Some((((z >> 1) as i64) ^ -((z & 1) as i64)) as i32)
                } else if k & SEG_RET_ZERO != 0 {
                    Some(0)
                } else {
                    None
                };
                SegKind::Transition {
                    from: nibble_state(k),
                    to,
                    ret,
                    quiesce: k & SEG_QUIESCE != 0,
                }
            };
            out.push(Seg { t, what, row: r });
        }
    }

    /// Every segment starting in `[t0, t1)`, with the one in force at `t0` before them.
    pub fn range(&self, t0: u64, t1: u64) -> Vec<Seg> {
        let mut out = Vec::new();
        let mut buf = Vec::with_capacity(SEG_CHUNK);
        let mut c = self.chunks.partition_point(|x| x.0 <= t0).saturating_sub(1);
        let mut before: Option<Seg> = None;
        while c < self.chunks.len() && self.chunks[c].0 < t1 {
            self.chunk(c, &mut buf);
            for s in &buf {
                if s.t <= t0 {
                    before = Some(*s);
                } else if s.t < t1 {
                    out.push(*s);
                }
            }
            c += 1;
        }
        if let Some(b) = before {
            out.insert(0, b);
        }
        out
    }

    /// The segment in force at `t` and whether another one starts in `[t0, t1)` after the
    /// first there (a state change inside the cell): what one timeline cell draws.
    pub fn cell(&self, t0: u64, mid: u64, t1: u64, buf: &mut Vec<Seg>) -> (Option<Seg>, bool) {
        let at = |t: u64, buf: &mut Vec<Seg>| -> (Option<Seg>, usize) {
            // Index (in the whole list) of the first segment starting after t, and the one
            // in force at t.
            let c = self.chunks.partition_point(|x| x.0 <= t);
            let Some(c) = c.checked_sub(1) else {
                return (None, 0);
            };
            self.chunk(c, buf);
            let k = buf.partition_point(|s| s.t <= t);
            (k.checked_sub(1).map(|k| buf[k]), c * SEG_CHUNK + k)
        };
        let (seg, _) = at(mid, buf);
        let (_, lo) = at(t0.saturating_sub(1), buf);
        let (_, hi) = at(t1.saturating_sub(1), buf);
        (seg, hi > lo.max(1))
    }

    /// A [`SegCursor`] over the list, for the cells of a lane left to right.
    pub fn cursor(&self) -> SegCursor<'_> {
        SegCursor {
            list: self,
            chunk: None,
            buf: Vec::with_capacity(SEG_CHUNK),
        }
    }

    /// Every segment, in order (tests).
    pub fn all(&self) -> Vec<Seg> {
        let mut out = Vec::with_capacity(self.len);
        let mut buf = Vec::new();
        for c in 0..self.chunks.len() {
            self.chunk(c, &mut buf);
            out.append(&mut buf);
        }
        out
    }
}

/// [`SegList::cell`] for cells asked in time order (a lane's cells left to right): the chunk
/// decoded last is kept and the next one is searched for among the chunks after it, and a
/// cell whose two ends fall in different chunks has a state change without decoding either
/// (a chunk starts inside it). A frame decodes at most one chunk per cell, none for the
/// cells of a zoomed-in view that share a chunk.
pub struct SegCursor<'a> {
    list: &'a SegList,
    /// The chunk decoded in `buf`.
    chunk: Option<usize>,
    buf: Vec<Seg>,
}

impl SegCursor<'_> {
    /// The chunk holding the segment in force at `t` (None: before the first), searched from
    /// the chunk decoded last (`t` no earlier than the times asked before).
    fn chunk_of(&self, t: u64) -> Option<usize> {
        let ch = &self.list.chunks;
        let from = self.chunk.filter(|&c| ch[c].0 <= t).unwrap_or(0);
        if ch.get(from + 1).is_none_or(|x| x.0 > t) && ch.get(from).is_some_and(|x| x.0 <= t) {
            return Some(from);
        }
        (from + ch[from..].partition_point(|x| x.0 <= t)).checked_sub(1)
    }

    fn decode(&mut self, c: usize) {
        if self.chunk != Some(c) {
            self.list.chunk(c, &mut self.buf);
            self.chunk = Some(c);
        }
    }

    /// The segment in force at `t`, and the index (in the whole list) of the first segment
    /// starting after `t`.
    fn at(&mut self, t: u64) -> (Option<Seg>, usize) {
        let Some(c) = self.chunk_of(t) else {
            return (None, 0);
        };
        self.decode(c);
        let k = self.buf.partition_point(|s| s.t <= t);
        (k.checked_sub(1).map(|k| self.buf[k]), c * SEG_CHUNK + k)
    }

    /// What [`SegList::cell`] answers, for cells asked left to right.
    pub fn cell(&mut self, t0: u64, mid: u64, t1: u64) -> (Option<Seg>, bool) {
        let (a, b) = (t0.saturating_sub(1), t1.saturating_sub(1));
        // In time order, so that each search starts from the chunk found before.
        let ca = self.chunk_of(a);
        let (seg, _) = self.at(mid);
        let cb = self.chunk_of(b);
        let change = match (ca, cb) {
            // A chunk (a segment) starts in (a, b], after the first chunk's first segment
            // (the cell's segments are at least 2 when a chunk was before a).
            (Some(x), Some(y)) if y > x => true,
            (None, Some(y)) if y > 0 => true,
            _ => {
                let (_, lo) = self.at(a);
                let (_, hi) = self.at(b);
                hi > lo.max(1)
            }
        };
        (seg, change)
    }
}

/// One block: where it starts and the times of its first and last events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    pub cp: Checkpoint,
    pub t0: u64,
    pub t1: u64,
}

/// A device as the trace declared it (the last declaration wins, as in the store).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IxDevice {
    /// The lane's facts (the store's type; its own segments and row lists stay empty).
    pub facts: Device,
    pub segs: SegList,
    /// Counts per [`Tick`] (in [`Tick::ALL`] order).
    pub counts: [Counts; 4],
}

impl IxDevice {
    pub fn counts(&self, k: Tick) -> &Counts {
        &self.counts[k as usize]
    }
}

/// A migration context: its devices (in order of appearance) and its map/unmap counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IxCtx {
    pub name: String,
    pub devs: Vec<usize>,
    pub maps: Counts,
}

/// A `lost` or `mark` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Note {
    pub t: u64,
    pub row: u64,
    pub lost: bool,
}

/// How far indexing got (progress reports).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub bytes: u64,
    pub total_bytes: u64,
    pub events: u64,
}

/// The index of one native trace file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceIndex {
    pub name: String,
    pub path: PathBuf,
    pub header: Header,
    pub blocks: Vec<Block>,
    strings: Vec<String>,
    pub devices: Vec<IxDevice>,
    pub ctxs: Vec<IxCtx>,
    pub buckets: Buckets,
    /// Rows: events (and skipped records of unknown kinds), numbered from 0 (line - 2).
    pub rows: u64,
    pub first_t: Option<u64>,
    pub last_t: u64,
    /// Sum of `lost` events' `n`.
    pub lost: u64,
    pub end_seen: bool,
    pub notes: Vec<Note>,
    /// Notes past [`MAX_NOTES`], counted only.
    pub notes_dropped: u64,
    /// The byte offset of the incomplete record the file ends in (a cut recording).
    pub truncated_at: Option<u64>,
    /// Bytes of the file indexed.
    pub bytes: u64,
    /// The index of the rows read so far while the pass goes on ([`TraceIndex::open_publishing`]:
    /// the view draws it and gets a fuller one later); never saved.
    pub partial: bool,
}

/// Builds the index (the state of one pass).
struct Builder {
    ix: TraceIndex,
    dev_ids: HashMap<String, usize>,
    ctx_ids: HashMap<String, usize>,
    timelines: Verifier,
    /// Device index + 1 by the reader's string id of its name (0: not a device yet): the
    /// pass finds a device without hashing its name.
    by_id: Vec<u32>,
    /// The same for contexts.
    ctx_by_id: Vec<u32>,
    /// Per device: (start, row) of the open segments seen, oldest first, to give each closed
    /// segment the row of the event that began it.
    open: Vec<VecDeque<(u64, u64)>>,
}

impl Builder {
    fn ctx_id(&mut self, name: &str) -> usize {
        if let Some(&i) = self.ctx_ids.get(name) {
            return i;
        }
        let i = self.ix.ctxs.len();
        self.ix.ctxs.push(IxCtx {
            name: name.to_owned(),
            devs: Vec::new(),
            maps: Counts::default(),
        });
        self.ctx_ids.insert(name.to_owned(), i);
        i
    }

    /// [`Builder::ctx_id`] of a borrowed name, remembered by its id.
    fn ctx_id_ref(&mut self, n: Name<'_>) -> usize {
        if let Some(i) = by_string_id(&self.ctx_by_id, n) {
            return i;
        }
        let i = self.ctx_id(n.text);
        remember_string_id(&mut self.ctx_by_id, n, i);
        i
    }

    /// The device's index if it was seen.
    fn known(&self, n: Name<'_>) -> Option<usize> {
        by_string_id(&self.by_id, n).or_else(|| self.dev_ids.get(n.text).copied())
    }

    /// [`Builder::dev_id`] of a borrowed name, remembered by its id.
    fn dev_id_ref(&mut self, n: Name<'_>) -> usize {
        if let Some(i) = by_string_id(&self.by_id, n) {
            return i;
        }
        let i = self.dev_id(n.text);
        remember_string_id(&mut self.by_id, n, i);
        i
    }

    /// The device's index, creating an undeclared device (context `?`) if new.
    fn dev_id(&mut self, name: &str) -> usize {
        match self.dev_ids.get(name) {
            Some(&i) => i,
            None => {
                let ctx = self.ctx_id("?");
                self.new_dev(name, ctx)
            }
        }
    }

    fn new_dev(&mut self, name: &str, ctx: usize) -> usize {
        let i = self.ix.devices.len();
        self.ix.devices.push(IxDevice {
            facts: Device {
                name: name.to_owned(),
                ctx,
                flags: MigFlags::default(),
                driver: None,
                sources: BTreeMap::new(),
                declared: false,
                segs: Vec::new(),
                dma: Vec::new(),
                irq: Vec::new(),
                data: Vec::new(),
                fsm: Vec::new(),
            },
            segs: SegList::default(),
            counts: Default::default(),
        });
        self.open.push(VecDeque::new());
        self.ix.ctxs[ctx].devs.push(i);
        self.dev_ids.insert(name.to_owned(), i);
        i
    }

    fn declare(&mut self, e: &EventKind) {
        let EventKind::Device {
            dev,
            flags,
            ctx,
            driver,
            sources,
            ..
        } = e
        else {
            return;
        };
        let c = self.ctx_id(ctx);
        let i = match self.dev_ids.get(dev.as_str()) {
            Some(&i) => i,
            None => self.new_dev(dev, c),
        };
        let old = self.ix.devices[i].facts.ctx;
        if old != c {
            self.ix.ctxs[old].devs.retain(|&x| x != i);
            self.ix.ctxs[c].devs.push(i);
        }
        let d = &mut self.ix.devices[i].facts;
        d.ctx = c;
        d.flags = *flags;
        d.driver.clone_from(driver);
        d.sources.clone_from(sources);
        d.declared = true;
    }

    /// Level-0 bucket of `t`, doubling the bucket width until it fits.
    fn bucket(&mut self, t: u64) -> usize {
        let bk = &mut self.ix.buckets;
        while bk.of(t) >= BUCKETS {
            bk.width = bk.width.saturating_mul(2);
            for d in &mut self.ix.devices {
                d.counts.iter_mut().for_each(Counts::halve);
            }
            for c in &mut self.ix.ctxs {
                c.maps.halve();
            }
        }
        self.ix.buckets.of(t)
    }

    fn event(&mut self, row: u64, line: u64, e: EventRef<'_>) {
        let t = e.t;
        if self.ix.first_t.is_none() {
            self.ix.first_t = Some(t);
            // The first bucket width: a microsecond, doubled as needed.
            self.ix.buckets = Buckets {
                origin: t,
                width: 1_000,
            };
        }
        self.ix.last_t = t;
        let tk = tick_ref(&e.kind);
        let dev = dev_of(&e.kind);
        // The timelines change on the events that shape the lanes only (DeviceTimeline::feed
        // ignores evidence, data and maps), and on a device's first appearance (its timeline
        // starts there): the verifier's rules on evidence are not needed here (the session's
        // verifier judges), and windowed evidence is judged against every past quiesce.
        let first_seen = dev.is_some_and(|n| self.known(n).is_none());
        let shapes = match e.kind {
            KindRef::Map { .. } | KindRef::Unmap { .. } => false,
            KindRef::Owned(EventKind::Mark { .. }) => false,
            _ => !matches!(tk, Some(Tick::Dma | Tick::Irq | Tick::Data)),
        };
        if first_seen || shapes {
            drop(self.timelines.push_ref(line, e));
        }
        let b = self.bucket(t);
        match e.kind {
            KindRef::Owned(k @ EventKind::Device { .. }) => self.declare(k),
            KindRef::Map { ctx, .. } | KindRef::Unmap { ctx, .. } => {
                let c = self.ctx_id_ref(ctx);
                self.ix.ctxs[c].maps.add(b);
            }
            KindRef::Owned(EventKind::Lost { n, .. }) => {
                self.ix.lost = self.ix.lost.saturating_add(*n);
                self.note(t, row, true);
            }
            KindRef::Owned(EventKind::Mark { .. }) => self.note(t, row, false),
            KindRef::End => self.ix.end_seen = true,
            _ => {
                if let (Some(n), Some(tk)) = (dev, tk) {
                    let i = self.dev_id_ref(n);
                    self.ix.devices[i].counts[tk as usize].add(b);
                }
            }
        }
        // Segments change on the events that shape the lanes only.
        if matches!(tk, Some(Tick::Fsm))
            || matches!(
                e.kind,
                KindRef::Owned(EventKind::Device { .. }) | KindRef::End
            )
        {
            self.sync(dev, t, row);
        }
    }

    fn note(&mut self, t: u64, row: u64, lost: bool) {
        if self.ix.notes.len() < MAX_NOTES {
            self.ix.notes.push(Note { t, row, lost });
        } else {
            self.ix.notes_dropped += 1;
        }
    }

    /// Records the open segment's start row of the devices the event touched and moves the
    /// segments the core's timelines closed into the lanes.
    fn sync(&mut self, dev: Option<Name<'_>>, t: u64, row: u64) {
        let touched = match dev {
            Some(n) => {
                let i = self.dev_id_ref(n);
                i..i + 1
            }
            None => 0..self.ix.devices.len(),
        };
        for i in touched {
            let name = &self.ix.devices[i].facts.name;
            if let Some(tl) = self.timelines.timeline(name) {
                let start = tl.open_segment(t).start;
                let q = &mut self.open[i];
                if q.back().is_none_or(|&(s, _)| s != start) {
                    q.push_back((start, row));
                }
            }
        }
        let closed: Vec<(String, migscope_core::verify::Segment)> = self
            .timelines
            .drain_segments()
            .map(|(n, s)| (n.to_owned(), s))
            .collect();
        for (name, s) in closed {
            let i = self.dev_id(&name);
            self.close(i, s.start, s.what);
        }
    }

    fn close(&mut self, i: usize, start: u64, what: SegKind) {
        let q = &mut self.open[i];
        while q.front().is_some_and(|&(s, _)| s < start) {
            q.pop_front();
        }
        let row = q.front().filter(|&&(s, _)| s == start).map(|&(_, r)| r);
        if row.is_some() {
            q.pop_front();
        }
        self.ix.devices[i].segs.push(Seg {
            t: start,
            what,
            row,
        });
    }

    /// The index of the rows so far (`strings`: the reader's table now): the open segments
    /// closed at the last event, the counts' levels built, on a copy.
    fn snapshot(&self, strings: &[String]) -> TraceIndex {
        let mut ix = self.ix.clone();
        ix.partial = true;
        ix.strings = strings.to_vec();
        for (name, s) in self.timelines.open_segments() {
            if let Some(&i) = self.dev_ids.get(name) {
                // The row `close` would give it: the first open start equal to its start.
                let row = self.open[i]
                    .iter()
                    .find(|&&(st, _)| st >= s.start)
                    .filter(|&&(st, _)| st == s.start)
                    .map(|&(_, r)| r);
                ix.devices[i].segs.push(Seg {
                    t: s.start,
                    what: s.what,
                    row,
                });
            }
        }
        for d in &mut ix.devices {
            d.counts.iter_mut().for_each(Counts::finish);
        }
        for c in &mut ix.ctxs {
            c.maps.finish();
        }
        ix
    }

    fn finish(mut self) -> TraceIndex {
        let open: Vec<(String, migscope_core::verify::Segment)> = self
            .timelines
            .open_segments()
            .map(|(n, s)| (n.to_owned(), s))
            .collect();
        for (name, s) in open {
            let i = self.dev_id(&name);
            self.close(i, s.start, s.what);
        }
        for d in &mut self.ix.devices {
            d.counts.iter_mut().for_each(Counts::finish);
        }
        for c in &mut self.ix.ctxs {
            c.maps.finish();
        }
        self.ix
    }
}

fn open_file(path: &Path) -> Result<File, IndexError> {
    File::open(path).map_err(|source| IndexError::Open {
        file: path.display().to_string(),
        source,
    })
}

/// Where [`TraceIndex::build_publishing`] hands the partial indexes.
pub struct Publish<'a> {
    /// When the first one is due ([`FIRST_PUBLISH`] for a view).
    pub first: std::time::Duration,
    pub send: &'a mut dyn FnMut(TraceIndex),
}

/// Where [`TraceIndex::open`] got the index from.
#[derive(Debug)]
pub enum Opened {
    /// The sidecar saved beside the trace (`T.mgt.idx`), valid for the trace as it is.
    Loaded(PathBuf),
    /// Built from the trace (why the sidecar was not used), then saved beside it (or why not).
    Built {
        stale: Stale,
        saved: Result<PathBuf, String>,
    },
}

impl TraceIndex {
    /// An index of nothing yet, for the trace at `path` with `header`.
    fn empty(path: &Path, header: Header) -> TraceIndex {
        TraceIndex {
            name: path.display().to_string(),
            path: path.to_owned(),
            header,
            blocks: Vec::new(),
            strings: Vec::new(),
            devices: Vec::new(),
            ctxs: Vec::new(),
            buckets: Buckets {
                origin: 0,
                width: 1_000,
            },
            rows: 0,
            first_t: None,
            last_t: 0,
            lost: 0,
            end_seen: false,
            notes: Vec::new(),
            notes_dropped: 0,
            truncated_at: None,
            bytes: 0,
            partial: false,
        }
    }

    /// The index of the native trace at `path`: the one saved beside it when it was saved for
    /// the trace as it is now (sidecar module), otherwise built in one pass ([`build`]) and
    /// saved there for the next open. A sidecar that cannot be saved (a read-only directory)
    /// is no error: the index is returned and [`Opened::Built`] says why.
    ///
    /// [`build`]: TraceIndex::build
    pub fn open(
        path: &Path,
        progress: impl FnMut(Progress) -> bool,
    ) -> Result<(TraceIndex, Opened), IndexError> {
        TraceIndex::open_publishing(path, progress, None)
    }

    /// [`TraceIndex::open`], publishing the partial index while it is built
    /// ([`TraceIndex::build_publishing`]).
    pub fn open_publishing(
        path: &Path,
        progress: impl FnMut(Progress) -> bool,
        publish: Option<Publish<'_>>,
    ) -> Result<(TraceIndex, Opened), IndexError> {
        let name = path.display().to_string();
        let f = open_file(path)?;
        let mut input = BufReader::with_capacity(1 << 12, f);
        let first = io::BufRead::fill_buf(&mut input)
            .map_err(|source| IndexError::Open {
                file: name.clone(),
                source,
            })?
            .first()
            .copied();
        if first != Some(migscope_core::trace::native::MAGIC[0]) {
            return Err(IndexError::NotNative { file: name });
        }
        let header = NativeReader::new(&name, input)?.header().clone();
        let stale = match sidecar::load(path, TraceIndex::empty(path, header)) {
            Ok(ix) => return Ok((ix, Opened::Loaded(sidecar::path_of(path)))),
            Err(s) => s,
        };
        let before = sidecar::Fingerprint::of(path).map_err(|source| IndexError::Open {
            file: name.clone(),
            source,
        })?;
        let ix = TraceIndex::build_publishing(path, progress, publish)?;
        // A file that changed while it was read (a recording still writing it) is indexed as
        // read, but its index is not saved: it would describe no version of the file.
        let saved = match sidecar::Fingerprint::of(path) {
            Ok(after) if after == before && ix.bytes <= before.len => sidecar::save(&ix, &before),
            Ok(_) => Err(format!(
                "{name}: the file changed while it was indexed: index not saved"
            )),
            Err(e) => Err(format!("{name}: {e}")),
        };
        Ok((ix, Opened::Built { stale, saved }))
    }

    /// Saves the sidecar of a native trace migscope has just written (the trace sink's finish,
    /// `export --format native`), so that the first `view` of it loads the index instead of
    /// building it. The index is built by [`TraceIndex::open`] itself (the view's own code:
    /// the same checkpoints and overview); the sidecar never decides a verdict. Returns where
    /// it was saved, or why not (a trace without its sidecar still opens: no error for the
    /// writer).
    pub fn save_sidecar_of(path: &Path) -> Result<PathBuf, String> {
        match TraceIndex::open(path, |_| true) {
            Ok((_, Opened::Loaded(p))) => Ok(p),
            Ok((_, Opened::Built { saved, .. })) => saved,
            Err(e) => Err(e.to_string()),
        }
    }

    /// Indexes the native trace at `path` in one pass; `progress` is told how far it got
    /// every block and stops the pass by returning false.
    pub fn build(
        path: &Path,
        progress: impl FnMut(Progress) -> bool,
    ) -> Result<TraceIndex, IndexError> {
        TraceIndex::build_publishing(path, progress, None)
    }

    /// [`TraceIndex::build`], handing `publish` the index of the rows read so far now and
    /// then (after [`FIRST_PUBLISH`], then at intervals doubling up to [`MAX_PUBLISH`]: a copy
    /// of the index each time), so that a view can draw the overview while the pass goes on.
    pub fn build_publishing(
        path: &Path,
        mut progress: impl FnMut(Progress) -> bool,
        mut publish: Option<Publish<'_>>,
    ) -> Result<TraceIndex, IndexError> {
        let mut every = publish.as_ref().map_or(FIRST_PUBLISH, |p| p.first);
        let mut next = std::time::Instant::now() + every;
        let name = path.display().to_string();
        let f = open_file(path)?;
        let total_bytes = f.metadata().map(|m| m.len()).unwrap_or(0);
        let mut input = BufReader::with_capacity(1 << 16, f);
        let first = io::BufRead::fill_buf(&mut input)
            .map_err(|source| IndexError::Open {
                file: name.clone(),
                source,
            })?
            .first()
            .copied();
        if first != Some(migscope_core::trace::native::MAGIC[0]) {
            return Err(IndexError::NotNative { file: name });
        }
        let mut r = NativeReader::new(&name, input)?;
        let header = r.header().clone();
        let mut timelines = Verifier::new(&header, Options::default());
        timelines.keep_segments();
        let mut b = Builder {
            ix: TraceIndex::empty(path, header),
            dev_ids: HashMap::new(),
            ctx_ids: HashMap::new(),
            timelines,
            by_id: Vec::new(),
            ctx_by_id: Vec::new(),
            open: Vec::new(),
        };
        let mut cp = r.checkpoint();
        // Borrowed events (names by the reader's string ids: nothing copied per event).
        while let Some(x) = r.next_line() {
            let line = x?;
            let e = r.current();
            let row = line - 2;
            if row >= b.ix.blocks.len() as u64 * BLOCK {
                if let Some(p) = publish.as_mut()
                    && row > 0
                    && std::time::Instant::now() >= next
                {
                    (p.send)(b.snapshot(r.strings()));
                    every = (every * 2).min(MAX_PUBLISH);
                    next = std::time::Instant::now() + every;
                }
                if !progress(Progress {
                    bytes: cp.offset,
                    total_bytes,
                    events: row,
                }) {
                    return Err(IndexError::Cancelled);
                }
                b.ix.blocks.push(Block {
                    cp,
                    t0: e.t,
                    t1: e.t,
                });
            }
            if let Some(bl) = b.ix.blocks.last_mut() {
                bl.t1 = e.t;
            }
            b.event(row, line, e);
            b.ix.rows = row + 1;
            cp = r.checkpoint();
        }
        // Skipped records after the last event still count as rows.
        b.ix.rows = b.ix.rows.max(cp.events);
        b.ix.truncated_at = r.truncated_at();
        b.ix.bytes = r.offset();
        b.ix.strings = r.strings().to_vec();
        Ok(b.finish())
    }

    /// The block holding row `row`.
    pub fn block_of_row(&self, row: u64) -> usize {
        self.blocks
            .partition_point(|b| b.cp.events <= row)
            .saturating_sub(1)
    }

    /// The first row of the first block that may hold an event at time >= `t` (the exact row
    /// is within [`BLOCK`] rows after it: decode the block to know).
    pub fn approx_row_at_time(&self, t: u64) -> u64 {
        let k = self.blocks.partition_point(|b| b.t1 < t);
        self.blocks.get(k).map_or(self.rows, |b| b.cp.events)
    }

    /// About how many rows lie in `[t0, t1)` (counted in whole blocks).
    pub fn rows_between(&self, t0: u64, t1: u64) -> u64 {
        let a = self.blocks.partition_point(|b| b.t1 < t0);
        let z = self.blocks.partition_point(|b| b.t0 < t1);
        (z.saturating_sub(a) as u64).saturating_mul(BLOCK)
    }

    /// Decodes rows `rows` (clamped to the trace) from the file: events with their lines.
    pub fn read(&self, rows: Range<u64>) -> Result<Vec<(u64, Event)>, IndexError> {
        let end = rows.end.min(self.rows);
        if rows.start >= end || self.blocks.is_empty() {
            return Ok(Vec::new());
        }
        let k = self.block_of_row(rows.start);
        let cp = self.blocks[k].cp;
        let mut f = open_file(&self.path)?;
        f.seek(SeekFrom::Start(cp.offset))
            .map_err(|source| IndexError::Seek {
                file: self.name.clone(),
                offset: cp.offset,
                source,
            })?;
        let input = BufReader::with_capacity(1 << 16, f);
        let mut r = NativeReader::resume(&self.name, input, &self.header, &self.strings, &cp)?;
        let mut out = Vec::with_capacity((end - rows.start) as usize);
        while let Some(x) = r.next_event() {
            let (line, e) = x?;
            let row = line - 2;
            if row >= end {
                break;
            }
            if row >= rows.start {
                out.push((line, e));
            } else {
                r.recycle(e);
            }
            if row + 1 >= end {
                break;
            }
        }
        let last = out.last().map_or(cp.events, |(l, _)| l - 1);
        if last < end && r.checkpoint().events < end && self.truncated_at.is_none() {
            return Err(IndexError::Changed {
                file: self.name.clone(),
                offset: cp.offset,
                got: last.saturating_sub(rows.start),
                want: end - rows.start,
            });
        }
        Ok(out)
    }

    /// The answer to an [`Effect::Load`](crate::Effect::Load): the rows as a
    /// [`Msg::Window`](crate::Msg::Window), or a note saying why they could not be read.
    pub fn load(&self, rows: Range<u64>) -> crate::Msg {
        match self.read(rows.clone()) {
            Ok(events) => crate::Msg::Window { rows, events },
            Err(e) => crate::Msg::Note(format!("error: {e}")),
        }
    }

    /// The index of device `name`.
    pub fn device_index(&self, name: &str) -> Option<usize> {
        self.devices.iter().position(|d| d.facts.name == name)
    }
}

/// Answers the view's [`Effect::Load`](crate::Effect::Load)s from its index (the runner's
/// I/O: `update` stays pure), until the window holds what the screen needs; other effects
/// stay queued for the caller.
pub fn serve_loads(app: &mut crate::App) {
    // A load can ask for one more (the cursor moved to the exact row of a time): a few rounds.
    for _ in 0..4 {
        let (loads, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut app.effects)
            .into_iter()
            .partition(|e| matches!(e, crate::Effect::Load(_)));
        app.effects = rest;
        if loads.is_empty() {
            return;
        }
        for e in loads {
            if let (crate::Effect::Load(rows), Some(ix)) = (e, app.index.clone()) {
                crate::update(app, ix.load(rows));
            }
        }
    }
}

/// The index a reader's string id was remembered as (`table[id]` holds index + 1, 0: none).
fn by_string_id(table: &[u32], n: Name<'_>) -> Option<usize> {
    let i = *table.get(n.id? as usize)?;
    (i != 0).then(|| i as usize - 1)
}

/// Remembers that the reader's string id of `n` (if it has one) names index `i`.
fn remember_string_id(table: &mut Vec<u32>, n: Name<'_>, i: usize) {
    if let Some(id) = n.id {
        let id = id as usize;
        if table.len() <= id {
            table.resize(id + 1, 0);
        }
        table[id] = i as u32 + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use migscope_core::trace::{DmaSource, IrqKind, NativeWriter};

    fn header() -> Header {
        let mut h = Header::default();
        for s in ["transitions", "irq", "witness"] {
            h.sources.insert(s.to_owned(), "ok".to_owned());
        }
        h
    }

    fn ev(t: u64, kind: EventKind) -> Event {
        Event {
            t,
            pid: Some(1),
            kind,
        }
    }

    /// A trace of two devices in one context with irregular traffic and migrations, long
    /// enough for many blocks and bucket doublings.
    fn trace(n: u64) -> Vec<Event> {
        let devs = ["0000:00:01.0", "0000:00:02.0"];
        let mut out = Vec::new();
        let mut t = 5_000u64;
        for d in devs {
            out.push(ev(
                t,
                EventKind::Device {
                    dev: d.into(),
                    flags: MigFlags(MigFlags::STOP_COPY | MigFlags::P2P),
                    ctx: "vm".into(),
                    state: MigState::Running,
                    driver: None,
                    sources: BTreeMap::new(),
                },
            ));
        }
        let mut k = 0u64;
        while (out.len() as u64) < n {
            k += 1;
            // Irregular gaps: bursts and pauses.
            t += if k % 97 < 3 {
                3_000_000
            } else {
                700 + k % 13 * 100
            };
            let d = devs[k.is_multiple_of(3) as usize].to_owned();
            let kind = match k % 11 {
                0..=3 => EventKind::Irq {
                    dev: d,
                    kind: IrqKind::Msix,
                    vector: 1,
                },
                4..=6 => EventKind::Dma {
                    dev: d,
                    src: DmaSource::Witness,
                    iova: k,
                    len: 8,
                    write: true,
                    window: None,
                    p2p: None,
                },
                7 => EventKind::Map {
                    ctx: "vm".into(),
                    iova: k,
                    len: 4096,
                },
                8 => EventKind::Data {
                    dev: d,
                    dir: migscope_core::trace::DataDir::Save,
                    bytes: 9,
                    file: None,
                },
                9 if k.is_multiple_of(5) => EventKind::Mark {
                    label: format!("m{k}"),
                },
                _ => EventKind::Irq {
                    dev: d,
                    kind: IrqKind::Msi,
                    vector: 0,
                },
            };
            out.push(ev(t, kind));
            if k.is_multiple_of(500) {
                // A round trip through RUNNING_P2P for both devices.
                for (from, to) in [
                    (MigState::Running, MigState::RunningP2p),
                    (MigState::RunningP2p, MigState::Running),
                ] {
                    for d in devs {
                        t += 1_000;
                        out.push(ev(t, EventKind::Set { dev: d.into(), to }));
                        t += 1_000;
                        out.push(ev(
                            t,
                            EventKind::Step {
                                dev: d.into(),
                                from,
                                to,
                            },
                        ));
                        t += 1_000;
                        out.push(ev(
                            t,
                            EventKind::SetDone {
                                dev: d.into(),
                                to,
                                ret: 0,
                                data_fd: None,
                            },
                        ));
                    }
                }
            }
        }
        t += 1;
        out.push(ev(t, EventKind::End));
        out
    }

    fn write(dir: &Path, name: &str, evs: &[Event]) -> PathBuf {
        let p = dir.join(name);
        let mut w = NativeWriter::create(&p, &header()).expect("create");
        for e in evs {
            w.write(e).expect("write");
        }
        w.finish().expect("finish");
        p
    }

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("migscope-index-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).expect("scratch dir");
        d
    }

    /// Level-0 counts per device and kind, and per context for maps, equal what a plain
    /// loop over the events counts with the index's own final bucket width; every level
    /// above sums its pairs; blocks and rows decode back to the same events.
    #[test]
    fn summaries_equal_counts_from_the_events() {
        let dir = scratch("sum");
        let evs = trace(30_000);
        let p = write(&dir, "t.mgt", &evs);
        let ix = TraceIndex::build(&p, |_| true).expect("index");
        assert_eq!(ix.rows, evs.len() as u64);
        assert!(ix.blocks.len() > 5, "{} blocks", ix.blocks.len());
        assert!(ix.end_seen);
        let bk = ix.buckets;
        assert!(bk.width > 1_000, "the width doubled: {}", bk.width);
        let nb = bk.of(ix.last_t) + 1;
        assert!(nb <= BUCKETS);
        // The plain loop.
        let mut want: HashMap<(String, &str), Vec<u32>> = HashMap::new();
        for e in &evs {
            let (key, what) = match &e.kind {
                EventKind::Irq { dev, .. } => (dev.clone(), "irq"),
                EventKind::Dma { dev, .. } => (dev.clone(), "dma"),
                EventKind::Data { dev, .. } => (dev.clone(), "data"),
                EventKind::Set { dev, .. }
                | EventKind::Step { dev, .. }
                | EventKind::SetDone { dev, .. } => (dev.clone(), "fsm"),
                EventKind::Map { ctx, .. } => (ctx.clone(), "map"),
                _ => continue,
            };
            let v = want.entry((key, what)).or_insert_with(|| vec![0; nb]);
            v[((e.t - evs[0].t) / bk.width) as usize] += 1;
        }
        let pad = |v: &[u32]| {
            let mut v = v.to_vec();
            v.resize(nb, 0);
            v
        };
        for d in &ix.devices {
            for (k, what) in [
                (Tick::Dma, "dma"),
                (Tick::Irq, "irq"),
                (Tick::Data, "data"),
                (Tick::Fsm, "fsm"),
            ] {
                let w = want.get(&(d.facts.name.clone(), what)).expect("counted");
                let c = d.counts(k);
                assert!(
                    &pad(c.level(0)) == w,
                    "{} {what}: level-0 counts differ",
                    d.facts.name
                );
                for l in 1..c.depth() {
                    let below = c.level(l - 1);
                    let sums: Vec<u32> = below.chunks(2).map(|p| p.iter().sum()).collect();
                    assert!(
                        c.level(l) == &sums[..],
                        "{} {what}: level {l} differs",
                        d.facts.name
                    );
                }
                let total: u32 = w.iter().sum();
                assert_eq!(c.level(c.depth() - 1).iter().sum::<u32>(), total);
                // A range on bucket boundaries is exact.
                let (b0, b1) = (3usize, nb / 2);
                let exact: u32 = w[b0..b1].iter().sum();
                let t0 = bk.origin + b0 as u64 * bk.width;
                let t1 = bk.origin + b1 as u64 * bk.width;
                assert_eq!(
                    c.around(&bk, t0, t1),
                    u64::from(exact),
                    "{} {what}",
                    d.facts.name
                );
            }
        }
        let maps = want.get(&("vm".to_owned(), "map")).expect("maps");
        assert_eq!(ix.ctxs.len(), 1, "one context, no `?` for declared devices");
        assert!(&pad(ix.ctxs[0].maps.level(0)) == maps, "map counts differ");
        let marks = evs
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Mark { .. }))
            .count();
        assert_eq!(ix.notes.len(), marks);
        // Every block decodes to the events written there, with their lines.
        for k in [0, 1, ix.blocks.len() / 2, ix.blocks.len() - 1] {
            let r0 = ix.blocks[k].cp.events;
            let got = ix.read(r0..r0 + 10).expect("read");
            let want: Vec<(u64, Event)> = (r0..(r0 + 10).min(ix.rows))
                .map(|r| (r + 2, evs[r as usize].clone()))
                .collect();
            assert_eq!(got, want, "block {k}");
        }
        // A range across blocks.
        let got = ix.read(BLOCK - 5..BLOCK * 2 + 7).expect("read");
        assert_eq!(got.len() as u64, BLOCK + 12);
        assert_eq!(got[0].1, evs[(BLOCK - 5) as usize]);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// The lanes' segments are the core's timeline, the same the event store draws from
    /// every event (rows included); the compressed list decodes to them at any range.
    #[test]
    fn segments_are_the_stores() {
        let dir = scratch("segs");
        let evs = trace(20_000);
        let p = write(&dir, "t.mgt", &evs);
        let ix = TraceIndex::build(&p, |_| true).expect("index");
        let mut store = crate::store::Store::new(&header());
        for (i, e) in evs.iter().enumerate() {
            store.push(i as u64 + 2, e);
        }
        for d in &ix.devices {
            let sd = &store.devices[store.device_index(&d.facts.name).expect("dev")];
            let got = d.segs.all();
            assert!(got.len() > 40, "{} segments", got.len());
            assert_eq!(got, sd.segs, "{}", d.facts.name);
            let (t0, t1) = (got[10].t, got[30].t);
            let r = d.segs.range(t0 + 1, t1);
            assert_eq!(r, got[10..30], "{}", d.facts.name);
            let mut buf = Vec::new();
            let (at, change) = d
                .segs
                .cell(got[12].t - 1, got[12].t, got[12].t + 1, &mut buf);
            assert_eq!(at, Some(got[12]));
            assert!(change);
            let (at, change) = d
                .segs
                .cell(got[12].t + 1, got[12].t + 2, got[12].t + 3, &mut buf);
            assert_eq!(at, Some(got[12]));
            assert!(!change || got[13].t <= got[12].t + 3);
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    /// The cursor a frame sweeps a lane's cells with answers what the per-cell search does,
    /// at every zoom: cells much wider than a chunk, about one chunk, and narrower than a
    /// segment.
    #[test]
    fn the_cells_cursor_answers_as_the_search() {
        let dir = scratch("cursor");
        let evs = trace(40_000);
        let p = write(&dir, "t.mgt", &evs);
        let ix = TraceIndex::build(&p, |_| true).expect("index");
        let (first, last) = (ix.first_t.expect("events"), ix.last_t);
        let mut buf = Vec::new();
        for d in &ix.devices {
            assert!(d.segs.len() > 3 * SEG_CHUNK, "{} segments", d.segs.len());
            let segs = d.segs.all();
            for (v0, span, w) in [
                (0, last + 1000, 200u64),
                (first, (last - first) / 7, 150),
                (segs[100].t - 3, segs[130].t - segs[100].t, 160),
                (segs[200].t - 500, 1_000, 37),
                (last - 5_000, 20_000, 80),
            ] {
                let mut cur = d.segs.cursor();
                for i in 0..w {
                    let t0 = v0 + span * i / w;
                    let t1 = (v0 + span * (i + 1) / w).max(t0 + 1);
                    let mid = t0 + (t1 - t0) / 2;
                    assert_eq!(
                        cur.cell(t0, mid, t1),
                        d.segs.cell(t0, mid, t1, &mut buf),
                        "{} cell {i} of {w} from {v0} over {span}",
                        d.facts.name
                    );
                }
            }
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    /// While a trace is indexed, the partial indexes published are the index of the rows
    /// read so far: whole blocks, each device's segments those of the whole index up to the
    /// last (still open) one, counts no larger; a view fed them and then the whole index
    /// keeps its cursor, and the whole index is the one `build` gives.
    #[test]
    fn partial_indexes_are_prefixes_of_the_whole() {
        use crate::{App, Key, Msg, TraceInfo, update};
        let dir = scratch("partial");
        let evs = trace(30_000);
        let p = write(&dir, "t.mgt", &evs);
        let mut got = Vec::new();
        let mut send = |ix: TraceIndex| got.push(ix);
        let whole = TraceIndex::build_publishing(
            &p,
            |_| true,
            Some(Publish {
                first: std::time::Duration::ZERO,
                send: &mut send,
            }),
        )
        .expect("index");
        assert!(!whole.partial);
        assert_eq!(whole, TraceIndex::build(&p, |_| true).expect("build"));
        assert!(got.len() >= 5, "{} published", got.len());
        for (k, part) in got.iter().enumerate() {
            assert!(part.partial);
            assert_eq!(part.rows, (k as u64 + 1) * BLOCK, "snapshot {k}");
            assert_eq!(part.blocks[..], whole.blocks[..part.blocks.len()]);
            for (d, w) in part.devices.iter().zip(&whole.devices) {
                let (ps, ws) = (d.segs.all(), w.segs.all());
                let n = ps.len() - 1;
                assert_eq!(ps[..n], ws[..n], "{} snapshot {k}", d.facts.name);
                assert_eq!(ps[n].t, ws[n].t, "the open segment's start");
                for t in Tick::ALL {
                    let (a, b) = (d.counts(t), w.counts(t));
                    let sum = |c: &Counts| c.level(c.depth().saturating_sub(1)).iter().sum::<u32>();
                    assert!(sum(a) <= sum(b));
                }
            }
            // Rows of a partial index read back as the file's.
            let r = part.rows - 3..part.rows;
            let rows = part.read(r.clone()).expect("read");
            assert_eq!(rows.len(), 3);
            assert_eq!(rows[0].1, evs[r.start as usize]);
        }
        let info = TraceInfo {
            name: "t.mgt".into(),
            header: header(),
            live: false,
        };
        let mut app = App::new(info, None);
        update(&mut app, Msg::Index(std::sync::Arc::new(got[1].clone())));
        serve_loads(&mut app);
        for _ in 0..3 {
            update(&mut app, Msg::Key(Key::PageDown));
            serve_loads(&mut app);
        }
        let at = app.cursor;
        assert!(at.is_some_and(|c| c > 0), "{at:?}");
        update(&mut app, Msg::Index(std::sync::Arc::new(whole)));
        serve_loads(&mut app);
        assert_eq!(app.cursor, at, "the cursor stays where it was");
        assert!(app.status.starts_with("indexed"), "{}", app.status);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// The index saved beside its trace loads back equal to the one built; a sidecar of
    /// another version, of other contents of the trace, cut short or with a flipped byte is
    /// not trusted (rebuilt and saved again); one that cannot be saved is no error.
    #[test]
    fn the_saved_index_is_used_only_for_the_trace_it_was_saved_for() {
        let dir = scratch("sidecar");
        let evs = trace(20_000);
        let p = write(&dir, "t.mgt", &evs);
        let side = sidecar::path_of(&p);
        assert_eq!(side, dir.join("t.mgt.idx"));
        let (built, how) = TraceIndex::open(&p, |_| true).expect("open");
        assert!(
            matches!(&how, Opened::Built { stale: Stale::Missing, saved: Ok(s) } if *s == side),
            "{how:?}"
        );
        assert_eq!(built, TraceIndex::build(&p, |_| true).expect("build"));
        let (loaded, how) = TraceIndex::open(&p, |_| panic!("not built again")).expect("open");
        assert!(matches!(how, Opened::Loaded(_)), "{how:?}");
        assert_eq!(loaded, built);
        let good = std::fs::read(&side).expect("sidecar");
        let rebuilt = |bytes: &[u8], want: fn(&Stale) -> bool| {
            std::fs::write(&side, bytes).expect("write");
            let (ix, how) = TraceIndex::open(&p, |_| true).expect("open");
            match &how {
                Opened::Built {
                    stale,
                    saved: Ok(_),
                } if want(stale) => {}
                other => panic!("{other:?}"),
            }
            assert_eq!(ix, built);
            assert_eq!(std::fs::read(&side).expect("saved again"), good);
        };
        // Another version.
        let mut b = good.clone();
        b[sidecar::MAGIC.len()] ^= 0xff;
        rebuilt(&b, |s| *s == Stale::Foreign);
        // Not an index at all.
        rebuilt(b"{\"migscope_trace\":1}\n", |s| *s == Stale::Foreign);
        // Cut short, a flipped byte in the middle.
        rebuilt(&good[..good.len() / 2], |s| matches!(s, Stale::Damaged(_)));
        let mut b = good.clone();
        let mid = b.len() / 2;
        b[mid] ^= 1;
        rebuilt(&b, |s| matches!(s, Stale::Damaged(_)));
        // The trace rewritten with other events of the same length: its fingerprint differs.
        let mut bytes = std::fs::read(&p).expect("trace");
        let last = bytes.len() - 20;
        bytes[last] ^= 0x01;
        let q = dir.join("u.mgt");
        std::fs::write(&q, &bytes).expect("write");
        std::fs::copy(&side, sidecar::path_of(&q)).expect("copy");
        match TraceIndex::open(&q, |_| true) {
            Ok((
                _,
                Opened::Built {
                    stale: Stale::OtherTrace,
                    ..
                },
            ))
            | Err(_) => {}
            Ok((_, how)) => panic!("{how:?}"),
        }
        // A trace grown since (a longer recording under the same name).
        let longer = write(&dir, "t.mgt", &trace(21_000));
        let (ix, how) = TraceIndex::open(&longer, |_| true).expect("open");
        assert!(
            matches!(
                how,
                Opened::Built {
                    stale: Stale::OtherTrace,
                    ..
                }
            ),
            "{how:?}"
        );
        assert_eq!(ix, TraceIndex::build(&longer, |_| true).expect("build"));
        // A directory the sidecar cannot be written to: the index still opens.
        std::fs::remove_file(&side).expect("rm");
        std::fs::create_dir(&side).expect("a directory where the sidecar goes");
        let (ix, how) = TraceIndex::open(&longer, |_| true).expect("open");
        assert!(
            matches!(&how, Opened::Built { saved: Err(e), .. } if e.contains("t.mgt.idx")),
            "{how:?}"
        );
        assert!(ix.rows >= 21_000, "{} rows", ix.rows);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A corrupt record, a file cut inside its header and a file that shrank after indexing
    /// are errors naming the file and the byte offset; a file cut inside a record is indexed
    /// up to it and says where.
    #[test]
    fn corrupt_and_truncated_files_are_errors_naming_file_and_offset() {
        let dir = scratch("bad");
        let evs = trace(10_000);
        let p = write(&dir, "t.mgt", &evs);
        let bytes = std::fs::read(&p).expect("read");
        let ix = TraceIndex::build(&p, |_| true).expect("index");
        let at = ix.blocks[1].cp.offset as usize;
        // An unknown tag where block 1 starts.
        let mut bad = bytes.clone();
        bad[at] = 0x07;
        let q = dir.join("corrupt.mgt");
        std::fs::write(&q, &bad).expect("write");
        let e = TraceIndex::build(&q, |_| true)
            .expect_err("corrupt")
            .to_string();
        assert!(e.contains("corrupt.mgt"), "{e}");
        assert!(e.contains(&format!("byte offset {at}")), "{e}");
        // Cut inside the header.
        let q = dir.join("head.mgt");
        std::fs::write(&q, &bytes[..12]).expect("write");
        let e = TraceIndex::build(&q, |_| true)
            .expect_err("cut")
            .to_string();
        assert!(e.contains("head.mgt") && e.contains("offset"), "{e}");
        // Cut inside a record: indexed up to it.
        let q = dir.join("cut.mgt");
        std::fs::write(&q, &bytes[..at + 1]).expect("write");
        let cut = TraceIndex::build(&q, |_| true).expect("cut record");
        assert_eq!(cut.truncated_at, Some(at as u64));
        assert_eq!(cut.rows, BLOCK);
        assert!(!cut.end_seen);
        // The file shrank after it was indexed.
        std::fs::write(&p, &bytes[..at + 1]).expect("shrink");
        let e = ix
            .read(BLOCK * 2..BLOCK * 2 + 5)
            .expect_err("changed")
            .to_string();
        assert!(e.contains("t.mgt") && e.contains("byte offset"), "{e}");
        // Not a native trace.
        let q = dir.join("t.jsonl");
        std::fs::write(&q, b"{\"migscope_trace\":1}\n").expect("write");
        assert!(matches!(
            TraceIndex::build(&q, |_| true),
            Err(IndexError::NotNative { .. })
        ));
        std::fs::remove_dir_all(&dir).ok();
    }

    /// The view on an indexed trace: the window follows the cursor (the event list shows the
    /// file's events at every position), panning puts the cursor on the exact first row at
    /// the centre time once its window arrives, the held rows stay bounded, and the frame is
    /// drawn from the index (header says verifying until a report comes).
    #[test]
    fn the_view_follows_the_index_with_a_bounded_window() {
        use crate::app::{NEAR_ROWS, VIEW_ROWS};
        use crate::{App, Key, Msg, TraceInfo, update};
        use ratatui::{Terminal, backend::TestBackend};
        let dir = scratch("view");
        let evs = trace(40_000);
        let p = write(&dir, "t.mgt", &evs);
        let ix = std::sync::Arc::new(TraceIndex::build(&p, |_| true).expect("index"));
        let info = TraceInfo {
            name: "t.mgt".into(),
            header: header(),
            live: false,
        };
        let mut app = App::new(info, None);
        update(&mut app, Msg::Index(ix.clone()));
        serve_loads(&mut app);
        let mut term = Terminal::new(TestBackend::new(160, 40)).expect("terminal");
        let held_ok = |app: &App| {
            assert!(
                (app.store.len() as u64) <= VIEW_ROWS + NEAR_ROWS + 2 * BLOCK,
                "held {}",
                app.store.len()
            );
        };
        let at_cursor = |app: &App| {
            let g = app.cursor.expect("cursor");
            let (line, e) = app.store.get(g).expect("cursor row held");
            assert_eq!(line, g + 2);
            assert_eq!(e, evs[g as usize], "row {g}");
        };
        at_cursor(&app);
        let screen = |term: &mut Terminal<TestBackend>, app: &App| -> String {
            term.draw(|f| crate::ui::draw(f, app)).expect("draw");
            let b = term.backend().buffer();
            b.content.iter().map(|c| c.symbol()).collect()
        };
        let s = screen(&mut term, &app);
        assert!(s.contains("verifying"), "{s}");
        assert!(s.contains("0000:00:01.0"), "{s}");
        assert!(
            s.contains(" D") || s.contains("D"),
            "DMA ticks drawn from the counts"
        );
        for _ in 0..300 {
            update(&mut app, Msg::Key(Key::PageDown));
            serve_loads(&mut app);
            held_ok(&app);
        }
        assert_eq!(app.cursor, Some(3000));
        at_cursor(&app);
        update(&mut app, Msg::Key(Key::End));
        serve_loads(&mut app);
        assert_eq!(app.cursor, Some(ix.rows - 1));
        at_cursor(&app);
        // Zoom in around the middle, then pan: the cursor is the first row at the centre.
        update(&mut app, Msg::Key(Key::Home));
        serve_loads(&mut app);
        for _ in 0..6 {
            update(&mut app, Msg::Key(Key::Char('+')));
            serve_loads(&mut app);
        }
        for k in 0..40 {
            update(&mut app, Msg::Key(Key::Right));
            serve_loads(&mut app);
            held_ok(&app);
            let centre = app.view_start + app.view_span / 2;
            let want = evs.partition_point(|e| e.t < centre) as u64;
            if want < ix.rows {
                assert_eq!(app.cursor, Some(want), "pan {k}");
                at_cursor(&app);
            }
            screen(&mut term, &app);
        }
        // Filters need every event in memory.
        update(&mut app, Msg::Key(Key::Char('/')));
        for c in "irq".chars() {
            update(&mut app, Msg::Key(Key::Char(c)));
        }
        update(&mut app, Msg::Key(Key::Enter));
        assert!(app.status.contains("indexed trace"), "{}", app.status);
        std::fs::remove_dir_all(&dir).ok();
    }
}
