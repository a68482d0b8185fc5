//! `migscope doctor`: what this host can see. Kernel, privileges, BTF, every probe hook
//! (really loaded and attached, then detached), VFIO devices and their drivers, and which
//! verification rules the missing pieces leave blind.

use std::{fs, path::Path};

use serde_json::{Value, json};

use crate::capture::{Capture, CaptureOptions, HookState, HookStatus};
use crate::trace::source;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Capability bits of /proc/self/status CapEff (include/uapi/linux/capability.h).
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;
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
        print_text(&report);
    }
    if report["probe"]["loaded"].as_bool() == Some(true) {
        super::exit::PASS
    } else {
        super::exit::UNUSABLE
    }
}

fn collect() -> Value {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let caps = cap_eff();
    let has = |bit: u32| caps.is_some_and(|c| c & (1u64 << bit) != 0);
    let mut missing = Vec::new();
    if !(has(CAP_BPF) || has(CAP_SYS_ADMIN)) {
        missing.push("CAP_BPF (or CAP_SYS_ADMIN): cannot load eBPF programs");
    }
    if !(has(CAP_PERFMON) || has(CAP_SYS_ADMIN)) {
        missing.push("CAP_PERFMON (or CAP_SYS_ADMIN): cannot attach tracepoints or kprobes");
    }
    let btf_modules: serde_json::Map<String, Value> = VFIO_MODULES
        .iter()
        .map(|m| {
            let loaded = Path::new(&format!("/sys/module/{m}")).exists();
            let btf = Path::new(&format!("/sys/kernel/btf/{m}")).exists();
            ((*m).to_owned(), json!({"loaded": loaded, "btf": btf}))
        })
        .collect();

    let (probe, hooks, sources) = match Capture::start(&CaptureOptions::default()) {
        Ok(cap) => {
            let hooks: Vec<Value> = cap.hooks().iter().map(hook_json).collect();
            let sources = cap.sources();
            // Detach everything again: doctor only tries.
            let _ = cap.stop();
            (json!({"loaded": true}), hooks, sources)
        }
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            (
                json!({"loaded": false, "error": msg}),
                Vec::new(),
                crate::capture::PROBE_SOURCES
                    .iter()
                    .map(|s| ((*s).to_owned(), format!("unavailable: {msg}")))
                    .collect(),
            )
        }
    };
    let blind = blind_rules(&sources);
    json!({
        "kernel": crate::capture::kernel_release(),
        "privileges": {
            "euid": euid,
            "cap_bpf": has(CAP_BPF),
            "cap_perfmon": has(CAP_PERFMON),
            "cap_sys_admin": has(CAP_SYS_ADMIN),
            "missing": missing,
        },
        "btf": {
            "vmlinux": Path::new("/sys/kernel/btf/vmlinux").exists(),
            "modules": btf_modules,
        },
        "probe": probe,
        "hooks": hooks,
        "sources": sources,
        "devices": vfio_devices(),
        "blind": blind,
    })
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

/// Effective capabilities from /proc/self/status.
fn cap_eff() -> Option<u64> {
    let s = fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
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

/// Rules (DESIGN.md) that the unavailable sources leave without evidence.
fn blind_rules(sources: &std::collections::BTreeMap<String, String>) -> Vec<Value> {
    let ok = |s: &str| sources.get(s).is_some_and(|v| v == "ok");
    let why = |s: &str| {
        sources
            .get(s)
            .cloned()
            .unwrap_or_else(|| "not probed".into())
    };
    let mut out = Vec::new();
    let transitions = sources
        .get(source::TRANSITIONS)
        .cloned()
        .unwrap_or_default();
    if !ok(source::TRANSITIONS) {
        if transitions.contains("FSM steps") {
            out.push(
                json!({"rule": "illegal-arc", "why": format!("no step events: {transitions}")}),
            );
        } else {
            out.push(json!({"rule": "all", "why": format!("no ioctl evidence: {transitions}")}));
        }
    }
    if !ok(source::IRQ) {
        out.push(json!({"rule": "irq-after-quiesce", "why": why(source::IRQ)}));
    }
    let dma = if ok(source::MDEV_DMA) {
        "record sees DMA only for mediated devices (mdev_dma); for PCI devices the witness, \
         dirty_log and iommu_dirty sources come from `drive`"
            .to_owned()
    } else {
        format!(
            "record has no DMA witness (mdev_dma {}); witness, dirty_log and iommu_dirty come \
             from `drive`: quiesced devices make `record` traces inconclusive unless \
             --accept-blind dma",
            why(source::MDEV_DMA)
        )
    };
    out.push(json!({"rule": "dma-after-quiesce", "why": dma}));
    if !ok(source::IOMMU_FAULT) {
        out.push(
            json!({"rule": "dma-after-quiesce (fault evidence)", "why": why(source::IOMMU_FAULT)}),
        );
    }
    out
}

fn print_text(r: &Value) {
    let s = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    println!("kernel      {}", s(&r["kernel"]));
    let p = &r["privileges"];
    println!(
        "privileges  euid {}  CAP_BPF {}  CAP_PERFMON {}  CAP_SYS_ADMIN {}",
        p["euid"], p["cap_bpf"], p["cap_perfmon"], p["cap_sys_admin"]
    );
    for m in p["missing"].as_array().into_iter().flatten() {
        println!("  missing   {}", s(m));
    }
    print!("btf         vmlinux {}", r["btf"]["vmlinux"]);
    if let Some(mods) = r["btf"]["modules"].as_object() {
        for (m, v) in mods {
            let state = match (v["loaded"].as_bool(), v["btf"].as_bool()) {
                (Some(true), Some(true)) => "btf",
                (Some(true), _) => "no btf",
                _ => "not loaded",
            };
            print!("  {m}: {state}");
        }
    }
    println!();
    if r["probe"]["loaded"].as_bool() != Some(true) {
        println!("probe       NOT LOADED: {}", s(&r["probe"]["error"]));
    }
    println!("hooks");
    for h in r["hooks"].as_array().into_iter().flatten() {
        if h["attached"].as_bool() == Some(true) {
            println!("  {:<28} attached ({})", s(&h["name"]), s(&h["how"]));
        } else {
            println!("  {:<28} unavailable: {}", s(&h["name"]), s(&h["why"]));
        }
    }
    println!("sources");
    if let Some(m) = r["sources"].as_object() {
        for (k, v) in m {
            println!("  {k:<12} {}", s(v));
        }
    }
    let devs = r["devices"].as_array().cloned().unwrap_or_default();
    if devs.is_empty() {
        println!("devices     none bound to vfio-pci or a vfio variant driver");
    } else {
        println!("devices");
        for d in devs {
            let flags = match d["migration_flags"].as_array() {
                Some(f) => f.iter().map(s).collect::<Vec<_>>().join(","),
                None => "unknown".to_owned(),
            };
            println!(
                "  {}  driver {}  iommu group {}  migration flags {}  ({})",
                s(&d["dev"]),
                s(&d["driver"]),
                s(&d["iommu_group"]),
                flags,
                s(&d["note"])
            );
        }
    }
    println!("blind rules");
    for b in r["blind"].as_array().into_iter().flatten() {
        println!("  {:<24} {}", s(&b["rule"]), s(&b["why"]));
    }
}
