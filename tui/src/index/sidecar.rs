//! The index saved beside its trace (`T.mgt.idx`): a second `view` of a long trace loads it in
//! milliseconds instead of reading the whole file again.
//!
//! The file: [`MAGIC`], the format [`VERSION`] (u32), the trace's fingerprint (its length in
//! bytes and an FNV-1a hash of its first and of its last [`PRINT_BYTES`]), the index, and an
//! FNV-1a hash of everything before it. Integers are little-endian u64 unless said otherwise,
//! lists and strings are a u64 length then their items. A sidecar whose magic, version,
//! fingerprint or hash does not match the trace is not trusted: the index is built again (and
//! saved over it). Written to a temporary file beside it, then renamed: a reader never sees
//! half a sidecar.
//!
//! The trace's header is not saved: the trace's own is read again (it is in the fingerprint).

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use migscope_core::model::MigFlags;
use migscope_core::trace::Checkpoint;

use super::{Block, Buckets, Counts, IxCtx, IxDevice, Note, SegList, TraceIndex};
use crate::store::Device;

/// The sidecar's first bytes.
pub const MAGIC: &[u8; 8] = b"MGSCIDX\n";
/// The sidecar format's version: bump it with any change to what the index holds or how it is
/// written here (an older sidecar is then rebuilt, never misread).
pub const VERSION: u32 = 1;
/// Bytes of the trace's start and of its end hashed into the fingerprint.
pub const PRINT_BYTES: u64 = 1 << 16;

/// The sidecar path of trace `path`: `path` with `.idx` appended.
pub fn path_of(trace: &Path) -> PathBuf {
    let mut s = trace.as_os_str().to_owned();
    s.push(".idx");
    PathBuf::from(s)
}

/// FNV-1a, 64 bits, over little-endian 8-byte words (the last one zero-padded) and the
/// length: a check against damage and accidents (not an adversary), 8x faster than bytewise
/// on the tens of megabytes of a 100M-event index.
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(8);
    let mut mix = |w: u64| {
        h ^= w;
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    for w in &mut words {
        let mut a = [0u8; 8];
        a.copy_from_slice(w);
        mix(u64::from_le_bytes(a));
    }
    let mut a = [0u8; 8];
    a[..words.remainder().len()].copy_from_slice(words.remainder());
    mix(u64::from_le_bytes(a));
    mix(bytes.len() as u64);
    h
}
const FNV0: u64 = 0xcbf2_9ce4_8422_2325;

/// What identifies a trace file's contents: its length and hashes of its two ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    pub len: u64,
    pub head: u64,
    pub tail: u64,
}

impl Fingerprint {
    /// The fingerprint of the file at `path` now.
    pub fn of(path: &Path) -> io::Result<Fingerprint> {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        let mut buf = vec![0u8; PRINT_BYTES.min(len) as usize];
        f.read_exact(&mut buf)?;
        let head = fnv(FNV0, &buf);
        let from = len.saturating_sub(PRINT_BYTES);
        f.seek(SeekFrom::Start(from))?;
        buf.resize((len - from) as usize, 0);
        f.read_exact(&mut buf)?;
        Ok(Fingerprint {
            len,
            head,
            tail: fnv(FNV0, &buf),
        })
    }
}

/// Why a sidecar was not used (it is then rebuilt).
#[derive(Debug, PartialEq, Eq)]
pub enum Stale {
    /// None beside the trace.
    Missing,
    /// Another program's file, or an older format.
    Foreign,
    /// Written for other contents of the trace (it changed, or it was replaced).
    OtherTrace,
    /// Cut short or corrupt.
    Damaged(String),
}

impl std::fmt::Display for Stale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stale::Missing => write!(f, "no saved index"),
            Stale::Foreign => write!(f, "not a migscope index of this version"),
            Stale::OtherTrace => write!(f, "saved for other contents of the trace"),
            Stale::Damaged(why) => write!(f, "damaged ({why})"),
        }
    }
}

struct Enc {
    out: Vec<u8>,
}

impl Enc {
    fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn u8(&mut self, v: u8) {
        self.out.push(v);
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.out.extend_from_slice(b);
    }
    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    fn opt_u64(&mut self, v: Option<u64>) {
        match v {
            Some(x) => {
                self.u8(1);
                self.u64(x);
            }
            None => self.u8(0),
        }
    }
    fn opt_str(&mut self, v: Option<&str>) {
        match v {
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
            None => self.u8(0),
        }
    }
    /// Level 0 only: the levels above are its pair sums ([`Counts::finish`] builds them).
    fn counts(&mut self, c: &Counts) {
        let l0 = c.level(0);
        self.u8(u8::from(c.depth() > 0));
        self.u64(l0.len() as u64);
        for &x in l0 {
            self.u32(x);
        }
    }
    fn segs(&mut self, s: &SegList) {
        self.u64(s.chunks.len() as u64);
        for &(t, off, row) in &s.chunks {
            self.u64(t);
            self.u32(off);
            self.u64(row);
        }
        self.bytes(&s.bytes);
        self.u64(s.len as u64);
        self.u64(s.last_t);
        self.u64(s.last_row);
    }
}

/// Reads what [`Enc`] wrote; every read is checked against the bytes left (a damaged file is
/// an error, never a panic or a huge allocation).
struct Dec<'a> {
    b: &'a [u8],
    at: usize,
}

type R<T> = Result<T, Stale>;

impl Dec<'_> {
    fn take(&mut self, n: usize) -> R<&[u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| Stale::Damaged(format!("ends at byte {}", self.b.len())))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u64(&mut self) -> R<u64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn u32(&mut self) -> R<u32> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    fn u8(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }
    fn bool(&mut self) -> R<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            x => Err(Stale::Damaged(format!(
                "byte {} is {x}, not a flag",
                self.at - 1
            ))),
        }
    }
    /// A list length whose items take at least `item` bytes each (checked against the rest).
    fn len(&mut self, item: usize) -> R<usize> {
        let n = self.u64()?;
        let left = (self.b.len() - self.at) as u64;
        if n.saturating_mul(item.max(1) as u64) > left {
            return Err(Stale::Damaged(format!(
                "a list of {n} at byte {} is longer than the file",
                self.at - 8
            )));
        }
        Ok(n as usize)
    }
    fn bytes(&mut self) -> R<Vec<u8>> {
        let n = self.len(1)?;
        Ok(self.take(n)?.to_vec())
    }
    fn str(&mut self) -> R<String> {
        let at = self.at;
        String::from_utf8(self.bytes()?)
            .map_err(|_| Stale::Damaged(format!("the string at byte {at} is not UTF-8")))
    }
    fn opt_u64(&mut self) -> R<Option<u64>> {
        Ok(if self.bool()? {
            Some(self.u64()?)
        } else {
            None
        })
    }
    fn opt_str(&mut self) -> R<Option<String>> {
        Ok(if self.bool()? {
            Some(self.str()?)
        } else {
            None
        })
    }
    fn counts(&mut self) -> R<Counts> {
        let any = self.bool()?;
        let n = self.len(4)?;
        let l0: Vec<u32> = self
            .take(n * 4)?
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let mut c = Counts {
            levels: if any { vec![l0] } else { Vec::new() },
        };
        c.finish();
        Ok(c)
    }
    fn segs(&mut self) -> R<SegList> {
        let n = self.len(20)?;
        let mut chunks = Vec::with_capacity(n);
        for _ in 0..n {
            chunks.push((self.u64()?, self.u32()?, self.u64()?));
        }
        let bytes = self.bytes()?;
        if chunks.iter().any(|&(_, off, _)| off as usize > bytes.len()) {
            return Err(Stale::Damaged("a segment chunk past its bytes".into()));
        }
        Ok(SegList {
            chunks,
            bytes,
            len: self.u64()? as usize,
            last_t: self.u64()?,
            last_row: self.u64()?,
        })
    }
}

fn encode(ix: &TraceIndex, print: &Fingerprint) -> Vec<u8> {
    let mut e = Enc {
        out: Vec::with_capacity(1 << 20),
    };
    e.out.extend_from_slice(MAGIC);
    e.u32(VERSION);
    e.u64(print.len);
    e.u64(print.head);
    e.u64(print.tail);
    e.u64(ix.blocks.len() as u64);
    for b in &ix.blocks {
        e.u64(b.cp.offset);
        e.u64(b.cp.last_t);
        e.u64(b.cp.events);
        e.u64(b.cp.strings as u64);
        e.u8(b.cp.version);
        e.u64(b.t0);
        e.u64(b.t1);
    }
    e.u64(ix.strings.len() as u64);
    for s in &ix.strings {
        e.str(s);
    }
    e.u64(ix.devices.len() as u64);
    for d in &ix.devices {
        let f = &d.facts;
        e.str(&f.name);
        e.u64(f.ctx as u64);
        e.u32(f.flags.0);
        e.opt_str(f.driver.as_deref());
        e.u64(f.sources.len() as u64);
        for (k, v) in &f.sources {
            e.str(k);
            e.str(v);
        }
        e.u8(u8::from(f.declared));
        e.segs(&d.segs);
        for c in &d.counts {
            e.counts(c);
        }
    }
    e.u64(ix.ctxs.len() as u64);
    for c in &ix.ctxs {
        e.str(&c.name);
        e.u64(c.devs.len() as u64);
        for &d in &c.devs {
            e.u64(d as u64);
        }
        e.counts(&c.maps);
    }
    e.u64(ix.buckets.origin);
    e.u64(ix.buckets.width);
    e.u64(ix.rows);
    e.opt_u64(ix.first_t);
    e.u64(ix.last_t);
    e.u64(ix.lost);
    e.u8(u8::from(ix.end_seen));
    e.u64(ix.notes.len() as u64);
    for n in &ix.notes {
        e.u64(n.t);
        e.u64(n.row);
        e.u8(u8::from(n.lost));
    }
    e.u64(ix.notes_dropped);
    e.opt_u64(ix.truncated_at);
    e.u64(ix.bytes);
    let h = fnv(FNV0, &e.out);
    e.u64(h);
    e.out
}

/// The index in sidecar bytes `b`, if they were written for a trace of fingerprint `print`
/// (`ix` gives the trace's name, path and header: the rest is replaced).
fn decode(b: &[u8], print: &Fingerprint, mut ix: TraceIndex) -> R<TraceIndex> {
    if b.len() < MAGIC.len() + 4 || &b[..MAGIC.len()] != MAGIC {
        return Err(Stale::Foreign);
    }
    let mut d = Dec { b, at: MAGIC.len() };
    if d.u32()? != VERSION {
        return Err(Stale::Foreign);
    }
    let saved = Fingerprint {
        len: d.u64()?,
        head: d.u64()?,
        tail: d.u64()?,
    };
    if saved != *print {
        return Err(Stale::OtherTrace);
    }
    let body = b
        .len()
        .checked_sub(8)
        .ok_or_else(|| Stale::Damaged("no hash".into()))?;
    let mut h = [0u8; 8];
    h.copy_from_slice(&b[body..]);
    if fnv(FNV0, &b[..body]) != u64::from_le_bytes(h) {
        return Err(Stale::Damaged("its hash does not match its bytes".into()));
    }
    let mut d = Dec {
        b: &b[..body],
        at: d.at,
    };
    let n = d.len(49)?;
    ix.blocks = Vec::with_capacity(n);
    for _ in 0..n {
        let cp = Checkpoint {
            offset: d.u64()?,
            last_t: d.u64()?,
            events: d.u64()?,
            strings: d.u64()? as usize,
            version: d.u8()?,
        };
        ix.blocks.push(Block {
            cp,
            t0: d.u64()?,
            t1: d.u64()?,
        });
    }
    let n = d.len(8)?;
    ix.strings = (0..n).map(|_| d.str()).collect::<R<_>>()?;
    let n = d.len(8)?;
    ix.devices = Vec::with_capacity(n);
    for _ in 0..n {
        let name = d.str()?;
        let ctx = d.u64()? as usize;
        let flags = MigFlags(d.u32()?);
        let driver = d.opt_str()?;
        let k = d.len(16)?;
        let mut sources = std::collections::BTreeMap::new();
        for _ in 0..k {
            let key = d.str()?;
            sources.insert(key, d.str()?);
        }
        let declared = d.bool()?;
        let segs = d.segs()?;
        let counts = [d.counts()?, d.counts()?, d.counts()?, d.counts()?];
        ix.devices.push(IxDevice {
            facts: Device {
                name,
                ctx,
                flags,
                driver,
                sources,
                declared,
                segs: Vec::new(),
                dma: Vec::new(),
                irq: Vec::new(),
                data: Vec::new(),
                fsm: Vec::new(),
            },
            segs,
            counts,
        });
    }
    let n = d.len(8)?;
    ix.ctxs = Vec::with_capacity(n);
    for _ in 0..n {
        let name = d.str()?;
        let k = d.len(8)?;
        let devs = (0..k)
            .map(|_| d.u64().map(|x| x as usize))
            .collect::<R<Vec<_>>>()?;
        ix.ctxs.push(IxCtx {
            name,
            devs,
            maps: d.counts()?,
        });
    }
    // Indices must point inside their lists (the view indexes with them).
    if ix.devices.iter().any(|x| x.facts.ctx >= ix.ctxs.len())
        || ix
            .ctxs
            .iter()
            .any(|c| c.devs.iter().any(|&i| i >= ix.devices.len()))
    {
        return Err(Stale::Damaged("a device or context out of range".into()));
    }
    ix.buckets = Buckets {
        origin: d.u64()?,
        width: d.u64()?,
    };
    if ix.buckets.width == 0 {
        return Err(Stale::Damaged("bucket width 0".into()));
    }
    ix.rows = d.u64()?;
    ix.first_t = d.opt_u64()?;
    ix.last_t = d.u64()?;
    ix.lost = d.u64()?;
    ix.end_seen = d.bool()?;
    let n = d.len(17)?;
    ix.notes = Vec::with_capacity(n);
    for _ in 0..n {
        ix.notes.push(Note {
            t: d.u64()?,
            row: d.u64()?,
            lost: d.bool()?,
        });
    }
    ix.notes_dropped = d.u64()?;
    ix.truncated_at = d.opt_u64()?;
    ix.bytes = d.u64()?;
    if d.at != d.b.len() {
        return Err(Stale::Damaged(format!(
            "{} bytes after the index",
            d.b.len() - d.at
        )));
    }
    Ok(ix)
}

/// The index saved beside the trace, if it was saved for the trace as it is now (`ix`: the
/// trace's name, path and header).
pub fn load(trace: &Path, ix: TraceIndex) -> Result<TraceIndex, Stale> {
    let print = Fingerprint::of(trace).map_err(|e| Stale::Damaged(format!("the trace: {e}")))?;
    let b = match std::fs::read(path_of(trace)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Stale::Missing),
        Err(e) => return Err(Stale::Damaged(e.to_string())),
    };
    decode(&b, &print, ix)
}

/// Saves `ix` beside its trace (write-then-rename); `print`: the trace's fingerprint when it
/// was indexed. An error names the file.
pub fn save(ix: &TraceIndex, print: &Fingerprint) -> Result<PathBuf, String> {
    let to = path_of(&ix.path);
    let mut tmp = to.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let bytes = encode(ix, print);
    let write = || -> io::Result<()> {
        let mut w = BufWriter::new(File::create(&tmp)?);
        w.write_all(&bytes)?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, &to)
    };
    write().map_err(|e| {
        std::fs::remove_file(&tmp).ok();
        format!("{}: cannot save the index: {e}", to.display())
    })?;
    Ok(to)
}
