//! The verifier: every rule of DESIGN.md over a stream of events, in one pass, with memory
//! that grows with the number of devices, contexts and quiesces, not with the number of events.
//!
//! Each device's state over time is a [`DeviceTimeline`] (`timeline.rs`: the state semantics of
//! DESIGN.md "Verification rules", once); the rules (`rules.rs`, one function per rule family)
//! judge each event against the timelines of its device and of its peers. Coverage is per
//! device (TRACE-FORMAT.md): a header source covers every device unless the device's own
//! `sources` (its latest declaration) say otherwise, and `mdev_dma` covers mediated devices only.

use std::{
    collections::{BTreeMap, HashMap},
    hash::{BuildHasherDefault, Hasher},
    path::Path,
};

use crate::{
    model::{MigFlags, MigState},
    trace::{
        AnyReader, DmaSource, Event, EventKind, EventRef, Header, KindRef, Name, ReadWarning,
        TraceError, open_any, source,
    },
};

mod dirty;
mod resume;
mod rules;
pub mod timeline;

pub use dirty::DirtyRange;
pub use timeline::{DeviceTimeline, Judgement, Period, Phase, Scope, SegKind, Segment, Transition};

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
    pub const SET_TIMEOUT: &str = "set-timeout";
    pub const STALE_DATA_FD: &str = "stale-data-fd";
    pub const PRECOPY_INITIAL_BYTES: &str = "precopy-initial-bytes";
    pub const PRECOPY_FLAGS: &str = "precopy-flags";
    pub const DATA_SIZE_EXCEEDED: &str = "data-size-exceeded";
    pub const RESUME_ACCEPTED_CORRUPT: &str = "resume-accepted-corrupt";
    pub const RESUME_DIVERGENCE: &str = "resume-divergence";
    pub const DIRTY_LOG_MISSED: &str = "dirty-log-missed";
    /// Every violation rule, in table order.
    pub const VIOLATIONS: [&str; 19] = [
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
        SET_TIMEOUT,
        STALE_DATA_FD,
        PRECOPY_INITIAL_BYTES,
        PRECOPY_FLAGS,
        DATA_SIZE_EXCEEDED,
        RESUME_ACCEPTED_CORRUPT,
        RESUME_DIVERGENCE,
        DIRTY_LOG_MISSED,
    ];

    /// The evidence a violation rule needs to fire: any one of `any_of` (header source names,
    /// TRACE-FORMAT.md); `steps`: the FSM steps themselves (`vfio_mig_get_next_state`), not
    /// only the SET/GET ioctls that `transitions` also covers. A host or trace without them
    /// leaves the rule blind (`doctor` reads this table).
    pub struct Needs {
        pub rule: &'static str,
        pub any_of: &'static [&'static str],
        pub steps: bool,
    }

    const fn needs(rule: &'static str, any_of: &'static [&'static str], steps: bool) -> Needs {
        Needs {
            rule,
            any_of,
            steps,
        }
    }

    const TRANSITIONS: &[&str] = &[crate::trace::source::TRANSITIONS];

    /// Every violation rule's evidence, in table order. The `data`, `precopy_info`,
    /// `precopy_info_v2` and `data_size` events that `stale-data-fd`, `precopy-initial-bytes`,
    /// `precopy-flags` and `data-size-exceeded` judge come from the same ioctl and read/write
    /// tracing as the transitions (or from drive's own calls).
    /// `dirty-log-missed` judges the device's DMA log reports against the witness's findings:
    /// the reports are what it cannot do without.
    pub const EVIDENCE: [Needs; 19] = [
        needs(ILLEGAL_ARC, TRANSITIONS, true),
        needs(UNSUPPORTED_ACCEPTED, TRANSITIONS, false),
        needs(SET_FAILED, TRANSITIONS, false),
        needs(STATE_MISMATCH, TRANSITIONS, false),
        needs(
            DMA_AFTER_QUIESCE,
            &crate::trace::source::DMA_WITNESSES,
            false,
        ),
        needs(IRQ_AFTER_QUIESCE, &[crate::trace::source::IRQ], false),
        needs(STOP_WHILE_PEER_RUNNING, TRANSITIONS, false),
        needs(SAVE_WHILE_PEER_RUNNING, TRANSITIONS, false),
        needs(RUN_WHILE_PEER_STOPPED, TRANSITIONS, false),
        needs(ERROR_STATE, TRANSITIONS, false),
        needs(QUIESCE_BUDGET, TRANSITIONS, false),
        needs(SET_TIMEOUT, TRANSITIONS, false),
        needs(STALE_DATA_FD, TRANSITIONS, false),
        needs(PRECOPY_INITIAL_BYTES, TRANSITIONS, false),
        needs(PRECOPY_FLAGS, TRANSITIONS, false),
        needs(DATA_SIZE_EXCEEDED, TRANSITIONS, false),
        needs(RESUME_ACCEPTED_CORRUPT, TRANSITIONS, false),
        needs(RESUME_DIVERGENCE, TRANSITIONS, false),
        needs(DIRTY_LOG_MISSED, &[crate::trace::source::DIRTY_LOG], false),
    ];

    #[cfg(test)]
    #[test]
    fn every_violation_rule_says_what_evidence_it_needs() {
        let rules: Vec<&str> = EVIDENCE.iter().map(|n| n.rule).collect();
        assert_eq!(rules, VIOLATIONS);
        for n in &EVIDENCE {
            assert!(!n.any_of.is_empty(), "{}", n.rule);
            for s in n.any_of {
                assert!(crate::trace::source::ALL.contains(s), "{}: {s}", n.rule);
            }
        }
    }

    // Warnings: never a violation.
    pub const HAZARD_ARC: &str = "hazard-arc";
    pub const DMA_MAYBE_AFTER_QUIESCE: &str = "dma-maybe-after-quiesce";
    pub const IRQ_MAYBE_AFTER_QUIESCE: &str = "irq-maybe-after-quiesce";
    pub const UNKNOWN_EVENT: &str = "unknown-event";
    pub const UNDECLARED_DEVICE: &str = "undeclared-device";
    pub const UNMATCHED_SET_DONE: &str = "unmatched-set-done";
    pub const UNFINISHED_SET: &str = "unfinished-set";
    pub const NO_IRQ_SOURCE: &str = "no-irq-source";
    pub const BLIND_SPOT_ACCEPTED: &str = "blind-spot-accepted";
    pub const P2P_DMA_INVISIBLE: &str = "p2p-dma-invisible";
    pub const DATA_SIZE_MAYBE_EXCEEDED: &str = "data-size-maybe-exceeded";
    pub const DIRTY_LOG_ONLY: &str = "dirty-log-only";
    /// Warnings only [`super::Verifier::finish`] produces (they concern the whole trace or a
    /// device's coverage, known only at the end, and have no event line).
    pub const AT_FINISH: [&str; 5] = [
        UNFINISHED_SET,
        BLIND_SPOT_ACCEPTED,
        NO_IRQ_SOURCE,
        P2P_DMA_INVISIBLE,
        DIRTY_LOG_ONLY,
    ];

    /// One line a human can act on, for reports.
    pub fn explain(rule: &str) -> &'static str {
        match rule {
            ILLEGAL_ARC => {
                "an FSM step that is not the kernel's next step toward the requested state (vfio_mig_get_next_state); steps of a request with lost events are not judged"
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
                "a device was stopped while a peer in its context could still issue DMA (quiesce every device before stopping any; a SET toward RESUMING is exempt)"
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
            SET_TIMEOUT => {
                "a SET stayed open longer than --max-set-ms allows (a hung arc: a state_mutex deadlock, a device that never answers)"
            }
            STALE_DATA_FD => {
                "migration data moved through a data_fd created before the device's last reset (a reset must invalidate the migration files)"
            }
            PRECOPY_INITIAL_BYTES => {
                "VFIO_MIG_GET_PRECOPY_INFO's initial_bytes did not fall by exactly the bytes read since the previous call (initial data precedes dirty data on the stream), without VFIO_PRECOPY_INFO_REINIT"
            }
            PRECOPY_FLAGS => {
                "VFIO_MIG_GET_PRECOPY_INFO returned a flags word other than 0, or other than VFIO_PRECOPY_INFO_REINIT after the VMM opted in with VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2"
            }
            DATA_SIZE_EXCEEDED => {
                "STOP_COPY saved more bytes than VFIO_DEVICE_FEATURE_MIG_DATA_SIZE estimated while the device was stopped (the VMM sized its downtime on it)"
            }
            DATA_SIZE_MAYBE_EXCEEDED => {
                "STOP_COPY saved more bytes than a VFIO_DEVICE_FEATURE_MIG_DATA_SIZE estimate taken while the device could still change its state"
            }
            RESUME_ACCEPTED_CORRUPT => {
                "the driver accepted a corrupted stream in RESUMING (truncated, bit-flipped, oversized or empty: every byte written and the SET out of RESUMING returned 0) instead of refusing it"
            }
            RESUME_DIVERGENCE => {
                "after RESUMING the device's registers (read through its BAR by the controller) differ from what they were when its state was saved"
            }
            DIRTY_LOG_MISSED => {
                "a page the memory witness saw the device write is in no device DMA logging report (VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT) of its range over that time: a VMM trusting the log would not re-send it"
            }
            HAZARD_ARC => {
                "a request along a blocked arc (STOP_COPY -> PRE_COPY[_P2P]) that hangs kernels without the 2026 fix"
            }
            DMA_MAYBE_AFTER_QUIESCE => {
                "windowed DMA evidence straddling the edge of a quiescent period: it may have happened while quiesced or not"
            }
            IRQ_MAYBE_AFTER_QUIESCE => {
                "an irq_bin (interrupts counted in the kernel) whose window holds a quiescent period between its first and last interrupt: some of them may have been raised while quiesced (the probe closes a bin before any SET, so a recorder broke its contract)"
            }
            UNKNOWN_EVENT => "an event type this migscope does not know was skipped",
            UNDECLARED_DEVICE => "a device was used before a `device` event declared it",
            UNMATCHED_SET_DONE => "a set_done without a matching set",
            UNFINISHED_SET => {
                "a SET that never returned in the trace (open at `end`: the blind spot unfinished)"
            }
            NO_IRQ_SOURCE => {
                "a quiesced device's interrupts were not traced (its irq source is not ok), so irq-after-quiesce could not be checked for it"
            }
            BLIND_SPOT_ACCEPTED => "a blind spot accepted with --accept-blind",
            DIRTY_LOG_ONLY => {
                "a quiesced device's only DMA evidence was its device DMA log: its reports prove no write to the tracked ranges over their windows, and nothing about memory outside them"
            }
            P2P_DMA_INVISIBLE => {
                "under --p2p-policy p2p-only only DMA marked p2p: true counts in the P2P states, and no source sees peer-to-peer DMA unless it marks it so"
            }
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
    /// `set-timeout`: any SET must return within this many ms.
    pub max_set_ms: Option<u64>,
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
    /// The DMA evidence sources that covered the device (its own `sources` over the header's;
    /// `mdev_dma` only for a mediated device), in `source::DMA_WITNESSES` order.
    pub dma_sources: Vec<&'static str>,
    /// Its `irq` source was ok: irq-after-quiesce could be judged for it.
    pub irq_source: bool,
    /// The blind spots that concern this device (`lost`, `dma`, `unfinished`).
    pub blind: Vec<&'static str>,
    /// Its device DMA log's tracked ranges (`dirty_report`s), with the quiescent time their
    /// clean reports cover.
    pub dirty_log: Vec<dirty::DirtyRange>,
}

/// The outcome of a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub verdict: Verdict,
    pub violations: Vec<Finding>,
    pub warnings: Vec<Finding>,
    /// Why the verdict is inconclusive: `lost`, `truncated`, `dma`, `unfinished`.
    pub blind_spots: Vec<String>,
    /// A sentence per blind spot, naming the devices it concerns.
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
                let mut dev = json!({
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
                        "dma_sources": d.dma_sources,
                        "irq_source": d.irq_source,
                        "blind": d.blind,
                });
                if !d.dirty_log.is_empty() {
                    dev["dirty_log"] = d
                        .dirty_log
                        .iter()
                        .map(|r| {
                            json!({
                                "iova": r.iova,
                                "len": r.len,
                                "reports": r.reports,
                                "clean_quiesced_ns": r.clean_quiesced_ns,
                            })
                        })
                        .collect();
                }
                (k.clone(), dev)
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

/// Findings of one event, in the order the rules found them.
struct Out {
    t: u64,
    line: u64,
    list: Vec<Finding>,
}

impl Out {
    fn add(&mut self, rule: &'static str, dev: &str, detail: String, warning: bool) {
        self.list.push(Finding {
            rule,
            dev: Some(dev.to_owned()),
            t: self.t,
            line: self.line,
            detail,
            warning,
        });
    }
}

#[derive(Clone)]
struct Dev {
    name: String,
    /// None when the device was never declared (flag-based rules are skipped).
    flags: Option<MigFlags>,
    ctx: usize,
    /// The device's own evidence sources, from its latest declaration (over the header's).
    sources: BTreeMap<String, String>,
    tl: DeviceTimeline,
    /// A `lost` named this device, or named none.
    lost: bool,
    summary: DeviceSummary,
    /// The VMM opted in to VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2 for this device.
    precopy_v2: bool,
    /// The last VFIO_MIG_GET_PRECOPY_INFO answer of the current pre-copy session.
    precopy: Option<rules::PrecopyTrack>,
    /// The latest VFIO_DEVICE_FEATURE_MIG_DATA_SIZE estimate not yet judged.
    estimate: Option<rules::SizeTrack>,
    resume: resume::ResumeState,
    dirty: dirty::DirtyState,
}

/// What source `name` says for a device: its own `sources` entry, else the header's.
fn status<'a>(
    header: &'a BTreeMap<String, String>,
    own: &'a BTreeMap<String, String>,
    name: &str,
) -> Option<&'a str> {
    own.get(name)
        .or_else(|| header.get(name))
        .map(String::as_str)
}

/// Whether `name` covers device `dev`: it says `ok` for the device, and it can see such a device
/// at all (`mdev_dma`: mediated devices only).
fn covers(
    header: &BTreeMap<String, String>,
    own: &BTreeMap<String, String>,
    dev: &str,
    name: &str,
) -> bool {
    source::reaches(name, dev) && status(header, own, name) == Some("ok")
}

/// The state a declaration puts a device in: its `state`, unless the device's *own* `sources`
/// say `transitions` is unavailable for it (a recorder that attached to a device it could not
/// ask, e.g. `record --pid` whose GET through a duplicate fd failed): then the declared state is
/// the format's default, not evidence, and the device's state is unknown until a GET, a
/// successful SET or a reset. A header-wide `transitions: unavailable` (FSM steps not
/// observable on this kernel) says nothing about the declared state and leaves it alone.
fn declared_state(state: MigState, own: &BTreeMap<String, String>) -> Option<MigState> {
    match own.get(source::TRANSITIONS) {
        Some(v) if v != "ok" => None,
        _ => Some(state),
    }
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

/// [`Verifier::by_id`]'s empty slot.
const NO_DEV: u32 = u32::MAX;

/// The streaming verifier. Feed it events in trace order with [`Verifier::push`], then call
/// [`Verifier::finish`].
pub struct Verifier {
    opts: Options,
    /// The header's sources: every device's, unless its own say otherwise.
    sources: BTreeMap<String, String>,
    devs: Vec<Dev>,
    by_name: NameMap,
    /// The device of the previous event: runs of events about one device skip the lookup.
    last_dev: usize,
    /// Device index by the reader's interned name id ([`Name::id`]; [`NO_DEV`]: not known yet).
    by_id: Vec<u32>,
    ctxs: Vec<(String, Vec<usize>)>,
    ctx_by_name: NameMap,
    violations: Vec<Finding>,
    warnings: Vec<Finding>,
    dropped: u64,
    lost: u64,
    /// The devices `lost` events named.
    lost_named: Vec<String>,
    ended: bool,
    events: u64,
    /// `dma` evidence marked `p2p: true` (for the p2p-only warning).
    p2p_marked: u64,
    /// The time of the last event.
    last_t: u64,
    /// Closed timeline segments not yet taken, by device index: kept only for a caller that
    /// asked ([`Verifier::keep_segments`]), so `check` stores nothing.
    segments: Option<Vec<(usize, Segment)>>,
}

fn ms(ns: u64) -> String {
    format!("{:.1} ms", ns as f64 / 1e6)
}

impl Verifier {
    pub fn new(header: &Header, opts: Options) -> Self {
        Verifier {
            opts,
            sources: header.sources.clone(),
            devs: Vec::new(),
            by_name: NameMap::default(),
            last_dev: usize::MAX,
            by_id: Vec::new(),
            ctxs: Vec::new(),
            ctx_by_name: NameMap::default(),
            violations: Vec::new(),
            warnings: Vec::new(),
            dropped: 0,
            lost: 0,
            lost_named: Vec::new(),
            ended: false,
            events: 0,
            p2p_marked: 0,
            last_t: 0,
            segments: None,
        }
    }

    /// Keeps the timeline [`Segment`]s each event closes, for [`Verifier::drain_segments`]:
    /// what a report draws is what the rules judged.
    pub fn keep_segments(&mut self) {
        self.segments.get_or_insert_with(Vec::new);
    }

    /// The segments closed since the last call, with their device's name, in the order the
    /// events closed them.
    pub fn drain_segments(&mut self) -> impl Iterator<Item = (&str, Segment)> + '_ {
        let devs = &self.devs;
        self.segments
            .iter_mut()
            .flat_map(|v| v.drain(..))
            .map(move |(i, s)| (devs[i].name.as_str(), s))
    }

    /// Every device's segment still in progress, closed at the last event's time (call after
    /// the last [`Verifier::push`]), in declaration order.
    pub fn open_segments(&self) -> impl Iterator<Item = (&str, Segment)> + '_ {
        self.devs
            .iter()
            .map(|d| (d.name.as_str(), d.tl.open_segment(self.last_t)))
    }

    /// Feeds device `i`'s timeline; the segment the event closed is kept when asked for.
    fn feed(&mut self, i: usize, t: u64, kind: KindRef<'_>) -> Option<Segment> {
        let closed = self.devs[i].tl.feed_ref(t, kind);
        if let (Some(keep), Some(seg)) = (self.segments.as_mut(), closed)
            && !(seg.start == seg.end && matches!(seg.what, SegKind::State(_)))
        {
            keep.push((i, seg));
        }
        closed
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

    /// The timeline of device `name`, if the trace has named it.
    pub fn timeline(&self, name: &str) -> Option<&DeviceTimeline> {
        self.by_name.get(name).map(|&i| &self.devs[i].tl)
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

    /// Declares device `name`; a re-declaration takes the new facts (flags, ctx, sources: the
    /// latest declaration is what counts) and keeps the history.
    fn declare(
        &mut self,
        name: &str,
        flags: Option<MigFlags>,
        ctx: &str,
        state: MigState,
        sources: &BTreeMap<String, String>,
        t: u64,
    ) -> usize {
        let ci = self.ctx_index(ctx);
        let observable = covers(&self.sources, sources, name, source::TRANSITIONS);
        if let Some(&i) = self.by_name.get(name) {
            let old = self.devs[i].ctx;
            if old != ci {
                self.ctxs[old].1.retain(|d| *d != i);
                self.ctxs[ci].1.push(i);
            }
            let d = &mut self.devs[i];
            d.flags = flags;
            d.ctx = ci;
            d.sources.clone_from(sources);
            d.tl.set_steps_observable(observable);
            d.summary.ctx = ctx.to_owned();
            d.summary.flags = flags;
            return i;
        }
        let i = self.devs.len();
        self.devs.push(Dev {
            name: name.to_owned(),
            flags,
            ctx: ci,
            sources: sources.clone(),
            tl: DeviceTimeline::new(t, declared_state(state, sources), observable),
            lost: false,
            precopy_v2: false,
            precopy: None,
            estimate: None,
            resume: resume::ResumeState::default(),
            dirty: dirty::DirtyState::default(),
            summary: DeviceSummary {
                ctx: ctx.to_owned(),
                flags,
                ..DeviceSummary::default()
            },
        });
        self.ctxs[ci].1.push(i);
        self.by_name.insert(name.to_owned(), i);
        i
    }

    /// The device index, declaring it (with a warning) on first use. A name with the reader's
    /// interned id is found by the id once it was found by its text.
    #[inline]
    fn dev(&mut self, name: Name<'_>, out: &mut Out) -> usize {
        if let Some(id) = name.id
            && let Some(&i) = self.by_id.get(id as usize)
            && i != NO_DEV
        {
            return i as usize;
        }
        let i = self.dev_by_text(name.text, out);
        if let Some(id) = name.id {
            let id = id as usize;
            if self.by_id.len() <= id {
                self.by_id.resize(id + 1, NO_DEV);
            }
            self.by_id[id] = i as u32;
        }
        i
    }

    fn dev_by_text(&mut self, name: &str, out: &mut Out) -> usize {
        if let Some(d) = self.devs.get(self.last_dev)
            && d.name == name
        {
            return self.last_dev;
        }
        if let Some(&i) = self.by_name.get(name) {
            self.last_dev = i;
            return i;
        }
        out.add(
            rule::UNDECLARED_DEVICE,
            name,
            format!(
                "{name} used before a `device` event; assuming RUNNING, its own context, and unknown migration flags"
            ),
            true,
        );
        let ctx = format!("undeclared:{name}");
        self.declare(name, None, &ctx, MigState::Running, &BTreeMap::new(), out.t)
    }

    /// Feeds one event. `line` is its 1-based line (0 if none). Returns the findings it caused.
    pub fn push(&mut self, line: u64, ev: &Event) -> Vec<Finding> {
        self.push_ref(
            line,
            EventRef {
                t: ev.t,
                pid: ev.pid,
                kind: ev.kind.as_ref(),
            },
        )
    }

    /// [`Verifier::push`] for a borrowed event (what `check` feeds from a native trace: names
    /// by the reader's interned ids, nothing copied). The ids of one verifier's events must
    /// all come from one reader.
    pub fn push_ref(&mut self, line: u64, ev: EventRef<'_>) -> Vec<Finding> {
        self.events += 1;
        self.last_t = ev.t;
        let mut out = Out {
            t: ev.t,
            line,
            list: Vec::new(),
        };
        self.judge(&mut out, ev.kind);
        for f in &out.list {
            self.keep(f.clone());
        }
        out.list
    }

    /// Hands one event to the rule family that judges it: declarations here, the FSM's
    /// requests and steps, DMA and interrupts against quiesce, and migration data in
    /// `rules`; losses and the end feed every timeline they concern. Inlined into `push`: as a
    /// call it cost 19 instructions per event (callgrind, `scripts/bench/instructions.sh`).
    #[inline(always)]
    fn judge(&mut self, out: &mut Out, kind: KindRef<'_>) {
        match kind {
            KindRef::Set { dev, to } => {
                let i = self.dev(dev, out);
                self.set_rules(out, i, to, kind);
            }
            KindRef::Step { dev, from, to } => {
                let i = self.dev(dev, out);
                self.step_rules(out, i, from, to, kind);
            }
            KindRef::SetDone { dev, to, ret, .. } => {
                let i = self.dev(dev, out);
                self.set_done_rules(out, i, to, ret, kind);
            }
            KindRef::Get { dev, state } => {
                let i = self.dev(dev, out);
                self.get_rules(out, i, state, kind);
            }
            KindRef::Reset { dev, ret } => {
                let i = self.dev(dev, out);
                self.resume_reset(i);
                self.reset_rules(out, i, ret, kind);
            }
            KindRef::Dma {
                dev,
                src,
                iova,
                len,
                write,
                window,
                p2p,
            } => {
                let i = self.dev(dev, out);
                match src {
                    DmaSource::Witness if write => {
                        self.dirty_witnessed(out, i, iova, len, window);
                    }
                    DmaSource::DirtyLog => self.dirty_run(i, iova, len, window),
                    _ => {}
                }
                let what = rules::DmaWhat {
                    src,
                    iova,
                    len,
                    write,
                    p2p: p2p == Some(true),
                };
                self.dma_rules(out, i, &what, window);
            }
            KindRef::Irq {
                dev,
                kind: k,
                vector,
            } => {
                let i = self.dev(dev, out);
                self.irq_rules(out, i, k, vector);
            }
            KindRef::Data {
                dev,
                dir,
                bytes,
                file,
            } => {
                let i = self.dev(dev, out);
                self.data_rules(out, i, dir, bytes, file.as_ref());
            }
            KindRef::Map { .. } | KindRef::Unmap { .. } => {}
            KindRef::End => {
                self.end_rules(out);
                self.end_event(out.t, kind);
            }
            KindRef::Owned(k) => self.judge_owned(out, k, kind),
        }
    }

    /// The kinds without a borrowed form (`kind` is their view).
    fn judge_owned(&mut self, out: &mut Out, k: &EventKind, kind: KindRef<'_>) {
        match k {
            EventKind::Device {
                dev,
                flags,
                ctx,
                state,
                driver: _,
                sources,
            } => self.device_rules(out, dev, *flags, ctx, *state, sources),
            EventKind::Mark { .. } => {}
            EventKind::Lost { n, dev, .. } => self.lost_event(*n, dev.as_deref(), out.t, kind),
            EventKind::PrecopyInfo { dev, result } => {
                let i = self.dev(Name::text(dev), out);
                if let Ok(info) = result {
                    self.precopy_info_rules(out, i, info);
                }
            }
            EventKind::DataSize { dev, result } => {
                let i = self.dev(Name::text(dev), out);
                if let Ok(bytes) = result {
                    self.data_size_rules(out, i, *bytes);
                }
            }
            EventKind::PrecopyInfoV2 { dev, ret } => {
                let i = self.dev(Name::text(dev), out);
                if *ret == 0 {
                    self.devs[i].precopy_v2 = true;
                }
            }
            EventKind::CorruptLoad {
                dev,
                corruption,
                bytes,
                ret,
            } => {
                let i = self.dev(Name::text(dev), out);
                self.corrupt_load_rules(out, i, *corruption, *bytes, *ret);
            }
            EventKind::Regs {
                dev,
                stage,
                bar,
                regs,
            } => {
                let i = self.dev(Name::text(dev), out);
                self.regs_rules(out, i, *stage, *bar, regs);
            }
            EventKind::DirtyReport {
                dev,
                iova,
                len,
                window,
                ..
            } => {
                let i = self.dev(Name::text(dev), out);
                self.dirty_report_rules(out, i, *iova, *len, *window);
            }
            EventKind::IrqBin {
                dev,
                kind: k,
                vector,
                n,
                window,
            } => {
                let i = self.dev(Name::text(dev), out);
                self.irq_bin_rules(out, i, *k, *vector, *n, *window);
            }
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
            | EventKind::End => self.judge(out, k.as_ref()),
        }
    }

    /// A `device` declaration: (re)declares it; one declared in ERROR is an error-state.
    fn device_rules(
        &mut self,
        out: &mut Out,
        dev: &str,
        flags: MigFlags,
        ctx: &str,
        state: MigState,
        sources: &BTreeMap<String, String>,
    ) {
        self.declare(dev, Some(flags), ctx, state, sources, out.t);
        if state == MigState::Error {
            out.add(
                rule::ERROR_STATE,
                dev,
                format!("{dev} declared in ERROR"),
                false,
            );
        }
    }

    /// `n` events the probe lost. A loss naming a device concerns its open request (FSM steps
    /// the probe missed); one naming none may concern any device.
    fn lost_event(&mut self, n: u64, dev: Option<&str>, t: u64, kind: KindRef<'_>) {
        self.lost = self.lost.saturating_add(n);
        match dev {
            Some(name) => {
                if let Some(&i) = self.by_name.get(name) {
                    self.devs[i].lost = true;
                    self.feed(i, t, kind);
                }
                if !self.lost_named.iter().any(|d| d == name) {
                    self.lost_named.push(name.to_owned());
                }
            }
            None => {
                for i in 0..self.devs.len() {
                    self.devs[i].lost = true;
                    self.feed(i, t, kind);
                }
            }
        }
    }

    /// The trace's `end`: every device's timeline closes its open piece there.
    fn end_event(&mut self, t: u64, kind: KindRef<'_>) {
        self.ended = true;
        for i in 0..self.devs.len() {
            self.feed(i, t, kind);
        }
    }

    /// The verdict if the trace ended cleanly now (a live session's interim verdict): `fail`
    /// once any violation was found (it can only stay so), otherwise what the events so far
    /// allow, with the blind spots they have; never `truncated` (the trace is still being
    /// written). The findings themselves are not repeated (`violations` and `warnings` are
    /// empty): they were returned by [`Verifier::push`] as they happened.
    pub fn interim(&self) -> Report {
        let header = Header {
            sources: self.sources.clone(),
            ..Header::default()
        };
        let v = Verifier {
            devs: self.devs.clone(),
            lost: self.lost,
            lost_named: self.lost_named.clone(),
            ended: true,
            events: self.events,
            p2p_marked: self.p2p_marked,
            ..Verifier::new(&header, self.opts.clone())
        };
        let mut r = v.finish();
        r.warnings.clear();
        if !self.violations.is_empty() || self.dropped_violation() {
            r.verdict = Verdict::Fail;
        }
        r
    }

    /// Ends the stream and computes the verdict.
    pub fn finish(mut self) -> Report {
        let mut closing = self.close_devices();
        let (blind_spots, details) = self.blind_spots(&mut closing);
        for f in closing.warnings {
            self.keep(f);
        }
        let verdict = if !self.violations.is_empty() || self.dropped_violation() {
            Verdict::Fail
        } else if !blind_spots.is_empty() {
            Verdict::Inconclusive
        } else {
            Verdict::Pass
        };
        let devices = self.devs.into_iter().map(|d| (d.name, d.summary)).collect();
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

    /// Completes each device's summary (its sources, final state, what it was blind to) and
    /// notes what the trace's blind spots and warnings need from it.
    fn close_devices(&mut self) -> Closing {
        let mut c = Closing::default();
        for d in &mut self.devs {
            let s = &mut d.summary;
            s.dma_sources = source::DMA_WITNESSES
                .into_iter()
                .filter(|name| covers(&self.sources, &d.sources, &d.name, name))
                .collect();
            s.irq_source = covers(&self.sources, &d.sources, &d.name, source::IRQ);
            s.final_state = d.tl.known();
            s.dirty_log = d.dirty.ranges();
            let quiesced = d.tl.ever_quiescent();
            if d.lost {
                s.blind.push("lost");
            }
            if quiesced && s.dma_sources.is_empty() {
                s.blind.push("dma");
                c.uncovered.push(format!(
                    "{} ({})",
                    d.name,
                    dma_coverage_text(&self.sources, &d.sources, &d.name)
                ));
            } else if quiesced && s.dma_sources == [source::DIRTY_LOG] {
                // A DMA log sees only its tracked ranges, and only over its reports' windows:
                // a device with no other DMA source is covered for that alone.
                let total = dirty::quiesced_within(d.tl.periods(Scope::Quiescent), 0, self.last_t);
                let seen = d.dirty.quiesced_seen().unwrap_or(0);
                if seen < total {
                    s.blind.push("dma");
                    c.uncovered.push(format!(
                        "{} (its only DMA source is dirty_log, and the windows of its reports of {} covered {seen} of the {total} ns it was quiesced)",
                        d.name,
                        match d.dirty.ranges_text() {
                            r if r.is_empty() => "no range".to_owned(),
                            r => format!("every range ({r})"),
                        }
                    ));
                } else {
                    c.warnings.push(end_warning(
                        rule::DIRTY_LOG_ONLY,
                        Some(&d.name),
                        0,
                        format!(
                            "{}'s only DMA evidence while quiesced is its DMA log: its reports covered the {total} ns it was quiesced for the tracked ranges {} alone; DMA outside them is not seen",
                            d.name,
                            d.dirty.ranges_text()
                        ),
                    ));
                }
            }
            if let Some(r) = d.tl.request() {
                let open_at_end = matches!(d.tl.phase(), Phase::Unfinished(_));
                if open_at_end {
                    s.blind.push("unfinished");
                    c.unfinished.push(format!(
                        "{} (SET {} began at {} ns)",
                        d.name,
                        r.toward.name(),
                        r.t
                    ));
                }
                c.warnings.push(end_warning(
                    rule::UNFINISHED_SET,
                    Some(&d.name),
                    r.t,
                    format!(
                        "SET {} never returned before the trace {}",
                        r.toward.name(),
                        if open_at_end { "ended" } else { "was cut off" }
                    ),
                ));
            }
            if quiesced && !s.irq_source {
                let why = status(&self.sources, &d.sources, source::IRQ).unwrap_or("not declared");
                c.warnings.push(end_warning(
                    rule::NO_IRQ_SOURCE,
                    Some(&d.name),
                    0,
                    format!(
                        "{} was quiesced but its `irq` source is not ok ({why}): irq-after-quiesce was not checked for it (its irq events, if any, were judged)",
                        d.name
                    ),
                ));
            }
        }
        c
    }

    /// The trace's blind spots (lost, truncated, dma, unfinished, in that order) with why;
    /// an accepted DMA blind spot and the p2p-only policy become warnings instead.
    fn blind_spots(&self, c: &mut Closing) -> (Vec<String>, BTreeMap<String, String>) {
        let mut blind_spots = Vec::new();
        let mut details = BTreeMap::new();
        if self.lost > 0 {
            blind_spots.push("lost".to_owned());
            let mut why = format!("{} events were lost while recording", self.lost);
            if !self.lost_named.is_empty() {
                why.push_str(&format!(
                    "; losses named {}: the FSM steps of the request open then were not judged",
                    self.lost_named.join(", ")
                ));
            }
            details.insert("lost".to_owned(), why);
        }
        if !self.ended {
            blind_spots.push("truncated".to_owned());
            details.insert(
                "truncated".to_owned(),
                "the trace has no `end` event: the recorder did not close it cleanly".to_owned(),
            );
        }
        if !c.uncovered.is_empty() {
            let why = format!(
                "no DMA evidence source (witness, dirty_log, iommu_dirty, mdev_dma) covered {} while quiesced: interrupts alone cannot prove the absence of DMA",
                c.uncovered.join("; ")
            );
            if self.opts.accept_blind_dma {
                c.warnings.push(end_warning(
                    rule::BLIND_SPOT_ACCEPTED,
                    None,
                    0,
                    format!("dma (accepted with --accept-blind dma): {why}"),
                ));
            } else {
                blind_spots.push("dma".to_owned());
                details.insert("dma".to_owned(), why);
            }
        }
        if !c.unfinished.is_empty() {
            blind_spots.push("unfinished".to_owned());
            details.insert(
                "unfinished".to_owned(),
                format!(
                    "a SET was still open at `end`, so nothing after it could be judged: {}",
                    c.unfinished.join("; ")
                ),
            );
        }
        if self.opts.p2p_policy == P2pPolicy::P2pOnly {
            c.warnings.push(end_warning(
                rule::P2P_DMA_INVISIBLE,
                None,
                0,
                format!(
                    "--p2p-policy p2p-only: in RUNNING_P2P / PRE_COPY_P2P only DMA marked `p2p: true` was judged, and peer-to-peer DMA is invisible unless a source marks it so ({} DMA event(s) in this trace were marked p2p: true)",
                    self.p2p_marked
                ),
            ));
        }
        (blind_spots, details)
    }

    fn dropped_violation(&self) -> bool {
        self.dropped > 0 && self.violations.len() >= MAX_FINDINGS
    }
}

/// What closing the devices found, for the trace's blind spots and warnings.
#[derive(Default)]
struct Closing {
    /// Devices quiesced with no DMA source, with why.
    uncovered: Vec<String>,
    /// Devices whose SET was still open at `end`.
    unfinished: Vec<String>,
    /// Warnings found at the end, in order.
    warnings: Vec<Finding>,
}

/// A warning found when the trace ends (no line of its own).
fn end_warning(rule: &'static str, dev: Option<&str>, t: u64, detail: String) -> Finding {
    Finding {
        rule,
        dev: dev.map(str::to_owned),
        t,
        line: 0,
        detail,
        warning: true,
    }
}

/// Why no DMA source covered `dev`: each DMA source the trace declares for it, and what it said.
fn dma_coverage_text(
    header: &BTreeMap<String, String>,
    own: &BTreeMap<String, String>,
    dev: &str,
) -> String {
    let said: Vec<String> = source::DMA_WITNESSES
        .into_iter()
        .filter_map(|name| {
            let v = status(header, own, name)?;
            Some(if v == "ok" && !source::reaches(name, dev) {
                format!("{name}: ok, but it covers mediated devices only")
            } else {
                format!("{name}: {v}")
            })
        })
        .collect();
    if said.is_empty() {
        "no DMA source declared".to_owned()
    } else {
        said.join("; ")
    }
}

/// A short errno name for a negative return value, for messages ([`crate::errno`]).
pub use crate::errno::name_of_ret as errno_name;

/// Reads a trace (JSONL or native, told apart by content) from `path` (`-` = stdin) and
/// verifies it.
pub fn check_path(path: &Path, opts: Options) -> Result<Report, TraceError> {
    let reader = open_any(path)?;
    let mut v = Verifier::new(reader.header(), opts);
    let mut warned = 0;
    match reader {
        AnyReader::Jsonl(mut r) => {
            while let Some(item) = r.next_event() {
                let (line, ev) = item?;
                // Surface reader warnings (unknown `ev`) as they appear.
                v.forward_warnings(r.warnings(), &mut warned);
                v.push(line, &ev);
                // Reuse the event's string buffers for the next one.
                r.recycle(ev);
            }
            v.forward_warnings(r.warnings(), &mut warned);
        }
        AnyReader::Native(mut r) => {
            // Borrowed events: names by their string ids, nothing copied per event.
            while let Some(line) = r.next_line() {
                let line = line?;
                v.forward_warnings(r.warnings(), &mut warned);
                v.push_ref(line, r.current());
            }
            v.forward_warnings(r.warnings(), &mut warned);
        }
    }
    Ok(v.finish())
}

#[cfg(test)]
mod tests;
