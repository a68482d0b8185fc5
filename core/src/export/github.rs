//! GitHub Actions workflow commands for a verdict: one `::error` per violation and one
//! `::warning` per warning and blind spot, each naming the trace file and the event's line
//! (`file=F,line=L,title=RULE`), then the verdict line. The escaping follows the runner's
//! rules (actions/toolkit `command.ts`: `%`, CR, LF in data; also `:` and `,` in properties).

use std::fmt::Write as _;

use crate::verify::{Finding, Report};

/// Escapes a message (the part after `::`).
fn data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escapes a property value (`file=`, `title=`).
fn prop(s: &str) -> String {
    data(s).replace(':', "%3A").replace(',', "%2C")
}

fn command(o: &mut String, level: &str, file: &str, line: u64, title: &str, msg: &str) {
    let mut props = format!("file={}", prop(file));
    if line > 0 {
        let _ = write!(props, ",line={line}");
    }
    let _ = writeln!(o, "::{level} {props},title={}::{}", prop(title), data(msg));
}

fn finding(o: &mut String, level: &str, file: &str, f: &Finding) {
    let dev = f.dev.as_deref().unwrap_or("-");
    let msg = format!("{dev} t={}: {}", f.t, f.detail);
    command(o, level, file, f.line, f.rule, &msg);
}

/// The annotations for `report` of the trace at `file` (as the user named it).
pub fn render(report: &Report, file: &str) -> String {
    let mut o = String::new();
    for v in &report.violations {
        finding(&mut o, "error", file, v);
    }
    for w in &report.warnings {
        finding(&mut o, "warning", file, w);
    }
    for b in &report.blind_spots {
        let why = report
            .blind_spot_details
            .get(b)
            .map(String::as_str)
            .unwrap_or("");
        command(
            &mut o,
            "warning",
            file,
            0,
            &format!("blind spot {b}"),
            &format!("inconclusive: {why}"),
        );
    }
    let _ = writeln!(
        o,
        "migscope: {file}: {} — {} events, {} violation(s), {} warning(s), {} blind spot(s)",
        report.verdict.name().to_uppercase(),
        report.events,
        report.violations.len(),
        report.warnings.len(),
        report.blind_spots.len()
    );
    o
}

/// The annotation for a trace that could not be read at all.
pub fn render_error(file: &str, line: Option<u64>, error: &str) -> String {
    let mut o = String::new();
    command(
        &mut o,
        "error",
        file,
        line.unwrap_or(0),
        "unusable trace",
        error,
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_and_data_are_escaped() {
        let mut o = String::new();
        command(&mut o, "error", "a,b:c.jsonl", 3, "r", "50% done\nnext");
        assert_eq!(
            o,
            "::error file=a%2Cb%3Ac.jsonl,line=3,title=r::50%25 done%0Anext\n"
        );
    }
}
