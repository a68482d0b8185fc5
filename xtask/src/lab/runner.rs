//! `cargo xtask lab`: set everything up, boot once, run the scenarios, judge what came back.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Result;
use migscope_core::model::MigState;
use migscope_core::verify::SegKind;
use migscope_tui::ui::timeline::state_look;
use serde_json::{Value, json};

use super::fetch::{self, Apt};
use super::guest::{self, GuestFiles, QemuFiles};
use super::qemutrace::{self, Op};
use super::scenario::{self, Extra, Qemu, Run, Scenario};
use super::storm;
use super::vm::{self, Accel, VmConfig};
use super::{Kernel, Paths};

pub struct Options {
    pub scenarios: Vec<&'static Scenario>,
    pub kernel: Kernel,
    pub json: bool,
    pub keep: bool,
    pub verbose: bool,
    pub refresh: bool,
}

/// What a run came to.
pub enum Outcome {
    /// Every scenario gave its expected verdict.
    Ok,
    /// At least one did not (or the VM failed).
    Unexpected,
    /// The machine cannot run the VM; the reason.
    Skipped(String),
}

#[derive(Debug, Default, serde::Serialize)]
pub struct ScenarioResult {
    pub name: String,
    pub expected: String,
    pub verdict: String,
    pub rules: Vec<String>,
    pub ok: bool,
    pub problems: Vec<String>,
    /// Interrupts in the trace (each `irq`, and each `irq_bin`'s `n`).
    pub irq: u64,
    /// `irq_bin` events in the trace.
    pub irq_bins: u64,
    /// Interrupts in the `--irq-detail all` trace beside it, if any.
    pub irq_all: u64,
    pub dma: u64,
    pub witness_dma: u64,
    pub steps: u64,
    /// The devices the traces declare, as named.
    pub devices: Vec<String>,
    pub drained: u64,
    pub held_released: u64,
    pub sources: Value,
    /// Per device: its effective `witness` source (its latest declaration's own `sources`, else
    /// the header's).
    pub device_witness: std::collections::BTreeMap<String, String>,
    pub blind_spots: Vec<String>,
    /// `dma-after-quiesce` violations whose evidence is the witness.
    pub witness_violations: u64,
    /// The witness's snapshot interval while it watched across quiescing SETs (drive's
    /// `witness across SET` marks): the median of the runs' medians and the largest, in µs.
    pub sweep_median_us: Option<u64>,
    pub sweep_max_us: Option<u64>,
    pub guest_rc: Option<i32>,
    pub secs: Option<f64>,
    /// QEMU scenarios: the SETs QEMU issued by its own trace.
    pub qemu_sets: u64,
    /// `vfio_migration_set_state` calls for the state QEMU already had: traced, no ioctl.
    pub qemu_noops: u64,
    /// How many attempts it took to have a transfer in flight at the quiesce: a QEMU case's
    /// source runs, or a drive scenario's runs when it judges its evidence (init.sh repeats an
    /// attempt where edu was between two transfers).
    pub attempts: Option<u32>,
    /// drive-tui: frames the view drew and their p99 draw time, from its summary
    /// (`MIGSCOPE_TUI_FRAMES`).
    pub tui_frames: Option<u64>,
    pub tui_frame_p99_ms: Option<f64>,
    /// drive-memory: one summary line per binary (`rss BIN secs=.. first=.. last=.. hwm=..`).
    pub memory: Vec<String>,
    /// The storm scenarios: per trace, interrupts per second while RUNNING and its growth.
    pub storm: Vec<storm::TraceMeasure>,
    /// The header's `hooks` of each trace judged (how the recorder hooked VFIO's syscalls).
    pub hooks: Vec<String>,
    /// syscall-cost: one `SYSCOST <case> ioctl_ns=.. read_ns=.. write_ns=..` line per case.
    pub syscost: Vec<String>,
}

/// Fetches and builds everything the VM needs; returns the pieces (used by lab and demo).
pub struct Prepared {
    pub paths: Paths,
    pub qemu: PathBuf,
    pub kernel: fetch::KernelFiles,
    pub tools: PathBuf,
    pub edu_mig: PathBuf,
    pub selftest: PathBuf,
    /// The binary packed in the release tarball (`cargo xtask dist`), and its `--version`.
    pub migscope: PathBuf,
    pub migscope_version: String,
    /// The L2 guest of the QEMU scenarios.
    pub l2: PathBuf,
}

pub fn prepare(kernel: Kernel, refresh: bool) -> Result<Prepared> {
    let paths = Paths::new()?;
    fs::create_dir_all(&paths.cache)?;
    let t = Instant::now();
    let apt = Apt::new(&paths.cache);
    apt.update(refresh)?;
    let tools = fetch::fetch_tools(&apt, &paths.cache)?;
    let qemu = fetch::fetch_qemu(&apt, &paths.cache)?;
    let k = fetch::fetch_kernel(&apt, &paths.cache, kernel)?;
    eprintln!(
        "lab: packages ready in {:.1} s (kernel {})",
        t.elapsed().as_secs_f64(),
        k.release
    );
    let t = Instant::now();
    let edu_mig = guest::build_module(&paths, &k, &tools)?;
    let selftest = guest::build_selftest(&paths)?;
    let release = guest::build_migscope()?;
    let l2 = guest::build_l2(&paths)?;
    eprintln!(
        "lab: guest binaries ready in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Ok(Prepared {
        paths,
        qemu,
        kernel: k,
        tools,
        edu_mig,
        selftest,
        migscope: release.packed_binary,
        migscope_version: release.version_line,
        l2,
    })
}

/// Why this host cannot even fetch the lab (no Debian package tools), if so.
pub fn cannot_fetch() -> Option<String> {
    for tool in ["apt-get", "dpkg"] {
        if Command::new(tool).arg("--version").output().is_err() {
            return Some(format!(
                "{tool} not found: the lab fetches QEMU and kernels from Debian's registry"
            ));
        }
    }
    None
}

pub fn run(opts: &Options) -> Result<(Outcome, Vec<ScenarioResult>)> {
    if let Some(why) = cannot_fetch() {
        return Ok((Outcome::Skipped(why), Vec::new()));
    }
    let p = prepare(opts.kernel, opts.refresh)?;
    run_prepared(&p, opts)
}

/// Why `s` cannot run on `kernel` (the guest kernel's `headers`), if it cannot: the scenario
/// is then skipped with this reason, never run and never counted as failed.
pub fn skip_reason(s: &Scenario, kernel: Kernel, headers: &fetch::KernelFiles) -> Option<String> {
    if s.needs_precopy && kernel == Kernel::K61 {
        return Some(format!(
            "needs PRE_COPY (6.2+): not run on {}",
            kernel.name()
        ));
    }
    if s.dma_log {
        return no_dma_logging(headers).map(|why| format!("skipped: {why}"));
    }
    None
}

/// Runs the scenarios with everything already fetched and built.
pub fn run_prepared(p: &Prepared, opts: &Options) -> Result<(Outcome, Vec<ScenarioResult>)> {
    if let Some(why) = vm::cannot_run(&p.qemu) {
        return Ok((Outcome::Skipped(why), Vec::new()));
    }
    let scenarios: Vec<&Scenario> = opts
        .scenarios
        .iter()
        .copied()
        .filter(|s| match skip_reason(s, opts.kernel, &p.kernel) {
            Some(why) => {
                eprintln!("lab: {} {why}", s.name);
                false
            }
            None => true,
        })
        .collect();
    if scenarios.is_empty() && !opts.scenarios.is_empty() {
        // Every scenario asked for was skipped, each with its reason: no VM to boot.
        eprintln!("lab: nothing left to run on {}", opts.kernel.name());
        return Ok((Outcome::Ok, Vec::new()));
    }
    let devices = scenarios.iter().map(|s| s.devices).max().unwrap_or(1);
    let bridged = scenarios.iter().map(|s| s.bridged).max().unwrap_or(0);
    let mut run_sh = String::new();
    for s in &scenarios {
        run_sh.push_str(&scenario::guest_line(s));
    }
    let work = p.paths.out.join(format!("vm-{}", opts.kernel.name()));
    if work.exists() {
        fs::remove_dir_all(&work)?;
    }
    fs::create_dir_all(&work)?;
    let initrd = work.join("initrd.cpio");
    // QEMU (and the memory it needs) only when a qemu-* scenario runs: other runs keep their
    // initramfs size and boot time.
    let with_qemu = scenarios.iter().any(|s| s.qemu());
    // An earlier build beside ours for drive-memory's before/after.
    let base = std::env::var_os("MIGSCOPE_LAB_BASE")
        .filter(|_| {
            scenarios
                .iter()
                .any(|s| matches!(s.run, Run::Memory { .. }))
        })
        .map(PathBuf::from);
    // tmux likewise only for drive-tui.
    let tmux = if scenarios.iter().any(|s| s.tmux()) {
        Some(fetch::fetch_tmux(
            &Apt::new(&p.paths.cache),
            &p.paths.cache,
        )?)
    } else {
        None
    };
    guest::write_initramfs(
        &GuestFiles {
            kernel: &p.kernel,
            busybox: p.tools.join("bin/busybox"),
            edu_mig: p.edu_mig.clone(),
            selftest: p.selftest.clone(),
            migscope: p.migscope.clone(),
            run_sh,
            qemu: with_qemu.then_some(QemuFiles {
                root: &p.qemu,
                l2: &p.l2,
            }),
            tmux: tmux.as_deref(),
            base: base.clone(),
        },
        &initrd,
    )?;
    let progress = crate::progress::Lab::new(opts.kernel.name(), scenarios.len());
    let (accel, why) = vm::detect_accel();
    eprintln!("lab: accel {} ({why})", accel.name());
    // A QEMU case runs two L2 VMMs under nested TCG and may repeat its source twice.
    let budget: Duration = scenarios
        .iter()
        .map(|s| {
            Duration::from_secs(match s.run {
                Run::Qemu(_) => 300,
                // Two drives (with a base build) and their set-up.
                Run::Memory { secs, base_secs } => secs + base_secs + 180,
                _ => 120,
            })
        })
        .sum();
    let mut cfg = VmConfig {
        qemu_root: &p.qemu,
        vmlinux: &p.kernel.vmlinux,
        initrd: &initrd,
        edu_devices: devices,
        bridged_edu: bridged,
        memory: if with_qemu { "2G" } else { "1G" },
        accel,
        results: work.join("results.tar"),
        console_log: work.join("console.log"),
        boot_timeout: Duration::from_secs(if accel == Accel::Kvm { 20 } else { 120 }),
        total_timeout: Duration::from_secs(120) + budget,
        echo_console: opts.verbose,
        progress: &progress,
    };
    let mut used = accel;
    let mut vmrun = vm::boot(&cfg)?;
    if accel == Accel::Kvm && vmrun.timed_out == Some("boot") {
        eprintln!(
            "lab: KVM boot hung for {:?}: falling back to TCG",
            cfg.boot_timeout
        );
        cfg.accel = Accel::Tcg;
        cfg.boot_timeout = Duration::from_secs(120);
        used = Accel::Tcg;
        vmrun = vm::boot(&cfg)?;
    }
    progress.finish();
    // The guest (busybox, no libc) ran the binary packed in the release tarball: proof that
    // it is static, and the same build as the tarball's (`--version` names commit and probe).
    let packed_ok = match vmrun.marker("LAB:MIGSCOPE") {
        Some(l) if l.text == format!("LAB:MIGSCOPE {}", p.migscope_version) => {
            eprintln!(
                "lab: guest ran the packed static binary: {}",
                p.migscope_version
            );
            true
        }
        other => {
            eprintln!(
                "lab: the guest did not run the packed binary ({}): expected {}",
                other.map_or("no LAB:MIGSCOPE line", |l| l.text.as_str()),
                p.migscope_version
            );
            false
        }
    };
    let boot_s = vmrun.marker("LAB:BOOT").map(|l| l.at.as_secs_f64());
    let ready_s = vmrun.marker("LAB:READY").map(|l| l.at.as_secs_f64());
    eprintln!(
        "lab: VM ({}, {} edu{}) boot to /init {}, VFIO+edu-mig bound {}, powered off after {:.1} s{}",
        used.name(),
        devices,
        if bridged > 0 {
            let at: Vec<String> = (0..bridged).map(scenario::bridged_bdf).collect();
            format!(" + {bridged} behind root ports at {}", at.join(", "))
        } else {
            String::new()
        },
        fmt_s(boot_s),
        fmt_s(ready_s),
        vmrun.wall.as_secs_f64(),
        vmrun
            .timed_out
            .map(|w| format!(" (TIMED OUT during {w})"))
            .unwrap_or_default()
    );
    if let Some(f) = vmrun.marker("LAB:FATAL") {
        eprintln!("lab: guest: {}", f.text);
    }
    let results_dir = work.join("out");
    let unpacked = vm::unpack_results(&cfg.results, &results_dir);
    if let Err(e) = &unpacked {
        eprintln!("lab: {e:#}");
    }
    let mut results = Vec::new();
    for s in &scenarios {
        let dest = p.paths.out.join(s.name);
        if dest.exists() {
            fs::remove_dir_all(&dest)?;
        }
        let src = results_dir.join(s.name);
        if src.exists() {
            fs::rename(&src, &dest)?;
        } else {
            fs::create_dir_all(&dest)?;
        }
        let marker = vmrun
            .lines
            .iter()
            .find(|l| l.text.starts_with(&format!("LAB:RESULT {} ", s.name)))
            .map(|l| l.text.clone());
        let r = judge(s, &dest, marker.as_deref(), &p.migscope);
        fs::write(dest.join("result.json"), serde_json::to_string_pretty(&r)?)?;
        results.push(r);
    }
    fs::write(
        p.paths
            .out
            .join(format!("summary-{}.json", opts.kernel.name())),
        serde_json::to_string_pretty(&json!({
            "kernel": p.kernel.release, "accel": used.name(), "boot_s": boot_s, "ready_s": ready_s,
            "vm_wall_s": vmrun.wall.as_secs_f64(), "scenarios": results,
        }))?,
    )?;
    if !opts.keep {
        let _ = fs::remove_file(&initrd);
    }
    let ok = packed_ok && vmrun.timed_out.is_none() && results.iter().all(|r| r.ok);
    Ok((if ok { Outcome::Ok } else { Outcome::Unexpected }, results))
}

fn fmt_s(s: Option<f64>) -> String {
    s.map(|s| format!("{s:.1} s"))
        .unwrap_or_else(|| "never".into())
}

/// `LAB:RESULT name rc=N t0=A t1=B` -> (rc, seconds).
fn parse_marker(m: &str) -> (Option<i32>, Option<f64>) {
    let mut rc = None;
    let (mut t0, mut t1) = (None, None);
    for w in m.split_whitespace() {
        if let Some(v) = w.strip_prefix("rc=") {
            rc = v.parse().ok();
        } else if let Some(v) = w.strip_prefix("t0=") {
            t0 = v.parse::<f64>().ok();
        } else if let Some(v) = w.strip_prefix("t1=") {
            t1 = v.parse::<f64>().ok();
        }
    }
    (rc, t0.zip(t1).map(|(a, b)| b - a))
}

/// The attempt count init.sh printed after `prefix` (drive_inflight, qemu_case).
fn attempts(stdout: &str, prefix: &str) -> Option<u32> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|n| n.trim().parse().ok())
}

fn count_lines(text: &str, needle: &str) -> u64 {
    text.lines().filter(|l| l.contains(needle)).count() as u64
}

/// Judges one scenario from its returned files.
pub fn judge(s: &Scenario, dir: &Path, marker: Option<&str>, migscope: &Path) -> ScenarioResult {
    let mut r = ScenarioResult {
        name: s.name.into(),
        expected: s.expected.into(),
        verdict: "none".into(),
        sources: Value::Null,
        ..Default::default()
    };
    let Some(m) = marker else {
        r.problems
            .push("the guest never reported this scenario".into());
        return r;
    };
    (r.guest_rc, r.secs) = parse_marker(m);
    let dmesg = fs::read_to_string(dir.join("dmesg")).unwrap_or_default();
    r.drained = count_lines(&dmesg, "drained in-flight DMA");
    r.held_released = count_lines(&dmesg, "released held DMA command");
    match s.run {
        Run::Selftest => {
            let out = fs::read_to_string(dir.join("stdout")).unwrap_or_default();
            r.verdict = if r.guest_rc == Some(0) && out.contains("SELFTEST PASS") {
                "pass".into()
            } else {
                "fail".into()
            };
            r.rules = out
                .lines()
                .filter(|l| l.starts_with("FAIL"))
                .map(String::from)
                .collect();
        }
        Run::Memory { .. } => {
            let out = fs::read_to_string(dir.join("stdout")).unwrap_or_default();
            r.memory = out
                .lines()
                .filter(|l| l.starts_with("rss "))
                .map(String::from)
                .collect();
            r.verdict = if r.guest_rc == Some(0) && !r.memory.is_empty() {
                "pass".into()
            } else {
                "fail".into()
            };
        }
        Run::Shell(_) if !dir.join("trace.jsonl").exists() => {
            let out = fs::read_to_string(dir.join("stdout")).unwrap_or_default();
            r.syscost = out
                .lines()
                .filter(|l| l.starts_with("SYSCOST ") || l.starts_with("record-"))
                .map(String::from)
                .collect();
            r.verdict = if r.guest_rc == Some(0) {
                "pass".into()
            } else {
                "fail".into()
            };
        }
        Run::Shell(_) => judge_trace(s, dir, migscope, &mut r),
        Run::Drive { .. } => {
            // init.sh's drive_inflight: attempts until a transfer was in flight at the quiesce.
            let stdout = fs::read_to_string(dir.join("stdout")).unwrap_or_default();
            r.attempts = attempts(&stdout, "drive: attempts ");
            judge_trace(s, dir, migscope, &mut r)
        }
        Run::Qemu(q) => judge_qemu(s, &q, dir, migscope, &mut r),
    }
    if r.verdict != s.expected {
        r.problems
            .push(format!("verdict {} (expected {})", r.verdict, s.expected));
    }
    for rule in s.rules {
        if !r.rules.iter().any(|x| x == rule) {
            r.problems.push(format!("rule {rule} not reported"));
        }
    }
    for e in s.all_extras() {
        match e {
            Extra::RestoreVerified => {
                if !dmesg.contains("restore verified") || dmesg.contains("restore MISMATCH") {
                    r.problems
                        .push("the driver did not verify the restored registers".into());
                }
            }
            Extra::Evidence => {
                for src in ["witness", "irq"] {
                    if r.sources.get(src).and_then(Value::as_str) != Some("ok") {
                        r.problems.push(format!("evidence source {src} was not ok"));
                    }
                }
                if r.device_witness.is_empty() {
                    r.problems.push("the trace declares no device".into());
                }
                for (dev, w) in &r.device_witness {
                    if w != "ok" {
                        r.problems
                            .push(format!("{dev}: its own witness source is {w}"));
                    }
                }
                if r.drained == 0 {
                    r.problems
                        .push("no DMA was in flight at the quiesce (nothing drained)".into());
                }
            }
            Extra::WitnessUnavailable => {
                if r.device_witness.is_empty()
                    || r.device_witness
                        .values()
                        .any(|w| !w.starts_with("unavailable: "))
                {
                    r.problems.push(format!(
                        "every device's witness should be unavailable: {:?}",
                        r.device_witness
                    ));
                }
                if !r.blind_spots.iter().any(|b| b == "dma") {
                    r.problems.push(format!(
                        "the dma blind spot is not named (blind spots {:?})",
                        r.blind_spots
                    ));
                }
            }
            Extra::WitnessCaught => {
                if r.witness_violations == 0 {
                    r.problems
                        .push("no dma-after-quiesce violation came from the witness".into());
                }
            }
            Extra::ConformanceTable => {
                let out = fs::read_to_string(dir.join("stdout")).unwrap_or_default();
                let line = out.lines().find(|l| l.starts_with("conformance:"));
                if !line.is_some_and(|l| l.contains(" 0 mismatches")) {
                    r.problems.push(format!(
                        "conformance table not equal to the kernel FSM: {}",
                        line.unwrap_or("no summary line")
                    ));
                }
            }
            Extra::Storm => storm_problems(dir, &dmesg, &mut r),
            Extra::StepsTraced => {
                if r.steps == 0 {
                    r.problems.push("the probe traced no FSM step".into());
                }
            }
            Extra::PrecopyInfo => {
                if let Err(why) = precopy_info_agrees(&dir.join("trace.jsonl")) {
                    r.problems.push(why);
                }
            }
            Extra::ResumeFuzzed => {
                if let Err(why) = resume_fuzzed(&dir.join("trace.jsonl")) {
                    r.problems.push(why);
                }
            }
            Extra::RegsCompared => {
                if let Err(why) = regs_compared(&dir.join("trace.jsonl")) {
                    r.problems.push(why);
                }
            }
            Extra::VmmDirtyLogged => {
                for role in ["src", "dst"] {
                    if let Err(why) = vmm_dirty_logged(dir, role) {
                        r.problems.push(format!("{role}: {why}"));
                    }
                }
            }
            Extra::DirtyLogged => {
                if let Err(why) = dirty_logged(dir) {
                    r.problems.push(why);
                }
            }
            Extra::TrueStateReadBack => {
                if !true_state_read_back(&dir.join("trace.jsonl")) {
                    r.problems
                        .push("no GET reported the true state after the failed SET".into());
                }
            }
            Extra::NamedByBdf(devs) => {
                let text = fs::read_to_string(dir.join("trace.jsonl")).unwrap_or_default();
                r.problems.extend(naming_problems(&text, devs));
            }
            Extra::RuleOnEach(rule, devs) => {
                let check = fs::read_to_string(dir.join("trace.check.json")).unwrap_or_default();
                let on: Vec<String> = serde_json::from_str::<Value>(&check)
                    .ok()
                    .and_then(|v| v.get("violations").cloned())
                    .and_then(|v| v.as_array().cloned())
                    .unwrap_or_default()
                    .iter()
                    .filter(|f| f.get("rule").and_then(Value::as_str) == Some(rule))
                    .filter_map(|f| f.get("dev").and_then(Value::as_str).map(String::from))
                    .collect();
                for d in devs {
                    if !on.iter().any(|x| x == d) {
                        r.problems.push(format!("no {rule} on {d}"));
                    }
                }
            }
            Extra::Unresolved(addrs) => {
                r.problems
                    .extend(unresolved_problems(&dir.join("trace.jsonl"), addrs));
            }
            Extra::DeclaredState(dev, state) => {
                let got = declared_state(&dir.join("trace.jsonl"), dev);
                if got.as_deref() != Some(state) {
                    r.problems.push(format!(
                        "{dev} declared in {} (expected {state})",
                        got.as_deref().unwrap_or("no declaration")
                    ));
                }
            }
            Extra::BdfNamed => {
                let bdfs = s.bdfs();
                for (name, text) in traces(s, dir) {
                    for p in naming_problems(&text, &bdfs) {
                        r.problems.push(format!("{name}: {p}"));
                    }
                }
            }
            Extra::DrainedAtQuiesce => {
                let n = count_lines(source_dmesg(&dmesg), "drained in-flight DMA");
                if n == 0 {
                    r.problems.push(
                        "edu-mig drained no in-flight transfer at the source QEMU's quiesce".into(),
                    );
                }
            }
            Extra::L2Dma => {
                if let Run::Qemu(q) = s.run {
                    for role in q.roles() {
                        if let Some(p) = l2_dma_problem(dir, role) {
                            r.problems.push(p);
                        }
                    }
                }
            }
            Extra::CleanOpen => {
                let opens: Vec<&str> = dmesg
                    .lines()
                    .filter(|l| l.contains("edu-mig: open:"))
                    .collect();
                let want = s.devices
                    * match s.run {
                        Run::Qemu(q) => q.roles().len(),
                        _ => 1,
                    };
                if opens.len() < want {
                    r.problems.push(format!(
                        "edu-mig reported {} device opens, at least {want} expected",
                        opens.len()
                    ));
                }
                for l in opens.iter().filter(|l| !l.contains("edu quiet")) {
                    r.problems
                        .push(format!("an earlier user left edu busy: {}", l.trim()));
                }
            }
            Extra::ResetPath => {
                if let Run::Qemu(q) = s.run {
                    for role in q.roles() {
                        r.problems.extend(reset_path_problems(dir, role));
                    }
                }
            }
            Extra::TuiLive => {
                let read = |f: &str| fs::read_to_string(dir.join(f)).unwrap_or_default();
                let live = TuiCaptures {
                    mid: read("mid.txt"),
                    mid_sets: read("mid.sets"),
                    last: read("final.txt"),
                    stderr: read("drive.err"),
                };
                for dev in s.bdfs() {
                    r.problems.extend(live.problems(&dev, &r.verdict));
                }
                if let Some((frames, p99)) = live.frames() {
                    r.tui_frames = Some(frames);
                    r.tui_frame_p99_ms = Some(p99);
                }
            }
            // Applied by judge_trace / judge_qemu.
            Extra::CheckedWith(_) => {}
            Extra::ResetReadBack => {
                r.problems
                    .extend(reset_read_back_problems(&dir.join("trace.jsonl")));
            }
            Extra::StaleReadRefused => {
                r.problems
                    .extend(stale_read_problems(&dir.join("trace.jsonl"), &s.bdfs()));
            }
            Extra::QuiescedGets => {
                if !quiesced_gets(&dir.join("trace.jsonl")) {
                    r.problems
                        .push("drive read no quiesced device's state back while dwelling".into());
                }
            }
            Extra::CutWhileOpen => {
                if let Err(why) = cut_while_open(&dir.join("trace.jsonl"), migscope) {
                    r.problems.push(why);
                }
            }
        }
    }
    r.ok = r.problems.is_empty();
    r
}

fn judge_trace(s: &Scenario, dir: &Path, migscope: &Path, r: &mut ScenarioResult) {
    let trace = dir.join("trace.jsonl");
    if !trace.exists() {
        let err = fs::read_to_string(dir.join("stderr")).unwrap_or_default();
        r.problems.push(format!(
            "no trace came back (drive exit {:?}): {}",
            r.guest_rc,
            err.lines().last().unwrap_or("")
        ));
        return;
    }
    let opts = s.check_options();
    let main = check_one(&trace, migscope, &opts, r);
    exports_agree(&trace, &main.verdict, migscope, &opts, r);
    irq_detail_agrees(&trace, dir, migscope, &opts, r);
    r.sources = main.sources.clone();
    r.verdict = main.verdict.clone();
    r.rules = main.rules.clone();
    r.blind_spots = main.blind_spots.clone();
    r.witness_violations = main.witness_violations;
    r.device_witness = device_witness(&trace, &main.sources);
    (r.sweep_median_us, r.sweep_max_us) = sweep_interval(&trace);
    // The side `migscope record` (drive_rec) stands in only while drive's own trace has no
    // probe (its `transitions` source not ok): then its evidence joins drive's.
    let side = dir.join("probe.jsonl");
    let own_probe = main.sources.get("transitions").and_then(Value::as_str) == Some("ok");
    if side.exists() && !own_probe {
        let p = check_one(&side, migscope, &opts, r);
        if let (Some(m), Some(ps)) = (r.sources.as_object_mut(), p.sources.as_object()) {
            for (k, v) in ps {
                if v.as_str() == Some("ok") && k != "mdev_dma" {
                    m.insert(k.clone(), v.clone());
                }
            }
        }
        r.verdict = worse(&r.verdict, &p.verdict).into();
        r.rules.extend(p.rules);
        r.rules.sort();
        r.rules.dedup();
    }
}

/// A recorder beside the default one with every interrupt exact (`rec_selftest`'s
/// trace-all.jsonl, `rec_storm`'s native trace-all.mst): its verdict must be the default's
/// (`agree::irq_detail_disagreements`), and it must hold no `irq_bin` (the default's bins are
/// counted in `r.irq_bins`). Neither may have lost events: the binned trace's loss is a problem
/// of its own, and a full-detail trace that lost some (its ring overflowed) cannot be compared,
/// which the judge says instead of a disagreement.
fn irq_detail_agrees(
    trace: &Path,
    dir: &Path,
    migscope: &Path,
    opts: &[&str],
    r: &mut ScenarioResult,
) {
    let Some(all) = ["trace-all.mst", "trace-all.jsonl"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.exists())
    else {
        return;
    };
    let name = all
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let (quiesce, full) = match (
        storm::TraceStats::read(trace),
        storm::TraceStats::read(&all),
    ) {
        (Ok(q), Ok(a)) => (q, a),
        (Err(e), _) | (_, Err(e)) => {
            r.problems.push(format!("--irq-detail: {e}"));
            return;
        }
    };
    let mut scratch = ScenarioResult::default();
    check_one(&all, migscope, opts, &mut scratch);
    r.problems.append(&mut scratch.problems);
    r.irq_all = full.interrupts();
    if full.bins() > 0 {
        r.problems.push(format!(
            "--irq-detail all: {name} holds {} irq_bin events",
            full.bins()
        ));
    }
    if quiesce.lost() > 0 {
        r.problems.push(format!(
            "the binned trace (--irq-detail quiesce) lost {} events: its ring overflowed",
            quiesce.lost()
        ));
    }
    if full.lost() > 0 {
        r.problems.push(format!(
            "--irq-detail all: {name} lost {} of its events (its ring overflowed: {} interrupts \
             recorded, {} binned): the two details cannot be compared on this run",
            full.lost(),
            full.interrupts(),
            quiesce.interrupts()
        ));
        return;
    }
    let read = |p: &Path| -> Result<Value, String> {
        let c = p.with_extension("check.json");
        let b = fs::read(&c).map_err(|e| format!("{}: {e}", c.display()))?;
        serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", c.display()))
    };
    match read(trace)
        .and_then(|q| Ok((q, read(&all)?)))
        .and_then(|(q, a)| migscope_core::export::agree::irq_detail_disagreements(&q, &a))
    {
        Ok(d) => r.problems.extend(d),
        Err(e) => r.problems.push(format!("--irq-detail all: {e}")),
    }
}

/// An interrupt storm (`rec_storm`): edu-mig started its storm thread and stopped the storm at
/// a quiesce, the binned trace holds bins of many interrupts, both recorders counted the same
/// interrupts (nothing lost on either side), no binned trace lost events, and the measurement
/// of every trace left.
fn storm_problems(dir: &Path, dmesg: &str, r: &mut ScenarioResult) {
    if count_lines(dmesg, "storm thread started") == 0 {
        r.problems
            .push("edu-mig never started its storm thread".into());
    }
    if count_lines(dmesg, "edu-mig: storm stopped:") == 0 {
        r.problems
            .push("edu-mig never stopped the storm at a quiesce".into());
    }
    for l in dmesg
        .lines()
        .filter(|l| l.contains("fewer handled than raised"))
    {
        r.problems.push(format!("edu-mig: {}", l.trim()));
    }
    let (q, a) = match (
        storm::TraceStats::read(&dir.join("trace.jsonl")),
        storm::TraceStats::read(&dir.join("trace-all.mst")),
    ) {
        (Ok(q), Ok(a)) => (q, a),
        (Err(e), _) | (_, Err(e)) => {
            r.problems.push(format!("storm: {e}"));
            return;
        }
    };
    // edu's own completion MSIs come one per 100 ms transfer: a bin of many is the storm.
    if q.largest_bin() < 10 {
        r.problems.push(format!(
            "storm: the binned trace's largest irq_bin holds {} interrupts: no storm was binned",
            q.largest_bin()
        ));
    }
    if q.lost() == 0 && a.lost() == 0 && q.interrupts() != a.interrupts() {
        r.problems.push(format!(
            "storm: the binned trace counted {} interrupts, the full-detail one {}",
            q.interrupts(),
            a.interrupts()
        ));
    }
    match storm::measure(dir) {
        Ok(m) => r.storm = m,
        Err(e) => r.problems.push(format!("storm: {e}")),
    }
    // Bins cost the ring next to nothing: a binned trace that lost events is a finding. (A
    // full-detail JSONL trace measured for its bytes may lose them: its `lost` is reported.)
    for t in r
        .storm
        .iter()
        .filter(|t| t.detail == "quiesce" && t.lost > 0)
    {
        let p = format!("storm: the binned trace {} lost {} events", t.file, t.lost);
        if !r.problems.contains(&p) {
            r.problems.push(p);
        }
    }
}

/// The worse of two verdicts (fail > inconclusive > pass > none).
fn worse<'a>(a: &'a str, b: &'a str) -> &'a str {
    let rank = |v: &str| match v {
        "fail" => 3,
        "inconclusive" => 2,
        "pass" => 1,
        _ => 0,
    };
    if rank(b) > rank(a) { b } else { a }
}

/// The traces a scenario left: `src.jsonl`/`dst.jsonl` for QEMU cases, else `trace.jsonl`.
fn traces(s: &Scenario, dir: &Path) -> Vec<(String, String)> {
    let names: Vec<String> = match s.run {
        Run::Qemu(q) => q.roles().iter().map(|r| format!("{r}.jsonl")).collect(),
        _ => vec!["trace.jsonl".into()],
    };
    names
        .into_iter()
        .map(|n| {
            let text = fs::read_to_string(dir.join(&n)).unwrap_or_default();
            (n, text)
        })
        .collect()
}

/// Each QEMU's trace judged like any other (verdicts combined, the worse wins), plus QEMU's
/// own account: the SETs it issued, in order and with their outcome, must be migscope's.
fn judge_qemu(s: &Scenario, q: &Qemu, dir: &Path, migscope: &Path, r: &mut ScenarioResult) {
    let stdout = fs::read_to_string(dir.join("stdout")).unwrap_or_default();
    r.attempts = attempts(&stdout, "qemu: source attempts ");
    for l in stdout.lines().filter(|l| l.starts_with("qemu: ")) {
        if !l.starts_with("qemu: source attempts") && !l.contains("no transfer was in flight") {
            r.problems.push(l.into());
        }
    }
    // "qemu ROLE: qemu exit N, ...": with a correct driver QEMU must end cleanly (with a
    // broken one QEMU 10.0.2 may not: after a failed migration it aborts at quit).
    for l in stdout
        .lines()
        .filter(|l| l.starts_with("qemu src:") || l.starts_with("qemu dst:"))
    {
        let exit = l
            .split_once("qemu exit ")
            .and_then(|(_, t)| t.split(',').next())
            .map(str::trim);
        if s.bug == "none" && exit.is_some_and(|e| e != "0") {
            r.problems.push(format!("QEMU did not end cleanly: {l}"));
        }
    }
    for role in q.roles() {
        let trace = dir.join(format!("{role}.jsonl"));
        if !trace.exists() {
            r.problems.push(format!(
                "{role}: no trace came back (guest exit {:?})",
                r.guest_rc
            ));
            r.verdict = worse(&r.verdict, "none").into();
            continue;
        }
        let c = check_one(&trace, migscope, &s.check_options(), r);
        exports_agree(&trace, &c.verdict, migscope, &s.check_options(), r);
        if *role == "src" {
            r.sources = c.sources.clone();
        }
        r.verdict = worse(&r.verdict, &c.verdict).into();
        r.rules.extend(c.rules);
        let text = fs::read_to_string(&trace).unwrap_or_default();
        let qemu = qemu_account(dir, role);
        r.qemu_sets += qemu
            .ops
            .iter()
            .filter(|o| matches!(o, Op::Set { .. }))
            .count() as u64;
        r.qemu_noops += qemu.noops as u64;
        if qemu.ops.is_empty() {
            r.problems.push(format!(
                "{role}: QEMU's own trace (qemu-{role}.trace) has no SET"
            ));
        }
        let (ops, _) = qemutrace::trace_ops(&text);
        if let Some(d) = qemutrace::compare(&qemu.ops, &ops, q.late) {
            r.problems
                .push(format!("{role}: QEMU's SETs and migscope's differ: {d}"));
        }
        let qemu_trace =
            fs::read_to_string(dir.join(format!("qemu-{role}.trace"))).unwrap_or_default();
        let (qd, td) = (
            qemutrace::qemu_data(&qemu_trace),
            qemutrace::trace_data(&text),
        );
        if qd != td {
            r.problems.push(format!(
                "{role}: migration data bytes differ: QEMU {qd:?}, migscope {td:?}"
            ));
        }
    }
    r.rules.sort();
    r.rules.dedup();
}

/// QEMU's SETs and resets from `qemu-ROLE.trace` and `qemu-ROLE.err`.
fn qemu_account(dir: &Path, role: &str) -> qemutrace::QemuOps {
    let read = |f: String| fs::read_to_string(dir.join(f)).unwrap_or_default();
    qemutrace::qemu_ops(
        &read(format!("qemu-{role}.trace")),
        &read(format!("qemu-{role}.err")),
    )
}

/// QEMU's reset path in migscope's trace: at least one reset, and every device's final state
/// the one QEMU last recorded.
fn reset_path_problems(dir: &Path, role: &str) -> Vec<String> {
    let text = fs::read_to_string(dir.join(format!("{role}.jsonl"))).unwrap_or_default();
    let (ops, last) = qemutrace::trace_ops(&text);
    let mut problems = Vec::new();
    if !ops.iter().any(|o| matches!(o, Op::Reset { .. })) {
        problems.push(format!("{role}: no VFIO_DEVICE_RESET in migscope's trace"));
    }
    if !ops.iter().any(|o| {
        matches!(
            o,
            Op::Set {
                ok: Some(false),
                ..
            }
        )
    }) {
        problems.push(format!("{role}: no failed SET in migscope's trace"));
    }
    let qemu = qemu_account(dir, role);
    let mut devs: Vec<_> = qemu.last.iter().collect();
    devs.sort();
    for (dev, st) in devs {
        if last.get(dev) != Some(st) {
            problems.push(format!(
                "{role}: {dev} ends in {st} by QEMU, in {} by migscope",
                last.get(dev).map_or("an unknown state", String::as_str)
            ));
        }
    }
    problems
}

/// The L2 guest made DMA on `role`'s QEMU (the source before it migrated; the destination
/// after it resumed), every transfer pair compared equal, no exception.
fn l2_dma_problem(dir: &Path, role: &str) -> Option<String> {
    let log = fs::read_to_string(dir.join(format!("l2-{role}.log"))).unwrap_or_default();
    let pairs = count_lines(&log, " pair=");
    let bad = log
        .lines()
        .find(|l| l.contains("MISMATCH") || l.contains("FATAL"));
    match bad {
        Some(l) => Some(format!("{role}: L2 guest: {l}")),
        None if pairs < 2 => Some(format!(
            "{role}: the L2 guest completed {pairs} DMA transfer pairs (l2-{role}.log)"
        )),
        None => None,
    }
}

/// The dmesg lines of the last source QEMU run (between init.sh's `lab: qemu src start` and
/// `lab: qemu src done` kernel log markers); empty without them.
fn source_dmesg(dmesg: &str) -> &str {
    let Some(start) = dmesg.rfind("lab: qemu src start") else {
        return "";
    };
    let rest = &dmesg[start..];
    rest.find("lab: qemu src done")
        .map_or(rest, |end| &rest[..end])
}

/// Every exporter on the real trace (issue: exports run on the lab traces in CI): the native
/// form converts back to the canonical JSONL byte for byte and `check` gives it the same
/// verdict; Perfetto JSON parses and marks a violation iff the verdict is fail; the JUnit
/// report carries failures iff fail; the Markdown report states the verdict. Files are left
/// beside the trace for a bug report.
fn exports_agree(
    trace: &Path,
    verdict: &str,
    migscope: &Path,
    opts: &[&str],
    r: &mut ScenarioResult,
) {
    let dir = trace.parent().unwrap_or(Path::new("."));
    let run = |args: &[&std::ffi::OsStr]| -> Result<std::process::Output, String> {
        Command::new(migscope)
            .args(args)
            .output()
            .map_err(|e| format!("running {}: {e}", migscope.display()))
    };
    let os = |s: &str| std::ffi::OsString::from(s);
    let stem = trace
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("trace");
    let native = dir.join(format!("{stem}.mst"));
    let canon = dir.join(format!("{stem}.canon.jsonl"));
    let back = dir.join(format!("{stem}.roundtrip.jsonl"));
    let perfetto = dir.join(format!("{stem}.perfetto.json"));
    let junit = dir.join(format!("{stem}.junit.xml"));
    let md = dir.join(format!("{stem}.md"));
    let mut problems = Vec::new();
    for (input, fmt, out) in [
        (trace, "native", &native),
        (trace, "jsonl", &canon),
        (native.as_path(), "jsonl", &back),
        (trace, "perfetto", &perfetto),
        (trace, "markdown", &md),
    ] {
        let mut args = vec![
            os("export"),
            input.as_os_str().to_owned(),
            os("--format"),
            os(fmt),
            os("-o"),
            out.as_os_str().to_owned(),
        ];
        args.extend(opts.iter().map(|o| os(o)));
        let argv: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        match run(&argv) {
            Ok(o) if o.status.success() => {}
            Ok(o) => problems.push(format!(
                "export --format {fmt} of {} failed: {}",
                input.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => problems.push(e),
        }
    }
    if fs::read(&canon).ok() != fs::read(&back).ok() || !back.exists() {
        problems.push("JSONL -> native -> JSONL is not byte-identical".into());
    }
    let opt_args: Vec<std::ffi::OsString> = opts.iter().map(|o| os(o)).collect();
    let (check, json, junit_flag) = (os("check"), os("--json"), os("--junit"));
    let mut native_check: Vec<&std::ffi::OsStr> = vec![&check, &json];
    native_check.extend(opt_args.iter().map(|a| a.as_os_str()));
    native_check.push(native.as_os_str());
    let native_verdict = run(&native_check)
        .ok()
        .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok())
        .and_then(|v| v.get("verdict").and_then(Value::as_str).map(String::from));
    if native_verdict.as_deref() != Some(verdict) {
        problems.push(format!(
            "check on the native form says {native_verdict:?}, not {verdict}"
        ));
    }
    let fail = verdict == "fail";
    match fs::read(&perfetto)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
    {
        Some(v) => {
            let events = v
                .get("traceEvents")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let marked = events.iter().any(|e| {
                e.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.starts_with("VIOLATION"))
            });
            if events.is_empty() || marked != fail {
                problems.push(format!(
                    "perfetto export: {} events, violation marked {marked}, verdict {verdict}",
                    events.len()
                ));
            }
        }
        None => problems.push("perfetto export is not JSON".into()),
    }
    let mut junit_check: Vec<&std::ffi::OsStr> = vec![&check, &junit_flag, junit.as_os_str()];
    junit_check.extend(opt_args.iter().map(|a| a.as_os_str()));
    junit_check.push(trace.as_os_str());
    let _ = run(&junit_check);
    let xml = fs::read_to_string(&junit).unwrap_or_default();
    if !xml.contains("<testsuites") || xml.contains("<failure") != fail {
        problems.push(format!("junit report does not match verdict {verdict}"));
    }
    let report = fs::read_to_string(&md).unwrap_or_default();
    if !report.to_lowercase().contains(verdict) {
        problems.push(format!(
            "markdown report does not state the verdict {verdict}"
        ));
    }
    problems.extend(crate::agree::exports_state_check_numbers(
        &trace.with_extension("check.json"),
        &perfetto,
        &junit,
        &md,
    ));
    r.problems.extend(problems);
}

struct Checked {
    verdict: String,
    rules: Vec<String>,
    sources: Value,
    blind_spots: Vec<String>,
    witness_violations: u64,
}

/// `migscope check --json` of one trace (saved beside it), and its event counts added to `r`.
fn check_one(trace: &Path, migscope: &Path, opts: &[&str], r: &mut ScenarioResult) -> Checked {
    let mut c = Checked {
        verdict: "none".into(),
        rules: Vec::new(),
        sources: Value::Null,
        blind_spots: Vec::new(),
        witness_violations: 0,
    };
    let text = fs::read_to_string(trace).unwrap_or_default();
    if let Some(h) = text
        .lines()
        .next()
        .and_then(|l| serde_json::from_str::<Value>(l).ok())
    {
        c.sources = h.get("sources").cloned().unwrap_or(Value::Null);
        if let Some(x) = h.get("hooks").and_then(Value::as_str) {
            // The guest's kernels allow kprobes: `--hooks auto` (record's and drive's
            // default) must have taken the direct path, not fallen back to the syscall
            // tracepoints (issue 16 point 2).
            if x != "direct" {
                r.problems.push(format!(
                    "{}: hooks {x:?}: --hooks auto did not take the direct hooks in the guest",
                    trace.display()
                ));
            }
            if !r.hooks.iter().any(|y| y == x) {
                r.hooks.push(x.to_owned());
            }
        }
    }
    for l in text.lines().skip(1) {
        let Ok(v) = serde_json::from_str::<Value>(l) else {
            continue;
        };
        match v.get("ev").and_then(Value::as_str) {
            Some("irq") => r.irq += 1,
            Some("irq_bin") => {
                r.irq_bins += 1;
                r.irq += v.get("n").and_then(Value::as_u64).unwrap_or(0);
            }
            Some("step") => r.steps += 1,
            Some("device") => {
                if let Some(d) = v.get("dev").and_then(Value::as_str)
                    && !r.devices.iter().any(|x| x == d)
                {
                    r.devices.push(d.to_owned());
                }
            }
            Some("dma") => {
                r.dma += 1;
                if v.get("src").and_then(Value::as_str) == Some("witness") {
                    r.witness_dma += 1;
                }
            }
            _ => {}
        }
    }
    let out = Command::new(migscope)
        .arg("check")
        .arg("--json")
        .args(opts)
        .arg(trace)
        .output();
    match out {
        Ok(o) => {
            let _ = fs::write(trace.with_extension("check.json"), &o.stdout);
            match serde_json::from_slice::<Value>(&o.stdout) {
                Ok(v) => {
                    c.verdict = v
                        .get("verdict")
                        .and_then(Value::as_str)
                        .unwrap_or("none")
                        .into();
                    let list = |key: &str| {
                        v.get(key)
                            .and_then(Value::as_array)
                            .map(Vec::as_slice)
                            .unwrap_or_default()
                    };
                    c.rules = list("violations")
                        .iter()
                        .filter_map(|f| f.get("rule").and_then(Value::as_str).map(String::from))
                        .collect();
                    c.rules.sort();
                    c.rules.dedup();
                    c.blind_spots = list("blind_spots")
                        .iter()
                        .filter_map(|b| b.as_str().map(String::from))
                        .collect();
                    c.witness_violations = list("violations")
                        .iter()
                        .filter(|f| {
                            f.get("rule").and_then(Value::as_str) == Some("dma-after-quiesce")
                                && f.get("detail")
                                    .and_then(Value::as_str)
                                    .is_some_and(|d| d.starts_with("witness "))
                        })
                        .count() as u64;
                }
                Err(e) => r.problems.push(format!(
                    "migscope check --json {} gave no JSON ({e}): {}",
                    trace.display(),
                    String::from_utf8_lossy(&o.stderr).trim()
                )),
            }
        }
        Err(e) => r
            .problems
            .push(format!("running {}: {e}", migscope.display())),
    }
    c
}

/// What drive-tui brought back ([`Extra::TuiLive`]): the pane mid-drive and after the plan,
/// the SETs the trace had at the mid capture, and drive's stderr.
struct TuiCaptures {
    mid: String,
    mid_sets: String,
    last: String,
    stderr: String,
}

impl TuiCaptures {
    /// What the captures fail to show for device `dev`, given `check`'s verdict on the trace.
    fn problems(&self, dev: &str, verdict: &str) -> Vec<String> {
        let mut p = Vec::new();
        if self.mid.is_empty() {
            p.push("no pane was captured mid-drive (mid.txt)".to_owned());
        } else {
            match lane_state(&self.mid, dev) {
                Some(st) if st.quiescent() => {}
                Some(st) => p.push(format!(
                    "mid-drive the lane of {dev} ends in {}, not a quiescent state",
                    st.name()
                )),
                None => p.push(format!("mid-drive the pane has no state lane for {dev}")),
            }
            let head = self.mid.lines().next().unwrap_or("");
            if !(head.contains(" so far ") || head.contains(" FAILING ")) {
                p.push(format!(
                    "mid-drive the header shows no interim verdict: {head:?}"
                ));
            }
        }
        // The trace agrees that the device was quiesced then: its last completed SET.
        let last_set = self
            .mid_sets
            .lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["ev"] == "set_done" && v["dev"] == dev && v["ret"] == 0)
            .find_map(|v| v["to"].as_str().and_then(MigState::from_name));
        if !last_set.is_some_and(MigState::quiescent) {
            p.push(format!(
                "the trace at the mid capture has {dev}'s last SET to {}, not a quiescent state",
                last_set.map_or("nothing", MigState::name)
            ));
        }
        let head = self.last.lines().next().unwrap_or("");
        let want = format!(" {} ", verdict.to_uppercase());
        if !head.contains(&want) || head.contains(" so far ") {
            p.push(format!(
                "after the plan the header does not show check's verdict ({}): {head:?}",
                want.trim()
            ));
        }
        if self.frames().is_none() {
            p.push("the view printed no frame-time summary (drive.err)".to_owned());
        }
        p
    }

    /// Frames drawn and their p99 in ms, from the view's summary line ("migscope: tui frames
    /// N: draw p50 A ms, p99 B ms, ...").
    fn frames(&self) -> Option<(u64, f64)> {
        let l = self
            .stderr
            .lines()
            .find_map(|l| l.strip_prefix("migscope: tui frames "))?;
        let (n, rest) = l.split_once(':')?;
        let p99 = rest.split_once("p99 ")?.1.split_once(" ms")?.0;
        Some((n.trim().parse().ok()?, p99.parse().ok()?))
    }
}

/// The state the lane of `dev` ends in on a captured pane: the last cell of the lane row drawn
/// with a state's fill glyph (the view's own [`state_look`]; ticks, labels and the border are
/// skipped). `None` without such a lane.
fn lane_state(pane: &str, dev: &str) -> Option<MigState> {
    let glyph = |st: MigState| state_look(SegKind::State(Some(st))).0;
    let row = pane
        .lines()
        .find_map(|l| l.trim_start_matches('┃').strip_prefix(dev))?;
    row.chars()
        .rev()
        .find_map(|c| MigState::ALL.into_iter().find(|&st| glyph(st) == c))
}

/// What breaks "every device named by its PCI address" in a trace's text: an event naming any
/// other device (`fd:N@pid`, a phantom), an event of a device before its `device`
/// declaration, one of `devs` never declared. The one check behind `Extra::NamedByBdf` and the
/// QEMU scenarios' implied `Extra::BdfNamed`.
pub fn naming_problems<S: AsRef<str>>(text: &str, devs: &[S]) -> Vec<String> {
    let known = |d: &str| devs.iter().any(|x| x.as_ref() == d);
    let mut declared: Vec<String> = Vec::new();
    let mut problems = Vec::new();
    for (i, l) in text.lines().enumerate().skip(1) {
        let Ok(v) = serde_json::from_str::<Value>(l) else {
            continue;
        };
        let Some(dev) = v.get("dev").and_then(Value::as_str) else {
            continue;
        };
        let ev = v.get("ev").and_then(Value::as_str).unwrap_or("?");
        if !known(dev) {
            let all: Vec<&str> = devs.iter().map(AsRef::as_ref).collect();
            problems.push(format!(
                "line {}: {ev} names {dev}, not one of {all:?}",
                i + 1
            ));
        } else if ev == "device" {
            declared.push(dev.to_owned());
        } else if !declared.iter().any(|d| d == dev) {
            problems.push(format!(
                "line {}: {ev} of {dev} before its declaration",
                i + 1
            ));
        }
    }
    for d in devs {
        if !declared.iter().any(|x| x == d.as_ref()) {
            problems.push(format!("{} was never declared", d.as_ref()));
        }
    }
    problems.truncate(5);
    problems
}

/// What breaks "unresolved device fds are said to be unresolved": a declaration not under a
/// placeholder, a placeholder whose `irq`/`iommu_fault` are not unavailable, an event naming
/// one of `addrs`, interrupts of them not noted as withheld.
fn unresolved_problems(trace: &Path, addrs: &[&str]) -> Vec<String> {
    let text = fs::read_to_string(trace).unwrap_or_default();
    let mut problems = Vec::new();
    let mut placeholders = 0;
    let mut noted = false;
    for (i, l) in text.lines().enumerate().skip(1) {
        let Ok(v) = serde_json::from_str::<Value>(l) else {
            continue;
        };
        let ev = v.get("ev").and_then(Value::as_str).unwrap_or("?");
        let dev = v.get("dev").and_then(Value::as_str);
        if let Some(d) = dev
            && addrs.contains(&d)
        {
            problems.push(format!("line {}: {ev} names {d}", i + 1));
        }
        if ev == "mark"
            && v.get("label")
                .and_then(Value::as_str)
                .is_some_and(|s| s.starts_with("interrupts of") && s.contains("not attributed"))
        {
            noted = true;
        }
        if ev != "device" {
            continue;
        }
        let d = dev.unwrap_or("?");
        if !d.starts_with("fd:") {
            problems.push(format!("line {}: {d} declared, not a placeholder", i + 1));
            continue;
        }
        placeholders += 1;
        for src in ["irq", "iommu_fault"] {
            let s = v
                .get("sources")
                .and_then(|x| x.get(src))
                .and_then(Value::as_str)
                .unwrap_or("");
            if !s.starts_with("unavailable:") || !addrs.iter().all(|a| s.contains(a)) {
                problems.push(format!(
                    "{d}: {src} is {s:?}, not unavailable naming {addrs:?}"
                ));
            }
        }
    }
    if placeholders != addrs.len() {
        problems.push(format!(
            "{placeholders} placeholder devices declared, {} expected",
            addrs.len()
        ));
    }
    if !noted {
        problems.push("no note that their interrupts were not attributed".into());
    }
    problems.truncate(5);
    problems
}

/// The `state` of `dev`'s first `device` declaration.
fn declared_state(trace: &Path, dev: &str) -> Option<String> {
    let text = fs::read_to_string(trace).unwrap_or_default();
    text.lines().skip(1).find_map(|l| {
        let v = serde_json::from_str::<Value>(l).ok()?;
        (v.get("ev")?.as_str()? == "device" && v.get("dev")?.as_str()? == dev).then(|| {
            v.get("state")
                .and_then(Value::as_str)
                .unwrap_or("RUNNING")
                .to_owned()
        })
    })
}

/// Each declared device's effective `witness` source: its latest `device` event's own
/// `sources.witness` when it has one, else the header's.
fn device_witness(trace: &Path, header: &Value) -> std::collections::BTreeMap<String, String> {
    let text = fs::read_to_string(trace).unwrap_or_default();
    let fallback = header
        .get("witness")
        .and_then(Value::as_str)
        .unwrap_or("not declared")
        .to_owned();
    let mut out = std::collections::BTreeMap::new();
    for l in text.lines().skip(1) {
        let Ok(v) = serde_json::from_str::<Value>(l) else {
            continue;
        };
        if v.get("ev").and_then(Value::as_str) != Some("device") {
            continue;
        }
        let Some(dev) = v.get("dev").and_then(Value::as_str) else {
            continue;
        };
        let own = v
            .get("sources")
            .and_then(|s| s.get("witness"))
            .and_then(Value::as_str)
            .map_or_else(|| fallback.clone(), String::from);
        out.insert(dev.to_owned(), own);
    }
    out
}

/// From drive's `BDF: witness across SET S: N sweeps, interval median M us, max X us` marks
/// (those with an interval, N >= 2): the median of the medians and the largest interval.
fn sweep_interval(trace: &Path) -> (Option<u64>, Option<u64>) {
    let text = fs::read_to_string(trace).unwrap_or_default();
    let mut medians = Vec::new();
    let mut max = None;
    for l in text.lines().skip(1) {
        let Ok(v) = serde_json::from_str::<Value>(l) else {
            continue;
        };
        let Some(label) = v.get("label").and_then(Value::as_str) else {
            continue;
        };
        if !label.contains("witness across SET") {
            continue;
        }
        let num = |key: &str| {
            label
                .split(key)
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
        };
        // A watcher that swept once (a SET leaving quiescence returns at once) has no interval.
        if label
            .split(": ")
            .nth(2)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .is_none_or(|n| n < 2)
        {
            continue;
        }
        if let Some(m) = num("interval median ") {
            medians.push(m);
        }
        if let Some(x) = num("max ") {
            max = Some(max.map_or(x, |m: u64| m.max(x)));
        }
    }
    medians.sort_unstable();
    (medians.get(medians.len() / 2).copied(), max)
}

/// After a `set_done` with an error, a later `get` of the same device reported RUNNING (the
/// state edu-mig really stays in when its P2P arc fails).
fn true_state_read_back(trace: &Path) -> bool {
    let text = fs::read_to_string(trace).unwrap_or_default();
    let mut failed_dev: Option<String> = None;
    for l in text.lines().skip(1) {
        let Ok(v) = serde_json::from_str::<Value>(l) else {
            continue;
        };
        let ev = v.get("ev").and_then(Value::as_str);
        let dev = v.get("dev").and_then(Value::as_str).map(String::from);
        if ev == Some("set_done") && v.get("ret").and_then(Value::as_i64).is_some_and(|r| r != 0) {
            failed_dev = dev;
        } else if ev == Some("get") && failed_dev.is_some() && dev == failed_dev {
            return v.get("state").and_then(Value::as_str) == Some("RUNNING");
        }
    }
    false
}

/// [`Extra::ResetReadBack`]: what breaks "every successful reset is followed by a GET of its
/// device before any other SET or reset of it", and a trace without any reset.
fn reset_read_back_problems(trace: &Path) -> Vec<String> {
    let evs = trace_values(trace);
    let field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let mut problems = Vec::new();
    let mut resets = 0;
    for (n, v) in evs.iter().enumerate() {
        if field(v, "ev").as_deref() != Some("reset")
            || v.get("ret").and_then(Value::as_i64) != Some(0)
        {
            continue;
        }
        resets += 1;
        let dev = field(v, "dev");
        let next = evs[n + 1..]
            .iter()
            .find(|w| {
                field(w, "dev") == dev
                    && matches!(field(w, "ev").as_deref(), Some("get" | "set" | "reset"))
            })
            .and_then(|w| field(w, "ev"));
        if next.as_deref() != Some("get") {
            problems.push(format!(
                "{}: the reset at t {} is followed by {} before any GET",
                dev.unwrap_or_default(),
                v.get("t").and_then(Value::as_u64).unwrap_or(0),
                next.map_or("nothing".to_owned(), |e| format!("a {e}"))
            ));
        }
    }
    if resets == 0 {
        problems.push("the trace has no successful reset".into());
    }
    problems
}

/// [`Extra::StaleReadRefused`]: drive's mark of a refused read of the pre-reset data_fd for
/// each device, and no `data` event of a file older than its device's last reset.
fn stale_read_problems(trace: &Path, bdfs: &[String]) -> Vec<String> {
    let evs = trace_values(trace);
    let mut problems = Vec::new();
    for b in bdfs {
        let refused = evs.iter().any(|v| {
            v.get("ev").and_then(Value::as_str) == Some("mark")
                && v.get("label").and_then(Value::as_str).is_some_and(|l| {
                    l.starts_with(&format!("{b}: data_fd "))
                        && l.contains("from before the reset refused the read")
                })
        });
        if !refused {
            problems.push(format!(
                "{b}: no refused read of the data_fd from before the reset"
            ));
        }
    }
    let num = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64);
    for v in &evs {
        if v.get("ev").and_then(Value::as_str) == Some("data")
            && let (Some(f), Some(g)) = (num(v, "fd_gen"), num(v, "reset_gen"))
            && f < g
        {
            problems.push(format!("data moved through a stale data_fd: {v}"));
        }
    }
    problems
}

/// [`Extra::QuiescedGets`].
fn quiesced_gets(trace: &Path) -> bool {
    let evs = trace_values(trace);
    let field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    // Per device: GETs since its last SET returned.
    let mut since: std::collections::BTreeMap<String, u32> = Default::default();
    for v in &evs {
        let Some(dev) = field(v, "dev") else {
            continue;
        };
        match field(v, "ev").as_deref() {
            Some("set_done") => {
                since.insert(dev, 0);
            }
            Some("set") | Some("reset") => {
                since.remove(&dev);
            }
            Some("get") => {
                if let Some(n) = since.get_mut(&dev) {
                    *n += 1;
                    if *n >= 2 {
                        return true;
                    }
                }
            }
            _ => {}
        }
    }
    false
}

/// [`Extra::CutWhileOpen`]: the trace up to (not including) the `set_done` of its slowest SET,
/// an `end` appended, checked without options.
fn cut_while_open(trace: &Path, migscope: &Path) -> Result<(), String> {
    let text = fs::read_to_string(trace).map_err(|e| format!("{}: {e}", trace.display()))?;
    let lines: Vec<&str> = text.lines().collect();
    let mut open: std::collections::BTreeMap<String, u64> = Default::default();
    // (duration, line index of the set_done, t of the set_done)
    let mut slowest: Option<(u64, usize, u64)> = None;
    for (n, l) in lines.iter().enumerate().skip(1) {
        let Ok(v) = serde_json::from_str::<Value>(l) else {
            continue;
        };
        let (Some(ev), Some(dev), Some(t)) = (
            v.get("ev").and_then(Value::as_str),
            v.get("dev").and_then(Value::as_str),
            v.get("t").and_then(Value::as_u64),
        ) else {
            continue;
        };
        match ev {
            "set" => {
                open.insert(dev.to_owned(), t);
            }
            "set_done" => {
                if let Some(t0) = open.remove(dev)
                    && slowest.is_none_or(|(d, _, _)| t - t0 > d)
                {
                    slowest = Some((t - t0, n, t));
                }
            }
            _ => {}
        }
    }
    let Some((_, at, t)) = slowest else {
        return Err("the trace has no completed SET to cut".into());
    };
    let mut cut: String = lines[..at].iter().map(|l| format!("{l}\n")).collect();
    cut.push_str(&format!("{{\"t\":{t},\"ev\":\"end\"}}\n"));
    let path = trace.with_extension("cut.jsonl");
    fs::write(&path, cut).map_err(|e| format!("{}: {e}", path.display()))?;
    let out = Command::new(migscope)
        .arg("check")
        .arg("--json")
        .arg(&path)
        .output()
        .map_err(|e| format!("running {}: {e}", migscope.display()))?;
    let v: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("check of the cut trace gave no JSON: {e}"))?;
    let verdict = v.get("verdict").and_then(Value::as_str).unwrap_or("none");
    let unfinished = v
        .get("blind_spots")
        .and_then(Value::as_array)
        .is_some_and(|b| b.iter().any(|x| x.as_str() == Some("unfinished")));
    if verdict != "inconclusive" || !unfinished {
        return Err(format!(
            "the trace cut while its slowest SET was open is {verdict} (blind spots {}), not inconclusive with unfinished",
            v.get("blind_spots").cloned().unwrap_or(Value::Null)
        ));
    }
    Ok(())
}

/// The trace's events as JSON values (the header skipped).
fn trace_values(trace: &Path) -> Vec<Value> {
    let text = fs::read_to_string(trace).unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

/// resume-fuzz ran whole ([`Extra::ResumeFuzzed`]).
fn resume_fuzzed(trace: &Path) -> Result<(), String> {
    let evs = trace_values(trace);
    let ev = |v: &Value| v.get("ev").and_then(Value::as_str).map(str::to_owned);
    for c in ["truncated", "bitflip", "oversized", "empty"] {
        if !evs.iter().any(|v| {
            ev(v).as_deref() == Some("corrupt_load")
                && v.get("corruption").and_then(Value::as_str) == Some(c)
        }) {
            return Err(format!("no corrupt_load of a {c} stream"));
        }
    }
    let last_corrupt = evs
        .iter()
        .rposition(|v| ev(v).as_deref() == Some("corrupt_load"))
        .unwrap_or(0);
    let after = &evs[last_corrupt..];
    if !after.iter().any(|v| {
        ev(v).as_deref() == Some("data") && v.get("dir").and_then(Value::as_str) == Some("load")
    }) {
        return Err("the good stream was not loaded after the corrupted ones".into());
    }
    let last_get = after
        .iter()
        .rev()
        .find(|v| ev(v).as_deref() == Some("get"))
        .and_then(|v| v.get("state").and_then(Value::as_str));
    if last_get != Some("RUNNING") {
        return Err(format!(
            "the device's last GET after resume-fuzz is {} (expected RUNNING)",
            last_get.unwrap_or("missing")
        ));
    }
    Ok(())
}

/// drive read the registers when saved and once restored ([`Extra::RegsCompared`]).
/// Why a log_ops driver cannot offer device DMA logging on this kernel, from its headers: the
/// iova_bitmap helpers (`iova_bitmap_set`, which a driver's log_read_and_clear reports through)
/// are not exported in its Module.symvers. Up to 6.6 vfio.ko exports them; from 6.7 only
/// CONFIG_IOMMUFD_DRIVER builds them (drivers/iommu/iommufd/iova_bitmap.c).
fn no_dma_logging(k: &fetch::KernelFiles) -> Option<String> {
    let symvers = k.headers.join("Module.symvers");
    let text = match fs::read_to_string(&symvers) {
        Ok(t) => t,
        Err(e) => return Some(format!("cannot read {}: {e}", symvers.display())),
    };
    if text
        .lines()
        .any(|l| l.split('\t').nth(1) == Some("iova_bitmap_set"))
    {
        return None;
    }
    let config = fs::read_to_string(k.headers.join(".config")).unwrap_or_default();
    let said: Vec<&str> = config
        .lines()
        .filter(|l| l.contains("CONFIG_IOMMUFD"))
        .collect();
    Some(format!(
        "{} exports no iova_bitmap_set (not in {}; its .config: {}): vfio_pci_core drivers have no DMA logging there",
        k.release,
        symvers.display(),
        if said.is_empty() {
            "no CONFIG_IOMMUFD* line".to_owned()
        } else {
            said.join(", ")
        }
    ))
}

/// Device DMA logging ran in a `dma_log` scenario: edu-mig logged its START, the trace's
/// `dirty_log` source is ok, and drive's REPORTs are in it.
fn dirty_logged(dir: &Path) -> Result<(), String> {
    let dmesg = fs::read_to_string(dir.join("dmesg")).unwrap_or_default();
    if !dmesg.contains("edu-mig: DMA logging started") {
        return Err("edu-mig's dmesg has no `DMA logging started`".into());
    }
    let trace = dir.join("trace.jsonl");
    let text = fs::read_to_string(&trace).unwrap_or_default();
    let src = text
        .lines()
        .next()
        .and_then(|l| serde_json::from_str::<Value>(l).ok())
        .and_then(|h| h.pointer("/sources/dirty_log").cloned());
    if src.as_ref().and_then(Value::as_str) != Some("ok") {
        return Err(format!("the trace's dirty_log source is {src:?}, not ok"));
    }
    let reports = trace_values(&trace)
        .iter()
        .filter(|v| v.get("ev").and_then(Value::as_str) == Some("dirty_report"))
        .count();
    if reports == 0 {
        return Err("no dirty_report in the trace".into());
    }
    Ok(())
}

/// QEMU used the device's DMA log on `role` ([`Extra::VmmDirtyLogged`]). The source must
/// have: QEMU 10's `vfio_device_dirty_tracking_start` (traced by
/// `vfio_devices_dma_logging_start()` only when every device of the container has
/// `dirty_pages_supported`, hw/vfio/common.c `vfio_listener_log_global_start`), its
/// DMA_LOGGING_START in migscope's trace, no type1 VFIO_IOMMU_DIRTY_PAGES, and as many
/// `dirty_report`s as QEMU made successful REPORTs (each of its `vfio_get_dirty_bitmap` syncs
/// is one REPORT per device). The destination only loads: it must not start dirty tracking.
fn vmm_dirty_logged(dir: &Path, role: &str) -> Result<(), String> {
    let qemu = fs::read_to_string(dir.join(format!("qemu-{role}.trace"))).unwrap_or_default();
    let trace = dir.join(format!("{role}.jsonl"));
    let evs = trace_values(&trace);
    let marks: Vec<&str> = evs
        .iter()
        .filter(|v| v.get("ev").and_then(Value::as_str) == Some("mark"))
        .filter_map(|v| v.get("label").and_then(Value::as_str))
        .collect();
    if let Some(m) = marks.iter().find(|m| m.starts_with("dirty_pages ")) {
        return Err(format!("type1 dirty pages in migscope's trace: {m}"));
    }
    let started = qemutrace::count_events(&qemu, "vfio_device_dirty_tracking_start");
    let starts = marks
        .iter()
        .filter(|m| m.starts_with("dma_logging start ") && m.ends_with(" ret=0"))
        .count();
    let syncs = qemutrace::count_events(&qemu, "vfio_get_dirty_bitmap");
    let reports = evs
        .iter()
        .filter(|v| v.get("ev").and_then(Value::as_str) == Some("dirty_report"))
        .count();
    let ok_reports = marks
        .iter()
        .filter(|m| m.starts_with("dma_logging report ") && m.ends_with(" ret=0"))
        .count();
    if role == "dst" {
        return if started + starts + syncs + reports == 0 {
            Ok(())
        } else {
            Err(format!(
                "the destination tracked dirty pages: QEMU traced {started} starts, {syncs} syncs; migscope saw {starts} starts, {reports} dirty_reports"
            ))
        };
    }
    if started == 0 {
        return Err(format!(
            "QEMU's trace (qemu-{role}.trace) has no vfio_device_dirty_tracking_start: it did not use the device's DMA log"
        ));
    }
    if starts == 0 {
        return Err("migscope's trace has no successful DMA_LOGGING_START".into());
    }
    if syncs == 0 {
        return Err("QEMU's trace has no vfio_get_dirty_bitmap: it never read the log".into());
    }
    if syncs != ok_reports || syncs != reports {
        return Err(format!(
            "QEMU read the log {syncs} times; migscope saw {ok_reports} successful DMA_LOGGING_REPORTs and decoded {reports} dirty_reports"
        ));
    }
    // Report by report, the range and the dirty pages QEMU counted are the probe's.
    let decoded: Vec<(u64, u64, u64)> = evs
        .iter()
        .filter(|v| v.get("ev").and_then(Value::as_str) == Some("dirty_report"))
        .map(|v| {
            let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(u64::MAX);
            (n("iova"), n("len"), n("dirty_pages"))
        })
        .collect();
    let qemu_syncs = qemutrace::dirty_syncs(&qemu);
    if let Some((i, (q, d))) = qemu_syncs
        .iter()
        .zip(&decoded)
        .enumerate()
        .find(|(_, (q, d))| q != d)
    {
        return Err(format!(
            "REPORT {i}: QEMU's (iova, size, dirty pages) {q:x?}, the probe's dirty_report {d:x?}"
        ));
    }
    Ok(())
}

fn regs_compared(trace: &Path) -> Result<(), String> {
    let evs = trace_values(trace);
    for stage in ["saved", "restored"] {
        if !evs.iter().any(|v| {
            v.get("ev").and_then(Value::as_str) == Some("regs")
                && v.get("stage").and_then(Value::as_str) == Some(stage)
                && v.get("registers")
                    .and_then(Value::as_object)
                    .is_some_and(|o| !o.is_empty())
        }) {
            return Err(format!("no `regs` event of stage {stage}"));
        }
    }
    Ok(())
}

/// The `precopy_info` events the probe decoded from drive's VFIO_MIG_GET_PRECOPY_INFO calls
/// against what drive itself got from the same calls (its `precopy round N: initial_bytes X
/// dirty_bytes Y` marks, in order): the same non-empty sequence, each with `precopy_flags` 0.
fn precopy_info_agrees(trace: &Path) -> Result<(), String> {
    let text = fs::read_to_string(trace).unwrap_or_default();
    let (mut probe, mut drive) = (Vec::new(), Vec::new());
    for l in text.lines().skip(1) {
        let Ok(v) = serde_json::from_str::<Value>(l) else {
            continue;
        };
        let num = |k: &str| v.get(k).and_then(Value::as_u64);
        match v.get("ev").and_then(Value::as_str) {
            Some("precopy_info") if v.get("ret").and_then(Value::as_i64) == Some(0) => {
                if num("precopy_flags") != Some(0) {
                    return Err(format!("precopy_info with precopy_flags other than 0: {l}"));
                }
                probe.push((num("initial_bytes"), num("dirty_bytes")));
            }
            Some("mark") => {
                let label = v.get("label").and_then(Value::as_str).unwrap_or("");
                if let Some((_, rest)) = label.split_once(": initial_bytes ")
                    && label.contains("precopy round ")
                    && let Some((i, d)) = rest.split_once(" dirty_bytes ")
                {
                    drive.push((i.parse().ok(), d.trim().parse().ok()));
                }
            }
            _ => {}
        }
    }
    if probe.is_empty() {
        return Err("the probe decoded no successful VFIO_MIG_GET_PRECOPY_INFO".into());
    }
    if probe != drive {
        return Err(format!(
            "precopy_info (initial, dirty) {probe:?} differ from drive's own {drive:?}"
        ));
    }
    Ok(())
}

/// Prints the human summary.
pub fn print_table(results: &[ScenarioResult]) {
    println!(
        "{:<26} {:<12} {:<15} {:>4} {:>4} {:>7} {:>6} {:>11} {:>6}  rules",
        "scenario", "expected", "verdict", "irq", "dma", "drained", "held", "sweep µs", "secs"
    );
    for r in results {
        println!(
            "{:<26} {:<12} {:<15} {:>4} {:>4} {:>7} {:>6} {:>11} {:>6}  {}",
            r.name,
            r.expected,
            format!("{}{}", r.verdict, if r.ok { "" } else { " !!" }),
            r.irq,
            r.dma,
            r.drained,
            r.held_released,
            match (r.sweep_median_us, r.sweep_max_us) {
                (Some(m), Some(x)) => format!("{m}/{x}"),
                _ => "-".into(),
            },
            r.secs
                .map(|s| format!("{s:.1}"))
                .unwrap_or_else(|| "-".into()),
            r.rules.join(",")
        );
        for m in r.memory.iter().chain(&r.syscost) {
            println!("    {m}");
        }
        for h in &r.hooks {
            println!("    hooks: {h}");
        }
        if let (Some(n), Some(p99)) = (r.tui_frames, r.tui_frame_p99_ms) {
            println!("    tui: {n} frames drawn, p99 {p99:.2} ms");
        }
        for t in &r.storm {
            println!(
                "    storm run {}: {:<16} {:<6} {:<7} {:>6} MSI/s over {:>5.0} ms: {:>8} B/s, lost {}, irq_bin {}, irq {}, interrupts {}",
                t.run,
                t.file,
                t.format,
                t.detail,
                t.msi_per_s,
                t.window_ms,
                t.bytes_per_s,
                t.lost,
                t.irq_bins,
                t.irq,
                t.interrupts
            );
        }
        for p in &r.problems {
            println!("    !! {p}");
        }
    }
}

/// `{"scenarios":[{"name":..,"expected":..,"verdict":..,"rules":[..],"ok":true}]}`.
pub fn summary_json(results: &[ScenarioResult]) -> Value {
    json!({ "scenarios": results.iter().map(|r| json!({
        "name": r.name, "expected": r.expected, "verdict": r.verdict, "rules": r.rules,
        "ok": r.ok, "irq": r.irq, "irq_bins": r.irq_bins, "irq_all": r.irq_all, "dma": r.dma, "drained": r.drained, "secs": r.secs,
        "devices": r.devices,
        "qemu_sets": r.qemu_sets, "qemu_noops": r.qemu_noops, "attempts": r.attempts,
        "problems": r.problems, "witness_dma": r.witness_dma,
        "witness_violations": r.witness_violations, "blind_spots": r.blind_spots,
        "device_witness": r.device_witness, "sweep_median_us": r.sweep_median_us,
        "sweep_max_us": r.sweep_max_us, "tui_frames": r.tui_frames,
        "tui_frame_p99_ms": r.tui_frame_p99_ms, "memory": r.memory, "storm": r.storm,
        "hooks": r.hooks, "syscost": r.syscost,
    })).collect::<Vec<_>>() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// drive-tui's captures from a 6.12 lab run (testdata/drive-tui-6.12.*).
    fn tui_captures() -> TuiCaptures {
        TuiCaptures {
            mid: include_str!("testdata/drive-tui-6.12.mid.txt").to_owned(),
            mid_sets: include_str!("testdata/drive-tui-6.12.mid.sets").to_owned(),
            last: include_str!("testdata/drive-tui-6.12.final.txt").to_owned(),
            stderr: include_str!("testdata/drive-tui-6.12.drive.err").to_owned(),
        }
    }

    #[test]
    fn a_lab_drive_tui_run_shows_the_quiesce_and_both_verdicts() {
        let c = tui_captures();
        // The lane ends in `####` (STOP_COPY), after `~RUNNING_P2P~` and ticks.
        assert_eq!(lane_state(&c.mid, "0000:00:02.0"), Some(MigState::StopCopy));
        // After the plan the lane ends in RUNNING.
        assert_eq!(lane_state(&c.last, "0000:00:02.0"), Some(MigState::Running));
        assert_eq!(lane_state(&c.mid, "0000:00:03.0"), None);
        assert_eq!(c.problems("0000:00:02.0", "pass"), Vec::<String>::new());
        assert_eq!(c.frames().map(|(n, _)| n), Some(200));
    }

    #[test]
    fn drive_tui_problems_name_what_the_panes_lack() {
        let c = tui_captures();
        // check said otherwise than the final pane.
        let p = c.problems("0000:00:02.0", "fail");
        assert!(
            p.len() == 1 && p[0].contains("check's verdict (FAIL)"),
            "{p:?}"
        );
        // The mid capture taken once the device ran again, with a final header.
        let ran = TuiCaptures {
            mid: c.last.clone(),
            ..tui_captures()
        };
        let p = ran.problems("0000:00:02.0", "pass");
        assert!(p.iter().any(|x| x.contains("ends in RUNNING")), "{p:?}");
        assert!(p.iter().any(|x| x.contains("no interim verdict")), "{p:?}");
        // The trace had the device back in RUNNING at the mid capture; no frame summary.
        let resumed = TuiCaptures {
            mid_sets: format!(
                "{}{{\"t\":1,\"ev\":\"set_done\",\"dev\":\"0000:00:02.0\",\"to\":\"RUNNING\",\"ret\":0}}\n",
                c.mid_sets
            ),
            stderr: String::new(),
            ..tui_captures()
        };
        let p = resumed.problems("0000:00:02.0", "pass");
        assert!(p.iter().any(|x| x.contains("last SET to RUNNING")), "{p:?}");
        assert!(
            p.iter().any(|x| x.contains("no frame-time summary")),
            "{p:?}"
        );
    }

    #[test]
    fn result_marker_parses() {
        assert_eq!(
            parse_marker("LAB:RESULT good-stopcopy rc=1 t0=4.50 t1=6.00"),
            (Some(1), Some(1.5))
        );
        assert_eq!(parse_marker("LAB:RESULT x"), (None, None));
    }

    /// A scratch directory standing for a 6.12 kernel's headers (the tests write its
    /// Module.symvers and .config).
    fn headers_dir(tag: &str) -> (std::path::PathBuf, fetch::KernelFiles) {
        let dir = std::env::temp_dir().join(format!("{tag}-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let k = fetch::KernelFiles {
            release: "6.12.95+deb12-amd64".into(),
            vmlinux: dir.join("vmlinux"),
            modules: dir.join("modules"),
            headers: dir.clone(),
        };
        (dir, k)
    }

    #[test]
    fn dma_logging_is_skipped_from_the_headers_exports() {
        let (dir, k) = headers_dir("lab-iovab");
        // 6.12 without IOMMUFD: vfio's exports, no iova_bitmap.
        fs::write(
            dir.join("Module.symvers"),
            "0x1\tvfio_pci_core_register_device\tdrivers/vfio/pci/vfio-pci-core\tEXPORT_SYMBOL_GPL\t\n",
        )
        .unwrap();
        fs::write(
            dir.join(".config"),
            "CONFIG_VFIO=m\n# CONFIG_IOMMUFD is not set\n",
        )
        .unwrap();
        let why = no_dma_logging(&k).expect("no iova_bitmap_set: skipped");
        assert!(why.contains("exports no iova_bitmap_set"), "{why}");
        assert!(why.contains("# CONFIG_IOMMUFD is not set"), "{why}");
        // 6.1: vfio.ko exports it.
        fs::write(
            dir.join("Module.symvers"),
            "0x7d2ed4c3\tiova_bitmap_set\tdrivers/vfio/vfio\tEXPORT_SYMBOL_GPL\t\n",
        )
        .unwrap();
        assert_eq!(no_dma_logging(&k), None);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// The lab's skips, counted by `cargo xtask test` as skipped (not as scenarios that never
    /// reported): PRE_COPY scenarios on 6.1, DMA-logging ones where the headers lack it.
    #[test]
    fn skip_reasons_name_the_missing_feature() {
        let (dir, k) = headers_dir("lab-skip");
        fs::write(dir.join("Module.symvers"), "").unwrap();
        fs::write(dir.join(".config"), "# CONFIG_IOMMUFD is not set\n").unwrap();
        let by_name = |n: &str| {
            scenario::ALL
                .iter()
                .find(|s| s.name == n)
                .unwrap_or_else(|| panic!("no scenario {n}"))
        };
        let precopy = by_name("good-precopy");
        let logged = by_name("dirty-miss");
        let plain = by_name("good-stopcopy");
        assert_eq!(skip_reason(precopy, Kernel::K612, &k), None);
        assert!(
            skip_reason(precopy, Kernel::K61, &k).is_some_and(|w| w.contains("needs PRE_COPY"))
        );
        assert!(
            skip_reason(logged, Kernel::K612, &k)
                .is_some_and(|w| w.contains("exports no iova_bitmap_set"))
        );
        assert_eq!(skip_reason(plain, Kernel::K612, &k), None);
        assert_eq!(skip_reason(plain, Kernel::K61, &k), None);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn naming_needs_every_event_on_a_declared_pci_address() {
        let dir = std::env::temp_dir().join(format!("lab-names-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let t = dir.join("t.jsonl");
        let head = "{\"migscope_trace\":1}\n";
        let decl = "{\"t\":1,\"ev\":\"device\",\"dev\":\"0000:00:02.0\",\"flags\":[],\"ctx\":\"pid9\",\"state\":\"STOP_COPY\"}\n";
        let irq = |dev: &str| {
            format!("{{\"t\":2,\"ev\":\"irq\",\"dev\":\"{dev}\",\"kind\":\"msi\",\"vector\":0}}\n")
        };
        fs::write(&t, format!("{head}{decl}{}", irq("0000:00:02.0"))).unwrap();
        let text = |t: &Path| fs::read_to_string(t).unwrap();
        assert!(naming_problems(&text(&t), &["0000:00:02.0"]).is_empty());
        assert_eq!(
            declared_state(&t, "0000:00:02.0").as_deref(),
            Some("STOP_COPY")
        );
        // A placeholder name, a use before the declaration, a device never declared.
        fs::write(
            &t,
            format!("{head}{}{decl}{}", irq("0000:00:02.0"), irq("fd:7@9")),
        )
        .unwrap();
        let p = naming_problems(&text(&t), &["0000:00:02.0", "0000:00:03.0"]);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].contains("before its declaration"), "{p:?}");
        assert!(p[1].contains("fd:7@9"), "{p:?}");
        assert!(p[2].contains("0000:00:03.0 was never declared"), "{p:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unresolved_needs_placeholders_that_say_so_and_no_phantom() {
        let dir = std::env::temp_dir().join(format!("lab-unres-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let t = dir.join("t.jsonl");
        let head = "{\"migscope_trace\":1}\n";
        let un = "unavailable: one of 0000:00:02.0, 0000:00:03.0";
        let decl = |dev: &str, why: &str| {
            format!(
                "{{\"t\":1,\"ev\":\"device\",\"dev\":\"{dev}\",\"flags\":[],\"ctx\":\"pid9\",\
                 \"sources\":{{\"irq\":\"{why}\",\"iommu_fault\":\"{why}\"}}}}\n"
            )
        };
        let note =
            "{\"t\":2,\"ev\":\"mark\",\"label\":\"interrupts of 0000:00:02.0 not attributed\"}\n";
        let addrs = ["0000:00:02.0", "0000:00:03.0"];
        fs::write(
            &t,
            format!("{head}{}{}{note}", decl("fd:5@9", un), decl("fd:8@9", un)),
        )
        .unwrap();
        assert!(unresolved_problems(&t, &addrs).is_empty());
        // A phantom device by address, and a placeholder claiming irq ok.
        let phantom =
            "{\"t\":3,\"ev\":\"irq\",\"dev\":\"0000:00:02.0\",\"kind\":\"msi\",\"vector\":0}\n";
        fs::write(
            &t,
            format!(
                "{head}{}{}{phantom}",
                decl("fd:5@9", un),
                decl("fd:8@9", "ok")
            ),
        )
        .unwrap();
        let p = unresolved_problems(&t, &addrs);
        assert!(
            p.iter().any(|x| x.contains("fd:8@9: irq is \"ok\"")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|x| x.contains("irq names 0000:00:02.0")),
            "{p:?}"
        );
        assert!(p.iter().any(|x| x.contains("no note")), "{p:?}");
    }

    #[test]
    fn sweep_interval_reads_drives_marks() {
        let dir = std::env::temp_dir().join(format!("lab-sw-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let t = dir.join("t.jsonl");
        let mark = |n: u64, med: u64, max: u64| {
            format!(
                "{{\"t\":1,\"ev\":\"mark\",\"label\":\"0000:00:02.0: witness across SET STOP: {n} sweeps, interval median {med} us, max {max} us\"}}\n"
            )
        };
        let text = format!(
            "{{\"migscope_trace\":1}}\n{}{}{}{}",
            mark(900, 18, 12000),
            mark(1, 0, 0),
            mark(40, 24, 300),
            mark(2, 15, 15)
        );
        fs::write(&t, text).unwrap();
        assert_eq!(sweep_interval(&t), (Some(18), Some(12000)));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn source_dmesg_is_the_last_source_run() {
        let d = "[1] lab: qemu src start\n[2] edu-mig: drained in-flight DMA in 9 ms\n\
                 [3] lab: qemu src done\n[4] lab: qemu src start\n[5] x\n[6] lab: qemu src done\n\
                 [7] lab: qemu dst start\n[8] edu-mig: drained in-flight DMA in 9 ms\n";
        let last = source_dmesg(d);
        assert!(last.starts_with("lab: qemu src start\n[5] x"));
        assert_eq!(count_lines(last, "drained in-flight DMA"), 0);
        assert_eq!(source_dmesg("no markers"), "");
    }

    #[test]
    fn l2_dma_needs_two_good_pairs() {
        let dir = std::env::temp_dir().join(format!("lab-l2-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let line = |n| format!("L2: t={n} dma dev=0 pair={n} irqs=2 bad=0 lost=0\n");
        fs::write(dir.join("l2-src.log"), line(1)).unwrap();
        assert!(
            l2_dma_problem(&dir, "src")
                .unwrap()
                .contains("completed 1 DMA")
        );
        fs::write(dir.join("l2-src.log"), line(1) + &line(2)).unwrap();
        assert_eq!(l2_dma_problem(&dir, "src"), None);
        let bad = "L2: t=3 dma dev=0 pair=3 MISMATCH at byte 0\n";
        fs::write(dir.join("l2-src.log"), line(1) + &line(2) + bad).unwrap();
        assert!(l2_dma_problem(&dir, "src").unwrap().contains("MISMATCH"));
        assert!(l2_dma_problem(&dir, "dst").is_some(), "no log is no DMA");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn true_state_needs_a_get_after_the_failed_set() {
        let dir = std::env::temp_dir().join(format!("lab-ts-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let t = dir.join("t.jsonl");
        let head = "{\"migscope_trace\":1}\n";
        let failed =
            "{\"t\":2,\"ev\":\"set_done\",\"dev\":\"d\",\"to\":\"RUNNING_P2P\",\"ret\":-5}\n";
        fs::write(&t, format!("{head}{failed}")).unwrap();
        assert!(!true_state_read_back(&t));
        fs::write(
            &t,
            format!(
                "{head}{failed}{{\"t\":3,\"ev\":\"get\",\"dev\":\"d\",\"state\":\"RUNNING\"}}\n"
            ),
        )
        .unwrap();
        assert!(true_state_read_back(&t));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn precopy_info_must_match_drives_own_replies() {
        let dir = std::env::temp_dir().join(format!("lab-pi-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let t = dir.join("t.jsonl");
        let head = "{\"migscope_trace\":1}\n";
        let mark = |r, i| {
            format!(
                "{{\"t\":1,\"ev\":\"mark\",\"label\":\"0000:00:02.0: precopy round {r}: \
                 initial_bytes {i} dirty_bytes 80\"}}\n"
            )
        };
        let info = |i, f| {
            format!(
                "{{\"t\":1,\"ev\":\"precopy_info\",\"dev\":\"0000:00:02.0\",\
                 \"initial_bytes\":{i},\"dirty_bytes\":80,\"precopy_flags\":{f},\"ret\":0}}\n"
            )
        };
        let failed = "{\"t\":1,\"ev\":\"precopy_info\",\"dev\":\"d\",\"ret\":-22}\n";
        let cases = [
            (
                format!(
                    "{head}{}{}{}{}{failed}",
                    info(80, 0),
                    mark(0, 80),
                    info(0, 0),
                    mark(1, 0)
                ),
                true,
            ),
            (format!("{head}{}", mark(0, 80)), false),
            (format!("{head}{}{}", info(80, 0), mark(0, 0)), false),
            (format!("{head}{}{}", info(80, 1), mark(0, 80)), false),
            (format!("{head}{failed}"), false),
        ];
        for (text, ok) in cases {
            fs::write(&t, &text).unwrap();
            assert_eq!(precopy_info_agrees(&t).is_ok(), ok, "{text}");
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
