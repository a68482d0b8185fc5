//! The controller: opens the devices, maps witnessed DMA buffers and interrupts, runs a plan
//! under an ordering policy (each SET followed by a GET), moves migration data through the
//! data_fd, records every action as a trace event, and always returns every device it touched
//! to RUNNING (or resets it) before returning.
//!
//! Evidence around a SET has no blind gap: the witness baseline is taken and the DMA log
//! cleared *before* a quiescing SET is issued, a watcher thread sweeps the device's pages from
//! the issue until [`Options::witness_linger`] after the return, and every change is reported
//! with the window it can have happened in. Whether the witness is live for a device (a
//! workload write landed in its pages before its first quiesce) is decided at that first
//! quiesce; a device whose witness is not live is re-declared, right before that SET, with
//! `witness: unavailable: <why>` in its own `sources`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::buffer::{DmaBuffer, PAGE};
use super::emit::Emit;
use super::plan::{Order, Plan, Step, quiesce_target};
use super::sys::{DevId, Errno, VfioError, VfioOps};
use super::witness::Witness;
use super::workload::{self, EduJob, Workload};
use super::{errno_name, now_ns};
use crate::capture::dirtylog::dirty_runs;
use crate::model::{self, MigFlags, MigState, StepError};
use crate::trace::{DataDir, DataFile, DmaSource, Event, EventKind, IrqKind, RegStage, source};

mod reset;
mod resume;

/// First IOVA used for witnessed buffers (each device gets a 1 MiB slot; edu masks DMA
/// addresses to 28 bits, so everything stays below 256 MiB).
pub const IOVA_BASE: u64 = 0x10_0000;
const IOVA_SLOT: u64 = 0x10_0000;
/// The workload's pattern source buffer sits this far into the device's slot.
const SRC_OFFSET: u64 = 0x8_0000;
const CHUNK: usize = 64 * 1024;
const PRECOPY_ROUNDS: usize = 4;
/// A quiesce under the edu workload waits (at most [`QUIESCE_AWAIT`]) for a transfer started
/// less than this long ago: edu runs each transfer ~100 ms after its command.
const QUIESCE_FRESH: Duration = Duration::from_millis(40);
const QUIESCE_AWAIT: Duration = Duration::from_secs(2);
/// Longest wait for the workload's first transfers before the plan starts.
const WARMUP_LIMIT: Duration = Duration::from_secs(5);
/// How long a PRE_COPY read waits for data before calling it a temporary end of stream.
const PRECOPY_POLL_MS: i32 = 200;
/// While dwelling, how often each quiesced device's state is read back (GET): a device that
/// leaves its state without a SET (a reset_done handler, libvfio-user #853) shows in the trace.
pub const QUIESCED_GET_EVERY: Duration = Duration::from_millis(100);
/// Default [`Options::witness_linger`]: a write posted by the device before the driver
/// returned lands within microseconds; under TCG a vCPU may be descheduled for milliseconds.
pub const WITNESS_LINGER: Duration = Duration::from_millis(10);
/// The environment variable naming each device's witnessed IOVA ranges for `exec:` workloads
/// (`BDF=0xIOVA+0xLEN`, space separated): a command that programs a device itself may DMA there.
pub const WITNESS_ENV: &str = "MIGSCOPE_WITNESS";
/// Why the witness sees nothing under `--workload none`.
const NO_WORKLOAD: &str = "no DMA workload (--workload none): nothing wrote to the witnessed pages before the first quiesce";

/// How to drive.
#[derive(Clone, Debug)]
pub struct Options {
    pub plan: Plan,
    pub order: Order,
    pub workload: Workload,
    pub allow_hazard: bool,
    /// Where STOP_COPY data is saved (`<bdf>.<n>.mig`).
    pub save_dir: PathBuf,
    /// Data to load in RESUMING, per device in `--device` order.
    pub resume_from: Vec<PathBuf>,
    /// How long to stay in each quiescent state of a plan step, re-checking the witness.
    pub dwell: Duration,
    /// Witness re-check interval while dwelling.
    pub poll: Duration,
    /// Size of each device's witnessed buffer, in pages.
    pub buffer_pages: usize,
    /// Set by SIGINT/SIGTERM: checked between steps.
    pub stop: Arc<AtomicBool>,
    /// How long the witness keeps sweeping a device's pages after a quiescing SET returned
    /// (its watcher starts at the SET's issue).
    pub witness_linger: Duration,
    /// Sweeps made by the witness's watcher threads (shared: a caller may follow them).
    pub witness_sweeps: Arc<AtomicU64>,
}

impl Options {
    pub fn new(plan: Plan) -> Options {
        Options {
            plan,
            order: Order::Qemu,
            workload: Workload::None,
            allow_hazard: false,
            save_dir: PathBuf::from("."),
            resume_from: Vec::new(),
            dwell: Duration::ZERO,
            poll: Duration::from_millis(10),
            buffer_pages: 4,
            stop: Arc::new(AtomicBool::new(false)),
            witness_linger: WITNESS_LINGER,
            witness_sweeps: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// Set-up failures before any device state was touched.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("failed to open {bdf}")]
    Open {
        bdf: String,
        #[source]
        source: VfioError,
    },
    #[error("failed to read the migration flags of {bdf}")]
    Flags {
        bdf: String,
        #[source]
        source: VfioError,
    },
    #[error("{bdf}: {why}")]
    PlanUnsupported { bdf: String, why: String },
    #[error("failed to allocate a DMA buffer for {bdf}")]
    Buffer {
        bdf: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to map DMA at iova {iova:#x} for {bdf}")]
    Map {
        bdf: String,
        iova: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to read resume data {path}")]
    ResumeFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to set up the edu workload on {bdf}")]
    Workload {
        bdf: String,
        #[source]
        source: VfioError,
    },
    #[error("failed to start the workload `{cmd}`")]
    Exec {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no device given")]
    NoDevice,
    #[error("{0} is given twice")]
    Duplicate(String),
}

/// Why a plan stopped early.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{dev}: SET {to} failed: {}", errno_name(*errno))]
    SetFailed {
        dev: String,
        to: &'static str,
        errno: Errno,
    },
    #[error(
        "{dev}: refusing {from} -> {to}: a blocked arc that hangs kernels without the 2026 fix (pass --allow-hazard to send it)"
    )]
    Hazard {
        dev: String,
        from: &'static str,
        to: &'static str,
    },
    #[error("interrupted by a signal")]
    Interrupted,
    #[error("{dev}: data_fd {op} failed: {}", errno_name(*errno))]
    Data {
        dev: String,
        op: &'static str,
        errno: Errno,
    },
    #[error("failed to write saved state {path}")]
    SaveFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One conformance result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfRow {
    pub dev: String,
    pub from: MigState,
    pub to: MigState,
    /// What the kernel FSM says: the path, or `EINVAL`, or a hazard.
    pub expected: String,
    /// What happened: `ok -> STATE`, `-ERRNO, GET STATE`, or `not sent (...)`.
    pub got: String,
    pub pass: Option<bool>,
    /// The expected arcs (`model::path`), when the SET should succeed.
    pub expected_path: Option<Vec<MigState>>,
    /// `[set, set_done]` of the SET under test, to match the probe's `step` events against.
    pub window: Option<(u64, u64)>,
}

/// Everything a drive produced besides its events (those went to the [`Emit`] as they
/// happened).
#[derive(Debug, Default)]
pub struct Outcome {
    /// Evidence sources the controller had (witness, dirty_log), as known at the end.
    pub sources: BTreeMap<String, String>,
    /// Why the plan stopped early, if it did.
    pub error: Option<String>,
    /// Per device: the state it was left in, and how.
    pub final_states: Vec<(String, String)>,
    pub conformance: Vec<ConfRow>,
    /// Per device: (first save == re-save after load, bytes, bytes).
    pub roundtrip: Vec<(String, bool, usize, usize)>,
    pub workload_summary: Option<String>,
    pub saved_files: Vec<PathBuf>,
}

struct Dev {
    id: DevId,
    bdf: String,
    ctx: String,
    driver: Option<String>,
    flags: MigFlags,
    /// Known state; `None` after a failed SET until a GET.
    state: Option<MigState>,
    touched: bool,
    /// The current save stream (PRE_COPY rounds + STOP_COPY).
    session: Vec<u8>,
    saves: Vec<Vec<u8>>,
    resume: Option<Vec<u8>>,
    irq: Option<IrqKind>,
    maps: Vec<(u64, u64)>,
    /// Device DMA logging is on.
    logging: bool,
    /// With logging on, per mapped range (`maps` order): when the log of the range was last
    /// read (the issue of its last successful REPORT, or of DMA_LOGGING_START), the start of
    /// the next report's window.
    dirty_since: Vec<u64>,
    /// The device's `witness` source, decided at its first quiesce: `ok`, or
    /// `unavailable: <why>`.
    witness: Option<String>,
    /// Successful VFIO_DEVICE_RESETs issued: the device's reset generation (`reset_gen`).
    resets: u64,
    /// The open data_fd and the reset generation it was returned in (`data_fd`, `fd_gen`).
    data_file: Option<(i32, u64)>,
}

struct Ctl<'a, O: VfioOps> {
    ops: &'a mut O,
    opts: &'a Options,
    devs: Vec<Dev>,
    out: &'a mut dyn Emit,
    /// `[set, set_done]` of the last SET issued (conformance rows match steps against it).
    last_set: Option<(u64, u64)>,
    witness: Witness,
    pid: u32,
    log: &'a mut dyn FnMut(&str),
    saved_files: Vec<PathBuf>,
    /// The edu workload's pattern buffers (device index, buffer), not witnessed: the CPU
    /// writes them.
    src_bufs: Vec<(usize, Arc<DmaBuffer>)>,
    /// The workload's counters, reported in a `mark` after each SET while a workload runs.
    counters: Option<Arc<workload::Counters>>,
}

/// Drives `bdfs` through `opts.plan`, each event to `out` as it happens. Set-up errors
/// (nothing touched yet) are returned as errors; anything after that ends in
/// [`Outcome::error`] with every device recovered.
pub fn drive<O: VfioOps>(
    ops: &mut O,
    bdfs: &[String],
    opts: &Options,
    log: &mut dyn FnMut(&str),
    out: &mut dyn Emit,
) -> Result<Outcome, SetupError> {
    if bdfs.is_empty() {
        return Err(SetupError::NoDevice);
    }
    for (i, b) in bdfs.iter().enumerate() {
        if bdfs[..i].contains(b) {
            return Err(SetupError::Duplicate(b.clone()));
        }
    }
    let mut ctl = Ctl {
        ops,
        opts,
        devs: Vec::new(),
        out,
        last_set: None,
        witness: Witness::new(Arc::clone(&opts.witness_sweeps)),
        pid: std::process::id(),
        log,
        saved_files: Vec::new(),
        src_bufs: Vec::new(),
        counters: None,
    };
    let mut sources = BTreeMap::new();
    ctl.open_all(bdfs)?;
    let mut running = workload::Running::new();
    if let Err(e) = ctl.setup_dma(&mut running) {
        ctl.teardown_dma();
        return Err(e);
    }
    let dirty_log = ctl.start_dirty_log();
    sources.insert(source::DIRTY_LOG.to_owned(), dirty_log.clone());
    // A device opened already quiescent is watched from now on (its witness is not live).
    for i in 0..ctl.devs.len() {
        if ctl.devs[i].state.is_some_and(MigState::quiescent) {
            let bdf = ctl.devs[i].bdf.clone();
            ctl.witness.arm(&bdf);
        }
    }
    if let Err(e) = ctl.start_workload(&mut running, bdfs) {
        running.stop();
        ctl.teardown_dma();
        return Err(e);
    }
    if opts.workload != Workload::None {
        ctl.counters = Some(Arc::clone(&running.counters));
    }
    let at_start = BTreeMap::from([
        (source::DIRTY_LOG.to_owned(), dirty_log),
        (source::WITNESS.to_owned(), ctl.witness_at_start()),
    ]);
    ctl.out.ready(&at_start);
    ctl.mark(format!(
        "plan {} order {:?} workload {:?}",
        opts.plan, opts.order, opts.workload
    ));

    // A device found in ERROR (left so by an earlier user) only leaves it by a reset.
    for i in 0..ctl.devs.len() {
        if ctl.devs[i].state == Some(MigState::Error) {
            (ctl.log)(&format!(
                "{}: found in ERROR: resetting it",
                ctl.devs[i].bdf
            ));
            ctl.reset(i);
        }
    }
    ctl.warm_up();
    let mut conformance = Vec::new();
    let result = if opts.plan == Plan::Conformance {
        ctl.conformance(&mut conformance)
    } else if opts.plan == Plan::ResumeFuzz {
        ctl.resume_fuzz()
    } else if opts.plan == Plan::Reset {
        ctl.reset_plan()
    } else {
        ctl.run_plan(&opts.plan.steps())
    };
    let error = result.err().map(|e| {
        let msg = e.to_string();
        ctl.mark(format!("plan stopped: {msg}"));
        (ctl.log)(&format!("plan stopped: {msg}"));
        msg
    });
    let final_states = ctl.cleanup();
    let counters = running.stop();
    // Anything landing while the workload wound down is still witnessed if a device is quiet.
    ctl.witness_check(None);
    let summary = format!(
        "{}; witness checks {} detections {}",
        counters.summary(),
        ctl.witness.checks,
        ctl.witness.detections
    );
    ctl.mark(format!("workload {summary}"));
    sources.insert(source::WITNESS.to_owned(), ctl.witness_header());
    let roundtrip = ctl.compare_roundtrip();
    ctl.teardown_dma();
    Ok(Outcome {
        sources,
        error,
        final_states,
        conformance,
        roundtrip,
        workload_summary: Some(summary),
        saved_files: ctl.saved_files,
    })
}

impl<O: VfioOps> Ctl<'_, O> {
    fn emit(&mut self, kind: EventKind) {
        self.emit_at(now_ns(), kind);
    }

    fn emit_at(&mut self, t: u64, kind: EventKind) {
        self.out.emit(Event {
            t,
            pid: Some(self.pid),
            kind,
        });
    }

    fn mark(&mut self, label: String) {
        self.emit(EventKind::Mark { label });
    }

    fn open_all(&mut self, bdfs: &[String]) -> Result<(), SetupError> {
        for (n, bdf) in bdfs.iter().enumerate() {
            let o = self.ops.open(bdf).map_err(|source| SetupError::Open {
                bdf: bdf.clone(),
                source,
            })?;
            let flags = self
                .ops
                .migration_flags(o.id)
                .map_err(|source| SetupError::Flags {
                    bdf: bdf.clone(),
                    source,
                })?;
            if let Some(why) = self.opts.plan.unsupported_by(flags) {
                return Err(SetupError::PlanUnsupported {
                    bdf: bdf.clone(),
                    why,
                });
            }
            let resume = match self.opts.resume_from.get(n) {
                Some(p) => Some(std::fs::read(p).map_err(|source| SetupError::ResumeFile {
                    path: p.clone(),
                    source,
                })?),
                None => None,
            };
            let initial = self.ops.get_state(o.id).ok();
            // Quiescent before any workload ran: nothing can have landed in its pages first.
            let witness = initial.filter(|s| s.quiescent()).map(|s| {
                format!(
                    "unavailable: {} was already in {} when opened: no workload write could land in its witnessed pages before it was quiescent",
                    o.bdf,
                    s.name()
                )
            });
            self.emit(EventKind::Device {
                dev: o.bdf.clone(),
                flags,
                ctx: o.ctx.clone(),
                state: initial.unwrap_or(MigState::Running),
                driver: o.driver.clone(),
                sources: witness
                    .iter()
                    .map(|w| (source::WITNESS.to_owned(), w.clone()))
                    .collect(),
            });
            if let Some(s) = initial {
                self.emit(EventKind::Get {
                    dev: o.bdf.clone(),
                    state: s,
                });
            }
            (self.log)(&format!(
                "{}: driver {}, ctx {}, flags {}, state {}",
                o.bdf,
                o.driver.as_deref().unwrap_or("?"),
                o.ctx,
                model::flag_names(flags).join("|"),
                initial.map_or("unknown", MigState::name)
            ));
            self.devs.push(Dev {
                id: o.id,
                bdf: o.bdf,
                ctx: o.ctx,
                driver: o.driver,
                flags,
                state: initial,
                touched: false,
                session: Vec::new(),
                saves: Vec::new(),
                resume,
                irq: None,
                maps: Vec::new(),
                logging: false,
                dirty_since: Vec::new(),
                witness,
                resets: 0,
                data_file: None,
            });
        }
        Ok(())
    }

    fn setup_dma(&mut self, running: &mut workload::Running) -> Result<(), SetupError> {
        let pages = self.opts.buffer_pages.max(1);
        for i in 0..self.devs.len() {
            let bdf = self.devs[i].bdf.clone();
            let id = self.devs[i].id;
            let ctx = self.devs[i].ctx.clone();
            let dst_iova = IOVA_BASE + i as u64 * IOVA_SLOT;
            for (iova, len, witnessed) in [
                (dst_iova, pages * PAGE, true),
                (dst_iova + SRC_OFFSET, PAGE, false),
            ] {
                let buf = Arc::new(DmaBuffer::new(len).map_err(|source| SetupError::Buffer {
                    bdf: bdf.clone(),
                    source,
                })?);
                self.ops
                    .map_dma(id, &buf, iova)
                    .map_err(|e| SetupError::Map {
                        bdf: bdf.clone(),
                        iova,
                        source: std::io::Error::from_raw_os_error(e),
                    })?;
                self.devs[i].maps.push((iova, len as u64));
                self.emit(EventKind::Map {
                    ctx: ctx.clone(),
                    iova,
                    len: len as u64,
                });
                if witnessed {
                    self.witness.add(&bdf, iova, buf);
                } else {
                    self.src_bufs.push((i, buf));
                }
            }
            match self.ops.enable_irq(id) {
                Ok(irq) => {
                    self.devs[i].irq = Some(irq.kind);
                    (self.log)(&format!(
                        "{bdf}: interrupts on {} vector 0",
                        irq.kind.name()
                    ));
                    running.count_irqs(irq.eventfd, irq.unmask);
                }
                Err(e) => {
                    (self.log)(&format!("{bdf}: no interrupts: {e}"));
                    self.mark(format!("{bdf}: no interrupts: {e}"));
                }
            }
        }
        Ok(())
    }

    fn start_workload(
        &mut self,
        running: &mut workload::Running,
        bdfs: &[String],
    ) -> Result<(), SetupError> {
        match &self.opts.workload {
            Workload::None => Ok(()),
            Workload::Exec(cmd) => {
                let ranges: Vec<String> = bdfs
                    .iter()
                    .flat_map(|b| {
                        self.witness
                            .ranges(b)
                            .into_iter()
                            .map(move |(iova, len)| format!("{b}={iova:#x}+{len:#x}"))
                    })
                    .collect();
                running
                    .start_exec(cmd, bdfs, &[(WITNESS_ENV, ranges.join(" "))])
                    .map_err(|source| SetupError::Exec {
                        cmd: cmd.clone(),
                        source,
                    })
            }
            Workload::Edu => {
                for (i, src) in self.src_bufs.clone() {
                    let (id, bdf) = (self.devs[i].id, self.devs[i].bdf.clone());
                    if let Err(e) = self.ops.enable_bus_master(id) {
                        (self.log)(&format!(
                            "{bdf}: could not set bus master: {}",
                            errno_name(e)
                        ));
                    }
                    let bar = self.ops.bar(id, 0).map_err(|source| SetupError::Workload {
                        bdf: bdf.clone(),
                        source,
                    })?;
                    let dst_iova = IOVA_BASE + i as u64 * IOVA_SLOT;
                    running.start_edu(EduJob {
                        bar,
                        src,
                        src_iova: dst_iova + SRC_OFFSET,
                        dst_iova,
                        dst_pages: self.opts.buffer_pages.max(1) as u64,
                        tag: i as u8,
                    });
                }
                Ok(())
            }
        }
    }

    /// Starts device DMA logging over every mapped range; the `dirty_log` source value. A
    /// logging device's witness is armed from here on, in every state, so each write it sees
    /// can be looked for in the log's reports (`dirty-log-missed`).
    fn start_dirty_log(&mut self) -> String {
        let mut missing = Vec::new();
        for i in 0..self.devs.len() {
            let ranges = self.devs[i].maps.clone();
            let issued = now_ns();
            match self
                .ops
                .dma_logging_start(self.devs[i].id, &ranges, PAGE as u64)
            {
                Ok(()) => {
                    self.devs[i].logging = true;
                    self.devs[i].dirty_since = vec![issued; ranges.len()];
                    let bdf = self.devs[i].bdf.clone();
                    self.witness.arm(&bdf);
                }
                Err(e) => missing.push(format!("{} {}", self.devs[i].bdf, errno_name(e))),
            }
        }
        if missing.is_empty() {
            "ok".to_owned()
        } else {
            format!(
                "unavailable: VFIO_DEVICE_FEATURE_DMA_LOGGING_START: {}",
                missing.join(", ")
            )
        }
    }

    /// Reads (and clears) device `i`'s DMA log, range by range: each report is a
    /// `dirty_report` over `(since, return]` (`since`: when the range was last read), after a
    /// `dma` event with `src: dirty_log` and the same window for each run of dirty pages, all
    /// stamped at the REPORT's return.
    fn dirty_check(&mut self, i: usize) {
        if !self.devs[i].logging {
            return;
        }
        let (id, bdf) = (self.devs[i].id, self.devs[i].bdf.clone());
        let quiesced = self.devs[i].state.is_some_and(MigState::quiescent);
        for (k, (iova, len)) in self.devs[i].maps.clone().into_iter().enumerate() {
            let Some(&since) = self.devs[i].dirty_since.get(k) else {
                continue;
            };
            let pages = len.div_ceil(PAGE as u64) as usize;
            let mut bitmap = vec![0u64; pages.div_ceil(64)];
            let issued = now_ns();
            let r = self
                .ops
                .dma_logging_report(id, iova, len, PAGE as u64, &mut bitmap);
            let done = now_ns().max(since);
            if let Err(e) = r {
                self.mark(format!(
                    "{bdf}: DMA_LOGGING_REPORT failed: {}",
                    errno_name(e)
                ));
                continue;
            }
            self.devs[i].dirty_since[k] = issued;
            let window = Some((since, done));
            let bytes: Vec<u8> = bitmap.iter().flat_map(|w| w.to_ne_bytes()).collect();
            let (runs, _) = dirty_runs(&bytes, pages as u64, iova, PAGE as u64);
            let n: u64 = runs.iter().map(|&(_, l)| l / PAGE as u64).sum();
            for (at, run) in runs {
                if quiesced {
                    (self.log)(&format!(
                        "{bdf}: dirty log: DMA write at iova {at:#x} while quiescent"
                    ));
                }
                self.emit_at(
                    done,
                    EventKind::Dma {
                        dev: bdf.clone(),
                        src: DmaSource::DirtyLog,
                        iova: at,
                        len: run,
                        write: true,
                        window,
                        p2p: None,
                    },
                );
            }
            self.emit_at(
                done,
                EventKind::DirtyReport {
                    dev: bdf.clone(),
                    iova,
                    len,
                    page_size: PAGE as u64,
                    window: (since, done),
                    dirty_pages: n,
                },
            );
        }
    }

    /// Lets the workload get going before the plan: with edu, until a transfer landed in every
    /// device's witnessed pages (at most [`WARMUP_LIMIT`]), so the witness is live and DMA and
    /// interrupts are really in flight when the first quiesce comes; then one dwell in RUNNING.
    fn warm_up(&mut self) {
        if let Some(c) = self.counters.clone()
            && self.opts.workload == Workload::Edu
        {
            let end = Instant::now() + WARMUP_LIMIT;
            let all_landed = |ctl: &Self| ctl.devs.iter().all(|d| ctl.witness.landed(&d.bdf));
            while !all_landed(self) && Instant::now() < end && !self.interrupted() {
                std::thread::sleep(Duration::from_millis(10));
                self.out.idle();
            }
            let label = format!("warm-up: {}", c.summary());
            if !all_landed(self) {
                (self.log)(&format!(
                    "the edu workload did not land a transfer in every device's witnessed pages within {} s: {}",
                    WARMUP_LIMIT.as_secs(),
                    c.summary()
                ));
            }
            self.mark(label);
        }
        if self.opts.workload != Workload::None {
            self.dwell();
        }
    }

    fn teardown_dma(&mut self) {
        for i in 0..self.devs.len() {
            let (id, bdf, ctx) = (
                self.devs[i].id,
                self.devs[i].bdf.clone(),
                self.devs[i].ctx.clone(),
            );
            if std::mem::take(&mut self.devs[i].logging)
                && let Err(e) = self.ops.dma_logging_stop(id)
            {
                (self.log)(&format!(
                    "{bdf}: failed to stop DMA logging: {}",
                    errno_name(e)
                ));
            }
            if let Some(kind) = self.devs[i].irq.take()
                && let Err(e) = self.ops.disable_irq(id, kind)
            {
                (self.log)(&format!(
                    "{bdf}: failed to disable interrupts: {}",
                    errno_name(e)
                ));
            }
            for (iova, len) in std::mem::take(&mut self.devs[i].maps) {
                match self.ops.unmap_dma(id, iova, len) {
                    Ok(()) => self.emit(EventKind::Unmap {
                        ctx: ctx.clone(),
                        iova,
                        len,
                    }),
                    Err(e) => (self.log)(&format!(
                        "{bdf}: failed to unmap iova {iova:#x}: {}",
                        errno_name(e)
                    )),
                }
            }
        }
    }

    fn interrupted(&self) -> bool {
        self.opts.stop.load(Ordering::Relaxed)
    }

    /// Compares witnessed buffers (of one device or all) and records any DMA found. The DMA
    /// log's reports are stamped when the check began, before the marks a failed report
    /// emits: held until the check is done.
    fn witness_check(&mut self, dev: Option<&str>) {
        let now = now_ns();
        self.out.hold(now);
        for i in 0..self.devs.len() {
            if dev.is_none_or(|d| d == self.devs[i].bdf) {
                self.dirty_check(i);
            }
        }
        let found = self.witness.check(dev);
        self.record_witnessed(found);
        self.out.release();
    }

    /// Records witness findings, each stamped at its detection instant (the end of its
    /// window). They may be earlier than events already emitted: callers hold the output from
    /// before the comparisons began.
    fn record_witnessed(&mut self, found: Vec<(u64, EventKind)>) {
        for (t, ev) in found {
            if let EventKind::Dma {
                dev,
                iova,
                len,
                window: Some((t0, t1)),
                ..
            } = &ev
                && self
                    .devs
                    .iter()
                    .any(|d| d.bdf == *dev && !d.state.is_some_and(MigState::dma_allowed))
            {
                let msg = format!(
                    "{dev}: witness: DMA write at iova {iova:#x} ({len} bytes) in ({t0}, {t1}]"
                );
                (self.log)(&msg);
            }
            self.emit_at(t, ev);
        }
    }

    /// Decides, at `i`'s first quiesce, whether its witness is live (a workload write landed
    /// in its pages); when it is not, re-declares the device with `witness: unavailable`.
    fn decide_witness(&mut self, i: usize) {
        if self.devs[i].witness.is_some() || !self.witness.watches(&self.devs[i].bdf) {
            return;
        }
        let bdf = self.devs[i].bdf.clone();
        if self.witness.landed(&bdf) {
            self.devs[i].witness = Some("ok".to_owned());
            return;
        }
        let why = match &self.opts.workload {
            Workload::None => NO_WORKLOAD.to_owned(),
            Workload::Exec(cmd) => format!(
                "the exec workload `{cmd}` wrote nothing into the witnessed pages before the first quiesce (they are migscope's own mappings: only a command that programs the device to DMA to the IOVAs in ${WITNESS_ENV} can reach them)"
            ),
            Workload::Edu => match &self.counters {
                Some(c) if c.completed.load(Ordering::Relaxed) > 0 => format!(
                    "the edu workload completed transfers ({}) but none landed in {bdf}'s witnessed pages before the first quiesce",
                    c.summary()
                ),
                Some(c) => format!(
                    "the edu workload completed no transfer before the first quiesce ({})",
                    c.summary()
                ),
                None => "the edu workload did not run".to_owned(),
            },
        };
        let value = format!("unavailable: {why}");
        (self.log)(&format!("{bdf}: witness {value}"));
        self.devs[i].witness = Some(value.clone());
        let d = &self.devs[i];
        let kind = EventKind::Device {
            dev: bdf,
            flags: d.flags,
            ctx: d.ctx.clone(),
            // A GET just ran (set() asks when the state is unknown); if even that failed the
            // device is re-declared as the trace format's default.
            state: d.state.unwrap_or(MigState::Running),
            driver: d.driver.clone(),
            sources: [(source::WITNESS.to_owned(), value)].into(),
        };
        self.emit(kind);
    }

    /// The trace header's `witness` when the plan begins (the header is written before any
    /// device is quiesced): unavailable for every device without buffers or without a
    /// workload; otherwise ok, and each device whose witness turns out not to be live is
    /// re-declared with its own `unavailable` before its first quiesce ([`Self::decide_witness`]).
    fn witness_at_start(&self) -> String {
        if !self.witness.has_buffers() {
            return "unavailable: no DMA buffer mapped".to_owned();
        }
        match self.opts.workload {
            Workload::None => format!("unavailable: {NO_WORKLOAD}"),
            _ => "ok".to_owned(),
        }
    }

    /// The header's `witness`: ok when it was live for some device (the others carry their own
    /// `unavailable` in a re-declaration), otherwise why not.
    fn witness_header(&self) -> String {
        if !self.witness.has_buffers() {
            return "unavailable: no DMA buffer mapped".to_owned();
        }
        let decided: Vec<&String> = self
            .devs
            .iter()
            .filter_map(|d| d.witness.as_ref())
            .collect();
        if decided.iter().any(|w| *w == "ok") {
            return "ok".to_owned();
        }
        match decided.first() {
            Some(w) => (*w).clone(),
            None => "unavailable: no device was quiesced: the witness was never armed".to_owned(),
        }
    }

    /// The data_fd data moves through now: its number, the reset generation it was returned
    /// in and the device's current one (`stale-data-fd` compares them).
    fn data_file(&self, i: usize) -> Option<DataFile> {
        let d = &self.devs[i];
        d.data_file.map(|(fd, fd_gen)| DataFile {
            fd,
            fd_gen,
            reset_gen: d.resets,
        })
    }

    fn close_data(&mut self, i: usize) {
        self.ops.data_close(self.devs[i].id);
        self.devs[i].data_file = None;
    }

    fn get(&mut self, i: usize) -> Option<MigState> {
        let (id, bdf) = (self.devs[i].id, self.devs[i].bdf.clone());
        match self.ops.get_state(id) {
            Ok(s) => {
                self.emit(EventKind::Get {
                    dev: bdf.clone(),
                    state: s,
                });
                if let Some(known) = self.devs[i].state
                    && known != s
                {
                    (self.log)(&format!(
                        "{bdf}: GET reports {} but the device should be in {}",
                        s.name(),
                        known.name()
                    ));
                }
                self.devs[i].state = Some(s);
                Some(s)
            }
            Err(e) => {
                self.mark(format!("{bdf}: GET failed: {}", errno_name(e)));
                None
            }
        }
    }

    /// One SET (preceded by a witness check, followed by a GET). `Err` carries the errno.
    fn set(&mut self, i: usize, to: MigState, interruptible: bool) -> Result<(), PlanError> {
        if interruptible && self.interrupted() {
            return Err(PlanError::Interrupted);
        }
        if self.devs[i].state.is_none() {
            self.get(i);
        }
        let (id, bdf, flags) = (
            self.devs[i].id,
            self.devs[i].bdf.clone(),
            self.devs[i].flags,
        );
        if let Some(cur) = self.devs[i].state
            && model::is_hazard(flags, cur, to)
            && !self.opts.allow_hazard
        {
            return Err(PlanError::Hazard {
                dev: bdf,
                from: cur.name(),
                to: to.name(),
            });
        }
        // Entering quiescence under the edu workload: issue the SET while a transfer is in
        // flight, so the driver must really wait for DMA (a missing drain then shows as
        // DMA after the quiesce rather than depending on where in its cycle the workload was).
        if to.quiescent()
            && self.devs[i].state.is_some_and(MigState::dma_allowed)
            && self.opts.workload == Workload::Edu
            && let Some(c) = &self.counters
            && !c.await_in_flight(i, QUIESCE_FRESH, QUIESCE_AWAIT)
        {
            let label = format!(
                "{bdf}: no DMA in flight within {} ms before SET {}",
                QUIESCE_AWAIT.as_millis(),
                to.name()
            );
            self.mark(label);
        }
        // Evidence up to the SET's start.
        self.witness_check(Some(&bdf));
        // Entering quiescence: the baseline is taken and the DMA log read (cleared) right
        // before the SET, so nothing landing after the issue is absorbed unseen.
        if to.quiescent() {
            self.decide_witness(i);
            self.witness.arm(&bdf);
            self.dirty_check(i);
        }
        // An armed device is swept from the issue on: into quiescence until the linger after
        // the return; out of it (DMA allowed once the SET began) only to its return.
        // The watcher's findings are stamped from its start on and reported after the return.
        let held = self.witness.is_armed(&bdf);
        if held {
            self.out.hold(now_ns());
        }
        let watch = held.then(|| {
            let linger = if to.quiescent() {
                self.opts.witness_linger
            } else {
                Duration::ZERO
            };
            self.witness.watch(&bdf, linger)
        });
        self.devs[i].touched = true;
        let issued = now_ns();
        self.emit_at(
            issued,
            EventKind::Set {
                dev: bdf.clone(),
                to,
            },
        );
        let r = self.ops.set_state(id, to);
        let done = now_ns();
        self.last_set = Some((issued, done));
        if let Some(w) = &watch {
            w.returned(done);
        }
        let (ret, data_fd) = match r {
            Ok(fd) => (0, fd),
            Err(e) => (-e, None),
        };
        if let Some(fd) = data_fd {
            self.devs[i].data_file = Some((fd, self.devs[i].resets));
        }
        self.emit_at(
            done,
            EventKind::SetDone {
                dev: bdf.clone(),
                to,
                ret,
                data_fd,
            },
        );
        match r {
            Ok(_) => {
                self.devs[i].state = Some(to);
                if !matches!(
                    to,
                    MigState::StopCopy
                        | MigState::PreCopy
                        | MigState::PreCopyP2p
                        | MigState::Resuming
                ) {
                    self.close_data(i);
                }
            }
            Err(_) => self.devs[i].state = None,
        }
        // The watcher lingers past the return before anything else touches the device, so
        // whatever lands from here on falls in windows that start after the return.
        if let Some(w) = watch {
            let rep = self.witness.finish(w);
            self.mark(format!(
                "{bdf}: witness across SET {}: {} sweeps, interval median {} us, max {} us",
                to.name(),
                rep.sweeps,
                rep.interval_median / 1000,
                rep.interval_max / 1000
            ));
            self.record_witnessed(rep.found);
        }
        if held {
            self.out.release();
        }
        // And read right after it returned: what landed across the SET.
        if to.quiescent() {
            self.dirty_check(i);
        }
        let got = self.get(i);
        if let Some(c) = &self.counters {
            let label = format!("{bdf}: after SET {}: {}", to.name(), c.summary());
            self.mark(label);
        }
        // A device heading to a DMA-allowed state may DMA from the SET's issue on: its witness
        // starts over (a logging device's stays armed, for the log's reports).
        if to.dma_allowed() {
            self.witness.disarm(&bdf);
            if self.devs[i].logging {
                self.witness.arm(&bdf);
            }
        }
        if r.is_ok() && got.is_some_and(|g| g != to) {
            self.mark(format!(
                "{bdf}: state mismatch after SET {}: GET {}",
                to.name(),
                got.map_or("?", MigState::name)
            ));
        }
        match r {
            Ok(_) => Ok(()),
            Err(errno) => Err(PlanError::SetFailed {
                dev: bdf,
                to: to.name(),
                errno,
            }),
        }
    }

    /// Stays in the current states for `opts.dwell`, re-checking the witness.
    fn dwell(&mut self) {
        if self.opts.dwell.is_zero() {
            self.witness_check(None);
            return;
        }
        let end = Instant::now() + self.opts.dwell;
        let mut next_get = Instant::now() + QUIESCED_GET_EVERY;
        while Instant::now() < end && !self.interrupted() {
            std::thread::sleep(
                self.opts
                    .poll
                    .min(end.saturating_duration_since(Instant::now())),
            );
            self.witness_check(None);
            if Instant::now() >= next_get {
                self.get_quiesced();
                next_get += QUIESCED_GET_EVERY;
            }
            self.out.idle();
        }
    }

    /// Reads back the state of every device that should be quiescent (every
    /// [`QUIESCED_GET_EVERY`] while dwelling): `get` records it and takes what it says.
    fn get_quiesced(&mut self) {
        for i in 0..self.devs.len() {
            if let Some(known) = self.devs[i].state.filter(|s| s.quiescent())
                && let Some(got) = self.get(i)
                && got != known
            {
                let bdf = self.devs[i].bdf.clone();
                self.mark(format!(
                    "{bdf}: left {} without a SET: GET {} while dwelling",
                    known.name(),
                    got.name()
                ));
            }
        }
    }

    fn run_plan(&mut self, steps: &[Step]) -> Result<(), PlanError> {
        match self.opts.order {
            Order::Naive => {
                for i in 0..self.devs.len() {
                    for s in steps {
                        self.do_step(i, *s)?;
                    }
                }
            }
            Order::Qemu => {
                for s in steps {
                    self.barrier(s.to)?;
                    for i in 0..self.devs.len() {
                        self.do_step(i, *s)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// QEMU's multi-device rule: before any device stops, every running peer reaches its P2P
    /// state; before any runs, every stopped peer reaches RUNNING_P2P.
    fn barrier(&mut self, to: MigState) -> Result<(), PlanError> {
        if self.devs.len() < 2 {
            return Ok(());
        }
        for i in 0..self.devs.len() {
            let Some(cur) = self.devs[i].state else {
                continue;
            };
            let flags = self.devs[i].flags;
            let target = if to.stopped() {
                quiesce_target(cur)
            } else if to.dma_allowed() && cur.stopped() {
                Some(MigState::RunningP2p)
            } else {
                None
            };
            if let Some(t) = target.filter(|t| flags.supports(*t)) {
                self.set(i, t, true)?;
            }
        }
        Ok(())
    }

    fn do_step(&mut self, i: usize, step: Step) -> Result<(), PlanError> {
        if step.optional && !self.devs[i].flags.supports(step.to) {
            return Ok(());
        }
        let before = self.devs[i].state;
        self.set(i, step.to, true)?;
        // The plans that restore compare the device's registers (`regs`) when saved and once
        // restored.
        let regs = matches!(self.opts.plan, Plan::RoundTrip | Plan::ResumeFuzz);
        if regs && before == Some(MigState::Resuming) && step.to != MigState::Resuming {
            self.read_regs(i, RegStage::Restored);
        }
        match step.to {
            MigState::StopCopy => {
                self.save(i)?;
                if regs {
                    self.read_regs(i, RegStage::Saved);
                }
            }
            MigState::PreCopy | MigState::PreCopyP2p => self.precopy(i)?,
            MigState::Resuming => self.load(i)?,
            _ => {}
        }
        if step.to.quiescent() {
            self.dwell();
        }
        Ok(())
    }

    /// Reads the data_fd until ENOMSG / EAGAIN (`temporary`) or EOF; returns bytes read.
    fn read_data(&mut self, i: usize, temporary_ok: bool) -> Result<u64, PlanError> {
        let (id, bdf) = (self.devs[i].id, self.devs[i].bdf.clone());
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0u64;
        loop {
            // In PRE_COPY a blocking read may wait for data that never comes: poll first and
            // treat silence as the temporary end of stream.
            if temporary_ok {
                match self.ops.data_poll(id, PRECOPY_POLL_MS) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(errno) => {
                        return Err(PlanError::Data {
                            dev: bdf,
                            op: "poll",
                            errno,
                        });
                    }
                }
            }
            match self.ops.data_read(id, &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    self.devs[i].session.extend_from_slice(&buf[..n]);
                    total += n as u64;
                }
                Err(e) if temporary_ok && (e == libc::ENOMSG || e == libc::EAGAIN) => break,
                Err(errno) => {
                    return Err(PlanError::Data {
                        dev: bdf,
                        op: "read",
                        errno,
                    });
                }
            }
        }
        Ok(total)
    }

    fn save(&mut self, i: usize) -> Result<(), PlanError> {
        let (id, bdf) = (self.devs[i].id, self.devs[i].bdf.clone());
        // The stop-copy size estimate, asked once the device is stopped and before the save
        // (as QEMU's vfio_query_stop_copy_size): the probe records it as `data_size`, and
        // `check` holds the bytes saved to it.
        let estimate = match self.ops.data_size(id) {
            Ok(n) => format!("{n} bytes"),
            Err(e) => format!("failed: {}", errno_name(e)),
        };
        self.mark(format!(
            "{bdf}: VFIO_DEVICE_FEATURE_MIG_DATA_SIZE in STOP_COPY: {estimate}"
        ));
        let bytes = self.read_data(i, false)?;
        self.emit(EventKind::Data {
            dev: bdf.clone(),
            dir: DataDir::Save,
            bytes,
            file: self.data_file(i),
        });
        let all = std::mem::take(&mut self.devs[i].session);
        let n = self.devs[i].saves.len();
        let path = self
            .opts
            .save_dir
            .join(format!("{}.{n}.mig", bdf.replace(':', "_")));
        crate::outfile::write_then_rename(&path, &all).map_err(|source| PlanError::SaveFile {
            path: path.clone(),
            source,
        })?;
        (self.log)(&format!(
            "{bdf}: saved {} bytes of device state to {}",
            all.len(),
            path.display()
        ));
        self.saved_files.push(path);
        self.devs[i].saves.push(all);
        Ok(())
    }

    fn precopy(&mut self, i: usize) -> Result<(), PlanError> {
        let (id, bdf) = (self.devs[i].id, self.devs[i].bdf.clone());
        let rounds = if self.devs[i].state == Some(MigState::PreCopy) {
            PRECOPY_ROUNDS
        } else {
            1
        };
        for round in 0..rounds {
            match self.ops.precopy_info(id) {
                Ok(info) => self.mark(format!(
                    "{bdf}: precopy round {round}: initial_bytes {} dirty_bytes {}",
                    info.initial_bytes, info.dirty_bytes
                )),
                Err(e) => self.mark(format!(
                    "{bdf}: VFIO_MIG_GET_PRECOPY_INFO failed: {}",
                    errno_name(e)
                )),
            }
            let bytes = self.read_data(i, true)?;
            if bytes > 0 {
                self.emit(EventKind::Data {
                    dev: bdf.clone(),
                    dir: DataDir::Save,
                    bytes,
                    file: self.data_file(i),
                });
            } else {
                break;
            }
        }
        Ok(())
    }

    fn load(&mut self, i: usize) -> Result<(), PlanError> {
        let (id, bdf) = (self.devs[i].id, self.devs[i].bdf.clone());
        let data = match self.devs[i].resume.take() {
            Some(d) => d,
            None => match self.devs[i].saves.last() {
                Some(d) => d.clone(),
                None => {
                    self.mark(format!("{bdf}: RESUMING with no data to load"));
                    return Ok(());
                }
            },
        };
        let mut off = 0;
        while off < data.len() {
            let end = (off + CHUNK).min(data.len());
            match self.ops.data_write(id, &data[off..end]) {
                Ok(0) => {
                    return Err(PlanError::Data {
                        dev: bdf,
                        op: "write (0 bytes accepted)",
                        errno: libc::EIO,
                    });
                }
                Ok(n) => off += n,
                Err(errno) => {
                    return Err(PlanError::Data {
                        dev: bdf,
                        op: "write",
                        errno,
                    });
                }
            }
        }
        self.emit(EventKind::Data {
            dev: bdf.clone(),
            dir: DataDir::Load,
            bytes: off as u64,
            file: self.data_file(i),
        });
        (self.log)(&format!("{bdf}: loaded {off} bytes of device state"));
        Ok(())
    }

    fn compare_roundtrip(&mut self) -> Vec<(String, bool, usize, usize)> {
        if self.opts.plan != Plan::RoundTrip {
            return Vec::new();
        }
        let mut out = Vec::new();
        for i in 0..self.devs.len() {
            if let [a, b, ..] = &self.devs[i].saves[..] {
                let r = (self.devs[i].bdf.clone(), a == b, a.len(), b.len());
                out.push(r);
            }
        }
        for (bdf, same, a, b) in &out {
            let label = format!(
                "{bdf}: roundtrip: state saved after load is {} ({a} vs {b} bytes)",
                if *same { "identical" } else { "DIFFERENT" }
            );
            self.mark(label);
        }
        out
    }

    /// Reaches `from` by a legal path (never a hazard: through STOP when needed).
    fn reach(&mut self, i: usize, from: MigState) -> Result<(), PlanError> {
        if self.devs[i].state.is_none() {
            self.get(i);
        }
        match self.devs[i].state {
            Some(s) if s == from => return Ok(()),
            Some(MigState::Error) | None => self.reset(i),
            Some(s) if model::is_hazard(self.devs[i].flags, s, from) => {
                self.set(i, MigState::Stop, true)?;
            }
            _ => {}
        }
        self.set(i, from, true)
    }

    fn reset(&mut self, i: usize) {
        self.reset_device(i, false);
    }

    /// VFIO_DEVICE_RESET, then a GET ("has it got there?": a reset returns the device to
    /// RUNNING). `keep_data_fd` leaves the data_fd open, for the plan that reads it after.
    fn reset_device(&mut self, i: usize, keep_data_fd: bool) {
        let (id, bdf) = (self.devs[i].id, self.devs[i].bdf.clone());
        self.witness_check(Some(&bdf));
        self.witness.disarm(&bdf);
        let r = self.ops.reset(id);
        if self.devs[i].logging {
            self.witness.arm(&bdf);
        }
        self.emit(EventKind::Reset {
            dev: bdf.clone(),
            ret: r.err().map_or(0, |e| -e),
        });
        self.devs[i].touched = true;
        self.devs[i].session.clear();
        self.devs[i].state = if r.is_ok() {
            self.devs[i].resets += 1;
            Some(MigState::Running)
        } else {
            None
        };
        if !keep_data_fd {
            self.close_data(i);
        }
        if let Err(e) = r {
            (self.log)(&format!(
                "{bdf}: VFIO_DEVICE_RESET failed: {}",
                errno_name(e)
            ));
        }
        self.get(i);
    }

    fn conformance(&mut self, rows: &mut Vec<ConfRow>) -> Result<(), PlanError> {
        for i in 0..self.devs.len() {
            // Peers wait in RUNNING_P2P so the device under test may stop without breaking the
            // multi-device rules.
            for j in 0..self.devs.len() {
                if j != i && self.devs[j].flags.supports(MigState::RunningP2p) {
                    self.set(j, MigState::RunningP2p, true)?;
                }
            }
            let flags = self.devs[i].flags;
            let bdf = self.devs[i].bdf.clone();
            // Leaving RESUMING asks the driver to take what was written, and a driver must
            // refuse incomplete data (vfio.h, RESUMING -> STOP): as a VMM does, every RESUMING
            // the table enters gets the device's own saved state, taken once here.
            let loads = flags.supports(MigState::Resuming) && flags.supports(MigState::StopCopy);
            if loads {
                self.reach(i, MigState::StopCopy)?;
                self.save(i)?;
            }
            for from in MigState::ALL.into_iter().filter(|s| flags.supports(*s)) {
                for to in MigState::ALL {
                    if self.interrupted() {
                        return Err(PlanError::Interrupted);
                    }
                    let expected = model::path(flags, from, to);
                    let exp_text = match &expected {
                        Ok(p) => p.iter().map(|s| s.name()).collect::<Vec<_>>().join(">"),
                        Err(StepError::BlockedArc) => "EINVAL (blocked arc: hazard)".to_owned(),
                        Err(_) => "EINVAL".to_owned(),
                    };
                    let mut row = ConfRow {
                        dev: bdf.clone(),
                        from,
                        to,
                        expected: exp_text,
                        got: String::new(),
                        pass: None,
                        expected_path: expected.as_ref().ok().cloned(),
                        window: None,
                    };
                    if model::is_hazard(flags, from, to) && !self.opts.allow_hazard {
                        row.got = "not sent (hazard; --allow-hazard sends it)".to_owned();
                        rows.push(row);
                        continue;
                    }
                    let entered = self.devs[i].state != Some(from);
                    let reached = match self.reach(i, from) {
                        Ok(()) if loads && entered && from == MigState::Resuming => self.load(i),
                        r => r,
                    };
                    if let Err(e) = reached {
                        if matches!(e, PlanError::Interrupted) {
                            return Err(e);
                        }
                        row.got = format!("could not reach {}: {e}", from.name());
                        row.pass = Some(false);
                        rows.push(row);
                        self.recover(i);
                        continue;
                    }
                    self.last_set = None;
                    let r = self.set(i, to, true);
                    row.window = self.last_set;
                    let got_state = self.devs[i].state;
                    let got_name = got_state.map_or("?", MigState::name);
                    row.got = match &r {
                        Ok(()) => format!("0, GET {got_name}"),
                        Err(PlanError::SetFailed { errno, .. }) => {
                            format!("-{}, GET {got_name}", errno_name(*errno))
                        }
                        Err(PlanError::Interrupted) => return Err(PlanError::Interrupted),
                        Err(e) => format!("{e}"),
                    };
                    row.pass = Some(match (&expected, &r) {
                        (Ok(_), Ok(())) => got_state == Some(to),
                        (Err(_), Err(PlanError::SetFailed { errno, .. })) => {
                            *errno == libc::EINVAL && got_state == Some(from)
                        }
                        _ => false,
                    });
                    // A pair that entered RESUMING gets the saved stream too, so the next pair
                    // can leave it.
                    if loads
                        && to == MigState::Resuming
                        && from != MigState::Resuming
                        && self.devs[i].state == Some(MigState::Resuming)
                    {
                        match self.load(i) {
                            Err(PlanError::Interrupted) => return Err(PlanError::Interrupted),
                            Err(e) => {
                                self.mark(format!("{bdf}: loading the saved state failed: {e}"));
                                self.reset(i);
                            }
                            Ok(()) => {}
                        }
                    }
                    // Leaving RESUMING/STOP_COPY without data is legal but may fail on real
                    // devices: recover from whatever happened before the next pair.
                    if !matches!(self.devs[i].state, Some(s) if s != MigState::Error) {
                        self.recover(i);
                    }
                    rows.push(row);
                }
            }
            self.set(i, MigState::Running, true).or_else(|e| {
                if matches!(e, PlanError::Interrupted) {
                    Err(e)
                } else {
                    self.recover(i);
                    Ok(())
                }
            })?;
        }
        Ok(())
    }

    /// Gets a device out of ERROR / an unknown state: GET, then reset if needed.
    fn recover(&mut self, i: usize) {
        if self.devs[i].state.is_none() {
            self.get(i);
        }
        if matches!(self.devs[i].state, None | Some(MigState::Error)) {
            self.reset(i);
        }
    }

    /// Returns every touched device to RUNNING: ERROR/unknown ones are reset, stopped ones go
    /// through RUNNING_P2P together first (QEMU's resume order), then each to RUNNING; a device
    /// that will not go is reset (a device in ERROR is never sent a SET: only a reset leaves
    /// ERROR). Returns what each device was left in.
    #[expect(
        clippy::needless_range_loop,
        reason = "each pass calls &mut self methods by device index"
    )]
    fn cleanup(&mut self) -> Vec<(String, String)> {
        let mut was_reset = vec![false; self.devs.len()];
        for i in 0..self.devs.len() {
            if !self.devs[i].touched {
                continue;
            }
            if self.devs[i].state.is_none() {
                self.get(i);
            }
            if matches!(self.devs[i].state, None | Some(MigState::Error)) {
                self.reset(i);
                was_reset[i] = true;
            }
        }
        let settable = |s: Option<MigState>| s.is_some_and(|s| s != MigState::Error);
        for i in 0..self.devs.len() {
            let s = self.devs[i].state;
            if settable(s)
                && s.is_some_and(|s| s.stopped() || s == MigState::PreCopyP2p)
                && self.devs[i].flags.supports(MigState::RunningP2p)
                && self.set(i, MigState::RunningP2p, false).is_err()
            {
                self.reset(i);
                was_reset[i] = true;
            }
        }
        for i in 0..self.devs.len() {
            let s = self.devs[i].state;
            if settable(s)
                && s != Some(MigState::Running)
                && self.set(i, MigState::Running, false).is_err()
            {
                self.reset(i);
                was_reset[i] = true;
            }
        }
        let mut out = Vec::new();
        for i in 0..self.devs.len() {
            let s = self.devs[i].state;
            let bdf = self.devs[i].bdf.clone();
            let text = match (s, was_reset[i]) {
                (Some(MigState::Running), false) => "RUNNING".to_owned(),
                (Some(MigState::Running), true) => "RUNNING (after reset)".to_owned(),
                (Some(s), _) => format!("{} (could not return it to RUNNING)", s.name()),
                (None, _) => "UNKNOWN (GET failed; could not return it to RUNNING)".to_owned(),
            };
            self.mark(format!("{bdf}: left in {text}"));
            out.push((bdf, text));
        }
        out
    }
}
