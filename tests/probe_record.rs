//! Privileged host test: the real `migscope record` binary captures a MIG_DEVICE_STATE SET
//! issued by this test program and writes a complete trace. Skips, saying so, when not root.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

use migscope::model::MigState;
use migscope::trace::{EventKind, jsonl::JsonlReader};

const VFIO_DEVICE_FEATURE: u32 = 0x3B75;
const SET_MIG_DEVICE_STATE: u32 = (1 << 17) | 2;

#[test]
fn record_captures_a_set_from_a_test_program() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: record_captures_a_set_from_a_test_program needs root to load eBPF");
        return;
    }
    let pid = std::process::id();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("rec.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_migscope"))
        .args(["record", "-o"])
        .arg(&out)
        .args(["--pid", &pid.to_string(), "--duration", "120"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn migscope record");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut log = Vec::new();
    loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("record exited before recording: {log:#?}"))
            .expect("read stderr");
        let ready = line.contains("recording");
        log.push(line);
        if ready {
            break;
        }
    }

    // SAFETY: eventfd has no pointer arguments.
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    assert!(efd >= 0);
    // RUNNING_P2P, data_fd -1.
    let mut arg: [u32; 4] = [16, SET_MIG_DEVICE_STATE, 5, u32::MAX];
    // SAFETY: a valid pointer to a live buffer; the kernel answers ENOTTY.
    let r = unsafe { libc::ioctl(efd, VFIO_DEVICE_FEATURE as _, arg.as_mut_ptr()) };
    assert_eq!(r, -1);

    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let status = child.wait().expect("wait");
    log.extend(lines.map_while(Result::ok));
    assert!(status.success(), "record failed: {status:?} {log:#?}");
    // SAFETY: efd is ours and closed once.
    unsafe { libc::close(efd) };

    assert!(
        !migscope::trace::jsonl::partial_path(&out).exists(),
        "partial file left behind"
    );
    let mut reader = JsonlReader::open(&out).expect("open trace");
    assert_eq!(reader.header().sources["irq"], "ok");
    let mut evs = Vec::new();
    while let Some(r) = reader.next_event() {
        evs.push(r.expect("valid event").1);
    }
    let dev = format!("fd:{efd}@{pid}");
    assert!(
        evs.iter().any(|e| e.pid == Some(pid)
            && e.kind
                == EventKind::Set {
                    dev: dev.clone(),
                    to: MigState::RunningP2p
                }),
        "no SET RUNNING_P2P on {dev}: {evs:#?}"
    );
    assert!(
        evs.iter().any(|e| matches!(&e.kind,
            EventKind::SetDone { dev: d, ret: -25, .. } if *d == dev)),
        "no set_done: {evs:#?}"
    );
    assert_eq!(evs.last().map(|e| &e.kind), Some(&EventKind::End));
}
