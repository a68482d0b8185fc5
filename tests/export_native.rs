//! Native format: lossless round trips with JSONL on every fixture, content detection by
//! `check`/`export`, and truncation at every byte offset.

#![expect(
    clippy::expect_used,
    reason = "test helpers panic with context (STYLE.md: tests panic, never return Result)"
)]

mod export_common;

use std::path::Path;

use export_common::{RICH, check_json, fixtures, run, write};
use migscope::trace::{JsonlReader, JsonlWriter, NativeReader, NativeWriter, open_any};

/// The canonical JSONL form of a JSONL text (what JsonlWriter writes for its events).
fn canonical(name: &str, text: &[u8]) -> Vec<u8> {
    let mut r = JsonlReader::new(name, text).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut w = JsonlWriter::new(Vec::new(), r.header()).expect("header");
    while let Some(x) = r.next_event() {
        w.write(&x.unwrap_or_else(|e| panic!("{name}: {e}")).1)
            .expect("write");
    }
    w.into_inner()
}

fn jsonl_to_native(name: &str, text: &[u8]) -> Vec<u8> {
    let mut r = JsonlReader::new(name, text).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut w = NativeWriter::new(Vec::new(), r.header()).expect("header");
    while let Some(x) = r.next_event() {
        w.write(&x.expect("event").1).expect("write");
    }
    w.into_inner()
}

fn native_to_jsonl(name: &str, bin: &[u8]) -> Vec<u8> {
    let mut r = NativeReader::new(name, bin).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut w = JsonlWriter::new(Vec::new(), r.header()).expect("header");
    while let Some(x) = r.next_event() {
        w.write(&x.unwrap_or_else(|e| panic!("{name}: {e}")).1)
            .expect("write");
    }
    assert_eq!(
        r.truncated_at(),
        None,
        "{name}: complete file read as truncated"
    );
    w.into_inner()
}

fn round_trip(name: &str, text: &[u8]) {
    let canon = canonical(name, text);
    let native = jsonl_to_native(name, text);
    let back = native_to_jsonl(name, &native);
    assert!(
        back == canon,
        "{name}: JSONL -> native -> JSONL differs:\n{}\n---\n{}",
        String::from_utf8_lossy(&canon),
        String::from_utf8_lossy(&back)
    );
    // And the other way: native -> JSONL -> native is byte-identical too.
    assert_eq!(
        jsonl_to_native(name, &back),
        native,
        "{name}: native -> JSONL -> native"
    );
    // Native is smaller.
    assert!(native.len() < canon.len(), "{name}: native not smaller");
}

#[test]
fn every_fixture_round_trips_byte_identical() {
    let list = fixtures();
    assert!(
        !list.is_empty() || std::env::var_os("MIGSCOPE_NO_FIXTURES").is_some(),
        "no fixtures found"
    );
    for f in &list {
        let text = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        // Fixtures that are meant to be rejected (bad input) are not traces to convert.
        if JsonlReader::new("x", &text[..])
            .map(|mut r| r.all(|x| x.is_ok()))
            .unwrap_or(false)
        {
            round_trip(&f.display().to_string(), &text);
            eprintln!("round trip ok: {}", f.display());
        } else {
            eprintln!(
                "not a valid trace (rejection fixture), no round trip: {}",
                f.display()
            );
        }
    }
    round_trip("RICH", RICH.as_bytes());
}

#[test]
fn cli_converts_both_ways_and_check_reads_either_format() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut inputs = fixtures();
    inputs.push(write(dir.path(), "rich.jsonl", RICH));
    for (i, f) in inputs.iter().enumerate() {
        let fs = f.to_str().expect("utf-8");
        let (jv, jcode) = check_json(f, &[]);
        if jcode == 3 {
            continue; // a rejection fixture
        }
        let nat = dir.path().join(format!("{i}.mst"));
        let back = dir.path().join(format!("{i}.jsonl"));
        let o = run(&[
            "export",
            fs,
            "--format",
            "native",
            "-o",
            nat.to_str().expect("p"),
        ]);
        assert!(
            o.status.success(),
            "{fs}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(!Path::new(&format!("{}.partial", nat.display())).exists());
        let o = run(&[
            "export",
            nat.to_str().expect("p"),
            "-f",
            "jsonl",
            "-o",
            back.to_str().expect("p"),
        ]);
        assert!(
            o.status.success(),
            "{fs}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let text = std::fs::read(f).expect("read");
        assert_eq!(
            std::fs::read(&back).expect("read back"),
            canonical(fs, &text),
            "{fs}: CLI round trip"
        );
        // Same verdict, same findings (lines included) from either format. Unknown event
        // types are skipped on reading, so the converted trace lacks their warning: compare
        // with the canonical JSONL too, which has none either.
        let (nv, ncode) = check_json(&nat, &[]);
        let (bv, bcode) = check_json(&back, &[]);
        assert_eq!(ncode, jcode, "{fs}: exit code");
        assert_eq!(
            nv, bv,
            "{fs}: verdict JSON differs between native and JSONL"
        );
        assert_eq!(bcode, ncode);
        assert_eq!(
            nv["violations"], jv["violations"],
            "{fs}: violations differ"
        );
        assert_eq!(nv["blind_spots"], jv["blind_spots"], "{fs}");
        if jv["warnings"] != nv["warnings"] {
            let unknown = jv["warnings"]
                .as_array()
                .expect("warnings")
                .iter()
                .all(|w| {
                    w["rule"] == "unknown-event"
                        || nv["warnings"].as_array().expect("w").contains(w)
                });
            assert!(
                unknown,
                "{fs}: warnings differ beyond unknown events: {jv} vs {nv}"
            );
        }
        let r = open_any(&nat).expect("open native");
        assert_eq!(r.format(), migscope::trace::Format::Native);
    }
}

#[test]
fn truncation_at_every_byte_offset_reads_the_prefix_or_fails_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let native = jsonl_to_native("RICH", RICH.as_bytes());
    let full: Vec<_> = NativeReader::new("full", &native[..])
        .expect("header")
        .map(|x| x.expect("event").1)
        .collect();
    let mut last_n = 0;
    let mut cut_reported = 0;
    for cut in 0..native.len() {
        let part = &native[..cut];
        match NativeReader::new("cut", part) {
            Err(e) => {
                let m = e.to_string();
                assert!(
                    m.contains("byte offset"),
                    "cut {cut}: error without offset: {m}"
                );
                assert_eq!(
                    last_n, 0,
                    "cut {cut}: header error after events were readable"
                );
            }
            Ok(mut r) => {
                let got: Vec<_> = r
                    .by_ref()
                    .map(|x| x.unwrap_or_else(|e| panic!("cut {cut}: {e}")).1)
                    .collect();
                assert_eq!(got[..], full[..got.len()], "cut {cut}: not a prefix");
                assert!(
                    got.len() >= last_n,
                    "cut {cut}: fewer events than a shorter cut"
                );
                last_n = got.len();
                if let Some(off) = r.truncated_at() {
                    assert!(off < cut as u64, "cut {cut}: offset {off} past the end");
                    cut_reported += 1;
                }
            }
        }
    }
    assert_eq!(
        last_n,
        full.len() - 1,
        "one byte short loses exactly the last event"
    );
    assert!(cut_reported > 0);
    // Through the CLI: a cut recording is inconclusive (no `end`), never unusable or a crash.
    for cut in [native.len() - 1, native.len() * 2 / 3, native.len() / 2] {
        let p = dir.path().join(format!("cut{cut}.mst"));
        std::fs::write(&p, &native[..cut]).expect("write");
        let o = run(&["check", p.to_str().expect("p")]);
        let code = o.status.code().expect("code");
        assert!(
            code == 1 || code == 2,
            "cut {cut}: check exit {code}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(stdout.contains("truncated"), "cut {cut}: {stdout}");
        let back = dir.path().join(format!("cut{cut}.jsonl"));
        let o = run(&[
            "export",
            p.to_str().expect("p"),
            "-f",
            "jsonl",
            "-o",
            back.to_str().expect("p"),
        ]);
        assert!(o.status.success(), "cut {cut}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("byte offset"),
            "cut {cut}: conversion does not say the input was cut"
        );
    }
}

#[test]
fn bytes_per_event_native_vs_jsonl() {
    // Numbers, not a timing assertion: printed for the report (cargo test -- --nocapture).
    let mut inputs: Vec<(String, Vec<u8>)> = fixtures()
        .into_iter()
        .filter_map(|f| std::fs::read(&f).ok().map(|t| (f.display().to_string(), t)))
        .collect();
    inputs.push(("RICH".to_owned(), RICH.as_bytes().to_vec()));
    for (name, text) in inputs {
        let Ok(mut r) = JsonlReader::new(&name, &text[..]) else {
            continue;
        };
        if !r.all(|x| x.is_ok()) {
            continue; // a rejection fixture
        }
        let n = JsonlReader::new(&name, &text[..]).expect("header").count() as f64;
        if n == 0.0 {
            continue;
        }
        let canon = canonical(&name, &text);
        let native = jsonl_to_native(&name, &text);
        eprintln!(
            "{name}: {n} events; JSONL {} B ({:.1} B/event), native {} B ({:.1} B/event)",
            canon.len(),
            canon.len() as f64 / n,
            native.len(),
            native.len() as f64 / n
        );
    }
}

/// `export --format native` leaves the view's index beside the trace it wrote: the first
/// `view` loads it (no pass over the file), and it is the index a build gives.
#[test]
fn export_native_writes_the_sidecar_the_view_loads() {
    use migscope_tui::index::{Opened, TraceIndex};
    let dir = tempfile::tempdir().expect("tempdir");
    let src = write(dir.path(), "rich.jsonl", RICH);
    let nat = dir.path().join("rich.mgt");
    let o = run(&[
        "export",
        src.to_str().expect("p"),
        "-f",
        "native",
        "-o",
        nat.to_str().expect("p"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(Path::new(&format!("{}.idx", nat.display())).exists());
    let (loaded, how) =
        TraceIndex::open(&nat, |_| panic!("a first open built the index")).expect("open");
    assert!(matches!(how, Opened::Loaded(_)), "{how:?}");
    assert_eq!(loaded, TraceIndex::build(&nat, |_| true).expect("build"));
}
