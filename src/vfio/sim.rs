//! A test double for [`VfioOps`]: devices that walk the kernel FSM exactly as
//! `vfio_mig_get_next_state()` drives a driver, with optional misbehaviour (an arc that fails,
//! a GET that disagrees, DMA that keeps landing after quiesce). It lets the controller's real
//! code path — plans, ordering, witness, cleanup — be tested without VFIO hardware.

use std::collections::BTreeMap;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;

use super::buffer::DmaBuffer;
use super::sys::{DevId, DeviceIo, Errno, IrqSetup, Opened, PrecopyInfo, VfioError, VfioOps};
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
}

impl SimSpec {
    pub fn new(bdf: &str, flags: u32) -> SimSpec {
        SimSpec {
            bdf: bdf.to_owned(),
            flags: Some(MigFlags(flags)),
            misbehave: Vec::new(),
            state: format!("sim-device-state:{bdf}:").into_bytes().repeat(40),
        }
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

struct SimDev {
    spec: SimSpec,
    state: MigState,
    data: Option<DataSession>,
    pending_dma: u32,
    dma_counter: u8,
    maps: Vec<(u64, Arc<DmaBuffer>)>,
}

enum DataSession {
    Save {
        bytes: Vec<u8>,
        pos: usize,
        precopy_limit: usize,
    },
    Load(Vec<u8>),
}

/// The double: a set of devices sharing one "container".
pub struct SimVfio {
    specs: BTreeMap<String, SimSpec>,
    devs: Vec<SimDev>,
    next_fd: i32,
    pub calls: Vec<SimCall>,
    /// Requests along a blocked arc (would hang an unpatched kernel).
    pub hazards_received: u32,
}

impl SimVfio {
    pub fn new(specs: impl IntoIterator<Item = SimSpec>) -> SimVfio {
        SimVfio {
            specs: specs.into_iter().map(|s| (s.bdf.clone(), s)).collect(),
            devs: Vec::new(),
            next_fd: 100,
            calls: Vec::new(),
            hazards_received: 0,
        }
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
            if let Some((_, buf)) = d.maps.first() {
                let _ = buf.write(0, &[d.dma_counter, 0xA5]);
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
        self.devs.push(SimDev {
            spec,
            state: MigState::Running,
            data: None,
            pending_dma: 0,
            dma_counter: 0,
            maps: Vec::new(),
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
            // Arc actions (vfio.h, "The FSM takes actions on the arcs between FSM states").
            match (d.state, next) {
                (MigState::Stop, MigState::StopCopy) if d.data.is_none() => {
                    d.data = Some(DataSession::Save {
                        bytes: d.spec.state.clone(),
                        pos: 0,
                        precopy_limit: usize::MAX,
                    });
                    new_fd = Some(next_fd);
                }
                (MigState::Running, MigState::PreCopy)
                | (MigState::RunningP2p, MigState::PreCopyP2p) => {
                    let half = d.spec.state.len() / 2;
                    d.data = Some(DataSession::Save {
                        bytes: d.spec.state.clone(),
                        pos: 0,
                        precopy_limit: half,
                    });
                    new_fd = Some(next_fd);
                }
                (MigState::PreCopyP2p, MigState::StopCopy) => {
                    if let Some(DataSession::Save { precopy_limit, .. }) = d.data.as_mut() {
                        *precopy_limit = usize::MAX;
                    }
                }
                (MigState::Stop, MigState::Resuming) => {
                    d.data = Some(DataSession::Load(Vec::new()));
                    new_fd = Some(next_fd);
                }
                (MigState::Resuming, MigState::Stop) => {
                    if let Some(DataSession::Load(bytes)) = d.data.take() {
                        d.spec.state = bytes;
                    }
                }
                (MigState::StopCopy, MigState::Stop)
                | (MigState::PreCopy, MigState::Running)
                | (MigState::PreCopyP2p, MigState::RunningP2p) => d.data = None,
                _ => {}
            }
            d.state = next;
        }
        let now_quiescent = d.state.quiescent();
        if result.is_ok()
            && now_quiescent
            && let Some(n) = d.spec.misbehave.iter().find_map(|m| match m {
                Misbehave::DmaAfterQuiesce(n) => Some(*n),
                _ => None,
            })
        {
            d.pending_dma = n;
        }
        for (a, b) in arcs {
            self.calls.push(SimCall::Arc(bdf.clone(), a, b));
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
        if fails.is_none() {
            d.state = MigState::Running;
            d.data = None;
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
            _ => Err(libc::EINVAL),
        }
    }

    fn data_write(&mut self, dev: DevId, buf: &[u8]) -> Result<usize, Errno> {
        let d = self.dev(dev)?;
        match d.data.as_mut() {
            Some(DataSession::Load(bytes)) => {
                bytes.extend_from_slice(buf);
                Ok(buf.len())
            }
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
            }),
            _ => Err(libc::EINVAL),
        }
    }

    fn data_close(&mut self, _dev: DevId) {}

    fn map_dma(&mut self, dev: DevId, buf: &Arc<DmaBuffer>, iova: u64) -> Result<(), Errno> {
        let d = self.devs.get_mut(dev.0).ok_or(libc::EBADF)?;
        d.maps.push((iova, Arc::clone(buf)));
        Ok(())
    }

    fn unmap_dma(&mut self, dev: DevId, iova: u64, _len: u64) -> Result<(), Errno> {
        let d = self.devs.get_mut(dev.0).ok_or(libc::EBADF)?;
        d.maps.retain(|(i, _)| *i != iova);
        Ok(())
    }

    fn enable_irq(&mut self, _dev: DevId) -> Result<IrqSetup, VfioError> {
        // SAFETY: eventfd(2) with valid flags; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(VfioError::Unavailable {
                what: "eventfd",
                why: std::io::Error::last_os_error().to_string(),
            });
        }
        Ok(IrqSetup {
            kind: IrqKind::Msi,
            // SAFETY: eventfd returned a new fd we own.
            eventfd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    fn disable_irq(&mut self, _dev: DevId, _kind: IrqKind) -> Result<(), Errno> {
        Ok(())
    }

    fn enable_bus_master(&mut self, _dev: DevId) -> Result<(), Errno> {
        Ok(())
    }

    fn bar(&mut self, dev: DevId, index: u32) -> Result<Box<dyn DeviceIo>, VfioError> {
        Err(VfioError::Unavailable {
            what: "BAR access",
            why: format!("the test double has no BAR{index} ({dev:?})"),
        })
    }

    fn dma_logging_probe(&mut self, _dev: DevId) -> Result<(), Errno> {
        Err(libc::ENOTTY)
    }
}
