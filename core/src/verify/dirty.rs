//! The device DMA log against the memory witness (issue 14, `dirty_miss`): `dirty-log-missed`.
//!
//! A `dirty_report` says which pages of one tracked range the device wrote over its window
//! `(t0, t1]` (its dirty runs are the `dma` events with `src: dirty_log` and the same window,
//! emitted just before it). A page the witness saw written in `(w0, w1]` must be dirty in some
//! report of its range whose window meets `(w0, w1]`. Once a report of that range begins at or
//! after `w1` every report that could hold the write has been read; if none did, and the
//! range's chain of reports (each beginning no later than the previous one ended) already ran
//! at `w0`, the log missed a write the device made: a VMM trusting it would not re-send that
//! page, and the destination would run with stale memory (pds_vfio_pci's dirty_sync, mlx5's
//! report message size, QEMU's missed 64-bit window).

use std::collections::VecDeque;

use super::timeline::{OPEN, Periods, Scope};
use super::{Out, Verifier, rule};

/// Witness page granule (the controller's buffers are 4 KiB pages).
const PAGE: u64 = 4096;
/// Reports kept per device for writes that arrive after them (a witness finding is stamped at
/// the end of its window, which may come after reports that met it).
const KEEP_REPORTS: usize = 64;
/// Witnessed writes waiting for their reports, per device; the oldest go first (undecided).
const MAX_PENDING: usize = 4096;
/// Dirty runs waiting for their report, per device.
const MAX_RUNS: usize = 65_536;

/// A `(t0, t1]` window: a point `t` is `(t - 1, t]`.
type Window = (u64, u64);

fn meets(a: Window, b: Window) -> bool {
    a.0.max(b.0) < a.1.min(b.1)
}

fn overlaps(a: u64, alen: u64, b: u64, blen: u64) -> bool {
    a < b.saturating_add(blen) && b < a.saturating_add(alen)
}

#[derive(Debug, Clone)]
struct Report {
    iova: u64,
    len: u64,
    window: Window,
    /// Dirty runs `(iova, len)`.
    runs: Vec<(u64, u64)>,
}

impl Report {
    fn holds(&self, page: u64) -> bool {
        self.runs.iter().any(|&(a, l)| overlaps(a, l, page, PAGE))
    }

    fn tracks(&self, page: u64) -> bool {
        overlaps(self.iova, self.len, page, PAGE)
    }
}

/// One tracked range's chain of reports: when it began, and where its last report ended.
#[derive(Debug, Clone)]
struct Chain {
    iova: u64,
    len: u64,
    start: u64,
    end: u64,
    reports: u64,
    /// Quiescent time inside clean reports' windows.
    clean: QuietCovered,
    /// Quiescent time inside any report's window, clean or dirty: time the log saw the range.
    seen: QuietCovered,
}

/// Quiescent time inside a series of report windows, each instant counted once, and up to
/// where it was counted.
#[derive(Debug, Clone, Copy, Default)]
struct QuietCovered {
    ns: u64,
    upto: u64,
}

impl QuietCovered {
    fn add(&mut self, quiet: &Periods, window: Window) {
        let from = window.0.max(self.upto);
        self.ns = self
            .ns
            .saturating_add(quiesced_within(quiet, from, window.1));
        self.upto = self.upto.max(window.1);
    }
}

/// One tracked range of a device's DMA log, for the verdict's `devices` map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirtyRange {
    pub iova: u64,
    pub len: u64,
    /// Its `dirty_report`s.
    pub reports: u64,
    /// Time the device was quiescent inside the windows of its clean reports: time a clean
    /// report proves the device wrote nothing to the range.
    pub clean_quiesced_ns: u64,
}

/// How much of `(t0, t1]` lies in `periods`.
pub(super) fn quiesced_within(periods: &Periods, t0: u64, t1: u64) -> u64 {
    periods
        .all()
        .iter()
        .rev()
        .take_while(|p| p.end == OPEN || p.end > t0)
        .map(|p| {
            let end = if p.end == OPEN { t1 } else { p.end.min(t1) };
            end.saturating_sub(p.start.max(t0))
        })
        .sum()
}

/// Witnessed pages (their addresses, ascending): a write of up to 64 pages, which nearly all
/// are, as a bit mask over its first page (no allocation per witnessed write), longer ones as
/// a list.
#[derive(Debug, Clone)]
enum Pages {
    Few { first: u64, mask: u64 },
    Many(Vec<u64>),
}

impl Pages {
    /// The pages `[iova, iova + len)` touches.
    fn of(iova: u64, len: u64) -> Self {
        let first = iova / PAGE * PAGE;
        let end = iova.saturating_add(len);
        let n = (end - first).div_ceil(PAGE);
        if n <= 64 {
            let mask = if n == 64 { u64::MAX } else { (1 << n) - 1 };
            Pages::Few { first, mask }
        } else {
            Pages::Many((first..end).step_by(PAGE as usize).collect())
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Pages::Few { mask, .. } => *mask == 0,
            Pages::Many(v) => v.is_empty(),
        }
    }

    /// Keeps the pages `keep` says to.
    fn retain(&mut self, mut keep: impl FnMut(u64) -> bool) {
        match self {
            Pages::Few { first, mask } => {
                let mut m = *mask;
                while m != 0 {
                    let k = m.trailing_zeros();
                    m &= m - 1;
                    if !keep(*first + u64::from(k) * PAGE) {
                        *mask &= !(1 << k);
                    }
                }
            }
            Pages::Many(v) => v.retain(|&pg| keep(pg)),
        }
    }

    /// Removes the pages `take` says to, and returns them in order.
    fn take(&mut self, take: impl Fn(u64) -> bool) -> Vec<u64> {
        let mut out = Vec::new();
        self.retain(|pg| {
            let t = take(pg);
            if t {
                out.push(pg);
            }
            !t
        });
        out
    }
}

#[derive(Debug, Clone)]
struct Pending {
    /// Witnessed pages no report has shown yet.
    pages: Pages,
    window: Window,
    line: u64,
}

/// Per device: what `dirty-log-missed` remembers between events.
#[derive(Debug, Default, Clone)]
pub(super) struct DirtyState {
    runs: Vec<(Window, u64, u64)>,
    reports: VecDeque<Report>,
    chains: Vec<Chain>,
    pending: VecDeque<Pending>,
}

impl DirtyState {
    /// Every tracked range, in the order its first report came.
    pub(super) fn ranges(&self) -> Vec<DirtyRange> {
        self.chains
            .iter()
            .map(|c| DirtyRange {
                iova: c.iova,
                len: c.len,
                reports: c.reports,
                clean_quiesced_ns: c.clean.ns,
            })
            .collect()
    }

    /// The quiescent time the log saw every tracked range of the device over (the least of
    /// its ranges' report windows inside quiescent periods), or `None` without a report.
    pub(super) fn quiesced_seen(&self) -> Option<u64> {
        self.chains.iter().map(|c| c.seen.ns).min()
    }

    /// The tracked ranges, for a human: `[iova, end)` each.
    pub(super) fn ranges_text(&self) -> String {
        let r: Vec<String> = self
            .chains
            .iter()
            .map(|c| format!("[{:#x}, {:#x})", c.iova, c.iova.saturating_add(c.len)))
            .collect();
        r.join(", ")
    }

    fn credit(reports: &VecDeque<Report>, p: &mut Pending) {
        for r in reports.iter().filter(|r| meets(r.window, p.window)) {
            p.pages.retain(|pg| !r.holds(pg));
        }
    }
}

impl Verifier {
    /// A witnessed write: credited against the reports already read, else kept for the next.
    pub(super) fn dirty_witnessed(
        &mut self,
        out: &Out,
        i: usize,
        iova: u64,
        len: u64,
        window: Option<Window>,
    ) {
        let d = &mut self.devs[i].dirty;
        if len == 0 {
            return;
        }
        let window = window.unwrap_or((out.t.saturating_sub(1), out.t));
        let mut p = Pending {
            pages: Pages::of(iova, len),
            window,
            line: out.line,
        };
        DirtyState::credit(&d.reports, &mut p);
        if !p.pages.is_empty() {
            if d.pending.len() == MAX_PENDING {
                d.pending.pop_front();
            }
            d.pending.push_back(p);
        }
    }

    /// A dirty run of the report about to close (`dma` with `src: dirty_log`).
    pub(super) fn dirty_run(&mut self, i: usize, iova: u64, len: u64, window: Option<Window>) {
        let d = &mut self.devs[i].dirty;
        if let Some(w) = window
            && d.runs.len() < MAX_RUNS
        {
            d.runs.push((w, iova, len));
        }
    }

    /// `dirty_report`: its runs are the `dirty_log` ones of its window and range; writes it
    /// meets are credited, and those it wholly follows are decided.
    pub(super) fn dirty_report_rules(
        &mut self,
        out: &mut Out,
        i: usize,
        iova: u64,
        len: u64,
        window: Window,
    ) {
        let d = &mut self.devs[i];
        let s = &mut d.dirty;
        let mut runs = Vec::new();
        s.runs.retain(|&(w, a, l)| {
            let mine = w == window && overlaps(a, l, iova, len);
            if mine {
                runs.push((a, l));
            }
            !mine
        });
        let clean = runs.is_empty();
        let rep = Report {
            iova,
            len,
            window,
            runs,
        };
        let c = match s.chains.iter().position(|c| c.iova == iova && c.len == len) {
            Some(k) => {
                let c = &mut s.chains[k];
                if window.0 > c.end {
                    c.start = window.0;
                }
                c.end = window.1;
                c
            }
            None => {
                s.chains.push(Chain {
                    iova,
                    len,
                    start: window.0,
                    end: window.1,
                    reports: 0,
                    clean: QuietCovered::default(),
                    seen: QuietCovered::default(),
                });
                let k = s.chains.len() - 1;
                &mut s.chains[k]
            }
        };
        c.reports += 1;
        let quiet = d.tl.periods(Scope::Quiescent);
        c.seen.add(quiet, window);
        if clean {
            c.clean.add(quiet, window);
        }
        let chain = c.start;
        let mut missed = Vec::new();
        for p in &mut s.pending {
            if meets(rep.window, p.window) {
                p.pages.retain(|pg| !rep.holds(pg));
            }
            if window.0 < p.window.1 {
                continue;
            }
            // Every report of this range that could hold the write has been read.
            let gone = p.pages.take(|pg| rep.tracks(pg));
            if !gone.is_empty() && chain <= p.window.0 {
                missed.push((gone, p.window, p.line));
            }
        }
        s.pending.retain(|p| !p.pages.is_empty());
        if s.reports.len() == KEEP_REPORTS {
            s.reports.pop_front();
        }
        s.reports.push_back(rep);
        for (pages, (w0, w1), line) in missed {
            let first = pages.first().copied().unwrap_or(0);
            out.add(
                rule::DIRTY_LOG_MISSED,
                &d.name,
                format!(
                    "the witness saw {} page(s) from iova {first:#x} written in ({w0}, {w1}] (line {line}), and no dirty_log report of [{iova:#x}, {:#x}) over that time has them: the device's DMA log missed a write (reports of this range run from {chain} ns)",
                    pages.len(),
                    iova.saturating_add(len),
                ),
                false,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::model::{MigFlags, MigState};
    use crate::trace::{DmaSource, Event, EventKind, Header, source};
    use crate::verify::{Options, Verifier, rule};

    const DEV: &str = "0000:00:02.0";
    const RANGE: (u64, u64) = (0x10_0000, 0x4000);

    fn verifier() -> Verifier {
        let sources = BTreeMap::from([
            (source::TRANSITIONS.to_owned(), "ok".to_owned()),
            (source::WITNESS.to_owned(), "ok".to_owned()),
            (source::DIRTY_LOG.to_owned(), "ok".to_owned()),
        ]);
        let h = Header {
            sources,
            ..Header::default()
        };
        let mut v = Verifier::new(&h, Options::default());
        v.push(
            1,
            &Event {
                t: 1,
                pid: None,
                kind: EventKind::Device {
                    dev: DEV.to_owned(),
                    flags: MigFlags(MigFlags::STOP_COPY | MigFlags::P2P),
                    ctx: "vm".to_owned(),
                    state: MigState::Running,
                    driver: None,
                    sources: BTreeMap::new(),
                },
            },
        );
        v
    }

    /// Pushes `kind` at `t`: the rules it raised.
    fn push(v: &mut Verifier, line: &mut u64, t: u64, kind: EventKind) -> Vec<&'static str> {
        *line += 1;
        v.push(*line, &Event { t, pid: None, kind })
            .into_iter()
            .map(|f| f.rule)
            .collect()
    }

    fn witness(iova: u64, window: (u64, u64)) -> EventKind {
        EventKind::Dma {
            dev: DEV.to_owned(),
            src: DmaSource::Witness,
            iova,
            len: 4096,
            write: true,
            window: Some(window),
            p2p: None,
        }
    }

    /// A report of RANGE over `window` with these dirty pages: its runs, then itself.
    fn report(
        v: &mut Verifier,
        line: &mut u64,
        window: (u64, u64),
        dirty: &[u64],
    ) -> Vec<&'static str> {
        let mut got = Vec::new();
        for &a in dirty {
            got.extend(push(
                v,
                line,
                window.1,
                EventKind::Dma {
                    dev: DEV.to_owned(),
                    src: DmaSource::DirtyLog,
                    iova: a,
                    len: 4096,
                    write: true,
                    window: Some(window),
                    p2p: None,
                },
            ));
        }
        got.extend(push(
            v,
            line,
            window.1,
            EventKind::DirtyReport {
                dev: DEV.to_owned(),
                iova: RANGE.0,
                len: RANGE.1,
                page_size: 4096,
                window,
                dirty_pages: dirty.len() as u64,
            },
        ));
        got
    }

    const P1: u64 = RANGE.0 + 0x1000;

    #[test]
    fn a_witnessed_write_the_next_reports_lack_is_dirty_log_missed() {
        let (mut v, mut l) = (verifier(), 1);
        assert!(report(&mut v, &mut l, (10, 100), &[]).is_empty());
        // Written in (150, 250]: the report over (90, 300] meets it and lacks the page; only
        // the report that begins after 250 decides.
        assert!(push(&mut v, &mut l, 250, witness(P1, (150, 250))).is_empty());
        assert!(report(&mut v, &mut l, (90, 300), &[]).is_empty());
        assert_eq!(
            report(&mut v, &mut l, (290, 400), &[]),
            [rule::DIRTY_LOG_MISSED]
        );
        // Decided once: later reports say nothing of it.
        assert!(report(&mut v, &mut l, (390, 500), &[]).is_empty());
    }

    #[test]
    fn a_write_in_a_report_meeting_its_window_is_logged() {
        let (mut v, mut l) = (verifier(), 1);
        assert!(report(&mut v, &mut l, (10, 100), &[]).is_empty());
        assert!(push(&mut v, &mut l, 250, witness(P1, (150, 250))).is_empty());
        // The report issued at 240 read the log before the data landed (by 250) and returned
        // at 300: the in-flight transfer was re-marked, so the next report (from 240) has it.
        assert!(report(&mut v, &mut l, (90, 300), &[]).is_empty());
        assert!(report(&mut v, &mut l, (240, 400), &[P1]).is_empty());
        assert!(report(&mut v, &mut l, (390, 500), &[]).is_empty());
    }

    #[test]
    fn a_report_read_before_the_witness_finding_credits_it() {
        let (mut v, mut l) = (verifier(), 1);
        assert!(report(&mut v, &mut l, (10, 100), &[]).is_empty());
        // The report that holds the page is in the trace before the finding that meets it.
        assert!(report(&mut v, &mut l, (90, 200), &[P1]).is_empty());
        assert!(push(&mut v, &mut l, 250, witness(P1, (150, 250))).is_empty());
        assert!(report(&mut v, &mut l, (190, 300), &[]).is_empty());
        assert!(report(&mut v, &mut l, (290, 400), &[]).is_empty());
    }

    #[test]
    fn a_write_before_logging_began_or_outside_the_ranges_is_not_judged() {
        let (mut v, mut l) = (verifier(), 1);
        // Possibly before the first report's window began (logging started at 100).
        assert!(push(&mut v, &mut l, 120, witness(P1, (50, 120))).is_empty());
        // Outside the tracked range.
        assert!(push(&mut v, &mut l, 130, witness(RANGE.0 + RANGE.1, (100, 130))).is_empty());
        assert!(report(&mut v, &mut l, (100, 200), &[]).is_empty());
        assert!(report(&mut v, &mut l, (190, 300), &[]).is_empty());
    }

    #[test]
    fn clean_reports_count_the_quiescent_time_they_cover_once() {
        let (mut v, mut l) = (verifier(), 1);
        assert!(report(&mut v, &mut l, (10, 100), &[]).is_empty());
        // Quiescent from 200 on.
        for kind in [
            EventKind::Set {
                dev: DEV.to_owned(),
                to: MigState::RunningP2p,
            },
            EventKind::SetDone {
                dev: DEV.to_owned(),
                to: MigState::RunningP2p,
                ret: 0,
                data_fd: None,
            },
        ] {
            assert!(push(&mut v, &mut l, 200, kind).is_empty());
        }
        // (90, 300]: 100 ns quiesced; (250, 400]: 100 more (250-300 already counted); a dirty
        // report proves nothing (its page is dma-after-quiesce); (480, 600]: 120.
        assert!(report(&mut v, &mut l, (90, 300), &[]).is_empty());
        assert!(report(&mut v, &mut l, (250, 400), &[]).is_empty());
        assert_eq!(
            report(&mut v, &mut l, (390, 500), &[P1]),
            [rule::DMA_AFTER_QUIESCE]
        );
        assert!(report(&mut v, &mut l, (480, 600), &[]).is_empty());
        let r = v.finish();
        let ranges = &r.devices[DEV].dirty_log;
        assert_eq!(ranges.len(), 1);
        assert_eq!((ranges[0].iova, ranges[0].len), RANGE);
        assert_eq!(ranges[0].reports, 5);
        assert_eq!(ranges[0].clean_quiesced_ns, 320);
        assert_eq!(
            r.to_json()["devices"][DEV]["dirty_log"][0]["clean_quiesced_ns"],
            320
        );
    }

    #[test]
    fn a_gap_in_the_chain_restarts_it() {
        let (mut v, mut l) = (verifier(), 1);
        assert!(report(&mut v, &mut l, (10, 100), &[]).is_empty());
        // A report that failed left (100, 400) unread: the chain restarts at 400.
        assert!(push(&mut v, &mut l, 350, witness(P1, (300, 350))).is_empty());
        assert!(report(&mut v, &mut l, (400, 500), &[]).is_empty());
    }
}
