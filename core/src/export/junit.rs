//! JUnit XML for CI test reporters (GitLab, Jenkins, GitHub Actions): one test suite per device
//! with one test case per rule family, plus a suite for trace-level conditions.
//!
//! Layout, in the common (Ant/Jenkins) JUnit dialect every reporter reads:
//!
//! ```text
//! <testsuites name="migscope" tests failures errors skipped>
//!   <testsuite name="<trace>: <device>">     one per device, in name order
//!     <properties> device, ctx, flags, the numbers check --json gives it (quiesce_count,
//!       quiesce_{min,max,mean}_ns, dma_quiesced, irq_quiesced, violations) </properties>
//!     <testcase classname="migscope.<device>" name="transitions|quiesce|ordering">
//!       <failure type=<first rule> message="N violation(s): ...">one line per violation:
//!         rule, t, line, detail</failure>     or <skipped message=...> for a blind spot
//!   <testsuite name="<trace>: trace">       truncation, lost events, DMA blind spot, findings
//!                                            not tied to a device; warnings in <system-out>
//! ```
//!
//! A test case holds at most one `<failure>` (the Ant schema allows one); its text lists every
//! violation of the family.

use std::{fmt::Write as _, path::Path};

use super::{ExportError, write_atomic};
use crate::verify::{DeviceSummary, Finding, Report, rule};

/// The rule families, each a test case.
pub const FAMILIES: [&str; 3] = ["transitions", "quiesce", "ordering"];

/// The family a violation rule belongs to.
pub fn family(r: &str) -> &'static str {
    match r {
        rule::DMA_AFTER_QUIESCE | rule::IRQ_AFTER_QUIESCE | rule::QUIESCE_BUDGET => "quiesce",
        rule::STOP_WHILE_PEER_RUNNING
        | rule::SAVE_WHILE_PEER_RUNNING
        | rule::RUN_WHILE_PEER_STOPPED => "ordering",
        // illegal-arc, unsupported-accepted, set-failed, state-mismatch, error-state, and any
        // rule added later until it is given a family.
        _ => "transitions",
    }
}

/// Escapes text for XML attribute values and element content, dropping characters XML 1.0
/// cannot carry at all.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\n' => o.push_str("&#10;"),
            '\t' | '\r' => o.push(' '),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => o.push('?'),
            c => o.push(c),
        }
    }
    o
}

fn finding_line(f: &Finding) -> String {
    format!(
        "{} t={} line {}{}: {}",
        f.rule,
        f.t,
        f.line,
        f.dev
            .as_deref()
            .map(|d| format!(" dev {d}"))
            .unwrap_or_default(),
        f.detail
    )
}

/// One test case: `Ok` passes, `Err((type, message, body))` fails, `Skip(message)` is skipped.
enum Case {
    Pass,
    Fail {
        kind: String,
        message: String,
        body: String,
    },
    Skip(String),
}

fn fail_case(found: &[&Finding]) -> Case {
    let first = found[0];
    let mut body = String::new();
    for f in found {
        body.push_str(&finding_line(f));
        body.push('\n');
    }
    Case::Fail {
        kind: first.rule.to_owned(),
        message: format!(
            "{} violation(s); first: {} at t={} (line {}): {}",
            found.len(),
            first.rule,
            first.t,
            first.line,
            first.detail
        ),
        body,
    }
}

/// A device suite's properties: its facts and the numbers `check --json` gives it
/// (`export::agree` reads them back).
fn device_props(report: &Report, dev: &str, d: &DeviceSummary) -> Vec<(String, String)> {
    let mut props = vec![
        ("device".to_owned(), dev.to_owned()),
        ("ctx".to_owned(), d.ctx.clone()),
    ];
    if let Some(fl) = d.flags {
        props.push(("flags".to_owned(), crate::model::flag_names(fl).join(",")));
    }
    let mut num = |k: &str, v: u64| props.push((k.to_owned(), v.to_string()));
    num("quiesce_count", d.quiesce_count);
    if let Some(mean) = d.quiesce_total_ns.checked_div(d.quiesce_count) {
        num("quiesce_min_ns", d.quiesce_min_ns);
        num("quiesce_max_ns", d.quiesce_max_ns);
        num("quiesce_mean_ns", mean);
    }
    num("dma_quiesced", d.dma_quiesced);
    num("irq_quiesced", d.irq_quiesced);
    let violations = report
        .violations
        .iter()
        .filter(|v| v.dev.as_deref() == Some(dev))
        .count();
    num("violations", violations as u64);
    props.push((
        "quiesce_max_ms".to_owned(),
        format!("{:.3}", d.quiesce_max_ns as f64 / 1e6),
    ));
    if let Some(s) = d.final_state {
        props.push(("final_state".to_owned(), s.name().to_owned()));
    }
    props
}

struct Suite {
    name: String,
    props: Vec<(String, String)>,
    cases: Vec<(String, String, Case)>,
    out: String,
}

/// The JUnit document for a report; `trace_name` names the suites (usually the file name).
pub fn render(report: &Report, trace_name: &str) -> String {
    let mut suites: Vec<Suite> = report
        .devices
        .iter()
        .map(|(dev, d)| device_suite(report, trace_name, dev, d))
        .collect();
    suites.push(trace_suite(report, trace_name));
    to_xml(&suites)
}

/// One device's suite: a case per rule family (failed by its violations, skipped where the
/// device had no DMA source), its numbers as properties, its warnings as output.
fn device_suite(report: &Report, trace_name: &str, dev: &str, d: &DeviceSummary) -> Suite {
    let dma_blind = report.blind_spots.iter().any(|b| b == "dma");
    let mut cases = Vec::new();
    for fam in FAMILIES {
        let found: Vec<&Finding> = report
            .violations
            .iter()
            .filter(|v| v.dev.as_deref() == Some(dev) && family(v.rule) == fam)
            .collect();
        let case = if !found.is_empty() {
            fail_case(&found)
        } else if fam == "quiesce" && dma_blind && d.blind.contains(&"dma") {
            // Coverage is per device: only the devices no DMA source covered are unproven.
            Case::Skip(format!(
                "blind spot dma: {}",
                report
                    .blind_spot_details
                    .get("dma")
                    .map(String::as_str)
                    .unwrap_or("no DMA evidence source")
            ))
        } else {
            Case::Pass
        };
        cases.push((format!("migscope.{dev}"), fam.to_owned(), case));
    }
    let mut out = String::new();
    for w in report
        .warnings
        .iter()
        .filter(|w| w.dev.as_deref() == Some(dev))
    {
        out.push_str("warning ");
        out.push_str(&finding_line(w));
        out.push('\n');
    }
    Suite {
        name: format!("{trace_name}: {dev}"),
        props: device_props(report, dev, d),
        cases,
        out,
    }
}

/// The trace's suite: completeness, lost events, DMA evidence and every other blind spot,
/// violations and warnings no declared device owns, findings not stored, the verdict.
fn trace_suite(report: &Report, trace_name: &str) -> Suite {
    let mut cases = Vec::new();
    let blind = |key: &str| {
        if report.blind_spots.iter().any(|b| b == key) {
            Case::Skip(format!(
                "blind spot {key}: {}",
                report
                    .blind_spot_details
                    .get(key)
                    .map(String::as_str)
                    .unwrap_or("")
            ))
        } else {
            Case::Pass
        }
    };
    let mut case = |name: String, c: Case| cases.push(("migscope.trace".to_owned(), name, c));
    case("complete".to_owned(), blind("truncated"));
    case("no-lost-events".to_owned(), blind("lost"));
    case("dma-evidence".to_owned(), blind("dma"));
    for b in &report.blind_spots {
        if !["truncated", "lost", "dma"].contains(&b.as_str()) {
            case(format!("blind-spot-{b}"), blind(b));
        }
    }
    let known: Vec<&str> = report.devices.keys().map(String::as_str).collect();
    let orphans: Vec<&Finding> = report
        .violations
        .iter()
        .filter(|v| v.dev.as_deref().is_none_or(|d| !known.contains(&d)))
        .collect();
    if !orphans.is_empty() {
        case("unattributed".to_owned(), fail_case(&orphans));
    }
    if report.dropped_findings > 0 {
        case(
            "findings-stored".to_owned(),
            Case::Skip(format!(
                "{} further findings were counted but not stored",
                report.dropped_findings
            )),
        );
    }
    let mut out = String::new();
    for w in report
        .warnings
        .iter()
        .filter(|w| w.dev.as_deref().is_none_or(|d| !known.contains(&d)))
    {
        out.push_str("warning ");
        out.push_str(&finding_line(w));
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "verdict {} ({} events, {} lost, truncated {})",
        report.verdict.name(),
        report.events,
        report.lost,
        report.truncated
    );
    Suite {
        name: format!("{trace_name}: trace"),
        props: vec![
            ("verdict".to_owned(), report.verdict.name().to_owned()),
            ("violations".to_owned(), report.violations.len().to_string()),
        ],
        cases,
        out,
    }
}

/// The suites as a JUnit XML document, with their totals.
fn to_xml(suites: &[Suite]) -> String {
    let count = |s: &Suite, f: fn(&Case) -> bool| s.cases.iter().filter(|c| f(&c.2)).count();
    let is_fail = |c: &Case| matches!(c, Case::Fail { .. });
    let is_skip = |c: &Case| matches!(c, Case::Skip(_));
    let total: usize = suites.iter().map(|s| s.cases.len()).sum();
    let fails: usize = suites.iter().map(|s| count(s, is_fail)).sum();
    let skips: usize = suites.iter().map(|s| count(s, is_skip)).sum();

    let mut x = String::new();
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"migscope\" tests=\"{total}\" failures=\"{fails}\" errors=\"0\" skipped=\"{skips}\" time=\"0\">"
    );
    for (i, s) in suites.iter().enumerate() {
        let _ = writeln!(
            x,
            "  <testsuite name=\"{}\" id=\"{i}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"0\">",
            esc(&s.name),
            s.cases.len(),
            count(s, is_fail),
            count(s, is_skip)
        );
        x.push_str("    <properties>\n");
        for (k, v) in &s.props {
            let _ = writeln!(
                x,
                "      <property name=\"{}\" value=\"{}\"/>",
                esc(k),
                esc(v)
            );
        }
        x.push_str("    </properties>\n");
        for (class, name, case) in &s.cases {
            case_xml(&mut x, class, name, case);
        }
        if !s.out.is_empty() {
            let _ = writeln!(x, "    <system-out>{}</system-out>", body_esc(&s.out));
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}

/// One `<testcase>`.
fn case_xml(x: &mut String, class: &str, name: &str, case: &Case) {
    let _ = write!(
        x,
        "    <testcase classname=\"{}\" name=\"{}\" time=\"0\"",
        esc(class),
        esc(name)
    );
    match case {
        Case::Pass => x.push_str("/>\n"),
        Case::Skip(m) => {
            let _ = writeln!(x, ">\n      <skipped message=\"{}\"/>", esc(m));
            x.push_str("    </testcase>\n");
        }
        Case::Fail {
            kind,
            message,
            body,
        } => {
            let _ = writeln!(
                x,
                ">\n      <failure type=\"{}\" message=\"{}\">{}</failure>",
                esc(kind),
                esc(message),
                body_esc(body)
            );
            x.push_str("    </testcase>\n");
        }
    }
}

/// Element text: like [`esc`] but keeping newlines as they are.
fn body_esc(s: &str) -> String {
    s.split('\n').map(esc).collect::<Vec<_>>().join("\n")
}

/// Writes the JUnit document for `report` to `path` (write-then-rename). `trace_name` names
/// the suites, e.g. the trace's file name.
pub fn write(report: &Report, trace_name: &str, path: &Path) -> Result<(), ExportError> {
    write_atomic(path, &render(report, trace_name))
}

/// The JUnit document for a trace that could not be checked at all (unusable input): one
/// suite with one test case in error, so the CI report shows why instead of nothing.
pub fn render_error(trace_name: &str, error: &str) -> String {
    let mut x = String::new();
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str(
        "<testsuites name=\"migscope\" tests=\"1\" failures=\"0\" errors=\"1\" skipped=\"0\" time=\"0\">\n",
    );
    let _ = writeln!(
        x,
        "  <testsuite name=\"{}: trace\" id=\"0\" tests=\"1\" failures=\"0\" errors=\"1\" skipped=\"0\" time=\"0\">",
        esc(trace_name)
    );
    let _ = writeln!(
        x,
        "    <testcase classname=\"migscope.trace\" name=\"readable\" time=\"0\">\n      <error type=\"unusable\" message=\"{}\">{}</error>\n    </testcase>",
        esc(error),
        body_esc(error)
    );
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

/// Writes [`render_error`] to `path` (write-then-rename).
pub fn write_error(trace_name: &str, error: &str, path: &Path) -> Result<(), ExportError> {
    write_atomic(path, &render_error(trace_name, error))
}
