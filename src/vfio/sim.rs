//! A test double for [`VfioOps`]: devices that walk the kernel FSM exactly as
//! `vfio_mig_get_next_state()` drives a driver, with optional misbehaviour (an arc that fails,
//! a GET that disagrees, DMA that keeps landing after quiesce). It lets the controller's real
//! code path — plans, ordering, witness, cleanup — be tested without VFIO hardware.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::buffer::{DmaBuffer, PAGE};
use super::sys::{DevId, DeviceIo, Errno, IrqSetup, Opened, VfioError, VfioOps};
use crate::model::PrecopyInfo;
use crate::model::{self, MigFlags, MigState, StepError};
use crate::trace::IrqKind;

/// How a simulated device misbehaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Misbehave {
    /// Executing the arc `from -> to` fails with `errno`; the device is left in `left_in`.
    FailArc {
        from: MigState,
        to: MigState,
        errno: Errno,
        left_in: MigState,
    },
    /// Every GET reports this state, whatever the device is in.
    GetReports(MigState),
    /// After every SET that completes into a quiescent state, the next `n` ioctls on the device
    /// each land a DMA write in its first mapped buffer (in-flight DMA not drained).
    DmaAfterQuiesce(u32),
    /// VFIO_DEVICE_RESET fails with this errno.
    ResetFails(Errno),
    /// The simulated edu DMA engine keeps executing commands while quiesced (a driver that
    /// does not hold new DMA starts).
    EduIgnoresQuiesce,
    /// After every SET that quiesces the device from a DMA-allowed state, one DMA write lands
    /// in its first mapped buffer right after the "kernel" returned (after the return is
    /// stamped in [`SimVfio::returns`], before the call returns to the controller): a write
    /// the driver's drain missed. With [`SimVfio::follow_sweeps`] it waits (at most 1 s) until
    /// a witness sweep has started after that return, so where it lands does not depend on
    /// thread scheduling.
    LateDma,
    /// edu transfers to RAM complete (with their interrupt) but their data never lands.
    EduDropsDma,
    /// VFIO_DEVICE_RESET leaves the data session working: a data_fd from before it still
    /// reads (pds "clear the save/restore FDs on reset" not applied). A correct device's old
    /// fd fails with ENODEV.
    StaleFd,
    /// VFIO_DEVICE_RESET returns 0 but leaves the migration state (and data) as it was (a
    /// lost deferred reset, hisi/mlx5).
    LostReset,
    /// After a SET leaves the device quiescent, it drops to RUNNING without a SET just before
    /// its `n`-th GET since (once; a reset_done handler behind the VMM's back,
    /// libvfio-user #853). The GET right after the SET is the first.
    RunsBeforeGet(u32),
    /// The device's DMA log drops the last page of every edu transfer (edu-mig's
    /// `bug=dirty_miss`): a transfer within one page is not logged at all.
    DirtyMiss,
}

/// One SET as the "kernel" saw it: the times a probe would stamp on its syscall entry and
/// return.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimReturn {
    pub bdf: String,
    pub to: MigState,
    /// 0 or -errno.
    pub ret: i32,
    pub entered: u64,
    pub returned: u64,
}

/// A simulated device.
#[derive(Clone, Debug)]
pub struct SimSpec {
    pub bdf: String,
    /// `None`: no migration support (MIGRATION feature returns ENOTTY).
    pub flags: Option<MigFlags>,
    pub misbehave: Vec<Misbehave>,
    /// Bytes the device saves in STOP_COPY (PRE_COPY hands out the first half early).
    pub state: Vec<u8>,
    /// The device has VFIO_DEVICE_FEATURE_DMA_LOGGING (pages it writes are logged dirty).
    pub dirty_log: bool,
    /// The state the device is in when opened (RUNNING unless an earlier user left it).
    pub initial: MigState,
    /// The device validates what is loaded in RESUMING, as vfio.h asks: a write past twice
    /// its state's size fails with ENOSPC, and RESUMING -> STOP fails with EINVAL (the device
    /// staying in RESUMING) unless the stream is the one it saves. Off, it takes anything (the
    /// `accept_corrupt` class).
    pub validates: bool,
}

impl SimSpec {
    pub fn new(bdf: &str, flags: u32) -> SimSpec {
        SimSpec {
            bdf: bdf.to_owned(),
            flags: Some(MigFlags(flags)),
            misbehave: Vec::new(),
            state: format!("sim-device-state:{bdf}:").into_bytes().repeat(40),
            dirty_log: false,
            initial: MigState::Running,
            validates: false,
        }
    }

    pub fn validating(mut self) -> SimSpec {
        self.validates = true;
        self
    }

    pub fn with_dirty_log(mut self) -> SimSpec {
        self.dirty_log = true;
        self
    }

    pub fn with(mut self, m: Misbehave) -> SimSpec {
        self.misbehave.push(m);
        self
    }
}

/// One ioctl-level call seen by the double, for assertions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimCall {
    Set(String, MigState),
    Get(String),
    Reset(String),
    /// One FSM arc executed by the "driver".
    Arc(String, MigState, MigState),
}

/// Pages (by IOVA) the simulated device wrote while DMA logging was on.
#[derive(Default)]
struct DirtyLog {
    on: bool,
    pages: BTreeSet<u64>,
}

type SharedDirty = Arc<Mutex<DirtyLog>>;

fn log_write(dirty: &SharedDirty, iova: u64, len: u64) {
    if let Ok(mut d) = dirty.lock()
        && d.on
    {
        let page = PAGE as u64;
        let mut p = iova / page * page;
        while p < iova + len.max(1) {
            d.pages.insert(p);
            p += page;
        }
    }
}

struct SimDev {
    spec: SimSpec,
    state: MigState,
    data: Option<DataSession>,
    /// GETs since the last SET that left the device quiescent ([`Misbehave::RunsBeforeGet`]);
    /// `None` once it fired or while not armed.
    gets_since_quiesce: Option<u32>,
    /// [`Misbehave::RunsBeforeGet`] fired.
    ran_async: bool,
    pending_dma: u32,
    dma_counter: u8,
    maps: Vec<(u64, Arc<DmaBuffer>)>,
    edu: Arc<Mutex<EduSim>>,
    dirty: SharedDirty,
}

enum DataSession {
    Save {
        bytes: Vec<u8>,
        pos: usize,
        precopy_limit: usize,
    },
    Load(Vec<u8>),
    /// A session a reset invalidated: its fd fails every read and write with ENODEV (as
    /// edu-mig's and pds_vfio_pci's do).
    Invalidated,
}

/// The double: a set of devices sharing one "container".
pub struct SimVfio {
    specs: BTreeMap<String, SimSpec>,
    devs: Vec<SimDev>,
    next_fd: i32,
    pub calls: Vec<SimCall>,
    /// Requests along a blocked arc (would hang an unpatched kernel).
    pub hazards_received: u32,
    /// Every SET's entry and return times.
    pub returns: Vec<SimReturn>,
    sweeps: Option<Arc<AtomicU64>>,
}

impl SimVfio {
    pub fn new(specs: impl IntoIterator<Item = SimSpec>) -> SimVfio {
        SimVfio {
            specs: specs.into_iter().map(|s| (s.bdf.clone(), s)).collect(),
            devs: Vec::new(),
            next_fd: 100,
            calls: Vec::new(),
            hazards_received: 0,
            returns: Vec::new(),
            sweeps: None,
        }
    }

    /// Lets [`Misbehave::LateDma`] follow the witness's sweeps ([`super::Options::witness_sweeps`]).
    pub fn follow_sweeps(&mut self, sweeps: Arc<AtomicU64>) {
        self.sweeps = Some(sweeps);
    }

    /// The state a device is really in.
    pub fn state_of(&self, bdf: &str) -> Option<MigState> {
        self.devs
            .iter()
            .find(|d| d.spec.bdf == bdf)
            .map(|d| d.state)
    }

    /// The state a device restored from its last RESUMING session.
    pub fn saved_state_of(&self, bdf: &str) -> Option<&[u8]> {
        self.devs
            .iter()
            .find(|d| d.spec.bdf == bdf)
            .map(|d| d.spec.state.as_slice())
    }

    fn dev(&mut self, id: DevId) -> Result<&mut SimDev, Errno> {
        let d = self.devs.get_mut(id.0).ok_or(libc::EBADF)?;
        // Any ioctl on the device lets pending misbehaving DMA land.
        if d.pending_dma > 0 {
            d.pending_dma -= 1;
            d.dma_counter = d.dma_counter.wrapping_add(1);
            if let Some((iova, buf)) = d.maps.first() {
                let _ = buf.write(0, &[d.dma_counter, 0xA5]);
                log_write(&d.dirty, *iova, 2);
            }
        }
        Ok(d)
    }
}

impl VfioOps for SimVfio {
    fn open(&mut self, bdf: &str) -> Result<Opened, VfioError> {
        let spec = self
            .specs
            .get(bdf)
            .cloned()
            .ok_or_else(|| VfioError::Open {
                path: format!("/dev/vfio (simulated {bdf})").into(),
                source: std::io::Error::from_raw_os_error(libc::ENODEV),
            })?;
        let id = DevId(self.devs.len());
        let dirty = SharedDirty::default();
        let initial = spec.initial;
        self.devs.push(SimDev {
            spec,
            state: initial,
            data: None,
            gets_since_quiesce: None,
            ran_async: false,
            pending_dma: 0,
            dma_counter: 0,
            maps: Vec::new(),
            edu: Arc::new(Mutex::new(EduSim {
                ignore_quiesce: spec_has(&self.specs, bdf, &Misbehave::EduIgnoresQuiesce),
                drops_dma: spec_has(&self.specs, bdf, &Misbehave::EduDropsDma),
                dirty_miss: spec_has(&self.specs, bdf, &Misbehave::DirtyMiss),
                dirty: Arc::clone(&dirty),
                ..EduSim::default()
            })),
            dirty,
        });
        Ok(Opened {
            id,
            bdf: bdf.to_owned(),
            ctx: "container0".to_owned(),
            driver: Some("sim".to_owned()),
        })
    }

    fn migration_flags(&mut self, dev: DevId) -> Result<MigFlags, VfioError> {
        let d = self.devs.get(dev.0).ok_or_else(|| VfioError::Unavailable {
            what: "device",
            why: format!("{dev:?} not open"),
        })?;
        d.spec.flags.ok_or_else(|| VfioError::NoMigration {
            bdf: d.spec.bdf.clone(),
            source: std::io::Error::from_raw_os_error(libc::ENOTTY),
        })
    }

    fn set_state(&mut self, dev: DevId, to: MigState) -> Result<Option<i32>, Errno> {
        let entered = super::now_ns();
        let d = self.devs.get(dev.0).ok_or(libc::EBADF)?;
        self.calls.push(SimCall::Set(d.spec.bdf.clone(), to));
        if let Some(flags) = d.spec.flags
            && model::is_hazard(flags, d.state, to)
        {
            self.hazards_received += 1;
        }
        let mut new_fd = None;
        let next_fd = self.next_fd;
        let d = self.dev(dev)?;
        let flags = d.spec.flags.ok_or(libc::ENOTTY)?;
        let bdf = d.spec.bdf.clone();
        let mut arcs = Vec::new();
        let mut result = Ok(());
        let was_dma_allowed = d.state.dma_allowed();
        // vfio_ioctl_device_feature_mig_device_state -> driver loop over next_state.
        while d.state != to {
            let next = match model::next_state(flags, d.state, to) {
                Ok(n) => n,
                Err(
                    StepError::BlockedArc
                    | StepError::TargetUnsupported
                    | StepError::CurUnsupported,
                ) => {
                    result = Err(libc::EINVAL);
                    break;
                }
            };
            let fail = d.spec.misbehave.iter().find_map(|m| match m {
                Misbehave::FailArc {
                    from,
                    to: t,
                    errno,
                    left_in,
                } if *from == d.state && *t == next => Some((*errno, *left_in)),
                _ => None,
            });
            arcs.push((d.state, next));
            if let Some((errno, left_in)) = fail {
                d.state = left_in;
                d.data = None;
                result = Err(errno);
                break;
            }
            match arc_action(d, next) {
                Ok(true) => new_fd = Some(next_fd),
                Ok(false) => {}
                Err(errno) => {
                    result = Err(errno);
                    break;
                }
            }
            d.state = next;
        }
        let now_quiescent = d.state.quiescent();
        let runs_later = d
            .spec
            .misbehave
            .iter()
            .any(|m| matches!(m, Misbehave::RunsBeforeGet(_)));
        d.gets_since_quiesce =
            (result.is_ok() && now_quiescent && runs_later && !d.ran_async).then_some(0);
        if result.is_ok()
            && now_quiescent
            && let Some(n) = d.spec.misbehave.iter().find_map(|m| match m {
                Misbehave::DmaAfterQuiesce(n) => Some(*n),
                _ => None,
            })
        {
            d.pending_dma = n;
        }
        let edu = Arc::clone(&d.edu);
        let quiesced = d.state.quiescent() || d.state == MigState::Error;
        if let Ok(mut e) = edu.lock() {
            e.quiesced = quiesced;
            if !quiesced {
                e.release();
            }
        }
        let late = (result.is_ok()
            && was_dma_allowed
            && now_quiescent
            && d.spec.misbehave.contains(&Misbehave::LateDma))
        .then(|| d.maps.first().map(|(_, b)| Arc::clone(b)))
        .flatten();
        for (a, b) in arcs {
            self.calls.push(SimCall::Arc(bdf.clone(), a, b));
        }
        let returned = super::now_ns();
        self.returns.push(SimReturn {
            bdf,
            to,
            ret: result.map_or_else(|e| -e, |()| 0),
            entered,
            returned,
        });
        if let Some(buf) = late {
            if let Some(sweeps) = &self.sweeps {
                // A sweep that completes after the one in progress at the return started after it.
                let seen = sweeps.load(Ordering::Acquire);
                let limit = Instant::now() + Duration::from_secs(1);
                while sweeps.load(Ordering::Acquire) < seen + 2 && Instant::now() < limit {
                    std::thread::yield_now();
                }
            }
            let _ = buf.write(16, &[0x1A, 0x7E, 0xDA]);
        }
        result?;
        if new_fd.is_some() {
            self.next_fd += 1;
        }
        Ok(new_fd)
    }

    fn get_state(&mut self, dev: DevId) -> Result<MigState, Errno> {
        let d = self.dev(dev)?;
        let bdf = d.spec.bdf.clone();
        if let Some(n) = d.gets_since_quiesce.as_mut() {
            *n += 1;
            let fire = d
                .spec
                .misbehave
                .iter()
                .any(|m| matches!(m, Misbehave::RunsBeforeGet(k) if k == n));
            if fire {
                d.gets_since_quiesce = None;
                d.ran_async = true;
                d.state = MigState::Running;
                d.data = None;
                if let Ok(mut e) = d.edu.lock() {
                    e.quiesced = false;
                    e.release();
                }
            }
        }
        let s = d
            .spec
            .misbehave
            .iter()
            .find_map(|m| match m {
                Misbehave::GetReports(s) => Some(*s),
                _ => None,
            })
            .unwrap_or(d.state);
        self.calls.push(SimCall::Get(bdf));
        Ok(s)
    }

    fn reset(&mut self, dev: DevId) -> Result<(), Errno> {
        let d = self.dev(dev)?;
        let bdf = d.spec.bdf.clone();
        let fails = d.spec.misbehave.iter().find_map(|m| match m {
            Misbehave::ResetFails(e) => Some(*e),
            _ => None,
        });
        let lost = d.spec.misbehave.contains(&Misbehave::LostReset);
        if fails.is_none() && !lost {
            d.state = MigState::Running;
            if !d.spec.misbehave.contains(&Misbehave::StaleFd) && d.data.is_some() {
                d.data = Some(DataSession::Invalidated);
            }
        }
        self.calls.push(SimCall::Reset(bdf));
        fails.map_or(Ok(()), Err)
    }

    fn data_read(&mut self, dev: DevId, buf: &mut [u8]) -> Result<usize, Errno> {
        let d = self.dev(dev)?;
        let state = d.state;
        match d.data.as_mut() {
            Some(DataSession::Save {
                bytes,
                pos,
                precopy_limit,
            }) => {
                let limit = if matches!(state, MigState::PreCopy | MigState::PreCopyP2p) {
                    (*precopy_limit).min(bytes.len())
                } else {
                    bytes.len()
                };
                if *pos >= limit {
                    // vfio.h: ENOMSG is a temporary end of stream in PRE_COPY only.
                    return if limit < bytes.len() {
                        Err(libc::ENOMSG)
                    } else {
                        Ok(0)
                    };
                }
                let n = buf.len().min(limit - *pos);
                buf[..n].copy_from_slice(&bytes[*pos..*pos + n]);
                *pos += n;
                Ok(n)
            }
            Some(DataSession::Invalidated) => Err(libc::ENODEV),
            _ => Err(libc::EINVAL),
        }
    }

    fn data_poll(&mut self, dev: DevId, _timeout_ms: i32) -> Result<bool, Errno> {
        let d = self.dev(dev)?;
        if d.data.is_some() {
            Ok(true)
        } else {
            Err(libc::EBADF)
        }
    }

    fn data_write(&mut self, dev: DevId, buf: &[u8]) -> Result<usize, Errno> {
        let d = self.dev(dev)?;
        match d.data.as_mut() {
            Some(DataSession::Load(bytes)) => {
                if d.spec.validates && bytes.len() + buf.len() > 2 * d.spec.state.len() {
                    return Err(libc::ENOSPC);
                }
                bytes.extend_from_slice(buf);
                Ok(buf.len())
            }
            Some(DataSession::Invalidated) => Err(libc::ENODEV),
            _ => Err(libc::EINVAL),
        }
    }

    fn precopy_info(&mut self, dev: DevId) -> Result<PrecopyInfo, Errno> {
        let d = self.dev(dev)?;
        match d.data.as_ref() {
            Some(DataSession::Save {
                bytes,
                pos,
                precopy_limit,
            }) if matches!(d.state, MigState::PreCopy | MigState::PreCopyP2p) => Ok(PrecopyInfo {
                initial_bytes: (*precopy_limit).min(bytes.len()).saturating_sub(*pos) as u64,
                dirty_bytes: 0,
                flags: 0,
            }),
            _ => Err(libc::EINVAL),
        }
    }

    /// What the open save session still holds (the double has no estimate outside one).
    fn data_size(&mut self, dev: DevId) -> Result<u64, Errno> {
        match self.dev(dev)?.data.as_ref() {
            Some(DataSession::Save { bytes, pos, .. }) => {
                Ok(bytes.len().saturating_sub(*pos) as u64)
            }
            _ => Err(libc::EINVAL),
        }
    }

    fn data_close(&mut self, _dev: DevId) {}

    fn map_dma(&mut self, dev: DevId, buf: &Arc<DmaBuffer>, iova: u64) -> Result<(), Errno> {
        let d = self.devs.get_mut(dev.0).ok_or(libc::EBADF)?;
        d.maps.push((iova, Arc::clone(buf)));
        if let Ok(mut e) = d.edu.lock() {
            e.maps.push((iova, Arc::clone(buf)));
        }
        Ok(())
    }

    fn unmap_dma(&mut self, dev: DevId, iova: u64, _len: u64) -> Result<(), Errno> {
        let d = self.devs.get_mut(dev.0).ok_or(libc::EBADF)?;
        d.maps.retain(|(i, _)| *i != iova);
        if let Ok(mut e) = d.edu.lock() {
            e.maps.retain(|(i, _)| *i != iova);
        }
        Ok(())
    }

    fn enable_irq(&mut self, dev: DevId) -> Result<IrqSetup, VfioError> {
        // SAFETY: eventfd(2) with valid flags; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(VfioError::Unavailable {
                what: "eventfd",
                why: std::io::Error::last_os_error().to_string(),
            });
        }
        // SAFETY: eventfd returned a new fd we own.
        let eventfd = unsafe { OwnedFd::from_raw_fd(fd) };
        if let Some(d) = self.devs.get(dev.0)
            && let Ok(dup) = eventfd.try_clone()
            && let Ok(mut e) = d.edu.lock()
        {
            e.irq = Some(dup);
        }
        Ok(IrqSetup {
            kind: IrqKind::Msi,
            eventfd,
            unmask: None,
        })
    }

    fn disable_irq(&mut self, _dev: DevId, _kind: IrqKind) -> Result<(), Errno> {
        Ok(())
    }

    fn enable_bus_master(&mut self, _dev: DevId) -> Result<(), Errno> {
        Ok(())
    }

    fn bar(&mut self, dev: DevId, index: u32) -> Result<Box<dyn DeviceIo>, VfioError> {
        match self.devs.get(dev.0) {
            Some(d) if index == 0 => Ok(Box::new(EduBar(Arc::clone(&d.edu)))),
            _ => Err(VfioError::Unavailable {
                what: "BAR access",
                why: format!("the test double has no BAR{index} ({dev:?})"),
            }),
        }
    }

    fn dma_logging_start(
        &mut self,
        dev: DevId,
        _ranges: &[(u64, u64)],
        _page_size: u64,
    ) -> Result<(), Errno> {
        let d = self.devs.get(dev.0).ok_or(libc::EBADF)?;
        if !d.spec.dirty_log {
            return Err(libc::ENOTTY);
        }
        let mut l = d.dirty.lock().map_err(|_| libc::EIO)?;
        l.on = true;
        l.pages.clear();
        Ok(())
    }

    fn dma_logging_report(
        &mut self,
        dev: DevId,
        iova: u64,
        len: u64,
        page_size: u64,
        bitmap: &mut [u64],
    ) -> Result<(), Errno> {
        let d = self.dev(dev)?;
        let mut l = d.dirty.lock().map_err(|_| libc::EIO)?;
        if !l.on || page_size != PAGE as u64 {
            return Err(libc::EINVAL);
        }
        bitmap.iter_mut().for_each(|w| *w = 0);
        let hit: Vec<u64> = l.pages.range(iova..iova + len).copied().collect();
        for p in hit {
            let bit = ((p - iova) / page_size) as usize;
            if let Some(w) = bitmap.get_mut(bit / 64) {
                *w |= 1 << (bit % 64);
            }
            l.pages.remove(&p);
        }
        Ok(())
    }

    fn dma_logging_stop(&mut self, dev: DevId) -> Result<(), Errno> {
        let d = self.devs.get(dev.0).ok_or(libc::EBADF)?;
        let mut l = d.dirty.lock().map_err(|_| libc::EIO)?;
        l.on = false;
        Ok(())
    }
}

fn spec_has(specs: &BTreeMap<String, SimSpec>, bdf: &str, m: &Misbehave) -> bool {
    specs.get(bdf).is_some_and(|s| s.misbehave.contains(m))
}

/// The action on the arc from `d.state` to `next` (vfio.h, "The FSM takes actions on the arcs
/// between FSM states"): a save or load session starts, ends or widens. Returns whether the arc
/// opens a data fd.
/// `Err` when the arc fails (a validating device refusing its stream; it stays where it was).
fn arc_action(d: &mut SimDev, next: MigState) -> Result<bool, Errno> {
    let mut opens = false;
    match (d.state, next) {
        (MigState::Stop, MigState::StopCopy)
            if matches!(d.data, None | Some(DataSession::Invalidated)) =>
        {
            d.data = Some(DataSession::Save {
                bytes: d.spec.state.clone(),
                pos: 0,
                precopy_limit: usize::MAX,
            });
            opens = true;
        }
        (MigState::Running, MigState::PreCopy) | (MigState::RunningP2p, MigState::PreCopyP2p) => {
            let half = d.spec.state.len() / 2;
            d.data = Some(DataSession::Save {
                bytes: d.spec.state.clone(),
                pos: 0,
                precopy_limit: half,
            });
            opens = true;
        }
        (MigState::PreCopyP2p, MigState::StopCopy) => {
            if let Some(DataSession::Save { precopy_limit, .. }) = d.data.as_mut() {
                *precopy_limit = usize::MAX;
            }
        }
        (MigState::Stop, MigState::Resuming) => {
            d.data = Some(DataSession::Load(Vec::new()));
            opens = true;
        }
        (MigState::Resuming, MigState::Stop) => {
            if let Some(DataSession::Load(bytes)) = d.data.take() {
                if d.spec.validates && bytes != d.spec.state {
                    return Err(libc::EINVAL);
                }
                d.spec.state = bytes;
            }
        }
        (MigState::StopCopy, MigState::Stop)
        | (MigState::PreCopy, MigState::Running)
        | (MigState::PreCopyP2p, MigState::RunningP2p) => d.data = None,
        _ => {}
    }
    Ok(opens)
}

/// QEMU's edu register model (hw/misc/edu.c) reduced to the DMA engine, executing a command
/// at once unless the device is quiesced (then it is held until the device may DMA again, as a
/// correct migration driver does).
#[derive(Default)]
struct EduSim {
    src: u64,
    dst: u64,
    cnt: u64,
    cmd: u64,
    irq_status: u32,
    buf: Vec<u8>,
    quiesced: bool,
    ignore_quiesce: bool,
    drops_dma: bool,
    dirty_miss: bool,
    maps: Vec<(u64, Arc<DmaBuffer>)>,
    irq: Option<OwnedFd>,
    dirty: SharedDirty,
}

impl EduSim {
    fn find(&self, iova: u64, len: u64) -> Option<(&Arc<DmaBuffer>, usize)> {
        self.maps.iter().find_map(|(base, b)| {
            (iova >= *base && iova + len <= base + b.len() as u64)
                .then(|| (b, (iova - base) as usize))
        })
    }

    fn run(&mut self) {
        use super::workload::edu;
        if self.cmd & edu::CMD_RUN == 0 || (self.quiesced && !self.ignore_quiesce) {
            return;
        }
        let n = self.cnt.min(4096) as usize;
        if self.buf.len() < 4096 {
            self.buf.resize(4096, 0);
        }
        if self.cmd & edu::CMD_TO_RAM == 0 {
            let off = (self.dst.saturating_sub(edu::BUF) as usize).min(4096 - n);
            if let Some((b, at)) = self.find(self.src, n as u64) {
                let snap = b.snapshot();
                self.buf[off..off + n].copy_from_slice(&snap[at..at + n]);
            }
        } else if !self.drops_dma {
            let off = (self.src.saturating_sub(edu::BUF) as usize).min(4096 - n);
            let data = self.buf[off..off + n].to_vec();
            if let Some((b, at)) = self.find(self.dst, n as u64) {
                let _ = b.write(at, &data);
                // bug=dirty_miss logs up to the start of the transfer's last page.
                let last_page = (self.dst + (n as u64).max(1) - 1) / PAGE as u64 * PAGE as u64;
                let logged = if self.dirty_miss {
                    last_page.saturating_sub(self.dst)
                } else {
                    n as u64
                };
                if logged > 0 {
                    log_write(&self.dirty, self.dst, logged);
                }
            }
        }
        let irq = self.cmd & edu::CMD_IRQ != 0;
        self.cmd &= !edu::CMD_RUN;
        if irq {
            self.irq_status |= edu::DMA_IRQ;
            if let Some(fd) = &self.irq {
                let one = 1u64;
                // SAFETY: writing 8 bytes from a live u64 to an eventfd we own.
                unsafe {
                    libc::write(
                        std::os::fd::AsRawFd::as_raw_fd(fd),
                        (&raw const one).cast(),
                        8,
                    )
                };
            }
        }
    }

    /// The device may DMA again: held commands run.
    fn release(&mut self) {
        self.run();
    }
}

struct EduBar(Arc<Mutex<EduSim>>);

impl EduBar {
    fn with<T>(&self, f: impl FnOnce(&mut EduSim) -> T) -> Result<T, Errno> {
        self.0.lock().map(|mut e| f(&mut e)).map_err(|_| libc::EIO)
    }
}

impl DeviceIo for EduBar {
    fn read32(&self, off: u64) -> Result<u32, Errno> {
        self.read64(off).map(|v| v as u32)
    }
    fn write32(&self, off: u64, v: u32) -> Result<(), Errno> {
        self.write64(off, u64::from(v))
    }
    fn read64(&self, off: u64) -> Result<u64, Errno> {
        use super::workload::edu;
        self.with(|e| match off {
            edu::ID => 0x0100_00ed,
            edu::SRC => e.src,
            edu::DST => e.dst,
            edu::CNT => e.cnt,
            edu::CMD => e.cmd,
            edu::IRQ_STATUS => u64::from(e.irq_status),
            _ => u64::MAX,
        })
    }
    fn write64(&self, off: u64, v: u64) -> Result<(), Errno> {
        use super::workload::edu;
        // A transfer takes time on the real device; keep the workload loop from spinning.
        std::thread::sleep(std::time::Duration::from_micros(200));
        self.with(|e| {
            // edu ignores register writes while a transfer is pending (dma_rw).
            let busy = e.cmd & edu::CMD_RUN != 0;
            match off {
                edu::SRC if !busy => e.src = v,
                edu::DST if !busy => e.dst = v,
                edu::CNT if !busy => e.cnt = v,
                edu::CMD if !busy && v & edu::CMD_RUN != 0 => {
                    e.cmd = v;
                    e.run();
                }
                edu::IRQ_ACK => e.irq_status &= !(v as u32),
                _ => {}
            }
        })
    }
}
