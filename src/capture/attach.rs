//! Attach: the VFIO devices a process already holds when recording starts (`record --pid`
//! beside a running QEMU, the normal case on a real host), resolved and asked about through
//! the kernel, never guessed.
//!
//! For each device fd of a recorded process this module finds:
//! - **which device it is.** A cdev (`/dev/vfio/devices/vfioN`) names its device in sysfs;
//!   from 6.18 a group-path device fd's fdinfo says `vfio-device-syspath`. Before that
//!   (the lab's 6.1 and 6.12) the fd is duplicated with `pidfd_getfd(2)` and asked
//!   VFIO_DEVICE_GET_PCI_HOT_RESET_INFO (`vfio_pci_ioctl_get_pci_hot_reset_info` in
//!   drivers/vfio/pci/vfio_pci_core.c: every device a slot or bus reset of it would reset,
//!   itself included, by segment/bus/devfn and IOMMU group), which is intersected with the
//!   devices of the IOMMU groups the process holds (`/proc/P/fd` -> `/dev/vfio/N` ->
//!   `/sys/kernel/iommu_groups/N/devices`). When more than one candidate is left, the config
//!   space identity read through the duplicate (vendor, device, subsystem, class, revision)
//!   keeps the candidates sysfs describes identically. A device on a root bus has no slot or
//!   bus reset (the ioctl says ENODEV): then the held groups alone decide. Each fd is
//!   resolved on its own evidence (two fds may be one device).
//! - **its migration flags and current state**: VFIO_DEVICE_FEATURE GET MIGRATION and GET
//!   MIG_DEVICE_STATE on the duplicate (`vfio_ioctl_device_feature_migration`,
//!   `vfio_ioctl_device_feature_mig_device_state` in drivers/vfio/vfio_main.c). A GET that
//!   fails is reported, and the device is declared with that fact unknown.
//!
//! None of these questions changes the device: they are the read-only GETs a VMM itself
//! asks, on a duplicate closed at once (holding it would keep the device open after its user
//! closed it). The questions are migscope's own ioctls; [`own_question`] tells the attributor
//! which records they are, so that recording every VFIO user never records migscope itself.
//!
//! When a device fd stays ambiguous (e.g. two identical devices in two groups, both on a
//! root bus, held by one process), it keeps the stable placeholder name `fd:N@pid`, and its
//! `irq` and `iommu_fault` sources are unavailable: interrupts and IOMMU faults name a PCI
//! address and could never be attributed to it.
//!
//! **Posted interrupts.** With KVM and irqbypass a passthrough MSI is posted into the guest
//! by the IOMMU and never runs the host handler the `irq` hook sees. [`posting`] reads from
//! /sys and /proc whether this host can do that, and a device whose user holds a KVM VM is
//! then declared `irq: unavailable: interrupts posted to the guest`.

use std::collections::{BTreeSet, HashMap};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::Mutex;

use probe_common::abi::fd_kind;

use super::procfs::{self, PciId, Roots, SeedFd};
use crate::clock::monotonic_ns;
use crate::model::{MigFlags, MigState};
use crate::vfio::{errno_name, sys};

/// Config space bytes that hold the identity fields (through subsystem device, 0x2e).
const ID_BYTES: usize = 0x30;
/// How long migscope's own questions are remembered (their records arrive within ms).
const OWN_MEMORY_NS: u64 = 10_000_000_000;

/// What the kernel answered through one duplicate of a process's device fd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answers {
    /// VFIO_DEVICE_GET_PCI_HOT_RESET_INFO: the devices a slot or bus reset would reset.
    pub hot_reset: Result<Vec<sys::Dependent>, String>,
    /// Identity fields of config space as VFIO presents it.
    pub config: Result<PciId, String>,
    pub flags: Result<MigFlags, String>,
    pub state: Result<MigState, String>,
    /// When the state was read (trace clock).
    pub at: u64,
}

/// Asks the kernel about fd `fd` of process `pid` (through a duplicate); `Err`: no duplicate.
pub type Ask = Box<dyn Fn(u32, i32) -> Result<Answers, String> + Send>;

/// Where attach looks: /proc and /sys, and how it asks the kernel (injected in tests).
pub struct Host {
    pub roots: Roots,
    pub ask: Ask,
    posting: Option<Posting>,
    kvm: HashMap<u32, bool>,
}

impl Host {
    /// The host's /proc, /sys and kernel.
    pub fn real() -> Self {
        Self::new(Roots::host(), Box::new(ask))
    }

    pub fn new(roots: Roots, ask: Ask) -> Self {
        Host {
            roots,
            ask,
            posting: None,
            kvm: HashMap::new(),
        }
    }

    /// The `irq` source of devices of `pid` when their interrupts may bypass the host
    /// handler (the process holds a KVM VM and this host can post), `None` otherwise.
    pub fn irq_override(&mut self, pid: u32) -> Option<String> {
        let roots = &self.roots;
        let kvm = *self
            .kvm
            .entry(pid)
            .or_insert_with(|| procfs::holds_kvm_vm(roots, pid));
        if !kvm {
            return None;
        }
        let posting = self.posting.get_or_insert_with(|| posting(&self.roots));
        match posting {
            Posting::No(_) => None,
            Posting::Yes(how) => Some(format!(
                "unavailable: interrupts posted to the guest ({how}; its user holds a KVM VM): \
                 the host handler the irq hook sees never runs for them"
            )),
            Posting::Unknown(why) => Some(format!(
                "unavailable: cannot tell whether interrupts are posted to the guest ({why}; \
                 its user holds a KVM VM)"
            )),
        }
    }

    /// Forgets what it learned about processes (pids are reused).
    pub fn forget(&mut self, pid: u32) {
        self.kvm.remove(&pid);
    }
}

/// How a device fd was named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Named (how, for the trace's note).
    Named(String),
    /// Several devices fit (or none is known); the evidence.
    Ambiguous {
        candidates: Vec<String>,
        why: String,
    },
}

/// One device fd a process holds, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    pub pid: u32,
    pub fd: i32,
    /// The PCI address; the placeholder `fd:N@pid` when [`Resolution::Ambiguous`].
    pub dev: String,
    pub resolution: Resolution,
    pub flags: Result<MigFlags, String>,
    /// The state read through the duplicate and when; `None`: not asked for (an fd met in
    /// the middle of recording, whose state when first used the trace itself must tell).
    pub state: Option<Result<(MigState, u64), String>>,
}

/// The placeholder name of a device fd that cannot be resolved.
pub fn placeholder(pid: u32, fd: i32) -> String {
    format!("fd:{fd}@{pid}")
}

/// Resolves the device fds of `pid` (`seeds`: its VFIO fds from [`procfs::scan_pid`]); only
/// fd `only` when given. `with_state`: keep the state read through the duplicate (at attach
/// time; an fd learned later was already used before it could be asked).
pub fn attach_process(
    host: &Host,
    pid: u32,
    seeds: &[SeedFd],
    only: Option<i32>,
    with_state: bool,
) -> Vec<Attached> {
    let held: BTreeSet<String> = seeds
        .iter()
        .filter(|s| s.kind == fd_kind::GROUP)
        .flat_map(|s| s.group_devs.iter().cloned())
        .collect();
    let mut out = Vec::new();
    for s in seeds {
        if !matches!(s.kind, fd_kind::DEVICE | fd_kind::CDEV) || only.is_some_and(|f| f != s.fd) {
            continue;
        }
        let answers = (host.ask)(pid, s.fd);
        let (dev, resolution) = match (&s.dev, &answers) {
            (Some(d), _) => (
                d.clone(),
                Resolution::Named(if s.kind == fd_kind::CDEV {
                    "the cdev's device in sysfs".to_owned()
                } else {
                    "fdinfo vfio-device-syspath".to_owned()
                }),
            ),
            (None, Ok(a)) => decide(candidates(&host.roots, &held, a), pid, s.fd),
            (None, Err(e)) => decide(
                (
                    held.iter().cloned().collect(),
                    format!(
                        "groups it holds: {}; no duplicate of the fd: {e}",
                        list(held.iter())
                    ),
                ),
                pid,
                s.fd,
            ),
        };
        let (flags, state) = match &answers {
            Ok(a) => (a.flags.clone(), a.state.clone().map(|st| (st, a.at))),
            Err(e) => (Err(e.clone()), Err(e.clone())),
        };
        out.push(Attached {
            pid,
            fd: s.fd,
            dev,
            resolution,
            flags,
            state: with_state.then_some(state),
        });
    }
    out
}

/// [`attach_process`] for every process of `seeds` but migscope itself (its own fds are
/// declared by their opener, e.g. `drive`), states included.
pub fn attach_all(host: &Host, seeds: &[SeedFd]) -> Vec<Attached> {
    let mut pids: Vec<u32> = seeds.iter().map(|s| s.pid).collect();
    pids.sort_unstable();
    pids.dedup();
    let mut out = Vec::new();
    for pid in pids {
        if pid == std::process::id() {
            continue;
        }
        let mine: Vec<SeedFd> = seeds.iter().filter(|s| s.pid == pid).cloned().collect();
        out.extend(attach_process(host, pid, &mine, None, true));
    }
    out
}

/// The candidate set of a device fd from the held groups, the hot-reset dependents and the
/// config identity, in that order, with the evidence in words.
fn candidates(roots: &Roots, held: &BTreeSet<String>, a: &Answers) -> (Vec<String>, String) {
    let mut why = vec![format!("groups it holds: {}", list(held.iter()))];
    let mut cands = held.clone();
    match &a.hot_reset {
        Ok(deps) => {
            let hr: BTreeSet<String> = deps.iter().map(|d| d.bdf.clone()).collect();
            why.push(format!(
                "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO: {}",
                list(hr.iter())
            ));
            let both: BTreeSet<String> = cands.intersection(&hr).cloned().collect();
            // A process may close a group fd after taking its device fd: the reset set alone
            // then bounds the candidates.
            cands = if both.is_empty() { hr } else { both };
        }
        Err(e) => why.push(format!("VFIO_DEVICE_GET_PCI_HOT_RESET_INFO: {e}")),
    }
    if cands.len() > 1 {
        match &a.config {
            Ok(id) => {
                cands.retain(|c| procfs::pci_id_in(roots, c) == Some(*id));
                why.push(format!(
                    "config identity {:04x}:{:04x} class {:06x}: {}",
                    id.vendor,
                    id.device,
                    id.class,
                    list(cands.iter())
                ));
            }
            Err(e) => why.push(format!("config space: {e}")),
        }
    }
    (cands.into_iter().collect(), why.join("; "))
}

/// One candidate names the device; otherwise the fd keeps its placeholder.
fn decide((cands, why): (Vec<String>, String), pid: u32, fd: i32) -> (String, Resolution) {
    match cands.as_slice() {
        [one] => (one.clone(), Resolution::Named(why)),
        _ => (
            placeholder(pid, fd),
            Resolution::Ambiguous {
                candidates: cands,
                why,
            },
        ),
    }
}

fn list<'a>(it: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = it.map(String::as_str).collect();
    if v.is_empty() {
        "none".to_owned()
    } else {
        v.join(", ")
    }
}

// ---- asking the kernel through a duplicate -------------------------------------------------

/// (fd, from, to): migscope's own duplicates, so their ioctl records are not taken for the
/// recorded processes' (recording every VFIO user includes migscope).
static OWN: Mutex<Vec<(i32, u64, u64)>> = Mutex::new(Vec::new());

/// Whether an ioctl record of `pid` on `fd` at `t` is one of migscope's own questions.
pub fn own_question(pid: u32, fd: i32, t: u64) -> bool {
    if pid != std::process::id() {
        return false;
    }
    OWN.lock()
        .map(|v| v.iter().any(|&(f, a, b)| f == fd && a <= t && t <= b))
        .unwrap_or(false)
}

/// Test hook: marks fd `fd` of this process as one of migscope's questions in `[from, to]`.
#[cfg(test)]
pub fn remember_own_for_test(fd: i32, from: u64, to: u64) {
    remember_own(fd, from, to);
}

fn remember_own(fd: i32, from: u64, to: u64) {
    if let Ok(mut v) = OWN.lock() {
        v.retain(|&(_, _, b)| to.saturating_sub(b) < OWN_MEMORY_NS);
        v.push((fd, from, to));
    }
}

/// A duplicate of fd `fd` of process `pid` (pidfd_open + pidfd_getfd, Linux 5.6+; needs
/// ptrace rights over `pid`, as root has).
pub fn duplicate(pid: u32, fd: i32) -> Result<OwnedFd, std::io::Error> {
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
    Ok(unsafe { OwnedFd::from_raw_fd(dup as i32) })
}

/// Runs `f` on a duplicate of `pid`'s fd `fd`, closing it at once and remembering it as
/// migscope's own.
fn with_duplicate<T>(pid: u32, fd: i32, f: impl FnOnce(&OwnedFd) -> T) -> Result<T, String> {
    let from = monotonic_ns();
    let dup =
        duplicate(pid, fd).map_err(|e| format!("pidfd_getfd of fd {fd} of pid {pid}: {e}"))?;
    let raw = dup.as_raw_fd();
    let out = f(&dup);
    drop(dup);
    remember_own(raw, from, monotonic_ns());
    Ok(out)
}

/// The kernel's answers about fd `fd` of `pid` (see the module doc).
pub fn ask(pid: u32, fd: i32) -> Result<Answers, String> {
    with_duplicate(pid, fd, |dup| {
        let b = dup.as_fd();
        let hot_reset = sys::hot_reset_info_of(b)
            .map(|(_, deps)| deps)
            .map_err(errno_name);
        let config = sys::config_of(b, ID_BYTES)
            .map_err(errno_name)
            .and_then(|c| PciId::from_config(&c).ok_or_else(|| format!("only {} bytes", c.len())));
        let flags = sys::mig_flags_of(b).map_err(|e| migration_error(e, "MIGRATION"));
        let state = sys::mig_state_of(b).map_err(|e| migration_error(e, "MIG_DEVICE_STATE"));
        Answers {
            hot_reset,
            config,
            flags,
            state,
            at: monotonic_ns(),
        }
    })
}

/// Only the migration flags of fd `fd` of `pid`.
pub fn ask_flags(pid: u32, fd: i32) -> Result<MigFlags, String> {
    with_duplicate(pid, fd, |dup| {
        sys::mig_flags_of(dup.as_fd()).map_err(|e| migration_error(e, "MIGRATION"))
    })?
}

fn migration_error(e: i32, what: &str) -> String {
    let hint = if e == libc::ENOTTY {
        ": the device's driver has no migration support"
    } else {
        ""
    };
    format!("VFIO_DEVICE_FEATURE GET {what}: {}{hint}", errno_name(e))
}

// ---- posted interrupts ---------------------------------------------------------------------

/// Whether this host can post passthrough interrupts into KVM guests (bypassing the host
/// handler), with the facts in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Posting {
    No(String),
    Yes(String),
    Unknown(String),
}

/// `cap_pi_support()`: bit 59 of the VT-d capability register
/// (drivers/iommu/intel/iommu.h).
const VTD_CAP_PI: u64 = 1 << 59;
/// EFR bits of the AMD IOMMU: guest virtual APIC (GASup) and its vAPIC mode (GAMSup)
/// (`FEATURE_GA`, `FEATURE_GAM_VAPIC` in drivers/iommu/amd/amd_iommu_types.h).
const AMD_FEATURE_GA: u64 = 1 << 7;
const AMD_FEATURE_GAM_VAPIC: u64 = 1 << 21;

/// Reads the conditions under which KVM posts a device interrupt to the guest, as the kernel
/// decides them:
/// - 6.17+: `kvm.enable_device_posted_irqs` (arch/x86/kvm/x86.c), already the AND of what
///   follows.
/// - Intel: `vmx_can_use_vtd_pi()` (arch/x86/kvm/vmx/posted_intr.c) needs
///   `kvm_intel.enable_apicv` and `irq_remapping_cap(IRQ_POSTING_CAP)`, which
///   `set_irq_posting_cap()` (drivers/iommu/intel/irq_remapping.c) grants only with
///   interrupt remapping on, `cmpxchg16b`, no `intremap=nopost`, and every DMAR unit's
///   capability bit 59. (`enable_ipiv` is about IPIs between vCPUs, not device interrupts.)
/// - AMD: `avic_pi_update_irte()` (arch/x86/kvm/svm/avic.c) needs `kvm_amd.avic` and the AMD
///   IOMMU in guest vAPIC mode (drivers/iommu/amd/init.c: every IOMMU with GA and GAM_VAPIC,
///   no `amd_iommu_intr=legacy`).
///
/// Even then KVM posts only interrupts aimed at a single vCPU (`kvm_intr_is_single_vcpu`);
/// which ones are is the guest's choice, invisible here: "can post" is treated as "posted".
pub fn posting(roots: &Roots) -> Posting {
    let sys = &roots.sys;
    let param = |module: &str, name: &str| -> Option<String> {
        std::fs::read_to_string(sys.join(format!("module/{module}/parameters/{name}")))
            .ok()
            .map(|s| s.trim().to_owned())
    };
    let yes = |v: &str| matches!(v, "Y" | "y" | "1");
    if let Some(v) = param("kvm", "enable_device_posted_irqs") {
        return if yes(&v) {
            Posting::Yes("kvm.enable_device_posted_irqs=Y".into())
        } else {
            Posting::No(format!("kvm.enable_device_posted_irqs={v}"))
        };
    }
    let cmdline = std::fs::read_to_string(roots.proc.join("cmdline")).unwrap_or_default();
    let has_arg = |a: &str| cmdline.split_whitespace().any(|w| w == a);
    if sys.join("module/kvm_intel").exists() {
        let Some(apicv) = param("kvm_intel", "enable_apicv") else {
            return Posting::Unknown("kvm_intel.enable_apicv unreadable".into());
        };
        if !yes(&apicv) {
            return Posting::No(format!("kvm_intel.enable_apicv={apicv}"));
        }
        if has_arg("intremap=off") || has_arg("intremap=nopost") {
            return Posting::No("the kernel command line disables posting (intremap=)".into());
        }
        return intel_posting(roots);
    }
    if sys.join("module/kvm_amd").exists() {
        let Some(avic) = param("kvm_amd", "avic") else {
            return Posting::Unknown("kvm_amd.avic unreadable".into());
        };
        if !yes(&avic) {
            return Posting::No(format!("kvm_amd.avic={avic}"));
        }
        if has_arg("amd_iommu_intr=legacy") || has_arg("amd_iommu_intr=legacy_ga") {
            return Posting::No("amd_iommu_intr=legacy on the kernel command line".into());
        }
        return amd_posting(roots);
    }
    Posting::Unknown("KVM without kvm_intel or kvm_amd: their posting rules do not apply".into())
}

/// `/sys/class/iommu/<prefix>*` units, sorted.
fn iommu_units(roots: &Roots, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(roots.sys.join("class/iommu"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A hex register from sysfs (`0x...` or bare; AMD's `features` is `efr[:efr2]`).
fn read_hex(path: &std::path::Path) -> Option<u64> {
    let s = std::fs::read_to_string(path).ok()?;
    let first = s.trim().split(':').next()?;
    u64::from_str_radix(first.trim_start_matches("0x"), 16).ok()
}

fn intel_posting(roots: &Roots) -> Posting {
    let units = iommu_units(roots, "dmar");
    if units.is_empty() {
        return Posting::Unknown("kvm_intel.enable_apicv=Y but no /sys/class/iommu/dmar*".into());
    }
    for u in &units {
        let path = roots.sys.join(format!("class/iommu/{u}/intel-iommu/cap"));
        match read_hex(&path) {
            None => return Posting::Unknown(format!("cannot read {}", path.display())),
            Some(cap) if cap & VTD_CAP_PI == 0 => {
                return Posting::No(format!("{u} has no posted-interrupt capability"));
            }
            Some(_) => {}
        }
    }
    let cpuinfo = std::fs::read_to_string(roots.proc.join("cpuinfo")).unwrap_or_default();
    let cx16 = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "cx16"));
    if !cx16 {
        return Posting::No("no cmpxchg16b: the kernel does not post".into());
    }
    match std::fs::read_to_string(roots.proc.join("interrupts")) {
        Err(e) => Posting::Unknown(format!("cannot read /proc/interrupts: {e}")),
        // Remapped interrupt chips are named IR-PCI-MSI, IR-IO-APIC...: remapping is on.
        Ok(t) if !t.contains("IR-") => {
            Posting::No("interrupt remapping is off (no IR- interrupt chip)".into())
        }
        Ok(_) => Posting::Yes(format!(
            "VT-d posted interrupts: kvm_intel.enable_apicv=Y, posting capability on {}",
            units.join(", ")
        )),
    }
}

fn amd_posting(roots: &Roots) -> Posting {
    let units = iommu_units(roots, "ivhd");
    if units.is_empty() {
        return Posting::Unknown("kvm_amd.avic=Y but no /sys/class/iommu/ivhd*".into());
    }
    for u in &units {
        let path = roots
            .sys
            .join(format!("class/iommu/{u}/amd-iommu/features"));
        match read_hex(&path) {
            None => return Posting::Unknown(format!("cannot read {}", path.display())),
            Some(efr) if efr & AMD_FEATURE_GA == 0 || efr & AMD_FEATURE_GAM_VAPIC == 0 => {
                return Posting::No(format!("{u} has no guest vAPIC interrupt mode"));
            }
            Some(_) => {}
        }
    }
    Posting::Yes(format!(
        "AVIC with the AMD IOMMU's guest vAPIC mode: kvm_amd.avic=Y on {}",
        units.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A /sys and /proc tree with the given files.
    fn roots(files: &[(&str, &str)]) -> (tempfile::TempDir, Roots) {
        let dir = tempfile::tempdir().expect("tempdir");
        for (rel, text) in files {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        }
        let r = Roots {
            proc: dir.path().join("proc"),
            sys: dir.path().join("sys"),
        };
        (dir, r)
    }

    const APICV: (&str, &str) = ("sys/module/kvm_intel/parameters/enable_apicv", "Y\n");
    const CX16: (&str, &str) = ("proc/cpuinfo", "flags\t\t: fpu cx8 cx16 sse4_2\n");
    const IR: (&str, &str) = (
        "proc/interrupts",
        " 24:  7  IR-PCI-MSI 1-edge  vfio-msi[0]\n",
    );
    /// A VT-d capability register with and without bit 59 (posted interrupts).
    const CAP_PI: &str = "8d2008c40660462\n";
    const CAP_NO_PI: &str = "d2008c40660462\n";

    #[test]
    fn vt_d_posting_needs_apicv_and_every_unit_capable() {
        let dmar =
            |u: u32, cap: &'static str| (format!("sys/class/iommu/dmar{u}/intel-iommu/cap"), cap);
        let (d0, d1) = (dmar(0, CAP_PI), dmar(1, CAP_PI));
        let files = [APICV, CX16, IR, (&d0.0, d0.1), (&d1.0, d1.1)];
        let (_t, r) = roots(&files);
        match posting(&r) {
            Posting::Yes(how) => assert!(how.contains("dmar0, dmar1"), "{how}"),
            p => panic!("{p:?}"),
        }
        let d1 = dmar(1, CAP_NO_PI);
        let (_t, r) = roots(&[APICV, CX16, IR, (&d0.0, d0.1), (&d1.0, d1.1)]);
        assert_eq!(
            posting(&r),
            Posting::No("dmar1 has no posted-interrupt capability".into())
        );
        let off = ("sys/module/kvm_intel/parameters/enable_apicv", "N\n");
        let (_t, r) = roots(&[off, CX16, IR, (&d0.0, d0.1)]);
        assert_eq!(posting(&r), Posting::No("kvm_intel.enable_apicv=N".into()));
        let (_t, r) = roots(&[
            APICV,
            CX16,
            (IR.0, "  9:  0  IO-APIC  9-fasteoi  acpi\n"),
            (&d0.0, d0.1),
        ]);
        assert!(matches!(posting(&r), Posting::No(w) if w.contains("remapping is off")));
        let nopost = ("proc/cmdline", "root=/dev/sda intremap=nopost\n");
        let (_t, r) = roots(&[APICV, CX16, IR, nopost, (&d0.0, d0.1)]);
        assert!(matches!(posting(&r), Posting::No(w) if w.contains("intremap=")));
    }

    #[test]
    fn an_unreadable_capability_is_inconclusive_not_ok() {
        // The unit exists but its cap cannot be read.
        let (_t, r) = roots(&[
            APICV,
            CX16,
            IR,
            ("sys/class/iommu/dmar0/intel-iommu/ecap", "0\n"),
        ]);
        assert!(matches!(posting(&r), Posting::Unknown(w) if w.contains("dmar0/intel-iommu/cap")));
        let (_t, r) = roots(&[APICV, CX16, IR]);
        assert!(
            matches!(posting(&r), Posting::Unknown(w) if w.contains("no /sys/class/iommu/dmar"))
        );
        let (_t, r) = roots(&[("sys/module/kvm/parameters/halt_poll_ns", "0\n")]);
        assert!(
            matches!(posting(&r), Posting::Unknown(w) if w.contains("without kvm_intel or kvm_amd"))
        );
    }

    #[test]
    fn newer_kernels_say_it_themselves_and_amd_needs_avic_and_ga() {
        let (_t, r) = roots(&[
            ("sys/module/kvm/parameters/enable_device_posted_irqs", "N\n"),
            APICV,
        ]);
        assert_eq!(
            posting(&r),
            Posting::No("kvm.enable_device_posted_irqs=N".into())
        );
        let (_t, r) = roots(&[("sys/module/kvm/parameters/enable_device_posted_irqs", "Y\n")]);
        assert!(matches!(posting(&r), Posting::Yes(_)));
        let avic = ("sys/module/kvm_amd/parameters/avic", "Y\n");
        // EFR with GASup (bit 7) and GAMSup vAPIC (bit 21), then without GA.
        let ga = (
            "sys/class/iommu/ivhd0/amd-iommu/features",
            "25bf732fa2295afe:53d\n",
        );
        let (_t, r) = roots(&[avic, ga]);
        assert!(matches!(posting(&r), Posting::Yes(w) if w.contains("ivhd0")));
        let no_ga = (
            "sys/class/iommu/ivhd0/amd-iommu/features",
            "25bf732fa229527e\n",
        );
        let (_t, r) = roots(&[avic, no_ga]);
        assert!(matches!(posting(&r), Posting::No(w) if w.contains("vAPIC")));
        let (_t, r) = roots(&[("sys/module/kvm_amd/parameters/avic", "0\n"), ga]);
        assert_eq!(posting(&r), Posting::No("kvm_amd.avic=0".into()));
    }

    #[test]
    fn own_questions_are_recognised_by_fd_and_time() {
        let me = std::process::id();
        remember_own(9876, 1000, 2000);
        assert!(own_question(me, 9876, 1500));
        assert!(
            !own_question(me, 9876, 2500),
            "after the duplicate was closed"
        );
        assert!(!own_question(me, 9875, 1500), "another fd");
        assert!(!own_question(me + 1, 9876, 1500), "another process");
    }
}
