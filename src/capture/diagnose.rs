//! Why the probe cannot see something on this host, said once per cause: privileges (the
//! capabilities of `/proc/self/status`), kernel lockdown, kprobes, BTF, tracefs, and the
//! distinct causes behind unavailable hooks, each with the hooks it affects and its fix.
//! `doctor` shows all of it; `record`, `drive` and `watch` use it for one-line errors.

use std::{collections::BTreeMap, fs, path::Path};

use super::{CaptureError, HookState, HookStatus, NO_STEPS, tracefs};
use crate::{trace::source, verify::rule};

/// Capabilities the probe needs (bits of include/uapi/linux/capability.h), with what each
/// one is for. CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON (kernel/bpf/syscall.c
/// `bpf_capable`, include/linux/capability.h `perfmon_capable`).
pub const CAPS: [(&str, u32, &str); 4] = [
    ("CAP_BPF", 39, "load eBPF programs and create maps"),
    (
        "CAP_PERFMON",
        38,
        "attach tracepoints and kprobes, read kernel memory from eBPF",
    ),
    (
        "CAP_SYS_ADMIN",
        21,
        "mount tracefs when it is missing; stands in for CAP_BPF and CAP_PERFMON",
    ),
    (
        "CAP_SYS_RESOURCE",
        24,
        "raise RLIMIT_MEMLOCK, which kernels before 5.11 charge eBPF maps to",
    ),
];

/// Effective capabilities and what is missing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Privileges {
    pub euid: u32,
    /// `CapEff` of /proc/self/status; `None` when unreadable.
    pub cap_eff: Option<u64>,
}

impl Privileges {
    pub fn of_this_process() -> Self {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        let cap_eff = fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| cap_eff(&s));
        Privileges { euid, cap_eff }
    }

    pub fn has(&self, name: &str) -> bool {
        let Some(bit) = CAPS.iter().find(|c| c.0 == name).map(|c| c.1) else {
            return false;
        };
        self.cap_eff.is_some_and(|c| c & (1u64 << bit) != 0)
    }

    /// The capabilities the probe needs that this process lacks, with what each is for.
    /// CAP_BPF and CAP_PERFMON count as present with CAP_SYS_ADMIN.
    pub fn missing(&self) -> Vec<(&'static str, &'static str)> {
        let admin = self.has("CAP_SYS_ADMIN");
        CAPS.iter()
            .filter(|(name, _, _)| {
                !(self.has(name) || admin && matches!(*name, "CAP_BPF" | "CAP_PERFMON"))
            })
            .map(|(name, _, what)| (*name, *what))
            .collect()
    }

    /// Whether loading and attaching can work at all (CAP_BPF and CAP_PERFMON, or admin).
    pub fn can_trace(&self) -> bool {
        let m = self.missing();
        !m.iter()
            .any(|(n, _)| matches!(*n, "CAP_BPF" | "CAP_PERFMON"))
    }
}

/// `CapEff:` of a /proc/<pid>/status text.
pub fn cap_eff(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

/// Where the kernel says its lockdown mode (security/lockdown/lockdown.c, `lockdown_read`).
pub const LOCKDOWN_FILE: &str = "/sys/kernel/security/lockdown";

/// Kernel lockdown (security/lockdown/lockdown.c). `integrity` denies nothing the probe uses;
/// `confidentiality` denies kprobes, tracefs, perf and eBPF reads of kernel memory
/// (LOCKDOWN_KPROBES .. LOCKDOWN_TRACEFS lie above LOCKDOWN_INTEGRITY_MAX in
/// include/linux/security.h `enum lockdown_reason`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lockdown {
    None,
    Integrity,
    Confidentiality,
    /// Not readable (no securityfs, or a kernel without the lockdown LSM): why.
    Unknown(String),
}

impl Lockdown {
    pub fn read() -> Self {
        match fs::read_to_string(LOCKDOWN_FILE) {
            Ok(s) => Self::parse(&s),
            Err(e) => Lockdown::Unknown(format!("{LOCKDOWN_FILE}: {e}")),
        }
    }

    /// The bracketed mode of `none [integrity] confidentiality`.
    pub fn parse(s: &str) -> Self {
        let mode = s
            .split_whitespace()
            .find(|w| w.starts_with('['))
            .map(|w| w.trim_matches(|c| c == '[' || c == ']'));
        match mode {
            Some("none") => Lockdown::None,
            Some("integrity") => Lockdown::Integrity,
            Some("confidentiality") => Lockdown::Confidentiality,
            _ => Lockdown::Unknown(format!("unrecognised {LOCKDOWN_FILE}: {}", s.trim())),
        }
    }

    pub fn name(&self) -> String {
        match self {
            Lockdown::None => "none".to_owned(),
            Lockdown::Integrity => "integrity (denies nothing the probe uses)".to_owned(),
            Lockdown::Confidentiality => {
                "confidentiality: kprobes, tracefs, perf and eBPF reads of kernel memory are denied"
                    .to_owned()
            }
            Lockdown::Unknown(why) => format!("unknown ({why})"),
        }
    }
}

macro_rules! kprobe_pmu {
    () => {
        "/sys/bus/event_source/devices/kprobe"
    };
}
/// The kprobe PMU aya attaches kprobes through.
pub const KPROBE_PMU: &str = kprobe_pmu!();
/// The reason a kprobe gives on a kernel without it (`hooks` writes it, [`keys_of`] reads it).
pub const NO_KPROBE_PMU: &str = concat!(
    "this kernel has no kprobe PMU (",
    kprobe_pmu!(),
    " missing)"
);
/// vmlinux BTF, which fentry/fexit need.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Whether this kernel has kprobes (the kprobe PMU, CONFIG_KPROBE_EVENTS).
pub fn kprobes_present() -> bool {
    Path::new(KPROBE_PMU).exists()
}

pub fn vmlinux_btf_present() -> bool {
    Path::new(VMLINUX_BTF).exists()
}

/// What this host allows, read once.
#[derive(Clone, Debug)]
pub struct Host {
    pub privileges: Privileges,
    pub lockdown: Lockdown,
    pub kprobes: bool,
    pub vmlinux_btf: bool,
    pub tracefs: tracefs::Tracefs,
}

impl Host {
    /// Reads the host (tracefs: what [`tracefs::ensure`] found or did).
    pub fn read() -> Self {
        Host {
            privileges: Privileges::of_this_process(),
            lockdown: Lockdown::read(),
            kprobes: kprobes_present(),
            vmlinux_btf: vmlinux_btf_present(),
            tracefs: tracefs::ensure(),
        }
    }
}

/// A distinct reason hooks are unavailable.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    Tracefs,
    NoKprobes,
    NoVmlinuxBtf,
    /// fentry/fexit on a module function (aya 0.14 resolves vmlinux BTF only).
    ModuleFunction,
    /// EPERM: lockdown or missing capabilities.
    Denied,
    /// Anything else, as the kernel or aya said it (the hook's own name taken out).
    Other(String),
}

/// One cause, said once, with the hooks it leaves unavailable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    pub key: Key,
    /// What is wrong, one line.
    pub what: String,
    /// What fixes it.
    pub fix: Option<String>,
    /// Every unavailable hook this cause contributes to.
    pub hooks: Vec<String>,
}

/// Strips what a reason part says about the mechanism (`fentry: `, `load refused: `, ...).
fn strip_mechanism(mut s: &str) -> &str {
    loop {
        let before = s;
        for p in [
            "fentry: ",
            "fexit: ",
            "kprobe: ",
            "kretprobe: ",
            "load refused: ",
            "attach refused: ",
        ] {
            s = s.strip_prefix(p).unwrap_or(s);
        }
        if s == before {
            return s.trim();
        }
    }
}

/// The causes one hook's reason names (every mechanism the hook tried failed).
pub fn keys_of(hook: &str, why: &str) -> Vec<Key> {
    let mut out = Vec::new();
    for part in why.split("; ") {
        let p = strip_mechanism(part);
        let key = if p.contains("tracefs not found") || p.contains("tracefs not mounted") {
            Key::Tracefs
        } else if p.contains(NO_KPROBE_PMU) {
            Key::NoKprobes
        } else if p.contains("unknown BTF type") {
            Key::ModuleFunction
        } else if p.contains("no vmlinux BTF") {
            Key::NoVmlinuxBtf
        } else if p.contains("Operation not permitted") || p.contains("os error 1)") {
            Key::Denied
        } else {
            Key::Other(p.replace(&format!("`{hook}`"), "`<hook>`"))
        };
        if !out.contains(&key) {
            out.push(key);
        }
    }
    out
}

/// Each distinct cause behind the unavailable hooks, once, in a stable order.
pub fn causes(hooks: &[HookStatus], host: &Host) -> Vec<Cause> {
    let mut by_key: BTreeMap<Key, Vec<String>> = BTreeMap::new();
    for h in hooks {
        if let HookState::Unavailable(why) = &h.state {
            for k in keys_of(&h.name, why) {
                by_key.entry(k).or_default().push(h.name.clone());
            }
        }
    }
    by_key
        .into_iter()
        .map(|(key, hooks)| {
            let (what, fix) = describe(&key, host);
            Cause {
                key,
                what,
                fix,
                hooks,
            }
        })
        .collect()
}

/// What a cause means on this host, and its fix.
pub fn describe(key: &Key, host: &Host) -> (String, Option<String>) {
    match key {
        Key::Tracefs => match &host.tracefs {
            tracefs::Tracefs::Missing(why) => (why.clone(), None),
            _ => (
                "tracefs was not reachable when the hooks attached".to_owned(),
                Some(format!("as root run: {}", tracefs::FIX)),
            ),
        },
        Key::NoKprobes => (
            format!("this kernel has no kprobes ({KPROBE_PMU} missing)"),
            Some(
                "a kernel built with CONFIG_KPROBES=y and CONFIG_KPROBE_EVENTS=y (distribution \
                 kernels are)"
                    .to_owned(),
            ),
        ),
        Key::NoVmlinuxBtf => (
            format!("no vmlinux BTF ({VMLINUX_BTF} missing): fentry/fexit cannot attach"),
            Some("a kernel built with CONFIG_DEBUG_INFO_BTF=y".to_owned()),
        ),
        Key::ModuleFunction => (
            "fentry/fexit cannot reach these functions: they are not in vmlinux BTF (a vfio \
             module function, or its module is not loaded; aya 0.14 resolves vmlinux BTF only)"
                .to_owned(),
            Some("none needed where kprobes work: the kprobe fallback reaches modules".to_owned()),
        ),
        Key::Denied => match (&host.lockdown, host.privileges.can_trace()) {
            (Lockdown::Confidentiality, _) => (
                format!("kernel lockdown is {}", host.lockdown.name()),
                Some(
                    "boot without lockdown=confidentiality (kernel command line, or the \
                     distribution's Secure Boot policy)"
                        .to_owned(),
                ),
            ),
            (_, false) => (
                format!("permission denied: {}", missing_caps(&host.privileges)),
                Some("run migscope as root".to_owned()),
            ),
            _ => (
                "the kernel refused with EPERM (a seccomp filter, an LSM policy or a \
                 container's restrictions)"
                    .to_owned(),
                None,
            ),
        },
        Key::Other(text) => (text.clone(), None),
    }
}

/// "euid 1000 lacks CAP_BPF, CAP_PERFMON" (the needed ones; what each is for: [`CAPS`]).
pub fn missing_caps(p: &Privileges) -> String {
    let m: Vec<&str> = p
        .missing()
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| matches!(*n, "CAP_BPF" | "CAP_PERFMON"))
        .collect();
    if m.is_empty() {
        return "no capability missing".to_owned();
    }
    format!("euid {} lacks {}", p.euid, m.join(" and "))
}

/// Hook names, with every tracepoint of one category folded: `syscalls:{a,b}`.
pub fn compact_hooks(names: &[String]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut cats: Vec<(String, Vec<String>)> = Vec::new();
    for n in names {
        match n.split_once(':') {
            Some((cat, tp)) => match cats.iter_mut().find(|(c, _)| c == cat) {
                Some((_, v)) => v.push(tp.to_owned()),
                None => cats.push((cat.to_owned(), vec![tp.to_owned()])),
            },
            None => out.push(n.clone()),
        }
    }
    let mut folded: Vec<String> = cats
        .into_iter()
        .map(|(c, v)| {
            if v.len() == 1 {
                format!("{c}:{}", v[0])
            } else {
                format!("{c}:{{{}}}", v.join(","))
            }
        })
        .collect();
    folded.append(&mut out);
    folded.join(" ")
}

/// One line per cause for stderr: `N hook(s) unavailable (a, b): what; fix: ...`.
pub fn hook_summary(hooks: &[HookStatus], host: &Host) -> Vec<String> {
    causes(hooks, host)
        .iter()
        .map(|c| {
            let mut s = format!(
                "{} hook(s) unavailable ({}): {}",
                c.hooks.len(),
                compact_hooks(&c.hooks),
                c.what
            );
            if let Some(f) = &c.fix {
                s.push_str("; fix: ");
                s.push_str(f);
            }
            s
        })
        .collect()
}

/// A capture that could not start, in one line that names the cause and its fix.
pub fn explain(e: &CaptureError, host: &Host) -> String {
    match e {
        CaptureError::Load(_) => {
            let mut s = chain(e);
            if !host.privileges.can_trace() {
                s.push_str(&format!(
                    " — {}; fix: run migscope as root",
                    missing_caps(&host.privileges)
                ));
            } else if host.lockdown == Lockdown::Confidentiality {
                s.push_str(&format!(" — kernel lockdown is {}", host.lockdown.name()));
            }
            s
        }
        CaptureError::NothingAttached(hooks) => {
            format!(
                "no probe hook could be attached: {}",
                hook_summary(hooks, host).join(" | ")
            )
        }
        _ => chain(e),
    }
}

/// An error with its sources, `: `-separated.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// What one violation rule can see here: for `record`/`watch` (the probe's sources alone) and
/// for `drive` (the probe plus its controller: its own SET/GET events, the memory witness, DMA
/// logging). `"ok"` or `"blind: why [causes]"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSight {
    pub rule: &'static str,
    /// The evidence it needs, any one of (from [`rule::EVIDENCE`]).
    pub needs: &'static [&'static str],
    /// It needs the FSM steps themselves.
    pub steps: bool,
    pub record: String,
    pub drive: String,
}

/// For each rule of the verifier's own [`rule::EVIDENCE`] table, what the probe's `sources`
/// here let it see; `cite(source)` names the causes behind a source that is not ok.
pub fn rule_sight(
    sources: &BTreeMap<String, String>,
    cite: impl Fn(&str) -> String,
) -> Vec<RuleSight> {
    let ok = |s: &str| sources.get(s).is_some_and(|v| v == "ok");
    let steps_only_missing = sources
        .get(source::TRANSITIONS)
        .is_some_and(|v| v.contains(NO_STEPS));
    rule::EVIDENCE
        .iter()
        .map(|n| {
            let (record, drive) = if n.any_of == source::DMA_WITNESSES {
                let record = if ok(source::MDEV_DMA) {
                    "ok for mediated devices only (mdev_dma); blind for PCI devices: no DMA \
                     witness (inconclusive unless --accept-blind dma)"
                        .to_owned()
                } else {
                    "blind: no DMA witness for PCI devices (inconclusive unless --accept-blind \
                     dma; `drive` has one)"
                        .to_owned()
                };
                (record, "ok".to_owned())
            } else if n.any_of == [source::IRQ] {
                let s = if ok(source::IRQ) {
                    "ok".to_owned()
                } else {
                    format!("blind: interrupts not traced {}", cite(source::IRQ))
                };
                (s.clone(), s)
            } else if n.steps {
                let s = if ok(source::TRANSITIONS) {
                    "ok".to_owned()
                } else {
                    format!(
                        "blind: no FSM steps (vfio_mig_get_next_state) {}",
                        cite(source::TRANSITIONS)
                    )
                };
                (s.clone(), s)
            } else {
                // SET/GET ioctls: the probe's syscall hooks; drive's controller sees its own.
                let record = if ok(source::TRANSITIONS) || steps_only_missing {
                    "ok".to_owned()
                } else {
                    format!(
                        "blind: VFIO ioctls not traced {}",
                        cite(source::TRANSITIONS)
                    )
                };
                (record, "ok".to_owned())
            };
            RuleSight {
                rule: n.rule,
                needs: n.any_of,
                steps: n.steps,
                record,
                drive,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(tracefs: tracefs::Tracefs, cap_eff: u64) -> Host {
        Host {
            privileges: Privileges {
                euid: 0,
                cap_eff: Some(cap_eff),
            },
            lockdown: Lockdown::None,
            kprobes: false,
            vmlinux_btf: true,
            tracefs,
        }
    }

    fn down(name: &str, why: &str) -> HookStatus {
        HookStatus {
            name: name.to_owned(),
            serves: "transitions",
            state: HookState::Unavailable(why.to_owned()),
        }
    }

    /// Reasons as `hooks.rs` writes them on the 6.18 host of LAB-NOTES (no kprobe PMU,
    /// vfio not loaded): four hooks, two causes, each said once.
    #[test]
    fn one_cause_once_for_every_hook_it_affects() {
        let fn_why = |f: &str| {
            format!(
                "fentry: load refused: unknown BTF type `{f}` (not in vmlinux BTF: its module is \
                 not loaded or it is a module function, and aya 0.14 resolves fentry/fexit \
                 targets in vmlinux BTF only); kprobe: attach refused: {}",
                super::NO_KPROBE_PMU
            )
        };
        let hooks: Vec<HookStatus> = ["vfio_mig_get_next_state", "vfio_msihandler", "vfio_dma_rw"]
            .iter()
            .map(|f| down(f, &fn_why(f)))
            .collect();
        let c = causes(
            &hooks,
            &host(tracefs::Tracefs::Present("/sys/kernel/tracing"), !0),
        );
        let keys: Vec<&Key> = c.iter().map(|c| &c.key).collect();
        assert_eq!(keys, [&Key::NoKprobes, &Key::ModuleFunction]);
        for cause in &c {
            assert_eq!(cause.hooks.len(), 3, "{cause:?}");
        }
    }

    /// Tracefs missing and unmountable: 17 tracepoint reasons become one cause carrying the
    /// tracefs module's own message with its fix.
    #[test]
    fn tracefs_missing_is_one_cause_with_the_fix() {
        let mut hooks: Vec<HookStatus> = (0..17)
            .map(|i| {
                down(
                    &format!("syscalls:tp{i}"),
                    "attach refused: tracefs not found",
                )
            })
            .collect();
        hooks.push(down(
            "sched:sched_process_fork",
            "no readable sched_process_fork format file (tracefs not mounted?): --pid follows \
             children through /proc only",
        ));
        let why = format!(
            "tracefs is not mounted and mounting it failed (EPERM); as root run: {}",
            tracefs::FIX
        );
        let h = host(tracefs::Tracefs::Missing(why.clone()), 0);
        let c = causes(&hooks, &h);
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].hooks.len(), 18);
        assert_eq!(c[0].what, why);
        let lines = hook_summary(&hooks, &h);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].matches("tracefs is not mounted").count(), 1);
        let e = explain(&CaptureError::NothingAttached(hooks), &h);
        assert_eq!(e.matches(tracefs::FIX).count(), 1, "{e}");
    }

    #[test]
    fn other_reasons_group_without_the_hook_name() {
        let a = keys_of("f1", "load refused: program `f1` rejected");
        let b = keys_of("f2", "load refused: program `f2` rejected");
        assert_eq!(a, b);
    }

    #[test]
    fn missing_capabilities_come_from_cap_eff() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000000c000000000\n";
        let p = Privileges {
            euid: 1000,
            cap_eff: cap_eff(status),
        };
        // bits 38 and 39: CAP_PERFMON and CAP_BPF, nothing else.
        assert!(p.can_trace());
        let names: Vec<&str> = p.missing().iter().map(|m| m.0).collect();
        assert_eq!(names, ["CAP_SYS_ADMIN", "CAP_SYS_RESOURCE"]);
        let none = Privileges {
            euid: 1000,
            cap_eff: Some(0),
        };
        assert!(!none.can_trace());
        assert_eq!(none.missing().len(), 4);
        let admin = Privileges {
            euid: 0,
            cap_eff: Some(1 << 21),
        };
        let names: Vec<&str> = admin.missing().iter().map(|m| m.0).collect();
        assert_eq!(
            names,
            ["CAP_SYS_RESOURCE"],
            "CAP_SYS_ADMIN covers BPF and PERFMON"
        );
    }

    #[test]
    fn lockdown_modes() {
        assert_eq!(
            Lockdown::parse("[none] integrity confidentiality\n"),
            Lockdown::None
        );
        assert_eq!(
            Lockdown::parse("none integrity [confidentiality]\n"),
            Lockdown::Confidentiality
        );
        assert!(matches!(Lockdown::parse("garbage"), Lockdown::Unknown(_)));
    }

    #[test]
    fn eperm_under_lockdown_names_lockdown() {
        let mut h = host(tracefs::Tracefs::Present("/sys/kernel/tracing"), !0);
        h.lockdown = Lockdown::Confidentiality;
        let (what, fix) = describe(&Key::Denied, &h);
        assert!(what.contains("lockdown"), "{what}");
        assert!(fix.is_some_and(|f| f.contains("lockdown=confidentiality")));
        h.lockdown = Lockdown::None;
        h.privileges.cap_eff = Some(0);
        h.privileges.euid = 1000;
        let (what, _) = describe(&Key::Denied, &h);
        assert!(what.contains("CAP_BPF"), "{what}");
    }

    /// Each rule's sight follows the evidence the verifier's table names for it: IRQ rules go
    /// blind without the irq source, step rules without transitions, SET/GET rules stay ok for
    /// record when only the steps are missing, the DMA rule is blind for record on PCI.
    #[test]
    fn rule_sight_follows_the_verifiers_evidence_table() {
        let sources: BTreeMap<String, String> = [
            (
                source::TRANSITIONS,
                format!(
                    "unavailable: {NO_STEPS} (no BTF); set/set_done/get come from syscalls only"
                ),
            ),
            (source::IRQ, "unavailable: no tracepoint".to_owned()),
            (source::MDEV_DMA, "unavailable".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let rows = rule_sight(&sources, |s| format!("[{s}]"));
        let rules: Vec<&str> = rows.iter().map(|r| r.rule).collect();
        assert_eq!(rules, rule::VIOLATIONS);
        let get = |name: &str| rows.iter().find(|r| r.rule == name).unwrap();
        let irq = get(rule::IRQ_AFTER_QUIESCE);
        assert_eq!(irq.record, "blind: interrupts not traced [irq]");
        assert_eq!(
            irq.drive, irq.record,
            "drive has no interrupt source of its own"
        );
        let arc = get(rule::ILLEGAL_ARC);
        assert!(arc.steps);
        assert!(
            arc.record.starts_with("blind: no FSM steps"),
            "{}",
            arc.record
        );
        let set = get(rule::SET_FAILED);
        assert_eq!((set.record.as_str(), set.drive.as_str()), ("ok", "ok"));
        let dma = get(rule::DMA_AFTER_QUIESCE);
        assert!(
            dma.record.starts_with("blind: no DMA witness"),
            "{}",
            dma.record
        );
        assert_eq!(dma.drive, "ok");
    }
}
