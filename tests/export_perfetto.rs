//! `export --format perfetto`: the JSON is parsed and its tracks, slices and instants are
//! counted against the trace and the verdict.

#![expect(
    clippy::expect_used,
    reason = "test helpers panic with context (STYLE.md: tests panic, never return Result)"
)]

mod export_common;

use std::{collections::BTreeMap, path::Path};

use export_common::{RICH, check_json, fixtures, run, write};
use migscope::trace::{EventKind, open_any};
use serde_json::Value;

struct Expect {
    devices: Vec<(String, String)>, // dev, ctx
    sets_done: usize,
    dma: usize,
    irq: usize,
    map_unmap: usize,
    data: usize,
    marks: usize,
    mig_info: usize,
}

fn expect(trace: &Path) -> Expect {
    let mut e = Expect {
        devices: Vec::new(),
        sets_done: 0,
        dma: 0,
        irq: 0,
        map_unmap: 0,
        data: 0,
        marks: 0,
        mig_info: 0,
    };
    let mut open_set: BTreeMap<String, bool> = BTreeMap::new();
    let mut r = open_any(trace).expect("open");
    while let Some(x) = r.next_event() {
        match x.expect("event").1.kind {
            EventKind::Device { dev, ctx, .. } => e.devices.push((dev, ctx)),
            EventKind::Set { dev, .. } => {
                open_set.insert(dev, true);
            }
            EventKind::SetDone { dev, .. } if open_set.remove(&dev).is_some() => {
                e.sets_done += 1;
            }
            // A DMA log report is an instant on the dma track too (what the log said, clean or not).
            EventKind::Dma { .. } | EventKind::DirtyReport { .. } => e.dma += 1,
            // One instant per interrupt, and one per bin of counted interrupts (at its end).
            EventKind::Irq { .. } | EventKind::IrqBin { .. } => e.irq += 1,
            EventKind::Map { .. } | EventKind::Unmap { .. } => e.map_unmap += 1,
            // A corrupted load is data through the data_fd too (drive's resume-fuzz).
            EventKind::Data { .. } | EventKind::CorruptLoad { .. } => e.data += 1,
            EventKind::Mark { .. } => e.marks += 1,
            EventKind::PrecopyInfo { .. } | EventKind::DataSize { .. } => e.mig_info += 1,
            _ => {}
        }
    }
    // SETs still open at the end are closed as slices too.
    e.sets_done += open_set.len();
    e
}

fn export(trace: &Path, out: &Path) -> Value {
    let o = run(&[
        "export",
        trace.to_str().expect("p"),
        "-f",
        "perfetto",
        "-o",
        out.to_str().expect("p"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(out).expect("written");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", out.display()))
}

fn check_one(trace: &Path, out: &Path) {
    let v = export(trace, out);
    let evs = v["traceEvents"].as_array().expect("traceEvents array");
    let exp = expect(trace);
    let (verdict, _) = check_json(trace, &[]);
    let count = |ph: &str, cat: &str| {
        evs.iter()
            .filter(|e| e["ph"] == ph && (cat.is_empty() || e["cat"] == cat))
            .count()
    };
    // Every event has the required fields with the right types.
    for e in evs {
        assert!(
            e["ph"].is_string() && e["pid"].is_u64() && e["tid"].is_u64(),
            "{e}"
        );
        if e["ph"] != "M" {
            let ts = e["ts"].as_f64().expect("ts");
            assert!(ts >= 0.0, "{e}");
            assert!(e["name"].is_string(), "{e}");
        }
        if e["ph"] == "X" {
            assert!(e["dur"].as_f64().expect("dur") >= 0.0, "{e}");
        }
    }
    // One named track per device, inside one process per ctx.
    let threads: BTreeMap<(u64, u64), String> = evs
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "thread_name")
        .map(|e| {
            (
                (
                    e["pid"].as_u64().expect("pid"),
                    e["tid"].as_u64().expect("tid"),
                ),
                e["args"]["name"].as_str().expect("name").to_owned(),
            )
        })
        .collect();
    let procs: BTreeMap<u64, String> = evs
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "process_name")
        .map(|e| {
            (
                e["pid"].as_u64().expect("pid"),
                e["args"]["name"].as_str().expect("n").to_owned(),
            )
        })
        .collect();
    for (dev, ctx) in &exp.devices {
        let hits: Vec<_> = threads
            .iter()
            .filter(|(_, n)| n.as_str() == dev || n.starts_with(&format!("{dev} (")))
            .collect();
        assert_eq!(hits.len(), 1, "{}: track for {dev}", trace.display());
        let pid = hits[0].0.0;
        assert_eq!(
            procs[&pid],
            format!("ctx {ctx}"),
            "{dev} in its ctx process"
        );
    }
    let ctxs: std::collections::BTreeSet<&String> = exp.devices.iter().map(|d| &d.1).collect();
    assert_eq!(
        procs.len(),
        ctxs.len() + 1,
        "a process per ctx plus the trace process"
    );
    // Slices: a SET (transition or quiesce) per completed SET, and state slices around them.
    let sets = count("X", "transition") + count("X", "quiesce");
    assert_eq!(
        sets,
        exp.sets_done,
        "{}: transition slices",
        trace.display()
    );
    assert!(
        count("X", "state") >= exp.devices.len(),
        "a state slice per device at least"
    );
    // Quiesce slices carry their duration.
    for q in evs.iter().filter(|e| e["cat"] == "quiesce") {
        assert!(
            q["name"].as_str().expect("n").starts_with("quiesce "),
            "{q}"
        );
        assert!(q["args"]["dur_ms"].is_f64(), "{q}");
    }
    // Instants per evidence kind, fields in args.
    assert_eq!(
        count("i", "dma"),
        exp.dma,
        "{}: dma instants",
        trace.display()
    );
    assert_eq!(
        count("i", "irq"),
        exp.irq,
        "{}: irq instants",
        trace.display()
    );
    assert_eq!(count("i", "iommu"), exp.map_unmap);
    assert_eq!(count("i", "data"), exp.data);
    assert_eq!(count("i", "mark"), exp.marks);
    assert_eq!(count("i", "mig_info"), exp.mig_info);
    for d in evs.iter().filter(|e| e["cat"] == "dma") {
        assert!(
            d["args"]["iova"].is_u64()
                && d["args"]["len"].is_u64()
                && (d["args"]["src"].is_string() || d["args"]["dirty_pages"].is_u64()),
            "{d}"
        );
    }
    // A marked instant per violation, with rule, detail and line.
    let viols: Vec<&Value> = evs.iter().filter(|e| e["cat"] == "violation").collect();
    let want = verdict["violations"].as_array().expect("violations");
    assert_eq!(viols.len(), want.len(), "{}", trace.display());
    for (got, w) in viols.iter().zip(want) {
        assert_eq!(
            got["name"],
            format!("VIOLATION {}", w["rule"].as_str().expect("rule"))
        );
        assert_eq!(got["args"]["line"], w["line"]);
        assert_eq!(got["args"]["detail"], w["detail"]);
    }
    assert_eq!(v["otherData"]["verdict"], verdict["verdict"]);
}

#[test]
fn perfetto_tracks_and_slices_match_the_trace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut inputs = fixtures();
    inputs.push(write(dir.path(), "rich.jsonl", RICH));
    for (i, f) in inputs.iter().enumerate() {
        if check_json(f, &[]).1 == 3 {
            continue;
        }
        check_one(f, &dir.path().join(format!("{i}.json")));
    }
}

#[test]
fn perfetto_rich_trace_details() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = write(dir.path(), "rich.jsonl", RICH);
    let v = export(&t, &dir.path().join("rich.json"));
    let evs = v["traceEvents"].as_array().expect("array");
    let names: Vec<&str> = evs.iter().filter_map(|e| e["name"].as_str()).collect();
    assert!(
        names.contains(&"quiesce RUNNING -> RUNNING_P2P"),
        "{names:?}"
    );
    assert!(
        names.contains(&"RUNNING -> RUNNING_P2P (failed EIO)"),
        "{names:?}"
    );
    // The verifier's timeline: 0000:00:04.0's SET failed before any arc ran (no step while
    // `transitions` is ok), so the kernel refused it up front and the device stayed RUNNING
    // (DESIGN.md), until the GET read RUNNING_P2P back. Not UNKNOWN.
    let slices: Vec<&str> = evs
        .iter()
        .filter(|e| e["ph"] == "X" && e["args"]["dev"] == "0000:00:04.0")
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(
        slices,
        [
            "RUNNING",
            "RUNNING -> RUNNING_P2P (failed EIO)",
            "RUNNING",
            "RUNNING_P2P"
        ],
        "{names:?}"
    );
    for n in [
        "precopy_info initial 80 B dirty 16 B flags 0x0",
        "precopy_info ret=-22",
        "data_size 1048576 B",
    ] {
        assert!(names.contains(&n), "{n}: {names:?}");
    }
    // Timestamps are microseconds from the first event (t=100 ns): the quiesce SET began at
    // t=10000 ns -> 9.9 us and took 3 us.
    let q = evs
        .iter()
        .find(|e| e["name"] == "quiesce RUNNING -> RUNNING_P2P")
        .expect("q");
    assert!((q["ts"].as_f64().expect("ts") - 9.9).abs() < 1e-9, "{q}");
    assert!((q["dur"].as_f64().expect("dur") - 3.0).abs() < 1e-9, "{q}");
    // Same output from the native form of the trace.
    let nat = dir.path().join("rich.mst");
    let o = run(&[
        "export",
        t.to_str().expect("p"),
        "-f",
        "native",
        "-o",
        nat.to_str().expect("p"),
    ]);
    assert!(o.status.success());
    let v2 = export(&nat, &dir.path().join("rich2.json"));
    assert_eq!(v["traceEvents"], v2["traceEvents"]);
}

#[test]
fn perfetto_cut_recording_shows_the_open_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    // RICH up to the middle of the first SET (no set_done, no end).
    let cut: String = RICH
        .lines()
        .take_while(|l| !l.contains("\"t\":10100,"))
        .map(|l| format!("{l}\n"))
        .collect();
    let t = write(dir.path(), "cut.jsonl", &cut);
    let v = export(&t, &dir.path().join("cut.json"));
    let evs = v["traceEvents"].as_array().expect("array");
    let open = evs
        .iter()
        .find(|e| e["name"] == "RUNNING -> RUNNING_P2P (never returned)")
        .unwrap_or_else(|| panic!("no open SET slice: {v}"));
    assert_eq!(open["cat"], "transition");
    assert!(open["args"]["ret"].is_null());
    assert_eq!(v["otherData"]["verdict"], "inconclusive");
    assert!(
        evs.iter()
            .any(|e| e["cat"] == "warning" && e["name"] == "WARNING unfinished-set"),
        "the end-of-trace warning is shown"
    );
}
