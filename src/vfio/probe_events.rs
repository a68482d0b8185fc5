//! The controller's events beside the probe's, for `drive` (and the streaming session that
//! will run it): which probe events the controller's own stand for ([`merge`]), and the
//! conformance rows checked against the FSM steps the probe traced ([`annotate_steps`]).

use super::ConfRow;
use crate::model::MigState;
use crate::trace::{Event, EventKind};

/// Controller events plus the probe's kernel-side ones, sorted by time (stable: the
/// controller's order wins on ties). The probe's ioctl-derived events from our own pid
/// (including the IOMMU map/unmap our MAP_DMA calls cause) are dropped: the controller recorded
/// them itself, but each of our `set` / `set_done` first takes the time the probe saw the same
/// SET enter and leave the kernel ([`super::kernel_times`]).
/// Device declarations for devices the controller declared are dropped whatever their pid (the
/// controller's carry the flags it read and its ctx).
pub fn merge(mut ours: Vec<Event>, probe: Vec<Event>, pid: u32) -> Vec<Event> {
    super::kernel_times(&mut ours, &probe, pid);
    let declared: std::collections::BTreeSet<String> = ours
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Device { dev, .. } => Some(dev.clone()),
            _ => None,
        })
        .collect();
    ours.extend(probe.into_iter().filter(|e| {
        if let EventKind::Device { dev, .. } = &e.kind
            && declared.contains(dev)
        {
            return false;
        }
        let ioctl_derived = matches!(
            e.kind,
            EventKind::Device { .. }
                | EventKind::Set { .. }
                | EventKind::SetDone { .. }
                | EventKind::Get { .. }
                | EventKind::Reset { .. }
                | EventKind::Data { .. }
                | EventKind::Map { .. }
                | EventKind::Unmap { .. }
                | EventKind::End
        );
        !(ioctl_derived && (e.pid == Some(pid) || matches!(e.kind, EventKind::End)))
    }));
    ours.sort_by_key(|e| e.t);
    ours
}

/// Compares each conformance SET's traced `step`s (the probe's view of the kernel's
/// `vfio_mig_get_next_state` calls) with the path the model expects; a row whose steps differ
/// fails. Without the probe the steps are not checked (`steps` stays `None`).
pub fn annotate_steps(rows: &mut [ConfRow], events: &[Event], traced: bool) {
    if !traced {
        return;
    }
    for r in rows.iter_mut() {
        let (Some((t0, t1)), Some(want)) = (r.window, &r.expected_path) else {
            continue;
        };
        let steps: Vec<(MigState, MigState)> = events
            .iter()
            .filter(|e| e.t >= t0 && e.t <= t1)
            .filter_map(|e| match &e.kind {
                EventKind::Step { dev, from, to } if *dev == r.dev => Some((*from, *to)),
                _ => None,
            })
            .collect();
        let want: Vec<_> = want.windows(2).map(|w| (w[0], w[1])).collect();
        let ok = steps == want;
        r.got.push_str(&format!(
            "; steps {}",
            if steps.is_empty() {
                "none".to_owned()
            } else {
                steps
                    .iter()
                    .map(|(a, b)| format!("{}>{}", a.name(), b.name()))
                    .collect::<Vec<_>>()
                    .join(",")
            }
        ));
        if !ok {
            r.pass = Some(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conformance_rows_are_checked_against_traced_steps() {
        use crate::model::MigState::*;
        let row = |from, to, path: Vec<MigState>, window| ConfRow {
            dev: "d".into(),
            from,
            to,
            expected: String::new(),
            got: "0, GET X".into(),
            pass: Some(true),
            expected_path: Some(path),
            window: Some(window),
        };
        let step = |t, from, to| Event {
            t,
            pid: None,
            kind: EventKind::Step {
                dev: "d".into(),
                from,
                to,
            },
        };
        let mut rows = vec![
            row(Running, Stop, vec![Running, RunningP2p, Stop], (10, 20)),
            row(Stop, Running, vec![Stop, RunningP2p, Running], (30, 40)),
        ];
        let events = vec![
            step(12, Running, RunningP2p),
            step(15, RunningP2p, Stop),
            // The second SET jumped straight to RUNNING (a driver that skips arcs).
            step(35, Stop, Running),
        ];
        let mut untraced = rows.clone();
        annotate_steps(&mut untraced, &events, false);
        assert!(untraced.iter().all(|r| r.pass == Some(true)));
        annotate_steps(&mut rows, &events, true);
        assert_eq!(rows[0].pass, Some(true), "{}", rows[0].got);
        assert!(
            rows[0]
                .got
                .ends_with("steps RUNNING>RUNNING_P2P,RUNNING_P2P>STOP")
        );
        assert_eq!(rows[1].pass, Some(false));
    }

    #[test]
    fn merge_keeps_kernel_events_and_drops_our_ioctl_events() {
        let ev = |t, pid, kind| Event { t, pid, kind };
        let dev = |t, pid| Event {
            t,
            pid,
            kind: EventKind::Device {
                dev: "d".into(),
                flags: crate::model::MigFlags(3),
                ctx: "x".into(),
                state: MigState::Running,
                driver: None,
                sources: Default::default(),
            },
        };
        let ours = vec![
            dev(5, Some(7)),
            ev(
                10,
                Some(7),
                EventKind::Set {
                    dev: "d".into(),
                    to: MigState::Stop,
                },
            ),
            ev(
                30,
                Some(7),
                EventKind::SetDone {
                    dev: "d".into(),
                    to: MigState::Stop,
                    ret: 0,
                    data_fd: None,
                },
            ),
        ];
        let probe = vec![
            dev(6, None),
            ev(
                11,
                Some(7),
                EventKind::Set {
                    dev: "d".into(),
                    to: MigState::Stop,
                },
            ),
            ev(
                20,
                Some(7),
                EventKind::Step {
                    dev: "d".into(),
                    from: MigState::Running,
                    to: MigState::Stop,
                },
            ),
            ev(
                25,
                None,
                EventKind::Irq {
                    dev: "d".into(),
                    kind: crate::trace::IrqKind::Msi,
                    vector: 0,
                },
            ),
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
        let m = merge(ours, probe, 7);
        let ts: Vec<u64> = m.iter().map(|e| e.t).collect();
        // Our SET took the probe's syscall-entry time (11); the probe saw no return for it.
        assert_eq!(ts, vec![5, 11, 20, 25, 26, 30]);
    }

    #[test]
    fn our_sets_take_the_kernels_entry_and_return_times() {
        let ev = |t, pid, kind| Event { t, pid, kind };
        let set = |t, to| {
            ev(
                t,
                Some(7),
                EventKind::Set {
                    dev: "d".into(),
                    to,
                },
            )
        };
        let done = |t, to, ret| {
            ev(
                t,
                Some(7),
                EventKind::SetDone {
                    dev: "d".into(),
                    to,
                    ret,
                    data_fd: None,
                },
            )
        };
        let ours = vec![
            set(100, MigState::RunningP2p),
            done(200, MigState::RunningP2p, 0),
            set(300, MigState::Stop),
            done(400, MigState::Stop, -5),
            // Not seen by the probe: kept as the controller stamped it.
            set(500, MigState::Running),
            done(600, MigState::Running, 0),
        ];
        let probe = vec![
            set(110, MigState::RunningP2p),
            done(150, MigState::RunningP2p, 0),
            set(310, MigState::Stop),
            done(390, MigState::Stop, -5),
            // Another process's SET of the same device name inside our window is not ours.
            ev(
                520,
                Some(99),
                EventKind::SetDone {
                    dev: "d".into(),
                    to: MigState::Running,
                    ret: 0,
                    data_fd: None,
                },
            ),
        ];
        let m = merge(ours, probe, 7);
        let ts: Vec<(u64, &str)> = m.iter().map(|e| (e.t, e.kind.ev())).collect();
        assert_eq!(
            ts,
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
}
