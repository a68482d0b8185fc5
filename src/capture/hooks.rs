//! The probe's hooks: attaching each one on its own, recording how (or why not), and what that
//! means for the trace header's evidence `sources`.

use std::{collections::BTreeMap, fmt, fs, os::fd::AsFd};

use aya::{
    Btf, Ebpf,
    programs::{FEntry, FExit, KProbe, ProgramError, TracePoint},
};
use probe_common::abi::{names as n, tp};

use super::HooksMode;
use super::kretprobe::{self, Retprobe};
use crate::trace::{hooks_path, source};

/// Hook names as `doctor` and the reasons show them.
pub const HOOK_IRQ: &str = "irq:irq_handler_entry";
const HOOK_STEP: &str = "vfio_mig_get_next_state";
const HOOK_MSI: &str = "vfio_msihandler";
const HOOK_DMA_RW: &str = "vfio_dma_rw";
const HOOK_PIN_PAGES: &str = "vfio_pin_pages";

/// A hook's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookState {
    /// Attached; the mechanism (`tracepoint`, `fexit`, `kprobe+kretprobe`, ...).
    Attached(String),
    /// Not attached, and why.
    Unavailable(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookStatus {
    /// e.g. `syscalls:sys_enter_ioctl`, `vfio_mig_get_next_state`.
    pub name: String,
    /// The evidence it serves (`transitions`, `irq`, ..., or `fd_tracking`, `data`).
    pub serves: &'static str,
    pub state: HookState,
}

impl HookStatus {
    pub fn attached(&self) -> bool {
        matches!(self.state, HookState::Attached(_))
    }
}

impl fmt::Display for HookStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.state {
            HookState::Attached(how) => write!(f, "{}: attached ({how})", self.name),
            HookState::Unavailable(why) => write!(f, "{}: unavailable: {why}", self.name),
        }
    }
}

/// What a hook serves besides the header's named sources.
const FD_TRACKING: &str = "fd_tracking";
const DATA: &str = "data";

struct Tp {
    prog: &'static str,
    category: &'static str,
    name: &'static str,
    serves: &'static str,
    /// (field, offset) pairs the program hard-codes, checked against the format file.
    fields: &'static [(&'static str, usize)],
}

const TRACEPOINTS: &[Tp] = &[
    Tp {
        prog: n::PROG_SYS_ENTER_IOCTL,
        category: n::TP_SYSCALLS,
        name: n::TP_SYS_ENTER_IOCTL,
        serves: source::TRANSITIONS,
        fields: &[
            ("fd", tp::SYS_ARG0),
            ("cmd", tp::SYS_ARG1),
            ("arg", tp::SYS_ARG2),
        ],
    },
    Tp {
        prog: n::PROG_SYS_EXIT_IOCTL,
        category: n::TP_SYSCALLS,
        name: n::TP_SYS_EXIT_IOCTL,
        serves: source::TRANSITIONS,
        fields: &[("ret", tp::SYS_EXIT_RET)],
    },
    Tp {
        prog: n::PROG_SYS_ENTER_OPENAT,
        category: n::TP_SYSCALLS,
        name: n::TP_SYS_ENTER_OPENAT,
        serves: FD_TRACKING,
        fields: &[("filename", tp::SYS_ARG1)],
    },
    Tp {
        prog: n::PROG_SYS_EXIT_OPENAT,
        category: n::TP_SYSCALLS,
        name: n::TP_SYS_EXIT_OPENAT,
        serves: FD_TRACKING,
        fields: &[("ret", tp::SYS_EXIT_RET)],
    },
    // open(2) exists on x86_64 only (musl's open() uses it); elsewhere this hook is reported
    // unavailable and openat covers every open.
    Tp {
        prog: n::PROG_SYS_ENTER_OPEN,
        category: n::TP_SYSCALLS,
        name: n::TP_SYS_ENTER_OPEN,
        serves: FD_TRACKING,
        fields: &[("filename", tp::SYS_ARG0)],
    },
    Tp {
        prog: n::PROG_SYS_EXIT_OPEN,
        category: n::TP_SYSCALLS,
        name: n::TP_SYS_EXIT_OPEN,
        serves: FD_TRACKING,
        fields: &[("ret", tp::SYS_EXIT_RET)],
    },
    Tp {
        prog: n::PROG_SYS_ENTER_CLOSE,
        category: n::TP_SYSCALLS,
        name: n::TP_SYS_ENTER_CLOSE,
        serves: FD_TRACKING,
        fields: &[("fd", tp::SYS_ARG0)],
    },
    Tp {
        prog: n::PROG_SYS_ENTER_READ,
        category: n::TP_SYSCALLS,
        name: n::TP_SYS_ENTER_READ,
        serves: DATA,
        fields: &[("fd", tp::SYS_ARG0)],
    },
    Tp {
        prog: n::PROG_SYS_EXIT_READ,
        category: n::TP_SYSCALLS,
        name: n::TP_SYS_EXIT_READ,
        serves: DATA,
        fields: &[("ret", tp::SYS_EXIT_RET)],
    },
    Tp {
        prog: n::PROG_SYS_ENTER_WRITE,
        category: n::TP_SYSCALLS,
        name: n::TP_SYS_ENTER_WRITE,
        serves: DATA,
        fields: &[("fd", tp::SYS_ARG0)],
    },
    Tp {
        prog: n::PROG_SYS_EXIT_WRITE,
        category: n::TP_SYSCALLS,
        name: n::TP_SYS_EXIT_WRITE,
        serves: DATA,
        fields: &[("ret", tp::SYS_EXIT_RET)],
    },
    Tp {
        prog: n::PROG_IRQ_HANDLER_ENTRY,
        category: n::TP_IRQ,
        name: n::TP_IRQ_HANDLER_ENTRY,
        serves: source::IRQ,
        fields: &[("irq", tp::IRQ_IRQ), ("name", tp::IRQ_NAME_LOC)],
    },
    Tp {
        prog: n::PROG_IOMMU_MAP,
        category: n::TP_IOMMU,
        name: n::TP_IOMMU_MAP,
        serves: source::IOMMU_MAP,
        fields: &[
            ("iova", tp::IOMMU_MAP_IOVA),
            ("paddr", tp::IOMMU_MAP_PADDR),
            ("size", tp::IOMMU_MAP_SIZE),
        ],
    },
    Tp {
        prog: n::PROG_IOMMU_UNMAP,
        category: n::TP_IOMMU,
        name: n::TP_IOMMU_UNMAP,
        serves: source::IOMMU_MAP,
        fields: &[
            ("iova", tp::IOMMU_UNMAP_IOVA),
            ("size", tp::IOMMU_UNMAP_SIZE),
            ("unmapped_size", tp::IOMMU_UNMAP_UNMAPPED),
        ],
    },
    Tp {
        prog: n::PROG_IOMMU_FAULT,
        category: n::TP_IOMMU,
        name: n::TP_IOMMU_FAULT,
        serves: source::IOMMU_FAULT,
        fields: &[
            ("device", tp::IOMMU_FAULT_DEVICE_LOC),
            ("driver", tp::IOMMU_FAULT_DRIVER_LOC),
            ("iova", tp::IOMMU_FAULT_IOVA),
            ("flags", tp::IOMMU_FAULT_FLAGS),
        ],
    },
];

/// What the fork hook serves.
const PID_FILTER: &str = "pid_filter";

/// The running kernel's format file of a tracepoint, if tracefs is reachable.
pub fn tracepoint_format(category: &str, name: &str) -> Option<String> {
    super::tracefs::MOUNT_POINTS
        .iter()
        .find_map(|root| fs::read_to_string(format!("{root}/events/{category}/{name}/format")).ok())
}

/// Offset of `sched_process_fork`'s `child_pid` on this kernel (the probe's
/// `FORK_CHILD_PID_OFFSET` global).
pub fn fork_child_pid_offset() -> Option<usize> {
    tracepoint_format(n::TP_SCHED, n::TP_SCHED_PROCESS_FORK)
        .and_then(|t| format_offset(&t, "child_pid"))
}

/// What [`attach_all`] attached.
pub struct Attachment {
    pub hooks: Vec<HookStatus>,
    /// Return probes made through tracefs: they must live as long as the probe.
    pub retprobes: Vec<Retprobe>,
    /// How VFIO's syscalls are seen, for the trace header's `hooks`: `direct` or
    /// `tracepoint`, with what was left to tracepoints or why direct hooks were not used.
    pub path: String,
}

/// Attaches every hook the kernel allows. `fork_offset` is what the loader patched into the
/// probe (`None`: the fork hook stays off). Fails only for `--hooks direct` on a kernel
/// that refuses a needed direct hook (auto then uses the syscall tracepoints).
pub fn attach_all(
    ebpf: &mut Ebpf,
    fork_offset: Option<usize>,
    mode: HooksMode,
) -> Result<Attachment, String> {
    let mut retprobes = Vec::new();
    let (mut out, path) = match mode {
        HooksMode::Tracepoint => (
            attach_tracepoints(ebpf, |tp| tp.category == n::TP_SYSCALLS),
            hooks_path::TRACEPOINT.to_owned(),
        ),
        HooksMode::Direct | HooksMode::Auto => match attach_direct(ebpf) {
            Ok(d) => {
                retprobes = d.retprobes;
                let mut hooks = d.hooks;
                let path = match &d.data_fallback {
                    None => hooks_path::DIRECT.to_owned(),
                    Some(why) => {
                        // The data files' read/write (and their closes) stay on the
                        // syscall tracepoints: said, never silently lost.
                        hooks.extend(attach_tracepoints(ebpf, |tp| {
                            tp.serves == DATA || tp.name == n::TP_SYS_ENTER_CLOSE
                        }));
                        format!(
                            "{} (migration data files through the syscall tracepoints: {why})",
                            hooks_path::DIRECT
                        )
                    }
                };
                (hooks, path)
            }
            Err(why) if mode == HooksMode::Direct => {
                return Err(format!("--hooks direct: {why}"));
            }
            Err(why) => (
                attach_tracepoints(ebpf, |tp| tp.category == n::TP_SYSCALLS),
                format!("{} (direct hooks refused: {why})", hooks_path::TRACEPOINT),
            ),
        },
    };
    out.extend(attach_tracepoints(ebpf, |tp| tp.category != n::TP_SYSCALLS));
    let fork = match fork_offset {
        None => HookState::Unavailable(
            "no readable sched_process_fork format file (tracefs not mounted?): --pid follows \
             children through /proc only"
                .to_owned(),
        ),
        Some(_) => attach_tracepoint(
            ebpf,
            &Tp {
                prog: n::PROG_SCHED_PROCESS_FORK,
                category: n::TP_SCHED,
                name: n::TP_SCHED_PROCESS_FORK,
                serves: PID_FILTER,
                fields: &[],
            },
        ),
    };
    out.push(HookStatus {
        name: format!("{}:{}", n::TP_SCHED, n::TP_SCHED_PROCESS_FORK),
        serves: PID_FILTER,
        state: fork,
    });
    let btf = Btf::from_sys_fs().map_err(|e| format!("no vmlinux BTF: {e}"));
    let (step, retprobe) = attach_step(ebpf, &btf);
    out.push(HookStatus {
        name: HOOK_STEP.to_owned(),
        serves: source::TRANSITIONS,
        state: step,
    });
    out.push(HookStatus {
        name: HOOK_MSI.to_owned(),
        serves: source::IRQ,
        state: attach_fn(
            ebpf,
            &btf,
            n::FN_MSIHANDLER,
            n::PROG_FENTRY_MSIHANDLER,
            n::PROG_KPROBE_MSIHANDLER,
        ),
    });
    out.push(HookStatus {
        name: HOOK_DMA_RW.to_owned(),
        serves: source::MDEV_DMA,
        state: attach_fn(
            ebpf,
            &btf,
            n::FN_DMA_RW,
            n::PROG_FENTRY_DMA_RW,
            n::PROG_KPROBE_DMA_RW,
        ),
    });
    out.push(HookStatus {
        name: HOOK_PIN_PAGES.to_owned(),
        serves: source::MDEV_DMA,
        state: attach_fn(
            ebpf,
            &btf,
            n::FN_PIN_PAGES,
            n::PROG_FENTRY_PIN_PAGES,
            n::PROG_KPROBE_PIN_PAGES,
        ),
    });
    retprobes.extend(retprobe);
    Ok(Attachment {
        hooks: out,
        retprobes,
        path,
    })
}

/// The tracepoints of [`TRACEPOINTS`] that `which` selects, each attached on its own.
fn attach_tracepoints(ebpf: &mut Ebpf, which: impl Fn(&Tp) -> bool) -> Vec<HookStatus> {
    TRACEPOINTS
        .iter()
        .filter(|tp| which(tp))
        .map(|tp| HookStatus {
            name: format!("{}:{}", tp.category, tp.name),
            serves: tp.serves,
            state: attach_tracepoint(ebpf, tp),
        })
        .collect()
}

/// The direct hooks, attached: return halves before entry halves (an entry without its
/// return would leave a request open).
struct Direct {
    hooks: Vec<HookStatus>,
    retprobes: Vec<Retprobe>,
    /// Why the data files are not hooked directly (`None`: they are).
    data_fallback: Option<String>,
}

/// The VFIO ioctl handlers: (function, entry program, needed). A handler absent from
/// `/proc/kallsyms` (a kernel without that interface, e.g. iommufd before 6.2) is not
/// needed; one present must attach.
const DIRECT_IOCTLS: &[(&str, &str)] = &[
    (n::FN_DEVICE_IOCTL, n::PROG_KPROBE_IOCTL_DEVICE),
    (n::FN_GROUP_IOCTL, n::PROG_KPROBE_IOCTL_GROUP),
    (n::FN_CONTAINER_IOCTL, n::PROG_KPROBE_IOCTL_CONTAINER),
    (n::FN_IOMMUFD_IOCTL, n::PROG_KPROBE_IOCTL_IOMMUFD),
];
const DIRECT_RELEASES: &[&str] = &[
    n::FN_DEVICE_RELEASE,
    n::FN_GROUP_RELEASE,
    n::FN_CONTAINER_RELEASE,
    n::FN_IOMMUFD_RELEASE,
];

/// Kprobe links made so far, to take off again when the direct path is given up.
type Links = Vec<(&'static str, aya::programs::kprobe::KProbeLinkId)>;

fn attach_direct(ebpf: &mut Ebpf) -> Result<Direct, String> {
    let kallsyms =
        fs::read_to_string("/proc/kallsyms").map_err(|e| format!("/proc/kallsyms: {e}"))?;
    let wanted: Vec<&str> = DIRECT_IOCTLS
        .iter()
        .map(|(f, _)| *f)
        .chain(DIRECT_RELEASES.iter().copied())
        .collect();
    let present = super::fops::functions_present(&kallsyms, &wanted);
    if !present.contains(&n::FN_DEVICE_IOCTL) {
        return Err(format!(
            "{} not in /proc/kallsyms (vfio not loaded?)",
            n::FN_DEVICE_IOCTL
        ));
    }
    let mut links: Links = Vec::new();
    let mut retprobes = Vec::new();
    match attach_direct_inner(ebpf, &kallsyms, &present, &mut links, &mut retprobes) {
        Ok((hooks, data_fallback)) => Ok(Direct {
            hooks,
            retprobes,
            data_fallback,
        }),
        Err(e) => {
            // Give the direct path up entirely: nothing of it may fire beside the tracepoints.
            drop(retprobes);
            for (prog, link) in links {
                if let Ok(p) = program::<KProbe>(ebpf, prog) {
                    let _ = p.detach(link);
                }
            }
            Err(e)
        }
    }
}

type DirectHooks = (Vec<HookStatus>, Option<String>);

fn attach_direct_inner(
    ebpf: &mut Ebpf,
    kallsyms: &str,
    present: &[&str],
    links: &mut Links,
    retprobes: &mut Vec<Retprobe>,
) -> Result<DirectHooks, String> {
    let mut hooks = Vec::new();
    // Data files first: their return halves, then entries.
    let (fops, data_fallback) = match super::fops::discover(n::MOD_VFIO_PCI_CORE, kallsyms) {
        Ok(f) if f.is_empty() => (
            Vec::new(),
            Some(format!(
                "no loaded module uses {}: no data file_operations to hook",
                n::MOD_VFIO_PCI_CORE
            )),
        ),
        Ok(f) => (f, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    for f in &fops {
        let mut how = Vec::new();
        for (func, entry, ret, event) in [
            (
                &f.read,
                n::PROG_KPROBE_DATA_READ,
                n::PROG_KRETPROBE_DATA_RW,
                n::KPROBE_EVENT_DATA_RET,
            ),
            (
                &f.write,
                n::PROG_KPROBE_DATA_WRITE,
                n::PROG_KRETPROBE_DATA_RW,
                n::KPROBE_EVENT_DATA_RET,
            ),
            (
                &f.ioctl,
                n::PROG_KPROBE_IOCTL_DATA,
                n::PROG_KRETPROBE_IOCTL,
                n::KPROBE_EVENT_IOCTL_RET,
            ),
        ] {
            let Some(func) = func else { continue };
            let r = attach_pair(ebpf, func, entry, ret, event, links, retprobes)
                .map_err(|e| format!("{}:{} .{func}: {e}", f.module, f.symbol))?;
            how.push(format!("{func} ({r})"));
        }
        if let Some(rel) = &f.release {
            let link = attach_kprobe(ebpf, n::PROG_KPROBE_RELEASE, rel)
                .map_err(|e| format!("{}:{} .{rel}: {e}", f.module, f.symbol))?;
            links.push((n::PROG_KPROBE_RELEASE, link));
            how.push(format!("{rel} (kprobe)"));
        }
        hooks.push(HookStatus {
            name: format!("{}:{}", f.module, f.symbol),
            serves: DATA,
            state: HookState::Attached(how.join(", ")),
        });
    }
    for &rel in DIRECT_RELEASES {
        if !present.contains(&rel) {
            continue;
        }
        let link = attach_kprobe(ebpf, n::PROG_KPROBE_RELEASE, rel)?;
        links.push((n::PROG_KPROBE_RELEASE, link));
        hooks.push(HookStatus {
            name: rel.to_owned(),
            serves: FD_TRACKING,
            state: HookState::Attached("kprobe".to_owned()),
        });
    }
    for &(func, entry) in DIRECT_IOCTLS {
        if !present.contains(&func) {
            hooks.push(HookStatus {
                name: func.to_owned(),
                serves: source::TRANSITIONS,
                state: HookState::Unavailable(
                    "not in /proc/kallsyms: this kernel has no such interface".to_owned(),
                ),
            });
            continue;
        }
        let how = attach_pair(
            ebpf,
            func,
            entry,
            n::PROG_KRETPROBE_IOCTL,
            n::KPROBE_EVENT_IOCTL_RET,
            links,
            retprobes,
        )
        .map_err(|e| format!("{func}: {e}"))?;
        hooks.push(HookStatus {
            name: func.to_owned(),
            serves: source::TRANSITIONS,
            state: HookState::Attached(how),
        });
    }
    Ok((hooks, data_fallback))
}

/// A kretprobe (`ret`, through tracefs with our maxactive, else aya's) and then a kprobe
/// (`entry`) on `func`; how, in words.
fn attach_pair(
    ebpf: &mut Ebpf,
    func: &str,
    entry: &'static str,
    ret: &'static str,
    event: &str,
    links: &mut Links,
    retprobes: &mut Vec<Retprobe>,
) -> Result<String, String> {
    let how = match tracefs_retprobe_of(ebpf, ret, func, event) {
        Ok(r) => {
            let how = format!("kprobe+kretprobe (maxactive {} via tracefs)", r.maxactive);
            retprobes.push(r);
            how
        }
        Err(tracefs_err) => {
            let link = attach_kprobe(ebpf, ret, func)
                .map_err(|e| format!("kretprobe: {tracefs_err}; {e}"))?;
            links.push((ret, link));
            format!(
                "kprobe+kretprobe (the kernel's default maxactive: tracefs kretprobe: {tracefs_err})"
            )
        }
    };
    let link = attach_kprobe(ebpf, entry, func).map_err(|e| format!("kprobe: {e}"))?;
    links.push((entry, link));
    Ok(how)
}

/// Every hook [`attach_all`] tries, each unavailable for `why` (a binary built without the
/// probe: [`super::NO_PROBE`]), in the same order.
pub fn unattached(why: &str) -> Vec<HookStatus> {
    let tracepoints = TRACEPOINTS
        .iter()
        .map(|tp| (format!("{}:{}", tp.category, tp.name), tp.serves));
    let fork = (
        format!("{}:{}", n::TP_SCHED, n::TP_SCHED_PROCESS_FORK),
        PID_FILTER,
    );
    let functions = [
        (HOOK_STEP, source::TRANSITIONS),
        (HOOK_MSI, source::IRQ),
        (HOOK_DMA_RW, source::MDEV_DMA),
        (HOOK_PIN_PAGES, source::MDEV_DMA),
    ]
    .map(|(name, serves)| (name.to_owned(), serves));
    tracepoints
        .chain([fork])
        .chain(functions)
        .map(|(name, serves)| HookStatus {
            name,
            serves,
            state: HookState::Unavailable(why.to_owned()),
        })
        .collect()
}

fn attach_tracepoint(ebpf: &mut Ebpf, tp: &Tp) -> HookState {
    if let Err(why) = check_format(tp) {
        return HookState::Unavailable(why);
    }
    let Some(prog) = ebpf.program_mut(tp.prog) else {
        return HookState::Unavailable(format!("program {} missing from the probe", tp.prog));
    };
    let prog: &mut TracePoint = match prog.try_into() {
        Ok(p) => p,
        Err(e) => return HookState::Unavailable(short(&e)),
    };
    if let Err(e) = prog.load() {
        return HookState::Unavailable(format!("load refused: {}", short(&e)));
    }
    match prog.attach(tp.category, tp.name) {
        Ok(_) => HookState::Attached("tracepoint".to_owned()),
        Err(e) => HookState::Unavailable(format!("attach refused: {}", short(&e))),
    }
}

/// Checks the offsets the probe hard-codes against the running kernel's format file. An
/// unreadable format file (no tracefs mounted) is not a mismatch: attaching decides.
fn check_format(tp: &Tp) -> Result<(), String> {
    let Some(text) = tracepoint_format(tp.category, tp.name) else {
        return Ok(());
    };
    for &(field, want) in tp.fields {
        match format_offset(&text, field) {
            Some(got) if got == want => {}
            Some(got) => {
                return Err(format!(
                    "format mismatch: field {field} at offset {got}, the probe reads {want}"
                ));
            }
            None => return Err(format!("format mismatch: no field {field}")),
        }
    }
    Ok(())
}

/// The offset of `field` in a tracepoint format file
/// (`field:<type> <name>;\toffset:<n>;\tsize:<n>;...`).
pub fn format_offset(text: &str, field: &str) -> Option<usize> {
    text.lines().find_map(|l| {
        let l = l.trim();
        let decl = l.strip_prefix("field:")?;
        let (decl, rest) = decl.split_once(';')?;
        let name = decl.split_whitespace().last()?;
        let name = name.split('[').next()?;
        if name != field {
            return None;
        }
        let off = rest.trim().strip_prefix("offset:")?.split(';').next()?;
        off.trim().parse().ok()
    })
}

/// `vfio_mig_get_next_state`: fexit (reads `*next`) first; kprobe+kretprobe (6.1 refuses the
/// enum pointer in fexit; aya 0.14 cannot aim fexit at module BTF) otherwise, the kretprobe
/// made through tracefs with [`kretprobe::maxactive`] instances, or through aya (the kernel's
/// default maxactive) when tracefs cannot make it.
fn attach_step(ebpf: &mut Ebpf, btf: &Result<Btf, String>) -> (HookState, Option<Retprobe>) {
    let f = n::FN_MIG_GET_NEXT_STATE;
    let fexit_err = match btf {
        Err(e) => e.clone(),
        Ok(btf) => match program::<FExit>(ebpf, n::PROG_FEXIT_NEXT_STATE) {
            Err(e) => e,
            Ok(p) => match p.load(f, btf) {
                Err(e) => format!("load refused: {}", short(&e)),
                Ok(()) => match p.attach() {
                    Ok(_) => return (HookState::Attached("fexit".to_owned()), None),
                    Err(e) => format!("attach refused: {}", short(&e)),
                },
            },
        },
    };
    let entry = match attach_kprobe(ebpf, n::PROG_KPROBE_NEXT_STATE, f) {
        Ok(link) => link,
        Err(e) => {
            let why = format!("fexit: {fexit_err}; kprobe: {e}");
            return (HookState::Unavailable(why), None);
        }
    };
    let tracefs_err = match tracefs_retprobe(ebpf, f) {
        Ok(r) => {
            let how = format!(
                "kprobe+kretprobe (maxactive {} via tracefs; fexit: {fexit_err})",
                r.maxactive
            );
            return (HookState::Attached(how), Some(r));
        }
        Err(e) => e,
    };
    match attach_kprobe(ebpf, n::PROG_KRETPROBE_NEXT_STATE, f) {
        Ok(_) => (
            HookState::Attached(format!(
                "kprobe+kretprobe (the kernel's default maxactive, max(10, 2 x CPUs): \
                 tracefs kretprobe: {tracefs_err}; fexit: {fexit_err})"
            )),
            None,
        ),
        Err(e) => {
            // Without the return half the entry half only fills a map: take it off again.
            if let Ok(p) = program::<KProbe>(ebpf, n::PROG_KPROBE_NEXT_STATE) {
                let _ = p.detach(entry);
            }
            let why = format!("fexit: {fexit_err}; kretprobe: {tracefs_err}; {e}");
            (HookState::Unavailable(why), None)
        }
    }
}

/// The kretprobe program `prog` loaded and attached to a tracefs return probe `event` on
/// `func` with our maxactive.
fn tracefs_retprobe_of(
    ebpf: &mut Ebpf,
    prog: &str,
    func: &str,
    event: &str,
) -> Result<Retprobe, String> {
    let root = super::tracefs::MOUNT_POINTS
        .iter()
        .map(std::path::Path::new)
        .find(|p| p.join("kprobe_events").exists())
        .ok_or("no kprobe_events in tracefs (a kernel without CONFIG_KPROBE_EVENTS)")?;
    let cpus = aya::util::nr_cpus().map_err(|(f, e)| format!("{f}: {e}"))?;
    let p = loaded(ebpf, prog)?;
    let fd = p.fd().map_err(|e| short(&e))?;
    Retprobe::attach(root, func, event, kretprobe::maxactive(cpus), fd.as_fd())
}

/// The kretprobe program loaded and attached to a tracefs return probe on `func` with our
/// maxactive.
fn tracefs_retprobe(ebpf: &mut Ebpf, func: &str) -> Result<Retprobe, String> {
    tracefs_retprobe_of(
        ebpf,
        n::PROG_KRETPROBE_NEXT_STATE,
        func,
        n::KPROBE_EVENT_NEXT_STATE_RET,
    )
}

/// A kernel function hook: fentry first, kprobe otherwise.
fn attach_fn(
    ebpf: &mut Ebpf,
    btf: &Result<Btf, String>,
    func: &str,
    fentry: &str,
    kprobe: &str,
) -> HookState {
    let fentry_err = match btf {
        Err(e) => e.clone(),
        Ok(btf) => match program::<FEntry>(ebpf, fentry) {
            Err(e) => e,
            Ok(p) => match p.load(func, btf) {
                Err(e) => format!("load refused: {}", short(&e)),
                Ok(()) => match p.attach() {
                    Ok(_) => return HookState::Attached("fentry".to_owned()),
                    Err(e) => format!("attach refused: {}", short(&e)),
                },
            },
        },
    };
    match attach_kprobe(ebpf, kprobe, func) {
        Ok(_) => HookState::Attached(format!("kprobe (fentry: {fentry_err})")),
        Err(e) => HookState::Unavailable(format!("fentry: {fentry_err}; kprobe: {e}")),
    }
}

fn attach_kprobe(
    ebpf: &mut Ebpf,
    prog: &str,
    func: &str,
) -> Result<aya::programs::kprobe::KProbeLinkId, String> {
    loaded(ebpf, prog)?
        .attach(func, 0)
        .map_err(|e| format!("attach refused: {}", short(&e)))
}

/// A kprobe program, loaded (once: a failed tracefs attach leaves it loaded for aya's).
fn loaded<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut KProbe, String> {
    let p = program::<KProbe>(ebpf, name)?;
    if p.fd().is_err() {
        p.load()
            .map_err(|e| format!("load refused: {}", short(&e)))?;
    }
    Ok(p)
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let p = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program {name} missing from the probe"))?;
    p.try_into().map_err(|e: ProgramError| short(&e))
}

/// An error in one line: the errno, and for verifier rejections the log's last line.
fn short(e: &ProgramError) -> String {
    let s = short_raw(e);
    if s.contains("unknown BTF type") {
        format!(
            "{s} (not in vmlinux BTF: its module is not loaded or it is a module function, and \
             aya 0.14 resolves fentry/fexit targets in vmlinux BTF only)"
        )
    } else if s.contains(super::diagnose::KPROBE_PMU) {
        super::diagnose::NO_KPROBE_PMU.to_owned()
    } else {
        s
    }
}

fn short_raw(e: &ProgramError) -> String {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let last = log
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            format!("{io_error} (verifier: {})", last.trim())
        }
        other => {
            let mut s = other.to_string();
            let mut src = std::error::Error::source(other);
            while let Some(e) = src {
                s.push_str(": ");
                s.push_str(&e.to_string());
                src = e.source();
            }
            s
        }
    }
}

/// The header's `sources` from the hooks' outcomes.
/// Whether this host has mediated devices (`/sys/bus/mdev/devices`): the only devices whose
/// DMA `vfio_dma_rw` / `vfio_pin_pages` see.
pub fn mdev_devices_present() -> bool {
    std::fs::read_dir("/sys/bus/mdev/devices").is_ok_and(|mut d| d.next().is_some())
}

/// The header's `sources` from what attached. `mdev_present`: see [`mdev_devices_present`];
/// without mediated devices the mdev hooks witness nobody's DMA, so `mdev_dma` is not claimed.
pub fn sources(hooks: &[HookStatus], mdev_present: bool) -> BTreeMap<String, String> {
    let find = |name: &str| hooks.iter().find(|h| h.name == name);
    let why = |h: Option<&HookStatus>| match h.map(|h| &h.state) {
        Some(HookState::Unavailable(w)) => format!("{}: {w}", h.map_or("", |h| &h.name)),
        Some(HookState::Attached(_)) => String::new(),
        None => "hook missing".to_owned(),
    };
    let ok = |h: Option<&HookStatus>| h.is_some_and(HookStatus::attached);
    let mut out = BTreeMap::new();

    // The ioctls come from the syscall tracepoints or from the direct hook on the device
    // ioctl handler, whichever path was attached.
    let direct = find(n::FN_DEVICE_IOCTL);
    let (enter, exit) = match direct {
        Some(d) => (Some(d), Some(d)),
        None => (
            find("syscalls:sys_enter_ioctl"),
            find("syscalls:sys_exit_ioctl"),
        ),
    };
    let step = find(HOOK_STEP);
    let transitions = if !ok(enter) || !ok(exit) {
        let w = if ok(enter) { why(exit) } else { why(enter) };
        format!("unavailable: {w}")
    } else if !ok(step) {
        format!(
            "unavailable: {} ({}); set/set_done/get come from syscalls only",
            super::NO_STEPS,
            why(step)
        )
    } else {
        "ok".to_owned()
    };
    out.insert(source::TRANSITIONS.to_owned(), transitions);

    let irq = find(HOOK_IRQ);
    let msi = find(HOOK_MSI);
    let irq_s = if ok(irq) || ok(msi) {
        "ok".to_owned()
    } else {
        format!("unavailable: {}; {}", why(irq), why(msi))
    };
    out.insert(source::IRQ.to_owned(), irq_s);

    let map = find("iommu:map");
    let unmap = find("iommu:unmap");
    let map_s = if ok(map) && ok(unmap) {
        "ok".to_owned()
    } else if !ok(map) {
        format!("unavailable: {}", why(map))
    } else {
        format!("unavailable: {}", why(unmap))
    };
    out.insert(source::IOMMU_MAP.to_owned(), map_s);

    let fault = find("iommu:io_page_fault");
    let fault_s = if ok(fault) {
        "ok".to_owned()
    } else {
        format!("unavailable: {}", why(fault))
    };
    out.insert(source::IOMMU_FAULT.to_owned(), fault_s);

    let rw = find(HOOK_DMA_RW);
    let pin = find(HOOK_PIN_PAGES);
    let mdev = if ok(rw) && ok(pin) && mdev_present {
        "ok".to_owned()
    } else if ok(rw) && ok(pin) {
        "unavailable: no mediated devices on this host (vfio_dma_rw/vfio_pin_pages witness only mdev DMA, not a PCI device's)".to_owned()
    } else {
        let mut w = Vec::new();
        if !ok(rw) {
            w.push(why(rw));
        }
        if !ok(pin) {
            w.push(why(pin));
        }
        format!("unavailable: {}", w.join("; "))
    };
    out.insert(source::MDEV_DMA.to_owned(), mdev);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORMAT: &str = "name: unmap\nID: 2179\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\n\tfield:u64 iova;\toffset:8;\tsize:8;\tsigned:0;\n\tfield:size_t size;\toffset:16;\tsize:8;\tsigned:0;\n\tfield:__data_loc char[] name;\toffset:12;\tsize:4;\tsigned:0;\n";

    #[test]
    fn reads_format_offsets() {
        assert_eq!(format_offset(FORMAT, "iova"), Some(8));
        assert_eq!(format_offset(FORMAT, "size"), Some(16));
        assert_eq!(format_offset(FORMAT, "name"), Some(12));
        assert_eq!(format_offset(FORMAT, "paddr"), None);
    }

    fn hook(name: &str, serves: &'static str, ok: bool) -> HookStatus {
        HookStatus {
            name: name.to_owned(),
            serves,
            state: if ok {
                HookState::Attached("tracepoint".into())
            } else {
                HookState::Unavailable("kprobe: refused".into())
            },
        }
    }

    #[test]
    fn sources_follow_hooks() {
        let hooks = vec![
            hook("syscalls:sys_enter_ioctl", source::TRANSITIONS, true),
            hook("syscalls:sys_exit_ioctl", source::TRANSITIONS, true),
            hook(HOOK_STEP, source::TRANSITIONS, false),
            hook(HOOK_IRQ, source::IRQ, true),
            hook(HOOK_MSI, source::IRQ, false),
            hook("iommu:map", source::IOMMU_MAP, true),
            hook("iommu:unmap", source::IOMMU_MAP, true),
            hook("iommu:io_page_fault", source::IOMMU_FAULT, true),
            hook(HOOK_DMA_RW, source::MDEV_DMA, false),
            hook(HOOK_PIN_PAGES, source::MDEV_DMA, false),
        ];
        let s = sources(&hooks, true);
        assert_eq!(s["irq"], "ok");
        assert_eq!(s["iommu_map"], "ok");
        assert_eq!(s["iommu_fault"], "ok");
        assert!(s["transitions"].starts_with("unavailable: FSM steps not observable"));
        assert!(s["mdev_dma"].contains("vfio_dma_rw: kprobe: refused"));
    }

    /// On the direct path the device ioctl handler's hook stands for the ioctl tracepoints.
    #[test]
    fn transitions_come_from_the_direct_ioctl_hook_when_it_is_used() {
        let mut hooks = vec![
            hook(n::FN_DEVICE_IOCTL, source::TRANSITIONS, true),
            hook(HOOK_STEP, source::TRANSITIONS, true),
        ];
        assert_eq!(sources(&hooks, false)["transitions"], "ok");
        hooks[0].state = HookState::Unavailable("attach refused: EINVAL".into());
        let s = sources(&hooks, false);
        assert!(
            s["transitions"].starts_with("unavailable: vfio_device_fops_unl_ioctl: attach"),
            "{}",
            s["transitions"]
        );
    }

    /// A binary built with AYA_BUILD_SKIP: every source says why, none claims `ok`.
    #[test]
    fn without_the_probe_every_source_is_unavailable_and_says_why() {
        let hooks = unattached(super::super::NO_PROBE);
        assert!(hooks.iter().any(|h| h.name == HOOK_STEP));
        assert!(hooks.iter().any(|h| h.name == "syscalls:sys_enter_ioctl"));
        let s = sources(&hooks, true);
        for name in [
            source::TRANSITIONS,
            source::IRQ,
            source::IOMMU_MAP,
            source::IOMMU_FAULT,
            source::MDEV_DMA,
        ] {
            assert!(
                s[name].starts_with("unavailable: ") && s[name].contains("AYA_BUILD_SKIP"),
                "{name}: {}",
                s[name]
            );
        }
    }

    #[test]
    fn mdev_dma_is_claimed_only_with_mediated_devices() {
        let hooks = vec![
            hook(HOOK_DMA_RW, source::MDEV_DMA, true),
            hook(HOOK_PIN_PAGES, source::MDEV_DMA, true),
        ];
        assert_eq!(sources(&hooks, true)["mdev_dma"], "ok");
        let s = sources(&hooks, false);
        assert!(
            s["mdev_dma"].starts_with("unavailable: no mediated devices"),
            "{}",
            s["mdev_dma"]
        );
    }
}
