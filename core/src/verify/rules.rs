//! The rule table of DESIGN.md, one function per event family, each judging an event against
//! the timeline of its device (and of its peers) before the event is fed to that timeline.

use super::{
    DeviceSummary, Out, P2pPolicy, Verifier, errno_name, ms, rule,
    timeline::{Entry, Judgement, OPEN, Period, Phase, Scope, StepTracking},
};
use crate::{
    model::{
        MigFlags, MigState, PRECOPY_INFO_REINIT, PrecopyInfo, StepError, is_hazard, next_state,
        path as fsm_path,
    },
    trace::{DataDir, DataFile, DmaSource, IrqKind, KindRef},
};

/// A device's pre-copy session between two VFIO_MIG_GET_PRECOPY_INFO answers.
#[derive(Clone, Copy, Debug)]
pub(super) struct PrecopyTrack {
    /// `initial_bytes` of the last answer.
    pub initial: u64,
    /// Bytes saved from the device since that answer (its `data` save events).
    pub read: u64,
    /// When it was answered.
    pub t: u64,
}

/// A VFIO_DEVICE_FEATURE_MIG_DATA_SIZE estimate waiting for the STOP_COPY save it sizes.
#[derive(Clone, Copy, Debug)]
pub(super) struct SizeTrack {
    pub estimate: u64,
    /// The device's state when it was taken (None: in transition or unknown).
    pub state: Option<MigState>,
    pub t: u64,
    /// Bytes saved from the device since.
    pub saved: u64,
    /// Some of them were saved in STOP_COPY.
    pub stop_copy: bool,
}

/// The states in which VFIO_MIG_GET_PRECOPY_INFO answers (vfio.h: EINVAL in any other).
fn in_precopy(s: Option<MigState>) -> bool {
    matches!(s, Some(MigState::PreCopy | MigState::PreCopyP2p))
}

/// What a `dma` event says was accessed (for messages).
pub(super) struct DmaWhat {
    pub src: DmaSource,
    pub iova: u64,
    pub len: u64,
    pub write: bool,
    /// The target is a peer device's BAR (`p2p: true`).
    pub p2p: bool,
}

impl DmaWhat {
    fn text(&self) -> String {
        format!(
            "{} {} at iova {:#x} ({} bytes){}",
            self.src.name(),
            if self.write { "write" } else { "read" },
            self.iova,
            self.len,
            if self.p2p { " to a peer BAR" } else { "" }
        )
    }
}

impl Verifier {
    /// Which periods evidence is judged against: every quiescent one (strict, or peer-to-peer
    /// DMA under p2p-only), or only the stopped ones (other evidence under p2p-only).
    fn scope(&self, p2p_dma: bool) -> Scope {
        if self.opts.p2p_policy == P2pPolicy::Strict || p2p_dma {
            Scope::Quiescent
        } else {
            Scope::Stopped
        }
    }

    /// Peers of device `i` (same ctx) whose current state (known, or reached within their open
    /// request) satisfies `pred`, with what they are doing.
    fn peers_where(&self, i: usize, pred: impl Fn(MigState) -> bool) -> Vec<(String, String)> {
        self.ctxs[self.devs[i].ctx]
            .1
            .iter()
            .filter(|&&p| p != i)
            .filter_map(|&p| {
                let tl = &self.devs[p].tl;
                let s = tl.current().filter(|s| pred(*s))?;
                let what = match tl.phase() {
                    Phase::Transition(tr) | Phase::Unfinished(tr) => {
                        format!(
                            "in transition from {} toward {}",
                            s.name(),
                            tr.toward.name()
                        )
                    }
                    Phase::Known(_) | Phase::Unknown => s.name().to_owned(),
                };
                Some((self.devs[p].name.clone(), what))
            })
            .collect()
    }

    /// `set`: error-state (a SET from ERROR), hazard-arc, and the ordering rules among peers.
    pub(super) fn set_rules(&mut self, out: &mut Out, i: usize, to: MigState, kind: KindRef<'_>) {
        // Leaving STOP_COPY ends the save an estimate sized.
        if self.devs[i].tl.known() == Some(MigState::StopCopy) && to != MigState::StopCopy {
            self.judge_estimate(out, i);
        }
        let d = &self.devs[i];
        let dev = d.name.as_str();
        if let Some(r) = d.tl.request() {
            out.add(
                rule::UNFINISHED_SET,
                dev,
                format!(
                    "SET {} began at {} ns never returned before this SET {}",
                    r.toward.name(),
                    r.t,
                    to.name()
                ),
                true,
            );
        }
        if d.tl.known() == Some(MigState::Error) {
            out.add(
                rule::ERROR_STATE,
                dev,
                format!(
                    "SET {} issued while {dev} is in ERROR; only a reset leaves ERROR",
                    to.name()
                ),
                false,
            );
        }
        if let (Some(flags), Some(cur)) = (d.flags, d.tl.current())
            && is_hazard(flags, cur, to)
        {
            out.add(
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
        // A SET toward RESUMING is exempt: on the destination a VMM loads each device while its
        // fresh, idle peers are still RUNNING (QEMU's vfio_load_setup), and a resuming device
        // has no state to lose.
        if matches!(to, MigState::Stop | MigState::StopCopy) {
            for (peer, what) in self.peers_where(i, MigState::dma_allowed) {
                out.add(
                    rule::STOP_WHILE_PEER_RUNNING,
                    dev,
                    format!(
                        "SET {} on {dev} began while peer {peer} in the same context is {what} (quiesce every device before stopping any)",
                        to.name()
                    ),
                    false,
                );
            }
        }
        if to.dma_allowed() {
            for (peer, what) in self.peers_where(i, MigState::stopped) {
                out.add(
                    rule::RUN_WHILE_PEER_STOPPED,
                    dev,
                    format!(
                        "SET {} on {dev} began while peer {peer} in the same context is still {what} (peers must reach a P2P state first)",
                        to.name()
                    ),
                    false,
                );
            }
        }
        self.devs[i].summary.sets += 1;
        self.feed(i, out.t, kind);
    }

    /// `step`: illegal-arc (the kernel's next step from where the steps had taken the device,
    /// unless events of the request were lost) and error-state.
    pub(super) fn step_rules(
        &mut self,
        out: &mut Out,
        i: usize,
        from: MigState,
        to: MigState,
        kind: KindRef<'_>,
    ) {
        let d = &self.devs[i];
        let dev = d.name.as_str();
        // Built only for a finding: most steps are legal and need no text.
        let arc = || format!("FSM step {} -> {}", from.name(), to.name());
        match d.tl.step_tracking() {
            StepTracking::Untracked => {}
            StepTracking::Outside => out.add(
                rule::ILLEGAL_ARC,
                dev,
                format!("{} outside any SET request", arc()),
                false,
            ),
            StepTracking::Expect {
                at: Some(at),
                toward,
            } if at != from => out.add(
                rule::ILLEGAL_ARC,
                dev,
                format!(
                    "{} starts from {} but the device was at {} (toward {})",
                    arc(),
                    from.name(),
                    at.name(),
                    toward.name()
                ),
                false,
            ),
            StepTracking::Expect { toward, .. } => {
                let flags = d.flags.unwrap_or(MigFlags(7));
                match next_state(flags, from, toward) {
                    Ok(n) if n == to => {}
                    Ok(n) => out.add(
                        rule::ILLEGAL_ARC,
                        dev,
                        format!(
                            "{} toward {}: the kernel's next step is {} -> {}",
                            arc(),
                            toward.name(),
                            from.name(),
                            n.name()
                        ),
                        false,
                    ),
                    Err(e) => out.add(
                        rule::ILLEGAL_ARC,
                        dev,
                        format!(
                            "{} toward {}: the kernel has no step there ({})",
                            arc(),
                            toward.name(),
                            step_error_text(e)
                        ),
                        false,
                    ),
                }
            }
        }
        if to == MigState::Error {
            out.add(
                rule::ERROR_STATE,
                dev,
                format!("the driver stepped {dev} into ERROR"),
                false,
            );
        }
        self.devs[i].summary.steps += 1;
        self.feed(i, out.t, kind);
    }

    /// `set_done`: unsupported-accepted, set-failed, illegal-arc (steps that stopped short),
    /// quiesce-budget, error-state, and the quiesce statistics.
    pub(super) fn set_done_rules(
        &mut self,
        out: &mut Out,
        i: usize,
        to: MigState,
        ret: i32,
        kind: KindRef<'_>,
    ) {
        let t = out.t;
        let refused_corrupt = self.resume_set_done(out, i, to, ret);
        let d = &self.devs[i];
        let dev = d.name.as_str();
        let req = d.tl.request().copied();
        if req.is_none() {
            out.add(
                rule::UNMATCHED_SET_DONE,
                dev,
                format!("set_done {} without a set", to.name()),
                true,
            );
        }
        let from = req.map_or(d.tl.current(), |r| r.from);
        let from_name = from.map_or("?", MigState::name);
        let flags = d.flags;
        let supported = flags.is_none_or(|f| f.supports(to)) && to != MigState::Error;
        let route = match (flags, from) {
            (Some(f), Some(s)) if supported => Some(fsm_path(f, s, to)),
            _ => None,
        };
        if ret == 0 {
            if to == MigState::Error {
                out.add(
                    rule::UNSUPPORTED_ACCEPTED,
                    dev,
                    "SET to ERROR returned 0".to_owned(),
                    false,
                );
                out.add(rule::ERROR_STATE, dev, format!("{dev} is in ERROR"), false);
            } else if !supported {
                out.add(
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
            } else if matches!(route, Some(Err(StepError::BlockedArc))) {
                out.add(
                    rule::UNSUPPORTED_ACCEPTED,
                    dev,
                    format!(
                        "SET {from_name} -> {} returned 0 along a blocked arc (the kernel answers EINVAL)",
                        to.name()
                    ),
                    false,
                );
            }
            // Steps lost for this request leave where they stopped unknown.
            if d.tl.steps_seen()
                && let Some(r) = req
                && !r.steps_lost
                && let Some(at) = r.stepped_to
                && at != to
            {
                out.add(
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
            if let Some(r) = req {
                let dur = t.saturating_sub(r.t);
                // quiesce-budget (DESIGN.md): any successful SET into a quiescent state.
                if to.quiescent()
                    && let Some(budget) = self.opts.max_quiesce_ms
                    && dur > budget.saturating_mul(1_000_000)
                {
                    out.add(
                        rule::QUIESCE_BUDGET,
                        dev,
                        format!(
                            "SET {from_name} -> {} took {} (budget {budget} ms)",
                            to.name(),
                            ms(dur)
                        ),
                        false,
                    );
                }
            }
        }
        if let (Some(r), Some(limit)) = (req, self.opts.max_set_ms) {
            let dur = t.saturating_sub(r.t);
            if dur > limit.saturating_mul(1_000_000) {
                out.add(
                    rule::SET_TIMEOUT,
                    dev,
                    format!(
                        "SET {from_name} -> {} took {} before it returned {ret} (limit {limit} ms)",
                        to.name(),
                        ms(dur)
                    ),
                    false,
                );
            }
        }
        let reachable = supported && matches!(route, Some(Ok(_)) | None);
        // The quiesce statistics: the segments the timeline calls a quiesce (a SET entering
        // quiescence, the DMA stop itself), the ones every report draws.
        let new_file = matches!(
            kind,
            KindRef::SetDone {
                data_fd: Some(_),
                ..
            }
        );
        if let Some(dur) = self.feed(i, t, kind).and_then(|s| s.quiesce_ns()) {
            record_quiesce(&mut self.devs[i].summary, dur);
        }
        let d = &mut self.devs[i];
        // A new data_fd starts a new pre-copy session; leaving the pre-copy states ends one.
        if (ret == 0 && new_file) || !in_precopy(d.tl.known()) {
            d.precopy = None;
        }
        // Back in RUNNING, no STOP_COPY followed the estimate: nothing to compare it with.
        if ret == 0 && to == MigState::Running {
            d.estimate = None;
        }
        let d = &self.devs[i];
        if ret != 0 && reachable && !refused_corrupt {
            let after = match d.tl.phase() {
                Phase::Known(s) => format!(
                    "the kernel refused it before any arc ran, so {} stays {}",
                    d.name,
                    s.name()
                ),
                _ => "the state is unknown until the next GET".to_owned(),
            };
            out.add(
                rule::SET_FAILED,
                &d.name,
                format!(
                    "SET {from_name} -> {} failed with {ret} ({}); {after}",
                    to.name(),
                    errno_name(ret)
                ),
                false,
            );
        }
    }

    /// `get`: state-mismatch ("has it got there?") and error-state.
    pub(super) fn get_rules(
        &mut self,
        out: &mut Out,
        i: usize,
        state: MigState,
        kind: KindRef<'_>,
    ) {
        let d = &self.devs[i];
        let dev = d.name.as_str();
        if let Some(known) = d.tl.known()
            && known != state
        {
            out.add(
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
        if state == MigState::Error {
            out.add(
                rule::ERROR_STATE,
                dev,
                format!("GET reports {dev} in ERROR"),
                false,
            );
        }
        self.feed(i, out.t, kind);
    }

    /// `dma`: dma-after-quiesce, and dma-maybe-after-quiesce for a window partly in a quiescent
    /// period. Evidence is judged whatever the coverage said: a source that saw it, saw it.
    pub(super) fn dma_rules(
        &mut self,
        out: &mut Out,
        i: usize,
        what: &DmaWhat,
        window: Option<(u64, u64)>,
    ) {
        let scope = self.scope(what.p2p);
        if what.p2p {
            self.p2p_marked += 1;
        }
        let t = out.t;
        let d = &mut self.devs[i];
        d.summary.dma += 1;
        match d.tl.judge(scope, t, window) {
            Judgement::Allowed => {}
            Judgement::Violation(p) => {
                d.summary.dma_quiesced += 1;
                let when = match window {
                    Some((t0, t1)) => format!(
                        "between {} and {} after",
                        ms(t0.saturating_sub(p.start)),
                        ms(t1.saturating_sub(p.start))
                    ),
                    None => format!("{} after", ms(t.saturating_sub(p.start))),
                };
                let detail = format!(
                    "{} {when} {}",
                    what.text(),
                    quiesced_text(&p, d.tl.current())
                );
                out.add(rule::DMA_AFTER_QUIESCE, &d.name, detail, false);
            }
            Judgement::Maybe(p) => {
                let (t0, t1) = window.unwrap_or((t, t));
                let detail = format!(
                    "{} in a window [{t0}, {t1}] that straddles the edge of a quiescent period ({}, from {} ns): it may have happened while quiesced",
                    what.text(),
                    quiesced_text(&p, None),
                    p.start
                );
                out.add(rule::DMA_MAYBE_AFTER_QUIESCE, &d.name, detail, true);
            }
        }
    }

    /// `irq`: irq-after-quiesce. Judged even where the device's `irq` source is not ok: an
    /// interrupt that was seen is evidence.
    pub(super) fn irq_rules(&mut self, out: &mut Out, i: usize, kind: IrqKind, vector: u32) {
        let scope = self.scope(false);
        let t = out.t;
        let d = &mut self.devs[i];
        d.summary.irq += 1;
        if let Judgement::Violation(p) = d.tl.judge(scope, t, None) {
            d.summary.irq_quiesced += 1;
            let detail = format!(
                "{} vector {vector} {} after {}",
                kind.name(),
                ms(t.saturating_sub(p.start)),
                quiesced_text(&p, d.tl.current())
            );
            out.add(rule::IRQ_AFTER_QUIESCE, &d.name, detail, false);
        }
    }

    /// `irq_bin`: `n` interrupts, the first at `t0` and the last at `t1` exactly, the others
    /// somewhere between. Windowed evidence: irq-after-quiesce when the whole bin lies in a
    /// quiescent period or one of its exact ends does; irq-maybe-after-quiesce (a warning)
    /// when a quiescent period lies only between its ends and the bin has interrupts there
    /// (more than its two ends). Counted in the summary's `irq` as
    /// `n` interrupts; `irq_quiesced` counts the findings (one per bin, as one per `irq`).
    pub(super) fn irq_bin_rules(
        &mut self,
        out: &mut Out,
        i: usize,
        kind: IrqKind,
        vector: u32,
        n: u64,
        (t0, t1): (u64, u64),
    ) {
        let scope = self.scope(false);
        let d = &mut self.devs[i];
        d.summary.irq = d.summary.irq.saturating_add(n);
        let what = format!("{n} {} vector {vector} interrupts", kind.name());
        // The window judged is [t0, t1]: `judge` takes (t0', t1] in whole nanoseconds.
        match d.tl.judge(scope, out.t, Some((t0.saturating_sub(1), t1))) {
            Judgement::Allowed => {}
            Judgement::Violation(p) => {
                d.summary.irq_quiesced += 1;
                let detail = format!(
                    "{what} counted in a bin [{t0}, {t1}], {} to {} after {}",
                    ms(t0.saturating_sub(p.start)),
                    ms(t1.saturating_sub(p.start)),
                    quiesced_text(&p, d.tl.current())
                );
                out.add(rule::IRQ_AFTER_QUIESCE, &d.name, detail, false);
            }
            Judgement::Maybe(p) => {
                // The bin's ends are exact interrupt times: one inside a quiescent period is
                // an interrupt raised there, whatever the others did.
                let end = [(t0, "first"), (t1, "last")]
                    .into_iter()
                    .find_map(|(te, which)| match d.tl.judge(scope, te, None) {
                        Judgement::Violation(q) => Some((te, which, q)),
                        _ => None,
                    });
                if let Some((te, which, q)) = end {
                    d.summary.irq_quiesced += 1;
                    let detail = format!(
                        "the {which} of {what} counted in a bin [{t0}, {t1}] was raised at {te}, {} after {}",
                        ms(te.saturating_sub(q.start)),
                        quiesced_text(&q, d.tl.current())
                    );
                    out.add(rule::IRQ_AFTER_QUIESCE, &d.name, detail, false);
                } else if n > 2 {
                    let detail = format!(
                        "{what} counted in a bin [{t0}, {t1}] whose window holds a quiescent period ({}, from {} ns) between its first and last interrupt: some may have been raised while quiesced",
                        quiesced_text(&p, None),
                        p.start
                    );
                    out.add(rule::IRQ_MAYBE_AFTER_QUIESCE, &d.name, detail, true);
                }
            }
        }
    }

    /// `data`: save-while-peer-running, stale-data-fd, and the bytes the pre-copy and
    /// data-size rules relate their answers to.
    pub(super) fn data_rules(
        &mut self,
        out: &mut Out,
        i: usize,
        dir: DataDir,
        bytes: u64,
        file: Option<&DataFile>,
    ) {
        let d = &mut self.devs[i];
        match dir {
            DataDir::Save => d.summary.data_saved = d.summary.data_saved.saturating_add(bytes),
            DataDir::Load => d.summary.data_loaded = d.summary.data_loaded.saturating_add(bytes),
        }
        if dir == DataDir::Save {
            let in_stop_copy = d.tl.current() == Some(MigState::StopCopy);
            if let Some(p) = &mut d.precopy {
                p.read = p.read.saturating_add(bytes);
            }
            if let Some(e) = &mut d.estimate {
                e.saved = e.saved.saturating_add(bytes);
                e.stop_copy |= in_stop_copy;
            }
        }
        if let Some(f) = file
            && f.fd_gen < f.reset_gen
        {
            let (verb, prep) = match dir {
                DataDir::Save => ("read", "from"),
                DataDir::Load => ("written", "to"),
            };
            out.add(
                rule::STALE_DATA_FD,
                &d.name,
                format!(
                    "{bytes} bytes {verb} {prep} data_fd {}, a file created at reset generation {} while {} is at reset generation {}: the device was reset since and the file still moves data",
                    f.fd, f.fd_gen, d.name, f.reset_gen
                ),
                false,
            );
        }
        if dir == DataDir::Save && self.devs[i].tl.current() == Some(MigState::StopCopy) {
            let dev = &self.devs[i].name;
            for (peer, what) in self.peers_where(i, MigState::dma_allowed) {
                out.add(
                    rule::SAVE_WHILE_PEER_RUNNING,
                    dev,
                    format!("{bytes} bytes of {dev}'s state saved while peer {peer} is {what}"),
                    false,
                );
            }
        }
    }
}

impl Verifier {
    /// `reset`: a successful reset ends every migration session of the device.
    pub(super) fn reset_rules(&mut self, out: &mut Out, i: usize, ret: i32, kind: KindRef<'_>) {
        self.feed(i, out.t, kind);
        let d = &mut self.devs[i];
        if ret == 0 {
            d.precopy = None;
            d.estimate = None;
        }
    }

    /// `precopy_info` (a successful answer): precopy-flags and precopy-initial-bytes.
    pub(super) fn precopy_info_rules(&mut self, out: &mut Out, i: usize, info: &PrecopyInfo) {
        let t = out.t;
        let d = &mut self.devs[i];
        let v2 = d.precopy_v2;
        let flags = info.flags;
        let why = if flags == 0 || (v2 && flags == PRECOPY_INFO_REINIT) {
            None
        } else if v2 {
            Some(format!(
                "bits {:#x} outside VFIO_PRECOPY_INFO_REINIT after the VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2 opt-in, which makes the driver clear the word (a driver that echoes the caller's flags back)",
                flags & !PRECOPY_INFO_REINIT
            ))
        } else if flags == PRECOPY_INFO_REINIT {
            Some("VFIO_PRECOPY_INFO_REINIT without the VMM's VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2 opt-in, when the word is reserved".to_owned())
        } else {
            Some(
                "a reserved word: the VMM did not opt in to VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2"
                    .to_owned(),
            )
        };
        if let Some(why) = why {
            out.add(
                rule::PRECOPY_FLAGS,
                &d.name,
                format!("VFIO_MIG_GET_PRECOPY_INFO returned flags {flags:#x}: {why}"),
                false,
            );
        }
        // Judged only within a pre-copy session whose every read the trace holds.
        if !in_precopy(d.tl.current()) || d.lost {
            d.precopy = None;
            return;
        }
        let reinit = v2 && flags & PRECOPY_INFO_REINIT != 0;
        if let Some(p) = d.precopy
            && !reinit
        {
            // vfio.h: initial_bytes "should ... decrease as migration data is read", and initial
            // data precedes dirty data on the stream (the REINIT series' statement of the
            // contract): what was read came off initial_bytes first.
            let expected = p.initial.saturating_sub(p.read);
            let now = info.initial_bytes;
            if now != expected {
                let how = if now > p.initial {
                    format!("grew from {} to {now}", p.initial)
                } else if now == p.initial {
                    format!("stayed at {now} although {} bytes were read", p.read)
                } else if now < expected {
                    format!(
                        "fell from {} to {now}, by more than the {} bytes read",
                        p.initial, p.read
                    )
                } else {
                    format!(
                        "fell from {} to {now}, not by the {} bytes read (expected {expected})",
                        p.initial, p.read
                    )
                };
                out.add(
                    rule::PRECOPY_INITIAL_BYTES,
                    &d.name,
                    format!(
                        "initial_bytes {how} since the answer at {} ns, without VFIO_PRECOPY_INFO_REINIT",
                        p.t
                    ),
                    false,
                );
            }
        }
        d.precopy = Some(PrecopyTrack {
            initial: info.initial_bytes,
            read: 0,
            t,
        });
    }

    /// `data_size` (a successful answer): the latest estimate waits for the STOP_COPY save.
    pub(super) fn data_size_rules(&mut self, out: &mut Out, i: usize, bytes: u64) {
        let d = &mut self.devs[i];
        d.estimate = Some(SizeTrack {
            estimate: bytes,
            state: d.tl.known(),
            t: out.t,
            saved: 0,
            stop_copy: false,
        });
    }

    /// The pending estimate of device `i` against what was saved since, once its STOP_COPY
    /// save is over: a violation when it was taken while the device was stopped (nothing could
    /// change the state it sized any more), else the maybe-warning.
    pub(super) fn judge_estimate(&mut self, out: &mut Out, i: usize) {
        let d = &mut self.devs[i];
        let Some(e) = d.estimate.take_if(|e| e.stop_copy) else {
            return;
        };
        if e.saved <= e.estimate {
            return;
        }
        let stopped = matches!(e.state, Some(MigState::Stop | MigState::StopCopy));
        let (rule, warning) = if stopped {
            (rule::DATA_SIZE_EXCEEDED, false)
        } else {
            (rule::DATA_SIZE_MAYBE_EXCEEDED, true)
        };
        let when = e
            .state
            .map_or("in transition or an unknown state", MigState::name);
        out.add(
            rule,
            &d.name,
            format!(
                "the save through STOP_COPY moved {} bytes after VFIO_DEVICE_FEATURE_MIG_DATA_SIZE estimated {} at {} ns (device {when}{})",
                e.saved,
                e.estimate,
                e.t,
                if stopped {
                    ": stopped, nothing could add to its state"
                } else {
                    ": it could still change its state"
                }
            ),
            warning,
        );
    }

    /// `end`: set-timeout for SETs still open, and estimates whose STOP_COPY was the last state.
    pub(super) fn end_rules(&mut self, out: &mut Out) {
        for i in 0..self.devs.len() {
            if self.devs[i].tl.known() == Some(MigState::StopCopy) {
                self.judge_estimate(out, i);
            }
            let d = &self.devs[i];
            if let (Some(r), Some(limit)) = (d.tl.request(), self.opts.max_set_ms) {
                let open = out.t.saturating_sub(r.t);
                if open > limit.saturating_mul(1_000_000) {
                    out.add(
                        rule::SET_TIMEOUT,
                        &d.name,
                        format!(
                            "SET {} begun at {} ns was still open {} later when the trace ended (limit {limit} ms)",
                            r.toward.name(),
                            r.t,
                            ms(open)
                        ),
                        false,
                    );
                }
            }
        }
    }
}

fn record_quiesce(s: &mut DeviceSummary, dur: u64) {
    s.quiesce_min_ns = if s.quiesce_count == 0 {
        dur
    } else {
        s.quiesce_min_ns.min(dur)
    };
    s.quiesce_max_ns = s.quiesce_max_ns.max(dur);
    s.quiesce_total_ns = s.quiesce_total_ns.saturating_add(dur);
    s.quiesce_count += 1;
}

/// "RUNNING_P2P completed", plus "(now STOP_COPY)" when the device has moved on since.
fn quiesced_text(p: &Period, now: Option<MigState>) -> String {
    let Some(s) = p.state else {
        return "the device was quiesced".to_owned();
    };
    let base = match p.entry {
        Entry::Completed => format!("{} completed", s.name()),
        Entry::Reached => format!(
            "{} was reached (the driver's next FSM step began)",
            s.name()
        ),
        Entry::Declared => format!("{} was declared", s.name()),
        Entry::ReadBack => format!("a GET read back {}", s.name()),
        Entry::Refused | Entry::Failed => format!("{} was kept (a SET was refused)", s.name()),
    };
    match now {
        Some(n) if n != s => format!("{base} (now {})", n.name()),
        None if p.end == OPEN => base,
        None => format!("{base}; that period ended at {} ns", p.end),
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
