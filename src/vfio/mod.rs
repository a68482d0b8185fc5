//! The controller: opens VFIO devices, sets up DMA and interrupts, drives the migration FSM,
//! saves and restores device state, and gathers DMA evidence.
//!
//! [`sys`] holds every raw ioctl behind [`sys::VfioOps`]; [`sim`] is the test double with the
//! same trait; [`controller`] is the one code path both run. [`probe_events`] checks
//! conformance rows against the FSM steps the probe traced.

pub mod buffer;
pub mod controller;
pub mod emit;
pub mod plan;
pub mod probe_events;
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

/// `EINVAL (Invalid argument)` style text for an errno (the name from the one table,
/// [`crate::errno`]).
pub fn errno_name(e: i32) -> String {
    format!(
        "{} ({})",
        crate::errno::name(e),
        std::io::Error::from_raw_os_error(e)
    )
}

#[cfg(test)]
mod tests {
    /// The core's errno table (no libc there) is libc's numbers.
    #[test]
    fn the_errno_table_is_libcs() {
        for (n, name) in crate::errno::NAMES {
            let libc = match name {
                "EPERM" => libc::EPERM,
                "ENOENT" => libc::ENOENT,
                "EIO" => libc::EIO,
                "EBADF" => libc::EBADF,
                "EAGAIN" => libc::EAGAIN,
                "ENOMEM" => libc::ENOMEM,
                "EFAULT" => libc::EFAULT,
                "EBUSY" => libc::EBUSY,
                "ENODEV" => libc::ENODEV,
                "EINVAL" => libc::EINVAL,
                "ENOTTY" => libc::ENOTTY,
                "ENOMSG" => libc::ENOMSG,
                "ENODATA" => libc::ENODATA,
                "EOPNOTSUPP" => libc::EOPNOTSUPP,
                "ETIMEDOUT" => libc::ETIMEDOUT,
                other => panic!("{other}: add it here"),
            };
            assert_eq!(n, libc, "{name}");
        }
        assert!(super::errno_name(libc::EINVAL).starts_with("EINVAL (Invalid argument"));
    }
}
