//! `migscope fsm` through the real binary: paths, the table, v1 values, exit codes.

#![expect(
    clippy::expect_used,
    reason = "test helpers panic with context (STYLE.md: tests panic, never return Result)"
)]

use std::process::Command;

use serde_json::{Value, json};

fn fsm(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_migscope"))
        .arg("fsm")
        .args(args)
        .output()
        .expect("run migscope");
    (
        out.status.code().expect("exit code"),
        String::from_utf8(out.stdout).expect("utf-8"),
    )
}

fn fsm_json(args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let (code, out) = fsm(&a);
    assert_eq!(code, 0, "{args:?}: {out}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

#[test]
fn path_json_exact() {
    let (code, out) = fsm(&[
        "path",
        "--flags",
        "STOP_COPY,P2P",
        "RUNNING",
        "STOP",
        "--json",
    ]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), r#"{"path":["RUNNING","RUNNING_P2P","STOP"]}"#);
    assert_eq!(
        fsm_json(&["path", "--flags", "STOP_COPY", "RUNNING", "STOP_COPY"]),
        json!({"path": ["RUNNING", "STOP", "STOP_COPY"]})
    );
    assert_eq!(
        fsm_json(&[
            "path",
            "--flags",
            "STOP_COPY,P2P,PRE_COPY",
            "PRE_COPY",
            "STOP"
        ]),
        json!({"path": ["PRE_COPY", "RUNNING", "RUNNING_P2P", "STOP"]})
    );
}

#[test]
fn impossible_requests_are_einval_with_exit_0() {
    // Unsupported target.
    let v = fsm_json(&["path", "--flags", "STOP_COPY", "RUNNING", "RUNNING_P2P"]);
    assert_eq!(v["error"], "EINVAL");
    // ERROR is never a target.
    let v = fsm_json(&["path", "--flags", "STOP_COPY,P2P", "RUNNING", "ERROR"]);
    assert_eq!(v["error"], "EINVAL");
    // Blocked arc: also flagged as the hazard that hangs unpatched kernels.
    let v = fsm_json(&[
        "path",
        "--flags",
        "STOP_COPY,PRE_COPY",
        "STOP_COPY",
        "PRE_COPY",
    ]);
    assert_eq!(v, json!({"error": "EINVAL", "hazard": true}));
}

#[test]
fn path_text_is_arrows() {
    let (code, out) = fsm(&["path", "--flags", "STOP_COPY,P2P", "STOP", "RUNNING"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "STOP -> RUNNING_P2P -> RUNNING");
    let (_, out) = fsm(&["path", "--flags", "STOP_COPY", "RUNNING", "PRE_COPY"]);
    assert!(out.contains("EINVAL"), "{out}");
}

#[test]
fn bad_arguments_exit_3() {
    for args in [
        vec!["path", "--flags", "NDMA", "RUNNING", "STOP"],
        vec!["path", "RUNNING", "HALTED"],
        vec!["v1", "banana"],
        vec!["table", "--flags", "WHAT"],
        vec!["path", "RUNNING"],
    ] {
        let (code, _) = fsm(&args);
        assert_eq!(code, 3, "{args:?}");
    }
}

#[test]
fn v1_values() {
    assert_eq!(
        fsm(&["v1", "0x9", "--json"]).1.trim(),
        r#"{"value":9,"bits":["RUNNING","NDMA"],"class":"valid","v2":"RUNNING_P2P","settable":true}"#
    );
    let v = fsm_json(&["v1", "5"]);
    assert_eq!(
        (
            v["class"].as_str(),
            v["v2"].is_null(),
            v["settable"].as_bool()
        ),
        (Some("invalid"), true, Some(false))
    );
    for x in ["6", "7", "0xE", "0xF"] {
        let v = fsm_json(&["v1", x]);
        assert_eq!(v["class"], "error", "{x}");
        assert_eq!(v["settable"], false);
    }
    for (x, v2) in [("8", "STOP"), ("0xA", "STOP_COPY"), ("0xC", "RESUMING")] {
        let v = fsm_json(&["v1", x]);
        assert_eq!(
            (v["class"].as_str(), v["v2"].as_str()),
            (Some("redundant"), Some(v2)),
            "{x}"
        );
    }
    assert_eq!(fsm_json(&["v1", "0xB"])["v2"], "PRE_COPY_P2P");
    for x in ["0x10", "17", "0xffffffff"] {
        let v = fsm_json(&["v1", x]);
        assert_eq!(
            (v["class"].as_str(), v["settable"].as_bool()),
            (Some("reserved"), Some(false)),
            "{x}"
        );
    }
    let (_, text) = fsm(&["v1", "9"]);
    assert!(
        text.contains("RUNNING_P2P") && text.contains("settable"),
        "{text}"
    );
}

#[test]
fn table_covers_every_supported_pair() {
    let v = fsm_json(&["table", "--flags", "STOP_COPY,P2P,PRE_COPY"]);
    let rows = v["paths"].as_array().expect("paths");
    // 7 supported states x 7 non-ERROR targets.
    assert_eq!(rows.len(), 49);
    let hazards: Vec<_> = rows.iter().filter(|r| r["hazard"] == true).collect();
    assert_eq!(
        hazards.len(),
        2,
        "STOP_COPY -> PRE_COPY and -> PRE_COPY_P2P"
    );
    let v = fsm_json(&["table", "--flags", "STOP_COPY"]);
    assert_eq!(v["paths"].as_array().expect("paths").len(), 4 * 7);
    let (code, text) = fsm(&["table", "--flags", "STOP_COPY,P2P"]);
    assert_eq!(code, 0);
    assert!(
        text.contains("RUNNING -> RUNNING_P2P -> STOP -> STOP_COPY"),
        "{text}"
    );
}
