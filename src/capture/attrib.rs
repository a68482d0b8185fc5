//! Attribution: turns decoded probe records into trace events. Keeps the fd map (which fd of
//! which process is a container, group, device or data fd, and which device it stands for),
//! the migration contexts, each device's flags, the ioctl each thread is inside, and a reorder
//! buffer so events leave in time order with a `device` declaration before a device's first
//! use. Devices held before recording started come resolved from [`super::attach`]. Pure
//! apart from small /proc and /sys look-ups; unit tested with synthetic records.

use std::collections::{BTreeMap, HashMap, HashSet};

use probe_common::abi::{
    DATA_WRITE, DataXfer, IoctlCall, IoctlRet, IommuFault, IommuMap, IommuUnmap, Irq, IrqBin,
    MDEV_PIN_PAGES, MdevDma, MsiHandler, Step, StepLost, VfioOpen, fd_kind, feature, ioctl,
    iommufd, uapi as off,
};
use vfio_bindings::bindings::vfio as uapi;

use super::attach::{self, Attached, Resolution};
use super::dirtylog::DirtyLogs;
use super::procfs::{self, SeedFd};
use super::records::{Record, cstr, struct_at, u32_at, u64_at};
use crate::model::{MigFlags, MigState, PrecopyInfo};
use crate::trace::{DataDir, DataFile, DmaSource, Event, EventKind, IrqKind, source};

/// `IOMMU_FAULT_WRITE` (include/linux/iommu.h), the write bit of io_page_fault's flags.
const IOMMU_FAULT_WRITE: i32 = 0x1;
/// `sizeof(struct vfio_device_feature)` (argsz, flags): a feature's data follows it.
const FEATURE_HDR: usize = size_of::<uapi::vfio_device_feature>();
/// `sizeof(struct vfio_iommu_type1_dirty_bitmap)` (argsz, flags): VFIO_IOMMU_DIRTY_PAGES'
/// GET_BITMAP range follows it.
const DIRTY_BITMAP_HDR: usize = size_of::<uapi::vfio_iommu_type1_dirty_bitmap>();
/// Flags declared for a device whose VFIO_DEVICE_FEATURE_MIGRATION GET was never seen (see
/// [`Attributor::release`]): STOP_COPY is what every migratable device must support.
const UNSEEN_FLAGS: u32 = MigFlags::STOP_COPY;

/// Which pids to keep: the given ones and their descendants.
pub struct PidFilter {
    roots: HashSet<u32>,
    cache: HashMap<u32, bool>,
    parent: Box<dyn Fn(u32) -> Option<u32> + Send>,
}

impl PidFilter {
    pub fn new(roots: &[u32]) -> Self {
        Self::with_parent(roots, Box::new(procfs::parent_of))
    }

    pub fn with_parent(roots: &[u32], parent: Box<dyn Fn(u32) -> Option<u32> + Send>) -> Self {
        PidFilter {
            roots: roots.iter().copied().collect(),
            cache: HashMap::new(),
            parent,
        }
    }

    /// Accepts `child`, seen being created by an accepted process (it may exit before its
    /// ancestry could be read from /proc).
    pub fn adopt(&mut self, child: u32) {
        self.cache.insert(child, true);
    }

    pub fn accepts(&mut self, pid: u32) -> bool {
        if let Some(&v) = self.cache.get(&pid) {
            return v;
        }
        let mut at = pid;
        let mut ok = false;
        for _ in 0..64 {
            if self.roots.contains(&at) {
                ok = true;
                break;
            }
            match (self.parent)(at) {
                Some(p) if p != 0 && p != at => at = p,
                _ => break,
            }
        }
        self.cache.insert(pid, ok);
        ok
    }
}

#[derive(Clone, Debug, Default)]
struct FdInfo {
    kind: u32,
    dev: Option<String>,
    /// A migration data fd: its device's reset generation when the fd was returned (or, for one
    /// recording did not see returned, when it was learned).
    born: u64,
}

#[derive(Clone, Debug, Default)]
struct DevInfo {
    ctx: String,
    owner: Option<u32>,
    /// An fd of `owner` that stands for the device (for querying its flags).
    fd: Option<i32>,
    flags: Option<MigFlags>,
    /// Why the flags are unknown, when asking the kernel already failed.
    flags_unknown: Option<String>,
    driver: Option<String>,
    /// The state when recording started, read through a duplicate of its user's fd (and when),
    /// or why it could not be; `None`: not asked.
    asked: Option<Result<(MigState, u64), String>>,
    /// Its open was seen while recording (or its opener vouches): it started RUNNING.
    opened: bool,
    /// The device's own evidence sources (the `device` event's `sources`).
    sources: BTreeMap<String, String>,
    /// Notes declared with it (how it was resolved).
    notes: Vec<String>,
}

/// Asks the kernel for a device's migration flags through (pid, fd); `Err` says why not.
pub type FlagQuery = Box<dyn Fn(u32, i32) -> Result<u32, String> + Send>;
/// A process's migration context: every device one process holds is one VM, however many
/// containers or iommufds it spreads them over, and the name is the same whether recording
/// saw the devices being opened or found them already open.
fn pid_ctx(pid: u32) -> String {
    format!("pid{pid}")
}
/// Finds out what an fd capture never saw being opened is (from /proc).
pub type FdResolver = Box<dyn Fn(u32, i32) -> Option<SeedFd> + Send>;

#[derive(Clone, Copy, Debug)]
struct Pending {
    fd: i32,
}

/// Records in, trace events out.
pub struct Attributor {
    filter: Option<PidFilter>,
    /// Whether `irq:irq_handler_entry` is attached (then `vfio_msihandler` hits are redundant).
    irq_tracepoint: bool,
    fds: HashMap<(u32, i32), FdInfo>,
    devices: HashMap<String, DevInfo>,
    /// Devices of groups held by a process (seeded from /proc), for interrupt attribution.
    group_owner: HashMap<String, u32>,
    declared: HashSet<String>,
    inflight: HashMap<u32, Pending>,
    vdevs: HashMap<u64, String>,
    pending: Vec<Event>,
    query: FlagQuery,
    resolve: FdResolver,
    /// (pid, fd) pairs /proc said are not VFIO fds; cleared at each purge.
    not_vfio: HashSet<(u32, i32)>,
    /// /proc, /sys and the kernel for devices held before recording (`None`: no look-ups).
    host: Option<attach::Host>,
    /// Devices held when recording started: declared at `t` once records up to `settled`
    /// (the last state read through a duplicate) are in.
    attach_at: Option<(u64, u64, Vec<String>)>,
    /// PCI address -> the placeholders of unresolved device fds it may be.
    ambiguous: HashMap<String, Vec<String>>,
    /// Addresses whose unattributable interrupts or faults were already noted.
    ambiguous_noted: HashSet<String>,
    /// fds learned from /proc, for the probe's fd map (so their `close` is seen).
    learned: Vec<(u32, i32, u32)>,
    /// Successful VFIO_DEVICE_RESETs seen per device: its reset generation.
    resets: HashMap<String, u64>,
    /// The VMM's device DMA logs and the REPORT bitmaps in flight (`dirtylog`).
    dirty: DirtyLogs,
}

impl Attributor {
    pub fn new(filter: Option<PidFilter>, irq_tracepoint: bool) -> Self {
        let mut a = Self::with_hooks(
            filter,
            irq_tracepoint,
            Box::new(|pid, fd| attach::ask_flags(pid, fd).map(|f| f.0)),
            Box::new(procfs::resolve_fd),
        );
        a.host = Some(attach::Host::real());
        a
    }

    /// With /proc, /sys and kernel answers for devices met already open (tests inject them).
    #[cfg(test)]
    pub fn with_host(mut self, host: attach::Host) -> Self {
        self.host = Some(host);
        self
    }

    /// With injected /proc and kernel look-ups (tests).
    pub fn with_hooks(
        filter: Option<PidFilter>,
        irq_tracepoint: bool,
        query: FlagQuery,
        resolve: FdResolver,
    ) -> Self {
        Attributor {
            query,
            resolve,
            not_vfio: HashSet::new(),
            filter,
            irq_tracepoint,
            fds: HashMap::new(),
            devices: HashMap::new(),
            group_owner: HashMap::new(),
            declared: HashSet::new(),
            inflight: HashMap::new(),
            vdevs: HashMap::new(),
            pending: Vec::new(),
            host: None,
            attach_at: None,
            ambiguous: HashMap::new(),
            ambiguous_noted: HashSet::new(),
            learned: Vec::new(),
            resets: HashMap::new(),
            dirty: DirtyLogs::default(),
        }
    }

    /// Learns fds that existed before capture started.
    pub fn seed(&mut self, seeds: &[SeedFd]) {
        for s in seeds {
            if let Some(f) = self.filter.as_mut()
                && !f.accepts(s.pid)
            {
                continue;
            }
            for d in &s.group_devs {
                self.group_owner.insert(d.clone(), s.pid);
            }
            if let Some(dev) = &s.dev {
                self.device_entry(dev, s.pid).fd.get_or_insert(s.fd);
            }
            self.learned.push((s.pid, s.fd, s.kind));
            self.fds.insert(
                (s.pid, s.fd),
                FdInfo {
                    kind: s.kind,
                    dev: s.dev.clone(),
                    born: 0,
                },
            );
        }
    }

    /// Learns the VFIO fds processes held when recording started (`seeds`, from a /proc scan
    /// after the probe was attached at `t`) and resolves their devices ([`attach`]): every
    /// device is declared at `t`, before any later event, with the flags and state the kernel
    /// gave through a duplicate of its user's fd.
    pub fn attach(&mut self, t: u64, seeds: &[SeedFd]) {
        self.seed(seeds);
        let Some(host) = self.host.as_ref() else {
            return;
        };
        let kept: Vec<SeedFd> = seeds
            .iter()
            .filter(|s| self.fds.contains_key(&(s.pid, s.fd)))
            .cloned()
            .collect();
        let found = attach::attach_all(host, &kept);
        let settled = found
            .iter()
            .filter_map(|a| match &a.state {
                Some(Ok((_, at))) => Some(*at),
                _ => None,
            })
            .max()
            .unwrap_or(t);
        let mut names = Vec::new();
        for a in found {
            if !names.contains(&a.dev) {
                names.push(a.dev.clone());
            }
            self.adopt(a);
        }
        if !names.is_empty() {
            self.attach_at = Some((t, settled, names));
        }
    }

    /// Takes in what [`attach`] found out about one device fd.
    fn adopt(&mut self, a: Attached) {
        let Attached {
            pid,
            fd,
            dev,
            resolution,
            flags,
            state,
        } = a;
        let kind = self.kind_of(pid, fd).unwrap_or(fd_kind::DEVICE);
        let born = self.reset_gen(&dev);
        self.fds.insert(
            (pid, fd),
            FdInfo {
                kind,
                dev: Some(dev.clone()),
                born,
            },
        );
        let entry = self.device_entry(&dev, pid);
        entry.fd.get_or_insert(fd);
        match flags {
            Ok(f) => entry.flags = Some(f),
            Err(why) => entry.flags_unknown = Some(why),
        }
        if state.is_some() {
            entry.asked = state;
        }
        match resolution {
            Resolution::Named(how) => entry
                .notes
                .push(format!("fd {fd} of pid {pid} is {dev} ({how})")),
            Resolution::Ambiguous { candidates, why } => {
                let text = format!(
                    "unavailable: fd {fd} of pid {pid} could not be resolved to one PCI device \
                     ({why}); interrupts and IOMMU faults name a PCI address and cannot be \
                     attributed to it"
                );
                for src in [source::IRQ, source::IOMMU_FAULT] {
                    entry.sources.insert(src.to_owned(), text.clone());
                }
                entry.notes.push(format!(
                    "fd {fd} of pid {pid} is one of {} ({why}): named {dev}",
                    if candidates.is_empty() {
                        "no known device".to_owned()
                    } else {
                        candidates.join(", ")
                    }
                ));
                for c in candidates {
                    let v = self.ambiguous.entry(c).or_default();
                    if !v.contains(&dev) {
                        v.push(dev.clone());
                    }
                }
            }
        }
    }

    /// fds learned from /proc since the last call, as (pid, fd, kind): the probe's fd map
    /// must hold them so that their `close` is reported.
    pub fn take_learned(&mut self) -> Vec<(u32, i32, u32)> {
        std::mem::take(&mut self.learned)
    }

    /// Names an fd that capture could not see being opened (e.g. a controller's own device
    /// fds opened before capture started): `fd` of `pid` is device `dev` in context `ctx`,
    /// with its migration flags when the caller knows them.
    pub fn declare_fd(&mut self, pid: u32, fd: i32, dev: &str, ctx: &str, flags: Option<MigFlags>) {
        let entry = self.device_entry(dev, pid);
        entry.fd.get_or_insert(fd);
        if !self.declared.contains(dev)
            && let Some(d) = self.devices.get_mut(dev)
        {
            d.ctx = ctx.to_owned();
            d.owner = Some(pid);
            d.opened = true;
            if flags.is_some() {
                d.flags = flags;
            }
        }
        self.fds.insert(
            (pid, fd),
            FdInfo {
                kind: fd_kind::DEVICE,
                dev: Some(dev.to_owned()),
                born: 0,
            },
        );
    }

    /// Names a migration data fd capture did not see being returned (a VMM's data_fd opened
    /// before recording started): `fd` of `pid` carries the migration data of `dev`, so its
    /// reads, writes and VFIO_MIG_GET_PRECOPY_INFO calls are that device's.
    pub fn declare_data_fd(&mut self, pid: u32, fd: i32, dev: &str) {
        let born = self.reset_gen(dev);
        self.fds.insert(
            (pid, fd),
            FdInfo {
                kind: fd_kind::DATA,
                dev: Some(dev.to_owned()),
                born,
            },
        );
    }

    /// The reset generation of `dev`: the successful VFIO_DEVICE_RESETs seen for it.
    fn reset_gen(&self, dev: &str) -> u64 {
        self.resets.get(dev).copied().unwrap_or(0)
    }

    /// Forgets every fd of processes that no longer exist (an exit closes fds without the
    /// close syscall, and pids are reused); returns the (pid, fd) pairs forgotten.
    pub fn purge_dead(&mut self, alive: impl Fn(u32) -> bool) -> Vec<(u32, i32)> {
        let mut pids: Vec<u32> = self.fds.keys().map(|&(p, _)| p).collect();
        pids.sort_unstable();
        pids.dedup();
        self.not_vfio.clear();
        let dead: HashSet<u32> = pids.into_iter().filter(|&p| !alive(p)).collect();
        if dead.is_empty() {
            return Vec::new();
        }
        let gone: Vec<(u32, i32)> = self
            .fds
            .keys()
            .filter(|(p, _)| dead.contains(p))
            .copied()
            .collect();
        for k in &gone {
            self.fds.remove(k);
        }
        if let Some(f) = self.filter.as_mut() {
            for p in &dead {
                f.cache.remove(p);
            }
        }
        if let Some(h) = self.host.as_mut() {
            for p in &dead {
                h.forget(*p);
            }
        }
        gone
    }

    /// Whether records of `pid` are kept (the `--pid` processes and their descendants).
    pub fn accepts_pid(&mut self, pid: u32) -> bool {
        self.accepts(pid)
    }

    fn accepts(&mut self, pid: u32) -> bool {
        match self.filter.as_mut() {
            None => true,
            Some(f) => f.accepts(pid),
        }
    }

    /// Whether evidence about `dev` (interrupts, faults) belongs to the recorded processes.
    fn accepts_dev(&mut self, dev: &str) -> bool {
        if self.filter.is_none() {
            return true;
        }
        match self.owner_of(dev) {
            Some(p) => self.accepts(p),
            None => false,
        }
    }

    fn owner_of(&self, dev: &str) -> Option<u32> {
        self.devices
            .get(dev)
            .and_then(|d| d.owner)
            .or_else(|| self.group_owner.get(dev).copied())
    }

    fn device_entry(&mut self, dev: &str, pid: u32) -> &mut DevInfo {
        let roots = self.host.as_ref().map(|h| &h.roots);
        self.devices
            .entry(dev.to_owned())
            .or_insert_with(|| DevInfo {
                ctx: pid_ctx(pid),
                owner: Some(pid),
                driver: match roots {
                    Some(r) => procfs::pci_driver_in(r, dev),
                    None => procfs::pci_driver(dev),
                },
                ..DevInfo::default()
            })
    }

    /// The device an fd of `pid` stands for; an fd never seen is named `fd:N@pid`.
    fn dev_of(&mut self, pid: u32, fd: i32) -> String {
        if let Some(dev) = self.fds.get(&(pid, fd)).and_then(|f| f.dev.clone()) {
            return dev;
        }
        let dev = attach::placeholder(pid, fd);
        self.device_entry(&dev, pid).fd.get_or_insert(fd);
        dev
    }

    /// Makes sure an fd used by a VFIO ioctl is known: asks /proc about one never seen opened,
    /// and resolves its device as at attach time (its state then is for the trace to tell).
    fn learn(&mut self, pid: u32, fd: i32) {
        if fd < 0 || self.fds.contains_key(&(pid, fd)) || self.not_vfio.contains(&(pid, fd)) {
            return;
        }
        let Some(seed) = (self.resolve)(pid, fd) else {
            self.not_vfio.insert((pid, fd));
            return;
        };
        self.seed(std::slice::from_ref(&seed));
        if !matches!(seed.kind, fd_kind::DEVICE | fd_kind::CDEV) || pid == std::process::id() {
            return;
        }
        let Some(host) = self.host.as_ref() else {
            return;
        };
        let seeds = procfs::scan_pid(&host.roots, pid);
        for a in attach::attach_process(host, pid, &seeds, Some(fd), false) {
            self.adopt(a);
        }
    }

    fn kind_of(&self, pid: u32, fd: i32) -> Option<u32> {
        self.fds.get(&(pid, fd)).map(|f| f.kind)
    }

    fn emit(&mut self, t: u64, pid: Option<u32>, kind: EventKind) {
        self.pending.push(Event { t, pid, kind });
    }

    /// Adds an event produced outside the probe records (e.g. `lost`).
    pub fn push_event(&mut self, ev: Event) {
        self.pending.push(ev);
    }

    pub fn push(&mut self, rec: &Record) {
        match rec {
            Record::IoctlCall(c) => self.ioctl_call(c),
            Record::IoctlRet(r) => self.ioctl_ret(r),
            Record::VfioOpen(o) => self.open(o),
            Record::FdClose(c) => self.close(c.hdr.pid, c.fd),
            Record::Step(s) => self.step(s),
            Record::Irq(i) => self.irq(i),
            Record::IommuMap(m) => self.iommu_map(m),
            Record::IommuUnmap(u) => self.iommu_unmap(u),
            Record::IommuFault(f) => self.fault(f),
            Record::DataXfer(d) => self.data(d),
            Record::MdevDma(m) => self.mdev(m),
            Record::MsiHandler(m) => self.msi(m),
            Record::Fork(f) => {
                if let Some(filter) = self.filter.as_mut()
                    && filter.accepts(f.hdr.pid)
                {
                    filter.adopt(f.child_pid);
                }
            }
            Record::StepLost(l) => self.step_lost(l),
            // migscope's own REPORTs (drive's) are its controller's `dirty_report`s already.
            Record::DirtyChunk(c) => {
                if c.hdr.pid != std::process::id() && self.accepts(c.hdr.pid) {
                    self.dirty.chunk(c);
                }
            }
            Record::IrqBin(b) => self.irq_bin(b),
        }
    }

    /// A closed fd number may come back as anything: forget what it was.
    fn close(&mut self, pid: u32, fd: i32) {
        if let Some(dev) = self.fds.remove(&(pid, fd)).and_then(|f| f.dev)
            && let Some(d) = self.devices.get_mut(&dev)
            && d.owner == Some(pid)
            && d.fd == Some(fd)
        {
            d.fd = None;
        }
        self.not_vfio.remove(&(pid, fd));
    }

    /// FSM steps of a request the probe could not record: a `lost` for the device of that
    /// request, stamped before its `set_done` (DESIGN.md: lost events make the trace
    /// inconclusive; the verifier must not read the steps it does see as an illegal arc).
    fn step_lost(&mut self, l: &StepLost) {
        let pid = l.hdr.pid;
        if !self.accepts(pid) {
            return;
        }
        let dev = if l.cmd == ioctl::DEVICE_FEATURE
            && self.kind_of(pid, l.fd) != Some(fd_kind::CONTAINER)
        {
            // The SET's device, named as its `set` names it.
            Some(self.dev_of(pid, l.fd))
        } else {
            self.fds.get(&(pid, l.fd)).and_then(|f| f.dev.clone())
        };
        self.emit(
            l.hdr.ts_ns,
            Some(pid),
            EventKind::Lost {
                n: u64::from(l.n),
                source: super::LOST_FSM_STEP.to_owned(),
                dev,
            },
        );
    }

    fn ioctl_call(&mut self, c: &IoctlCall) {
        let pid = c.hdr.pid;
        if !self.accepts(pid) || attach::own_question(pid, c.fd, c.hdr.ts_ns) {
            return;
        }
        self.learn(pid, c.fd);
        self.inflight.insert(c.hdr.tid, Pending { fd: c.fd });
        if c.cmd != ioctl::DEVICE_FEATURE || self.kind_of(pid, c.fd) == Some(fd_kind::CONTAINER) {
            return;
        }
        let Some(flags) = u32_at(&c.payload, c.payload_len, off::FEATURE_FLAGS) else {
            return;
        };
        if flags & feature::PROBE != 0
            || flags & feature::MASK != feature::MIG_DEVICE_STATE
            || flags & feature::SET == 0
        {
            return;
        }
        let Some(to) = u32_at(&c.payload, c.payload_len, off::MIG_STATE_DEVICE_STATE)
            .and_then(MigState::from_u32)
        else {
            return;
        };
        let dev = self.dev_of(pid, c.fd);
        self.emit(c.hdr.ts_ns, Some(pid), EventKind::Set { dev, to });
    }

    fn ioctl_ret(&mut self, r: &IoctlRet) {
        let pid = r.hdr.pid;
        if !self.accepts(pid) || attach::own_question(pid, r.fd, r.hdr.ts_ns) {
            return;
        }
        self.inflight.remove(&r.hdr.tid);
        self.learn(pid, r.fd);
        let t = r.hdr.ts_ns;
        let ret = r.ret.clamp(i32::MIN as i64, i32::MAX as i64) as i32;
        let (p, n) = (&r.payload, r.payload_len);
        let kind = self.kind_of(pid, r.fd);
        match r.cmd {
            ioctl::GROUP_GET_DEVICE_FD if ret >= 0 => {
                let name = cstr(&p[..(n as usize).min(p.len())]);
                let dev = if name.is_empty() {
                    attach::placeholder(pid, ret)
                } else {
                    name
                };
                let entry = self.device_entry(&dev, pid);
                entry.fd.get_or_insert(ret);
                entry.opened = true;
                self.fds.insert(
                    (pid, ret),
                    FdInfo {
                        kind: fd_kind::DEVICE,
                        dev: Some(dev),
                        born: 0,
                    },
                );
            }
            ioctl::DEVICE_BIND_IOMMUFD if ret == 0 => {
                // A cdev is opened for use by its bind (vfio_df_ioctl_bind_iommufd in
                // drivers/vfio/device_cdev.c): from here it is RUNNING.
                if let Some(dev) = self.fds.get(&(pid, r.fd)).and_then(|f| f.dev.clone())
                    && let Some(d) = self.devices.get_mut(&dev)
                {
                    d.opened = true;
                }
            }
            ioctl::DEVICE_FEATURE if kind != Some(fd_kind::CONTAINER) => {
                self.feature_ret(r, ret);
            }
            ioctl::IOMMU_DIRTY_PAGES => self.dirty_pages(r, ret),
            ioctl::MIG_GET_PRECOPY_INFO if kind == Some(fd_kind::DATA) => {
                let Some(dev) = self.fds.get(&(pid, r.fd)).and_then(|f| f.dev.clone()) else {
                    return;
                };
                // The driver's data_fd ioctl copies the struct back only on success
                // (e.g. mlx5vf_precopy_ioctl, drivers/vfio/pci/mlx5/main.c).
                let result = if ret < 0 {
                    Err(ret)
                } else {
                    match struct_at::<uapi::vfio_precopy_info>(p, n, 0) {
                        Some(i) => Ok(PrecopyInfo {
                            initial_bytes: i.initial_bytes,
                            dirty_bytes: i.dirty_bytes,
                            flags: i.flags,
                        }),
                        None => return,
                    }
                };
                self.emit(t, Some(pid), EventKind::PrecopyInfo { dev, result });
            }
            iommufd::HWPT_SET_DIRTY_TRACKING => {
                if let Some(a) = struct_at::<iommufd::HwptSetDirtyTracking>(p, n, 0) {
                    let ctx = pid_ctx(pid);
                    let what = if a.flags & iommufd::DIRTY_TRACKING_ENABLE != 0 {
                        "enable"
                    } else {
                        "disable"
                    };
                    let label = format!(
                        "iommu_hwpt_set_dirty_tracking {ctx} hwpt {} {what} ret={ret}",
                        a.hwpt_id
                    );
                    self.emit(t, Some(pid), EventKind::Mark { label });
                }
            }
            iommufd::HWPT_GET_DIRTY_BITMAP => {
                if let Some(a) = struct_at::<iommufd::HwptGetDirtyBitmap>(p, n, 0) {
                    let ctx = pid_ctx(pid);
                    let clear = if a.flags & iommufd::GET_DIRTY_BITMAP_NO_CLEAR != 0 {
                        " no_clear"
                    } else {
                        ""
                    };
                    let label = format!(
                        "iommu_hwpt_get_dirty_bitmap {ctx} hwpt {} iova {:#x} length {:#x} \
                         page_size {}{clear} ret={ret}",
                        a.hwpt_id, a.iova, a.length, a.page_size
                    );
                    self.emit(t, Some(pid), EventKind::Mark { label });
                }
            }
            ioctl::DEVICE_SET_IRQS if kind != Some(fd_kind::CONTAINER) => {
                // struct vfio_irq_set {argsz, flags, index, start, count, data[]}: which
                // vectors the user wired up or tore down, as a note on the timeline.
                if let (Some(flags), Some(index), Some(start), Some(count)) = (
                    u32_at(p, n, off::IRQ_SET_FLAGS),
                    u32_at(p, n, off::IRQ_SET_INDEX),
                    u32_at(p, n, off::IRQ_SET_START),
                    u32_at(p, n, off::IRQ_SET_COUNT),
                ) {
                    let dev = self.dev_of(pid, r.fd);
                    let label = format!(
                        "set_irqs {dev} index {index} start {start} count {count} {} ret={ret}",
                        irq_set_action(flags)
                    );
                    self.emit(t, Some(pid), EventKind::Mark { label });
                }
            }
            ioctl::DEVICE_RESET => {
                let dev = self.dev_of(pid, r.fd);
                if ret == 0 {
                    *self.resets.entry(dev.clone()).or_default() += 1;
                }
                self.emit(t, Some(pid), EventKind::Reset { dev, ret });
            }
            ioctl::IOMMU_MAP_DMA if ret == 0 && self.is_container_cmd(kind, p, n) => {
                if let (Some(iova), Some(len)) = (
                    u64_at(p, n, off::DMA_MAP_IOVA),
                    u64_at(p, n, off::DMA_MAP_SIZE),
                ) {
                    let ctx = pid_ctx(pid);
                    self.emit(t, Some(pid), EventKind::Map { ctx, iova, len });
                }
            }
            ioctl::IOMMU_UNMAP_DMA if ret == 0 && self.is_container_cmd(kind, p, n) => {
                if let (Some(iova), Some(len)) = (
                    u64_at(p, n, off::DMA_UNMAP_IOVA),
                    u64_at(p, n, off::DMA_UNMAP_SIZE),
                ) {
                    let ctx = pid_ctx(pid);
                    self.emit(t, Some(pid), EventKind::Unmap { ctx, iova, len });
                }
            }
            _ => {}
        }
    }

    /// 0x3B71/0x3B72 are MAP/UNMAP_DMA on a container and other commands on a device fd.
    fn is_container_cmd(&self, kind: Option<u32>, p: &[u8], n: u32) -> bool {
        match kind {
            Some(fd_kind::CONTAINER) => true,
            Some(_) => false,
            None => u32_at(p, n, 0).is_some_and(|argsz| argsz >= off::DMA_MAP_ARGSZ - 8),
        }
    }

    fn feature_ret(&mut self, r: &IoctlRet, ret: i32) {
        let pid = r.hdr.pid;
        let t = r.hdr.ts_ns;
        let (p, n) = (&r.payload, r.payload_len);
        let Some(flags) = u32_at(p, n, off::FEATURE_FLAGS) else {
            return;
        };
        if flags & feature::PROBE != 0 {
            return;
        }
        let get = flags & feature::GET != 0;
        let set = flags & feature::SET != 0;
        match flags & feature::MASK {
            feature::MIGRATION if get && ret == 0 => {
                if let Some(bits) = u64_at(p, n, off::MIGRATION_FLAGS) {
                    let dev = self.dev_of(pid, r.fd);
                    if let Some(d) = self.devices.get_mut(&dev) {
                        d.flags = Some(MigFlags(bits as u32));
                    }
                }
            }
            feature::MIG_DEVICE_STATE if set => {
                let Some(to) =
                    u32_at(p, n, off::MIG_STATE_DEVICE_STATE).and_then(MigState::from_u32)
                else {
                    return;
                };
                let dev = self.dev_of(pid, r.fd);
                let data_fd = u32_at(p, n, off::MIG_STATE_DATA_FD)
                    .map(|v| v as i32)
                    .filter(|&fd| ret == 0 && fd >= 0);
                if let Some(fd) = data_fd {
                    let born = self.reset_gen(&dev);
                    self.fds.insert(
                        (pid, fd),
                        FdInfo {
                            kind: fd_kind::DATA,
                            dev: Some(dev.clone()),
                            born,
                        },
                    );
                }
                self.emit(
                    t,
                    Some(pid),
                    EventKind::SetDone {
                        dev,
                        to,
                        ret,
                        data_fd,
                    },
                );
            }
            feature::MIG_DEVICE_STATE if get && ret == 0 => {
                if let Some(state) =
                    u32_at(p, n, off::MIG_STATE_DEVICE_STATE).and_then(MigState::from_u32)
                {
                    let dev = self.dev_of(pid, r.fd);
                    self.emit(t, Some(pid), EventKind::Get { dev, state });
                }
            }
            // The VMM opts in to VFIO_PRECOPY_INFO_REINIT (a SET without data): from here the
            // driver must clear precopy_info's flags word.
            uapi::VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2 if set => {
                let dev = self.dev_of(pid, r.fd);
                self.emit(t, Some(pid), EventKind::PrecopyInfoV2 { dev, ret });
            }
            uapi::VFIO_DEVICE_FEATURE_MIG_DATA_SIZE if get => {
                let dev = self.dev_of(pid, r.fd);
                // vfio_ioctl_device_feature_migration_data_size (drivers/vfio/vfio_main.c)
                // copies stop_copy_length back only on success.
                let result = if ret < 0 {
                    Err(ret)
                } else {
                    match struct_at::<uapi::vfio_device_feature_mig_data_size>(p, n, FEATURE_HDR) {
                        Some(d) => Ok(d.stop_copy_length),
                        None => return,
                    }
                };
                self.emit(t, Some(pid), EventKind::DataSize { dev, result });
            }
            // Device DMA logging: notes with their extents, never DMA evidence by themselves
            // (the REPORT's bitmap is the user's; reading it is issue 14's dirty_log source).
            feature::DMA_LOGGING_START => {
                let dev = self.dev_of(pid, r.fd);
                let sizes =
                    struct_at::<uapi::vfio_device_feature_dma_logging_control>(p, n, FEATURE_HDR)
                        .map(|c| format!(" page_size {} ranges {}", c.page_size, c.num_ranges))
                        .unwrap_or_default();
                let label = format!("dma_logging start {dev}{sizes} ret={ret}");
                self.emit(t, Some(pid), EventKind::Mark { label });
                if set && ret == 0 {
                    self.dirty.start(&dev, r.enter_ns);
                }
            }
            feature::DMA_LOGGING_STOP => {
                let dev = self.dev_of(pid, r.fd);
                let label = format!("dma_logging stop {dev} ret={ret}");
                self.emit(t, Some(pid), EventKind::Mark { label });
                if set && ret == 0 {
                    self.dirty.stop(&dev);
                }
            }
            feature::DMA_LOGGING_REPORT => {
                let dev = self.dev_of(pid, r.fd);
                let sizes =
                    struct_at::<uapi::vfio_device_feature_dma_logging_report>(p, n, FEATURE_HDR)
                        .map(|r| {
                            format!(
                                " iova {:#x} length {:#x} page_size {}",
                                r.iova, r.length, r.page_size
                            )
                        })
                        .unwrap_or_default();
                let label = format!("dma_logging report {dev}{sizes} ret={ret}");
                self.emit(t, Some(pid), EventKind::Mark { label });
                // The bitmap the VMM received, from the probe's chunks (never drive's own:
                // its controller reports those itself).
                if let Some(rep) =
                    struct_at::<uapi::vfio_device_feature_dma_logging_report>(p, n, FEATURE_HDR)
                    && get
                    && pid != std::process::id()
                {
                    let d = self.dirty.report(
                        &dev,
                        r.hdr.tid,
                        r.enter_ns,
                        t,
                        rep.iova,
                        rep.length,
                        rep.page_size,
                        ret,
                    );
                    for label in d.marks {
                        self.emit(t, Some(pid), EventKind::Mark { label });
                    }
                    for kind in d.events {
                        self.emit(t, Some(pid), kind);
                    }
                }
            }
            _ => {}
        }
    }

    /// type1 `VFIO_IOMMU_DIRTY_PAGES` on a container: a note with its extent. Never DMA
    /// evidence: type1 reports every pinned page dirty (vfio_iommu_type1.c marks a whole
    /// pinned range dirty when no device has pinned pages selectively).
    fn dirty_pages(&mut self, r: &IoctlRet, ret: i32) {
        let pid = r.hdr.pid;
        let (p, n) = (&r.payload, r.payload_len);
        let Some(flags) = u32_at(p, n, off::DIRTY_BITMAP_FLAGS) else {
            return;
        };
        let ctx = pid_ctx(pid);
        // "Only one of the flags _START, _STOP and _GET may be specified at a time" (vfio.h);
        // anything else is named as the raw flags the kernel refused.
        let label = if flags == uapi::VFIO_IOMMU_DIRTY_PAGES_FLAG_START {
            format!("dirty_pages start {ctx} ret={ret}")
        } else if flags == uapi::VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP {
            format!("dirty_pages stop {ctx} ret={ret}")
        } else if flags == uapi::VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP {
            let range =
                struct_at::<uapi::vfio_iommu_type1_dirty_bitmap_get>(p, n, DIRTY_BITMAP_HDR)
                    .map(|g| {
                        format!(
                            " iova {:#x} size {:#x} pgsize {} bitmap {} bytes",
                            g.iova, g.size, g.bitmap.pgsize, g.bitmap.size
                        )
                    })
                    .unwrap_or_default();
            format!("dirty_pages get_bitmap {ctx}{range} ret={ret}")
        } else {
            format!("dirty_pages flags {flags:#x} {ctx} ret={ret}")
        };
        self.emit(r.hdr.ts_ns, Some(pid), EventKind::Mark { label });
    }

    fn open(&mut self, o: &VfioOpen) {
        let pid = o.hdr.pid;
        if !self.accepts(pid) {
            return;
        }
        let path = cstr(&o.path);
        let dev = match o.fd_kind {
            fd_kind::CDEV => procfs::cdev_device(&path),
            fd_kind::GROUP => {
                let group = path.trim_start_matches("/dev/vfio/");
                for d in procfs::group_devices(group.trim_start_matches("noiommu-")) {
                    self.group_owner.insert(d, pid);
                }
                None
            }
            _ => None,
        };
        if let Some(d) = &dev {
            let entry = self.device_entry(d, pid);
            entry.fd.get_or_insert(o.fd);
        }
        let born = dev.as_deref().map_or(0, |d| self.reset_gen(d));
        self.fds.insert(
            (pid, o.fd),
            FdInfo {
                kind: o.fd_kind,
                dev,
                born,
            },
        );
    }

    fn step(&mut self, s: &Step) {
        let pid = s.hdr.pid;
        if !self.accepts(pid) {
            return;
        }
        let dev = match self.inflight.get(&s.hdr.tid).copied() {
            Some(p) => {
                let dev = self.dev_of(pid, p.fd);
                if s.vdev != 0 {
                    self.vdevs.insert(s.vdev, dev.clone());
                }
                dev
            }
            None => match self.vdevs.get(&s.vdev) {
                Some(d) => d.clone(),
                None => {
                    let dev = format!("vdev:{:#x}", s.vdev);
                    self.device_entry(&dev, pid);
                    dev
                }
            },
        };
        // A failed call took no arc; without `*next` the arc is unknown (fexit on kernels
        // whose verifier refuses the enum pointer, which the kprobe pair avoids).
        if s.ret != 0 || s.has_next == 0 {
            return;
        }
        let (Some(from), Some(to)) = (MigState::from_u32(s.cur), MigState::from_u32(s.next)) else {
            return;
        };
        self.emit(s.hdr.ts_ns, Some(pid), EventKind::Step { dev, from, to });
    }

    /// Evidence naming PCI address `dev` that may belong to an unresolved device fd cannot be
    /// attributed (those devices declare `irq` and `iommu_fault` unavailable): noted once, so
    /// no phantom device stands in for it.
    fn unattributable(&mut self, t: u64, dev: &str, what: &str) -> bool {
        let Some(names) = self.ambiguous.get(dev) else {
            return false;
        };
        if self.ambiguous_noted.insert(dev.to_owned()) {
            let label = format!(
                "{what} of {dev} not attributed: it may be any of {} (unresolved device fds); \
                 further ones are dropped",
                names.join(", ")
            );
            self.emit(t, None, EventKind::Mark { label });
        }
        true
    }

    fn irq(&mut self, i: &Irq) {
        let name = cstr(&i.name);
        let Some((kind, vector, dev)) = parse_irq_name(&name) else {
            return;
        };
        if !self.accepts_dev(&dev) || self.unattributable(i.hdr.ts_ns, &dev, "interrupts") {
            return;
        }
        let owner = self.owner_of(&dev);
        self.emit(i.hdr.ts_ns, owner, EventKind::Irq { dev, kind, vector });
    }

    /// Interrupts the probe counted while their device could not be quiescing: one `irq_bin`,
    /// attributed as each of them would have been.
    fn irq_bin(&mut self, b: &IrqBin) {
        let name = cstr(&b.name);
        let Some((kind, vector, dev)) = parse_irq_name(&name) else {
            return;
        };
        if b.n == 0 || b.t0 > b.t1 {
            // Not a bin the probe writes: an undecodable record.
            let kind = EventKind::Lost {
                n: 1,
                source: super::LOST_DECODE.to_owned(),
                dev: None,
            };
            self.emit(b.hdr.ts_ns, None, kind);
            return;
        }
        if !self.accepts_dev(&dev) || self.unattributable(b.hdr.ts_ns, &dev, "interrupts") {
            return;
        }
        let owner = self.owner_of(&dev);
        // The record is stamped when the bin was flushed: never before its last interrupt.
        let t = b.hdr.ts_ns.max(b.t1);
        // One interrupt spans no time (the format's rule), whatever the clock said.
        let window = if b.n == 1 { (b.t1, b.t1) } else { (b.t0, b.t1) };
        self.emit(
            t,
            owner,
            EventKind::IrqBin {
                dev,
                kind,
                vector,
                n: b.n,
                window,
            },
        );
    }

    /// The device fds whose device is known, as (pid, fd, device): the probe keys interrupt
    /// phases by device, and learns only the fds of VFIO_GROUP_GET_DEVICE_FD itself.
    pub fn device_fds(&self) -> impl Iterator<Item = (u32, i32, &str)> + '_ {
        self.fds.iter().filter_map(|(&(pid, fd), f)| {
            matches!(f.kind, fd_kind::DEVICE | fd_kind::CDEV)
                .then_some(())
                .and(f.dev.as_deref())
                .map(|d| (pid, fd, d))
        })
    }

    fn msi(&mut self, m: &MsiHandler) {
        if self.irq_tracepoint {
            return;
        }
        let Some(name) = irq_name(m.irq) else {
            return;
        };
        let Some((kind, vector, dev)) = parse_irq_name(&name) else {
            return;
        };
        if !self.accepts_dev(&dev) || self.unattributable(m.hdr.ts_ns, &dev, "interrupts") {
            return;
        }
        let owner = self.owner_of(&dev);
        self.emit(m.hdr.ts_ns, owner, EventKind::Irq { dev, kind, vector });
    }

    /// IOMMU changes inside MAP_DMA/UNMAP_DMA are already `map`/`unmap` events from the ioctl
    /// itself (the request's exact extent); the tracepoint adds those made by other paths
    /// (iommufd IOAS ioctls).
    fn folded(&self, pid: u32, fd: i32, cmd: u32) -> bool {
        matches!(cmd, ioctl::IOMMU_MAP_DMA | ioctl::IOMMU_UNMAP_DMA)
            && matches!(self.kind_of(pid, fd), Some(fd_kind::CONTAINER) | None)
    }

    fn iommu_map(&mut self, m: &IommuMap) {
        let pid = m.hdr.pid;
        if !self.accepts(pid) || self.folded(pid, m.fd, m.cmd) {
            return;
        }
        let ctx = pid_ctx(pid);
        let (iova, len) = (m.iova, m.size);
        self.emit(m.hdr.ts_ns, Some(pid), EventKind::Map { ctx, iova, len });
    }

    fn iommu_unmap(&mut self, u: &IommuUnmap) {
        let pid = u.hdr.pid;
        if !self.accepts(pid) || self.folded(pid, u.fd, u.cmd) {
            return;
        }
        let ctx = pid_ctx(pid);
        let len = if u.unmapped != 0 { u.unmapped } else { u.size };
        let iova = u.iova;
        self.emit(u.hdr.ts_ns, Some(pid), EventKind::Unmap { ctx, iova, len });
    }

    fn fault(&mut self, f: &IommuFault) {
        let dev = cstr(&f.device);
        if dev.is_empty()
            || !self.accepts_dev(&dev)
            || self.unattributable(f.hdr.ts_ns, &dev, "IOMMU faults")
        {
            return;
        }
        let owner = self.owner_of(&dev);
        let ev = EventKind::Dma {
            dev,
            src: DmaSource::Fault,
            iova: f.iova,
            // The fault reports an address, not an extent.
            len: 0,
            write: f.flags & IOMMU_FAULT_WRITE != 0,
            window: None,
            p2p: None,
        };
        self.emit(f.hdr.ts_ns, owner, ev);
    }

    fn data(&mut self, d: &DataXfer) {
        let pid = d.hdr.pid;
        if d.ret <= 0 || !self.accepts(pid) {
            return;
        }
        let Some((dev, fd_gen)) = self
            .fds
            .get(&(pid, d.fd))
            .and_then(|f| Some((f.dev.clone()?, f.born)))
        else {
            return;
        };
        let dir = if d.dir == DATA_WRITE {
            DataDir::Load
        } else {
            DataDir::Save
        };
        let bytes = d.ret as u64;
        let file = Some(DataFile {
            fd: d.fd,
            fd_gen,
            reset_gen: self.reset_gen(&dev),
        });
        self.emit(
            d.hdr.ts_ns,
            Some(pid),
            EventKind::Data {
                dev,
                dir,
                bytes,
                file,
            },
        );
    }

    fn mdev(&mut self, m: &MdevDma) {
        let dev = match self.vdevs.get(&m.vdev) {
            Some(d) => d.clone(),
            None => format!("vdev:{:#x}", m.vdev),
        };
        if !self.accepts_dev(&dev) {
            return;
        }
        let owner = self.owner_of(&dev);
        if owner.is_none() {
            self.device_entry(&dev, m.hdr.pid).ctx = "unattributed".to_owned();
        }
        let len = if m.func == MDEV_PIN_PAGES {
            m.len.saturating_mul(page_size())
        } else {
            m.len
        };
        let ev = EventKind::Dma {
            dev,
            src: DmaSource::MdevDma,
            iova: m.iova,
            len,
            write: m.write != 0,
            window: None,
            p2p: None,
        };
        self.emit(m.hdr.ts_ns, owner, ev);
    }

    /// While the states read at attach wait for every record before their read: until when
    /// ([`Attributor::release`] releases nothing before it).
    pub fn settling_until(&self) -> Option<u64> {
        self.attach_at.as_ref().map(|(_, settled, _)| *settled)
    }

    /// Takes the events with `t <= upto` (all with `None`) in time order, each device declared
    /// before its first use; devices held when recording started are declared at the attach
    /// time, before every event after it ([`Attributor::attach`]).
    ///
    /// A device whose VFIO_DEVICE_FEATURE_MIGRATION GET was never seen (its user queried it
    /// before recording started) has its flags asked from the kernel through a duplicate of
    /// its user's fd ([`attach::ask_flags`]). Its state is the one read the same way at
    /// attach, else what the recording shows ([`Seen`]), else RUNNING for a device seen being
    /// opened. What cannot be known is not guessed: the device is declared with the trace
    /// format's defaults (STOP_COPY only, RUNNING), its own `transitions` source unavailable
    /// with the reason, and a `mark` saying so.
    pub fn release(&mut self, upto: Option<u64>) -> Vec<Event> {
        // A change recorded before the last state read at attach would make that read stand
        // for the wrong moment: wait until every record up to it is in.
        if let (Some((_, settled, _)), Some(u)) = (&self.attach_at, upto)
            && u < *settled
        {
            return Vec::new();
        }
        self.pending.sort_by_key(|e| e.t);
        let cut = match upto {
            None => self.pending.len(),
            Some(u) => self.pending.partition_point(|e| e.t <= u),
        };
        let ready: Vec<Event> = self.pending.drain(..cut).collect();
        let mut head: Vec<Event> = Vec::new();
        if let Some((t, _, names)) = self.attach_at.take() {
            for dev in names {
                if self.declared.contains(&dev) {
                    continue;
                }
                let seen = Seen::of(&dev, ready.iter().chain(self.pending.iter()));
                head.extend(self.declare(&dev, t, seen));
            }
        }
        // First pass: the declarations (and notes) each first use needs, by position.
        let mut before: Vec<(usize, Vec<Event>)> = Vec::new();
        for (i, ev) in ready.iter().enumerate() {
            let Some(dev) = ev.kind.dev() else { continue };
            if matches!(ev.kind, EventKind::Device { .. }) || self.declared.contains(dev) {
                continue;
            }
            let seen = Seen::of(dev, ready[i..].iter().chain(self.pending.iter()));
            let decl = self.declare(dev, ev.t, seen);
            before.push((i, decl));
        }
        // Second pass: move the events out, declarations in front of their first use.
        let at = head.first().map(|e| e.t);
        let mut out = Vec::with_capacity(head.len() + ready.len() + 2 * before.len());
        let mut head = Some(head);
        let mut before = before.into_iter().peekable();
        for (i, ev) in ready.into_iter().enumerate() {
            if at.is_some_and(|t| ev.t >= t)
                && let Some(h) = head.take()
            {
                out.extend(h);
            }
            if let Some((_, decl)) = before.next_if(|(j, _)| *j == i) {
                out.extend(decl);
            }
            out.push(ev);
        }
        out.extend(head.into_iter().flatten());
        out
    }

    /// The `device` event declaring `dev` at `t` (preceded by `mark`s: how it was resolved,
    /// and what could not be known about it).
    fn declare(&mut self, dev: &str, t: u64, seen: Seen) -> Vec<Event> {
        let mut out = Vec::with_capacity(2);
        self.declared.insert(dev.to_owned());
        let mut info = self.devices.get(dev).cloned().unwrap_or_else(|| DevInfo {
            ctx: "unattributed".to_owned(),
            ..DevInfo::default()
        });
        let mark = |label: String| Event {
            t,
            pid: None,
            kind: EventKind::Mark { label },
        };
        let mut unknown: Vec<String> = Vec::new();
        if info.flags.is_none() {
            let asked = match (info.flags_unknown.take(), info.owner, info.fd) {
                (Some(why), _, _) => Err(why),
                (None, Some(pid), Some(fd)) => (self.query)(pid, fd),
                (None, _, _) => Err("no fd of its user is known".to_owned()),
            };
            match asked {
                Ok(bits) => info.flags = Some(MigFlags(bits)),
                Err(why) => {
                    out.push(mark(format!(
                        "migration flags of {dev} unknown (not seen while recording; asking \
                         the kernel failed: {why}): declared STOP_COPY only, with transitions \
                         unavailable for it"
                    )));
                    unknown.push(format!("migration flags unknown ({why})"));
                }
            }
            if let Some(d) = self.devices.get_mut(dev) {
                d.flags = info.flags;
            }
        }
        let (state, how) = match (&info.asked, seen.state) {
            (Some(Ok((s, at))), _) if seen.first_change.is_none_or(|c| c > *at) => (
                *s,
                Some("read through a duplicate of its user's fd (VFIO_DEVICE_FEATURE GET)"),
            ),
            (_, Start::Known(s)) => (s, None),
            (_, Start::SetByFirstEvent) => (MigState::Running, None),
            _ if info.opened => (MigState::Running, None),
            (asked, _) => {
                let why = match asked {
                    Some(Ok((s, _))) => format!(
                        "read {} through a duplicate of its user's fd, but it changed before \
                         that and the recording does not show from where",
                        s.name()
                    ),
                    Some(Err(why)) => why.clone(),
                    None => "not seen being opened, and nothing recorded shows it".to_owned(),
                };
                out.push(mark(format!(
                    "state of {dev} when recording began unknown ({why}): declared RUNNING, \
                     the trace format's default, with transitions unavailable for it"
                )));
                unknown.push(format!("state when recording began unknown ({why})"));
                (MigState::Running, None)
            }
        };
        for note in std::mem::take(&mut info.notes) {
            let label = match how {
                Some(h) => format!("attach: {note}; state {} {h}", state.name()),
                None => format!("attach: {note}"),
            };
            out.insert(0, mark(label));
        }
        let mut sources = std::mem::take(&mut info.sources);
        if !unknown.is_empty() {
            sources.insert(
                source::TRANSITIONS.to_owned(),
                format!("unavailable: {}", unknown.join("; ")),
            );
        }
        if let (Some(pid), Some(host)) = (info.owner, self.host.as_mut())
            && !sources.contains_key(source::IRQ)
            && let Some(irq) = host.irq_override(pid)
        {
            sources.insert(source::IRQ.to_owned(), irq);
        }
        out.push(Event {
            t,
            pid: info.owner,
            kind: EventKind::Device {
                dev: dev.to_owned(),
                flags: info.flags.unwrap_or(MigFlags(UNSEEN_FLAGS)),
                ctx: info.ctx,
                state,
                driver: info.driver,
                sources,
            },
        });
        out
    }
}

/// Where a device's recorded events say it was before anything changed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Start {
    /// Its first `get` reported it, or its first `step` started from it (recording began
    /// while the device was elsewhere, e.g. in the middle of a migration).
    Known(MigState),
    /// Its very first event (`reset`, `set_done`) sets the state itself: nothing before it.
    SetByFirstEvent,
    /// Nothing recorded tells (e.g. a SET whose steps were not traced).
    Unknown,
}

/// What the recording shows about a device's state before anything changed it, and when it
/// first changed (`set`, `step`, `set_done`, `reset`).
#[derive(Clone, Copy, Debug)]
struct Seen {
    state: Start,
    first_change: Option<u64>,
}

impl Seen {
    fn of<'a>(dev: &str, events: impl Iterator<Item = &'a Event>) -> Seen {
        let mut first_change = None;
        let mut first = true;
        for e in events {
            if e.kind.dev() != Some(dev) || matches!(e.kind, EventKind::Device { .. }) {
                continue;
            }
            let state = match &e.kind {
                // After a SET a GET tells where it went, not where it was.
                EventKind::Get { state, .. } if first_change.is_none() => Start::Known(*state),
                EventKind::Get { .. } => Start::Unknown,
                EventKind::Step { from, .. } => {
                    first_change.get_or_insert(e.t);
                    Start::Known(*from)
                }
                EventKind::SetDone { .. } | EventKind::Reset { .. } => {
                    first_change.get_or_insert(e.t);
                    if first {
                        Start::SetByFirstEvent
                    } else {
                        Start::Unknown
                    }
                }
                EventKind::Set { .. } => {
                    first_change.get_or_insert(e.t);
                    first = false;
                    continue;
                }
                _ => {
                    first = false;
                    continue;
                }
            };
            return Seen {
                state,
                first_change,
            };
        }
        Seen {
            state: Start::Unknown,
            first_change,
        }
    }
}

/// Parses `vfio-msi[N](BDF)`, `vfio-msix[N](BDF)`, `vfio-intx(BDF)` (the names
/// drivers/vfio/pci/vfio_pci_intrs.c gives its handlers).
pub fn parse_irq_name(name: &str) -> Option<(IrqKind, u32, String)> {
    let rest = name.strip_prefix("vfio-")?;
    let (kind, rest) = if let Some(r) = rest.strip_prefix("msix") {
        (IrqKind::Msix, r)
    } else if let Some(r) = rest.strip_prefix("msi") {
        (IrqKind::Msi, r)
    } else if let Some(r) = rest.strip_prefix("intx") {
        (IrqKind::Intx, r)
    } else {
        return None;
    };
    let (vector, rest) = match rest.strip_prefix('[') {
        Some(r) => {
            let (n, r) = r.split_once(']')?;
            (n.parse().ok()?, r)
        }
        None => (0, rest),
    };
    let dev = rest.strip_prefix('(')?.split(')').next()?;
    if dev.is_empty() {
        return None;
    }
    Some((kind, vector, dev.to_owned()))
}

/// `VFIO_IRQ_SET_*` flags in words (include/uapi/linux/vfio.h).
fn irq_set_action(flags: u32) -> String {
    let data = match flags & 0x7 {
        1 => "none",
        2 => "bool",
        4 => "eventfd",
        _ => "?",
    };
    let action = match flags & 0x38 {
        0x08 => "mask",
        0x10 => "unmask",
        0x20 => "trigger",
        _ => "?",
    };
    format!("{action}/{data}")
}

/// The handler name of interrupt `irq` from /proc/interrupts (last column).
fn irq_name(irq: i32) -> Option<String> {
    let text = std::fs::read_to_string("/proc/interrupts").ok()?;
    let key = format!("{irq}:");
    text.lines()
        .find(|l| l.trim_start().starts_with(&key))
        .and_then(|l| l.split_whitespace().last().map(str::to_owned))
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as u64 } else { 4096 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe_common::abi::{EventHeader, EventKind as K, PAYLOAD_LEN};

    fn hdr(kind: K, t: u64, pid: u32, tid: u32) -> EventHeader {
        EventHeader {
            kind: kind as u32,
            size: 0,
            ts_ns: t,
            pid,
            tid,
        }
    }

    fn payload(words: &[u32]) -> ([u8; PAYLOAD_LEN], u32) {
        let mut p = [0u8; PAYLOAD_LEN];
        for (i, w) in words.iter().enumerate() {
            p[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        (p, (words.len() * 4) as u32)
    }

    fn call(t: u64, pid: u32, fd: i32, cmd: u32, words: &[u32]) -> Record {
        let (payload, payload_len) = payload(words);
        Record::IoctlCall(IoctlCall {
            hdr: hdr(K::IoctlCall, t, pid, pid),
            fd,
            cmd,
            arg: 0x1000,
            payload_len,
            _pad: 0,
            payload,
        })
    }

    fn ret(t: u64, pid: u32, fd: i32, cmd: u32, r: i64, words: &[u32]) -> Record {
        let (payload, payload_len) = payload(words);
        Record::IoctlRet(IoctlRet {
            hdr: hdr(K::IoctlRet, t, pid, pid),
            fd,
            cmd,
            ret: r,
            enter_ns: 0,
            payload_len,
            _pad: 0,
            payload,
        })
    }

    fn name_ret(t: u64, pid: u32, group_fd: i32, dev_fd: i64, name: &str) -> Record {
        let mut payload = [0u8; PAYLOAD_LEN];
        payload[..name.len()].copy_from_slice(name.as_bytes());
        Record::IoctlRet(IoctlRet {
            hdr: hdr(K::IoctlRet, t, pid, pid),
            fd: group_fd,
            cmd: ioctl::GROUP_GET_DEVICE_FD,
            ret: dev_fd,
            enter_ns: 0,
            payload_len: name.len() as u32 + 1,
            _pad: 0,
            payload,
        })
    }

    fn open(t: u64, pid: u32, fd: i32, kind: u32, path: &str) -> Record {
        let mut p = [0u8; 64];
        p[..path.len()].copy_from_slice(path.as_bytes());
        Record::VfioOpen(VfioOpen {
            hdr: hdr(K::VfioOpen, t, pid, pid),
            fd,
            fd_kind: kind,
            path: p,
        })
    }

    fn no_query() -> FlagQuery {
        Box::new(|_, _| Err("test".to_owned()))
    }

    fn no_resolve() -> FdResolver {
        Box::new(|_, _| None)
    }

    // ---- devices held before recording started (attach) ---------------------------------

    use super::super::attach::{Answers, Host};
    use super::super::procfs::{PciId, Roots};
    use crate::vfio::sys::Dependent;

    const EDU: PciId = PciId {
        vendor: 0x1234,
        device: 0x11e8,
        subsystem_vendor: 0x1af4,
        subsystem_device: 0x1100,
        class: 0x00ff00,
        revision: 0x10,
    };

    /// A /proc and /sys tree standing in for the host's.
    struct Tree(tempfile::TempDir);

    impl Tree {
        fn new() -> Self {
            Tree(tempfile::tempdir().expect("tempdir"))
        }
        fn roots(&self) -> Roots {
            Roots {
                proc: self.0.path().join("proc"),
                sys: self.0.path().join("sys"),
            }
        }
        fn fd(&self, pid: u32, fd: i32, link: &str) -> &Self {
            let dir = self.0.path().join(format!("proc/{pid}/fd"));
            std::fs::create_dir_all(&dir).expect("mkdir");
            std::os::unix::fs::symlink(link, dir.join(fd.to_string())).expect("symlink");
            self
        }
        fn group(&self, group: u32, devs: &[&str]) -> &Self {
            for d in devs {
                let p = format!("sys/kernel/iommu_groups/{group}/devices/{d}");
                std::fs::create_dir_all(self.0.path().join(p)).expect("mkdir");
            }
            self
        }
        fn pci(&self, bdf: &str, id: PciId, driver: &str) -> &Self {
            let dir = self.0.path().join(format!("sys/bus/pci/devices/{bdf}"));
            std::fs::create_dir_all(&dir).expect("mkdir");
            for (name, v) in [
                ("vendor", format!("0x{:04x}", id.vendor)),
                ("device", format!("0x{:04x}", id.device)),
                ("subsystem_vendor", format!("0x{:04x}", id.subsystem_vendor)),
                ("subsystem_device", format!("0x{:04x}", id.subsystem_device)),
                ("class", format!("0x{:06x}", id.class)),
                ("revision", format!("0x{:02x}", id.revision)),
            ] {
                std::fs::write(dir.join(name), format!("{v}\n")).expect("write");
            }
            std::os::unix::fs::symlink(
                format!("../../../bus/pci/drivers/{driver}"),
                dir.join("driver"),
            )
            .expect("symlink");
            self
        }
        fn file(&self, rel: &str, text: &str) -> &Self {
            let p = self.0.path().join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
            self
        }
        /// The seeds a scan of these processes finds.
        fn seeds(&self, pids: &[u32]) -> Vec<SeedFd> {
            procfs::scan_in(&self.roots(), Some(pids))
        }
    }

    fn answers(
        hot_reset: Result<&[&str], i32>,
        config: PciId,
        flags: u32,
        state: Result<MigState, &str>,
        at: u64,
    ) -> Answers {
        Answers {
            hot_reset: hot_reset
                .map(|v| {
                    v.iter()
                        .map(|b| Dependent {
                            bdf: (*b).to_owned(),
                            group_id: 0,
                        })
                        .collect()
                })
                .map_err(crate::vfio::errno_name),
            config: Ok(config),
            flags: Ok(MigFlags(flags)),
            state: state.map_err(str::to_owned),
            at,
        }
    }

    /// An attributor whose /proc, /sys and kernel are `tree` and `asked`.
    fn attached(tree: &Tree, asked: Vec<((u32, i32), Answers)>) -> Attributor {
        let asked: HashMap<(u32, i32), Answers> = asked.into_iter().collect();
        let ask: attach::Ask = Box::new(move |pid, fd| {
            asked
                .get(&(pid, fd))
                .cloned()
                .ok_or_else(|| format!("pidfd_getfd of fd {fd} of pid {pid}: EPERM"))
        });
        let roots = tree.roots();
        let resolve_roots = roots.clone();
        Attributor::with_hooks(
            None,
            true,
            Box::new(|_, _| panic!("flags come from the attach answers")),
            Box::new(move |pid, fd| procfs::resolve_fd_in(&resolve_roots, pid, fd)),
        )
        .with_host(Host::new(roots, ask))
    }

    /// Process `pid` holding IOMMU group 12 (`0000:00:02.0` alone, on a root bus: no hot
    /// reset) and the device as fd 7; the kernel answers `state` (read at `at`) through a
    /// duplicate, or refuses one.
    fn one_device(pid: u32, state: Option<(MigState, u64)>) -> (Tree, Attributor) {
        let t = Tree::new();
        t.fd(pid, 4, "/dev/vfio/12")
            .fd(pid, 7, "anon_inode:[vfio-device]")
            .group(12, &["0000:00:02.0"]);
        let asked = state
            .map(|(s, at)| ((pid, 7), answers(Err(libc::ENODEV), EDU, 3, Ok(s), at)))
            .into_iter()
            .collect();
        let a = attached(&t, asked);
        (t, a)
    }

    /// One traced `vfio_mig_get_next_state` arc `cur -> next` toward `new`.
    fn step_rec(t: u64, pid: u32, cur: u32, new: u32, next: u32) -> Record {
        Record::Step(Step {
            hdr: hdr(K::Step, t, pid, pid),
            vdev: 9,
            cur,
            new,
            next,
            ret: 0,
            hook: 2,
            has_next: 1,
        })
    }

    fn irq_rec(t: u64, bdf: &str) -> Record {
        let mut name = [0u8; 32];
        let s = format!("vfio-msi[0]({bdf})");
        name[..s.len()].copy_from_slice(s.as_bytes());
        Record::Irq(Irq {
            hdr: hdr(K::Irq, t, 0, 0),
            irq: 30,
            _pad: 0,
            name,
        })
    }

    /// A `device` event's fields.
    struct Decl {
        dev: String,
        ctx: String,
        state: MigState,
        sources: BTreeMap<String, String>,
    }

    /// Every `device` event, in order.
    fn declarations(evs: &[Event]) -> Vec<Decl> {
        evs.iter()
            .filter_map(|e| match &e.kind {
                EventKind::Device {
                    dev,
                    ctx,
                    state,
                    sources,
                    ..
                } => Some(Decl {
                    dev: dev.clone(),
                    ctx: ctx.clone(),
                    state: *state,
                    sources: sources.clone(),
                }),
                _ => None,
            })
            .collect()
    }

    fn devs_named(evs: &[Event]) -> Vec<String> {
        evs.iter()
            .filter_map(|e| e.kind.dev().map(str::to_owned))
            .collect()
    }

    #[test]
    fn held_devices_are_declared_at_attach_with_the_kernels_flags_and_state() {
        // A 6.1/6.12 process on a root bus: no syspath in fdinfo, no hot reset (ENODEV), one
        // group with one device. It is in STOP_COPY when recording starts.
        let t = Tree::new();
        t.fd(40, 3, "/dev/vfio/vfio")
            .fd(40, 4, "/dev/vfio/12")
            .fd(40, 7, "anon_inode:[vfio-device]")
            .group(12, &["0000:00:02.0"])
            .pci("0000:00:02.0", EDU, "edu_mig");
        let mut a = attached(
            &t,
            vec![(
                (40, 7),
                answers(Err(libc::ENODEV), EDU, 3, Ok(MigState::StopCopy), 50),
            )],
        );
        a.attach(10, &t.seeds(&[40]));
        // Nothing leaves before every record up to the state read is in.
        assert!(a.release(Some(40)).is_empty());
        a.push(&irq_rec(60, "0000:00:02.0"));
        a.push(&call(
            70,
            40,
            7,
            ioctl::DEVICE_FEATURE,
            &[16, SET_STATE, 1, 0],
        ));
        a.push(&step_rec(71, 40, 3, 1, 1));
        let evs = a.release(None);
        let kinds: Vec<&str> = evs.iter().map(|e| e.kind.ev()).collect();
        assert_eq!(kinds, ["mark", "device", "irq", "set", "step"]);
        assert_eq!((evs[0].t, evs[1].t), (10, 10), "declared at the attach");
        let EventKind::Mark { label } = &evs[0].kind else {
            unreachable!()
        };
        assert!(
            label.starts_with("attach: fd 7 of pid 40 is 0000:00:02.0 (groups it holds")
                && label.contains("ENODEV")
                && label.ends_with("state STOP_COPY read through a duplicate of its user's fd (VFIO_DEVICE_FEATURE GET)"),
            "{label}"
        );
        assert_eq!(
            evs[1].kind,
            EventKind::Device {
                dev: "0000:00:02.0".into(),
                flags: MigFlags(3),
                ctx: "pid40".into(),
                state: MigState::StopCopy,
                driver: Some("edu_mig".into()),
                sources: Default::default(),
            }
        );
        assert!(devs_named(&evs).iter().all(|d| d == "0000:00:02.0"));
    }

    #[test]
    fn a_held_device_is_declared_even_if_nothing_happens_to_it() {
        let (t, mut a) = one_device(40, Some((MigState::Running, 5)));
        a.attach(1, &t.seeds(&[40]));
        let d = declarations(&a.release(None));
        assert_eq!(d.len(), 1);
        assert_eq!(
            (d[0].dev.as_str(), d[0].state),
            ("0000:00:02.0", MigState::Running)
        );
    }

    #[test]
    fn two_devices_behind_root_ports_are_told_apart_by_hot_reset_info() {
        // The old rule (the only device of the process's groups) cannot name either fd.
        let t = Tree::new();
        t.fd(41, 3, "/dev/vfio/vfio")
            .fd(41, 4, "/dev/vfio/5")
            .fd(41, 5, "/dev/vfio/6")
            .fd(41, 8, "anon_inode:[vfio-device]")
            .fd(41, 9, "anon_inode:[vfio-device]")
            .group(5, &["0000:01:00.0"])
            .group(6, &["0000:02:00.0"])
            .pci("0000:01:00.0", EDU, "edu_mig")
            .pci("0000:02:00.0", EDU, "edu_mig");
        let mut a = attached(
            &t,
            vec![
                (
                    (41, 8),
                    answers(Ok(&["0000:02:00.0"]), EDU, 3, Ok(MigState::Running), 20),
                ),
                (
                    (41, 9),
                    answers(Ok(&["0000:01:00.0"]), EDU, 3, Ok(MigState::Running), 21),
                ),
            ],
        );
        a.attach(10, &t.seeds(&[41]));
        for (t, fd) in [(30, 8), (31, 9)] {
            a.push(&call(
                t,
                41,
                fd,
                ioctl::DEVICE_FEATURE,
                &[16, SET_STATE, 5, 0],
            ));
        }
        a.push(&irq_rec(32, "0000:01:00.0"));
        a.push(&irq_rec(33, "0000:02:00.0"));
        let evs = a.release(None);
        let d = declarations(&evs);
        assert_eq!(
            d.iter()
                .map(|x| (x.dev.as_str(), x.ctx.as_str()))
                .collect::<Vec<_>>(),
            [("0000:02:00.0", "pid41"), ("0000:01:00.0", "pid41")]
        );
        let sets: Vec<&str> = evs
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Set { dev, .. } => Some(dev.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(sets, ["0000:02:00.0", "0000:01:00.0"]);
        let irqs = evs.iter().filter(|e| e.kind.ev() == "irq").count();
        assert_eq!(irqs, 2);
        // Two device declarations and nothing else named: no phantom, no fd:N@pid.
        let mut named = devs_named(&evs);
        named.sort();
        named.dedup();
        assert_eq!(named, ["0000:01:00.0", "0000:02:00.0"]);
    }

    #[test]
    fn identical_root_bus_devices_stay_placeholders_and_say_why() {
        let t = Tree::new();
        t.fd(42, 4, "/dev/vfio/2")
            .fd(42, 5, "/dev/vfio/3")
            .fd(42, 8, "anon_inode:[vfio-device]")
            .fd(42, 9, "anon_inode:[vfio-device]")
            .group(2, &["0000:00:02.0"])
            .group(3, &["0000:00:03.0"])
            .pci("0000:00:02.0", EDU, "edu_mig")
            .pci("0000:00:03.0", EDU, "edu_mig");
        let same = answers(Err(libc::ENODEV), EDU, 3, Ok(MigState::Running), 20);
        let mut a = attached(&t, vec![((42, 8), same.clone()), ((42, 9), same)]);
        a.attach(10, &t.seeds(&[42]));
        a.push(&irq_rec(30, "0000:00:02.0"));
        a.push(&irq_rec(31, "0000:00:02.0"));
        a.push(&ret(32, 42, 9, ioctl::DEVICE_RESET, 0, &[]));
        let evs = a.release(None);
        let d = declarations(&evs);
        assert_eq!(
            d.iter().map(|x| x.dev.as_str()).collect::<Vec<_>>(),
            ["fd:8@42", "fd:9@42"]
        );
        for Decl { sources: src, .. } in &d {
            for s in ["irq", "iommu_fault"] {
                let v = &src[s];
                assert!(
                    v.starts_with("unavailable: fd ")
                        && v.contains("0000:00:02.0, 0000:00:03.0")
                        && v.contains("cannot be attributed"),
                    "{s}: {v}"
                );
            }
        }
        // The interrupts are not given to a phantom 0000:00:02.0: one note, no irq event.
        assert_eq!(evs.iter().filter(|e| e.kind.ev() == "irq").count(), 0);
        let notes: Vec<&String> = evs
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Mark { label } if label.starts_with("interrupts of") => Some(label),
                _ => None,
            })
            .collect();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("fd:8@42, fd:9@42"), "{}", notes[0]);
        assert!(devs_named(&evs).iter().all(|d| d.starts_with("fd:")));
    }

    #[test]
    fn config_identity_tells_the_functions_of_one_group_apart() {
        let audio = PciId {
            device: 0x22bc,
            class: 0x040300,
            ..EDU
        };
        let t = Tree::new();
        t.fd(43, 4, "/dev/vfio/7")
            .fd(43, 8, "anon_inode:[vfio-device]")
            .group(7, &["0000:03:00.0", "0000:03:00.1"])
            .pci("0000:03:00.0", EDU, "vfio-pci")
            .pci("0000:03:00.1", audio, "vfio-pci");
        let mut a = attached(
            &t,
            vec![(
                (43, 8),
                answers(
                    Ok(&["0000:03:00.0", "0000:03:00.1"]),
                    audio,
                    1,
                    Ok(MigState::Running),
                    20,
                ),
            )],
        );
        a.attach(10, &t.seeds(&[43]));
        let d = declarations(&a.release(None));
        assert_eq!(d[0].dev, "0000:03:00.1");
    }

    #[test]
    fn a_change_recorded_before_the_state_read_wins_over_it() {
        // The process finished RUNNING_P2P -> STOP between the attach (10) and the read (50).
        let (t, mut a) = one_device(44, Some((MigState::Stop, 50)));
        a.attach(10, &t.seeds(&[44]));
        a.push(&call(
            20,
            44,
            7,
            ioctl::DEVICE_FEATURE,
            &[16, SET_STATE, 1, 0],
        ));
        a.push(&step_rec(21, 44, 5, 1, 1));
        a.push(&ret(
            22,
            44,
            7,
            ioctl::DEVICE_FEATURE,
            0,
            &[16, SET_STATE, 1, 0],
        ));
        let d = declarations(&a.release(None));
        assert_eq!(d[0].state, MigState::RunningP2p);
        assert!(d[0].sources.is_empty(), "{:?}", d[0].sources);
    }

    #[test]
    fn what_the_kernel_would_not_say_is_declared_unknown_not_guessed() {
        // No duplicate (e.g. no ptrace rights): named from its only group, flags and state
        // unknown, said so, never RUNNING/STOP_COPY-only as facts.
        let (t, mut a) = one_device(45, None);
        a.attach(10, &t.seeds(&[45]));
        a.push(&call(
            30,
            45,
            7,
            ioctl::DEVICE_FEATURE,
            &[16, SET_STATE, 2, 0],
        ));
        a.push(&ret(
            31,
            45,
            7,
            ioctl::DEVICE_FEATURE,
            0,
            &[16, SET_STATE, 2, 0],
        ));
        let evs = a.release(None);
        let d = declarations(&evs);
        assert_eq!(d[0].dev, "0000:00:02.0");
        let why = &d[0].sources["transitions"];
        assert!(
            why.starts_with("unavailable: migration flags unknown (pidfd_getfd")
                && why.contains("; state when recording began unknown (pidfd_getfd"),
            "{why}"
        );
        let marks: Vec<&String> = evs
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Mark { label } => Some(label),
                _ => None,
            })
            .collect();
        assert!(
            marks
                .iter()
                .any(|m| m.contains("migration flags of 0000:00:02.0 unknown"))
        );
        assert!(
            marks
                .iter()
                .any(|m| m.contains("state of 0000:00:02.0 when recording began unknown"))
        );
    }

    #[test]
    fn a_closed_fd_is_forgotten_and_its_number_may_be_another_device() {
        let (t, mut a) = one_device(46, Some((MigState::Running, 5)));
        let seeds = t.seeds(&[46]);
        a.attach(1, &seeds);
        // Every fd learned from /proc goes to the probe's fd map, so its close is seen.
        let mut learned = a.take_learned();
        learned.sort_unstable();
        assert_eq!(learned, [(46, 4, fd_kind::GROUP), (46, 7, fd_kind::DEVICE)]);
        a.push(&Record::FdClose(probe_common::abi::FdClose {
            hdr: hdr(K::FdClose, 10, 46, 46),
            fd: 7,
            fd_kind: fd_kind::DEVICE,
        }));
        // The number comes back as a cdev of another device (opened in a way not traced).
        let t2 = t.0.path().join("proc/46/fd/7");
        std::fs::remove_file(&t2).expect("rm");
        std::os::unix::fs::symlink("/dev/vfio/devices/vfio3", &t2).expect("symlink");
        std::fs::create_dir_all(t.0.path().join("sys/class/vfio-dev/vfio3")).expect("mkdir");
        std::os::unix::fs::symlink(
            "../../../devices/pci0000:00/0000:00:05.0",
            t.0.path().join("sys/class/vfio-dev/vfio3/device"),
        )
        .expect("symlink");
        a.push(&ret(20, 46, 7, ioctl::DEVICE_RESET, 0, &[]));
        let evs = a.release(None);
        let resets: Vec<&str> = evs
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Reset { dev, .. } => Some(dev.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(resets, ["0000:00:05.0"]);
        assert_eq!(a.take_learned(), [(46, 7, fd_kind::CDEV)]);
    }

    #[test]
    fn ctx_is_the_process_whether_its_devices_were_seen_opened_or_found_open() {
        // Seen opened: container, group attached to it, device fd.
        let mut seen = Attributor::with_hooks(None, true, no_query(), no_resolve());
        seen.push(&open(1, 9, 3, fd_kind::CONTAINER, "/dev/vfio/vfio"));
        seen.push(&open(2, 9, 4, fd_kind::GROUP, "/dev/vfio/12"));
        seen.push(&ret(3, 9, 4, ioctl::GROUP_SET_CONTAINER, 0, &[3]));
        seen.push(&name_ret(4, 9, 4, 6, "0000:00:02.0"));
        seen.push(&ret(5, 9, 6, ioctl::DEVICE_RESET, 0, &[]));
        seen.push(&ret(
            6,
            9,
            3,
            ioctl::IOMMU_MAP_DMA,
            0,
            &[32, 3, 0x1000, 0, 0x10_0000, 0, 0x1000, 0],
        ));
        // Found open by attach.
        let t = Tree::new();
        t.fd(9, 3, "/dev/vfio/vfio")
            .fd(9, 4, "/dev/vfio/12")
            .fd(9, 6, "anon_inode:[vfio-device]")
            .group(12, &["0000:00:02.0"]);
        let mut late = attached(
            &t,
            vec![(
                (9, 6),
                answers(Err(libc::ENODEV), EDU, 3, Ok(MigState::Running), 5),
            )],
        );
        late.attach(1, &t.seeds(&[9]));
        late.push(&ret(
            6,
            9,
            3,
            ioctl::IOMMU_MAP_DMA,
            0,
            &[32, 3, 0x1000, 0, 0x10_0000, 0, 0x1000, 0],
        ));
        let ctxs = |evs: Vec<Event>| -> Vec<(String, String)> {
            evs.into_iter()
                .filter_map(|e| match e.kind {
                    EventKind::Device { ctx, .. } => Some(("device".into(), ctx)),
                    EventKind::Map { ctx, .. } => Some(("map".into(), ctx)),
                    _ => None,
                })
                .collect()
        };
        let want = vec![
            ("device".to_owned(), "pid9".to_owned()),
            ("map".to_owned(), "pid9".to_owned()),
        ];
        assert_eq!(ctxs(seen.release(None)), want);
        assert_eq!(ctxs(late.release(None)), want);
    }

    #[test]
    fn devices_of_a_kvm_vm_that_can_post_say_their_interrupts_are_unseen() {
        let t = Tree::new();
        t.fd(47, 4, "/dev/vfio/12")
            .fd(47, 7, "anon_inode:[vfio-device]")
            .fd(47, 11, "anon_inode:kvm-vm")
            .group(12, &["0000:00:02.0"])
            .fd(48, 4, "/dev/vfio/13")
            .fd(48, 7, "anon_inode:[vfio-device]")
            .group(13, &["0000:00:03.0"])
            .file("sys/module/kvm/parameters/enable_device_posted_irqs", "Y\n");
        let running = answers(Err(libc::ENODEV), EDU, 3, Ok(MigState::Running), 5);
        let mut a = attached(&t, vec![((47, 7), running.clone()), ((48, 7), running)]);
        a.attach(1, &t.seeds(&[47, 48]));
        let d = declarations(&a.release(None));
        assert_eq!(d.len(), 2);
        let posted = d[0].sources.get("irq").expect("irq override");
        assert!(
            posted.starts_with("unavailable: interrupts posted to the guest ("),
            "{posted}"
        );
        // No KVM VM in process 48: its interrupts run the host handler.
        assert_eq!(d[1].dev, "0000:00:03.0");
        assert!(!d[1].sources.contains_key("irq"));
    }

    #[test]
    fn migscopes_own_questions_are_not_recorded() {
        let me = std::process::id();
        attach::remember_own_for_test(4321, 100, 200);
        let mut a = Attributor::with_hooks(None, true, no_query(), no_resolve());
        a.push(&call(
            150,
            me,
            4321,
            ioctl::DEVICE_FEATURE,
            &[16, feature::GET | 2, 0, 0],
        ));
        a.push(&ret(
            151,
            me,
            4321,
            ioctl::DEVICE_FEATURE,
            0,
            &[16, feature::GET | 2, 3, 0],
        ));
        assert!(a.release(None).is_empty());
        // The same fd number outside the question's window is the process's own again.
        a.push(&ret(
            300,
            me,
            4321,
            ioctl::DEVICE_FEATURE,
            0,
            &[16, feature::GET | 2, 3, 0],
        ));
        assert!(a.release(None).iter().any(|e| e.kind.ev() == "get"));
    }

    #[test]
    fn fds_never_seen_opened_are_resolved() {
        let mut a = Attributor::with_hooks(
            None,
            true,
            no_query(),
            Box::new(|pid, fd| {
                (fd == 9).then(|| SeedFd {
                    pid,
                    fd,
                    kind: fd_kind::DEVICE,
                    dev: Some("0000:7f:05.0".into()),
                    group_devs: vec!["0000:7f:05.0".into()],
                })
            }),
        );
        a.push(&call(
            1,
            30,
            9,
            ioctl::DEVICE_FEATURE,
            &[16, SET_STATE, 1, 0],
        ));
        a.push(&call(
            2,
            30,
            8,
            ioctl::DEVICE_FEATURE,
            &[16, SET_STATE, 1, 0],
        ));
        let devs: Vec<String> = a
            .release(None)
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Set { dev, .. } => Some(dev.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(devs, ["0000:7f:05.0", "fd:8@30"]);
    }

    const SET_STATE: u32 = feature::SET | feature::MIG_DEVICE_STATE;
    const GET_MIGRATION: u32 = feature::GET | feature::MIGRATION;

    #[test]
    fn set_on_unknown_fd_is_named_fd_at_pid() {
        let mut a = Attributor::with_hooks(None, true, no_query(), no_resolve());
        a.push(&call(
            10,
            50,
            7,
            ioctl::DEVICE_FEATURE,
            &[16, SET_STATE, 5, 0],
        ));
        a.push(&ret(
            20,
            50,
            7,
            ioctl::DEVICE_FEATURE,
            -25,
            &[16, SET_STATE, 5, 0],
        ));
        let evs = a.release(None);
        let kinds: Vec<&str> = evs.iter().map(|e| e.kind.ev()).collect();
        // Neither its flags nor where it started are known: two marks, never a guess.
        assert_eq!(kinds, ["mark", "mark", "device", "set", "set_done"]);
        assert_eq!(
            evs[3].kind,
            EventKind::Set {
                dev: "fd:7@50".into(),
                to: MigState::RunningP2p
            }
        );
        assert_eq!(
            evs[4].kind,
            EventKind::SetDone {
                dev: "fd:7@50".into(),
                to: MigState::RunningP2p,
                ret: -25,
                data_fd: None
            }
        );
        assert_eq!(evs[4].pid, Some(50));
    }

    #[test]
    fn a_data_fd_carries_the_reset_generation_it_was_returned_in() {
        let mut a = Attributor::with_hooks(None, true, no_query(), no_resolve());
        a.push(&open(1, 9, 4, fd_kind::GROUP, "/dev/vfio/12"));
        a.push(&name_ret(2, 9, 4, 6, "0000:7f:1f.7"));
        a.push(&call(
            3,
            9,
            6,
            ioctl::DEVICE_FEATURE,
            &[16, SET_STATE, 3, 0],
        ));
        a.push(&ret(
            4,
            9,
            6,
            ioctl::DEVICE_FEATURE,
            0,
            &[16, SET_STATE, 3, 8],
        ));
        let xfer = |t| {
            Record::DataXfer(DataXfer {
                hdr: hdr(K::DataXfer, t, 9, 9),
                fd: 8,
                dir: 0,
                ret: 16,
            })
        };
        a.push(&xfer(5));
        // A failed reset changes nothing; a successful one starts generation 1.
        a.push(&ret(6, 9, 6, ioctl::DEVICE_RESET, -5, &[]));
        a.push(&xfer(7));
        a.push(&ret(8, 9, 6, ioctl::DEVICE_RESET, 0, &[]));
        a.push(&xfer(9));
        // A file returned after the reset is of generation 1.
        a.push(&call(
            10,
            9,
            6,
            ioctl::DEVICE_FEATURE,
            &[16, SET_STATE, 3, 0],
        ));
        a.push(&ret(
            11,
            9,
            6,
            ioctl::DEVICE_FEATURE,
            0,
            &[16, SET_STATE, 3, 8],
        ));
        a.push(&xfer(12));
        let files: Vec<DataFile> = a
            .release(None)
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::Data { file, .. } => file,
                _ => None,
            })
            .collect();
        let f = |fd_gen, reset_gen| DataFile {
            fd: 8,
            fd_gen,
            reset_gen,
        };
        assert_eq!(files, [f(0, 0), f(0, 0), f(0, 1), f(1, 1)]);
    }

    #[test]
    fn group_device_flags_context_steps_and_data() {
        let mut a = Attributor::with_hooks(None, true, no_query(), no_resolve());
        a.push(&open(1, 9, 3, fd_kind::CONTAINER, "/dev/vfio/vfio"));
        a.push(&open(2, 9, 4, fd_kind::GROUP, "/dev/vfio/12"));
        a.push(&call(3, 9, 4, ioctl::GROUP_SET_CONTAINER, &[3]));
        a.push(&ret(4, 9, 4, ioctl::GROUP_SET_CONTAINER, 0, &[3]));
        a.push(&name_ret(5, 9, 4, 6, "0000:7f:1f.7"));
        a.push(&ret(
            6,
            9,
            6,
            ioctl::DEVICE_FEATURE,
            0,
            &[16, GET_MIGRATION, 3, 0],
        ));
        // 0x3B75 on the container is DIRTY_PAGES, even with a SET's payload: a note at most.
        a.push(&ret(
            7,
            9,
            3,
            ioctl::DEVICE_FEATURE,
            -22,
            &[16, SET_STATE, 1, 0],
        ));
        a.push(&call(
            8,
            9,
            6,
            ioctl::DEVICE_FEATURE,
            &[16, SET_STATE, 3, 0],
        ));
        for (t, cur, next) in [(9, 2, 5), (10, 5, 1), (11, 1, 3)] {
            a.push(&Record::Step(Step {
                hdr: hdr(K::Step, t, 9, 9),
                vdev: 0xffff_8880_0000_1000,
                cur,
                new: 3,
                next,
                ret: 0,
                hook: 2,
                has_next: 1,
            }));
        }
        a.push(&ret(
            12,
            9,
            6,
            ioctl::DEVICE_FEATURE,
            0,
            &[16, SET_STATE, 3, 8],
        ));
        a.push(&Record::DataXfer(DataXfer {
            hdr: hdr(K::DataXfer, 13, 9, 9),
            fd: 8,
            dir: 0,
            ret: 4096,
        }));
        a.push(&ret(
            14,
            9,
            3,
            ioctl::IOMMU_MAP_DMA,
            0,
            &[32, 3, 0x1000, 0, 0x10_0000, 0, 0x2000, 0],
        ));
        let mut evs = a.release(None);
        assert_eq!(
            evs.remove(0).kind,
            EventKind::Mark {
                label: "dirty_pages flags 0x20002 pid9 ret=-22".into()
            }
        );
        let kinds: Vec<&str> = evs.iter().map(|e| e.kind.ev()).collect();
        assert_eq!(
            kinds,
            [
                "device", "set", "step", "step", "step", "set_done", "data", "map"
            ]
        );
        assert_eq!(
            evs[0].kind,
            EventKind::Device {
                dev: "0000:7f:1f.7".into(),
                flags: MigFlags(3),
                ctx: "pid9".into(),
                state: MigState::Running,
                driver: None,
                sources: Default::default(),
            }
        );
        assert_eq!(
            evs[4].kind,
            EventKind::Step {
                dev: "0000:7f:1f.7".into(),
                from: MigState::Stop,
                to: MigState::StopCopy
            }
        );
        assert_eq!(
            evs[5].kind,
            EventKind::SetDone {
                dev: "0000:7f:1f.7".into(),
                to: MigState::StopCopy,
                ret: 0,
                data_fd: Some(8)
            }
        );
        assert_eq!(
            evs[6].kind,
            EventKind::Data {
                dev: "0000:7f:1f.7".into(),
                dir: DataDir::Save,
                bytes: 4096,
                file: Some(DataFile {
                    fd: 8,
                    fd_gen: 0,
                    reset_gen: 0
                })
            }
        );
        assert_eq!(
            evs[7].kind,
            EventKind::Map {
                ctx: "pid9".into(),
                iova: 0x10_0000,
                len: 0x2000
            }
        );
    }

    #[test]
    fn unseen_flags_are_asked_and_declared_fds_named() {
        let mut a = Attributor::with_hooks(
            None,
            true,
            Box::new(|pid, fd| {
                assert_eq!((pid, fd), (77, 9));
                Ok(MigFlags::STOP_COPY | MigFlags::P2P)
            }),
            no_resolve(),
        );
        a.push(&call(
            1,
            77,
            9,
            ioctl::DEVICE_FEATURE,
            &[16, SET_STATE, 5, 0],
        ));
        a.declare_fd(77, 12, "0000:7f:00.1", "drive", Some(MigFlags(7)));
        a.push(&call(
            2,
            77,
            12,
            ioctl::DEVICE_FEATURE,
            &[16, SET_STATE, 1, 0],
        ));
        let evs = a.release(None);
        let kinds: Vec<&str> = evs.iter().map(|e| e.kind.ev()).collect();
        // fd 9 was never seen opened and its SET's steps were not traced: its state is unknown
        // (a mark says so); the declared fd's opener vouches for it.
        assert_eq!(kinds, ["mark", "device", "set", "device", "set"]);
        assert!(matches!(&evs[1].kind,
            EventKind::Device { dev, flags, sources, .. } if dev == "fd:9@77"
                && *flags == MigFlags(3)
                && sources["transitions"].starts_with("unavailable: state when recording began unknown")));
        assert!(matches!(&evs[3].kind,
            EventKind::Device { dev, flags, ctx, sources, .. }
                if dev == "0000:7f:00.1" && *flags == MigFlags(7) && ctx == "drive"
                    && sources.is_empty()));
    }

    #[test]
    fn iommu_tracepoints_fold_into_map_dma_and_attribute_the_rest() {
        let mut a = Attributor::with_hooks(None, true, no_query(), no_resolve());
        a.push(&open(1, 4, 3, fd_kind::CONTAINER, "/dev/vfio/vfio"));
        a.push(&open(2, 4, 5, fd_kind::IOMMUFD, "/dev/iommu"));
        let map = |t, fd, cmd| {
            Record::IommuMap(IommuMap {
                hdr: hdr(K::IommuMap, t, 4, 4),
                iova: 0x1000,
                paddr: 0x9000,
                size: 0x1000,
                fd,
                cmd,
            })
        };
        // Inside MAP_DMA on the container: the ioctl's own `map` covers it.
        a.push(&map(3, 3, ioctl::IOMMU_MAP_DMA));
        // Inside an iommufd IOAS_MAP (0x3B85): kept, in the iommufd's context.
        a.push(&map(4, 5, 0x3B85));
        a.push(&Record::IommuUnmap(IommuUnmap {
            hdr: hdr(K::IommuUnmap, 5, 4, 4),
            iova: 0x1000,
            size: 0x1000,
            unmapped: 0x1000,
            fd: 5,
            cmd: 0x3B86,
        }));
        let evs = a.release(None);
        assert_eq!(
            evs.iter().map(|e| e.kind.clone()).collect::<Vec<_>>(),
            vec![
                EventKind::Map {
                    ctx: "pid4".into(),
                    iova: 0x1000,
                    len: 0x1000
                },
                EventKind::Unmap {
                    ctx: "pid4".into(),
                    iova: 0x1000,
                    len: 0x1000
                },
            ]
        );
    }

    #[test]
    fn faults_irqs_and_mdev_dma_go_to_the_owner() {
        let mut a = Attributor::with_hooks(None, true, no_query(), no_resolve());
        a.push(&name_ret(1, 6, 4, 7, "0000:7f:02.0"));
        // A step during an ioctl on fd 7 teaches which vfio_device pointer is this device.
        a.push(&call(
            2,
            6,
            7,
            ioctl::DEVICE_FEATURE,
            &[16, SET_STATE, 5, 0],
        ));
        a.push(&Record::Step(Step {
            hdr: hdr(K::Step, 3, 6, 6),
            vdev: 0xabc0,
            cur: 2,
            new: 5,
            next: 5,
            ret: 0,
            hook: 2,
            has_next: 1,
        }));
        let mut dev_name = [0u8; 32];
        dev_name[..12].copy_from_slice(b"0000:7f:02.0");
        a.push(&Record::IommuFault(IommuFault {
            hdr: hdr(K::IommuFault, 4, 0, 0),
            iova: 0x5000,
            flags: 1,
            _pad: 0,
            device: dev_name,
            driver: [0; 32],
        }));
        a.push(&Record::MdevDma(MdevDma {
            hdr: hdr(K::MdevDma, 5, 0, 0),
            vdev: 0xabc0,
            iova: 0x6000,
            len: 64,
            write: 0,
            func: probe_common::abi::MDEV_DMA_RW,
        }));
        let mut irq_name = [0u8; 32];
        irq_name[..25].copy_from_slice(b"vfio-msix[2](0000:7f:02.0");
        irq_name[25] = b')';
        a.push(&Record::Irq(Irq {
            hdr: hdr(K::Irq, 6, 0, 0),
            irq: 40,
            _pad: 0,
            name: irq_name,
        }));
        let evs = a.release(None);
        let dev = "0000:7f:02.0".to_owned();
        let tail: Vec<(Option<u32>, EventKind)> = evs
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Dma { .. } | EventKind::Irq { .. }))
            .map(|e| (e.pid, e.kind.clone()))
            .collect();
        assert_eq!(
            tail,
            vec![
                (
                    Some(6),
                    EventKind::Dma {
                        dev: dev.clone(),
                        src: DmaSource::Fault,
                        iova: 0x5000,
                        len: 0,
                        write: true,
                        window: None,
                        p2p: None
                    }
                ),
                (
                    Some(6),
                    EventKind::Dma {
                        dev: dev.clone(),
                        src: DmaSource::MdevDma,
                        iova: 0x6000,
                        len: 64,
                        write: false,
                        window: None,
                        p2p: None
                    }
                ),
                (
                    Some(6),
                    EventKind::Irq {
                        dev,
                        kind: IrqKind::Msix,
                        vector: 2
                    }
                ),
            ]
        );
    }

    #[test]
    fn forks_of_accepted_processes_are_followed() {
        // No /proc ancestry at all: only the fork records can tell.
        let f = PidFilter::with_parent(&[10], Box::new(|_| None));
        let mut a = Attributor::with_hooks(Some(f), true, no_query(), no_resolve());
        let fork = |t, parent, child| {
            Record::Fork(probe_common::abi::Fork {
                hdr: hdr(K::Fork, t, parent, parent),
                child_pid: child,
                _pad: 0,
            })
        };
        a.push(&fork(1, 10, 11));
        a.push(&fork(2, 11, 12));
        a.push(&fork(3, 99, 13));
        for (t, pid) in [(4, 12), (5, 13)] {
            a.push(&ret(t, pid, 3, ioctl::DEVICE_RESET, 0, &[]));
        }
        let pids: Vec<Option<u32>> = a
            .release(None)
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Reset { .. }))
            .map(|e| e.pid)
            .collect();
        assert_eq!(pids, [Some(12)]);
    }

    #[test]
    fn dead_processes_are_forgotten() {
        let mut a = Attributor::with_hooks(None, true, no_query(), no_resolve());
        a.push(&name_ret(1, 20, 4, 7, "0000:7f:03.0"));
        a.push(&name_ret(2, 21, 4, 7, "0000:7f:04.0"));
        assert_eq!(a.purge_dead(|p| p != 20), vec![(20, 7)]);
        // A new process reusing pid 20 does not inherit the old device fd.
        a.push(&ret(3, 20, 7, ioctl::DEVICE_RESET, 0, &[]));
        let evs = a.release(None);
        assert!(evs.iter().any(|e| e.kind
            == EventKind::Reset {
                dev: "fd:7@20".into(),
                ret: 0
            }));
    }

    #[test]
    fn a_get_after_a_set_says_where_it_went_not_where_it_was() {
        let mut a = Attributor::with_hooks(None, true, Box::new(|_, _| Ok(3)), no_resolve());
        // A SET whose steps and return were not seen, then a GET from another thread.
        a.push(&call(
            1,
            5,
            11,
            ioctl::DEVICE_FEATURE,
            &[16, SET_STATE, 1, 0],
        ));
        a.push(&ret(
            2,
            5,
            11,
            ioctl::DEVICE_FEATURE,
            0,
            &[16, feature::GET | 2, 1, 0],
        ));
        let evs = a.release(None);
        assert!(
            matches!(&evs[1].kind,
            EventKind::Device { state: MigState::Running, sources, .. }
                if sources["transitions"].starts_with("unavailable: state when recording began unknown")),
            "{evs:?}"
        );
    }

    #[test]
    fn devices_met_mid_migration_start_where_the_trace_shows() {
        let mut a = Attributor::with_hooks(None, true, no_query(), no_resolve());
        // fd 7: the first thing seen is a SET whose first arc starts in RUNNING_P2P.
        a.push(&call(
            1,
            5,
            7,
            ioctl::DEVICE_FEATURE,
            &[16, SET_STATE, 1, 0],
        ));
        a.push(&Record::Step(Step {
            hdr: hdr(K::Step, 2, 5, 5),
            vdev: 1,
            cur: 5,
            new: 1,
            next: 1,
            ret: 0,
            hook: 2,
            has_next: 1,
        }));
        // fd 8: a GET says STOP_COPY.
        a.push(&ret(
            3,
            5,
            8,
            ioctl::DEVICE_FEATURE,
            0,
            &[16, feature::GET | 2, 3, 0],
        ));
        // fd 9: a failed SET first leaves the state unknown; a later GET says nothing about
        // the state before it.
        a.push(&ret(
            4,
            5,
            9,
            ioctl::DEVICE_FEATURE,
            -22,
            &[16, SET_STATE, 7, 0],
        ));
        a.push(&ret(
            5,
            5,
            9,
            ioctl::DEVICE_FEATURE,
            0,
            &[16, feature::GET | 2, 1, 0],
        ));
        // fd 10: a successful SET first: the state before it is unknown, RUNNING stays.
        a.push(&ret(
            6,
            5,
            10,
            ioctl::DEVICE_FEATURE,
            0,
            &[16, SET_STATE, 1, 0],
        ));
        a.push(&ret(
            7,
            5,
            10,
            ioctl::DEVICE_FEATURE,
            0,
            &[16, feature::GET | 2, 1, 0],
        ));
        let states: Vec<(String, MigState)> = a
            .release(None)
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::Device { dev, state, .. } => Some((dev, state)),
                _ => None,
            })
            .collect();
        let want = [
            ("fd:7@5", MigState::RunningP2p),
            ("fd:8@5", MigState::StopCopy),
            ("fd:9@5", MigState::Running),
            ("fd:10@5", MigState::Running),
        ]
        .map(|(d, s)| (d.to_owned(), s));
        assert_eq!(states, want);
    }

    /// The two native-endian words of a u64 (payloads are written as u32 words).
    fn w64(v: u64) -> [u32; 2] {
        let b = v.to_ne_bytes();
        [
            u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        ]
    }

    fn words(parts: &[&[u32]]) -> Vec<u32> {
        parts.concat()
    }

    /// A device fd 6 of pid 9 named 0000:7f:00.2, with a PRE_COPY data fd 8.
    fn with_data_fd() -> Attributor {
        let mut a = Attributor::with_hooks(None, true, no_query(), no_resolve());
        a.declare_fd(9, 6, "0000:7f:00.2", "vm", Some(MigFlags(7)));
        a.push(&ret(
            1,
            9,
            6,
            ioctl::DEVICE_FEATURE,
            0,
            &[16, SET_STATE, MigState::PreCopy as u32, 8],
        ));
        a
    }

    #[test]
    fn precopy_info_replies_are_decoded_on_data_fds_only() {
        let mut a = with_data_fd();
        let info = |t, fd, r, initial: u64, dirty: u64, flags| {
            ret(
                t,
                9,
                fd,
                ioctl::MIG_GET_PRECOPY_INFO,
                r,
                &words(&[&[24, flags], &w64(initial), &w64(dirty)]),
            )
        };
        a.push(&info(2, 8, 0, 0x1_0000_0050, 16, 0));
        // flags exactly as the driver returned them, even where the uAPI says 0.
        a.push(&info(3, 8, 0, 0, 0, 1));
        // A failed call copied nothing back: whatever the buffer holds is not a reply.
        a.push(&info(4, 8, -22, 99, 99, 0));
        // The same number on an fd that is not a data fd is not this ioctl.
        a.push(&info(5, 6, 0, 1, 1, 0));
        a.push(&info(6, 11, 0, 1, 1, 0));
        // A short read of the reply (16 of its 24 bytes) is not decoded.
        a.push(&ret(
            7,
            9,
            8,
            ioctl::MIG_GET_PRECOPY_INFO,
            0,
            &[24, 0, 1, 0],
        ));
        let got: Vec<(u64, EventKind)> = a
            .release(None)
            .into_iter()
            .filter(|e| matches!(e.kind, EventKind::PrecopyInfo { .. }))
            .map(|e| (e.t, e.kind))
            .collect();
        let dev = || "0000:7f:00.2".to_owned();
        assert_eq!(
            got,
            vec![
                (
                    2,
                    EventKind::PrecopyInfo {
                        dev: dev(),
                        result: Ok(PrecopyInfo {
                            initial_bytes: 0x1_0000_0050,
                            dirty_bytes: 16,
                            flags: 0
                        })
                    }
                ),
                (
                    3,
                    EventKind::PrecopyInfo {
                        dev: dev(),
                        result: Ok(PrecopyInfo {
                            initial_bytes: 0,
                            dirty_bytes: 0,
                            flags: 1
                        })
                    }
                ),
                (
                    4,
                    EventKind::PrecopyInfo {
                        dev: dev(),
                        result: Err(-22)
                    }
                ),
            ]
        );
    }

    #[test]
    fn mig_data_size_gets_are_decoded() {
        let mut a = with_data_fd();
        let get = feature::GET | uapi::VFIO_DEVICE_FEATURE_MIG_DATA_SIZE;
        a.push(&ret(
            2,
            9,
            6,
            ioctl::DEVICE_FEATURE,
            0,
            &words(&[&[16, get], &w64(1 << 33)]),
        ));
        a.push(&ret(3, 9, 6, ioctl::DEVICE_FEATURE, -25, &[16, get, 7, 7]));
        // A PROBE of the feature, or one without GET, reports no size.
        a.push(&ret(
            4,
            9,
            6,
            ioctl::DEVICE_FEATURE,
            0,
            &[16, get | feature::PROBE, 7, 0],
        ));
        a.push(&ret(
            5,
            9,
            6,
            ioctl::DEVICE_FEATURE,
            0,
            &[16, uapi::VFIO_DEVICE_FEATURE_MIG_DATA_SIZE, 7, 0],
        ));
        // On an fd never seen, the device is named as a SET on it would be.
        a.push(&ret(6, 9, 12, ioctl::DEVICE_FEATURE, 0, &[16, get, 80, 0]));
        let got: Vec<EventKind> = a
            .release(None)
            .into_iter()
            .filter(|e| matches!(e.kind, EventKind::DataSize { .. }))
            .map(|e| e.kind)
            .collect();
        assert_eq!(
            got,
            vec![
                EventKind::DataSize {
                    dev: "0000:7f:00.2".into(),
                    result: Ok(1 << 33)
                },
                EventKind::DataSize {
                    dev: "0000:7f:00.2".into(),
                    result: Err(-25)
                },
                EventKind::DataSize {
                    dev: "fd:12@9".into(),
                    result: Ok(80)
                },
            ]
        );
    }

    #[test]
    fn dirty_tracking_calls_are_notes_with_sizes_never_dma() {
        use uapi::{
            VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP as GET_BITMAP,
            VFIO_IOMMU_DIRTY_PAGES_FLAG_START as START, VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP as STOP,
        };
        let mut a = Attributor::with_hooks(None, true, no_query(), no_resolve());
        a.push(&open(1, 4, 3, fd_kind::CONTAINER, "/dev/vfio/vfio"));
        a.push(&open(1, 4, 5, fd_kind::IOMMUFD, "/dev/iommu"));
        a.declare_fd(4, 6, "0000:7f:00.3", "vm", Some(MigFlags(3)));
        a.push(&ret(2, 4, 3, ioctl::IOMMU_DIRTY_PAGES, 0, &[8, START]));
        // struct vfio_iommu_type1_dirty_bitmap + _get: iova, size, bitmap {pgsize, size, data}.
        a.push(&ret(
            3,
            4,
            3,
            ioctl::IOMMU_DIRTY_PAGES,
            0,
            &words(&[
                &[48, GET_BITMAP],
                &w64(0x10_0000),
                &w64(0x4000_0000),
                &w64(4096),
                &w64(32768),
                &w64(0x7f00_0000),
            ]),
        ));
        a.push(&ret(4, 4, 3, ioctl::IOMMU_DIRTY_PAGES, -22, &[8, STOP]));
        // iommufd: struct iommu_hwpt_set_dirty_tracking / iommu_hwpt_get_dirty_bitmap.
        a.push(&ret(
            5,
            4,
            5,
            iommufd::HWPT_SET_DIRTY_TRACKING,
            0,
            &[16, iommufd::DIRTY_TRACKING_ENABLE, 2, 0],
        ));
        a.push(&ret(
            6,
            4,
            5,
            iommufd::HWPT_GET_DIRTY_BITMAP,
            0,
            &words(&[
                &[48, 2, iommufd::GET_DIRTY_BITMAP_NO_CLEAR, 0],
                &w64(0),
                &w64(0x20_0000),
                &w64(4096),
                &w64(0x7f00_0000),
            ]),
        ));
        // Device DMA logging START (the page size the device chose) and REPORT.
        a.push(&ret(
            7,
            4,
            6,
            ioctl::DEVICE_FEATURE,
            0,
            &words(&[
                &[32, feature::SET | feature::DMA_LOGGING_START],
                &w64(4096),
                &[2, 0],
                &w64(0x7f00_1000),
            ]),
        ));
        a.push(&ret(
            8,
            4,
            6,
            ioctl::DEVICE_FEATURE,
            0,
            &words(&[
                &[40, feature::GET | feature::DMA_LOGGING_REPORT],
                &w64(0x10_0000),
                &w64(0x8000),
                &w64(4096),
                &w64(0x7f00_2000),
            ]),
        ));
        a.push(&ret(
            9,
            4,
            6,
            ioctl::DEVICE_FEATURE,
            0,
            &[8, feature::SET | feature::DMA_LOGGING_STOP],
        ));
        // GET_BITMAP's flag bit on a device fd is another feature, not DIRTY_PAGES.
        a.push(&ret(10, 4, 6, ioctl::DEVICE_FEATURE, 0, &[8, GET_BITMAP]));
        let evs = a.release(None);
        assert!(
            !evs.iter().any(|e| matches!(e.kind, EventKind::Dma { .. })),
            "dirty tracking is never DMA evidence: {evs:#?}"
        );
        let labels: Vec<String> = evs
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::Mark { label } => Some(label),
                _ => None,
            })
            .collect();
        assert_eq!(
            labels,
            [
                "dirty_pages start pid4 ret=0",
                "dirty_pages get_bitmap pid4 iova 0x100000 size 0x40000000 \
                 pgsize 4096 bitmap 32768 bytes ret=0",
                "dirty_pages stop pid4 ret=-22",
                "iommu_hwpt_set_dirty_tracking pid4 hwpt 2 enable ret=0",
                "iommu_hwpt_get_dirty_bitmap pid4 hwpt 2 iova 0x0 length 0x200000 \
                 page_size 4096 no_clear ret=0",
                "dma_logging start 0000:7f:00.3 page_size 4096 ranges 2 ret=0",
                "dma_logging report 0000:7f:00.3 iova 0x100000 length 0x8000 page_size 4096 \
                 ret=0",
                // No bitmap came with the REPORT (no probe chunks): nothing is claimed.
                "dma_logging report 0000:7f:00.3: bitmap of 8 bytes, the probe read 0: \
                 [0x100000, 0x108000) not decoded (not evidence)",
                "dma_logging stop 0000:7f:00.3 ret=0",
            ]
        );
    }

    /// `ret` issued at `enter`.
    fn ret_from(enter: u64, rec: Record) -> Record {
        match rec {
            Record::IoctlRet(mut r) => {
                r.enter_ns = enter;
                Record::IoctlRet(r)
            }
            other => other,
        }
    }

    /// A DMA_LOGGING_START SET of one range at 4 KiB pages.
    fn log_start_words() -> Vec<u32> {
        words(&[
            &[32, feature::SET | feature::DMA_LOGGING_START],
            &w64(4096),
            &[1, 0],
            &w64(0x7f00_1000),
        ])
    }

    fn report_words(iova: u64, len: u64) -> Vec<u32> {
        words(&[
            &[40, feature::GET | feature::DMA_LOGGING_REPORT],
            &w64(iova),
            &w64(len),
            &w64(4096),
            &w64(0x7f00_2000),
        ])
    }

    fn bitmap_chunk(t: u64, pid: u32, enter: u64, bytes: &[u8]) -> Record {
        let mut data = [0u8; probe_common::abi::DIRTY_CHUNK];
        data[..bytes.len()].copy_from_slice(bytes);
        Record::DirtyChunk(Box::new(probe_common::abi::DirtyChunk {
            hdr: hdr(K::DirtyChunk, t, pid, pid),
            fd: 6,
            len: bytes.len() as u32,
            offset: 0,
            enter_ns: enter,
            data,
        }))
    }

    #[test]
    fn the_bitmaps_a_vmm_received_are_dirty_reports_over_their_windows() {
        let mut a = Attributor::with_hooks(None, true, no_query(), no_resolve());
        a.declare_fd(4, 6, "0000:7f:00.3", "vm", Some(MigFlags(3)));
        let start = log_start_words();
        a.push(&ret_from(
            10,
            ret(11, 4, 6, ioctl::DEVICE_FEATURE, 0, &start),
        ));
        // 16 pages from 0x100000; pages 2 and 3 dirty (bits 2, 3 of the first byte).
        a.push(&bitmap_chunk(21, 4, 20, &[0b1100, 0, 0, 0, 0, 0, 0, 0]));
        let rep = report_words(0x10_0000, 0x1_0000);
        a.push(&ret_from(20, ret(22, 4, 6, ioctl::DEVICE_FEATURE, 0, &rep)));
        a.push(&bitmap_chunk(31, 4, 30, &[0; 8]));
        a.push(&ret_from(30, ret(32, 4, 6, ioctl::DEVICE_FEATURE, 0, &rep)));
        let evs: Vec<EventKind> = a
            .release(None)
            .into_iter()
            .map(|e| e.kind)
            .filter(|k| matches!(k, EventKind::Dma { .. } | EventKind::DirtyReport { .. }))
            .collect();
        let dev = || "0000:7f:00.3".to_owned();
        assert_eq!(
            evs,
            vec![
                EventKind::Dma {
                    dev: dev(),
                    src: DmaSource::DirtyLog,
                    iova: 0x10_2000,
                    len: 0x2000,
                    write: true,
                    window: Some((10, 22)),
                    p2p: None,
                },
                EventKind::DirtyReport {
                    dev: dev(),
                    iova: 0x10_0000,
                    len: 0x1_0000,
                    page_size: 4096,
                    window: (10, 22),
                    dirty_pages: 2,
                },
                EventKind::DirtyReport {
                    dev: dev(),
                    iova: 0x10_0000,
                    len: 0x1_0000,
                    page_size: 4096,
                    window: (20, 32),
                    dirty_pages: 0,
                },
            ]
        );
    }

    #[test]
    fn migscopes_own_reports_are_not_decoded_twice() {
        // drive's controller emits its own REPORTs' dirty_reports; the probe's copy of the
        // same bitmap must not add a second account.
        let me = std::process::id();
        let mut a = Attributor::with_hooks(None, true, no_query(), no_resolve());
        a.declare_fd(me, 6, "0000:7f:00.3", "drive", Some(MigFlags(3)));
        let start = log_start_words();
        a.push(&ret_from(
            10,
            ret(11, me, 6, ioctl::DEVICE_FEATURE, 0, &start),
        ));
        a.push(&bitmap_chunk(21, me, 20, &[0xff; 8]));
        let rep = report_words(0x10_0000, 0x1_0000);
        a.push(&ret_from(
            20,
            ret(22, me, 6, ioctl::DEVICE_FEATURE, 0, &rep),
        ));
        let evs = a.release(None);
        assert!(
            !evs.iter().any(|e| matches!(
                e.kind,
                EventKind::Dma { .. } | EventKind::DirtyReport { .. }
            )),
            "{evs:#?}"
        );
    }

    #[test]
    fn missed_fsm_steps_are_lost_for_their_device_before_set_done() {
        let mut a = Attributor::with_hooks(None, true, no_query(), no_resolve());
        a.declare_fd(9, 6, "0000:7f:00.4", "vm", Some(MigFlags(3)));
        a.push(&call(
            1,
            9,
            6,
            ioctl::DEVICE_FEATURE,
            &[16, SET_STATE, MigState::Stop as u32, 0],
        ));
        // RUNNING -> RUNNING_P2P was seen; RUNNING_P2P -> STOP was not (its return half).
        a.push(&Record::Step(Step {
            hdr: hdr(K::Step, 2, 9, 9),
            vdev: 0xabc0,
            cur: 2,
            new: 1,
            next: 5,
            ret: 0,
            hook: 2,
            has_next: 1,
        }));
        // The probe reports the loss at the SET's exit, just before the IoctlRet; the ring
        // may deliver it after the return record: time orders them.
        a.push(&ret(
            5,
            9,
            6,
            ioctl::DEVICE_FEATURE,
            0,
            &[16, SET_STATE, MigState::Stop as u32, u32::MAX],
        ));
        a.push(&Record::StepLost(StepLost {
            hdr: hdr(K::StepLost, 4, 9, 9),
            fd: 6,
            cmd: ioctl::DEVICE_FEATURE,
            n: 1,
            _pad: 0,
        }));
        // A loss inside another ioctl on a non-device fd names no device.
        a.push(&open(6, 9, 3, fd_kind::CONTAINER, "/dev/vfio/vfio"));
        a.push(&Record::StepLost(StepLost {
            hdr: hdr(K::StepLost, 7, 9, 9),
            fd: 3,
            cmd: ioctl::IOMMU_MAP_DMA,
            n: 2,
            _pad: 0,
        }));
        let evs = a.release(None);
        let kinds: Vec<&str> = evs.iter().map(|e| e.kind.ev()).collect();
        assert_eq!(kinds, ["device", "set", "step", "lost", "set_done", "lost"]);
        assert_eq!(
            evs[3].kind,
            EventKind::Lost {
                n: 1,
                source: "fsm_step".into(),
                dev: Some("0000:7f:00.4".into())
            }
        );
        assert_eq!((evs[3].t, evs[3].pid), (4, Some(9)));
        assert_eq!(
            evs[5].kind,
            EventKind::Lost {
                n: 2,
                source: "fsm_step".into(),
                dev: None
            }
        );
    }

    #[test]
    fn declared_data_fds_carry_their_devices_data() {
        let mut a = Attributor::with_hooks(None, true, no_query(), no_resolve());
        a.declare_fd(9, 6, "0000:7f:00.5", "vm", Some(MigFlags(3)));
        a.declare_data_fd(9, 21, "0000:7f:00.5");
        a.push(&Record::DataXfer(DataXfer {
            hdr: hdr(K::DataXfer, 1, 9, 9),
            fd: 21,
            dir: 0,
            ret: 4096,
        }));
        a.push(&ret(
            2,
            9,
            21,
            ioctl::MIG_GET_PRECOPY_INFO,
            -61,
            &words(&[&[24, 0], &w64(0), &w64(0)]),
        ));
        let kinds: Vec<EventKind> = a.release(None).into_iter().map(|e| e.kind).collect();
        assert!(matches!(&kinds[0], EventKind::Device { dev, .. } if dev == "0000:7f:00.5"));
        assert_eq!(
            kinds[1..],
            [
                EventKind::Data {
                    dev: "0000:7f:00.5".into(),
                    dir: DataDir::Save,
                    bytes: 4096,
                    file: Some(DataFile {
                        fd: 21,
                        fd_gen: 0,
                        reset_gen: 0
                    })
                },
                EventKind::PrecopyInfo {
                    dev: "0000:7f:00.5".into(),
                    result: Err(-61)
                },
            ]
        );
    }

    #[test]
    fn set_irqs_becomes_a_note() {
        let mut a = Attributor::with_hooks(None, true, no_query(), no_resolve());
        // DATA_EVENTFD | ACTION_TRIGGER on the MSI index, vectors 0..1.
        a.push(&ret(
            5,
            3,
            8,
            ioctl::DEVICE_SET_IRQS,
            0,
            &[24, 0x24, 1, 0, 1, 17],
        ));
        let evs = a.release(None);
        assert_eq!(
            evs.last().map(|e| &e.kind),
            Some(&EventKind::Mark {
                label: "set_irqs fd:8@3 index 1 start 0 count 1 trigger/eventfd ret=0".into()
            })
        );
    }

    #[test]
    fn release_holds_back_and_orders() {
        let mut a = Attributor::with_hooks(None, true, no_query(), no_resolve());
        a.push(&ret(30, 1, 5, ioctl::DEVICE_RESET, 0, &[]));
        a.push(&ret(10, 1, 5, ioctl::DEVICE_RESET, -1, &[]));
        let first = a.release(Some(20));
        assert_eq!(first.iter().map(|e| e.t).collect::<Vec<_>>(), [10, 10, 10]);
        let rest = a.release(None);
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].t, 30);
    }

    fn bin(ts: u64, n: u64, t0: u64, t1: u64, name: &str) -> Record {
        let mut b = [0u8; 32];
        b[..name.len()].copy_from_slice(name.as_bytes());
        Record::IrqBin(IrqBin {
            hdr: hdr(K::IrqBin, ts, 0, 0),
            irq: 40,
            _pad: 0,
            n,
            t0,
            t1,
            name: b,
        })
    }

    /// A bin the probe flushed becomes one `irq_bin` of the device its handler names, owned
    /// like its interrupts, with the window the probe counted in; a bin of one interrupt
    /// spans no time, and a bin the probe cannot write (no interrupts) is a decode loss.
    #[test]
    fn irq_bins_become_irq_bin_events_of_the_owner() {
        let mut a = Attributor::with_hooks(None, true, no_query(), no_resolve());
        a.push(&name_ret(1, 6, 4, 7, "0000:7f:02.0"));
        a.push(&bin(50, 3, 10, 40, "vfio-msix[2](0000:7f:02.0)"));
        a.push(&bin(60, 1, 55, 58, "vfio-msi[0](0000:7f:02.0)"));
        a.push(&bin(70, 0, 61, 62, "vfio-msi[0](0000:7f:02.0)"));
        // Not ours: another driver's handler name.
        a.push(&bin(80, 5, 71, 79, "nvme0q1"));
        let evs: Vec<(u64, Option<u32>, EventKind)> = a
            .release(None)
            .into_iter()
            .filter(|e| !matches!(e.kind, EventKind::Device { .. } | EventKind::Mark { .. }))
            .map(|e| (e.t, e.pid, e.kind))
            .collect();
        let dev = "0000:7f:02.0".to_owned();
        assert_eq!(
            evs,
            vec![
                (
                    50,
                    Some(6),
                    EventKind::IrqBin {
                        dev: dev.clone(),
                        kind: IrqKind::Msix,
                        vector: 2,
                        n: 3,
                        window: (10, 40),
                    }
                ),
                (
                    60,
                    Some(6),
                    EventKind::IrqBin {
                        dev,
                        kind: IrqKind::Msi,
                        vector: 0,
                        n: 1,
                        window: (58, 58),
                    }
                ),
                (
                    70,
                    None,
                    EventKind::Lost {
                        n: 1,
                        source: crate::capture::LOST_DECODE.to_owned(),
                        dev: None,
                    }
                ),
            ]
        );
    }

    /// The probe keys a device's interrupt phase by the name in its handler's parentheses and
    /// by the name its fd was opened for: the two must be the same key (and a name the
    /// userspace parser refuses has none).
    #[test]
    fn handler_names_key_as_their_device() {
        use probe_common::abi::{BdfKey, NAME_LEN};
        let key = |s: &str| {
            let mut b = [0u8; NAME_LEN];
            let n = s.len().min(NAME_LEN);
            b[..n].copy_from_slice(&s.as_bytes()[..n]);
            BdfKey::of_handler(&b)
        };
        for name in [
            "vfio-msix[3](0000:00:02.0)",
            "vfio-msi[0](0000:7f:1f.7)",
            "vfio-intx(0000:01:00.0)",
            "vfio-msix[2047](0000:00:02.0)",
        ] {
            let (_, _, dev) = parse_irq_name(name).expect("a vfio handler name");
            assert_eq!(key(name), Some(BdfKey::of(dev.as_bytes())), "{name}");
        }
        // A device name longer than a key is cut the same way on both sides.
        assert_eq!(
            key("vfio-intx(0000:00:02.0-abcdef)"),
            Some(BdfKey::of(b"0000:00:02.0-abcdef"))
        );
        for bad in ["vfio-intx()", "vfio-msi[0]", "vfio-msi[0](0000:00:02.0", ""] {
            assert_eq!(key(bad), None, "{bad}");
        }
        // Truncated at NAME_LEN before its ')': no key.
        assert_eq!(key("vfio-msix[12](0000:00:02.0-abcdefghij)"), None);
    }

    #[test]
    fn irq_names_parse() {
        assert_eq!(
            parse_irq_name("vfio-msix[3](0000:00:02.0)"),
            Some((IrqKind::Msix, 3, "0000:00:02.0".into()))
        );
        assert_eq!(
            parse_irq_name("vfio-msi[0](0000:00:02.0)"),
            Some((IrqKind::Msi, 0, "0000:00:02.0".into()))
        );
        assert_eq!(
            parse_irq_name("vfio-intx(0000:01:00.0)"),
            Some((IrqKind::Intx, 0, "0000:01:00.0".into()))
        );
        assert_eq!(parse_irq_name("vfio-err(x)"), None);
        assert_eq!(parse_irq_name("nvme0q1"), None);
    }

    #[test]
    fn pid_filter_follows_children_and_drops_others() {
        let parents: HashMap<u32, u32> = [(101, 100), (102, 101), (200, 1)].into();
        let mut f = PidFilter::with_parent(&[100], Box::new(move |p| parents.get(&p).copied()));
        assert!(f.accepts(100));
        assert!(f.accepts(102));
        assert!(!f.accepts(200));
        let mut a = Attributor::with_hooks(Some(f), true, no_query(), no_resolve());
        a.push(&ret(5, 200, 3, ioctl::DEVICE_RESET, 0, &[]));
        a.push(&Record::Irq(Irq {
            hdr: hdr(K::Irq, 6, 0, 0),
            irq: 30,
            _pad: 0,
            name: *b"vfio-msi[0](0000:00:09.0)\0\0\0\0\0\0\0",
        }));
        assert!(a.release(None).is_empty());
    }
}
