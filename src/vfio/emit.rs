//! Where the controller's events go: each one as it happens, to an [`Emit`] (the streaming
//! session's channel in `drive`, a [`Collect`] in tests), never into a list the controller
//! keeps.
//!
//! The controller stamps most events as it emits them, so they leave in time order. Two kinds
//! are stamped earlier than events already emitted: the witness's findings (its watcher
//! sweeps beside a SET and reports once the SET returned; each finding carries the instant of
//! the comparison that saw it) and device DMA-log reports (stamped when the check began). The
//! controller brackets them with [`Emit::hold`] / [`Emit::release`]: everything emitted inside
//! a hold is stamped at or after the hold's time and leaves, in time order, at the release.

use std::collections::BTreeMap;

use crate::trace::Event;

/// The controller's output.
pub trait Emit {
    /// One event. Outside a hold its time is at or after every event emitted before it.
    fn emit(&mut self, ev: Event);
    /// From here until the matching [`Emit::release`], events may be stamped as early as `t`
    /// (and never earlier), in any order. Holds nest.
    fn hold(&mut self, t: u64);
    /// Ends the innermost hold; at the outermost one the held events leave in time order.
    fn release(&mut self);
    /// The controller is waiting (dwelling, warming up) with nothing stamped that it has not
    /// emitted: whatever it emits next is stamped from now on.
    fn idle(&mut self) {}
    /// Set-up is done, before any device state was changed: the controller's own evidence
    /// sources (`witness`, `dirty_log`) as a trace header should declare them.
    fn ready(&mut self, _sources: &BTreeMap<String, String>) {}
}

/// Keeps every event in memory, in time order (tests and small tools).
#[derive(Debug, Default)]
pub struct Collect {
    pub events: Vec<Event>,
    /// What [`Emit::ready`] said, if set-up completed.
    pub sources: Option<BTreeMap<String, String>>,
    /// Where each open hold began in `events`.
    holds: Vec<usize>,
}

impl Emit for Collect {
    fn emit(&mut self, ev: Event) {
        self.events.push(ev);
    }

    fn hold(&mut self, _t: u64) {
        self.holds.push(self.events.len());
    }

    fn release(&mut self) {
        if let Some(from) = self.holds.pop()
            && self.holds.is_empty()
        {
            self.events[from..].sort_by_key(|e| e.t);
        }
    }

    fn ready(&mut self, sources: &BTreeMap<String, String>) {
        self.sources = Some(sources.clone());
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
                label: t.to_string(),
            },
        }
    }

    #[test]
    fn held_events_leave_in_time_order_at_the_outermost_release() {
        let mut c = Collect::default();
        c.emit(mark(1));
        c.hold(5);
        c.emit(mark(9));
        c.hold(6);
        c.emit(mark(7));
        c.release();
        // Still inside the outer hold: nothing is reordered yet.
        assert_eq!(c.events.iter().map(|e| e.t).collect::<Vec<_>>(), [1, 9, 7]);
        c.emit(mark(5));
        c.release();
        assert_eq!(
            c.events.iter().map(|e| e.t).collect::<Vec<_>>(),
            [1, 5, 7, 9]
        );
    }
}
