//! Progress for long work, on a terminal only: one line on stderr, refreshed in place
//! (indicatif), for `record` (events, lost, devices, bytes written) and `drive` (the plan, the
//! device and arc the kernel is walking, elapsed). Nothing at all when stderr is not a
//! terminal or `CI` is set: logs and pipes get only the plain lines.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::trace::{Event, EventKind};

/// Whether progress may be drawn: stderr is a terminal, `CI` is unset (or `false`/`0`), and
/// `TERM` is not `dumb`.
pub fn wanted() -> bool {
    let env = |k: &str| std::env::var(k).ok();
    wanted_for(
        // SAFETY: isatty only inspects the descriptor.
        unsafe { libc::isatty(libc::STDERR_FILENO) } == 1,
        env("CI").as_deref(),
        env("TERM").as_deref(),
    )
}

fn wanted_for(tty: bool, ci: Option<&str>, term: Option<&str>) -> bool {
    let ci = ci.is_some_and(|v| !v.is_empty() && v != "false" && v != "0");
    tty && !ci && term != Some("dumb")
}

/// The progress line itself: drawn only when [`wanted`], otherwise every call is plain.
#[derive(Clone)]
struct Line(Option<ProgressBar>);

impl Line {
    fn start() -> Self {
        if !wanted() {
            return Line(None);
        }
        let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4));
        let style = ProgressStyle::with_template("{spinner} {elapsed_precise} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        b.set_style(style);
        b.enable_steady_tick(Duration::from_millis(250));
        Line(Some(b))
    }

    fn set(&self, msg: impl FnOnce() -> String) {
        if let Some(b) = &self.0 {
            b.set_message(msg());
        }
    }

    /// Prints `line` on stderr above the progress line (or plainly, without one).
    fn say(&self, line: &str) {
        match &self.0 {
            Some(b) => b.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    /// Takes the line off the terminal.
    fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

fn bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

/// `record`'s line: events, lost, devices, bytes written.
pub struct Record {
    line: Line,
    events: u64,
    lost: u64,
    devices: BTreeSet<String>,
}

impl Record {
    pub fn start() -> Self {
        Record {
            line: Line::start(),
            events: 0,
            lost: 0,
            devices: BTreeSet::new(),
        }
    }

    /// Counts one event written to the trace.
    pub fn saw(&mut self, ev: &Event) {
        self.events += 1;
        match &ev.kind {
            EventKind::Lost { n, .. } => self.lost += n,
            EventKind::Device { dev, .. } => {
                self.devices.insert(dev.clone());
            }
            _ => {}
        }
    }

    /// Redraws the line after a batch; `written`: bytes of trace written so far.
    pub fn show(&self, written: u64) {
        self.line.set(|| self.text(written));
    }

    fn text(&self, written: u64) -> String {
        format!(
            "recording: {} events, {} lost, {} device(s), {} written",
            self.events,
            self.lost,
            self.devices.len(),
            bytes(written)
        )
    }

    pub fn finish(&self) {
        self.line.finish();
    }
}

/// `drive`'s line: the plan, the device and arc the kernel is walking (from the probe's
/// `set`/`step` events), arcs so far, elapsed. Shared with the probe's thread.
#[derive(Clone)]
pub struct Drive {
    line: Line,
    state: Arc<Mutex<DriveState>>,
}

#[derive(Default)]
struct DriveState {
    plan: String,
    arcs: u64,
    now: String,
}

impl Drive {
    pub fn start(plan: &str, devices: &[String]) -> Self {
        let d = Drive {
            line: Line::start(),
            state: Arc::new(Mutex::new(DriveState {
                plan: plan.to_owned(),
                now: format!("opening {}", devices.join(" ")),
                ..DriveState::default()
            })),
        };
        d.redraw();
        d
    }

    /// Follows the kernel's events: each `set` and `step` names the device and arc.
    pub fn saw(&self, events: &[Event]) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        for e in events {
            match &e.kind {
                EventKind::Set { dev, to } => s.now = format!("{dev}: SET {}", to.name()),
                EventKind::Step { dev, from, to } => {
                    s.arcs += 1;
                    s.now = format!("{dev}: {} -> {}", from.name(), to.name());
                }
                _ => {}
            }
        }
        drop(s);
        self.redraw();
    }

    fn redraw(&self) {
        if let Ok(s) = self.state.lock() {
            self.line
                .set(|| format!("plan {}: {}  ({} arcs)", s.plan, s.now, s.arcs));
        }
    }

    /// A log line above the progress line.
    pub fn say(&self, line: &str) {
        self.line.say(line);
    }

    pub fn finish(&self) {
        self.line.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_on_a_terminal_outside_ci() {
        assert!(wanted_for(true, None, Some("xterm")));
        assert!(wanted_for(true, Some("false"), None));
        assert!(!wanted_for(false, None, Some("xterm")), "a pipe");
        assert!(!wanted_for(true, Some("true"), Some("xterm")), "CI");
        assert!(!wanted_for(true, Some("1"), None), "CI");
        assert!(!wanted_for(true, None, Some("dumb")));
    }

    #[test]
    fn record_line_counts_events_lost_and_devices() {
        let mut r = Record {
            line: Line(None),
            events: 0,
            lost: 0,
            devices: BTreeSet::new(),
        };
        let dev = |d: &str| Event {
            t: 1,
            pid: None,
            kind: EventKind::Device {
                dev: d.to_owned(),
                flags: crate::model::MigFlags(1),
                ctx: "c".to_owned(),
                state: crate::model::MigState::Running,
                driver: None,
                sources: Default::default(),
            },
        };
        r.saw(&dev("0000:00:02.0"));
        r.saw(&dev("0000:00:03.0"));
        r.saw(&Event {
            t: 2,
            pid: None,
            kind: EventKind::Lost {
                n: 7,
                source: "ring_buffer".to_owned(),
                dev: None,
            },
        });
        assert_eq!(
            r.text(2048),
            "recording: 3 events, 7 lost, 2 device(s), 2.0 KiB written"
        );
    }
}
