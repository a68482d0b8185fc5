//! The trace writer: JSONL or native, written as events leave the merger and flushed at least
//! every [`FLUSH_EVERY`], so a recorder killed outright (SIGKILL) leaves a readable
//! `<name>.partial` up to its last flush, which `check` reports as truncated. The file gets its
//! name only once the trace is complete (`end` written, synced, renamed).

use std::io::{BufWriter, Stdout, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::trace::jsonl::{JsonlWriter, TraceError};
use crate::trace::{Event, Format, Header, NativeWriter};

/// The longest a written event waits in memory before it reaches the file.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Where the trace goes.
#[derive(Clone, Debug)]
pub enum Dest {
    File(PathBuf),
    Stdout,
}

enum Writer {
    Jsonl(JsonlWriter<BufWriter<std::fs::File>>),
    Native(NativeWriter<BufWriter<std::fs::File>>),
    Stdout(JsonlWriter<BufWriter<Stdout>>),
}

/// The trace file of a session.
pub struct TraceOut {
    dest: Dest,
    format: Format,
    w: Option<Writer>,
    events: u64,
    last_flush: Instant,
}

impl TraceOut {
    pub fn new(dest: Dest, format: Format) -> TraceOut {
        TraceOut {
            dest,
            format,
            w: None,
            events: 0,
            last_flush: Instant::now(),
        }
    }

    /// What the trace is called in messages (`standard output` or the file's final name).
    pub fn name(&self) -> String {
        match &self.dest {
            Dest::File(p) => p.display().to_string(),
            Dest::Stdout => "standard output".to_owned(),
        }
    }

    /// Creates the file (`<name>.partial`) and writes the header.
    pub fn begin(&mut self, header: &Header) -> Result<(), TraceError> {
        self.w = Some(match (&self.dest, self.format) {
            (Dest::File(p), Format::Jsonl) => Writer::Jsonl(JsonlWriter::create(p, header)?),
            (Dest::File(p), Format::Native) => Writer::Native(NativeWriter::create(p, header)?),
            (Dest::Stdout, _) => {
                Writer::Stdout(JsonlWriter::new(BufWriter::new(std::io::stdout()), header)?)
            }
        });
        Ok(())
    }

    pub fn write(&mut self, ev: &Event) -> Result<(), TraceError> {
        match &mut self.w {
            Some(Writer::Jsonl(w)) => w.write(ev)?,
            Some(Writer::Native(w)) => w.write(ev)?,
            Some(Writer::Stdout(w)) => w.write(ev)?,
            None => return Ok(()),
        }
        self.events += 1;
        Ok(())
    }

    /// Flushes when the last flush is [`FLUSH_EVERY`] old (or with `now`).
    pub fn flush(&mut self, now: bool) -> Result<(), TraceError> {
        if !now && self.last_flush.elapsed() < FLUSH_EVERY {
            return Ok(());
        }
        self.last_flush = Instant::now();
        match &mut self.w {
            Some(Writer::Jsonl(w)) => w.flush(),
            Some(Writer::Native(w)) => w.flush(),
            Some(Writer::Stdout(w)) => w.flush(),
            None => Ok(()),
        }
    }

    /// Events written.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Bytes written (JSONL).
    pub fn bytes(&self) -> u64 {
        match &self.w {
            Some(Writer::Jsonl(w)) => w.bytes(),
            Some(Writer::Stdout(w)) => w.bytes(),
            Some(Writer::Native(_)) | None => 0,
        }
    }

    /// Whether the header was written (the file exists).
    pub fn begun(&self) -> bool {
        self.w.is_some()
    }

    /// Syncs and renames the file into place (the caller wrote `end`).
    pub fn finish(self) -> Result<(), TraceError> {
        match self.w {
            Some(Writer::Jsonl(w)) => w.finish(),
            Some(Writer::Native(w)) => {
                w.finish()?;
                if let Dest::File(p) = &self.dest {
                    save_sidecar(p);
                }
                Ok(())
            }
            Some(Writer::Stdout(w)) => {
                let mut out = w.into_inner();
                out.flush().map_err(|source| TraceError::Write {
                    file: "standard output".to_owned(),
                    source,
                })
            }
            None => Ok(()),
        }
    }
}

/// Saves the view's index beside a native trace just written (`T.mgt.idx`), so its first
/// `view` loads the overview instead of reading the whole file; a sidecar that cannot be
/// saved is said on standard error and is no failure (the view builds it then).
pub fn save_sidecar(trace: &std::path::Path) {
    if let Err(e) = migscope_tui::index::TraceIndex::save_sidecar_of(trace) {
        eprintln!("warning: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::EventKind;
    use migscope_tui::index::{Opened, TraceIndex};

    /// A native trace the sink finished opens in the view through its sidecar (no pass over
    /// the file).
    #[test]
    fn a_finished_native_trace_carries_its_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("t.mgt");
        let mut out = TraceOut::new(Dest::File(p.clone()), Format::Native);
        out.begin(&Header::default()).expect("begin");
        for t in 0..10_000u64 {
            let kind = if t + 1 == 10_000 {
                EventKind::End
            } else {
                EventKind::Mark {
                    label: format!("m{}", t % 7),
                }
            };
            out.write(&Event {
                t: 1_000 + t,
                pid: None,
                kind,
            })
            .expect("write");
        }
        out.finish().expect("finish");
        let (ix, how) = TraceIndex::open(&p, |_| panic!("built on first open")).expect("open");
        assert!(matches!(how, Opened::Loaded(_)), "{how:?}");
        assert_eq!(ix.rows, 10_000);
        assert!(ix.end_seen);
    }
}
