//! Privileged host test: loads the real probe, attaches the syscall, irq and iommu
//! tracepoints, issues real VFIO ioctls on fds that are not VFIO devices (the kernel answers
//! ENOTTY) and checks the probe still decodes and attributes them. Skips, saying so, when not
//! root.

#![expect(
    clippy::expect_used,
    reason = "test helpers panic with context (STYLE.md: tests panic, never return Result)"
)]

use std::{os::fd::AsRawFd, time::Duration};

use migscope::capture::{Capture, CaptureOptions};
use migscope::model::MigState;
use migscope::trace::{Event, EventKind};

const VFIO_DEVICE_FEATURE: u32 = 0x3B75;
const VFIO_DEVICE_RESET: u32 = 0x3B6F;
const FEATURE_GET: u32 = 1 << 16;
const FEATURE_SET: u32 = 1 << 17;
const MIG_DEVICE_STATE: u32 = 2;
const ENOTTY: i32 = 25;

/// `struct vfio_device_feature` followed by `struct vfio_device_feature_mig_state`.
#[repr(C)]
struct MigStateFeature {
    argsz: u32,
    flags: u32,
    device_state: u32,
    data_fd: i32,
}

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn feature(fd: i32, flags: u32, state: u32) -> i32 {
    let mut arg = MigStateFeature {
        argsz: size_of::<MigStateFeature>() as u32,
        flags,
        device_state: state,
        data_fd: -1,
    };
    // SAFETY: a valid pointer to a live struct; the kernel rejects the command on this fd.
    let r = unsafe { libc::ioctl(fd, VFIO_DEVICE_FEATURE as _, &mut arg) };
    if r < 0 {
        -std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    } else {
        r
    }
}

/// Drains until `done` holds (the capture holds back the newest events briefly) or a
/// generous bound passes, then stops and returns everything.
fn collect(mut cap: Capture, done: impl Fn(&[Event]) -> bool) -> Vec<Event> {
    let mut evs = Vec::new();
    for _ in 0..200 {
        evs.extend(cap.drain().expect("drain"));
        if done(&evs) {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    evs.extend(cap.stop().expect("stop"));
    evs
}

#[test]
fn decodes_mig_state_ioctls_on_an_unknown_fd() {
    if !root() {
        eprintln!("SKIP: decodes_mig_state_ioctls_on_an_unknown_fd needs root to load eBPF");
        return;
    }
    let pid = std::process::id();
    let cap = Capture::start(&CaptureOptions {
        pids: Some(vec![pid]),
        ring_bytes: None,
        ..Default::default()
    })
    .expect("probe loads");
    for name in [
        "syscalls:sys_enter_ioctl",
        "syscalls:sys_exit_ioctl",
        "syscalls:sys_enter_openat",
        "irq:irq_handler_entry",
        "iommu:map",
        "iommu:unmap",
        "iommu:io_page_fault",
    ] {
        let h = cap
            .hooks()
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("hook {name} not reported"));
        assert!(h.attached(), "{h}");
    }
    let sources = cap.sources();
    for s in ["transitions", "irq", "iommu_map", "iommu_fault", "mdev_dma"] {
        assert!(sources.contains_key(s), "source {s} missing: {sources:?}");
    }
    assert_eq!(sources["irq"], "ok");

    // SAFETY: eventfd has no pointer arguments; the fd is owned below.
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    assert!(efd >= 0, "eventfd: {}", std::io::Error::last_os_error());
    let devnull = std::fs::File::open("/dev/null").expect("open /dev/null");
    let nfd = devnull.as_raw_fd();

    assert_eq!(feature(efd, FEATURE_SET | MIG_DEVICE_STATE, 5), -ENOTTY);
    assert_eq!(feature(efd, FEATURE_GET | MIG_DEVICE_STATE, 0), -ENOTTY);
    // SAFETY: VFIO_DEVICE_RESET takes no argument.
    let r = unsafe { libc::ioctl(nfd, VFIO_DEVICE_RESET as _, 0) };
    assert_eq!(r, -1);

    let dev = format!("fd:{efd}@{pid}");
    let ndev = format!("fd:{nfd}@{pid}");
    let evs = collect(cap, |evs| {
        evs.iter()
            .any(|e| matches!(&e.kind, EventKind::Reset { dev: d, .. } if *d == ndev))
    });
    // SAFETY: efd is ours and closed once.
    unsafe { libc::close(efd) };

    let ts: Vec<u64> = evs.iter().map(|e| e.t).collect();
    assert!(
        ts.windows(2).all(|w| w[0] <= w[1]),
        "not time ordered: {evs:#?}"
    );
    assert!(
        evs.iter().all(|e| e.pid.is_none_or(|p| p == pid)),
        "--pid filter let others through: {evs:#?}"
    );
    let pos = |pred: &dyn Fn(&EventKind) -> bool| evs.iter().position(|e| pred(&e.kind));
    let declared = pos(&|k| matches!(k, EventKind::Device { dev: d, .. } if *d == dev))
        .unwrap_or_else(|| panic!("no device event for {dev}: {evs:#?}"));
    let set = pos(&|k| {
        *k == EventKind::Set {
            dev: dev.clone(),
            to: MigState::RunningP2p,
        }
    })
    .unwrap_or_else(|| panic!("no decoded SET RUNNING_P2P on {dev}: {evs:#?}"));
    let done = pos(&|k| {
        *k == EventKind::SetDone {
            dev: dev.clone(),
            to: MigState::RunningP2p,
            ret: -ENOTTY,
            data_fd: None,
        }
    })
    .unwrap_or_else(|| panic!("no set_done -ENOTTY on {dev}: {evs:#?}"));
    assert!(declared < set && set < done, "order: {evs:#?}");
    assert_eq!(evs[set].pid, Some(pid));
    // A failed GET reports nothing: there is no state to report.
    assert!(pos(&|k| matches!(k, EventKind::Get { .. })).is_none());
    pos(&|k| {
        *k == EventKind::Reset {
            dev: ndev.clone(),
            ret: -ENOTTY,
        }
    })
    .unwrap_or_else(|| panic!("no reset on {ndev}: {evs:#?}"));
    assert!(
        !evs.iter().any(|e| matches!(e.kind, EventKind::Lost { .. })),
        "nothing may be lost here: {evs:#?}"
    );
}
