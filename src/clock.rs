//! The trace clock: CLOCK_MONOTONIC in nanoseconds, what `t` counts (`"clock":"monotonic_ns"`)
//! and the clock of the probe's `bpf_ktime_get_ns`, so the probe's and the controller's events
//! share one time line.

/// CLOCK_MONOTONIC now, in nanoseconds.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
