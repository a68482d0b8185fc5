//! The view's own input vocabulary: events, device declarations, findings and verdicts, as
//! plain data the caller converts its trace into (the view never depends on the tracer).

/// The migration model's own state and flag types (probe-common: no_std, no aya): the view
/// shares them rather than restating the uAPI numbers.
pub use probe_common::mig::{MigFlags as Flags, MigState as State, PrecopyInfo};

/// Where DMA evidence came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DmaSrc {
    Witness = 0,
    DirtyLog = 1,
    IommuDirty = 2,
    MdevDma = 3,
    Fault = 4,
}

impl DmaSrc {
    pub const ALL: [DmaSrc; 5] = [
        DmaSrc::Witness,
        DmaSrc::DirtyLog,
        DmaSrc::IommuDirty,
        DmaSrc::MdevDma,
        DmaSrc::Fault,
    ];
    pub const fn name(self) -> &'static str {
        match self {
            DmaSrc::Witness => "witness",
            DmaSrc::DirtyLog => "dirty_log",
            DmaSrc::IommuDirty => "iommu_dirty",
            DmaSrc::MdevDma => "mdev_dma",
            DmaSrc::Fault => "fault",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IrqKind {
    Msi = 0,
    Msix = 1,
    Intx = 2,
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataDir {
    Save = 0,
    Load = 1,
}

impl DataDir {
    pub const fn name(self) -> &'static str {
        match self {
            DataDir::Save => "save",
            DataDir::Load => "load",
        }
    }
}

/// One event of a trace, in the view's terms. Lossless with respect to the trace format, so
/// the view can hand back exactly what it holds (export).
#[derive(Clone, Debug, PartialEq)]
pub struct TimelineEvent {
    /// Nanoseconds on the trace clock.
    pub t: u64,
    /// 1-based line in the source trace, 0 when none.
    pub line: u64,
    pub pid: Option<u32>,
    pub kind: EvKind,
}

/// The event's type and fields.
#[derive(Clone, Debug, PartialEq)]
pub enum EvKind {
    Device(DeviceDecl),
    Set {
        dev: String,
        to: State,
    },
    Step {
        dev: String,
        from: State,
        to: State,
    },
    SetDone {
        dev: String,
        to: State,
        ret: i32,
        data_fd: Option<i32>,
    },
    Get {
        dev: String,
        state: State,
    },
    Reset {
        dev: String,
        ret: i32,
    },
    Dma {
        dev: String,
        src: DmaSrc,
        iova: u64,
        len: u64,
        write: bool,
        window: Option<(u64, u64)>,
        p2p: Option<bool>,
    },
    Irq {
        dev: String,
        kind: IrqKind,
        vector: u32,
    },
    /// `n` interrupts counted in the kernel, the first at `window.0`, the last at `window.1`.
    IrqBin {
        dev: String,
        kind: IrqKind,
        vector: u32,
        n: u64,
        window: (u64, u64),
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
    Data {
        dev: String,
        dir: DataDir,
        bytes: u64,
        /// The file the bytes moved through, when the trace names it.
        file: Option<DataFile>,
    },
    Lost {
        n: u64,
        source: String,
        dev: Option<String>,
    },
    Mark {
        label: String,
    },
    End,
    /// VFIO_MIG_GET_PRECOPY_INFO's reply, or its negative errno.
    PrecopyInfo {
        dev: String,
        result: Result<PrecopyInfo, i32>,
    },
    /// VFIO_DEVICE_FEATURE_MIG_DATA_SIZE's estimate of the STOP_COPY bytes, or its errno.
    DataSize {
        dev: String,
        result: Result<u64, i32>,
    },
    /// drive's resume-fuzz wrote a corrupted stream (`corruption` names how) of `bytes` bytes
    /// in RESUMING; `ret` 0 when every byte was taken, else the negative errno.
    CorruptLoad {
        dev: String,
        corruption: String,
        bytes: u64,
        ret: i32,
    },
    /// Registers drive read through BAR `bar` (`stage`: saved or restored): offset, value.
    Regs {
        dev: String,
        stage: String,
        bar: u32,
        regs: Vec<(u64, u64)>,
    },
    /// A VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2 SET (the VMM opted in to REINIT): its return.
    PrecopyInfoV2 {
        dev: String,
        ret: i32,
    },
}

/// A `data` event's migration file: its fd number, the device's reset generation when the SET
/// that returned it completed, and the device's reset generation when the bytes moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DataFile {
    pub fd: i32,
    pub fd_gen: u64,
    pub reset_gen: u64,
}

/// A device declaration (`ev: device`).
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceDecl {
    pub dev: String,
    pub ctx: String,
    pub flags: Flags,
    pub state: State,
    pub driver: Option<String>,
    /// The device's own evidence sources (override the header's for it).
    pub sources: std::collections::BTreeMap<String, String>,
}

/// The event types, as a small number (used for filtering and columnar storage).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ev {
    Device = 0,
    Set = 1,
    Step = 2,
    SetDone = 3,
    Get = 4,
    Reset = 5,
    Dma = 6,
    Irq = 7,
    Map = 8,
    Unmap = 9,
    Data = 10,
    Lost = 11,
    Mark = 12,
    End = 13,
    PrecopyInfo = 14,
    DataSize = 15,
    PrecopyInfoV2 = 16,
    CorruptLoad = 17,
    Regs = 18,
    IrqBin = 19,
}

impl Ev {
    pub const ALL: [Ev; 20] = [
        Ev::Device,
        Ev::Set,
        Ev::Step,
        Ev::SetDone,
        Ev::Get,
        Ev::Reset,
        Ev::Dma,
        Ev::Irq,
        Ev::Map,
        Ev::Unmap,
        Ev::Data,
        Ev::Lost,
        Ev::Mark,
        Ev::End,
        Ev::PrecopyInfo,
        Ev::DataSize,
        Ev::PrecopyInfoV2,
        Ev::CorruptLoad,
        Ev::Regs,
        Ev::IrqBin,
    ];
    pub const fn name(self) -> &'static str {
        match self {
            Ev::Device => "device",
            Ev::Set => "set",
            Ev::Step => "step",
            Ev::SetDone => "set_done",
            Ev::Get => "get",
            Ev::Reset => "reset",
            Ev::Dma => "dma",
            Ev::Irq => "irq",
            Ev::Map => "map",
            Ev::Unmap => "unmap",
            Ev::Data => "data",
            Ev::Lost => "lost",
            Ev::Mark => "mark",
            Ev::End => "end",
            Ev::PrecopyInfo => "precopy_info",
            Ev::DataSize => "data_size",
            Ev::PrecopyInfoV2 => "precopy_info_v2",
            Ev::CorruptLoad => "corrupt_load",
            Ev::Regs => "regs",
            Ev::IrqBin => "irq_bin",
        }
    }
    pub fn from_name(s: &str) -> Option<Ev> {
        Ev::ALL.into_iter().find(|e| e.name() == s)
    }
    pub const fn from_u8(v: u8) -> Option<Ev> {
        if (v as usize) < Ev::ALL.len() {
            Some(Ev::ALL[v as usize])
        } else {
            None
        }
    }
}

impl EvKind {
    pub const fn ev(&self) -> Ev {
        match self {
            EvKind::Device(_) => Ev::Device,
            EvKind::Set { .. } => Ev::Set,
            EvKind::Step { .. } => Ev::Step,
            EvKind::SetDone { .. } => Ev::SetDone,
            EvKind::Get { .. } => Ev::Get,
            EvKind::Reset { .. } => Ev::Reset,
            EvKind::Dma { .. } => Ev::Dma,
            EvKind::Irq { .. } => Ev::Irq,
            EvKind::Map { .. } => Ev::Map,
            EvKind::Unmap { .. } => Ev::Unmap,
            EvKind::Data { .. } => Ev::Data,
            EvKind::Lost { .. } => Ev::Lost,
            EvKind::Mark { .. } => Ev::Mark,
            EvKind::End => Ev::End,
            EvKind::PrecopyInfo { .. } => Ev::PrecopyInfo,
            EvKind::DataSize { .. } => Ev::DataSize,
            EvKind::PrecopyInfoV2 { .. } => Ev::PrecopyInfoV2,
            EvKind::CorruptLoad { .. } => Ev::CorruptLoad,
            EvKind::Regs { .. } => Ev::Regs,
            EvKind::IrqBin { .. } => Ev::IrqBin,
        }
    }

    /// The device the event is about.
    pub fn dev(&self) -> Option<&str> {
        match self {
            EvKind::Device(d) => Some(&d.dev),
            EvKind::Set { dev, .. }
            | EvKind::Step { dev, .. }
            | EvKind::SetDone { dev, .. }
            | EvKind::Get { dev, .. }
            | EvKind::Reset { dev, .. }
            | EvKind::Dma { dev, .. }
            | EvKind::Irq { dev, .. }
            | EvKind::IrqBin { dev, .. }
            | EvKind::Data { dev, .. }
            | EvKind::PrecopyInfo { dev, .. }
            | EvKind::DataSize { dev, .. }
            | EvKind::PrecopyInfoV2 { dev, .. }
            | EvKind::CorruptLoad { dev, .. }
            | EvKind::Regs { dev, .. } => Some(dev),
            EvKind::Map { .. }
            | EvKind::Unmap { .. }
            | EvKind::Lost { .. }
            | EvKind::Mark { .. }
            | EvKind::End => None,
        }
    }
}

/// One rule finding (a violation, or a warning when `warning`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub rule: String,
    pub dev: Option<String>,
    pub t: u64,
    /// 1-based line of the offending event, 0 when none.
    pub line: u64,
    pub detail: String,
    /// What the rule means, in one line (the verifier's own explanation).
    pub explain: String,
    pub warning: bool,
}

/// The verdict as known so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Live or still loading: no final verdict yet.
    Pending,
    Pass,
    Fail,
    Inconclusive,
}

impl Verdict {
    pub const fn name(self) -> &'static str {
        match self {
            Verdict::Pending => "pending",
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Inconclusive => "INCONCLUSIVE",
        }
    }
}

/// Where the trace came from and what the recorder could see.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceInfo {
    /// A file name or `live`.
    pub name: String,
    pub kernel: Option<String>,
    pub tool: Option<String>,
    /// Evidence source -> `ok` or `unavailable: why`.
    pub sources: Vec<(String, String)>,
    pub live: bool,
}

/// A verdict update: the final word of the verifier (or an interim one while live).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerdictUpdate {
    pub verdict: Verdict,
    pub blind_spots: Vec<String>,
    /// The verdict of the events so far while the source goes on (live): it may still change
    /// (except `Fail`, which stays).
    pub interim: bool,
}
