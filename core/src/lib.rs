//! migscope-core: everything migscope knows about a migration that needs no kernel.
//!
//! The flow through it: [`trace`] reads and writes events (JSONL and native formats, the sink
//! that keeps what was recorded), [`model`] is the VFIO migration FSM those events speak,
//! [`verify`] judges a stream of them (the rules over one [`verify::DeviceTimeline`] per
//! device) into a [`verify::Report`], and [`export`] renders a trace and its report (Perfetto,
//! JUnit, Markdown, GitHub annotations). [`outfile`] is the write-then-rename every output uses;
//! [`errno`] the one errno name table.
//!
//! No aya, no tokio, no ioctls, no I/O beyond readers and writers: the `migscope` crate adds
//! the probe (`capture`), the controller (`vfio`) and the commands (`cli`) around it.

pub mod errno;
pub mod export;
pub mod model;
pub mod outfile;
pub mod trace;
pub mod verify;
