//! The native binary trace format: compact records for recording at speed, convertible to and
//! from the JSONL interchange format without loss.
//!
//! # Layout (version 3; version 1 files, which lack device `sources`, and version 2 files,
//! which have no extension records, still read)
//!
//! ```text
//! file    = magic "\x89MIGTRC" (7 bytes), version u8 = 3, varint n, header JSON (n bytes),
//!           record*
//! record  = 0x01 varint n, n bytes UTF-8           define the next string id (0, 1, 2, ...)
//!         | tag u8, fields                          one event
//! tag     = kind (low 5 bits: 0x10 + position in the table below) | 0x20 if a pid follows
//!           the timestamp
//! event   = varint dt (t minus the previous event's t; the first is relative to 0),
//!           [varint pid], kind fields
//! ```
//!
//! The 5-bit kind leaves room for two more tags; one of them, 0x1e, is the **extension
//! record**, which carries every kind added since (and any later one) without a new tag:
//!
//! ```text
//! ext     = tag 0x1e (| 0x20), varint dt, [varint pid], varint ext-kind, varint n, payload (n bytes)
//! ```
//!
//! A reader decodes the ext-kinds it knows from the payload (ignoring bytes past the fields it
//! knows, so a kind may grow fields at its end) and skips the others whole, with one warning
//! per ext-kind, as the JSONL reader skips an unknown `ev`; a skipped event still counts in
//! the line numbering and its `dt` still advances the time. Ext-kinds are never reused:
//!
//! | ext-kind | event | payload |
//! |---|---|---|
//! | 1 | precopy_info | id dev, zz ret, then with ret 0: v initial_bytes, v dirty_bytes, v flags |
//! | 2 | data_size | id dev, zz ret, then with ret 0: v bytes |
//! | 10 | data with its file | id dev, u8 dir, v bytes, zz data_fd, v fd_gen, v reset_gen (a `data` event without a file stays a 0x1a record) |
//! | 11 | precopy_info_v2 | id dev, zz ret |
//! | 20 | corrupt_load | id dev, u8 corruption (index in `Corruption::ALL`), v bytes, zz ret |
//! | 21 | regs | id dev, u8 stage (0 saved, 1 restored), v bar, v n, n × (v offset, v value) |
//! | 22 | dirty_report | id dev, v iova, v len, v page_size, zz t - t0, zz t - t1, v dirty_pages |
//! | 30 | irq_bin | id dev, u8 kind, v vector, v n, v t - t1, v t1 - t0 |
//!
//! Kind fields (`id` = varint string id, `zz` = zigzag varint, `v` = varint, `st` = state byte):
//!
//! | kind | fields |
//! |---|---|
//! | device 0x10 | id dev, v flags, id ctx, st state, v driver (0 = none, else id + 1), v n, n × (id source, id value) (version 2) |
//! | set 0x11 | id dev, st to |
//! | step 0x12 | id dev, u8 from << 4 \| to |
//! | set_done 0x13 | id dev, st to, zz ret, v data_fd (0 = none, else zz(fd) + 1) |
//! | get 0x14 | id dev, st state |
//! | reset 0x15 | id dev, zz ret |
//! | dma 0x16 | id dev, u8 bits, v iova, v len, [zz t - t0, zz t - t1 if bit 6] |
//! | irq 0x17 | id dev, u8 kind, v vector |
//! | map 0x18 / unmap 0x19 | id ctx, v iova, v len |
//! | data 0x1a | id dev, u8 dir, v bytes |
//! | lost 0x1b | v n, id source, v dev (0 = none, else id + 1) (version 2) |
//! | mark 0x1c | v n, n bytes UTF-8 label (not interned: labels are free text) |
//! | end 0x1d | |
//! | extension 0x1e | see above (version 3) |
//!
//! dma bits: source index (0..4) in bits 0-2, write bit 3, p2p present bit 4, p2p value bit 5,
//! window present bit 6. Window bounds are wrapping differences from `t`, so every `u64` pair
//! round-trips.
//!
//! # Crash tolerance
//!
//! Records are self-delimiting and a string is always defined before the first record that
//! uses it, so every prefix of a file that ends on a record boundary is a valid trace. A file
//! that ends inside a record (a crash mid-write) is read up to the last complete record; the
//! reader then stops *without an error* and [`NativeReader::truncated_at`] gives the byte
//! offset of the incomplete record. Such a trace has no `end` event, so `check` reports it as
//! truncated (inconclusive). A file cut inside its header, or holding bytes that are not a
//! record (unknown tag, bad state number, undefined string id, invalid UTF-8), is an error that
//! names the byte offset.
//!
//! Event numbers: the reader numbers events like the lines of the equivalent JSONL file (the
//! header is 1, the first event 2, ...), so a finding's `line` is the same in both forms.

use std::{
    fs::File,
    io::{self, BufRead, BufReader, BufWriter, Read, Write},
    path::Path,
};

use super::{
    event::{
        Corruption, DataDir, DataFile, DmaSource, Event, EventKind, EventRef, Header, IrqKind,
        KindRef, Name, RegStage, TRACE_VERSION,
    },
    jsonl::{ReadWarning, TraceError, header_to_json},
    sink::TraceSink,
};
use crate::model::{MigFlags, MigState, PrecopyInfo};

/// The first bytes of a native trace. 0x89 never starts a JSONL file (not ASCII, not a valid
/// UTF-8 lead byte), so one byte tells the formats apart.
pub const MAGIC: &[u8; 7] = b"\x89MIGTRC";
/// Native format version this code writes.
pub const NATIVE_VERSION: u8 = 3;
/// The first version with extension records.
const EXT_VERSION: u8 = 3;
/// The oldest native format version this code reads.
const NATIVE_VERSION_MIN: u8 = 1;

const TAG_DEFSTR: u8 = 0x01;
const TAG_EVENT_BASE: u8 = 0x10;
/// Position of the extension record in the kind table (tag 0x1e).
const KIND_EXT: u8 = 14;
const TAG_PID: u8 = 0x20;
const KIND_MASK: u8 = 0x1f;
/// Longest header or string accepted on reading (a corrupt length must not allocate gigabytes).
const MAX_STR: u64 = 1 << 20;
/// Most distinct interned strings per file.
const MAX_STRINGS: usize = 1 << 20;

const DMA_WRITE: u8 = 1 << 3;
const DMA_P2P_SET: u8 = 1 << 4;
const DMA_P2P: u8 = 1 << 5;
const DMA_WINDOW: u8 = 1 << 6;

fn kind_code(k: &EventKind) -> u8 {
    TAG_EVENT_BASE
        + match k {
            EventKind::Device { .. } => 0,
            EventKind::Set { .. } => 1,
            EventKind::Step { .. } => 2,
            EventKind::SetDone { .. } => 3,
            EventKind::Get { .. } => 4,
            EventKind::Reset { .. } => 5,
            EventKind::Dma { .. } => 6,
            EventKind::Irq { .. } => 7,
            EventKind::Map { .. } => 8,
            EventKind::Unmap { .. } => 9,
            EventKind::Data { file: None, .. } => 10,
            EventKind::Lost { .. } => 11,
            EventKind::Mark { .. } => 12,
            EventKind::End => 13,
            EventKind::PrecopyInfo { .. }
            | EventKind::DataSize { .. }
            | EventKind::Data { file: Some(_), .. }
            | EventKind::PrecopyInfoV2 { .. }
            | EventKind::CorruptLoad { .. }
            | EventKind::Regs { .. }
            | EventKind::DirtyReport { .. }
            | EventKind::IrqBin { .. } => KIND_EXT,
        }
}

/// Extension record kinds (never reused).
mod ext {
    pub const PRECOPY_INFO: u64 = 1;
    pub const DATA_SIZE: u64 = 2;
    /// A `data` event that names its file (issue 14's kinds are 10-19).
    pub const DATA_FILE: u64 = 10;
    pub const PRECOPY_INFO_V2: u64 = 11;
    // 20-29: issue 14 part B (resume validation, restore divergence).
    pub const CORRUPT_LOAD: u64 = 20;
    pub const REGS: u64 = 21;
    // 22-29: issue 14's device DMA logging (dirty_miss).
    pub const DIRTY_REPORT: u64 = 22;
    // 30-39: issue 16 (performance at scale).
    pub const IRQ_BIN: u64 = 30;
}

fn dir_byte(d: DataDir) -> u8 {
    match d {
        DataDir::Save => 0,
        DataDir::Load => 1,
    }
}

fn dir_of(d: u8) -> Result<DataDir, String> {
    match d {
        0 => Ok(DataDir::Save),
        1 => Ok(DataDir::Load),
        _ => Err(format!("direction {d} unknown")),
    }
}

/// A reply's `ret` (0 for a value) as the zigzag varint extension payloads start with.
fn put_ret<T>(out: &mut Vec<u8>, result: &Result<T, i32>) {
    put_varint(out, zigzag(i64::from(*result.as_ref().err().unwrap_or(&0))));
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn state_byte(s: MigState) -> u8 {
    s as u8
}

fn dma_src_index(s: DmaSource) -> u8 {
    match s {
        DmaSource::Witness => 0,
        DmaSource::DirtyLog => 1,
        DmaSource::IommuDirty => 2,
        DmaSource::MdevDma => 3,
        DmaSource::Fault => 4,
    }
}

fn corruption_index(c: Corruption) -> u8 {
    match c {
        Corruption::Truncated => 0,
        Corruption::BitFlip => 1,
        Corruption::Oversized => 2,
        Corruption::Empty => 3,
    }
}

/// The interrupt kind of byte `k` (its index, as [`irq_index`] writes it).
fn irq_kind_of(k: u8) -> Result<IrqKind, Cut> {
    IrqKind::ALL
        .get(usize::from(k))
        .copied()
        .ok_or_else(|| Cut::Bad("kind", format!("interrupt kind {k} unknown")))
}

fn irq_index(k: IrqKind) -> u8 {
    match k {
        IrqKind::Msi => 0,
        IrqKind::Msix => 1,
        IrqKind::Intx => 2,
    }
}

/// Writes a native trace. With [`NativeWriter::create`] the file is `<name>.partial` until
/// [`NativeWriter::finish`] syncs and renames it; [`NativeWriter::flush`] pushes what was
/// written so far to the file, and any flushed prefix reads back (see the module docs).
pub struct NativeWriter<W: Write> {
    sink: TraceSink<W>,
    strings: std::collections::HashMap<String, u64>,
    last_t: u64,
    buf: Vec<u8>,
    events: u64,
}

impl NativeWriter<BufWriter<File>> {
    /// Creates `<path>.partial` and writes the header.
    pub fn create(path: &Path, header: &Header) -> Result<Self, TraceError> {
        NativeWriter::with_sink(TraceSink::create(path)?, header)
    }
}

impl<W: Write> NativeWriter<W> {
    /// Writes the magic and the header to `out`.
    pub fn new(out: W, header: &Header) -> Result<Self, TraceError> {
        NativeWriter::with_sink(TraceSink::new(out), header)
    }

    fn with_sink(sink: TraceSink<W>, header: &Header) -> Result<Self, TraceError> {
        let mut w = NativeWriter {
            sink,
            strings: std::collections::HashMap::new(),
            last_t: 0,
            buf: Vec::with_capacity(256),
            events: 0,
        };
        let json = header_to_json(header);
        let mut head = Vec::with_capacity(json.len() + 16);
        head.extend_from_slice(MAGIC);
        head.push(NATIVE_VERSION);
        put_varint(&mut head, json.len() as u64);
        head.extend_from_slice(json.as_bytes());
        w.emit(&head)?;
        Ok(w)
    }

    /// Writes one whole record (the header, or an event with the strings it defines).
    fn emit(&mut self, bytes: &[u8]) -> Result<(), TraceError> {
        self.sink.write_all(bytes)?;
        self.sink.end_record()
    }

    /// The id of `s`, defining it (into `self.buf`, ahead of the event) on first use.
    fn intern(&mut self, s: &str, defs: &mut Vec<u8>) -> u64 {
        if let Some(id) = self.strings.get(s) {
            return *id;
        }
        let id = self.strings.len() as u64;
        self.strings.insert(s.to_owned(), id);
        defs.push(TAG_DEFSTR);
        put_varint(defs, s.len() as u64);
        defs.extend_from_slice(s.as_bytes());
        id
    }

    /// Appends one event. Events must come in non-decreasing `t` (as JSONL requires).
    pub fn write(&mut self, ev: &Event) -> Result<(), TraceError> {
        if ev.t < self.last_t {
            return Err(TraceError::Write {
                file: self.sink.name().to_owned(),
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "event {} has t {} earlier than the previous event's {}: events must be ordered by t",
                        self.events + 1,
                        ev.t,
                        self.last_t
                    ),
                ),
            });
        }
        let mut defs = Vec::new();
        let mut b = std::mem::take(&mut self.buf);
        b.clear();
        let mut tag = kind_code(&ev.kind);
        if ev.pid.is_some() {
            tag |= TAG_PID;
        }
        b.push(tag);
        put_varint(&mut b, ev.t - self.last_t);
        if let Some(pid) = ev.pid {
            put_varint(&mut b, u64::from(pid));
        }
        match &ev.kind {
            EventKind::Device {
                dev,
                flags,
                ctx,
                state,
                driver,
                sources,
            } => {
                let d = self.intern(dev, &mut defs);
                put_varint(&mut b, d);
                put_varint(&mut b, u64::from(flags.0));
                let c = self.intern(ctx, &mut defs);
                put_varint(&mut b, c);
                b.push(state_byte(*state));
                match driver {
                    None => b.push(0),
                    Some(dr) => {
                        let id = self.intern(dr, &mut defs);
                        put_varint(&mut b, id + 1);
                    }
                }
                put_varint(&mut b, sources.len() as u64);
                for (k, v) in sources {
                    let k = self.intern(k, &mut defs);
                    put_varint(&mut b, k);
                    let v = self.intern(v, &mut defs);
                    put_varint(&mut b, v);
                }
            }
            EventKind::Set { dev, to } => {
                let d = self.intern(dev, &mut defs);
                put_varint(&mut b, d);
                b.push(state_byte(*to));
            }
            EventKind::Step { dev, from, to } => {
                let d = self.intern(dev, &mut defs);
                put_varint(&mut b, d);
                b.push((state_byte(*from) << 4) | state_byte(*to));
            }
            EventKind::SetDone {
                dev,
                to,
                ret,
                data_fd,
            } => {
                let d = self.intern(dev, &mut defs);
                put_varint(&mut b, d);
                b.push(state_byte(*to));
                put_varint(&mut b, zigzag(i64::from(*ret)));
                match data_fd {
                    None => b.push(0),
                    Some(fd) => put_varint(&mut b, zigzag(i64::from(*fd)) + 1),
                }
            }
            EventKind::Get { dev, state } => {
                let d = self.intern(dev, &mut defs);
                put_varint(&mut b, d);
                b.push(state_byte(*state));
            }
            EventKind::Reset { dev, ret } => {
                let d = self.intern(dev, &mut defs);
                put_varint(&mut b, d);
                put_varint(&mut b, zigzag(i64::from(*ret)));
            }
            EventKind::Dma {
                dev,
                src,
                iova,
                len,
                write,
                window,
                p2p,
            } => {
                let d = self.intern(dev, &mut defs);
                put_varint(&mut b, d);
                let mut bits = dma_src_index(*src);
                if *write {
                    bits |= DMA_WRITE;
                }
                if let Some(p) = p2p {
                    bits |= DMA_P2P_SET;
                    if *p {
                        bits |= DMA_P2P;
                    }
                }
                if window.is_some() {
                    bits |= DMA_WINDOW;
                }
                b.push(bits);
                put_varint(&mut b, *iova);
                put_varint(&mut b, *len);
                if let Some((t0, t1)) = window {
                    put_varint(&mut b, zigzag(ev.t.wrapping_sub(*t0) as i64));
                    put_varint(&mut b, zigzag(ev.t.wrapping_sub(*t1) as i64));
                }
            }
            EventKind::Irq { dev, kind, vector } => {
                let d = self.intern(dev, &mut defs);
                put_varint(&mut b, d);
                b.push(irq_index(*kind));
                put_varint(&mut b, u64::from(*vector));
            }
            EventKind::Map { ctx, iova, len } | EventKind::Unmap { ctx, iova, len } => {
                let c = self.intern(ctx, &mut defs);
                put_varint(&mut b, c);
                put_varint(&mut b, *iova);
                put_varint(&mut b, *len);
            }
            EventKind::Data {
                dev,
                dir,
                bytes,
                file: None,
            } => {
                let d = self.intern(dev, &mut defs);
                put_varint(&mut b, d);
                b.push(dir_byte(*dir));
                put_varint(&mut b, *bytes);
            }
            EventKind::Data {
                dev,
                dir,
                bytes,
                file: Some(f),
            } => {
                let mut p = Vec::with_capacity(24);
                let d = self.intern(dev, &mut defs);
                put_varint(&mut p, d);
                p.push(dir_byte(*dir));
                put_varint(&mut p, *bytes);
                put_varint(&mut p, zigzag(i64::from(f.fd)));
                put_varint(&mut p, f.fd_gen);
                put_varint(&mut p, f.reset_gen);
                put_ext(&mut b, ext::DATA_FILE, &p);
            }
            EventKind::PrecopyInfoV2 { dev, ret } => {
                let mut p = Vec::with_capacity(8);
                let d = self.intern(dev, &mut defs);
                put_varint(&mut p, d);
                put_varint(&mut p, zigzag(i64::from(*ret)));
                put_ext(&mut b, ext::PRECOPY_INFO_V2, &p);
            }
            EventKind::Lost { n, source, dev } => {
                put_varint(&mut b, *n);
                let s = self.intern(source, &mut defs);
                put_varint(&mut b, s);
                match dev {
                    None => b.push(0),
                    Some(d) => {
                        let id = self.intern(d, &mut defs);
                        put_varint(&mut b, id + 1);
                    }
                }
            }
            EventKind::Mark { label } => {
                put_varint(&mut b, label.len() as u64);
                b.extend_from_slice(label.as_bytes());
            }
            EventKind::End => {}
            EventKind::PrecopyInfo { dev, result } => {
                let mut p = Vec::with_capacity(24);
                let d = self.intern(dev, &mut defs);
                put_varint(&mut p, d);
                put_ret(&mut p, result);
                if let Ok(i) = result {
                    put_varint(&mut p, i.initial_bytes);
                    put_varint(&mut p, i.dirty_bytes);
                    put_varint(&mut p, u64::from(i.flags));
                }
                put_ext(&mut b, ext::PRECOPY_INFO, &p);
            }
            EventKind::DataSize { dev, result } => {
                let mut p = Vec::with_capacity(16);
                let d = self.intern(dev, &mut defs);
                put_varint(&mut p, d);
                put_ret(&mut p, result);
                if let Ok(bytes) = result {
                    put_varint(&mut p, *bytes);
                }
                put_ext(&mut b, ext::DATA_SIZE, &p);
            }
            EventKind::CorruptLoad {
                dev,
                corruption,
                bytes,
                ret,
            } => {
                let mut p = Vec::with_capacity(16);
                let d = self.intern(dev, &mut defs);
                put_varint(&mut p, d);
                p.push(corruption_index(*corruption));
                put_varint(&mut p, *bytes);
                put_varint(&mut p, zigzag(i64::from(*ret)));
                put_ext(&mut b, ext::CORRUPT_LOAD, &p);
            }
            EventKind::Regs {
                dev,
                stage,
                bar,
                regs,
            } => {
                let mut p = Vec::with_capacity(8 + regs.len() * 6);
                let d = self.intern(dev, &mut defs);
                put_varint(&mut p, d);
                p.push(match stage {
                    RegStage::Saved => 0,
                    RegStage::Restored => 1,
                });
                put_varint(&mut p, u64::from(*bar));
                put_varint(&mut p, regs.len() as u64);
                for (off, v) in regs {
                    put_varint(&mut p, *off);
                    put_varint(&mut p, *v);
                }
                put_ext(&mut b, ext::REGS, &p);
            }
            EventKind::DirtyReport {
                dev,
                iova,
                len,
                page_size,
                window: (t0, t1),
                dirty_pages,
            } => {
                let mut p = Vec::with_capacity(32);
                let d = self.intern(dev, &mut defs);
                put_varint(&mut p, d);
                put_varint(&mut p, *iova);
                put_varint(&mut p, *len);
                put_varint(&mut p, *page_size);
                put_varint(&mut p, zigzag(ev.t.wrapping_sub(*t0) as i64));
                put_varint(&mut p, zigzag(ev.t.wrapping_sub(*t1) as i64));
                put_varint(&mut p, *dirty_pages);
                put_ext(&mut b, ext::DIRTY_REPORT, &p);
            }
            EventKind::IrqBin {
                dev,
                kind,
                vector,
                n,
                window: (t0, t1),
            } => {
                let (Some(to_end), Some(span)) = (ev.t.checked_sub(*t1), t1.checked_sub(*t0))
                else {
                    return Err(TraceError::Write {
                        file: self.sink.name().to_owned(),
                        source: io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!(
                                "irq_bin at t {} has window [{t0}, {t1}]: t0 <= t1 <= t is required",
                                ev.t
                            ),
                        ),
                    });
                };
                let mut p = Vec::with_capacity(16);
                let d = self.intern(dev, &mut defs);
                put_varint(&mut p, d);
                p.push(irq_index(*kind));
                put_varint(&mut p, u64::from(*vector));
                put_varint(&mut p, *n);
                put_varint(&mut p, to_end);
                put_varint(&mut p, span);
                put_ext(&mut b, ext::IRQ_BIN, &p);
            }
        }
        let res = if defs.is_empty() {
            self.emit(&b)
        } else {
            defs.extend_from_slice(&b);
            self.emit(&defs)
        };
        self.buf = b;
        res?;
        self.last_t = ev.t;
        self.events += 1;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), TraceError> {
        self.sink.flush()
    }

    /// Flushes and, for [`NativeWriter::create`], syncs and renames the file into place.
    pub fn finish(self) -> Result<(), TraceError> {
        self.sink.finish()
    }

    /// The underlying writer (for in-memory traces).
    pub fn into_inner(self) -> W {
        self.sink.into_inner()
    }
}

/// An extension record's body: its kind, the payload's length, the payload.
fn put_ext(out: &mut Vec<u8>, kind: u64, payload: &[u8]) {
    put_varint(out, kind);
    put_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

/// Why a record could not be decoded.
enum Cut {
    /// End of input inside the record.
    Eof,
    /// Not a record: (field, message).
    Bad(&'static str, String),
    Io(io::Error),
}

impl From<io::Error> for Cut {
    fn from(e: io::Error) -> Self {
        Cut::Io(e)
    }
}

/// A byte source that counts its offset. It keeps its own buffer so that decoding a byte or a
/// varint is a slice access the compiler can inline, not a call through `dyn BufRead` per byte.
struct Src<R> {
    input: R,
    buf: Box<[u8]>,
    /// `buf[pos..end]` is read but not consumed.
    pos: usize,
    end: usize,
    offset: u64,
}

#[cold]
fn varint_too_long(field: &'static str) -> Cut {
    Cut::Bad(field, "varint longer than 64 bits".to_owned())
}

/// Bytes read from the input at a time.
const SRC_BUF: usize = 1 << 16;

impl<R: Read> Src<R> {
    fn new(input: R) -> Self {
        Src {
            input,
            buf: vec![0; SRC_BUF].into_boxed_slice(),
            pos: 0,
            end: 0,
            offset: 0,
        }
    }

    /// Makes at least one byte available; false at end of input.
    fn fill(&mut self) -> Result<bool, io::Error> {
        if self.pos < self.end {
            return Ok(true);
        }
        loop {
            match self.input.read(&mut self.buf) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.pos = 0;
                    self.end = n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    #[inline]
    fn u8(&mut self) -> Result<u8, Cut> {
        if self.pos == self.end && !self.fill()? {
            return Err(Cut::Eof);
        }
        let b = self.buf[self.pos];
        self.pos += 1;
        self.offset += 1;
        Ok(b)
    }

    /// Whether the input is at its end (without consuming anything).
    fn at_eof(&mut self) -> Result<bool, io::Error> {
        Ok(!self.fill()?)
    }

    #[inline(always)]
    fn varint(&mut self, field: &'static str) -> Result<u64, Cut> {
        // One-byte varints (most small fields) first.
        if self.pos < self.end {
            let b = self.buf[self.pos];
            if b < 0x80 {
                self.pos += 1;
                self.offset += 1;
                return Ok(u64::from(b));
            }
        }
        self.varint_long(field)
    }

    #[inline(always)]
    fn varint_long(&mut self, field: &'static str) -> Result<u64, Cut> {
        // Fast path: the longest varint (10 bytes) is buffered, decode it in place.
        if self.end - self.pos >= 10 {
            let p = self.pos;
            let byte = |k: usize| u64::from(self.buf[p + k]);
            let mut v = byte(0) & 0x7f;
            let mut n = 1;
            while n < 9 {
                let b = byte(n);
                v |= (b & 0x7f) << (7 * n);
                n += 1;
                if b < 0x80 {
                    self.pos = p + n;
                    self.offset += n as u64;
                    return Ok(v);
                }
            }
            // The 10th byte holds bit 63 only; the byte-wise loop below fails after reading
            // it when it holds more or has its continuation bit set.
            let b = byte(9);
            self.pos = p + 10;
            self.offset += 10;
            if b <= 1 {
                return Ok(v | b << 63);
            }
            return Err(varint_too_long(field));
        }
        self.varint_slow(field)
    }

    /// Near the end of the buffer: byte by byte, refilling as needed.
    #[cold]
    #[inline(never)]
    fn varint_slow(&mut self, field: &'static str) -> Result<u64, Cut> {
        varint_from(|| self.u8(), field)
    }

    fn bytes(&mut self, n: u64, field: &'static str) -> Result<Vec<u8>, Cut> {
        if n > MAX_STR {
            return Err(Cut::Bad(
                field,
                format!("length {n} exceeds the {MAX_STR}-byte limit"),
            ));
        }
        let n = n as usize;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            if !self.fill()? {
                return Err(Cut::Eof);
            }
            let take = (n - out.len()).min(self.end - self.pos);
            out.extend_from_slice(&self.buf[self.pos..self.pos + take]);
            self.pos += take;
            self.offset += take as u64;
        }
        Ok(out)
    }

    fn string(&mut self, field: &'static str) -> Result<String, Cut> {
        let n = self.varint(field)?;
        let b = self.bytes(n, field)?;
        String::from_utf8(b).map_err(|_| Cut::Bad(field, "not valid UTF-8".to_owned()))
    }
}

/// Streams events out of a native trace.
pub struct NativeReader<R> {
    name: String,
    src: Src<R>,
    header: Header,
    /// The file's native format version.
    version: u8,
    strings: Vec<String>,
    last_t: u64,
    /// Events returned so far.
    events: u64,
    truncated_at: Option<u64>,
    done: bool,
    /// String buffers handed back with [`NativeReader::recycle`].
    spare: Vec<String>,
    /// Extension kinds this reader does not know, warned about once each.
    warned_ext: Vec<u64>,
    warnings: Vec<ReadWarning>,
    /// The event [`NativeReader::current`] lends: one with a borrowed form (names by id),
    /// or `None` for `owned`, the last event of a kind without one.
    cur: Option<(u64, Option<u32>, KindRef<'static>)>,
    /// Boxed: an `Event` is large, and most events are not lent from here.
    owned: Box<Event>,
}

/// What one record was.
enum Rec {
    /// A string definition.
    Str,
    Event(Got),
    /// An extension record of a kind this reader does not know, skipped.
    Skipped,
}

/// An event record read.
enum Got {
    /// An event of a kind with a borrowed form, its names by id only (their text is empty
    /// until [`resolve`] looks the ids up).
    Ref(u64, Option<u32>, KindRef<'static>),
    Event(Event),
}

/// A cursor over an extension record's payload (fields past the end read as a cut record).
struct Payload<'a> {
    b: &'a [u8],
    i: usize,
}

impl Payload<'_> {
    fn byte(&mut self, field: &'static str) -> Result<u8, Cut> {
        let b = *self.b.get(self.i).ok_or_else(|| {
            Cut::Bad(field, "extension payload ends inside this field".to_owned())
        })?;
        self.i += 1;
        Ok(b)
    }

    fn varint(&mut self, field: &'static str) -> Result<u64, Cut> {
        varint_from(
            || {
                let b = *self.b.get(self.i).ok_or_else(|| {
                    Cut::Bad(field, "extension payload ends inside this field".to_owned())
                })?;
                self.i += 1;
                Ok(b)
            },
            field,
        )
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, Cut> {
        let b = *self.b.get(self.i).ok_or_else(|| {
            Cut::Bad(field, "extension payload ends inside this field".to_owned())
        })?;
        self.i += 1;
        Ok(b)
    }
}

/// A varint of at most 64 bits, decoded byte by byte from `next`.
fn varint_from(mut next: impl FnMut() -> Result<u8, Cut>, field: &'static str) -> Result<u64, Cut> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = next()?;
        let part = u64::from(b & 0x7f);
        if shift == 63 && part > 1 {
            break;
        }
        v |= part << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(varint_too_long(field))
}

impl NativeReader<Box<dyn BufRead>> {
    /// Opens `path` and reads its header.
    pub fn open(path: &Path) -> Result<Self, TraceError> {
        let name = path.display().to_string();
        let f = File::open(path).map_err(|source| TraceError::Open {
            file: name.clone(),
            source,
        })?;
        NativeReader::new(&name, Box::new(BufReader::with_capacity(1 << 16, f)))
    }
}

impl<R: BufRead> NativeReader<R> {
    /// Reads and validates the magic and the header; `name` is used in error messages.
    pub fn new(name: &str, input: R) -> Result<Self, TraceError> {
        let mut r = Self::at(
            name,
            Src::new(input),
            Header::default(),
            NATIVE_VERSION,
            Vec::new(),
        );
        let header = r.read_header().map_err(|c| match c {
            Cut::Eof => r.invalid(
                1,
                "header",
                format!(
                    "file ends inside the header at byte offset {}: not a complete native trace",
                    r.src.offset
                ),
            ),
            Cut::Bad("magic", _) => TraceError::NotATrace {
                file: r.name.clone(),
                why: format!(
                    "it starts with the byte 0x{:02x} but not with the native magic \\x{:02x}{}",
                    MAGIC[0],
                    MAGIC[0],
                    String::from_utf8_lossy(&MAGIC[1..])
                ),
            },
            Cut::Bad(field, msg) => r.invalid(1, field, msg),
            Cut::Io(source) => TraceError::Read {
                file: r.name.clone(),
                line: 1,
                source,
            },
        })?;
        r.header = header;
        Ok(r)
    }

    fn read_header(&mut self) -> Result<Header, Cut> {
        let mut magic = [0u8; 7];
        for m in &mut magic {
            *m = self.src.u8()?;
        }
        if &magic != MAGIC {
            return Err(Cut::Bad(
                "magic",
                "not a migscope native trace (bad magic bytes at offset 0)".to_owned(),
            ));
        }
        let version = self.src.u8()?;
        if !(NATIVE_VERSION_MIN..=NATIVE_VERSION).contains(&version) {
            return Err(Cut::Bad(
                "version",
                format!(
                    "unsupported native format version {version} (this migscope reads {NATIVE_VERSION_MIN} to {NATIVE_VERSION})"
                ),
            ));
        }
        self.version = version;
        let json = self.src.string("header")?;
        // The header is the JSONL header line: parse it with the JSONL reader itself so both
        // formats accept exactly the same headers.
        let reader = super::jsonl::JsonlReader::new(&self.name, json.as_bytes())
            .map_err(|e| Cut::Bad("header", format!("invalid header JSON: {e}")))?;
        let h = reader.header().clone();
        if h.version != TRACE_VERSION {
            return Err(Cut::Bad("header", "unsupported trace version".to_owned()));
        }
        Ok(h)
    }

    fn invalid(&self, line: u64, field: &str, msg: String) -> TraceError {
        TraceError::Invalid {
            file: self.name.clone(),
            line,
            field: field.to_owned(),
            msg,
        }
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The file name used in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The byte offset just past the last record read (header included): after
    /// [`NativeReader::next_event`] returned an event, where the next record starts.
    pub fn offset(&self) -> u64 {
        self.src.offset
    }

    /// Non-fatal problems seen so far (extension records of kinds this reader does not know,
    /// reported once per kind).
    pub fn warnings(&self) -> &[ReadWarning] {
        &self.warnings
    }

    /// The byte offset of the incomplete record the file ends in, if it does (a cut
    /// recording). `None` while reading and when the file ended on a record boundary.
    pub fn truncated_at(&self) -> Option<u64> {
        self.truncated_at
    }

    /// The next event with its number (1-based, the header being 1, as the line of the same
    /// event in the JSONL form); `None` at end of input or after an incomplete last record.
    pub fn next_event(&mut self) -> Option<Result<(u64, Event), TraceError>> {
        Some(self.advance()?.map(|(line, got)| match got {
            Got::Ref(t, pid, kind) => {
                let kind = resolve(kind, &self.strings).to_owned_with(&mut self.spare);
                (line, Event { t, pid, kind })
            }
            Got::Event(ev) => (line, ev),
        }))
    }

    /// Reads the next event without copying it, for [`NativeReader::current`]: its number (as
    /// [`NativeReader::next_event`]'s), `None` at end of input or after an incomplete last
    /// record. What `check` reads.
    pub fn next_line(&mut self) -> Option<Result<u64, TraceError>> {
        let (line, got) = match self.advance()? {
            Ok(x) => x,
            Err(e) => return Some(Err(e)),
        };
        match got {
            Got::Ref(t, pid, kind) => self.cur = Some((t, pid, kind)),
            Got::Event(ev) => {
                *self.owned = ev;
                self.cur = None;
            }
        }
        Some(Ok(line))
    }

    /// The event [`NativeReader::next_line`] read, borrowing the reader: its names are the
    /// string table's, with their ids.
    #[inline]
    pub fn current(&self) -> EventRef<'_> {
        match self.cur {
            Some((t, pid, kind)) => EventRef {
                t,
                pid,
                kind: resolve(kind, &self.strings),
            },
            None => EventRef {
                t: self.owned.t,
                pid: self.owned.pid,
                kind: self.owned.kind.as_ref(),
            },
        }
    }

    /// Reads records up to the next event, with its number.
    #[inline(always)]
    fn advance(&mut self) -> Option<Result<(u64, Got), TraceError>> {
        if self.done {
            return None;
        }
        loop {
            if let Some(got) = self.fast_record() {
                self.events += 1;
                return Some(Ok((self.events + 1, got)));
            }
            let start = self.src.offset;
            match self.src.at_eof() {
                Ok(true) => {
                    self.done = true;
                    return None;
                }
                Ok(false) => {}
                Err(source) => {
                    self.done = true;
                    return Some(Err(TraceError::Read {
                        file: self.name.clone(),
                        line: self.events + 2,
                        source,
                    }));
                }
            }
            match self.record() {
                Ok(Rec::Event(got)) => {
                    self.events += 1;
                    return Some(Ok((self.events + 1, got)));
                }
                Ok(Rec::Skipped) => {
                    self.events += 1;
                    continue;
                }
                Ok(Rec::Str) => continue,
                Err(cut) => {
                    self.done = true;
                    let line = self.events + 2;
                    return match cut {
                        Cut::Eof => {
                            self.truncated_at = Some(start);
                            None
                        }
                        Cut::Bad(field, msg) => Some(Err(self.invalid(
                            line,
                            field,
                            format!("{msg} (record at byte offset {start})"),
                        ))),
                        Cut::Io(source) => Some(Err(TraceError::Read {
                            file: self.name.clone(),
                            line,
                            source,
                        })),
                    };
                }
            }
        }
    }

    /// An optional string: varint 0 for none, else the string id + 1.
    fn opt_str_id(&mut self, field: &'static str) -> Result<Option<String>, Cut> {
        match self.src.varint(field)? {
            0 => Ok(None),
            id => self
                .strings
                .get((id - 1) as usize)
                .cloned()
                .map(Some)
                .ok_or_else(|| undefined(field, id - 1)),
        }
    }

    fn str_id(&mut self, field: &'static str) -> Result<String, Cut> {
        let id = self.src.varint(field)?;
        self.string_of(id, field)
    }

    /// String `id` of the table (in a recycled buffer when there is one).
    fn string_of(&mut self, id: u64, field: &'static str) -> Result<String, Cut> {
        let s = self
            .strings
            .get(id as usize)
            .ok_or_else(|| undefined(field, id))?;
        Ok(match self.spare.pop() {
            Some(mut b) => {
                b.clear();
                b.push_str(s);
                b
            }
            None => s.clone(),
        })
    }

    /// Hands an event read from this reader back once it is no longer needed, so that its
    /// strings' buffers are reused for the next events (a read-and-drop loop such as `check`
    /// then allocates nothing per event). Purely an optimisation: events read are the same.
    pub fn recycle(&mut self, ev: Event) {
        super::jsonl::recycle_strings(ev, &mut self.spare);
    }

    /// An extension record after its dt and pid: the event, or `None` for a kind this reader
    /// does not know (skipped, warned about once per kind).
    fn ext(&mut self, t: u64) -> Result<Option<EventKind>, Cut> {
        let kind = self.src.varint("ext")?;
        let n = self.src.varint("ext")?;
        let bytes = self.src.bytes(n, "ext")?;
        let mut p = Payload { b: &bytes, i: 0 };
        Ok(Some(match kind {
            ext::PRECOPY_INFO => {
                let dev = self.string_of(p.varint("dev")?, "dev")?;
                let result = match errno(unzigzag(p.varint("ret")?), "ret")? {
                    0 => Ok(PrecopyInfo {
                        initial_bytes: p.varint("initial_bytes")?,
                        dirty_bytes: p.varint("dirty_bytes")?,
                        flags: {
                            let f = p.varint("flags")?;
                            u32::try_from(f)
                                .map_err(|_| Cut::Bad("flags", format!("{f} exceeds 32 bits")))?
                        },
                    }),
                    e => Err(e),
                };
                EventKind::PrecopyInfo { dev, result }
            }
            ext::DATA_SIZE => {
                let dev = self.string_of(p.varint("dev")?, "dev")?;
                let result = match errno(unzigzag(p.varint("ret")?), "ret")? {
                    0 => Ok(p.varint("bytes")?),
                    e => Err(e),
                };
                EventKind::DataSize { dev, result }
            }
            ext::DATA_FILE => {
                let dev = self.string_of(p.varint("dev")?, "dev")?;
                let dir = dir_of(p.byte("dir")?).map_err(|m| Cut::Bad("dir", m))?;
                let bytes = p.varint("bytes")?;
                let fd = unzigzag(p.varint("data_fd")?);
                let fd = i32::try_from(fd)
                    .ok()
                    .filter(|fd| *fd >= 0)
                    .ok_or_else(|| Cut::Bad("data_fd", format!("{fd} is not a file descriptor")))?;
                let file = DataFile {
                    fd,
                    fd_gen: p.varint("fd_gen")?,
                    reset_gen: p.varint("reset_gen")?,
                };
                EventKind::Data {
                    dev,
                    dir,
                    bytes,
                    file: Some(file),
                }
            }
            ext::PRECOPY_INFO_V2 => EventKind::PrecopyInfoV2 {
                dev: self.string_of(p.varint("dev")?, "dev")?,
                ret: errno(unzigzag(p.varint("ret")?), "ret")?,
            },
            ext::CORRUPT_LOAD => {
                let dev = self.string_of(p.varint("dev")?, "dev")?;
                let c = p.u8("corruption")?;
                let corruption = Corruption::ALL
                    .get(usize::from(c))
                    .copied()
                    .ok_or_else(|| Cut::Bad("corruption", format!("corruption {c} unknown")))?;
                let bytes = p.varint("bytes")?;
                let ret = errno(unzigzag(p.varint("ret")?), "ret")?;
                EventKind::CorruptLoad {
                    dev,
                    corruption,
                    bytes,
                    ret,
                }
            }
            ext::REGS => {
                let dev = self.string_of(p.varint("dev")?, "dev")?;
                let stage = match p.u8("stage")? {
                    0 => RegStage::Saved,
                    1 => RegStage::Restored,
                    v => return Err(Cut::Bad("stage", format!("stage {v} unknown"))),
                };
                let bar = p.varint("bar")?;
                let bar = u32::try_from(bar)
                    .map_err(|_| Cut::Bad("bar", format!("{bar} exceeds 32 bits")))?;
                let n = p.varint("registers")?;
                let mut regs = std::collections::BTreeMap::new();
                for _ in 0..n {
                    let off = p.varint("registers")?;
                    let v = p.varint("registers")?;
                    if regs.insert(off, v).is_some() {
                        return Err(Cut::Bad(
                            "registers",
                            format!("offset {off:#x} is given twice"),
                        ));
                    }
                }
                EventKind::Regs {
                    dev,
                    stage,
                    bar,
                    regs,
                }
            }
            ext::DIRTY_REPORT => {
                let dev = self.string_of(p.varint("dev")?, "dev")?;
                let iova = p.varint("iova")?;
                let len = p.varint("len")?;
                let page_size = p.varint("page_size")?;
                if !page_size.is_power_of_two() {
                    return Err(Cut::Bad(
                        "page_size",
                        format!("{page_size} is not a power of two"),
                    ));
                }
                let a = unzigzag(p.varint("window")?) as u64;
                let b = unzigzag(p.varint("window")?) as u64;
                let window = (t.wrapping_sub(a), t.wrapping_sub(b));
                if window.0 > window.1 {
                    return Err(Cut::Bad(
                        "window",
                        format!(
                            "[{}, {}] is backwards: t0 must not exceed t1",
                            window.0, window.1
                        ),
                    ));
                }
                EventKind::DirtyReport {
                    dev,
                    iova,
                    len,
                    page_size,
                    window,
                    dirty_pages: p.varint("dirty_pages")?,
                }
            }
            ext::IRQ_BIN => {
                let dev = self.string_of(p.varint("dev")?, "dev")?;
                let k = p.u8("kind")?;
                let kind = irq_kind_of(k)?;
                let vector = p.varint("vector")?;
                let vector = u32::try_from(vector)
                    .map_err(|_| Cut::Bad("vector", format!("{vector} exceeds 32 bits")))?;
                let n = p.varint("n")?;
                let to_end = p.varint("window")?;
                let span = p.varint("window")?;
                let window = t
                    .checked_sub(to_end)
                    .and_then(|t1| Some((t1.checked_sub(span)?, t1)))
                    .ok_or_else(|| {
                        Cut::Bad(
                            "window",
                            format!("ends {to_end} ns and spans {span} ns before t {t}: before 0"),
                        )
                    })?;
                if n == 0 || (n == 1 && span != 0) {
                    return Err(Cut::Bad(
                        "n",
                        format!(
                            "{n} interrupts cannot span {span} ns (the first is at t0, the last at t1)"
                        ),
                    ));
                }
                EventKind::IrqBin {
                    dev,
                    kind,
                    vector,
                    n,
                    window,
                }
            }
            other => {
                if !self.warned_ext.contains(&other) {
                    self.warned_ext.push(other);
                    self.warnings.push(ReadWarning {
                        line: self.events + 2,
                        msg: format!(
                            "unknown extension record kind {other} skipped (written by a newer \
                             migscope?; first seen here)"
                        ),
                    });
                }
                return Ok(None);
            }
        }))
    }

    /// One record: an event, a string definition, or a skipped extension record.
    fn record(&mut self) -> Result<Rec, Cut> {
        let tag = self.src.u8()?;
        if tag == TAG_DEFSTR {
            let s = self.src.string("string")?;
            if self.strings.len() >= MAX_STRINGS {
                return Err(Cut::Bad(
                    "string",
                    format!("more than {MAX_STRINGS} distinct strings"),
                ));
            }
            self.strings.push(s);
            return Ok(Rec::Str);
        }
        let code = tag & KIND_MASK;
        let last = if self.version >= EXT_VERSION {
            KIND_EXT
        } else {
            13
        };
        if tag & !(KIND_MASK | TAG_PID) != 0
            || !(TAG_EVENT_BASE..=TAG_EVENT_BASE + last).contains(&code)
        {
            return Err(Cut::Bad(
                "tag",
                format!("unknown record tag {tag:#04x} (written by a newer migscope?)"),
            ));
        }
        let (t, pid) = head(&mut self.src, tag, self.last_t)?;
        if !has_ref_form(code) {
            return self.owned_record(code, t, pid);
        }
        let kind = ref_fields(&mut self.src, code, t, self.strings.len())?;
        self.last_t = t;
        Ok(Rec::Event(Got::Ref(t, pid, kind)))
    }

    /// [`NativeReader::record`] for its common case, without its checks at every byte: a well
    /// formed event record of a kind with a borrowed form, wholly in the buffer, decoded from
    /// the buffered bytes by the same code. `None` for anything else, having consumed nothing:
    /// the careful reader then reads the record (and says what is wrong with it, if anything).
    #[inline(always)]
    fn fast_record(&mut self) -> Option<Got> {
        let mut f = Fast {
            b: self.src.buf.get(self.src.pos..self.src.end)?,
            i: 0,
        };
        let tag = f.u8().ok()?;
        let code = tag & KIND_MASK;
        if tag & !(KIND_MASK | TAG_PID) != 0 || !has_ref_form(code) {
            return None;
        }
        let (t, pid) = head(&mut f, tag, self.last_t).ok()?;
        let kind = ref_fields(&mut f, code, t, self.strings.len()).ok()?;
        let n = f.i;
        self.src.pos += n;
        self.src.offset += n as u64;
        self.last_t = t;
        Some(Got::Ref(t, pid, kind))
    }

    /// The rest of an event record of a kind without a borrowed form, after its dt and pid.
    fn owned_record(&mut self, code: u8, t: u64, pid: Option<u32>) -> Result<Rec, Cut> {
        let kind = match code - TAG_EVENT_BASE {
            0 => {
                let dev = self.str_id("dev")?;
                let flags = self.src.varint("flags")?;
                let flags = u32::try_from(flags)
                    .ok()
                    .filter(|f| {
                        f & !(MigFlags::STOP_COPY | MigFlags::P2P | MigFlags::PRE_COPY) == 0
                    })
                    .ok_or_else(|| Cut::Bad("flags", format!("unknown flag bits {flags:#x}")))?;
                let ctx = self.str_id("ctx")?;
                let state = state(&mut self.src, "state")?;
                let driver = self.opt_str_id("driver")?;
                let mut sources = std::collections::BTreeMap::new();
                if self.version >= 2 {
                    let n = self.src.varint("sources")?;
                    for _ in 0..n {
                        let k = self.str_id("sources")?;
                        let v = self.str_id("sources")?;
                        sources.insert(k, v);
                    }
                }
                EventKind::Device {
                    dev,
                    flags: MigFlags(flags),
                    ctx,
                    state,
                    driver,
                    sources,
                }
            }
            11 => EventKind::Lost {
                n: self.src.varint("n")?,
                source: self.str_id("source")?,
                dev: if self.version >= 2 {
                    self.opt_str_id("dev")?
                } else {
                    None
                },
            },
            12 => EventKind::Mark {
                label: self.src.string("label")?,
            },
            _ => match self.ext(t)? {
                Some(kind) => kind,
                None => {
                    self.last_t = t;
                    return Ok(Rec::Skipped);
                }
            },
        };
        self.last_t = t;
        Ok(Rec::Event(Got::Event(Event { t, pid, kind })))
    }
}

#[cold]
fn undefined(field: &'static str, id: u64) -> Cut {
    Cut::Bad(field, undefined_msg(id))
}

fn undefined_msg(id: u64) -> String {
    format!("string id {id} was never defined")
}

/// Whether records of kind `code` (tag bits 0-4) decode to a [`KindRef`] of their own.
const fn has_ref_form(code: u8) -> bool {
    matches!(code.wrapping_sub(TAG_EVENT_BASE), 1..=10 | 13)
}

/// Where a record's fields are read from: the careful [`Src`] (refilling, naming what is
/// wrong) or [`Fast`] (the buffered bytes only, any problem `()`). One decoder of each
/// record layout serves both.
trait Fields {
    type Err;
    fn u8(&mut self) -> Result<u8, Self::Err>;
    fn varint(&mut self, field: &'static str) -> Result<u64, Self::Err>;
    fn bad(field: &'static str, msg: impl FnOnce() -> String) -> Self::Err;
}

impl<R: Read> Fields for Src<R> {
    type Err = Cut;
    #[inline(always)]
    fn u8(&mut self) -> Result<u8, Cut> {
        Src::u8(self)
    }
    #[inline(always)]
    fn varint(&mut self, field: &'static str) -> Result<u64, Cut> {
        Src::varint(self, field)
    }
    #[cold]
    fn bad(field: &'static str, msg: impl FnOnce() -> String) -> Cut {
        Cut::Bad(field, msg())
    }
}

/// The bytes of the reader's buffer not consumed yet, for [`NativeReader::fast_record`].
struct Fast<'b> {
    b: &'b [u8],
    /// Bytes used so far.
    i: usize,
}

impl Fields for Fast<'_> {
    type Err = ();
    #[inline(always)]
    fn u8(&mut self) -> Result<u8, ()> {
        let b = *self.b.get(self.i).ok_or(())?;
        self.i += 1;
        Ok(b)
    }
    #[inline(always)]
    fn varint(&mut self, _: &'static str) -> Result<u64, ()> {
        let b = self.u8()?;
        if b < 0x80 {
            return Ok(u64::from(b));
        }
        let mut v = u64::from(b & 0x7f);
        for shift in (7..64).step_by(7) {
            let b = self.u8()?;
            let part = u64::from(b & 0x7f);
            if shift == 63 && part > 1 {
                return Err(());
            }
            v |= part << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(())
    }
    #[inline(always)]
    fn bad(_: &'static str, _: impl FnOnce() -> String) {}
}

/// An event record's time (from its dt) and pid, after its tag.
#[inline(always)]
fn head<F: Fields>(f: &mut F, tag: u8, last_t: u64) -> Result<(u64, Option<u32>), F::Err> {
    let dt = f.varint("t")?;
    let t = last_t
        .checked_add(dt)
        .ok_or_else(|| F::bad("t", || "timestamp overflows 64 bits".to_owned()))?;
    let pid = if tag & TAG_PID != 0 {
        let p = f.varint("pid")?;
        Some(u32::try_from(p).map_err(|_| F::bad("pid", || format!("{p} exceeds 32 bits")))?)
    } else {
        None
    };
    Ok((t, pid))
}

/// A name by its string id among the `strings` defined so far (its text is filled in by
/// [`resolve`]).
#[inline(always)]
fn name<F: Fields>(
    f: &mut F,
    field: &'static str,
    strings: usize,
) -> Result<Name<'static>, F::Err> {
    let id = f.varint(field)?;
    if id >= strings as u64 {
        return Err(F::bad(field, || undefined_msg(id)));
    }
    Ok(Name {
        text: "",
        id: Some(id as u32),
    })
}

#[inline(always)]
fn state<F: Fields>(f: &mut F, field: &'static str) -> Result<MigState, F::Err> {
    let b = f.u8()?;
    MigState::from_u32(u32::from(b))
        .ok_or_else(|| F::bad(field, || format!("state number {b} is not a v2 state")))
}

#[inline(always)]
fn errno_of<F: Fields>(f: &mut F, field: &'static str) -> Result<i32, F::Err> {
    errno_value(unzigzag(f.varint(field)?)).map_err(|m| F::bad(field, || m))
}

/// The fields of an event record of kind `code` (one [`has_ref_form`]), after its head.
#[inline(always)]
fn ref_fields<F: Fields>(
    f: &mut F,
    code: u8,
    t: u64,
    strings: usize,
) -> Result<KindRef<'static>, F::Err> {
    Ok(match code - TAG_EVENT_BASE {
        1 => KindRef::Set {
            dev: name(f, "dev", strings)?,
            to: state(f, "to")?,
        },
        2 => {
            let dev = name(f, "dev", strings)?;
            let b = f.u8()?;
            let st = |v: u8, field: &'static str| {
                MigState::from_u32(u32::from(v))
                    .ok_or_else(|| F::bad(field, || format!("state number {v} is not a v2 state")))
            };
            KindRef::Step {
                dev,
                from: st(b >> 4, "from")?,
                to: st(b & 0x0f, "to")?,
            }
        }
        3 => {
            let dev = name(f, "dev", strings)?;
            let to = state(f, "to")?;
            let ret = errno_of(f, "ret")?;
            let data_fd = match f.varint("data_fd")? {
                0 => None,
                v => {
                    let fd = unzigzag(v - 1);
                    Some(i32::try_from(fd).map_err(|_| {
                        F::bad("data_fd", || format!("{fd} is not a file descriptor"))
                    })?)
                }
            };
            KindRef::SetDone {
                dev,
                to,
                ret,
                data_fd,
            }
        }
        4 => KindRef::Get {
            dev: name(f, "dev", strings)?,
            state: state(f, "state")?,
        },
        5 => KindRef::Reset {
            dev: name(f, "dev", strings)?,
            ret: errno_of(f, "ret")?,
        },
        6 => {
            let dev = name(f, "dev", strings)?;
            let bits = f.u8()?;
            let src = DmaSource::ALL
                .get(usize::from(bits & 0x07))
                .copied()
                .filter(|_| bits & 0x80 == 0)
                .ok_or_else(|| F::bad("src", || format!("bad dma bits {bits:#04x}")))?;
            let iova = f.varint("iova")?;
            let len = f.varint("len")?;
            let window = if bits & DMA_WINDOW != 0 {
                let a = unzigzag(f.varint("window")?) as u64;
                let b = unzigzag(f.varint("window")?) as u64;
                Some((t.wrapping_sub(a), t.wrapping_sub(b)))
            } else {
                None
            };
            KindRef::Dma {
                dev,
                src,
                iova,
                len,
                write: bits & DMA_WRITE != 0,
                window,
                p2p: (bits & DMA_P2P_SET != 0).then_some(bits & DMA_P2P != 0),
            }
        }
        7 => {
            let dev = name(f, "dev", strings)?;
            let k = f.u8()?;
            let kind = IrqKind::ALL
                .get(usize::from(k))
                .copied()
                .ok_or_else(|| F::bad("kind", || format!("interrupt kind {k} unknown")))?;
            let vector = f.varint("vector")?;
            KindRef::Irq {
                dev,
                kind,
                vector: u32::try_from(vector)
                    .map_err(|_| F::bad("vector", || format!("{vector} exceeds 32 bits")))?,
            }
        }
        c @ (8 | 9) => {
            let ctx = name(f, "ctx", strings)?;
            let iova = f.varint("iova")?;
            let len = f.varint("len")?;
            if c == 8 {
                KindRef::Map { ctx, iova, len }
            } else {
                KindRef::Unmap { ctx, iova, len }
            }
        }
        10 => {
            let dev = name(f, "dev", strings)?;
            let dir = dir_of(f.u8()?).map_err(|m| F::bad("dir", || m))?;
            KindRef::Data {
                dev,
                dir,
                bytes: f.varint("bytes")?,
                file: None,
            }
        }
        _ => KindRef::End,
    })
}

/// `kind` with the text of each name, by its id, from `strings` (the ids were checked when the
/// record was read).
#[inline(always)]
fn resolve<'s>(kind: KindRef<'static>, strings: &'s [String]) -> KindRef<'s> {
    let n = |n: Name<'static>| Name {
        text: n
            .id
            .and_then(|id| strings.get(id as usize))
            .map_or("", String::as_str),
        id: n.id,
    };
    match kind {
        KindRef::Set { dev, to } => KindRef::Set { dev: n(dev), to },
        KindRef::Step { dev, from, to } => KindRef::Step {
            dev: n(dev),
            from,
            to,
        },
        KindRef::SetDone {
            dev,
            to,
            ret,
            data_fd,
        } => KindRef::SetDone {
            dev: n(dev),
            to,
            ret,
            data_fd,
        },
        KindRef::Get { dev, state } => KindRef::Get { dev: n(dev), state },
        KindRef::Reset { dev, ret } => KindRef::Reset { dev: n(dev), ret },
        KindRef::Dma {
            dev,
            src,
            iova,
            len,
            write,
            window,
            p2p,
        } => KindRef::Dma {
            dev: n(dev),
            src,
            iova,
            len,
            write,
            window,
            p2p,
        },
        KindRef::Irq { dev, kind, vector } => KindRef::Irq {
            dev: n(dev),
            kind,
            vector,
        },
        KindRef::Map { ctx, iova, len } => KindRef::Map {
            ctx: n(ctx),
            iova,
            len,
        },
        KindRef::Unmap { ctx, iova, len } => KindRef::Unmap {
            ctx: n(ctx),
            iova,
            len,
        },
        KindRef::Data {
            dev,
            dir,
            bytes,
            file,
        } => KindRef::Data {
            dev: n(dev),
            dir,
            bytes,
            file,
        },
        KindRef::End => KindRef::End,
        // The reader never builds one with placeholder names.
        KindRef::Owned(k) => KindRef::Owned(k),
    }
}

/// A `ret` field: 0 or a negative errno that fits an `i32`.
fn errno(v: i64, field: &'static str) -> Result<i32, Cut> {
    errno_value(v).map_err(|m| Cut::Bad(field, m))
}

fn errno_value(v: i64) -> Result<i32, String> {
    match i32::try_from(v) {
        Ok(r) if r <= 0 => Ok(r),
        _ => Err(format!("{v} is not 0 or a negative errno")),
    }
}

/// Where a [`NativeReader`] stands between two records: enough to start another reader there
/// ([`NativeReader::resume`]) without reading what comes before. Times are delta-coded and
/// strings are defined as they are first used, so a record can only be decoded knowing the
/// previous event's time and the strings defined so far: a checkpoint keeps the first and how
/// many of the second (the table itself is the reader's, [`NativeReader::strings`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Byte offset of the next record.
    pub offset: u64,
    /// Time of the last event before it (what the next `dt` is relative to).
    pub last_t: u64,
    /// Events (and skipped records) before it: the next event's number is `events + 2`.
    pub events: u64,
    /// Strings defined before it.
    pub strings: usize,
    /// The file's native format version.
    pub version: u8,
}

impl<R: BufRead> NativeReader<R> {
    /// Where the reader stands now (after [`NativeReader::next_event`] returned an event: just
    /// past it).
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            offset: self.src.offset,
            last_t: self.last_t,
            events: self.events,
            strings: self.strings.len(),
            version: self.version,
        }
    }

    /// The strings defined so far, by id.
    pub fn strings(&self) -> &[String] {
        &self.strings
    }

    /// A reader of the file `name` (header `header`) that starts at checkpoint `at`: `input`
    /// must be positioned at `at.offset`, `strings` must hold at least the `at.strings` first
    /// strings of the file (a later table is fine: the rest is dropped and read again). Its
    /// events, numbers, offsets and errors are those a reader from the start would give from
    /// there on.
    pub fn resume(
        name: &str,
        input: R,
        header: &Header,
        strings: &[String],
        at: &Checkpoint,
    ) -> Result<Self, TraceError> {
        let Some(strings) = strings.get(..at.strings) else {
            return Err(TraceError::Invalid {
                file: name.to_owned(),
                line: at.events + 2,
                field: "checkpoint".to_owned(),
                msg: format!(
                    "the checkpoint at byte offset {} needs {} strings, {} given",
                    at.offset,
                    at.strings,
                    strings.len()
                ),
            });
        };
        let mut src = Src::new(input);
        src.offset = at.offset;
        let mut r = Self::at(name, src, header.clone(), at.version, strings.to_vec());
        r.last_t = at.last_t;
        r.events = at.events;
        Ok(r)
    }

    /// A reader about to read a record at `src`'s position, with what is known before it.
    fn at(name: &str, src: Src<R>, header: Header, version: u8, strings: Vec<String>) -> Self {
        NativeReader {
            name: name.to_owned(),
            src,
            header,
            version,
            strings,
            last_t: 0,
            events: 0,
            truncated_at: None,
            done: false,
            spare: Vec::new(),
            warned_ext: Vec::new(),
            warnings: Vec::new(),
            cur: None,
            owned: Box::new(Event {
                t: 0,
                pid: None,
                kind: EventKind::End,
            }),
        }
    }
}

impl<R: BufRead> Iterator for NativeReader<R> {
    type Item = Result<(u64, Event), TraceError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_event()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_kinds() -> Vec<Event> {
        let e = |t, pid, kind| Event { t, pid, kind };
        vec![
            e(
                5,
                Some(42),
                EventKind::Device {
                    dev: "0000:00:03.0".into(),
                    flags: MigFlags(MigFlags::STOP_COPY | MigFlags::P2P),
                    ctx: "vm1".into(),
                    state: MigState::Running,
                    driver: Some("edu_vfio".into()),
                    sources: Default::default(),
                },
            ),
            e(
                5,
                None,
                EventKind::Device {
                    dev: "peer".into(),
                    flags: MigFlags(MigFlags::STOP_COPY),
                    ctx: "vm1".into(),
                    state: MigState::Stop,
                    driver: None,
                    sources: [("witness".to_owned(), "unavailable: no workload".to_owned())].into(),
                },
            ),
            e(
                10,
                Some(u32::MAX),
                EventKind::Set {
                    dev: "peer".into(),
                    to: MigState::PreCopyP2p,
                },
            ),
            e(
                11,
                None,
                EventKind::Step {
                    dev: "peer".into(),
                    from: MigState::PreCopyP2p,
                    to: MigState::Error,
                },
            ),
            e(
                12,
                None,
                EventKind::SetDone {
                    dev: "peer".into(),
                    to: MigState::StopCopy,
                    ret: -22,
                    data_fd: Some(-1),
                },
            ),
            e(
                12,
                None,
                EventKind::SetDone {
                    dev: "peer".into(),
                    to: MigState::StopCopy,
                    ret: 0,
                    data_fd: None,
                },
            ),
            e(
                12,
                None,
                EventKind::SetDone {
                    dev: "peer".into(),
                    to: MigState::Resuming,
                    ret: i32::MIN,
                    data_fd: Some(i32::MAX),
                },
            ),
            e(
                13,
                None,
                EventKind::Get {
                    dev: "peer".into(),
                    state: MigState::PreCopy,
                },
            ),
            e(
                14,
                None,
                EventKind::Reset {
                    dev: "peer".into(),
                    ret: 0,
                },
            ),
            e(
                u64::MAX / 2,
                Some(1),
                EventKind::Dma {
                    dev: "peer".into(),
                    src: DmaSource::Fault,
                    iova: u64::MAX,
                    len: 0,
                    write: false,
                    window: Some((0, u64::MAX)),
                    p2p: Some(false),
                },
            ),
            e(
                u64::MAX / 2,
                None,
                EventKind::Dma {
                    dev: "peer".into(),
                    src: DmaSource::MdevDma,
                    iova: 0x1000,
                    len: 4096,
                    write: true,
                    window: None,
                    p2p: Some(true),
                },
            ),
            e(
                u64::MAX / 2 + 1,
                None,
                EventKind::Dma {
                    dev: "0000:00:03.0".into(),
                    src: DmaSource::Witness,
                    iova: 0x1000,
                    len: 4096,
                    write: true,
                    window: Some((3, 4)),
                    p2p: None,
                },
            ),
            e(
                u64::MAX / 2 + 2,
                None,
                EventKind::Irq {
                    dev: "peer".into(),
                    kind: IrqKind::Intx,
                    vector: u32::MAX,
                },
            ),
            e(
                u64::MAX / 2 + 2,
                None,
                EventKind::Map {
                    ctx: "vm1".into(),
                    iova: 1 << 40,
                    len: 1 << 21,
                },
            ),
            e(
                u64::MAX / 2 + 2,
                None,
                EventKind::Unmap {
                    ctx: "vm2 \"quoted\" ✓".into(),
                    iova: 0,
                    len: 1,
                },
            ),
            e(
                u64::MAX / 2 + 3,
                None,
                EventKind::Data {
                    dev: "peer".into(),
                    dir: DataDir::Load,
                    bytes: 123_456_789,
                    file: None,
                },
            ),
            e(
                u64::MAX / 2 + 3,
                Some(3),
                EventKind::Data {
                    dev: "peer".into(),
                    dir: DataDir::Save,
                    bytes: 80,
                    file: Some(DataFile {
                        fd: i32::MAX,
                        fd_gen: 0,
                        reset_gen: u64::MAX,
                    }),
                },
            ),
            e(
                u64::MAX / 2 + 3,
                None,
                EventKind::Lost {
                    n: 7,
                    source: "ringbuf".into(),
                    dev: Some("0000:00:03.0".into()),
                },
            ),
            e(
                u64::MAX / 2 + 3,
                None,
                EventKind::Mark {
                    label: String::new(),
                },
            ),
            e(
                u64::MAX / 2 + 4,
                Some(7),
                EventKind::PrecopyInfo {
                    dev: "peer".into(),
                    result: Ok(PrecopyInfo {
                        initial_bytes: u64::MAX,
                        dirty_bytes: 0,
                        flags: u32::MAX,
                    }),
                },
            ),
            e(
                u64::MAX / 2 + 4,
                None,
                EventKind::PrecopyInfo {
                    dev: "new-dev".into(),
                    result: Err(i32::MIN),
                },
            ),
            e(
                u64::MAX / 2 + 5,
                None,
                EventKind::DataSize {
                    dev: "peer".into(),
                    result: Ok(80),
                },
            ),
            e(
                u64::MAX / 2 + 5,
                None,
                EventKind::DataSize {
                    dev: "peer".into(),
                    result: Err(-25),
                },
            ),
            e(
                u64::MAX / 2 + 5,
                None,
                EventKind::PrecopyInfoV2 {
                    dev: "peer".into(),
                    ret: 0,
                },
            ),
            e(
                u64::MAX / 2 + 5,
                Some(9),
                EventKind::PrecopyInfoV2 {
                    dev: "v2-dev".into(),
                    ret: -25,
                },
            ),
            e(
                u64::MAX / 2 + 6,
                Some(7),
                EventKind::CorruptLoad {
                    dev: "peer".into(),
                    corruption: Corruption::Oversized,
                    bytes: 65_616,
                    ret: -28,
                },
            ),
            e(
                u64::MAX / 2 + 7,
                None,
                EventKind::Regs {
                    dev: "peer".into(),
                    stage: RegStage::Restored,
                    bar: 0,
                    regs: [(0x04, 0xffff_fffe), (0x80, u64::MAX)]
                        .into_iter()
                        .collect(),
                },
            ),
            e(
                u64::MAX / 2 + 9,
                None,
                EventKind::DirtyReport {
                    dev: "peer".into(),
                    iova: 0x10_0000,
                    len: 0x4000,
                    page_size: 4096,
                    window: (3, u64::MAX / 2 + 9),
                    dirty_pages: 1,
                },
            ),
            e(
                u64::MAX / 2 + 10,
                Some(3),
                EventKind::IrqBin {
                    dev: "peer".into(),
                    kind: IrqKind::Msix,
                    vector: u32::MAX,
                    n: u64::MAX,
                    window: (0, u64::MAX / 2 + 7),
                },
            ),
            e(
                u64::MAX - 1,
                None,
                EventKind::Mark {
                    label: "migscope drive --plan x\n\u{1}".into(),
                },
            ),
            e(u64::MAX, Some(0), EventKind::End),
        ]
    }

    fn header() -> Header {
        let mut h = Header {
            kernel: Some("6.12.0-test".into()),
            hooks: Some("direct".into()),
            ..Header::default()
        };
        h.sources.insert("witness".into(), "ok".into());
        h
    }

    fn encode(evs: &[Event]) -> Vec<u8> {
        let mut w = NativeWriter::new(Vec::new(), &header()).expect("header");
        for e in evs {
            w.write(e).expect("write");
        }
        w.into_inner()
    }

    #[test]
    fn irq_bin_windows_that_cannot_be_are_refused() {
        let bin = |t, window, n| Event {
            t,
            pid: None,
            kind: EventKind::IrqBin {
                dev: "d".into(),
                kind: IrqKind::Msi,
                vector: 0,
                n,
                window,
            },
        };
        // A window ending after its event, or backwards: refused on writing.
        for ev in [bin(10, (5, 11), 2), bin(10, (7, 5), 2)] {
            let mut w = NativeWriter::new(Vec::new(), &header()).expect("header");
            let e = w.write(&ev).expect_err("refused").to_string();
            assert!(e.contains("t0 <= t1 <= t"), "{e}");
        }
        // Written with a window starting before 0 or an impossible count: refused on reading,
        // naming the field.
        let mut head = Vec::new();
        head.extend_from_slice(MAGIC);
        head.push(NATIVE_VERSION);
        let json = header_to_json(&header());
        put_varint(&mut head, json.len() as u64);
        head.extend_from_slice(json.as_bytes());
        head.extend_from_slice(&[TAG_DEFSTR, 1, b'd']);
        for (payload, field) in [
            (vec![0, 0, 0, 2, 0, 20], "window"),
            (vec![0, 0, 0, 0, 0, 0], "n"),
            (vec![0, 0, 0, 1, 0, 3], "n"),
            (vec![0, 9, 0, 2, 0, 3], "kind"),
        ] {
            let mut b = head.clone();
            b.extend_from_slice(&[TAG_EVENT_BASE + KIND_EXT, 10]);
            put_ext(&mut b, ext::IRQ_BIN, &payload);
            let r = NativeReader::new("mem", &b[..]).expect("header");
            let errs: Vec<String> = r.filter_map(Result::err).map(|e| e.to_string()).collect();
            assert_eq!(errs.len(), 1, "{payload:?}");
            assert!(errs[0].contains(field), "{payload:?}: {}", errs[0]);
        }
    }

    #[test]
    fn every_kind_and_field_round_trips() {
        let evs = all_kinds();
        let bytes = encode(&evs);
        let mut r = NativeReader::new("mem", &bytes[..]).expect("header");
        assert_eq!(r.header(), &header());
        let got: Vec<(u64, Event)> = r.by_ref().map(|x| x.expect("event")).collect();
        assert_eq!(r.truncated_at(), None);
        let lines: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(lines, (2..2 + evs.len() as u64).collect::<Vec<_>>());
        let got: Vec<Event> = got.into_iter().map(|g| g.1).collect();
        assert_eq!(got, evs);
    }

    /// A reader resumed at any checkpoint gives what the reader from the start gave from
    /// there on: the same events, numbers and offsets (strings defined after the checkpoint
    /// are read again, not shifted).
    #[test]
    fn a_resumed_reader_continues_where_the_checkpoint_was() {
        let evs = all_kinds();
        let bytes = encode(&evs);
        let mut r = NativeReader::new("mem", &bytes[..]).expect("header");
        let mut cps = vec![r.checkpoint()];
        let mut all = Vec::new();
        while let Some(x) = r.next_event() {
            all.push((x.expect("event"), r.offset()));
            cps.push(r.checkpoint());
        }
        let table = r.strings().to_vec();
        for (k, cp) in cps.iter().enumerate() {
            let at = usize::try_from(cp.offset).expect("offset");
            let mut q =
                NativeReader::resume("mem", &bytes[at..], &header(), &table, cp).expect("resume");
            let mut got = Vec::new();
            while let Some(x) = q.next_event() {
                got.push((x.expect("event"), q.offset()));
            }
            assert_eq!(got, all[k..], "resumed at checkpoint {k}");
            assert_eq!(q.strings(), &table[..], "resumed at checkpoint {k}");
        }
        let short = &table[..cps[cps.len() - 1].strings.saturating_sub(1)];
        let last = cps[cps.len() - 1];
        let e = NativeReader::resume("mem", &bytes[..], &header(), short, &last)
            .err()
            .expect("too few strings");
        assert!(e.to_string().contains("checkpoint"), "{e}");
    }

    #[test]
    fn writer_rejects_time_going_backwards() {
        let mut w = NativeWriter::new(Vec::new(), &header()).expect("header");
        w.write(&Event {
            t: 10,
            pid: None,
            kind: EventKind::End,
        })
        .expect("first");
        let e = w
            .write(&Event {
                t: 9,
                pid: None,
                kind: EventKind::End,
            })
            .expect_err("backwards");
        assert!(e.to_string().contains("earlier"), "{e}");
    }

    #[test]
    fn every_truncation_reads_the_complete_prefix_or_names_the_offset() {
        let evs = all_kinds();
        let bytes = encode(&evs);
        // Offsets at which an event record ends, and at which any record (string definitions
        // included) ends, learnt from the full read.
        let mut ends = Vec::new();
        let mut boundaries = Vec::new();
        {
            let mut r = NativeReader::new("mem", &bytes[..]).expect("header");
            ends.push(r.src.offset);
            boundaries.push(r.src.offset);
            while !r.src.at_eof().expect("read") {
                let rec = r
                    .record()
                    .unwrap_or_else(|_| panic!("record at {}", r.src.offset));
                if matches!(rec, Rec::Event(_)) {
                    ends.push(r.src.offset);
                }
                boundaries.push(r.src.offset);
            }
        }
        let header_len = ends[0];
        for cut in 0..bytes.len() {
            let part = &bytes[..cut];
            match NativeReader::new("mem", part) {
                Err(e) => {
                    assert!(
                        (cut as u64) < header_len,
                        "cut {cut}: header error after the header: {e}"
                    );
                    let msg = e.to_string();
                    assert!(msg.contains("byte offset"), "cut {cut}: {msg}");
                }
                Ok(mut r) => {
                    assert!(cut as u64 >= header_len, "cut {cut}: header accepted early");
                    let mut n = 0;
                    while let Some(x) = r.next_event() {
                        let (_, ev) = x.unwrap_or_else(|e| panic!("cut {cut}: {e}"));
                        assert_eq!(ev, evs[n], "cut {cut}: event {n}");
                        n += 1;
                    }
                    // The events read are exactly those whose record ended before the cut.
                    let complete = ends.iter().filter(|&&e| e <= cut as u64).count() - 1;
                    assert_eq!(n, complete, "cut {cut}");
                    let on_boundary = boundaries.contains(&(cut as u64));
                    match r.truncated_at() {
                        None => assert!(on_boundary, "cut {cut}: truncation not reported"),
                        Some(off) => {
                            assert!(!on_boundary, "cut {cut}: boundary reported as truncated");
                            let start = boundaries.iter().rev().find(|&&b| b < cut as u64).copied();
                            assert_eq!(Some(off), start, "cut {cut}: offset of the partial record");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn garbage_is_an_error_naming_the_offset() {
        let mut bytes = encode(&all_kinds()[..2]);
        let off = bytes.len();
        bytes.push(0x7f);
        let mut r = NativeReader::new("mem", &bytes[..]).expect("header");
        let mut err = None;
        for x in r.by_ref() {
            if let Err(e) = x {
                err = Some(e);
            }
        }
        let e = err.expect("an error").to_string();
        assert!(e.contains(&format!("byte offset {off}")), "{e}");
        assert!(e.contains("tag"), "{e}");
        let bad = NativeReader::new("mem", &b"\x89MIGTRX\x01"[..])
            .err()
            .expect("bad magic");
        assert!(bad.to_string().contains("magic"), "{bad}");
    }

    #[test]
    fn version_1_files_still_read() {
        // A version 1 file written by hand: header, one string definition, one device record
        // (no sources field in version 1), one `end`.
        let json = r#"{"migscope_trace":1,"clock":"monotonic_ns","sources":{}}"#;
        let mut b = MAGIC.to_vec();
        b.push(1);
        put_varint(&mut b, json.len() as u64);
        b.extend_from_slice(json.as_bytes());
        b.extend_from_slice(&[TAG_DEFSTR, 3]);
        b.extend_from_slice(b"dev");
        // device: dt 7, dev id 0, flags 3, ctx id 0, state RUNNING, no driver.
        b.extend_from_slice(&[TAG_EVENT_BASE, 7, 0, 3, 0, MigState::Running as u8, 0]);
        b.extend_from_slice(&[TAG_EVENT_BASE + 13, 1]);
        let evs: Vec<Event> = NativeReader::new("v1", &b[..])
            .expect("header")
            .map(|x| x.expect("event").1)
            .collect();
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0].t, 7);
        match &evs[0].kind {
            EventKind::Device { dev, sources, .. } => {
                assert_eq!(dev, "dev");
                assert!(sources.is_empty());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(evs[1].kind, EventKind::End);
        let mut v4 = b.clone();
        v4[7] = 4;
        let e = NativeReader::new("v4", &v4[..]).err().expect("version 4");
        assert!(e.to_string().contains("version 4"), "{e}");
        // Version 2 had no extension records: tag 0x1e there is not a record.
        let mut v2 = MAGIC.to_vec();
        v2.push(2);
        put_varint(&mut v2, json.len() as u64);
        v2.extend_from_slice(json.as_bytes());
        v2.extend_from_slice(&[TAG_EVENT_BASE + KIND_EXT, 1, 9, 0]);
        let err = NativeReader::new("v2", &v2[..])
            .expect("header")
            .find_map(Result::err)
            .expect("an error");
        assert!(err.to_string().contains("unknown record tag 0x1e"), "{err}");
    }

    /// A file written by hand as a newer migscope would: a string, an extension record of a
    /// kind this reader does not know (99, carrying a pid and a payload that even names a
    /// string id), a known extension record whose payload has a field this reader does not
    /// know appended, then `end`.
    fn future_file() -> Vec<u8> {
        let mut b = encode(&[]);
        b.extend_from_slice(&[TAG_DEFSTR, 1, b'd']);
        b.extend_from_slice(&[
            (TAG_EVENT_BASE + KIND_EXT) | TAG_PID,
            5,
            42,
            99,
            4,
            0,
            1,
            2,
            3,
        ]);
        // data_size: dt 3, ext 2, 4 payload bytes: dev 0, ret 0, bytes 80, then an extra 7.
        b.extend_from_slice(&[TAG_EVENT_BASE + KIND_EXT, 3, 2, 4, 0, 0, 80, 7]);
        b.extend_from_slice(&[(TAG_EVENT_BASE + KIND_EXT) | TAG_PID, 1, 42, 99, 0]);
        b.extend_from_slice(&[TAG_EVENT_BASE + 13, 2]);
        b
    }

    #[test]
    fn unknown_extension_records_are_skipped_with_one_warning() {
        let bytes = future_file();
        let mut r = NativeReader::new("future", &bytes[..]).expect("header");
        let got: Vec<(u64, Event)> = r.by_ref().map(|x| x.expect("event")).collect();
        assert_eq!(
            got,
            vec![
                (
                    3,
                    Event {
                        t: 8,
                        pid: None,
                        kind: EventKind::DataSize {
                            dev: "d".into(),
                            result: Ok(80)
                        }
                    }
                ),
                (
                    5,
                    Event {
                        t: 11,
                        pid: None,
                        kind: EventKind::End
                    }
                ),
            ],
            "skipped records keep their line and advance the time"
        );
        assert_eq!(r.truncated_at(), None);
        assert_eq!(r.warnings().len(), 1, "{:?}", r.warnings());
        assert_eq!(r.warnings()[0].line, 2);
        assert!(
            r.warnings()[0].msg.contains("kind 99"),
            "{:?}",
            r.warnings()
        );
        // Through open_any too: the warning reaches every command's reader.
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("future.mtrc");
        std::fs::write(&p, &bytes).expect("write");
        let mut any = super::super::open_any(&p).expect("open");
        while let Some(x) = any.next_event() {
            x.expect("event");
        }
        assert_eq!(any.warnings().len(), 1);
    }

    #[test]
    fn a_short_extension_payload_is_an_error_naming_the_field() {
        let mut b = encode(&[]);
        b.extend_from_slice(&[TAG_DEFSTR, 1, b'd']);
        // precopy_info with ret 0 but no values.
        b.extend_from_slice(&[TAG_EVENT_BASE + KIND_EXT, 3, 1, 2, 0, 0]);
        let err = NativeReader::new("short", &b[..])
            .expect("header")
            .find_map(Result::err)
            .expect("an error");
        let msg = err.to_string();
        assert!(
            msg.contains("initial_bytes") && msg.contains("byte offset"),
            "{msg}"
        );
    }

    /// Hands out one byte per read: every record then straddles the reader's buffer, so each is
    /// decoded by the careful path, never the fast one.
    struct OneByte<'a>(&'a [u8]);

    impl Read for OneByte<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match (self.0.split_first(), buf.first_mut()) {
                (Some((b, rest)), Some(out)) => {
                    *out = *b;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    fn read_all<R: BufRead>(
        mut r: NativeReader<R>,
    ) -> (Vec<(u64, Event)>, Option<String>, Option<u64>) {
        let mut evs = Vec::new();
        let mut err = None;
        while let Some(x) = r.next_event() {
            match x {
                Ok(e) => evs.push(e),
                Err(e) => err = Some(e.to_string()),
            }
        }
        (evs, err, r.truncated_at())
    }

    fn one_byte_reader(bytes: &[u8]) -> NativeReader<BufReader<OneByte<'_>>> {
        NativeReader::new("mem", BufReader::with_capacity(1, OneByte(bytes))).expect("header")
    }

    /// A `dma` record whose `iova` varint runs to 11 bytes: the error names the file, the
    /// field and the record's byte offset, whichever path decodes it.
    #[test]
    fn a_bad_varint_in_a_common_record_names_the_field_and_offset() {
        let mut b = encode(&all_kinds()[..2]);
        let off = b.len();
        // dma: dt 1, dev id 0 ("0000:00:03.0", defined by the first device), witness write.
        b.extend_from_slice(&[TAG_EVENT_BASE + 6, 1, 0, DMA_WRITE]);
        b.extend_from_slice(&[0xff; 10]);
        b.extend_from_slice(&[0x01, 0x80, 0x20, 0]);
        for (how, (evs, err, cut)) in [
            (
                "whole",
                read_all(NativeReader::new("mem", &b[..]).expect("header")),
            ),
            ("one byte at a time", read_all(one_byte_reader(&b))),
        ] {
            assert_eq!(evs.len(), 2, "{how}");
            assert_eq!(cut, None, "{how}");
            let e = err.unwrap_or_else(|| panic!("{how}: no error"));
            assert!(
                e.starts_with("mem:4: field `iova`")
                    && e.contains("varint longer than 64 bits")
                    && e.contains(&format!("record at byte offset {off}")),
                "{how}: {e}"
            );
        }
        // An undefined string id in a common record, the same way.
        let mut b = encode(&all_kinds()[..2]);
        let off = b.len();
        b.extend_from_slice(&[TAG_EVENT_BASE + 7, 1, 9, 0, 0]);
        for (how, (_, err, _)) in [
            (
                "whole",
                read_all(NativeReader::new("mem", &b[..]).expect("header")),
            ),
            ("one byte at a time", read_all(one_byte_reader(&b))),
        ] {
            let e = err.unwrap_or_else(|| panic!("{how}: no error"));
            assert!(
                e.contains("field `dev`: string id 9 was never defined")
                    && e.contains(&format!("byte offset {off}")),
                "{how}: {e}"
            );
        }
    }

    /// A trace longer than the reader's 64 KiB buffer, cut at every offset around the first
    /// refill: records straddling it are read by the careful path, the rest by the fast one;
    /// either way the complete prefix is read and the cut record named.
    #[test]
    fn records_straddling_the_buffer_and_cut_blocks_read_the_prefix() {
        let evs: Vec<Event> = (0..9000u64)
            .map(|i| Event {
                t: i * 1000,
                pid: Some(4242),
                kind: EventKind::Dma {
                    dev: format!("0000:00:0{}.0", i % 3),
                    src: DmaSource::Witness,
                    iova: 0x10_0000 + i * 4096,
                    len: 4096,
                    write: true,
                    window: Some((i * 1000, i * 1000 + 999)),
                    p2p: None,
                },
            })
            .collect();
        let bytes = encode(&evs);
        assert!(bytes.len() > SRC_BUF + 100);
        let (full, err, cut) = read_all(NativeReader::new("mem", &bytes[..]).expect("header"));
        assert_eq!((err, cut), (None, None));
        assert_eq!(
            full.iter().map(|e| &e.1).collect::<Vec<_>>(),
            evs.iter().collect::<Vec<_>>()
        );
        let (slow, err, cut) = read_all(one_byte_reader(&bytes));
        assert_eq!((err, cut), (None, None));
        assert_eq!(slow, full, "the careful path reads what the fast one does");
        for at in SRC_BUF - 40..SRC_BUF + 40 {
            let (got, err, cut) = read_all(NativeReader::new("mem", &bytes[..at]).expect("header"));
            assert_eq!(err, None, "cut at {at}");
            assert_eq!(got[..], full[..got.len()], "cut at {at}");
            assert!(got.len() < full.len(), "cut at {at}: read past the cut");
            // Cut inside a record: it is named, and the bytes before it are a whole trace.
            if let Some(c) = cut {
                assert!(c < at as u64, "cut at {at}: incomplete record at {c}");
                let (before, err, cut2) =
                    read_all(NativeReader::new("mem", &bytes[..c as usize]).expect("header"));
                assert_eq!((before, err, cut2), (got, None, None), "cut at {at}");
            }
        }
    }

    use proptest::prelude::*;

    fn st() -> impl Strategy<Value = MigState> {
        (0u32..8).prop_map(|n| MigState::from_u32(n).expect("0..8"))
    }

    fn kind() -> impl Strategy<Value = EventKind> {
        let s = "[ -~]{1,12}|[\u{e9}\u{2713}\"\\\\]{1,4}";
        prop_oneof![
            (
                s,
                0u32..8,
                s,
                st(),
                proptest::option::of(s),
                proptest::collection::btree_map(s, s, 0..3)
            )
                .prop_map(|(dev, f, ctx, state, driver, sources)| EventKind::Device {
                    dev,
                    flags: MigFlags(f),
                    ctx,
                    state,
                    driver,
                    sources,
                }),
            (s, st()).prop_map(|(dev, to)| EventKind::Set { dev, to }),
            (s, st(), st()).prop_map(|(dev, from, to)| EventKind::Step { dev, from, to }),
            (s, st(), i32::MIN..=0, proptest::option::of(any::<i32>())).prop_map(
                |(dev, to, ret, data_fd)| EventKind::SetDone {
                    dev,
                    to,
                    ret,
                    data_fd
                }
            ),
            (s, st()).prop_map(|(dev, state)| EventKind::Get { dev, state }),
            (s, i32::MIN..=0).prop_map(|(dev, ret)| EventKind::Reset { dev, ret }),
            (
                s,
                any::<u64>(),
                any::<u64>(),
                any::<bool>(),
                proptest::option::of((any::<u64>(), any::<u64>())),
                proptest::option::of(any::<bool>()),
                0usize..5
            )
                .prop_map(|(dev, iova, len, write, window, p2p, src)| EventKind::Dma {
                    dev,
                    src: DmaSource::ALL[src],
                    iova,
                    len,
                    write,
                    window: window.map(|(a, b)| (a.min(b), a.max(b))),
                    p2p
                }),
            (s, 0usize..3, any::<u32>()).prop_map(|(dev, k, vector)| EventKind::Irq {
                dev,
                kind: IrqKind::ALL[k],
                vector
            }),
            (s, any::<u64>(), any::<u64>()).prop_map(|(ctx, iova, len)| EventKind::Map {
                ctx,
                iova,
                len
            }),
            (s, any::<u64>(), any::<u64>()).prop_map(|(ctx, iova, len)| EventKind::Unmap {
                ctx,
                iova,
                len
            }),
            (
                s,
                any::<bool>(),
                any::<u64>(),
                proptest::option::of((0i32..=i32::MAX, any::<u64>(), any::<u64>()))
            )
                .prop_map(|(dev, save, bytes, file)| EventKind::Data {
                    dev,
                    dir: if save { DataDir::Save } else { DataDir::Load },
                    bytes,
                    file: file.map(|(fd, fd_gen, reset_gen)| DataFile {
                        fd,
                        fd_gen,
                        reset_gen
                    }),
                }),
            (s, i32::MIN..=0).prop_map(|(dev, ret)| EventKind::PrecopyInfoV2 { dev, ret }),
            (s, any::<u64>(), proptest::option::of(s))
                .prop_map(|(source, n, dev)| EventKind::Lost { n, source, dev }),
            ".{0,20}".prop_map(|label| EventKind::Mark { label }),
            Just(EventKind::End),
            (
                s,
                prop_oneof![
                    (any::<u64>(), any::<u64>(), any::<u32>()).prop_map(|(i, d, f)| Ok(
                        PrecopyInfo {
                            initial_bytes: i,
                            dirty_bytes: d,
                            flags: f
                        }
                    )),
                    (i32::MIN..0).prop_map(Err),
                ]
            )
                .prop_map(|(dev, result)| EventKind::PrecopyInfo { dev, result }),
            (
                s,
                prop_oneof![any::<u64>().prop_map(Ok), (i32::MIN..0).prop_map(Err)]
            )
                .prop_map(|(dev, result)| EventKind::DataSize { dev, result }),
            (
                s,
                0usize..4,
                any::<u64>(),
                prop_oneof![Just(0), i32::MIN..0]
            )
                .prop_map(|(dev, c, bytes, ret)| EventKind::CorruptLoad {
                    dev,
                    corruption: crate::trace::Corruption::ALL[c],
                    bytes,
                    ret,
                }),
            (
                s,
                any::<bool>(),
                any::<u32>(),
                proptest::collection::btree_map(any::<u64>(), any::<u64>(), 0..6)
            )
                .prop_map(|(dev, restored, bar, regs)| EventKind::Regs {
                    dev,
                    stage: if restored {
                        crate::trace::RegStage::Restored
                    } else {
                        crate::trace::RegStage::Saved
                    },
                    bar,
                    regs,
                }),
            (
                s,
                any::<u64>(),
                any::<u64>(),
                0u32..40,
                (0u64..10, 10u64..20),
                any::<u64>()
            )
                .prop_map(|(dev, iova, len, shift, window, dirty_pages)| {
                    EventKind::DirtyReport {
                        dev,
                        iova,
                        len,
                        page_size: 1 << shift,
                        window,
                        dirty_pages,
                    }
                }),
        ]
    }

    /// `k` about device (or context) `n` of three names. DMA lengths are kept under 1 MiB: the
    /// verifier keeps a witnessed write's pages one by one (`dirty-log-missed`).
    fn pooled(mut k: EventKind, n: usize) -> EventKind {
        let name = ["0000:00:02.0", "0000:00:03.0", "vm"][n].to_owned();
        if let EventKind::Dma { len, .. } = &mut k {
            *len %= 1 << 20;
        }
        match &mut k {
            EventKind::Device { dev, ctx, .. } => {
                *dev = name;
                *ctx = "vm".to_owned();
            }
            EventKind::Set { dev, .. }
            | EventKind::Step { dev, .. }
            | EventKind::SetDone { dev, .. }
            | EventKind::Get { dev, .. }
            | EventKind::Reset { dev, .. }
            | EventKind::Dma { dev, .. }
            | EventKind::Irq { dev, .. }
            | EventKind::Data { dev, .. }
            | EventKind::PrecopyInfo { dev, .. }
            | EventKind::DataSize { dev, .. }
            | EventKind::PrecopyInfoV2 { dev, .. }
            | EventKind::CorruptLoad { dev, .. }
            | EventKind::Regs { dev, .. }
            | EventKind::DirtyReport { dev, .. }
            | EventKind::IrqBin { dev, .. }
            | EventKind::Lost { dev: Some(dev), .. } => *dev = name,
            EventKind::Map { ctx, .. } | EventKind::Unmap { ctx, .. } => *ctx = name,
            EventKind::Lost { dev: None, .. } | EventKind::Mark { .. } | EventKind::End => {}
        }
        k
    }

    fn events() -> impl Strategy<Value = Vec<Event>> {
        proptest::collection::vec(
            (
                kind(),
                prop_oneof![0u64..3, 0u64..1_000_000, any::<u64>()],
                proptest::option::of(any::<u32>()),
            ),
            0..40,
        )
        .prop_map(|v| {
            let mut t = 0u64;
            v.into_iter()
                .map(|(kind, dt, pid)| {
                    t = t.saturating_add(dt);
                    Event { t, pid, kind }
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn random_events_round_trip_both_ways(evs in events()) {
            let bytes = encode(&evs);
            let back: Vec<Event> = NativeReader::new("p", &bytes[..])
                .expect("header")
                .map(|x| x.expect("event").1)
                .collect();
            prop_assert_eq!(&back, &evs);
            // Through JSONL and back: the same bytes.
            let mut jw = super::super::jsonl::JsonlWriter::new(Vec::new(), &header()).expect("h");
            for e in &evs {
                jw.write(e).expect("write");
            }
            let text = jw.into_inner();
            let mut jr = super::super::jsonl::JsonlReader::new("j", &text[..]).expect("h");
            let mut nw = NativeWriter::new(Vec::new(), jr.header()).expect("h");
            while let Some(x) = jr.next_event() {
                nw.write(&x.expect("event").1).expect("write");
            }
            prop_assert_eq!(nw.into_inner(), bytes);
        }

        /// Handing events back for their buffers changes nothing that is read (both formats).
        #[test]
        fn recycling_events_reads_the_same(evs in events()) {
            let bytes = encode(&evs);
            let mut r = NativeReader::new("p", &bytes[..]).expect("header");
            let mut back = Vec::new();
            while let Some(x) = r.next_event() {
                let ev = x.expect("event").1;
                back.push(ev.clone());
                r.recycle(ev);
            }
            prop_assert_eq!(&back, &evs);
            let mut jw = super::super::jsonl::JsonlWriter::new(Vec::new(), &header()).expect("h");
            for e in &evs {
                jw.write(e).expect("write");
            }
            let text = jw.into_inner();
            let mut jr = super::super::jsonl::JsonlReader::new("j", &text[..]).expect("h");
            let mut jback = Vec::new();
            while let Some(x) = jr.next_event() {
                let ev = x.expect("event").1;
                jback.push(ev.clone());
                jr.recycle(ev);
            }
            prop_assert_eq!(&jback, &evs);
        }

        /// The borrowed events `check` reads are the owned ones, field for field.
        #[test]
        fn borrowed_events_read_the_same(evs in events()) {
            let bytes = encode(&evs);
            let mut r = NativeReader::new("p", &bytes[..]).expect("header");
            let mut owned = NativeReader::new("p", &bytes[..]).expect("header");
            let mut spare = Vec::new();
            while let Some(line) = r.next_line() {
                let line = line.expect("event");
                let (oline, ev) = owned.next_event().expect("as many events").expect("event");
                prop_assert_eq!(line, oline);
                let cur = r.current();
                prop_assert_eq!((cur.t, cur.pid), (ev.t, ev.pid));
                prop_assert_eq!(cur.kind.to_owned_with(&mut spare), ev.kind.clone());
            }
            prop_assert!(owned.next_event().is_none());
            prop_assert_eq!(r.truncated_at(), owned.truncated_at());
        }

        /// The verifier judges the same through both APIs: owned events by name, borrowed
        /// ones by the reader's string ids (devices drawn from a few names, so they repeat).
        #[test]
        fn the_verifier_judges_borrowed_events_as_owned_ones(
            evs in proptest::collection::vec((kind(), 0usize..3, 0u64..5_000), 0..60),
        ) {
            let mut t = 0;
            let evs: Vec<Event> = evs
                .into_iter()
                .map(|(k, n, dt)| {
                    t += dt;
                    Event { t, pid: None, kind: pooled(k, n) }
                })
                .collect();
            let bytes = encode(&evs);
            let opts = crate::verify::Options::default();
            let mut r = NativeReader::new("p", &bytes[..]).expect("header");
            let mut a = crate::verify::Verifier::new(r.header(), opts.clone());
            while let Some(x) = r.next_event() {
                let (line, ev) = x.expect("event");
                a.push(line, &ev);
            }
            let mut r = NativeReader::new("p", &bytes[..]).expect("header");
            let mut b = crate::verify::Verifier::new(r.header(), opts);
            while let Some(line) = r.next_line() {
                b.push_ref(line.expect("event"), r.current());
            }
            let (a, b) = (a.finish(), b.finish());
            prop_assert_eq!(a.to_json(), b.to_json());
            prop_assert_eq!(a, b);
        }

        #[test]
        fn random_bytes_after_a_header_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut bytes = encode(&[]);
            bytes.extend_from_slice(&tail);
            let mut r = NativeReader::new("p", &bytes[..]).expect("header");
            while let Some(x) = r.next_event() {
                if let Err(e) = x {
                    prop_assert!(e.to_string().contains("byte offset"), "{}", e);
                }
            }
        }
    }
}
