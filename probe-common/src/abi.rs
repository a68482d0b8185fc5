//! The probe-to-userspace event ABI: ring buffer records, their kinds, and the names of
//! programs, maps and attach points. Every record starts with [`EventHeader`]; kinds are never
//! reused; no `bool`, no implicit padding, sizes asserted.

/// VFIO's ioctl type byte (`VFIO_TYPE`, `';'`) and base (`VFIO_BASE`): VFIO ioctls are
/// `_IO(VFIO_TYPE, VFIO_BASE + n)`, so the command number carries no size or direction bits.
pub const VFIO_TYPE: u32 = 0x3B;
pub const VFIO_BASE: u32 = 100;
/// The range of command numbers the ioctl tracepoint keeps (`_IO(';', 100)` ..= `_IO(';', 127)`).
pub const VFIO_IOCTL_FIRST: u32 = 0x3B64;
pub const VFIO_IOCTL_LAST: u32 = 0x3B7F;

/// Command numbers from `include/uapi/linux/vfio.h`. Several numbers are shared between
/// container and device fds: the fd kind tells them apart.
pub mod ioctl {
    pub const GET_API_VERSION: u32 = 0x3B64;
    pub const CHECK_EXTENSION: u32 = 0x3B65;
    pub const SET_IOMMU: u32 = 0x3B66;
    pub const GROUP_GET_STATUS: u32 = 0x3B67;
    pub const GROUP_SET_CONTAINER: u32 = 0x3B68;
    pub const GROUP_UNSET_CONTAINER: u32 = 0x3B69;
    pub const GROUP_GET_DEVICE_FD: u32 = 0x3B6A;
    pub const DEVICE_GET_INFO: u32 = 0x3B6B;
    pub const DEVICE_GET_REGION_INFO: u32 = 0x3B6C;
    pub const DEVICE_GET_IRQ_INFO: u32 = 0x3B6D;
    pub const DEVICE_SET_IRQS: u32 = 0x3B6E;
    pub const DEVICE_RESET: u32 = 0x3B6F;
    /// Container fd: VFIO_IOMMU_GET_INFO; device fd: VFIO_DEVICE_GET_PCI_HOT_RESET_INFO.
    pub const IOMMU_GET_INFO: u32 = 0x3B70;
    /// Container fd: VFIO_IOMMU_MAP_DMA; device fd: VFIO_DEVICE_PCI_HOT_RESET.
    pub const IOMMU_MAP_DMA: u32 = 0x3B71;
    /// Container fd: VFIO_IOMMU_UNMAP_DMA; device fd: VFIO_DEVICE_QUERY_GFX_PLANE.
    pub const IOMMU_UNMAP_DMA: u32 = 0x3B72;
    /// Device fd: VFIO_DEVICE_FEATURE; container fd: VFIO_IOMMU_DIRTY_PAGES.
    pub const DEVICE_FEATURE: u32 = 0x3B75;
    pub const DEVICE_BIND_IOMMUFD: u32 = 0x3B76;
    pub const DEVICE_ATTACH_IOMMUFD_PT: u32 = 0x3B77;
    pub const MIG_GET_PRECOPY_INFO: u32 = 0x3B79;
}

/// `VFIO_DEVICE_FEATURE_*` numbers (low 16 bits of `vfio_device_feature.flags`).
pub mod feature {
    pub const MASK: u32 = 0xffff;
    pub const GET: u32 = 1 << 16;
    pub const SET: u32 = 1 << 17;
    pub const PROBE: u32 = 1 << 18;
    pub const MIGRATION: u32 = 1;
    pub const MIG_DEVICE_STATE: u32 = 2;
    pub const DMA_LOGGING_START: u32 = 6;
    pub const DMA_LOGGING_STOP: u32 = 7;
    pub const DMA_LOGGING_REPORT: u32 = 8;
}

/// Record kinds. Explicit numbers, never reused.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// `syscalls:sys_enter_ioctl` with a VFIO command number: [`IoctlEnter`].
    IoctlEnter = 1,
}

impl EventKind {
    pub const fn from_u32(v: u32) -> Option<EventKind> {
        match v {
            1 => Some(EventKind::IoctlEnter),
            _ => None,
        }
    }
}

/// Common header of every ring buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// An [`EventKind`] number.
    pub kind: u32,
    /// Size of the whole record in bytes, header included.
    pub size: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// Thread group id (the userspace pid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
}
const _: () = assert!(core::mem::size_of::<EventHeader>() == 24);

/// A VFIO ioctl entered (`syscalls:sys_enter_ioctl`, `cmd` in the VFIO range).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoctlEnter {
    pub hdr: EventHeader,
    pub fd: u32,
    pub cmd: u32,
    pub arg: u64,
}
const _: () = assert!(core::mem::size_of::<IoctlEnter>() == 40);

/// Program, map and attach-point names: the probe object and the loader use these, never
/// repeated strings.
pub mod names {
    /// Ring buffer all records go through.
    pub const MAP_EVENTS: &str = "EVENTS";
    pub const PROG_SYS_ENTER_IOCTL: &str = "sys_enter_ioctl";
    pub const TP_SYSCALLS: &str = "syscalls";
    pub const TP_SYS_ENTER_IOCTL: &str = "sys_enter_ioctl";
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain-old-data records: repr(C), integer fields only, no padding (sizes asserted).
    unsafe impl aya::Pod for super::EventHeader {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::IoctlEnter {}
}
