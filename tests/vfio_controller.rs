//! The controller against the FSM test double: plans, ordering, data, witness, error paths and
//! cleanup, through the same `vfio::drive` code path production uses; traces it produces are
//! run through the real verifier.

#![expect(
    clippy::expect_used,
    reason = "test helpers panic with context (STYLE.md: tests panic, never return Result)"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use MigState::*;
use migscope::model::{MigFlags, MigState};
use migscope::session::merge::{Merger, Origin};
use migscope::trace::{DataDir, DmaSource, Event, EventKind, Header, source};
use migscope::verify::{self, Verifier};
use migscope::vfio::sim::{Misbehave, SimCall, SimSpec, SimVfio};
use migscope::vfio::{self, Collect, Order, Outcome, Plan, SetupError};

const A: &str = "0000:00:02.0";
const B: &str = "0000:00:03.0";
const P2P: u32 = MigFlags::STOP_COPY | MigFlags::P2P;
const ALL: u32 = 7;

fn opts(plan: Plan, dir: &std::path::Path) -> vfio::Options {
    let mut o = vfio::Options::new(plan);
    o.save_dir = dir.to_path_buf();
    // The double's SETs return at once: no linger keeps the suite fast; the watcher still
    // sweeps at least once after every return (the late-write test uses the default).
    o.witness_linger = std::time::Duration::ZERO;
    o
}

/// A drive's outcome with the events it emitted, collected in emission order.
struct Drove {
    outcome: Outcome,
    events: Vec<Event>,
}

impl std::ops::Deref for Drove {
    type Target = Outcome;
    fn deref(&self) -> &Outcome {
        &self.outcome
    }
}

fn run(sim: &mut SimVfio, devs: &[&str], o: &vfio::Options) -> Drove {
    let devs: Vec<String> = devs.iter().map(|s| s.to_string()).collect();
    let mut c = Collect::default();
    let outcome =
        vfio::drive(sim, &devs, o, &mut |s| eprintln!("{s}"), &mut c).expect("drive set-up");
    Drove {
        outcome,
        events: c.events,
    }
}

fn sets(sim: &SimVfio) -> Vec<(String, MigState)> {
    sim.calls
        .iter()
        .filter_map(|c| match c {
            SimCall::Set(d, s) => Some((d.clone(), *s)),
            _ => None,
        })
        .collect()
}

fn arcs(sim: &SimVfio, dev: &str) -> Vec<(MigState, MigState)> {
    sim.calls
        .iter()
        .filter_map(|c| match c {
            SimCall::Arc(d, a, b) if d == dev => Some((*a, *b)),
            _ => None,
        })
        .collect()
}

/// Verifies the controller's events as `drive` would (witness ok, no probe).
fn verify_events(out: &Drove) -> verify::Report {
    let mut h = Header {
        sources: out.sources.clone(),
        ..Header::default()
    };
    h.sources.insert(
        source::TRANSITIONS.into(),
        "unavailable: test without probe".into(),
    );
    let mut v = Verifier::new(&h, verify::Options::default());
    for (i, ev) in out.events.iter().enumerate() {
        v.push(i as u64 + 2, ev);
    }
    v.push(
        0,
        &Event {
            t: out.events.last().map_or(0, |e| e.t),
            pid: None,
            kind: EventKind::End,
        },
    );
    v.finish()
}

#[test]
fn stopcopy_walks_the_plan_saves_and_ends_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = SimSpec::new(A, P2P);
    let state = spec.state.clone();
    let mut sim = SimVfio::new([spec]);
    let out = run(&mut sim, &[A], &opts(Plan::StopCopy, dir.path()));
    assert_eq!(out.error, None);
    assert_eq!(
        sets(&sim).into_iter().map(|(_, s)| s).collect::<Vec<_>>(),
        vec![RunningP2p, StopCopy, Stop, RunningP2p, Running]
    );
    // Every SET is followed by a GET.
    for w in sim.calls.windows(2) {
        if let SimCall::Set(..) = w[0] {
            assert!(matches!(w[1], SimCall::Get(_) | SimCall::Arc(..)), "{w:?}");
        }
    }
    assert_eq!(
        arcs(&sim, A),
        vec![
            (Running, RunningP2p),
            (RunningP2p, Stop),
            (Stop, StopCopy),
            (StopCopy, Stop),
            (Stop, RunningP2p),
            (RunningP2p, Running)
        ]
    );
    assert_eq!(sim.state_of(A), Some(Running));
    assert_eq!(out.saved_files.len(), 1);
    assert_eq!(std::fs::read(&out.saved_files[0]).expect("saved"), state);
    assert!(out.events.iter().any(|e| matches!(&e.kind,
        EventKind::Data { dir: DataDir::Save, bytes, .. } if *bytes == state.len() as u64)));
    assert!(out.events.iter().any(|e| matches!(
        &e.kind,
        EventKind::SetDone {
            to: StopCopy,
            ret: 0,
            data_fd: Some(_),
            ..
        }
    )));
    assert_eq!(
        out.final_states,
        vec![(A.to_string(), "RUNNING".to_string())]
    );
    // No workload wrote to the witnessed pages: the witness saw nothing and says so.
    assert!(
        out.sources["witness"].starts_with("unavailable: no DMA workload"),
        "{:?}",
        out.sources
    );
    assert!(out.sources["dirty_log"].starts_with("unavailable: "));
    // Events are in time order and the verifier has nothing against them.
    assert!(out.events.windows(2).all(|w| w[0].t <= w[1].t));
    let r = verify_events(&out);
    assert!(r.violations.is_empty(), "{:?}", r.violations);
}

#[test]
fn stopcopy_without_p2p_skips_running_p2p() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sim = SimVfio::new([SimSpec::new(A, MigFlags::STOP_COPY)]);
    let out = run(&mut sim, &[A], &opts(Plan::StopCopy, dir.path()));
    assert_eq!(out.error, None);
    assert_eq!(
        sets(&sim).into_iter().map(|(_, s)| s).collect::<Vec<_>>(),
        vec![StopCopy, Stop, Running]
    );
    assert_eq!(arcs(&sim, A)[0], (Running, Stop));
}

#[test]
fn precopy_reads_iteratively_then_the_rest_in_stop_copy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = SimSpec::new(A, ALL);
    let state = spec.state.clone();
    let mut sim = SimVfio::new([spec]);
    let out = run(&mut sim, &[A], &opts(Plan::PreCopy, dir.path()));
    assert_eq!(out.error, None);
    let saves: Vec<u64> = out
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Data {
                dir: DataDir::Save,
                bytes,
                ..
            } => Some(*bytes),
            _ => None,
        })
        .collect();
    // PRE_COPY hands out the first half (then ENOMSG), STOP_COPY the rest.
    assert_eq!(
        saves,
        vec![
            state.len() as u64 / 2,
            (state.len() - state.len() / 2) as u64
        ]
    );
    assert_eq!(std::fs::read(&out.saved_files[0]).expect("saved"), state);
    assert!(out.events.iter().any(|e| matches!(&e.kind,
        EventKind::Mark { label } if label.contains("precopy round 0: initial_bytes"))));
    assert_eq!(sim.state_of(A), Some(Running));
}

#[test]
fn precopy_on_a_device_without_pre_copy_is_refused_before_touching_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sim = SimVfio::new([SimSpec::new(A, P2P)]);
    let e = vfio::drive(
        &mut sim,
        &[A.to_string()],
        &opts(Plan::PreCopy, dir.path()),
        &mut |_| {},
        &mut Collect::default(),
    )
    .expect_err("precopy needs PRE_COPY");
    assert!(matches!(e, SetupError::PlanUnsupported { .. }), "{e}");
    assert!(sets(&sim).is_empty());
}

#[test]
fn device_without_migration_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = SimSpec::new(A, P2P);
    spec.flags = None;
    let mut sim = SimVfio::new([spec]);
    let e = vfio::drive(
        &mut sim,
        &[A.to_string()],
        &opts(Plan::StopCopy, dir.path()),
        &mut |_| {},
        &mut Collect::default(),
    )
    .expect_err("no migration");
    let text = format!(
        "{e}: {}",
        std::error::Error::source(&e)
            .map(|s| s.to_string())
            .unwrap_or_default()
    );
    assert!(text.contains("no migration support"), "{text}");
    assert!(sets(&sim).is_empty());
}

#[test]
fn roundtrip_loads_the_save_and_compares() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sim = SimVfio::new([SimSpec::new(A, P2P)]);
    let out = run(&mut sim, &[A], &opts(Plan::RoundTrip, dir.path()));
    assert_eq!(out.error, None);
    assert_eq!(out.roundtrip.len(), 1);
    assert!(out.roundtrip[0].1, "re-save differs: {:?}", out.roundtrip);
    assert!(out.events.iter().any(|e| matches!(
        &e.kind,
        EventKind::Data {
            dir: DataDir::Load,
            ..
        }
    )));
    assert_eq!(out.saved_files.len(), 2);
}

#[test]
fn resume_from_file_is_loaded_into_the_device() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("in.mig");
    std::fs::write(&file, b"state from another host").expect("write");
    let mut sim = SimVfio::new([SimSpec::new(A, P2P)]);
    let mut o = opts(
        Plan::parse("RUNNING_P2P,STOP,RESUMING,STOP,RUNNING").expect("plan"),
        dir.path(),
    );
    o.resume_from = vec![file];
    let out = run(&mut sim, &[A], &o);
    assert_eq!(out.error, None);
    assert_eq!(sim.saved_state_of(A), Some(&b"state from another host"[..]));
    assert_eq!(sim.state_of(A), Some(Running));
}

#[test]
fn conformance_matches_the_kernel_fsm_and_never_sends_hazards() {
    let dir = tempfile::tempdir().expect("tempdir");
    for flags in MigFlags::ALL_SETS {
        let mut sim = SimVfio::new([SimSpec::new(A, flags.0)]);
        let out = run(&mut sim, &[A], &opts(Plan::Conformance, dir.path()));
        assert_eq!(out.error, None, "{flags:?}");
        let supported = MigState::ALL.iter().filter(|s| flags.supports(**s)).count();
        assert_eq!(out.conformance.len(), supported * 8, "{flags:?}");
        let bad: Vec<_> = out
            .conformance
            .iter()
            .filter(|r| r.pass == Some(false))
            .collect();
        assert!(bad.is_empty(), "{flags:?}: {bad:?}");
        let skipped = out.conformance.iter().filter(|r| r.pass.is_none()).count();
        let hazards = if flags.contains(MigFlags::PRE_COPY) {
            if flags.contains(MigFlags::P2P) { 2 } else { 1 }
        } else {
            0
        };
        assert_eq!(skipped, hazards, "{flags:?}");
        assert_eq!(sim.hazards_received, 0);
        assert_eq!(sim.state_of(A), Some(Running));
    }
}

#[test]
fn conformance_loads_saved_state_into_every_resuming_a_validating_device_leaves() {
    // A driver must fail the SET out of RESUMING on incomplete data (vfio.h): the table gives
    // each RESUMING it enters the device's own saved stream, as a VMM does, so a correct
    // validating device matches the kernel FSM on every pair out of RESUMING.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sim = SimVfio::new([SimSpec::new(A, P2P).validating()]);
    let out = run(&mut sim, &[A], &opts(Plan::Conformance, dir.path()));
    assert_eq!(out.error, None);
    let from_resuming: Vec<_> = out
        .conformance
        .iter()
        .filter(|r| r.from == MigState::Resuming)
        .collect();
    assert_eq!(from_resuming.len(), 8);
    let bad: Vec<_> = out
        .conformance
        .iter()
        .filter(|r| r.pass == Some(false))
        .collect();
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(sim.state_of(A), Some(Running));
}

#[test]
fn conformance_with_allow_hazard_sends_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sim = SimVfio::new([SimSpec::new(A, ALL)]);
    let mut o = opts(Plan::Conformance, dir.path());
    o.allow_hazard = true;
    let out = run(&mut sim, &[A], &o);
    assert_eq!(sim.hazards_received, 2);
    assert!(
        out.conformance.iter().all(|r| r.pass == Some(true)),
        "{:?}",
        out.conformance
            .iter()
            .filter(|r| r.pass != Some(true))
            .collect::<Vec<_>>()
    );
}

#[test]
fn custom_plan_refuses_a_hazard_and_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sim = SimVfio::new([SimSpec::new(A, ALL)]);
    let out = run(
        &mut sim,
        &[A],
        &opts(Plan::parse("STOP_COPY,PRE_COPY").expect("plan"), dir.path()),
    );
    assert!(
        out.error
            .as_deref()
            .is_some_and(|e| e.contains("--allow-hazard")),
        "{:?}",
        out.error
    );
    assert_eq!(sim.hazards_received, 0);
    assert_eq!(sim.state_of(A), Some(Running));
}

fn index_of(s: &[(String, MigState)], dev: &str, st: MigState, nth: usize) -> usize {
    s.iter()
        .enumerate()
        .filter(|(_, (d, x))| d == dev && *x == st)
        .nth(nth)
        .map(|(i, _)| i)
        .unwrap_or_else(|| panic!("no SET {st:?} #{nth} for {dev} in {s:?}"))
}

#[test]
fn qemu_order_quiesces_all_before_stopping_any_and_passes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sim = SimVfio::new([SimSpec::new(A, P2P), SimSpec::new(B, P2P)]);
    let out = run(&mut sim, &[A, B], &opts(Plan::StopCopy, dir.path()));
    assert_eq!(out.error, None);
    let s = sets(&sim);
    assert!(index_of(&s, B, RunningP2p, 0) < index_of(&s, A, StopCopy, 0));
    // On resume both reach RUNNING_P2P before either runs.
    assert!(index_of(&s, B, RunningP2p, 1) < index_of(&s, A, Running, 0));
    let r = verify_events(&out);
    assert!(r.violations.is_empty(), "{:?}", r.violations);
}

#[test]
fn qemu_order_inserts_barriers_for_custom_plans() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sim = SimVfio::new([SimSpec::new(A, P2P), SimSpec::new(B, P2P)]);
    let out = run(
        &mut sim,
        &[A, B],
        &opts(Plan::parse("STOP,RUNNING").expect("plan"), dir.path()),
    );
    assert_eq!(out.error, None);
    let s = sets(&sim);
    assert!(
        index_of(&s, B, RunningP2p, 0) < index_of(&s, A, Stop, 0),
        "{s:?}"
    );
    assert!(
        index_of(&s, B, RunningP2p, 1) < index_of(&s, A, Running, 0),
        "{s:?}"
    );
    assert!(verify_events(&out).violations.is_empty());
}

#[test]
fn naive_order_fails_stop_while_peer_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sim = SimVfio::new([SimSpec::new(A, P2P), SimSpec::new(B, P2P)]);
    let mut o = opts(Plan::StopCopy, dir.path());
    o.order = Order::Naive;
    let out = run(&mut sim, &[A, B], &o);
    assert_eq!(out.error, None);
    let s = sets(&sim);
    assert!(index_of(&s, A, Running, 0) < index_of(&s, B, RunningP2p, 0));
    let r = verify_events(&out);
    assert!(
        r.violated_rules().contains(&"stop-while-peer-running"),
        "{:?}",
        r.violations
    );
    assert_eq!(r.verdict, verify::Verdict::Fail);
}

/// When the first SET to RUNNING_P2P completed (the first quiesce).
fn first_p2p_done(events: &[Event]) -> u64 {
    events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::SetDone {
                to: RunningP2p,
                ret: 0,
                ..
            } => Some(e.t),
            _ => None,
        })
        .expect("quiesce")
}

#[test]
fn witness_catches_dma_after_quiesce_with_a_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sim = SimVfio::new([SimSpec::new(A, P2P).with(Misbehave::DmaAfterQuiesce(1))]);
    let out = run(&mut sim, &[A], &opts(Plan::StopCopy, dir.path()));
    let quiesced_at = first_p2p_done(&out.events);
    let dma: Vec<&Event> = out
        .events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Dma { .. }))
        .collect();
    assert!(!dma.is_empty(), "no witness event");
    match &dma[0].kind {
        EventKind::Dma {
            dev,
            src,
            iova,
            len,
            write,
            window: Some((t0, t1)),
            ..
        } => {
            assert_eq!((dev.as_str(), *src, *write), (A, DmaSource::Witness, true));
            assert_eq!(*iova, vfio::controller::IOVA_BASE);
            assert_eq!(*len, 4096);
            // The write landed at the GET after the SET: the watcher swept after the return
            // before that, so the window lies wholly after the quiesce.
            assert!(
                *t0 >= quiesced_at,
                "window {t0} starts before the quiesce {quiesced_at}"
            );
            assert!(t1 > t0 && *t1 == dma[0].t);
        }
        k => panic!("unexpected {k:?}"),
    }
    let r = verify_events(&out);
    assert!(
        r.violated_rules().contains(&"dma-after-quiesce"),
        "{:?}",
        r.violations
    );
}

#[test]
fn a_failing_arc_stops_the_plan_and_the_device_is_reset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sim = SimVfio::new([SimSpec::new(A, P2P).with(Misbehave::FailArc {
        from: Running,
        to: RunningP2p,
        errno: libc::EIO,
        left_in: Error,
    })]);
    let out = run(&mut sim, &[A], &opts(Plan::StopCopy, dir.path()));
    assert!(
        out.error
            .as_deref()
            .is_some_and(|e| e.contains("SET RUNNING_P2P failed")),
        "{:?}",
        out.error
    );
    assert!(sim.calls.contains(&SimCall::Reset(A.into())));
    assert_eq!(sim.state_of(A), Some(Running));
    assert_eq!(out.final_states[0].1, "RUNNING (after reset)");
    assert!(out.events.iter().any(|e| matches!(&e.kind,
        EventKind::SetDone { to: RunningP2p, ret, .. } if *ret == -libc::EIO)));
    assert!(
        out.events
            .iter()
            .any(|e| matches!(&e.kind, EventKind::Get { state: Error, .. }))
    );
    let r = verify_events(&out);
    assert!(
        r.violated_rules().contains(&"set-failed"),
        "{:?}",
        r.violations
    );
}

#[test]
fn a_device_that_cannot_be_recovered_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sim = SimVfio::new([SimSpec::new(A, P2P)
        .with(Misbehave::FailArc {
            from: RunningP2p,
            to: Stop,
            errno: libc::EIO,
            left_in: Error,
        })
        .with(Misbehave::ResetFails(libc::EIO))]);
    let out = run(&mut sim, &[A], &opts(Plan::StopCopy, dir.path()));
    assert!(out.error.is_some());
    assert!(
        out.final_states[0]
            .1
            .contains("could not return it to RUNNING"),
        "{:?}",
        out.final_states
    );
}

#[test]
fn a_lying_get_is_a_state_mismatch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sim = SimVfio::new([SimSpec::new(A, P2P).with(Misbehave::GetReports(Running))]);
    let out = run(
        &mut sim,
        &[A],
        &opts(
            Plan::parse("RUNNING_P2P,RUNNING").expect("plan"),
            dir.path(),
        ),
    );
    let r = verify_events(&out);
    assert!(
        r.violated_rules().contains(&"state-mismatch"),
        "{:?}",
        r.violations
    );
}

#[test]
fn a_signal_mid_plan_returns_every_device_to_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sim = SimVfio::new([SimSpec::new(A, P2P), SimSpec::new(B, P2P)]);
    let o = opts(Plan::StopCopy, dir.path());
    let stop: Arc<AtomicBool> = Arc::clone(&o.stop);
    // The "signal" arrives as soon as the first device's state has been saved.
    let mut c = Collect::default();
    let outcome = vfio::drive(
        &mut sim,
        &[A.to_string(), B.to_string()],
        &o,
        &mut |s| {
            if s.contains("saved") {
                stop.store(true, Ordering::Relaxed);
            }
        },
        &mut c,
    )
    .expect("drive");
    let out = Drove {
        outcome,
        events: c.events,
    };
    assert_eq!(out.error.as_deref(), Some("interrupted by a signal"));
    assert_eq!(sim.state_of(A), Some(Running));
    assert_eq!(sim.state_of(B), Some(Running));
    let s = sets(&sim);
    // B never stopped; A went back through RUNNING_P2P (legal path, QEMU resume order).
    assert!(!s.contains(&(B.to_string(), StopCopy)));
    assert_eq!(
        &s[s.len() - 3..],
        &[
            (A.into(), RunningP2p),
            (A.into(), Running),
            (B.into(), Running)
        ]
    );
    assert!(out.final_states.iter().all(|(_, st)| st == "RUNNING"));
    let r = verify_events(&out);
    assert!(r.violations.is_empty(), "{:?}", r.violations);
}

fn edu_opts(dir: &std::path::Path) -> vfio::Options {
    let mut o = opts(Plan::StopCopy, dir);
    o.workload = vfio::Workload::Edu;
    // Long enough for the workload thread to issue commands while each quiesced step lasts.
    o.dwell = std::time::Duration::from_millis(150);
    o
}

fn count(summary: &str, key: &str) -> u64 {
    summary
        .split(key)
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.trim_end_matches(';').parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {summary}"))
}

#[test]
fn edu_workload_held_while_quiesced_is_live_and_passes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sim = SimVfio::new([SimSpec::new(A, P2P)]);
    let out = run(&mut sim, &[A], &edu_opts(dir.path()));
    assert_eq!(out.error, None);
    let summary = out.workload_summary.clone().expect("summary");
    assert!(count(&summary, "completed ") > 0, "{summary}");
    assert!(count(&summary, "msi ") > 0, "{summary}");
    assert!(count(&summary, "witness checks ") > 0, "{summary}");
    assert!(out.events.iter().any(|e| matches!(&e.kind,
        EventKind::Mark { label } if label.contains("after SET RUNNING_P2P: dma issued"))));
    // The workload's writes landed before the first quiesce: the witness is live (the header
    // says so and the device is not re-declared).
    assert_eq!(out.sources.get("witness").map(String::as_str), Some("ok"));
    assert_eq!(declarations(&out, A).len(), 1);
    // Findings of the watcher beside each SET are merged in time order.
    assert!(out.events.windows(2).all(|w| w[0].t <= w[1].t));
    // Whatever the witness saw landed while DMA was allowed (the watcher starts at the SET's
    // issue, while a transfer may still complete): nothing after a quiesce.
    let r = verify_events(&out);
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    assert_eq!(r.verdict, verify::Verdict::Pass, "{:?}", r.blind_spots);
}

#[test]
fn edu_workload_through_a_driver_that_does_not_hold_dma_is_caught() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sim = SimVfio::new([SimSpec::new(A, P2P).with(Misbehave::EduIgnoresQuiesce)]);
    let out = run(&mut sim, &[A], &edu_opts(dir.path()));
    let dma = out
        .events
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::Dma {
                    src: DmaSource::Witness,
                    ..
                }
            )
        })
        .count();
    assert!(dma > 0, "{:?}", out.workload_summary);
    let r = verify_events(&out);
    assert!(
        r.violated_rules().contains(&"dma-after-quiesce"),
        "{:?}",
        r.violations
    );
    assert_eq!(sim.state_of(A), Some(Running));
}

#[test]
fn device_dma_logging_reports_writes_after_quiesce() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sim = SimVfio::new([SimSpec::new(A, P2P)
        .with_dirty_log()
        .with(Misbehave::DmaAfterQuiesce(1))]);
    let out = run(&mut sim, &[A], &opts(Plan::StopCopy, dir.path()));
    assert_eq!(out.sources.get("dirty_log").map(String::as_str), Some("ok"));
    let dirty: Vec<_> = out
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Dma {
                src: DmaSource::DirtyLog,
                iova,
                len,
                window,
                ..
            } => Some((*iova, *len, *window)),
            _ => None,
        })
        .collect();
    // The double lands one write on the first ioctl after each quiescent SET (four of them:
    // the GET that follows it). The log is cleared before the first quiescing SET and read
    // after, so it sees all four; the first in a window reaching back before that SET (the log
    // cannot tell when a bit was set: a maybe), the others wholly after a quiesce. The
    // witness sees all four, each in a window wholly after.
    let witnessed = out
        .events
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::Dma {
                    src: DmaSource::Witness,
                    ..
                }
            )
        })
        .count();
    assert_eq!(dirty.len(), 4, "{dirty:?}");
    assert_eq!(witnessed, 4);
    assert_eq!(
        (dirty[0].0, dirty[0].1),
        (vfio::controller::IOVA_BASE, 4096)
    );
    let first_set = out
        .events
        .iter()
        .find(|e| matches!(e.kind, EventKind::Set { .. }))
        .map(|e| e.t)
        .expect("a set");
    assert!(
        dirty[0].2.is_some_and(|(t0, _)| t0 <= first_set),
        "the log was cleared before the SET: {dirty:?}"
    );
    let r = verify_events(&out);
    assert!(
        r.violated_rules().contains(&"dma-after-quiesce"),
        "{:?}",
        r.violations
    );
    assert!(
        r.warnings
            .iter()
            .any(|w| w.rule == "dma-maybe-after-quiesce" && w.detail.starts_with("dirty_log")),
        "{:?}",
        r.warnings
    );
}

#[test]
fn device_dma_logging_clears_pre_quiesce_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sim = SimVfio::new([SimSpec::new(A, P2P).with_dirty_log()]);
    let out = run(&mut sim, &[A], &edu_opts(dir.path()));
    assert_eq!(out.sources.get("dirty_log").map(String::as_str), Some("ok"));
    // Writes before the log was cleared at the first quiesce are gone; the driver holds DMA
    // while quiesced, so nothing is judged after a quiesce.
    assert!(verify_events(&out).violations.is_empty());
}

/// The `dirty_report`s of a drive, and the witness's writes found while the device was in a
/// DMA-allowed state (the witness of a logging device stays armed there).
fn reports_and_running_writes(out: &Drove) -> (usize, usize) {
    let reports = out
        .events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::DirtyReport { .. }))
        .count();
    let mut running = true;
    let mut writes = 0;
    for e in &out.events {
        match &e.kind {
            EventKind::SetDone { to, ret: 0, .. } => running = to.dma_allowed(),
            EventKind::Set { to, .. } if to.quiescent() => running = false,
            EventKind::Dma {
                src: DmaSource::Witness,
                ..
            } if running => writes += 1,
            _ => {}
        }
    }
    (reports, writes)
}

#[test]
fn a_dma_log_that_drops_pages_is_dirty_log_missed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sim = SimVfio::new([SimSpec::new(A, P2P)
        .with_dirty_log()
        .with(Misbehave::DirtyMiss)]);
    let out = run(&mut sim, &[A], &edu_opts(dir.path()));
    assert_eq!(out.sources.get("dirty_log").map(String::as_str), Some("ok"));
    let (reports, writes) = reports_and_running_writes(&out);
    assert!(
        reports > 0 && writes > 0,
        "{reports} reports, {writes} writes"
    );
    let r = verify_events(&out);
    // The log drops every (one-page) edu transfer: the witness saw them land while running.
    assert_eq!(
        r.violated_rules(),
        ["dirty-log-missed"],
        "{:?}",
        r.violations
    );
    assert_eq!(sim.state_of(A), Some(Running));
}

#[test]
fn a_dma_log_that_has_every_page_raises_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sim = SimVfio::new([SimSpec::new(A, P2P).with_dirty_log()]);
    let out = run(&mut sim, &[A], &edu_opts(dir.path()));
    let (reports, writes) = reports_and_running_writes(&out);
    assert!(
        reports > 0 && writes > 0,
        "{reports} reports, {writes} writes"
    );
    // Every report is in the trace, dirty or clean, each over the time since the previous one.
    let dirty_runs = out
        .events
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::Dma {
                    src: DmaSource::DirtyLog,
                    ..
                }
            )
        })
        .count();
    assert!(dirty_runs > 0);
    let r = verify_events(&out);
    assert!(r.violations.is_empty(), "{:?}", r.violations);
}

#[test]
fn conformance_reports_a_misbehaving_device() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sim = SimVfio::new([SimSpec::new(A, P2P).with(Misbehave::FailArc {
        from: Stop,
        to: Resuming,
        errno: libc::EIO,
        left_in: Error,
    })]);
    let out = run(&mut sim, &[A], &opts(Plan::Conformance, dir.path()));
    assert_eq!(out.error, None);
    let bad: Vec<_> = out
        .conformance
        .iter()
        .filter(|r| r.pass == Some(false))
        .collect();
    // Every pair that needs the STOP -> RESUMING arc fails: reaching RESUMING (8 targets) and
    // SET RESUMING from STOP, STOP_COPY, RUNNING_P2P and RUNNING (through STOP).
    assert_eq!(bad.len(), 8 + 4, "{bad:#?}");
    assert!(
        bad.iter()
            .any(|r| r.from == Running && r.to == Resuming && r.got.starts_with("-EIO"))
    );
    assert!(
        sim.calls
            .iter()
            .filter(|c| matches!(c, SimCall::Reset(_)))
            .count()
            >= 4
    );
    assert_eq!(sim.state_of(A), Some(Running));
}

#[test]
fn duplicate_devices_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sim = SimVfio::new([SimSpec::new(A, P2P)]);
    let e = vfio::drive(
        &mut sim,
        &[A.to_string(), A.to_string()],
        &opts(Plan::StopCopy, dir.path()),
        &mut |_| {},
        &mut Collect::default(),
    )
    .expect_err("duplicate");
    assert!(matches!(e, SetupError::Duplicate(_)), "{e}");
}

#[test]
fn a_device_that_will_not_go_back_is_reset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sim = SimVfio::new([SimSpec::new(A, P2P).with(Misbehave::FailArc {
        from: Stop,
        to: RunningP2p,
        errno: libc::EIO,
        left_in: Stop,
    })]);
    let out = run(&mut sim, &[A], &opts(Plan::StopCopy, dir.path()));
    assert!(
        out.error
            .as_deref()
            .is_some_and(|e| e.contains("SET RUNNING_P2P failed")),
        "{:?}",
        out.error
    );
    assert!(sim.calls.contains(&SimCall::Reset(A.into())));
    assert_eq!(sim.state_of(A), Some(Running));
    assert_eq!(out.final_states[0].1, "RUNNING (after reset)");
    assert!(
        verify_events(&out)
            .violated_rules()
            .iter()
            .all(|r| *r == "set-failed")
    );
}

#[test]
fn cleanup_never_sends_a_set_from_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sim = SimVfio::new([SimSpec::new(A, P2P)
        .with(Misbehave::FailArc {
            from: RunningP2p,
            to: Stop,
            errno: libc::EIO,
            left_in: Error,
        })
        .with(Misbehave::ResetFails(libc::EIO))]);
    let out = run(&mut sim, &[A], &opts(Plan::StopCopy, dir.path()));
    let first_error = sim
        .calls
        .iter()
        .position(|c| matches!(c, SimCall::Arc(_, _, Stop)))
        .expect("the failing arc");
    assert!(
        !sim.calls[first_error..]
            .iter()
            .any(|c| matches!(c, SimCall::Set(..))),
        "{:?}",
        &sim.calls[first_error..]
    );
    assert_eq!(
        out.final_states[0].1,
        "ERROR (could not return it to RUNNING)"
    );
}

#[test]
fn a_device_found_in_error_is_reset_before_the_plan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = SimSpec::new(A, P2P);
    spec.initial = Error;
    let mut sim = SimVfio::new([spec]);
    let out = run(
        &mut sim,
        &[A],
        &opts(
            Plan::parse("RUNNING_P2P,RUNNING").expect("plan"),
            dir.path(),
        ),
    );
    assert_eq!(out.error, None);
    let first_set = sim
        .calls
        .iter()
        .position(|c| matches!(c, SimCall::Set(..)))
        .expect("a SET");
    let reset = sim
        .calls
        .iter()
        .position(|c| matches!(c, SimCall::Reset(_)))
        .expect("a reset");
    assert!(reset < first_set, "{:?}", sim.calls);
    assert_eq!(sim.state_of(A), Some(Running));
}

/// The device's `device` events (declaration and re-declarations), in order.
fn declarations(out: &Drove, dev: &str) -> Vec<Event> {
    out.events
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::Device { dev: d, .. } if d == dev))
        .cloned()
        .collect()
}

/// The device's own `witness` source in its latest declaration, if it has one.
fn own_witness(out: &Drove, dev: &str) -> Option<String> {
    declarations(out, dev).last().and_then(|e| match &e.kind {
        EventKind::Device { sources, .. } => sources.get(source::WITNESS).cloned(),
        _ => None,
    })
}

#[test]
fn a_write_landing_right_after_the_set_returns_is_wholly_after_set_done() {
    // The old witness took its baseline after the SET returned: a write landing between the
    // kernel's return and that copy was absorbed into it and never reported.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut o = opts(Plan::StopCopy, dir.path());
    o.witness_linger = vfio::controller::WITNESS_LINGER;
    let mut sim = SimVfio::new([SimSpec::new(A, P2P).with(Misbehave::LateDma)]);
    sim.follow_sweeps(Arc::clone(&o.witness_sweeps));
    let out = run(&mut sim, &[A], &o);
    assert_eq!(out.error, None);
    assert!(out.events.windows(2).all(|w| w[0].t <= w[1].t));
    // What a probe would have seen: each SET's syscall entry and return, merged as drive does.
    let pid = std::process::id();
    let probe: Vec<Event> = sim
        .returns
        .iter()
        .flat_map(|r| {
            [
                Event {
                    t: r.entered,
                    pid: Some(pid),
                    kind: EventKind::Set {
                        dev: r.bdf.clone(),
                        to: r.to,
                    },
                },
                Event {
                    t: r.returned,
                    pid: Some(pid),
                    kind: EventKind::SetDone {
                        dev: r.bdf.clone(),
                        to: r.to,
                        ret: r.ret,
                        data_fd: None,
                    },
                },
            ]
        })
        .collect();
    // The session's merger restamps our SETs with the probe's kernel times; the double's SETs
    // are the only ioctls here, so restamping is all there is to merge.
    let mut m = Merger::new(&[Origin::Probe, Origin::Controller], pid, true);
    for ev in out.events.iter().cloned() {
        m.push(Origin::Controller, ev);
    }
    for ev in probe {
        m.push(Origin::Probe, ev);
    }
    let events = m.finish();
    let quiesced = first_p2p_done(&events);
    assert_eq!(
        quiesced, sim.returns[0].returned,
        "set_done is the kernel's"
    );
    let late: Vec<(u64, u64)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Dma {
                src: DmaSource::Witness,
                iova,
                window: Some(w),
                ..
            } if *iova == vfio::controller::IOVA_BASE => Some(*w),
            _ => None,
        })
        .collect();
    assert_eq!(late.len(), 1, "the late write is reported once: {late:?}");
    let (t0, t1) = late[0];
    assert!(
        t0 >= quiesced && t1 > t0,
        "window ({t0}, {t1}] not wholly after set_done {quiesced}"
    );
    assert!(out.events.iter().any(|e| matches!(&e.kind,
        EventKind::Mark { label } if label.contains("witness across SET RUNNING_P2P: "))));
    let mut h = Header {
        sources: out.sources.clone(),
        ..Header::default()
    };
    h.sources.insert(source::TRANSITIONS.into(), "ok".into());
    let mut v = Verifier::new(&h, verify::Options::default());
    for (i, ev) in events.iter().enumerate() {
        v.push(i as u64 + 2, ev);
    }
    let r = v.finish();
    assert!(
        r.violations
            .iter()
            .any(|f| f.rule == "dma-after-quiesce" && f.detail.starts_with("witness")),
        "{:?} {:?}",
        r.violations,
        r.warnings
    );
}

#[test]
fn no_workload_redeclares_the_device_with_the_witness_unavailable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sim = SimVfio::new([SimSpec::new(A, P2P)]);
    let out = run(&mut sim, &[A], &opts(Plan::StopCopy, dir.path()));
    assert_eq!(out.error, None);
    let decl = declarations(&out, A);
    assert_eq!(decl.len(), 2, "{decl:?}");
    // The re-declaration repeats the device's facts, in its current state, right before the
    // first quiescing SET, and carries the witness verdict.
    let first_quiesce = out
        .events
        .iter()
        .position(|e| matches!(e.kind, EventKind::Set { to: RunningP2p, .. }))
        .expect("first quiesce");
    let redecl = out
        .events
        .iter()
        .rposition(|e| matches!(&e.kind, EventKind::Device { .. }))
        .expect("re-declaration");
    assert!(
        out.events[redecl + 1..first_quiesce]
            .iter()
            .all(|e| !matches!(e.kind, EventKind::Set { .. } | EventKind::SetDone { .. })),
        "{:?}",
        &out.events[redecl..=first_quiesce]
    );
    match (&decl[0].kind, &decl[1].kind) {
        (
            EventKind::Device {
                flags: f0,
                ctx: c0,
                driver: d0,
                sources: s0,
                ..
            },
            EventKind::Device {
                flags,
                ctx,
                state,
                driver,
                sources,
                ..
            },
        ) => {
            assert!(s0.is_empty());
            assert_eq!((flags, ctx, driver), (f0, c0, d0));
            assert_eq!(*state, Running);
            assert_eq!(sources.len(), 1);
            assert!(
                sources[source::WITNESS].starts_with("unavailable: no DMA workload"),
                "{sources:?}"
            );
        }
        k => panic!("{k:?}"),
    }
    assert!(out.sources["witness"].starts_with("unavailable: "));
    // No DMA source covered the quiesced device: never a pass.
    let r = verify_events(&out);
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    assert_eq!(r.verdict, verify::Verdict::Inconclusive);
    assert!(
        r.blind_spots.contains(&"dma".to_string()),
        "{:?}",
        r.blind_spots
    );
}

#[test]
fn an_exec_workload_gets_the_witnessed_ranges_and_is_live_only_if_it_wrote() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env_file = dir.path().join("env");
    let mut o = opts(Plan::StopCopy, dir.path());
    o.workload = vfio::Workload::Exec(format!(
        "echo \"$MIGSCOPE_WITNESS\" > {}",
        env_file.display()
    ));
    let mut sim = SimVfio::new([SimSpec::new(A, P2P), SimSpec::new(B, P2P)]);
    let out = run(&mut sim, &[A, B], &o);
    assert_eq!(out.error, None);
    let env = std::fs::read_to_string(&env_file).expect("the command ran");
    assert_eq!(
        env.trim(),
        format!(
            "{A}={:#x}+0x4000 {B}={:#x}+0x4000",
            vfio::controller::IOVA_BASE,
            vfio::controller::IOVA_BASE + 0x10_0000
        )
    );
    // The command cannot reach migscope's own mappings (nothing programs the double's DMA
    // engine here): nothing landed, and each device says why.
    for dev in [A, B] {
        let w = own_witness(&out, dev).expect("re-declared");
        assert!(
            w.starts_with("unavailable: the exec workload") && w.contains("$MIGSCOPE_WITNESS"),
            "{w}"
        );
    }
    assert!(out.sources["witness"].starts_with("unavailable: the exec workload"));
}

#[test]
fn edu_transfers_that_never_land_leave_only_that_device_without_a_witness() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sim = SimVfio::new([
        SimSpec::new(A, P2P),
        SimSpec::new(B, P2P).with(Misbehave::EduDropsDma),
    ]);
    let out = run(&mut sim, &[A, B], &edu_opts(dir.path()));
    assert_eq!(out.error, None);
    // A's workload wrote to its pages: live, the header's `ok` stands for it.
    assert_eq!(declarations(&out, A).len(), 1);
    assert_eq!(out.sources.get("witness").map(String::as_str), Some("ok"));
    let w = own_witness(&out, B).expect("B re-declared");
    assert!(
        w.starts_with("unavailable: the edu workload completed transfers") && w.contains(B),
        "{w}"
    );
}

#[test]
fn a_device_opened_quiescent_declares_its_witness_unavailable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = SimSpec::new(A, P2P);
    spec.initial = Stop;
    let mut sim = SimVfio::new([spec]);
    let mut o = opts(
        Plan::parse("RUNNING_P2P,RUNNING").expect("plan"),
        dir.path(),
    );
    o.workload = vfio::Workload::Edu;
    let out = run(&mut sim, &[A], &o);
    assert_eq!(out.error, None);
    let decl = declarations(&out, A);
    assert_eq!(decl.len(), 1, "decided at the declaration: {decl:?}");
    let w = own_witness(&out, A).expect("own witness");
    assert!(w.contains("already in STOP when opened"), "{w}");
}

/// The `corrupt_load` events of a drive: (corruption, bytes, ret).
fn corrupt_loads(out: &Drove) -> Vec<(&'static str, u64, i32)> {
    out.events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::CorruptLoad {
                corruption,
                bytes,
                ret,
                ..
            } => Some((corruption.name(), *bytes, *ret)),
            _ => None,
        })
        .collect()
}

fn violated(out: &Drove) -> Vec<&'static str> {
    verify_events(out)
        .violations
        .iter()
        .map(|f| f.rule)
        .collect()
}

#[test]
fn resume_fuzz_against_a_validating_device_is_refused_each_time_and_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = SimSpec::new(A, P2P).validating();
    let state = spec.state.clone();
    let n = state.len() as u64;
    let mut sim = SimVfio::new([spec]);
    let out = run(&mut sim, &[A], &opts(Plan::ResumeFuzz, dir.path()));
    assert_eq!(out.error, None);
    assert_eq!(
        corrupt_loads(&out),
        vec![
            ("truncated", n / 2, 0),
            ("bitflip", n, 0),
            ("oversized", n + 64 * 1024, -libc::ENOSPC),
            ("empty", 0, 0),
        ]
    );
    // Each refusal is followed by a reset; the good stream is loaded last and the device runs
    // with the state it saved.
    let resets = sim
        .calls
        .iter()
        .filter(|c| matches!(c, SimCall::Reset(_)))
        .count();
    assert_eq!(resets, 4);
    assert_eq!(sim.state_of(A), Some(Running));
    assert_eq!(sim.saved_state_of(A), Some(&state[..]));
    let loads = out
        .events
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::Data {
                    dir: DataDir::Load,
                    ..
                }
            )
        })
        .count();
    assert_eq!(loads, 1);
    assert_eq!(violated(&out), Vec::<&str>::new());
}

#[test]
fn resume_fuzz_against_a_device_that_takes_anything_is_caught() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = SimSpec::new(A, P2P);
    let state = spec.state.clone();
    let mut sim = SimVfio::new([spec]);
    let out = run(&mut sim, &[A], &opts(Plan::ResumeFuzz, dir.path()));
    assert_eq!(out.error, None);
    assert!(
        corrupt_loads(&out).iter().all(|c| c.2 == 0),
        "{:?}",
        out.events
    );
    let v = violated(&out);
    assert_eq!(
        v,
        vec!["resume-accepted-corrupt"; 4],
        "one per corrupted stream taken and restored"
    );
    // Nothing was refused, so nothing was reset; the good stream still restores last.
    assert!(!sim.calls.iter().any(|c| matches!(c, SimCall::Reset(_))));
    assert_eq!(sim.saved_state_of(A), Some(&state[..]));
    assert_eq!(sim.state_of(A), Some(Running));
}

#[test]
fn roundtrip_reads_the_registers_when_saved_and_once_restored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sim = SimVfio::new([SimSpec::new(A, P2P)]);
    // No workload: nothing writes the double's registers between the readings.
    let out = run(&mut sim, &[A], &opts(Plan::RoundTrip, dir.path()));
    assert_eq!(out.error, None);
    let regs: Vec<_> = out
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Regs {
                stage, bar, regs, ..
            } => Some((stage.name(), *bar, regs.clone())),
            _ => None,
        })
        .collect();
    // Saved at each STOP_COPY (two in roundtrip), restored once after RESUMING.
    let stages: Vec<_> = regs.iter().map(|r| r.0).collect();
    assert_eq!(stages, vec!["saved", "restored", "saved"]);
    let offsets: Vec<u64> = regs[0].2.keys().copied().collect();
    assert_eq!(offsets, vec![0x04, 0x20, 0x80, 0x88, 0x90, 0x98]);
    assert!(regs.iter().all(|r| r.1 == 0));
    // The double restores nothing but its stream, and its registers stay put: equal readings.
    assert_eq!(regs[0].2, regs[1].2);
    assert!(!violated(&out).contains(&"resume-divergence"));
}

#[test]
fn plans_without_a_restore_read_no_registers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sim = SimVfio::new([SimSpec::new(A, P2P)]);
    let out = run(&mut sim, &[A], &opts(Plan::StopCopy, dir.path()));
    assert!(
        !out.events
            .iter()
            .any(|e| matches!(e.kind, EventKind::Regs { .. }))
    );
}

#[test]
fn the_stop_copy_size_is_asked_in_stop_copy_before_the_save() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = SimSpec::new(A, ALL);
    let state = spec.state.clone();
    let mut sim = SimVfio::new([spec]);
    let out = run(&mut sim, &[A], &opts(Plan::PreCopy, dir.path()));
    assert_eq!(out.error, None);
    let at = |want: &dyn Fn(&EventKind) -> bool| out.events.iter().position(|e| want(&e.kind));
    let asked = at(&|k| {
        matches!(k, EventKind::Mark { label }
            if label.contains("VFIO_DEVICE_FEATURE_MIG_DATA_SIZE in STOP_COPY"))
    })
    .expect("drive asks MIG_DATA_SIZE");
    let entered = at(&|k| {
        matches!(
            k,
            EventKind::SetDone {
                to: StopCopy,
                ret: 0,
                ..
            }
        )
    })
    .expect("STOP_COPY reached");
    let saved = out
        .events
        .iter()
        .rposition(|e| {
            matches!(
                e.kind,
                EventKind::Data {
                    dir: DataDir::Save,
                    ..
                }
            )
        })
        .expect("a save");
    assert!(entered < asked && asked < saved, "{:#?}", out.events);
    // The double answers what its save session still holds: the second half.
    let EventKind::Mark { label } = &out.events[asked].kind else {
        unreachable!()
    };
    let rest = state.len() - state.len() / 2;
    assert!(label.ends_with(&format!("{rest} bytes")), "{label}");
}

// ---- issue 14 part C: resets and state read back while quiesced ----------------------------

/// The `reset` plan on device A of the double with `m`.
fn reset_plan(m: Option<Misbehave>) -> (Drove, SimVfio) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = SimSpec::new(A, P2P);
    if let Some(m) = m {
        spec = spec.with(m);
    }
    let mut sim = SimVfio::new([spec]);
    let out = run(&mut sim, &[A], &opts(Plan::Reset, dir.path()));
    (out, sim)
}

/// Each successful reset's next event of its device, which must be a GET: its state.
fn states_after_resets(out: &Drove) -> Vec<MigState> {
    let evs = &out.events;
    let mut v = Vec::new();
    for (n, e) in evs.iter().enumerate() {
        if let EventKind::Reset { dev, ret: 0 } = &e.kind {
            let next = evs[n + 1..].iter().find_map(|w| match &w.kind {
                EventKind::Get { dev: d, state } if d == dev => Some(Some(*state)),
                EventKind::Set { dev: d, .. } | EventKind::Reset { dev: d, .. } if d == dev => {
                    Some(None)
                }
                _ => None,
            });
            v.push(next.flatten().expect("a GET follows the reset"));
        }
    }
    v
}

fn data_files(out: &Drove) -> Vec<(DataDir, u64, migscope::trace::DataFile)> {
    out.events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Data {
                dir,
                bytes,
                file: Some(f),
                ..
            } => Some((*dir, *bytes, *f)),
            _ => None,
        })
        .collect()
}

fn marks(out: &Drove) -> Vec<String> {
    out.events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Mark { label } => Some(label.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn reset_plan_resets_in_stop_copy_reads_back_and_a_correct_device_refuses_the_old_fd() {
    let (out, sim) = reset_plan(None);
    assert_eq!(out.error, None);
    // RUNNING_P2P, STOP_COPY, the reset in STOP_COPY: the device is RUNNING, cleanup has
    // nothing to do.
    assert_eq!(
        sets(&sim).into_iter().map(|(_, s)| s).collect::<Vec<_>>(),
        vec![RunningP2p, StopCopy]
    );
    let resets: Vec<_> = sim
        .calls
        .iter()
        .filter(|c| matches!(c, SimCall::Reset(_)))
        .collect();
    assert_eq!(resets.len(), 1);
    assert_eq!(states_after_resets(&out), vec![Running]);
    // The refused read is the expected outcome, named as such; no data moved after the reset.
    let m = marks(&out);
    assert!(
        m.iter()
            .any(|l| l.contains("from before the reset refused the read: ENODEV")),
        "{m:?}"
    );
    assert!(data_files(&out).is_empty(), "{:?}", data_files(&out));
    assert_eq!(violated(&out), Vec::<&str>::new());
    assert_eq!(sim.state_of(A), Some(Running));
}

#[test]
fn a_data_fd_that_still_reads_after_a_reset_is_stale_data_fd() {
    let (out, sim) = reset_plan(Some(Misbehave::StaleFd));
    assert_eq!(out.error, None);
    let files = data_files(&out);
    assert_eq!(files.len(), 1, "{files:?}");
    let (dir, bytes, f) = &files[0];
    assert_eq!(*dir, DataDir::Save);
    assert!(*bytes > 0);
    // The fd STOP_COPY returned (generation 0) read at reset generation 1.
    let fd = out
        .events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::SetDone {
                to: StopCopy,
                data_fd,
                ..
            } => *data_fd,
            _ => None,
        })
        .expect("STOP_COPY returned a data_fd");
    assert_eq!((f.fd, f.fd_gen, f.reset_gen), (fd, 0, 1));
    assert_eq!(violated(&out), vec!["stale-data-fd"]);
    assert_eq!(sim.state_of(A), Some(Running));
}

#[test]
fn a_reset_that_leaves_the_migration_state_is_a_state_mismatch_and_the_device_still_ends_running() {
    let (out, sim) = reset_plan(Some(Misbehave::LostReset));
    assert_eq!(states_after_resets(&out), vec![StopCopy]);
    let v = violated(&out);
    assert!(v.contains(&"state-mismatch"), "{v:?}");
    // drive takes the GET's word: cleanup walks the device back from STOP_COPY.
    assert_eq!(sim.state_of(A), Some(Running));
    assert_eq!(out.final_states, vec![(A.to_owned(), "RUNNING".to_owned())]);
}

#[test]
fn data_events_carry_the_data_fd_and_its_reset_generation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sim = SimVfio::new([SimSpec::new(A, P2P)]);
    let out = run(&mut sim, &[A], &opts(Plan::StopCopy, dir.path()));
    let files = data_files(&out);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!((files[0].2.fd_gen, files[0].2.reset_gen), (0, 0));
    assert_eq!(violated(&out), Vec::<&str>::new());
}

/// GETs of `dev` that follow the GET right after a SET, before the next SET (the ones drive
/// made while dwelling).
fn dwell_gets(out: &Drove, dev: &str) -> Vec<MigState> {
    let mut v = Vec::new();
    let mut since_done: Option<u32> = None;
    for e in &out.events {
        match &e.kind {
            EventKind::SetDone { dev: d, .. } if d == dev => since_done = Some(0),
            EventKind::Set { dev: d, .. } | EventKind::Reset { dev: d, .. } if d == dev => {
                since_done = None;
            }
            EventKind::Get { dev: d, state } if d == dev => {
                if let Some(n) = since_done.as_mut() {
                    *n += 1;
                    if *n >= 2 {
                        v.push(*state);
                    }
                }
            }
            _ => {}
        }
    }
    v
}

fn dwelling_opts(dir: &std::path::Path, dwell_ms: u64) -> vfio::Options {
    let mut o = opts(Plan::StopCopy, dir);
    o.dwell = std::time::Duration::from_millis(dwell_ms);
    o.poll = std::time::Duration::from_millis(5);
    o
}

#[test]
fn dwelling_reads_each_quiesced_device_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sim = SimVfio::new([SimSpec::new(A, P2P)]);
    // Longer than the read-back period: at least one GET while dwelling in each quiescent step.
    let dwell = 2 * vfio::controller::QUIESCED_GET_EVERY.as_millis() as u64;
    let out = run(&mut sim, &[A], &dwelling_opts(dir.path(), dwell));
    let gets = dwell_gets(&out, A);
    // RUNNING_P2P, STOP_COPY, STOP and the second RUNNING_P2P dwell; RUNNING does not.
    for s in [RunningP2p, StopCopy, Stop] {
        assert!(
            gets.contains(&s),
            "no GET while dwelling in {s:?}: {gets:?}"
        );
    }
    assert!(!gets.contains(&Running), "{gets:?}");
    assert_eq!(violated(&out), Vec::<&str>::new());
}

#[test]
fn a_device_that_runs_without_a_set_while_quiesced_is_caught_by_the_read_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = || SimSpec::new(A, P2P).with(Misbehave::RunsBeforeGet(2));
    let dwell = 2 * vfio::controller::QUIESCED_GET_EVERY.as_millis() as u64;
    let mut sim = SimVfio::new([spec()]);
    let out = run(&mut sim, &[A], &dwelling_opts(dir.path(), dwell));
    // The second GET after the RUNNING_P2P SET is a dwell's: it finds the device RUNNING.
    assert_eq!(dwell_gets(&out, A).first(), Some(&Running));
    let v = violated(&out);
    assert!(v.contains(&"state-mismatch"), "{v:?}");
    assert!(
        marks(&out)
            .iter()
            .any(|l| l.contains("left RUNNING_P2P without a SET: GET RUNNING")),
        "{:?}",
        marks(&out)
    );
    assert_eq!(sim.state_of(A), Some(Running));
    // Without dwelling there is no second GET: the same device goes unseen (what the
    // read-back adds).
    let mut sim = SimVfio::new([spec()]);
    let out = run(&mut sim, &[A], &dwelling_opts(dir.path(), 0));
    assert!(!violated(&out).contains(&"state-mismatch"));
}
