//! Where a session's merged events go, each bounded: the trace file written as it goes
//! ([`trace`]), the streaming verifier with its interim and final verdicts ([`verdict`]), the
//! live timeline ([`tui`]), and whatever a command watches besides (progress lines, drive's
//! conformance steps).

pub mod trace;
pub mod tui;
pub mod verdict;
