//! The probe-to-userspace event ABI: ring buffer records, their kinds, and the names of
//! programs, maps and attach points. Every record starts with [`EventHeader`]; kinds are never
//! reused; no `bool`, no implicit padding, sizes asserted.

/// VFIO's ioctl type byte (`VFIO_TYPE`, `';'`) and base (`VFIO_BASE`): VFIO ioctls are
/// `_IO(VFIO_TYPE, VFIO_BASE + n)`, so the command number carries no size or direction bits.
pub const VFIO_TYPE: u32 = 0x3B;
pub const VFIO_BASE: u32 = 100;
/// The range of command numbers the ioctl tracepoints keep: VFIO (`_IO(';', 100)` ..=
/// `_IO(';', 127)`) and iommufd (`_IO(';', 0x80)` ..= `_IO(';', 0x9F)`), so IOMMU map activity
/// inside an iommufd ioctl is attributed too.
pub const VFIO_IOCTL_FIRST: u32 = 0x3B64;
pub const VFIO_IOCTL_LAST: u32 = 0x3B9F;

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
    /// Device fd: VFIO_DEVICE_GET_PCI_HOT_RESET_INFO (the number of VFIO_IOMMU_GET_INFO).
    pub const DEVICE_GET_PCI_HOT_RESET_INFO: u32 = IOMMU_GET_INFO;
    /// Container fd: VFIO_IOMMU_MAP_DMA; device fd: VFIO_DEVICE_PCI_HOT_RESET.
    pub const IOMMU_MAP_DMA: u32 = 0x3B71;
    /// Container fd: VFIO_IOMMU_UNMAP_DMA; device fd: VFIO_DEVICE_QUERY_GFX_PLANE.
    pub const IOMMU_UNMAP_DMA: u32 = 0x3B72;
    /// Device fd: VFIO_DEVICE_FEATURE; container fd: VFIO_IOMMU_DIRTY_PAGES.
    pub const DEVICE_FEATURE: u32 = 0x3B75;
    /// Container fd: `VFIO_IOMMU_DIRTY_PAGES` (`_IO(VFIO_TYPE, VFIO_BASE + 17)`, the number of
    /// VFIO_DEVICE_FEATURE on a device fd).
    pub const IOMMU_DIRTY_PAGES: u32 = DEVICE_FEATURE;
    pub const DEVICE_BIND_IOMMUFD: u32 = 0x3B76;
    pub const DEVICE_ATTACH_IOMMUFD_PT: u32 = 0x3B77;
    /// Data fd: VFIO_MIG_GET_PRECOPY_INFO (`VFIO_BASE + 21`; on a SPAPR container the same
    /// number is VFIO_EEH_PE_OP: the fd kind tells).
    pub const MIG_GET_PRECOPY_INFO: u32 = 0x3B79;
}

/// iommufd: command numbers (`_IO(IOMMUFD_TYPE, IOMMUFD_CMD_*)`, `IOMMUFD_TYPE` = ';', the
/// `enum` of `IOMMUFD_CMD_*` starting at 0x80) and the argument structs migscope decodes, from
/// `include/uapi/linux/iommufd.h` (vfio-bindings has no iommufd).
pub mod iommufd {
    pub const IOAS_ALLOC: u32 = 0x3B81;
    pub const IOAS_MAP: u32 = 0x3B85;
    pub const IOAS_UNMAP: u32 = 0x3B86;
    pub const HWPT_SET_DIRTY_TRACKING: u32 = 0x3B8B;
    pub const HWPT_GET_DIRTY_BITMAP: u32 = 0x3B8C;
    /// `IOMMU_HWPT_DIRTY_TRACKING_ENABLE` (`enum iommufd_hwpt_set_dirty_tracking_flags`).
    pub const DIRTY_TRACKING_ENABLE: u32 = 1;
    /// `IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR` (`enum iommufd_hwpt_get_dirty_bitmap_flags`).
    pub const GET_DIRTY_BITMAP_NO_CLEAR: u32 = 1;

    /// `struct iommu_hwpt_set_dirty_tracking`.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct HwptSetDirtyTracking {
        pub size: u32,
        pub flags: u32,
        pub hwpt_id: u32,
        pub reserved: u32,
    }
    const _: () = assert!(core::mem::size_of::<HwptSetDirtyTracking>() == 16);

    /// `struct iommu_hwpt_get_dirty_bitmap`.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct HwptGetDirtyBitmap {
        pub size: u32,
        pub hwpt_id: u32,
        pub flags: u32,
        pub reserved: u32,
        pub iova: u64,
        pub length: u64,
        pub page_size: u64,
        /// User pointer to the bitmap.
        pub data: u64,
    }
    const _: () = assert!(core::mem::size_of::<HwptGetDirtyBitmap>() == 48);
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

/// Byte offsets inside the ioctl argument structs the probe and the attributor read, from
/// `include/uapi/linux/vfio.h` (the probe cannot use vfio-bindings; `migscope`'s tests hold
/// every one to vfio-bindings' layout).
pub mod uapi {
    /// `struct vfio_device_feature { argsz, flags, data[] }`: `flags`.
    pub const FEATURE_FLAGS: usize = 4;
    /// Where a feature's data starts (`sizeof(struct vfio_device_feature)`).
    pub const FEATURE_DATA: usize = 8;
    /// `struct vfio_device_feature_migration { flags }` (a u64) after the feature header.
    pub const MIGRATION_FLAGS: usize = FEATURE_DATA;
    /// `struct vfio_device_feature_mig_state { device_state, data_fd }` after the header.
    pub const MIG_STATE_DEVICE_STATE: usize = FEATURE_DATA;
    pub const MIG_STATE_DATA_FD: usize = FEATURE_DATA + 4;
    /// `struct vfio_irq_set { argsz, flags, index, start, count, data[] }`.
    pub const IRQ_SET_FLAGS: usize = 4;
    pub const IRQ_SET_INDEX: usize = 8;
    pub const IRQ_SET_START: usize = 12;
    pub const IRQ_SET_COUNT: usize = 16;
    /// `struct vfio_iommu_type1_dma_map { argsz, flags, vaddr, iova, size }`.
    pub const DMA_MAP_IOVA: usize = 16;
    pub const DMA_MAP_SIZE: usize = 24;
    /// `sizeof(struct vfio_iommu_type1_dma_map)`: tells MAP_DMA from PCI_HOT_RESET on an fd
    /// of unknown kind (both are 0x3B71).
    pub const DMA_MAP_ARGSZ: u32 = 32;
    /// `struct vfio_iommu_type1_dma_unmap { argsz, flags, iova, size, data[] }`.
    pub const DMA_UNMAP_IOVA: usize = 8;
    pub const DMA_UNMAP_SIZE: usize = 16;
    /// `struct vfio_iommu_type1_dirty_bitmap { argsz, flags, data[] }`: `flags`.
    pub const DIRTY_BITMAP_FLAGS: usize = 4;
    /// `struct vfio_device_feature_dma_logging_report { iova, length, page_size, bitmap }`
    /// after the feature header.
    pub const LOG_REPORT_IOVA: usize = FEATURE_DATA;
    pub const LOG_REPORT_LENGTH: usize = FEATURE_DATA + 8;
    pub const LOG_REPORT_PAGE_SIZE: usize = FEATURE_DATA + 16;
    pub const LOG_REPORT_BITMAP: usize = FEATURE_DATA + 24;
}

/// What a tracked file descriptor is (the probe's `VFIO_FDS` map values and [`VfioOpen::fd_kind`]).
pub mod fd_kind {
    /// `/dev/vfio/vfio`: a type1 container.
    pub const CONTAINER: u32 = 1;
    /// `/dev/vfio/<group>`.
    pub const GROUP: u32 = 2;
    /// `/dev/vfio/devices/vfioN`: a device cdev.
    pub const CDEV: u32 = 3;
    /// A device fd returned by VFIO_GROUP_GET_DEVICE_FD.
    pub const DEVICE: u32 = 4;
    /// `/dev/iommu`.
    pub const IOMMUFD: u32 = 5;
    /// A migration data fd returned by a MIG_DEVICE_STATE SET.
    pub const DATA: u32 = 6;
}

/// The user registers of the task a direct (kprobe) hook runs in, x86_64
/// (`struct pt_regs`, arch/x86/include/asm/ptrace.h, as `bpf_task_pt_regs` returns them):
/// the VFIO file operations get a `struct file *`, not the fd number, and the syscall's own
/// arguments are where the syscall entry saved them.
pub mod user_regs {
    /// `di`: a syscall's first argument (the fd of ioctl, read, write, close, ...).
    pub const ARG0: usize = 14 * 8;
    /// `orig_ax`: the syscall number.
    pub const SYSCALL_NR: usize = 15 * 8;
    /// x86_64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl) whose first argument
    /// is the fd the hooked file operation runs for.
    pub const NR_READ: u64 = 0;
    pub const NR_WRITE: u64 = 1;
    pub const NR_CLOSE: u64 = 3;
    pub const NR_IOCTL: u64 = 16;
    pub const NR_PREAD64: u64 = 17;
    pub const NR_PWRITE64: u64 = 18;
    pub const NR_READV: u64 = 19;
    pub const NR_WRITEV: u64 = 20;
    pub const NR_PREADV: u64 = 295;
    pub const NR_PWRITEV: u64 = 296;
    pub const NR_PREADV2: u64 = 327;
    pub const NR_PWRITEV2: u64 = 328;
}

/// `-ENOIOCTLCMD` (include/linux/errno.h): a file operation's "not mine", which `vfs_ioctl`
/// turns into the `-ENOTTY` the syscall returns.
pub const ENOIOCTLCMD: i64 = 515;
pub const ENOTTY: i64 = 25;

/// Which hook produced a [`Step`] or [`MdevDma`] record.
pub mod hook {
    pub const FEXIT: u32 = 1;
    pub const KRETPROBE: u32 = 2;
    pub const FENTRY: u32 = 3;
    pub const KPROBE: u32 = 4;
}

/// Tracepoint field offsets, from the format files (`/sys/kernel/tracing/events/*/*/format`):
/// the probe reads at them, and userspace checks each against the running kernel's format
/// file before attaching (`capture::hooks`). The syscall tracepoints lay each argument out as
/// an 8-byte slot after `__syscall_nr`.
pub mod tp {
    pub const SYS_ARG0: usize = 16;
    pub const SYS_ARG1: usize = 24;
    pub const SYS_ARG2: usize = 32;
    pub const SYS_EXIT_RET: usize = 16;
    pub const IRQ_IRQ: usize = 8;
    pub const IRQ_NAME_LOC: usize = 12;
    pub const IOMMU_MAP_IOVA: usize = 8;
    pub const IOMMU_MAP_PADDR: usize = 16;
    pub const IOMMU_MAP_SIZE: usize = 24;
    pub const IOMMU_UNMAP_IOVA: usize = 8;
    pub const IOMMU_UNMAP_SIZE: usize = 16;
    pub const IOMMU_UNMAP_UNMAPPED: usize = 24;
    pub const IOMMU_FAULT_DEVICE_LOC: usize = 8;
    pub const IOMMU_FAULT_DRIVER_LOC: usize = 12;
    pub const IOMMU_FAULT_IOVA: usize = 16;
    pub const IOMMU_FAULT_FLAGS: usize = 24;
}

/// Bytes of an ioctl argument struct (or device name string) copied from user memory.
pub const PAYLOAD_LEN: usize = 48;
/// Bytes of an open path copied from user memory.
pub const PATH_LEN: usize = 64;
/// Bytes of an interrupt handler or device name copied from a tracepoint.
pub const NAME_LEN: usize = 32;

/// Record kinds. Explicit numbers, never reused.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Retired (the skeleton's enter-only record); the number stays reserved.
    IoctlEnter = 1,
    /// [`IoctlCall`].
    IoctlCall = 2,
    /// [`IoctlRet`].
    IoctlRet = 3,
    /// [`VfioOpen`].
    VfioOpen = 4,
    /// [`FdClose`].
    FdClose = 5,
    /// [`Step`].
    Step = 6,
    /// [`Irq`].
    Irq = 7,
    /// [`IommuMap`].
    IommuMap = 8,
    /// [`IommuUnmap`].
    IommuUnmap = 9,
    /// [`IommuFault`].
    IommuFault = 10,
    /// [`DataXfer`].
    DataXfer = 11,
    /// [`MdevDma`].
    MdevDma = 12,
    /// [`MsiHandler`].
    MsiHandler = 13,
    /// [`Fork`].
    Fork = 14,
    /// [`StepLost`].
    StepLost = 15,
    /// [`DirtyChunk`] (23: branch dirty-vmm's number, clear of the kinds other branches add).
    DirtyChunk = 23,
    /// [`IrqBin`].
    IrqBin = 16,
}

impl EventKind {
    pub const fn from_u32(v: u32) -> Option<EventKind> {
        Some(match v {
            1 => EventKind::IoctlEnter,
            2 => EventKind::IoctlCall,
            3 => EventKind::IoctlRet,
            4 => EventKind::VfioOpen,
            5 => EventKind::FdClose,
            6 => EventKind::Step,
            7 => EventKind::Irq,
            8 => EventKind::IommuMap,
            9 => EventKind::IommuUnmap,
            10 => EventKind::IommuFault,
            11 => EventKind::DataXfer,
            12 => EventKind::MdevDma,
            13 => EventKind::MsiHandler,
            14 => EventKind::Fork,
            15 => EventKind::StepLost,
            23 => EventKind::DirtyChunk,
            16 => EventKind::IrqBin,
            _ => return None,
        })
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

/// Retired kind 1: a VFIO ioctl entered (no payload). Kept so the number is never reused.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoctlEnter {
    pub hdr: EventHeader,
    pub fd: u32,
    pub cmd: u32,
    pub arg: u64,
}
const _: () = assert!(core::mem::size_of::<IoctlEnter>() == 40);

/// A VFIO/iommufd ioctl entered (`syscalls:sys_enter_ioctl`), with the first
/// `payload_len` bytes of its argument struct (for VFIO_GROUP_GET_DEVICE_FD: the device name
/// string, NUL terminated).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoctlCall {
    pub hdr: EventHeader,
    pub fd: i32,
    pub cmd: u32,
    pub arg: u64,
    pub payload_len: u32,
    pub _pad: u32,
    pub payload: [u8; PAYLOAD_LEN],
}
const _: () = assert!(core::mem::size_of::<IoctlCall>() == 96);

/// The matching ioctl returned (`syscalls:sys_exit_ioctl`, paired per thread), with the
/// argument struct re-read after the kernel wrote its results (`data_fd`, GET results).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoctlRet {
    pub hdr: EventHeader,
    pub fd: i32,
    pub cmd: u32,
    /// The syscall's return value (negative errno on failure).
    pub ret: i64,
    /// `hdr.ts_ns` of the matching [`IoctlCall`].
    pub enter_ns: u64,
    pub payload_len: u32,
    pub _pad: u32,
    pub payload: [u8; PAYLOAD_LEN],
}
const _: () = assert!(core::mem::size_of::<IoctlRet>() == 104);

/// An open of `/dev/vfio/...` or `/dev/iommu` succeeded (`sys_enter/exit_openat`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VfioOpen {
    pub hdr: EventHeader,
    /// The fd returned.
    pub fd: i32,
    /// An [`fd_kind`] value.
    pub fd_kind: u32,
    /// The path as passed, NUL terminated.
    pub path: [u8; PATH_LEN],
}
const _: () = assert!(core::mem::size_of::<VfioOpen>() == 96);

/// A tracked fd (see [`fd_kind`]) was closed (`sys_enter_close`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FdClose {
    pub hdr: EventHeader,
    pub fd: i32,
    pub fd_kind: u32,
}
const _: () = assert!(core::mem::size_of::<FdClose>() == 32);

/// One `vfio_mig_get_next_state(vdev, cur, new, &next)` call returned: one FSM arc.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Step {
    pub hdr: EventHeader,
    /// The `struct vfio_device *` (an opaque identity, never dereferenced).
    pub vdev: u64,
    pub cur: u32,
    pub new: u32,
    /// `*next` after the call; valid when `has_next` is 1.
    pub next: u32,
    pub ret: i32,
    /// A [`hook`] value.
    pub hook: u32,
    pub has_next: u32,
}
const _: () = assert!(core::mem::size_of::<Step>() == 56);

/// `irq:irq_handler_entry` for a handler whose name starts with `vfio-`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Irq {
    pub hdr: EventHeader,
    pub irq: i32,
    pub _pad: u32,
    /// e.g. `vfio-msix[3](0000:00:02.0)`, NUL terminated (truncated at [`NAME_LEN`]).
    pub name: [u8; NAME_LEN],
}
const _: () = assert!(core::mem::size_of::<Irq>() == 64);

/// `iommu:map` on a thread inside a VFIO/iommufd ioctl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IommuMap {
    pub hdr: EventHeader,
    pub iova: u64,
    pub paddr: u64,
    pub size: u64,
    /// The fd and command of the ioctl in flight on this thread.
    pub fd: i32,
    pub cmd: u32,
}
const _: () = assert!(core::mem::size_of::<IommuMap>() == 56);

/// `iommu:unmap` on a thread inside a VFIO/iommufd ioctl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IommuUnmap {
    pub hdr: EventHeader,
    pub iova: u64,
    pub size: u64,
    pub unmapped: u64,
    pub fd: i32,
    pub cmd: u32,
}
const _: () = assert!(core::mem::size_of::<IommuUnmap>() == 56);

/// `iommu:io_page_fault`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IommuFault {
    pub hdr: EventHeader,
    pub iova: u64,
    pub flags: i32,
    pub _pad: u32,
    /// The faulting device's name (a PCI address), NUL terminated.
    pub device: [u8; NAME_LEN],
    pub driver: [u8; NAME_LEN],
}
const _: () = assert!(core::mem::size_of::<IommuFault>() == 104);

/// `read`/`write` on a migration data fd returned.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataXfer {
    pub hdr: EventHeader,
    pub fd: i32,
    /// [`DATA_READ`] (a save) or [`DATA_WRITE`] (a load).
    pub dir: u32,
    /// Bytes moved, or a negative errno.
    pub ret: i64,
}
const _: () = assert!(core::mem::size_of::<DataXfer>() == 40);
pub const DATA_READ: u32 = 0;
pub const DATA_WRITE: u32 = 1;

/// A mediated-device access: `vfio_dma_rw(vdev, iova, data, len, write)` or
/// `vfio_pin_pages(vdev, iova, npage, prot, pages)` entered.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MdevDma {
    pub hdr: EventHeader,
    pub vdev: u64,
    pub iova: u64,
    /// Bytes (`vfio_dma_rw`) or pages (`vfio_pin_pages`, see `func`).
    pub len: u64,
    /// 1 for a write (`vfio_dma_rw` write, or `vfio_pin_pages` with IOMMU_WRITE in prot).
    pub write: u32,
    /// [`MDEV_DMA_RW`] or [`MDEV_PIN_PAGES`].
    pub func: u32,
}
const _: () = assert!(core::mem::size_of::<MdevDma>() == 56);
pub const MDEV_DMA_RW: u32 = 1;
pub const MDEV_PIN_PAGES: u32 = 2;

/// `vfio_msihandler(irq, arg)` entered.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsiHandler {
    pub hdr: EventHeader,
    pub irq: i32,
    pub hook: u32,
}
const _: () = assert!(core::mem::size_of::<MsiHandler>() == 32);

/// `sched:sched_process_fork`: the current task (`hdr.pid`) created `child_pid` (a process,
/// or a thread of the same process). Lets `--pid` follow children that exit quickly.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fork {
    pub hdr: EventHeader,
    pub child_pid: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<Fork>() == 32);

/// FSM steps (`vfio_mig_get_next_state` calls) the current thread made that the probe could
/// not record: a return half never seen (kretprobe maxactive exhausted: the entry saved for
/// it was never consumed), an entry half never seen (no saved arguments at the return), or
/// `*next` unreadable after a successful call. Emitted at the exit of the VFIO ioctl they
/// happened in, just before its [`IoctlRet`], so the loss is stamped before that SET's
/// `set_done`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepLost {
    pub hdr: EventHeader,
    /// The fd and command of the ioctl (the SET) the steps belonged to.
    pub fd: i32,
    pub cmd: u32,
    /// Steps lost.
    pub n: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<StepLost>() == 40);

/// Bytes of a DMA_LOGGING_REPORT's user bitmap one [`DirtyChunk`] carries (8192 pages).
pub const DIRTY_CHUNK: usize = 1024;
/// Chunks the probe reads of one REPORT's bitmap: 32 KiB, 262144 pages (1 GiB of IOVA at
/// 4 KiB pages). The rest of a larger bitmap is not read: userspace decodes the prefix it has
/// and names the remainder as not decoded, never as clean.
pub const DIRTY_MAX_CHUNKS: u32 = 32;

/// A piece of the user bitmap a successful `VFIO_DEVICE_FEATURE` `GET|DMA_LOGGING_REPORT`
/// returned (uapi `struct vfio_device_feature_dma_logging_report`: `iova`, `length`,
/// `page_size`, `bitmap`), read at the ioctl's exit, after the kernel wrote and cleared the
/// log. Emitted just before that ioctl's [`IoctlRet`] (whose payload has the report struct),
/// in bitmap order; the probe never issues a REPORT itself (that would steal the VMM's bits).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirtyChunk {
    pub hdr: EventHeader,
    /// The device fd of the REPORT.
    pub fd: i32,
    /// Valid bytes in `data`; 0 when the user bitmap could not be read at `offset`.
    pub len: u32,
    /// Byte offset of `data` in the user bitmap.
    pub offset: u64,
    /// `hdr.ts_ns` of the REPORT's [`IoctlCall`] (pairs the chunk with its [`IoctlRet`]).
    pub enter_ns: u64,
    pub data: [u8; DIRTY_CHUNK],
}
const _: () = assert!(core::mem::size_of::<DirtyChunk>() == 48 + DIRTY_CHUNK);

/// Interrupts of one handler counted in the kernel while its device could not be quiescing
/// (`record --irq-detail quiesce`): `n` hits of handler `name` (irq `irq`), the first at
/// `t0`, the last at `t1`; `hdr.ts_ns` is when the bin was flushed (its window ended, the
/// device's phase switched, or capture stopped). Also the value of the `IRQ_BINS` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrqBin {
    pub hdr: EventHeader,
    pub irq: i32,
    pub _pad: u32,
    pub n: u64,
    pub t0: u64,
    pub t1: u64,
    /// As [`Irq::name`].
    pub name: [u8; NAME_LEN],
}
const _: () = assert!(core::mem::size_of::<IrqBin>() == 88);

/// Bytes of a device's PCI address in the interrupt-phase keys (`0000:00:02.0` is 12; NUL
/// padded; a longer name is truncated, identically on both sides).
pub const BDF_LEN: usize = 16;

/// A device's key in the interrupt-phase maps: its name (the PCI address both the handler
/// name `vfio-msix[N](BDF)` and VFIO_GROUP_GET_DEVICE_FD's argument carry), NUL padded.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BdfKey {
    pub bdf: [u8; BDF_LEN],
}
const _: () = assert!(core::mem::size_of::<BdfKey>() == 16);

impl BdfKey {
    /// The key of device `name` (its first [`BDF_LEN`] bytes).
    pub fn of(name: &[u8]) -> BdfKey {
        let mut k = BdfKey::default();
        let n = name.len().min(BDF_LEN);
        k.bdf[..n].copy_from_slice(&name[..n]);
        k
    }

    /// The device key in an interrupt handler name `vfio-<kind>[N](BDF)` / `vfio-intx(BDF)`
    /// (NUL terminated in `name`): the bytes between the first `(` and the next `)`, cut as
    /// [`BdfKey::of`] cuts. `None` without a non-empty parenthesised name. The probe's parser
    /// (bounded loops the BPF verifier accepts).
    #[inline(always)]
    pub fn of_handler(name: &[u8; NAME_LEN]) -> Option<BdfKey> {
        let mut open = NAME_LEN;
        let mut i = 0;
        while i < NAME_LEN {
            if name[i] == 0 {
                return None;
            }
            if name[i] == b'(' {
                open = i;
                break;
            }
            i += 1;
        }
        let mut k = BdfKey::default();
        let mut j = 0;
        while j < NAME_LEN {
            let at = open + 1 + j;
            if at >= NAME_LEN {
                return None;
            }
            let c = name[at];
            if c == b')' {
                return if j == 0 { None } else { Some(k) };
            }
            if c == 0 {
                return None;
            }
            if j < BDF_LEN {
                k.bdf[j] = c;
            }
            j += 1;
        }
        None
    }
}

/// Per-device interrupt phase (`IRQ_PHASE` map value), kept by the probe from the device's
/// SETs and GETs: [`PHASE_BIN`] only while the last SET or GET seen left it in a
/// DMA-allowed state and no SET is open on it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IrqPhase {
    /// [`PHASE_EXACT`] or [`PHASE_BIN`].
    pub mode: u32,
    /// MIG_DEVICE_STATE SETs entered and not yet returned.
    pub open_sets: u32,
}
const _: () = assert!(core::mem::size_of::<IrqPhase>() == 8);
/// Every interrupt of the device is a record of its own.
pub const PHASE_EXACT: u32 = 0;
/// The device's interrupts are counted in bins.
pub const PHASE_BIN: u32 = 1;
/// Bins kept per device (`IRQ_BINS` slot = irq number modulo this); a handler meeting another
/// one's open bin in its slot flushes it first.
pub const IRQ_BIN_SLOTS: u32 = 8;

/// Key of the `IRQ_BINS` map: a device and a slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BinKey {
    pub dev: BdfKey,
    pub slot: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<BinKey>() == 24);

/// The bin width `--irq-detail quiesce` uses (`record`, `watch`, `drive`): 25 ms, so a device
/// storming while RUNNING adds ~0.8 KB/s to a native trace (40 bins of ~21 bytes a second;
/// 20 ms measured 987 and 1,038 B/s in the lab: BENCHMARKS.md, "Interrupt storms"). Bins only
/// exist while no SET is open on the device: the width costs the verdict no precision. The
/// command-line help states it (a test holds it to this).
pub const IRQ_BIN_NS_DEFAULT: u64 = 25_000_000;

/// Per-thread state between `sys_enter_ioctl` and `sys_exit_ioctl` (map value).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inflight {
    pub enter_ns: u64,
    pub arg: u64,
    pub fd: i32,
    pub cmd: u32,
}
const _: () = assert!(core::mem::size_of::<Inflight>() == 24);

/// Per-thread arguments saved by the `vfio_mig_get_next_state` kprobe for its kretprobe.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepArgs {
    pub vdev: u64,
    pub next_ptr: u64,
    pub cur: u32,
    pub new: u32,
    /// `enter_ns` of the recorded VFIO ioctl the call happened in (0: none), so a call left
    /// unconsumed is counted as lost only against the request it belonged to.
    pub ioctl_ns: u64,
}
const _: () = assert!(core::mem::size_of::<StepArgs>() == 32);

/// Key of the `VFIO_FDS` map: `(tgid << 32) | fd`.
#[inline(always)]
pub const fn fd_key(tgid: u32, fd: i32) -> u64 {
    ((tgid as u64) << 32) | (fd as u32 as u64)
}

/// Program, map and attach-point names: the probe object and the loader use these, never
/// repeated strings. Programs are named after what they attach to.
pub mod names {
    /// Ring buffer all records go through.
    pub const MAP_EVENTS: &str = "EVENTS";
    /// Per-CPU count of ring buffer reservations that failed.
    pub const MAP_LOST: &str = "LOST";
    /// tid -> [`super::Inflight`].
    pub const MAP_INFLIGHT: &str = "INFLIGHT";
    /// [`super::fd_key`] -> [`super::fd_kind`].
    pub const MAP_VFIO_FDS: &str = "VFIO_FDS";
    /// tid -> fd kind of a pending open.
    pub const MAP_OPENS: &str = "OPENS";
    /// tid -> (fd << 32 | dir) of a pending read/write on a data fd.
    pub const MAP_RW: &str = "RW";
    /// tid -> [`super::StepArgs`].
    pub const MAP_STEP_ARGS: &str = "STEP_ARGS";
    /// tid -> FSM steps missed on that thread since its last VFIO ioctl exit.
    pub const MAP_STEP_MISSED: &str = "STEP_MISSED";
    /// [`super::fd_key`] -> [`super::BdfKey`] of device fds (the interrupt phase's key).
    pub const MAP_DEV_BDF: &str = "DEV_BDF";
    /// [`super::BdfKey`] -> [`super::IrqPhase`].
    pub const MAP_IRQ_PHASE: &str = "IRQ_PHASE";
    /// [`super::BinKey`] -> [`super::IrqBin`] (open bins).
    pub const MAP_IRQ_BINS: &str = "IRQ_BINS";
    /// Index 0: MIG_DEVICE_STATE SETs seen on fds of no known device (from then on every
    /// interrupt is exact: a phase the probe cannot key is never binned).
    pub const MAP_IRQ_BLIND: &str = "IRQ_BLIND";
    /// irq numbers whose hits the `irq_handler_entry` tracepoint program saw (the
    /// `vfio_msihandler` hook leaves those to it).
    pub const MAP_IRQ_TP: &str = "IRQ_TP";

    pub const TP_SYSCALLS: &str = "syscalls";
    pub const TP_SYS_ENTER_IOCTL: &str = "sys_enter_ioctl";
    pub const TP_SYS_EXIT_IOCTL: &str = "sys_exit_ioctl";
    pub const TP_SYS_ENTER_OPENAT: &str = "sys_enter_openat";
    pub const TP_SYS_EXIT_OPENAT: &str = "sys_exit_openat";
    pub const TP_SYS_ENTER_OPEN: &str = "sys_enter_open";
    pub const TP_SYS_EXIT_OPEN: &str = "sys_exit_open";
    pub const TP_SYS_ENTER_CLOSE: &str = "sys_enter_close";
    pub const TP_SYS_ENTER_READ: &str = "sys_enter_read";
    pub const TP_SYS_EXIT_READ: &str = "sys_exit_read";
    pub const TP_SYS_ENTER_WRITE: &str = "sys_enter_write";
    pub const TP_SYS_EXIT_WRITE: &str = "sys_exit_write";
    pub const TP_IRQ: &str = "irq";
    pub const TP_IRQ_HANDLER_ENTRY: &str = "irq_handler_entry";
    pub const TP_IOMMU: &str = "iommu";
    pub const TP_IOMMU_MAP: &str = "map";
    pub const TP_IOMMU_UNMAP: &str = "unmap";
    pub const TP_IOMMU_FAULT: &str = "io_page_fault";
    pub const TP_SCHED: &str = "sched";
    pub const TP_SCHED_PROCESS_FORK: &str = "sched_process_fork";
    /// Global (set by the loader from the format file) holding the offset of
    /// `sched_process_fork`'s `child_pid`, which moved between kernels (6.1/6.12: 44; 6.18: 20).
    pub const GLOBAL_FORK_CHILD_PID_OFFSET: &str = "FORK_CHILD_PID_OFFSET";
    /// Global: ring buffer bytes waiting before the reader is woken (0: every record).
    pub const GLOBAL_WAKE_BYTES: &str = "WAKE_BYTES";
    /// Global: width of an interrupt bin in ns (0: every interrupt exact, `--irq-detail all`).
    pub const GLOBAL_IRQ_BIN_NS: &str = "IRQ_BIN_NS";

    // Tracepoint programs: one per tracepoint, named after it.
    pub const PROG_SYS_ENTER_IOCTL: &str = "sys_enter_ioctl";
    pub const PROG_SYS_EXIT_IOCTL: &str = "sys_exit_ioctl";
    pub const PROG_SYS_ENTER_OPENAT: &str = "sys_enter_openat";
    pub const PROG_SYS_EXIT_OPENAT: &str = "sys_exit_openat";
    pub const PROG_SYS_ENTER_OPEN: &str = "sys_enter_open";
    pub const PROG_SYS_EXIT_OPEN: &str = "sys_exit_open";
    pub const PROG_SYS_ENTER_CLOSE: &str = "sys_enter_close";
    pub const PROG_SYS_ENTER_READ: &str = "sys_enter_read";
    pub const PROG_SYS_EXIT_READ: &str = "sys_exit_read";
    pub const PROG_SYS_ENTER_WRITE: &str = "sys_enter_write";
    pub const PROG_SYS_EXIT_WRITE: &str = "sys_exit_write";
    pub const PROG_IRQ_HANDLER_ENTRY: &str = "irq_handler_entry";
    pub const PROG_IOMMU_MAP: &str = "iommu_map";
    pub const PROG_IOMMU_UNMAP: &str = "iommu_unmap";
    pub const PROG_IOMMU_FAULT: &str = "iommu_io_page_fault";
    pub const PROG_SCHED_PROCESS_FORK: &str = "sched_process_fork";

    // Kernel functions (the vfio modules) and their programs: fentry/fexit first, kprobes as
    // the fallback (aya 0.14 resolves fentry targets in vmlinux BTF only; 6.1 refuses the
    // pointer-to-enum argument in fexit).
    pub const FN_MIG_GET_NEXT_STATE: &str = "vfio_mig_get_next_state";
    pub const FN_MSIHANDLER: &str = "vfio_msihandler";
    pub const FN_DMA_RW: &str = "vfio_dma_rw";
    pub const FN_PIN_PAGES: &str = "vfio_pin_pages";
    pub const PROG_FEXIT_NEXT_STATE: &str = "fexit_mig_get_next_state";
    pub const PROG_KPROBE_NEXT_STATE: &str = "kprobe_mig_get_next_state";
    pub const PROG_KRETPROBE_NEXT_STATE: &str = "kretprobe_mig_get_next_state";
    /// The tracefs kprobe event group of the kretprobe on `vfio_mig_get_next_state`, created
    /// with an explicit maxactive: this prefix and the recorder's pid (`migscope_1234`).
    pub const KPROBE_GROUP_PREFIX: &str = "migscope_";
    pub const KPROBE_EVENT_NEXT_STATE_RET: &str = "next_state_ret";
    pub const KPROBE_EVENT_IOCTL_RET: &str = "ioctl_ret";
    pub const KPROBE_EVENT_DATA_RET: &str = "data_rw_ret";

    // Direct hooks (`record --hooks direct`): the VFIO file operations themselves, so no
    // syscall tracepoint is attached. One entry program per fd kind, one return program each
    // for ioctls and data transfers, one for releases.
    pub const FN_DEVICE_IOCTL: &str = "vfio_device_fops_unl_ioctl";
    pub const FN_GROUP_IOCTL: &str = "vfio_group_fops_unl_ioctl";
    pub const FN_CONTAINER_IOCTL: &str = "vfio_fops_unl_ioctl";
    pub const FN_IOMMUFD_IOCTL: &str = "iommufd_fops_ioctl";
    pub const FN_DEVICE_RELEASE: &str = "vfio_device_fops_release";
    pub const FN_GROUP_RELEASE: &str = "vfio_group_fops_release";
    pub const FN_CONTAINER_RELEASE: &str = "vfio_fops_release";
    pub const FN_IOMMUFD_RELEASE: &str = "iommufd_fops_release";
    /// The module whose dependents define the migration data files' `file_operations`.
    pub const MOD_VFIO_PCI_CORE: &str = "vfio_pci_core";
    pub const PROG_KPROBE_IOCTL_DEVICE: &str = "kprobe_ioctl_device";
    pub const PROG_KPROBE_IOCTL_GROUP: &str = "kprobe_ioctl_group";
    pub const PROG_KPROBE_IOCTL_CONTAINER: &str = "kprobe_ioctl_container";
    pub const PROG_KPROBE_IOCTL_IOMMUFD: &str = "kprobe_ioctl_iommufd";
    pub const PROG_KPROBE_IOCTL_DATA: &str = "kprobe_ioctl_data";
    pub const PROG_KRETPROBE_IOCTL: &str = "kretprobe_ioctl";
    pub const PROG_KPROBE_DATA_READ: &str = "kprobe_data_read";
    pub const PROG_KPROBE_DATA_WRITE: &str = "kprobe_data_write";
    pub const PROG_KRETPROBE_DATA_RW: &str = "kretprobe_data_rw";
    pub const PROG_KPROBE_RELEASE: &str = "kprobe_release";
    pub const PROG_FENTRY_MSIHANDLER: &str = "fentry_msihandler";
    pub const PROG_KPROBE_MSIHANDLER: &str = "kprobe_msihandler";
    pub const PROG_FENTRY_DMA_RW: &str = "fentry_dma_rw";
    pub const PROG_KPROBE_DMA_RW: &str = "kprobe_dma_rw";
    pub const PROG_FENTRY_PIN_PAGES: &str = "fentry_pin_pages";
    pub const PROG_KPROBE_PIN_PAGES: &str = "kprobe_pin_pages";
}

#[cfg(feature = "user")]
mod pod {
    /// `aya::Pod` for ring buffer and map records.
    macro_rules! pod {
        ($($t:ident),* $(,)?) => {$(
            // SAFETY: a plain-old-data record: repr(C), integer and byte-array fields only, no
            // padding (its size is asserted next to its definition), so any bytes are a value.
            unsafe impl aya::Pod for super::$t {}
        )*};
    }

    pod!(
        EventHeader,
        IoctlEnter,
        IoctlCall,
        IoctlRet,
        VfioOpen,
        FdClose,
        Step,
        Irq,
        IommuMap,
        IommuUnmap,
        IommuFault,
        DataXfer,
        MdevDma,
        MsiHandler,
        Fork,
        StepLost,
        DirtyChunk,
        IrqBin,
        BdfKey,
        IrqPhase,
        BinKey,
        Inflight,
        StepArgs,
    );
}
