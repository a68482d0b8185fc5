//! Privileged host test: on a host where tracefs is not mounted, `record` mounts it itself,
//! says so in one line, and writes a complete trace. Runs in a private mount namespace
//! (`unshare --mount`) with tracefs unmounted there, so the host's mounts are untouched.
//! Skips, saying so, when not root or without `unshare`.

use std::process::Command;

use migscope::trace::{EventKind, jsonl::JsonlReader};

#[test]
fn record_mounts_tracefs_when_it_is_missing() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: record_mounts_tracefs_when_it_is_missing needs root");
        return;
    }
    if Command::new("unshare").arg("--version").output().is_err() {
        eprintln!("SKIP: record_mounts_tracefs_when_it_is_missing needs unshare (util-linux)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("t.jsonl");
    let script = format!(
        "umount /sys/kernel/debug/tracing 2>/dev/null; umount -l /sys/kernel/tracing 2>/dev/null; \
         if [ -n \"$(ls -A /sys/kernel/tracing 2>/dev/null)\" ]; then echo STILL-MOUNTED; exit 99; fi; \
         exec {} record --duration 1 -o {}",
        env!("CARGO_BIN_EXE_migscope"),
        out.display()
    );
    let o = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("run unshare");
    let stderr = String::from_utf8_lossy(&o.stderr);
    let stdout = String::from_utf8_lossy(&o.stdout);
    if o.status.code() == Some(99) {
        eprintln!("SKIP: tracefs could not be unmounted in a private namespace: {stdout}");
        return;
    }
    assert!(o.status.success(), "record failed: {stdout}{stderr}");
    let notices: Vec<&str> = stderr.lines().filter(|l| l.contains("tracefs")).collect();
    assert!(
        notices
            .iter()
            .any(|l| l.contains("mounted it at /sys/kernel/tracing")),
        "no mount notice: {stderr}"
    );
    assert!(
        !stderr.contains("tracefs not found"),
        "a hook still missed tracefs: {stderr}"
    );
    let mut r = JsonlReader::open(&out).expect("trace header");
    assert_eq!(
        r.header().sources.get("irq").map(String::as_str),
        Some("ok"),
        "the irq tracepoint attached once tracefs was mounted"
    );
    let last = r.by_ref().map(|x| x.expect("event").1).last();
    assert_eq!(
        last.map(|e| e.kind),
        Some(EventKind::End),
        "a complete trace"
    );
}
