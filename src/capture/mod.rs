//! Capture: loads the embedded eBPF probe, attaches each hook on its own (a hook that cannot
//! attach degrades only its evidence source, with the reason), reads the ring buffer, and
//! turns records into time-ordered trace events attributed to devices and processes.
//!
//! Nothing here depends on the host: the same code runs in the lab VM (6.1/6.12 guests,
//! musl static build).
//!
//! # Two ways to see VFIO's syscalls ([`HooksMode`], `record --hooks`)
//! - **direct** (where the kernel allows kprobes): kprobe+kretprobe pairs on the VFIO ioctl
//!   handlers (`vfio_device_fops_unl_ioctl` for cdev and group-obtained device fds,
//!   `vfio_group_fops_unl_ioctl`, `vfio_fops_unl_ioctl`, `iommufd_fops_ioctl` where present),
//!   on the migration data files' `read`/`write`/`unlocked_ioctl` (each variant driver's own
//!   `file_operations`, found at startup by [`fops`]), and kprobes on the VFIO files'
//!   `release` (closes). The fd number and the syscall are read from the task's user
//!   registers (`bpf_task_pt_regs`), so records keep the fields of the tracepoint path. No
//!   syscall tracepoint is attached: unrelated syscalls of the host pay nothing. Opens are
//!   not hooked: an fd is learned at its first VFIO ioctl (its kind from the handler that
//!   ran, the rest from /proc, as for fds held before recording). When no data
//!   `file_operations` can be found (no variant driver loaded, no /proc/kcore), the data
//!   files' read/write and closes stay on their syscall tracepoints, and the header's
//!   `hooks` says so. Not seen on this path: a data file of a variant driver loaded after
//!   recording started, transfers through splice/sendfile (counted `lost`), closes by
//!   `close_range`/`dup2`/exec (as on the tracepoint path), and a release run for a close
//!   whose file other fds still hold (the fd is then forgotten at its process's exit).
//! - **tracepoint**: the syscall tracepoints (ioctl, openat, open, close, read, write),
//!   filtered in the probe; every task of the host takes the slow syscall path while they
//!   are attached (issue 16: ~130 ns per syscall and program).
//!
//! `auto` (the default) uses direct where every needed kprobe attaches, else the
//! tracepoints; the trace header's `hooks` says which path was used and why. Kernel-function hooks try fentry/fexit first and fall back to kprobes:
//! aya 0.14 resolves fentry targets in vmlinux BTF only, so functions of the vfio modules
//! need the kprobe path unless vfio is built in.
//!
//! # How records become events
//! - **Devices.** A device fd is named by the device it was opened for: the name passed to
//!   VFIO_GROUP_GET_DEVICE_FD, or the PCI address behind a `/dev/vfio/devices/vfioN` cdev.
//!   The fds processes already hold when recording starts (`record --pid` beside a running
//!   QEMU) are found in /proc after the probe is attached and resolved by [`attach`]: fdinfo's
//!   `vfio-device-syspath` (6.18+), else VFIO_DEVICE_GET_PCI_HOT_RESET_INFO through a
//!   `pidfd_getfd` duplicate intersected with the IOMMU groups the process holds,
//!   disambiguated by config-space identity. Every such device is declared at once, at the
//!   instant the probe was attached, before any event after it. Fds met later that capture
//!   did not see being opened (received over a socket, duplicated) are resolved the same way
//!   when first used. An fd that stays ambiguous keeps the placeholder `fd:N@pid`, with its
//!   own `irq` and `iommu_fault` sources unavailable (their events name a PCI address), and
//!   the interrupts and faults of the PCI addresses it may be are not attributed to anyone
//!   (one `mark` says so): no phantom device stands in for it. [`Capture::declare_fd`] lets
//!   a caller name fds itself.
//! - **Contexts** (`ctx`, the multi-device ordering scope): `pid<P>`, for every device and
//!   map of process P, whether its opens were seen or it was found already open: a process is
//!   one VM, however many containers or iommufds it uses.
//! - **Flags.** From the user's VFIO_DEVICE_FEATURE_MIGRATION GET when seen; otherwise asked
//!   from the kernel through a duplicate of the user's fd (pidfd_getfd, read-only); otherwise
//!   unknown: declared STOP_COPY only (the format needs a value) with the device's own
//!   `transitions` source unavailable and a `mark` saying why.
//! - **Initial state** of a `device`: for a device held when recording started, the state
//!   read through the duplicate at attach (GET MIG_DEVICE_STATE), unless the recording shows
//!   a change before that read; otherwise what the recording shows before any change (its
//!   first `get`, or the `from` of its first `step`, as when recording starts in the middle
//!   of a migration); otherwise RUNNING for a device seen being opened (or bound, for a
//!   cdev). Anything else is unknown: declared RUNNING, the format's default, with its own
//!   `transitions` source unavailable and a `mark` saying why.
//! - **Posted interrupts.** A device whose user holds a KVM VM on a host that can post
//!   device interrupts into guests (VT-d posted interrupts, AVIC; [`attach::posting`]) has
//!   its own `irq` source `unavailable: interrupts posted to the guest`: its MSIs need not
//!   run the host handler the `irq` hook sees. The header's `irq` stays what the hook says.
//! - **Command numbers shared by container and device fds** (0x3B70..0x3B72, 0x3B75) are
//!   told apart by the fd's kind, learned from opens of `/dev/vfio/vfio`, `/dev/vfio/<group>`,
//!   `/dev/vfio/devices/vfioN`, `/dev/iommu` through open/openat (in the probe, for the data fd it must know at
//!   once, and here); on an fd of unknown kind 0x3B71/0x3B72 count as MAP/UNMAP_DMA only with a
//!   DMA map's argsz.
//! - **Events:** `set` at the SET's syscall entry, `set_done` (with `data_fd`) and `get` at its
//!   return, `reset`, `step` per `vfio_mig_get_next_state` call that returned 0 (device from
//!   the ioctl in flight on that thread, or the `struct vfio_device *` learned from an earlier
//!   step), `irq` from `vfio-msi[N](BDF)`-style handler names (or `irq_bin`, interrupts the probe
//!   counted while their device could not be quiescing: [`IrqDetail`], `probe-ebpf/src/irqbin.rs`), `map`/`unmap` from
//!   MAP/UNMAP_DMA returns (IOMMU tracepoint hits inside them are folded into them; those inside
//!   other VFIO/iommufd ioctls become events of their own), `dma` with `src: fault` from
//!   `iommu:io_page_fault` and `src: mdev_dma` from vfio_dma_rw/vfio_pin_pages, `data` from
//!   read/write on a data fd, `precopy_info` from the VMM's VFIO_MIG_GET_PRECOPY_INFO on a data
//!   fd and `data_size` from its VFIO_DEVICE_FEATURE_MIG_DATA_SIZE GET (decoded from what the
//!   kernel returned to the VMM: capture never asks the kernel itself), `mark` notes for
//!   SET_IRQS and for dirty tracking with its extents — device DMA logging START / STOP /
//!   REPORT, type1 VFIO_IOMMU_DIRTY_PAGES START / STOP / GET_BITMAP (0x3B75 on a container),
//!   iommufd IOMMU_HWPT_SET_DIRTY_TRACKING / IOMMU_HWPT_GET_DIRTY_BITMAP — which are never DMA
//!   evidence (type1 reports every pinned page dirty), `lost` for ring buffer overflow
//!   (`source: ring_buffer`), undecodable records (`source: decode`) and missed FSM steps
//!   (`source: fsm_step`, below).
//! - **Missed FSM steps.** The probe counts, per thread, the `vfio_mig_get_next_state` calls
//!   of a recorded VFIO ioctl it could not turn into a `step`: a return half that never ran
//!   (the kretprobe's instances were all in use: the arguments its entry half saved are still
//!   there at the next call or at the ioctl's exit), an entry half that never ran (the return
//!   finds no arguments), and a successful call whose `*next` could not be read. At the
//!   ioctl's exit it reports them just before the return, which becomes
//!   `{"ev":"lost","source":"fsm_step","dev":BDF}` stamped before that SET's `set_done`:
//!   the trace is inconclusive, and the verifier must not read the steps it did see as an
//!   illegal arc. The kretprobe is made through tracefs with maxactive
//!   `max(64, 4 x possible CPUs)` (at most 4096), where aya's perf-PMU kprobe would get the
//!   kernel's default `max(10, 2 x CPUs)` (still used, and said in the hook's status, when
//!   tracefs has no `kprobe_events`). Beyond it, the kernel skips the return handler of the
//!   extra concurrent calls (counting them in `nmissed`) and each one is a lost step as
//!   above. Not seen: a call both of whose halves are skipped (kprobe recursion, which this
//!   non-recursive function called from process context does not meet), and steps of a SET
//!   that was already running when capture started (they belong to no recorded request).
//! - **Processes.** `--pid` keeps the given processes and their descendants: forks are
//!   reported by the probe, so children that exit quickly are kept; /proc ancestry covers
//!   children created before capture started. Interrupts, faults and mediated DMA (which run
//!   in no particular process) carry the pid of the device's user.
//! - **Order.** Records carry their own timestamps; the newest 20 ms (the session's one
//!   hold-back, `session::merge::HOLD_BACK_NS`) are held back at each `drain` so records
//!   submitted by different CPUs leave in time order; `stop` releases all.
//! - **Closes.** The probe reports `close(2)` of every fd it knows, including those learned
//!   from /proc (they are added to its fd map), so a reused fd number is looked up afresh.
//!
//! # Known limits
//! Opens through `openat2(2)` or relative paths are only learned from /proc when the fd is
//! used; data fds that were dup'd or passed, data fds created before recording started, and
//! readv/splice on them, are not followed. Fds closed by `close_range(2)`, `dup2(2)` onto
//! them or exec are not seen closing (exit is: dead processes are forgotten). IOMMU unmaps at process exit (no ioctl in
//! flight) are not reported. On the tracepoint path, tracing read/write for data fds costs about 0.9 µs per
//! read/write syscall system-wide while recording (measured with dd on the 6.18 host).

pub mod attach;
mod attrib;
pub mod diagnose;
pub mod dirtylog;
pub mod fops;
mod hooks;
mod kretprobe;
pub mod procfs;
pub mod records;
pub mod tracefs;

use std::{
    collections::{BTreeMap, HashSet},
    os::fd::{AsRawFd, RawFd},
    sync::{Arc, Mutex},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap as BpfHashMap, MapData, MapError, PerCpuArray, RingBuf},
};
use probe_common::abi::{BdfKey, BinKey, IrqBin, names};

pub use attrib::{PidFilter, parse_irq_name};
pub use hooks::{HookState, HookStatus};

use crate::trace::{Event, EventKind, source};

/// The probe object built by `build.rs` from `probe-ebpf` (aya-build), embedded in the binary;
/// empty when the binary was built with `AYA_BUILD_SKIP` ([`NO_PROBE`]).
pub static PROBE_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probe"));

/// What the `transitions` source says when the ioctls are traced but the FSM steps are not.
pub const NO_STEPS: &str = "FSM steps not observable";

/// Why every hook is unavailable in a binary built without the probe.
pub const NO_PROBE: &str = "built without the probe (AYA_BUILD_SKIP)";

/// The ring buffer's size unless `ring_bytes` says otherwise.
const DEFAULT_RING_BYTES: u32 = 1 << 20;
/// A reader blocked on the ring buffer is woken once 1/8 of it is filled.
const WAKE_FRACTION: u32 = 8;
/// How often fds of exited processes are forgotten.
const PURGE_NS: u64 = 1_000_000_000;
/// Source name of `lost` events for ring buffer overflow and undecodable records.
pub const LOST_RING: &str = "ring_buffer";
pub const LOST_DECODE: &str = "decode";
/// Source name of `lost` events for FSM steps the probe missed (with the device's `dev`).
pub const LOST_FSM_STEP: &str = "fsm_step";

/// What to record.
#[derive(Clone, Debug, Default)]
pub struct CaptureOptions {
    /// Only these processes and their descendants; `None`: every VFIO user.
    pub pids: Option<Vec<u32>>,
    /// Ring buffer size in bytes (rounded up to a power of two of at least one page);
    /// `None`: the probe's default (1 MiB).
    pub ring_bytes: Option<u32>,
    /// How much of each device's interrupt stream is written one by one.
    pub irq_detail: IrqDetail,
    /// How VFIO's syscalls are hooked.
    pub hooks: HooksMode,
}

/// How the probe sees VFIO's ioctls, opens, closes and migration data transfers
/// (`--hooks`). The syscall tracepoints switch every task of the host onto the slow syscall
/// path while attached (~130 ns per syscall and program, whatever the program filters); the
/// direct hooks are kprobes on the VFIO file operations, which only VFIO's own calls reach.
/// The default is `auto`: the whole lab (6.12 and 6.1) runs as expected on the direct hooks
/// (BENCHMARKS.md, "The tax on unrelated syscalls").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum HooksMode {
    /// Direct hooks where every needed kprobe attaches, else the syscall tracepoints.
    #[default]
    Auto,
    /// Kprobes on the VFIO ioctl handlers, the migration data files' read/write/ioctl and
    /// the VFIO files' release; fails when a needed one cannot attach.
    Direct,
    /// The syscall tracepoints (ioctl, openat, open, close, read, write).
    Tracepoint,
}

/// How much of a device's interrupt stream is recorded interrupt by interrupt
/// (`--irq-detail`). See `probe-ebpf/src/irqbin.rs` for when a device's interrupts are binned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum IrqDetail {
    /// Every interrupt from a MIG_DEVICE_STATE SET's entry until a SET or GET shows the device
    /// DMA-allowed again (RUNNING, PRE_COPY) with no SET open, and of any device whose phase
    /// is unknown; the others counted in the kernel, `irq_bin` per handler and bin (`IRQ_BIN_NS_DEFAULT`, 25 ms).
    #[default]
    Quiesce,
    /// Every interrupt, one `irq` event each.
    All,
}

impl IrqDetail {
    /// The probe's bin width (0: no bins).
    pub const fn bin_ns(self) -> u64 {
        match self {
            IrqDetail::Quiesce => probe_common::abi::IRQ_BIN_NS_DEFAULT,
            IrqDetail::All => 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("failed to load the eBPF probe (needs root or CAP_BPF+CAP_PERFMON)")]
    Load(#[source] aya::EbpfError),
    #[error("the probe object has no map {0}")]
    MissingMap(&'static str),
    #[error("failed to open probe map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    /// Every hook, each unavailable with its reason (`diagnose::explain` groups them).
    #[error("no probe hook could be attached ({} tried; `migscope doctor` says why)", .0.len())]
    NothingAttached(Vec<HookStatus>),
    /// `--hooks direct` on a kernel that refused a needed direct hook.
    #[error("{0}")]
    Direct(String),
}

/// A loaded, attached probe and the attribution state of its records.
pub struct Capture {
    /// Owns the programs and their links: dropping it detaches everything (the maps below
    /// were taken out of it and outlive it).
    ebpf: Option<Ebpf>,
    /// Return probes made through tracefs (each its own link): the FSM step's and the
    /// direct hooks'.
    retprobes: Vec<kretprobe::Retprobe>,
    /// The trace header's `hooks`.
    hooks_path: String,
    ring: RingBuf<MapData>,
    lost: PerCpuArray<MapData, u64>,
    /// The probe's (pid, fd) -> kind map, purged of exited processes.
    fds: BpfHashMap<MapData, u64, u32>,
    /// The probe's device fd -> device key map (interrupt phases), for the fds the probe did
    /// not see returned by VFIO_GROUP_GET_DEVICE_FD, and those of them already given to it.
    dev_keys: BpfHashMap<MapData, u64, BdfKey>,
    keyed: HashSet<(u32, i32)>,
    /// The probe's open interrupt bins (read once more at `stop`).
    bins: BpfHashMap<MapData, BinKey, IrqBin>,
    last_purge: u64,
    /// What [`Capture::drain_upto`] last promised: nothing earlier is released after it.
    watermark: u64,
    lost_seen: u64,
    decode_errors: u64,
    hooks: Vec<HookStatus>,
    sources: BTreeMap<String, String>,
    attrib: attrib::Attributor,
    /// The probe's aya-log diagnostics (rare paths only), turned into `mark` events.
    logger: Option<aya_log::EbpfLogger<Diagnostics>>,
    diagnostics: Arc<Mutex<Vec<String>>>,
}

/// Collects the probe's log records (aya-log) for the trace instead of a global logger.
struct Diagnostics(Arc<Mutex<Vec<String>>>);

impl log::Log for Diagnostics {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if let Ok(mut v) = self.0.lock() {
            v.push(format!("{}: {}", record.level(), record.args()));
        }
    }
    fn flush(&self) {}
}

impl Capture {
    /// Loads the probe and attaches every hook that this kernel allows. Fails only when
    /// nothing can load (no privileges, no BPF) or no hook at all attaches.
    pub fn start(opts: &CaptureOptions) -> Result<Capture, CaptureError> {
        if PROBE_OBJECT.is_empty() {
            return Err(CaptureError::NothingAttached(hooks::unattached(NO_PROBE)));
        }
        raise_memlock();
        // Before anything looks for tracepoints (aya looks once per process).
        let _ = tracefs::ensure();
        // Devices already held are declared at this instant: before any record the probe
        // can produce, so before any event of theirs.
        let attached_at = monotonic_ns();
        let mut loader = EbpfLoader::new();
        let ring = opts.ring_bytes.map_or(DEFAULT_RING_BYTES, ring_size);
        loader.map_max_entries(names::MAP_EVENTS, ring);
        // Wake a waiting reader per batch, not per record (readers drain on a timer too).
        let wake_bytes = u64::from(ring / WAKE_FRACTION);
        loader.override_global(names::GLOBAL_WAKE_BYTES, &wake_bytes, true);
        let fork_offset = hooks::fork_child_pid_offset();
        let fork_global = fork_offset.map_or(0u32, |o| o as u32);
        loader.override_global(names::GLOBAL_FORK_CHILD_PID_OFFSET, &fork_global, true);
        let bin_ns = opts.irq_detail.bin_ns();
        loader.override_global(names::GLOBAL_IRQ_BIN_NS, &bin_ns, true);
        let mut ebpf = loader.load(PROBE_OBJECT).map_err(CaptureError::Load)?;
        let hooks::Attachment {
            hooks,
            retprobes,
            path: hooks_path,
        } = hooks::attach_all(&mut ebpf, fork_offset, opts.hooks).map_err(CaptureError::Direct)?;
        if !hooks.iter().any(|h| h.attached()) {
            return Err(CaptureError::NothingAttached(hooks));
        }
        let sources = hooks::sources(&hooks, hooks::mdev_devices_present());

        let filter = opts.pids.as_deref().map(PidFilter::new);
        let irq_tp = hooks
            .iter()
            .any(|h| h.name == hooks::HOOK_IRQ && h.attached());
        let mut attrib = attrib::Attributor::new(filter, irq_tp);
        // fds opened before we started (the probe is attached, so nothing opened from now on
        // is missed): of every recorded process, children of `--pid` included.
        let recorded: Vec<u32> = procfs::processes(&procfs::Roots::host())
            .into_iter()
            .filter(|&p| attrib.accepts_pid(p))
            .collect();
        attrib.attach(attached_at, &procfs::scan(Some(&recorded)));
        let fds = take_map(&mut ebpf, names::MAP_VFIO_FDS)?;
        let mut fds: BpfHashMap<MapData, u64, u32> =
            BpfHashMap::try_from(fds).map_err(|source| CaptureError::Map {
                name: names::MAP_VFIO_FDS,
                source,
            })?;
        watch_fds(&mut fds, attrib.take_learned());

        let diagnostics = Arc::new(Mutex::new(Vec::new()));
        // Without the log map (a probe built without log statements) there is nothing to read.
        let logger =
            aya_log::EbpfLogger::init_with_logger(&mut ebpf, Diagnostics(Arc::clone(&diagnostics)))
                .ok();
        let ring = take_map(&mut ebpf, names::MAP_EVENTS)?;
        let ring = RingBuf::try_from(ring).map_err(|source| CaptureError::Map {
            name: names::MAP_EVENTS,
            source,
        })?;
        let lost = take_map(&mut ebpf, names::MAP_LOST)?;
        let lost = PerCpuArray::try_from(lost).map_err(|source| CaptureError::Map {
            name: names::MAP_LOST,
            source,
        })?;
        let dev_keys = take_map(&mut ebpf, names::MAP_DEV_BDF)?;
        let dev_keys = BpfHashMap::try_from(dev_keys).map_err(|source| CaptureError::Map {
            name: names::MAP_DEV_BDF,
            source,
        })?;
        let bins = take_map(&mut ebpf, names::MAP_IRQ_BINS)?;
        let bins = BpfHashMap::try_from(bins).map_err(|source| CaptureError::Map {
            name: names::MAP_IRQ_BINS,
            source,
        })?;
        Ok(Capture {
            ebpf: Some(ebpf),
            retprobes,
            hooks_path,
            ring,
            lost,
            fds,
            dev_keys,
            keyed: HashSet::new(),
            bins,
            last_purge: 0,
            watermark: 0,
            lost_seen: 0,
            decode_errors: 0,
            hooks,
            sources,
            attrib,
            logger,
            diagnostics,
        })
    }

    /// The trace header's `sources`: the probe's evidence sources, `ok` or
    /// `unavailable: <why>`.
    pub fn sources(&self) -> BTreeMap<String, String> {
        self.sources.clone()
    }

    /// Every hook, attached (and how) or why not.
    pub fn hooks(&self) -> &[HookStatus] {
        &self.hooks
    }

    /// The trace header's `hooks`: `direct` or `tracepoint` (`trace::hooks_path`), with
    /// what was left to tracepoints or why.
    pub fn hooks_path(&self) -> &str {
        &self.hooks_path
    }

    /// Names an fd capture could not see being opened (e.g. the controller's device fds
    /// opened before `start`): `fd` of `pid` is `dev` in migration context `ctx`, with its
    /// migration flags when known. Affects events not yet returned by `drain`.
    pub fn declare_fd(
        &mut self,
        pid: u32,
        fd: i32,
        dev: &str,
        ctx: &str,
        flags: Option<crate::model::MigFlags>,
    ) {
        self.attrib.declare_fd(pid, fd, dev, ctx, flags);
        self.key_devices();
    }

    /// Names a migration data fd capture did not see being returned by a SET (a VMM's data_fd
    /// opened before `start`): `fd` of `pid` carries `dev`'s migration data. Its reads and
    /// writes (`data`) and VFIO_MIG_GET_PRECOPY_INFO calls (`precopy_info`) are traced from
    /// now on.
    pub fn declare_data_fd(&mut self, pid: u32, fd: i32, dev: &str) {
        self.attrib.declare_data_fd(pid, fd, dev);
        // A full map only loses read/write tracking for that fd.
        let _ = self.fds.insert(
            probe_common::abi::fd_key(pid, fd),
            probe_common::abi::fd_kind::DATA,
            0,
        );
    }

    /// Events recorded so far, in time order (non-blocking). The newest
    /// [`HOLD_BACK_NS`](crate::session::merge::HOLD_BACK_NS) are held back until a later call
    /// so records from different CPUs can be ordered.
    pub fn drain(&mut self) -> Result<Vec<Event>, CaptureError> {
        let upto = monotonic_ns().saturating_sub(crate::session::merge::HOLD_BACK_NS);
        Ok(self.drain_upto(upto)?.0)
    }

    /// The events recorded at or before `upto`, in time order (non-blocking), and the
    /// watermark: no later call returns an event before it (`upto`, or less while the states
    /// read at attach wait for the records before them).
    pub fn drain_upto(&mut self, upto: u64) -> Result<(Vec<Event>, u64), CaptureError> {
        self.read_ring()?;
        let evs = self.attrib.release(Some(upto));
        let mark = match self.attrib.settling_until() {
            Some(settled) if upto < settled => self.watermark,
            _ => upto,
        };
        self.watermark = self.watermark.max(mark);
        Ok((evs, self.watermark))
    }

    /// Detaches the probe and returns every remaining event, including `lost` accounting.
    pub fn stop(mut self) -> Result<Vec<Event>, CaptureError> {
        // Detach first, so nothing can be recorded after the last read of the ring and the
        // loss counters.
        self.retprobes.clear();
        drop(self.ebpf.take());
        self.read_ring()?;
        // Bins still open (their device kept binning to the end) are flushed here, stamped
        // now: nothing the probe counted is left behind.
        let now = monotonic_ns();
        let open: Vec<IrqBin> = self
            .bins
            .iter()
            .filter_map(Result::ok)
            .map(|(_, b)| b)
            .filter(|b| b.n > 0)
            .collect();
        for mut b in open {
            b.hdr.ts_ns = now.max(b.t1);
            self.attrib.push(&records::Record::IrqBin(b));
        }
        Ok(self.attrib.release(None))
    }

    fn read_ring(&mut self) -> Result<(), CaptureError> {
        while let Some(item) = self.ring.next() {
            match records::parse(&item) {
                Ok(rec) => self.attrib.push(&rec),
                Err(_) => self.decode_errors += 1,
            }
        }
        let now = monotonic_ns();
        let lost_total: u64 = self
            .lost
            .get(&0, 0)
            .map_err(|source| CaptureError::Map {
                name: names::MAP_LOST,
                source,
            })?
            .iter()
            .sum();
        if lost_total > self.lost_seen {
            let n = lost_total - self.lost_seen;
            self.lost_seen = lost_total;
            self.attrib.push_event(lost_event(now, n, LOST_RING));
        }
        if self.decode_errors > 0 {
            let n = std::mem::take(&mut self.decode_errors);
            self.attrib.push_event(lost_event(now, n, LOST_DECODE));
        }
        if let Some(l) = self.logger.as_mut() {
            l.flush();
        }
        let notes: Vec<String> = match self.diagnostics.lock() {
            Ok(mut v) => std::mem::take(&mut *v),
            Err(_) => Vec::new(),
        };
        for label in notes {
            self.attrib.push_event(Event {
                t: now,
                pid: None,
                kind: EventKind::Mark {
                    label: format!("probe {label}"),
                },
            });
        }
        watch_fds(&mut self.fds, self.attrib.take_learned());
        self.key_devices();
        if now.saturating_sub(self.last_purge) >= PURGE_NS {
            self.last_purge = now;
            for (pid, fd) in self.attrib.purge_dead(procfs::alive) {
                // Already gone when the process closed it itself: nothing to do.
                let _ = self.fds.remove(&probe_common::abi::fd_key(pid, fd));
            }
        }
        Ok(())
    }
}

impl Capture {
    /// Gives the probe the device of every device fd capture knows (resolved from /proc or
    /// sysfs, or declared), so SETs on them switch that device's interrupts to exact. The
    /// probe's own entries (from VFIO_GROUP_GET_DEVICE_FD) are left as they are.
    fn key_devices(&mut self) {
        let live: HashSet<(u32, i32)> = self.attrib.device_fds().map(|(p, f, _)| (p, f)).collect();
        self.keyed.retain(|k| live.contains(k));
        let new: Vec<(u32, i32, BdfKey)> = self
            .attrib
            .device_fds()
            .filter(|(p, f, _)| !self.keyed.contains(&(*p, *f)))
            .map(|(p, f, d)| (p, f, BdfKey::of(d.as_bytes())))
            .collect();
        for (pid, fd, key) in new {
            // BPF_NOEXIST: the probe's own entry, if any, stands. A full map only leaves the
            // fd's device exact-or-blind (never binned wrongly).
            let _ = self
                .dev_keys
                .insert(probe_common::abi::fd_key(pid, fd), key, 1);
            self.keyed.insert((pid, fd));
        }
    }
}

/// The ring buffer's fd: readable when records are waiting (for tokio's `AsyncFd`).
impl AsRawFd for Capture {
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}

/// Tells the probe about fds learned from /proc, so that their `close` is reported (a full
/// map only loses close tracking for those fds).
fn watch_fds(map: &mut BpfHashMap<MapData, u64, u32>, fds: Vec<(u32, i32, u32)>) {
    for (pid, fd, kind) in fds {
        let _ = map.insert(probe_common::abi::fd_key(pid, fd), kind, 0);
    }
}

fn lost_event(t: u64, n: u64, src: &str) -> Event {
    Event {
        t,
        pid: None,
        kind: EventKind::Lost {
            n,
            source: src.to_owned(),
            dev: None,
        },
    }
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, CaptureError> {
    ebpf.take_map(name).ok_or(CaptureError::MissingMap(name))
}

/// A ring buffer size the kernel accepts: a power of two, at least one page.
fn ring_size(bytes: u32) -> u32 {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u32;
    bytes
        .max(page)
        .checked_next_power_of_two()
        .unwrap_or(1 << 31)
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; raising it is harmless after.
fn raise_memlock() {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid rlimit; failure only means the default limit stays.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) };
}

pub use crate::clock::monotonic_ns;

/// The running kernel's release (`uname -r`), for trace headers and `doctor`.
pub fn kernel_release() -> Option<String> {
    // SAFETY: utsname is plain data; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: u is a valid, writable utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return None;
    }
    // SAFETY: uname NUL-terminates release within the array.
    let c = unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) };
    Some(c.to_string_lossy().into_owned())
}

/// Names of the evidence sources the probe itself can provide.
pub const PROBE_SOURCES: [&str; 5] = [
    source::TRANSITIONS,
    source::IRQ,
    source::IOMMU_MAP,
    source::IOMMU_FAULT,
    source::MDEV_DMA,
];

// The controller may run capture on its own thread.
const _: () = {
    const fn send<T: Send>() {}
    send::<Capture>();
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_sizes_are_kernel_acceptable() {
        assert_eq!(ring_size(1), 4096);
        assert_eq!(ring_size(5000), 8192);
        assert_eq!(ring_size(1 << 20), 1 << 20);
    }

    #[test]
    fn the_probe_object_is_embedded() {
        assert!(PROBE_OBJECT.starts_with(b"\x7fELF"));
    }
}
