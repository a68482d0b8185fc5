//! Privileged host test: `--pid` follows children even when they exit before capture reads
//! their records (the probe reports forks; /proc ancestry alone would be gone by then).
//! Skips, saying so, when not root.

use std::process::Command;

use migscope::capture::{Capture, CaptureOptions};
use migscope::model::MigState;
use migscope::trace::EventKind;

const VFIO_DEVICE_FEATURE: u32 = 0x3B75;
const SET_MIG_DEVICE_STATE: u32 = (1 << 17) | 2;
const CHILD_ENV: &str = "MIGSCOPE_PROBE_CHILD";

/// Runs only as the child of `short_lived_children_are_followed` (ignored otherwise): issues
/// one MIG_DEVICE_STATE SET (STOP_COPY) on an eventfd and reports its pid and fd.
#[test]
#[ignore = "helper process of short_lived_children_are_followed"]
fn child_helper() {
    if std::env::var_os(CHILD_ENV).is_none() {
        eprintln!("SKIP: child_helper only runs as a child of short_lived_children_are_followed");
        return;
    }
    // SAFETY: eventfd has no pointer arguments.
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    assert!(efd >= 0);
    let mut arg: [u32; 4] = [16, SET_MIG_DEVICE_STATE, 3, u32::MAX];
    // SAFETY: a valid pointer to a live buffer; the kernel answers ENOTTY.
    unsafe { libc::ioctl(efd, VFIO_DEVICE_FEATURE as _, arg.as_mut_ptr()) };
    println!("CHILD {} {efd}", std::process::id());
}

#[test]
fn short_lived_children_are_followed() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: short_lived_children_are_followed needs root to load eBPF");
        return;
    }
    let cap = Capture::start(&CaptureOptions {
        pids: Some(vec![std::process::id()]),
        ring_bytes: None,
        ..Default::default()
    })
    .expect("probe loads");
    let fork_hook = cap
        .hooks()
        .iter()
        .find(|h| h.name == "sched:sched_process_fork")
        .expect("fork hook reported");
    assert!(fork_hook.attached(), "{fork_hook}");

    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--ignored", "--exact", "child_helper", "--nocapture"])
        .env(CHILD_ENV, "1")
        .output()
        .expect("run child");
    assert!(out.status.success(), "child failed: {out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (child, fd) = stdout
        .lines()
        .find_map(|l| {
            let mut it = l.strip_prefix("CHILD ")?.split_whitespace();
            Some((
                it.next()?.parse::<u32>().ok()?,
                it.next()?.parse::<i32>().ok()?,
            ))
        })
        .unwrap_or_else(|| panic!("child did not report: {stdout}"));
    // The child is gone: only the fork record ties it to us now.
    assert!(!std::path::Path::new(&format!("/proc/{child}")).exists());

    let evs = cap.stop().expect("stop");
    let dev = format!("fd:{fd}@{child}");
    assert!(
        evs.iter().any(|e| e.pid == Some(child)
            && e.kind
                == EventKind::Set {
                    dev: dev.clone(),
                    to: MigState::StopCopy
                }),
        "the child's SET was filtered out: {evs:#?}"
    );
}
