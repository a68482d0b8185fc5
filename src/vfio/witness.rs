//! The memory witness: a copy of every device-written DMA buffer taken the instant a quiesce
//! completes, compared page by page until the device may DMA again; any change is a DMA write
//! after quiesce, reported as a `dma` event with the window in which it landed.

use std::sync::Arc;

use super::buffer::{DmaBuffer, PAGE};
use crate::trace::{DmaSource, EventKind};

struct Watched {
    dev: String,
    iova: u64,
    buf: Arc<DmaBuffer>,
    /// The copy and the time it was known clean, while armed.
    baseline: Option<(Vec<u8>, u64)>,
}

/// Witnessed buffers of every device.
#[derive(Default)]
pub struct Witness {
    bufs: Vec<Watched>,
    /// Number of comparisons made (reported in a `mark`).
    pub checks: u64,
    /// Number of `dma` events produced.
    pub detections: u64,
}

impl Witness {
    pub fn add(&mut self, dev: &str, iova: u64, buf: Arc<DmaBuffer>) {
        self.bufs.push(Watched {
            dev: dev.to_owned(),
            iova,
            buf,
            baseline: None,
        });
    }

    pub fn has_buffers(&self) -> bool {
        !self.bufs.is_empty()
    }

    pub fn is_armed(&self, dev: &str) -> bool {
        self.bufs
            .iter()
            .any(|w| w.dev == dev && w.baseline.is_some())
    }

    /// Fingerprints `dev`'s buffers as clean at `t` (a quiesce just completed).
    pub fn arm(&mut self, dev: &str, t: u64) {
        for w in self.bufs.iter_mut().filter(|w| w.dev == dev) {
            w.baseline = Some((w.buf.snapshot(), t));
        }
    }

    /// Stops watching `dev` (it may DMA again).
    pub fn disarm(&mut self, dev: &str) {
        for w in self.bufs.iter_mut().filter(|w| w.dev == dev) {
            w.baseline = None;
        }
    }

    /// Compares `dev`'s armed buffers (all devices with `None`) at `now`. Each run of changed
    /// pages becomes one `dma` event with window `[clean t, now]`; the baseline then moves to
    /// now, so every later landed write is reported again.
    pub fn check(&mut self, dev: Option<&str>, now: u64) -> Vec<EventKind> {
        let mut out = Vec::new();
        for w in self.bufs.iter_mut() {
            if dev.is_some_and(|d| d != w.dev) {
                continue;
            }
            let Some((base, clean_t)) = w.baseline.as_mut() else {
                continue;
            };
            self.checks += 1;
            let cur = w.buf.snapshot();
            for (first, pages) in changed_runs(base, &cur) {
                out.push(EventKind::Dma {
                    dev: w.dev.clone(),
                    src: DmaSource::Witness,
                    iova: w.iova + (first * PAGE) as u64,
                    len: (pages * PAGE) as u64,
                    write: true,
                    window: Some((*clean_t, now)),
                    p2p: None,
                });
            }
            *base = cur;
            *clean_t = now;
        }
        self.detections += out.len() as u64;
        out
    }
}

/// Runs of changed pages as (first page, page count).
fn changed_runs(a: &[u8], b: &[u8]) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (i, (pa, pb)) in a.chunks(PAGE).zip(b.chunks(PAGE)).enumerate() {
        if pa != pb {
            match runs.last_mut() {
                Some((f, n)) if *f + *n == i => *n += 1,
                _ => runs.push((i, 1)),
            }
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_writes_with_windows_and_rebaselines() {
        let buf = Arc::new(DmaBuffer::new(4 * PAGE).expect("mmap"));
        let mut w = Witness::default();
        w.add("d0", 0x10_0000, Arc::clone(&buf));
        // Not armed: nothing is compared.
        buf.write(0, &[1]).expect("write");
        assert!(w.check(None, 5).is_empty());
        w.arm("d0", 10);
        assert!(w.check(Some("d0"), 20).is_empty());
        buf.write(PAGE + 3, &[7]).expect("write");
        buf.write(2 * PAGE, &[7]).expect("write");
        let ev = w.check(None, 30);
        assert_eq!(
            ev,
            vec![EventKind::Dma {
                dev: "d0".into(),
                src: DmaSource::Witness,
                iova: 0x10_0000 + PAGE as u64,
                len: 2 * PAGE as u64,
                write: true,
                window: Some((20, 30)),
                p2p: None,
            }]
        );
        // The same bytes again are not a new write; a new value is.
        assert!(w.check(None, 40).is_empty());
        buf.write(3 * PAGE, &[9]).expect("write");
        let ev = w.check(None, 50);
        assert!(
            matches!(&ev[..], [EventKind::Dma { window: Some((40, 50)), iova, .. }]
            if *iova == 0x10_0000 + 3 * PAGE as u64)
        );
        w.disarm("d0");
        buf.write(0, &[3]).expect("write");
        assert!(w.check(None, 60).is_empty());
        assert_eq!(w.detections, 2);
    }
}
