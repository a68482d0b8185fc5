//! The lab's half of "one answer everywhere" (issue 13 point 4): on a lab trace, the Perfetto
//! export, the JUnit report and the Markdown report that the judge made beside it must state
//! `check --json`'s numbers (`migscope_core::export::agree`, the same comparison as
//! `tests/export_agree.rs`).

use std::{fs, path::Path};

use migscope_core::export::agree;

/// The disagreements of the exports beside a lab trace with its saved `check --json`, one
/// problem each (an unreadable file is one too).
pub fn exports_state_check_numbers(
    check_json: &Path,
    perfetto: &Path,
    junit: &Path,
    markdown: &Path,
) -> Vec<String> {
    let read = |p: &Path| fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
    let json = |p: &Path| {
        read(p).and_then(|t| {
            serde_json::from_str::<serde_json::Value>(&t)
                .map_err(|e| format!("{}: not JSON: {e}", p.display()))
        })
    };
    let compared = (|| {
        agree::compare(
            &json(check_json)?,
            &json(perfetto)?,
            &read(junit)?,
            &read(markdown)?,
        )
    })();
    match compared {
        Ok(d) => d
            .into_iter()
            .map(|d| format!("exports disagree with check: {d}"))
            .collect(),
        Err(e) => vec![format!("exports cannot be compared with check: {e}")],
    }
}
