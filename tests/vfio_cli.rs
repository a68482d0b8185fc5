//! The `migscope drive` binary: help, usage errors and a device that cannot be opened (the real
//! VFIO backend on a host without the device), all before any device state is touched.

#![expect(
    clippy::expect_used,
    reason = "test helpers panic with context (STYLE.md: tests panic, never return Result)"
)]

use std::process::Command;

fn drive(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_migscope"))
        .arg("drive")
        .args(args)
        .output()
        .expect("run migscope")
}

#[test]
fn help_documents_every_plan_and_exit_status() {
    let o = drive(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    let text = String::from_utf8_lossy(&o.stdout);
    for want in [
        "stopcopy",
        "precopy",
        "roundtrip",
        "conformance",
        "RUNNING_P2P,STOP,RUNNING",
        "--order",
        "--workload",
        "--allow-hazard",
        "--resume-from",
        "--vfio-path",
        "--junit",
        "Exit status",
    ] {
        assert!(text.contains(want), "help lacks {want}:\n{text}");
    }
}

#[test]
fn bad_plan_is_a_usage_error() {
    let o = drive(&["--device", "0000:00:02.0", "--plan", "RUNNING,NOPE"]);
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("NOPE"), "{err}");
}

#[test]
fn a_device_that_cannot_be_opened_is_unusable_and_writes_no_trace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("t.jsonl");
    let o = drive(&[
        "--device",
        "0000:ff:1f.7",
        "--plan",
        "stopcopy",
        "--no-probe",
        "-o",
        out.to_str().expect("utf-8"),
    ]);
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("failed to open 0000:ff:1f.7"), "{err}");
    assert!(!out.exists());
}
