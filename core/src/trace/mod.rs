//! Traces: the JSONL interchange format of `TRACE-FORMAT.md` (streaming reader and writer), the
//! compact native format (`native`), [`open_any`] which tells them apart by content, and the
//! in-memory event model every other module speaks.

pub mod event;

pub use event::{
    Corruption, DataDir, DataFile, DmaSource, EV_NAMES, Event, EventKind, EventRef, Header,
    IrqKind, KindRef, Name, RegStage, TRACE_VERSION, hooks_path, is_mdev_uuid, source,
};
pub mod jsonl;

pub use jsonl::{JsonlReader, JsonlWriter, ReadWarning, TraceError};
pub mod native;
pub mod sink;

pub use native::{Checkpoint, NativeReader, NativeWriter};

use std::{
    fs::File,
    io::{self, BufRead, BufReader},
    path::Path,
};

/// The on-disk form of a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Jsonl,
    Native,
}

impl Format {
    pub const fn name(self) -> &'static str {
        match self {
            Format::Jsonl => "jsonl",
            Format::Native => "native",
        }
    }
}

/// Input a reader can own and move to another thread (a file or standard input).
pub type SendBuf = Box<dyn BufRead + Send>;

/// A reader over either format, chosen by content.
pub enum AnyReader<R = SendBuf> {
    Jsonl(JsonlReader<R>),
    Native(NativeReader<R>),
}

impl<R: BufRead> AnyReader<R> {
    pub fn format(&self) -> Format {
        match self {
            AnyReader::Jsonl(_) => Format::Jsonl,
            AnyReader::Native(_) => Format::Native,
        }
    }

    pub fn header(&self) -> &Header {
        match self {
            AnyReader::Jsonl(r) => r.header(),
            AnyReader::Native(r) => r.header(),
        }
    }

    /// The next event with its line (JSONL) or the line it has in the JSONL form (native).
    pub fn next_event(&mut self) -> Option<Result<(u64, Event), TraceError>> {
        match self {
            AnyReader::Jsonl(r) => r.next_event(),
            AnyReader::Native(r) => r.next_event(),
        }
    }

    /// Non-fatal problems seen so far (unknown `ev` values; in the native format, unknown
    /// extension record kinds).
    pub fn warnings(&self) -> &[ReadWarning] {
        match self {
            AnyReader::Jsonl(r) => r.warnings(),
            AnyReader::Native(r) => r.warnings(),
        }
    }

    /// For a native file that ends inside a record: the byte offset of that record.
    pub fn truncated_at(&self) -> Option<u64> {
        match self {
            AnyReader::Jsonl(_) => None,
            AnyReader::Native(r) => r.truncated_at(),
        }
    }
}

impl<R: BufRead> Iterator for AnyReader<R> {
    type Item = Result<(u64, Event), TraceError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_event()
    }
}

/// Opens a trace in either format (`-` = standard input), telling them apart by the first
/// byte: the native magic (0x89) or `{` (JSONL, whose reader names any problem). Anything
/// else, an empty input, or a first line that is not a trace header is
/// [`TraceError::NotATrace`], naming the file.
pub fn open_any(path: &Path) -> Result<AnyReader, TraceError> {
    let name = path.display().to_string();
    let mut input: SendBuf = if path.as_os_str() == "-" {
        Box::new(BufReader::with_capacity(1 << 16, io::stdin()))
    } else {
        let f = File::open(path).map_err(|source| TraceError::Open {
            file: name.clone(),
            source,
        })?;
        Box::new(BufReader::with_capacity(1 << 16, f))
    };
    let first = loop {
        match input.fill_buf() {
            Ok(b) => break b.first().copied(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(TraceError::Read {
                    file: name,
                    line: 1,
                    source,
                });
            }
        }
    };
    match first {
        Some(b) if b == native::MAGIC[0] => Ok(AnyReader::Native(NativeReader::new(&name, input)?)),
        // JSONL starts with its header object, after blank lines at most; anything else is
        // refused before a line of it is read (a binary file may have no newline at all).
        Some(b) if b != b'{' && !b.is_ascii_whitespace() => Err(TraceError::NotATrace {
            file: name,
            why: format!(
                "it starts with the byte 0x{b:02x}{}; a JSONL trace starts with `{{`, a native one with 0x{:02x}",
                match b {
                    b'[' => " (`[`: a JSON array document? a trace is one JSON object per line)"
                        .to_owned(),
                    b if b.is_ascii_graphic() => format!(" (`{}`)", b as char),
                    _ => String::new(),
                },
                native::MAGIC[0]
            ),
        }),
        _ => Ok(AnyReader::Jsonl(JsonlReader::new(&name, input)?)),
    }
}
