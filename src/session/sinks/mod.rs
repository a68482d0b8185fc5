//! Where a session's merged events go, each bounded: the trace file written as it goes
//! ([`trace`]), the streaming verifier with its interim and final verdicts ([`verdict`]), the
//! live timeline ([`tui`], its redraw times in [`frames`]), and whatever a command watches
//! besides (progress lines, drive's conformance steps).

pub mod frames;
pub mod trace;
pub mod tui;
pub mod verdict;
