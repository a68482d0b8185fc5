//! End to end: the real `migscope` binary in a real terminal (tmux) on a failing fixture;
//! `n` selects the first violation and the detail pane is read back with `capture-pane`.
//! Skipped (visibly) when tmux is not installed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn tmux(socket: &str, args: &[&str]) -> Output {
    Command::new("tmux")
        .arg("-L")
        .arg(socket)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("tmux {args:?}: {e}"))
}

fn capture(socket: &str) -> String {
    String::from_utf8_lossy(&tmux(socket, &["capture-pane", "-p", "-t", "e2e"]).stdout).into_owned()
}

/// Polls the pane until every string of `wants` is on it at once (the UI runs in another
/// process and a capture can catch a frame half drawn; this waits for a condition with a
/// generous ceiling, it is not a timing assertion).
fn wait_all(socket: &str, wants: &[&str]) -> String {
    let start = Instant::now();
    loop {
        let s = capture(socket);
        if wants.iter().all(|w| s.contains(w)) {
            return s;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let missing: Vec<_> = wants.iter().filter(|w| !s.contains(*w)).collect();
            panic!("{missing:?} never appeared; the pane shows:\n{s}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_for(socket: &str, want: &str) -> String {
    wait_all(socket, &[want])
}

/// Kills the tmux server of this test even if it panics.
struct Server(String);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.0, "kill-server"])
            .output();
    }
}

fn run_in_tmux(fixture: &Path, cwd: &Path, w: u16, h: u16, tag: &str) -> (Server, String) {
    let socket = format!("migscope-e2e-{}-{tag}", std::process::id());
    let server = Server(socket.clone());
    let bin = env!("CARGO_BIN_EXE_migscope");
    let cmd = format!(
        "{bin} view {}; echo EXITED:$?:END; sleep 30",
        fixture.display()
    );
    let out = tmux(
        &socket,
        &[
            "new-session",
            "-d",
            "-s",
            "e2e",
            "-c",
            &cwd.display().to_string(),
            "-x",
            &w.to_string(),
            "-y",
            &h.to_string(),
            &cmd,
        ],
    );
    assert!(
        out.status.success(),
        "tmux new-session failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (server, socket)
}

fn tmux_available() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn view_navigates_to_the_first_violation_in_a_real_terminal() {
    if !tmux_available() {
        eprintln!("SKIP: tmux is not installed (apt-get install tmux)");
        return;
    }
    let fixture =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tui/late-dma-fail.jsonl");
    let cwd = tempfile::tempdir().expect("tempdir");
    let (_server, socket) = run_in_tmux(&fixture, cwd.path(), 100, 30, "view");
    // Loaded and verified: the header shows the verdict.
    wait_for(&socket, "FAIL");
    tmux(&socket, &["send-keys", "-t", "e2e", "n"]);
    let screen = wait_all(
        &socket,
        &[
            "VIOLATION",
            "irq-after-quiesce",
            "violation 1/2",
            "caused by:",
            "line 9",
            "RUNNING_P2P since",
            "0000:3b:00.1",
        ],
    );
    println!("{screen}");
    // The second violation, then quit: the terminal is given back and the exit status is 0.
    tmux(&socket, &["send-keys", "-t", "e2e", "n"]);
    wait_all(&socket, &["dma-after-quiesce", "violation 2/2"]);
    // Export: the file named in the status bar holds the same trace.
    tmux(&socket, &["send-keys", "-t", "e2e", "e"]);
    wait_for(&socket, "exported late-dma-fail.export-1.jsonl");
    let exported = cwd.path().join("late-dma-fail.export-1.jsonl");
    let events = |p: &Path| -> Vec<migscope::trace::Event> {
        migscope::trace::JsonlReader::open(p)
            .unwrap_or_else(|e| panic!("{e}"))
            .map(|r| r.unwrap_or_else(|e| panic!("{e}")).1)
            .collect()
    };
    assert_eq!(events(&exported), events(&fixture));
    tmux(&socket, &["send-keys", "-t", "e2e", "q"]);
    let screen = wait_for(&socket, ":END");
    assert!(screen.contains("EXITED:0"), "{screen}");
    // The alternate screen is gone: nothing of the TUI is left on the normal screen.
    assert!(!screen.contains("caused by:"), "{screen}");
}

#[test]
fn view_rejects_a_bad_trace_before_taking_the_terminal() {
    if !tmux_available() {
        eprintln!("SKIP: tmux is not installed (apt-get install tmux)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"t\":0,\"ev\":\"end\"}\n").expect("write");
    let (_server, socket) = run_in_tmux(&bad, dir.path(), 100, 30, "bad");
    wait_all(&socket, &["EXITED:3:END", "migscope_trace"]);
}

#[test]
fn watch_follows_a_growing_trace_until_its_end() {
    if !tmux_available() {
        eprintln!("SKIP: tmux is not installed (apt-get install tmux)");
        return;
    }
    use std::io::Write as _;
    let src = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tui/late-dma-fail.jsonl"),
    )
    .expect("fixture");
    let lines: Vec<&str> = src.lines().collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("growing.jsonl");
    let partial = migscope::trace::jsonl::partial_path(&path);
    let socket = format!("migscope-e2e-{}-watch", std::process::id());
    let _server = Server(socket.clone());
    let cmd = format!(
        "{} watch --follow {}; echo EXITED:$?:END; sleep 30",
        env!("CARGO_BIN_EXE_migscope"),
        path.display()
    );
    let out = tmux(
        &socket,
        &[
            "new-session",
            "-d",
            "-s",
            "e2e",
            "-x",
            "100",
            "-y",
            "30",
            &cmd,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Started before the writer: it waits for the file.
    wait_for(&socket, "waiting for");
    // Like `record -o`/`drive -o`: written as FILE.partial, renamed at the end.
    let mut f = std::fs::File::create(&partial).expect("create");
    // Header and the events before the quiesce.
    for l in &lines[..5] {
        writeln!(f, "{l}").expect("write");
    }
    f.flush().expect("flush");
    // The verdict of the events so far (interim: nothing quiesced yet).
    wait_all(&socket, &["events 4/4", "LIVE:follow", "PASS so far"]);
    // The quiesce and the late interrupt arrive: the verdict so far turns to failing.
    for l in &lines[5..9] {
        writeln!(f, "{l}").expect("write");
    }
    f.flush().expect("flush");
    wait_all(&socket, &["FAILING", "1 viol"]);
    // Pause: new events are recorded but the list stays where it was.
    tmux(&socket, &["send-keys", "-t", "e2e", " "]);
    wait_for(&socket, "LIVE:paused");
    for l in &lines[9..] {
        writeln!(f, "{l}").expect("write");
    }
    f.flush().expect("flush");
    std::fs::rename(&partial, &path).expect("rename");
    // The `end` event closes the trace and the final verdict arrives.
    let screen = wait_for(&socket, " FAIL ");
    assert!(screen.contains("2 viol"), "{screen}");
    assert!(
        screen.contains("events 8/10"),
        "paused list moved:\n{screen}"
    );
    tmux(&socket, &["send-keys", "-t", "e2e", "G"]);
    let screen = wait_for(&socket, "events 10/10");
    println!("{screen}");
    tmux(&socket, &["send-keys", "-t", "e2e", "q"]);
    let screen = wait_for(&socket, ":END");
    assert!(screen.contains("EXITED:0"), "{screen}");
}

#[test]
fn watch_shows_live_probe_events_and_writes_the_trace() {
    if !tmux_available() {
        eprintln!("SKIP: tmux is not installed (apt-get install tmux)");
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: watch_shows_live_probe_events_and_writes_the_trace needs root (eBPF)");
        return;
    }
    const VFIO_DEVICE_FEATURE: u32 = 0x3B75;
    const SET_MIG_DEVICE_STATE: u32 = (1 << 17) | 2;
    let pid = std::process::id();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("live.jsonl");
    let socket = format!("migscope-e2e-{pid}-probe");
    let _server = Server(socket.clone());
    let cmd = format!(
        "{} watch --pid {pid} -o {}; echo EXITED:$?:END; sleep 30",
        env!("CARGO_BIN_EXE_migscope"),
        out.display()
    );
    let started = tmux(
        &socket,
        &[
            "new-session",
            "-d",
            "-s",
            "e2e",
            "-x",
            "120",
            "-y",
            "30",
            &cmd,
        ],
    );
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    // The probe is attached once the view shows its sources.
    wait_all(&socket, &["LIVE:follow", "probe (pid", "transitions"]);

    // SAFETY: eventfd has no pointer arguments.
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    assert!(efd >= 0);
    // A MIG_DEVICE_STATE SET toward RUNNING_P2P on a non-VFIO fd: the kernel answers ENOTTY,
    // the probe still sees the request and its return.
    let mut arg: [u32; 4] = [16, SET_MIG_DEVICE_STATE, 5, u32::MAX];
    // SAFETY: a valid pointer to a live buffer.
    let r = unsafe { libc::ioctl(efd, VFIO_DEVICE_FEATURE as _, arg.as_mut_ptr()) };
    assert_eq!(r, -1);
    let dev = format!("fd:{efd}@{pid}");
    let screen = wait_all(
        &socket,
        &[
            &format!("set {dev} -> RUNNING_P2P"),
            &format!("set_done {dev} RUNNING_P2P ret=-25"),
        ],
    );
    println!("{screen}");
    tmux(&socket, &["send-keys", "-t", "e2e", "q"]);
    let screen = wait_for(&socket, ":END");
    assert!(screen.contains("EXITED:0"), "{screen}");
    // SAFETY: efd is ours and closed once.
    unsafe { libc::close(efd) };
    // The whole trace was written and closed with `end`.
    let evs: Vec<migscope::trace::Event> = migscope::trace::JsonlReader::open(&out)
        .unwrap_or_else(|e| panic!("{e}"))
        .map(|r| r.unwrap_or_else(|e| panic!("{e}")).1)
        .collect();
    assert!(
        evs.iter().any(|e| matches!(&e.kind,
            migscope::trace::EventKind::SetDone { dev: d, ret: -25, .. } if *d == dev)),
        "{evs:#?}"
    );
    assert_eq!(
        evs.last().map(|e| &e.kind),
        Some(&migscope::trace::EventKind::End)
    );
}

/// Where the `drive --tui` child writes its trace and its device's final state.
const DRIVE_DIR: &str = "MIGSCOPE_TUI_DRIVE_DIR";

/// `migscope drive --tui` over the simulated device (a driver that lets DMA land after the
/// quiesce), dwelling long in its first quiescent state: run in tmux only by
/// [`drive_tui_shows_the_quiesce_and_the_verdict_mid_drive`].
#[test]
#[ignore = "the child of drive_tui_shows_the_quiesce_and_the_verdict_mid_drive"]
fn drive_tui_child() {
    use clap::Parser as _;
    use migscope::cli::{Cli, Command as Cmd, drive};
    use migscope::vfio::sim::{Misbehave, SimSpec, SimVfio};
    let dir = PathBuf::from(std::env::var(DRIVE_DIR).expect("run by the parent test"));
    let out = dir.join("drive.jsonl");
    let cli = Cli::try_parse_from([
        "migscope",
        "drive",
        "--tui",
        "--no-probe",
        "--device",
        "0000:00:02.0",
        "--plan",
        "stopcopy",
        "--dwell-ms",
        "600000",
        "-o",
        out.to_str().expect("utf-8"),
    ])
    .expect("parse");
    let Cmd::Drive(args) = cli.command else {
        panic!("not drive");
    };
    let mut sim =
        SimVfio::new([SimSpec::new("0000:00:02.0", 3).with(Misbehave::DmaAfterQuiesce(1))]);
    let code = drive::drive_with(&mut sim, &args, migscope::session::Stop::new());
    let state = sim.state_of("0000:00:02.0").map_or("?", |s| s.name());
    std::fs::write(dir.join("final"), format!("{code} {state}")).expect("write final");
}

#[test]
fn drive_tui_shows_the_quiesce_and_the_verdict_mid_drive() {
    if !tmux_available() {
        eprintln!("SKIP: tmux is not installed (apt-get install tmux)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = format!("migscope-e2e-{}-drive", std::process::id());
    let _server = Server(socket.clone());
    let exe = std::env::current_exe().expect("test binary");
    let cmd = format!(
        "{} --exact drive_tui_child --ignored --nocapture; echo EXITED:$?:END; sleep 30",
        exe.display()
    );
    let dir_env = format!("{DRIVE_DIR}={}", dir.path().display());
    let out = tmux(
        &socket,
        &[
            "new-session",
            "-d",
            "-s",
            "e2e",
            "-e",
            &dir_env,
            "-x",
            "120",
            "-y",
            "30",
            &cmd,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Mid-drive (the device dwells in RUNNING_P2P for minutes): the lane shows the quiesce, the
    // violation is there as it happened and the verdict so far is failing.
    let screen = wait_all(&socket, &["LIVE", "RUNNING_P2P", "FAILING", "1 viol"]);
    println!("{screen}");
    assert!(
        !dir.path().join("final").exists(),
        "the drive ended before the capture"
    );
    // The trace is being written meanwhile.
    let partial = migscope::trace::jsonl::partial_path(&dir.path().join("drive.jsonl"));
    assert!(partial.exists(), "no {}", partial.display());
    // `q` stops the plan safely: the device back to RUNNING, the trace completed, the
    // terminal restored, the run's verdict printed.
    tmux(&socket, &["send-keys", "-t", "e2e", "q"]);
    let screen = wait_for(&socket, ":END");
    assert!(screen.contains("EXITED:0"), "{screen}");
    assert!(screen.contains("dma-after-quiesce"), "{screen}");
    let fin = std::fs::read_to_string(dir.path().join("final")).expect("final state");
    assert_eq!(fin, "1 RUNNING", "exit status and the device's state");
    let report = migscope::verify::check_path(
        &dir.path().join("drive.jsonl"),
        migscope::verify::Options::default(),
    )
    .expect("complete trace");
    assert!(!report.truncated);
    assert!(report.violated_rules().contains(&"dma-after-quiesce"));
}
