//! The output end both trace writers share: the writer, error messages naming the file, and for
//! [`TraceSink::create`] the `.partial` file that [`TraceSink::finish`] syncs and renames.
//!
//! **A trace keeps what it recorded.** Unlike a report (which `export::OutFile` removes when
//! it cannot be completed: it can be made again from its trace), a trace is the recording
//! itself. When a write fails (ENOSPC, EIO, ...) the sink cuts its `.partial` file back to
//! the last complete record, so what is kept reads back as a *truncated* trace (no `end`:
//! `check` says inconclusive), leaves it under `<name>.partial` (the real name is only ever a
//! complete trace) and names it in the error. Records are only handed to the writer whole,
//! so the file never holds half an event unless the write itself was cut, and that is undone.

use std::{
    fs::File,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
};

use super::TraceError;
use crate::outfile::{commit_partial, partial_path};

/// Bytes gathered before they go to the writer (at a record boundary).
const CHUNK: usize = 1 << 16;

pub struct TraceSink<W: Write> {
    out: W,
    name: String,
    rename: Option<(PathBuf, PathBuf)>,
    /// The `.partial` file again, to cut it back to a record boundary after a failed write.
    cut: Option<File>,
    /// Whole records not yet handed to `out`, and where each of them ends in `buf`.
    buf: Vec<u8>,
    ends: Vec<usize>,
    /// Bytes and records `out` has taken.
    written: u64,
    records: u64,
    /// Set by a failed write: nothing more is written, and `finish` does not rename.
    failed: Option<String>,
}

impl TraceSink<BufWriter<File>> {
    /// Creates `<path>.partial`; it becomes `path` on [`TraceSink::finish`].
    pub fn create(path: &Path) -> Result<Self, TraceError> {
        let tmp = partial_path(path);
        let open_err = |source| TraceError::Open {
            file: tmp.display().to_string(),
            source,
        };
        let f = File::create(&tmp).map_err(open_err)?;
        let cut = f.try_clone().map_err(open_err)?;
        let mut s = TraceSink::new(BufWriter::with_capacity(0, f));
        s.name = tmp.display().to_string();
        s.rename = Some((tmp, path.to_owned()));
        s.cut = Some(cut);
        Ok(s)
    }
}

impl<W: Write> TraceSink<W> {
    /// An in-memory or caller-owned output, named `<output>` in messages.
    pub fn new(out: W) -> Self {
        TraceSink {
            out,
            name: "<output>".to_owned(),
            rename: None,
            cut: None,
            buf: Vec::with_capacity(CHUNK + 4096),
            ends: Vec::new(),
            written: 0,
            records: 0,
            failed: None,
        }
    }

    /// The name used in error messages (the `.partial` file while it is being written).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bytes of the trace so far (handed to the writer or waiting for it).
    pub fn bytes(&self) -> u64 {
        self.written + self.buf.len() as u64
    }

    /// Appends bytes of the record being written; [`TraceSink::end_record`] closes it.
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<(), TraceError> {
        self.check_failed()?;
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// The record written since the last call is complete.
    pub fn end_record(&mut self) -> Result<(), TraceError> {
        self.ends.push(self.buf.len());
        if self.buf.len() >= CHUNK {
            self.push_out()?;
        }
        Ok(())
    }

    /// Hands every complete record to the writer and flushes it.
    pub fn flush(&mut self) -> Result<(), TraceError> {
        self.push_out()?;
        let res = self.out.flush();
        res.map_err(|e| self.fail(e, None))
    }

    fn check_failed(&self) -> Result<(), TraceError> {
        match &self.failed {
            None => Ok(()),
            Some(why) => Err(TraceError::Write {
                file: self.name.clone(),
                source: std::io::Error::other(format!("an earlier write failed: {why}")),
            }),
        }
    }

    /// Writes the complete records of `buf`; after a failure, cuts the file back to the last
    /// record that reached it whole.
    fn push_out(&mut self) -> Result<(), TraceError> {
        self.check_failed()?;
        let whole = self.ends.last().copied().unwrap_or(0);
        let mut done = 0;
        while done < whole {
            match self.out.write(&self.buf[done..whole]) {
                Ok(0) => {
                    let e = std::io::Error::from(std::io::ErrorKind::WriteZero);
                    return Err(self.fail(e, Some(done)));
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.fail(e, Some(done))),
            }
        }
        self.written += whole as u64;
        self.records += self.ends.len() as u64;
        self.buf.drain(..whole);
        self.ends.clear();
        Ok(())
    }

    /// Records the failure; `reached`: bytes of `buf` the writer took before it failed.
    fn fail(&mut self, source: std::io::Error, reached: Option<usize>) -> TraceError {
        let (mut bytes, mut records) = (self.written, self.records);
        if let Some(reached) = reached {
            let whole = self.ends.iter().take_while(|&&e| e <= reached).count();
            records += whole as u64;
            bytes += whole.checked_sub(1).map_or(0, |i| self.ends[i]) as u64;
        }
        let mut note = format!("{source}");
        if let Some(f) = &self.cut {
            // A record the writer took only in part is taken off again.
            let kept = f.set_len(bytes).and_then(|()| f.sync_all());
            note = match kept {
                Ok(()) => format!(
                    "{source}; what was recorded before it is kept there ({records} lines or \
                     records, {bytes} bytes: a truncated trace that `check` reads)"
                ),
                Err(e) => format!("{source}; cutting it back to {bytes} bytes failed too: {e}"),
            };
        }
        self.failed = Some(source.to_string());
        self.buf.clear();
        self.ends.clear();
        TraceError::Write {
            file: self.name.clone(),
            source: std::io::Error::new(source.kind(), note),
        }
    }

    /// Flushes and, for [`TraceSink::create`], syncs and renames the file into place.
    pub fn finish(mut self) -> Result<(), TraceError> {
        self.flush()?;
        if let Some((tmp, dst)) = self.rename.take() {
            drop(self.out);
            drop(self.cut.take());
            commit_partial(&tmp, &dst).map_err(|source| TraceError::Write {
                file: dst.display().to_string(),
                source,
            })?;
        }
        Ok(())
    }

    /// The underlying writer (for in-memory traces), with every complete record in it.
    pub fn into_inner(mut self) -> W {
        let _ = self.push_out();
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ENOSPC (28 on every Linux architecture, `include/uapi/asm-generic/errno-base.h`).
    fn enospc() -> std::io::Error {
        std::io::Error::from_raw_os_error(28)
    }

    /// A `/dev/full`-style writer: takes `room` bytes, then ENOSPC.
    struct Full {
        got: Vec<u8>,
        room: usize,
    }

    impl Write for Full {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let n = b.len().min(self.room - self.got.len());
            if n == 0 {
                return Err(enospc());
            }
            self.got.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_writer_fails_once_and_counts_what_it_kept() {
        let mut s = TraceSink::new(Full {
            got: Vec::new(),
            room: 25,
        });
        for _ in 0..5 {
            s.write_all(b"0123456789").expect("buffered");
            s.end_record().expect("buffered");
        }
        let e = s.flush().expect_err("ENOSPC").to_string();
        assert!(e.contains("No space left on device"), "{e}");
        // Later writes do not interleave with what was kept.
        assert!(s.write_all(b"x").is_err());
        assert_eq!(s.into_inner().got.len(), 25, "the writer took 25 bytes");
    }

    /// ENOSPC in the middle of a record: the file is cut back to the last whole record, so it
    /// reads back as a truncated trace instead of ending in half a line.
    #[test]
    fn a_failed_file_keeps_whole_records_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("t.jsonl");
        let mut s = TraceSink::create(&p).expect("create");
        s.write_all(b"line one\n").expect("buffer");
        s.end_record().expect("end");
        s.write_all(b"line two\n").expect("buffer");
        s.end_record().expect("end");
        s.flush().expect("room");
        // Simulate a device that took half of the next record, then ENOSPC.
        s.write_all(b"line three\n").expect("buffer");
        s.end_record().expect("end");
        let half = 5;
        s.out.write_all(&s.buf[..half]).expect("half a record");
        let e = s.fail(enospc(), Some(half)).to_string();
        assert!(e.contains("t.jsonl.partial"), "names the kept file: {e}");
        assert!(e.contains("2 lines or records"), "{e}");
        assert!(s.finish().is_err(), "a failed trace is not renamed");
        let kept = std::fs::read(partial_path(&p)).expect("kept");
        assert_eq!(kept, b"line one\nline two\n");
        assert!(!p.exists());
    }
}
