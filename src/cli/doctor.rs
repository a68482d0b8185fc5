//! `migscope doctor`: what this host can see. Kernel, privileges, lockdown, tracefs, BTF,
//! kprobes, every probe hook (really loaded and attached, then detached), VFIO devices and
//! their drivers. Each distinct cause of a missing hook is named once with the hooks it
//! affects and its fix, then what that means for each rule (the rule's evidence comes from
//! [`crate::verify::rule::EVIDENCE`], judged by `capture::diagnose::rule_sight`). `--json`
//! keeps every detail.

use std::{collections::BTreeMap, fmt::Write as _, fs, path::Path};

use serde_json::{Value, json};

use crate::capture::diagnose::{self, Host, Key, Lockdown};
use crate::capture::{Capture, CaptureError, CaptureOptions, HookState, HookStatus, PROBE_SOURCES};
use crate::trace::source;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// BTF of the vfio modules that kernel-function hooks would target.
const VFIO_MODULES: [&str; 5] = [
    "vfio",
    "vfio_pci_core",
    "vfio_pci",
    "vfio_iommu_type1",
    "iommufd",
];

pub fn run(args: Args) -> i32 {
    let report = collect();
    if args.json {
        println!("{report}");
    } else {
        print!("{}", text(&report));
    }
    if report["probe"]["loaded"].as_bool() == Some(true) {
        super::exit::PASS
    } else {
        super::exit::UNUSABLE
    }
}

fn collect() -> Value {
    let host = Host::read();
    let p = &host.privileges;
    let btf_modules: serde_json::Map<String, Value> = VFIO_MODULES
        .iter()
        .map(|m| {
            let loaded = Path::new(&format!("/sys/module/{m}")).exists();
            let btf = Path::new(&format!("/sys/kernel/btf/{m}")).exists();
            ((*m).to_owned(), json!({"loaded": loaded, "btf": btf}))
        })
        .collect();
    let Attempt {
        probe,
        hooks,
        sources,
        causes,
        not_loaded,
    } = try_probe(&host);
    let source_refs: BTreeMap<&str, Vec<usize>> = PROBE_SOURCES
        .iter()
        .map(|s| (*s, source_causes(s, &causes, &hooks, not_loaded)))
        .collect();
    let rules = rule_meanings(&sources, &source_refs);
    let blind: Vec<Value> = rules
        .iter()
        .filter(|r| r["record"] != "ok" || r["drive"] != "ok")
        .map(|r| {
            let why = if r["drive"] == "ok" {
                format!("record and watch: {}", r["record"].as_str().unwrap_or(""))
            } else {
                r["drive"].as_str().unwrap_or("").to_owned()
            };
            json!({"rule": r["rule"], "why": why})
        })
        .collect();
    let missing: Vec<String> = p
        .missing()
        .iter()
        .map(|(n, what)| format!("{n}: {what}"))
        .collect();
    let (tracefs_state, tracefs_detail) = match &host.tracefs {
        crate::capture::tracefs::Tracefs::Present(at) => ("present", (*at).to_owned()),
        crate::capture::tracefs::Tracefs::Mounted(at) => ("mounted", (*at).to_owned()),
        crate::capture::tracefs::Tracefs::Missing(why) => ("missing", why.clone()),
    };
    let lockdown_mode = match &host.lockdown {
        Lockdown::None => json!("none"),
        Lockdown::Integrity => json!("integrity"),
        Lockdown::Confidentiality => json!("confidentiality"),
        Lockdown::Unknown(_) => Value::Null,
    };
    json!({
        "kernel": crate::capture::kernel_release(),
        "privileges": {
            "euid": p.euid,
            "cap_eff": p.cap_eff.map(|c| format!("{c:016x}")),
            "cap_bpf": p.has("CAP_BPF"),
            "cap_perfmon": p.has("CAP_PERFMON"),
            "cap_sys_admin": p.has("CAP_SYS_ADMIN"),
            "cap_sys_resource": p.has("CAP_SYS_RESOURCE"),
            "missing": missing,
        },
        "lockdown": {"mode": lockdown_mode, "detail": host.lockdown.name()},
        "tracefs": {"state": tracefs_state, "detail": tracefs_detail},
        "kprobes": {"present": host.kprobes, "pmu": diagnose::KPROBE_PMU},
        "btf": {
            "vmlinux": host.vmlinux_btf,
            "modules": btf_modules,
        },
        "probe": probe,
        "hooks": hooks.iter().map(hook_json).collect::<Vec<_>>(),
        "causes": causes.iter().enumerate().map(|(i, c)| json!({
            "id": i + 1,
            "what": c.what,
            "fix": c.fix,
            "hooks": c.hooks,
        })).collect::<Vec<_>>(),
        "sources": sources,
        "source_causes": source_refs,
        "rules": rules,
        "devices": vfio_devices(),
        "blind": blind,
    })
}

/// What loading and attaching the probe once found.
struct Attempt {
    probe: Value,
    hooks: Vec<HookStatus>,
    sources: BTreeMap<String, String>,
    causes: Vec<diagnose::Cause>,
    /// The probe could not load at all: every source depends on cause 1.
    not_loaded: bool,
}

/// Loads and attaches every hook, then detaches them again (doctor only tries), and names
/// the causes of what failed.
fn try_probe(host: &Host) -> Attempt {
    // `--hooks auto`: whether this kernel takes the direct hooks is what doctor reports.
    let opts = CaptureOptions {
        hooks: crate::capture::HooksMode::Auto,
        ..CaptureOptions::default()
    };
    let (probe, hooks, sources, mut causes) = match Capture::start(&opts) {
        Ok(cap) => {
            let hooks = cap.hooks().to_vec();
            let sources = cap.sources();
            // What `record --hooks auto` would write in the header's `hooks`.
            let path = cap.hooks_path().to_owned();
            let _ = cap.stop();
            let causes = diagnose::causes(&hooks, host);
            (
                json!({"loaded": true, "hooks": path}),
                hooks,
                sources,
                causes,
            )
        }
        Err(e) => {
            let msg = diagnose::explain(&e, host);
            let (hooks, causes) = match e {
                CaptureError::NothingAttached(hooks) => {
                    let causes = diagnose::causes(&hooks, host);
                    (hooks, causes)
                }
                other => (
                    Vec::new(),
                    vec![diagnose::Cause {
                        key: Key::Other(diagnose::chain(&other)),
                        what: msg.clone(),
                        fix: None,
                        hooks: Vec::new(),
                    }],
                ),
            };
            let sources = PROBE_SOURCES
                .iter()
                .map(|s| {
                    (
                        (*s).to_owned(),
                        "unavailable: the probe is not running".to_owned(),
                    )
                })
                .collect();
            (
                json!({"loaded": false, "error": msg}),
                hooks,
                sources,
                causes,
            )
        }
    };
    let not_loaded = probe["loaded"] != true && hooks.is_empty();
    if causes.is_empty() && not_loaded {
        causes.push(diagnose::Cause {
            key: Key::Other("probe".into()),
            what: probe["error"].as_str().unwrap_or("").to_owned(),
            fix: None,
            hooks: Vec::new(),
        });
    }
    Attempt {
        probe,
        hooks,
        sources,
        causes,
        not_loaded,
    }
}

/// The ids of the causes behind source `src`: those that left one of its hooks unattached.
fn source_causes(
    src: &str,
    causes: &[diagnose::Cause],
    hooks: &[HookStatus],
    not_loaded: bool,
) -> Vec<usize> {
    if not_loaded {
        return vec![1];
    }
    let mut ids: Vec<usize> = causes
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            c.hooks.iter().any(|h| {
                hooks
                    .iter()
                    .any(|x| &x.name == h && x.serves == src && !x.attached())
            })
        })
        .map(|(i, _)| i + 1)
        .collect();
    ids.dedup();
    ids
}

fn hook_json(h: &HookStatus) -> Value {
    match &h.state {
        HookState::Attached(how) => {
            json!({"name": h.name, "serves": h.serves, "attached": true, "how": how})
        }
        HookState::Unavailable(why) => {
            json!({"name": h.name, "serves": h.serves, "attached": false, "why": why})
        }
    }
}

fn cite(ids: &[usize]) -> String {
    ids.iter().map(|i| format!("[{i}]")).collect()
}

/// [`diagnose::rule_sight`] as doctor's JSON rows.
fn rule_meanings(
    sources: &BTreeMap<String, String>,
    refs: &BTreeMap<&str, Vec<usize>>,
) -> Vec<Value> {
    let r = |s: &str| cite(refs.get(s).map_or(&[][..], Vec::as_slice));
    diagnose::rule_sight(sources, r)
        .into_iter()
        .map(|n| {
            json!({"rule": n.rule, "needs": n.needs, "steps": n.steps, "record": n.record, "drive": n.drive})
        })
        .collect()
}

/// The text report: each fact once, under 60 lines on a host without VFIO devices.
fn text(r: &Value) -> String {
    let mut o = String::new();
    text_host(&mut o, r);
    text_probe(&mut o, r);
    text_sources(&mut o, r);
    text_rules(&mut o, r);
    text_devices(&mut o, r);
    o
}

/// Kernel, privileges, lockdown, tracefs, BTF and kprobes: one line each.
fn text_host(o: &mut String, r: &Value) {
    let s = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    let _ = writeln!(o, "kernel      {}", s(&r["kernel"]));
    let p = &r["privileges"];
    let missing = p["missing"].as_array().cloned().unwrap_or_default();
    let has: Vec<&str> = diagnose::CAPS
        .iter()
        .map(|c| c.0)
        .filter(|c| p[c.to_lowercase()] == true)
        .collect();
    let has = if has.is_empty() {
        "no capability the probe needs".to_owned()
    } else {
        has.join(" ")
    };
    let _ = writeln!(o, "privileges  euid {}; has {has}", p["euid"]);
    for m in &missing {
        let _ = writeln!(o, "  missing   {}", s(m));
    }
    let _ = writeln!(o, "lockdown    {}", s(&r["lockdown"]["detail"]));
    let t = &r["tracefs"];
    let _ = writeln!(
        o,
        "tracefs     {}",
        match t["state"].as_str() {
            Some("present") => s(&t["detail"]),
            Some("mounted") => format!("was not mounted: mounted it at {}", s(&t["detail"])),
            _ => "MISSING (causes below)".to_owned(),
        }
    );
    let mut by_state: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    if let Some(mods) = r["btf"]["modules"].as_object() {
        for (m, v) in mods {
            let state = match (v["loaded"].as_bool(), v["btf"].as_bool()) {
                (Some(true), Some(true)) => "loaded with BTF",
                (Some(true), _) => "loaded without BTF",
                _ => "not loaded",
            };
            by_state.entry(state).or_default().push(m);
        }
    }
    let mods: Vec<String> = by_state
        .iter()
        .map(|(state, m)| format!("{} {state}", m.join(" ")))
        .collect();
    let _ = writeln!(
        o,
        "btf         vmlinux {}; {}",
        if r["btf"]["vmlinux"] == true {
            "yes"
        } else {
            "NO"
        },
        mods.join("; ")
    );
    let _ = writeln!(
        o,
        "kprobes     {}",
        if r["kprobes"]["present"] == true {
            "yes".to_owned()
        } else {
            format!("NO ({} missing)", s(&r["kprobes"]["pmu"]))
        }
    );
}

/// Whether the probe runs, and each cause of a missing hook once.
fn text_probe(o: &mut String, r: &Value) {
    let s = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    let hooks = r["hooks"].as_array().cloned().unwrap_or_default();
    let attached = hooks.iter().filter(|h| h["attached"] == true).count();
    if r["probe"]["loaded"] == true {
        let _ = writeln!(
            o,
            "probe       loaded; {attached} of {} hooks attached",
            hooks.len()
        );
        let _ = writeln!(o, "hooks       --hooks auto: {}", s(&r["probe"]["hooks"]));
    } else {
        let _ = writeln!(
            o,
            "probe       NOT RUNNING: nothing can be recorded (causes below)"
        );
    }
    let causes = r["causes"].as_array().cloned().unwrap_or_default();
    if !causes.is_empty() {
        let _ = writeln!(
            o,
            "\ncauses (each once, with the hooks it leaves unavailable)"
        );
        for c in &causes {
            let _ = writeln!(o, "  [{}] {}", c["id"], s(&c["what"]));
            if let Some(f) = c["fix"].as_str() {
                let _ = writeln!(o, "      fix: {f}");
            }
            let names: Vec<String> = c["hooks"].as_array().into_iter().flatten().map(s).collect();
            if !names.is_empty() {
                let _ = writeln!(o, "      hooks: {}", diagnose::compact_hooks(&names));
            }
        }
    }
}

/// Each source with the causes it depends on.
fn text_sources(o: &mut String, r: &Value) {
    let s = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    let _ = writeln!(
        o,
        "\nsources (what the probe gives record, watch and drive)"
    );
    if let Some(m) = r["sources"].as_object() {
        for (k, v) in m {
            let ids: Vec<usize> = r["source_causes"][k]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i.as_u64().map(|i| i as usize))
                .collect();
            let v = s(v);
            let line = if v == "ok" {
                "ok".to_owned()
            } else if v.contains(crate::capture::NO_STEPS) {
                format!(
                    "partial: SET/GET from the ioctl hooks, no FSM steps {}",
                    cite(&ids)
                )
            } else if !ids.is_empty() {
                format!("unavailable {}", cite(&ids))
            } else {
                v
            };
            let _ = writeln!(o, "  {k:<12} {line}");
        }
    }
    let _ = writeln!(
        o,
        "  {:<12} drive only: its DMA buffers fingerprinted; dirty_log where the device has DMA logging",
        source::WITNESS
    );
}

/// What that means for each rule, for record/watch and for drive.
fn text_rules(o: &mut String, r: &Value) {
    let s = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    let _ = writeln!(o, "\nwhat this means, per rule");
    for rl in r["rules"].as_array().into_iter().flatten() {
        let (rec, drv) = (s(&rl["record"]), s(&rl["drive"]));
        let meaning = if rec == "ok" && drv == "ok" {
            "ok".to_owned()
        } else if rec == drv {
            shout(&rec)
        } else if drv == "ok" {
            format!("drive: ok; record/watch: {rec}")
        } else {
            format!("record/watch: {rec}; drive: {drv}")
        };
        let _ = writeln!(o, "  {:<24} {meaning}", s(&rl["rule"]));
    }
}

/// The VFIO devices and their migration flags.
fn text_devices(o: &mut String, r: &Value) {
    let s = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    let devs = r["devices"].as_array().cloned().unwrap_or_default();
    if devs.is_empty() {
        let _ = writeln!(
            o,
            "\ndevices     none bound to vfio-pci or a vfio variant driver"
        );
    } else {
        let _ = writeln!(o, "\ndevices");
        for d in devs {
            let flags = match d["migration_flags"].as_array() {
                Some(f) => f.iter().map(s).collect::<Vec<_>>().join(","),
                None => "unknown".to_owned(),
            };
            let _ = writeln!(
                o,
                "  {}  driver {}  iommu group {}  migration flags {}  ({})",
                s(&d["dev"]),
                s(&d["driver"]),
                s(&d["iommu_group"]),
                flags,
                s(&d["note"])
            );
        }
    }
}

/// "blind: ..." -> "BLIND: ...": a rule blind everywhere stands out in the list.
fn shout(s: &str) -> String {
    match s.split_once(':') {
        Some((head, rest)) => format!("{}:{rest}", head.to_uppercase()),
        None => s.to_owned(),
    }
}

/// Migration flags of devices some process has open, asked through a duplicate of its fd
/// (read-only VFIO_DEVICE_FEATURE GET of MIGRATION), and who holds each device.
fn open_device_flags() -> std::collections::BTreeMap<String, (u32, Result<u32, String>)> {
    use crate::capture::{attach, procfs};
    let mut out = std::collections::BTreeMap::new();
    let host = attach::Host::real();
    for a in attach::attach_all(&host, &procfs::scan(None)) {
        if !matches!(a.resolution, attach::Resolution::Named(_)) || out.contains_key(&a.dev) {
            continue;
        }
        out.insert(a.dev, (a.pid, a.flags.map(|f| f.0)));
    }
    out
}

/// Whether a PCI driver is vfio-pci or a vfio-pci variant driver: named `*vfio*`, or its
/// module builds on vfio_pci_core (`/sys/module/vfio_pci_core/holders/<module>`), as variant
/// drivers not named after VFIO do (e.g. the lab's `edu-mig`).
fn is_vfio_driver(driver_dir: &std::path::Path, name: &str) -> bool {
    if name.contains("vfio") {
        return true;
    }
    fs::read_link(driver_dir.join("module"))
        .ok()
        .and_then(|m| m.file_name().map(|n| n.to_string_lossy().into_owned()))
        .is_some_and(|module| {
            std::path::Path::new("/sys/module/vfio_pci_core/holders")
                .join(module)
                .exists()
        })
}

/// PCI devices bound to vfio-pci or a vfio-pci variant driver.
fn vfio_devices() -> Vec<Value> {
    let mut out = Vec::new();
    let open = open_device_flags();
    let Ok(drivers) = fs::read_dir("/sys/bus/pci/drivers") else {
        return out;
    };
    for d in drivers.flatten() {
        let driver = d.file_name().to_string_lossy().into_owned();
        if !is_vfio_driver(&d.path(), &driver) {
            continue;
        }
        let Ok(entries) = fs::read_dir(d.path()) else {
            continue;
        };
        for e in entries.flatten() {
            let dev = e.file_name().to_string_lossy().into_owned();
            if dev.matches(':').count() != 2 {
                continue;
            }
            let group = fs::read_link(format!("/sys/bus/pci/devices/{dev}/iommu_group"))
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
            let (flags, note) = match open.get(&dev) {
                Some((pid, Ok(bits))) => (
                    json!(crate::model::flag_names(crate::model::MigFlags(*bits))),
                    format!("open by pid {pid}; flags read through its fd"),
                ),
                Some((pid, Err(e))) => (
                    Value::Null,
                    format!("open by pid {pid}; asking for migration flags failed: {e}"),
                ),
                None => (
                    Value::Null,
                    "not open by any process: migration flags are only readable through an \
                     open device fd (`drive` queries them itself)"
                        .to_owned(),
                ),
            };
            out.push(json!({
                "dev": dev,
                "driver": driver,
                "iommu_group": group,
                "migration_flags": flags,
                "note": note,
            }));
        }
    }
    out
}
