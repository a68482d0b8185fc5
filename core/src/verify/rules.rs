//! The rule table of DESIGN.md, one function per event family, each judging an event against
//! the timeline of its device (and of its peers) before the event is fed to that timeline.

use super::{
    DeviceSummary, Out, P2pPolicy, Verifier, errno_name, ms, rule,
    timeline::{Entry, Judgement, OPEN, Period, Phase, Scope, StepTracking},
};
use crate::{
    model::{MigFlags, MigState, StepError, is_hazard, next_state, path as fsm_path},
    trace::{DataDir, DmaSource, EventKind, IrqKind},
};

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
    pub(super) fn set_rules(&mut self, out: &mut Out, i: usize, to: MigState, kind: &EventKind) {
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
        kind: &EventKind,
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
        kind: &EventKind,
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
        let reachable = supported && matches!(route, Some(Ok(_)) | None);
        // The quiesce statistics: the segments the timeline calls a quiesce (a SET entering
        // quiescence, the DMA stop itself), the ones every report draws.
        if let Some(dur) = self.feed(i, t, kind).and_then(|s| s.quiesce_ns()) {
            record_quiesce(&mut self.devs[i].summary, dur);
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
    pub(super) fn get_rules(&mut self, out: &mut Out, i: usize, state: MigState, kind: &EventKind) {
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

    /// `data`: save-while-peer-running.
    pub(super) fn data_rules(&mut self, out: &mut Out, i: usize, dir: DataDir, bytes: u64) {
        let s = &mut self.devs[i].summary;
        match dir {
            DataDir::Save => s.data_saved += bytes,
            DataDir::Load => s.data_loaded += bytes,
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
