//! migscope: trace, drive and verify VFIO device live-migration state transitions.
//!
//! The pipeline without the kernel lives in the `migscope-core` crate and is re-exported here
//! under the same paths: [`model`] (the migration FSM and v1 decoding), [`trace`] (the trace
//! formats), [`verify`] (the rules), [`export`] (reports and formats), [`outfile`], [`errno`]. This crate
//! adds what needs the kernel or the terminal: [`capture`] (the eBPF probe), [`vfio`] (the
//! controller), [`session`] (sources -> merge -> sinks: the one streaming pipeline every
//! live command runs), [`clock`] (the trace clock) and [`cli`] (the commands).

pub use migscope_core::{errno, export, model, outfile, trace, verify};

pub mod capture;
pub mod cli;
pub mod clock;
pub mod session;
pub mod vfio;
