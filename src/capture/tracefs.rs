//! tracefs: where the kernel's tracepoints are named. Minimal hosts and containers often do
//! not mount it; as root we mount it at `/sys/kernel/tracing` ourselves (as bpftool mounts
//! bpffs), otherwise say what is missing and the one command that fixes it.

use std::{ffi::CString, fs, path::Path, sync::OnceLock};

/// Where tracefs is looked for, in aya's order (`aya::programs::utils::find_tracefs_path`).
pub const MOUNT_POINTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
/// Where we mount it when it is missing.
pub const MOUNT_AT: &str = MOUNT_POINTS[0];
/// The command that mounts it by hand.
pub const FIX: &str = "mount -t tracefs tracefs /sys/kernel/tracing";

/// What [`ensure`] found or did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tracefs {
    /// Already mounted at this path.
    Present(&'static str),
    /// It was missing and we mounted it here.
    Mounted(&'static str),
    /// Missing, and we could not mount it: why, with the fix.
    Missing(String),
}

impl Tracefs {
    /// The one line to tell the user, if there is something to tell.
    pub fn notice(&self) -> Option<String> {
        match self {
            Tracefs::Present(_) => None,
            Tracefs::Mounted(at) => Some(format!(
                "migscope: tracefs was not mounted: mounted it at {at}"
            )),
            Tracefs::Missing(why) => Some(format!("migscope: {why}")),
        }
    }
}

/// A mount point counts when it lists something (aya's own test: the kernel creates
/// `/sys/kernel/tracing` empty until tracefs is mounted there).
fn populated(p: &str) -> bool {
    fs::read_dir(Path::new(p)).is_ok_and(|mut d| d.next().is_some())
}

/// Makes tracefs reachable: present, mounted now, or missing with the reason and the fix.
/// Must run before the first tracepoint attach of the process (aya looks once and caches);
/// the first call decides and later calls return what it found or did.
pub fn ensure() -> Tracefs {
    static ONCE: OnceLock<Tracefs> = OnceLock::new();
    ONCE.get_or_init(ensure_now).clone()
}

fn ensure_now() -> Tracefs {
    if let Some(p) = MOUNT_POINTS.iter().copied().find(|p| populated(p)) {
        return Tracefs::Present(p);
    }
    // Mounted but root's only (mode 0700): mounting again would not help.
    if let Err(e) = fs::read_dir(MOUNT_AT)
        && e.kind() == std::io::ErrorKind::PermissionDenied
    {
        return Tracefs::Missing(format!(
            "{MOUNT_AT} is not readable by this user ({e}): run migscope as root"
        ));
    }
    if !Path::new(MOUNT_AT).is_dir() {
        return Tracefs::Missing(format!(
            "tracefs is not mounted and {MOUNT_AT} does not exist (a kernel without \
             CONFIG_TRACING has no tracepoints); tracepoint hooks are unavailable"
        ));
    }
    match mount_tracefs() {
        Ok(()) if populated(MOUNT_AT) => Tracefs::Mounted(MOUNT_AT),
        Ok(()) => Tracefs::Missing(format!(
            "mounted tracefs at {MOUNT_AT} but it is empty; tracepoint hooks are unavailable"
        )),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Tracefs::Missing(format!(
            "tracefs is not mounted and this process may not mount it ({e}: mounting needs \
             CAP_SYS_ADMIN, which containers usually drop); on the host, as root, run: {FIX}"
        )),
        Err(e) => Tracefs::Missing(format!(
            "tracefs is not mounted and mounting it failed ({e}); as root run: {FIX}"
        )),
    }
}

fn mount_tracefs() -> std::io::Result<()> {
    let c = |s: &str| CString::new(s).map_err(std::io::Error::other);
    let (src, target, fstype) = (c("tracefs")?, c(MOUNT_AT)?, c("tracefs")?);
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call; `data`
    // may be null for tracefs (no mount options).
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
