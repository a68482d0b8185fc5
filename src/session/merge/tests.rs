use super::*;
use crate::model::MigFlags;
use crate::trace::IrqKind;

const PID: u32 = 7;

fn ev(t: u64, pid: Option<u32>, kind: EventKind) -> Event {
    Event { t, pid, kind }
}
fn set(t: u64, pid: u32, to: MigState) -> Event {
    ev(
        t,
        Some(pid),
        EventKind::Set {
            dev: "d".into(),
            to,
        },
    )
}
fn done(t: u64, pid: u32, to: MigState, ret: i32) -> Event {
    ev(
        t,
        Some(pid),
        EventKind::SetDone {
            dev: "d".into(),
            to,
            ret,
            data_fd: None,
        },
    )
}
fn irq(t: u64) -> Event {
    ev(
        t,
        None,
        EventKind::Irq {
            dev: "d".into(),
            kind: IrqKind::Msi,
            vector: 0,
        },
    )
}
fn device(t: u64, pid: Option<u32>) -> Event {
    ev(
        t,
        pid,
        EventKind::Device {
            dev: "d".into(),
            flags: MigFlags(3),
            ctx: "x".into(),
            state: MigState::Running,
            driver: None,
            sources: Default::default(),
        },
    )
}
fn times(evs: &[Event]) -> Vec<(u64, &'static str)> {
    evs.iter().map(|e| (e.t, e.kind.ev())).collect()
}

/// The whole of both streams through the merger, each source's watermark at its last event.
fn merge_all(ours: Vec<Event>, probe: Vec<Event>) -> Vec<Event> {
    let mut m = Merger::new(&[Origin::Controller, Origin::Probe], PID, true);
    for e in ours {
        m.push(Origin::Controller, e);
    }
    m.end(Origin::Controller);
    for e in probe {
        m.push(Origin::Probe, e);
    }
    m.finish()
}

#[test]
fn our_sets_take_the_kernels_entry_and_return_times() {
    use MigState::*;
    let ours = vec![
        set(100, PID, RunningP2p),
        done(200, PID, RunningP2p, 0),
        set(300, PID, Stop),
        done(400, PID, Stop, -5),
        // Not seen by the probe: kept as the controller stamped it.
        set(500, PID, Running),
        done(600, PID, Running, 0),
    ];
    let probe = vec![
        set(110, PID, RunningP2p),
        done(150, PID, RunningP2p, 0),
        set(310, PID, Stop),
        done(390, PID, Stop, -5),
        // Another process's SET of the same device name inside our window is not ours.
        done(520, 99, Running, 0),
    ];
    let m = merge_all(ours, probe);
    assert_eq!(
        times(&m),
        vec![
            (110, "set"),
            (150, "set_done"),
            (310, "set"),
            (390, "set_done"),
            (500, "set"),
            (520, "set_done"),
            (600, "set_done"),
        ]
    );
    // The foreign pid's set_done is kept as its own event; ours stays at 600.
    assert_eq!(m[5].pid, Some(99));
}

#[test]
fn a_set_the_controller_holds_past_the_hold_back_still_takes_the_kernels_times() {
    // As in the lab's late-dma and good-stopcopy runs: the witness watches across a SET
    // that takes longer than the probe's hold-back, so the probe's entry and return are read
    // before the controller sends its `set` and `set_done` (held until the watch ends). They
    // must still pair: the verdict judges evidence against the kernel's return (here the
    // return at 150, a DMA at 170 lands after it), not the controller's (at 260).
    use MigState::*;
    let mut m = Merger::new(&[Origin::Controller, Origin::Probe], PID, true);
    // The controller's last event before the hold: its watermark stays there.
    m.push(Origin::Controller, irq(90));
    m.advance(Origin::Controller, 90);
    m.push(Origin::Probe, set(110, PID, RunningP2p));
    m.push(Origin::Probe, done(150, PID, RunningP2p, 0));
    m.push(Origin::Probe, irq(170));
    m.advance(Origin::Probe, 250);
    // Held by the controller's watermark: nothing after 90 left yet.
    assert_eq!(times(&m.release()), vec![(90, "irq")]);
    // The hold ends: the controller's own stamps (before the ioctl, after it returned).
    m.push(Origin::Controller, set(100, PID, RunningP2p));
    m.push(Origin::Controller, done(260, PID, RunningP2p, 0));
    m.advance(Origin::Controller, 260);
    m.advance(Origin::Probe, 300);
    assert_eq!(
        times(&m.release()),
        vec![(110, "set"), (150, "set_done"), (170, "irq")]
    );
    assert!(m.finish().is_empty());
}

#[test]
fn an_early_probe_set_the_controller_never_claims_is_dropped_at_its_watermark() {
    // A SET of ours the controller did not emit as a SET (none here) is not kept waiting:
    // once the controller's watermark passed it, nothing can claim it.
    let mut m = Merger::new(&[Origin::Controller, Origin::Probe], PID, true);
    m.push(Origin::Probe, set(110, PID, MigState::Stop));
    m.push(Origin::Probe, done(150, PID, MigState::Stop, 0));
    m.advance(Origin::Probe, 200);
    m.advance(Origin::Controller, 200);
    // A later controller SET of the same device and target keeps its own times.
    m.push(Origin::Controller, set(210, PID, MigState::Stop));
    m.push(Origin::Controller, done(230, PID, MigState::Stop, 0));
    m.end(Origin::Controller);
    m.end(Origin::Probe);
    assert_eq!(times(&m.finish()), vec![(210, "set"), (230, "set_done")]);
}

#[test]
fn kernel_events_stay_and_our_ioctl_events_go() {
    let ours = vec![
        device(5, Some(PID)),
        set(10, PID, MigState::Stop),
        done(30, PID, MigState::Stop, 0),
    ];
    let probe = vec![
        device(6, None),
        set(11, PID, MigState::Stop),
        ev(
            20,
            Some(PID),
            EventKind::Step {
                dev: "d".into(),
                from: MigState::Running,
                to: MigState::Stop,
            },
        ),
        irq(25),
        ev(
            26,
            Some(99),
            EventKind::Set {
                dev: "e".into(),
                to: MigState::Stop,
            },
        ),
        ev(40, None, EventKind::End),
    ];
    let m = merge_all(ours, probe);
    // Our SET took the probe's syscall-entry time (11); the probe saw no return for it.
    assert_eq!(
        m.iter().map(|e| e.t).collect::<Vec<_>>(),
        vec![5, 11, 20, 25, 26, 30]
    );
}

#[test]
fn nothing_leaves_before_every_source_passed_it() {
    let mut m = Merger::new(&[Origin::Controller, Origin::Probe], PID, false);
    m.push(Origin::Probe, irq(10));
    m.push(Origin::Probe, irq(30));
    m.advance(Origin::Probe, 30);
    // The controller has said nothing yet: it may still send something at 1.
    assert!(m.release().is_empty());
    m.push(Origin::Controller, device(20, Some(PID)));
    m.advance(Origin::Controller, 20);
    assert_eq!(times(&m.release()), [(10, "irq"), (20, "device")]);
    m.advance(Origin::Controller, 100);
    assert_eq!(times(&m.release()), [(30, "irq")]);
    assert_eq!(m.held(), 0);
}

#[test]
fn an_open_set_holds_back_what_follows_it_until_the_probe_saw_its_entry() {
    let mut m = Merger::new(&[Origin::Controller, Origin::Probe], PID, true);
    m.push(Origin::Controller, set(100, PID, MigState::RunningP2p));
    m.advance(Origin::Controller, 1_000);
    m.push(Origin::Probe, irq(90));
    m.push(Origin::Probe, irq(105));
    m.advance(Origin::Probe, 106);
    // The SET's kernel entry may still be anywhere after 100: the interrupt at 105 waits.
    assert_eq!(times(&m.release()), [(90, "irq")]);
    m.push(Origin::Probe, set(110, PID, MigState::RunningP2p));
    m.advance(Origin::Probe, 120);
    assert_eq!(times(&m.release()), [(105, "irq"), (110, "set")]);
}

#[test]
fn consecutive_sets_of_one_device_pair_with_their_own_kernel_times() {
    use MigState::*;
    let mut m = Merger::new(&[Origin::Controller, Origin::Probe], PID, true);
    // The controller is two SETs ahead of the probe.
    for e in [
        set(100, PID, RunningP2p),
        done(200, PID, RunningP2p, 0),
        set(300, PID, Stop),
        done(400, PID, Stop, 0),
    ] {
        m.push(Origin::Controller, e);
    }
    m.advance(Origin::Controller, 500);
    for e in [
        set(110, PID, RunningP2p),
        done(190, PID, RunningP2p, 0),
        set(310, PID, Stop),
        done(390, PID, Stop, 0),
    ] {
        m.push(Origin::Probe, e);
    }
    m.advance(Origin::Probe, 450);
    assert_eq!(
        times(&m.release()),
        [
            (110, "set"),
            (190, "set_done"),
            (310, "set"),
            (390, "set_done")
        ]
    );
}

#[test]
fn an_event_behind_what_left_is_counted_lost_not_written_out_of_order() {
    let mut m = Merger::new(&[Origin::Probe], PID, false);
    m.push(Origin::Probe, irq(50));
    m.advance(Origin::Probe, 60);
    assert_eq!(times(&m.release()), [(50, "irq")]);
    // A record that missed the hold-back.
    m.push(Origin::Probe, irq(40));
    m.push(Origin::Probe, irq(70));
    m.advance(Origin::Probe, 80);
    let out = m.release();
    assert_eq!(times(&out), [(50, "lost"), (70, "irq")]);
    assert!(matches!(
        &out[0].kind,
        EventKind::Lost { n: 1, source, .. } if source == LOST_LATE
    ));
}

/// The late-dma lab case: the witness watches across the SET, so the controller's `set` and
/// `set_done` leave its hold only after the SET returned — after the probe already showed the
/// kernel's entry and exit. They must still take the kernel's times (the late write lands
/// between the kernel's exit and the controller's return).
#[test]
fn a_set_held_by_the_witness_still_takes_the_kernels_times_that_came_first() {
    use MigState::*;
    let mut m = Merger::new(&[Origin::Controller, Origin::Probe], PID, true);
    m.advance(Origin::Controller, 90);
    m.push(Origin::Probe, set(110, PID, RunningP2p));
    m.push(Origin::Probe, done(150, PID, RunningP2p, 0));
    m.push(Origin::Probe, irq(170));
    m.advance(Origin::Probe, 300);
    // The controller is inside its hold: its watermark stays before the SET.
    m.advance(Origin::Controller, 90);
    assert!(m.release().is_empty());
    m.push(Origin::Controller, set(100, PID, RunningP2p));
    m.push(Origin::Controller, done(200, PID, RunningP2p, 0));
    m.advance(Origin::Controller, 200);
    assert_eq!(
        times(&m.release()),
        [(110, "set"), (150, "set_done"), (170, "irq")]
    );
}

/// A probe SET of ours that no controller SET can contain any more (the controller's
/// watermark passed it) is forgotten, not paired with a later SET of the same target.
#[test]
fn an_unpaired_kernel_set_does_not_pair_with_a_later_controller_set() {
    use MigState::*;
    let mut m = Merger::new(&[Origin::Controller, Origin::Probe], PID, true);
    m.push(Origin::Probe, set(110, PID, Stop));
    m.push(Origin::Probe, done(120, PID, Stop, 0));
    m.advance(Origin::Probe, 130);
    m.advance(Origin::Controller, 140);
    m.push(Origin::Controller, set(150, PID, Stop));
    m.push(Origin::Controller, done(160, PID, Stop, 0));
    m.advance(Origin::Controller, 170);
    m.advance(Origin::Probe, 200);
    assert_eq!(times(&m.release()), [(150, "set"), (160, "set_done")]);
}
