//! The Markdown bug report: environment, verdict, each violation with the events around it, a
//! compact timeline per device, blind spots and the commands that reproduce the verdict.
//!
//! Two streaming passes over the trace: the first verifies and collects the environment and
//! per-device state segments (capped per device); the second keeps only a window of events
//! around each reported violation. Memory does not grow with the trace.
//!
//! `--redact` removes, everywhere in the report (header strings, marks, details, events):
//! - IOVAs: the `iova` field of events becomes `"<redacted>"`, and every hexadecimal number
//!   written `0x...` in free text (details, marks, source reasons, doctor output) becomes
//!   `0x<redacted>`;
//! - process ids: the `pid` field of events is dropped;
//! - host names: every occurrence of this machine's host name ([`MdOptions::hostname`], which
//!   `migscope export` reads from `/proc/sys/kernel/hostname`; short and full form) becomes
//!   `<host>`. The trace does not record the recording host's
//!   name; if it was recorded elsewhere and a mark or the kernel string names that host, that
//!   is not recognised — check marks before publishing.
//!
//! Kept: PCI addresses, context names, driver names, kernel release, timestamps and lengths.

use std::{
    collections::{BTreeMap, VecDeque},
    fmt::Write as _,
    path::{Path, PathBuf},
};

use super::{ExportError, write_atomic};
use crate::{
    model::MigState,
    trace::{Event, EventKind, Format, Header, jsonl::event_to_json, open_any},
    verify::{Finding, Options, Report, SegKind, Segment, Verifier, rule},
};

/// Options of `export --format markdown`.
#[derive(Clone, Debug, Default)]
pub struct MdOptions {
    pub verify: Options,
    pub redact: bool,
    /// The host name `redact` removes (the caller reads it: this crate does no host I/O).
    pub hostname: Option<String>,
    /// A `migscope doctor --json` output to summarise.
    pub doctor: Option<PathBuf>,
    /// The `check` flags equivalent to `verify`, for the reproduce section.
    pub check_flags: Vec<String>,
}

/// Violations shown with their surrounding events (the rest are listed without).
const MAX_CONTEXT_VIOLATIONS: usize = 25;
/// Events shown before and after a violation.
const CONTEXT: usize = 3;
/// Timeline segments listed per device.
const MAX_SEGMENTS: usize = 60;
/// Marks listed.
const MAX_MARKS: usize = 30;

struct DevInfo {
    ctx: String,
    flags: String,
    driver: Option<String>,
    state: MigState,
    t: u64,
}

struct Redactor {
    on: bool,
    hosts: Vec<String>,
}

impl Redactor {
    fn new(on: bool, hostname: Option<&str>) -> Self {
        let mut hosts = Vec::new();
        if on && let Some(h) = hostname {
            let h = h.trim().to_owned();
            if h.len() >= 2 && h != "localhost" && h != "(none)" {
                if let Some((short, _)) = h.split_once('.')
                    && short.len() >= 2
                {
                    hosts.push(short.to_owned());
                }
                hosts.insert(0, h);
            }
        }
        Redactor { on, hosts }
    }

    /// Free text: hex numbers and host names.
    fn text(&self, s: &str) -> String {
        if !self.on {
            return s.to_owned();
        }
        let mut o = String::with_capacity(s.len());
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'0'
                && i + 2 < b.len()
                && (b[i + 1] == b'x' || b[i + 1] == b'X')
                && b[i + 2].is_ascii_hexdigit()
            {
                let mut j = i + 2;
                while j < b.len() && b[j].is_ascii_hexdigit() {
                    j += 1;
                }
                o.push_str("0x<redacted>");
                i = j;
            } else {
                let ch = s[i..].chars().next().unwrap_or('\u{FFFD}');
                o.push(ch);
                i += ch.len_utf8().max(1);
            }
        }
        for h in &self.hosts {
            o = replace_word(&o, h, "<host>");
        }
        o
    }

    /// One event as its JSONL line, redacted.
    fn event(&self, ev: &Event) -> String {
        if !self.on {
            return event_to_json(ev);
        }
        let mut ev = ev.clone();
        ev.pid = None;
        let line = event_to_json(&ev);
        match serde_json::from_str::<serde_json::Value>(&line) {
            Ok(mut v) => {
                if let Some(o) = v.as_object_mut() {
                    if o.contains_key("iova") {
                        o.insert("iova".to_owned(), "<redacted>".into());
                    }
                    for (_, val) in o.iter_mut() {
                        if let Some(s) = val.as_str() {
                            *val = self.text(s).into();
                        }
                    }
                }
                v.to_string()
            }
            Err(_) => self.text(&line),
        }
    }
}

/// Replaces `word` where it is not part of a longer name (neighbours are not alphanumeric,
/// `-` or `_`), so a host called `vm` leaves a context `vm7` alone.
fn replace_word(s: &str, word: &str, with: &str) -> String {
    let is_name = |c: char| c.is_alphanumeric() || c == '-' || c == '_';
    let mut o = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find(word) {
        let before = rest[..pos].chars().next_back();
        let after = rest[pos + word.len()..].chars().next();
        o.push_str(&rest[..pos]);
        if before.is_some_and(is_name) || after.is_some_and(is_name) {
            o.push_str(word);
        } else {
            o.push_str(with);
        }
        rest = &rest[pos + word.len()..];
    }
    o.push_str(rest);
    o
}

/// A violation's window of events, being filled during the second pass.
#[derive(Default)]
struct Window {
    before: Vec<(u64, String)>,
    at: Option<(u64, String)>,
    after: Vec<(u64, String)>,
}

/// Milliseconds with three decimals, cut (not rounded) to the microsecond: exact, so the
/// report's durations read back as `check --json`'s nanoseconds to the microsecond.
fn ms(ns: u64) -> String {
    format!("{}.{:03} ms", ns / 1_000_000, ns / 1_000 % 1_000)
}

/// Markdown-safe inline code.
fn code(s: &str) -> String {
    if s.contains('`') {
        format!("`` {s} ``")
    } else {
        format!("`{s}`")
    }
}

/// Escapes table cell text.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@+,".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// A device's numbers, the ones `check --json` gives it (`export::agree` reads them back):
/// `2 quiesce(s): min 1.000 ms, max 3.000 ms, mean 2.000 ms; DMA evidence 4 (1 while
/// quiesced), IRQs 2 (0 while quiesced); 1 violation(s).`
fn device_numbers(report: &Report, dev: &str, s: &crate::verify::DeviceSummary) -> String {
    let quiesces = match s.quiesce_total_ns.checked_div(s.quiesce_count) {
        Some(mean) => format!(
            "{} quiesce(s): min {}, max {}, mean {}",
            s.quiesce_count,
            ms(s.quiesce_min_ns),
            ms(s.quiesce_max_ns),
            ms(mean)
        ),
        None => "0 quiesce(s)".to_owned(),
    };
    let violations = report
        .violations
        .iter()
        .filter(|v| v.dev.as_deref() == Some(dev))
        .count();
    format!(
        "{quiesces}; DMA evidence {} ({} while quiesced), IRQs {} ({} while quiesced); {violations} violation(s).",
        s.dma, s.dma_quiesced, s.irq, s.irq_quiesced
    )
}

/// Writes the Markdown report for the trace at `input` (either format) to `output`.
pub fn export(input: &Path, output: &Path, opts: &MdOptions) -> Result<Report, ExportError> {
    let red = Redactor::new(opts.redact, opts.hostname.as_deref());
    let (c, report) = first_pass(input, &opts.verify)?;
    let shown: Vec<&Finding> = report
        .violations
        .iter()
        .take(MAX_CONTEXT_VIOLATIONS)
        .collect();
    let stdin = input.as_os_str() == "-";
    let (windows, second_pass_error) = if shown.is_empty() || stdin {
        (shown.iter().map(|_| Window::default()).collect(), None)
    } else {
        context_windows(input, &red, &shown)
    };
    let r = Render {
        red: &red,
        report: &report,
        c: &c,
        input,
        opts,
    };
    let mut o = String::new();
    r.summary(&mut o);
    r.environment(&mut o);
    r.doctor(&mut o)?;
    r.violations(
        &mut o,
        &shown,
        &windows,
        stdin,
        second_pass_error.as_deref(),
    );
    r.blind_spots(&mut o);
    r.timeline(&mut o);
    r.reproduce(&mut o);
    write_atomic(output, &o)?;
    Ok(report)
}

/// What the first pass collects beside the verifier's report.
struct Collected {
    header: Header,
    format: Format,
    devices: BTreeMap<String, DevInfo>,
    /// Each device's timeline segments (the first [`MAX_SEGMENTS`]) and how many more.
    segs: BTreeMap<String, (Vec<Segment>, u64)>,
    marks: Vec<(u64, String)>,
    n_marks: u64,
    drive_cmds: Vec<String>,
    t0: u64,
    t_last: u64,
    truncated_at: Option<u64>,
}

impl Collected {
    fn keep(&mut self, dev: &str, s: Segment) {
        let e = match self.segs.get_mut(dev) {
            Some(e) => e,
            None => self.segs.entry(dev.to_owned()).or_default(),
        };
        if e.0.len() < MAX_SEGMENTS {
            e.0.push(s);
        } else {
            e.1 += 1;
        }
    }

    /// Notes what the report shows of one event: a device's first declaration, marks (and the
    /// `migscope drive` command lines among them).
    fn note(&mut self, ev: &Event) {
        match &ev.kind {
            EventKind::Device {
                dev,
                flags,
                ctx,
                state,
                driver,
                sources: _,
            } => {
                self.devices.entry(dev.clone()).or_insert_with(|| DevInfo {
                    ctx: ctx.clone(),
                    flags: crate::model::flag_names(*flags).join(", "),
                    driver: driver.clone(),
                    state: *state,
                    t: ev.t,
                });
            }
            EventKind::Mark { label } => {
                self.n_marks += 1;
                if self.marks.len() < MAX_MARKS {
                    self.marks.push((ev.t, label.clone()));
                }
                if let Some(pos) = label.find("migscope drive")
                    && self.drive_cmds.len() < 5
                {
                    self.drive_cmds.push(label[pos..].trim().to_owned());
                }
            }
            _ => {}
        }
    }
}

/// Pass 1: verifies the trace and collects the environment and the timelines (the verifier's
/// own segments: what the report draws is what the rules judged).
fn first_pass(input: &Path, verify: &Options) -> Result<(Collected, Report), ExportError> {
    let mut reader = open_any(input)?;
    let header: Header = reader.header().clone();
    let mut verifier = Verifier::new(&header, verify.clone());
    verifier.keep_segments();
    let mut c = Collected {
        format: reader.format(),
        header,
        devices: BTreeMap::new(),
        segs: BTreeMap::new(),
        marks: Vec::new(),
        n_marks: 0,
        drive_cmds: Vec::new(),
        t0: 0,
        t_last: 0,
        truncated_at: None,
    };
    let mut t0 = None;
    let mut warned = 0;
    while let Some(item) = reader.next_event() {
        let (line, ev) = item?;
        verifier.forward_warnings(reader.warnings(), &mut warned);
        t0.get_or_insert(ev.t);
        c.t_last = ev.t;
        c.note(&ev);
        verifier.push(line, &ev);
        for (dev, s) in verifier.drain_segments() {
            c.keep(dev, s);
        }
    }
    verifier.forward_warnings(reader.warnings(), &mut warned);
    c.truncated_at = reader.truncated_at();
    drop(reader);
    for (dev, s) in verifier.open_segments() {
        c.keep(dev, s);
    }
    c.t0 = t0.unwrap_or(0);
    Ok((c, verifier.finish()))
}

/// Pass 2: the events around each of the `shown` violations (by their line), and the error
/// that ended the pass early, if one did.
fn context_windows(
    input: &Path,
    red: &Redactor,
    shown: &[&Finding],
) -> (Vec<Window>, Option<String>) {
    let mut windows: Vec<Window> = shown.iter().map(|_| Window::default()).collect();
    let mut by_line: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (i, v) in shown.iter().enumerate() {
        if v.line > 0 {
            by_line.entry(v.line).or_default().push(i);
        }
    }
    let mut ring: VecDeque<(u64, String)> = VecDeque::with_capacity(CONTEXT + 1);
    let mut open: Vec<usize> = Vec::new();
    let last_line = by_line.keys().next_back().copied().unwrap_or(0);
    let mut r = match open_any(input) {
        Err(e) => return (windows, Some(e.to_string())),
        Ok(r) => r,
    };
    while let Some(item) = r.next_event() {
        let (line, ev) = match item {
            Ok(x) => x,
            Err(e) => return (windows, Some(e.to_string())),
        };
        let text = red.event(&ev);
        open.retain(|&i| {
            windows[i].after.push((line, text.clone()));
            windows[i].after.len() < CONTEXT
        });
        if let Some(idx) = by_line.get(&line) {
            for &i in idx {
                windows[i].before = ring.iter().cloned().collect();
                windows[i].at = Some((line, text.clone()));
                open.push(i);
            }
        }
        ring.push_back((line, text));
        if ring.len() > CONTEXT {
            ring.pop_front();
        }
        if open.is_empty() && line >= last_line {
            break;
        }
    }
    (windows, None)
}

/// The report's sections, each appended to the text being built.
struct Render<'a> {
    red: &'a Redactor,
    report: &'a Report,
    c: &'a Collected,
    input: &'a Path,
    opts: &'a MdOptions,
}

impl Render<'_> {
    /// A time from the first event.
    fn rel(&self, t: u64) -> String {
        ms(t.saturating_sub(self.c.t0))
    }

    /// The title, the verdict line and the violated rules.
    fn summary(&self, o: &mut String) {
        let (red, report) = (self.red, self.report);
        let name = super::trace_name(self.input);
        let _ = writeln!(o, "# migscope report: {}\n", red.text(&name));
        let _ = writeln!(
            o,
            "**Verdict: {}** — {} violation(s), {} warning(s), {} blind spot(s), {} events over {}.\n",
            report.verdict.name().to_uppercase(),
            report.violations.len(),
            report.warnings.len(),
            report.blind_spots.len(),
            report.events,
            ms(self.c.t_last.saturating_sub(self.c.t0))
        );
        if !report.violations.is_empty() {
            let _ = writeln!(
                o,
                "Violated rules: {}.\n",
                report
                    .violated_rules()
                    .iter()
                    .map(|r| format!("{} ({})", code(r), rule::explain(r)))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
    }

    /// Kernel, tools, the trace, its sources and its devices.
    fn environment(&self, o: &mut String) {
        let (red, report, c) = (self.red, self.report, self.c);
        let header = &c.header;
        o.push_str("## Environment\n\n");
        let opt = |s: &Option<String>| {
            s.as_deref()
                .map_or("(not recorded)".to_owned(), |s| red.text(s))
        };
        let _ = writeln!(o, "- Kernel: {}", opt(&header.kernel));
        let _ = writeln!(o, "- Recorded by: {}", opt(&header.tool));
        let _ = writeln!(
            o,
            "- Report by: migscope {} ({})",
            env!("CARGO_PKG_VERSION"),
            if self.opts.redact {
                "redacted"
            } else {
                "not redacted"
            }
        );
        let _ = writeln!(
            o,
            "- Trace: {} format, clock `{}`, {} events, first at t={} ns{}",
            c.format.name(),
            red.text(&header.clock),
            report.events,
            c.t0,
            match c.truncated_at {
                Some(off) => format!(", file cut inside a record at byte offset {off}"),
                None => String::new(),
            }
        );
        o.push_str("\n| source | status |\n|---|---|\n");
        if header.sources.is_empty() {
            o.push_str("| (none recorded) | |\n");
        }
        for (k, v) in &header.sources {
            let _ = writeln!(o, "| {} | {} |", cell(k), cell(&red.text(v)));
        }
        o.push_str("\n| device | driver | flags | ctx | declared state | final state |\n|---|---|---|---|---|---|\n");
        for (dev, d) in &c.devices {
            let fin = report
                .devices
                .get(dev)
                .and_then(|s| s.final_state)
                .map_or("unknown", MigState::name);
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} at +{} | {} |",
                cell(dev),
                cell(&d.driver.as_deref().map_or("-".to_owned(), |s| red.text(s))),
                cell(&d.flags),
                cell(&red.text(&d.ctx)),
                d.state.name(),
                self.rel(d.t),
                fin
            );
        }
        for dev in report
            .devices
            .keys()
            .filter(|d| !c.devices.contains_key(*d))
        {
            let _ = writeln!(o, "| {} | (undeclared) | | | | |", cell(dev));
        }
        o.push('\n');
    }

    /// The `migscope doctor --json` output given with `--doctor`, one line per key.
    fn doctor(&self, o: &mut String) -> Result<(), ExportError> {
        let red = self.red;
        o.push_str("### Host check (`migscope doctor`)\n\n");
        let Some(p) = &self.opts.doctor else {
            o.push_str(
                "No `migscope doctor` output was given (`export --doctor FILE` with the output of \
                 `migscope doctor --json` on the recording host adds it here).\n\n",
            );
            return Ok(());
        };
        let text = std::fs::read_to_string(p).map_err(|source| ExportError::ReadInput {
            file: p.display().to_string(),
            source,
        })?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| ExportError::InputJson {
                file: p.display().to_string(),
                source,
            })?;
        match v.as_object() {
            Some(obj) => {
                for (k, val) in obj {
                    let s = match val {
                        serde_json::Value::String(s) => s.clone(),
                        other => {
                            let mut s = other.to_string();
                            if s.len() > 300 {
                                let mut cut = 300;
                                while !s.is_char_boundary(cut) {
                                    cut -= 1;
                                }
                                s.truncate(cut);
                                s.push_str(" …");
                            }
                            s
                        }
                    };
                    let _ = writeln!(o, "- **{}**: {}", cell(k), code(&red.text(&s)));
                }
            }
            None => {
                let _ = writeln!(o, "{}", code(&red.text(&v.to_string())));
            }
        }
        o.push('\n');
        Ok(())
    }

    /// The first violations with their events around them, then the rest as a table.
    fn violations(
        &self,
        o: &mut String,
        shown: &[&Finding],
        windows: &[Window],
        stdin: bool,
        second_pass_error: Option<&str>,
    ) {
        let (red, report) = (self.red, self.report);
        o.push_str("## Violations\n\n");
        if report.violations.is_empty() {
            o.push_str("None.\n\n");
        }
        for (i, v) in shown.iter().enumerate() {
            let _ = writeln!(
                o,
                "### {}. {} on {} at +{} (line {})\n",
                i + 1,
                code(v.rule),
                red.text(v.dev.as_deref().unwrap_or("(no device)")),
                self.rel(v.t),
                v.line
            );
            let _ = writeln!(o, "{}\n", red.text(&v.detail));
            let _ = writeln!(o, "_{}_\n", rule::explain(v.rule));
            let w = &windows[i];
            match &w.at {
                Some(at) => {
                    o.push_str("```\n");
                    for (l, t) in &w.before {
                        let _ = writeln!(o, "   {l:>8}  {t}");
                    }
                    let _ = writeln!(o, ">> {:>8}  {}", at.0, at.1);
                    for (l, t) in &w.after {
                        let _ = writeln!(o, "   {l:>8}  {t}");
                    }
                    o.push_str("```\n\n");
                }
                None if stdin => o.push_str(
                    "(surrounding events not shown: the trace was read from standard input)\n\n",
                ),
                None if v.line == 0 => {
                    o.push_str("(found at the end of the trace; no single event)\n\n")
                }
                None => {
                    let _ = writeln!(
                        o,
                        "(surrounding events not shown{})\n",
                        second_pass_error
                            .map(|e| format!(": {}", red.text(e)))
                            .unwrap_or_default()
                    );
                }
            }
        }
        let rest = report.violations.len().saturating_sub(shown.len());
        if rest > 0 {
            let _ = writeln!(o, "{rest} more violation(s) without context:\n");
            o.push_str("| rule | device | time | line | detail |\n|---|---|---|---|---|\n");
            for v in report.violations.iter().skip(shown.len()).take(200) {
                let _ = writeln!(
                    o,
                    "| {} | {} | +{} | {} | {} |",
                    v.rule,
                    cell(&red.text(v.dev.as_deref().unwrap_or("-"))),
                    self.rel(v.t),
                    v.line,
                    cell(&red.text(&v.detail))
                );
            }
            if rest > 200 {
                let _ = writeln!(
                    o,
                    "\n(and {} more: run `migscope check` for all)",
                    rest - 200
                );
            }
            o.push('\n');
        }
        if report.dropped_findings > 0 {
            let _ = writeln!(
                o,
                "{} further finding(s) were counted but not stored.\n",
                report.dropped_findings
            );
        }
    }

    /// The blind spots with why, then the warnings.
    fn blind_spots(&self, o: &mut String) {
        let (red, report) = (self.red, self.report);
        o.push_str("## Blind spots\n\n");
        if report.blind_spots.is_empty() {
            o.push_str("None: every rule that matters had its evidence.\n\n");
        }
        for b in &report.blind_spots {
            let _ = writeln!(
                o,
                "- **{b}**: {}",
                red.text(
                    report
                        .blind_spot_details
                        .get(b)
                        .map(String::as_str)
                        .unwrap_or("")
                )
            );
        }
        if !report.blind_spots.is_empty() {
            o.push('\n');
        }
        if !report.warnings.is_empty() {
            o.push_str("### Warnings\n\n");
            for w in report.warnings.iter().take(50) {
                let _ = writeln!(
                    o,
                    "- {} {} at +{} (line {}): {}",
                    code(w.rule),
                    red.text(w.dev.as_deref().unwrap_or("")),
                    self.rel(w.t),
                    w.line,
                    red.text(&w.detail)
                );
            }
            if report.warnings.len() > 50 {
                let _ = writeln!(o, "- … {} more", report.warnings.len() - 50);
            }
            o.push('\n');
        }
    }

    /// Each device's numbers and segments, then the marks.
    fn timeline(&self, o: &mut String) {
        let (red, report, c) = (self.red, self.report, self.c);
        o.push_str("## Timeline\n\nTimes are from the first event. Quiesce = a SET entering a quiescent state; its duration is the time the SET took.\n\n");
        for (dev, s) in &report.devices {
            let _ = writeln!(o, "### {}\n", red.text(dev));
            let _ = writeln!(o, "{}\n", device_numbers(report, dev, s));
            let Some((list, more)) = c.segs.get(dev) else {
                continue;
            };
            o.push_str("```\n");
            for s in list {
                let tag = match s.what {
                    SegKind::State(_) => "  ",
                    SegKind::Transition { quiesce: true, .. } => "Q ",
                    SegKind::Transition { .. } => "->",
                };
                let _ = writeln!(
                    o,
                    "{tag} {:>14} .. {:>14}  {:>12}  {}",
                    self.rel(s.start),
                    self.rel(s.end),
                    ms(s.duration()),
                    s.what.label()
                );
            }
            if *more > 0 {
                let _ = writeln!(o, "… {more} more segment(s)");
            }
            o.push_str("```\n\n");
        }
        if c.n_marks > 0 {
            o.push_str("### Marks\n\n");
            for (t, l) in &c.marks {
                let _ = writeln!(o, "- +{}: {}", self.rel(*t), code(&red.text(l)));
            }
            if c.n_marks > c.marks.len() as u64 {
                let _ = writeln!(o, "- … {} more", c.n_marks - c.marks.len() as u64);
            }
            o.push('\n');
        }
    }

    /// The commands that verify the trace again, and the drive command lines its marks hold.
    fn reproduce(&self, o: &mut String) {
        let red = self.red;
        let input = shell_quote(&red.text(&self.input.display().to_string()));
        o.push_str("## Reproduce\n\nVerify this trace again (exit status 0 pass, 1 fail, 2 inconclusive, 3 unusable):\n\n```sh\n");
        let mut check = format!("migscope check {input}");
        for f in &self.opts.check_flags {
            check.push(' ');
            check.push_str(f);
        }
        let _ = writeln!(o, "{check}");
        let _ = writeln!(
            o,
            "migscope export {input} --format perfetto -o trace.json   # open in ui.perfetto.dev"
        );
        o.push_str("```\n\n");
        if self.c.drive_cmds.is_empty() {
            o.push_str("The trace has no mark with a `migscope drive` command line, so how the devices were driven is not recorded here.\n");
        } else {
            o.push_str("The devices were driven with (from the trace's marks):\n\n```sh\n");
            for c in &self.c.drive_cmds {
                let _ = writeln!(o, "{}", red.text(c));
            }
            o.push_str("```\n");
        }
    }
}
