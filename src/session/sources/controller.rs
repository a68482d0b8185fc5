//! The controller as a source: it runs on its own thread and hands each event to an
//! [`Emitter`] as it happens, through a bounded channel (the controller waits when the session
//! is behind; the session is never long behind).
//!
//! Its watermark is the time of the last event it emitted outside a hold, or the instant it
//! last said it was idle ([`Emit::idle`]). The emitter sends first and then publishes the
//! watermark; the session reads the watermark first and then drains the channel, so whatever
//! arrives after that read is stamped at or after it. Inside a hold (the witness watching
//! across a SET) the watermark stays at the last event before the hold, and held events leave
//! in time order at its release.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use crate::trace::Event;
use crate::vfio::Emit;

/// Messages in flight from the controller to the session.
const CHANNEL: usize = 1024;

/// What the controller sends.
#[derive(Debug)]
pub enum Sent {
    Event(Event),
    /// Set-up is done: the controller's own evidence sources for the header.
    Ready(BTreeMap<String, String>),
}

/// The controller's end: an [`Emit`] for [`crate::vfio::drive`].
pub struct Emitter {
    tx: mpsc::Sender<Sent>,
    watermark: Arc<AtomicU64>,
    /// Events emitted inside the open holds.
    held: Vec<Event>,
    holds: usize,
}

/// The session's end.
pub struct ControllerSource {
    rx: mpsc::Receiver<Sent>,
    watermark: Arc<AtomicU64>,
}

/// A connected pair; the controller's watermark starts now (it stamps nothing earlier).
pub fn channel() -> (Emitter, ControllerSource) {
    let (tx, rx) = mpsc::channel(CHANNEL);
    let watermark = Arc::new(AtomicU64::new(crate::clock::monotonic_ns()));
    (
        Emitter {
            tx,
            watermark: Arc::clone(&watermark),
            held: Vec::new(),
            holds: 0,
        },
        ControllerSource { rx, watermark },
    )
}

impl Emitter {
    fn send(&mut self, m: Sent) {
        // The session is gone only once it failed: nothing is left to receive the events.
        let _ = self.tx.blocking_send(m);
    }

    fn publish(&self, t: u64) {
        self.watermark.fetch_max(t, Ordering::SeqCst);
    }
}

impl Emit for Emitter {
    fn emit(&mut self, ev: Event) {
        if self.holds > 0 {
            self.held.push(ev);
            return;
        }
        let t = ev.t;
        self.send(Sent::Event(ev));
        self.publish(t);
    }

    fn hold(&mut self, _t: u64) {
        // The watermark already is at or before `t` (the last event emitted, which came
        // before it), and stays there until the release.
        self.holds += 1;
    }

    fn release(&mut self) {
        self.holds = self.holds.saturating_sub(1);
        if self.holds > 0 {
            return;
        }
        let mut held = std::mem::take(&mut self.held);
        held.sort_by_key(|e| e.t);
        let last = held.last().map(|e| e.t);
        for ev in held {
            self.send(Sent::Event(ev));
        }
        if let Some(t) = last {
            self.publish(t);
        }
    }

    fn idle(&mut self) {
        if self.holds == 0 {
            self.publish(crate::clock::monotonic_ns());
        }
    }

    fn ready(&mut self, sources: &BTreeMap<String, String>) {
        self.send(Sent::Ready(sources.clone()));
    }
}

impl ControllerSource {
    /// The controller's watermark; read it before [`ControllerSource::try_recv`].
    pub fn watermark(&self) -> u64 {
        self.watermark.load(Ordering::SeqCst)
    }

    /// The next message, waiting for it; `None` once the controller returned.
    pub async fn recv(&mut self) -> Option<Sent> {
        self.rx.recv().await
    }

    /// A message already waiting, if any; `Err(true)` once the controller returned.
    pub fn try_recv(&mut self) -> Result<Sent, bool> {
        self.rx
            .try_recv()
            .map_err(|e| matches!(e, mpsc::error::TryRecvError::Disconnected))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::EventKind;

    fn mark(t: u64) -> Event {
        Event {
            t,
            pid: None,
            kind: EventKind::Mark {
                label: String::new(),
            },
        }
    }

    #[test]
    fn held_events_keep_the_watermark_until_they_leave_in_order() {
        let (mut em, mut src) = channel();
        let w0 = src.watermark();
        em.emit(mark(w0 + 10));
        assert_eq!(src.watermark(), w0 + 10);
        em.hold(w0 + 20);
        em.emit(mark(w0 + 40));
        em.emit(mark(w0 + 30));
        // Nothing of the hold is out, and the watermark did not move past it.
        assert_eq!(src.watermark(), w0 + 10);
        assert!(matches!(src.try_recv(), Ok(Sent::Event(e)) if e.t == w0 + 10));
        assert!(matches!(src.try_recv(), Err(false)));
        em.release();
        let ts: Vec<u64> = std::iter::from_fn(|| match src.try_recv() {
            Ok(Sent::Event(e)) => Some(e.t),
            _ => None,
        })
        .collect();
        assert_eq!(ts, [w0 + 30, w0 + 40]);
        assert_eq!(src.watermark(), w0 + 40);
        drop(em);
        assert!(matches!(src.try_recv(), Err(true)));
    }
}
