//! Where a session's events come from: the eBPF probe's ring buffer ([`probe`]), the
//! controller driving devices ([`controller`]), a trace file, whole or growing ([`file`]).
//! Each tells the merger how far it has got (its watermark) besides its events.

pub mod controller;
pub mod file;
pub mod probe;
