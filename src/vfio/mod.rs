//! The controller: opens VFIO devices, sets up DMA and interrupts, drives the migration FSM,
//! saves and restores device state, and gathers DMA evidence.
//!
//! [`sys`] holds every raw ioctl behind [`sys::VfioOps`]; [`sim`] is the test double with the
//! same trait; [`controller`] is the one code path both run.

pub mod buffer;
pub mod controller;
pub mod emit;
pub mod plan;
pub mod sim;
pub mod sys;
pub mod witness;
pub mod workload;

pub use controller::{ConfRow, Options, Outcome, PlanError, SetupError, drive};
pub use emit::{Collect, Emit};
pub use plan::{Order, Plan};
pub use sys::{DevId, Vfio, VfioError, VfioOps, VfioPath};
pub use workload::Workload;

/// CLOCK_MONOTONIC in nanoseconds, the trace clock ([`crate::clock::monotonic_ns`]).
pub use crate::clock::monotonic_ns as now_ns;

/// `EINVAL (Invalid argument)` style text for an errno.
pub fn errno_name(e: i32) -> String {
    let name = match e {
        libc::EINVAL => "EINVAL",
        libc::ENOTTY => "ENOTTY",
        libc::EIO => "EIO",
        libc::ENOMSG => "ENOMSG",
        libc::EAGAIN => "EAGAIN",
        libc::EBUSY => "EBUSY",
        libc::ENODEV => "ENODEV",
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EBADF => "EBADF",
        libc::ENOMEM => "ENOMEM",
        libc::EFAULT => "EFAULT",
        libc::ETIMEDOUT => "ETIMEDOUT",
        _ => "errno",
    };
    format!("{name} ({})", std::io::Error::from_raw_os_error(e))
}
