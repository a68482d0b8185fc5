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
        T::on(&header(true), opts)
    }
    fn on(h: &Header, opts: Options) -> Self {
        T {
            v: Verifier::new(h, opts),
            line: 1,
        }
    }
    /// Declares `dev` with its own `sources` (name, status).
    fn device_with(&mut self, dev: &str, flags: u32, state: MigState, own: &[(&str, &str)]) {
        let k = EventKind::Device {
            dev: dev.into(),
            flags: MigFlags(flags),
            ctx: "vm".into(),
            state,
            driver: None,
            sources: own
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        assert!(self.push(0, k).is_empty());
    }
    fn begin(&mut self, t: u64, dev: &str, to: MigState) -> Vec<&'static str> {
        self.push(
            t,
            EventKind::Set {
                dev: dev.into(),
                to,
            },
        )
    }
    fn step(&mut self, t: u64, dev: &str, from: MigState, to: MigState) -> Vec<&'static str> {
        self.push(
            t,
            EventKind::Step {
                dev: dev.into(),
                from,
                to,
            },
        )
    }
    fn done(&mut self, t: u64, dev: &str, to: MigState, ret: i32) -> Vec<&'static str> {
        self.push(
            t,
            EventKind::SetDone {
                dev: dev.into(),
                to,
                ret,
                data_fd: None,
            },
        )
    }
    fn lost(&mut self, t: u64, dev: Option<&str>) -> Vec<&'static str> {
        self.push(
            t,
            EventKind::Lost {
                n: 1,
                source: "fsm_step".into(),
                dev: dev.map(str::to_owned),
            },
        )
    }
    /// D and E, P2P devices of one context, both RUNNING.
    fn pair() -> Self {
        let mut t = T::new();
        t.device(D, P2P, "vm", Running);
        t.device(E, P2P, "vm", Running);
        t
    }
    fn end(mut self, t: u64) -> Report {
        assert!(self.push(t, EventKind::End).is_empty());
        self.v.finish()
    }
    /// Ends the trace whatever `end` itself finds (rules judged at `end`).
    fn finish_at(mut self, t: u64) -> Report {
        self.push(t, EventKind::End);
        self.v.finish()
    }
    /// Every finding of one event, warnings included.
    fn findings(&mut self, t: u64, kind: EventKind) -> Vec<Finding> {
        self.line += 1;
        self.v.push(self.line, &Event { t, pid: None, kind })
    }
    /// The violations of one event.
    fn push(&mut self, t: u64, kind: EventKind) -> Vec<&'static str> {
        self.findings(t, kind)
            .into_iter()
            .filter(|f| !f.warning)
            .map(|f| f.rule)
            .collect()
    }
    fn get(&mut self, t: u64, dev: &str, state: MigState) -> Vec<&'static str> {
        self.push(
            t,
            EventKind::Get {
                dev: dev.into(),
                state,
            },
        )
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
        self.push(t, dma_kind(dev, window, p2p))
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

/// A witness write of 64 bytes at 0x1000.
fn dma_kind(dev: &str, window: Option<(u64, u64)>, p2p: Option<bool>) -> EventKind {
    EventKind::Dma {
        dev: dev.into(),
        src: DmaSource::Witness,
        iova: 0x1000,
        len: 64,
        write: true,
        window,
        p2p,
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
    // The arc ran (and failed): where the device ended up is unknown.
    t.push(
        1001,
        EventKind::Step {
            dev: D.into(),
            from: Running,
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
            file: None,
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
                8 => EventKind::Data { dev, dir: crate::trace::DataDir::Save, bytes: 1, file: None },
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

// ---- issue 11: coverage per device, every period, refused / multi-arc / unfinished SETs,
// destination order, p2p-only, missed steps ----

fn header_with(sources: &[(&str, &str)]) -> Header {
    let mut h = Header::default();
    for (k, v) in sources {
        h.sources.insert((*k).to_owned(), (*v).to_owned());
    }
    h
}

/// An mdev name as the kernel gives it (`/sys/bus/mdev/devices/<uuid>`).
const VGPU: &str = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001";
/// An mlx5 VF.
const VF: &str = "0000:3b:00.1";

#[test]
fn mdev_names_are_uuids_and_pci_addresses_never() {
    use crate::trace::is_mdev_uuid;
    assert!(is_mdev_uuid(VGPU));
    assert!(is_mdev_uuid("83B8F4F2-509F-382F-3C1E-E6BFE0FA1001"));
    for not in [
        VF,
        "0000:00:02.0",
        "83b8f4f2509f382f3c1ee6bfe0fa1001",
        "83b8f4f2-509f-382f-3c1e-e6bfe0fa100",
        "83b8f4f2-509f-382f-3c1e-e6bfe0fa10011",
        "g3b8f4f2-509f-382f-3c1e-e6bfe0fa1001",
        "83b8f4f2:509f:382f:3c1e:e6bfe0fa1001",
        "",
    ] {
        assert!(!is_mdev_uuid(not), "{not}");
    }
}

#[test]
fn mdev_dma_in_the_header_covers_the_vgpu_not_the_vf_beside_it() {
    // The regression: one `mdev_dma: ok` on a host with a single vGPU cleared the blind spot for
    // an mlx5 VF migrated beside it.
    let h = header_with(&[
        ("transitions", "ok"),
        ("irq", "ok"),
        ("witness", "unavailable: record has no DMA buffers"),
        ("mdev_dma", "ok"),
    ]);
    let mut t = T::on(&h, Options::default());
    t.device(VGPU, P2P, "vm", Running);
    t.device(VF, P2P, "vm", Running);
    assert!(t.set(1000, VGPU, P2P, Running, RunningP2p).is_empty());
    assert!(t.set(2000, VF, P2P, Running, RunningP2p).is_empty());
    let r = t.end(9000);
    assert_eq!(r.verdict, Verdict::Inconclusive, "{r:?}");
    assert_eq!(r.blind_spots, vec!["dma".to_owned()]);
    let why = &r.blind_spot_details["dma"];
    assert!(why.contains(VF), "{why}");
    assert!(!why.contains(VGPU), "{why}");
    assert!(why.contains("mediated devices only"), "{why}");
    assert_eq!(r.devices[VGPU].dma_sources, vec!["mdev_dma"]);
    assert!(r.devices[VGPU].blind.is_empty());
    assert!(r.devices[VF].dma_sources.is_empty());
    assert_eq!(r.devices[VF].blind, vec!["dma"]);
}

#[test]
fn mdev_dma_on_a_pci_device_own_sources_covers_nothing() {
    let h = header_with(&[("transitions", "ok"), ("irq", "ok")]);
    let mut t = T::on(&h, Options::default());
    t.device_with(VF, P2P, Running, &[("mdev_dma", "ok")]);
    t.set(1000, VF, P2P, Running, RunningP2p);
    let r = t.end(9000);
    assert_eq!(r.blind_spots, vec!["dma".to_owned()], "{r:?}");
}

#[test]
fn a_device_whose_own_witness_is_unavailable_is_blind_beside_a_covered_one() {
    let mut t = T::new(); // header: witness ok
    t.device(D, P2P, "vm", Running);
    t.device_with(
        E,
        P2P,
        Running,
        &[(
            "witness",
            "unavailable: no workload DMA landed in the witnessed pages before the quiesce",
        )],
    );
    t.set(1000, D, P2P, Running, RunningP2p);
    t.set(2000, E, P2P, Running, RunningP2p);
    let r = t.end(9000);
    assert_eq!(r.verdict, Verdict::Inconclusive);
    assert_eq!(r.blind_spots, vec!["dma".to_owned()]);
    let why = &r.blind_spot_details["dma"];
    assert!(why.contains(E) && !why.contains(D), "{why}");
    assert!(why.contains("no workload DMA landed"), "{why}");
    assert_eq!(r.devices[D].dma_sources, vec!["witness"]);
    assert!(r.devices[E].dma_sources.is_empty());
}

#[test]
fn a_device_own_sources_can_also_grant_what_the_header_lacks() {
    let h = header_with(&[
        ("transitions", "ok"),
        ("irq", "ok"),
        ("witness", "unavailable: --workload none"),
    ]);
    let mut t = T::on(&h, Options::default());
    t.device_with(D, P2P, Running, &[("witness", "ok")]);
    t.set(1000, D, P2P, Running, RunningP2p);
    let r = t.end(9000);
    assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
    assert_eq!(r.devices[D].dma_sources, vec!["witness"]);
}

#[test]
fn the_latest_declaration_of_a_device_is_what_counts() {
    let mut t = T::new();
    t.device(D, P2P, "vm", Running);
    t.set(1000, D, P2P, Running, RunningP2p);
    // The controller learns its workload never wrote: the device is re-declared.
    t.device_with(
        D,
        P2P,
        Running,
        &[(
            "witness",
            "unavailable: the workload never completed a transfer",
        )],
    );
    // The re-declaration brings no new history: the device is still quiesced.
    assert_eq!(t.irq(3000, D), vec![rule::IRQ_AFTER_QUIESCE]);
    let r = t.end(9000);
    assert_eq!(r.blind_spots, vec!["dma".to_owned()]);
    assert!(r.blind_spot_details["dma"].contains(D));
}

#[test]
fn irq_unavailable_for_one_device_warns_for_that_device_and_its_irqs_are_still_judged() {
    let mut t = T::new(); // header: irq ok
    t.device(D, P2P, "vm", Running);
    t.device_with(
        E,
        P2P,
        Running,
        &[("irq", "unavailable: interrupts posted to the guest")],
    );
    t.set(1000, D, P2P, Running, RunningP2p);
    t.set(2000, E, P2P, Running, RunningP2p);
    // Seen anyway (e.g. a remapped vector): evidence is evidence.
    assert_eq!(t.irq(3000, E), vec![rule::IRQ_AFTER_QUIESCE]);
    let r = t.end(9000);
    let no_irq: Vec<Option<&str>> = r
        .warnings
        .iter()
        .filter(|w| w.rule == rule::NO_IRQ_SOURCE)
        .map(|w| w.dev.as_deref())
        .collect();
    assert_eq!(no_irq, vec![Some(E)]);
    assert!(r.devices[D].irq_source);
    assert!(!r.devices[E].irq_source);
}

#[test]
fn a_device_never_quiesced_needs_no_dma_source() {
    let h = header_with(&[("transitions", "ok"), ("irq", "ok"), ("mdev_dma", "ok")]);
    let mut t = T::on(&h, Options::default());
    t.device(VGPU, P2P, "vm", Running);
    t.device(VF, P2P, "other", Running);
    t.set(1000, VGPU, P2P, Running, RunningP2p);
    assert!(t.dma(2000, VF, None, None).is_empty());
    let r = t.end(9000);
    assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
    assert!(r.devices[VF].blind.is_empty());
}

#[test]
fn a_window_inside_an_earlier_period_is_judged_however_long_ago_it_ended() {
    let mut t = T::new();
    t.device(D, P2P, "vm", Running);
    t.set(1000, D, P2P, Running, RunningP2p); // quiesced [1100, 5000)
    t.set(5000, D, P2P, RunningP2p, Running);
    t.set(6000, D, P2P, Running, RunningP2p); // quiesced [6100, ...)
    // The second period has begun: a window wholly inside the first one.
    assert_eq!(
        t.dma(6200, D, Some((2000, 4000)), None),
        vec![rule::DMA_AFTER_QUIESCE]
    );
    t.set(8000, D, P2P, RunningP2p, Running); // the second ended too: [6100, 8000)
    assert_eq!(
        t.dma(9000, D, Some((2000, 4000)), None),
        vec![rule::DMA_AFTER_QUIESCE]
    );
    assert_eq!(
        t.dma(9001, D, Some((6200, 7000)), None),
        vec![rule::DMA_AFTER_QUIESCE]
    );
    // Near misses: wholly in the gap between them; across the gap (a warning only).
    assert!(t.dma(9002, D, Some((5000, 6000)), None).is_empty());
    let f = t.findings(9003, dma_kind(D, Some((3000, 6500)), None));
    assert_eq!(
        f.iter().map(|x| (x.rule, x.warning)).collect::<Vec<_>>(),
        vec![(rule::DMA_MAYBE_AFTER_QUIESCE, true)]
    );
}

#[test]
fn periods_grow_with_quiesces_not_with_evidence() {
    let mut t = T::new();
    t.device(D, P2P, "vm", Running);
    for k in 0..50u64 {
        let base = 10_000 * (k + 1);
        t.set(base, D, P2P, Running, RunningP2p);
        for j in 0..100 {
            t.dma(base + 200 + j, D, Some((base - 5000, base - 4000)), None);
        }
        t.set(base + 5000, D, P2P, RunningP2p, Running);
    }
    let tl = t.v.timeline(D).expect("declared");
    assert_eq!(tl.periods(Scope::Quiescent).all().len(), 50);
    // BENCHMARKS.md counts 24 bytes per quiesce.
    assert_eq!(std::mem::size_of::<Period>(), 24);
}

#[test]
fn a_set_refused_before_any_arc_leaves_a_quiesced_device_quiesced() {
    // RUNNING_P2P device without PRE_COPY: SET PRE_COPY is refused up front (EINVAL from the
    // first vfio_mig_get_next_state call), no step.
    let mut t = T::new();
    t.device(D, P2P, "vm", Running);
    t.set(1000, D, P2P, Running, RunningP2p); // quiesced from 1100
    assert!(t.begin(2000, D, PreCopy).is_empty());
    assert!(
        t.done(2100, D, PreCopy, -22).is_empty(),
        "unsupported: not set-failed"
    );
    assert_eq!(t.dma(2200, D, None, None), vec![rule::DMA_AFTER_QUIESCE]);
    assert_eq!(t.irq(2201, D), vec![rule::IRQ_AFTER_QUIESCE]);
    // The request never happened: a window across it lies in one period.
    assert_eq!(
        t.dma(2300, D, Some((1500, 2250)), None),
        vec![rule::DMA_AFTER_QUIESCE]
    );
    // Still known: a GET that disagrees is a mismatch.
    assert_eq!(t.get(2400, D, Running), vec![rule::STATE_MISMATCH]);
}

#[test]
fn a_refused_reachable_set_is_still_set_failed_and_says_the_state_stays() {
    let mut t = T::new();
    t.device(D, P2P, "vm", Running);
    t.set(1000, D, P2P, Running, RunningP2p);
    t.begin(2000, D, StopCopy);
    let f = t.findings(
        2100,
        EventKind::SetDone {
            dev: D.into(),
            to: StopCopy,
            ret: -16,
            data_fd: None,
        },
    );
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].rule, rule::SET_FAILED);
    assert!(f[0].detail.contains("stays RUNNING_P2P"), "{}", f[0].detail);
    assert_eq!(t.dma(2200, D, None, None), vec![rule::DMA_AFTER_QUIESCE]);
}

#[test]
fn a_failed_set_whose_arcs_ran_or_were_not_observable_leaves_the_state_unknown() {
    // With a step: the state is unknown until a GET.
    let mut t = T::new();
    t.device(D, ALL, "vm", Running);
    t.set(1000, D, ALL, Running, RunningP2p);
    t.begin(2000, D, PreCopyP2p);
    t.step(2001, D, RunningP2p, PreCopyP2p);
    assert_eq!(t.done(2100, D, PreCopyP2p, -5), vec![rule::SET_FAILED]);
    assert!(t.dma(2200, D, None, None).is_empty());
    // Steps not observable (`transitions` unavailable): "no step" proves nothing.
    let h = header_with(&[
        ("transitions", "unavailable: FSM steps not observable"),
        ("irq", "ok"),
        ("witness", "ok"),
    ]);
    let mut t = T::on(&h, Options::default());
    t.device(D, P2P, "vm", Running);
    t.begin(1000, D, RunningP2p);
    t.done(1100, D, RunningP2p, 0);
    t.begin(2000, D, PreCopy);
    t.done(2100, D, PreCopy, -22);
    assert!(t.dma(2200, D, None, None).is_empty());
    // The device's own `transitions` source counts too.
    let mut t = T::new();
    t.device_with(
        D,
        P2P,
        Running,
        &[("transitions", "unavailable: v1 device")],
    );
    t.begin(1000, D, RunningP2p);
    t.done(1100, D, RunningP2p, 0);
    t.begin(2000, D, PreCopy);
    t.done(2100, D, PreCopy, -22);
    assert!(t.dma(2200, D, None, None).is_empty());
}

#[test]
fn a_quiescing_multi_arc_set_is_quiescent_from_its_first_step_out_of_a_quiescent_state() {
    let mut t = T::new();
    t.device(D, P2P, "vm", Running);
    assert!(t.begin(1000, D, Stop).is_empty());
    // Between the set and the first step: still RUNNING, the driver's business.
    assert!(t.dma(1001, D, None, None).is_empty());
    assert!(t.step(1002, D, Running, RunningP2p).is_empty());
    // The RUNNING -> RUNNING_P2P arc is under way: draining belongs to the driver.
    assert!(t.dma(1003, D, None, None).is_empty());
    assert!(t.irq(1004, D).is_empty());
    assert!(t.step(1005, D, RunningP2p, Stop).is_empty());
    // RUNNING_P2P was reached: no DMA, no interrupt, even before set_done.
    assert_eq!(t.dma(1006, D, None, None), vec![rule::DMA_AFTER_QUIESCE]);
    assert_eq!(t.irq(1007, D), vec![rule::IRQ_AFTER_QUIESCE]);
    // Windowed evidence likewise: wholly after the second step, or straddling it.
    assert_eq!(
        t.dma(1008, D, Some((1005, 1008)), None),
        vec![rule::DMA_AFTER_QUIESCE]
    );
    assert!(t.dma(1009, D, Some((1003, 1008)), None).is_empty());
    assert!(t.done(1100, D, Stop, 0).is_empty());
    let r = t.v.finish();
    let maybe = r
        .warnings
        .iter()
        .filter(|w| w.rule == rule::DMA_MAYBE_AFTER_QUIESCE)
        .count();
    assert_eq!(maybe, 1);
    // Messages say what made it quiescent.
    let v = &r.violations[0];
    assert!(v.detail.contains("RUNNING_P2P was reached"), "{}", v.detail);
}

#[test]
fn a_resuming_multi_arc_set_allows_dma_from_its_set() {
    // STOP -> RUNNING walks STOP -> RUNNING_P2P -> RUNNING; T is DMA-allowed throughout.
    let mut t = T::new();
    t.device(D, P2P, "vm", Stop);
    assert!(t.begin(1000, D, Running).is_empty());
    assert!(t.step(1001, D, Stop, RunningP2p).is_empty());
    assert!(t.dma(1002, D, None, None).is_empty());
    assert!(t.step(1003, D, RunningP2p, Running).is_empty());
    assert!(t.dma(1004, D, None, None).is_empty());
    assert!(t.done(1100, D, Running, 0).is_empty());
}

#[test]
fn a_set_open_at_end_is_unfinished_and_never_a_pass() {
    let mut t = T::new();
    t.device(D, ALL, "vm", StopCopy);
    t.device(E, ALL, "other", StopCopy);
    // STOP_COPY -> PRE_COPY: the kernel without the fix spins; the SET never returns.
    t.begin(1000, D, PreCopy);
    let r = t.end(9000);
    assert_eq!(r.verdict, Verdict::Inconclusive, "{r:?}");
    assert_eq!(r.blind_spots, vec!["unfinished".to_owned()]);
    let why = &r.blind_spot_details["unfinished"];
    assert!(why.contains(D) && !why.contains(E), "{why}");
    assert_eq!(r.devices[D].blind, vec!["unfinished"]);
    assert!(r.devices[E].blind.is_empty());
    // Near miss: the same SET returning (EINVAL, as the fixed kernel answers).
    let mut t = T::new();
    t.device(D, ALL, "vm", StopCopy);
    t.begin(1000, D, PreCopy);
    t.done(1100, D, PreCopy, -22);
    assert_eq!(t.end(9000).verdict, Verdict::Pass);
}

#[test]
fn a_set_open_when_a_trace_is_cut_off_is_truncated_not_unfinished() {
    let mut t = T::new();
    t.device(D, P2P, "vm", Running);
    t.begin(1000, D, RunningP2p);
    let r = t.v.finish();
    assert_eq!(r.blind_spots, vec!["truncated".to_owned()]);
    assert!(r.warnings.iter().any(|w| w.rule == rule::UNFINISHED_SET));
}

/// QEMU's destination (hw/vfio/migration.c): vfio_load_setup sets each device RESUMING while
/// its peers are still RUNNING; once loaded, the VM-start handlers move every P2P device to
/// RUNNING_P2P (vfio_vmstate_change_prepare) before any goes RUNNING (vfio_vmstate_change).
#[test]
fn qemu_destination_order_passes() {
    let mut t = T::pair();
    let mut v = Vec::new();
    v.extend(t.set(1000, D, P2P, Running, Resuming));
    v.extend(t.set(2000, E, P2P, Running, Resuming));
    for (k, dev) in [D, E].into_iter().enumerate() {
        v.extend(t.push(
            3000 + k as u64,
            EventKind::Data {
                dev: dev.into(),
                dir: crate::trace::DataDir::Load,
                bytes: 4096,
                file: None,
            },
        ));
    }
    v.extend(t.set(4000, D, P2P, Resuming, RunningP2p));
    v.extend(t.set(5000, E, P2P, Resuming, RunningP2p));
    v.extend(t.set(6000, D, P2P, RunningP2p, Running));
    v.extend(t.set(7000, E, P2P, RunningP2p, Running));
    assert!(v.is_empty(), "{v:?}");
    assert_eq!(t.end(9000).verdict, Verdict::Pass);
}

#[test]
fn destination_running_while_a_peer_is_still_resuming_fails() {
    let mut t = T::pair();
    t.set(1000, D, P2P, Running, Resuming);
    t.set(2000, E, P2P, Running, Resuming);
    assert_eq!(
        t.set(3000, D, P2P, Resuming, Running),
        vec![rule::RUN_WHILE_PEER_STOPPED]
    );
    // And toward STOP (not RESUMING) beside a RUNNING peer stays a violation.
    let mut t = T::pair();
    assert_eq!(
        t.set(1000, D, P2P, Running, Stop),
        vec![rule::STOP_WHILE_PEER_RUNNING]
    );
}

#[test]
fn a_peer_that_reached_running_p2p_within_its_request_no_longer_runs() {
    // E is on its way RUNNING -> STOP and has reached RUNNING_P2P: stopping D is fine; a moment
    // earlier (E still leaving RUNNING) it is not.
    let mut t = T::pair();
    t.set(1000, D, P2P, Running, RunningP2p);
    t.begin(2000, E, Stop);
    t.step(2001, E, Running, RunningP2p);
    let early = t.begin(2002, D, StopCopy);
    assert_eq!(early, vec![rule::STOP_WHILE_PEER_RUNNING]);
    let mut t = T::pair();
    t.set(1000, D, P2P, Running, RunningP2p);
    t.begin(2000, E, Stop);
    t.step(2001, E, Running, RunningP2p);
    t.step(2002, E, RunningP2p, Stop);
    assert!(t.begin(2003, D, StopCopy).is_empty());
}

#[test]
fn p2p_only_warns_that_peer_to_peer_dma_is_invisible_unless_marked() {
    let mut t = T::with(Options {
        p2p_policy: P2pPolicy::P2pOnly,
        ..Options::default()
    });
    t.device(D, P2P, "vm", Running);
    t.set(1000, D, P2P, Running, RunningP2p);
    let r = t.end(9000);
    let w: Vec<&Finding> = r
        .warnings
        .iter()
        .filter(|w| w.rule == rule::P2P_DMA_INVISIBLE)
        .collect();
    assert_eq!(w.len(), 1, "{:?}", r.warnings);
    assert!(w[0].detail.contains("p2p: true"), "{}", w[0].detail);
    assert_eq!(r.verdict, Verdict::Pass);
    // Strict: no such warning.
    let mut t = T::new();
    t.device(D, P2P, "vm", Running);
    t.set(1000, D, P2P, Running, RunningP2p);
    let r = t.end(9000);
    assert!(!r.warnings.iter().any(|w| w.rule == rule::P2P_DMA_INVISIBLE));
}

#[test]
fn lost_fsm_steps_make_the_request_unjudged_not_an_illegal_arc() {
    for named in [Some(D), None] {
        let mut t = T::new();
        t.device(D, P2P, "vm", Running);
        t.begin(1000, D, StopCopy);
        t.step(1001, D, Running, RunningP2p);
        // The probe missed RUNNING_P2P -> STOP and STOP -> STOP_COPY (kretprobe maxactive).
        assert!(t.lost(1100, named).is_empty());
        assert!(t.done(1100, D, StopCopy, 0).is_empty(), "{named:?}");
        let r = t.end(9000);
        assert_eq!(r.verdict, Verdict::Inconclusive, "{named:?}");
        assert_eq!(r.blind_spots, vec!["lost".to_owned()]);
        assert_eq!(r.devices[D].blind, vec!["lost"]);
    }
    // A step of the same request after the loss cannot be judged either.
    let mut t = T::new();
    t.device(D, P2P, "vm", Running);
    t.begin(1000, D, StopCopy);
    t.lost(1001, Some(D));
    assert!(t.step(1002, D, Stop, StopCopy).is_empty());
    assert!(t.done(1100, D, StopCopy, 0).is_empty());
}

#[test]
fn lost_steps_of_one_request_leave_later_requests_judged() {
    let mut t = T::new();
    t.device(D, P2P, "vm", Running);
    t.begin(1000, D, StopCopy);
    t.step(1001, D, Running, RunningP2p);
    t.lost(1100, Some(D));
    t.done(1100, D, StopCopy, 0);
    t.begin(2000, D, Running);
    // STOP_COPY -> RUNNING goes through STOP first.
    assert_eq!(
        t.step(2001, D, StopCopy, RunningP2p),
        vec![rule::ILLEGAL_ARC]
    );
}

#[test]
fn a_loss_naming_another_device_leaves_this_one_judged() {
    let mut t = T::pair();
    t.set(500, E, P2P, Running, RunningP2p);
    t.begin(1000, D, RunningP2p);
    t.lost(1050, Some(E));
    t.begin(1060, E, Stop);
    t.step(1061, E, RunningP2p, Stop);
    t.done(1062, E, Stop, 0);
    assert_eq!(t.done(1100, D, RunningP2p, 0), Vec::<&str>::new());
    t.begin(2000, D, StopCopy);
    t.step(2001, D, RunningP2p, Stop);
    assert_eq!(t.done(2100, D, StopCopy, 0), vec![rule::ILLEGAL_ARC]);
}

#[test]
fn a_loss_outside_any_request_leaves_the_next_stray_step_unjudged() {
    // A ring-buffer loss may have swallowed the `set` itself.
    let mut t = T::new();
    t.device(D, P2P, "vm", Running);
    t.lost(500, None);
    assert!(t.step(1001, D, Running, RunningP2p).is_empty());
    // Without a loss, a step outside a request is illegal.
    let mut t = T::new();
    t.device(D, P2P, "vm", Running);
    assert_eq!(
        t.step(1001, D, Running, RunningP2p),
        vec![rule::ILLEGAL_ARC]
    );
}

#[test]
fn a_refused_set_with_lost_events_leaves_the_state_unknown() {
    let mut t = T::new();
    t.device(D, P2P, "vm", Running);
    t.set(100, D, P2P, Running, RunningP2p);
    t.begin(1000, D, PreCopy);
    t.lost(1050, Some(D));
    t.done(1100, D, PreCopy, -22);
    assert!(t.dma(1200, D, None, None).is_empty());
}

// ---- DeviceTimeline on its own ----

fn feed(tl: &mut DeviceTimeline, t: u64, kind: EventKind) {
    tl.feed(t, &kind);
}

#[test]
fn timeline_phases_periods_and_spans() {
    use crate::verify::timeline::{Entry, OPEN};
    let mut tl = DeviceTimeline::new(0, Some(Running), true);
    assert_eq!(tl.phase(), Phase::Known(Running));
    feed(
        &mut tl,
        100,
        EventKind::Set {
            dev: D.into(),
            to: StopCopy,
        },
    );
    feed(
        &mut tl,
        110,
        EventKind::Step {
            dev: D.into(),
            from: Running,
            to: RunningP2p,
        },
    );
    feed(
        &mut tl,
        120,
        EventKind::Step {
            dev: D.into(),
            from: RunningP2p,
            to: Stop,
        },
    );
    let Phase::Transition(tr) = tl.phase() else {
        panic!("{:?}", tl.phase())
    };
    assert_eq!(
        (
            tr.from,
            tr.toward,
            tr.reached,
            tr.stepped_to,
            tr.steps,
            tr.t
        ),
        (
            Some(Running),
            StopCopy,
            Some(RunningP2p),
            Some(Stop),
            2,
            100
        )
    );
    assert!(!tl.quiescent_at(Scope::Quiescent, 119));
    assert!(tl.quiescent_at(Scope::Quiescent, 120));
    assert!(!tl.quiescent_at(Scope::Stopped, 125));
    feed(
        &mut tl,
        130,
        EventKind::Step {
            dev: D.into(),
            from: Stop,
            to: StopCopy,
        },
    );
    assert!(tl.quiescent_at(Scope::Stopped, 130));
    feed(
        &mut tl,
        200,
        EventKind::SetDone {
            dev: D.into(),
            to: StopCopy,
            ret: 0,
            data_fd: None,
        },
    );
    assert_eq!((tl.phase(), tl.since()), (Phase::Known(StopCopy), 200));
    feed(
        &mut tl,
        300,
        EventKind::Set {
            dev: D.into(),
            to: Running,
        },
    );
    feed(
        &mut tl,
        310,
        EventKind::Step {
            dev: D.into(),
            from: StopCopy,
            to: Stop,
        },
    );
    feed(
        &mut tl,
        400,
        EventKind::SetDone {
            dev: D.into(),
            to: Running,
            ret: -5,
            data_fd: None,
        },
    );
    assert_eq!(tl.phase(), Phase::Unknown);
    feed(
        &mut tl,
        500,
        EventKind::Get {
            dev: D.into(),
            state: Running,
        },
    );
    assert_eq!(tl.phase(), Phase::Known(Running));
    let q = tl.periods(Scope::Quiescent).all().to_vec();
    assert_eq!(q.len(), 1);
    assert_eq!(
        (q[0].start, q[0].end, q[0].state, q[0].entry),
        (120, 300, Some(RunningP2p), Entry::Reached)
    );
    let s = tl.periods(Scope::Stopped).all();
    assert_eq!((s[0].start, s[0].end, s[0].state), (130, 300, Some(Stop)));
    let u = tl.unknown_spans().all();
    assert_eq!((u.len(), u[0].start, u[0].end), (1, 400, 500));
    // Judging: the period that explains it.
    assert_eq!(
        tl.judge(Scope::Quiescent, 600, Some((150, 250))),
        Judgement::Violation(q[0])
    );
    assert_eq!(
        tl.judge(Scope::Quiescent, 600, Some((250, 350))),
        Judgement::Maybe(q[0])
    );
    assert_eq!(
        tl.judge(Scope::Quiescent, 600, Some((300, 350))),
        Judgement::Allowed
    );
    feed(
        &mut tl,
        700,
        EventKind::Set {
            dev: D.into(),
            to: RunningP2p,
        },
    );
    feed(&mut tl, 800, EventKind::End);
    assert!(matches!(tl.phase(), Phase::Unfinished(_)));
    assert_eq!(tl.periods(Scope::Quiescent).current(), None);
    assert_ne!(q[0].end, OPEN);
}

#[test]
fn timeline_window_edges_are_whole_nanoseconds() {
    let mut tl = DeviceTimeline::new(0, Some(Running), true);
    feed(
        &mut tl,
        100,
        EventKind::Set {
            dev: D.into(),
            to: RunningP2p,
        },
    );
    feed(
        &mut tl,
        150,
        EventKind::SetDone {
            dev: D.into(),
            to: RunningP2p,
            ret: 0,
            data_fd: None,
        },
    );
    feed(
        &mut tl,
        300,
        EventKind::Set {
            dev: D.into(),
            to: Running,
        },
    );
    // Quiescent over [150, 300). (t0, t1]: the first instant is t0 + 1.
    let j = |t0, t1| tl.judge(Scope::Quiescent, 999, Some((t0, t1)));
    assert!(matches!(j(149, 299), Judgement::Violation(_)));
    assert!(matches!(j(148, 299), Judgement::Maybe(_)));
    assert!(matches!(j(149, 300), Judgement::Maybe(_)));
    assert!(matches!(j(298, 400), Judgement::Maybe(_)));
    assert!(matches!(j(299, 400), Judgement::Allowed));
    assert!(matches!(j(10, 149), Judgement::Allowed));
    assert!(matches!(j(10, 150), Judgement::Maybe(_)));
    // Instants.
    assert!(tl.quiescent_at(Scope::Quiescent, 150));
    assert!(tl.quiescent_at(Scope::Quiescent, 299));
    assert!(!tl.quiescent_at(Scope::Quiescent, 300));
    assert!(!tl.quiescent_at(Scope::Quiescent, 149));
}

/// A recorder that could not ask a device its state declares the format's default with the
/// device's own `transitions` unavailable: that RUNNING is no evidence, so a GET of STOP_COPY
/// is not a mismatch and the device does not count as a running peer; a header-wide
/// `transitions: unavailable` leaves the declared state alone.
#[test]
fn declared_state_is_unknown_when_the_device_own_transitions_are_unavailable() {
    let mut t = T::new();
    t.device_with(
        D,
        P2P,
        Running,
        &[(
            "transitions",
            "unavailable: state when recording began unknown",
        )],
    );
    assert_eq!(t.get(1000, D, StopCopy), Vec::<&str>::new());
    t.set(2000, D, P2P, StopCopy, Stop);
    let r = t.v.finish();
    assert!(r.violations.is_empty(), "{:?}", r.violations);

    // Near miss: the same trace with the device's state trusted is a mismatch.
    let mut t = T::new();
    t.device_with(D, P2P, Running, &[]);
    assert_eq!(t.get(1000, D, StopCopy), vec![rule::STATE_MISMATCH]);

    // A header-wide `transitions: unavailable` keeps the declared state.
    let mut h = header(true);
    h.sources.insert(
        "transitions".into(),
        "unavailable: FSM steps not observable".into(),
    );
    let mut t = T::on(&h, Options::default());
    t.device_with(D, P2P, Running, &[]);
    assert_eq!(t.get(1000, D, StopCopy), vec![rule::STATE_MISMATCH]);
}

// ---- issue 14: the bug classes real migration drivers shipped ----------------------------

fn data_kind(
    dev: &str,
    dir: crate::trace::DataDir,
    bytes: u64,
    file: Option<(i32, u64, u64)>,
) -> EventKind {
    EventKind::Data {
        dev: dev.into(),
        dir,
        bytes,
        file: file.map(|(fd, fd_gen, reset_gen)| crate::trace::DataFile {
            fd,
            fd_gen,
            reset_gen,
        }),
    }
}

fn save(bytes: u64) -> EventKind {
    data_kind(D, crate::trace::DataDir::Save, bytes, None)
}

fn info(initial_bytes: u64, flags: u32) -> EventKind {
    EventKind::PrecopyInfo {
        dev: D.into(),
        result: Ok(crate::model::PrecopyInfo {
            initial_bytes,
            dirty_bytes: 80,
            flags,
        }),
    }
}

#[test]
fn data_through_a_file_created_before_the_last_reset_is_stale() {
    use crate::trace::DataDir::{Load, Save};
    let mut t = T::new();
    t.device(D, P2P, "vm", StopCopy);
    // The file of generation 0 still reads after the device was reset (generation 1).
    assert_eq!(
        t.push(10, data_kind(D, Save, 80, Some((7, 0, 1)))),
        vec![rule::STALE_DATA_FD]
    );
    assert_eq!(
        t.push(20, data_kind(D, Load, 80, Some((8, 2, 5)))),
        vec![rule::STALE_DATA_FD]
    );
    // Near misses: a file of the current generation, and a data event naming no file.
    assert!(
        t.push(30, data_kind(D, Save, 80, Some((7, 1, 1))))
            .is_empty()
    );
    assert!(t.push(40, data_kind(D, Save, 80, None)).is_empty());
    let f = t.findings(50, data_kind(D, Save, 16, Some((7, 0, 1))));
    assert!(
        f[0].detail.contains("data_fd 7") && f[0].detail.contains("generation 1"),
        "{f:?}"
    );
}

#[test]
fn max_set_ms_fails_a_set_open_longer_than_the_limit() {
    let ms = 1_000_000;
    let opts = Options {
        max_set_ms: Some(1000),
        ..Options::default()
    };
    // A SET that returned after 1.5 s (successful or not) breaks a 1000 ms limit.
    for ret in [0, -5] {
        let mut t = T::with(opts.clone());
        t.device(D, P2P, "vm", Running);
        t.begin(0, D, RunningP2p);
        t.step(1, D, Running, RunningP2p);
        let v = t.done(1500 * ms, D, RunningP2p, ret);
        assert!(v.contains(&rule::SET_TIMEOUT), "ret {ret}: {v:?}");
    }
    // Near miss: 999 ms.
    let mut t = T::with(opts.clone());
    t.device(D, P2P, "vm", Running);
    t.begin(0, D, RunningP2p);
    t.step(1, D, Running, RunningP2p);
    assert!(t.done(999 * ms, D, RunningP2p, 0).is_empty());
    // Open at `end` longer than the limit: the violation, and the blind spot as ever.
    let mut t = T::with(opts.clone());
    t.device(D, P2P, "vm", Running);
    t.begin(0, D, RunningP2p);
    let r = t.finish_at(3000 * ms);
    assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
    assert_eq!(r.violated_rules(), vec![rule::SET_TIMEOUT]);
    assert_eq!(r.blind_spots, vec!["unfinished".to_owned()]);
    // Without the option the same trace is unfinished, nothing more.
    let mut t = T::new();
    t.device(D, P2P, "vm", Running);
    t.begin(0, D, RunningP2p);
    let r = t.end(3000 * ms);
    assert_eq!(r.verdict, Verdict::Inconclusive, "{r:?}");
    assert!(r.violations.is_empty());
}

/// A PRE_COPY device in its pre-copy session (data_fd 5) from t 100.
fn in_precopy() -> T {
    let mut t = T::new();
    t.device(D, ALL, "vm", Running);
    t.begin(10, D, PreCopy);
    t.step(11, D, Running, PreCopy);
    assert!(
        t.push(
            100,
            EventKind::SetDone {
                dev: D.into(),
                to: PreCopy,
                ret: 0,
                data_fd: Some(5),
            },
        )
        .is_empty()
    );
    t
}

#[test]
fn initial_bytes_fall_by_exactly_what_was_read() {
    // The correct driver (edu-mig: 80 then 0 once its 80-byte record was read).
    let mut t = in_precopy();
    assert!(t.push(200, info(80, 0)).is_empty());
    assert!(t.push(300, save(80)).is_empty());
    assert!(t.push(400, info(0, 0)).is_empty());
    assert!(t.push(500, info(0, 0)).is_empty());
    // Partial reads count too.
    let mut t = in_precopy();
    assert!(t.push(200, info(80, 0)).is_empty());
    assert!(t.push(300, save(30)).is_empty());
    assert!(t.push(400, info(50, 0)).is_empty());
    // A lie: the record was read, initial_bytes stays (bug=precopy_lie).
    let mut t = in_precopy();
    t.push(200, info(80, 0));
    t.push(300, save(80));
    let f = t.findings(400, info(80, 0));
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].rule, rule::PRECOPY_INITIAL_BYTES);
    assert!(
        f[0].detail
            .contains("stayed at 80 although 80 bytes were read"),
        "{}",
        f[0].detail
    );
    // Grew without REINIT; shrank by more than was read.
    let mut t = in_precopy();
    t.push(200, info(80, 0));
    assert_eq!(t.push(300, info(100, 0)), vec![rule::PRECOPY_INITIAL_BYTES]);
    let mut t = in_precopy();
    t.push(200, info(80, 0));
    t.push(300, save(10));
    assert_eq!(t.push(400, info(20, 0)), vec![rule::PRECOPY_INITIAL_BYTES]);
    // A new session (a new data_fd) starts over; so does a lost event.
    let mut t = in_precopy();
    t.push(200, info(80, 0));
    t.set(300, D, ALL, PreCopy, Running);
    t.begin(500, D, PreCopy);
    t.step(501, D, Running, PreCopy);
    t.push(
        600,
        EventKind::SetDone {
            dev: D.into(),
            to: PreCopy,
            ret: 0,
            data_fd: Some(6),
        },
    );
    assert!(t.push(700, info(80, 0)).is_empty());
    t.lost(800, Some(D));
    assert!(t.push(900, info(300, 0)).is_empty());
}

#[test]
fn precopy_flags_are_zero_unless_reinit_after_the_v2_opt_in() {
    let v2 = |ret| EventKind::PrecopyInfoV2 { dev: D.into(), ret };
    // Without the opt-in the word is reserved: REINIT or anything else is a finding.
    let mut t = in_precopy();
    assert_eq!(t.push(200, info(80, 1)), vec![rule::PRECOPY_FLAGS]);
    assert_eq!(
        t.push(300, info(80, 0x8000_0000)),
        vec![rule::PRECOPY_FLAGS]
    );
    // A failed opt-in opts in to nothing.
    assert!(t.push(350, v2(-25)).is_empty());
    assert_eq!(t.push(360, info(80, 1)), vec![rule::PRECOPY_FLAGS]);
    // After it, REINIT is legal and restarts initial_bytes (here: larger than before).
    let mut t = in_precopy();
    assert!(t.push(150, v2(0)).is_empty());
    assert!(t.push(200, info(80, 0)).is_empty());
    assert!(t.push(300, info(500, 1)).is_empty());
    assert!(t.push(400, save(100)).is_empty());
    assert!(t.push(500, info(400, 0)).is_empty());
    // Other bits are not (a driver echoing what the caller passed: bug=echo_flags).
    let f = t.findings(600, info(400, 0x8000_0000));
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].rule, rule::PRECOPY_FLAGS);
    assert!(f[0].detail.contains("0x80000000"), "{}", f[0].detail);
}

#[test]
fn a_stop_copy_larger_than_a_stopped_estimate_fails_a_running_one_warns() {
    let size = |bytes| EventKind::DataSize {
        dev: D.into(),
        result: Ok(bytes),
    };
    let run = |estimate: u64, at: MigState| -> Report {
        let mut t = T::new();
        t.device(D, P2P, "vm", Running);
        t.set(100, D, P2P, Running, at);
        t.push(300, size(estimate));
        t.set(400, D, P2P, at, StopCopy);
        t.push(600, save(80));
        t.set(700, D, P2P, StopCopy, Stop);
        t.set(900, D, P2P, Stop, Running);
        t.finish_at(2000)
    };
    // Estimated 40 in STOP, saved 80 (bug=size_lie).
    let r = run(40, Stop);
    assert_eq!(r.violated_rules(), vec![rule::DATA_SIZE_EXCEEDED], "{r:?}");
    let v = &r.violations[0];
    assert!(
        v.detail.contains("moved 80 bytes") && v.detail.contains("estimated 40"),
        "{}",
        v.detail
    );
    // An upper bound is fine; so is an exact one.
    assert_eq!(run(4096, Stop).verdict, Verdict::Pass);
    assert_eq!(run(80, Stop).verdict, Verdict::Pass);
    // Estimated while the device could still change (RUNNING_P2P): a warning, not a violation.
    let r = run(40, RunningP2p);
    assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
    assert!(
        r.warnings
            .iter()
            .any(|w| w.rule == rule::DATA_SIZE_MAYBE_EXCEEDED),
        "{r:?}"
    );
    // A trace that ends in STOP_COPY is judged at `end`.
    let mut t = T::new();
    t.device(D, P2P, "vm", Stop);
    t.push(300, size(40));
    t.set(400, D, P2P, Stop, StopCopy);
    t.push(600, save(80));
    assert_eq!(
        t.finish_at(900).violated_rules(),
        vec![rule::DATA_SIZE_EXCEEDED]
    );
    // An estimate followed by no STOP_COPY (back to RUNNING, or a reset) is never judged.
    let mut t = T::new();
    t.device(D, P2P, "vm", Stop);
    t.push(300, size(1));
    t.set(400, D, P2P, Stop, Running);
    t.set(500, D, P2P, Running, StopCopy);
    t.push(600, save(80));
    assert_eq!(t.end(900).verdict, Verdict::Pass);
}

/// The segments a device's timeline closes, by hand: a quiesce (RUNNING -> RUNNING_P2P), a
/// SET on from a quiescent state (no second quiesce), a refused SET (the state stays), a reset
/// (back to RUNNING), and a request still open at the end.
#[test]
fn timeline_segments_and_quiesces() {
    use crate::verify::{SegKind, Segment};
    let mut tl = DeviceTimeline::new(0, Some(Running), true);
    let dev = || D.to_owned();
    let mut closed = Vec::new();
    let mut feed = |t, kind: EventKind| closed.extend(tl.feed(t, &kind));
    feed(
        100,
        EventKind::Set {
            dev: dev(),
            to: RunningP2p,
        },
    );
    feed(
        110,
        EventKind::Step {
            dev: dev(),
            from: Running,
            to: RunningP2p,
        },
    );
    feed(130, set_done(RunningP2p, 0));
    feed(
        200,
        EventKind::Set {
            dev: dev(),
            to: Stop,
        },
    );
    feed(
        205,
        EventKind::Step {
            dev: dev(),
            from: RunningP2p,
            to: Stop,
        },
    );
    feed(210, set_done(Stop, 0));
    feed(
        300,
        EventKind::Set {
            dev: dev(),
            to: Running,
        },
    );
    feed(310, set_done(Running, -5));
    feed(
        320,
        EventKind::Get {
            dev: dev(),
            state: Stop,
        },
    );
    feed(400, EventKind::Reset { dev: dev(), ret: 0 });
    feed(
        500,
        EventKind::Set {
            dev: dev(),
            to: StopCopy,
        },
    );
    feed(600, EventKind::End);
    let seg = |start, end, what| Segment { start, end, what };
    let tr = |from, to, ret, quiesce| SegKind::Transition {
        from: Some(from),
        to,
        ret,
        quiesce,
    };
    assert_eq!(
        closed,
        [
            seg(0, 100, SegKind::State(Some(Running))),
            seg(100, 130, tr(Running, RunningP2p, Some(0), true)),
            seg(130, 200, SegKind::State(Some(RunningP2p))),
            seg(200, 210, tr(RunningP2p, Stop, Some(0), false)),
            seg(210, 300, SegKind::State(Some(Stop))),
            seg(300, 310, tr(Stop, Running, Some(-5), false)),
            // Refused before any arc: STOP again from 310; the GET agrees, nothing closes.
            seg(310, 400, SegKind::State(Some(Stop))),
            seg(400, 500, SegKind::State(Some(Running))),
        ]
    );
    assert_eq!(closed[1].quiesce_ns(), Some(30));
    assert_eq!(
        tl.open_segment(600),
        seg(500, 600, tr(Running, StopCopy, None, false))
    );
    assert_eq!(
        closed[1].what.label(),
        "quiesce RUNNING -> RUNNING_P2P",
        "the label reports draw"
    );
    assert_eq!(closed[5].what.label(), "STOP -> RUNNING (failed EIO)");
}

fn set_done(to: MigState, ret: i32) -> EventKind {
    EventKind::SetDone {
        dev: D.to_owned(),
        to,
        ret,
        data_fd: None,
    }
}

#[test]
fn interim_verdicts_follow_the_trace_as_it_grows() {
    let mut t = T::pair();
    assert_eq!(t.v.interim().verdict, Verdict::Pass);
    t.begin(10, D, RunningP2p);
    t.step(11, D, Running, RunningP2p);
    t.done(12, D, RunningP2p, 0);
    // Still being written: not truncated, and what it shows so far passes.
    let r = t.v.interim();
    assert_eq!((r.verdict, r.truncated), (Verdict::Pass, false));
    assert_eq!(r.devices[D].quiesce_count, 1);
    let irq = EventKind::Irq {
        dev: D.into(),
        kind: IrqKind::Msi,
        vector: 0,
    };
    assert_eq!(t.push(20, irq), ["irq-after-quiesce"]);
    let r = t.v.interim();
    assert_eq!(r.verdict, Verdict::Fail);
    assert!(r.violations.is_empty(), "findings are not repeated");
    // The interim look changed nothing: the final report has the violation.
    let r = t.end(30);
    assert_eq!(r.verdict, Verdict::Fail);
    assert_eq!(r.violated_rules(), ["irq-after-quiesce"]);

    // No DMA source: a quiesced device makes the interim verdict inconclusive already.
    let mut t = T::on(&header(false), Options::default());
    t.device(D, P2P, "vm", Running);
    t.begin(10, D, RunningP2p);
    t.step(11, D, Running, RunningP2p);
    t.done(12, D, RunningP2p, 0);
    let r = t.v.interim();
    assert_eq!(r.verdict, Verdict::Inconclusive);
    assert_eq!(r.blind_spots, ["dma"]);
}

fn bin(dev: &str, n: u64, t0: u64, t1: u64) -> EventKind {
    EventKind::IrqBin {
        dev: dev.into(),
        kind: IrqKind::Msi,
        vector: 0,
        n,
        window: (t0, t1),
    }
}

#[test]
fn irq_bin_while_running_is_allowed_and_counts_its_interrupts() {
    let mut t = T::new();
    t.device(D, P2P, "vm", Running);
    assert!(t.push(500, bin(D, 1000, 100, 500)).is_empty());
    assert!(t.set(1000, D, P2P, Running, RunningP2p).is_empty());
    let r = t.end(2000);
    assert_eq!(r.verdict, Verdict::Pass);
    assert_eq!(r.devices[D].irq, 1000);
    assert_eq!(r.devices[D].irq_quiesced, 0);
}

#[test]
fn irq_bin_inside_a_quiescent_period_is_irq_after_quiesce() {
    let mut t = T::new();
    t.device(D, P2P, "vm", Running);
    t.set(1000, D, P2P, Running, RunningP2p);
    // RUNNING_P2P completed at 1100: every interrupt of [1200, 1500] came after it.
    assert_eq!(t.push(1500, bin(D, 5, 1200, 1500)), ["irq-after-quiesce"]);
    let r = t.end(2000);
    assert_eq!(r.verdict, Verdict::Fail);
    assert_eq!((r.devices[D].irq, r.devices[D].irq_quiesced), (5, 1));
    assert!(r.violations[0].detail.contains("5 msi vector 0 interrupts"));
}

#[test]
fn irq_bin_whose_last_interrupt_follows_the_quiesce_is_caught() {
    // A bin must close before the SET (the probe guarantees it); one that does not, and whose
    // last interrupt (an exact time) lies after RUNNING_P2P completed, is a violation.
    let mut t = T::new();
    t.device(D, P2P, "vm", Running);
    t.set(1000, D, P2P, Running, RunningP2p);
    assert_eq!(t.push(1150, bin(D, 3, 900, 1150)), ["irq-after-quiesce"]);
    let r = t.end(2000);
    assert!(r.violations[0].detail.contains("the last of 3"));
}

#[test]
fn irq_bin_spanning_a_whole_quiescent_period_is_a_warning_when_interrupts_may_lie_inside() {
    let run_bin = |n: u64| {
        let mut t = T::new();
        t.device(D, P2P, "vm", Running);
        t.set(1000, D, P2P, Running, RunningP2p);
        t.set(2000, D, P2P, RunningP2p, Running);
        // First at 900 (RUNNING), last at 2500 (RUNNING again): only interrupts between the
        // two ends can have been raised in [1100, 2100).
        let f = t.findings(2500, bin(D, n, 900, 2500));
        (f, t.end(3000))
    };
    let (f, r) = run_bin(3);
    assert_eq!(f.len(), 1);
    assert_eq!((f[0].rule, f[0].warning), ("irq-maybe-after-quiesce", true));
    assert_eq!(r.verdict, Verdict::Pass);
    // Two interrupts are the two ends: nothing lies between them.
    let (f, r) = run_bin(2);
    assert!(f.is_empty(), "{f:?}");
    assert_eq!(r.devices[D].irq, 2);
}

/// The same interrupts recorded in full and binned (as `record --irq-detail bins` would:
/// counted while RUNNING with no SET open, exact from the SET on) give the same verdict, the
/// same violations and the same interrupt count.
#[test]
fn binned_and_full_interrupts_give_the_same_verdict() {
    let run = |binned: bool| {
        let mut t = T::new();
        t.device(D, P2P, "vm", Running);
        if binned {
            t.push(400, bin(D, 4, 100, 400));
        } else {
            for at in [100, 200, 300, 400] {
                t.irq(at, D);
            }
        }
        t.set(1000, D, P2P, Running, RunningP2p);
        // Exact in both modes: one interrupt during the arc (allowed), one after (not).
        t.irq(1050, D);
        t.irq(1200, D);
        t.set(2000, D, P2P, RunningP2p, Running);
        if binned {
            t.push(2600, bin(D, 3, 2200, 2600));
        } else {
            for at in [2200, 2400, 2600] {
                t.irq(at, D);
            }
        }
        t.end(3000)
    };
    let (full, binned) = (run(false), run(true));
    assert_eq!(full.verdict, Verdict::Fail);
    assert_eq!(binned.verdict, full.verdict);
    assert_eq!(binned.violated_rules(), ["irq-after-quiesce"]);
    assert_eq!(binned.violated_rules(), full.violated_rules());
    assert_eq!(binned.devices[D].irq, 9);
    assert_eq!(binned.devices[D], full.devices[D]);
}
