//! Privileged host test: `migscope doctor --json` really loads and attaches the probe, lists
//! every hook as attached or unavailable with a reason, and names the blind rules. Skips,
//! saying so, when not root.

#![expect(
    clippy::expect_used,
    reason = "test helpers panic with context (STYLE.md: tests panic, never return Result)"
)]

use std::process::Command;

#[test]
fn doctor_reports_every_hook_with_a_reason() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: doctor_reports_every_hook_with_a_reason needs root to load eBPF");
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_migscope"))
        .args(["doctor", "--json"])
        .output()
        .expect("run doctor");
    assert!(out.status.success(), "doctor failed: {out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("doctor JSON");
    assert_eq!(v["probe"]["loaded"], true, "{v:#}");
    assert!(v["kernel"].as_str().is_some_and(|k| !k.is_empty()));
    let hooks = v["hooks"].as_array().expect("hooks");
    for name in [
        "syscalls:sys_enter_ioctl",
        "syscalls:sys_exit_ioctl",
        "irq:irq_handler_entry",
        "iommu:map",
        "iommu:unmap",
        "iommu:io_page_fault",
    ] {
        let h = hooks
            .iter()
            .find(|h| h["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {v:#}"));
        assert_eq!(h["attached"], true, "{h:#}");
    }
    for h in hooks {
        let ok = h["attached"] == true && h["how"].as_str().is_some_and(|s| !s.is_empty())
            || h["attached"] == false && h["why"].as_str().is_some_and(|s| !s.is_empty());
        assert!(ok, "hook without status or reason: {h:#}");
    }
    for name in ["vfio_mig_get_next_state", "vfio_dma_rw", "vfio_pin_pages"] {
        assert!(
            hooks.iter().any(|h| h["name"] == name),
            "{name} not reported: {v:#}"
        );
    }
    for s in ["transitions", "irq", "iommu_map", "iommu_fault", "mdev_dma"] {
        assert!(v["sources"][s].is_string(), "source {s}: {v:#}");
    }
    assert!(
        v["blind"]
            .as_array()
            .is_some_and(|b| b.iter().any(|r| r["rule"] == "dma-after-quiesce")),
        "{v:#}"
    );
}

/// Runs `sh -c script` in a private mount namespace (the host's mounts stay untouched).
fn in_private_mounts(script: &str) -> Option<std::process::Output> {
    if Command::new("unshare").arg("--version").output().is_err()
        || Command::new("setpriv").arg("--version").output().is_err()
    {
        return None;
    }
    Some(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", script])
            .output()
            .expect("run unshare"),
    )
}

/// Unmounts tracefs in the namespace, then drops CAP_SYS_ADMIN so it cannot be mounted again
/// (root in a container without it): CAP_BPF and CAP_PERFMON still load and attach.
const NO_TRACEFS: &str = "umount /sys/kernel/debug/tracing 2>/dev/null; \
     umount -l /sys/kernel/tracing 2>/dev/null; \
     if [ -n \"$(ls -A /sys/kernel/tracing 2>/dev/null)\" ]; then echo STILL-MOUNTED; exit 99; fi; \
     exec setpriv --inh-caps=-sys_admin --ambient-caps=-sys_admin --bounding-set=-sys_admin";

const FIX: &str = "mount -t tracefs tracefs /sys/kernel/tracing";

/// Issue 15: with tracefs missing and unmountable, doctor printed "tracefs not found" ~150
/// times in 26 KB. Now the cause is said once, with its fix, in under 60 lines; --json
/// still has every hook's own reason.
#[test]
fn doctor_names_an_unmountable_tracefs_once_with_the_fix() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: doctor_names_an_unmountable_tracefs_once_with_the_fix needs root");
        return;
    }
    let bin = env!("CARGO_BIN_EXE_migscope");
    let Some(text) = in_private_mounts(&format!("{NO_TRACEFS} {bin} doctor")) else {
        eprintln!("SKIP: needs unshare and setpriv (util-linux)");
        return;
    };
    if text.status.code() == Some(99) {
        eprintln!("SKIP: tracefs could not be unmounted in a private namespace");
        return;
    }
    let out = String::from_utf8_lossy(&text.stdout);
    let err = String::from_utf8_lossy(&text.stderr);
    assert!(
        out.lines().count() < 60,
        "{} lines:\n{out}",
        out.lines().count()
    );
    assert_eq!(
        format!("{out}{err}").matches(FIX).count(),
        1,
        "the fix once:\n{out}{err}"
    );
    assert!(!out.contains("tracefs not found"), "{out}");
    assert!(
        out.contains("CAP_SYS_ADMIN"),
        "the missing capability: {out}"
    );
    let json = in_private_mounts(&format!("{NO_TRACEFS} {bin} doctor --json")).expect("json");
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("doctor JSON");
    let hooks = v["hooks"].as_array().expect("hooks");
    let tp: Vec<&serde_json::Value> = hooks
        .iter()
        .filter(|h| h["name"] == "syscalls:sys_enter_ioctl" || h["name"] == "iommu:map")
        .collect();
    assert_eq!(tp.len(), 2, "{v:#}");
    for h in tp {
        assert_eq!(h["attached"], false, "{h:#}");
        assert!(
            h["why"]
                .as_str()
                .is_some_and(|w| w.contains("tracefs not found")),
            "every detail in --json: {h:#}"
        );
    }
    assert_eq!(v["tracefs"]["state"], "missing", "{v:#}");
    assert_eq!(v["privileges"]["cap_sys_admin"], false);
}

/// `record` on the same host: one error line with the fix, not one per hook.
#[test]
fn record_without_a_mountable_tracefs_says_the_fix_once() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: record_without_a_mountable_tracefs_says_the_fix_once needs root");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let t = dir.path().join("t.jsonl");
    let bin = env!("CARGO_BIN_EXE_migscope");
    let Some(o) = in_private_mounts(&format!(
        "{NO_TRACEFS} {bin} record --duration 1 -o {}",
        t.display()
    )) else {
        eprintln!("SKIP: needs unshare and setpriv (util-linux)");
        return;
    };
    if o.status.code() == Some(99) {
        eprintln!("SKIP: tracefs could not be unmounted in a private namespace");
        return;
    }
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.matches(FIX).count(), 1, "{err}");
    assert!(!err.contains("tracefs not found"), "{err}");
    // Without kprobes (this kind of host) nothing attaches: one unusable error; with them the
    // kprobe hooks record and the tracepoints' cause was said once above.
    if o.status.code() == Some(3) {
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    } else {
        assert!(o.status.success(), "{err}");
    }
}

/// Not root: doctor says which capabilities are missing and that the probe cannot run.
#[test]
fn doctor_without_privileges_names_the_missing_capabilities() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "SKIP: doctor_without_privileges_names_the_missing_capabilities needs root (to drop it)"
        );
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("SKIP: needs setpriv (util-linux)");
        return;
    }
    let o = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_migscope"))
        .arg("doctor")
        .output()
        .expect("run setpriv");
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert!(out.lines().count() < 60, "{out}");
    for cap in ["CAP_BPF", "CAP_PERFMON", "CAP_SYS_RESOURCE"] {
        assert!(out.contains(cap), "{cap} missing from:\n{out}");
    }
    assert!(out.contains("NOT RUNNING"), "{out}");
    assert!(out.contains("run migscope as root"), "{out}");
}

/// On this host as it is: under 60 lines, each cause once.
#[test]
fn doctor_text_is_short_and_says_each_cause_once() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: doctor_text_is_short_and_says_each_cause_once needs root");
        return;
    }
    let o = Command::new(env!("CARGO_BIN_EXE_migscope"))
        .arg("doctor")
        .output()
        .expect("run doctor");
    let out = String::from_utf8_lossy(&o.stdout);
    let devices = out.lines().filter(|l| l.contains("  driver ")).count();
    assert!(out.lines().count() - devices < 60, "{out}");
    let v: serde_json::Value = serde_json::from_slice(
        &Command::new(env!("CARGO_BIN_EXE_migscope"))
            .args(["doctor", "--json"])
            .output()
            .expect("doctor --json")
            .stdout,
    )
    .expect("JSON");
    for c in v["causes"].as_array().expect("causes") {
        let what = c["what"].as_str().expect("what");
        assert_eq!(out.matches(what).count(), 1, "{what} once in:\n{out}");
    }
    for r in v["rules"].as_array().expect("rules") {
        let rule = r["rule"].as_str().expect("rule");
        assert!(
            out.lines().any(|l| l.trim_start().starts_with(rule)),
            "{rule} has a line: {out}"
        );
    }
}
