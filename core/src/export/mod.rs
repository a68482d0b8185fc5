//! Exporters: Perfetto (Chrome trace-event JSON), JUnit XML, GitHub workflow annotations and
//! the Markdown bug report; the native binary trace format itself lives in `trace::native`.
//!
//! Every exporter draws a device's state over time from the verifier's own
//! [`crate::verify::DeviceTimeline`] segments and its numbers from the verifier's
//! [`crate::verify::Report`]; [`agree`] reads the numbers back out of each format, so a test
//! can hold them to `check --json`'s on every trace.

pub mod agree;
pub mod github;
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

/// A report written under `<path>.partial` and renamed into place by [`OutFile::finish`], so a
/// reader never sees a half-written export. A report that cannot be completed (ENOSPC, ...)
/// is removed, `.partial` included: it can be made again from its trace. (Traces themselves
/// keep what they recorded: `trace::sink`.)
pub struct OutFile {
    out: Option<BufWriter<File>>,
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
            out: Some(BufWriter::with_capacity(1 << 16, f)),
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
        let res = match self.out.as_mut() {
            Some(out) => out.write_all(s.as_bytes()),
            None => Err(io::Error::other("already finished")),
        };
        res.map_err(|e| self.err(e))
    }

    /// Flushes, syncs and renames the file into place (on failure nothing is left).
    pub fn finish(mut self) -> Result<(), ExportError> {
        let out = self.out.take();
        let res = match out {
            Some(out) => out.into_inner().map_err(|e| e.into_error()).and_then(|f| {
                drop(f);
                crate::outfile::commit_partial(&self.tmp, &self.dst)
            }),
            None => Err(io::Error::other("already finished")),
        };
        if let Err(e) = res {
            let _ = std::fs::remove_file(&self.tmp);
            return Err(self.err(e));
        }
        Ok(())
    }
}

/// A report dropped before [`OutFile::finish`] (a write or its input failed) is removed.
impl Drop for OutFile {
    fn drop(&mut self) {
        if let Some(out) = self.out.take() {
            drop(out.into_parts());
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// The name a trace goes by in reports: its file name (`stdin` for `-`).
pub fn trace_name(path: &Path) -> String {
    if path.as_os_str() == "-" {
        return "stdin".to_owned();
    }
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Writes `content` to `path` through [`OutFile`].
pub fn write_atomic(path: &Path, content: &str) -> Result<(), ExportError> {
    let mut f = OutFile::create(path)?;
    f.write_str(content)?;
    f.finish()
}
