//! Exporters: Perfetto (Chrome trace-event JSON), JUnit XML, GitHub workflow annotations and
//! the Markdown bug report; the native binary trace format itself lives in `trace::native`.

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

/// A closed piece of a device's timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub dev: String,
    pub start: u64,
    pub end: u64,
    pub what: SegKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SegKind {
    /// A stable state (`None`: unknown, after a failed SET until a GET tells).
    State(Option<crate::model::MigState>),
    /// From a SET to its `set_done` (`from` None: unknown). `quiesce`: a successful SET
    /// entering a quiescent state from a non-quiescent one.
    Transition {
        from: Option<crate::model::MigState>,
        to: crate::model::MigState,
        /// The SET's return value; `None`: it never returned in the trace.
        ret: Option<i32>,
        quiesce: bool,
    },
}

impl SegKind {
    /// `RUNNING`, `UNKNOWN`, `RUNNING -> RUNNING_P2P`, `quiesce RUNNING -> RUNNING_P2P`.
    pub fn label(&self) -> String {
        let n = |s: &Option<crate::model::MigState>| s.map_or("UNKNOWN", |s| s.name());
        match self {
            SegKind::State(s) => n(s).to_owned(),
            SegKind::Transition {
                from,
                to,
                ret,
                quiesce,
            } => format!(
                "{}{} -> {}{}",
                if *quiesce { "quiesce " } else { "" },
                n(from),
                to.name(),
                match ret {
                    Some(0) => String::new(),
                    Some(r) => format!(" (failed {})", crate::verify::errno_name(*r)),
                    None => " (never returned)".to_owned(),
                }
            ),
        }
    }
}

#[derive(Default)]
struct DevTimeline {
    state: Option<crate::model::MigState>,
    since: u64,
    /// An open SET: (from, to, start).
    pending: Option<(Option<crate::model::MigState>, crate::model::MigState, u64)>,
}

/// Follows each device's state through the events (the verifier's semantics: the state changes
/// when a SET completes) and yields closed segments; memory per device, not per event.
#[derive(Default)]
pub struct Timeline {
    devs: std::collections::BTreeMap<String, DevTimeline>,
    last_t: u64,
}

impl Timeline {
    fn switch(
        dev: &str,
        d: &mut DevTimeline,
        t: u64,
        new: Option<crate::model::MigState>,
        out: &mut Vec<Segment>,
    ) {
        if d.pending.is_none() {
            out.push(Segment {
                dev: dev.to_owned(),
                start: d.since,
                end: t,
                what: SegKind::State(d.state),
            });
        }
        d.state = new;
        d.since = t;
    }

    /// Feeds one event; closed segments are appended to `out`.
    pub fn push(&mut self, ev: &crate::trace::Event, out: &mut Vec<Segment>) {
        use crate::{model::MigState, trace::EventKind};
        self.last_t = ev.t;
        let t = ev.t;
        match &ev.kind {
            EventKind::Device { dev, state, .. } => {
                let d = self.devs.entry(dev.clone()).or_default();
                d.state = Some(*state);
                d.since = t;
                d.pending = None;
            }
            EventKind::Set { dev, to } => {
                let d = self.devs.entry(dev.clone()).or_default();
                if d.pending.is_none() {
                    out.push(Segment {
                        dev: dev.clone(),
                        start: d.since,
                        end: t,
                        what: SegKind::State(d.state),
                    });
                }
                d.pending = Some((d.state, *to, t));
            }
            EventKind::SetDone { dev, to, ret, .. } => {
                let d = self.devs.entry(dev.clone()).or_default();
                let new = (*ret == 0).then_some(*to);
                if let Some((from, pto, start)) = d.pending.take() {
                    out.push(Segment {
                        dev: dev.clone(),
                        start,
                        end: t,
                        what: SegKind::Transition {
                            from,
                            to: pto,
                            ret: Some(*ret),
                            quiesce: *ret == 0
                                && pto.quiescent()
                                && !from.is_some_and(MigState::quiescent),
                        },
                    });
                    d.state = new;
                    d.since = t;
                } else {
                    Self::switch(dev, d, t, new, out);
                }
            }
            EventKind::Get { dev, state } => {
                let d = self.devs.entry(dev.clone()).or_default();
                if d.state.is_none() && d.pending.is_none() {
                    Self::switch(dev, d, t, Some(*state), out);
                }
            }
            EventKind::Reset { dev, ret } => {
                let d = self.devs.entry(dev.clone()).or_default();
                if *ret == 0 {
                    if let Some((from, to, start)) = d.pending.take() {
                        // A reset during a SET: the SET never returned in the trace.
                        out.push(Segment {
                            dev: dev.clone(),
                            start,
                            end: t,
                            what: SegKind::Transition {
                                from,
                                to,
                                ret: None,
                                quiesce: false,
                            },
                        });
                        d.state = Some(MigState::Running);
                        d.since = t;
                    } else if d.state != Some(MigState::Running) {
                        Self::switch(dev, d, t, Some(MigState::Running), out);
                    }
                }
            }
            _ => {}
        }
    }

    /// The state of `dev` now (`None`: unknown or undeclared).
    pub fn state(&self, dev: &str) -> Option<crate::model::MigState> {
        self.devs.get(dev).and_then(|d| d.state)
    }

    /// Closes every open segment at the last event's time.
    pub fn finish(self, out: &mut Vec<Segment>) {
        for (dev, d) in self.devs {
            match d.pending {
                Some((from, to, start)) => out.push(Segment {
                    dev,
                    start,
                    end: self.last_t,
                    what: SegKind::Transition {
                        from,
                        to,
                        ret: None,
                        quiesce: false,
                    },
                }),
                None => out.push(Segment {
                    dev,
                    start: d.since,
                    end: self.last_t,
                    what: SegKind::State(d.state),
                }),
            }
        }
    }
}
