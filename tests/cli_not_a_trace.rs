//! The real binary on input that is not a trace at all (binary data, an empty file, a
//! pretty-printed JSON document, a first line that is not the header): refused with "not a
//! migscope trace (neither JSONL nor native)", naming the file (exit 3), by every reader.

#![expect(
    clippy::expect_used,
    reason = "test helpers panic with context (STYLE.md: tests panic, never return Result)"
)]

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_migscope"))
        .args(args)
        .output()
        .expect("run migscope")
}

const NOT_A_TRACE: &str = "not a migscope trace (neither JSONL nor native)";

#[test]
fn input_that_is_not_a_trace_is_named_and_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    garbage[0] = 0x00;
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend_from_slice(&[0u8; 64]);
    let cases: [(&str, Vec<u8>, &str); 7] = [
        ("garbage.bin", garbage, "byte 0x00"),
        ("picture.png", png, "native magic"),
        ("empty.jsonl", Vec::new(), "empty"),
        (
            "pretty.json",
            b"{\n  \"migscope_trace\": 1,\n  \"sources\": {}\n}\n".to_vec(),
            "pretty-printed",
        ),
        (
            "array.json",
            b"[{\"t\":0,\"ev\":\"end\"}]\n".to_vec(),
            "a JSON array document",
        ),
        (
            "event-first.jsonl",
            b"{\"t\":0,\"ev\":\"end\"}\n".to_vec(),
            "`migscope_trace`",
        ),
        ("latin1.txt", b"{caf\xe9}\n".to_vec(), "not UTF-8"),
    ];
    for (name, bytes, why) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, &bytes).expect("write input");
        let path = p.to_str().expect("utf-8");
        for cmd in [
            vec!["check", path],
            vec!["check", "--json", path],
            vec!["export", path, "--format", "jsonl", "-o"],
        ] {
            let mut cmd = cmd;
            let out_path = dir.path().join(format!("{name}.out"));
            let out_s = out_path.to_str().expect("utf-8").to_owned();
            if cmd[0] == "export" {
                cmd.push(&out_s);
            }
            let o = run(&cmd);
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(3), "{name} {cmd:?}: {err}");
            assert!(err.contains(NOT_A_TRACE), "{name} {cmd:?}: {err}");
            assert!(err.contains(&format!("{path}:1:")), "names the file: {err}");
            assert!(err.contains(why), "{name}: `{why}` in {err}");
            assert!(!err.contains("panicked"), "{err}");
            assert!(!out_path.exists(), "{name}: no output for unusable input");
        }
    }
    // Standard input gets the same treatment.
    let o = Command::new(env!("CARGO_BIN_EXE_migscope"))
        .args(["check", "-"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains(&format!("-:1: {NOT_A_TRACE}")));
}

/// A native trace cut inside its header is still a (truncated) native trace, not "not a trace".
#[test]
fn a_cut_native_header_is_not_called_foreign() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("cut.mst");
    std::fs::write(&p, b"\x89MIG").expect("write");
    let o = run(&["check", p.to_str().expect("utf-8")]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(!err.contains(NOT_A_TRACE), "{err}");
    assert!(err.contains("header"), "{err}");
}
