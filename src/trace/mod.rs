//! Traces: the JSONL interchange format of `TRACE-FORMAT.md` (streaming reader and writer) and
//! the in-memory event model every other module speaks.

pub mod event;

pub use event::{DataDir, DmaSource, Event, EventKind, Header, IrqKind, TRACE_VERSION, source};
pub mod jsonl;

pub use jsonl::{JsonlReader, JsonlWriter, ReadWarning, TraceError};
