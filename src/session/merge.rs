//! The merger: every source's events in one time order, released once no source can still
//! send anything earlier.
//!
//! Each source has a *watermark*, a time no later event of it can precede: the probe's is the
//! instant it was last read minus [`HOLD_BACK_NS`] (records submitted by different CPUs reach
//! the ring slightly out of order; capture holds the newest back by that much), the
//! controller's the time it last said it had nothing older to emit
//! ([`super::sources::controller`]). (A file is a session's only source and already in
//! order: it needs no merging.) Held events with `t` at or before the lowest watermark leave in time order; an
//! event that arrives behind what already left cannot be written in order and is counted as
//! `lost` (`source: late`) instead, so the verdict says the trace is incomplete.
//!
//! `drive`'s own events meet the probe's here, once:
//! - The probe's ioctl-derived events of our own process (`device`, `set`, `set_done`, `get`,
//!   `reset`, `data`, `map`, `unmap`) are dropped: the controller emitted them itself. Its
//!   `device` declarations of a device the controller declared are dropped whatever their
//!   pid (the controller's carry the flags it read and its ctx), and so is any `end` (the
//!   session ends the trace).
//! - Each controller `set` and `set_done` takes the time the probe saw the same SET enter and
//!   leave the kernel (same device, target and result, inside the controller's own
//!   `[set, set_done]`): the controller stamps them in userspace, before the ioctl and after
//!   it returned; the kernel's instants are the transition's true bounds, so evidence is
//!   judged against the moment the device was quiescent, not the moment the controller
//!   noticed. Until the probe's entry of an open SET arrived, nothing at or after the
//!   controller's `set` leaves; a `set_done` waits for the probe's exit, or for the probe to
//!   pass the controller's return without one (it then keeps the controller's time). The
//!   probe's side may come first: a SET the witness watches is emitted inside a hold
//!   ([`crate::vfio::Emit::hold`]) and reaches the merger only after the SET returned, by
//!   when the probe already showed its entry and exit. Those wait (unpaired) until the
//!   controller's SET arrives, or until the controller's watermark passes them (no SET of
//!   the controller can then contain them).

use std::collections::{BTreeMap, HashSet};

use crate::model::MigState;
use crate::trace::{Event, EventKind};

/// How long the probe's newest records are held back so that records from different CPUs
/// leave in time order (records carry their own timestamps; submission order can differ
/// slightly). The one hold-back of the session: capture releases records up to the read
/// instant minus this, and the probe's watermark is that instant.
pub const HOLD_BACK_NS: u64 = 20_000_000;

/// `lost` events for what arrived after its place in the order had been released.
pub const LOST_LATE: &str = "late";

/// Which source an event came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    Probe,
    Controller,
}

const ORIGINS: [Origin; 2] = [Origin::Probe, Origin::Controller];

fn slot(o: Origin) -> usize {
    match o {
        Origin::Probe => 0,
        Origin::Controller => 1,
    }
}

/// A source's promise: none of its later events is earlier than this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mark {
    /// Not part of this session.
    Absent,
    /// Live, with its watermark.
    At(u64),
    /// Ended: it sends nothing more.
    Ended,
}

/// A controller SET seen from both sides while its times are not settled.
#[derive(Debug)]
struct OpenSet {
    dev: String,
    to: MigState,
    /// The controller's own `set` time.
    t_a: u64,
    /// The controller's `set` until it left for the held set.
    set: Option<Event>,
    /// The probe's entry time, once seen.
    entry: Option<u64>,
    /// The controller's `set_done` (its own time `t_b`), once it arrived.
    done: Option<Event>,
    /// The probe's exit (time, ret), once seen.
    exit: Option<(u64, i32)>,
    /// Both events left.
    settled: bool,
}

impl OpenSet {
    fn t_b(&self) -> Option<u64> {
        self.done.as_ref().map(|d| d.t)
    }
    /// Whether the probe's SET of `dev` toward `to` at `t` can be this one's entry.
    fn takes_entry(&self, dev: &str, to: MigState, t: u64) -> bool {
        self.dev == dev
            && self.to == to
            && self.entry.is_none()
            && t >= self.t_a
            && self.t_b().is_none_or(|b| t <= b)
    }
    /// Whether the probe's return of `dev`'s SET toward `to` at `t` can be this one's exit.
    fn takes_exit(&self, dev: &str, to: MigState, ret: i32, t: u64) -> bool {
        self.dev == dev
            && self.to == to
            && self.exit.is_none()
            && t >= self.entry.unwrap_or(self.t_a)
            && self
                .done
                .as_ref()
                .is_none_or(|d| t <= d.t && done_ret(d) == ret)
    }
}

/// The probe's side of one of our SETs, seen before the controller's.
#[derive(Debug)]
struct Unpaired {
    dev: String,
    to: MigState,
    t: u64,
    /// `None`: the entry (`set`); `Some(ret)`: the exit (`set_done`).
    exit: Option<i32>,
}

/// Events from every source, out in one time order.
pub struct Merger {
    /// Held events by (time, arrival) so ties keep arrival order.
    held: BTreeMap<(u64, u64), Event>,
    seq: u64,
    marks: [Mark; 2],
    /// Everything at or before this has left (the output's last time).
    frontier: u64,
    released_any: bool,
    late: u64,
    /// Our process: its ioctl-derived probe events are the controller's own.
    pid: u32,
    /// Whether the probe sees SETs (`transitions` ok): only then are SETs paired.
    pair: bool,
    /// The controller's SETs whose times are not settled, oldest first.
    open: Vec<OpenSet>,
    /// The probe's entries and exits of our SETs that came before the controller's own.
    unpaired: Vec<Unpaired>,
    declared: HashSet<String>,
}

impl Merger {
    /// A merger over the given sources; `pid` is the controller's process, `pair` whether
    /// the probe's SETs are there to pair with the controller's.
    pub fn new(sources: &[Origin], pid: u32, pair: bool) -> Self {
        let mut marks = [Mark::Absent; 2];
        for o in sources {
            marks[slot(*o)] = Mark::At(0);
        }
        Merger {
            held: BTreeMap::new(),
            seq: 0,
            marks,
            frontier: 0,
            released_any: false,
            late: 0,
            pid,
            pair: pair && sources.contains(&Origin::Probe) && sources.contains(&Origin::Controller),
            open: Vec::new(),
            unpaired: Vec::new(),
            declared: HashSet::new(),
        }
    }

    /// Events held, waiting for their turn.
    pub fn held(&self) -> usize {
        self.held.len()
            + self
                .open
                .iter()
                .map(|o| usize::from(o.set.is_some()) + usize::from(o.done.is_some()))
                .sum::<usize>()
    }

    /// `origin` sends nothing earlier than `t` from now on.
    pub fn advance(&mut self, origin: Origin, t: u64) {
        if let Mark::At(w) = &mut self.marks[slot(origin)] {
            *w = (*w).max(t);
        }
        if origin == Origin::Probe {
            self.settle_open();
        } else if let Mark::At(w) = self.marks[slot(origin)] {
            // Nothing the controller sends from now on is stamped before `w`, and the probe's
            // entry of a SET is at or after the controller's `set`.
            self.unpaired.retain(|u| u.t >= w);
        }
    }

    /// `origin` sends nothing more.
    pub fn end(&mut self, origin: Origin) {
        if self.marks[slot(origin)] != Mark::Absent {
            self.marks[slot(origin)] = Mark::Ended;
        }
        if origin == Origin::Controller {
            self.unpaired.clear();
        }
        self.settle_open();
    }

    /// Takes one event of `origin`.
    pub fn push(&mut self, origin: Origin, ev: Event) {
        match origin {
            Origin::Controller => self.push_controller(ev),
            Origin::Probe => self.push_probe(ev),
        }
    }

    fn hold(&mut self, ev: Event) {
        if self.released_any && ev.t < self.frontier {
            self.late += 1;
            return;
        }
        self.seq += 1;
        self.held.insert((ev.t, self.seq), ev);
    }

    fn push_controller(&mut self, ev: Event) {
        match &ev.kind {
            EventKind::Device { dev, .. } => {
                self.declared.insert(dev.clone());
            }
            EventKind::Set { dev, to } if self.pair => {
                let mut o = OpenSet {
                    dev: dev.clone(),
                    to: *to,
                    t_a: ev.t,
                    set: None,
                    entry: None,
                    done: None,
                    exit: None,
                    settled: false,
                };
                if let Some(k) = self
                    .unpaired
                    .iter()
                    .position(|u| u.exit.is_none() && o.takes_entry(&u.dev, u.to, u.t))
                {
                    o.entry = Some(self.unpaired.remove(k).t);
                }
                o.set = Some(ev);
                self.open.push(o);
                self.settle_open();
                return;
            }
            EventKind::SetDone { dev, .. } if self.pair => {
                if let Some(o) = self
                    .open
                    .iter_mut()
                    .rev()
                    .find(|o| o.dev == *dev && o.done.is_none() && !o.settled)
                {
                    o.done = Some(ev);
                    if let Some(k) = self.unpaired.iter().position(|u| {
                        u.exit
                            .is_some_and(|ret| o.takes_exit(&u.dev, u.to, ret, u.t))
                    }) {
                        let u = self.unpaired.remove(k);
                        o.exit = u.exit.map(|ret| (u.t, ret));
                    }
                    self.settle_open();
                    return;
                }
            }
            _ => {}
        }
        self.hold(ev);
    }

    fn push_probe(&mut self, ev: Event) {
        let ours = ev.pid == Some(self.pid);
        match &ev.kind {
            EventKind::End => return,
            EventKind::Device { dev, .. } if ours || self.declared.contains(dev.as_str()) => {
                return;
            }
            EventKind::Set { dev, to } if ours => {
                if let Some(o) = self.open.iter_mut().find(|o| o.takes_entry(dev, *to, ev.t)) {
                    o.entry = Some(ev.t);
                    self.settle_open();
                } else if self.pair {
                    self.unpaired.push(Unpaired {
                        dev: dev.clone(),
                        to: *to,
                        t: ev.t,
                        exit: None,
                    });
                }
                return;
            }
            EventKind::SetDone { dev, to, ret, .. } if ours => {
                if let Some(o) = self
                    .open
                    .iter_mut()
                    .find(|o| o.takes_exit(dev, *to, *ret, ev.t))
                {
                    o.exit = Some((ev.t, *ret));
                    self.settle_open();
                } else if self.pair {
                    self.unpaired.push(Unpaired {
                        dev: dev.clone(),
                        to: *to,
                        t: ev.t,
                        exit: Some(*ret),
                    });
                }
                return;
            }
            EventKind::Get { .. }
            | EventKind::Reset { .. }
            | EventKind::Data { .. }
            | EventKind::Map { .. }
            | EventKind::Unmap { .. }
                if ours =>
            {
                return;
            }
            _ => {}
        }
        self.hold(ev);
    }

    /// Moves the open SETs' events whose times are now known into the held set.
    fn settle_open(&mut self) {
        if self.open.is_empty() {
            return;
        }
        let probe = self.marks[slot(Origin::Probe)];
        // The probe passed `t`: whatever of ours it did not show by then, it missed.
        let passed = |t: Option<u64>| match (t, probe) {
            (Some(t), Mark::At(w)) => w >= t,
            (Some(_), Mark::Ended | Mark::Absent) => true,
            (None, _) => false,
        };
        let mut ready = Vec::new();
        for o in self.open.iter_mut() {
            let done_passed = passed(o.t_b());
            if o.set.is_some()
                && (o.entry.is_some() || done_passed)
                && let Some(mut s) = o.set.take()
            {
                s.t = o.entry.unwrap_or(s.t);
                ready.push(s);
            }
            let exit = o
                .exit
                .filter(|(_, ret)| o.done.as_ref().is_some_and(|d| done_ret(d) == *ret));
            if o.set.is_none()
                && (exit.is_some() || done_passed)
                && let Some(mut d) = o.done.take()
            {
                if let Some((t, _)) = exit {
                    d.t = t;
                }
                ready.push(d);
                o.settled = true;
            }
        }
        self.open.retain(|o| !o.settled);
        for ev in ready {
            self.hold(ev);
        }
    }

    /// The latest time up to which held events may leave.
    fn bound(&self) -> u64 {
        let mut b = u64::MAX;
        for o in ORIGINS {
            if let Mark::At(w) = self.marks[slot(o)] {
                b = b.min(w);
            }
        }
        // An open SET's `set` takes a time at or after the controller's: nothing after that
        // may leave before it.
        for o in &self.open {
            if o.set.is_some() {
                b = b.min(o.t_a);
            }
        }
        b
    }

    /// Every event that may leave now, in time order (a `lost` first for late arrivals).
    pub fn release(&mut self) -> Vec<Event> {
        let bound = self.bound();
        let mut out = Vec::new();
        if self.late > 0 {
            out.push(Event {
                t: self.frontier,
                pid: None,
                kind: EventKind::Lost {
                    n: std::mem::take(&mut self.late),
                    source: LOST_LATE.to_owned(),
                    dev: None,
                },
            });
        }
        while let Some(entry) = self.held.first_entry() {
            if entry.key().0 > bound {
                break;
            }
            let ev = entry.remove();
            self.frontier = ev.t;
            self.released_any = true;
            out.push(ev);
        }
        out
    }

    /// Ends every source and releases everything left (an open SET with what is known).
    pub fn finish(&mut self) -> Vec<Event> {
        for o in ORIGINS {
            self.end(o);
        }
        // A `set` without `set_done` (none should be left: the controller always emits one)
        // leaves at its own time.
        let rest: Vec<Event> = self
            .open
            .drain(..)
            .flat_map(|o| o.set.into_iter().chain(o.done))
            .collect();
        for ev in rest {
            self.hold(ev);
        }
        self.release()
    }
}

fn done_ret(ev: &Event) -> i32 {
    match ev.kind {
        EventKind::SetDone { ret, .. } => ret,
        _ => 0,
    }
}

#[cfg(test)]
mod tests;
