//! The migscope timeline: a pure view over a stream of events and verdict updates.
//!
//! The caller converts its trace into [`model`] types and feeds them as [`Msg`]s; [`update`]
//! changes the [`App`] without I/O; [`ui::draw`] renders it; [`term::run`] is the terminal
//! loop (raw mode, alternate screen, restored on exit and on panic).

pub mod app;
pub mod model;
pub mod store;
pub mod term;
pub mod ui;

pub use app::{App, Effect, Key, Msg, Pane, update};
pub use model::{
    DataDir, DataFile, DeviceDecl, DmaSrc, Ev, EvKind, Finding, Flags, IrqKind, State,
    TimelineEvent, TraceInfo, Verdict, VerdictUpdate,
};

/// The ratatui version the views are drawn with (for callers' tests with `TestBackend`).
pub use ratatui;
