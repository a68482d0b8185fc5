//! The controller's events beside the probe's, for `drive`: the conformance rows checked
//! against the FSM steps the probe traced ([`annotate_steps`]). Which probe events the
//! controller's own stand for, and their kernel times, is the session's merger's
//! (`crate::session::merge`).

use super::ConfRow;
use crate::model::MigState;
use crate::trace::{Event, EventKind};

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
}
