//! Privileged host test of fd-kind tracking: opens of `/dev/vfio/...` paths are learned by
//! the probe (sys_enter/exit_open and _openat) so that 0x3B75 on a container fd is recognised as
//! VFIO_IOMMU_DIRTY_PAGES and not decoded as a device feature, and a close forgets the fd
//! again. The host has no VFIO, so a helper thread gets its own filesystem root
//! (`unshare(CLONE_FS)` + `chroot` into a temporary directory holding plain files at those
//! paths): no mount, nothing outside the thread changes. Skips, saying so, when not root.

#![expect(
    clippy::expect_used,
    reason = "test helpers panic with context (STYLE.md: tests panic, never return Result)"
)]

use std::{ffi::CString, time::Duration};

use migscope::capture::{Capture, CaptureOptions};
use migscope::model::MigState;
use migscope::trace::{Event, EventKind};

const VFIO_DEVICE_FEATURE: u32 = 0x3B75;
const SET_MIG_DEVICE_STATE: u32 = (1 << 17) | 2;

fn set_state(fd: i32, state: u32) {
    let mut arg: [u32; 4] = [16, SET_MIG_DEVICE_STATE, state, u32::MAX];
    // SAFETY: a valid pointer to a live buffer; the kernel answers ENOTTY on these files.
    let r = unsafe { libc::ioctl(fd, VFIO_DEVICE_FEATURE as _, arg.as_mut_ptr()) };
    assert_eq!(r, -1, "a plain file accepted a VFIO ioctl");
}

/// open(2) itself, as musl's `open()` issues it (glibc's goes through openat).
#[cfg(target_arch = "x86_64")]
fn open_syscall(path: &str) -> i32 {
    let c = CString::new(path).expect("path");
    // SAFETY: c is a valid NUL-terminated path; SYS_open takes (path, flags).
    let fd = unsafe { libc::syscall(libc::SYS_open, c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    assert!(fd >= 0, "open {path}: {}", std::io::Error::last_os_error());
    fd as i32
}

#[cfg(not(target_arch = "x86_64"))]
fn open_syscall(path: &str) -> i32 {
    open(path)
}

fn open(path: &str) -> i32 {
    let c = CString::new(path).expect("path");
    // SAFETY: c is a valid NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    assert!(fd >= 0, "open {path}: {}", std::io::Error::last_os_error());
    fd
}

#[test]
fn container_fds_are_told_apart_and_forgotten_on_close() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: container_fds_are_told_apart_and_forgotten_on_close needs root");
        return;
    }
    let pid = std::process::id();
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(root.path().join("dev/vfio/devices")).expect("mkdir");
    for f in [
        "dev/vfio/vfio",
        "dev/vfio/7",
        "dev/vfio/devices/vfio0",
        "plain",
    ] {
        std::fs::write(root.path().join(f), b"").expect("create");
    }
    let mut cap = Capture::start(&CaptureOptions {
        pids: Some(vec![pid]),
        ring_bytes: None,
        ..Default::default()
    })
    .expect("probe loads");

    let root_path = CString::new(root.path().as_os_str().as_encoded_bytes()).expect("root");
    let (container, cdev, reused) = std::thread::spawn(move || {
        // SAFETY: unshare(CLONE_FS) gives this thread its own root/cwd; chroot then only
        // changes this thread's view. Both are checked; the thread ends right after.
        unsafe {
            assert_eq!(libc::unshare(libc::CLONE_FS), 0, "unshare(CLONE_FS)");
            assert_eq!(libc::chroot(root_path.as_ptr()), 0, "chroot");
            assert_eq!(libc::chdir(c"/".as_ptr()), 0, "chdir");
        }
        // The container through open(2), the others through openat(2): both are followed.
        let container = open_syscall("/dev/vfio/vfio");
        let _group = open("/dev/vfio/7");
        let cdev = open("/dev/vfio/devices/vfio0");
        // On the container this number is DIRTY_PAGES: no `set` may come of it.
        set_state(container, 5);
        // On a device cdev it is a MIG_DEVICE_STATE SET.
        set_state(cdev, 1);
        // SAFETY: closing our own fd once.
        unsafe { libc::close(container) };
        // The lowest free number comes back for a file that is not VFIO at all: the probe
        // must have forgotten that this number was a container.
        let reused = open("/plain");
        set_state(reused, 2);
        (container, cdev, reused)
    })
    .join()
    .expect("helper thread");
    assert_eq!(
        reused, container,
        "fd number not reused; the test proves nothing"
    );
    let mut evs: Vec<Event> = Vec::new();
    for _ in 0..200 {
        evs.extend(cap.drain().expect("drain"));
        if evs
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Set { .. }))
            .count()
            >= 2
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    evs.extend(cap.stop().expect("stop"));
    let sets: Vec<(String, MigState)> = evs
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Set { dev, to } => Some((dev.clone(), *to)),
            _ => None,
        })
        .collect();
    assert_eq!(
        sets,
        vec![
            (format!("fd:{cdev}@{pid}"), MigState::Stop),
            (format!("fd:{reused}@{pid}"), MigState::Running),
        ],
        "container fd {container}: {evs:#?}"
    );
}
