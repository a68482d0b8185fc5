//! `--irq-detail quiesce` (interrupts binned while the device could not be quiescing) gives the
//! verdict `--irq-detail all` gives (issue 16 point 1): on the lab's pairs of traces recorded
//! at once both ways (`rec_selftest`: trace.jsonl and trace-all.jsonl), and on a hand-written
//! pair; a producer that binned across a quiescent period would not agree.

mod export_common;

use std::path::{Path, PathBuf};

use export_common::{check_json, write};
use migscope::export::agree::irq_detail_disagreements;

const HEADER: &str = r#"{"migscope_trace":1,"clock":"monotonic_ns","kernel":"6.12.0-test","tool":"hand-written fixture","sources":{"transitions":"ok","irq":"ok","witness":"ok"}}"#;
const DEVICE: &str = r#"{"t":0,"ev":"device","dev":"0000:00:02.0","flags":["STOP_COPY","P2P"],"ctx":"vm1","driver":"edu-mig"}"#;

/// One run (RUNNING with interrupts, STOP with two, RUNNING again with one) as each mode
/// writes it: `running` is how the interrupts of each RUNNING stretch are written (the first
/// before the STOP's `set`, the second after the return to RUNNING), `stopped` lines after
/// the STOP's `set_done`.
fn run_trace(running: [&str; 2], stopped: &str) -> String {
    let irq =
        |t: u64| format!(r#"{{"t":{t},"ev":"irq","dev":"0000:00:02.0","kind":"msi","vector":0}}"#);
    [
        HEADER.to_owned(),
        DEVICE.to_owned(),
        running[0].to_owned(),
        r#"{"t":20000100,"ev":"set","dev":"0000:00:02.0","to":"STOP"}"#.to_owned(),
        r#"{"t":20000300,"ev":"step","dev":"0000:00:02.0","from":"RUNNING","to":"STOP"}"#
            .to_owned(),
        r#"{"t":20000400,"ev":"set_done","dev":"0000:00:02.0","to":"STOP","ret":0}"#.to_owned(),
        stopped.to_owned(),
        irq(21_000_000),
        irq(22_000_000),
        r#"{"t":30000000,"ev":"set","dev":"0000:00:02.0","to":"RUNNING"}"#.to_owned(),
        r#"{"t":30000100,"ev":"step","dev":"0000:00:02.0","from":"STOP","to":"RUNNING"}"#
            .to_owned(),
        r#"{"t":31000000,"ev":"set_done","dev":"0000:00:02.0","to":"RUNNING","ret":0}"#.to_owned(),
        running[1].to_owned(),
        r#"{"t":41000000,"ev":"end"}"#.to_owned(),
    ]
    .into_iter()
    .filter(|l| !l.is_empty())
    .collect::<Vec<_>>()
    .join("\n")
        + "\n"
}

#[test]
fn a_binned_run_gives_the_verdict_of_the_exact_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exact = [
        (1..=3)
            .map(|i| {
                format!(
                    r#"{{"t":{},"ev":"irq","dev":"0000:00:02.0","kind":"msi","vector":0}}"#,
                    i * 5_000_000
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
        r#"{"t":35000000,"ev":"irq","dev":"0000:00:02.0","kind":"msi","vector":0}"#.to_owned(),
    ];
    let all = write(
        dir.path(),
        "all.jsonl",
        &run_trace([&exact[0], &exact[1]], ""),
    );
    // As the probe bins: flushed at the SET's entry, closed before it; one interrupt spans
    // no time.
    let binned = write(
        dir.path(),
        "quiesce.jsonl",
        &run_trace(
            [
                r#"{"t":20000050,"ev":"irq_bin","dev":"0000:00:02.0","kind":"msi","vector":0,"n":3,"window":[5000000,15000000]}"#,
                r#"{"t":40000000,"ev":"irq_bin","dev":"0000:00:02.0","kind":"msi","vector":0,"n":1,"window":[35000000,35000000]}"#,
            ],
            "",
        ),
    );
    let (a, code_a) = check_json(&all, &[]);
    let (q, code_q) = check_json(&binned, &[]);
    assert_eq!(
        (code_a, code_q),
        (1, 1),
        "both fail irq-after-quiesce: {a} / {q}"
    );
    assert_eq!(irq_detail_disagreements(&q, &a), Ok(vec![]));

    // A producer that kept binning into the STOP (its bin's last interrupt inside it) is
    // caught by the verifier itself, and the comparison says its counts differ.
    let wrong = write(
        dir.path(),
        "wrong.jsonl",
        &run_trace(
            [
                "",
                r#"{"t":40000000,"ev":"irq_bin","dev":"0000:00:02.0","kind":"msi","vector":0,"n":1,"window":[35000000,35000000]}"#,
            ],
            r#"{"t":20500000,"ev":"irq_bin","dev":"0000:00:02.0","kind":"msi","vector":0,"n":3,"window":[5000000,20450000]}"#,
        ),
    );
    let (w, code_w) = check_json(&wrong, &[]);
    assert_eq!(code_w, 1);
    let d = irq_detail_disagreements(&w, &a).expect("check JSON");
    assert!(
        d.iter().any(|x| x.contains("violation(s)")),
        "the overlapping bin is one more violation: {d:?}"
    );
}

/// `MIGSCOPE_AGREE_TRACES=DIR[:DIR...]` (e.g. the lab's `target/lab`): every directory with
/// a `trace-all.jsonl` beside its `trace.jsonl`.
fn lab_pairs() -> Vec<(PathBuf, PathBuf)> {
    fn walk(d: &Path, out: &mut Vec<(PathBuf, PathBuf)>) {
        let Ok(rd) = std::fs::read_dir(d) else {
            return;
        };
        let all = d.join("trace-all.jsonl");
        let quiesce = d.join("trace.jsonl");
        if all.is_file() && quiesce.is_file() {
            out.push((quiesce, all));
        }
        for e in rd.flatten() {
            if e.path().is_dir() {
                walk(&e.path(), out);
            }
        }
    }
    let mut out = Vec::new();
    if let Ok(dirs) = std::env::var("MIGSCOPE_AGREE_TRACES") {
        for d in dirs.split(':').filter(|d| !d.is_empty()) {
            walk(Path::new(d), &mut out);
        }
    }
    out.sort();
    out
}

#[test]
fn lab_traces_recorded_both_ways_give_one_verdict() {
    let pairs = lab_pairs();
    if pairs.is_empty() {
        println!(
            "SKIP: no trace-all.jsonl beside a trace.jsonl under MIGSCOPE_AGREE_TRACES (run the \
             lab's record-* scenarios and point it at target/lab)"
        );
        return;
    }
    let mut problems = Vec::new();
    for (q, a) in &pairs {
        let (qv, _) = check_json(q, &[]);
        let (av, _) = check_json(a, &[]);
        match irq_detail_disagreements(&qv, &av) {
            Ok(d) => problems.extend(d.into_iter().map(|d| format!("{}: {d}", q.display()))),
            Err(e) => problems.push(format!("{}: {e}", q.display())),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    println!("{} pair(s) agree", pairs.len());
}
