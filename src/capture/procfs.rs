//! What /proc and /sys tell about VFIO users that were running before capture started: their
//! VFIO fds, the devices behind them, their parents (for `--pid` and children), and device
//! drivers. Only generic kernel interfaces, so this works unchanged inside the lab VM.

use std::{
    fs,
    path::{Path, PathBuf},
};

use probe_common::abi::fd_kind;

/// A VFIO fd found in `/proc/<pid>/fd`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedFd {
    pub pid: u32,
    pub fd: i32,
    /// An `abi::fd_kind` value.
    pub kind: u32,
    /// The device behind it, when the fd names it by itself (a cdev, or fdinfo's
    /// `vfio-device-syspath` from 6.18); otherwise `capture::attach` resolves it.
    pub dev: Option<String>,
    /// For group fds: the devices of the IOMMU group.
    pub group_devs: Vec<String>,
}

/// Classifies an fd link target; `None` for anything that is not VFIO.
pub fn classify_link(link: &str) -> Option<u32> {
    if link == "/dev/vfio/vfio" {
        Some(fd_kind::CONTAINER)
    } else if link.starts_with("/dev/vfio/devices/") {
        Some(fd_kind::CDEV)
    } else if link.starts_with("/dev/vfio/") {
        Some(fd_kind::GROUP)
    } else if link == "/dev/iommu" {
        Some(fd_kind::IOMMUFD)
    } else if link == "anon_inode:[vfio-device]" {
        Some(fd_kind::DEVICE)
    } else {
        None
    }
}

/// Where /proc and /sys are: the host's, or a directory tree standing in for them (tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Roots {
    pub proc: PathBuf,
    pub sys: PathBuf,
}

impl Roots {
    pub fn host() -> Self {
        Roots {
            proc: PathBuf::from("/proc"),
            sys: PathBuf::from("/sys"),
        }
    }
}

/// Scans `/proc` (all processes, or only `pids`) for VFIO fds. Unreadable entries (processes
/// that exit, permission) are skipped: the scan is best effort by nature.
pub fn scan(pids: Option<&[u32]>) -> Vec<SeedFd> {
    scan_in(&Roots::host(), pids)
}

/// [`scan`] under `roots`.
pub fn scan_in(roots: &Roots, pids: Option<&[u32]>) -> Vec<SeedFd> {
    let all: Vec<u32> = match pids {
        Some(p) => p.to_vec(),
        None => processes(roots),
    };
    let mut out = Vec::new();
    for pid in all {
        out.extend(scan_pid(roots, pid));
    }
    out
}

/// Every process in `/proc`.
pub fn processes(roots: &Roots) -> Vec<u32> {
    let mut v: Vec<u32> = fs::read_dir(&roots.proc)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

/// What fd `fd` of `pid` is now, if it is a VFIO fd (for fds capture did not see opened:
/// opened before it started, received over a socket, duplicated).
pub fn resolve_fd(pid: u32, fd: i32) -> Option<SeedFd> {
    resolve_fd_in(&Roots::host(), pid, fd)
}

/// [`resolve_fd`] under `roots`.
pub fn resolve_fd_in(roots: &Roots, pid: u32, fd: i32) -> Option<SeedFd> {
    let link = fs::read_link(roots.proc.join(format!("{pid}/fd/{fd}"))).ok()?;
    classify_link(&link.to_string_lossy())?;
    scan_pid(roots, pid).into_iter().find(|s| s.fd == fd)
}

/// The VFIO fds of one process, each named as far as /proc and /sys name it by themselves
/// (a cdev's device, fdinfo's `vfio-device-syspath`); `capture::attach` resolves the rest.
pub fn scan_pid(roots: &Roots, pid: u32) -> Vec<SeedFd> {
    let mut fds: Vec<SeedFd> = Vec::new();
    for (fd, link) in fd_links(roots, pid) {
        let Some(kind) = classify_link(&link) else {
            continue;
        };
        let mut seed = SeedFd {
            pid,
            fd,
            kind,
            dev: None,
            group_devs: Vec::new(),
        };
        match kind {
            fd_kind::CDEV => seed.dev = cdev_device_in(roots, &link),
            fd_kind::GROUP => {
                let group = link.trim_start_matches("/dev/vfio/");
                let group = group.trim_start_matches("noiommu-");
                seed.group_devs = group_devices_in(roots, group);
            }
            fd_kind::DEVICE => seed.dev = fdinfo_syspath(roots, pid, fd),
            _ => {}
        }
        fds.push(seed);
    }
    fds.sort_by_key(|s| s.fd);
    fds
}

/// `/proc/<pid>/fd`: every fd and what its link says.
pub fn fd_links(roots: &Roots, pid: u32) -> Vec<(i32, String)> {
    let Ok(rd) = fs::read_dir(roots.proc.join(format!("{pid}/fd"))) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(link) = fs::read_link(e.path()) {
            out.push((fd, link.to_string_lossy().into_owned()));
        }
    }
    out.sort_unstable();
    out
}

/// Whether `pid` holds a KVM VM (`anon_inode:kvm-vm`, the fd KVM_CREATE_VM returns:
/// `kvm_dev_ioctl_create_vm` in virt/kvm/kvm_main.c).
pub fn holds_kvm_vm(roots: &Roots, pid: u32) -> bool {
    fd_links(roots, pid)
        .iter()
        .any(|(_, l)| l == "anon_inode:kvm-vm")
}

/// The device path kernels from 6.18 print in a vfio device fd's fdinfo
/// (`vfio-device-syspath: /sys/...`, `vfio_device_show_fdinfo` in drivers/vfio/vfio_main.c).
fn fdinfo_syspath(roots: &Roots, pid: u32, fd: i32) -> Option<String> {
    let text = fs::read_to_string(roots.proc.join(format!("{pid}/fdinfo/{fd}"))).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if !k.contains("syspath") {
            return None;
        }
        Path::new(v.trim())
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
    })
}

fn link_basename(path: &Path) -> Option<String> {
    let target = fs::read_link(path).ok()?;
    target.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// Devices of IOMMU group `group` (`/sys/kernel/iommu_groups/<group>/devices`).
pub fn group_devices(group: &str) -> Vec<String> {
    group_devices_in(&Roots::host(), group)
}

/// [`group_devices`] under `roots`.
pub fn group_devices_in(roots: &Roots, group: &str) -> Vec<String> {
    let dir = roots
        .sys
        .join(format!("kernel/iommu_groups/{group}/devices"));
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The device a cdev path (`/dev/vfio/devices/vfioN`) stands for.
pub fn cdev_device(path: &str) -> Option<String> {
    cdev_device_in(&Roots::host(), path)
}

fn cdev_device_in(roots: &Roots, path: &str) -> Option<String> {
    let name = path.strip_prefix("/dev/vfio/devices/")?;
    link_basename(&roots.sys.join(format!("class/vfio-dev/{name}/device")))
}

/// The bound driver of PCI device `dev`, if any.
pub fn pci_driver(dev: &str) -> Option<String> {
    pci_driver_in(&Roots::host(), dev)
}

/// [`pci_driver`] under `roots`.
pub fn pci_driver_in(roots: &Roots, dev: &str) -> Option<String> {
    link_basename(&roots.sys.join(format!("bus/pci/devices/{dev}/driver")))
}

/// A PCI function's identity as config space states it: what tells two functions that share
/// a reset or an IOMMU group apart (a GPU from its audio function), never two identical ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciId {
    pub vendor: u16,
    pub device: u16,
    pub subsystem_vendor: u16,
    pub subsystem_device: u16,
    /// Class code, subclass and programming interface (24 bits).
    pub class: u32,
    pub revision: u8,
}

impl PciId {
    /// From the first 0x30 bytes of a type 0 config header (little endian).
    pub fn from_config(c: &[u8]) -> Option<Self> {
        let w = |o: usize| Some(u16::from_le_bytes([*c.get(o)?, *c.get(o + 1)?]));
        Some(PciId {
            vendor: w(0x00)?,
            device: w(0x02)?,
            revision: *c.get(0x08)?,
            class: u32::from_le_bytes([*c.get(0x09)?, *c.get(0x0a)?, *c.get(0x0b)?, 0]),
            subsystem_vendor: w(0x2c)?,
            subsystem_device: w(0x2e)?,
        })
    }
}

/// What sysfs says about PCI device `dev`'s identity
/// (`/sys/bus/pci/devices/<dev>/{vendor,device,subsystem_vendor,subsystem_device,class,revision}`).
pub fn pci_id_in(roots: &Roots, dev: &str) -> Option<PciId> {
    let dir = roots.sys.join(format!("bus/pci/devices/{dev}"));
    let hex = |name: &str| -> Option<u32> {
        let s = fs::read_to_string(dir.join(name)).ok()?;
        u32::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok()
    };
    Some(PciId {
        vendor: hex("vendor")? as u16,
        device: hex("device")? as u16,
        subsystem_vendor: hex("subsystem_vendor")? as u16,
        subsystem_device: hex("subsystem_device")? as u16,
        class: hex("class")?,
        revision: hex("revision")? as u8,
    })
}

/// Whether process `pid` still exists.
pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The parent of `pid` (field 4 of `/proc/<pid>/stat`, after the parenthesised comm).
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_ppid(&stat)
}

pub fn parse_stat_ppid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut it = rest.split_whitespace();
    let _state = it.next()?;
    it.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_vfio_links() {
        assert_eq!(classify_link("/dev/vfio/vfio"), Some(fd_kind::CONTAINER));
        assert_eq!(classify_link("/dev/vfio/12"), Some(fd_kind::GROUP));
        assert_eq!(
            classify_link("/dev/vfio/devices/vfio0"),
            Some(fd_kind::CDEV)
        );
        assert_eq!(classify_link("/dev/iommu"), Some(fd_kind::IOMMUFD));
        assert_eq!(
            classify_link("anon_inode:[vfio-device]"),
            Some(fd_kind::DEVICE)
        );
        assert_eq!(classify_link("/dev/null"), None);
    }

    #[test]
    fn parses_ppid_past_odd_comm() {
        assert_eq!(parse_stat_ppid("42 (a) b (c)) S 17 42 42 0"), Some(17));
        assert_eq!(parse_stat_ppid("garbage"), None);
    }

    #[test]
    fn scans_own_process_without_vfio() {
        // This process holds no VFIO fds: the scan finds none and does not fail.
        assert!(scan(Some(&[std::process::id()])).is_empty());
    }
}
