//! Every raw VFIO ioctl, behind the [`VfioOps`] trait: thin typed wrappers over `OwnedFd`s for
//! the type1 container path (group -> container -> device fd), the cdev + iommufd path
//! (`/dev/vfio/devices/vfioN` bound to an IOAS, 6.6+), the v2 migration features, the data_fd,
//! device DMA logging, DMA maps, interrupts and BAR access.
//!
//! Structs come from `vfio-bindings` 0.7 (generated from `include/uapi/linux/vfio.h`); the
//! ioctl numbers are `_IO(VFIO_TYPE, VFIO_BASE + n)` macros bindgen cannot translate, so they
//! are written out here from the same header, as are the few iommufd structs
//! (`include/uapi/linux/iommufd.h`) the crate lacks.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use probe_common::abi::{ioctl, iommufd};
use vfio_bindings::bindings::vfio as uapi;

use super::buffer::DmaBuffer;
use crate::model::{MigFlags, MigState, PrecopyInfo};
use crate::trace::IrqKind;

/// A positive errno value.
pub type Errno = i32;

/// A request number of `probe_common::abi` (the one table the probe and userspace share) as
/// `ioctl(2)` takes it.
const fn req(n: u32) -> libc::c_ulong {
    n as libc::c_ulong
}

pub const VFIO_GET_API_VERSION: libc::c_ulong = req(ioctl::GET_API_VERSION);
pub const VFIO_CHECK_EXTENSION: libc::c_ulong = req(ioctl::CHECK_EXTENSION);
pub const VFIO_SET_IOMMU: libc::c_ulong = req(ioctl::SET_IOMMU);
pub const VFIO_GROUP_GET_STATUS: libc::c_ulong = req(ioctl::GROUP_GET_STATUS);
pub const VFIO_GROUP_SET_CONTAINER: libc::c_ulong = req(ioctl::GROUP_SET_CONTAINER);
pub const VFIO_GROUP_GET_DEVICE_FD: libc::c_ulong = req(ioctl::GROUP_GET_DEVICE_FD);
pub const VFIO_DEVICE_GET_REGION_INFO: libc::c_ulong = req(ioctl::DEVICE_GET_REGION_INFO);
pub const VFIO_DEVICE_GET_IRQ_INFO: libc::c_ulong = req(ioctl::DEVICE_GET_IRQ_INFO);
pub const VFIO_DEVICE_SET_IRQS: libc::c_ulong = req(ioctl::DEVICE_SET_IRQS);
pub const VFIO_DEVICE_RESET: libc::c_ulong = req(ioctl::DEVICE_RESET);
pub const VFIO_DEVICE_GET_PCI_HOT_RESET_INFO: libc::c_ulong =
    req(ioctl::DEVICE_GET_PCI_HOT_RESET_INFO);
pub const VFIO_IOMMU_MAP_DMA: libc::c_ulong = req(ioctl::IOMMU_MAP_DMA);
pub const VFIO_IOMMU_UNMAP_DMA: libc::c_ulong = req(ioctl::IOMMU_UNMAP_DMA);
pub const VFIO_DEVICE_BIND_IOMMUFD: libc::c_ulong = req(ioctl::DEVICE_BIND_IOMMUFD);
pub const VFIO_DEVICE_ATTACH_IOMMUFD_PT: libc::c_ulong = req(ioctl::DEVICE_ATTACH_IOMMUFD_PT);
/// 0x3B75, as DESIGN.md states.
pub const VFIO_DEVICE_FEATURE: libc::c_ulong = req(ioctl::DEVICE_FEATURE);
/// Issued on the data_fd, not the device fd (vfio.h, "VFIO_MIG_GET_PRECOPY_INFO").
pub const VFIO_MIG_GET_PRECOPY_INFO: libc::c_ulong = req(ioctl::MIG_GET_PRECOPY_INFO);
pub const IOMMU_IOAS_ALLOC: libc::c_ulong = req(iommufd::IOAS_ALLOC);
pub const IOMMU_IOAS_MAP: libc::c_ulong = req(iommufd::IOAS_MAP);
pub const IOMMU_IOAS_UNMAP: libc::c_ulong = req(iommufd::IOAS_UNMAP);
/// `enum iommufd_ioas_map_flags`.
const IOMMU_IOAS_MAP_FIXED_IOVA: u32 = 1;
const IOMMU_IOAS_MAP_WRITEABLE: u32 = 2;
const IOMMU_IOAS_MAP_READABLE: u32 = 4;

/// `struct iommu_ioas_alloc` (iommufd.h; not in vfio-bindings).
#[repr(C)]
#[derive(Default)]
struct IommuIoasAlloc {
    size: u32,
    flags: u32,
    out_ioas_id: u32,
}

/// `struct iommu_ioas_map`.
#[repr(C)]
#[derive(Default)]
struct IommuIoasMap {
    size: u32,
    flags: u32,
    ioas_id: u32,
    reserved: u32,
    user_va: u64,
    length: u64,
    iova: u64,
}

/// `struct iommu_ioas_unmap`.
#[repr(C)]
#[derive(Default)]
struct IommuIoasUnmap {
    size: u32,
    ioas_id: u32,
    iova: u64,
    length: u64,
}

/// `VFIO_API_VERSION`.
const VFIO_API_VERSION: i32 = 0;
/// PCI config space: command register and its bus-master bit (include/uapi/linux/pci_regs.h).
const PCI_COMMAND: u64 = 0x04;
const PCI_COMMAND_MASTER: u16 = 0x4;

/// Identifies a device opened through a [`VfioOps`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DevId(pub usize);

/// What opening a device by PCI address learned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    pub id: DevId,
    pub bdf: String,
    /// The migration context: devices sharing one container (`container0`, ...).
    pub ctx: String,
    /// The bound driver from sysfs (`edu-mig`, `vfio-pci`, ...).
    pub driver: Option<String>,
}

/// An interrupt wired to an eventfd by SET_IRQS.
pub struct IrqSetup {
    pub kind: IrqKind,
    pub eventfd: OwnedFd,
    /// For INTx, which VFIO masks on every interrupt: unmasks it again (SET_IRQS
    /// ACTION_UNMASK); call after consuming each interrupt.
    pub unmask: Option<Box<dyn Fn() + Send>>,
}

impl std::fmt::Debug for IrqSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IrqSetup")
            .field("kind", &self.kind)
            .field("eventfd", &self.eventfd)
            .field("unmask", &self.unmask.is_some())
            .finish()
    }
}

/// Re-enables a masked INTx line through a device fd.
struct Unmask(Arc<File>);

impl Unmask {
    fn run(&self) {
        let mut set = uapi::vfio_irq_set {
            argsz: size_of::<uapi::vfio_irq_set>() as u32,
            flags: uapi::VFIO_IRQ_SET_DATA_NONE | uapi::VFIO_IRQ_SET_ACTION_UNMASK,
            index: uapi::VFIO_PCI_INTX_IRQ_INDEX,
            start: 0,
            count: 1,
            data: Default::default(),
        };
        // SAFETY: SET_IRQS with DATA_NONE reads only the header.
        let _ = unsafe { ioctl_ptr(self.0.as_raw_fd(), VFIO_DEVICE_SET_IRQS, &mut set) };
    }
}

/// Register access to a device region, usable from a workload thread.
pub trait DeviceIo: Send {
    fn read32(&self, off: u64) -> Result<u32, Errno>;
    fn write32(&self, off: u64, v: u32) -> Result<(), Errno>;
    fn read64(&self, off: u64) -> Result<u64, Errno>;
    fn write64(&self, off: u64, v: u64) -> Result<(), Errno>;
}

/// Failures opening and setting up devices (per-request ioctl failures are plain errnos, because
/// the controller records them in the trace as `ret`).
#[derive(Debug, thiserror::Error)]
pub enum VfioError {
    #[error("failed to read the IOMMU group of {bdf} from {path}")]
    IommuGroup {
        bdf: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to open {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("VFIO API version {0} is not the supported version 0")]
    ApiVersion(i32),
    #[error("the container does not support the type1v2 IOMMU")]
    NoType1v2,
    #[error("IOMMU group {group} of {bdf} is not viable (bind every device of the group to vfio)")]
    GroupNotViable { bdf: String, group: String },
    #[error("failed to {op} for {what}")]
    Ioctl {
        op: &'static str,
        what: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "{bdf} has no migration support (VFIO_DEVICE_FEATURE_MIGRATION: {source}); bind a driver with migration ops"
    )]
    NoMigration {
        bdf: String,
        #[source]
        source: io::Error,
    },
    #[error("{bdf} has no usable interrupt (MSI, MSI-X, INTx all failed)")]
    NoIrq { bdf: String },
    #[error("{what} is not available on this device: {why}")]
    Unavailable { what: &'static str, why: String },
}

/// Everything the controller asks of VFIO. The real implementation is [`Vfio`]; tests use
/// [`super::sim::SimVfio`]. The controller's code path is the same for both.
pub trait VfioOps {
    /// Opens a device by PCI address, joining the shared container (one `ctx`).
    fn open(&mut self, bdf: &str) -> Result<Opened, VfioError>;
    /// VFIO_DEVICE_FEATURE_MIGRATION GET: the device's `VFIO_MIGRATION_*` flags.
    fn migration_flags(&mut self, dev: DevId) -> Result<MigFlags, VfioError>;
    /// MIG_DEVICE_STATE SET; returns the new data_fd number if one was created.
    fn set_state(&mut self, dev: DevId, to: MigState) -> Result<Option<i32>, Errno>;
    /// MIG_DEVICE_STATE GET.
    fn get_state(&mut self, dev: DevId) -> Result<MigState, Errno>;
    /// VFIO_DEVICE_RESET.
    fn reset(&mut self, dev: DevId) -> Result<(), Errno>;
    /// read() on the current data_fd; `Ok(0)` is end of stream, `Err(ENOMSG)` a temporary one.
    fn data_read(&mut self, dev: DevId, buf: &mut [u8]) -> Result<usize, Errno>;
    /// poll() for POLLIN on the current data_fd: `Ok(false)` when nothing arrived within
    /// `timeout_ms` (vfio.h: in PRE_COPY "userspace can wait for more data (which may never
    /// come) by using poll").
    fn data_poll(&mut self, dev: DevId, timeout_ms: i32) -> Result<bool, Errno>;
    /// write() on the current data_fd.
    fn data_write(&mut self, dev: DevId, buf: &[u8]) -> Result<usize, Errno>;
    /// VFIO_MIG_GET_PRECOPY_INFO on the current data_fd.
    fn precopy_info(&mut self, dev: DevId) -> Result<PrecopyInfo, Errno>;
    /// VFIO_DEVICE_FEATURE_MIG_DATA_SIZE GET: the driver's estimate of the bytes a STOP_COPY
    /// save still has to move (QEMU asks before and during the stop-copy phase).
    fn data_size(&mut self, dev: DevId) -> Result<u64, Errno>;
    /// Closes the data_fd (after the device left the data states).
    fn data_close(&mut self, dev: DevId);
    /// VFIO_IOMMU_MAP_DMA of `buf` at `iova` in the device's container.
    fn map_dma(&mut self, dev: DevId, buf: &Arc<DmaBuffer>, iova: u64) -> Result<(), Errno>;
    /// VFIO_IOMMU_UNMAP_DMA.
    fn unmap_dma(&mut self, dev: DevId, iova: u64, len: u64) -> Result<(), Errno>;
    /// SET_IRQS: vector 0 of MSI, else MSI-X, else INTx, to a new eventfd.
    fn enable_irq(&mut self, dev: DevId) -> Result<IrqSetup, VfioError>;
    /// SET_IRQS with no eventfd (DATA_NONE, count 0) for the enabled index.
    fn disable_irq(&mut self, dev: DevId, kind: IrqKind) -> Result<(), Errno>;
    /// Sets the PCI bus-master bit (a device cannot DMA without it).
    fn enable_bus_master(&mut self, dev: DevId) -> Result<(), Errno>;
    /// BAR `index` access for a workload thread.
    fn bar(&mut self, dev: DevId, index: u32) -> Result<Box<dyn DeviceIo>, VfioError>;
    /// VFIO_DEVICE_FEATURE_DMA_LOGGING_START over `ranges` (iova, length) at `page_size`:
    /// `Err(ENOTTY)` when the device has no DMA logging.
    fn dma_logging_start(
        &mut self,
        dev: DevId,
        ranges: &[(u64, u64)],
        page_size: u64,
    ) -> Result<(), Errno>;
    /// VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT: reads and clears the dirty bits of
    /// `[iova, iova + len)`, one bit per page (LSB first) into `bitmap`.
    fn dma_logging_report(
        &mut self,
        dev: DevId,
        iova: u64,
        len: u64,
        page_size: u64,
        bitmap: &mut [u64],
    ) -> Result<(), Errno>;
    /// VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP.
    fn dma_logging_stop(&mut self, dev: DevId) -> Result<(), Errno>;
}

fn last_errno() -> Errno {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// An ioctl whose argument is a pointer to `T`; returns the ioctl's non-negative result.
///
/// # Safety
/// `req` must be an ioctl whose kernel handler reads/writes at most `size_of::<T>()` bytes
/// (or `argsz` bytes as set inside `arg`) through the pointer.
unsafe fn ioctl_ptr<T>(fd: RawFd, req: libc::c_ulong, arg: *mut T) -> Result<i32, Errno> {
    // SAFETY: forwarded to the caller's contract; `arg` points to a live, properly sized T.
    // (`as _`: glibc takes the request as c_ulong, musl as c_int; VFIO numbers fit both.)
    let r = unsafe { libc::ioctl(fd, req as _, arg) };
    if r < 0 { Err(last_errno()) } else { Ok(r) }
}

/// An ioctl with an integer argument.
fn ioctl_val(fd: RawFd, req: libc::c_ulong, arg: libc::c_ulong) -> Result<i32, Errno> {
    // SAFETY: these VFIO ioctls take their argument by value; no memory is passed.
    let r = unsafe { libc::ioctl(fd, req as _, arg) };
    if r < 0 { Err(last_errno()) } else { Ok(r) }
}

fn os_err(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e)
}

/// `struct vfio_device_feature` followed by a payload, as the DEVICE_FEATURE ioctl expects.
#[repr(C)]
struct Feature<P> {
    hdr: uapi::vfio_device_feature,
    payload: P,
}

impl<P: Default> Feature<P> {
    fn new(flags: u32) -> Self {
        Feature {
            hdr: uapi::vfio_device_feature {
                argsz: size_of::<Self>() as u32,
                flags,
                data: Default::default(),
            },
            payload: P::default(),
        }
    }
}

struct Container {
    fd: OwnedFd,
    iommu_set: bool,
    name: String,
}

struct Group {
    _fd: OwnedFd,
}

/// Where a device's DMA mappings live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Space {
    /// A type1v2 container (index into `containers`).
    Container(usize),
    /// The iommufd IOAS (cdev path).
    Ioas,
}

/// How devices are opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VfioPath {
    /// The cdev + iommufd path when the kernel has it for the first device, else the group.
    #[default]
    Auto,
    /// VFIO group + type1v2 container (5.18+; the only path on kernels without iommufd).
    Group,
    /// `/dev/vfio/devices/vfioN` bound to `/dev/iommu` (6.6+ with VFIO_DEVICE_CDEV, IOMMUFD).
    Cdev,
}

impl VfioPath {
    pub fn parse(s: &str) -> Result<VfioPath, String> {
        match s {
            "auto" => Ok(VfioPath::Auto),
            "group" => Ok(VfioPath::Group),
            "cdev" => Ok(VfioPath::Cdev),
            _ => Err(format!(
                "unknown VFIO path `{s}` (expected auto, group or cdev)"
            )),
        }
    }
}

struct Iommufd {
    fd: OwnedFd,
    ioas: u32,
}

struct Device {
    bdf: String,
    fd: Arc<File>,
    space: Space,
    data: Option<File>,
    irq_index: Option<u32>,
}

/// The real VFIO backend: every device opened shares one type1v2 container or one iommufd
/// IOAS (one `ctx`).
#[derive(Default)]
pub struct Vfio {
    path: VfioPath,
    /// The path the first device took; every later device takes it too (one address space).
    chosen: Option<VfioPath>,
    iommufd: Option<Iommufd>,
    containers: Vec<Container>,
    groups: BTreeMap<String, Group>,
    devices: Vec<Device>,
    sysfs: PathBuf,
    devdir: PathBuf,
}

impl Vfio {
    pub fn new() -> Self {
        Vfio::with_path(VfioPath::Auto)
    }

    pub fn with_path(path: VfioPath) -> Self {
        Vfio {
            path,
            sysfs: PathBuf::from("/sys/bus/pci/devices"),
            devdir: PathBuf::from("/dev/vfio"),
            ..Default::default()
        }
    }

    /// `/dev/vfio/devices/vfioN` of a device, when the kernel exposes the cdev and iommufd.
    fn cdev_of(&self, bdf: &str) -> Option<PathBuf> {
        let dir = std::fs::read_dir(self.sysfs.join(bdf).join("vfio-dev")).ok()?;
        let name = dir
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.starts_with("vfio"))?;
        let dev = self.devdir.join("devices").join(name);
        (dev.exists() && Path::new("/dev/iommu").exists()).then_some(dev)
    }

    fn ioas(&mut self) -> Result<(RawFd, u32), VfioError> {
        if let Some(i) = &self.iommufd {
            return Ok((i.fd.as_raw_fd(), i.ioas));
        }
        let fd = OwnedFd::from(open_rw(Path::new("/dev/iommu"))?);
        let mut alloc = IommuIoasAlloc {
            size: size_of::<IommuIoasAlloc>() as u32,
            ..Default::default()
        };
        // SAFETY: IOMMU_IOAS_ALLOC reads/writes one iommu_ioas_alloc (size set).
        unsafe { ioctl_ptr(fd.as_raw_fd(), IOMMU_IOAS_ALLOC, &mut alloc) }.map_err(|e| {
            VfioError::Ioctl {
                op: "IOMMU_IOAS_ALLOC",
                what: "/dev/iommu".to_owned(),
                source: os_err(e),
            }
        })?;
        let ioas = alloc.out_ioas_id;
        let raw = fd.as_raw_fd();
        self.iommufd = Some(Iommufd { fd, ioas });
        Ok((raw, ioas))
    }

    /// The cdev path: open `/dev/vfio/devices/vfioN`, bind it to the iommufd, attach it to the
    /// shared IOAS.
    fn open_cdev(
        &mut self,
        bdf: &str,
        cdev: &Path,
        driver: Option<String>,
    ) -> Result<Opened, VfioError> {
        let (ifd, ioas) = self.ioas()?;
        let file = open_rw(cdev)?;
        let mut bind = uapi::vfio_device_bind_iommufd {
            argsz: size_of::<uapi::vfio_device_bind_iommufd>() as u32,
            iommufd: ifd,
            ..Default::default()
        };
        // SAFETY: BIND_IOMMUFD reads argsz bytes of `bind` and writes out_devid.
        unsafe { ioctl_ptr(file.as_raw_fd(), VFIO_DEVICE_BIND_IOMMUFD, &mut bind) }.map_err(
            |e| VfioError::Ioctl {
                op: "VFIO_DEVICE_BIND_IOMMUFD",
                what: cdev.display().to_string(),
                source: os_err(e),
            },
        )?;
        let mut attach = uapi::vfio_device_attach_iommufd_pt {
            argsz: size_of::<uapi::vfio_device_attach_iommufd_pt>() as u32,
            pt_id: ioas,
            ..Default::default()
        };
        // SAFETY: ATTACH_IOMMUFD_PT reads argsz bytes of `attach` and writes pt_id.
        unsafe { ioctl_ptr(file.as_raw_fd(), VFIO_DEVICE_ATTACH_IOMMUFD_PT, &mut attach) }
            .map_err(|e| VfioError::Ioctl {
                op: "VFIO_DEVICE_ATTACH_IOMMUFD_PT",
                what: cdev.display().to_string(),
                source: os_err(e),
            })?;
        let id = DevId(self.devices.len());
        self.devices.push(Device {
            bdf: bdf.to_owned(),
            fd: Arc::new(file),
            space: Space::Ioas,
            data: None,
            irq_index: None,
        });
        Ok(Opened {
            id,
            bdf: bdf.to_owned(),
            ctx: "iommufd0".to_owned(),
            driver,
        })
    }

    fn dev(&self, dev: DevId) -> Result<&Device, Errno> {
        self.devices.get(dev.0).ok_or(libc::EBADF)
    }

    fn dev_mut(&mut self, dev: DevId) -> Result<&mut Device, Errno> {
        self.devices.get_mut(dev.0).ok_or(libc::EBADF)
    }

    fn container_fd(&self, dev: DevId) -> Result<RawFd, Errno> {
        let d = self.dev(dev)?;
        match d.space {
            Space::Container(c) => Ok(self.containers[c].fd.as_raw_fd()),
            Space::Ioas => Err(libc::EINVAL),
        }
    }

    fn open_container(&mut self) -> Result<usize, VfioError> {
        if !self.containers.is_empty() {
            return Ok(0);
        }
        let path = self.devdir.join("vfio");
        let file = open_rw(&path)?;
        let fd = OwnedFd::from(file);
        let v =
            ioctl_val(fd.as_raw_fd(), VFIO_GET_API_VERSION, 0).map_err(|e| VfioError::Ioctl {
                op: "VFIO_GET_API_VERSION",
                what: path.display().to_string(),
                source: os_err(e),
            })?;
        if v != VFIO_API_VERSION {
            return Err(VfioError::ApiVersion(v));
        }
        let ok = ioctl_val(
            fd.as_raw_fd(),
            VFIO_CHECK_EXTENSION,
            uapi::VFIO_TYPE1v2_IOMMU as libc::c_ulong,
        )
        .unwrap_or(0);
        if ok != 1 {
            return Err(VfioError::NoType1v2);
        }
        self.containers.push(Container {
            fd,
            iommu_set: false,
            name: "container0".to_owned(),
        });
        Ok(0)
    }

    fn read_link_name(path: &Path) -> Option<String> {
        std::fs::read_link(path)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    }
}

fn open_rw(path: &Path) -> Result<File, VfioError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|source| VfioError::Open {
            path: path.to_owned(),
            source,
        })
}

impl VfioOps for Vfio {
    fn open(&mut self, bdf: &str) -> Result<Opened, VfioError> {
        let devpath = self.sysfs.join(bdf);
        let group_link = devpath.join("iommu_group");
        let group = std::fs::read_link(&group_link)
            .map_err(|source| VfioError::IommuGroup {
                bdf: bdf.to_owned(),
                path: group_link.clone(),
                source,
            })?
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| VfioError::IommuGroup {
                bdf: bdf.to_owned(),
                path: group_link.clone(),
                source: io::Error::new(io::ErrorKind::InvalidData, "no group number"),
            })?;
        let driver = Self::read_link_name(&devpath.join("driver"));
        let want = self.chosen.unwrap_or(self.path);
        if want != VfioPath::Group {
            match self.cdev_of(bdf) {
                Some(cdev) => {
                    let o = self.open_cdev(bdf, &cdev, driver)?;
                    self.chosen = Some(VfioPath::Cdev);
                    return Ok(o);
                }
                None if want == VfioPath::Cdev => {
                    return Err(VfioError::Unavailable {
                        what: "the VFIO cdev path",
                        why: format!(
                            "{bdf} has no /dev/vfio/devices/vfioN or there is no /dev/iommu \
                             (kernel without VFIO_DEVICE_CDEV / IOMMUFD): use the group path"
                        ),
                    });
                }
                None => {}
            }
        }
        self.chosen = Some(VfioPath::Group);
        let c = self.open_container()?;
        if !self.groups.contains_key(&group) {
            let gpath = self.devdir.join(&group);
            let gfd = OwnedFd::from(open_rw(&gpath)?);
            let mut status = uapi::vfio_group_status {
                argsz: size_of::<uapi::vfio_group_status>() as u32,
                flags: 0,
            };
            // SAFETY: GROUP_GET_STATUS writes one vfio_group_status (argsz set).
            unsafe { ioctl_ptr(gfd.as_raw_fd(), VFIO_GROUP_GET_STATUS, &mut status) }.map_err(
                |e| VfioError::Ioctl {
                    op: "VFIO_GROUP_GET_STATUS",
                    what: gpath.display().to_string(),
                    source: os_err(e),
                },
            )?;
            if status.flags & uapi::VFIO_GROUP_FLAGS_VIABLE == 0 {
                return Err(VfioError::GroupNotViable {
                    bdf: bdf.to_owned(),
                    group,
                });
            }
            let mut cfd: i32 = self.containers[c].fd.as_raw_fd();
            // SAFETY: GROUP_SET_CONTAINER reads one int (the container fd).
            unsafe { ioctl_ptr(gfd.as_raw_fd(), VFIO_GROUP_SET_CONTAINER, &mut cfd) }.map_err(
                |e| VfioError::Ioctl {
                    op: "VFIO_GROUP_SET_CONTAINER",
                    what: gpath.display().to_string(),
                    source: os_err(e),
                },
            )?;
            if !self.containers[c].iommu_set {
                ioctl_val(
                    self.containers[c].fd.as_raw_fd(),
                    VFIO_SET_IOMMU,
                    uapi::VFIO_TYPE1v2_IOMMU as libc::c_ulong,
                )
                .map_err(|e| VfioError::Ioctl {
                    op: "VFIO_SET_IOMMU(TYPE1v2)",
                    what: "container".to_owned(),
                    source: os_err(e),
                })?;
                self.containers[c].iommu_set = true;
            }
            self.groups.insert(group.clone(), Group { _fd: gfd });
        }
        let gfd = self.groups[&group]._fd.as_raw_fd();
        let name = CString::new(bdf).map_err(|_| VfioError::Unavailable {
            what: "device name",
            why: format!("{bdf:?} contains a NUL byte"),
        })?;
        // SAFETY: GROUP_GET_DEVICE_FD reads a NUL-terminated string; `name` outlives the call.
        let r = unsafe { ioctl_ptr(gfd, VFIO_GROUP_GET_DEVICE_FD, name.as_ptr() as *mut i8) }
            .map_err(|e| VfioError::Ioctl {
                op: "VFIO_GROUP_GET_DEVICE_FD",
                what: bdf.to_owned(),
                source: os_err(e),
            })?;
        // SAFETY: a successful GROUP_GET_DEVICE_FD returns a new fd we now own.
        let fd = unsafe { File::from_raw_fd(r) };
        let id = DevId(self.devices.len());
        self.devices.push(Device {
            bdf: bdf.to_owned(),
            fd: Arc::new(fd),
            space: Space::Container(c),
            data: None,
            irq_index: None,
        });
        Ok(Opened {
            id,
            bdf: bdf.to_owned(),
            ctx: self.containers[c].name.clone(),
            driver,
        })
    }

    fn migration_flags(&mut self, dev: DevId) -> Result<MigFlags, VfioError> {
        let d = self.dev(dev).map_err(|e| VfioError::Ioctl {
            op: "look up device",
            what: format!("{dev:?}"),
            source: os_err(e),
        })?;
        mig_flags_of(d.fd.as_fd()).map_err(|e| VfioError::NoMigration {
            bdf: d.bdf.clone(),
            source: os_err(e),
        })
    }

    fn set_state(&mut self, dev: DevId, to: MigState) -> Result<Option<i32>, Errno> {
        let d = self.dev_mut(dev)?;
        let mut f = Feature::<uapi::vfio_device_feature_mig_state>::new(
            uapi::VFIO_DEVICE_FEATURE_SET | uapi::VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
        );
        f.payload.device_state = to as u32;
        f.payload.data_fd = -1;
        // SAFETY: DEVICE_FEATURE reads/writes at most argsz bytes of `f`.
        unsafe { ioctl_ptr(d.fd.as_raw_fd(), VFIO_DEVICE_FEATURE, &mut f) }?;
        let fd = f.payload.data_fd;
        if fd >= 0 {
            // SAFETY: the kernel installed a new fd for us (vfio_ioctl_device_feature_mig_device_state).
            d.data = Some(unsafe { File::from_raw_fd(fd) });
            Ok(Some(fd))
        } else {
            Ok(None)
        }
    }

    fn get_state(&mut self, dev: DevId) -> Result<MigState, Errno> {
        let d = self.dev(dev)?;
        mig_state_of(d.fd.as_fd())
    }

    fn reset(&mut self, dev: DevId) -> Result<(), Errno> {
        let d = self.dev(dev)?;
        ioctl_val(d.fd.as_raw_fd(), VFIO_DEVICE_RESET, 0).map(|_| ())
    }

    fn data_read(&mut self, dev: DevId, buf: &mut [u8]) -> Result<usize, Errno> {
        let d = self.dev(dev)?;
        let f = d.data.as_ref().ok_or(libc::EBADF)?;
        loop {
            match io::Read::read(&mut &*f, buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.raw_os_error().unwrap_or(libc::EIO)),
            }
        }
    }

    fn data_poll(&mut self, dev: DevId, timeout_ms: i32) -> Result<bool, Errno> {
        let d = self.dev(dev)?;
        let f = d.data.as_ref().ok_or(libc::EBADF)?;
        let mut pfd = libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            // SAFETY: one valid pollfd for the duration of the call.
            let r = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
            if r < 0 {
                let e = last_errno();
                if e == libc::EINTR {
                    continue;
                }
                return Err(e);
            }
            return Ok(r > 0);
        }
    }

    fn data_write(&mut self, dev: DevId, buf: &[u8]) -> Result<usize, Errno> {
        let d = self.dev(dev)?;
        let f = d.data.as_ref().ok_or(libc::EBADF)?;
        loop {
            match io::Write::write(&mut &*f, buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.raw_os_error().unwrap_or(libc::EIO)),
            }
        }
    }

    fn precopy_info(&mut self, dev: DevId) -> Result<PrecopyInfo, Errno> {
        let d = self.dev(dev)?;
        let f = d.data.as_ref().ok_or(libc::EBADF)?;
        let mut info = uapi::vfio_precopy_info {
            argsz: size_of::<uapi::vfio_precopy_info>() as u32,
            flags: 0,
            initial_bytes: 0,
            dirty_bytes: 0,
        };
        // SAFETY: MIG_GET_PRECOPY_INFO writes one vfio_precopy_info (argsz set).
        unsafe { ioctl_ptr(f.as_raw_fd(), VFIO_MIG_GET_PRECOPY_INFO, &mut info) }?;
        Ok(PrecopyInfo {
            initial_bytes: info.initial_bytes,
            dirty_bytes: info.dirty_bytes,
            flags: info.flags,
        })
    }

    fn data_size(&mut self, dev: DevId) -> Result<u64, Errno> {
        let d = self.dev(dev)?;
        let mut f = Feature::<uapi::vfio_device_feature_mig_data_size>::new(
            uapi::VFIO_DEVICE_FEATURE_GET | uapi::VFIO_DEVICE_FEATURE_MIG_DATA_SIZE,
        );
        // SAFETY: DEVICE_FEATURE reads/writes at most argsz bytes of `f`.
        unsafe { ioctl_ptr(d.fd.as_raw_fd(), VFIO_DEVICE_FEATURE, &mut f) }?;
        Ok(f.payload.stop_copy_length)
    }

    fn data_close(&mut self, dev: DevId) {
        if let Ok(d) = self.dev_mut(dev) {
            d.data = None;
        }
    }

    fn map_dma(&mut self, dev: DevId, buf: &Arc<DmaBuffer>, iova: u64) -> Result<(), Errno> {
        if self.dev(dev)?.space == Space::Ioas {
            let i = self.iommufd.as_ref().ok_or(libc::EBADF)?;
            let mut map = IommuIoasMap {
                size: size_of::<IommuIoasMap>() as u32,
                flags: IOMMU_IOAS_MAP_FIXED_IOVA
                    | IOMMU_IOAS_MAP_WRITEABLE
                    | IOMMU_IOAS_MAP_READABLE,
                ioas_id: i.ioas,
                user_va: buf.addr() as u64,
                length: buf.len() as u64,
                iova,
                ..Default::default()
            };
            // SAFETY: IOAS_MAP reads/writes one iommu_ioas_map; the buffer stays mapped until
            // after the matching IOAS_UNMAP (the controller holds its Arc).
            return unsafe { ioctl_ptr(i.fd.as_raw_fd(), IOMMU_IOAS_MAP, &mut map) }.map(|_| ());
        }
        let cfd = self.container_fd(dev)?;
        let mut map = uapi::vfio_iommu_type1_dma_map {
            argsz: size_of::<uapi::vfio_iommu_type1_dma_map>() as u32,
            flags: uapi::VFIO_DMA_MAP_FLAG_READ | uapi::VFIO_DMA_MAP_FLAG_WRITE,
            vaddr: buf.addr() as u64,
            iova,
            size: buf.len() as u64,
        };
        // SAFETY: MAP_DMA reads one vfio_iommu_type1_dma_map; the buffer stays mapped in our
        // address space until after the matching UNMAP_DMA (the controller holds its Arc).
        unsafe { ioctl_ptr(cfd, VFIO_IOMMU_MAP_DMA, &mut map) }.map(|_| ())
    }

    fn unmap_dma(&mut self, dev: DevId, iova: u64, len: u64) -> Result<(), Errno> {
        if self.dev(dev)?.space == Space::Ioas {
            let i = self.iommufd.as_ref().ok_or(libc::EBADF)?;
            let mut unmap = IommuIoasUnmap {
                size: size_of::<IommuIoasUnmap>() as u32,
                ioas_id: i.ioas,
                iova,
                length: len,
            };
            // SAFETY: IOAS_UNMAP reads/writes one iommu_ioas_unmap.
            return unsafe { ioctl_ptr(i.fd.as_raw_fd(), IOMMU_IOAS_UNMAP, &mut unmap) }
                .map(|_| ());
        }
        let cfd = self.container_fd(dev)?;
        let mut unmap = uapi::vfio_iommu_type1_dma_unmap {
            argsz: size_of::<uapi::vfio_iommu_type1_dma_unmap>() as u32,
            flags: 0,
            iova,
            size: len,
            data: Default::default(),
        };
        // SAFETY: UNMAP_DMA reads/writes one vfio_iommu_type1_dma_unmap (no bitmap flag).
        unsafe { ioctl_ptr(cfd, VFIO_IOMMU_UNMAP_DMA, &mut unmap) }.map(|_| ())
    }

    fn enable_irq(&mut self, dev: DevId) -> Result<IrqSetup, VfioError> {
        let d = self.dev(dev).map_err(|e| VfioError::Ioctl {
            op: "look up device",
            what: format!("{dev:?}"),
            source: os_err(e),
        })?;
        let fd = d.fd.as_raw_fd();
        let dev_fd = Arc::clone(&d.fd);
        let bdf = d.bdf.clone();
        for (index, kind) in [
            (uapi::VFIO_PCI_MSI_IRQ_INDEX, IrqKind::Msi),
            (uapi::VFIO_PCI_MSIX_IRQ_INDEX, IrqKind::Msix),
            (uapi::VFIO_PCI_INTX_IRQ_INDEX, IrqKind::Intx),
        ] {
            let mut info = uapi::vfio_irq_info {
                argsz: size_of::<uapi::vfio_irq_info>() as u32,
                flags: 0,
                index,
                count: 0,
            };
            // SAFETY: GET_IRQ_INFO reads/writes one vfio_irq_info (argsz set).
            if unsafe { ioctl_ptr(fd, VFIO_DEVICE_GET_IRQ_INFO, &mut info) }.is_err()
                || info.count == 0
            {
                continue;
            }
            // SAFETY: eventfd(2) with valid flags; the result is checked before use.
            let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
            if efd < 0 {
                continue;
            }
            // SAFETY: eventfd returned a new fd we own.
            let eventfd = unsafe { OwnedFd::from_raw_fd(efd) };
            let mut set = IrqSetWithFd {
                hdr: uapi::vfio_irq_set {
                    argsz: size_of::<IrqSetWithFd>() as u32,
                    flags: uapi::VFIO_IRQ_SET_DATA_EVENTFD | uapi::VFIO_IRQ_SET_ACTION_TRIGGER,
                    index,
                    start: 0,
                    count: 1,
                    data: Default::default(),
                },
                fd: eventfd.as_raw_fd(),
            };
            // SAFETY: SET_IRQS reads argsz bytes: the header and one eventfd number.
            if unsafe { ioctl_ptr(fd, VFIO_DEVICE_SET_IRQS, &mut set) }.is_ok() {
                if let Ok(d) = self.dev_mut(dev) {
                    d.irq_index = Some(index);
                }
                let unmask: Option<Box<dyn Fn() + Send>> = if kind == IrqKind::Intx {
                    let u = Unmask(Arc::clone(&dev_fd));
                    Some(Box::new(move || u.run()))
                } else {
                    None
                };
                return Ok(IrqSetup {
                    kind,
                    eventfd,
                    unmask,
                });
            }
        }
        Err(VfioError::NoIrq { bdf })
    }

    fn disable_irq(&mut self, dev: DevId, _kind: IrqKind) -> Result<(), Errno> {
        let d = self.dev(dev)?;
        let Some(index) = d.irq_index else {
            return Ok(());
        };
        let mut set = uapi::vfio_irq_set {
            argsz: size_of::<uapi::vfio_irq_set>() as u32,
            flags: uapi::VFIO_IRQ_SET_DATA_NONE | uapi::VFIO_IRQ_SET_ACTION_TRIGGER,
            index,
            start: 0,
            count: 0,
            data: Default::default(),
        };
        // SAFETY: SET_IRQS with DATA_NONE and count 0 reads only the header.
        unsafe { ioctl_ptr(d.fd.as_raw_fd(), VFIO_DEVICE_SET_IRQS, &mut set) }.map(|_| ())
    }

    fn enable_bus_master(&mut self, dev: DevId) -> Result<(), Errno> {
        let d = self.dev(dev)?;
        let (off, _) = region_info(&d.fd, uapi::VFIO_PCI_CONFIG_REGION_INDEX)?;
        let mut cmd = [0u8; 2];
        d.fd.read_exact_at(&mut cmd, off + PCI_COMMAND)
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        let v = u16::from_le_bytes(cmd) | PCI_COMMAND_MASTER;
        d.fd.write_all_at(&v.to_le_bytes(), off + PCI_COMMAND)
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
    }

    fn bar(&mut self, dev: DevId, index: u32) -> Result<Box<dyn DeviceIo>, VfioError> {
        let d = self.dev(dev).map_err(|e| VfioError::Ioctl {
            op: "look up device",
            what: format!("{dev:?}"),
            source: os_err(e),
        })?;
        let (offset, size) = region_info(&d.fd, index).map_err(|e| VfioError::Ioctl {
            op: "VFIO_DEVICE_GET_REGION_INFO",
            what: format!("{} BAR{index}", d.bdf),
            source: os_err(e),
        })?;
        if size == 0 {
            return Err(VfioError::Unavailable {
                what: "BAR",
                why: format!("{} BAR{index} has size 0", d.bdf),
            });
        }
        Ok(Box::new(Region {
            fd: Arc::clone(&d.fd),
            offset,
            size,
        }))
    }

    fn dma_logging_start(
        &mut self,
        dev: DevId,
        ranges: &[(u64, u64)],
        page_size: u64,
    ) -> Result<(), Errno> {
        let d = self.dev(dev)?;
        let ranges: Vec<uapi::vfio_device_feature_dma_logging_range> = ranges
            .iter()
            .map(
                |(iova, length)| uapi::vfio_device_feature_dma_logging_range {
                    iova: *iova,
                    length: *length,
                },
            )
            .collect();
        let mut f = Feature::<uapi::vfio_device_feature_dma_logging_control>::new(
            uapi::VFIO_DEVICE_FEATURE_SET | uapi::VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
        );
        f.payload.page_size = page_size;
        f.payload.num_ranges = ranges.len() as u32;
        f.payload.ranges = ranges.as_ptr() as u64;
        // SAFETY: DEVICE_FEATURE reads argsz bytes of `f` and `num_ranges` range structs
        // through `ranges`, which outlives the call.
        unsafe { ioctl_ptr(d.fd.as_raw_fd(), VFIO_DEVICE_FEATURE, &mut f) }.map(|_| ())
    }

    fn dma_logging_report(
        &mut self,
        dev: DevId,
        iova: u64,
        len: u64,
        page_size: u64,
        bitmap: &mut [u64],
    ) -> Result<(), Errno> {
        let d = self.dev(dev)?;
        let pages = len.div_ceil(page_size.max(1));
        if (bitmap.len() as u64) * 64 < pages {
            return Err(libc::EINVAL);
        }
        let mut f = Feature::<uapi::vfio_device_feature_dma_logging_report>::new(
            uapi::VFIO_DEVICE_FEATURE_GET | uapi::VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT,
        );
        f.payload.iova = iova;
        f.payload.length = len;
        f.payload.page_size = page_size;
        f.payload.bitmap = bitmap.as_mut_ptr() as u64;
        // SAFETY: the kernel writes at most ceil(len / page_size) bits through `bitmap`, which
        // was checked to hold that many and outlives the call.
        unsafe { ioctl_ptr(d.fd.as_raw_fd(), VFIO_DEVICE_FEATURE, &mut f) }.map(|_| ())
    }

    fn dma_logging_stop(&mut self, dev: DevId) -> Result<(), Errno> {
        let d = self.dev(dev)?;
        let mut f = Feature::<()>::new(
            uapi::VFIO_DEVICE_FEATURE_SET | uapi::VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP,
        );
        // SAFETY: DMA_LOGGING_STOP takes no payload; `f` is the 8-byte header.
        unsafe { ioctl_ptr(d.fd.as_raw_fd(), VFIO_DEVICE_FEATURE, &mut f) }.map(|_| ())
    }
}

// ---- Read-only questions to any device fd ----------------------------------------------
// Also asked through a duplicate of another process's fd (`capture::attach`): none of these
// changes the device, its state or its user's view of it.

/// VFIO_DEVICE_FEATURE GET | MIGRATION: the device's migration flags.
pub fn mig_flags_of(fd: BorrowedFd<'_>) -> Result<MigFlags, Errno> {
    let mut f = Feature::<uapi::vfio_device_feature_migration>::new(
        uapi::VFIO_DEVICE_FEATURE_GET | uapi::VFIO_DEVICE_FEATURE_MIGRATION,
    );
    // SAFETY: DEVICE_FEATURE reads the header and writes at most argsz bytes of `f`.
    unsafe { ioctl_ptr(fd.as_raw_fd(), VFIO_DEVICE_FEATURE, &mut f) }?;
    Ok(MigFlags(f.payload.flags as u32))
}

/// VFIO_DEVICE_FEATURE GET | MIG_DEVICE_STATE: the device's current migration state
/// (`vfio_ioctl_device_feature_mig_device_state` in drivers/vfio/vfio_main.c asks the driver's
/// `migration_get_state`, under the driver's state lock).
pub fn mig_state_of(fd: BorrowedFd<'_>) -> Result<MigState, Errno> {
    let mut f = Feature::<uapi::vfio_device_feature_mig_state>::new(
        uapi::VFIO_DEVICE_FEATURE_GET | uapi::VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
    );
    // SAFETY: DEVICE_FEATURE reads/writes at most argsz bytes of `f`.
    unsafe { ioctl_ptr(fd.as_raw_fd(), VFIO_DEVICE_FEATURE, &mut f) }?;
    MigState::from_u32(f.payload.device_state).ok_or(libc::ERANGE)
}

/// One device that a hot reset of a device's slot or bus also resets
/// (`struct vfio_pci_dependent_device`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dependent {
    /// `ssss:bb:dd.f`.
    pub bdf: String,
    /// Its IOMMU group (an iommufd device id instead when the flags returned with it carry
    /// `VFIO_PCI_HOT_RESET_FLAG_DEV_ID`, 6.6+, for a device opened through its cdev).
    pub group_id: u32,
}

/// VFIO_DEVICE_GET_PCI_HOT_RESET_INFO: the flags and the devices a slot or bus reset of this
/// device would reset, itself included (`vfio_pci_ioctl_get_pci_hot_reset_info` in
/// drivers/vfio/pci/vfio_pci_core.c: ENODEV when neither a slot nor a bus reset is possible,
/// e.g. a device on a root bus; ENOSPC with the count when the buffer is short).
pub fn hot_reset_info_of(fd: BorrowedFd<'_>) -> Result<(u32, Vec<Dependent>), Errno> {
    // Header {argsz, flags, count}, then 8-byte entries {group_id|devid, segment, bus, devfn}.
    let mut room = 16usize;
    for _ in 0..2 {
        let mut buf = vec![0u32; 3 + 2 * room];
        buf[0] = (buf.len() * 4) as u32;
        // SAFETY: the kernel writes at most argsz (buf's length in bytes) through the pointer.
        match unsafe {
            ioctl_ptr(
                fd.as_raw_fd(),
                VFIO_DEVICE_GET_PCI_HOT_RESET_INFO,
                buf.as_mut_ptr(),
            )
        } {
            Ok(_) => {}
            Err(libc::ENOSPC) if (buf[2] as usize) > room => {
                room = buf[2] as usize;
                continue;
            }
            Err(e) => return Err(e),
        }
        let count = (buf[2] as usize).min(room);
        let deps = (0..count)
            .map(|i| {
                let [lo, hi] = [buf[3 + 2 * i], buf[4 + 2 * i]];
                let b = hi.to_ne_bytes();
                let segment = u16::from_ne_bytes([b[0], b[1]]);
                let (bus, devfn) = (b[2], b[3]);
                Dependent {
                    bdf: format!("{segment:04x}:{bus:02x}:{:02x}.{}", devfn >> 3, devfn & 7),
                    group_id: lo,
                }
            })
            .collect();
        return Ok((buf[1], deps));
    }
    Err(libc::ENOSPC)
}

/// The first `len` bytes of the device's PCI config space as VFIO presents it (identity
/// fields such as vendor, device, class and subsystem read through from the hardware;
/// drivers/vfio/pci/vfio_pci_config.c).
pub fn config_of(fd: BorrowedFd<'_>, len: usize) -> Result<Vec<u8>, Errno> {
    let mut info = uapi::vfio_region_info {
        argsz: size_of::<uapi::vfio_region_info>() as u32,
        flags: 0,
        index: uapi::VFIO_PCI_CONFIG_REGION_INDEX,
        cap_offset: 0,
        size: 0,
        offset: 0,
    };
    // SAFETY: GET_REGION_INFO writes at most argsz bytes (capabilities beyond are not copied).
    unsafe { ioctl_ptr(fd.as_raw_fd(), VFIO_DEVICE_GET_REGION_INFO, &mut info) }?;
    let len = len.min(info.size as usize);
    let mut buf = vec![0u8; len];
    // SAFETY: pread writes at most len bytes into buf, which is len bytes long.
    let n = unsafe {
        libc::pread(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            len,
            info.offset as libc::off_t,
        )
    };
    if n < 0 {
        return Err(last_errno());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// `struct vfio_irq_set` with one eventfd in its flexible `data` array.
#[repr(C)]
struct IrqSetWithFd {
    hdr: uapi::vfio_irq_set,
    fd: i32,
}

/// VFIO_DEVICE_GET_REGION_INFO: (offset in the device fd, size).
fn region_info(fd: &File, index: u32) -> Result<(u64, u64), Errno> {
    let mut info = uapi::vfio_region_info {
        argsz: size_of::<uapi::vfio_region_info>() as u32,
        flags: 0,
        index,
        cap_offset: 0,
        size: 0,
        offset: 0,
    };
    // SAFETY: GET_REGION_INFO writes at most argsz bytes (capabilities beyond are not copied).
    unsafe { ioctl_ptr(fd.as_raw_fd(), VFIO_DEVICE_GET_REGION_INFO, &mut info) }?;
    Ok((info.offset, info.size))
}

/// One device region accessed with pread/pwrite at natural sizes.
struct Region {
    fd: Arc<File>,
    offset: u64,
    size: u64,
}

impl Region {
    fn at(&self, off: u64, len: u64) -> Result<u64, Errno> {
        if off.checked_add(len).is_none_or(|end| end > self.size) {
            return Err(libc::EINVAL);
        }
        Ok(self.offset + off)
    }
    fn read<const N: usize>(&self, off: u64) -> Result<[u8; N], Errno> {
        let mut b = [0u8; N];
        let n = self
            .fd
            .read_at(&mut b, self.at(off, N as u64)?)
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        if n != N {
            return Err(libc::EIO);
        }
        Ok(b)
    }
    fn write(&self, off: u64, b: &[u8]) -> Result<(), Errno> {
        let n = self
            .fd
            .write_at(b, self.at(off, b.len() as u64)?)
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        if n != b.len() {
            return Err(libc::EIO);
        }
        Ok(())
    }
}

impl DeviceIo for Region {
    fn read32(&self, off: u64) -> Result<u32, Errno> {
        self.read::<4>(off).map(u32::from_le_bytes)
    }
    fn write32(&self, off: u64, v: u32) -> Result<(), Errno> {
        self.write(off, &v.to_le_bytes())
    }
    fn read64(&self, off: u64) -> Result<u64, Errno> {
        self.read::<8>(off).map(u64::from_le_bytes)
    }
    fn write64(&self, off: u64, v: u64) -> Result<(), Errno> {
        self.write(off, &v.to_le_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// probe-common's table (the probe's and ours) against vfio-bindings' `VFIO_TYPE` and
    /// `VFIO_BASE`: `_IO(VFIO_TYPE, VFIO_BASE + n)` with the `n` of include/uapi/linux/vfio.h.
    #[test]
    fn the_shared_table_is_the_uapi_arithmetic() {
        let io =
            |n: u32| ((u32::from(uapi::VFIO_TYPE) << 8) | (uapi::VFIO_BASE + n)) as libc::c_ulong;
        for (req, n) in [
            (VFIO_GET_API_VERSION, 0),
            (VFIO_CHECK_EXTENSION, 1),
            (VFIO_SET_IOMMU, 2),
            (VFIO_GROUP_GET_STATUS, 3),
            (VFIO_GROUP_SET_CONTAINER, 4),
            (VFIO_GROUP_GET_DEVICE_FD, 6),
            (VFIO_DEVICE_GET_REGION_INFO, 8),
            (VFIO_DEVICE_GET_IRQ_INFO, 9),
            (VFIO_DEVICE_SET_IRQS, 10),
            (VFIO_DEVICE_RESET, 11),
            (VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, 12),
            (VFIO_IOMMU_MAP_DMA, 13),
            (VFIO_IOMMU_UNMAP_DMA, 14),
            (VFIO_DEVICE_FEATURE, 17),
            (VFIO_DEVICE_BIND_IOMMUFD, 18),
            (VFIO_DEVICE_ATTACH_IOMMUFD_PT, 19),
            (VFIO_MIG_GET_PRECOPY_INFO, 21),
        ] {
            assert_eq!(req, io(n), "VFIO_BASE + {n}");
        }
    }

    /// probe-common's argument-struct offsets (the probe's and the attributor's) are
    /// vfio-bindings' layout of the same structs.
    #[test]
    fn the_shared_offsets_are_the_uapi_layout() {
        use probe_common::abi::uapi as off;
        use std::mem::{offset_of, size_of};
        use uapi::{
            vfio_device_feature as Feature, vfio_device_feature_mig_state as MigState,
            vfio_device_feature_migration as Migration, vfio_iommu_type1_dirty_bitmap as Dirty,
            vfio_iommu_type1_dma_map as Map, vfio_iommu_type1_dma_unmap as Unmap,
            vfio_irq_set as IrqSet,
        };
        let hdr = size_of::<Feature>();
        assert_eq!(off::FEATURE_FLAGS, offset_of!(Feature, flags));
        assert_eq!(off::FEATURE_DATA, hdr);
        assert_eq!(off::MIGRATION_FLAGS, hdr + offset_of!(Migration, flags));
        assert_eq!(
            off::MIG_STATE_DEVICE_STATE,
            hdr + offset_of!(MigState, device_state)
        );
        assert_eq!(off::MIG_STATE_DATA_FD, hdr + offset_of!(MigState, data_fd));
        assert_eq!(off::IRQ_SET_FLAGS, offset_of!(IrqSet, flags));
        assert_eq!(off::IRQ_SET_INDEX, offset_of!(IrqSet, index));
        assert_eq!(off::IRQ_SET_START, offset_of!(IrqSet, start));
        assert_eq!(off::IRQ_SET_COUNT, offset_of!(IrqSet, count));
        assert_eq!(off::DMA_MAP_IOVA, offset_of!(Map, iova));
        assert_eq!(off::DMA_MAP_SIZE, offset_of!(Map, size));
        assert_eq!(off::DMA_MAP_ARGSZ as usize, size_of::<Map>());
        assert_eq!(off::DMA_UNMAP_IOVA, offset_of!(Unmap, iova));
        assert_eq!(off::DMA_UNMAP_SIZE, offset_of!(Unmap, size));
        assert_eq!(off::DIRTY_BITMAP_FLAGS, offset_of!(Dirty, flags));
        use uapi::vfio_device_feature_dma_logging_report as Report;
        assert_eq!(off::LOG_REPORT_IOVA, hdr + offset_of!(Report, iova));
        assert_eq!(off::LOG_REPORT_LENGTH, hdr + offset_of!(Report, length));
        assert_eq!(
            off::LOG_REPORT_PAGE_SIZE,
            hdr + offset_of!(Report, page_size)
        );
        assert_eq!(off::LOG_REPORT_BITMAP, hdr + offset_of!(Report, bitmap));
        // The probe's payload holds the whole report struct.
        assert!(hdr + size_of::<Report>() <= probe_common::abi::PAYLOAD_LEN);
    }

    #[test]
    fn ioctl_numbers_match_the_uapi() {
        assert_eq!(VFIO_GET_API_VERSION, 0x3B64);
        assert_eq!(VFIO_GROUP_GET_DEVICE_FD, 0x3B6A);
        assert_eq!(VFIO_DEVICE_RESET, 0x3B6F);
        assert_eq!(VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, 0x3B70);
        assert_eq!(VFIO_IOMMU_MAP_DMA, 0x3B71);
        assert_eq!(VFIO_DEVICE_FEATURE, 0x3B75);
        assert_eq!(VFIO_MIG_GET_PRECOPY_INFO, 0x3B79);
        assert_eq!(VFIO_DEVICE_BIND_IOMMUFD, 0x3B76);
        assert_eq!(VFIO_DEVICE_ATTACH_IOMMUFD_PT, 0x3B77);
        assert_eq!(IOMMU_IOAS_ALLOC, 0x3B81);
        assert_eq!(IOMMU_IOAS_MAP, 0x3B85);
        assert_eq!(IOMMU_IOAS_UNMAP, 0x3B86);
        assert_eq!(size_of::<IommuIoasAlloc>(), 12);
        assert_eq!(size_of::<IommuIoasMap>(), 40);
        assert_eq!(size_of::<IommuIoasUnmap>(), 24);
    }

    #[test]
    fn feature_layouts() {
        // The payload follows the 8-byte header at offset 8 (vfio.h: __u8 data[]).
        assert_eq!(
            size_of::<Feature<uapi::vfio_device_feature_migration>>(),
            16
        );
        assert_eq!(
            size_of::<Feature<uapi::vfio_device_feature_mig_state>>(),
            16
        );
        assert_eq!(
            size_of::<Feature<uapi::vfio_device_feature_dma_logging_control>>(),
            32
        );
        assert_eq!(
            size_of::<Feature<uapi::vfio_device_feature_dma_logging_report>>(),
            40
        );
        assert_eq!(size_of::<Feature<()>>(), 8);
        assert_eq!(size_of::<IrqSetWithFd>(), 24);
    }

    #[test]
    fn cdev_path_refused_clearly_without_the_cdev() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dev = dir.path().join("0000:00:02.0");
        std::fs::create_dir_all(&dev).expect("mkdir");
        std::os::unix::fs::symlink("../../kernel/iommu_groups/7", dev.join("iommu_group"))
            .expect("symlink");
        let mut v = Vfio::with_path(VfioPath::Cdev);
        v.sysfs = dir.path().to_owned();
        let e = v.open("0000:00:02.0").unwrap_err();
        assert!(e.to_string().contains("use the group path"), "{e}");
        // Auto falls back to the group path (which then fails here: no /dev/vfio/7).
        let mut v = Vfio::with_path(VfioPath::Auto);
        v.sysfs = dir.path().to_owned();
        v.devdir = dir.path().join("dev-vfio");
        let e = v.open("0000:00:02.0").unwrap_err();
        assert!(matches!(e, VfioError::Open { .. }), "{e}");
    }

    #[test]
    fn missing_device_is_a_clear_error() {
        let mut v = Vfio::new();
        v.sysfs = PathBuf::from("/nonexistent-sysfs");
        let e = v.open("0000:00:02.0").unwrap_err();
        assert!(matches!(e, VfioError::IommuGroup { .. }), "{e}");
        assert!(e.to_string().contains("0000:00:02.0"));
    }
}
