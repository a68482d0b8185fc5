//! `migscope check` on the rule fixtures: the real binary, every rule triggered by one trace and
//! left alone by a near miss, the policy switches, blind spots, and unusable input.

#![expect(
    clippy::expect_used,
    reason = "test helpers panic with context (STYLE.md: tests panic, never return Result)"
)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use serde_json::Value;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

fn shared_fixture(name: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures")
        .join(name);
    p.exists().then_some(p)
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_migscope"))
        .args(args)
        .output()
        .expect("run migscope")
}

/// Runs `check --json` and returns (exit code, verdict JSON).
fn check_json(file: &Path, extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["check", "--json"];
    args.extend_from_slice(extra);
    let f = file.to_str().expect("utf-8 path");
    args.push(f);
    let out = run(&args);
    let code = out.status.code().expect("exit code");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{f}: stdout is not verdict JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, v)
}

fn rules(v: &Value, key: &str) -> Vec<String> {
    let mut r: Vec<String> = v[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} is not an array in {v}"))
        .iter()
        .map(|f| f["rule"].as_str().expect("rule id").to_owned())
        .collect();
    r.sort();
    r.dedup();
    r
}

struct Case {
    file: &'static str,
    args: &'static [&'static str],
    exit: i32,
    violations: &'static [&'static str],
    warnings: &'static [&'static str],
    blind: &'static [&'static str],
}

const fn case(
    file: &'static str,
    args: &'static [&'static str],
    exit: i32,
    violations: &'static [&'static str],
) -> Case {
    Case {
        file,
        args,
        exit,
        violations,
        warnings: &[],
        blind: &[],
    }
}

const CASES: &[Case] = &[
    case("rules/illegal-arc.jsonl", &[], 1, &["illegal-arc"]),
    case(
        "rules/illegal-arc-outside-request.jsonl",
        &[],
        1,
        &["illegal-arc"],
    ),
    case(
        "rules/illegal-arc-skipped-steps.jsonl",
        &[],
        1,
        &["illegal-arc"],
    ),
    case("rules/illegal-arc-near-miss.jsonl", &[], 0, &[]),
    case(
        "rules/unsupported-accepted.jsonl",
        &[],
        1,
        &["unsupported-accepted"],
    ),
    case("rules/unsupported-accepted-near-miss.jsonl", &[], 0, &[]),
    case("rules/set-failed.jsonl", &[], 1, &["set-failed"]),
    Case {
        warnings: &["hazard-arc"],
        ..case("rules/set-failed-near-miss.jsonl", &[], 0, &[])
    },
    case("rules/state-mismatch.jsonl", &[], 1, &["state-mismatch"]),
    case("rules/state-mismatch-near-miss.jsonl", &[], 0, &[]),
    case(
        "rules/dma-after-quiesce.jsonl",
        &[],
        1,
        &["dma-after-quiesce"],
    ),
    case("rules/dma-after-quiesce-near-miss.jsonl", &[], 0, &[]),
    Case {
        warnings: &["dma-maybe-after-quiesce"],
        ..case("rules/dma-maybe-after-quiesce.jsonl", &[], 0, &[])
    },
    case(
        "rules/dma-p2p-policy.jsonl",
        &[],
        1,
        &["dma-after-quiesce", "irq-after-quiesce"],
    ),
    case(
        "rules/dma-p2p-policy.jsonl",
        &["--p2p-policy", "p2p-only"],
        1,
        &["dma-after-quiesce"],
    ),
    case(
        "rules/irq-after-quiesce.jsonl",
        &[],
        1,
        &["irq-after-quiesce"],
    ),
    case(
        "rules/irq-after-quiesce.jsonl",
        &["--p2p-policy", "p2p-only"],
        0,
        &[],
    ),
    case("rules/irq-in-stop.jsonl", &[], 1, &["irq-after-quiesce"]),
    case(
        "rules/irq-in-stop.jsonl",
        &["--p2p-policy", "p2p-only"],
        1,
        &["irq-after-quiesce"],
    ),
    case("rules/quiesce-budget.jsonl", &[], 0, &[]),
    case(
        "rules/quiesce-budget.jsonl",
        &["--max-quiesce-ms", "5"],
        0,
        &[],
    ),
    case(
        "rules/quiesce-budget.jsonl",
        &["--max-quiesce-ms", "2"],
        1,
        &["quiesce-budget"],
    ),
    case(
        "rules/stop-while-peer-running.jsonl",
        &[],
        1,
        &["stop-while-peer-running"],
    ),
    case("rules/stop-while-peer-running-near-miss.jsonl", &[], 0, &[]),
    case(
        "rules/save-while-peer-running.jsonl",
        &[],
        1,
        &["save-while-peer-running"],
    ),
    case("rules/save-while-peer-running-near-miss.jsonl", &[], 0, &[]),
    case(
        "rules/run-while-peer-stopped.jsonl",
        &[],
        1,
        &["run-while-peer-stopped"],
    ),
    case("rules/run-while-peer-stopped-near-miss.jsonl", &[], 0, &[]),
    case(
        "rules/error-state.jsonl",
        &[],
        1,
        &["error-state", "set-failed"],
    ),
    case("rules/error-state-near-miss.jsonl", &[], 0, &[]),
    // Resume validation and restore divergence (issue 14, part B).
    case(
        "rules/resume-accepted-corrupt.jsonl",
        &[],
        1,
        &["resume-accepted-corrupt"],
    ),
    case("rules/resume-accepted-corrupt-near-miss.jsonl", &[], 0, &[]),
    case(
        "rules/resume-divergence.jsonl",
        &[],
        1,
        &["resume-divergence"],
    ),
    case("rules/resume-divergence-near-miss.jsonl", &[], 0, &[]),
    Case {
        warnings: &["hazard-arc"],
        ..case("rules/hazard-arc.jsonl", &[], 0, &[])
    },
    Case {
        warnings: &["unknown-event"],
        ..case("rules/unknown-event.jsonl", &[], 0, &[])
    },
    Case {
        blind: &["lost"],
        ..case("rules/lost-events.jsonl", &[], 2, &[])
    },
    Case {
        blind: &["truncated"],
        ..case("rules/truncated.jsonl", &[], 2, &[])
    },
    Case {
        blind: &["dma"],
        ..case("rules/blind-dma.jsonl", &[], 2, &[])
    },
    Case {
        warnings: &["blind-spot-accepted"],
        ..case("rules/blind-dma.jsonl", &["--accept-blind", "dma"], 0, &[])
    },
    // Coverage is per device (issue 11, point 1).
    Case {
        blind: &["dma"],
        ..case("rules/coverage-mdev-beside-pci.jsonl", &[], 2, &[])
    },
    // A device whose only DMA source is its DMA log: covered for the tracked ranges when its
    // reports' windows cover all its quiescent time (the pass names the limit), else blind.
    Case {
        warnings: &["dirty-log-only"],
        ..case("rules/coverage-dirty-log-only.jsonl", &[], 0, &[])
    },
    Case {
        blind: &["dma"],
        ..case("rules/coverage-dirty-log-short.jsonl", &[], 2, &[])
    },
    case(
        "rules/coverage-mdev-only-quiesced-near-miss.jsonl",
        &[],
        0,
        &[],
    ),
    Case {
        blind: &["dma"],
        ..case(
            "rules/coverage-device-witness-unavailable.jsonl",
            &[],
            2,
            &[],
        )
    },
    Case {
        blind: &["dma"],
        ..case("rules/coverage-device-redeclared.jsonl", &[], 2, &[])
    },
    case(
        "rules/coverage-device-witness-ok-near-miss.jsonl",
        &[],
        0,
        &[],
    ),
    Case {
        warnings: &["no-irq-source"],
        ..case("rules/coverage-irq-unavailable.jsonl", &[], 0, &[])
    },
    Case {
        warnings: &["no-irq-source"],
        ..case(
            "rules/coverage-irq-unavailable-judged.jsonl",
            &[],
            1,
            &["irq-after-quiesce"],
        )
    },
    // Every quiescent period counts (point 2).
    case(
        "rules/dma-window-earlier-period.jsonl",
        &[],
        1,
        &["dma-after-quiesce"],
    ),
    case(
        "rules/dma-window-earlier-period-near-miss.jsonl",
        &[],
        0,
        &[],
    ),
    // A SET refused before any arc ran leaves the state as it was (point 3).
    case(
        "rules/set-refused-then-dma.jsonl",
        &[],
        1,
        &["dma-after-quiesce"],
    ),
    case("rules/set-refused-then-dma-near-miss.jsonl", &[], 0, &[]),
    // Multi-arc SETs are quiescent from the first step out of a quiescent state (point 4).
    case(
        "rules/multi-arc-dma-between-steps.jsonl",
        &[],
        1,
        &["dma-after-quiesce", "irq-after-quiesce"],
    ),
    case(
        "rules/multi-arc-dma-between-steps-near-miss.jsonl",
        &[],
        0,
        &[],
    ),
    // A SET open at `end` (point 5).
    Case {
        warnings: &["unfinished-set", "hazard-arc"],
        blind: &["unfinished"],
        ..case("rules/unfinished-set.jsonl", &[], 2, &[])
    },
    // Destination order (point 6).
    case("rules/destination-qemu-order.jsonl", &[], 0, &[]),
    case(
        "rules/destination-run-while-peer-resuming.jsonl",
        &[],
        1,
        &["run-while-peer-stopped"],
    ),
    case("rules/source-qemu-order.jsonl", &[], 0, &[]),
    // p2p-only says what it cannot see (point 7).
    Case {
        warnings: &["p2p-dma-invisible"],
        ..case(
            "rules/dma-p2p-policy.jsonl",
            &["--p2p-policy", "p2p-only"],
            1,
            &["dma-after-quiesce"],
        )
    },
    // Missed FSM steps are loss, not illegal arcs (point 12).
    Case {
        blind: &["lost"],
        ..case("rules/lost-fsm-steps.jsonl", &[], 2, &[])
    },
    Case {
        blind: &["lost"],
        ..case(
            "rules/lost-fsm-steps-later-request.jsonl",
            &[],
            1,
            &["illegal-arc"],
        )
    },
];

#[test]
fn every_rule_fixture_gets_its_verdict() {
    for c in CASES {
        let (code, v) = check_json(&fixture(c.file), c.args);
        let ctx = format!("{} {:?}: {v}", c.file, c.args);
        assert_eq!(code, c.exit, "exit code of {ctx}");
        let want_verdict = ["pass", "fail", "inconclusive"][c.exit as usize];
        assert_eq!(v["verdict"], want_verdict, "{ctx}");
        let mut want: Vec<String> = c.violations.iter().map(|s| (*s).to_owned()).collect();
        want.sort();
        assert_eq!(rules(&v, "violations"), want, "violations of {ctx}");
        let warns = rules(&v, "warnings");
        for w in c.warnings {
            assert!(warns.iter().any(|x| x == w), "warning {w} missing in {ctx}");
        }
        let blind: Vec<&str> = v["blind_spots"]
            .as_array()
            .expect("blind_spots")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(blind, c.blind, "blind spots of {ctx}");
        // Every violation names its line, device and time.
        for f in v["violations"].as_array().expect("violations") {
            assert!(f["line"].as_u64().is_some_and(|l| l >= 2), "line in {f}");
            assert!(f["dev"].is_string(), "dev in {f}");
            assert!(f["t"].is_u64(), "t in {f}");
            assert!(
                !f["detail"].as_str().unwrap_or("").is_empty(),
                "detail in {f}"
            );
        }
    }
}

#[test]
fn violations_point_at_the_offending_line() {
    let (_, v) = check_json(&fixture("rules/dma-after-quiesce.jsonl"), &[]);
    let viol = &v["violations"][0];
    assert_eq!(viol["line"], 7, "{v}");
    assert_eq!(viol["dev"], "0000:00:02.0");
    let (_, v) = check_json(&fixture("rules/stop-while-peer-running.jsonl"), &[]);
    let all = v["violations"].as_array().expect("violations");
    assert_eq!(all.len(), 1, "only the peer in the same ctx counts: {v}");
    assert!(
        all[0]["detail"]
            .as_str()
            .expect("detail")
            .contains("0000:00:03.0")
    );
}

#[test]
fn quiesce_durations_are_reported_per_device() {
    let (_, v) = check_json(&fixture("rules/quiesce-budget.jsonl"), &[]);
    let q = &v["devices"]["0000:00:02.0"]["quiesce_ns"];
    assert_eq!(q["count"], 1, "{v}");
    assert_eq!(q["max"], 3_000_000 - 1000);
}

#[test]
fn shared_example_fixtures() {
    let Some(fail) = shared_fixture("example-late-dma-fail.jsonl") else {
        eprintln!("SKIP: ../shared/fixtures is not beside this checkout");
        return;
    };
    let (code, v) = check_json(&fail, &[]);
    assert_eq!(code, 1);
    assert_eq!(
        rules(&v, "violations"),
        vec!["dma-after-quiesce", "irq-after-quiesce"]
    );
    let pass =
        shared_fixture("example-stopcopy-pass.jsonl").expect("pass fixture beside fail fixture");
    let (code, v) = check_json(&pass, &[]);
    assert_eq!((code, v["verdict"].as_str()), (0, Some("pass")), "{v}");
}

#[test]
fn human_report_lists_rule_device_time_line_detail_then_summary() {
    let f = fixture("rules/irq-after-quiesce.jsonl");
    let out = run(&["check", f.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let first = text.lines().next().expect("a line");
    for part in [
        "irq-after-quiesce",
        "0000:00:02.0",
        "t=3500000",
        "line 6",
        "after RUNNING_P2P completed",
    ] {
        assert!(first.contains(part), "{part} missing from {first:?}");
    }
    assert!(text.contains("FAIL"), "{text}");
}

#[test]
fn stdin_is_read_with_dash() {
    let data = std::fs::read(fixture("rules/irq-after-quiesce.jsonl")).expect("fixture");
    let mut child = Command::new(env!("CARGO_BIN_EXE_migscope"))
        .args(["check", "--json", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(&data).expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(rules(&v, "violations"), vec!["irq-after-quiesce"]);
}

#[test]
fn unusable_input_exits_3_naming_file_line_and_field() {
    let cases = [
        ("bad/missing-header.jsonl", 1, "migscope_trace"),
        ("bad/empty.jsonl", 1, "migscope_trace"),
        ("bad/not-json.jsonl", 3, "not JSON"),
        ("bad/missing-field.jsonl", 3, "`to`"),
        ("bad/unknown-state.jsonl", 3, "`to`"),
        ("bad/decreasing-t.jsonl", 4, "`t`"),
        ("bad/unknown-flag.jsonl", 2, "`flags`"),
        ("bad/wrong-type.jsonl", 2, "`t`"),
    ];
    for (file, line, needle) in cases {
        let p = fixture(file);
        let out = run(&["check", "--json", p.to_str().expect("utf-8")]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{file}: {err}");
        assert!(
            out.stdout.is_empty(),
            "{file}: no verdict on unusable input"
        );
        assert!(
            err.contains(&format!("{file}:{line}:")),
            "{file}: file:line missing in {err}"
        );
        assert!(err.contains(needle), "{file}: {needle} missing in {err}");
        assert!(!err.contains("panicked"), "{file}: {err}");
    }
    let out = run(&["check", "/nonexistent/trace.jsonl"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/trace.jsonl"));
    let out = run(&["check", "--p2p-policy", "lenient", "x"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "usage errors are unusable input"
    );
}

/// The devices a blind spot's detail names, among `devs`.
fn named_in(v: &Value, spot: &str, devs: &[&str]) -> Vec<String> {
    let why = v["blind_spot_details"][spot]
        .as_str()
        .unwrap_or_else(|| panic!("no {spot} detail in {v}"));
    devs.iter()
        .filter(|d| why.contains(*d))
        .map(|d| (*d).to_owned())
        .collect()
}

#[test]
fn an_mdev_source_covers_the_vgpu_and_leaves_the_vf_beside_it_blind() {
    const VGPU: &str = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001";
    const VF: &str = "0000:3b:00.1";
    let (code, v) = check_json(&fixture("rules/coverage-mdev-beside-pci.jsonl"), &[]);
    assert_eq!(code, 2, "{v}");
    assert_eq!(named_in(&v, "dma", &[VGPU, VF]), vec![VF], "{v}");
    let devs = &v["devices"];
    assert_eq!(devs[VGPU]["dma_sources"], serde_json::json!(["mdev_dma"]));
    assert_eq!(devs[VGPU]["blind"], serde_json::json!([]));
    assert_eq!(devs[VF]["dma_sources"], serde_json::json!([]));
    assert_eq!(devs[VF]["blind"], serde_json::json!(["dma"]));
    // The existing fields stay.
    assert_eq!(devs[VF]["quiesce_ns"]["count"], 1, "{v}");
}

#[test]
fn a_device_own_sources_decide_its_coverage() {
    let d2 = "0000:00:02.0";
    let d3 = "0000:00:03.0";
    let (_, v) = check_json(
        &fixture("rules/coverage-device-witness-unavailable.jsonl"),
        &[],
    );
    assert_eq!(named_in(&v, "dma", &[d2, d3]), vec![d3], "{v}");
    assert_eq!(
        v["devices"][d2]["dma_sources"],
        serde_json::json!(["witness"])
    );
    let (_, v) = check_json(&fixture("rules/coverage-device-redeclared.jsonl"), &[]);
    assert_eq!(named_in(&v, "dma", &[d2]), vec![d2], "{v}");
    let (_, v) = check_json(&fixture("rules/coverage-irq-unavailable.jsonl"), &[]);
    let no_irq: Vec<&Value> = v["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .filter(|w| w["rule"] == "no-irq-source")
        .map(|w| &w["dev"])
        .collect();
    assert_eq!(no_irq, vec![&Value::from(d3)], "{v}");
    assert_eq!(v["devices"][d3]["irq_source"], false);
    assert_eq!(v["devices"][d2]["irq_source"], true);
}

#[test]
fn an_unfinished_set_names_its_device() {
    let (_, v) = check_json(&fixture("rules/unfinished-set.jsonl"), &[]);
    assert_eq!(
        named_in(&v, "unfinished", &["0000:00:02.0"]),
        vec!["0000:00:02.0"]
    );
    assert_eq!(
        v["devices"]["0000:00:02.0"]["blind"],
        serde_json::json!(["unfinished"])
    );
}

#[test]
fn lost_steps_spare_their_request_but_not_the_next() {
    let (_, v) = check_json(&fixture("rules/lost-fsm-steps-later-request.jsonl"), &[]);
    let lines: Vec<u64> = v["violations"]
        .as_array()
        .expect("violations")
        .iter()
        .filter_map(|f| f["line"].as_u64())
        .collect();
    // Line 11: STOP_COPY -> RUNNING_P2P skips STOP. Nothing from the request whose steps were
    // lost (its set_done is line 9).
    assert_eq!(lines, vec![11], "{v}");
    assert!(
        v["blind_spot_details"]["lost"]
            .as_str()
            .is_some_and(|s| s.contains("0000:00:02.0")),
        "{v}"
    );
}

#[test]
fn the_human_report_says_p2p_only_cannot_see_peer_to_peer_dma() {
    let f = fixture("rules/dma-p2p-policy.jsonl");
    let out = run(&[
        "check",
        "--p2p-policy",
        "p2p-only",
        f.to_str().expect("utf-8"),
    ]);
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let line = text
        .lines()
        .find(|l| l.contains("p2p-dma-invisible"))
        .unwrap_or_else(|| panic!("no p2p-dma-invisible warning in {text}"));
    assert!(line.starts_with("warning"), "{line}");
    assert!(line.contains("p2p: true"), "{line}");
    let strict = run(&["check", f.to_str().expect("utf-8")]);
    assert!(!String::from_utf8_lossy(&strict.stdout).contains("p2p-dma-invisible"));
}
