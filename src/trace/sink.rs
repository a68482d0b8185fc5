//! The output end both trace writers share: the writer, error messages naming the file, and for
//! [`TraceSink::create`] the `.partial` file that [`TraceSink::finish`] syncs and renames.

use std::{
    fs::File,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
};

use super::TraceError;
use crate::outfile::{commit_partial, partial_path};

pub struct TraceSink<W: Write> {
    out: W,
    name: String,
    rename: Option<(PathBuf, PathBuf)>,
}

impl TraceSink<BufWriter<File>> {
    /// Creates `<path>.partial`; it becomes `path` on [`TraceSink::finish`].
    pub fn create(path: &Path) -> Result<Self, TraceError> {
        let tmp = partial_path(path);
        let f = File::create(&tmp).map_err(|source| TraceError::Open {
            file: tmp.display().to_string(),
            source,
        })?;
        Ok(TraceSink {
            out: BufWriter::with_capacity(1 << 16, f),
            name: path.display().to_string(),
            rename: Some((tmp, path.to_owned())),
        })
    }
}

impl<W: Write> TraceSink<W> {
    /// An in-memory or caller-owned output, named `<output>` in messages.
    pub fn new(out: W) -> Self {
        TraceSink {
            out,
            name: "<output>".to_owned(),
            rename: None,
        }
    }

    /// The name used in error messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn err(&self, source: std::io::Error) -> TraceError {
        TraceError::Write {
            file: self.name.clone(),
            source,
        }
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> Result<(), TraceError> {
        self.out.write_all(bytes).map_err(|e| self.err(e))
    }

    pub fn flush(&mut self) -> Result<(), TraceError> {
        self.out.flush().map_err(|e| self.err(e))
    }

    /// Flushes and, for [`TraceSink::create`], syncs and renames the file into place.
    pub fn finish(mut self) -> Result<(), TraceError> {
        self.flush()?;
        if let Some((tmp, dst)) = self.rename.take() {
            drop(self.out);
            commit_partial(&tmp, &dst).map_err(|source| TraceError::Write {
                file: dst.display().to_string(),
                source,
            })?;
        }
        Ok(())
    }

    /// The underlying writer (for in-memory traces).
    pub fn into_inner(self) -> W {
        self.out
    }
}
