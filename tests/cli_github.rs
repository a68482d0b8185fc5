//! `check --format github`, the real binary on the rule fixtures: GitHub Actions workflow
//! commands (`::error file=F,line=L,title=RULE::...`, `::warning` for warnings and blind
//! spots) naming the trace file and the offending line.

#![expect(
    clippy::expect_used,
    reason = "test helpers panic with context (STYLE.md: tests panic, never return Result)"
)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_migscope"))
        .args(args)
        .output()
        .expect("run migscope")
}

fn github(rel: &str) -> (Option<i32>, String, String) {
    let p = fixture(rel);
    let path = p.to_str().expect("utf-8").to_owned();
    let o = run(&["check", "--format", "github", &path]);
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        path,
    )
}

#[test]
fn github_format_annotates_violations_with_file_and_line() {
    let (code, out, path) = github("rules/dma-after-quiesce.jsonl");
    assert_eq!(code, Some(1), "{out}");
    let errors: Vec<&str> = out.lines().filter(|l| l.starts_with("::error ")).collect();
    assert_eq!(errors.len(), 1, "{out}");
    let file = path.replace(':', "%3A").replace(',', "%2C");
    assert!(
        errors[0].starts_with(&format!("::error file={file},line=7,title=dma-after-quiesce::0000:00:02.0 t=9000000: witness write")),
        "{}",
        errors[0]
    );
    assert!(
        out.lines().last().is_some_and(|l| l.contains("FAIL")),
        "{out}"
    );
}

#[test]
fn github_format_warns_for_warnings_and_blind_spots() {
    let (code, out, _) = github("rules/hazard-arc.jsonl");
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("::error"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("::warning ") && l.contains(",title=hazard-arc::")),
        "{out}"
    );
    let (code, out, _) = github("rules/blind-dma.jsonl");
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.lines().any(
            |l| l.starts_with("::warning ") && l.contains("title=blind spot dma::inconclusive")
        ),
        "{out}"
    );
}

#[test]
fn github_format_reports_unusable_input_as_an_error_annotation() {
    let p = fixture("bad/not-json.jsonl");
    let path = p.to_str().expect("utf-8");
    let o = run(&["check", "--format", "github", path]);
    assert_eq!(o.status.code(), Some(3));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.starts_with("::error file=") && out.contains(",line=3,title=unusable trace::"),
        "{out}"
    );
    // --json and --format do not mix.
    assert_eq!(
        run(&["check", "--json", "--format", "github", path])
            .status
            .code(),
        Some(3)
    );
}
