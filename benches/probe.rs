//! Probe overhead and capture loss on the host, as rows for `cargo xtask bench`:
//! `cargo bench --bench probe -- --migscope target/release/migscope` (root: it loads eBPF).
//!
//! Workloads, each a tight loop in this process on one thread:
//! - `vfio ioctl`: VFIO_DEVICE_RESET (0x3B6F, in the probe's VFIO command range) on an eventfd,
//!   which answers ENOTTY: the probe records a call and a return, `record` writes a `reset`.
//! - `other ioctl`: TCGETS on the same eventfd (ENOTTY): the ioctl tracepoints fire, the
//!   probe's command-range filter drops it (the cost of a tracepoint hit that records nothing).
//! - `write`: a 1-byte write(2) to /dev/null: the probe's read/write tracepoints fire and drop
//!   it (fd not a migration data fd).
//!
//! Each runs with nothing attached, with `migscope record` and with `bpftrace` attached to the
//! same tracepoints doing equivalent work (filter the VFIO command range, pair call and return
//! per thread, print one line per event to a file; look up read/write fds in a map). Added cost
//! per operation = attached minus nothing attached.
//!
//! Capture: paced VFIO-ioctl storms at increasing rates for one second each with
//! `migscope record --pid <self>`; loss = 1 - recorded `reset` events / ioctls issued.
//!
//! Output: tab-separated `ROW` and `NOTE` lines on stdout (xtask reads them), progress on
//! stderr.

use std::{
    fs,
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

const VFIO_DEVICE_RESET: libc::c_ulong = 0x3B6F;
const VFIO_FIRST: u32 = 0x3B64;
const VFIO_LAST: u32 = 0x3B9F;

struct Fds {
    event: libc::c_int,
    null: libc::c_int,
}

impl Fds {
    fn open() -> Result<Fds, String> {
        // SAFETY: eventfd takes no pointers; the fd it returns is checked below.
        let event = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        // SAFETY: open reads only the static NUL-terminated C string; the fd is checked below.
        let null = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        if event < 0 || null < 0 {
            return Err(format!(
                "eventfd/open failed: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(Fds { event, null })
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Work {
    VfioIoctl,
    OtherIoctl,
    Write,
}

impl Work {
    const ALL: [Work; 3] = [Work::VfioIoctl, Work::OtherIoctl, Work::Write];
    fn name(self) -> &'static str {
        match self {
            Work::VfioIoctl => "vfio ioctl (recorded)",
            Work::OtherIoctl => "other ioctl (tracepoint hit, filtered)",
            Work::Write => "write(2) (tracepoint hit, filtered)",
        }
    }
}

#[inline(always)]
fn op(fds: &Fds, w: Work) {
    let byte = 0u8;
    // SAFETY: ioctls on an eventfd with a null argument fail with ENOTTY before touching it;
    // write reads one byte from a live stack variable.
    unsafe {
        match w {
            Work::VfioIoctl => {
                libc::ioctl(fds.event, VFIO_DEVICE_RESET, 0usize);
            }
            Work::OtherIoctl => {
                libc::ioctl(fds.event, libc::TCGETS, 0usize);
            }
            Work::Write => {
                libc::write(fds.null, (&raw const byte).cast(), 1);
            }
        }
    }
}

/// Batches per measurement; the best batch (the one least disturbed by other load) counts.
const BATCHES: u64 = 10;

/// ns per operation: the best of [`BATCHES`] batches.
fn ns_per_op(fds: &Fds, w: Work, iters: u64) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..BATCHES {
        let t = Instant::now();
        for _ in 0..iters / BATCHES {
            op(fds, w);
        }
        best = best.min(t.elapsed().as_nanos() as f64 / (iters / BATCHES) as f64);
    }
    best
}

/// Issues `total` VFIO ioctls at `rate` per second (busy-paced); returns the achieved rate.
fn storm(fds: &Fds, rate: f64, total: u64) -> f64 {
    let start = Instant::now();
    let mut done = 0u64;
    while done < total {
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        while done < due.min(total) {
            op(fds, Work::VfioIoctl);
            done += 1;
        }
    }
    total as f64 / start.elapsed().as_secs_f64()
}

struct Attached {
    child: Child,
    out: PathBuf,
}

fn wait_for(path: &Path, needle: &str, child: &mut Child, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(s) = fs::read_to_string(path)
            && s.contains(needle)
        {
            return Ok(());
        }
        if let Ok(Some(st)) = child.try_wait() {
            let log = fs::read_to_string(path).unwrap_or_default();
            return Err(format!(
                "{what} exited ({st}) before attaching: {}",
                log.trim()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("{what} did not attach within 60 s"))
}

fn start_record(
    mig: &Path,
    dir: &Path,
    tag: &str,
    pid: Option<u32>,
    ring: Option<u32>,
) -> Result<Attached, String> {
    let out = dir.join(format!("record-{tag}.jsonl"));
    let log = dir.join(format!("record-{tag}.log"));
    let _ = fs::remove_file(&out);
    let logf = fs::File::create(&log).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(mig);
    cmd.args(["record", "-o"]).arg(&out);
    if let Some(p) = pid {
        cmd.args(["--pid", &p.to_string()]);
    }
    if let Some(r) = ring {
        cmd.args(["--ring-bytes", &r.to_string()]);
    }
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(logf)
        .spawn()
        .map_err(|e| format!("spawning migscope record: {e}"))?;
    wait_for(&log, "recording", &mut child, "migscope record")?;
    Ok(Attached { child, out })
}

fn bpftrace_script(self_pid: Option<u32>) -> String {
    let only = self_pid.map_or(String::new(), |p| format!(" && pid == {p}"));
    format!(
        r#"BEGIN {{ @data[(uint32)0, (uint64)0] = 0; @rw[tid] = (uint64)0; }}
tracepoint:syscalls:sys_enter_ioctl /args->cmd >= {VFIO_FIRST} && args->cmd <= {VFIO_LAST}{only}/ {{
  @t[tid] = nsecs; @cmd[tid] = args->cmd; @fd[tid] = args->fd;
  printf("call %llu %d %d %d %x %llx\n", nsecs, pid, tid, args->fd, args->cmd, args->arg);
}}
tracepoint:syscalls:sys_exit_ioctl /@t[tid]/ {{
  printf("ret %llu %d %d %d %x %d %llu\n", nsecs, pid, tid, @fd[tid], @cmd[tid], args->ret, @t[tid]);
  delete(@t[tid]); delete(@cmd[tid]); delete(@fd[tid]);
}}
tracepoint:syscalls:sys_enter_write /@data[pid, args->fd]/ {{ @rw[tid] = args->fd; }}
tracepoint:syscalls:sys_enter_read /@data[pid, args->fd]/ {{ @rw[tid] = args->fd; }}
tracepoint:syscalls:sys_exit_write /@rw[tid]/ {{ printf("w %llu %d %d %d\n", nsecs, pid, @rw[tid], args->ret); delete(@rw[tid]); }}
tracepoint:syscalls:sys_exit_read /@rw[tid]/ {{ printf("r %llu %d %d %d\n", nsecs, pid, @rw[tid], args->ret); delete(@rw[tid]); }}
END {{ clear(@data); clear(@rw); clear(@t); clear(@cmd); clear(@fd); }}
"#
    )
}

fn start_bpftrace(dir: &Path, tag: &str) -> Result<Attached, String> {
    let out = dir.join(format!("bpftrace-{tag}.out"));
    let outf = fs::File::create(&out).map_err(|e| e.to_string())?;
    let errf = outf.try_clone().map_err(|e| e.to_string())?;
    let mut child = Command::new("bpftrace")
        .arg("-e")
        .arg(bpftrace_script(None))
        .stdout(outf)
        .stderr(errf)
        .spawn()
        .map_err(|e| format!("spawning bpftrace: {e}"))?;
    wait_for(&out, "Attaching", &mut child, "bpftrace")?;
    // "Attaching N probes..." is printed before the last probe is live.
    std::thread::sleep(Duration::from_millis(500));
    Ok(Attached { child, out })
}

fn stop(mut a: Attached) -> PathBuf {
    // SAFETY: kill on the pid of a child we spawned and have not reaped.
    unsafe {
        libc::kill(a.child.id() as libc::pid_t, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match a.child.try_wait() {
            Ok(Some(_)) | Err(_) => break,
            Ok(None) if Instant::now() > deadline => {
                let _ = a.child.kill();
                let _ = a.child.wait();
                break;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    a.out
}

/// `reset` events of `pid` and the sum of `lost` in a recorded JSONL trace.
fn count_trace(path: &Path, pid: u32) -> (u64, u64) {
    let Ok(f) = fs::File::open(path) else {
        return (0, 0);
    };
    let pid_field = format!("\"pid\":{pid}");
    let (mut resets, mut lost) = (0, 0);
    for line in BufReader::new(f).lines().map_while(Result::ok) {
        if line.contains("\"ev\":\"reset\"") && line.contains(&pid_field) {
            resets += 1;
        } else if line.contains("\"ev\":\"lost\"")
            && let Some(v) = serde_json::from_str::<serde_json::Value>(&line).ok()
        {
            lost += v["n"].as_u64().unwrap_or(0);
        }
    }
    (resets, lost)
}

/// Paced storms at rising rates, one second each, with `record --pid <self>`: the zero-loss
/// rate is the highest rate below which every rate tried lost nothing.
fn capture_curve(mig: &Path, dir: &Path, fds: &Fds, me: u32, ring: Option<u32>) {
    let ring_name = ring.map_or("default 1 MiB ring".to_owned(), |r| {
        format!("--ring-bytes {} MiB", r >> 20)
    });
    let mut zero_loss_max = 0.0f64;
    let mut clean = true;
    let mut curve = Vec::new();
    for rate in [100e3, 250e3, 500e3, 1e6, 2e6, 4e6] {
        eprintln!("probe bench: capture storm at {rate} ioctl/s ({ring_name})");
        let a = match start_record(mig, dir, "storm", Some(me), ring) {
            Ok(a) => a,
            Err(e) => {
                note(&format!("capture: {e}"));
                break;
            }
        };
        let total = rate as u64; // one second
        let achieved = storm(fds, rate, total);
        std::thread::sleep(Duration::from_millis(300));
        let out = stop(a);
        let (n, lost) = count_trace(&out, me);
        let missing = total.saturating_sub(n);
        curve.push(format!(
            "{:.0}k/s: {missing} of {total} missing ({:.4} %), lost events {lost}",
            achieved / 1e3,
            100.0 * missing as f64 / total as f64
        ));
        if missing == 0 && lost == 0 && clean {
            // A paced step counts at its nominal rate when the loop kept (nearly) up with it.
            let r = if achieved >= 0.97 * rate {
                rate
            } else {
                achieved
            };
            zero_loss_max = zero_loss_max.max(r);
        } else {
            clean = false;
        }
        if achieved < 0.9 * rate {
            // The loop cannot go faster on this machine: stop the curve here.
            curve.push(format!(
                "the storm loop saturated at {:.0}k/s (its own CPU limit with the probe attached, not a loss)",
                achieved / 1e3
            ));
            break;
        }
    }
    row(
        "capture",
        &format!("zero-loss ioctl storm rate ({ring_name})"),
        zero_loss_max,
        "ev/s",
        "",
        f64::NAN,
        "≥ 500k ev/s",
        zero_loss_max >= 500e3,
        &format!("loss curve: {}", curve.join("; ")),
    );
}

/// Other tracers running on this host (another `migscope record`/`watch`/`drive`, bpftrace):
/// their probes fire on every syscall here too, so "nothing attached" would include them.
fn other_tracers() -> Vec<String> {
    let me = std::process::id();
    let mut found = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return found;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let exe = args
            .first()
            .map_or("", |a| a.rsplit('/').next().unwrap_or(a));
        let tracing = (exe == "migscope"
            && args
                .get(1)
                .is_some_and(|c| matches!(c.as_str(), "record" | "watch" | "drive")))
            || exe == "bpftrace";
        if tracing {
            found.push(format!("pid {pid}: {}", args.join(" ")));
        }
    }
    found
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn record_available(mig: &Path) -> bool {
    let Ok(o) = Command::new(mig).args(["record", "--help"]).output() else {
        return false;
    };
    let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
    let _ = o.stderr.as_slice().read_to_string(&mut s);
    o.status.success() && s.contains("--output")
}

#[allow(clippy::too_many_arguments)]
fn row(
    section: &str,
    what: &str,
    value: f64,
    unit: &str,
    base_name: &str,
    base: f64,
    target: &str,
    met: bool,
    note: &str,
) {
    println!(
        "ROW\t{section}\t{what}\t{value}\t{unit}\t{base_name}\t{base}\t{target}\t{}\t{note}",
        if met { "yes" } else { "no" }
    );
}

fn note(s: &str) {
    println!("NOTE\t{s}");
}

fn main() {
    let mut mig: Option<PathBuf> = None;
    let mut iters: u64 = 1_000_000;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--migscope" => mig = args.next().map(PathBuf::from),
            "--iters" => iters = args.next().and_then(|s| s.parse().ok()).unwrap_or(iters),
            _ => {} // `--bench` from cargo, filters
        }
    }
    let fds = match Fds::open() {
        Ok(f) => f,
        Err(e) => {
            note(&format!("SKIP: {e}"));
            return;
        }
    };
    let dir = std::env::temp_dir().join(format!("migscope-probe-bench-{}", std::process::id()));
    if let Err(e) = fs::create_dir_all(&dir) {
        note(&format!("SKIP: cannot create {}: {e}", dir.display()));
        return;
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mig = mig.unwrap_or_else(|| PathBuf::from("target/release/migscope"));
    let record = root && record_available(&mig);
    let bpf = root && have("bpftrace");
    if !root {
        note("SKIP: not root, no eBPF: probe rows not measured");
    }
    if root && !record {
        note(
            "SKIP migscope rows: `migscope record` is not on this branch yet (it comes with the merge of branch `probe`)",
        );
    }
    if root && !bpf {
        note("SKIP bpftrace rows: bpftrace not installed (apt-get install bpftrace)");
    }
    let me = std::process::id();
    let others = other_tracers();
    if !others.is_empty() {
        note(&format!(
            "another tracer was running during this run, so \"nothing attached\" includes its probes and the storms compete with it: {}",
            others.join("; ")
        ));
    }
    // Rounds alternate nothing / migscope / bpftrace so that a burst of other load does not
    // land on one condition only; per condition and workload the best round counts.
    const ROUNDS: usize = 3;
    let mut best = [[f64::INFINITY; 3]; 3]; // [condition][workload]
    let mut recorded = String::new();
    for round in 0..ROUNDS {
        eprintln!("probe bench: overhead round {} of {ROUNDS}", round + 1);
        let all = |best: &mut [f64; 3]| {
            for (k, w) in Work::ALL.into_iter().enumerate() {
                best[k] = best[k].min(ns_per_op(&fds, w, iters));
            }
        };
        all(&mut best[0]);
        if record {
            match start_record(&mig, &dir, "overhead", None, None) {
                Ok(a) => {
                    all(&mut best[1]);
                    let out = stop(a);
                    let (n, lost) = count_trace(&out, me);
                    recorded = format!(
                        " while recording, {n} of {iters} unpaced VFIO ioctls were written to the trace, {lost} counted lost;"
                    );
                }
                Err(e) => note(&format!("migscope record failed: {e}")),
            }
        }
        if bpf {
            match start_bpftrace(&dir, "overhead") {
                Ok(a) => {
                    all(&mut best[2]);
                    stop(a);
                }
                Err(e) => note(&format!("bpftrace failed: {e}")),
            }
        }
    }
    for (k, w) in Work::ALL.into_iter().enumerate() {
        let none = best[0][k];
        let m_ns = best[1][k] - none;
        let b_ns = best[2][k] - none;
        let extra = if w == Work::VfioIoctl {
            recorded.as_str()
        } else {
            ""
        };
        row(
            "probe",
            &format!("{} added ns/op: migscope vs bpftrace", w.name()),
            if m_ns.is_finite() { m_ns } else { f64::NAN },
            "ns/op",
            "bpftrace",
            if b_ns.is_finite() { b_ns } else { f64::NAN },
            "≤ bpftrace",
            m_ns.is_finite() && b_ns.is_finite() && m_ns <= b_ns,
            &format!(
                "{none:.0} ns/op with nothing attached; best of {ROUNDS} rounds x {BATCHES} batches of {};{extra}",
                iters / BATCHES
            ),
        );
    }
    if record {
        for ring in [None, Some(8u32 << 20)] {
            capture_curve(&mig, &dir, &fds, me, ring);
        }
    }
    note(
        "per-interrupt cost not measured on the host: interrupts cannot be raised at will here; the irq tracepoint hit costs about what the filtered tracepoint rows show",
    );
    note(
        "lab rows (VFIO ioctls and FSM steps in the VM) left out: the lab VM is TCG-emulated and is not run from the bench",
    );
    let _ = fs::remove_dir_all(&dir);
}
