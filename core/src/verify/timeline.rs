//! One device's migration state over time (DESIGN.md "Verification rules"), fed one event at a
//! time: known, in transition, unknown or unfinished, every quiescent period it went through and
//! every span in which its state was unknown. The rules ask it "quiescent at t?" and "judge this
//! window"; the state semantics live here once.
//!
//! - A device's state is the `to` of its last successful `set_done` (RUNNING after a successful
//!   `reset`, a `get`'s answer outside a request, or its declared state).
//! - Between `set` and `set_done` it is in transition from S toward T. Within a multi-arc request
//!   it has *reached* each intermediate state by the time of the `step` that leaves it (the kernel
//!   computes the next arc only once the previous one is done, `vfio_mig_get_next_state()` in
//!   `drivers/vfio/vfio_main.c`, called by the driver once per arc): after a step `a -> b` it is in
//!   transition from `a` toward T. DMA and interrupts are allowed during a transition when its
//!   origin or T is DMA-allowed, so a quiescing request is quiescent from the first step whose
//!   `from` is quiescent, and a resuming request (T DMA-allowed) allows them from its `set`.
//! - A failed SET leaves the state unknown until the next `get` — except one the kernel refused
//!   before any arc ran (no `step` for it while steps are observable and none were lost), which
//!   leaves the state as it was, as if the request had never begun.
//! - A SET still open at `end` leaves the device unfinished.
//!
//! Reports draw the same facts as [`Segment`]s: [`DeviceTimeline::feed`] returns the piece of
//! the timeline an event closed (a stable state, or a request from its `set` to its
//! `set_done`), and a request that entered quiescence is a *quiesce*, the one definition the
//! verifier's quiesce statistics and every exporter count.

use crate::{
    model::MigState,
    trace::{EventKind, KindRef},
    verify::errno_name,
};

/// `Period::end` of a period that has not ended.
pub const OPEN: u64 = u64::MAX;

/// A SET in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The state the request started from (None: unknown).
    pub from: Option<MigState>,
    /// The request's target.
    pub toward: MigState,
    /// The last state the device is known to have reached: `from`, then the `from` of each step.
    pub reached: Option<MigState>,
    /// Where the traced steps have taken it: the `to` of the last step (`from` before any). The
    /// next step must start here.
    pub stepped_to: Option<MigState>,
    /// Steps seen for this request.
    pub steps: u32,
    /// Events of this request may have been lost (a `lost` naming the device, or naming none,
    /// arrived while it was open): its step tracking is unknown.
    pub steps_lost: bool,
    /// When the SET began.
    pub t: u64,
}

/// Where a device is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Known(MigState),
    Transition(Transition),
    Unknown,
    /// A SET still open at `end`: nothing after it can be judged.
    Unfinished(Transition),
}

/// What began a period (for messages).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// The device was declared in this state.
    Declared,
    /// A SET into this state returned 0 (or a reset did).
    Completed,
    /// A step left this state: the device had reached it.
    Reached,
    /// A GET reported this state.
    ReadBack,
    /// A SET failed after arcs ran (or a reset failed).
    Failed,
    /// A SET was refused before any arc ran; the device stayed where it was.
    Refused,
}

/// A continuous span `[start, end)` of a device's timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Period {
    pub start: u64,
    /// Exclusive; [`OPEN`] while the period lasts.
    pub end: u64,
    /// The state whose arrival began it (None for an unknown span).
    pub state: Option<MigState>,
    pub entry: Entry,
}

/// A closed piece of a device's timeline, `[start, end]` in trace time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub start: u64,
    pub end: u64,
    pub what: SegKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegKind {
    /// A stable state (`None`: unknown, after a failed SET or reset until a GET tells).
    State(Option<MigState>),
    /// A request from its `set` to its end (`from` None: unknown).
    Transition {
        from: Option<MigState>,
        to: MigState,
        /// The SET's return value; `None`: it never returned in the trace (open at the end,
        /// or a reset or another SET came first).
        ret: Option<i32>,
        /// A successful SET into a quiescent state from a state that was not quiescent: the
        /// DMA stop itself, whose duration is the quiesce time.
        quiesce: bool,
    },
}

impl Segment {
    pub fn duration(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// The quiesce time, when this segment is a quiesce.
    pub fn quiesce_ns(&self) -> Option<u64> {
        matches!(self.what, SegKind::Transition { quiesce: true, .. }).then(|| self.duration())
    }
}

impl SegKind {
    /// `RUNNING`, `UNKNOWN`, `RUNNING -> RUNNING_P2P`, `quiesce RUNNING -> RUNNING_P2P`.
    pub fn label(&self) -> String {
        let n = |s: &Option<MigState>| s.map_or("UNKNOWN", |s| s.name());
        match self {
            SegKind::State(s) => n(s).to_owned(),
            SegKind::Transition {
                from,
                to,
                ret,
                quiesce,
            } => format!(
                "{}{} -> {}{}",
                if *quiesce { "quiesce " } else { "" },
                n(from),
                to.name(),
                match ret {
                    Some(0) => String::new(),
                    Some(r) => format!(" (failed {})", errno_name(*r)),
                    None => " (never returned)".to_owned(),
                }
            ),
        }
    }
}

/// Which periods evidence is judged against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Any quiescent state (the NDMA states and the stopped ones).
    Quiescent,
    /// STOP, STOP_COPY, RESUMING only.
    Stopped,
}

/// The verdict on evidence of a moment or a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Judgement {
    Allowed,
    /// Part of the window lies in this period, part outside any.
    Maybe(Period),
    /// The whole window lies in this period.
    Violation(Period),
}

/// How the next `step` of the device can be judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepTracking {
    /// Within a request toward `toward`; the steps have taken the device to `at` (None: unknown).
    Expect {
        at: Option<MigState>,
        toward: MigState,
    },
    /// No request is open.
    Outside,
    /// Events were lost since the request (or since the last one) began: the step cannot be
    /// judged.
    Untracked,
}

/// Disjoint periods sorted by start; only the last may be open.
///
/// Memory: a period begins only when the device *enters* a quiescent phase (a `device`,
/// `set_done`, `step`, `get` or `reset` that changes it), never with evidence, so the list grows
/// with the number of quiesces of the device, not with the number of events; windowed evidence may
/// reach back to any of them, so none can be dropped.
#[derive(Clone, Debug, Default)]
pub struct Periods(Vec<Period>);

impl Periods {
    pub fn all(&self) -> &[Period] {
        &self.0
    }

    /// The period in progress.
    pub fn current(&self) -> Option<&Period> {
        self.0.last().filter(|p| p.end == OPEN)
    }

    fn set(&mut self, on: bool, t: u64, state: Option<MigState>, entry: Entry) {
        match self.0.last_mut() {
            // Empty: it contains no instant.
            Some(p) if p.end == OPEN && !on && p.start == t => {
                self.0.pop();
            }
            Some(p) if p.end == OPEN && !on => p.end = t,
            Some(p) if p.end == OPEN => {}
            // Continuous with the previous period: one period.
            Some(p) if on && p.end == t => p.end = OPEN,
            _ if on => self.0.push(Period {
                start: t,
                end: OPEN,
                state,
                entry,
            }),
            _ => {}
        }
    }

    /// Reopens the last period if it ended at `t` (the request that ended it never happened).
    fn reopen_ended_at(&mut self, t: u64) {
        if let Some(p) = self.0.last_mut()
            && p.end == t
        {
            p.end = OPEN;
        }
    }

    /// Judges something that happened at one instant of `[first, last]`.
    fn judge(&self, first: u64, last: u64) -> Judgement {
        // Most evidence is about now: the latest period decides without a search.
        let i = match self.0.last() {
            None => return Judgement::Allowed,
            Some(p) if p.start <= first => self.0.len(),
            Some(_) => self.0.partition_point(|p| p.start <= first),
        };
        if let Some(p) = i.checked_sub(1).and_then(|k| self.0.get(k)) {
            if last < p.end {
                return Judgement::Violation(*p);
            }
            if first < p.end {
                return Judgement::Maybe(*p);
            }
        }
        match self.0.get(i) {
            Some(p) if p.start <= last => Judgement::Maybe(*p),
            _ => Judgement::Allowed,
        }
    }
}

/// One device's state over time. See the module documentation for the semantics.
#[derive(Clone, Debug)]
pub struct DeviceTimeline {
    phase: Phase,
    /// When the current [`Segment`] began: the `set` of an open request, else the event that
    /// put the device in its state.
    since: u64,
    /// The device's FSM steps are observable (its `transitions` source is ok).
    steps_observable: bool,
    /// A step was seen for this device.
    steps_seen: bool,
    /// Events were lost while no request was open: steps before the next `set` may belong to a
    /// request whose `set` was lost.
    steps_unknown: bool,
    quiet: Periods,
    stopped: Periods,
    unknown: Periods,
}

impl DeviceTimeline {
    /// A device declared (or first seen) at `t` in `state`; `None`: its state is not known
    /// (its declaration's state is no evidence, see [`crate::verify`]'s `declare`).
    pub fn new(t: u64, state: Option<MigState>, steps_observable: bool) -> Self {
        let mut tl = DeviceTimeline {
            phase: state.map_or(Phase::Unknown, Phase::Known),
            since: t,
            steps_observable,
            steps_seen: false,
            steps_unknown: false,
            quiet: Periods::default(),
            stopped: Periods::default(),
            unknown: Periods::default(),
        };
        tl.refresh(t, Entry::Declared);
        tl
    }

    /// Whether the device's FSM steps are observable (from its latest declaration's sources).
    pub fn set_steps_observable(&mut self, on: bool) {
        self.steps_observable = on;
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// When the current phase began (a request: its `set`).
    pub fn since(&self) -> u64 {
        self.since
    }

    /// The piece of the timeline in progress, closed at `end` (a request still open is one
    /// that never returned).
    pub fn open_segment(&self, end: u64) -> Segment {
        self.segment_until(end, None, None)
    }

    /// The current piece, ended at `t`: a request with `ret` (`to`: the state a successful
    /// SET entered), or the stable state.
    fn segment_until(&self, t: u64, ret: Option<i32>, to: Option<MigState>) -> Segment {
        let what = match self.phase {
            Phase::Transition(tr) | Phase::Unfinished(tr) => {
                let entered = if ret == Some(0) { to } else { None };
                SegKind::Transition {
                    from: tr.from,
                    to: tr.toward,
                    ret,
                    quiesce: entered.is_some_and(MigState::quiescent)
                        && !tr.from.is_some_and(MigState::quiescent),
                }
            }
            Phase::Known(s) => SegKind::State(Some(s)),
            Phase::Unknown => SegKind::State(None),
        };
        Segment {
            start: self.since,
            end: t,
            what,
        }
    }

    /// Moves to `phase` at `t`: the segment in progress closes, unless the device stays in
    /// the same stable state.
    fn enter(&mut self, t: u64, phase: Phase, closed: Segment) -> Option<Segment> {
        let same = self.phase == phase && matches!(phase, Phase::Known(_) | Phase::Unknown);
        self.phase = phase;
        if same {
            return None;
        }
        self.since = t;
        Some(closed)
    }

    /// The known state (None in transition, unknown or unfinished).
    pub fn known(&self) -> Option<MigState> {
        match self.phase {
            Phase::Known(s) => Some(s),
            _ => None,
        }
    }

    /// The state the device is in, or has reached within its open request.
    pub fn current(&self) -> Option<MigState> {
        match self.phase {
            Phase::Known(s) => Some(s),
            Phase::Transition(tr) | Phase::Unfinished(tr) => tr.reached,
            Phase::Unknown => None,
        }
    }

    /// The open request, if any (unfinished included).
    pub fn request(&self) -> Option<&Transition> {
        match &self.phase {
            Phase::Transition(tr) | Phase::Unfinished(tr) => Some(tr),
            _ => None,
        }
    }

    /// A step was seen for this device: from then on a completed SET must be reached by them.
    pub fn steps_seen(&self) -> bool {
        self.steps_seen
    }

    /// How the device's next step can be judged.
    pub fn step_tracking(&self) -> StepTracking {
        match self.request() {
            Some(tr) if tr.steps_lost => StepTracking::Untracked,
            Some(tr) => StepTracking::Expect {
                at: tr.stepped_to,
                toward: tr.toward,
            },
            None if self.steps_unknown => StepTracking::Untracked,
            None => StepTracking::Outside,
        }
    }

    pub fn periods(&self, scope: Scope) -> &Periods {
        match scope {
            Scope::Quiescent => &self.quiet,
            Scope::Stopped => &self.stopped,
        }
    }

    /// Spans in which the device's state was unknown (after a failed SET or reset, until a GET).
    pub fn unknown_spans(&self) -> &Periods {
        &self.unknown
    }

    /// Whether the device was ever quiescent.
    pub fn ever_quiescent(&self) -> bool {
        !self.quiet.0.is_empty()
    }

    /// Whether the device was quiescent (in `scope`) at instant `t`.
    pub fn quiescent_at(&self, scope: Scope, t: u64) -> bool {
        matches!(self.periods(scope).judge(t, t), Judgement::Violation(_))
    }

    /// Judges evidence forbidden in `scope`: at `t`, or with `window` `[t0, t1]` somewhere in
    /// `(t0, t1]` (whole nanoseconds: its first possible instant is `t0 + 1`; a window with
    /// nothing in it is taken as the instant `t1`). Every period counts, however long ago it
    /// ended.
    pub fn judge(&self, scope: Scope, t: u64, window: Option<(u64, u64)>) -> Judgement {
        let (first, last) = match window {
            Some((t0, t1)) => (t0.saturating_add(1).min(t1), t1),
            None => (t, t),
        };
        self.periods(scope).judge(first, last)
    }

    /// Feeds one event about this device (a `lost` naming it or naming no device, and `end`,
    /// count too). Events are fed in trace order. Returns the [`Segment`] the event closed.
    pub fn feed(&mut self, t: u64, kind: &EventKind) -> Option<Segment> {
        self.feed_ref(t, kind.as_ref())
    }

    /// [`DeviceTimeline::feed`] for a borrowed event.
    pub fn feed_ref(&mut self, t: u64, kind: KindRef<'_>) -> Option<Segment> {
        match kind {
            KindRef::Set { to, .. } => {
                let from = self.current();
                let closed = self.segment_until(t, None, None);
                let phase = Phase::Transition(Transition {
                    from,
                    toward: to,
                    reached: from,
                    stepped_to: from,
                    steps: 0,
                    steps_lost: false,
                    t,
                });
                let closed = self.enter(t, phase, closed);
                self.steps_unknown = false;
                self.refresh(t, Entry::Reached);
                closed
            }
            KindRef::Step { from, to, .. } => {
                self.steps_seen = true;
                if let Phase::Transition(tr) | Phase::Unfinished(tr) = &mut self.phase {
                    tr.steps += 1;
                    tr.reached = Some(from);
                    tr.stepped_to = Some(to);
                    self.refresh(t, Entry::Reached);
                }
                None
            }
            KindRef::SetDone { to, ret, .. } => {
                let req = self.request().copied();
                let closed = self.segment_until(t, Some(ret), Some(to));
                if ret == 0 {
                    let closed = self.enter(t, Phase::Known(to), closed);
                    self.refresh(t, Entry::Completed);
                    closed
                } else if let Some(r) = req
                    && r.steps == 0
                    && !r.steps_lost
                    && self.steps_observable
                {
                    // Refused up front: the request never happened.
                    let closed = self.enter(t, r.from.map_or(Phase::Unknown, Phase::Known), closed);
                    for p in [&mut self.quiet, &mut self.stopped, &mut self.unknown] {
                        p.reopen_ended_at(r.t);
                    }
                    self.refresh(t, Entry::Refused);
                    closed
                } else {
                    let closed = self.enter(t, Phase::Unknown, closed);
                    self.refresh(t, Entry::Failed);
                    closed
                }
            }
            KindRef::Get { state, .. } => {
                if self.request().is_some() {
                    return None;
                }
                let closed = self.segment_until(t, None, None);
                let closed = self.enter(t, Phase::Known(state), closed);
                self.refresh(t, Entry::ReadBack);
                closed
            }
            KindRef::Reset { ret, .. } => {
                let (phase, entry) = if ret == 0 {
                    (Phase::Known(MigState::Running), Entry::Completed)
                } else {
                    (Phase::Unknown, Entry::Failed)
                };
                // A reset during a SET: the SET never returned in the trace.
                let closed = self.segment_until(t, None, None);
                let closed = self.enter(t, phase, closed);
                self.refresh(t, entry);
                closed
            }
            KindRef::End => {
                if let Phase::Transition(tr) = self.phase {
                    self.phase = Phase::Unfinished(tr);
                }
                None
            }
            KindRef::Dma { .. }
            | KindRef::Irq { .. }
            | KindRef::Map { .. }
            | KindRef::Unmap { .. }
            | KindRef::Data { .. } => None,
            KindRef::Owned(k) => match k {
                EventKind::Lost { .. } => {
                    match &mut self.phase {
                        Phase::Transition(tr) | Phase::Unfinished(tr) => tr.steps_lost = true,
                        Phase::Known(_) | Phase::Unknown => self.steps_unknown = true,
                    }
                    None
                }
                // A re-declaration brings new facts (flags, sources) but not a new history: its
                // `state` (RUNNING when omitted) is not a transition the trace saw.
                EventKind::Device { .. }
                | EventKind::PrecopyInfo { .. }
                | EventKind::DataSize { .. }
                | EventKind::CorruptLoad { .. }
                | EventKind::Regs { .. }
                | EventKind::DirtyReport { .. }
                | EventKind::IrqBin { .. }
                | EventKind::PrecopyInfoV2 { .. }
                | EventKind::Mark { .. } => None,
                // Never here: `EventKind::as_ref` gives these their borrowed variants.
                EventKind::Set { .. }
                | EventKind::Step { .. }
                | EventKind::SetDone { .. }
                | EventKind::Get { .. }
                | EventKind::Reset { .. }
                | EventKind::Dma { .. }
                | EventKind::Irq { .. }
                | EventKind::Map { .. }
                | EventKind::Unmap { .. }
                | EventKind::Data { .. }
                | EventKind::End => self.feed_ref(t, k.as_ref()),
            },
        }
    }

    /// Recomputes which periods are open after the phase changed at `t`.
    fn refresh(&mut self, t: u64, entry: Entry) {
        let (at, quiet, stopped) = match self.phase {
            Phase::Known(s) => (Some(s), s.quiescent(), s.stopped()),
            Phase::Transition(tr) | Phase::Unfinished(tr) => (
                tr.reached,
                tr.reached.is_some_and(MigState::quiescent) && tr.toward.quiescent(),
                tr.reached.is_some_and(MigState::stopped) && tr.toward.stopped(),
            ),
            Phase::Unknown => (None, false, false),
        };
        self.quiet.set(quiet, t, at, entry);
        self.stopped.set(stopped, t, at, entry);
        self.unknown.set(at.is_none(), t, None, entry);
    }
}
