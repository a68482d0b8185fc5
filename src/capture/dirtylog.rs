//! The device DMA log as a VMM reads it (issue 14, `dirty_miss`, the VMM half): the REPORT
//! results the VMM received, decoded into `dirty_report` and `dma` (`src: dirty_log`) events
//! exactly like drive's own (`vfio::controller`'s `dirty_check`).
//!
//! The probe never issues a REPORT (that would read and clear the VMM's bits): at the return
//! of a successful `VFIO_DEVICE_FEATURE` `GET|DMA_LOGGING_REPORT` it copies the user bitmap
//! the kernel filled (`vfio_ioctl_device_feature_logging_report()` in
//! `drivers/vfio/vfio_main.c` hands it to the driver's `log_read_and_clear` through
//! `iova_bitmap_for_each()`, which writes each set bit to the user's pages) into
//! [`DirtyChunk`] records, at most [`DIRTY_MAX_CHUNKS`] of [`DIRTY_CHUNK`] bytes, just before
//! the ioctl's `IoctlRet`.
//!
//! A report's window is `(t0, t1]`: `t1` its return, `t0` the issue of the previous successful
//! REPORT that read and cleared those pages (or the device's DMA_LOGGING_START). A dirty bit
//! says the device wrote the page in that window; a clean one that it did not. Only what is
//! known is claimed:
//! - pages whose last clear the probe did not see (no START seen: recorded after the VMM
//!   started logging) give no evidence;
//! - pages of one report last cleared at different times (an earlier REPORT over part of the
//!   range) give dirty runs over the widest window, and no `dirty_report` (a clean claim over
//!   the narrowest window would be the only honest one, and the verifier reads one window);
//! - a bitmap larger than the probe reads, or a chunk lost, ends the decoded part at the first
//!   byte missing: the `dirty_report` covers the decoded prefix of the range only and a mark
//!   names the rest as not decoded (never clean).

use std::collections::{BTreeMap, HashMap};

use probe_common::abi::{DIRTY_CHUNK, DIRTY_MAX_CHUNKS, DirtyChunk};

use crate::trace::{DmaSource, EventKind};

/// REPORTs whose chunks may wait for their return at once (one per VMM thread in a REPORT).
const MAX_PENDING: usize = 64;

/// The decoded evidence of one REPORT: events in order (dirty runs, then the `dirty_report`),
/// and notes for what could not be claimed.
#[derive(Debug, Default, PartialEq)]
pub struct Decoded {
    pub events: Vec<EventKind>,
    pub marks: Vec<String>,
}

/// A chunk of a REPORT's bitmap: its byte offset and bytes.
type Piece = (u64, Vec<u8>);

/// A device's log as the recorder saw it.
#[derive(Debug, Default)]
struct DevLog {
    /// The issue time of its DMA_LOGGING_START.
    started: u64,
    /// Disjoint `[start, end)` IOVA spans -> the issue time of the REPORT that last cleared
    /// them (spans absent were last cleared by the START).
    cleared: BTreeMap<u64, (u64, u64)>,
}

impl DevLog {
    /// The last clear of every page of `[a, b)`: the earliest and the latest.
    fn clears(&self, a: u64, b: u64) -> (u64, u64) {
        let (mut lo, mut hi, mut at) = (u64::MAX, 0, a);
        for (&s, &(e, t)) in self.cleared.range(..b) {
            if e <= a {
                continue;
            }
            if s > at {
                // A gap before this span: cleared by the START.
                lo = lo.min(self.started);
                hi = hi.max(self.started);
            }
            lo = lo.min(t);
            hi = hi.max(t);
            at = at.max(e);
        }
        if at < b {
            lo = lo.min(self.started);
            hi = hi.max(self.started);
        }
        (lo, hi)
    }

    /// `[a, b)` was read and cleared at `t`.
    fn clear(&mut self, a: u64, b: u64, t: u64) {
        let hit: Vec<(u64, (u64, u64))> = self
            .cleared
            .range(..b)
            .filter(|(_, (e, _))| *e > a)
            .map(|(&s, &v)| (s, v))
            .collect();
        for (s, (e, old)) in hit {
            self.cleared.remove(&s);
            if s < a {
                self.cleared.insert(s, (a, old));
            }
            if e > b {
                self.cleared.insert(b, (e, old));
            }
        }
        self.cleared.insert(a, (b, t));
    }
}

/// What the recorder knows of every device's DMA log, and the chunks of REPORTs in flight.
#[derive(Debug, Default)]
pub struct DirtyLogs {
    devs: HashMap<String, DevLog>,
    /// (tid, enter_ns) of a REPORT -> its chunks `(offset, bytes)`, in arrival order.
    pending: HashMap<(u32, u64), Vec<Piece>>,
}

impl DirtyLogs {
    /// A piece of a REPORT's bitmap, kept until the REPORT's return.
    pub fn chunk(&mut self, c: &DirtyChunk) {
        let key = (c.hdr.tid, c.enter_ns);
        if !self.pending.contains_key(&key) && self.pending.len() >= MAX_PENDING {
            // A thread killed inside its REPORT never returns: drop the oldest REPORT's.
            if let Some(old) = self.pending.keys().min_by_key(|k| k.1).copied() {
                self.pending.remove(&old);
            }
        }
        let n = (c.len as usize).min(DIRTY_CHUNK);
        self.pending
            .entry(key)
            .or_default()
            .push((c.offset, c.data[..n].to_vec()));
    }

    /// A DMA_LOGGING_START of `dev` issued at `issued` returned 0: its log is empty from then.
    pub fn start(&mut self, dev: &str, issued: u64) {
        self.devs.insert(
            dev.to_owned(),
            DevLog {
                started: issued,
                cleared: BTreeMap::new(),
            },
        );
    }

    /// Logging of `dev` stopped (DMA_LOGGING_STOP returned 0, or its fd closed).
    pub fn stop(&mut self, dev: &str) {
        self.devs.remove(dev);
    }

    /// A REPORT of `dev` over `[iova, iova + length)` at `page_size`, issued (by thread
    /// `tid`) at `issued`, returned `ret` at `returned`: its decoded evidence.
    #[allow(clippy::too_many_arguments)]
    pub fn report(
        &mut self,
        dev: &str,
        tid: u32,
        issued: u64,
        returned: u64,
        iova: u64,
        length: u64,
        page_size: u64,
        ret: i32,
    ) -> Decoded {
        let chunks = self.pending.remove(&(tid, issued)).unwrap_or_default();
        let mut out = Decoded::default();
        // vfio_ioctl_device_feature_logging_report: page_size a power of two >= 4 KiB.
        if ret != 0 || length == 0 || page_size < 4096 || !page_size.is_power_of_two() {
            return out;
        }
        let end = iova.saturating_add(length);
        let Some(log) = self.devs.get_mut(dev) else {
            out.marks.push(format!(
                "dma_logging report {dev} {iova:#x}+{length:#x}: its DMA_LOGGING_START was not seen (recording began after it): the window is unknown, not evidence"
            ));
            return out;
        };
        let (lo, hi) = log.clears(iova, end);
        log.clear(iova, end, issued);
        let pages = length.div_ceil(page_size);
        let bitmap = assemble(&chunks, bitmap_bytes(pages));
        let (runs, decoded) = dirty_runs(&bitmap, pages, iova, page_size);
        let t1 = returned.max(hi);
        for &(at, len) in &runs {
            out.events.push(EventKind::Dma {
                dev: dev.to_owned(),
                src: DmaSource::DirtyLog,
                iova: at,
                len,
                write: true,
                window: Some((lo, t1)),
                p2p: None,
            });
        }
        if decoded < pages {
            out.marks.push(format!(
                "dma_logging report {dev}: bitmap of {} bytes, the probe read {}: [{:#x}, {end:#x}) not decoded (not evidence)",
                bitmap_bytes(pages),
                bitmap.len(),
                iova + decoded * page_size,
            ));
        }
        if lo != hi {
            out.marks.push(format!(
                "dma_logging report {dev} {iova:#x}+{length:#x}: its pages were last read at different times (an earlier REPORT over part of the range): dirty runs only, no clean claim"
            ));
            return out;
        }
        if decoded > 0 {
            let dirty_pages = runs.iter().map(|&(_, l)| l / page_size).sum();
            out.events.push(EventKind::DirtyReport {
                dev: dev.to_owned(),
                iova,
                len: (decoded * page_size).min(length),
                page_size,
                window: (lo, t1),
                dirty_pages,
            });
        }
        out
    }
}

/// Bytes of the user bitmap of `pages` pages: u64 words, one bit a page (the kernel's
/// `iova_bitmap` writes whole u64s; QEMU's `vfio_bitmap_alloc` rounds the same way).
pub fn bitmap_bytes(pages: u64) -> u64 {
    pages.div_ceil(64) * 8
}

/// The bitmap's bytes the chunks hold contiguously from offset 0 (at most `want`, and never
/// more than the probe reads of one REPORT).
fn assemble(chunks: &[Piece], want: u64) -> Vec<u8> {
    let limit = want.min(DIRTY_CHUNK as u64 * DIRTY_MAX_CHUNKS as u64) as usize;
    let mut by_off: Vec<&Piece> = chunks.iter().collect();
    by_off.sort_by_key(|c| c.0);
    let mut out = Vec::with_capacity(limit);
    for (off, bytes) in by_off {
        if *off as usize != out.len() || bytes.is_empty() {
            break;
        }
        out.extend_from_slice(bytes);
        if out.len() >= limit {
            break;
        }
    }
    out.truncate(limit);
    out
}

/// The runs of dirty pages (`(iova, len)` in bytes) of the first `pages` bits of `bitmap`
/// (the bytes of native-endian u64 words, as the kernel writes them: bit `p % 64` of word
/// `p / 64` is page `p`), and how many pages the bytes present decode. drive's own REPORTs
/// and the VMM's (the probe's copy) are decoded by this one function.
pub fn dirty_runs(bitmap: &[u8], pages: u64, iova: u64, page_size: u64) -> (Vec<(u64, u64)>, u64) {
    let decoded = pages.min(bitmap.len() as u64 / 8 * 64);
    let dirty = |p: u64| {
        let at = (p / 64 * 8) as usize;
        let mut w = [0u8; 8];
        w.copy_from_slice(&bitmap[at..at + 8]);
        u64::from_ne_bytes(w) & (1 << (p % 64)) != 0
    };
    let mut runs = Vec::new();
    let mut p = 0;
    while p < decoded {
        if !dirty(p) {
            p += 1;
            continue;
        }
        let first = p;
        while p < decoded && dirty(p) {
            p += 1;
        }
        runs.push((iova + first * page_size, (p - first) * page_size));
    }
    (runs, decoded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe_common::abi::{EventHeader, EventKind as K};

    const PS: u64 = 4096;
    const DEV: &str = "0000:00:02.0";

    fn chunk(tid: u32, enter: u64, offset: u64, bytes: &[u8]) -> DirtyChunk {
        let mut data = [0u8; DIRTY_CHUNK];
        data[..bytes.len()].copy_from_slice(bytes);
        DirtyChunk {
            hdr: EventHeader {
                kind: K::DirtyChunk as u32,
                size: size_of::<DirtyChunk>() as u32,
                ts_ns: enter + 1,
                pid: 7,
                tid,
            },
            fd: 5,
            len: bytes.len() as u32,
            offset,
            enter_ns: enter,
            data,
        }
    }

    /// The bytes of `words` native u64s with the pages `dirty` set.
    fn bitmap(words: usize, dirty: &[u64]) -> Vec<u8> {
        let mut w = vec![0u64; words];
        for &p in dirty {
            w[(p / 64) as usize] |= 1 << (p % 64);
        }
        w.iter().flat_map(|w| w.to_ne_bytes()).collect()
    }

    fn report_of(len: u64, window: (u64, u64), dirty_pages: u64) -> EventKind {
        EventKind::DirtyReport {
            dev: DEV.into(),
            iova: 0,
            len,
            page_size: PS,
            window,
            dirty_pages,
        }
    }

    fn report(l: &mut DirtyLogs, enter: u64, ret_t: u64, iova: u64, len: u64) -> Decoded {
        l.report(DEV, 9, enter, ret_t, iova, len, PS, 0)
    }

    #[test]
    fn set_bits_are_runs_of_dirty_pages() {
        // Pages 0, 1, 2 and 65 of a 128-page range; bit 0 of byte 8 is page 64.
        let b = bitmap(2, &[0, 1, 2, 65]);
        let (runs, n) = dirty_runs(&b, 128, 0x10_0000, PS);
        assert_eq!(n, 128);
        assert_eq!(runs, vec![(0x10_0000, 3 * PS), (0x10_0000 + 65 * PS, PS)]);
        // Bits past the range's last page (the word's padding) are not pages.
        let b = bitmap(1, &[3, 10]);
        assert_eq!(dirty_runs(&b, 4, 0, PS).0, vec![(3 * PS, PS)]);
    }

    #[test]
    fn windows_run_from_the_previous_report_of_the_range() {
        let mut l = DirtyLogs::default();
        l.start(DEV, 100);
        // 64 pages: one u64. First report: (START, return]; page 5 dirty.
        l.chunk(&chunk(9, 200, 0, &bitmap(1, &[5])));
        let d = report(&mut l, 200, 210, 0, 64 * PS);
        assert!(d.marks.is_empty(), "{:?}", d.marks);
        assert_eq!(
            d.events,
            vec![
                EventKind::Dma {
                    dev: DEV.into(),
                    src: DmaSource::DirtyLog,
                    iova: 5 * PS,
                    len: PS,
                    write: true,
                    window: Some((100, 210)),
                    p2p: None,
                },
                report_of(64 * PS, (100, 210), 1),
            ]
        );
        // Second report of the same range, clean: (previous issue, this return].
        l.chunk(&chunk(9, 300, 0, &bitmap(1, &[])));
        let d = report(&mut l, 300, 320, 0, 64 * PS);
        assert_eq!(d.events, vec![report_of(64 * PS, (200, 320), 0)]);
    }

    #[test]
    fn a_truncated_bitmap_covers_only_its_decoded_prefix() {
        let mut l = DirtyLogs::default();
        l.start(DEV, 100);
        // 128 pages need 16 bytes; only the first 8 came (the second chunk was lost).
        l.chunk(&chunk(9, 200, 0, &bitmap(1, &[])));
        let d = report(&mut l, 200, 210, 0, 128 * PS);
        assert_eq!(d.events, vec![report_of(64 * PS, (100, 210), 0)]);
        assert_eq!(d.marks.len(), 1);
        assert!(
            d.marks[0]
                .contains("bitmap of 16 bytes, the probe read 8: [0x40000, 0x80000) not decoded"),
            "{}",
            d.marks[0]
        );
        // Nothing read at all: no report, never a clean one.
        let d = report(&mut l, 300, 310, 0, 128 * PS);
        assert!(d.events.is_empty());
        assert!(d.marks[0].contains("the probe read 0"), "{:?}", d.marks);
    }

    #[test]
    fn a_gap_between_chunks_ends_the_decoded_part() {
        let mut l = DirtyLogs::default();
        l.start(DEV, 100);
        let pages = (DIRTY_CHUNK as u64) * 8 * 2 + 64;
        // Chunks 0 and 2 arrive, chunk 1 does not: only chunk 0's pages are decoded, and
        // chunk 2's dirty page is not claimed.
        l.chunk(&chunk(9, 200, 0, &[0u8; DIRTY_CHUNK]));
        l.chunk(&chunk(9, 200, 2 * DIRTY_CHUNK as u64, &[0xff; 8]));
        let d = report(&mut l, 200, 210, 0, pages * PS);
        assert_eq!(d.events.len(), 1);
        let EventKind::DirtyReport {
            len, dirty_pages, ..
        } = &d.events[0]
        else {
            panic!("{:?}", d.events);
        };
        assert_eq!((*len, *dirty_pages), (DIRTY_CHUNK as u64 * 8 * PS, 0));
    }

    #[test]
    fn without_the_start_or_with_mixed_clears_no_clean_claim() {
        let mut l = DirtyLogs::default();
        l.chunk(&chunk(9, 200, 0, &bitmap(1, &[1])));
        let d = report(&mut l, 200, 210, 0, 64 * PS);
        assert!(d.events.is_empty());
        assert!(d.marks[0].contains("was not seen"), "{:?}", d.marks);

        l.start(DEV, 100);
        // The first half read at 200, then the whole range at 300: its pages were last
        // cleared at 100 (second half) and 200 (first half).
        l.chunk(&chunk(9, 200, 0, &bitmap(1, &[])));
        report(&mut l, 200, 210, 0, 32 * PS);
        l.chunk(&chunk(9, 300, 0, &bitmap(1, &[40])));
        let d = report(&mut l, 300, 310, 0, 64 * PS);
        assert_eq!(
            d.events,
            vec![EventKind::Dma {
                dev: DEV.into(),
                src: DmaSource::DirtyLog,
                iova: 40 * PS,
                len: PS,
                write: true,
                window: Some((100, 310)),
                p2p: None,
            }]
        );
        assert!(d.marks[0].contains("different times"), "{:?}", d.marks);
        // Both halves were cleared at 300 now: one window again.
        l.chunk(&chunk(9, 400, 0, &bitmap(1, &[])));
        let d = report(&mut l, 400, 410, 0, 64 * PS);
        assert!(matches!(
            d.events[..],
            [EventKind::DirtyReport {
                window: (300, 410),
                ..
            }]
        ));
    }

    #[test]
    fn a_failed_report_or_another_threads_chunks_claim_nothing() {
        let mut l = DirtyLogs::default();
        l.start(DEV, 100);
        l.chunk(&chunk(9, 200, 0, &bitmap(1, &[1])));
        assert_eq!(
            l.report(DEV, 9, 200, 210, 0, 64 * PS, PS, -22),
            Decoded::default()
        );
        // Chunks of thread 8 are not thread 9's REPORT's.
        l.chunk(&chunk(8, 300, 0, &bitmap(1, &[1])));
        let d = report(&mut l, 300, 310, 0, 64 * PS);
        assert!(d.events.is_empty());
        assert!(d.marks[0].contains("the probe read 0"), "{:?}", d.marks);
    }
}
