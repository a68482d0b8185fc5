//! Privileged host test: `record` shows its progress line (events, lost, devices, bytes
//! written, refreshed in place) only on a terminal outside CI. On a pipe, or with `CI` set,
//! stderr has no escape sequences and no carriage returns. The terminal is a real pty
//! (`script` from util-linux). Skips, saying so, when not root or without `script`.

use std::process::Command;

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn record_cmd(out: &std::path::Path) -> String {
    format!(
        "{} record --duration 2 -o {}",
        env!("CARGO_BIN_EXE_migscope"),
        out.display()
    )
}

#[test]
fn record_progress_is_drawn_on_a_terminal_only() {
    if !root() {
        eprintln!("SKIP: record_progress_is_drawn_on_a_terminal_only needs root to load eBPF");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");

    // A pipe: plain lines only.
    let o = Command::new("sh")
        .args(["-c", &record_cmd(&dir.path().join("pipe.jsonl"))])
        .env_remove("CI")
        .env("TERM", "xterm")
        .output()
        .expect("run record");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("migscope: recording"), "{err}");
    assert!(
        !err.contains('\x1b') && !err.contains('\r'),
        "no progress escapes on a pipe: {err:?}"
    );
    assert!(
        !err.contains("recording: "),
        "no progress line on a pipe: {err}"
    );

    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("SKIP: the terminal half needs script (util-linux)");
        return;
    }
    // A terminal: the line is drawn (and redrawn in place), then cleared.
    let tty = |ci: Option<&str>, name: &str| {
        let mut c = Command::new("script");
        c.args(["-qfec", &record_cmd(&dir.path().join(name)), "/dev/null"])
            .env("TERM", "xterm");
        match ci {
            Some(v) => c.env("CI", v),
            None => c.env_remove("CI"),
        };
        let o = c.output().expect("run script");
        assert!(o.status.success(), "{o:?}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let shown = tty(None, "tty.jsonl");
    assert!(
        shown.contains("recording: ") && shown.contains("events, ") && shown.contains(" written"),
        "progress on a terminal: {shown:?}"
    );
    assert!(shown.contains('\x1b'), "drawn in place: {shown:?}");
    let ci = tty(Some("true"), "ci.jsonl");
    assert!(
        !ci.contains("recording: "),
        "no progress with CI set: {ci:?}"
    );
    assert!(!ci.contains('\x1b'), "no escapes with CI set: {ci:?}");
}
