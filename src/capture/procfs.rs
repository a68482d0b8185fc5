//! What /proc and /sys tell about VFIO users that were running before capture started: their
//! VFIO fds, the devices behind them, their parents (for `--pid` and children), and device
//! drivers. Only generic kernel interfaces, so this works unchanged inside the lab VM.

use std::{fs, path::Path};

use probe_common::abi::fd_kind;

/// A VFIO fd found in `/proc/<pid>/fd`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedFd {
    pub pid: u32,
    pub fd: i32,
    /// An `abi::fd_kind` value.
    pub kind: u32,
    /// The device behind it, when the fd names one (cdev, fdinfo syspath, or the only device
    /// of the process's groups).
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

/// Scans `/proc` (all processes, or only `pids`) for VFIO fds. Unreadable entries (processes
/// that exit, permission) are skipped: the scan is best effort by nature.
pub fn scan(pids: Option<&[u32]>) -> Vec<SeedFd> {
    let all: Vec<u32> = match pids {
        Some(p) => p.to_vec(),
        None => fs::read_dir("/proc")
            .map(|rd| {
                rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default(),
    };
    let mut out = Vec::new();
    for pid in all {
        out.extend(scan_pid(pid));
    }
    out
}

/// What fd `fd` of `pid` is now, if it is a VFIO fd (for fds capture did not see opened:
/// opened before it started, received over a socket, duplicated).
pub fn resolve_fd(pid: u32, fd: i32) -> Option<SeedFd> {
    let link = fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    classify_link(&link.to_string_lossy())?;
    // The whole process, so a device fd can be named from the process's groups.
    scan_pid(pid).into_iter().find(|s| s.fd == fd)
}

fn scan_pid(pid: u32) -> Vec<SeedFd> {
    let Ok(rd) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut fds: Vec<SeedFd> = Vec::new();
    for e in rd.flatten() {
        let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(link) = fs::read_link(e.path()) else {
            continue;
        };
        let link = link.to_string_lossy().into_owned();
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
            fd_kind::CDEV => {
                let name = link.trim_start_matches("/dev/vfio/devices/");
                seed.dev = link_basename(&format!("/sys/class/vfio-dev/{name}/device"));
            }
            fd_kind::GROUP => {
                let group = link.trim_start_matches("/dev/vfio/");
                let group = group.trim_start_matches("noiommu-");
                seed.group_devs = group_devices(group);
            }
            fd_kind::DEVICE => seed.dev = fdinfo_syspath(pid, fd),
            _ => {}
        }
        fds.push(seed);
    }
    // A device fd the fdinfo does not name is still unambiguous when the process holds
    // exactly one such fd and its groups hold exactly one device.
    let unnamed: Vec<usize> = (0..fds.len())
        .filter(|&i| fds[i].kind == fd_kind::DEVICE && fds[i].dev.is_none())
        .collect();
    let mut group_devs: Vec<String> = fds.iter().flat_map(|s| s.group_devs.clone()).collect();
    group_devs.sort();
    group_devs.dedup();
    let named = fds
        .iter()
        .filter(|s| s.kind == fd_kind::DEVICE && s.dev.is_some())
        .count();
    if unnamed.len() == 1 && named == 0 && group_devs.len() == 1 {
        fds[unnamed[0]].dev = group_devs.pop();
    }
    fds
}

/// The device path some kernels print in a vfio device fd's fdinfo (`...syspath: /sys/...`).
fn fdinfo_syspath(pid: u32, fd: i32) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
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

fn link_basename(path: &str) -> Option<String> {
    let target = fs::read_link(path).ok()?;
    target.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// Devices of IOMMU group `group` (`/sys/kernel/iommu_groups/<group>/devices`).
pub fn group_devices(group: &str) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(format!("/sys/kernel/iommu_groups/{group}/devices"))
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
    let name = path.strip_prefix("/dev/vfio/devices/")?;
    link_basename(&format!("/sys/class/vfio-dev/{name}/device"))
}

/// The bound driver of PCI device `dev`, if any.
pub fn pci_driver(dev: &str) -> Option<String> {
    link_basename(&format!("/sys/bus/pci/devices/{dev}/driver"))
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

/// `struct vfio_device_feature` + `struct vfio_device_feature_migration` (uAPI).
#[repr(C)]
struct MigrationFeature {
    argsz: u32,
    flags: u32,
    migration_flags: u64,
}

/// `VFIO_DEVICE_FEATURE` and its GET | MIGRATION flags (include/uapi/linux/vfio.h).
const VFIO_DEVICE_FEATURE: u32 = 0x3B75;
const FEATURE_GET_MIGRATION: u32 = (1 << 16) | 1;

/// Asks the kernel for a device's migration flags through a duplicate of `pid`'s device fd
/// `fd` (pidfd_getfd, Linux 5.6+, needs ptrace rights over `pid`). Read-only: a
/// VFIO_DEVICE_FEATURE GET of MIGRATION changes nothing on the device. Used when the device's
/// user queried its flags before recording started.
pub fn query_mig_flags(pid: u32, fd: i32) -> Result<u32, std::io::Error> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if pidfd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd this function owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    // SAFETY: pidfd_getfd takes a pidfd, a target fd number and flags; returns a new fd or -1.
    let dup = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if dup < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd this function owns.
    let dup = unsafe { OwnedFd::from_raw_fd(dup as i32) };
    let mut arg = MigrationFeature {
        argsz: size_of::<MigrationFeature>() as u32,
        flags: FEATURE_GET_MIGRATION,
        migration_flags: 0,
    };
    // SAFETY: arg is a live, correctly sized vfio_device_feature buffer the kernel may write.
    let r = unsafe {
        libc::ioctl(
            dup.as_raw_fd(),
            VFIO_DEVICE_FEATURE as _,
            &mut arg as *mut MigrationFeature,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(arg.migration_flags as u32)
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
