//! The JSON Lines interchange format (`TRACE-FORMAT.md`, version 1): a streaming reader that
//! validates every line and names the file, line and field of the first problem, and a writer
//! that writes to a `.partial` file and renames it into place when the trace is complete.

use std::{
    borrow::Cow,
    cell::Cell,
    collections::{BTreeMap, HashSet},
    fmt::Write as _,
    fs::File,
    io::{self, BufRead, BufReader, BufWriter, Write},
    path::Path,
};

use serde::Deserialize;

use super::event::{
    Corruption, DataDir, DataFile, DmaSource, EV_NAMES, Event, EventKind, Header, IrqKind,
    RegStage, TRACE_VERSION,
};
use super::sink::TraceSink;
use crate::model::{MigFlags, MigState, PrecopyInfo, flag_bit};

/// What can go wrong reading or writing a trace.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("{file}: cannot open: {source}")]
    Open { file: String, source: io::Error },
    #[error("{file}:{line}: read failed: {source}")]
    Read {
        file: String,
        line: u64,
        source: io::Error,
    },
    /// A line that breaks the format; `field` is the offending field (or `-` for the line).
    #[error("{file}:{line}: field `{field}`: {msg}")]
    Invalid {
        file: String,
        line: u64,
        field: String,
        msg: String,
    },
    #[error("{file}: write failed: {source}")]
    Write { file: String, source: io::Error },
    /// Input in neither format: binary data, an empty file, JSON that is not one object per
    /// line (a pretty-printed document), a first line that is not the header.
    #[error("{file}:1: not a migscope trace (neither JSONL nor native): {why}")]
    NotATrace { file: String, why: String },
}

impl TraceError {
    /// The 1-based line the error is about, where there is one.
    pub fn line(&self) -> Option<u64> {
        match self {
            TraceError::Read { line, .. } | TraceError::Invalid { line, .. } => Some(*line),
            TraceError::NotATrace { .. } => Some(1),
            TraceError::Open { .. } | TraceError::Write { .. } => None,
        }
    }
}

/// A problem that does not stop reading (e.g. an unknown `ev`, reported once per value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadWarning {
    pub line: u64,
    pub msg: String,
}

/// Keeps the string buffers of `ev` (up to a few, of modest size) in `spare` for reuse.
pub(crate) fn recycle_strings(ev: Event, spare: &mut Vec<String>) {
    const KEEP: usize = 8;
    let mut put = |s: String| {
        if spare.len() < KEEP && s.capacity() <= 256 {
            spare.push(s);
        }
    };
    match ev.kind {
        EventKind::Device {
            dev, ctx, driver, ..
        } => {
            put(dev);
            put(ctx);
            if let Some(d) = driver {
                put(d);
            }
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
        | EventKind::IrqBin { dev, .. } => put(dev),
        EventKind::Map { ctx, .. } | EventKind::Unmap { ctx, .. } => put(ctx),
        EventKind::Lost { source, dev, .. } => {
            put(source);
            if let Some(d) = dev {
                put(d);
            }
        }
        EventKind::Mark { label } => put(label),
        EventKind::End => {}
    }
}

/// Every field any line may carry; absent ones are `None`, unknown ones are ignored.
#[derive(Deserialize, Default, Debug, PartialEq)]
struct Raw<'a> {
    // header
    migscope_trace: Option<u64>,
    #[serde(borrow)]
    clock: Option<Cow<'a, str>>,
    #[serde(borrow)]
    kernel: Option<Cow<'a, str>>,
    #[serde(borrow)]
    tool: Option<Cow<'a, str>>,
    sources: Option<BTreeMap<String, String>>,
    #[serde(borrow)]
    hooks: Option<Cow<'a, str>>,
    // events
    t: Option<u64>,
    #[serde(borrow)]
    ev: Option<Cow<'a, str>>,
    pid: Option<u32>,
    #[serde(borrow)]
    dev: Option<Cow<'a, str>>,
    flags: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow)]
    ctx: Option<Cow<'a, str>>,
    #[serde(borrow)]
    state: Option<Cow<'a, str>>,
    #[serde(borrow)]
    driver: Option<Cow<'a, str>>,
    #[serde(borrow)]
    to: Option<Cow<'a, str>>,
    #[serde(borrow)]
    from: Option<Cow<'a, str>>,
    ret: Option<i64>,
    data_fd: Option<i64>,
    #[serde(borrow)]
    src: Option<Cow<'a, str>>,
    iova: Option<u64>,
    len: Option<u64>,
    write: Option<bool>,
    window: Option<(u64, u64)>,
    p2p: Option<bool>,
    #[serde(borrow)]
    kind: Option<Cow<'a, str>>,
    vector: Option<u32>,
    #[serde(borrow)]
    dir: Option<Cow<'a, str>>,
    bytes: Option<u64>,
    n: Option<u64>,
    #[serde(borrow)]
    source: Option<Cow<'a, str>>,
    #[serde(borrow)]
    label: Option<Cow<'a, str>>,
    initial_bytes: Option<u64>,
    dirty_bytes: Option<u64>,
    /// `precopy_info`'s flags word, as the driver returned it (not `flags`: a reader that
    /// predates `precopy_info` checks `flags` as a device's flag names and would refuse it).
    precopy_flags: Option<u64>,
    /// `data`: the device's reset generation when the SET that returned its data_fd completed.
    fd_gen: Option<u64>,
    /// `data`: the device's reset generation when the bytes moved.
    reset_gen: Option<u64>,
    #[serde(borrow)]
    corruption: Option<Cow<'a, str>>,
    #[serde(borrow)]
    stage: Option<Cow<'a, str>>,
    bar: Option<u32>,
    /// `regs`: register offset (`"0x80"`) -> value.
    registers: Option<BTreeMap<String, u64>>,
    /// `dirty_report`: the granule of its bitmap, bytes.
    page_size: Option<u64>,
    /// `dirty_report`: pages the report found dirty.
    dirty_pages: Option<u64>,
}

/// JSON type each known field must have, for naming the field when fast parsing fails.
const FIELD_TYPES: &[(&str, &str)] = &[
    ("migscope_trace", "u64"),
    ("clock", "str"),
    ("kernel", "str"),
    ("tool", "str"),
    ("sources", "strmap"),
    ("hooks", "str"),
    ("t", "u64"),
    ("ev", "str"),
    ("pid", "u32"),
    ("dev", "str"),
    ("flags", "strarr"),
    ("ctx", "str"),
    ("state", "str"),
    ("driver", "str"),
    ("to", "str"),
    ("from", "str"),
    ("ret", "i64"),
    ("data_fd", "i64"),
    ("src", "str"),
    ("iova", "u64"),
    ("len", "u64"),
    ("write", "bool"),
    ("window", "pair"),
    ("p2p", "bool"),
    ("kind", "str"),
    ("vector", "u32"),
    ("dir", "str"),
    ("bytes", "u64"),
    ("n", "u64"),
    ("source", "str"),
    ("label", "str"),
    ("initial_bytes", "u64"),
    ("dirty_bytes", "u64"),
    ("precopy_flags", "u64"),
    ("fd_gen", "u64"),
    ("reset_gen", "u64"),
    ("corruption", "str"),
    ("stage", "str"),
    ("bar", "u32"),
    ("registers", "u64map"),
    ("page_size", "u64"),
    ("dirty_pages", "u64"),
];

fn type_ok(v: &serde_json::Value, ty: &str) -> bool {
    use serde_json::Value;
    match (ty, v) {
        (_, Value::Null) => true,
        ("u64", Value::Number(n)) => n.as_u64().is_some(),
        ("u32", Value::Number(n)) => n.as_u64().is_some_and(|x| x <= u64::from(u32::MAX)),
        ("i64", Value::Number(n)) => n.as_i64().is_some(),
        ("str", Value::String(_)) => true,
        ("bool", Value::Bool(_)) => true,
        ("strarr", Value::Array(a)) => a.iter().all(Value::is_string),
        ("strmap", Value::Object(o)) => o.values().all(Value::is_string),
        ("u64map", Value::Object(o)) => o.values().all(|x| x.as_u64().is_some()),
        ("pair", Value::Array(a)) => a.len() == 2 && a.iter().all(|x| x.as_u64().is_some()),
        _ => false,
    }
}

fn type_desc(ty: &str) -> &'static str {
    match ty {
        "u64" => "a non-negative integer",
        "u32" => "a non-negative 32-bit integer",
        "i64" => "an integer",
        "str" => "a string",
        "bool" => "true or false",
        "strarr" => "an array of strings",
        "strmap" => "an object of strings",
        "u64map" => "an object of non-negative integers",
        "pair" => "an array of two non-negative integers [t0, t1]",
        _ => "a value of the right type",
    }
}

/// For a line that did not decode: its `ev` when it is a JSON object with a string `ev` this
/// reader does not know (so the line is a newer event, to be skipped), else `None`.
fn unknown_ev(line: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Ev {
        ev: String,
    }
    let e = serde_json::from_str::<Ev>(line).ok()?;
    // Every kind this reader decodes has its name in EV_NAMES (one list, with EventKind).
    (!EV_NAMES.contains(&e.ev.as_str())).then_some(e.ev)
}

/// Streams events out of a JSONL trace.
pub struct JsonlReader<R> {
    name: String,
    input: R,
    buf: String,
    line: u64,
    header: Header,
    last_t: Option<(u64, u64)>,
    warned_ev: HashSet<String>,
    warnings: Vec<ReadWarning>,
    done: bool,
    /// String buffers of events handed back with [`JsonlReader::recycle`], reused for the
    /// next events' strings instead of allocating.
    spare: Cell<Vec<String>>,
}

impl JsonlReader<Box<dyn BufRead>> {
    /// Opens `path` (`-` is standard input) and reads its header.
    pub fn open(path: &Path) -> Result<Self, TraceError> {
        let name = path.display().to_string();
        let input: Box<dyn BufRead> = if path.as_os_str() == "-" {
            Box::new(BufReader::with_capacity(1 << 16, io::stdin()))
        } else {
            let f = File::open(path).map_err(|source| TraceError::Open {
                file: name.clone(),
                source,
            })?;
            Box::new(BufReader::with_capacity(1 << 16, f))
        };
        JsonlReader::new(&name, input)
    }
}

impl<R: BufRead> JsonlReader<R> {
    /// Reads and validates the header line; `name` is used in error messages.
    pub fn new(name: &str, input: R) -> Result<Self, TraceError> {
        let mut r = JsonlReader {
            name: name.to_owned(),
            input,
            buf: String::new(),
            line: 0,
            header: Header::default(),
            last_t: None,
            warned_ev: HashSet::new(),
            warnings: Vec::new(),
            done: false,
            spare: Cell::new(Vec::new()),
        };
        let not_a_trace = |why: String| TraceError::NotATrace {
            file: name.to_owned(),
            why,
        };
        const HEADER: &str = "the first line must be the trace header {\"migscope_trace\":1,...}";
        match r.next_line() {
            Ok(true) => {}
            Ok(false) => return Err(not_a_trace(format!("the input is empty ({HEADER})"))),
            Err(TraceError::Read { source, .. }) if source.kind() == io::ErrorKind::InvalidData => {
                return Err(not_a_trace(
                    "line 1 is not UTF-8 text (binary data?)".to_owned(),
                ));
            }
            Err(e) => return Err(e),
        }
        let line = std::mem::take(&mut r.buf);
        // What line 1 is decides whether this is a trace at all; a header with a bad field
        // is a trace and gets the usual field error below.
        match serde_json::from_str::<serde_json::Value>(&line) {
            Err(e) => {
                let t = line.trim();
                let hint = if t == "{" || t == "[" || t.starts_with("[{") || t.starts_with("[ {") {
                    " (a JSON document, perhaps pretty-printed: a trace is one JSON object per line)"
                } else {
                    ""
                };
                return Err(not_a_trace(format!("line 1 is not JSON: {e}{hint}")));
            }
            Ok(serde_json::Value::Object(o)) if !o.contains_key("migscope_trace") => {
                return Err(not_a_trace(format!(
                    "line 1 has no `migscope_trace` field: {HEADER}"
                )));
            }
            Ok(serde_json::Value::Object(_)) => {}
            Ok(other) => {
                let kind = match other {
                    serde_json::Value::Array(_) => "an array",
                    serde_json::Value::String(_) => "a string",
                    serde_json::Value::Number(_) => "a number",
                    _ => "a literal",
                };
                return Err(not_a_trace(format!(
                    "line 1 is {kind}, not a JSON object: {HEADER}"
                )));
            }
        }
        let raw = r.parse_raw(&line)?;
        let Some(version) = raw.migscope_trace else {
            return Err(not_a_trace(format!(
                "line 1 has no `migscope_trace` field: {HEADER}"
            )));
        };
        if version != u64::from(TRACE_VERSION) {
            return Err(r.invalid(
                "migscope_trace",
                &format!(
                    "unsupported format version {version} (this migscope reads {TRACE_VERSION})"
                ),
            ));
        }
        r.header = Header {
            version: TRACE_VERSION,
            clock: raw
                .clock
                .map_or_else(|| "monotonic_ns".to_owned(), Cow::into_owned),
            kernel: raw.kernel.map(Cow::into_owned),
            tool: raw.tool.map(Cow::into_owned),
            sources: raw.sources.unwrap_or_default(),
            hooks: raw.hooks.map(Cow::into_owned),
        };
        Ok(r)
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Non-fatal problems seen so far.
    pub fn warnings(&self) -> &[ReadWarning] {
        &self.warnings
    }

    /// The file name used in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next event with its 1-based line number; `None` at end of input.
    pub fn next_event(&mut self) -> Option<Result<(u64, Event), TraceError>> {
        if self.done {
            return None;
        }
        loop {
            match self.next_line() {
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Ok(false) => {
                    self.done = true;
                    return None;
                }
                Ok(true) => {}
            }
            let line = std::mem::take(&mut self.buf);
            let res = self.parse_event(&line);
            self.buf = line;
            match res {
                Ok(Some(ev)) => return Some(Ok((self.line, ev))),
                Ok(None) => continue,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }

    /// Reads the next non-blank line into `self.buf`; false at EOF.
    fn next_line(&mut self) -> Result<bool, TraceError> {
        loop {
            self.buf.clear();
            let n = self
                .input
                .read_line(&mut self.buf)
                .map_err(|source| TraceError::Read {
                    file: self.name.clone(),
                    line: self.line + 1,
                    source,
                })?;
            if n == 0 {
                return Ok(false);
            }
            self.line += 1;
            if !self.buf.trim().is_empty() {
                return Ok(true);
            }
        }
    }

    fn invalid(&self, field: &str, msg: &str) -> TraceError {
        TraceError::Invalid {
            file: self.name.clone(),
            line: self.line,
            field: field.to_owned(),
            msg: msg.to_owned(),
        }
    }

    fn parse_raw<'a>(&self, line: &'a str) -> Result<Raw<'a>, TraceError> {
        let mut raw = Raw::default();
        self.parse_raw_into(line, &mut raw)?;
        Ok(raw)
    }

    /// [`Self::parse_raw`] into a default `Raw` the caller holds (no copy of the struct).
    fn parse_raw_into<'a>(&self, line: &'a str, raw: &mut Raw<'a>) -> Result<(), TraceError> {
        if fast::fill(line, raw).is_some() {
            return Ok(());
        }
        match serde_json::from_str::<Raw<'a>>(line) {
            Ok(r) => {
                *raw = r;
                Ok(())
            }
            Err(fast_err) => Err(self.explain_parse_error(line, &fast_err)),
        }
    }

    /// Slow path, only on error: find which field broke the line.
    fn explain_parse_error(&self, line: &str, fast_err: &serde_json::Error) -> TraceError {
        let value: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => return self.invalid("-", &format!("not JSON: {e}")),
        };
        let Some(obj) = value.as_object() else {
            return self.invalid("-", "not a JSON object");
        };
        for (field, ty) in FIELD_TYPES {
            if let Some(v) = obj.get(*field)
                && !type_ok(v, ty)
            {
                return self.invalid(field, &format!("expected {}, found {v}", type_desc(ty)));
            }
        }
        self.invalid("-", &format!("cannot decode line: {fast_err}"))
    }

    fn parse_event(&mut self, line: &str) -> Result<Option<Event>, TraceError> {
        let mut raw = Raw::default();
        if let Err(e) = self.parse_raw_into(line, &mut raw) {
            // A field this reader knows, with another type, on an event type it does not know
            // is that newer event's own field: skip the event, as any unknown `ev` is.
            return match unknown_ev(line) {
                Some(ev) => {
                    self.warn_unknown_ev(&ev);
                    Ok(None)
                }
                None => Err(e),
            };
        }
        let t = raw
            .t
            .ok_or_else(|| self.invalid("t", "missing (every event needs `t`)"))?;
        let ev = raw
            .ev
            .as_deref()
            .ok_or_else(|| self.invalid("ev", "missing (every event needs `ev`)"))?;
        if let Some((prev_t, prev_line)) = self.last_t
            && t < prev_t
        {
            return Err(self.invalid(
                "t",
                &format!(
                    "{t} is earlier than {prev_t} on line {prev_line}: events must be ordered by t"
                ),
            ));
        }
        self.last_t = Some((t, self.line));
        let kind = match ev {
            "device" => EventKind::Device {
                dev: self.req_str(&raw.dev, "dev")?,
                flags: self.flags(&raw)?,
                ctx: self.req_str(&raw.ctx, "ctx")?,
                state: match &raw.state {
                    Some(s) => self.state(s, "state")?,
                    None => MigState::Running,
                },
                driver: raw.driver.as_deref().map(str::to_owned),
                sources: raw.sources.take().unwrap_or_default(),
            },
            "set" => EventKind::Set {
                dev: self.req_str(&raw.dev, "dev")?,
                to: self.req_state(&raw.to, "to")?,
            },
            "step" => EventKind::Step {
                dev: self.req_str(&raw.dev, "dev")?,
                from: self.req_state(&raw.from, "from")?,
                to: self.req_state(&raw.to, "to")?,
            },
            "set_done" => EventKind::SetDone {
                dev: self.req_str(&raw.dev, "dev")?,
                to: self.req_state(&raw.to, "to")?,
                ret: self.errno_ret(raw.ret, "ret")?,
                data_fd: match raw.data_fd {
                    None => None,
                    Some(fd) => Some(i32::try_from(fd).map_err(|_| {
                        self.invalid("data_fd", &format!("{fd} is not a file descriptor"))
                    })?),
                },
            },
            "get" => EventKind::Get {
                dev: self.req_str(&raw.dev, "dev")?,
                state: self.req_state(&raw.state, "state")?,
            },
            "reset" => EventKind::Reset {
                dev: self.req_str(&raw.dev, "dev")?,
                ret: self.errno_ret(raw.ret, "ret")?,
            },
            "dma" => {
                let src = self.req_name(&raw.src, "src")?;
                let window = raw.window;
                if let Some((t0, t1)) = window
                    && t0 > t1
                {
                    return Err(self.invalid(
                        "window",
                        &format!("[{t0}, {t1}] is backwards: t0 must not exceed t1"),
                    ));
                }
                EventKind::Dma {
                    dev: self.req_str(&raw.dev, "dev")?,
                    src: DmaSource::from_name(src).ok_or_else(|| {
                        self.invalid(
                            "src",
                            &format!(
                                "unknown DMA evidence source `{src}` (expected one of {})",
                                DmaSource::ALL.map(DmaSource::name).join(", ")
                            ),
                        )
                    })?,
                    iova: self.req(raw.iova, "iova")?,
                    len: self.req(raw.len, "len")?,
                    write: self.req(raw.write, "write")?,
                    window,
                    p2p: raw.p2p,
                }
            }
            "irq" => EventKind::Irq {
                kind: self.irq_kind(&raw.kind)?,
                dev: self.req_str(&raw.dev, "dev")?,
                vector: self.req(raw.vector, "vector")?,
            },
            "map" | "unmap" => {
                let ctx = self.req_str(&raw.ctx, "ctx")?;
                let iova = self.req(raw.iova, "iova")?;
                let len = self.req(raw.len, "len")?;
                if ev == "map" {
                    EventKind::Map { ctx, iova, len }
                } else {
                    EventKind::Unmap { ctx, iova, len }
                }
            }
            "data" => {
                let dir = self.req_name(&raw.dir, "dir")?;
                EventKind::Data {
                    dev: self.req_str(&raw.dev, "dev")?,
                    dir: DataDir::from_name(dir).ok_or_else(|| {
                        self.invalid(
                            "dir",
                            &format!("unknown direction `{dir}` (expected save or load)"),
                        )
                    })?,
                    bytes: self.req(raw.bytes, "bytes")?,
                    file: self.data_file(&raw)?,
                }
            }
            "lost" => EventKind::Lost {
                n: self.req(raw.n, "n")?,
                source: raw.source.as_deref().unwrap_or("unknown").to_owned(),
                dev: raw.dev.as_deref().map(str::to_owned),
            },
            "mark" => EventKind::Mark {
                label: raw.label.as_deref().unwrap_or_default().to_owned(),
            },
            "end" => EventKind::End,
            "precopy_info" => EventKind::PrecopyInfo {
                dev: self.req_str(&raw.dev, "dev")?,
                // A failed ioctl copied nothing back: value fields, if any, are ignored.
                result: match self.errno_ret(raw.ret, "ret")? {
                    0 => Ok(PrecopyInfo {
                        initial_bytes: self.req(raw.initial_bytes, "initial_bytes")?,
                        dirty_bytes: self.req(raw.dirty_bytes, "dirty_bytes")?,
                        flags: self.flag_word(&raw)?,
                    }),
                    e => Err(e),
                },
            },
            "data_size" => EventKind::DataSize {
                dev: self.req_str(&raw.dev, "dev")?,
                result: match self.errno_ret(raw.ret, "ret")? {
                    0 => Ok(self.req(raw.bytes, "bytes")?),
                    e => Err(e),
                },
            },
            "corrupt_load" => {
                let c = self.req_name(&raw.corruption, "corruption")?;
                EventKind::CorruptLoad {
                    dev: self.req_str(&raw.dev, "dev")?,
                    corruption: Corruption::from_name(c).ok_or_else(|| {
                        self.invalid(
                            "corruption",
                            &format!(
                                "unknown corruption `{c}` (expected one of {})",
                                Corruption::ALL.map(Corruption::name).join(", ")
                            ),
                        )
                    })?,
                    bytes: self.req(raw.bytes, "bytes")?,
                    ret: self.errno_ret(raw.ret, "ret")?,
                }
            }
            "regs" => {
                let st = self.req_name(&raw.stage, "stage")?;
                EventKind::Regs {
                    dev: self.req_str(&raw.dev, "dev")?,
                    stage: RegStage::from_name(st).ok_or_else(|| {
                        self.invalid(
                            "stage",
                            &format!("unknown stage `{st}` (expected saved or restored)"),
                        )
                    })?,
                    bar: self.req(raw.bar, "bar")?,
                    regs: self.registers(raw.registers.take())?,
                }
            }
            "precopy_info_v2" => EventKind::PrecopyInfoV2 {
                dev: self.req_str(&raw.dev, "dev")?,
                ret: self.errno_ret(raw.ret, "ret")?,
            },
            "dirty_report" => {
                let window = self.req(raw.window, "window")?;
                if window.0 > window.1 {
                    return Err(self.invalid(
                        "window",
                        &format!(
                            "[{}, {}] is backwards: t0 must not exceed t1",
                            window.0, window.1
                        ),
                    ));
                }
                let page_size = self.req(raw.page_size, "page_size")?;
                if !page_size.is_power_of_two() {
                    return Err(
                        self.invalid("page_size", &format!("{page_size} is not a power of two"))
                    );
                }
                EventKind::DirtyReport {
                    dev: self.req_str(&raw.dev, "dev")?,
                    iova: self.req(raw.iova, "iova")?,
                    len: self.req(raw.len, "len")?,
                    page_size,
                    window,
                    dirty_pages: self.req(raw.dirty_pages, "dirty_pages")?,
                }
            }
            "irq_bin" => {
                let kind = self.irq_kind(&raw.kind)?;
                let (t0, t1) = self.req(raw.window, "window")?;
                if t0 > t1 {
                    return Err(self.invalid(
                        "window",
                        &format!("[{t0}, {t1}] is backwards: t0 must not exceed t1"),
                    ));
                }
                if t1 > t {
                    return Err(self.invalid(
                        "window",
                        &format!("[{t0}, {t1}] ends after the event's t {t}: a bin is written once it closed"),
                    ));
                }
                let n = self.req(raw.n, "n")?;
                if n == 0 || (n == 1 && t0 != t1) {
                    return Err(self.invalid(
                        "n",
                        &format!("{n} interrupts cannot span [{t0}, {t1}] (the first is at t0, the last at t1)"),
                    ));
                }
                EventKind::IrqBin {
                    dev: self.req_str(&raw.dev, "dev")?,
                    kind,
                    vector: self.req(raw.vector, "vector")?,
                    n,
                    window: (t0, t1),
                }
            }
            other => {
                let other = other.to_owned();
                self.warn_unknown_ev(&other);
                return Ok(None);
            }
        };
        Ok(Some(Event {
            t,
            pid: raw.pid,
            kind,
        }))
    }

    /// Warns once per unknown event type.
    fn warn_unknown_ev(&mut self, ev: &str) {
        if !self.warned_ev.contains(ev) {
            self.warned_ev.insert(ev.to_owned());
            self.warnings.push(ReadWarning {
                line: self.line,
                msg: format!("unknown event type `{ev}` skipped (first seen here)"),
            });
        }
    }

    /// The required `kind` of an `irq` or `irq_bin`.
    fn irq_kind(&self, v: &Option<Cow<'_, str>>) -> Result<IrqKind, TraceError> {
        let kind = self.req_name(v, "kind")?;
        IrqKind::from_name(kind).ok_or_else(|| {
            self.invalid(
                "kind",
                &format!("unknown interrupt kind `{kind}` (expected msi, msix or intx)"),
            )
        })
    }

    fn req<T>(&self, v: Option<T>, field: &str) -> Result<T, TraceError> {
        v.ok_or_else(|| self.invalid(field, "missing (required for this event type)"))
    }

    fn req_str(&self, v: &Option<Cow<'_, str>>, field: &str) -> Result<String, TraceError> {
        self.req_name(v, field).map(|s| self.owned(s))
    }

    /// A required, non-empty string field, borrowed (for names parsed into enums).
    fn req_name<'s>(
        &self,
        v: &'s Option<Cow<'_, str>>,
        field: &str,
    ) -> Result<&'s str, TraceError> {
        match v {
            Some(s) if !s.is_empty() => Ok(s.as_ref()),
            Some(_) => Err(self.invalid(field, "empty")),
            None => Err(self.invalid(field, "missing (required for this event type)")),
        }
    }

    /// `s` as an owned string, in a recycled buffer when there is one.
    fn owned(&self, s: &str) -> String {
        let mut spare = self.spare.take();
        let out = match spare.pop() {
            Some(mut b) => {
                b.clear();
                b.push_str(s);
                b
            }
            None => s.to_owned(),
        };
        self.spare.set(spare);
        out
    }

    /// Hands an event read from this reader back once it is no longer needed, so that its
    /// strings' buffers are reused for the next events (a read-and-drop loop such as `check`
    /// then allocates nothing per event). Purely an optimisation: events read are the same.
    pub fn recycle(&mut self, ev: Event) {
        recycle_strings(ev, self.spare.get_mut());
    }

    fn state(&self, s: &str, field: &str) -> Result<MigState, TraceError> {
        MigState::from_name(s).ok_or_else(|| {
            self.invalid(
                field,
                &format!(
                    "unknown state name `{s}` (expected one of {})",
                    MigState::ALL.map(MigState::name).join(", ")
                ),
            )
        })
    }

    fn req_state(&self, v: &Option<Cow<'_, str>>, field: &str) -> Result<MigState, TraceError> {
        match v {
            Some(s) => self.state(s, field),
            None => Err(self.invalid(field, "missing (required for this event type)")),
        }
    }

    fn errno_ret(&self, v: Option<i64>, field: &str) -> Result<i32, TraceError> {
        let r = self.req(v, field)?;
        match i32::try_from(r) {
            Ok(r) if r <= 0 => Ok(r),
            _ => Err(self.invalid(field, &format!("{r} is not 0 or a negative errno"))),
        }
    }

    fn flags(&self, raw: &Raw<'_>) -> Result<MigFlags, TraceError> {
        let list = raw
            .flags
            .as_ref()
            .ok_or_else(|| self.invalid("flags", "missing (required for this event type)"))?;
        let mut bits = 0;
        for f in list {
            bits |= flag_bit(f).ok_or_else(|| {
                self.invalid(
                    "flags",
                    &format!("unknown migration flag `{f}` (expected STOP_COPY, P2P or PRE_COPY)"),
                )
            })?;
        }
        Ok(MigFlags(bits))
    }
}

impl<R: BufRead> JsonlReader<R> {
    /// `regs`' `registers`: each key an offset written `0x` + hex digits, each given once.
    fn registers(
        &self,
        map: Option<BTreeMap<String, u64>>,
    ) -> Result<BTreeMap<u64, u64>, TraceError> {
        let map = self.req(map, "registers")?;
        let mut out = BTreeMap::new();
        for (k, v) in map {
            let off = k
                .strip_prefix("0x")
                .filter(|h| !h.is_empty())
                .and_then(|h| u64::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    self.invalid(
                        "registers",
                        &format!("key `{k}` is not a register offset (0x followed by hex digits)"),
                    )
                })?;
            if out.insert(off, v).is_some() {
                return Err(self.invalid("registers", &format!("offset {off:#x} is given twice")));
            }
        }
        Ok(out)
    }

    /// A `data` event's file (`data_fd`, `fd_gen`, `reset_gen`): all three or none.
    fn data_file(&self, raw: &Raw<'_>) -> Result<Option<DataFile>, TraceError> {
        if raw.data_fd.is_none() && raw.fd_gen.is_none() && raw.reset_gen.is_none() {
            return Ok(None);
        }
        let fd = self.req(raw.data_fd, "data_fd")?;
        let fd = i32::try_from(fd)
            .ok()
            .filter(|fd| *fd >= 0)
            .ok_or_else(|| self.invalid("data_fd", &format!("{fd} is not a file descriptor")))?;
        let need = "missing (a `data` event with a file has data_fd, fd_gen and reset_gen)";
        let fd_gen = raw.fd_gen.ok_or_else(|| self.invalid("fd_gen", need))?;
        let reset_gen = raw
            .reset_gen
            .ok_or_else(|| self.invalid("reset_gen", need))?;
        Ok(Some(DataFile {
            fd,
            fd_gen,
            reset_gen,
        }))
    }

    /// A driver's 32-bit flags word (`precopy_info`'s `precopy_flags`).
    fn flag_word(&self, raw: &Raw<'_>) -> Result<u32, TraceError> {
        let b = self.req(raw.precopy_flags, "precopy_flags")?;
        u32::try_from(b).map_err(|_| self.invalid("precopy_flags", &format!("{b} exceeds 32 bits")))
    }
}

impl<R: BufRead> Iterator for JsonlReader<R> {
    type Item = Result<(u64, Event), TraceError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_event()
    }
}

/// Serialises the header as one JSON line (no newline).
pub fn header_to_json(h: &Header) -> String {
    let mut v = serde_json::Map::new();
    v.insert("migscope_trace".into(), h.version.into());
    v.insert("clock".into(), h.clock.clone().into());
    if let Some(k) = &h.kernel {
        v.insert("kernel".into(), k.clone().into());
    }
    if let Some(t) = &h.tool {
        v.insert("tool".into(), t.clone().into());
    }
    v.insert("sources".into(), sources_value(&h.sources));
    if let Some(x) = &h.hooks {
        v.insert("hooks".into(), x.clone().into());
    }
    serde_json::Value::Object(v).to_string()
}

/// A `sources` map (the header's or a device's) as a JSON object.
fn sources_value(sources: &BTreeMap<String, String>) -> serde_json::Value {
    sources
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn sources_json(sources: &BTreeMap<String, String>) -> String {
    sources_value(sources).to_string()
}

fn push_str(out: &mut String, key: &str, val: &str) {
    out.push_str(",\"");
    out.push_str(key);
    out.push_str("\":");
    // serde_json escapes exactly as JSON requires; writing into a String cannot fail.
    out.push_str(&serde_json::Value::from(val).to_string());
}

fn push_num(out: &mut String, key: &str, val: impl std::fmt::Display) {
    let _ = write!(out, ",\"{key}\":{val}");
}

/// Serialises one event as one JSON line (no newline), fields in the order of TRACE-FORMAT.md.
pub fn event_to_json(ev: &Event) -> String {
    let mut o = String::with_capacity(96);
    let _ = write!(o, "{{\"t\":{},\"ev\":\"{}\"", ev.t, ev.kind.ev());
    match &ev.kind {
        EventKind::Device {
            dev,
            flags,
            ctx,
            state,
            driver,
            sources,
        } => {
            push_str(&mut o, "dev", dev);
            o.push_str(",\"flags\":[");
            let names = crate::model::flag_names(*flags);
            for (i, n) in names.iter().enumerate() {
                if i > 0 {
                    o.push(',');
                }
                let _ = write!(o, "\"{n}\"");
            }
            o.push(']');
            push_str(&mut o, "ctx", ctx);
            push_str(&mut o, "state", state.name());
            if let Some(d) = driver {
                push_str(&mut o, "driver", d);
            }
            if !sources.is_empty() {
                o.push_str(",\"sources\":");
                o.push_str(&sources_json(sources));
            }
        }
        EventKind::Set { dev, to } => {
            push_str(&mut o, "dev", dev);
            push_str(&mut o, "to", to.name());
        }
        EventKind::Step { dev, from, to } => {
            push_str(&mut o, "dev", dev);
            push_str(&mut o, "from", from.name());
            push_str(&mut o, "to", to.name());
        }
        EventKind::SetDone {
            dev,
            to,
            ret,
            data_fd,
        } => {
            push_str(&mut o, "dev", dev);
            push_str(&mut o, "to", to.name());
            push_num(&mut o, "ret", ret);
            if let Some(fd) = data_fd {
                push_num(&mut o, "data_fd", fd);
            }
        }
        EventKind::Get { dev, state } => {
            push_str(&mut o, "dev", dev);
            push_str(&mut o, "state", state.name());
        }
        EventKind::Reset { dev, ret } => {
            push_str(&mut o, "dev", dev);
            push_num(&mut o, "ret", ret);
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
            push_str(&mut o, "dev", dev);
            push_str(&mut o, "src", src.name());
            push_num(&mut o, "iova", iova);
            push_num(&mut o, "len", len);
            push_num(&mut o, "write", write);
            if let Some((a, b)) = window {
                let _ = write!(o, ",\"window\":[{a},{b}]");
            }
            if let Some(p) = p2p {
                push_num(&mut o, "p2p", p);
            }
        }
        EventKind::Irq { dev, kind, vector } => {
            push_str(&mut o, "dev", dev);
            push_str(&mut o, "kind", kind.name());
            push_num(&mut o, "vector", vector);
        }
        EventKind::Map { ctx, iova, len } | EventKind::Unmap { ctx, iova, len } => {
            push_str(&mut o, "ctx", ctx);
            push_num(&mut o, "iova", iova);
            push_num(&mut o, "len", len);
        }
        EventKind::Data {
            dev,
            dir,
            bytes,
            file,
        } => {
            push_str(&mut o, "dev", dev);
            push_str(&mut o, "dir", dir.name());
            push_num(&mut o, "bytes", bytes);
            if let Some(f) = file {
                push_num(&mut o, "data_fd", f.fd);
                push_num(&mut o, "fd_gen", f.fd_gen);
                push_num(&mut o, "reset_gen", f.reset_gen);
            }
        }
        EventKind::Lost { n, source, dev } => {
            push_num(&mut o, "n", n);
            push_str(&mut o, "source", source);
            if let Some(d) = dev {
                push_str(&mut o, "dev", d);
            }
        }
        EventKind::Mark { label } => push_str(&mut o, "label", label),
        EventKind::End => {}
        EventKind::PrecopyInfo { dev, result } => {
            push_str(&mut o, "dev", dev);
            let ret = match result {
                Ok(i) => {
                    push_num(&mut o, "initial_bytes", i.initial_bytes);
                    push_num(&mut o, "dirty_bytes", i.dirty_bytes);
                    push_num(&mut o, "precopy_flags", i.flags);
                    0
                }
                Err(e) => *e,
            };
            push_num(&mut o, "ret", ret);
        }
        EventKind::DataSize { dev, result } => {
            push_str(&mut o, "dev", dev);
            let ret = match result {
                Ok(bytes) => {
                    push_num(&mut o, "bytes", bytes);
                    0
                }
                Err(e) => *e,
            };
            push_num(&mut o, "ret", ret);
        }
        EventKind::CorruptLoad {
            dev,
            corruption,
            bytes,
            ret,
        } => {
            push_str(&mut o, "dev", dev);
            push_str(&mut o, "corruption", corruption.name());
            push_num(&mut o, "bytes", bytes);
            push_num(&mut o, "ret", ret);
        }
        EventKind::Regs {
            dev,
            stage,
            bar,
            regs,
        } => {
            push_str(&mut o, "dev", dev);
            push_str(&mut o, "stage", stage.name());
            push_num(&mut o, "bar", bar);
            o.push_str(",\"registers\":{");
            for (i, (off, v)) in regs.iter().enumerate() {
                if i > 0 {
                    o.push(',');
                }
                let _ = write!(o, "\"{off:#x}\":{v}");
            }
            o.push('}');
        }
        EventKind::PrecopyInfoV2 { dev, ret } => {
            push_str(&mut o, "dev", dev);
            push_num(&mut o, "ret", ret);
        }
        EventKind::DirtyReport {
            dev,
            iova,
            len,
            page_size,
            window: (a, b),
            dirty_pages,
        } => {
            push_str(&mut o, "dev", dev);
            push_num(&mut o, "iova", iova);
            push_num(&mut o, "len", len);
            push_num(&mut o, "page_size", page_size);
            let _ = write!(o, ",\"window\":[{a},{b}]");
            push_num(&mut o, "dirty_pages", dirty_pages);
        }
        EventKind::IrqBin {
            dev,
            kind,
            vector,
            n,
            window: (a, b),
        } => {
            push_str(&mut o, "dev", dev);
            push_str(&mut o, "kind", kind.name());
            push_num(&mut o, "vector", vector);
            push_num(&mut o, "n", n);
            let _ = write!(o, ",\"window\":[{a},{b}]");
        }
    }
    if let Some(pid) = ev.pid {
        push_num(&mut o, "pid", pid);
    }
    o.push('}');
    o
}

/// Writes a JSONL trace. With [`JsonlWriter::create`] the file appears under its name only once
/// [`JsonlWriter::finish`] ran; until then it is `<name>.partial` (flushed on every
/// [`JsonlWriter::flush`], so a crash keeps what was recorded).
pub struct JsonlWriter<W: Write> {
    sink: TraceSink<W>,
}

pub use crate::outfile::partial_path;

impl JsonlWriter<BufWriter<File>> {
    /// Creates `<path>.partial` and writes the header.
    pub fn create(path: &Path, header: &Header) -> Result<Self, TraceError> {
        JsonlWriter::with_sink(TraceSink::create(path)?, header)
    }
}

impl<W: Write> JsonlWriter<W> {
    /// Writes the header to `out`.
    pub fn new(out: W, header: &Header) -> Result<Self, TraceError> {
        JsonlWriter::with_sink(TraceSink::new(out), header)
    }

    fn with_sink(sink: TraceSink<W>, header: &Header) -> Result<Self, TraceError> {
        let mut w = JsonlWriter { sink };
        let line = header_to_json(header);
        w.line(&line)?;
        Ok(w)
    }

    fn line(&mut self, s: &str) -> Result<(), TraceError> {
        self.sink.write_all(s.as_bytes())?;
        self.sink.write_all(b"\n")?;
        self.sink.end_record()
    }

    pub fn write(&mut self, ev: &Event) -> Result<(), TraceError> {
        let s = event_to_json(ev);
        self.line(&s)
    }

    pub fn flush(&mut self) -> Result<(), TraceError> {
        self.sink.flush()
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.sink.bytes()
    }

    /// Flushes and, for [`JsonlWriter::create`], syncs and renames the file into place.
    pub fn finish(self) -> Result<(), TraceError> {
        self.sink.finish()
    }

    /// The underlying writer (for in-memory traces).
    pub fn into_inner(self) -> W {
        self.sink.into_inner()
    }
}

/// A parser for the common shape of an event line (a flat object, unescaped strings, integer
/// numbers), about three times cheaper than serde's. It returns `None` for anything else
/// (escapes, floats, nested unknown values, duplicate or ill-typed fields, bad JSON), and the
/// caller then parses the line with serde as before: what it accepts it decodes exactly as
/// serde would (a differential property test holds it to that), and every error still comes
/// from serde.
mod fast {
    use std::borrow::Cow;

    use super::Raw;

    struct Lex<'a> {
        src: &'a str,
        b: &'a [u8],
        i: usize,
    }

    impl<'a> Lex<'a> {
        #[inline]
        fn ws(&mut self) {
            while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
                self.i += 1;
            }
        }

        #[inline]
        fn peek(&self) -> Option<u8> {
            self.b.get(self.i).copied()
        }

        #[inline]
        fn eat(&mut self, c: u8) -> Option<()> {
            (self.peek()? == c).then(|| self.i += 1)
        }

        fn lit(&mut self, word: &[u8]) -> Option<()> {
            let end = self.i.checked_add(word.len())?;
            (self.b.get(self.i..end)? == word).then(|| self.i = end)
        }

        /// `null` (consumed, true) or not (nothing consumed).
        fn null(&mut self) -> bool {
            self.lit(b"null").is_some()
        }

        /// A string without escapes or control characters.
        #[inline]
        fn string(&mut self) -> Option<&'a str> {
            self.eat(b'"')?;
            let start = self.i;
            loop {
                match *self.b.get(self.i)? {
                    b'"' => break,
                    b'\\' | 0..=0x1f => return None,
                    _ => self.i += 1,
                }
            }
            let s = self.src.get(start..self.i)?;
            self.i += 1;
            Some(s)
        }

        /// A non-negative integer as JSON writes it (no leading zero, no fraction/exponent).
        #[inline]
        fn uint(&mut self) -> Option<u64> {
            let start = self.i;
            let mut v: u64 = 0;
            while let Some(d @ b'0'..=b'9') = self.peek() {
                v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
                self.i += 1;
            }
            let n = self.i - start;
            if n == 0 || (n > 1 && self.b[start] == b'0') {
                return None;
            }
            match self.peek() {
                Some(b'.' | b'e' | b'E') => None,
                _ => Some(v),
            }
        }

        fn int(&mut self) -> Option<i64> {
            if self.eat(b'-').is_some() {
                let v = self.uint()?;
                // serde_json reads `-0` as a float, which no integer field accepts.
                if v == 0 {
                    None
                } else if v == 1 << 63 {
                    Some(i64::MIN)
                } else {
                    i64::try_from(v).ok().map(|x| -x)
                }
            } else {
                i64::try_from(self.uint()?).ok()
            }
        }

        fn opt_u64(&mut self) -> Option<Option<u64>> {
            if self.null() {
                return Some(None);
            }
            self.uint().map(Some)
        }

        fn opt_u32(&mut self) -> Option<Option<u32>> {
            if self.null() {
                return Some(None);
            }
            u32::try_from(self.uint()?).ok().map(Some)
        }

        fn opt_i64(&mut self) -> Option<Option<i64>> {
            if self.null() {
                return Some(None);
            }
            self.int().map(Some)
        }

        fn opt_str(&mut self) -> Option<Option<Cow<'a, str>>> {
            if self.null() {
                return Some(None);
            }
            self.string().map(|s| Some(Cow::Borrowed(s)))
        }

        fn opt_bool(&mut self) -> Option<Option<bool>> {
            match self.peek()? {
                b't' => self.lit(b"true").map(|()| Some(true)),
                b'f' => self.lit(b"false").map(|()| Some(false)),
                _ => self.lit(b"null").map(|()| None),
            }
        }

        fn opt_strs(&mut self) -> Option<Option<Vec<Cow<'a, str>>>> {
            if self.null() {
                return Some(None);
            }
            self.eat(b'[')?;
            let mut out = Vec::new();
            self.ws();
            if self.eat(b']').is_some() {
                return Some(Some(out));
            }
            loop {
                self.ws();
                out.push(Cow::Borrowed(self.string()?));
                self.ws();
                match self.peek()? {
                    b',' => self.i += 1,
                    b']' => {
                        self.i += 1;
                        return Some(Some(out));
                    }
                    _ => return None,
                }
            }
        }

        /// `flags`: an array of names or an integer.
        /// A `sources` map: an object of strings (a later duplicate key wins, as with serde).
        fn opt_strmap(&mut self) -> Option<Option<std::collections::BTreeMap<String, String>>> {
            if self.null() {
                return Some(None);
            }
            self.eat(b'{')?;
            let mut out = std::collections::BTreeMap::new();
            self.ws();
            if self.eat(b'}').is_some() {
                return Some(Some(out));
            }
            loop {
                self.ws();
                let k = self.string()?;
                self.ws();
                self.eat(b':')?;
                self.ws();
                let v = self.string()?;
                out.insert(k.to_owned(), v.to_owned());
                self.ws();
                match self.peek()? {
                    b',' => self.i += 1,
                    b'}' => {
                        self.i += 1;
                        return Some(Some(out));
                    }
                    _ => return None,
                }
            }
        }

        fn opt_pair(&mut self) -> Option<Option<(u64, u64)>> {
            if self.null() {
                return Some(None);
            }
            self.eat(b'[')?;
            self.ws();
            let a = self.uint()?;
            self.ws();
            self.eat(b',')?;
            self.ws();
            let b = self.uint()?;
            self.ws();
            self.eat(b']')?;
            Some(Some((a, b)))
        }

        /// `regs`' `registers`: an object of non-negative integers.
        fn opt_u64map(&mut self) -> Option<Option<std::collections::BTreeMap<String, u64>>> {
            if self.null() {
                return Some(None);
            }
            self.eat(b'{')?;
            let mut out = std::collections::BTreeMap::new();
            self.ws();
            if self.eat(b'}').is_some() {
                return Some(Some(out));
            }
            loop {
                self.ws();
                let k = self.string()?;
                self.ws();
                self.eat(b':')?;
                self.ws();
                let v = self.uint()?;
                out.insert(k.to_owned(), v);
                self.ws();
                match self.peek()? {
                    b',' => self.i += 1,
                    b'}' => {
                        self.i += 1;
                        return Some(Some(out));
                    }
                    _ => return None,
                }
            }
        }

        /// The value of a field this format does not know: only scalars take the fast path.
        fn skip(&mut self) -> Option<()> {
            match self.peek()? {
                b'"' => self.string().map(drop),
                b't' => self.lit(b"true"),
                b'f' => self.lit(b"false"),
                b'n' => self.lit(b"null"),
                b'-' | b'0'..=b'9' => self.int().map(drop),
                _ => None,
            }
        }
    }

    /// Sets `field` once; a second occurrence (serde: "duplicate field") leaves the fast path.
    macro_rules! once {
        ($seen:ident, $bit:expr, $slot:expr, $val:expr) => {{
            let bit: u64 = 1 << $bit;
            if $seen & bit != 0 {
                return None;
            }
            $seen |= bit;
            $slot = $val?;
        }};
    }

    /// Decodes `line` as serde would, or `None` to let serde do it.
    #[cfg(test)]
    pub(super) fn raw(line: &str) -> Option<Raw<'_>> {
        let mut r = Raw::default();
        fill(line, &mut r)?;
        Some(r)
    }

    /// Decodes `line` into `r` (a default `Raw`) as serde would, or `None` (with `r` partly
    /// filled) to let serde do it. Filling in place spares copying the large struct around.
    pub(super) fn fill<'a>(line: &'a str, r: &mut Raw<'a>) -> Option<()> {
        let mut l = Lex {
            src: line,
            b: line.as_bytes(),
            i: 0,
        };
        let mut seen: u64 = 0;
        l.ws();
        l.eat(b'{')?;
        l.ws();
        if l.eat(b'}').is_none() {
            loop {
                l.ws();
                let key = l.string()?;
                l.ws();
                l.eat(b':')?;
                l.ws();
                match key {
                    "t" => once!(seen, 0, r.t, l.opt_u64()),
                    "ev" => once!(seen, 1, r.ev, l.opt_str()),
                    "pid" => once!(seen, 2, r.pid, l.opt_u32()),
                    "dev" => once!(seen, 3, r.dev, l.opt_str()),
                    "flags" => once!(seen, 4, r.flags, l.opt_strs()),
                    "ctx" => once!(seen, 5, r.ctx, l.opt_str()),
                    "state" => once!(seen, 6, r.state, l.opt_str()),
                    "driver" => once!(seen, 7, r.driver, l.opt_str()),
                    "to" => once!(seen, 8, r.to, l.opt_str()),
                    "from" => once!(seen, 9, r.from, l.opt_str()),
                    "ret" => once!(seen, 10, r.ret, l.opt_i64()),
                    "data_fd" => once!(seen, 11, r.data_fd, l.opt_i64()),
                    "src" => once!(seen, 12, r.src, l.opt_str()),
                    "iova" => once!(seen, 13, r.iova, l.opt_u64()),
                    "len" => once!(seen, 14, r.len, l.opt_u64()),
                    "write" => once!(seen, 15, r.write, l.opt_bool()),
                    "window" => once!(seen, 16, r.window, l.opt_pair()),
                    "p2p" => once!(seen, 17, r.p2p, l.opt_bool()),
                    "kind" => once!(seen, 18, r.kind, l.opt_str()),
                    "vector" => once!(seen, 19, r.vector, l.opt_u32()),
                    "dir" => once!(seen, 20, r.dir, l.opt_str()),
                    "bytes" => once!(seen, 21, r.bytes, l.opt_u64()),
                    "n" => once!(seen, 22, r.n, l.opt_u64()),
                    "source" => once!(seen, 23, r.source, l.opt_str()),
                    "label" => once!(seen, 24, r.label, l.opt_str()),
                    "migscope_trace" => once!(seen, 25, r.migscope_trace, l.opt_u64()),
                    "clock" => once!(seen, 26, r.clock, l.opt_str()),
                    "kernel" => once!(seen, 27, r.kernel, l.opt_str()),
                    "tool" => once!(seen, 28, r.tool, l.opt_str()),
                    "sources" => once!(seen, 29, r.sources, l.opt_strmap()),
                    "initial_bytes" => once!(seen, 30, r.initial_bytes, l.opt_u64()),
                    "dirty_bytes" => once!(seen, 31, r.dirty_bytes, l.opt_u64()),
                    "precopy_flags" => once!(seen, 32, r.precopy_flags, l.opt_u64()),
                    "fd_gen" => once!(seen, 33, r.fd_gen, l.opt_u64()),
                    "reset_gen" => once!(seen, 34, r.reset_gen, l.opt_u64()),
                    "corruption" => once!(seen, 35, r.corruption, l.opt_str()),
                    "stage" => once!(seen, 36, r.stage, l.opt_str()),
                    "bar" => once!(seen, 37, r.bar, l.opt_u32()),
                    "registers" => once!(seen, 38, r.registers, l.opt_u64map()),
                    "page_size" => once!(seen, 39, r.page_size, l.opt_u64()),
                    "dirty_pages" => once!(seen, 40, r.dirty_pages, l.opt_u64()),
                    "hooks" => once!(seen, 41, r.hooks, l.opt_str()),
                    _ => l.skip()?,
                }
                l.ws();
                match l.peek()? {
                    b',' => l.i += 1,
                    b'}' => {
                        l.i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        l.ws();
        (l.i == l.b.len()).then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type ReadAll = (Header, Vec<(u64, Event)>, Vec<ReadWarning>);

    fn read_all(s: &str) -> Result<ReadAll, TraceError> {
        let mut r = JsonlReader::new("t.jsonl", s.as_bytes())?;
        let mut evs = Vec::new();
        while let Some(e) = r.next_event() {
            evs.push(e?);
        }
        Ok((r.header().clone(), evs, r.warnings().to_vec()))
    }

    fn err_of(s: &str) -> (u64, String, String) {
        match read_all(s) {
            Err(TraceError::Invalid {
                line, field, msg, ..
            }) => (line, field, msg),
            other => panic!("expected an Invalid error, got {other:?}"),
        }
    }

    const H: &str =
        "{\"migscope_trace\":1,\"clock\":\"monotonic_ns\",\"sources\":{\"witness\":\"ok\"}}\n";

    #[test]
    fn reads_header_and_events_ignoring_unknown_fields_and_blank_lines() {
        let s = format!(
            "{H}\n{{\"t\":0,\"ev\":\"device\",\"dev\":\"0000:00:02.0\",\"flags\":[\"STOP_COPY\",\"P2P\"],\"ctx\":\"vm\",\"future\":{{\"x\":1}}}}\n\n{{\"t\":5,\"ev\":\"end\"}}\n"
        );
        let (h, evs, w) = read_all(&s).expect("valid");
        assert!(h.source_ok("witness"));
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0].0, 3, "line numbers count blank lines");
        assert_eq!(evs[1].0, 5);
        match &evs[0].1.kind {
            EventKind::Device { flags, state, .. } => {
                assert_eq!(*flags, MigFlags(3));
                assert_eq!(*state, MigState::Running, "default initial state");
            }
            k => panic!("unexpected {k:?}"),
        }
        assert!(w.is_empty());
    }

    #[test]
    fn errors_name_line_and_field() {
        // No header at all: not a trace, said so (issue 15), still naming the header field.
        for s in [
            "",
            "{\"t\":0,\"ev\":\"end\"}\n",
            "{\n  \"migscope_trace\": 1\n}\n",
        ] {
            match read_all(s) {
                Err(e @ TraceError::NotATrace { .. }) => {
                    let m = e.to_string();
                    assert!(m.starts_with("t.jsonl:1: not a migscope trace"), "{m}");
                    assert!(
                        m.contains("migscope_trace") || m.contains("pretty-printed"),
                        "{m}"
                    );
                }
                other => panic!("{s:?}: expected NotATrace, got {other:?}"),
            }
        }
        // A header with a bad field is a trace with an error, not a foreign file.
        assert_eq!(err_of("{\"migscope_trace\":2}\n").1, "migscope_trace");
        let (l, f, m) = err_of(&format!(
            "{H}{{\"t\":0,\"ev\":\"set\",\"dev\":\"d\",\"to\":\"HALF\"}}\n"
        ));
        assert_eq!((l, f.as_str()), (2, "to"));
        assert!(m.contains("HALF"), "{m}");
        let (l, f, _) = err_of(&format!("{H}{{\"t\":0,\"ev\":\"set\",\"to\":\"STOP\"}}\n"));
        assert_eq!((l, f.as_str()), (2, "dev"));
        let (l, f, _) = err_of(&format!(
            "{H}{{\"t\":9,\"ev\":\"end\"}}\n{{\"t\":3,\"ev\":\"end\"}}\n"
        ));
        assert_eq!((l, f.as_str()), (3, "t"));
        let (l, f, _) = err_of(&format!("{H}not json\n"));
        assert_eq!((l, f.as_str()), (2, "-"));
        let (l, f, m) = err_of(&format!("{H}{{\"t\":\"soon\",\"ev\":\"end\"}}\n"));
        assert_eq!((l, f.as_str()), (2, "t"), "{m}");
        let (_, f, _) = err_of(&format!("{H}{{\"ev\":\"end\"}}\n"));
        assert_eq!(f, "t");
        let (_, f, _) = err_of(&format!("{H}{{\"t\":1}}\n"));
        assert_eq!(f, "ev");
        let (_, f, _) = err_of(&format!(
            "{H}{{\"t\":1,\"ev\":\"dma\",\"dev\":\"d\",\"src\":\"witness\",\"iova\":0,\"len\":1,\"write\":true,\"window\":[5,2]}}\n"
        ));
        assert_eq!(f, "window");
        for (line, field) in [
            (
                r#"{"t":9,"ev":"irq_bin","dev":"d","kind":"msi","vector":0,"n":3,"window":[5,2]}"#,
                "window",
            ),
            (
                r#"{"t":9,"ev":"irq_bin","dev":"d","kind":"msi","vector":0,"n":3,"window":[5,10]}"#,
                "window",
            ),
            (
                r#"{"t":9,"ev":"irq_bin","dev":"d","kind":"msi","vector":0,"n":3}"#,
                "window",
            ),
            (
                r#"{"t":9,"ev":"irq_bin","dev":"d","kind":"msi","vector":0,"n":0,"window":[5,9]}"#,
                "n",
            ),
            (
                r#"{"t":9,"ev":"irq_bin","dev":"d","kind":"msi","vector":0,"n":1,"window":[5,9]}"#,
                "n",
            ),
            (
                r#"{"t":9,"ev":"irq_bin","dev":"d","kind":"nmi","vector":0,"n":2,"window":[5,9]}"#,
                "kind",
            ),
        ] {
            let (l, f, m) = err_of(&format!("{H}{line}\n"));
            assert_eq!((l, f.as_str()), (2, field), "{line}: {m}");
        }
        let (_, f, _) = err_of(&format!(
            "{H}{{\"t\":1,\"ev\":\"reset\",\"dev\":\"d\",\"ret\":3}}\n"
        ));
        assert_eq!(f, "ret");
    }

    /// A `map`/`unmap` line with a bad field is an error naming it, not an unknown (newer)
    /// event skipped with a warning: the reader knows these kinds.
    #[test]
    fn a_bad_map_line_is_an_error_not_an_unknown_event() {
        for ev in ["map", "unmap"] {
            let (_, f, _) = err_of(&format!(
                "{H}{{\"t\":1,\"ev\":\"{ev}\",\"ctx\":\"c\",\"iova\":\"x\",\"len\":4096}}\n"
            ));
            assert_eq!(f, "iova", "{ev}");
        }
    }

    #[test]
    fn unknown_ev_warns_once_per_value() {
        let s = format!(
            "{H}{{\"t\":1,\"ev\":\"wobble\"}}\n{{\"t\":2,\"ev\":\"wobble\"}}\n{{\"t\":3,\"ev\":\"flip\"}}\n{{\"t\":4,\"ev\":\"end\"}}\n"
        );
        let (_, evs, w) = read_all(&s).expect("valid");
        assert_eq!(evs.len(), 1);
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].line, 2);
        assert!(w[0].msg.contains("wobble"));
        assert!(w[1].msg.contains("flip"));
    }

    #[test]
    fn a_device_line_carries_its_own_sources() {
        let s = concat!(
            "{\"migscope_trace\":1,\"sources\":{\"witness\":\"ok\",\"irq\":\"ok\"}}\n",
            "{\"t\":0,\"ev\":\"device\",\"dev\":\"0000:00:03.0\",\"flags\":[\"STOP_COPY\"],\"ctx\":\"vm\",",
            "\"sources\":{\"witness\":\"unavailable: no workload DMA landed\"}}\n",
            "{\"t\":1,\"ev\":\"device\",\"dev\":\"0000:00:04.0\",\"flags\":[\"STOP_COPY\"],\"ctx\":\"vm\"}\n",
        );
        let (h, evs, _) = read_all(s).expect("valid");
        assert_eq!(h.sources.len(), 2);
        match &evs[0].1.kind {
            EventKind::Device { sources, .. } => assert_eq!(
                sources.get("witness").map(String::as_str),
                Some("unavailable: no workload DMA landed")
            ),
            other => panic!("{other:?}"),
        }
        match &evs[1].1.kind {
            EventKind::Device { sources, .. } => assert!(sources.is_empty(), "{sources:?}"),
            other => panic!("{other:?}"),
        }
        // Written back, the device line keeps its map and a device without one gets none.
        let line = event_to_json(&evs[0].1);
        assert!(
            line.ends_with(r#","sources":{"witness":"unavailable: no workload DMA landed"}}"#),
            "{line}"
        );
        assert!(!event_to_json(&evs[1].1).contains("sources"));
    }

    #[test]
    fn every_event_kind_round_trips() {
        let d = || "0000:00:02.0".to_owned();
        let kinds = vec![
            EventKind::Device {
                dev: d(),
                flags: MigFlags(7),
                ctx: "vm\"1".into(),
                state: MigState::Stop,
                driver: Some("edu-mig".into()),
                sources: Default::default(),
            },
            EventKind::Device {
                dev: "peer".into(),
                flags: MigFlags(3),
                ctx: "vm\"1".into(),
                state: MigState::Running,
                driver: None,
                sources: [
                    (
                        "witness".to_owned(),
                        "unavailable: no workload \"DMA\"".to_owned(),
                    ),
                    ("irq".to_owned(), "ok".to_owned()),
                ]
                .into(),
            },
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
                to: MigState::StopCopy,
                ret: 0,
                data_fd: Some(11),
            },
            EventKind::SetDone {
                dev: d(),
                to: MigState::Stop,
                ret: -22,
                data_fd: None,
            },
            EventKind::Get {
                dev: d(),
                state: MigState::PreCopyP2p,
            },
            EventKind::Reset { dev: d(), ret: 0 },
            EventKind::Dma {
                dev: d(),
                src: DmaSource::Witness,
                iova: 1 << 40,
                len: 4096,
                write: true,
                window: Some((3, 9)),
                p2p: Some(false),
            },
            EventKind::Dma {
                dev: d(),
                src: DmaSource::Fault,
                iova: 0,
                len: 0,
                write: false,
                window: None,
                p2p: None,
            },
            EventKind::Irq {
                dev: d(),
                kind: IrqKind::Msix,
                vector: 3,
            },
            EventKind::Map {
                ctx: "c".into(),
                iova: 1,
                len: 2,
            },
            EventKind::Unmap {
                ctx: "c".into(),
                iova: 1,
                len: 2,
            },
            EventKind::Data {
                dev: d(),
                dir: DataDir::Load,
                bytes: 77,
                file: None,
            },
            EventKind::Data {
                dev: d(),
                dir: DataDir::Save,
                bytes: 80,
                file: Some(DataFile {
                    fd: 9,
                    fd_gen: 0,
                    reset_gen: u64::MAX,
                }),
            },
            EventKind::Lost {
                n: 4,
                source: "ringbuf".into(),
                dev: None,
            },
            EventKind::Mark {
                label: "hello\nworld ✓".into(),
            },
            EventKind::PrecopyInfo {
                dev: d(),
                result: Ok(PrecopyInfo {
                    initial_bytes: 80,
                    dirty_bytes: 0,
                    flags: 1,
                }),
            },
            EventKind::PrecopyInfo {
                dev: d(),
                result: Err(-22),
            },
            EventKind::DataSize {
                dev: d(),
                result: Ok(u64::MAX),
            },
            EventKind::DataSize {
                dev: d(),
                result: Err(-25),
            },
            EventKind::PrecopyInfoV2 { dev: d(), ret: 0 },
            EventKind::PrecopyInfoV2 { dev: d(), ret: -25 },
            EventKind::DirtyReport {
                dev: d(),
                iova: 0x10_0000,
                len: 0x4000,
                page_size: 4096,
                window: (0, u64::MAX),
                dirty_pages: 3,
            },
            EventKind::IrqBin {
                dev: d(),
                kind: IrqKind::Msix,
                vector: 3,
                n: u64::MAX,
                window: (1, 7),
            },
            EventKind::End,
        ];
        let header = Header {
            kernel: Some("6.12.0".into()),
            sources: [("irq".to_owned(), "unavailable: no \"vfio\"".to_owned())].into(),
            hooks: Some("direct (migration data files through the syscall tracepoints: x)".into()),
            ..Header::default()
        };
        let events: Vec<Event> = kinds
            .into_iter()
            .enumerate()
            .map(|(i, kind)| Event {
                t: i as u64 * 10,
                pid: (i % 2 == 0).then_some(42),
                kind,
            })
            .collect();
        let mut w = JsonlWriter::new(Vec::new(), &header).expect("header");
        for e in &events {
            w.write(e).expect("write");
        }
        let bytes = w.into_inner();
        let text = String::from_utf8(bytes).expect("utf8");
        let (h2, back, warns) = read_all(&text).expect("reads back");
        assert_eq!(h2, header);
        assert!(warns.is_empty());
        assert_eq!(back.into_iter().map(|(_, e)| e).collect::<Vec<_>>(), events);
    }

    #[test]
    fn create_writes_partial_then_renames() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("t.jsonl");
        let mut w = JsonlWriter::create(&p, &Header::default()).expect("create");
        w.write(&Event {
            t: 1,
            pid: None,
            kind: EventKind::End,
        })
        .expect("write");
        w.flush().expect("flush");
        assert!(partial_path(&p).exists() && !p.exists());
        w.finish().expect("finish");
        assert!(p.exists() && !partial_path(&p).exists());
        let r = JsonlReader::open(&p).expect("open");
        assert_eq!(r.count(), 1);
    }

    use proptest::prelude::*;

    const EDIT_CHARS: &[char] = &[
        '"', '\\', ',', ':', '{', '}', '[', ']', '0', '1', '9', '-', '.', 'e', 'E', '+', ' ', '\t',
        'n', 'u', 'l', 't', 'f', 'x', '\u{1}', '\u{e9}',
    ];

    #[test]
    fn fast_path_edge_cases_match_serde() {
        let lines = [
            r#"{}"#,
            r#" { } "#,
            r#"{"t":1,"ev":"end"}"#,
            r#"{"t":1,"ev":"end","t":2}"#,
            r#"{"t":1,"ev":"end",}"#,
            r#"{"t":1,"ev":"end"} x"#,
            r#"{"t":01,"ev":"end"}"#,
            r#"{"t":-0,"ev":"end"}"#,
            r#"{"t":1.0,"ev":"end"}"#,
            r#"{"t":1e3,"ev":"end"}"#,
            r#"{"t":18446744073709551615,"ev":"end"}"#,
            r#"{"t":18446744073709551616,"ev":"end"}"#,
            r#"{"t":null,"ev":null,"pid":null}"#,
            r#"{"t":1,"pid":4294967295}"#,
            r#"{"t":1,"pid":4294967296}"#,
            r#"{"t":1,"ret":-9223372036854775808,"data_fd":-0}"#,
            r#"{"t":1,"ret":-9223372036854775809}"#,
            r#"{"t":1,"flags":[],"window":[1,2]}"#,
            r#"{"t":1,"flags":[ "P2P" , "STOP_COPY" ],"window":[ 1 , 2 ]}"#,
            r#"{"t":1,"flags":["P2P",],"window":[1,2,3]}"#,
            r#"{"t":1,"precopy_flags":7,"initial_bytes":0,"dirty_bytes":18446744073709551615}"#,
            r#"{"t":1,"precopy_flags":-7}"#,
            r#"{"t":1,"precopy_flags":7.5}"#,
            r#"{"t":1,"flags":7}"#,
            r#"{"t":1,"flags":null,"initial_bytes":null}"#,
            r#"{"t":1,"flags":"P2P"}"#,
            r#"{"t":1,"flags":[1]}"#,
            r#"{"t":1,"initial_bytes":1,"initial_bytes":2}"#,
            r#"{"t":1,"window":[1]}"#,
            r#"{"t":1,"future":{"x":1}}"#,
            r#"{"t":1,"future":[1,2],"other":-5,"s":"x","b":true,"c":null}"#,
            r#"{"t":1,"future":1.5}"#,
            r#"{"t":1,"dev":"a"b"}"#,
            "{\"t\":1,\"dev\":\"a\u{1}b\"}",
            r#"{"t":1,"write":true,"p2p":false}"#,
            r#"{"t":1,"write":1}"#,
            r#"{"t":1,"dev":1}"#,
            r#"{"t":true}"#,
            r#"[1,"end"]"#,
            r#"{"migscope_trace":1,"clock":"monotonic_ns","sources":{"irq":"ok"}}"#,
        ];
        for l in lines {
            let slow = serde_json::from_str::<Raw<'_>>(l).ok();
            if let Some(f) = fast::raw(l) {
                assert_eq!(Some(f), slow, "line {l}");
            }
        }
        // The writer's lines take the fast path.
        assert!(fast::raw(r#"{"t":1,"ev":"end"}"#).is_some());
        assert!(fast::raw(r#"{"t":1,"ret":-22,"data_fd":0}"#).is_some());
        assert!(
            fast::raw(r#"{"t":1,"precopy_flags":0,"initial_bytes":80,"dirty_bytes":0}"#).is_some()
        );
    }

    fn state() -> impl Strategy<Value = MigState> {
        (0u32..8).prop_map(|n| MigState::from_u32(n).expect("0..8"))
    }

    fn kind() -> impl Strategy<Value = EventKind> {
        let s = "[ -~]{1,12}|[\u{e9}\u{2713}\"\\\\]{1,4}";
        prop_oneof![
            (
                s,
                0u32..8,
                s,
                state(),
                proptest::option::of(s),
                proptest::collection::btree_map(s, s, 0..3)
            )
                .prop_map(|(dev, f, ctx, state, driver, sources)| {
                    EventKind::Device {
                        dev,
                        flags: MigFlags(f),
                        ctx,
                        state,
                        driver,
                        sources,
                    }
                }),
            (s, state()).prop_map(|(dev, to)| EventKind::Set { dev, to }),
            (s, state(), state()).prop_map(|(dev, from, to)| EventKind::Step { dev, from, to }),
            (s, state(), -200i32..=0, proptest::option::of(-1i32..1000)).prop_map(
                |(dev, to, ret, data_fd)| EventKind::SetDone {
                    dev,
                    to,
                    ret,
                    data_fd
                }
            ),
            (
                s,
                any::<u64>(),
                any::<u64>(),
                any::<bool>(),
                proptest::option::of((0u64..10, 10u64..20)),
                proptest::option::of(any::<bool>()),
                0usize..5
            )
                .prop_map(|(dev, iova, len, write, window, p2p, src)| EventKind::Dma {
                    dev,
                    src: DmaSource::ALL[src],
                    iova,
                    len,
                    write,
                    window,
                    p2p
                }),
            (s, 0usize..3, any::<u32>()).prop_map(|(dev, k, vector)| EventKind::Irq {
                dev,
                kind: IrqKind::ALL[k],
                vector
            }),
            (s, any::<u64>(), proptest::option::of(s))
                .prop_map(|(source, n, dev)| EventKind::Lost { n, source, dev }),
            ".{0,20}".prop_map(|label| EventKind::Mark { label }),
            (s, precopy_result()).prop_map(|(dev, result)| EventKind::PrecopyInfo { dev, result }),
            (
                s,
                prop_oneof![any::<u64>().prop_map(Ok), (i32::MIN..0).prop_map(Err)]
            )
                .prop_map(|(dev, result)| EventKind::DataSize { dev, result }),
            (
                s,
                any::<bool>(),
                any::<u64>(),
                proptest::option::of((0i32..=i32::MAX, any::<u64>(), any::<u64>()))
            )
                .prop_map(|(dev, load, bytes, file)| EventKind::Data {
                    dev,
                    dir: if load { DataDir::Load } else { DataDir::Save },
                    bytes,
                    file: file.map(|(fd, fd_gen, reset_gen)| DataFile {
                        fd,
                        fd_gen,
                        reset_gen
                    }),
                }),
            (s, i32::MIN..=0).prop_map(|(dev, ret)| EventKind::PrecopyInfoV2 { dev, ret }),
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

    fn precopy_result() -> impl Strategy<Value = Result<PrecopyInfo, i32>> {
        prop_oneof![
            (any::<u64>(), any::<u64>(), any::<u32>()).prop_map(
                |(initial_bytes, dirty_bytes, flags)| Ok(PrecopyInfo {
                    initial_bytes,
                    dirty_bytes,
                    flags
                })
            ),
            (i32::MIN..0).prop_map(Err),
        ]
    }

    #[test]
    fn new_kinds_read_as_documented() {
        let s = format!(
            "{H}{}\n{}\n{}\n{}\n",
            r#"{"t":1,"ev":"precopy_info","dev":"d","initial_bytes":80,"dirty_bytes":5,"precopy_flags":0,"ret":0}"#,
            r#"{"t":2,"ev":"precopy_info","dev":"d","ret":-22}"#,
            r#"{"t":3,"ev":"data_size","dev":"d","bytes":4096,"ret":0}"#,
            r#"{"t":4,"ev":"data_size","dev":"d","bytes":7,"ret":-5}"#,
        );
        let (_, evs, w) = read_all(&s).expect("valid");
        assert!(w.is_empty(), "{w:?}");
        let kinds: Vec<EventKind> = evs.into_iter().map(|(_, e)| e.kind).collect();
        assert_eq!(
            kinds,
            [
                EventKind::PrecopyInfo {
                    dev: "d".into(),
                    result: Ok(PrecopyInfo {
                        initial_bytes: 80,
                        dirty_bytes: 5,
                        flags: 0
                    })
                },
                EventKind::PrecopyInfo {
                    dev: "d".into(),
                    result: Err(-22)
                },
                EventKind::DataSize {
                    dev: "d".into(),
                    result: Ok(4096)
                },
                // A failed GET returned nothing: a stray `bytes` is not a value.
                EventKind::DataSize {
                    dev: "d".into(),
                    result: Err(-5)
                },
            ]
        );
        // A successful reply needs its values; its flags word is `precopy_flags`, an integer.
        for (line, field) in [
            (
                r#"{"t":1,"ev":"precopy_info","dev":"d","dirty_bytes":5,"precopy_flags":0,"ret":0}"#,
                "initial_bytes",
            ),
            (
                r#"{"t":1,"ev":"precopy_info","dev":"d","initial_bytes":1,"dirty_bytes":5,"ret":0}"#,
                "precopy_flags",
            ),
            (
                r#"{"t":1,"ev":"precopy_info","dev":"d","initial_bytes":1,"dirty_bytes":5,"precopy_flags":4294967296,"ret":0}"#,
                "precopy_flags",
            ),
            (
                r#"{"t":1,"ev":"precopy_info","dev":"d","initial_bytes":1,"dirty_bytes":5,"precopy_flags":-1,"ret":0}"#,
                "precopy_flags",
            ),
            (r#"{"t":1,"ev":"data_size","dev":"d","ret":0}"#, "bytes"),
            (
                r#"{"t":1,"ev":"data_size","dev":"d","bytes":1,"ret":1}"#,
                "ret",
            ),
            (
                r#"{"t":1,"ev":"device","dev":"d","flags":3,"ctx":"c"}"#,
                "flags",
            ),
        ] {
            let (l, f, m) = err_of(&format!("{H}{line}\n"));
            assert_eq!((l, f.as_str()), (2, field), "{line}: {m}");
        }
    }

    #[test]
    fn data_files_and_the_precopy_v2_opt_in_read_as_documented() {
        let s = format!(
            "{H}{}\n{}\n{}\n{}\n",
            r#"{"t":1,"ev":"data","dev":"d","dir":"save","bytes":80}"#,
            r#"{"t":2,"ev":"data","dev":"d","dir":"save","bytes":80,"data_fd":7,"fd_gen":0,"reset_gen":1}"#,
            r#"{"t":3,"ev":"precopy_info_v2","dev":"d","ret":0}"#,
            r#"{"t":4,"ev":"precopy_info_v2","dev":"d","ret":-25}"#,
        );
        let (_, evs, w) = read_all(&s).expect("valid");
        assert!(w.is_empty(), "{w:?}");
        let kinds: Vec<EventKind> = evs.into_iter().map(|(_, e)| e.kind).collect();
        let data = |file| EventKind::Data {
            dev: "d".into(),
            dir: DataDir::Save,
            bytes: 80,
            file,
        };
        assert_eq!(
            kinds,
            [
                data(None),
                data(Some(DataFile {
                    fd: 7,
                    fd_gen: 0,
                    reset_gen: 1
                })),
                EventKind::PrecopyInfoV2 {
                    dev: "d".into(),
                    ret: 0
                },
                EventKind::PrecopyInfoV2 {
                    dev: "d".into(),
                    ret: -25
                },
            ]
        );
        // A file is named whole: its fd and both generations, or nothing.
        for (line, field) in [
            (
                r#"{"t":1,"ev":"data","dev":"d","dir":"save","bytes":1,"data_fd":7,"reset_gen":1}"#,
                "fd_gen",
            ),
            (
                r#"{"t":1,"ev":"data","dev":"d","dir":"save","bytes":1,"fd_gen":0,"reset_gen":1}"#,
                "data_fd",
            ),
            (
                r#"{"t":1,"ev":"data","dev":"d","dir":"save","bytes":1,"data_fd":-1,"fd_gen":0,"reset_gen":0}"#,
                "data_fd",
            ),
            (
                r#"{"t":1,"ev":"data","dev":"d","dir":"save","bytes":1,"data_fd":7,"fd_gen":0,"reset_gen":-1}"#,
                "reset_gen",
            ),
            (r#"{"t":1,"ev":"precopy_info_v2","dev":"d"}"#, "ret"),
            (
                r#"{"t":9,"ev":"dirty_report","dev":"d","iova":0,"len":4096,"page_size":4096,"dirty_pages":0}"#,
                "window",
            ),
            (
                r#"{"t":9,"ev":"dirty_report","dev":"d","iova":0,"len":4096,"page_size":4096,"window":[9,3],"dirty_pages":0}"#,
                "window",
            ),
            (
                r#"{"t":9,"ev":"dirty_report","dev":"d","iova":0,"len":4096,"page_size":4000,"window":[3,9],"dirty_pages":0}"#,
                "page_size",
            ),
            (
                r#"{"t":9,"ev":"dirty_report","dev":"d","iova":0,"len":4096,"page_size":4096,"window":[3,9]}"#,
                "dirty_pages",
            ),
        ] {
            let (l, f, m) = err_of(&format!("{H}{line}\n"));
            assert_eq!((l, f.as_str()), (2, field), "{line}: {m}");
        }
        // The writer's lines take the fast path.
        assert!(
            fast::raw(r#"{"t":2,"ev":"data","dev":"d","dir":"save","bytes":80,"data_fd":7,"fd_gen":0,"reset_gen":1}"#)
                .is_some()
        );
    }

    proptest! {
        #[test]
        fn random_events_round_trip(kinds in proptest::collection::vec(kind(), 0..40), pid in proptest::option::of(any::<u32>())) {
            let events: Vec<Event> = kinds.into_iter().enumerate().map(|(i, kind)| Event { t: i as u64, pid, kind }).collect();
            let mut w = JsonlWriter::new(Vec::new(), &Header::default()).expect("header");
            for e in &events {
                w.write(e).expect("write");
            }
            let text = String::from_utf8(w.into_inner()).expect("utf8");
            let (_, back, _) = read_all(&text).expect("reads back");
            prop_assert_eq!(back.into_iter().map(|(_, e)| e).collect::<Vec<_>>(), events);
        }

        /// The fast line parser agrees with serde on every line it accepts (random event lines,
        /// randomly edited), and accepts every line the writer produces without escapes.
        #[test]
        fn fast_path_decodes_exactly_as_serde(
            kinds in proptest::collection::vec(kind(), 1..6),
            pid in proptest::option::of(any::<u32>()),
            edits in proptest::collection::vec((any::<usize>(), 0usize..3, proptest::sample::select(EDIT_CHARS)), 0..4),
        ) {
            for (i, kind) in kinds.into_iter().enumerate() {
                let line = event_to_json(&Event { t: i as u64, pid, kind });
                if !line.contains('\\') {
                    prop_assert!(fast::raw(&line).is_some(), "writer line left the fast path: {}", line);
                }
                let mut chars: Vec<char> = line.chars().collect();
                for &(at, op, c) in &edits {
                    let at = at % (chars.len() + 1);
                    match op {
                        0 => chars.insert(at, c),
                        1 if at < chars.len() => { chars.remove(at); }
                        _ if at < chars.len() => chars[at] = c,
                        _ => {}
                    }
                }
                for l in [line, chars.into_iter().collect::<String>()] {
                    if let Some(f) = fast::raw(&l) {
                        let slow = serde_json::from_str::<Raw<'_>>(&l).ok();
                        prop_assert_eq!(Some(f), slow, "line {}", l);
                    }
                }
            }
        }

        #[test]
        fn garbage_lines_error_cleanly(line in ".{0,60}") {
            let s = format!("{H}{line}\n");
            let _ = read_all(&s); // must not panic, whatever it says
        }
    }

    #[test]
    fn an_unknown_event_reusing_a_known_field_with_another_type_is_skipped() {
        let s = format!(
            "{H}{}\n{}\n",
            r#"{"t":1,"ev":"from_the_future","flags":7,"window":"later","vector":-1}"#,
            r#"{"t":2,"ev":"end"}"#,
        );
        let (_, evs, w) = read_all(&s).expect("a newer event is skipped, not refused");
        assert_eq!(evs.len(), 1);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].msg.contains("from_the_future"), "{w:?}");
        // The same field on an event this reader knows is still an error naming it.
        let (l, f, _) = err_of(&format!(
            "{H}{}\n",
            r#"{"t":1,"ev":"device","dev":"d","flags":7,"ctx":"c"}"#
        ));
        assert_eq!((l, f.as_str()), (2, "flags"));
    }

    proptest! {
        /// Every field the writer puts on any event has the JSON type readers check that field
        /// name for: a reader older than an event type meets its fields as known names on an
        /// unknown `ev`, and must be able to skip it (`precopy_info`'s flags word is
        /// `precopy_flags` for this reason: `flags` is a device's array of names).
        #[test]
        fn written_fields_keep_the_type_of_their_name(kind in kind(), pid in proptest::option::of(any::<u32>())) {
            let line = event_to_json(&Event { t: 1, pid, kind });
            let v: serde_json::Value = serde_json::from_str(&line).expect("JSON");
            let obj = v.as_object().expect("object");
            let ev = obj["ev"].as_str().expect("ev");
            prop_assert!(EV_NAMES.contains(&ev), "{} not in EV_NAMES", ev);
            for (name, ty) in FIELD_TYPES {
                if let Some(val) = obj.get(*name) {
                    prop_assert!(type_ok(val, ty), "{}: field {} is {} (expected {})", line, name, val, type_desc(ty));
                }
            }
        }
    }
}
