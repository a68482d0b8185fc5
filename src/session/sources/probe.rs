//! The probe as a source: the capture's ring buffer registered with tokio ([`AsyncFd`]), read
//! when the kernel wakes it. The probe wakes its reader once a batch of records waits (an
//! eighth of the ring), so a trickle is read at the session's flush tick instead.

use std::collections::BTreeMap;

use tokio::io::{Interest, unix::AsyncFd};

use crate::capture::{Capture, CaptureError, HookStatus, monotonic_ns};
use crate::session::merge::HOLD_BACK_NS;
use crate::trace::Event;

/// A started capture, readable through tokio.
pub struct Probe {
    ring: AsyncFd<Capture>,
}

impl Probe {
    /// Registers the capture's ring buffer fd with the current tokio runtime.
    pub fn new(cap: Capture) -> std::io::Result<Probe> {
        // SAFETY: the Capture owns the ring buffer map fd for its whole life and always returns
        // the same fd from as_raw_fd; it is closed only after `into_inner` gave the Capture back.
        let ring = unsafe { AsyncFd::register_with_interest(cap, Interest::READABLE) }
            .map_err(std::io::Error::from)?;
        Ok(Probe { ring })
    }

    /// The probe's evidence sources for the trace header.
    pub fn sources(&self) -> BTreeMap<String, String> {
        self.ring.get_ref().sources()
    }

    pub fn hooks(&self) -> &[HookStatus] {
        self.ring.get_ref().hooks()
    }

    /// The trace header's `hooks` (how VFIO's syscalls are hooked).
    pub fn hooks_path(&self) -> String {
        self.ring.get_ref().hooks_path().to_owned()
    }

    /// Waits until the kernel says records wait in the ring.
    pub async fn readable(&mut self) -> std::io::Result<()> {
        let mut guard = self.ring.readable_mut().await?;
        // Cleared before the read: records landing after it wake us again.
        guard.clear_ready();
        Ok(())
    }

    /// Everything recorded up to [`HOLD_BACK_NS`] ago, in time order, and the probe's
    /// watermark: no later read returns anything earlier.
    pub fn read(&mut self) -> Result<(Vec<Event>, u64), CaptureError> {
        let upto = monotonic_ns().saturating_sub(HOLD_BACK_NS);
        self.ring.get_mut().drain_upto(upto)
    }

    /// Detaches the probe and returns everything left.
    pub fn stop(self) -> Result<Vec<Event>, CaptureError> {
        self.ring.into_inner().stop()
    }
}
