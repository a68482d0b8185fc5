//! A kretprobe with a maxactive of our choosing, for the return halves of the FSM-step hook
//! and of the direct hooks (VFIO ioctls and data transfers, which may sleep).
//!
//! aya 0.14's `KProbe::attach` creates kprobes through the perf kprobe PMU
//! (`perf_event_open` with the `kprobe` event source), which has no maxactive: the kernel then
//! allocates the default, `max(10, 2 * possible CPUs)` instances (`register_kretprobe`,
//! kernel/kprobes.c). Each call of the probed function holds one instance from entry to
//! return; once all are in use the kernel skips the return handler of further calls and only
//! counts them (`nmissed`). tracefs' `kprobe_events` takes the count explicitly
//! (`r<MAXACTIVE>:group/event symbol`, Documentation/trace/kprobetrace.rst), so the return
//! probe is created there, opened as a tracepoint perf event, and the loaded kretprobe program
//! attached to it with `PERF_EVENT_IOC_SET_BPF`, as aya itself does on kernels without the
//! PMU. Dropping the [`Retprobe`] detaches the program and removes the event.

use std::{
    fs::{self, OpenOptions},
    io::{self, Write},
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use probe_common::abi::names;

/// The most instances `kprobe_events` accepts (`KRETPROBE_MAXACTIVE_MAX`,
/// kernel/trace/trace_kprobe.c).
pub const MAXACTIVE_LIMIT: u32 = 4096;

/// The maxactive migscope asks for: four instances per possible CPU, at least 64, at most
/// the kernel's limit. `vfio_mig_get_next_state` is a table walk that never sleeps, called
/// once per arc under the device's state mutex, so the instances in use at once are bounded
/// by the CPUs inside it plus tasks preempted there; four per CPU leaves room for preemption
/// on every CPU at once. A call beyond it loses its return half, which the probe counts as a
/// lost FSM step (see the capture module docs).
pub fn maxactive(possible_cpus: usize) -> u32 {
    let per_cpu = u32::try_from(possible_cpus.saturating_mul(4)).unwrap_or(u32::MAX);
    per_cpu.clamp(64, MAXACTIVE_LIMIT)
}

/// `PERF_TYPE_TRACEPOINT` (include/uapi/linux/perf_event.h).
const PERF_TYPE_TRACEPOINT: u32 = 2;
/// `PERF_FLAG_FD_CLOEXEC`.
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
/// `PERF_EVENT_IOC_ENABLE` = `_IO('$', 0)`, `PERF_EVENT_IOC_SET_BPF` = `_IOW('$', 8, __u32)`
/// (ioctl's request is `c_ulong` in glibc and `c_int` in musl: cast at the call).
const PERF_EVENT_IOC_ENABLE: u32 = 0x2400;
const PERF_EVENT_IOC_SET_BPF: u32 = 0x4004_2408;

/// The first 64 bytes of `struct perf_event_attr` (`PERF_ATTR_SIZE_VER0`): all a tracepoint
/// event needs; the kernel accepts this size from any caller.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    type_: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    /// The bitfield word (disabled, inherit, ...): all clear.
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}
const _: () = assert!(size_of::<PerfEventAttr>() == 64);

/// Distinguishes the events of several captures in one process.
static NEXT: AtomicU32 = AtomicU32::new(0);

/// An attached return probe made through tracefs; detached and removed on drop.
pub struct Retprobe {
    perf: Option<OwnedFd>,
    events_file: PathBuf,
    /// `group/event`.
    name: String,
    pub maxactive: u32,
}

impl Retprobe {
    /// Creates `r<maxactive>:migscope_<pid>/<event>_<n> <func>` in `<tracefs>/kprobe_events`
    /// and attaches the loaded kretprobe program `prog` to it.
    /// `event` names the event (`names::KPROBE_EVENT_*`).
    pub fn attach(
        tracefs: &Path,
        func: &str,
        event: &str,
        maxactive: u32,
        prog: BorrowedFd<'_>,
    ) -> Result<Retprobe, String> {
        let events_file = tracefs.join("kprobe_events");
        remove_stale(&events_file);
        let group = format!("{}{}", names::KPROBE_GROUP_PREFIX, std::process::id());
        let event = format!("{event}_{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let name = format!("{group}/{event}");
        append(&events_file, &format!("r{maxactive}:{name} {func}\n"))
            .map_err(|e| format!("{}: {e}", events_file.display()))?;
        // From here on the event exists: dropping `probe` removes it on any failure.
        let mut probe = Retprobe {
            perf: None,
            events_file,
            name,
            maxactive,
        };
        let id_file = tracefs.join("events").join(&group).join(&event).join("id");
        let id: u64 = fs::read_to_string(&id_file)
            .map_err(|e| format!("{}: {e}", id_file.display()))?
            .trim()
            .parse()
            .map_err(|e| format!("{}: {e}", id_file.display()))?;
        let perf = open_tracepoint(id).map_err(|e| format!("perf_event_open: {e}"))?;
        // SAFETY: `perf` is a perf event fd we own; SET_BPF takes a BPF program fd as its
        // argument and ENABLE none.
        if unsafe {
            libc::ioctl(
                perf.as_raw_fd(),
                PERF_EVENT_IOC_SET_BPF as _,
                prog.as_raw_fd(),
            )
        } != 0
        {
            return Err(format!(
                "PERF_EVENT_IOC_SET_BPF: {}",
                io::Error::last_os_error()
            ));
        }
        // SAFETY: as above.
        if unsafe { libc::ioctl(perf.as_raw_fd(), PERF_EVENT_IOC_ENABLE as _, 0) } != 0 {
            return Err(format!(
                "PERF_EVENT_IOC_ENABLE: {}",
                io::Error::last_os_error()
            ));
        }
        probe.perf = Some(perf);
        Ok(probe)
    }
}

impl Drop for Retprobe {
    fn drop(&mut self) {
        // The event stays busy while a perf event is open on it: close first.
        drop(self.perf.take());
        let _ = append(&self.events_file, &format!("-:{}\n", self.name));
    }
}

fn append(file: &Path, line: &str) -> io::Result<()> {
    OpenOptions::new()
        .append(true)
        .open(file)?
        .write_all(line.as_bytes())
}

/// A tracepoint perf event on CPU 0 for every process: the program attached to it runs on
/// every CPU (kprobe_perf_func / kretprobe_perf_func call BPF before looking at the CPU's
/// perf events).
fn open_tracepoint(id: u64) -> io::Result<OwnedFd> {
    let attr = PerfEventAttr {
        type_: PERF_TYPE_TRACEPOINT,
        size: size_of::<PerfEventAttr>() as u32,
        config: id,
        sample_period: 1,
        wakeup_events: 1,
        ..PerfEventAttr::default()
    };
    // SAFETY: perf_event_open reads `attr` (valid for `size` bytes); pid -1 / cpu 0 / no group.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            -1 as libc::pid_t,
            0 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd the kernel just returned, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Removes events left in `kprobe_events` by migscope processes that no longer exist (one
/// killed before it could remove its own).
fn remove_stale(events_file: &Path) {
    let Ok(text) = fs::read_to_string(events_file) else {
        return;
    };
    for name in stale_events(&text, |pid| Path::new(&format!("/proc/{pid}")).exists()) {
        let _ = append(events_file, &format!("-:{name}\n"));
    }
}

/// The `group/event` names of `kprobe_events` lines whose group is `migscope_<pid>` of a pid
/// that `alive` says is gone.
fn stale_events(text: &str, alive: impl Fn(u32) -> bool) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            // `r64:migscope_1234/next_state_ret_0 vfio_mig_get_next_state`
            let (_, rest) = l.split_once(':')?;
            let name = rest.split_whitespace().next()?;
            let (group, _) = name.split_once('/')?;
            let pid: u32 = group
                .strip_prefix(names::KPROBE_GROUP_PREFIX)?
                .parse()
                .ok()?;
            (!alive(pid)).then(|| name.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maxactive_is_four_per_cpu_within_bounds() {
        assert_eq!(maxactive(2), 64);
        assert_eq!(maxactive(64), 256);
        assert_eq!(maxactive(8192), MAXACTIVE_LIMIT);
        assert_eq!(maxactive(usize::MAX), MAXACTIVE_LIMIT);
    }

    #[test]
    fn only_events_of_dead_migscope_processes_are_stale() {
        let text = "r64:migscope_100/next_state_ret_0 vfio_mig_get_next_state\n\
                    r64:migscope_200/next_state_ret_1 vfio_mig_get_next_state\n\
                    p:kprobes/other do_sys_open\n\
                    r10:migscope_x/y f\n";
        assert_eq!(
            stale_events(text, |pid| pid == 200),
            ["migscope_100/next_state_ret_0"]
        );
    }
}
