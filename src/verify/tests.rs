//! Unit and property tests of the rules: semantics at the edges (windows, transitions, unknown
//! states), and generated traces from a correct simulated driver that must always pass.

use proptest::prelude::*;

use super::*;
use crate::{
    model::{MigFlags, MigState, path},
    trace::{DmaSource, EventKind, IrqKind},
};

use MigState::*;

fn header(witness: bool) -> Header {
    let mut h = Header::default();
    h.sources.insert("transitions".into(), "ok".into());
    h.sources.insert("irq".into(), "ok".into());
    if witness {
        h.sources.insert("witness".into(), "ok".into());
    }
    h
}

struct T {
    v: Verifier,
    line: u64,
}

impl T {
    fn new() -> Self {
        T::with(Options::default())
    }
    fn with(opts: Options) -> Self {
        T {
            v: Verifier::new(&header(true), opts),
            line: 1,
        }
    }
    fn push(&mut self, t: u64, kind: EventKind) -> Vec<&'static str> {
        self.line += 1;
        self.v
            .push(self.line, &Event { t, pid: None, kind })
            .into_iter()
            .filter(|f| !f.warning)
            .map(|f| f.rule)
            .collect()
    }
    fn device(&mut self, dev: &str, flags: u32, ctx: &str, state: MigState) {
        let k = EventKind::Device {
            dev: dev.into(),
            flags: MigFlags(flags),
            ctx: ctx.into(),
            state,
            driver: None,
            sources: Default::default(),
        };
        assert!(self.push(0, k).is_empty());
    }
    /// A well-behaved SET with the kernel's steps; returns the violations it caused.
    fn set(
        &mut self,
        t: u64,
        dev: &str,
        flags: u32,
        from: MigState,
        to: MigState,
    ) -> Vec<&'static str> {
        let mut out = self.push(
            t,
            EventKind::Set {
                dev: dev.into(),
                to,
            },
        );
        let p = path(MigFlags(flags), from, to).expect("legal path");
        for (i, w) in p.windows(2).enumerate() {
            out.extend(self.push(
                t + 1 + i as u64,
                EventKind::Step {
                    dev: dev.into(),
                    from: w[0],
                    to: w[1],
                },
            ));
        }
        out.extend(self.push(
            t + 100,
            EventKind::SetDone {
                dev: dev.into(),
                to,
                ret: 0,
                data_fd: None,
            },
        ));
        out
    }
    fn dma(
        &mut self,
        t: u64,
        dev: &str,
        window: Option<(u64, u64)>,
        p2p: Option<bool>,
    ) -> Vec<&'static str> {
        self.push(
            t,
            EventKind::Dma {
                dev: dev.into(),
                src: DmaSource::Witness,
                iova: 0x1000,
                len: 64,
                write: true,
                window,
                p2p,
            },
        )
    }
    fn irq(&mut self, t: u64, dev: &str) -> Vec<&'static str> {
        self.push(
            t,
            EventKind::Irq {
                dev: dev.into(),
                kind: IrqKind::Msi,
                vector: 0,
            },
        )
    }
}

const P2P: u32 = MigFlags::STOP_COPY | MigFlags::P2P;
const ALL: u32 = 7;
const D: &str = "0000:00:02.0";
const E: &str = "0000:00:03.0";

#[test]
fn dma_at_the_instant_of_set_done_is_after_the_quiesce() {
    let mut t = T::new();
    t.device(D, P2P, "vm", Running);
    assert!(t.set(1000, D, P2P, Running, RunningP2p).is_empty());
    // set_done at 1100: "in `to` from this instant".
    assert_eq!(t.dma(1100, D, None, None), vec![rule::DMA_AFTER_QUIESCE]);
}

#[test]
fn dma_during_the_arc_is_the_drivers_business() {
    let mut t = T::new();
    t.device(D, P2P, "vm", Running);
    assert!(
        t.push(
            1000,
            EventKind::Set {
                dev: D.into(),
                to: RunningP2p
            }
        )
        .is_empty()
    );
    assert!(t.dma(1050, D, Some((900, 1050)), None).is_empty());
    assert!(t.irq(1060, D).is_empty());
}

#[test]
fn transition_between_two_quiescent_states_stays_forbidden() {
    let mut t = T::new();
    t.device(D, P2P, "vm", Running);
    t.set(1000, D, P2P, Running, RunningP2p);
    assert!(
        t.push(
            5000,
            EventKind::Set {
                dev: D.into(),
                to: Stop
            }
        )
        .is_empty()
    );
    // Window entirely after the P2P quiesce, during the P2P -> STOP transition.
    assert_eq!(
        t.dma(5050, D, Some((2000, 5050)), None),
        vec![rule::DMA_AFTER_QUIESCE]
    );
    assert_eq!(t.irq(5060, D), vec![rule::IRQ_AFTER_QUIESCE]);
}

#[test]
fn resuming_toward_running_allows_dma_from_the_set() {
    let mut t = T::new();
    t.device(D, P2P, "vm", Running);
    t.set(1000, D, P2P, Running, RunningP2p);
    assert!(
        t.push(
            9000,
            EventKind::Set {
                dev: D.into(),
                to: Running
            }
        )
        .is_empty()
    );
    assert!(t.dma(9001, D, None, None).is_empty());
}

#[test]
fn window_reaching_back_into_a_finished_quiesce() {
    let mut t = T::new();
    t.device(D, P2P, "vm", Running);
    t.set(1000, D, P2P, Running, RunningP2p); // quiesced from 1100
    t.set(5000, D, P2P, RunningP2p, Running); // allowed again from 5000 (set start)
    // Entirely inside the finished quiesce [1100, 5000).
    assert_eq!(
        t.dma(6000, D, Some((2000, 4000)), None),
        vec![rule::DMA_AFTER_QUIESCE]
    );
    // Straddles its end: only a warning.
    let f = t.v.push(
        99,
        &Event {
            t: 6001,
            pid: None,
            kind: EventKind::Dma {
                dev: D.into(),
                src: DmaSource::Witness,
                iova: 0,
                len: 1,
                write: true,
                window: Some((4000, 5500)),
                p2p: None,
            },
        },
    );
    assert_eq!(f.len(), 1);
    assert_eq!(
        (f[0].rule, f[0].warning),
        (rule::DMA_MAYBE_AFTER_QUIESCE, true)
    );
}

#[test]
fn p2p_only_policy_keeps_stopped_states_strict() {
    let mut t = T::with(Options {
        p2p_policy: P2pPolicy::P2pOnly,
        ..Options::default()
    });
    t.device(D, P2P, "vm", Running);
    t.set(1000, D, P2P, Running, RunningP2p);
    assert!(t.dma(2000, D, None, Some(false)).is_empty());
    assert!(t.dma(2001, D, None, None).is_empty());
    assert!(t.irq(2002, D).is_empty());
    assert_eq!(
        t.dma(2003, D, None, Some(true)),
        vec![rule::DMA_AFTER_QUIESCE]
    );
    t.set(3000, D, P2P, RunningP2p, Stop);
    assert_eq!(
        t.dma(4000, D, None, Some(false)),
        vec![rule::DMA_AFTER_QUIESCE]
    );
    assert_eq!(t.irq(4001, D), vec![rule::IRQ_AFTER_QUIESCE]);
}

#[test]
fn failed_set_makes_the_state_unknown_until_get() {
    let mut t = T::new();
    t.device(D, P2P, "vm", Running);
    t.push(
        1000,
        EventKind::Set {
            dev: D.into(),
            to: RunningP2p,
        },
    );
    let v = t.push(
        1100,
        EventKind::SetDone {
            dev: D.into(),
            to: RunningP2p,
            ret: -5,
            data_fd: None,
        },
    );
    assert_eq!(v, vec![rule::SET_FAILED]);
    // Unknown state: no quiesce to violate, no mismatch to find.
    assert!(t.dma(1200, D, None, None).is_empty());
    assert!(
        t.push(
            1300,
            EventKind::Get {
                dev: D.into(),
                state: RunningP2p
            }
        )
        .is_empty()
    );
    // Now known again, and quiescent.
    assert_eq!(t.irq(1400, D), vec![rule::IRQ_AFTER_QUIESCE]);
}

#[test]
fn reset_returns_to_running() {
    let mut t = T::new();
    t.device(D, P2P, "vm", Running);
    t.set(1000, D, P2P, Running, Stop);
    assert!(
        t.push(
            2000,
            EventKind::Reset {
                dev: D.into(),
                ret: 0
            }
        )
        .is_empty()
    );
    assert!(t.dma(2001, D, None, None).is_empty());
    assert!(
        t.push(
            2002,
            EventKind::Get {
                dev: D.into(),
                state: Running
            }
        )
        .is_empty()
    );
}

#[test]
fn ordering_rules_look_only_at_the_same_ctx_and_at_states() {
    let mut t = T::new();
    t.device(D, P2P, "vm", Running);
    t.device(E, P2P, "vm", Running);
    t.device("0000:00:09.0", P2P, "other", Running);
    t.set(1000, D, P2P, Running, RunningP2p);
    // E is mid-way to RUNNING_P2P: still RUNNING, so stopping D now is a violation.
    t.push(
        2000,
        EventKind::Set {
            dev: E.into(),
            to: RunningP2p,
        },
    );
    assert_eq!(
        t.push(
            2001,
            EventKind::Set {
                dev: D.into(),
                to: Stop
            }
        ),
        vec![rule::STOP_WHILE_PEER_RUNNING]
    );
}

#[test]
fn qemu_order_passes_naive_order_fails() {
    // qemu: both to P2P, then both to STOP_COPY, save, STOP, both back to P2P, then RUNNING.
    let mut t = T::new();
    t.device(D, P2P, "vm", Running);
    t.device(E, P2P, "vm", Running);
    let mut v = Vec::new();
    v.extend(t.set(1000, D, P2P, Running, RunningP2p));
    v.extend(t.set(2000, E, P2P, Running, RunningP2p));
    v.extend(t.set(3000, D, P2P, RunningP2p, StopCopy));
    v.extend(t.set(4000, E, P2P, RunningP2p, StopCopy));
    v.extend(t.push(
        4500,
        EventKind::Data {
            dev: D.into(),
            dir: crate::trace::DataDir::Save,
            bytes: 10,
        },
    ));
    v.extend(t.set(5000, D, P2P, StopCopy, RunningP2p));
    v.extend(t.set(6000, E, P2P, StopCopy, RunningP2p));
    v.extend(t.set(7000, D, P2P, RunningP2p, Running));
    v.extend(t.set(8000, E, P2P, RunningP2p, Running));
    assert!(v.is_empty(), "{v:?}");
    // naive: D all the way, then E.
    let mut t = T::new();
    t.device(D, P2P, "vm", Running);
    t.device(E, P2P, "vm", Running);
    let mut v = Vec::new();
    v.extend(t.set(1000, D, P2P, Running, RunningP2p));
    v.extend(t.set(2000, D, P2P, RunningP2p, StopCopy));
    v.extend(t.set(3000, D, P2P, StopCopy, Running));
    v.extend(t.set(4000, E, P2P, Running, RunningP2p));
    assert_eq!(v, vec![rule::STOP_WHILE_PEER_RUNNING]);
}

#[test]
fn undeclared_devices_are_warned_and_tracked() {
    let mut t = T::new();
    let f = t.v.push(
        2,
        &Event {
            t: 5,
            pid: Some(1),
            kind: EventKind::Set {
                dev: D.into(),
                to: Stop,
            },
        },
    );
    assert!(
        f.iter()
            .any(|x| x.rule == rule::UNDECLARED_DEVICE && x.warning)
    );
    let r = t.v.finish();
    assert!(r.devices.contains_key(D));
}

#[test]
fn verdict_precedence_fail_over_inconclusive() {
    let mut t = T::new();
    t.device(D, P2P, "vm", Running);
    t.set(1000, D, P2P, Running, RunningP2p);
    t.irq(2000, D);
    t.push(
        3000,
        EventKind::Lost {
            n: 1,
            source: "ringbuf".into(),
            dev: None,
        },
    );
    let r = t.v.finish();
    assert_eq!(r.verdict, Verdict::Fail);
    assert_eq!(
        r.blind_spots,
        vec!["lost".to_owned(), "truncated".to_owned()]
    );
}

#[test]
fn memory_is_bounded_by_devices_not_events() {
    let mut t = T::new();
    t.device(D, P2P, "vm", Running);
    t.set(1000, D, P2P, Running, RunningP2p);
    for i in 0..(MAX_FINDINGS as u64 + 500) {
        t.irq(2000 + i, D);
    }
    let r = t.v.finish();
    assert_eq!(r.violations.len(), MAX_FINDINGS);
    assert_eq!(r.dropped_findings, 500);
    assert_eq!(r.verdict, Verdict::Fail);
}

// ---- property tests ----

/// A correct multi-device run: QEMU ordering, DMA and interrupts only while allowed, every SET
/// followed by a GET that agrees. Returns the events.
fn correct_run(flags: u32, ndev: usize, plan: &[MigState], dma_every: u64) -> Vec<Event> {
    let devs: Vec<String> = (0..ndev)
        .map(|i| format!("0000:00:{:02x}.0", i + 2))
        .collect();
    let mut out = Vec::new();
    let mut t = 0u64;
    let mut ev = |t: &mut u64, kind: EventKind| {
        *t += 10;
        out.push(Event {
            t: *t,
            pid: Some(7),
            kind,
        });
    };
    for d in &devs {
        ev(
            &mut t,
            EventKind::Device {
                dev: d.clone(),
                flags: MigFlags(flags),
                ctx: "vm".into(),
                state: Running,
                driver: None,
                sources: Default::default(),
            },
        );
    }
    let mut cur = Running;
    for &target in plan.iter().chain([Running].iter()) {
        let Ok(p) = path(MigFlags(flags), cur, target) else {
            continue;
        };
        // Walk every device one arc at a time in lock step (QEMU order generalised).
        for w in p.windows(2) {
            for d in &devs {
                ev(
                    &mut t,
                    EventKind::Set {
                        dev: d.clone(),
                        to: w[1],
                    },
                );
                ev(
                    &mut t,
                    EventKind::Step {
                        dev: d.clone(),
                        from: w[0],
                        to: w[1],
                    },
                );
                ev(
                    &mut t,
                    EventKind::SetDone {
                        dev: d.clone(),
                        to: w[1],
                        ret: 0,
                        data_fd: None,
                    },
                );
                ev(
                    &mut t,
                    EventKind::Get {
                        dev: d.clone(),
                        state: w[1],
                    },
                );
                if w[1].dma_allowed() && dma_every > 0 {
                    for k in 0..dma_every {
                        ev(
                            &mut t,
                            EventKind::Dma {
                                dev: d.clone(),
                                src: DmaSource::Witness,
                                iova: k * 4096,
                                len: 4096,
                                write: true,
                                window: None,
                                p2p: None,
                            },
                        );
                        ev(
                            &mut t,
                            EventKind::Irq {
                                dev: d.clone(),
                                kind: IrqKind::Msi,
                                vector: 0,
                            },
                        );
                    }
                }
            }
        }
        cur = target;
    }
    ev(&mut t, EventKind::End);
    out
}

fn verdict_of(events: &[Event]) -> Report {
    let mut v = Verifier::new(&header(true), Options::default());
    for (i, e) in events.iter().enumerate() {
        v.push(i as u64 + 2, e);
    }
    v.finish()
}

fn state_strategy() -> impl Strategy<Value = MigState> {
    prop::sample::select(vec![
        Stop, Running, StopCopy, Resuming, RunningP2p, PreCopy, PreCopyP2p,
    ])
}

proptest! {
    #[test]
    fn correct_runs_always_pass(
        flags in prop::sample::select(vec![1u32, 3, 5, 7]),
        ndev in 1usize..4,
        plan in prop::collection::vec(state_strategy(), 0..8),
        dma in 0u64..3,
    ) {
        let plan: Vec<MigState> = plan.into_iter().filter(|s| MigFlags(flags).supports(*s)).collect();
        // Without P2P several devices cannot be ordered safely (the seed thread's point, and
        // what the ordering rules flag), so a correct multi-device run needs P2P.
        let ndev = if flags & MigFlags::P2P == 0 { 1 } else { ndev };
        let evs = correct_run(flags, ndev, &plan, dma);
        let r = verdict_of(&evs);
        prop_assert!(r.violations.is_empty(), "{:?}", r.violations);
        prop_assert_ne!(r.verdict, Verdict::Fail);
    }

    #[test]
    fn dma_injected_while_quiesced_is_always_caught(
        plan in prop::collection::vec(state_strategy(), 1..8),
        pick in any::<prop::sample::Index>(),
    ) {
        let flags = ALL;
        let mut evs = correct_run(flags, 2, &plan, 0);
        // Positions right after a successful set_done into a quiescent state.
        let spots: Vec<usize> = evs
            .iter()
            .enumerate()
            .filter(|(_, e)| matches!(&e.kind, EventKind::SetDone { to, ret: 0, .. } if to.quiescent()))
            .map(|(i, _)| i)
            .collect();
        prop_assume!(!spots.is_empty());
        let i = spots[pick.index(spots.len())];
        let EventKind::SetDone { dev, .. } = &evs[i].kind else { unreachable!() };
        let inj = Event {
            t: evs[i].t,
            pid: None,
            kind: EventKind::Irq { dev: dev.clone(), kind: IrqKind::Msix, vector: 1 },
        };
        evs.insert(i + 1, inj);
        let r = verdict_of(&evs);
        prop_assert_eq!(r.verdict, Verdict::Fail);
        prop_assert!(r.violations.iter().any(|f| f.rule == rule::IRQ_AFTER_QUIESCE && f.line == i as u64 + 3));
    }

    #[test]
    fn arbitrary_event_soup_never_panics(
        raw in prop::collection::vec((0u8..12, 0usize..3, state_strategy(), state_strategy(), -3i32..1), 0..200)
    ) {
        let mut v = Verifier::new(&header(false), Options { max_quiesce_ms: Some(0), ..Options::default() });
        let devs = ["a", "b", "c"];
        for (i, (k, d, s1, s2, ret)) in raw.into_iter().enumerate() {
            let dev = devs[d].to_owned();
            let kind = match k {
                0 => EventKind::Device { dev, flags: MigFlags(3), ctx: "x".into(), state: s1, driver: None, sources: Default::default() },
                1 => EventKind::Set { dev, to: s1 },
                2 => EventKind::Step { dev, from: s1, to: s2 },
                3 => EventKind::SetDone { dev, to: s1, ret, data_fd: None },
                4 => EventKind::Get { dev, state: s1 },
                5 => EventKind::Reset { dev, ret },
                6 => EventKind::Dma { dev, src: DmaSource::Fault, iova: 0, len: 1, write: false, window: Some((0, i as u64)), p2p: Some(ret == 0) },
                7 => EventKind::Irq { dev, kind: IrqKind::Intx, vector: 0 },
                8 => EventKind::Data { dev, dir: crate::trace::DataDir::Save, bytes: 1 },
                9 => EventKind::Lost { n: 1, source: "x".into(), dev: None },
                10 => EventKind::Map { ctx: "x".into(), iova: 0, len: 1 },
                _ => EventKind::End,
            };
            let _ = v.push(i as u64, &Event { t: i as u64, pid: None, kind });
        }
        let r = v.finish();
        prop_assert_eq!(r.verdict == Verdict::Fail, !r.violations.is_empty());
    }
}
