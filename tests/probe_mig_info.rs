//! Privileged host test: the real probe decodes what a VMM's migration-info ioctls returned —
//! VFIO_DEVICE_FEATURE_MIG_DATA_SIZE on a device fd, VFIO_MIG_GET_PRECOPY_INFO on a data fd
//! — issued here on fds that are not VFIO devices (the kernel answers ENOTTY, so only the
//! error replies can be produced on this host; the lab shows the values). The "data fd" is an
//! eventfd declared as one, which also shows that a declared data fd's writes are traced.
//! Skips, saying so, when not root.

use std::time::Duration;

use migscope::capture::{Capture, CaptureOptions};
use migscope::trace::{Event, EventKind};
use probe_common::abi::{feature, ioctl};
use vfio_bindings::bindings::vfio as uapi;

const ENOTTY: i32 = 25;

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The ioctl's return: 0 or a negative errno.
fn ioctl_ret<T>(fd: i32, cmd: u32, arg: &mut T) -> i32 {
    // SAFETY: a valid pointer to a live, writable argument of the right size.
    let r = unsafe { libc::ioctl(fd, cmd as _, arg as *mut T) };
    if r < 0 {
        -std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    } else {
        r
    }
}

#[test]
fn decodes_data_size_and_precopy_info_replies() {
    if !root() {
        eprintln!("SKIP: decodes_data_size_and_precopy_info_replies needs root to load eBPF");
        return;
    }
    let pid = std::process::id();
    let mut cap = Capture::start(&CaptureOptions {
        pids: Some(vec![pid]),
        ring_bytes: None,
        ..Default::default()
    })
    .expect("probe loads");
    // SAFETY: eventfd has no pointer arguments; both fds are closed below.
    let (dev_fd, data_fd) = unsafe {
        (
            libc::eventfd(0, libc::EFD_CLOEXEC),
            libc::eventfd(0, libc::EFD_CLOEXEC),
        )
    };
    assert!(dev_fd >= 0 && data_fd >= 0);
    let bdf = "0000:00:7e.0";
    cap.declare_data_fd(pid, data_fd, bdf);

    // struct vfio_device_feature + struct vfio_device_feature_mig_data_size.
    let mut size = [
        16u32,
        feature::GET | uapi::VFIO_DEVICE_FEATURE_MIG_DATA_SIZE,
        0,
        0,
    ];
    assert_eq!(ioctl_ret(dev_fd, ioctl::DEVICE_FEATURE, &mut size), -ENOTTY);
    let mut info = uapi::vfio_precopy_info {
        argsz: size_of::<uapi::vfio_precopy_info>() as u32,
        ..Default::default()
    };
    assert_eq!(
        ioctl_ret(data_fd, ioctl::MIG_GET_PRECOPY_INFO, &mut info),
        -ENOTTY
    );
    // A write of 8 bytes to the eventfd succeeds: a `load` on the declared data fd.
    let one = 1u64.to_ne_bytes();
    // SAFETY: writes 8 bytes from a live buffer to our own eventfd.
    assert_eq!(unsafe { libc::write(data_fd, one.as_ptr().cast(), 8) }, 8);
    // The same precopy number on a fd that is not a data fd is not that ioctl.
    assert_eq!(
        ioctl_ret(dev_fd, ioctl::MIG_GET_PRECOPY_INFO, &mut info),
        -ENOTTY
    );

    let dev = format!("fd:{dev_fd}@{pid}");
    let mut evs: Vec<Event> = Vec::new();
    for _ in 0..200 {
        evs.extend(cap.drain().expect("drain"));
        if evs.iter().any(|e| matches!(e.kind, EventKind::Data { .. })) {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    evs.extend(cap.stop().expect("stop"));
    // SAFETY: both fds are ours and closed once.
    unsafe {
        libc::close(dev_fd);
        libc::close(data_fd);
    }

    let size_ev = evs
        .iter()
        .position(|e| {
            e.kind
                == EventKind::DataSize {
                    dev: dev.clone(),
                    result: Err(-ENOTTY),
                }
        })
        .unwrap_or_else(|| panic!("no data_size -ENOTTY on {dev}: {evs:#?}"));
    assert_eq!(evs[size_ev].pid, Some(pid));
    let info_evs: Vec<&EventKind> = evs
        .iter()
        .map(|e| &e.kind)
        .filter(|k| matches!(k, EventKind::PrecopyInfo { .. }))
        .collect();
    assert_eq!(
        info_evs,
        [&EventKind::PrecopyInfo {
            dev: bdf.into(),
            result: Err(-ENOTTY),
        }],
        "{evs:#?}"
    );
    assert!(
        evs.iter().any(|e| matches!(&e.kind,
            EventKind::Data {
                dev,
                dir: migscope::trace::DataDir::Load,
                bytes: 8,
                file: Some(f),
            } if dev == bdf && f.fd_gen == 0 && f.reset_gen == 0)),
        "the declared data fd's write: {evs:#?}"
    );
    assert!(
        !evs.iter().any(|e| matches!(e.kind, EventKind::Lost { .. })),
        "nothing may be lost here: {evs:#?}"
    );
}
