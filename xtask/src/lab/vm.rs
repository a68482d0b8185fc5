//! Booting the lab VM: QEMU q35 + emulated Intel IOMMU + edu devices, TCG unless KVM really
//! works, the console parsed for the guest's markers, results back on the second serial port.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::fetch::lib_path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// KVM only with a real /dev/kvm, vmx/svm CPU flags and no PVM (`kvm_pvm` hangs guests);
/// returns the choice and why.
pub fn detect_accel() -> (Accel, String) {
    if std::env::var("MIGSCOPE_LAB_ACCEL").as_deref() == Ok("tcg") {
        return (Accel::Tcg, "MIGSCOPE_LAB_ACCEL=tcg".into());
    }
    if !Path::new("/dev/kvm").exists() {
        return (Accel::Tcg, "no /dev/kvm".into());
    }
    if Path::new("/sys/module/kvm_pvm").exists() {
        return (
            Accel::Tcg,
            "/dev/kvm is PVM (kvm_pvm loaded), which hangs guests".into(),
        );
    }
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hw = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    if !hw {
        return (Accel::Tcg, "no vmx/svm CPU flag".into());
    }
    (Accel::Kvm, "/dev/kvm with vmx/svm".into())
}

/// Why this machine cannot run the VM at all (the lab is then skipped), if so.
pub fn cannot_run(qemu_root: &Path) -> Option<String> {
    let bin = qemu_root.join("usr/bin/qemu-system-x86_64");
    let out = Command::new(&bin)
        .arg("--version")
        .env("LD_LIBRARY_PATH", lib_path(qemu_root))
        .output();
    match out {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "{} --version failed: {}",
            bin.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("cannot execute {}: {e}", bin.display())),
    }
}

pub struct VmConfig<'a> {
    pub qemu_root: &'a Path,
    pub vmlinux: &'a Path,
    pub initrd: &'a Path,
    pub edu_devices: usize,
    /// edu devices each behind its own PCIe root port (`scenario::bridged_bdf`).
    pub bridged_edu: usize,
    /// Guest memory (`-m`): 1G, or 2G when QEMU runs inside as the L2 VMM.
    pub memory: &'static str,
    pub accel: Accel,
    /// Results tar written by the guest to its second serial port.
    pub results: PathBuf,
    pub console_log: PathBuf,
    pub boot_timeout: Duration,
    pub total_timeout: Duration,
    pub echo_console: bool,
    /// Scenario n of N on a terminal.
    pub progress: &'a crate::progress::Lab,
}

/// A console line with its arrival time since QEMU was started.
pub struct Line {
    pub at: Duration,
    pub text: String,
}

pub struct VmRun {
    pub lines: Vec<Line>,
    pub timed_out: Option<&'static str>,
    pub wall: Duration,
}

impl VmRun {
    pub fn marker(&self, prefix: &str) -> Option<&Line> {
        self.lines.iter().find(|l| l.text.starts_with(prefix))
    }
}

/// Boots the VM and waits for it to power off (or a timeout, then kills it).
pub fn boot(cfg: &VmConfig) -> Result<VmRun> {
    let q = cfg.qemu_root;
    let mut c = Command::new(q.join("usr/bin/qemu-system-x86_64"));
    c.env("LD_LIBRARY_PATH", lib_path(q));
    c.arg("-L")
        .arg(q.join("usr/share/qemu"))
        .arg("-L")
        .arg(q.join("usr/share/seabios"));
    let machine = match cfg.accel {
        Accel::Kvm => "q35,accel=kvm,kernel-irqchip=split",
        // kernel-irqchip=split is accepted (and has no effect) under TCG: one command shape.
        Accel::Tcg => "q35,accel=tcg,kernel-irqchip=split",
    };
    c.args(["-machine", machine]);
    c.args([
        "-cpu",
        if cfg.accel == Accel::Kvm {
            "host"
        } else {
            "max"
        },
    ]);
    c.args([
        "-m",
        cfg.memory,
        "-smp",
        "2",
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
    ]);
    c.args([
        "-nic",
        "none",
        "-device",
        "intel-iommu,intremap=on,caching-mode=on",
    ]);
    for i in 0..cfg.edu_devices {
        c.args(["-device", &format!("edu,addr={:02x}.0", 2 + i)]);
    }
    // A root port per device: its secondary bus can be reset, so the kernel answers
    // VFIO_DEVICE_GET_PCI_HOT_RESET_INFO for the device behind it (root-bus devices: ENODEV).
    for i in 0..cfg.bridged_edu {
        c.args([
            "-device",
            &format!(
                "pcie-root-port,id=rp{i},bus=pcie.0,chassis={n},slot={n},addr={:02x}.0",
                0x10 + i,
                n = i + 1
            ),
            "-device",
            &format!("edu,bus=rp{i},addr=00.0"),
        ]);
    }
    c.args(["-serial", "stdio", "-serial"])
        .arg(format!("file:{}", cfg.results.display()));
    c.arg("-kernel")
        .arg(cfg.vmlinux)
        .arg("-initrd")
        .arg(cfg.initrd);
    c.args([
        "-append",
        "console=ttyS0 panic=-1 intel_iommu=on quiet loglevel=4",
    ]);
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = c.spawn().context("starting qemu-system-x86_64")?;
    let stdout = child.stdout.take().context("qemu stdout")?;
    let stderr = child.stderr.take().context("qemu stderr")?;
    let (tx, rx) = mpsc::channel::<String>();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
            let s = String::from_utf8_lossy(&l)
                .trim_end_matches('\r')
                .to_string();
            if tx.send(s).is_err() {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx2.send(format!("qemu: {l}")).is_err() {
                break;
            }
        }
    });
    let mut log = fs::File::create(&cfg.console_log)
        .with_context(|| format!("creating {}", cfg.console_log.display()))?;
    let mut lines = Vec::new();
    let mut timed_out = None;
    let mut booted = false;
    loop {
        let limit = if booted {
            cfg.total_timeout
        } else {
            cfg.boot_timeout
        };
        let left = limit.saturating_sub(start.elapsed());
        match rx.recv_timeout(left.min(Duration::from_millis(500))) {
            Ok(text) => {
                let at = start.elapsed();
                writeln!(log, "[{:8.3}] {text}", at.as_secs_f64())?;
                if cfg.echo_console {
                    cfg.progress.say(&format!("  | {text}"));
                }
                cfg.progress.line(&text);
                if text.starts_with("LAB:BOOT") {
                    booted = true;
                }
                lines.push(Line { at, text });
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Some(st) = child.try_wait()? {
                    let _ = st;
                    break;
                }
                if start.elapsed() >= limit {
                    timed_out = Some(if booted { "scenarios" } else { "boot" });
                    let _ = child.kill();
                    break;
                }
            }
        }
    }
    let status = child.wait()?;
    // Drain whatever the reader threads still hold.
    while let Ok(text) = rx.try_recv() {
        writeln!(log, "[{:8.3}] {text}", start.elapsed().as_secs_f64())?;
        lines.push(Line {
            at: start.elapsed(),
            text,
        });
    }
    let _ = status;
    Ok(VmRun {
        lines,
        timed_out,
        wall: start.elapsed(),
    })
}

/// Unpacks the guest's results tar into `dest`.
pub fn unpack_results(tar: &Path, dest: &Path) -> Result<()> {
    fs::create_dir_all(dest)?;
    let len = fs::metadata(tar).map(|m| m.len()).unwrap_or(0);
    if len == 0 {
        bail!("the guest sent no results ({} is empty)", tar.display());
    }
    let st = Command::new("tar")
        .arg("-xf")
        .arg(tar)
        .arg("-C")
        .arg(dest)
        .status()
        .context("running tar")?;
    if !st.success() {
        bail!("tar -xf {} failed ({st})", tar.display());
    }
    Ok(())
}
