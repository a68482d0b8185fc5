//! The migscope timeline: a pure view over the core's events and reports.
//!
//! The view has no vocabulary of its own: it speaks `migscope-core`'s. The caller (the session's
//! TUI sink) feeds it [`Msg`]s; [`update`] changes the [`App`] without I/O; [`ui::draw`] renders
//! it; [`term::run`] is the terminal loop (raw mode, alternate screen, restored on exit and on
//! panic).
//!
//! # API (what a caller sends)
//! - [`App::new`]`(`[`TraceInfo`]` { name, header, live }, cap)`: `header` is the trace's
//!   [`Header`](migscope_core::trace::Header) (its sources decide what the lanes' timelines can
//!   see); `cap: Some(n)` keeps about the last `n` events (live), `None` all of them. A header
//!   learnt later is sent as [`Msg::Info`] before the first event.
//! - [`Msg::Events`]`(Vec<(line, `[`Event`](migscope_core::trace::Event)`)>)`: events in trace
//!   order with their 1-based source line (0: none), exactly as the core's readers yield them.
//! - [`Msg::Findings`]`(Vec<`[`Finding`](migscope_core::verify::Finding)`>)`: the verifier's
//!   findings, after the events they name.
//! - [`Msg::Verdict`]` { report: Box<`[`Report`](migscope_core::verify::Report)`>, interim }`:
//!   the verifier's report (interim while live, then final). The header's verdict and blind
//!   spots and the stats pane's numbers (quiesces and their durations, DMA and interrupts while
//!   quiesced, violations) are the report's, so they are `check --json`'s.
//! - [`Msg::SourceDone`], [`Msg::SourceError`], [`Msg::Note`], [`Msg::Quit`], [`Msg::Tick`],
//!   [`Msg::Key`]; [`App::effects`] carries the view's requests (export), answered with
//!   [`Msg::Exported`]. [`store::Store::iter`] gives back the held events as core events.
//!
//! The lanes' state segments are the core's `DeviceTimeline` segments (the store feeds its own
//! copy of the verifier, as the Perfetto and Markdown exports do), never a state machine of
//! the view's.

pub mod app;
pub mod store;
pub mod term;
pub mod ui;

pub use app::{App, Effect, Key, Msg, Pane, TraceInfo, update};

/// The core crate the view speaks (events, headers, findings, reports).
pub use migscope_core as core;
/// The ratatui version the views are drawn with (for callers' tests with `TestBackend`).
pub use ratatui;
