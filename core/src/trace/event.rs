//! The in-memory form of a trace: one [`Header`] and a stream of [`Event`]s, mirroring
//! `TRACE-FORMAT.md` version 1 field for field.

use std::collections::BTreeMap;

use crate::model::{MigFlags, MigState, PrecopyInfo};

/// Format version this code reads and writes.
pub const TRACE_VERSION: u32 = 1;

/// Evidence source names of the header's `sources` map.
pub mod source {
    pub const TRANSITIONS: &str = "transitions";
    pub const IRQ: &str = "irq";
    pub const IOMMU_MAP: &str = "iommu_map";
    pub const IOMMU_FAULT: &str = "iommu_fault";
    pub const WITNESS: &str = "witness";
    pub const DIRTY_LOG: &str = "dirty_log";
    pub const IOMMU_DIRTY: &str = "iommu_dirty";
    pub const MDEV_DMA: &str = "mdev_dma";
    /// Sources that can see DMA itself (interrupts alone cannot prove its absence).
    pub const DMA_WITNESSES: [&str; 4] = [WITNESS, DIRTY_LOG, IOMMU_DIRTY, MDEV_DMA];
    pub const ALL: [&str; 8] = [
        TRANSITIONS,
        IRQ,
        IOMMU_MAP,
        IOMMU_FAULT,
        WITNESS,
        DIRTY_LOG,
        IOMMU_DIRTY,
        MDEV_DMA,
    ];

    /// Whether source `name` can see device `dev` at all (TRACE-FORMAT.md, per-device
    /// coverage): `mdev_dma` (`vfio_dma_rw` / `vfio_pin_pages`, called on a mediated device's
    /// behalf) sees only mediated devices, named by a UUID; every other source may see any device.
    pub fn reaches(name: &str, dev: &str) -> bool {
        name != MDEV_DMA || super::is_mdev_uuid(dev)
    }
}

/// How the recorder saw VFIO's syscalls: the first word of the header's `hooks`.
pub mod hooks_path {
    /// Kprobes on the VFIO file operations themselves (ioctl handlers, the migration data
    /// files' read/write): no syscall tracepoint attached, so unrelated syscalls pay nothing.
    pub const DIRECT: &str = "direct";
    /// The syscall tracepoints (ioctl, openat, close, read, write), filtered in the probe.
    pub const TRACEPOINT: &str = "tracepoint";
}

/// Whether `dev` names a mediated device: a UUID (`8-4-4-4-12` hex digits), as the kernel names
/// them under `/sys/bus/mdev/devices/`. A PCI address never is one.
pub fn is_mdev_uuid(dev: &str) -> bool {
    let b = dev.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Line 1 of a trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    /// What `t` counts; `monotonic_ns`.
    pub clock: String,
    pub kernel: Option<String>,
    pub tool: Option<String>,
    /// Evidence source -> `"ok"` or `"unavailable: <why>"`.
    pub sources: BTreeMap<String, String>,
    /// How the recorder hooked VFIO's syscalls: [`hooks_path`] `direct` or `tracepoint`,
    /// optionally followed by ` (<what was left to tracepoints, or why>)`. `None`: not said
    /// (traces of older recorders, traces not recorded by the probe).
    pub hooks: Option<String>,
}

impl Default for Header {
    fn default() -> Self {
        Header {
            version: TRACE_VERSION,
            clock: "monotonic_ns".to_owned(),
            kernel: None,
            tool: Some(concat!("migscope ", env!("CARGO_PKG_VERSION")).to_owned()),
            sources: BTreeMap::new(),
            hooks: None,
        }
    }
}

impl Header {
    /// Whether the recorder had `source` working.
    pub fn source_ok(&self, source: &str) -> bool {
        self.sources.get(source).is_some_and(|v| v == "ok")
    }
}

/// One event line.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Nanoseconds on the header's clock.
    pub t: u64,
    /// The process that caused it, where known.
    pub pid: Option<u32>,
    pub kind: EventKind,
}

/// Where a `dma` event's evidence came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DmaSource {
    Witness,
    DirtyLog,
    IommuDirty,
    MdevDma,
    Fault,
}

impl DmaSource {
    pub const ALL: [DmaSource; 5] = [
        DmaSource::Witness,
        DmaSource::DirtyLog,
        DmaSource::IommuDirty,
        DmaSource::MdevDma,
        DmaSource::Fault,
    ];
    pub const fn name(self) -> &'static str {
        match self {
            DmaSource::Witness => "witness",
            DmaSource::DirtyLog => "dirty_log",
            DmaSource::IommuDirty => "iommu_dirty",
            DmaSource::MdevDma => "mdev_dma",
            DmaSource::Fault => "fault",
        }
    }
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.name() == s)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IrqKind {
    Msi,
    Msix,
    Intx,
}

impl IrqKind {
    pub const ALL: [IrqKind; 3] = [IrqKind::Msi, IrqKind::Msix, IrqKind::Intx];
    pub const fn name(self) -> &'static str {
        match self {
            IrqKind::Msi => "msi",
            IrqKind::Msix => "msix",
            IrqKind::Intx => "intx",
        }
    }
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.name() == s)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataDir {
    Save,
    Load,
}

impl DataDir {
    pub const fn name(self) -> &'static str {
        match self {
            DataDir::Save => "save",
            DataDir::Load => "load",
        }
    }
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "save" => Some(DataDir::Save),
            "load" => Some(DataDir::Load),
            _ => None,
        }
    }
}

/// How `drive --plan resume-fuzz` spoiled a stream it loads in RESUMING (`corrupt_load`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Corruption {
    /// The first half of a stream the device saved.
    Truncated,
    /// A saved stream with one bit flipped in its middle byte.
    BitFlip,
    /// A saved stream with more bytes appended than any stream of the device holds.
    Oversized,
    /// Nothing written at all.
    Empty,
}

impl Corruption {
    pub const ALL: [Corruption; 4] = [
        Corruption::Truncated,
        Corruption::BitFlip,
        Corruption::Oversized,
        Corruption::Empty,
    ];
    pub const fn name(self) -> &'static str {
        match self {
            Corruption::Truncated => "truncated",
            Corruption::BitFlip => "bitflip",
            Corruption::Oversized => "oversized",
            Corruption::Empty => "empty",
        }
    }
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.name() == s)
    }
}

/// When a `regs` reading was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegStage {
    /// When the device's state was saved (stopped, STOP_COPY's data produced).
    Saved,
    /// After RESUMING was left with success: the state the device was restored to.
    Restored,
}

impl RegStage {
    pub const ALL: [RegStage; 2] = [RegStage::Saved, RegStage::Restored];
    pub const fn name(self) -> &'static str {
        match self {
            RegStage::Saved => "saved",
            RegStage::Restored => "restored",
        }
    }
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.name() == s)
    }
}

/// The `ev` of an event with its fields. Kinds after `end` (the extension kinds) are written
/// as native extension records (`native`): readers that predate them skip them with a
/// warning, in both formats.
#[derive(Clone, Debug, PartialEq)]
pub enum EventKind {
    /// Declares a device; devices sharing `ctx` are one migration context.
    Device {
        dev: String,
        flags: MigFlags,
        ctx: String,
        /// Initial state (default RUNNING).
        state: MigState,
        driver: Option<String>,
        /// This device's own evidence sources, overriding the header's for it alone
        /// (TRACE-FORMAT.md: coverage is per device). Empty: the header's apply.
        sources: BTreeMap<String, String>,
    },
    /// A MIG_DEVICE_STATE SET request began.
    Set {
        dev: String,
        to: MigState,
    },
    /// The driver executed one FSM arc.
    Step {
        dev: String,
        from: MigState,
        to: MigState,
    },
    /// The SET returned; with `ret == 0` the device is in `to` from now on.
    SetDone {
        dev: String,
        to: MigState,
        ret: i32,
        data_fd: Option<i32>,
    },
    /// A MIG_DEVICE_STATE GET returned `state`.
    Get {
        dev: String,
        state: MigState,
    },
    /// VFIO_DEVICE_RESET returned.
    Reset {
        dev: String,
        ret: i32,
    },
    /// Evidence the device accessed memory.
    Dma {
        dev: String,
        src: DmaSource,
        iova: u64,
        len: u64,
        write: bool,
        /// The access happened somewhere in `(t0, t1]`; `None`: exactly at `t`.
        window: Option<(u64, u64)>,
        p2p: Option<bool>,
    },
    /// The device raised an interrupt.
    Irq {
        dev: String,
        kind: IrqKind,
        vector: u32,
    },
    Map {
        ctx: String,
        iova: u64,
        len: u64,
    },
    Unmap {
        ctx: String,
        iova: u64,
        len: u64,
    },
    /// Migration data moved through the data_fd.
    Data {
        dev: String,
        dir: DataDir,
        bytes: u64,
        /// Which file the bytes moved through and the device's reset generations, when the
        /// recorder knows them (`data_fd`, `fd_gen`, `reset_gen`).
        file: Option<DataFile>,
    },
    /// `n` events were dropped.
    Lost {
        n: u64,
        source: String,
        /// The device whose events were lost, when the loss is known to concern one device
        /// (e.g. FSM steps the probe missed); `None`: any device.
        dev: Option<String>,
    },
    /// A user annotation.
    Mark {
        label: String,
    },
    /// The recorder closed the trace cleanly.
    End,
    /// VFIO_MIG_GET_PRECOPY_INFO on the device's data_fd returned (the VMM asked; migscope
    /// never asks itself): what the driver reported, or the negative errno.
    PrecopyInfo {
        dev: String,
        result: Result<PrecopyInfo, i32>,
    },
    /// A VFIO_DEVICE_FEATURE_MIG_DATA_SIZE GET returned: the driver's estimate of the bytes
    /// STOP_COPY will save (`stop_copy_length`), or the negative errno.
    DataSize {
        dev: String,
        result: Result<u64, i32>,
    },
    /// `drive --plan resume-fuzz` wrote a deliberately corrupted stream of `bytes` bytes into
    /// the device's RESUMING data_fd (`empty`: nothing); `ret` is the write's result (0: every
    /// byte accepted, else the negative errno). A correct driver refuses it: a failed write,
    /// or a failed SET out of RESUMING.
    CorruptLoad {
        dev: String,
        corruption: Corruption,
        bytes: u64,
        ret: i32,
    },
    /// Device registers the controller read itself (BAR `bar`, offset -> value), when the
    /// device's state was saved or once it was restored: what the device shows, not what its
    /// driver says it restored.
    Regs {
        dev: String,
        stage: RegStage,
        bar: u32,
        regs: BTreeMap<u64, u64>,
    },
    /// A VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2 SET returned (the VMM asked): with `ret` 0 the
    /// caller opted in, so the driver clears `precopy_info`'s flags word and may report
    /// `VFIO_PRECOPY_INFO_REINIT` in it from then on.
    PrecopyInfoV2 {
        dev: String,
        ret: i32,
    },
    /// A VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT over `[iova, iova + len)` at `page_size`
    /// returned 0: the device's log of that range was read and cleared. It covers the window
    /// `(t0, t1]`: from when the previous report of the range (or DMA_LOGGING_START) was
    /// issued to when this one returned. `dirty_pages` pages were dirty, each run of them a
    /// `dma` event with `src: dirty_log` and the same window; a report with none proves the
    /// device wrote nothing in the range over the whole window.
    DirtyReport {
        dev: String,
        iova: u64,
        len: u64,
        page_size: u64,
        window: (u64, u64),
        dirty_pages: u64,
    },
    /// `n` interrupts of one vector of the device, counted in the kernel instead of emitted one
    /// by one (`record --irq-detail quiesce`, while the device may DMA and no SET is open): the
    /// first at `window.0`, the last at `window.1`, the rest somewhere between. The event's `t`
    /// is the window's end.
    IrqBin {
        dev: String,
        kind: IrqKind,
        vector: u32,
        n: u64,
        window: (u64, u64),
    },
}

/// The migration file a `data` event's bytes moved through.
///
/// A file is named by its fd number and by the device's *reset generation* when the SET that
/// returned it completed; the generation counts the successful VFIO_DEVICE_RESETs of the device
/// the recorder saw (from 0 when it started). Together they survive the reuse of an fd number,
/// and a file whose `gen` is older than the device's `reset_gen` was created before the device's
/// last reset: a driver that clears its migration files on reset (pds_vfio_pci "Always clear the
/// save/restore FDs on reset") refuses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DataFile {
    /// The data_fd's number in the process that moved the bytes (`data_fd`).
    pub fd: i32,
    /// The device's reset generation when the SET that returned this fd completed (`fd_gen`).
    pub fd_gen: u64,
    /// The device's reset generation when the bytes moved (`reset_gen`).
    pub reset_gen: u64,
}

/// Every `ev` value, indexed by [`EventKind::code`] (a small number for columnar storage and
/// filters, e.g. the TUI's event store; not a file format: the native format has its own kinds).
pub const EV_NAMES: [&str; 21] = [
    "device",
    "set",
    "step",
    "set_done",
    "get",
    "reset",
    "dma",
    "irq",
    "map",
    "unmap",
    "data",
    "lost",
    "mark",
    "end",
    "precopy_info",
    "data_size",
    "precopy_info_v2",
    "corrupt_load",
    "regs",
    "dirty_report",
    "irq_bin",
];

impl EventKind {
    /// The `ev` string.
    pub const fn ev(&self) -> &'static str {
        EV_NAMES[self.code() as usize]
    }

    /// The kind's index in [`EV_NAMES`].
    pub const fn code(&self) -> u8 {
        match self {
            EventKind::Device { .. } => 0,
            EventKind::Set { .. } => 1,
            EventKind::Step { .. } => 2,
            EventKind::SetDone { .. } => 3,
            EventKind::Get { .. } => 4,
            EventKind::Reset { .. } => 5,
            EventKind::Dma { .. } => 6,
            EventKind::Irq { .. } => 7,
            EventKind::Map { .. } => 8,
            EventKind::Unmap { .. } => 9,
            EventKind::Data { .. } => 10,
            EventKind::Lost { .. } => 11,
            EventKind::Mark { .. } => 12,
            EventKind::End => 13,
            EventKind::PrecopyInfo { .. } => 14,
            EventKind::DataSize { .. } => 15,
            EventKind::PrecopyInfoV2 { .. } => 16,
            EventKind::CorruptLoad { .. } => 17,
            EventKind::Regs { .. } => 18,
            EventKind::DirtyReport { .. } => 19,
            EventKind::IrqBin { .. } => 20,
        }
    }

    /// The code of an `ev` name.
    pub fn code_of(ev: &str) -> Option<u8> {
        EV_NAMES.iter().position(|n| *n == ev).map(|i| i as u8)
    }

    /// The device this event is about, if it is about one.
    pub fn dev(&self) -> Option<&str> {
        match self {
            EventKind::Device { dev, .. }
            | EventKind::Set { dev, .. }
            | EventKind::Step { dev, .. }
            | EventKind::SetDone { dev, .. }
            | EventKind::Get { dev, .. }
            | EventKind::Reset { dev, .. }
            | EventKind::Dma { dev, .. }
            | EventKind::Irq { dev, .. }
            | EventKind::Data { dev, .. }
            | EventKind::PrecopyInfo { dev, .. }
            | EventKind::DataSize { dev, .. }
            | EventKind::PrecopyInfoV2 { dev, .. }
            | EventKind::CorruptLoad { dev, .. }
            | EventKind::Regs { dev, .. }
            | EventKind::DirtyReport { dev, .. }
            | EventKind::IrqBin { dev, .. } => Some(dev),
            EventKind::Map { .. }
            | EventKind::Unmap { .. }
            | EventKind::Lost { .. }
            | EventKind::Mark { .. }
            | EventKind::End => None,
        }
    }
}

/// A device or context name as a reader holds it: the text, and the reader's interned id for
/// it when the reader has one (a native trace's string table id), so that a consumer can index
/// by the id instead of hashing the text. Ids are unique within one reader only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Name<'a> {
    pub text: &'a str,
    pub id: Option<u32>,
}

impl<'a> Name<'a> {
    /// A name with no interned id.
    pub const fn text(text: &'a str) -> Self {
        Name { text, id: None }
    }
}

/// An event borrowed from where it was read: the kinds a trace is mostly made of as borrowed
/// fields (names from the reader, nothing allocated), every other kind as the [`EventKind`] it
/// is. [`EventKind::as_ref`] gives the view of an owned event, so a consumer handles each kind
/// in one place; `Owned` never holds a kind that has a borrowed variant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KindRef<'a> {
    Set {
        dev: Name<'a>,
        to: MigState,
    },
    Step {
        dev: Name<'a>,
        from: MigState,
        to: MigState,
    },
    SetDone {
        dev: Name<'a>,
        to: MigState,
        ret: i32,
        data_fd: Option<i32>,
    },
    Get {
        dev: Name<'a>,
        state: MigState,
    },
    Reset {
        dev: Name<'a>,
        ret: i32,
    },
    Dma {
        dev: Name<'a>,
        src: DmaSource,
        iova: u64,
        len: u64,
        write: bool,
        window: Option<(u64, u64)>,
        p2p: Option<bool>,
    },
    Irq {
        dev: Name<'a>,
        kind: IrqKind,
        vector: u32,
    },
    Map {
        ctx: Name<'a>,
        iova: u64,
        len: u64,
    },
    Unmap {
        ctx: Name<'a>,
        iova: u64,
        len: u64,
    },
    Data {
        dev: Name<'a>,
        dir: DataDir,
        bytes: u64,
        file: Option<DataFile>,
    },
    End,
    /// Declarations, losses, marks and the replies of the extension kinds.
    Owned(&'a EventKind),
}

/// An [`Event`] borrowed from where it was read (see [`KindRef`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EventRef<'a> {
    pub t: u64,
    pub pid: Option<u32>,
    pub kind: KindRef<'a>,
}

impl EventKind {
    /// The borrowed view of this event.
    pub fn as_ref(&self) -> KindRef<'_> {
        fn n(s: &str) -> Name<'_> {
            Name::text(s)
        }
        match self {
            EventKind::Set { dev, to } => KindRef::Set {
                dev: n(dev),
                to: *to,
            },
            EventKind::Step { dev, from, to } => KindRef::Step {
                dev: n(dev),
                from: *from,
                to: *to,
            },
            EventKind::SetDone {
                dev,
                to,
                ret,
                data_fd,
            } => KindRef::SetDone {
                dev: n(dev),
                to: *to,
                ret: *ret,
                data_fd: *data_fd,
            },
            EventKind::Get { dev, state } => KindRef::Get {
                dev: n(dev),
                state: *state,
            },
            EventKind::Reset { dev, ret } => KindRef::Reset {
                dev: n(dev),
                ret: *ret,
            },
            EventKind::Dma {
                dev,
                src,
                iova,
                len,
                write,
                window,
                p2p,
            } => KindRef::Dma {
                dev: n(dev),
                src: *src,
                iova: *iova,
                len: *len,
                write: *write,
                window: *window,
                p2p: *p2p,
            },
            EventKind::Irq { dev, kind, vector } => KindRef::Irq {
                dev: n(dev),
                kind: *kind,
                vector: *vector,
            },
            EventKind::Map { ctx, iova, len } => KindRef::Map {
                ctx: n(ctx),
                iova: *iova,
                len: *len,
            },
            EventKind::Unmap { ctx, iova, len } => KindRef::Unmap {
                ctx: n(ctx),
                iova: *iova,
                len: *len,
            },
            EventKind::Data {
                dev,
                dir,
                bytes,
                file,
            } => KindRef::Data {
                dev: n(dev),
                dir: *dir,
                bytes: *bytes,
                file: *file,
            },
            EventKind::End => KindRef::End,
            EventKind::Device { .. }
            | EventKind::Lost { .. }
            | EventKind::Mark { .. }
            | EventKind::PrecopyInfo { .. }
            | EventKind::DataSize { .. }
            | EventKind::PrecopyInfoV2 { .. }
            | EventKind::CorruptLoad { .. }
            | EventKind::Regs { .. }
            | EventKind::DirtyReport { .. }
            | EventKind::IrqBin { .. } => KindRef::Owned(self),
        }
    }
}

impl KindRef<'_> {
    /// The owned event, its names copied into buffers taken from `spare` where it has them (a
    /// reader's recycled strings).
    pub fn to_owned_with(&self, spare: &mut Vec<String>) -> EventKind {
        let mut s = |n: &Name<'_>| match spare.pop() {
            Some(mut b) => {
                b.clear();
                b.push_str(n.text);
                b
            }
            None => n.text.to_owned(),
        };
        match *self {
            KindRef::Set { dev, to } => EventKind::Set { dev: s(&dev), to },
            KindRef::Step { dev, from, to } => EventKind::Step {
                dev: s(&dev),
                from,
                to,
            },
            KindRef::SetDone {
                dev,
                to,
                ret,
                data_fd,
            } => EventKind::SetDone {
                dev: s(&dev),
                to,
                ret,
                data_fd,
            },
            KindRef::Get { dev, state } => EventKind::Get {
                dev: s(&dev),
                state,
            },
            KindRef::Reset { dev, ret } => EventKind::Reset { dev: s(&dev), ret },
            KindRef::Dma {
                dev,
                src,
                iova,
                len,
                write,
                window,
                p2p,
            } => EventKind::Dma {
                dev: s(&dev),
                src,
                iova,
                len,
                write,
                window,
                p2p,
            },
            KindRef::Irq { dev, kind, vector } => EventKind::Irq {
                dev: s(&dev),
                kind,
                vector,
            },
            KindRef::Map { ctx, iova, len } => EventKind::Map {
                ctx: s(&ctx),
                iova,
                len,
            },
            KindRef::Unmap { ctx, iova, len } => EventKind::Unmap {
                ctx: s(&ctx),
                iova,
                len,
            },
            KindRef::Data {
                dev,
                dir,
                bytes,
                file,
            } => EventKind::Data {
                dev: s(&dev),
                dir,
                bytes,
                file,
            },
            KindRef::End => EventKind::End,
            KindRef::Owned(k) => k.clone(),
        }
    }
}
