//! The streaming verifier: each event judged as it leaves the merger, its findings handed on
//! at once (to the TUI), an interim verdict whenever something changed (at most every
//! [`INTERIM_EVERY`]), the final report at the end.

use std::time::{Duration, Instant};

use crate::trace::{Event, EventKind, Header, ReadWarning};
use crate::verify::{Finding, Options, Report, Verifier};

/// The most often an interim verdict is computed (it costs a copy of the devices' state).
pub const INTERIM_EVERY: Duration = Duration::from_millis(250);

pub struct VerdictSink {
    v: Verifier,
    /// Something happened since the last interim verdict.
    changed: bool,
    last: Option<Instant>,
}

impl VerdictSink {
    pub fn new(header: &Header, opts: Options) -> VerdictSink {
        VerdictSink {
            v: Verifier::new(header, opts),
            changed: true,
            last: None,
        }
    }

    /// Judges one event; returns its findings.
    pub fn push(&mut self, line: u64, ev: &Event) -> Vec<Finding> {
        let found = self.v.push(line, ev);
        // Interrupts and DMA outside findings change no verdict; state changes may (a blind
        // spot appears when a device quiesces).
        if !found.is_empty()
            || !matches!(
                ev.kind,
                EventKind::Irq { .. } | EventKind::IrqBin { .. } | EventKind::Mark { .. }
            )
        {
            self.changed = true;
        }
        found
    }

    /// New warnings of the reader (unknown `ev` values, which never reach
    /// [`VerdictSink::push`]), as findings.
    pub fn warnings(&mut self, new: &[ReadWarning], t: u64) -> Vec<Finding> {
        let mut seen = 0;
        let new: Vec<Finding> = self
            .v
            .forward_warnings(new, &mut seen)
            .iter()
            .map(|w| Finding {
                rule: crate::verify::rule::UNKNOWN_EVENT,
                dev: None,
                t,
                line: w.line,
                detail: w.msg.clone(),
                warning: true,
            })
            .collect();
        if !new.is_empty() {
            self.changed = true;
        }
        new
    }

    /// An interim verdict when something changed and the last one is old enough.
    pub fn interim(&mut self) -> Option<Report> {
        if !self.changed || self.last.is_some_and(|l| l.elapsed() < INTERIM_EVERY) {
            return None;
        }
        self.changed = false;
        self.last = Some(Instant::now());
        Some(self.v.interim())
    }

    pub fn finish(self) -> Report {
        self.v.finish()
    }
}
