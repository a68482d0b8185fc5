//! `export --format markdown`: sections, violation context windows, reproduce commands, the
//! doctor summary and `--redact`.

#![expect(
    clippy::expect_used,
    reason = "test helpers panic with context (STYLE.md: tests panic, never return Result)"
)]

mod export_common;

use export_common::{RICH, run, write};

fn md(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = args[args.iter().position(|a| *a == "-o").expect("-o") + 1];
    std::fs::read_to_string(out).expect("report written")
}

#[test]
fn markdown_report_sections_and_context() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = write(dir.path(), "rich.jsonl", RICH);
    let out = dir.path().join("r.md");
    let r = md(&[
        "export",
        t.to_str().expect("p"),
        "-f",
        "markdown",
        "-o",
        out.to_str().expect("p"),
        "--max-quiesce-ms",
        "5",
    ]);
    for s in [
        "# migscope report: rich.jsonl",
        "**Verdict: FAIL**",
        "## Environment",
        "- Kernel: 6.12.0-test",
        "| 0000:00:03.0 | edu_vfio | STOP_COPY, P2P, PRE_COPY | vm1 |",
        "| dirty_log | unavailable: no logging |",
        "No `migscope doctor` output was given",
        "## Violations",
        "## Blind spots",
        "- **lost**: 3 events were lost",
        "## Timeline",
        "quiesce RUNNING -> RUNNING_P2P",
        "## Reproduce",
        "--max-quiesce-ms 5",
        "migscope drive --dev 0000:00:03.0 --plan precopy",
    ] {
        assert!(r.contains(s), "missing {s:?} in:\n{r}");
    }
    // The irq-after-quiesce violation (line 13) with three events before and after.
    let sec = r
        .split("### ")
        .find(|s| s.starts_with("1. `irq-after-quiesce`"))
        .expect("violation section");
    assert!(
        sec.contains(">>       13  {\"t\":13500,\"ev\":\"irq\""),
        "{sec}"
    );
    for l in [10, 11, 12, 14, 15, 16] {
        assert!(
            sec.contains(&format!("   {l:>8}  {{\"t\":")),
            "line {l} in {sec}"
        );
    }
    assert!(
        !sec.contains(&format!("   {:>8}  ", 9)),
        "window wider than 3: {sec}"
    );
    // Not redacted: pids and IOVAs present.
    assert!(r.contains("\"pid\":4242"), "{r}");
    assert!(r.contains("0x100000000"), "{r}");
    // The same report from the native form (only the name differs).
    let nat = dir.path().join("rich.mst");
    let o = run(&[
        "export",
        t.to_str().expect("p"),
        "-f",
        "native",
        "-o",
        nat.to_str().expect("p"),
    ]);
    assert!(o.status.success());
    let out2 = dir.path().join("r2.md");
    let r2 = md(&[
        "export",
        nat.to_str().expect("p"),
        "-f",
        "markdown",
        "-o",
        out2.to_str().expect("p"),
        "--max-quiesce-ms",
        "5",
    ]);
    let norm = |s: &str| {
        s.replace("rich.mst", "X")
            .replace("rich.jsonl", "X")
            .replace("native format", "F")
            .replace("jsonl format", "F")
            .replace(&t.display().to_string(), "X")
            .replace(&nat.display().to_string(), "X")
    };
    assert_eq!(norm(&r), norm(&r2));
}

#[test]
fn markdown_redact_and_doctor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = write(dir.path(), "rich.jsonl", RICH);
    let doctor = write(
        dir.path(),
        "doctor.json",
        r#"{"kernel":"6.12.0","btf":true,"hooks":{"irq":"ok","fexit":"refused"},"note":"iommu at 0xfee00000"}"#,
    );
    let out = dir.path().join("r.md");
    let r = md(&[
        "export",
        t.to_str().expect("p"),
        "-f",
        "markdown",
        "-o",
        out.to_str().expect("p"),
        "--redact",
        "--doctor",
        doctor.to_str().expect("p"),
    ]);
    assert!(r.contains("### Host check (`migscope doctor`)"));
    assert!(r.contains("- **btf**: `true`"), "{r}");
    assert!(r.contains("\"fexit\":\"refused\""), "{r}");
    // No pid, no IOVA (decimal in events, hex in details, marks and doctor output).
    assert!(!r.contains("4242"), "pid left:\n{r}");
    assert!(
        !r.contains("4294967296") && !r.contains("0x100000000"),
        "iova left:\n{r}"
    );
    assert!(
        !r.contains("deadbeef") && !r.contains("fee00000"),
        "hex left:\n{r}"
    );
    assert!(r.contains("\"iova\":\"<redacted>\""), "{r}");
    assert!(r.contains("(redacted)"));
    // This host's name, if it appears as a word, is gone.
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim();
        if h.len() >= 2 && h != "localhost" {
            let t2 = write(
                dir.path(),
                "host.jsonl",
                &RICH.replace("\"label\":\"done", &format!("\"label\":\"on {h} done")),
            );
            let out2 = dir.path().join("h.md");
            let r2 = md(&[
                "export",
                t2.to_str().expect("p"),
                "-f",
                "markdown",
                "-o",
                out2.to_str().expect("p"),
                "--redact",
            ]);
            assert!(r2.contains("on <host> done"), "{r2}");
            assert!(!r2.contains(&format!("on {h} done")));
        } else {
            eprintln!("SKIP host-name redaction: no usable host name");
        }
    }
    // A doctor file that is not JSON is an unusable-input error naming the file.
    let bad = write(dir.path(), "bad.json", "not json");
    let o = run(&[
        "export",
        t.to_str().expect("p"),
        "-f",
        "markdown",
        "-o",
        dir.path().join("x.md").to_str().expect("p"),
        "--doctor",
        bad.to_str().expect("p"),
    ]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("bad.json"));
    assert!(!dir.path().join("x.md").exists());
}
