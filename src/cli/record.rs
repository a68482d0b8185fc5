//! `migscope record`: the probe alone, e.g. beside a running QEMU. Records until Ctrl-C,
//! SIGTERM, `--duration` or the traced process's exit, then writes a complete trace ending in
//! `end` (a file is written as `<FILE>.partial` and renamed when complete).

use std::{
    io::{BufWriter, Write},
    os::fd::{FromRawFd as _, OwnedFd},
    path::PathBuf,
    time::Duration,
};

use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

use crate::capture::{Capture, CaptureOptions, kernel_release, monotonic_ns};
use crate::trace::{Event, EventKind, Header, jsonl::JsonlWriter, source};
use crate::verify::{self, Verifier};

fn parse_duration(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("`{s}` is not a usable duration"))
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write the trace here (JSONL); default: standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Record only this process and its children (default: every VFIO user).
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Verify the trace at the end and exit with the verdict's code (0 pass, 1 fail,
    /// 2 inconclusive).
    #[arg(long)]
    pub check: bool,
    /// Verifier options, with --check only (`record` alone has no DMA witness for PCI
    /// devices: `--accept-blind dma` accepts that).
    #[command(flatten)]
    pub rules: super::RuleArgs,
    /// Ring buffer size in bytes (default 1 MiB).
    #[arg(long, value_name = "BYTES")]
    pub ring_bytes: Option<u32>,
}

/// How often held-back events are released even when no new record arrives.
const TICK: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
enum RecordError {
    #[error("failed to write the trace")]
    Write(#[from] crate::trace::jsonl::TraceError),
    #[error("failed to read the probe")]
    Capture(#[from] crate::capture::CaptureError),
    #[error("failed to write the trace to standard output")]
    Stdout(#[source] std::io::Error),
    #[error("failed to set up the event loop")]
    Runtime(#[source] std::io::Error),
}

enum Sink {
    File(JsonlWriter<BufWriter<std::fs::File>>),
    Stdout(JsonlWriter<BufWriter<std::io::Stdout>>),
}

impl Sink {
    fn write(&mut self, ev: &Event) -> Result<(), RecordError> {
        match self {
            Sink::File(w) => w.write(ev)?,
            Sink::Stdout(w) => w.write(ev)?,
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), RecordError> {
        match self {
            Sink::File(w) => w.flush()?,
            Sink::Stdout(w) => w.flush()?,
        }
        Ok(())
    }
    fn bytes(&self) -> u64 {
        match self {
            Sink::File(w) => w.bytes(),
            Sink::Stdout(w) => w.bytes(),
        }
    }
    fn finish(self) -> Result<(), RecordError> {
        match self {
            Sink::File(w) => w.finish()?,
            Sink::Stdout(w) => {
                let mut out = w.into_inner();
                out.flush().map_err(RecordError::Stdout)?;
            }
        }
        Ok(())
    }
}

pub fn run(args: Args) -> i32 {
    if !args.check && !args.rules.is_default() {
        return super::unusable(format!(
            "{}: verifier options only apply with --check",
            args.rules.check_flags().join(" ")
        ));
    }
    // The runtime and the signal handlers come first, so a Ctrl-C while the probe loads
    // still ends in a complete trace.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return super::unusable(chain(&RecordError::Runtime(e))),
    };
    let signals = {
        let _ctx = rt.enter();
        signal(SignalKind::interrupt()).and_then(|i| Ok((i, signal(SignalKind::terminate())?)))
    };
    let signals = match signals {
        Ok(s) => s,
        Err(e) => return super::unusable(chain(&RecordError::Runtime(e))),
    };
    // The traced process must exist before anything is loaded or written.
    let traced = match args.pid {
        Some(p) => {
            let _ctx = rt.enter();
            match pid_exit(p) {
                Ok(fd) => Some(fd),
                Err(e) => return super::unusable(format!("cannot watch process {p}: {e}")),
            }
        }
        None => None,
    };
    let opts = CaptureOptions {
        pids: args.pid.map(|p| vec![p]),
        ring_bytes: args.ring_bytes,
    };
    let cap = match Capture::start(&opts) {
        Ok(c) => c,
        Err(e) => return super::unusable(super::capture_error(&e)),
    };
    let mut sources = cap.sources();
    // The DMA witnesses `drive` has and the probe alone does not: named, so a checker says
    // why a quiesced device's DMA could not be seen.
    for (src, why) in [
        (
            source::WITNESS,
            "unavailable: record does not own the DMA buffers (drive fingerprints its own)",
        ),
        (
            source::DIRTY_LOG,
            "unavailable: record does not read device DMA logging reports (drive does)",
        ),
        (
            source::IOMMU_DIRTY,
            "unavailable: record does not read IOMMU dirty bitmaps",
        ),
    ] {
        sources
            .entry(src.to_owned())
            .or_insert_with(|| why.to_owned());
    }
    let header = Header {
        kernel: kernel_release(),
        sources,
        ..Header::default()
    };
    let sink = match &args.output {
        Some(p) => JsonlWriter::create(p, &header).map(Sink::File),
        None => JsonlWriter::new(BufWriter::new(std::io::stdout()), &header).map(Sink::Stdout),
    };
    let sink = match sink {
        Ok(s) => s,
        Err(e) => return super::unusable(chain(&e)),
    };
    let attached = cap.hooks().iter().filter(|h| h.attached()).count();
    let host = crate::capture::diagnose::Host::read();
    for line in crate::capture::diagnose::hook_summary(cap.hooks(), &host) {
        eprintln!("migscope: {line}");
    }
    let ready = format!(
        "migscope: recording ({attached} of {} hooks attached){}; Ctrl-C to stop",
        cap.hooks().len(),
        args.pid
            .map(|p| format!(", pid {p} and children"))
            .unwrap_or_default()
    );
    let verifier = args
        .check
        .then(|| Verifier::new(&header, args.rules.options()));
    match rt.block_on(record_loop(
        cap, sink, verifier, signals, traced, &args, &ready,
    )) {
        Ok((events, report)) => {
            let dest = args
                .output
                .as_ref()
                .map_or("standard output".to_owned(), |p| p.display().to_string());
            eprintln!("migscope: wrote {events} events to {dest}");
            match report {
                Some(r) => {
                    eprint!("{}", super::check::human(&r, &dest));
                    r.verdict.exit_code()
                }
                None => super::exit::PASS,
            }
        }
        Err(e) => super::unusable(chain(&e)),
    }
}

async fn record_loop(
    cap: Capture,
    sink: Sink,
    verifier: Option<Verifier>,
    (mut sigint, mut sigterm): (tokio::signal::unix::Signal, tokio::signal::unix::Signal),
    traced: Option<AsyncFd<OwnedFd>>,
    args: &Args,
    ready: &str,
) -> Result<(u64, Option<verify::Report>), RecordError> {
    // SAFETY: the Capture owns the ring buffer map fd for its whole life and always returns
    // the same fd from as_raw_fd; it is only closed after into_inner below.
    let mut ring = unsafe { AsyncFd::register_with_interest(cap, tokio::io::Interest::READABLE) }
        .map_err(|e| RecordError::Runtime(e.into()))?;
    let mut tick = tokio::time::interval(TICK);
    let deadline = args.duration;
    let sleep = tokio::time::sleep(deadline.unwrap_or(Duration::MAX / 4));
    tokio::pin!(sleep);
    // Announced once records flow to the trace (SIGINT/SIGTERM are ours since `run` began).
    eprintln!("{ready}");
    let mut out = Out {
        sink,
        verifier,
        line: 1,
        count: 0,
        last_t: 0,
        progress: super::progress::Record::start(),
    };
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.map_err(RecordError::Runtime)?;
                let evs = guard.get_inner_mut().drain()?;
                guard.clear_ready();
                out.write_all(evs)?;
            }
            _ = tick.tick() => {
                let evs = ring.get_mut().drain()?;
                out.write_all(evs)?;
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = &mut sleep, if deadline.is_some() => break,
            _ = wait_readable(traced.as_ref()), if traced.is_some() => {
                out.progress.say("migscope: traced process exited");
                break;
            }
        }
    }
    let cap = ring.into_inner();
    let evs = cap.stop()?;
    out.write_all(evs)?;
    let end = Event {
        t: out.last_t.max(monotonic_ns()),
        pid: None,
        kind: EventKind::End,
    };
    out.write_all(vec![end])?;
    out.progress.finish();
    out.sink.finish()?;
    Ok((out.count, out.verifier.map(Verifier::finish)))
}

/// The trace being written, with the optional streaming verifier beside it.
struct Out {
    sink: Sink,
    verifier: Option<Verifier>,
    /// 1-based line of the last line written (the header is line 1).
    line: u64,
    count: u64,
    last_t: u64,
    progress: super::progress::Record,
}

impl Out {
    fn write_all(&mut self, evs: Vec<Event>) -> Result<(), RecordError> {
        for ev in evs {
            self.line += 1;
            self.count += 1;
            self.last_t = self.last_t.max(ev.t);
            if let Some(v) = self.verifier.as_mut() {
                v.push(self.line, &ev);
            }
            self.progress.saw(&ev);
            self.sink.write(&ev)?;
        }
        self.sink.flush()?;
        self.progress.show(self.sink.bytes());
        Ok(())
    }
}

/// A pidfd for `pid`: readable once the process exits.
fn pid_exit(pid: u32) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh pidfd this function owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: the OwnedFd is moved into the AsyncFd, which keeps it open until dropped.
    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(Into::into)
}

async fn wait_readable(fd: Option<&AsyncFd<OwnedFd>>) {
    match fd {
        Some(fd) => {
            let _ = fd.readable().await;
        }
        None => std::future::pending().await,
    }
}

use super::error_chain as chain;
