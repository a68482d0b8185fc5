//! What a recorder's trace holds of an interrupt storm (issue 16 point 1): read back from the
//! traces a lab run left, in either format, with each event's size in its file. The storm
//! scenarios (`rec_storm` in lab/guest/init.sh) are judged and measured from these: the
//! interrupts per second while the device ran, what each trace grew by meanwhile (bytes per
//! second), its losses and its bins.

use std::fs;
use std::io::Cursor;
use std::path::Path;

use migscope_core::trace::{EventKind, JsonlReader, NativeReader};
use serde::Serialize;

/// One event as the storm measurement needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Irq,
    /// An `irq_bin` of `n` interrupts.
    Bin(u64),
    /// A SET request began.
    Set,
    /// A GET returned.
    Get,
    /// `n` events were lost.
    Lost(u64),
    Other,
}

/// A trace read back: per event its time, kind and bytes in the file.
#[derive(Debug, Default)]
pub struct TraceStats {
    events: Vec<(u64, Kind, u64)>,
    /// The file's size.
    pub bytes: u64,
}

impl TraceStats {
    /// Reads a JSONL or native trace (told apart by its first byte, as `open_any` does).
    pub fn read(path: &Path) -> Result<Self, String> {
        let bytes = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let name = path.display().to_string();
        let mut out = TraceStats {
            bytes: bytes.len() as u64,
            ..Default::default()
        };
        let kind = |k: &EventKind| match k {
            EventKind::Irq { .. } => Kind::Irq,
            EventKind::IrqBin { n, .. } => Kind::Bin(*n),
            EventKind::Set { .. } => Kind::Set,
            EventKind::Get { .. } => Kind::Get,
            EventKind::Lost { n, .. } => Kind::Lost(*n),
            _ => Kind::Other,
        };
        if bytes.first() == Some(&b'{') {
            // Line n (1-based, the header is line 1) is the event numbered n.
            let lens: Vec<u64> = bytes
                .split(|b| *b == b'\n')
                .map(|l| l.len() as u64 + 1)
                .collect();
            let mut r =
                JsonlReader::new(&name, Cursor::new(&bytes[..])).map_err(|e| e.to_string())?;
            while let Some(ev) = r.next_event() {
                let (line, ev) = ev.map_err(|e| e.to_string())?;
                let size = lens.get(line as usize - 1).copied().unwrap_or(0);
                out.events.push((ev.t, kind(&ev.kind), size));
            }
        } else {
            let mut r =
                NativeReader::new(&name, Cursor::new(&bytes[..])).map_err(|e| e.to_string())?;
            let mut at = r.offset();
            while let Some(ev) = r.next_event() {
                let (_, ev) = ev.map_err(|e| e.to_string())?;
                out.events.push((ev.t, kind(&ev.kind), r.offset() - at));
                at = r.offset();
            }
        }
        Ok(out)
    }

    /// `irq` events.
    pub fn irq(&self) -> u64 {
        self.count(|k| matches!(k, Kind::Irq))
    }

    /// `irq_bin` events.
    pub fn bins(&self) -> u64 {
        self.count(|k| matches!(k, Kind::Bin(_)))
    }

    /// Interrupts: each `irq` and each `irq_bin`'s `n`.
    pub fn interrupts(&self) -> u64 {
        self.interrupts_in(0, u64::MAX)
    }

    /// Events lost, by the `lost` events' `n`.
    pub fn lost(&self) -> u64 {
        self.events
            .iter()
            .map(|e| if let Kind::Lost(n) = e.1 { n } else { 0 })
            .sum()
    }

    /// The most interrupts one `irq_bin` holds.
    pub fn largest_bin(&self) -> u64 {
        self.events
            .iter()
            .map(|e| if let Kind::Bin(n) = e.1 { n } else { 0 })
            .max()
            .unwrap_or(0)
    }

    fn count(&self, f: impl Fn(Kind) -> bool) -> u64 {
        self.events.iter().filter(|e| f(e.1)).count() as u64
    }

    fn in_window(&self, t0: u64, t1: u64) -> impl Iterator<Item = &(u64, Kind, u64)> {
        self.events.iter().filter(move |e| e.0 >= t0 && e.0 < t1)
    }

    fn interrupts_in(&self, t0: u64, t1: u64) -> u64 {
        self.in_window(t0, t1)
            .map(|e| match e.1 {
                Kind::Irq => 1,
                Kind::Bin(n) => n,
                _ => 0,
            })
            .sum()
    }

    /// While the storm ran with the device RUNNING and the recorder knew it: from the first
    /// interrupt, or the GET before the first SET when it came later (a device is binned only
    /// once a GET or SET showed it DMA-allowed), to the first SET.
    pub fn running_window(&self) -> Option<(u64, u64)> {
        let t1 = self.events.iter().find(|e| e.1 == Kind::Set)?.0;
        let before =
            |k: fn(Kind) -> bool| self.events.iter().find(|e| e.0 < t1 && k(e.1)).map(|e| e.0);
        let t0 = before(|k| matches!(k, Kind::Irq | Kind::Bin(_)))?;
        let t0 = before(|k| k == Kind::Get).map_or(t0, |g| g.max(t0));
        (t1 > t0).then_some((t0, t1))
    }
}

/// One recorder's trace of a storm run, measured over its own RUNNING window.
#[derive(Clone, Debug, Serialize)]
pub struct TraceMeasure {
    pub file: String,
    pub format: &'static str,
    /// `quiesce` (bins while the device may DMA) or `all`.
    pub detail: &'static str,
    /// Which self-test run it recorded: 1 beside the full-detail recorders (the judged run), 2
    /// with binned recorders alone.
    pub run: u8,
    /// Its RUNNING window ([`TraceStats::running_window`]), in ms.
    pub window_ms: f64,
    /// Interrupts per second in the window (each `irq`, each `irq_bin`'s `n`).
    pub msi_per_s: u64,
    /// Bytes its events in the window take in the file, per second of the window.
    pub bytes_per_s: u64,
    pub events_in_window: u64,
    pub irq_bins: u64,
    pub irq: u64,
    pub interrupts: u64,
    pub lost: u64,
    pub file_bytes: u64,
}

/// The traces of a storm run: file, format, detail, self-test run.
pub const TRACES: &[(&str, &str, &str, u8)] = &[
    ("trace.jsonl", "jsonl", "quiesce", 1),
    ("trace-all.mst", "native", "all", 1),
    ("storm-all.jsonl", "jsonl", "all", 1),
    ("storm-bins.jsonl", "jsonl", "quiesce", 2),
    ("storm-bins.mst", "native", "quiesce", 2),
];

/// Measures every storm trace in `dir`, each over its own RUNNING window.
pub fn measure(dir: &Path) -> Result<Vec<TraceMeasure>, String> {
    let mut out = Vec::new();
    for (file, format, detail, run) in TRACES {
        let p = dir.join(file);
        if !p.exists() {
            continue;
        }
        let s = TraceStats::read(&p)?;
        let (t0, t1) = s.running_window().ok_or_else(|| {
            format!("{file}: no interrupt before the first SET: the storm never ran while RUNNING")
        })?;
        let secs = (t1 - t0) as f64 / 1e9;
        let (n, b) = s
            .in_window(t0, t1)
            .fold((0, 0), |(n, b), e| (n + 1, b + e.2));
        out.push(TraceMeasure {
            file: (*file).to_owned(),
            format,
            detail,
            run: *run,
            window_ms: (t1 - t0) as f64 / 1e6,
            msi_per_s: (s.interrupts_in(t0, t1) as f64 / secs) as u64,
            bytes_per_s: (b as f64 / secs) as u64,
            events_in_window: n,
            irq_bins: s.bins(),
            irq: s.irq(),
            interrupts: s.interrupts(),
            lost: s.lost(),
            file_bytes: s.bytes,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use migscope_core::model::MigState;
    use migscope_core::trace::{Event, Header, IrqKind, JsonlWriter, NativeWriter};

    const DEV: &str = "0000:00:02.0";

    /// A storm as a recorder writes it: interrupts (one by one, or binned) from t = 1 s while
    /// RUNNING, the quiescing SET at 2 s, one interrupt after it, a loss, the end.
    fn storm(binned: bool) -> Vec<Event> {
        let ev = |t: u64, kind| Event { t, pid: None, kind };
        let mut out = Vec::new();
        for i in 0..10u64 {
            let t = 1_000_000_000 + i * 100_000_000;
            out.push(ev(
                t,
                if binned {
                    EventKind::IrqBin {
                        dev: DEV.into(),
                        kind: IrqKind::Msi,
                        vector: 0,
                        n: 50,
                        window: (t.saturating_sub(100_000_000), t),
                    }
                } else {
                    EventKind::Irq {
                        dev: DEV.into(),
                        kind: IrqKind::Msi,
                        vector: 0,
                    }
                },
            ));
        }
        let set = EventKind::Set {
            dev: DEV.into(),
            to: MigState::RunningP2p,
        };
        out.push(ev(2_000_000_000, set));
        let irq = EventKind::Irq {
            dev: DEV.into(),
            kind: IrqKind::Msi,
            vector: 0,
        };
        out.push(ev(2_100_000_000, irq));
        let lost = EventKind::Lost {
            n: 7,
            source: "ringbuf".into(),
            dev: None,
        };
        out.push(ev(2_200_000_000, lost));
        out.push(ev(2_300_000_000, EventKind::End));
        out
    }

    fn written(native: bool, events: &[Event]) -> Vec<u8> {
        let h = Header::default();
        if native {
            let mut w = NativeWriter::new(Vec::new(), &h).unwrap();
            events.iter().for_each(|e| w.write(e).unwrap());
            w.flush().unwrap();
            w.into_inner()
        } else {
            let mut w = JsonlWriter::new(Vec::new(), &h).unwrap();
            events.iter().for_each(|e| w.write(e).unwrap());
            w.flush().unwrap();
            w.into_inner()
        }
    }

    fn stats(native: bool, binned: bool) -> (TraceStats, u64) {
        let bytes = written(native, &storm(binned));
        let dir = std::env::temp_dir().join(format!(
            "migscope-storm-{}-{native}-{binned}",
            std::process::id()
        ));
        fs::write(&dir, &bytes).unwrap();
        let s = TraceStats::read(&dir).unwrap();
        fs::remove_file(&dir).unwrap();
        (s, bytes.len() as u64)
    }

    #[test]
    fn both_formats_read_back_the_same_counts_and_running_window() {
        for native in [false, true] {
            let (full, size) = stats(native, false);
            assert_eq!(full.bytes, size);
            assert_eq!((full.irq(), full.bins(), full.interrupts()), (11, 0, 11));
            assert_eq!(full.lost(), 7, "native {native}");
            assert_eq!(full.running_window(), Some((1_000_000_000, 2_000_000_000)));
            assert_eq!(full.interrupts_in(1_000_000_000, 2_000_000_000), 10);
            let (bins, _) = stats(native, true);
            assert_eq!((bins.irq(), bins.bins(), bins.interrupts()), (1, 10, 501));
            assert_eq!(bins.largest_bin(), 50);
        }
    }

    #[test]
    fn the_running_window_starts_at_the_get_that_showed_the_device_running() {
        let mut events = storm(false);
        let get = EventKind::Get {
            dev: DEV.into(),
            state: MigState::Running,
        };
        events.insert(
            3,
            Event {
                t: 1_250_000_000,
                pid: None,
                kind: get,
            },
        );
        let path = std::env::temp_dir().join(format!("migscope-storm-get-{}", std::process::id()));
        fs::write(&path, written(true, &events)).unwrap();
        let s = TraceStats::read(&path).unwrap();
        fs::remove_file(&path).unwrap();
        assert_eq!(s.running_window(), Some((1_250_000_000, 2_000_000_000)));
    }

    #[test]
    fn event_sizes_add_up_to_the_file_less_its_header() {
        for native in [false, true] {
            for binned in [false, true] {
                let (s, size) = stats(native, binned);
                let events: u64 = s.events.iter().map(|e| e.2).sum();
                let header = written(native, &[]).len() as u64;
                assert_eq!(events + header, size, "native {native} binned {binned}");
            }
        }
    }
}
