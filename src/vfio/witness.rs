//! The memory witness: every device-written DMA buffer, compared page by page against a
//! baseline taken *before* each SET that quiesces the device, by a watcher thread that keeps
//! sweeping from the SET's issue until some time after its return, then at every later check
//! until the device may DMA again. Each change is a `dma` event whose window `(t0, t1]` says
//! where it can have happened: `t0` is the start of the last sweep that saw the page clean,
//! `t1` the end of the one that saw it changed. A write landing microseconds after the driver
//! returns therefore lands between two timestamped sweeps, never in a gap between the SET's
//! return and a baseline (the verifier tells a window straddling the quiesce from one wholly
//! after it).
//!
//! It also says whether it is *live* for a device: a witness whose pages nothing wrote to has
//! seen nothing ([`Witness::landed`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::buffer::{DmaBuffer, PAGE};
use super::now_ns;
use crate::trace::{DmaSource, EventKind};

struct Watched {
    dev: String,
    iova: u64,
    buf: Arc<DmaBuffer>,
    /// The content when the buffer was mapped, for liveness.
    initial: Vec<u64>,
    /// While armed: the baseline and when it was last known clean (start of the sweep that
    /// last compared it).
    baseline: Option<(Vec<u64>, u64)>,
}

/// Witnessed buffers of every device.
pub struct Witness {
    bufs: Vec<Watched>,
    /// Number of buffer comparisons made (reported in a `mark`).
    pub checks: u64,
    /// Number of `dma` events produced.
    pub detections: u64,
    /// Sweeps made by watcher threads, shared so a caller can follow their progress.
    sweeps: Arc<AtomicU64>,
}

impl Default for Witness {
    fn default() -> Self {
        Witness::new(Arc::default())
    }
}

/// A watcher thread sweeping one device's buffers across a SET ([`Witness::watch`]).
pub struct Watch {
    dev: String,
    returned: Arc<AtomicU64>,
    thread: JoinHandle<Swept>,
}

impl Watch {
    /// The SET returned at `t`: the watcher keeps sweeping until its linger after `t` passed.
    pub fn returned(&self, t: u64) {
        self.returned.store(t.max(1), Ordering::Release);
    }
}

struct Swept {
    bufs: Vec<Watched>,
    found: Vec<(u64, EventKind)>,
    /// Time between consecutive sweep starts, ns.
    intervals: Vec<u64>,
    checks: u64,
}

/// What a watcher saw across one SET.
#[derive(Debug, Default, PartialEq)]
pub struct WatchReport {
    /// `(t, dma event)`, `t` the end of the event's window.
    pub found: Vec<(u64, EventKind)>,
    pub sweeps: usize,
    /// Median and largest time between two sweep starts, ns.
    pub interval_median: u64,
    pub interval_max: u64,
}

impl Witness {
    /// A witness counting its watchers' sweeps in `sweeps`.
    pub fn new(sweeps: Arc<AtomicU64>) -> Witness {
        Witness {
            bufs: Vec::new(),
            checks: 0,
            detections: 0,
            sweeps,
        }
    }

    pub fn add(&mut self, dev: &str, iova: u64, buf: Arc<DmaBuffer>) {
        self.bufs.push(Watched {
            dev: dev.to_owned(),
            iova,
            initial: buf.words(),
            buf,
            baseline: None,
        });
    }

    pub fn has_buffers(&self) -> bool {
        !self.bufs.is_empty()
    }

    pub fn watches(&self, dev: &str) -> bool {
        self.bufs.iter().any(|w| w.dev == dev)
    }

    pub fn is_armed(&self, dev: &str) -> bool {
        self.bufs
            .iter()
            .any(|w| w.dev == dev && w.baseline.is_some())
    }

    /// Whether anything has written to `dev`'s witnessed pages since they were mapped: only
    /// then could the witness have seen what it claims for that device.
    pub fn landed(&self, dev: &str) -> bool {
        self.bufs
            .iter()
            .any(|w| w.dev == dev && w.buf.words() != w.initial)
    }

    /// The `(iova, len)` of each of `dev`'s witnessed buffers.
    pub fn ranges(&self, dev: &str) -> Vec<(u64, u64)> {
        self.bufs
            .iter()
            .filter(|w| w.dev == dev)
            .map(|w| (w.iova, w.buf.len() as u64))
            .collect()
    }

    /// Takes `dev`'s baseline now (before a SET that quiesces it): from here on every change
    /// is reported. Buffers already armed keep theirs.
    pub fn arm(&mut self, dev: &str) {
        for w in self.bufs.iter_mut().filter(|w| w.dev == dev) {
            if w.baseline.is_none() {
                let t = now_ns();
                w.baseline = Some((w.buf.words(), t));
            }
        }
    }

    /// Stops watching `dev` (it may DMA again).
    pub fn disarm(&mut self, dev: &str) {
        for w in self.bufs.iter_mut().filter(|w| w.dev == dev) {
            w.baseline = None;
        }
    }

    /// Compares `dev`'s armed buffers (all devices with `None`) now. Each run of changed pages
    /// becomes one `dma` event with window `(clean t, end of this comparison]`; the baseline
    /// then absorbs the change, so every later landed write is reported again.
    pub fn check(&mut self, dev: Option<&str>) -> Vec<(u64, EventKind)> {
        let mut out = Vec::new();
        for w in self.bufs.iter_mut() {
            if dev.is_some_and(|d| d != w.dev) {
                continue;
            }
            self.checks += u64::from(w.baseline.is_some());
            compare(w, now_ns(), &mut out);
        }
        self.detections += out.len() as u64;
        out
    }

    /// Starts a watcher thread over `dev`'s armed buffers: it sweeps them back to back until a
    /// sweep starts `linger` after the time given to [`Watch::returned`] (so at least one whole
    /// sweep follows the return). The buffers are the watcher's until [`Witness::finish`]. The
    /// watcher keeps off the CPU the caller runs on (when it may use another), so the SET's own
    /// kernel work and what it wakes there never preempt the sweeps.
    pub fn watch(&mut self, dev: &str, linger: Duration) -> Watch {
        let caller_cpu = current_cpu();
        let mut mine = Vec::new();
        let mut rest = Vec::new();
        for w in self.bufs.drain(..) {
            if w.dev == dev && w.baseline.is_some() {
                mine.push(w);
            } else {
                rest.push(w);
            }
        }
        self.bufs = rest;
        let returned = Arc::new(AtomicU64::new(0));
        let ret = Arc::clone(&returned);
        let sweeps = Arc::clone(&self.sweeps);
        let linger = linger.as_nanos() as u64;
        let thread = std::thread::spawn(move || {
            if let Some(cpu) = caller_cpu {
                keep_off_cpu(cpu);
            }
            let mut s = Swept {
                bufs: mine,
                found: Vec::new(),
                intervals: Vec::new(),
                checks: 0,
            };
            let mut prev: Option<u64> = None;
            loop {
                let start = now_ns();
                if let Some(p) = prev {
                    s.intervals.push(start - p);
                }
                prev = Some(start);
                for w in s.bufs.iter_mut() {
                    compare(w, start, &mut s.found);
                    s.checks += 1;
                }
                sweeps.fetch_add(1, Ordering::AcqRel);
                let r = ret.load(Ordering::Acquire);
                if r != 0 && start >= r.saturating_add(linger) {
                    break;
                }
                if s.bufs.is_empty() && r != 0 {
                    break;
                }
            }
            s
        });
        Watch {
            dev: dev.to_owned(),
            returned,
            thread,
        }
    }

    /// Waits for the watcher (after [`Watch::returned`]) and takes its buffers back.
    pub fn finish(&mut self, watch: Watch) -> WatchReport {
        let Watch {
            dev,
            returned,
            thread,
        } = watch;
        if returned.load(Ordering::Acquire) == 0 {
            returned.store(now_ns(), Ordering::Release);
        }
        let Ok(s) = thread.join() else {
            // The watcher cannot panic (no indexing outside bounds, no unwrap); if it did, its
            // buffers are gone and the device is no longer watched: say nothing was seen of it.
            self.bufs.retain(|w| w.dev != dev);
            return WatchReport::default();
        };
        self.bufs.extend(s.bufs);
        self.checks += s.checks;
        self.detections += s.found.len() as u64;
        let mut iv = s.intervals;
        iv.sort_unstable();
        WatchReport {
            sweeps: iv.len() + 1,
            interval_median: iv.get(iv.len() / 2).copied().unwrap_or(0),
            interval_max: iv.last().copied().unwrap_or(0),
            found: s.found,
        }
    }
}

/// Compares one armed buffer, whose comparison started at `start`; changed pages become events
/// (one per run) with window `(clean t, now]`, and the buffer is known clean from `start`.
fn compare(w: &mut Watched, start: u64, out: &mut Vec<(u64, EventKind)>) {
    let Some((base, clean_t)) = w.baseline.as_mut() else {
        return;
    };
    let changed = w.buf.diff_pages(base);
    if !changed.is_empty() {
        let end = now_ns();
        for (first, pages) in runs(&changed) {
            out.push((
                end,
                EventKind::Dma {
                    dev: w.dev.clone(),
                    src: DmaSource::Witness,
                    iova: w.iova + (first * PAGE) as u64,
                    len: (pages * PAGE) as u64,
                    write: true,
                    window: Some((*clean_t, end)),
                    p2p: None,
                },
            ));
        }
    }
    *clean_t = start;
}

/// The CPU the calling thread runs on.
fn current_cpu() -> Option<usize> {
    // SAFETY: sched_getcpu(3) takes no arguments; -1 means unknown.
    let cpu = unsafe { libc::sched_getcpu() };
    usize::try_from(cpu).ok()
}

/// Restricts the calling thread to its allowed CPUs other than `cpu`, when there are others;
/// otherwise (or on any failure) leaves its affinity alone.
fn keep_off_cpu(cpu: usize) {
    if cpu >= libc::CPU_SETSIZE as usize {
        return;
    }
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = size_of::<libc::cpu_set_t>();
    // SAFETY: pid 0 is this thread; `set` is a writable cpu_set_t of `size` bytes.
    if unsafe { libc::sched_getaffinity(0, size, &raw mut set) } != 0 {
        return;
    }
    // SAFETY: `cpu < CPU_SETSIZE` keeps the CPU_* bit accesses inside the set.
    unsafe {
        if !libc::CPU_ISSET(cpu, &set) || libc::CPU_COUNT(&set) < 2 {
            return;
        }
        libc::CPU_CLR(cpu, &mut set);
        // Best effort: a failure only costs the separation.
        libc::sched_setaffinity(0, size, &raw const set);
    }
}

/// Runs of consecutive page indices (sorted) as (first page, page count).
fn runs(pages: &[usize]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for &p in pages {
        match out.last_mut() {
            Some((f, n)) if *f + *n == p => *n += 1,
            _ => out.push((p, 1)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(ev: &EventKind) -> (u64, u64, u64) {
        match ev {
            EventKind::Dma {
                iova,
                window: Some((t0, t1)),
                src: DmaSource::Witness,
                write: true,
                ..
            } => (*iova, *t0, *t1),
            e => panic!("not a witness write: {e:?}"),
        }
    }

    #[test]
    fn detects_writes_with_windows_and_rebaselines() {
        let buf = Arc::new(DmaBuffer::new(4 * PAGE).expect("mmap"));
        let mut w = Witness::default();
        w.add("d0", 0x10_0000, Arc::clone(&buf));
        // Not armed: nothing is compared.
        buf.write(0, &[1]).expect("write");
        assert!(w.check(None).is_empty());
        w.arm("d0");
        let armed_at = now_ns();
        assert!(w.check(Some("d0")).is_empty());
        let clean = now_ns();
        buf.write(PAGE + 3, &[7]).expect("write");
        buf.write(2 * PAGE, &[7]).expect("write");
        let wrote = now_ns();
        let ev = w.check(None);
        let after = now_ns();
        assert_eq!(ev.len(), 1, "{ev:?}");
        let (t, kind) = &ev[0];
        assert!(matches!(kind, EventKind::Dma { len, .. } if *len == 2 * PAGE as u64));
        let (iova, t0, t1) = window(kind);
        assert_eq!(iova, 0x10_0000 + PAGE as u64);
        // The window starts when the page was last seen clean, ends after it was seen changed.
        assert!(armed_at <= t0 && t0 <= clean, "{armed_at} {t0} {clean}");
        assert!(wrote <= t1 && t1 <= after && *t == t1);
        // The same bytes again are not a new write; a new value is.
        assert!(w.check(None).is_empty());
        buf.write(3 * PAGE, &[9]).expect("write");
        let ev = w.check(None);
        assert!(
            matches!(&ev[..], [(_, EventKind::Dma { iova, .. })] if *iova == 0x10_0000 + 3 * PAGE as u64)
        );
        w.disarm("d0");
        buf.write(0, &[3]).expect("write");
        assert!(w.check(None).is_empty());
        assert_eq!(w.detections, 2);
    }

    #[test]
    fn baseline_is_taken_before_the_set_so_a_write_before_the_first_check_is_reported() {
        // The old witness took its copy after the SET returned: a write landing in between was
        // part of the copy and never reported.
        let buf = Arc::new(DmaBuffer::new(PAGE).expect("mmap"));
        let mut w = Witness::default();
        w.add("d0", 0x1000, Arc::clone(&buf));
        w.arm("d0");
        let set_issued = now_ns();
        buf.write(8, &[0xAA]).expect("write"); // lands while the SET runs
        let ev = w.check(Some("d0"));
        assert_eq!(ev.len(), 1);
        let (_, t0, _) = window(&ev[0].1);
        assert!(t0 <= set_issued, "the window reaches back to the baseline");
    }

    #[test]
    fn a_watcher_puts_a_write_after_the_return_in_a_window_wholly_after_it() {
        let buf = Arc::new(DmaBuffer::new(4 * PAGE).expect("mmap"));
        let sweeps = Arc::new(AtomicU64::new(0));
        let mut w = Witness::new(Arc::clone(&sweeps));
        w.add("d0", 0x2000, Arc::clone(&buf));
        w.add("d1", 0x9000, Arc::new(DmaBuffer::new(PAGE).expect("mmap")));
        w.arm("d0");
        w.arm("d1");
        let linger = Duration::from_millis(300);
        let watch = w.watch("d0", linger);
        // Only d0's buffers went to the watcher.
        assert!(!w.is_armed("d0") && w.is_armed("d1"));
        buf.write(0, &[1]).expect("write"); // lands in transition
        let ret = now_ns();
        watch.returned(ret);
        // Land the late write once a sweep has started after the return (a sweep completing
        // after the one in progress at `ret` began after it), as a device would microseconds
        // later.
        let seen = sweeps.load(Ordering::Acquire);
        let limit = std::time::Instant::now() + linger;
        while sweeps.load(Ordering::Acquire) < seen + 2 && std::time::Instant::now() < limit {
            std::thread::yield_now();
        }
        buf.write(2 * PAGE + 5, &[2]).expect("write");
        let r = w.finish(watch);
        assert!(w.is_armed("d0"), "the buffers come back armed");
        assert!(r.sweeps >= 2 && r.interval_max >= r.interval_median);
        assert!(
            now_ns() >= ret + linger.as_nanos() as u64,
            "the watcher lingered"
        );
        // Had this thread been descheduled past the linger, the write lands after the watcher
        // ended and the next check finds it: its window still starts after the return.
        let mut found = r.found;
        found.extend(w.check(Some("d0")));
        let wins: Vec<(u64, u64, u64)> = found.iter().map(|(_, e)| window(e)).collect();
        assert_eq!(wins.len(), 2, "{wins:?}");
        assert_eq!(wins[0].0, 0x2000);
        assert!(
            wins[0].1 < ret,
            "the first write may lie before the return: {wins:?}"
        );
        assert_eq!(wins[1].0, 0x2000 + 2 * PAGE as u64);
        assert!(
            wins[1].1 >= ret,
            "the late write's window starts after the return: {wins:?} {ret}"
        );
        assert_eq!(w.detections, 2);
    }

    #[test]
    fn liveness_is_a_write_since_mapping() {
        let buf = Arc::new(DmaBuffer::new(2 * PAGE).expect("mmap"));
        let mut w = Witness::default();
        w.add("d0", 0x1000, Arc::clone(&buf));
        w.add("d1", 0x8000, Arc::new(DmaBuffer::new(PAGE).expect("mmap")));
        assert!(!w.landed("d0") && !w.landed("d1"));
        // Arming and checking do not make a witness live; a write does, and stays counted
        // after the baseline absorbed it.
        w.arm("d0");
        assert!(w.check(None).is_empty());
        assert!(!w.landed("d0"));
        buf.write(PAGE + 1, &[5]).expect("write");
        assert_eq!(w.check(None).len(), 1);
        assert!(w.landed("d0"));
        assert!(!w.landed("d1"), "liveness is per device");
        assert!(!w.landed("unknown"));
        assert_eq!(w.ranges("d0"), vec![(0x1000, 2 * PAGE as u64)]);
    }

    #[test]
    fn keep_off_cpu_leaves_the_thread_elsewhere_or_alone() {
        let t = std::thread::spawn(|| {
            let before = current_cpu().expect("sched_getcpu");
            keep_off_cpu(before);
            // SAFETY: as in keep_off_cpu.
            let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            // SAFETY: pid 0 is this thread; `set` is a writable cpu_set_t.
            let r =
                unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &raw mut set) };
            assert_eq!(r, 0);
            // SAFETY: `before` is a CPU number the kernel reported, below CPU_SETSIZE.
            let (still_allowed, count) =
                unsafe { (libc::CPU_ISSET(before, &set), libc::CPU_COUNT(&set)) };
            // Either another CPU was available and `before` is now excluded, or it was the
            // only one and stays.
            assert!(
                !still_allowed || count == 1,
                "cpu {before} allowed of {count}"
            );
        });
        t.join().expect("thread");
    }

    #[test]
    fn runs_merge_consecutive_pages() {
        assert_eq!(runs(&[0, 1, 3, 5, 6, 7]), vec![(0, 2), (3, 1), (5, 3)]);
        assert!(runs(&[]).is_empty());
    }
}
