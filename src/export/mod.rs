//! Exporters: Perfetto (Chrome trace-event JSON), JUnit XML and the Markdown bug report; the
//! native binary trace format itself lives in `trace::native`.

pub mod junit;
pub mod markdown;
pub mod perfetto;

use std::{
    fs::File,
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
};

use crate::trace::{TraceError, jsonl::partial_path};

/// What can go wrong producing an export.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error("{file}: cannot create: {source}")]
    Create { file: String, source: io::Error },
    #[error("{file}: write failed: {source}")]
    Write { file: String, source: io::Error },
    #[error("{file}: cannot read: {source}")]
    ReadInput { file: String, source: io::Error },
    #[error("{file}: not valid JSON: {source}")]
    InputJson {
        file: String,
        source: serde_json::Error,
    },
}

/// A file written under `<path>.partial` and renamed into place by [`OutFile::finish`], so a
/// reader never sees a half-written export.
pub struct OutFile {
    out: BufWriter<File>,
    tmp: PathBuf,
    dst: PathBuf,
}

impl OutFile {
    pub fn create(path: &Path) -> Result<Self, ExportError> {
        let tmp = partial_path(path);
        let f = File::create(&tmp).map_err(|source| ExportError::Create {
            file: tmp.display().to_string(),
            source,
        })?;
        Ok(OutFile {
            out: BufWriter::with_capacity(1 << 16, f),
            tmp,
            dst: path.to_owned(),
        })
    }

    fn err(&self, source: io::Error) -> ExportError {
        ExportError::Write {
            file: self.dst.display().to_string(),
            source,
        }
    }

    pub fn write_str(&mut self, s: &str) -> Result<(), ExportError> {
        self.out.write_all(s.as_bytes()).map_err(|e| self.err(e))
    }

    /// Flushes, syncs and renames the file into place.
    pub fn finish(self) -> Result<(), ExportError> {
        let OutFile { out, tmp, dst } = self;
        let werr = |source| ExportError::Write {
            file: dst.display().to_string(),
            source,
        };
        let f = out.into_inner().map_err(|e| werr(e.into_error()))?;
        f.sync_all().map_err(werr)?;
        drop(f);
        std::fs::rename(&tmp, &dst).map_err(werr)
    }
}

/// Writes `content` to `path` through [`OutFile`].
pub fn write_atomic(path: &Path, content: &str) -> Result<(), ExportError> {
    let mut f = OutFile::create(path)?;
    f.write_str(content)?;
    f.finish()
}
