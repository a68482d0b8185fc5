//! Privileged test: outputs on a full filesystem (a 64 KiB tmpfs mounted in a private mount
//! namespace, so the host's mounts stay untouched). A report export that cannot be completed
//! leaves nothing behind, `.partial` included; a trace writer keeps what it wrote in its
//! `.partial`, cut back to whole events, so `check` reads it as a truncated trace. Skips,
//! saying so, when not root or without `unshare`.

use std::{fmt::Write as _, process::Command};

/// A valid trace of ~180 KB: a device and 3000 marks.
fn big_trace() -> String {
    let mut s = String::from(
        "{\"migscope_trace\":1,\"clock\":\"monotonic_ns\",\"sources\":{\"transitions\":\"ok\",\"witness\":\"ok\",\"irq\":\"ok\"}}\n\
         {\"t\":0,\"ev\":\"device\",\"dev\":\"0000:00:02.0\",\"flags\":[\"STOP_COPY\",\"P2P\"],\"ctx\":\"vm1\"}\n",
    );
    for i in 1..=3000u64 {
        let _ = writeln!(
            s,
            "{{\"t\":{},\"ev\":\"mark\",\"label\":\"workload tick {i}\"}}",
            i * 1000
        );
    }
    s.push_str("{\"t\":4000000,\"ev\":\"end\"}\n");
    s
}

#[test]
fn a_full_disk_removes_reports_and_keeps_traces() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: a_full_disk_removes_reports_and_keeps_traces needs root (tmpfs mount)");
        return;
    }
    if Command::new("unshare").arg("--version").output().is_err() {
        eprintln!("SKIP: a_full_disk_removes_reports_and_keeps_traces needs unshare (util-linux)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("big.jsonl");
    std::fs::write(&input, big_trace()).expect("write trace");
    let full = dir.path().join("full");
    let kept = dir.path().join("kept");
    std::fs::create_dir(&full).expect("mkdir");
    std::fs::create_dir(&kept).expect("mkdir");
    let bin = env!("CARGO_BIN_EXE_migscope");
    let (i, f, k) = (input.display(), full.display(), kept.display());
    let script = format!(
        "mount -t tmpfs -o size=64k tmpfs {f} || exit 99; \
         {bin} export {i} --format perfetto -o {f}/r.json 2> {k}/perfetto.err; echo \"perfetto=$?\"; \
         {bin} export {i} --format jsonl -o {f}/t.jsonl 2> {k}/jsonl.err; echo \"jsonl=$?\"; \
         echo \"left=$(ls {f} | tr '\\n' ' ')\"; \
         cp {f}/t.jsonl.partial {k}/ 2>/dev/null; true"
    );
    let o = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("run unshare");
    let out = String::from_utf8_lossy(&o.stdout);
    if o.status.code() == Some(99) {
        eprintln!("SKIP: cannot mount a tmpfs in a private namespace: {out}");
        return;
    }
    let err = |n: &str| std::fs::read_to_string(kept.join(n)).unwrap_or_default();
    // The report: exit 3, ENOSPC said, nothing left.
    assert!(out.contains("perfetto=3"), "{out} {}", err("perfetto.err"));
    assert!(
        err("perfetto.err").contains("No space left on device"),
        "{}",
        err("perfetto.err")
    );
    let left = out
        .lines()
        .find_map(|l| l.strip_prefix("left="))
        .expect("listing");
    assert!(
        !left.contains("r.json"),
        "the failed report left {left} behind"
    );
    // The trace: exit 3, its .partial kept and named, whole lines only, read as truncated.
    assert!(out.contains("jsonl=3"), "{out} {}", err("jsonl.err"));
    let jerr = err("jsonl.err");
    assert!(
        jerr.contains("t.jsonl.partial"),
        "names the kept file: {jerr}"
    );
    assert!(jerr.contains("No space left on device"), "{jerr}");
    assert!(
        left.split_whitespace().any(|f| f == "t.jsonl.partial"),
        "{left}"
    );
    assert!(!left.split_whitespace().any(|f| f == "t.jsonl"), "{left}");
    let partial = kept.join("t.jsonl.partial");
    let text = std::fs::read_to_string(&partial).expect("kept trace");
    assert!(
        text.len() > 1000 && text.ends_with('\n'),
        "whole lines: {} bytes",
        text.len()
    );
    let c = Command::new(bin)
        .args(["check", "--json"])
        .arg(&partial)
        .output()
        .expect("check");
    let v: serde_json::Value = serde_json::from_slice(&c.stdout).unwrap_or_else(|e| {
        panic!(
            "check reads the kept trace ({e}): {}",
            String::from_utf8_lossy(&c.stderr)
        )
    });
    assert_eq!(c.status.code(), Some(2), "{v}");
    assert_eq!(v["verdict"], "inconclusive");
    assert!(
        v["blind_spots"]
            .as_array()
            .is_some_and(|b| b.iter().any(|s| s == "truncated")),
        "{v}"
    );
}
