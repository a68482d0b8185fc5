//! What `drive` checks about VFIO_DEVICE_RESET (issue 14, part C): the `reset` plan resets
//! each device in STOP_COPY with its data_fd open and nothing read yet, then reads that fd.
//! A reset returns the device to RUNNING (vfio_pci_core's reset_done handlers, e.g.
//! `mlx5vf_pci_aer_reset_done` and `hisi_acc_vf_pci_aer_reset_done`, reset the migration
//! state; their deferred variant lost is `lost_reset`): the GET after it says whether it got
//! there. And a reset ends the migration files (pds_vfio_pci "clear the save/restore FDs on
//! reset": its reset path disables them): a read of the old data_fd that still moves data is a
//! `data` event of a file older than the device's reset generation (`stale-data-fd`); the
//! correct driver's refusal is recorded as a `mark`, the expected outcome, not a failure.

use super::{CHUNK, Ctl, PlanError};
use crate::model::MigState;
use crate::trace::{DataDir, EventKind};
use crate::vfio::VfioOps;
use crate::vfio::errno_name;

impl<O: VfioOps> Ctl<'_, O> {
    /// The `reset` plan: per device, the quiesce (peers first, QEMU's order), STOP_COPY, a
    /// reset with the data_fd kept open, one read of it; cleanup then returns every device to
    /// RUNNING.
    pub(super) fn reset_plan(&mut self) -> Result<(), PlanError> {
        for i in 0..self.devs.len() {
            self.barrier(MigState::StopCopy)?;
            if self.devs[i].flags.supports(MigState::RunningP2p) {
                self.set(i, MigState::RunningP2p, true)?;
                self.dwell();
            }
            self.set(i, MigState::StopCopy, true)?;
            let bdf = self.devs[i].bdf.clone();
            let Some((fd, _)) = self.devs[i].data_file else {
                self.mark(format!(
                    "{bdf}: SET STOP_COPY returned no data_fd: nothing to read after the reset"
                ));
                self.reset(i);
                continue;
            };
            self.reset_device(i, true);
            self.read_after_reset(i, fd);
            self.close_data(i);
            if self.interrupted() {
                return Err(PlanError::Interrupted);
            }
        }
        Ok(())
    }

    /// One read of the data_fd `fd` returned before the reset just issued.
    fn read_after_reset(&mut self, i: usize, fd: i32) {
        let (id, bdf) = (self.devs[i].id, self.devs[i].bdf.clone());
        let mut buf = vec![0u8; CHUNK];
        match self.ops.data_read(id, &mut buf) {
            Ok(0) => self.mark(format!(
                "{bdf}: data_fd {fd} from before the reset: end of stream (no data moved)"
            )),
            Ok(n) => {
                (self.log)(&format!(
                    "{bdf}: data_fd {fd} from before the reset still read {n} bytes"
                ));
                let file = self.data_file(i);
                self.emit(EventKind::Data {
                    dev: bdf,
                    dir: DataDir::Save,
                    bytes: n as u64,
                    file,
                });
            }
            Err(e) => self.mark(format!(
                "{bdf}: data_fd {fd} from before the reset refused the read: {} (the reset invalidated it, as it should)",
                errno_name(e)
            )),
        }
    }
}
