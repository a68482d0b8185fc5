//! Privileged host test: a tiny ring buffer and a burst of ioctls without draining must show
//! up as `lost` events, and the trace they make must be inconclusive. Skips, saying so, when
//! not root.

use migscope::capture::{Capture, CaptureOptions, LOST_RING};
use migscope::trace::{Event, EventKind, Header, jsonl::JsonlWriter};
use migscope::verify::{self, Verdict};

const VFIO_DEVICE_FEATURE: u32 = 0x3B75;
const SET_MIG_DEVICE_STATE: u32 = (1 << 17) | 2;
const BURST: usize = 2000;

#[test]
fn overflow_becomes_lost_and_inconclusive() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: overflow_becomes_lost_and_inconclusive needs root to load eBPF");
        return;
    }
    let pid = std::process::id();
    let cap = Capture::start(&CaptureOptions {
        pids: Some(vec![pid]),
        ring_bytes: Some(4096),
        ..Default::default()
    })
    .expect("probe loads");
    let header = Header {
        sources: cap.sources(),
        ..Header::default()
    };
    // SAFETY: eventfd has no pointer arguments.
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    assert!(efd >= 0);
    // SET RUNNING_P2P: the device's migration flags were never seen, so it is declared
    // STOP_COPY only and these failed SETs are not violations; the verdict then rests on the
    // loss alone.
    let mut arg: [u32; 4] = [16, SET_MIG_DEVICE_STATE, 5, u32::MAX];
    for _ in 0..BURST {
        // SAFETY: a valid pointer to a live buffer; the kernel answers ENOTTY.
        unsafe { libc::ioctl(efd, VFIO_DEVICE_FEATURE as _, arg.as_mut_ptr()) };
    }
    // SAFETY: efd is ours and closed once.
    unsafe { libc::close(efd) };
    let evs = cap.stop().expect("stop");

    let lost: u64 = evs
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Lost { n, source, .. } if source == LOST_RING => Some(*n),
            _ => None,
        })
        .sum();
    let decoded = evs
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Set { .. } | EventKind::SetDone { .. }))
        .count() as u64;
    assert!(
        lost > 0,
        "a 4 KiB ring took {BURST} ioctls without loss: {decoded} decoded"
    );
    // Every record of the burst is either decoded or counted (other processes' VFIO ioctls
    // may add to the loss count, never subtract).
    assert!(
        decoded + lost >= 2 * BURST as u64,
        "decoded {decoded} + lost {lost} < {} records",
        2 * BURST
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("overflow.jsonl");
    let mut w = JsonlWriter::create(&path, &header).expect("create trace");
    let last = evs.last().map_or(0, |e| e.t);
    for ev in &evs {
        w.write(ev).expect("write");
    }
    w.write(&Event {
        t: last,
        pid: None,
        kind: EventKind::End,
    })
    .expect("write end");
    w.finish().expect("finish");
    let report = verify::check_path(&path, verify::Options::default()).expect("check");
    assert_eq!(
        report.verdict,
        Verdict::Inconclusive,
        "{}",
        report.to_json()
    );
    assert!(
        report.blind_spots.iter().any(|b| b == "lost"),
        "{}",
        report.to_json()
    );
}
