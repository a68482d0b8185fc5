//! The verifier: every rule of DESIGN.md over a stream of events, in one pass, with memory
//! that grows with the number of devices and contexts, not with the number of events.
//!
//! State semantics (DESIGN.md, "Verification rules"): a device's state at `t` is the `to` of
//! its last successful `set_done` (or RUNNING after a successful `reset`, or its declared
//! state). Between `set` and `set_done` it is in transition from S toward T; DMA and interrupts
//! are allowed during a transition when S or T is RUNNING or PRE_COPY. After a failed SET the
//! state is unknown until the next `get`.

use std::{
    collections::{BTreeMap, HashMap},
    hash::{BuildHasherDefault, Hasher},
    path::Path,
};

use crate::{
    model::{MigFlags, MigState, StepError, is_hazard, next_state, path as fsm_path},
    trace::{
        AnyReader, DataDir, Event, EventKind, Header, ReadWarning, TraceError, open_any, source,
    },
};

/// Stable rule identifiers (DESIGN.md rule table), violations first, then warnings.
pub mod rule {
    pub const ILLEGAL_ARC: &str = "illegal-arc";
    pub const UNSUPPORTED_ACCEPTED: &str = "unsupported-accepted";
    pub const SET_FAILED: &str = "set-failed";
    pub const STATE_MISMATCH: &str = "state-mismatch";
    pub const DMA_AFTER_QUIESCE: &str = "dma-after-quiesce";
    pub const IRQ_AFTER_QUIESCE: &str = "irq-after-quiesce";
    pub const STOP_WHILE_PEER_RUNNING: &str = "stop-while-peer-running";
    pub const SAVE_WHILE_PEER_RUNNING: &str = "save-while-peer-running";
    pub const RUN_WHILE_PEER_STOPPED: &str = "run-while-peer-stopped";
    pub const ERROR_STATE: &str = "error-state";
    pub const QUIESCE_BUDGET: &str = "quiesce-budget";
    /// Every violation rule, in table order.
    pub const VIOLATIONS: [&str; 11] = [
        ILLEGAL_ARC,
        UNSUPPORTED_ACCEPTED,
        SET_FAILED,
        STATE_MISMATCH,
        DMA_AFTER_QUIESCE,
        IRQ_AFTER_QUIESCE,
        STOP_WHILE_PEER_RUNNING,
        SAVE_WHILE_PEER_RUNNING,
        RUN_WHILE_PEER_STOPPED,
        ERROR_STATE,
        QUIESCE_BUDGET,
    ];

    // Warnings: never a violation.
    pub const HAZARD_ARC: &str = "hazard-arc";
    pub const DMA_MAYBE_AFTER_QUIESCE: &str = "dma-maybe-after-quiesce";
    pub const UNKNOWN_EVENT: &str = "unknown-event";
    pub const UNDECLARED_DEVICE: &str = "undeclared-device";
    pub const UNMATCHED_SET_DONE: &str = "unmatched-set-done";
    pub const UNFINISHED_SET: &str = "unfinished-set";
    pub const NO_IRQ_SOURCE: &str = "no-irq-source";
    pub const BLIND_SPOT_ACCEPTED: &str = "blind-spot-accepted";

    /// One line a human can act on, for reports.
    pub fn explain(rule: &str) -> &'static str {
        match rule {
            ILLEGAL_ARC => {
                "an FSM step that is not the kernel's next step toward the requested state (vfio_mig_get_next_state)"
            }
            UNSUPPORTED_ACCEPTED => {
                "the driver accepted a SET to a state its flags do not support, to ERROR, or along a blocked arc"
            }
            SET_FAILED => "a SET to a supported, reachable state returned an error",
            STATE_MISMATCH => {
                "a GET reported a state other than the one the device was put in (has it got there?)"
            }
            DMA_AFTER_QUIESCE => {
                "DMA evidence while the device was quiesced (it must not initiate DMA)"
            }
            IRQ_AFTER_QUIESCE => {
                "an interrupt while the device was quiesced (an MSI is itself a DMA write)"
            }
            STOP_WHILE_PEER_RUNNING => {
                "a device was stopped while a peer in its context could still issue DMA (quiesce every device before stopping any)"
            }
            SAVE_WHILE_PEER_RUNNING => {
                "device state was saved while a peer in its context was running"
            }
            RUN_WHILE_PEER_STOPPED => {
                "a device was set running while a peer was still stopped (peers must reach a P2P state first)"
            }
            ERROR_STATE => {
                "the device was seen in ERROR, or a SET was issued from ERROR (only a reset leaves ERROR)"
            }
            QUIESCE_BUDGET => "a SET into a quiescent state took longer than the budget",
            HAZARD_ARC => {
                "a request along a blocked arc (STOP_COPY -> PRE_COPY[_P2P]) that hangs kernels without the 2026 fix"
            }
            DMA_MAYBE_AFTER_QUIESCE => {
                "windowed DMA evidence straddling the quiesce point: it may have happened before or after"
            }
            UNKNOWN_EVENT => "an event type this migscope does not know was skipped",
            UNDECLARED_DEVICE => "a device was used before a `device` event declared it",
            UNMATCHED_SET_DONE => "a set_done without a matching set",
            UNFINISHED_SET => "a SET that never returned in the trace",
            NO_IRQ_SOURCE => {
                "interrupts were not traced, so irq-after-quiesce could not be checked"
            }
            BLIND_SPOT_ACCEPTED => "a blind spot accepted with --accept-blind",
            _ => "",
        }
    }
}

/// Which evidence counts while a device is in a P2P (NDMA) state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum P2pPolicy {
    /// The seed's NDMA meaning: no DMA and no interrupt at all once quiesced.
    #[default]
    Strict,
    /// In RUNNING_P2P / PRE_COPY_P2P only peer-to-peer DMA (`p2p: true`) counts and interrupts
    /// are allowed; STOP, STOP_COPY and RESUMING stay strict.
    P2pOnly,
}

impl P2pPolicy {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "strict" => Some(P2pPolicy::Strict),
            "p2p-only" => Some(P2pPolicy::P2pOnly),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Options {
    pub p2p_policy: P2pPolicy,
    /// `quiesce-budget`: a SET into a quiescent state must complete within this many ms.
    pub max_quiesce_ms: Option<u64>,
    /// Downgrade the `dma` blind spot to a warning.
    pub accept_blind_dma: bool,
}

/// A violation or a warning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub rule: &'static str,
    pub dev: Option<String>,
    pub t: u64,
    /// 1-based line of the offending event (0 when not read from a file).
    pub line: u64,
    pub detail: String,
    pub warning: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    Inconclusive,
}

impl Verdict {
    pub const fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
        }
    }
    /// `check`'s exit status.
    pub const fn exit_code(self) -> i32 {
        match self {
            Verdict::Pass => 0,
            Verdict::Fail => 1,
            Verdict::Inconclusive => 2,
        }
    }
}

/// Per-device numbers for the verdict's `devices` map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceSummary {
    pub ctx: String,
    pub flags: Option<MigFlags>,
    /// SETs that entered a quiescent state: count, min, max, total duration.
    pub quiesce_count: u64,
    pub quiesce_min_ns: u64,
    pub quiesce_max_ns: u64,
    pub quiesce_total_ns: u64,
    pub sets: u64,
    pub steps: u64,
    pub dma: u64,
    pub irq: u64,
    /// Evidence seen while quiesced (whatever the verdict on it).
    pub dma_quiesced: u64,
    pub irq_quiesced: u64,
    pub data_saved: u64,
    pub data_loaded: u64,
    /// The state at the end of the trace (None: unknown).
    pub final_state: Option<MigState>,
}

/// The outcome of a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub verdict: Verdict,
    pub violations: Vec<Finding>,
    pub warnings: Vec<Finding>,
    /// Why the verdict is inconclusive: `lost`, `truncated`, `dma`.
    pub blind_spots: Vec<String>,
    /// A sentence per blind spot.
    pub blind_spot_details: BTreeMap<String, String>,
    pub devices: BTreeMap<String, DeviceSummary>,
    pub events: u64,
    pub lost: u64,
    pub truncated: bool,
    /// Findings beyond the storage cap, counted but not kept.
    pub dropped_findings: u64,
}

impl Report {
    /// The verdict JSON of TRACE-FORMAT.md (plus a few extra fields).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        let f = |x: &Finding| json!({"rule": x.rule, "dev": x.dev, "t": x.t, "line": x.line, "detail": x.detail});
        let devices: serde_json::Map<String, serde_json::Value> = self
            .devices
            .iter()
            .map(|(k, d)| {
                let mut q = json!({"count": d.quiesce_count, "max": d.quiesce_max_ns});
                if let Some(mean) = d.quiesce_total_ns.checked_div(d.quiesce_count) {
                    q["min"] = d.quiesce_min_ns.into();
                    q["mean"] = mean.into();
                }
                (
                    k.clone(),
                    json!({
                        "ctx": d.ctx,
                        "flags": d.flags.map(crate::model::flag_names),
                        "quiesce_ns": q,
                        "sets": d.sets,
                        "steps": d.steps,
                        "dma": d.dma,
                        "irq": d.irq,
                        "dma_quiesced": d.dma_quiesced,
                        "irq_quiesced": d.irq_quiesced,
                        "data_saved": d.data_saved,
                        "data_loaded": d.data_loaded,
                        "final_state": d.final_state.map(MigState::name),
                    }),
                )
            })
            .collect();
        json!({
            "verdict": self.verdict.name(),
            "violations": self.violations.iter().map(f).collect::<Vec<_>>(),
            "warnings": self.warnings.iter().map(f).collect::<Vec<_>>(),
            "blind_spots": self.blind_spots,
            "blind_spot_details": self.blind_spot_details,
            "devices": devices,
            "events": self.events,
            "lost": self.lost,
            "truncated": self.truncated,
            "dropped_findings": self.dropped_findings,
        })
    }

    /// Distinct violated rule ids, in table order.
    pub fn violated_rules(&self) -> Vec<&'static str> {
        rule::VIOLATIONS
            .into_iter()
            .filter(|r| self.violations.iter().any(|v| v.rule == *r))
            .collect()
    }
}

/// How many findings are kept in memory; more are counted in `dropped_findings`.
const MAX_FINDINGS: usize = 10_000;

/// The state known for a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Known {
    State(MigState),
    Unknown,
}

impl Known {
    fn get(self) -> Option<MigState> {
        match self {
            Known::State(s) => Some(s),
            Known::Unknown => None,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Request {
    from: Known,
    to: MigState,
    t: u64,
    steps: u32,
}

/// Start and end of a continuous period in which some evidence is forbidden.
#[derive(Clone, Copy, Debug, Default)]
struct Forbidden {
    since: Option<u64>,
    /// The state whose arrival began the current period (for messages).
    entered: Option<MigState>,
    /// The previous completed period `[since, end)` and the state that began it, for windowed
    /// evidence reaching back.
    prev: Option<(u64, u64, Option<MigState>)>,
}

enum WindowVerdict {
    Allowed,
    Maybe,
    /// `since`: when the period began; `entered`: the state that began it.
    Violation {
        since: u64,
        entered: Option<MigState>,
    },
}

impl Forbidden {
    fn update(&mut self, now_forbidden: bool, t: u64, state: Option<MigState>) {
        match (self.since, now_forbidden) {
            (None, true) => {
                self.since = Some(t);
                self.entered = state;
            }
            (Some(s), false) => {
                self.prev = Some((s, t, self.entered));
                self.since = None;
                self.entered = None;
            }
            _ => {}
        }
    }

    /// Judges evidence that happened somewhere in `(t0, t1]`.
    fn judge(&self, t0: u64, t1: u64) -> WindowVerdict {
        if let Some(s) = self.since {
            if s <= t0 {
                return WindowVerdict::Violation {
                    since: s,
                    entered: self.entered,
                };
            }
            if s < t1 {
                return WindowVerdict::Maybe;
            }
        }
        if let Some((s, e, entered)) = self.prev {
            if s <= t0 && t1 <= e {
                return WindowVerdict::Violation { since: s, entered };
            }
            if t0 < e && s < t1 {
                return WindowVerdict::Maybe;
            }
        }
        WindowVerdict::Allowed
    }

    /// Judges evidence that happened exactly at `t`.
    fn judge_at(&self, t: u64) -> WindowVerdict {
        match self.since {
            Some(s) if s <= t => WindowVerdict::Violation {
                since: s,
                entered: self.entered,
            },
            _ => WindowVerdict::Allowed,
        }
    }
}

struct Dev {
    name: String,
    /// None when the device was never declared (flag-based rules are skipped).
    flags: Option<MigFlags>,
    ctx: usize,
    state: Known,
    /// When `state` began (for "N ms after X completed").
    state_t: u64,
    req: Option<Request>,
    /// Where the driver's traced FSM steps have taken the device.
    step_state: Option<MigState>,
    /// Steps were seen for this device: from then on a completed SET must be reached by them.
    steps_traced: bool,
    /// Any quiescent state (strict evidence, p2p evidence under p2p-only).
    quiet: Forbidden,
    /// STOP / STOP_COPY / RESUMING (non-p2p evidence under p2p-only).
    stopped: Forbidden,
    summary: DeviceSummary,
}

/// Device and context names to their index. Looked up once per event, so a multiply-rotate
/// hash (FxHash, as rustc uses) rather than SipHash: the keys are a trace's few device names.
type NameMap = HashMap<String, usize, BuildHasherDefault<FxHasher>>;

#[derive(Default)]
struct FxHasher {
    hash: u64,
}

impl FxHasher {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(Self::SEED);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        self.add(u64::from_le_bytes(w));
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// The streaming verifier. Feed it events in trace order with [`Verifier::push`], then call
/// [`Verifier::finish`].
pub struct Verifier {
    opts: Options,
    dma_source_ok: bool,
    irq_source_ok: bool,
    devs: Vec<Dev>,
    by_name: NameMap,
    /// The device of the previous event: runs of events about one device skip the lookup.
    last_dev: usize,
    ctxs: Vec<(String, Vec<usize>)>,
    ctx_by_name: NameMap,
    violations: Vec<Finding>,
    warnings: Vec<Finding>,
    dropped: u64,
    lost: u64,
    ended: bool,
    events: u64,
    quiesced_any: bool,
    irq_warned: bool,
}

fn ms(ns: u64) -> String {
    format!("{:.1} ms", ns as f64 / 1e6)
}

impl Verifier {
    pub fn new(header: &Header, opts: Options) -> Self {
        Verifier {
            opts,
            dma_source_ok: source::DMA_WITNESSES.iter().any(|s| header.source_ok(s)),
            irq_source_ok: header.source_ok(source::IRQ),
            devs: Vec::new(),
            by_name: NameMap::default(),
            last_dev: usize::MAX,
            ctxs: Vec::new(),
            ctx_by_name: NameMap::default(),
            violations: Vec::new(),
            warnings: Vec::new(),
            dropped: 0,
            lost: 0,
            ended: false,
            events: 0,
            quiesced_any: false,
            irq_warned: false,
        }
    }

    /// Records an unknown-event warning coming from the reader.
    pub fn note_unknown_event(&mut self, line: u64, msg: &str) {
        let f = Finding {
            rule: rule::UNKNOWN_EVENT,
            dev: None,
            t: 0,
            line,
            detail: msg.to_owned(),
            warning: true,
        };
        self.keep(f);
    }

    /// Records the reader's warnings from `*seen` on (unknown `ev` values, which the reader skips
    /// and so never reach [`Verifier::push`]), advances `*seen`, and returns the new ones.
    pub fn forward_warnings<'w>(
        &mut self,
        warnings: &'w [ReadWarning],
        seen: &mut usize,
    ) -> &'w [ReadWarning] {
        let new = warnings.get(*seen..).unwrap_or_default();
        for w in new {
            self.note_unknown_event(w.line, &w.msg);
        }
        *seen = warnings.len();
        new
    }

    fn keep(&mut self, f: Finding) {
        let list = if f.warning {
            &mut self.warnings
        } else {
            &mut self.violations
        };
        if list.len() < MAX_FINDINGS {
            list.push(f);
        } else {
            self.dropped += 1;
        }
    }

    fn ctx_index(&mut self, ctx: &str) -> usize {
        if let Some(i) = self.ctx_by_name.get(ctx) {
            return *i;
        }
        let i = self.ctxs.len();
        self.ctxs.push((ctx.to_owned(), Vec::new()));
        self.ctx_by_name.insert(ctx.to_owned(), i);
        i
    }

    fn declare(
        &mut self,
        name: &str,
        flags: Option<MigFlags>,
        ctx: &str,
        state: MigState,
        t: u64,
    ) -> usize {
        if let Some(&i) = self.by_name.get(name) {
            // Re-declaration: take the new facts, keep the history.
            let ci = self.ctx_index(ctx);
            let old = self.devs[i].ctx;
            if old != ci {
                self.ctxs[old].1.retain(|d| *d != i);
                self.ctxs[ci].1.push(i);
            }
            let d = &mut self.devs[i];
            d.flags = flags;
            d.ctx = ci;
            d.summary.ctx = ctx.to_owned();
            d.summary.flags = flags;
            return i;
        }
        let ci = self.ctx_index(ctx);
        let i = self.devs.len();
        let mut dev = Dev {
            name: name.to_owned(),
            flags,
            ctx: ci,
            state: Known::State(state),
            state_t: t,
            req: None,
            step_state: Some(state),
            steps_traced: false,
            quiet: Forbidden::default(),
            stopped: Forbidden::default(),
            summary: DeviceSummary {
                ctx: ctx.to_owned(),
                flags,
                ..DeviceSummary::default()
            },
        };
        dev.quiet.update(state.quiescent(), t, Some(state));
        dev.stopped.update(state.stopped(), t, Some(state));
        self.devs.push(dev);
        self.ctxs[ci].1.push(i);
        self.by_name.insert(name.to_owned(), i);
        i
    }

    /// The device index, declaring it (with a warning) on first use.
    fn dev(&mut self, name: &str, t: u64, line: u64, out: &mut Vec<Finding>) -> usize {
        if let Some(d) = self.devs.get(self.last_dev)
            && d.name == name
        {
            return self.last_dev;
        }
        if let Some(&i) = self.by_name.get(name) {
            self.last_dev = i;
            return i;
        }
        let f = Finding {
            rule: rule::UNDECLARED_DEVICE,
            dev: Some(name.to_owned()),
            t,
            line,
            detail: format!(
                "{name} used before a `device` event; assuming RUNNING, its own context, and unknown migration flags"
            ),
            warning: true,
        };
        out.push(f);
        let ctx = format!("undeclared:{name}");
        self.declare(name, None, &ctx, MigState::Running, t)
    }

    /// Recomputes the forbidden periods of device `i` after its state or request changed.
    fn refresh(&mut self, i: usize, t: u64) {
        let d = &mut self.devs[i];
        let (quiet, stopped, at) = match (d.req, d.state) {
            (Some(r), _) => {
                let from = r.from.get();
                let q = from.is_some_and(MigState::quiescent) && r.to.quiescent();
                let s = from.is_some_and(MigState::stopped) && r.to.stopped();
                (q, s, from)
            }
            (None, Known::State(s)) => (s.quiescent(), s.stopped(), Some(s)),
            (None, Known::Unknown) => (false, false, None),
        };
        if quiet {
            self.quiesced_any = true;
        }
        d.quiet.update(quiet, t, at);
        d.stopped.update(stopped, t, at);
    }

    /// Peers of device `i` (same ctx) whose known state satisfies `pred`.
    fn peers_where(&self, i: usize, pred: impl Fn(MigState) -> bool) -> Vec<(String, MigState)> {
        let ctx = self.devs[i].ctx;
        self.ctxs[ctx]
            .1
            .iter()
            .filter(|&&p| p != i)
            .filter_map(|&p| {
                let pd = &self.devs[p];
                pd.state
                    .get()
                    .filter(|s| pred(*s))
                    .map(|s| (pd.name.clone(), s))
            })
            .collect()
    }

    /// Feeds one event. `line` is its 1-based line (0 if none). Returns the findings it caused.
    pub fn push(&mut self, line: u64, ev: &Event) -> Vec<Finding> {
        let mut out = Vec::new();
        self.events += 1;
        let t = ev.t;
        let finding = |out: &mut Vec<Finding>,
                       rule: &'static str,
                       dev: &str,
                       detail: String,
                       warning: bool| {
            out.push(Finding {
                rule,
                dev: Some(dev.to_owned()),
                t,
                line,
                detail,
                warning,
            });
        };
        match &ev.kind {
            EventKind::Device {
                dev,
                flags,
                ctx,
                state,
                driver: _,
                sources: _,
            } => {
                let i = self.declare(dev, Some(*flags), ctx, *state, t);
                if *state == MigState::Error {
                    finding(
                        &mut out,
                        rule::ERROR_STATE,
                        dev,
                        format!("{dev} declared in ERROR"),
                        false,
                    );
                }
                self.refresh(i, t);
            }
            EventKind::Set { dev, to } => {
                let i = self.dev(dev, t, line, &mut out);
                let d = &self.devs[i];
                if let Some(r) = d.req {
                    finding(
                        &mut out,
                        rule::UNFINISHED_SET,
                        dev,
                        format!(
                            "SET {} began at {} ns never returned before this SET {}",
                            r.to.name(),
                            r.t,
                            to.name()
                        ),
                        true,
                    );
                }
                if d.state == Known::State(MigState::Error) {
                    finding(
                        &mut out,
                        rule::ERROR_STATE,
                        dev,
                        format!(
                            "SET {} issued while {dev} is in ERROR; only a reset leaves ERROR",
                            to.name()
                        ),
                        false,
                    );
                }
                if let (Some(flags), Some(cur)) = (d.flags, d.state.get())
                    && is_hazard(flags, cur, *to)
                {
                    finding(
                        &mut out,
                        rule::HAZARD_ARC,
                        dev,
                        format!(
                            "SET {} -> {} is a blocked arc on a PRE_COPY device: kernels without the fix \"prevent infinite loop in vfio_mig_get_next_state\" hang",
                            cur.name(),
                            to.name()
                        ),
                        true,
                    );
                }
                if to.stopped() {
                    let running = self.peers_where(i, MigState::dma_allowed);
                    for (peer, st) in running {
                        finding(
                            &mut out,
                            rule::STOP_WHILE_PEER_RUNNING,
                            dev,
                            format!(
                                "SET {} on {dev} began while peer {peer} in the same context is {} (quiesce every device before stopping any)",
                                to.name(),
                                st.name()
                            ),
                            false,
                        );
                    }
                }
                if to.dma_allowed() {
                    let stopped = self.peers_where(i, MigState::stopped);
                    for (peer, st) in stopped {
                        finding(
                            &mut out,
                            rule::RUN_WHILE_PEER_STOPPED,
                            dev,
                            format!(
                                "SET {} on {dev} began while peer {peer} in the same context is still {} (peers must reach a P2P state first)",
                                to.name(),
                                st.name()
                            ),
                            false,
                        );
                    }
                }
                let d = &mut self.devs[i];
                d.summary.sets += 1;
                d.req = Some(Request {
                    from: d.state,
                    to: *to,
                    t,
                    steps: 0,
                });
                d.step_state = d.state.get();
                self.refresh(i, t);
            }
            EventKind::Step { dev, from, to } => {
                let i = self.dev(dev, t, line, &mut out);
                let d = &mut self.devs[i];
                d.summary.steps += 1;
                d.steps_traced = true;
                match d.req.as_mut() {
                    None => finding(
                        &mut out,
                        rule::ILLEGAL_ARC,
                        dev,
                        format!(
                            "FSM step {} -> {} outside any SET request",
                            from.name(),
                            to.name()
                        ),
                        false,
                    ),
                    Some(r) => {
                        r.steps += 1;
                        let target = r.to;
                        let flags = d.flags.unwrap_or(MigFlags(7));
                        if let Some(at) = d.step_state
                            && at != *from
                        {
                            finding(
                                &mut out,
                                rule::ILLEGAL_ARC,
                                dev,
                                format!(
                                    "FSM step {} -> {} starts from {} but the device was at {} (toward {})",
                                    from.name(),
                                    to.name(),
                                    from.name(),
                                    at.name(),
                                    target.name()
                                ),
                                false,
                            );
                        } else {
                            match next_state(flags, *from, target) {
                                Ok(n) if n == *to => {}
                                Ok(n) => finding(
                                    &mut out,
                                    rule::ILLEGAL_ARC,
                                    dev,
                                    format!(
                                        "FSM step {} -> {} toward {}: the kernel's next step is {} -> {}",
                                        from.name(),
                                        to.name(),
                                        target.name(),
                                        from.name(),
                                        n.name()
                                    ),
                                    false,
                                ),
                                Err(e) => finding(
                                    &mut out,
                                    rule::ILLEGAL_ARC,
                                    dev,
                                    format!(
                                        "FSM step {} -> {} toward {}: the kernel has no step there ({})",
                                        from.name(),
                                        to.name(),
                                        target.name(),
                                        step_error_text(e)
                                    ),
                                    false,
                                ),
                            }
                        }
                        d.step_state = Some(*to);
                    }
                }
                if *to == MigState::Error {
                    finding(
                        &mut out,
                        rule::ERROR_STATE,
                        dev,
                        format!("the driver stepped {dev} into ERROR"),
                        false,
                    );
                }
            }
            EventKind::SetDone {
                dev,
                to,
                ret,
                data_fd: _,
            } => {
                let i = self.dev(dev, t, line, &mut out);
                let d = &self.devs[i];
                let req = d.req;
                if req.is_none() {
                    finding(
                        &mut out,
                        rule::UNMATCHED_SET_DONE,
                        dev,
                        format!("set_done {} without a set", to.name()),
                        true,
                    );
                }
                let from = req.map_or(d.state, |r| r.from);
                let flags = d.flags;
                let supported = flags.is_none_or(|f| f.supports(*to)) && *to != MigState::Error;
                let route = match (flags, from.get()) {
                    (Some(f), Some(s)) if supported => Some(fsm_path(f, s, *to)),
                    _ => None,
                };
                let blocked = matches!(route, Some(Err(StepError::BlockedArc)));
                if *ret == 0 {
                    if *to == MigState::Error {
                        finding(
                            &mut out,
                            rule::UNSUPPORTED_ACCEPTED,
                            dev,
                            "SET to ERROR returned 0".to_owned(),
                            false,
                        );
                        finding(
                            &mut out,
                            rule::ERROR_STATE,
                            dev,
                            format!("{dev} is in ERROR"),
                            false,
                        );
                    } else if !supported {
                        finding(
                            &mut out,
                            rule::UNSUPPORTED_ACCEPTED,
                            dev,
                            format!(
                                "SET {} returned 0 but the device's flags ({}) do not support it",
                                to.name(),
                                flags
                                    .map(|f| crate::model::flag_names(f).join(","))
                                    .unwrap_or_default()
                            ),
                            false,
                        );
                    } else if blocked {
                        finding(
                            &mut out,
                            rule::UNSUPPORTED_ACCEPTED,
                            dev,
                            format!(
                                "SET {} -> {} returned 0 along a blocked arc (the kernel answers EINVAL)",
                                from.get().map_or("?", MigState::name),
                                to.name()
                            ),
                            false,
                        );
                    }
                    if d.steps_traced
                        && let Some(at) = d.step_state
                        && at != *to
                    {
                        finding(
                            &mut out,
                            rule::ILLEGAL_ARC,
                            dev,
                            format!(
                                "SET {} completed but the driver's FSM steps stopped at {}: arcs were skipped",
                                to.name(),
                                at.name()
                            ),
                            false,
                        );
                    }
                    // quiesce-budget (DESIGN.md): any successful SET into a quiescent state.
                    if to.quiescent()
                        && let (Some(r), Some(budget)) = (req, self.opts.max_quiesce_ms)
                    {
                        let dur = t.saturating_sub(r.t);
                        if dur > budget.saturating_mul(1_000_000) {
                            finding(
                                &mut out,
                                rule::QUIESCE_BUDGET,
                                dev,
                                format!(
                                    "SET {} -> {} took {} (budget {budget} ms)",
                                    from.get().map_or("?", MigState::name),
                                    to.name(),
                                    ms(dur)
                                ),
                                false,
                            );
                        }
                    }
                    // The quiesce statistics: SETs entering quiescence (the DMA stop itself).
                    let entering = to.quiescent() && !from.get().is_some_and(MigState::quiescent);
                    if entering && let Some(r) = req {
                        let dur = t.saturating_sub(r.t);
                        let s = &mut self.devs[i].summary;
                        s.quiesce_min_ns = if s.quiesce_count == 0 {
                            dur
                        } else {
                            s.quiesce_min_ns.min(dur)
                        };
                        s.quiesce_max_ns = s.quiesce_max_ns.max(dur);
                        s.quiesce_total_ns = s.quiesce_total_ns.saturating_add(dur);
                        s.quiesce_count += 1;
                    }
                    let d = &mut self.devs[i];
                    d.state = Known::State(*to);
                    d.state_t = t;
                    if !d.steps_traced {
                        d.step_state = Some(*to);
                    }
                } else {
                    let reachable = supported && matches!(route, Some(Ok(_)) | None);
                    if reachable {
                        finding(
                            &mut out,
                            rule::SET_FAILED,
                            dev,
                            format!(
                                "SET {} -> {} failed with {} ({}); the state is unknown until the next GET",
                                from.get().map_or("?", MigState::name),
                                to.name(),
                                ret,
                                errno_name(*ret)
                            ),
                            false,
                        );
                    }
                    let d = &mut self.devs[i];
                    d.state = Known::Unknown;
                    d.state_t = t;
                    d.step_state = None;
                }
                self.devs[i].req = None;
                self.refresh(i, t);
            }
            EventKind::Get { dev, state } => {
                let i = self.dev(dev, t, line, &mut out);
                let d = &self.devs[i];
                if d.req.is_none()
                    && let Known::State(known) = d.state
                    && known != *state
                {
                    finding(
                        &mut out,
                        rule::STATE_MISMATCH,
                        dev,
                        format!(
                            "GET reports {} but the device was put in {} (has it got there?)",
                            state.name(),
                            known.name()
                        ),
                        false,
                    );
                }
                if *state == MigState::Error {
                    finding(
                        &mut out,
                        rule::ERROR_STATE,
                        dev,
                        format!("GET reports {dev} in ERROR"),
                        false,
                    );
                }
                let d = &mut self.devs[i];
                if d.req.is_none() {
                    if d.state != Known::State(*state) {
                        d.state_t = t;
                    }
                    d.state = Known::State(*state);
                    d.step_state = Some(*state);
                }
                self.refresh(i, t);
            }
            EventKind::Reset { dev, ret } => {
                let i = self.dev(dev, t, line, &mut out);
                let d = &mut self.devs[i];
                d.req = None;
                d.state_t = t;
                if *ret == 0 {
                    d.state = Known::State(MigState::Running);
                    d.step_state = Some(MigState::Running);
                } else {
                    d.state = Known::Unknown;
                    d.step_state = None;
                }
                self.refresh(i, t);
            }
            EventKind::Dma {
                dev,
                src,
                iova,
                len,
                write,
                window,
                p2p,
            } => {
                let i = self.dev(dev, t, line, &mut out);
                let policy = self.opts.p2p_policy;
                let d = &mut self.devs[i];
                d.summary.dma += 1;
                let tracker = if policy == P2pPolicy::Strict || *p2p == Some(true) {
                    &d.quiet
                } else {
                    &d.stopped
                };
                let verdict = match window {
                    Some((t0, t1)) => tracker.judge(*t0, *t1),
                    None => tracker.judge_at(t),
                };
                // Built only for a finding: most evidence is allowed and needs no text.
                let what = || {
                    format!(
                        "{} {} at iova {:#x} ({} bytes){}",
                        src.name(),
                        if *write { "write" } else { "read" },
                        iova,
                        len,
                        if *p2p == Some(true) {
                            " to a peer BAR"
                        } else {
                            ""
                        }
                    )
                };
                let state = d.state.get();
                match verdict {
                    WindowVerdict::Allowed => {}
                    WindowVerdict::Violation { since, entered } => {
                        d.summary.dma_quiesced += 1;
                        let when = match window {
                            Some((t0, t1)) => format!(
                                "between {} and {} after",
                                ms(t0.saturating_sub(since)),
                                ms(t1.saturating_sub(since))
                            ),
                            None => format!("{} after", ms(t.saturating_sub(since))),
                        };
                        let detail = format!("{} {when} {}", what(), quiesced_text(entered, state));
                        finding(&mut out, rule::DMA_AFTER_QUIESCE, dev, detail, false);
                    }
                    WindowVerdict::Maybe => {
                        let detail = format!(
                            "{} in a window [{}, {}] that straddles the quiesce point: it may have happened after",
                            what(),
                            window.map_or(t, |w| w.0),
                            window.map_or(t, |w| w.1)
                        );
                        finding(&mut out, rule::DMA_MAYBE_AFTER_QUIESCE, dev, detail, true);
                    }
                }
            }
            EventKind::Irq { dev, kind, vector } => {
                let i = self.dev(dev, t, line, &mut out);
                let policy = self.opts.p2p_policy;
                let d = &mut self.devs[i];
                d.summary.irq += 1;
                let tracker = if policy == P2pPolicy::Strict {
                    &d.quiet
                } else {
                    &d.stopped
                };
                if let WindowVerdict::Violation { since, entered } = tracker.judge_at(t) {
                    d.summary.irq_quiesced += 1;
                    let detail = format!(
                        "{} vector {} {} after {}",
                        kind.name(),
                        vector,
                        ms(t.saturating_sub(since)),
                        quiesced_text(entered, d.state.get())
                    );
                    finding(&mut out, rule::IRQ_AFTER_QUIESCE, dev, detail, false);
                }
            }
            EventKind::Data { dev, dir, bytes } => {
                let i = self.dev(dev, t, line, &mut out);
                match dir {
                    DataDir::Save => self.devs[i].summary.data_saved += bytes,
                    DataDir::Load => self.devs[i].summary.data_loaded += bytes,
                }
                if *dir == DataDir::Save && self.devs[i].state == Known::State(MigState::StopCopy) {
                    for (peer, st) in self.peers_where(i, MigState::dma_allowed) {
                        finding(
                            &mut out,
                            rule::SAVE_WHILE_PEER_RUNNING,
                            dev,
                            format!(
                                "{bytes} bytes of {dev}'s state saved while peer {peer} is {}",
                                st.name()
                            ),
                            false,
                        );
                    }
                }
            }
            EventKind::Map { .. } | EventKind::Unmap { .. } | EventKind::Mark { .. } => {}
            // What the driver reported about its migration data: no rule judges it yet.
            EventKind::PrecopyInfo { .. } | EventKind::DataSize { .. } => {}
            EventKind::Lost { n, .. } => self.lost = self.lost.saturating_add(*n),
            EventKind::End => self.ended = true,
        }
        if !self.irq_source_ok && !self.irq_warned && self.quiesced_any {
            self.irq_warned = true;
            out.push(Finding {
                rule: rule::NO_IRQ_SOURCE,
                dev: None,
                t,
                line,
                detail: "a device was quiesced but the trace's `irq` source is not ok: irq-after-quiesce was not checked".to_owned(),
                warning: true,
            });
        }
        for f in &out {
            self.keep(f.clone());
        }
        out
    }

    /// Ends the stream and computes the verdict.
    pub fn finish(mut self) -> Report {
        let mut blind_spots = Vec::new();
        let mut details = BTreeMap::new();
        for d in &self.devs {
            if let Some(r) = d.req {
                let f = Finding {
                    rule: rule::UNFINISHED_SET,
                    dev: Some(d.name.clone()),
                    t: r.t,
                    line: 0,
                    detail: format!("SET {} never returned before the trace ended", r.to.name()),
                    warning: true,
                };
                self.warnings.push(f);
            }
        }
        if self.lost > 0 {
            blind_spots.push("lost".to_owned());
            details.insert(
                "lost".to_owned(),
                format!("{} events were lost while recording", self.lost),
            );
        }
        if !self.ended {
            blind_spots.push("truncated".to_owned());
            details.insert(
                "truncated".to_owned(),
                "the trace has no `end` event: the recorder did not close it cleanly".to_owned(),
            );
        }
        if self.quiesced_any && !self.dma_source_ok {
            let why = "a device reached a quiescent state but no DMA evidence source (witness, dirty_log, iommu_dirty, mdev_dma) was ok: interrupts alone cannot prove the absence of DMA".to_owned();
            if self.opts.accept_blind_dma {
                self.warnings.push(Finding {
                    rule: rule::BLIND_SPOT_ACCEPTED,
                    dev: None,
                    t: 0,
                    line: 0,
                    detail: format!("dma (accepted with --accept-blind dma): {why}"),
                    warning: true,
                });
            } else {
                blind_spots.push("dma".to_owned());
                details.insert("dma".to_owned(), why);
            }
        }
        let verdict = if !self.violations.is_empty() || self.dropped_violation() {
            Verdict::Fail
        } else if !blind_spots.is_empty() {
            Verdict::Inconclusive
        } else {
            Verdict::Pass
        };
        let devices = self
            .devs
            .into_iter()
            .map(|d| {
                let mut s = d.summary;
                s.final_state = d.state.get();
                (d.name, s)
            })
            .collect();
        Report {
            verdict,
            violations: self.violations,
            warnings: self.warnings,
            blind_spots,
            blind_spot_details: details,
            devices,
            events: self.events,
            lost: self.lost,
            truncated: !self.ended,
            dropped_findings: self.dropped,
        }
    }

    fn dropped_violation(&self) -> bool {
        self.dropped > 0 && self.violations.len() >= MAX_FINDINGS
    }
}

/// "RUNNING_P2P completed", plus "(now STOP_COPY)" when the device has moved on since.
fn quiesced_text(entered: Option<MigState>, now: Option<MigState>) -> String {
    let base = match entered {
        Some(s) => format!("{} completed", s.name()),
        None => "the device was quiesced".to_owned(),
    };
    match now {
        Some(n) if Some(n) != entered => format!("{base} (now {})", n.name()),
        _ => base,
    }
}

fn step_error_text(e: StepError) -> &'static str {
    match e {
        StepError::CurUnsupported => "the current state is not supported by the device's flags",
        StepError::TargetUnsupported => "the target is not supported by the device's flags",
        StepError::BlockedArc => "a blocked arc",
    }
}

/// A short errno name for messages.
pub fn errno_name(ret: i32) -> &'static str {
    match -ret {
        1 => "EPERM",
        5 => "EIO",
        11 => "EAGAIN",
        12 => "ENOMEM",
        16 => "EBUSY",
        19 => "ENODEV",
        22 => "EINVAL",
        25 => "ENOTTY",
        61 => "ENODATA",
        42 => "ENOMSG",
        95 => "EOPNOTSUPP",
        110 => "ETIMEDOUT",
        _ => "errno",
    }
}

/// Reads a trace (JSONL or native, told apart by content) from `path` (`-` = stdin) and
/// verifies it.
pub fn check_path(path: &Path, opts: Options) -> Result<Report, TraceError> {
    let mut reader = open_any(path)?;
    let mut v = Verifier::new(reader.header(), opts);
    let mut warned = 0;
    while let Some(item) = reader.next_event() {
        let (line, ev) = item?;
        // Surface reader warnings (unknown `ev`) as they appear.
        v.forward_warnings(reader.warnings(), &mut warned);
        v.push(line, &ev);
        // Reuse the event's string buffers for the next one.
        match &mut reader {
            AnyReader::Jsonl(r) => r.recycle(ev),
            AnyReader::Native(r) => r.recycle(ev),
        }
    }
    v.forward_warnings(reader.warnings(), &mut warned);
    Ok(v.finish())
}

#[cfg(test)]
mod tests;
