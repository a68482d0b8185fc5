//! `migscope drive`: drive real VFIO devices through a migration plan with the probe alongside,
//! as one streaming session (the controller and the probe are its sources; the trace file, the
//! verifier and, with `--tui`, the live timeline its sinks), and exit with `check`'s code.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::capture::{Capture, CaptureOptions, HooksMode, IrqDetail};
use crate::session::sinks::trace::{Dest, TraceOut};
use crate::session::sinks::tui::{self as tui_sink, Pace};
use crate::session::sources::{controller, probe::Probe};
use crate::session::{self, Session, Stop};
use crate::trace::{Event, EventKind, Format, Header, source};
use crate::vfio::{self, Order, Outcome, Plan, Vfio, VfioOps, VfioPath, Workload, probe_events};

const AFTER_HELP: &str = "\
Plans (--plan):
  stopcopy     RUNNING -> RUNNING_P2P -> STOP_COPY (data saved to EOF) -> STOP -> RUNNING_P2P -> RUNNING
  precopy      RUNNING -> PRE_COPY (iterative reads, VFIO_MIG_GET_PRECOPY_INFO, ENOMSG handled) ->
               PRE_COPY_P2P -> STOP_COPY (rest saved) -> STOP -> RUNNING_P2P -> RUNNING (needs PRE_COPY)
  roundtrip    stopcopy's save, then STOP -> RESUMING (the saved data written back) -> STOP ->
               STOP_COPY (saved again) -> STOP -> RUNNING_P2P -> RUNNING; compares the two saves, and
               on an edu device its BAR0 registers when saved with the ones after RESUMING (`regs`)
  resume-fuzz  stopcopy's save, then for each of a truncated, a bit-flipped, an oversized and an
               empty stream: STOP -> RESUMING, the stream written (`corrupt_load`), SET STOP (each
               must be refused; a refused device is reset and stopped again); then the good stream
               is loaded, STOP, RUNNING_P2P, RUNNING (the device must resume and run)
  reset        RUNNING -> RUNNING_P2P -> STOP_COPY, then VFIO_DEVICE_RESET with the data_fd open and
               nothing read, a GET (a reset returns the device to RUNNING) and one read of the old
               data_fd (a reset must invalidate it: data it still moves is `stale-data-fd`)
  conformance  for every supported state FROM and every state TO (unsupported ones and ERROR too):
               reach FROM by a legal path, SET TO, GET, and compare the outcome with the kernel FSM;
               prints a table; blocked arcs (hazards) are skipped unless --allow-hazard
  S1,S2,...    a custom list of states, e.g. RUNNING_P2P,STOP,RUNNING (names or uAPI numbers)
  RUNNING_P2P is skipped by the built-in plans on devices without P2P (as QEMU does).

Every SET and every VFIO_DEVICE_RESET is followed by a GET, and while a quiescent step dwells each
quiesced device is read back every 100 ms (a device leaving its state without a SET shows as a GET
the verifier holds against the state it was put in). The memory witness takes its baseline before each quiescing SET,
sweeps the DMA buffers from the SET's issue until 10 ms after its return, and re-checks them while
each quiescent step dwells --dwell-ms. It counts for a device only once a workload write landed in
that device's buffers before its first quiesce: with --workload none (or a workload that never
wrote there) the device is re-declared with `witness: unavailable` and the run is at best
inconclusive. On any error, SIGINT or SIGTERM (or `q` in --tui) every device is returned to
RUNNING (through RUNNING_P2P, or VFIO_DEVICE_RESET from ERROR) and the trace is completed. The
trace is written as the drive runs (FILE.partial until it is complete, flushed at least every
100 ms): a drive killed outright leaves FILE.partial, which `check` reads as truncated.

Exit status: 0 pass, 1 fail (also: a conformance row did not match the kernel FSM), 2 inconclusive
(also: the plan stopped early without a violation),
3 unusable (a device could not be opened or set up; nothing was changed).";

#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// PCI address of a device bound to a VFIO migration driver (repeat for several; they share
    /// one container and form one migration context).
    #[arg(long = "device", value_name = "BDF", required = true)]
    pub devices: Vec<String>,
    /// stopcopy | precopy | roundtrip | conformance | resume-fuzz | reset | STATE,STATE,... (see
    /// below).
    #[arg(long, value_parser = Plan::parse)]
    pub plan: Plan,
    /// Multi-device order: `qemu` (every device to a P2P state before any stops, and to
    /// RUNNING_P2P before any runs) or `naive` (one device through its whole plan, then the
    /// next: shows the ordering bug).
    #[arg(long, default_value = "qemu", value_parser = Order::parse)]
    pub order: Order,
    /// `edu` (QEMU edu DMA engine via BAR0, device-to-RAM into the witnessed buffers, with its
    /// completion MSI), `none` (the witness then sees nothing), or `exec:CMD` (runs CMD with
    /// $MIGSCOPE_DEVICES and $MIGSCOPE_WITNESS, the witnessed ranges as BDF=0xIOVA+0xLEN: the
    /// witness counts only if CMD makes the device DMA there).
    #[arg(long, default_value = "none", value_parser = Workload::parse)]
    pub workload: Workload,
    /// Trace to write as the drive runs (FILE.partial until complete, then renamed). Default:
    /// migscope-drive-<plan>-<time>.jsonl (.mst with --format native).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The trace's format: `jsonl` (TRACE-FORMAT.md) or `native`.
    #[arg(long, default_value = "jsonl", value_parser = super::parse_format)]
    pub format: Format,
    /// Show the live timeline while driving: the verdict and every violation as it happens;
    /// `q` stops the plan safely (devices back to RUNNING, the trace completed). The results
    /// are printed once the view is closed.
    #[arg(long)]
    pub tui: bool,
    /// Do not run the eBPF probe alongside.
    #[arg(long)]
    pub no_probe: bool,
    /// Probe: interrupts one by one: `quiesce` (default) from a quiescing SET until the device
    /// may DMA again, counted per 25 ms in `irq_bin` events otherwise; `all`: every one an
    /// `irq`.
    #[arg(long, value_enum, value_name = "WHICH", default_value_t = IrqDetail::Quiesce)]
    pub irq_detail: IrqDetail,
    /// How the probe hooks VFIO's syscalls (as `record --hooks`).
    #[arg(long, value_enum, value_name = "HOW", default_value_t = HooksMode::Auto)]
    pub hooks: HooksMode,
    /// Send blocked arcs (STOP_COPY -> PRE_COPY[_P2P]) that hang kernels without the 2026 fix.
    #[arg(long)]
    pub allow_hazard: bool,
    /// Where STOP_COPY data is saved as <bdf>.<n>.mig (default: beside the trace).
    #[arg(long, value_name = "DIR")]
    pub save_dir: Option<PathBuf>,
    /// Migration data to load in RESUMING instead of this run's save (repeat per device, in
    /// --device order).
    #[arg(long, value_name = "FILE")]
    pub resume_from: Vec<PathBuf>,
    /// Time spent in each quiescent plan step while the witness re-checks the buffers.
    #[arg(long, default_value_t = 300, value_name = "MS")]
    pub dwell_ms: u64,
    /// Witnessed buffer size per device, in 4 KiB pages.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub buffer_pages: usize,
    /// Print the verdict as JSON (TRACE-FORMAT.md "Verdict").
    #[arg(long)]
    pub json: bool,
    /// Also write the verdict as JUnit XML to FILE (for CI test reporters); a run that could
    /// not produce a trace writes an error test case.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// How to open devices: `group` (VFIO group + type1v2 container), `cdev`
    /// (/dev/vfio/devices/vfioN + iommufd, 6.6+), or `auto` (cdev when the kernel has it).
    #[arg(long, default_value = "auto", value_parser = VfioPath::parse)]
    pub vfio_path: VfioPath,
}

pub fn run(args: Args) -> i32 {
    if args.tui && !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return super::unusable("`drive --tui` needs a terminal");
    }
    let mut ops = Vfio::with_path(args.vfio_path);
    drive_with(&mut ops, &args, Stop::new())
}

/// Where the controller's and the session's messages go: above the progress line, or to the
/// view's status bar.
#[derive(Clone)]
enum Say {
    Progress(super::progress::Drive),
    View(tui_sink::Notes),
}

impl Say {
    fn say(&self, line: &str) {
        match self {
            Say::Progress(p) => p.say(line),
            Say::View(n) => n.say(line),
        }
    }
}

/// The whole command over any [`VfioOps`] (the real one in production, the double in tests).
/// `stop` is the session's stop request (tests ask for one to interrupt a plan).
pub fn drive_with<O: VfioOps + Send>(ops: &mut O, args: &Args, stop: Stop) -> i32 {
    let output = args.output.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "migscope-drive-{}-{}.{}",
            match &args.plan {
                Plan::Custom(_) => "custom".to_owned(),
                p => p.to_string(),
            },
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            match args.format {
                Format::Jsonl => "jsonl",
                Format::Native => "mst",
            }
        ))
    });
    let save_dir = args.save_dir.clone().unwrap_or_else(|| {
        output
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    });
    if let Err(e) = std::fs::create_dir_all(&save_dir) {
        return super::unusable(format!("failed to create {}: {e}", save_dir.display()));
    }
    let mut opts = vfio::Options::new(args.plan.clone());
    opts.order = args.order;
    opts.workload = args.workload.clone();
    opts.allow_hazard = args.allow_hazard;
    opts.save_dir = save_dir;
    opts.resume_from = args.resume_from.clone();
    opts.dwell = Duration::from_millis(args.dwell_ms);
    opts.buffer_pages = args.buffer_pages;
    opts.stop = stop.flag();

    // Signals first: a Ctrl-C while the probe loads still ends in a complete run.
    let session::Started {
        rt, mut signals, ..
    } = match session::start(None) {
        Ok(s) => s,
        Err(e) => return super::unusable(error_chain(&e)),
    };
    let header_out = Arc::new(Mutex::new(Header::default()));
    let (tui, view, say) = if args.tui {
        let name = format!("drive {} {}", args.plan, args.devices.join(" "));
        let (sink, view) = tui_sink::start(
            super::view::trace_info(&name, &Header::default(), true),
            false,
            Some(super::view::DEFAULT_WINDOW),
            Pace::Live,
            Arc::clone(&header_out),
            stop.clone(),
        );
        let notes = sink.notes();
        (Some(sink), Some(view), Say::View(notes))
    } else {
        let p = super::progress::Drive::start(&args.plan.to_string(), &args.devices);
        (None, None, Say::Progress(p))
    };
    // Before any device is opened, so the probe attributes our device fds from their
    // GROUP_GET_DEVICE_FD (every VFIO user: the lab guest runs only us).
    let probe = if args.no_probe {
        Err("disabled by --no-probe".to_owned())
    } else {
        let opts = CaptureOptions {
            irq_detail: args.irq_detail,
            hooks: args.hooks,
            ..CaptureOptions::default()
        };
        match Capture::start(&opts) {
            Ok(cap) => {
                let _rt = rt.enter();
                Probe::new(cap).map_err(|e| format!("failed to watch the ring buffer: {e}"))
            }
            Err(e) => Err(super::capture_error(&e)),
        }
    };
    let sources = match &probe {
        Ok(p) => p.sources(),
        Err(why) => {
            say.say(&format!("migscope drive: probe not running: {why}"));
            unavailable_probe(&format!("probe not running: {why}"))
        }
    };
    let mut header = Header {
        kernel: crate::capture::kernel_release(),
        sources,
        hooks: probe.as_ref().ok().map(Probe::hooks_path),
        ..Header::default()
    };
    header.sources.insert(
        source::IOMMU_DIRTY.to_owned(),
        "unavailable: type1 container path (IOMMU dirty tracking needs iommufd)".to_owned(),
    );
    let steps_traced = header.source_ok(source::TRANSITIONS);
    // The conformance rows' traced steps (a few per SET of the plan).
    let steps: Rc<RefCell<Vec<Event>>> = Rc::default();
    let mut watch: Vec<session::Watcher> = Vec::new();
    if args.plan == Plan::Conformance && steps_traced {
        let steps = Rc::clone(&steps);
        watch.push(Box::new(move |ev: &Event| {
            if matches!(ev.kind, EventKind::Step { .. }) {
                steps.borrow_mut().push(ev.clone());
            }
        }));
    }
    if let Say::Progress(p) = &say {
        let p = p.clone();
        watch.push(Box::new(move |ev: &Event| p.saw(std::slice::from_ref(ev))));
    }
    let (emitter, ctl_source) = controller::channel();
    let session = Session {
        probe: probe.ok(),
        controller: Some(ctl_source),
        file: None,
        header,
        until: session::Until::default(),
        sinks: session::Sinks {
            trace: Some(TraceOut::new(Dest::File(output.clone()), args.format)),
            verify: Some(crate::verify::Options::default()),
            tui,
            name: format!("drive {} {}", args.plan, args.devices.join(" ")),
            watch,
            flushed: None,
            header_out: Some(header_out),
        },
        stop: stop.clone(),
        pid: std::process::id(),
    };
    let (ended, outcome) = std::thread::scope(|s| {
        let say_ctl = say.clone();
        let devices = &args.devices;
        let ctl = s.spawn(move || {
            let mut em = emitter;
            let mut log = |l: &str| say_ctl.say(&format!("migscope drive: {l}"));
            vfio::drive(ops, devices, &opts, &mut log, &mut em)
        });
        let ended = rt.block_on(session.run(Some(&mut signals)));
        if ended.is_err() {
            // The session is gone: the plan must not go on unrecorded.
            stop.request("the session failed");
        }
        (ended, ctl.join())
    });
    let mut ended = match ended {
        Ok(e) => e,
        Err(e) => {
            finish_view(view, &say);
            return unusable_junit(args, &output, error_chain(&e));
        }
    };
    rt.block_on(ended.linger(&mut signals));
    drop(ended.tui.take());
    finish_view(view, &say);
    let outcome = match outcome {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return unusable_junit(args, &output, error_chain(&e)),
        Err(_) => return unusable_junit(args, &output, "the controller panicked".to_owned()),
    };
    let mut outcome = outcome;
    probe_events::annotate_steps(&mut outcome.conformance, &steps.borrow(), steps_traced);
    if let Some(e) = &ended.trace_error {
        report_outcome(&outcome, args.json);
        return unusable_junit(
            args,
            &output,
            format!("failed to write the trace: {}", error_chain(e)),
        );
    }
    report_outcome(&outcome, args.json);
    let trace_line = format!("trace: {} ({} events)", output.display(), ended.events + 1);
    if args.json {
        eprintln!("{trace_line}");
    } else {
        println!("{trace_line}");
    }
    let Some(report) = ended.report else {
        return unusable_junit(args, &output, "the trace was never begun".to_owned());
    };
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!(
            "{}",
            super::check::human(&report, &output.display().to_string())
        );
    }
    if let Some(j) = &args.junit
        && let Err(e) = crate::export::junit::write(&report, &crate::export::trace_name(&output), j)
    {
        return super::unusable(e);
    }
    let code = report.verdict.exit_code();
    let mismatches = outcome
        .conformance
        .iter()
        .filter(|r| r.pass == Some(false))
        .count();
    if mismatches > 0 && code != super::exit::FAIL {
        eprintln!("migscope drive: {mismatches} conformance mismatch(es): exit status 1");
        return super::exit::FAIL;
    }
    if outcome.error.is_some() && code == 0 {
        // A plan that stopped early proved less than it was asked to.
        return super::exit::INCONCLUSIVE;
    }
    code
}

/// Waits for the view to close (the terminal is restored by then), or ends the progress line.
fn finish_view(view: Option<tui_sink::View>, say: &Say) {
    if let Some(v) = view
        && let Err(e) = v.join()
    {
        eprintln!("migscope drive: {e}");
    }
    if let Say::Progress(p) = say {
        p.finish();
    }
}

/// Reports an unusable run (and writes it as a JUnit error case with `--junit`).
fn unusable_junit(args: &Args, output: &Path, msg: String) -> i32 {
    if let Some(j) = &args.junit
        && let Err(e) =
            crate::export::junit::write_error(&crate::export::trace_name(output), &msg, j)
    {
        eprintln!("migscope: {e}");
    }
    super::unusable(msg)
}

use super::error_chain;

fn unavailable_probe(why: &str) -> BTreeMap<String, String> {
    crate::capture::PROBE_SOURCES
        .into_iter()
        .map(|s| (s.to_owned(), format!("unavailable: {why}")))
        .collect()
}

/// Prints the run's results (to stderr when stdout carries `--json`).
fn report_outcome(o: &Outcome, json: bool) {
    let text = outcome_text(o);
    if json {
        eprint!("{text}");
    } else {
        print!("{text}");
    }
}

fn outcome_text(o: &Outcome) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    if !o.conformance.is_empty() {
        let _ = writeln!(
            s,
            "{:<14} {:<13} {:<13} {:<44} {:<28} result",
            "device", "from", "to", "expected (kernel FSM)", "got"
        );
        let mut fails = 0;
        for r in &o.conformance {
            let res = match r.pass {
                Some(true) => "ok",
                Some(false) => {
                    fails += 1;
                    "MISMATCH"
                }
                None => "skipped",
            };
            let _ = writeln!(
                s,
                "{:<14} {:<13} {:<13} {:<44} {:<28} {res}",
                r.dev,
                r.from.name(),
                r.to.name(),
                r.expected,
                r.got
            );
        }
        let _ = writeln!(
            s,
            "conformance: {} pairs, {} mismatches, {} skipped",
            o.conformance.len(),
            fails,
            o.conformance.iter().filter(|r| r.pass.is_none()).count()
        );
    }
    for (dev, same, a, b) in &o.roundtrip {
        let _ = writeln!(
            s,
            "roundtrip {dev}: re-saved state {} ({a} vs {b} bytes)",
            if *same { "identical" } else { "DIFFERS" }
        );
    }
    for f in &o.saved_files {
        let _ = writeln!(s, "saved: {}", f.display());
    }
    if let Some(w) = &o.workload_summary {
        let _ = writeln!(s, "workload: {w}");
    }
    if let Some(e) = &o.error {
        let _ = writeln!(s, "plan stopped early: {e}");
    }
    for (dev, st) in &o.final_states {
        let _ = writeln!(s, "{dev}: left in {st}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use crate::model::MigState;
    use crate::verify;
    use crate::vfio::sim::{Misbehave, SimSpec, SimVfio};
    use clap::Parser as _;

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["migscope", "drive", "--no-probe", "--dwell-ms", "0"];
        v.extend_from_slice(extra);
        match Cli::try_parse_from(v).expect("parse").command {
            Command::Drive(a) => a,
            c => panic!("parsed {c:?}"),
        }
    }

    fn two() -> SimVfio {
        SimVfio::new([
            SimSpec::new("0000:00:02.0", 3),
            SimSpec::new("0000:00:03.0", 3),
        ])
    }

    fn run(sim: &mut SimVfio, extra: &[&str]) -> (i32, verify::Report, Header) {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("t.jsonl");
        let out_s = out.to_str().expect("utf-8 path");
        let mut a = vec!["-o", out_s];
        a.extend_from_slice(extra);
        let code = drive_with(sim, &args(&a), Stop::new());
        let report = verify::check_path(&out, verify::Options::default()).expect("trace written");
        let header = crate::trace::jsonl::JsonlReader::open(&out)
            .expect("open")
            .header()
            .clone();
        (code, report, header)
    }

    #[test]
    fn qemu_order_passes_naive_order_fails() {
        let devs = [
            "--device",
            "0000:00:02.0",
            "--device",
            "0000:00:03.0",
            "--plan",
            "stopcopy",
        ];
        let (code, report, header) = run(&mut two(), &devs);
        assert!(report.violations.is_empty(), "{:?}", report.violations);
        assert_eq!(code, report.verdict.exit_code());
        assert!(!report.truncated);
        // No workload (the default): nothing wrote to the witnessed pages, so the witness
        // saw nothing and says so; with no other DMA source the verdict cannot be a pass.
        assert!(
            header.sources["witness"].starts_with("unavailable: no DMA workload"),
            "{:?}",
            header.sources
        );
        assert_ne!(report.verdict, verify::Verdict::Pass);
        assert!(header.sources["transitions"].starts_with("unavailable: probe not running"));

        let mut naive = devs.to_vec();
        naive.extend_from_slice(&["--order", "naive"]);
        let (code, report, _) = run(&mut two(), &naive);
        assert_eq!(code, 1);
        assert!(
            report
                .violated_rules()
                .contains(&verify::rule::STOP_WHILE_PEER_RUNNING),
            "{:?}",
            report.violations
        );
    }

    #[test]
    fn witness_violation_fails_the_run() {
        let mut sim =
            SimVfio::new([SimSpec::new("0000:00:02.0", 3).with(Misbehave::DmaAfterQuiesce(3))]);
        let (code, report, _) = run(
            &mut sim,
            &["--device", "0000:00:02.0", "--plan", "stopcopy"],
        );
        assert_eq!(code, 1);
        assert!(
            report
                .violated_rules()
                .contains(&verify::rule::DMA_AFTER_QUIESCE)
        );
        assert_eq!(sim.state_of("0000:00:02.0"), Some(MigState::Running));
    }

    #[test]
    fn junit_is_written_for_a_verdict_and_for_an_unusable_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let junit = dir.path().join("j.xml");
        let j = junit.to_str().expect("utf-8");
        let (code, _, _) = run(
            &mut two(),
            &[
                "--device",
                "0000:00:02.0",
                "--device",
                "0000:00:03.0",
                "--plan",
                "stopcopy",
                "--order",
                "naive",
                "--junit",
                j,
            ],
        );
        assert_eq!(code, 1);
        let xml = std::fs::read_to_string(&junit).expect("junit written");
        assert!(xml.contains(verify::rule::STOP_WHILE_PEER_RUNNING), "{xml}");

        let out = dir.path().join("t.jsonl");
        let a = args(&[
            "--device",
            "0000:00:09.0",
            "--plan",
            "stopcopy",
            "-o",
            out.to_str().expect("utf-8"),
            "--junit",
            j,
        ]);
        assert_eq!(drive_with(&mut two(), &a, Stop::new()), 3);
        let xml = std::fs::read_to_string(&junit).expect("junit written");
        assert!(xml.contains("0000:00:09.0"), "{xml}");
    }

    #[test]
    fn unopenable_device_is_unusable() {
        let mut sim = two();
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("t.jsonl");
        let a = args(&[
            "--device",
            "0000:00:09.0",
            "--plan",
            "stopcopy",
            "-o",
            out.to_str().expect("utf-8"),
        ]);
        assert_eq!(drive_with(&mut sim, &a, Stop::new()), 3);
        assert!(!out.exists());
    }

    #[test]
    fn help_documents_every_plan() {
        let e = Cli::try_parse_from(["migscope", "drive", "--help"]).expect_err("help");
        let text = e.to_string();
        for p in [
            "stopcopy",
            "precopy",
            "roundtrip",
            "conformance",
            "resume-fuzz",
            "reset",
            "RUNNING_P2P,STOP,RUNNING",
            "--order",
            "--allow-hazard",
            "--resume-from",
        ] {
            assert!(text.contains(p), "help lacks {p}");
        }
        // The help's period is the controller's (one fact, one place).
        let every = crate::vfio::controller::QUIESCED_GET_EVERY.as_millis();
        let period = format!("quiesced device is read back every {every} ms");
        assert!(text.contains(&period), "help lacks {period}");
    }
}
