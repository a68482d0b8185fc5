//! What `drive` checks about restore (issue 14, part B): the `resume-fuzz` plan (corrupted
//! streams a driver must refuse, then the good one it must resume from) and the device
//! registers read through BAR0 when a state is saved and once it was restored (`regs`), so
//! `check` compares what the device shows, not what its driver says it restored.

use std::collections::BTreeMap;

use super::{CHUNK, Ctl, PlanError, Step};
use crate::model::MigState;
use crate::trace::{Corruption, EventKind, RegStage};
use crate::vfio::VfioOps;
use crate::vfio::errno_name;
use crate::vfio::workload::edu;

/// Junk appended to a saved stream for [`Corruption::Oversized`]: far more than any edu-mig
/// stream (two records of 80 bytes), and one write chunk of drive's.
const OVERSIZE: usize = CHUNK;
/// The byte the junk is made of.
const JUNK: u8 = 0xa5;

/// `good` spoiled as `c` says.
pub(super) fn corrupt(c: Corruption, good: &[u8]) -> Vec<u8> {
    match c {
        Corruption::Truncated => good[..good.len() / 2].to_vec(),
        Corruption::BitFlip => {
            let mut v = good.to_vec();
            if let Some(b) = v.get_mut(good.len() / 2) {
                *b ^= 0x10;
            }
            v
        }
        Corruption::Oversized => {
            let mut v = good.to_vec();
            v.resize(good.len() + OVERSIZE, JUNK);
            v
        }
        Corruption::Empty => Vec::new(),
    }
}

impl<O: VfioOps> Ctl<'_, O> {
    /// The device's state registers through BAR0, when it is a QEMU edu (its identification
    /// register reads `0xRRrr00ed`, hw/misc/edu.c): `None` (with a mark saying why) otherwise.
    fn edu_regs(&mut self, i: usize) -> Option<BTreeMap<u64, u64>> {
        let (id, bdf) = (self.devs[i].id, self.devs[i].bdf.clone());
        let bar = match self.ops.bar(id, 0) {
            Ok(b) => b,
            Err(e) => {
                self.mark(format!("{bdf}: registers not read: {e}"));
                return None;
            }
        };
        match bar.read32(edu::ID) {
            Ok(v) if v & 0xffff == edu::ID_LOW => {}
            Ok(v) => {
                self.mark(format!(
                    "{bdf}: registers not read: BAR0 identification {v:#x} is not an edu's"
                ));
                return None;
            }
            Err(e) => {
                self.mark(format!(
                    "{bdf}: registers not read: BAR0 read failed: {}",
                    errno_name(e)
                ));
                return None;
            }
        }
        let mut regs = BTreeMap::new();
        for &off in edu::STATE_REGS {
            match bar.read32(off).map(u64::from) {
                Ok(v) => {
                    regs.insert(off, v);
                }
                Err(e) => {
                    self.mark(format!(
                        "{bdf}: registers not read: BAR0 {off:#x} failed: {}",
                        errno_name(e)
                    ));
                    return None;
                }
            }
        }
        Some(regs)
    }

    /// A `regs` event for device `i` (nothing for a device that is not an edu).
    pub(super) fn read_regs(&mut self, i: usize, stage: RegStage) {
        if let Some(regs) = self.edu_regs(i) {
            let dev = self.devs[i].bdf.clone();
            self.emit(EventKind::Regs {
                dev,
                stage,
                bar: 0,
                regs,
            });
        }
    }

    /// Writes `data` into the RESUMING data_fd: 0 when every byte was taken, else -errno (a
    /// write that takes nothing counts as EIO).
    fn write_all(&mut self, i: usize, data: &[u8]) -> i32 {
        let id = self.devs[i].id;
        let mut off = 0;
        while off < data.len() {
            let end = (off + CHUNK).min(data.len());
            match self.ops.data_write(id, &data[off..end]) {
                Ok(0) => return -libc::EIO,
                Ok(n) => off += n,
                Err(e) => return -e,
            }
        }
        0
    }

    /// One corrupted stream into device `i` (in STOP, with a good save): RESUMING, the
    /// stream, SET STOP. A refusal (the write or the SET failing) is followed by a reset and a
    /// SET STOP, so the next stream starts where this one did.
    fn corrupt_load(&mut self, i: usize, c: Corruption, good: &[u8]) -> Result<(), PlanError> {
        let bdf = self.devs[i].bdf.clone();
        self.set(i, MigState::Resuming, true)?;
        let data = corrupt(c, good);
        let ret = self.write_all(i, &data);
        self.emit(EventKind::CorruptLoad {
            dev: bdf.clone(),
            corruption: c,
            bytes: data.len() as u64,
            ret,
        });
        let refused = if ret != 0 {
            (self.log)(&format!(
                "{bdf}: {} stream of {} bytes refused by the write: {}",
                c.name(),
                data.len(),
                errno_name(-ret)
            ));
            true
        } else {
            match self.set(i, MigState::Stop, true) {
                Ok(()) => {
                    (self.log)(&format!(
                        "{bdf}: {} stream of {} bytes ACCEPTED: SET RESUMING -> STOP returned 0",
                        c.name(),
                        data.len()
                    ));
                    false
                }
                Err(PlanError::SetFailed { errno, .. }) => {
                    (self.log)(&format!(
                        "{bdf}: {} stream of {} bytes refused by SET RESUMING -> STOP: {}",
                        c.name(),
                        data.len(),
                        errno_name(errno)
                    ));
                    true
                }
                Err(e) => return Err(e),
            }
        };
        if refused {
            // The refused session may have left the device anywhere: a reset starts it over.
            self.reset(i);
            self.set(i, MigState::Stop, true)?;
        }
        Ok(())
    }

    /// `--plan resume-fuzz`, device by device (peers wait in RUNNING_P2P): stopcopy's save,
    /// every [`Corruption`] in turn, then the good stream through RESUMING and back to RUNNING.
    pub(super) fn resume_fuzz(&mut self) -> Result<(), PlanError> {
        let req = |to| Step {
            to,
            optional: false,
        };
        let opt = |to| Step { to, optional: true };
        for i in 0..self.devs.len() {
            for j in 0..self.devs.len() {
                if j != i && self.devs[j].flags.supports(MigState::RunningP2p) {
                    self.set(j, MigState::RunningP2p, true)?;
                }
            }
            for s in [
                opt(MigState::RunningP2p),
                req(MigState::StopCopy),
                req(MigState::Stop),
            ] {
                self.do_step(i, s)?;
            }
            let Some(good) = self.devs[i].saves.last().cloned() else {
                let bdf = self.devs[i].bdf.clone();
                self.mark(format!("{bdf}: resume-fuzz: nothing was saved to spoil"));
                continue;
            };
            for c in Corruption::ALL {
                self.corrupt_load(i, c, &good)?;
            }
            for s in [
                req(MigState::Resuming),
                req(MigState::Stop),
                opt(MigState::RunningP2p),
                req(MigState::Running),
            ] {
                self.do_step(i, s)?;
            }
        }
        // Peers left in RUNNING_P2P run again.
        for j in 0..self.devs.len() {
            if self.devs[j].state != Some(MigState::Running) {
                self.set(j, MigState::Running, true)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corruptions_spoil_the_stream_as_named() {
        let good: Vec<u8> = (0u8..100).collect();
        assert_eq!(corrupt(Corruption::Truncated, &good), good[..50].to_vec());
        let flipped = corrupt(Corruption::BitFlip, &good);
        assert_eq!(flipped.len(), good.len());
        let diff: Vec<usize> = (0..good.len()).filter(|&k| flipped[k] != good[k]).collect();
        assert_eq!(diff, vec![50]);
        assert_eq!((flipped[50] ^ good[50]).count_ones(), 1);
        let big = corrupt(Corruption::Oversized, &good);
        assert_eq!(&big[..100], &good[..]);
        assert_eq!(big.len(), 100 + OVERSIZE);
        assert!(big[100..].iter().all(|&b| b == JUNK));
        assert!(corrupt(Corruption::Empty, &good).is_empty());
    }
}
