//! Privileged host test of fds a process held before recording started: they are learned from
//! /proc (at start, or when first used), handed to the probe's fd map, and their `close` is
//! seen, so a reused fd number is not mistaken for what it was. The host has no VFIO: a helper
//! process in a private mount namespace (`unshare --mount`) holds plain files at
//! `/dev/vfio/...` on its own tmpfs, which /proc shows under those names (nothing outside the
//! namespace changes). Skips, saying so, when not root or without `unshare`.

#![expect(
    clippy::expect_used,
    reason = "test helpers panic with context (STYLE.md: tests panic, never return Result)"
)]

use std::ffi::CString;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use migscope::capture::{Capture, CaptureOptions};
use migscope::model::MigState;
use migscope::trace::{Event, EventKind};

const VFIO_DEVICE_FEATURE: u32 = 0x3B75;
const SET_MIG_DEVICE_STATE: u32 = (1 << 17) | 2;
const HELPER_ENV: &str = "MIGSCOPE_ATTACH_HELPER";

fn set_state(fd: i32, state: u32) {
    let mut arg: [u32; 4] = [16, SET_MIG_DEVICE_STATE, state, u32::MAX];
    // SAFETY: a valid pointer to a live buffer; the kernel answers ENOTTY on these files.
    let r = unsafe { libc::ioctl(fd, VFIO_DEVICE_FEATURE as _, arg.as_mut_ptr()) };
    assert_eq!(r, -1, "a plain file accepted a VFIO ioctl");
}

fn open(path: &str) -> i32 {
    let c = CString::new(path).expect("path");
    // SAFETY: c is a valid NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY) };
    assert!(fd >= 0, "open {path}: {}", std::io::Error::last_os_error());
    fd
}

fn wait_for(path: &Path) {
    let t = Instant::now();
    while !path.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{} never came",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs only as the helper of `held_fds_are_forgotten_when_closed` (ignored otherwise).
#[test]
#[ignore = "helper process of held_fds_are_forgotten_when_closed"]
fn held_fds_helper() {
    let Some(dir) = std::env::var_os(HELPER_ENV) else {
        eprintln!(
            "SKIP: held_fds_helper only runs as the helper of held_fds_are_forgotten_when_closed"
        );
        return;
    };
    let dir = Path::new(&dir);
    // Held before recording starts.
    let container = open("/dev/vfio/vfio");
    let group = open("/dev/vfio/7");
    println!("READY {} {container} {group}", std::process::id());
    wait_for(&dir.join("go1"));
    // Met while recording, without an open the probe could see: learned from /proc on use.
    // SAFETY: dup of our own open fd.
    let d = unsafe { libc::dup(container) };
    assert!(d >= 0);
    // On a container this is VFIO_IOMMU_DIRTY_PAGES: no `set` may come of it.
    set_state(d, 5);
    // On a group fd it decodes as a SET: the recorder's sign that `d` was read.
    set_state(group, 1);
    println!("DUP {d}");
    wait_for(&dir.join("go2"));
    // SAFETY: closing our own fd once.
    unsafe { libc::close(d) };
    let reused = open("/dev/plain");
    // Not a container any more: this one is a SET.
    set_state(reused, 2);
    println!("REUSED {reused}");
}

fn sets(evs: &[Event]) -> Vec<(String, MigState)> {
    evs.iter()
        .filter_map(|e| match &e.kind {
            EventKind::Set { dev, to } => Some((dev.clone(), *to)),
            _ => None,
        })
        .collect()
}

/// Drains until `n` sets were recorded (or 10 s).
fn drain_until(cap: &mut Capture, evs: &mut Vec<Event>, n: usize) {
    let t = Instant::now();
    while sets(evs).len() < n && t.elapsed() < Duration::from_secs(10) {
        evs.extend(cap.drain().expect("drain"));
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn held_fds_are_forgotten_when_closed() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: held_fds_are_forgotten_when_closed needs root to load eBPF");
        return;
    }
    if Command::new("unshare").arg("--version").output().is_err() {
        eprintln!("SKIP: held_fds_are_forgotten_when_closed needs unshare (util-linux)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let script = "mount -t tmpfs tmp /dev && mkdir /dev/vfio && : > /dev/vfio/vfio && \
                  : > /dev/vfio/7 && : > /dev/plain && \
                  exec \"$0\" --ignored --exact held_fds_helper --nocapture";
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script])
        .arg(std::env::current_exe().expect("test binary"))
        .env(HELPER_ENV, dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run helper");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut next = |tag: &str| -> Vec<i64> {
        for l in lines.by_ref() {
            let l = l.expect("helper output");
            if let Some(rest) = l.strip_prefix(tag) {
                return rest
                    .split_whitespace()
                    .map(|w| w.parse().expect("number"))
                    .collect();
            }
        }
        panic!("the helper never said {tag}");
    };
    let ready = next("READY ");
    let (pid, group) = (ready[0] as u32, ready[2]);
    let mut cap = Capture::start(&CaptureOptions {
        pids: Some(vec![pid]),
        ring_bytes: None,
        ..Default::default()
    })
    .expect("probe loads");
    let mut evs = Vec::new();
    std::fs::write(dir.path().join("go1"), b"").expect("go1");
    let dup = next("DUP ")[0];
    drain_until(&mut cap, &mut evs, 1);
    std::fs::write(dir.path().join("go2"), b"").expect("go2");
    let reused = next("REUSED ")[0];
    drain_until(&mut cap, &mut evs, 2);
    let status = child.wait().expect("helper exit");
    evs.extend(cap.stop().expect("stop"));
    assert!(status.success(), "helper failed: {status}");
    assert_eq!(reused, dup, "fd number not reused; the test proves nothing");
    assert_eq!(
        sets(&evs),
        [
            (format!("fd:{group}@{pid}"), MigState::Stop),
            (format!("fd:{reused}@{pid}"), MigState::Running),
        ],
        "the closed container's number, reused for a plain file, must not stay a container"
    );
}
