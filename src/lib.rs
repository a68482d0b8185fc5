//! migscope: trace, drive and verify VFIO device live-migration state transitions.
//!
//! Modules by concern: [`model`] (the migration FSM and v1 decoding), [`trace`] (the trace
//! format), [`verify`] (the rules), [`capture`] (the eBPF probe), [`vfio`] (the controller),
//! [`export`] (reports and formats), [`cli`] (the commands).

pub mod capture;
pub mod cli;
pub mod export;
pub mod model;
pub mod outfile;
pub mod trace;
pub mod verify;
pub mod vfio;
