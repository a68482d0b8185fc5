//! One answer everywhere: the numbers every view of a trace states — per device its quiesces
//! (count; min, max and mean duration), the DMA and interrupt evidence seen while quiesced and
//! its violations; for the trace its violations and verdict — read back out of each format.
//!
//! [`Counts::from_report`] is the verifier's answer; `from_check_json`, `from_perfetto`,
//! `from_junit` and `from_markdown` read what each output *says*, by its own visible structure
//! (slices and instants, test cases and properties, the report's sentences), never by calling
//! the code that wrote it. The agreement test (`tests/export_agree.rs`) and the lab judge
//! (`cargo xtask lab`) hold every format to `check --json` with [`disagreements`]; the TUI's
//! stats pane joins through [`Counts::from_tui_stats`] (the pane's drawn text; the agreement
//! test draws it).
//!
//! Durations are compared to the microsecond, the finest the Markdown report prints (cut, not
//! rounded, on both sides). A format's per-device evidence counts are what it shows, so they
//! agree while the verifier kept every finding (fewer than `MAX_FINDINGS`).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::verify::{Report, rule};

/// The numbers of one device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceCounts {
    pub quiesces: u64,
    /// Min, max and mean quiesce time in µs (None without a quiesce).
    pub quiesce_us: Option<(u64, u64, u64)>,
    pub dma_quiesced: u64,
    pub irq_quiesced: u64,
    pub violations: u64,
}

/// The numbers of one trace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// `pass`, `fail` or `inconclusive`.
    pub verdict: String,
    pub violations: u64,
    pub devices: BTreeMap<String, DeviceCounts>,
}

fn us(ns: u64) -> u64 {
    ns / 1_000
}

fn stats_us(min: u64, max: u64, mean: u64) -> (u64, u64, u64) {
    (us(min), us(max), us(mean))
}

fn field_u64(v: &Value, key: &str, what: &str) -> Result<u64, String> {
    v.get(key)
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("{what}: no number `{key}`"))
}

impl Counts {
    /// The verifier's answer.
    pub fn from_report(r: &Report) -> Self {
        let mut c = Counts {
            verdict: r.verdict.name().to_owned(),
            violations: r.violations.len() as u64,
            devices: BTreeMap::new(),
        };
        for (dev, s) in &r.devices {
            let quiesce_us = s
                .quiesce_total_ns
                .checked_div(s.quiesce_count)
                .map(|mean| stats_us(s.quiesce_min_ns, s.quiesce_max_ns, mean));
            let violations = r
                .violations
                .iter()
                .filter(|v| v.dev.as_deref() == Some(dev.as_str()))
                .count() as u64;
            c.devices.insert(
                dev.clone(),
                DeviceCounts {
                    quiesces: s.quiesce_count,
                    quiesce_us,
                    dma_quiesced: s.dma_quiesced,
                    irq_quiesced: s.irq_quiesced,
                    violations,
                },
            );
        }
        c
    }

    /// `check --json`'s verdict object (TRACE-FORMAT.md).
    pub fn from_check_json(v: &Value) -> Result<Self, String> {
        let verdict = v
            .get("verdict")
            .and_then(Value::as_str)
            .ok_or("check --json: no `verdict`")?;
        let violations = v
            .get("violations")
            .and_then(Value::as_array)
            .ok_or("check --json: no `violations` list")?;
        let mut c = Counts {
            verdict: verdict.to_owned(),
            violations: violations.len() as u64,
            devices: BTreeMap::new(),
        };
        let devices = v
            .get("devices")
            .and_then(Value::as_object)
            .ok_or("check --json: no `devices` object")?;
        for (dev, d) in devices {
            let what = format!("check --json: device {dev}");
            let q = d
                .get("quiesce_ns")
                .ok_or_else(|| format!("{what}: no `quiesce_ns`"))?;
            let quiesces = field_u64(q, "count", &what)?;
            let quiesce_us = if quiesces == 0 {
                None
            } else {
                Some(stats_us(
                    field_u64(q, "min", &what)?,
                    field_u64(q, "max", &what)?,
                    field_u64(q, "mean", &what)?,
                ))
            };
            let own = violations
                .iter()
                .filter(|x| x.get("dev").and_then(Value::as_str) == Some(dev.as_str()))
                .count() as u64;
            c.devices.insert(
                dev.clone(),
                DeviceCounts {
                    quiesces,
                    quiesce_us,
                    dma_quiesced: field_u64(d, "dma_quiesced", &what)?,
                    irq_quiesced: field_u64(d, "irq_quiesced", &what)?,
                    violations: own,
                },
            );
        }
        Ok(c)
    }

    /// A Perfetto export: `quiesce` slices per `args.dev` (durations from `args.dur_ns`),
    /// `VIOLATION` instants per `args.dev` and rule, the verdict in `otherData`. Only devices
    /// with a track of their own (a slice) are listed.
    pub fn from_perfetto(v: &Value) -> Result<Self, String> {
        let events = v
            .get("traceEvents")
            .and_then(Value::as_array)
            .ok_or("perfetto: no `traceEvents` list")?;
        let verdict = v
            .pointer("/otherData/verdict")
            .and_then(Value::as_str)
            .ok_or("perfetto: no `otherData.verdict`")?;
        let mut c = Counts {
            verdict: verdict.to_owned(),
            ..Counts::default()
        };
        let mut durations: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for e in events {
            let cat = e.get("cat").and_then(Value::as_str).unwrap_or("");
            let dev = e.pointer("/args/dev").and_then(Value::as_str);
            match (e.get("ph").and_then(Value::as_str), cat) {
                (Some("X"), _) => {
                    let dev = dev.ok_or("perfetto: a slice without `args.dev`")?;
                    let durs = durations.entry(dev.to_owned()).or_default();
                    if cat == "quiesce" {
                        let ns = e
                            .pointer("/args/dur_ns")
                            .and_then(Value::as_u64)
                            .ok_or("perfetto: a quiesce slice without `args.dur_ns`")?;
                        durs.push(ns);
                    }
                }
                (Some("i"), "violation") => {
                    c.violations += 1;
                    let Some(dev) = dev else { continue };
                    let d = c.devices.entry(dev.to_owned()).or_default();
                    d.violations += 1;
                    match e.pointer("/args/rule").and_then(Value::as_str) {
                        Some(rule::DMA_AFTER_QUIESCE) => d.dma_quiesced += 1,
                        Some(rule::IRQ_AFTER_QUIESCE) => d.irq_quiesced += 1,
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        for (dev, durs) in durations {
            let d = c.devices.entry(dev).or_default();
            d.quiesces = durs.len() as u64;
            if let (Some(min), Some(max)) = (durs.iter().min(), durs.iter().max()) {
                let total: u64 = durs.iter().sum();
                d.quiesce_us = Some(stats_us(*min, *max, total / d.quiesces));
            }
        }
        Ok(c)
    }

    /// A JUnit document: each device suite's properties (`device`, `quiesce_*`,
    /// `dma_quiesced`, `irq_quiesced`), the violations its `<failure>`s count ("N
    /// violation(s)"), the trace suite's `verdict`.
    pub fn from_junit(xml: &str) -> Result<Self, String> {
        let mut c = Counts::default();
        let mut verdict = None;
        for suite in xml.split("<testsuite ").skip(1) {
            let suite = suite.split("</testsuite>").next().unwrap_or(suite);
            let props = junit_props(suite);
            let failed: u64 = suite
                .split("<failure ")
                .skip(1)
                .map(|f| {
                    let msg = xml_attr(f, "message").unwrap_or_default();
                    msg.split(' ')
                        .next()
                        .and_then(|n| n.parse::<u64>().ok())
                        .filter(|_| msg.contains(" violation(s)"))
                        .ok_or_else(|| format!("junit: a failure message without a count: {msg}"))
                })
                .sum::<Result<u64, String>>()?;
            c.violations += failed;
            if let Some(v) = props.get("verdict") {
                verdict = Some(v.clone());
            }
            let Some(dev) = props.get("device") else {
                continue;
            };
            let num = |k: &str| -> Result<u64, String> {
                props
                    .get(k)
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| format!("junit: device {dev}: no number property `{k}`"))
            };
            let quiesces = num("quiesce_count")?;
            let quiesce_us = if quiesces == 0 {
                None
            } else {
                Some(stats_us(
                    num("quiesce_min_ns")?,
                    num("quiesce_max_ns")?,
                    num("quiesce_mean_ns")?,
                ))
            };
            c.devices.insert(
                dev.clone(),
                DeviceCounts {
                    quiesces,
                    quiesce_us,
                    dma_quiesced: num("dma_quiesced")?,
                    irq_quiesced: num("irq_quiesced")?,
                    violations: failed,
                },
            );
        }
        c.verdict = verdict.ok_or("junit: no suite with a `verdict` property")?;
        Ok(c)
    }

    /// A Markdown report: the verdict line, and under "## Timeline" each device's heading and
    /// its numbers sentence.
    pub fn from_markdown(md: &str) -> Result<Self, String> {
        let head = md
            .split("**Verdict: ")
            .nth(1)
            .ok_or("markdown: no `**Verdict: ` line")?;
        let (verdict, rest) = head
            .split_once("**")
            .ok_or("markdown: unterminated verdict")?;
        let violations = rest
            .trim_start_matches([' ', '—'])
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or("markdown: the verdict line has no violation count")?;
        let mut c = Counts {
            verdict: verdict.to_lowercase(),
            violations,
            devices: BTreeMap::new(),
        };
        let timeline = md
            .split("\n## Timeline\n")
            .nth(1)
            .ok_or("markdown: no `## Timeline` section")?;
        let timeline = timeline.split("\n## ").next().unwrap_or(timeline);
        let mut lines = timeline.lines();
        while let Some(l) = lines.next() {
            let Some(dev) = l.strip_prefix("### ") else {
                continue;
            };
            let Some(numbers) = lines.by_ref().find(|l| !l.trim().is_empty()) else {
                break;
            };
            if numbers.contains(" quiesce(s)") {
                let d = md_device(numbers).map_err(|e| format!("markdown: device {dev}: {e}"))?;
                c.devices.insert(dev.to_owned(), d);
            }
        }
        Ok(c)
    }
}

impl Counts {
    /// The TUI's stats pane, as drawn (its text, one screen line per line, borders allowed):
    /// `verdict FAIL  violations 2 ...`, then per device a `device NAME ...` line followed by
    /// ` quiesces N: min A ms, max B ms, mean C ms`, ` dma N (M while quiesced)  irq N (M while
    /// quiesced)` and ` violations N`. Read wide enough that no line wraps.
    pub fn from_tui_stats(text: &str) -> Result<Self, String> {
        let mut c = Counts::default();
        let mut verdict = None;
        let mut dev: Option<(String, DeviceCounts)> = None;
        for l in text.lines() {
            let l = l.trim_matches(|ch: char| ch.is_whitespace() || "│┃".contains(ch));
            if let Some(rest) = l.strip_prefix("verdict ") {
                let v = rest.split_whitespace().next().unwrap_or("");
                verdict = Some(v.to_lowercase());
                c.violations = md_count(rest, "  warnings").map_err(|e| format!("tui: {e}"))?;
            } else if let Some(rest) = l.strip_prefix("device ") {
                let name = rest.split(' ').next().unwrap_or(rest).to_owned();
                if let Some((n, d)) = dev.replace((name, DeviceCounts::default())) {
                    c.devices.insert(n, d);
                }
            } else if let Some((name, d)) = dev.as_mut() {
                let what = |e: String| format!("tui: device {name}: {e}");
                if let Some(q) = l.strip_prefix("quiesces ") {
                    let (n, stats) = q.split_once(": ").unwrap_or((q, ""));
                    d.quiesces = n.parse().map_err(|_| what(format!("`{l}`")))?;
                    if !stats.is_empty() {
                        d.quiesce_us = Some(md_stats(stats).map_err(what)?);
                    }
                } else if l.starts_with("dma ") {
                    let (dma, irq) = l
                        .split_once("  irq ")
                        .ok_or_else(|| what(format!("`{l}`")))?;
                    d.dma_quiesced = md_count(dma, " while quiesced").map_err(what)?;
                    d.irq_quiesced = md_count(irq, " while quiesced").map_err(what)?;
                } else if let Some(v) = l.strip_prefix("violations ") {
                    let n = v.split_whitespace().next().unwrap_or("");
                    d.violations = n.parse().map_err(|_| what(format!("`{l}`")))?;
                }
            }
        }
        if let Some((n, d)) = dev {
            c.devices.insert(n, d);
        }
        c.verdict = verdict.ok_or("tui: no `verdict` line in the stats pane")?;
        Ok(c)
    }
}

/// `12.345 ms` -> 12345 (µs).
fn md_ms(s: &str) -> Result<u64, String> {
    let n = s
        .trim()
        .strip_suffix(" ms")
        .ok_or_else(|| format!("`{s}`"))?;
    let (whole, frac) = n.split_once('.').ok_or_else(|| format!("`{s}`"))?;
    let whole: u64 = whole.parse().map_err(|_| format!("`{s}`"))?;
    let frac: u64 = frac.parse().map_err(|_| format!("`{s}`"))?;
    if n.len() - whole.to_string().len() != 4 {
        return Err(format!("`{s}`: not three decimals"));
    }
    Ok(whole * 1_000 + frac)
}

/// `min 1.000 ms, max 3.250 ms, mean 2.125 ms` -> (1000, 3250, 2125) (µs).
fn md_stats(stats: &str) -> Result<(u64, u64, u64), String> {
    let mut it = stats.split(", ").map(|p| {
        p.split_once(' ')
            .map(|(_, v)| v)
            .ok_or_else(|| format!("`{p}`"))
            .and_then(md_ms)
    });
    let mut next = || it.next().unwrap_or_else(|| Err(format!("`{stats}`")));
    Ok((next()?, next()?, next()?))
}

/// The number before `what` in `s` (`"4 (1 while quiesced)"`, `"(1 while"` -> 1).
fn md_count(s: &str, what: &str) -> Result<u64, String> {
    let before = s.split(what).next().ok_or_else(|| format!("no `{what}`"))?;
    before
        .rsplit([' ', '('])
        .find(|w| !w.is_empty())
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| format!("no count before `{what}` in `{s}`"))
}

/// `2 quiesce(s): min 1.000 ms, max 3.000 ms, mean 2.000 ms; DMA evidence 4 (1 while
/// quiesced), IRQs 2 (0 while quiesced); 1 violation(s).`
fn md_device(line: &str) -> Result<DeviceCounts, String> {
    let parts: Vec<&str> = line.split("; ").collect();
    let [q, dma_irq, viol] = parts[..] else {
        return Err(format!("`{line}`: expected three `; ` parts"));
    };
    let quiesces = md_count(q, " quiesce(s)")?;
    let quiesce_us = match q.split_once(": ") {
        None => None,
        Some((_, stats)) => Some(md_stats(stats)?),
    };
    let (dma, irq) = dma_irq
        .split_once("), ")
        .ok_or_else(|| format!("`{dma_irq}`"))?;
    Ok(DeviceCounts {
        quiesces,
        quiesce_us,
        dma_quiesced: md_count(dma, " while quiesced")?,
        irq_quiesced: md_count(irq, " while quiesced")?,
        violations: md_count(viol, " violation(s)")?,
    })
}

/// `name="value"` in an XML tag's text, unescaped.
fn xml_attr(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
    let len = tag[start..].find('"')?;
    Some(
        tag[start..start + len]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&#10;", "\n")
            .replace("&amp;", "&"),
    )
}

fn junit_props(suite: &str) -> BTreeMap<String, String> {
    suite
        .split("<property ")
        .skip(1)
        .filter_map(|p| Some((xml_attr(p, "name")?, xml_attr(p, "value")?)))
        .collect()
}

/// Where `got` (from the format named `what`) disagrees with `want`, one sentence each. A
/// format that lists no numbers for a device the verifier knows disagrees unless the verifier
/// has nothing to say about it (no quiesce, no evidence while quiesced, no violation): Perfetto
/// draws no track for a device no event names.
pub fn disagreements(what: &str, want: &Counts, got: &Counts) -> Vec<String> {
    let mut out = Vec::new();
    if want.verdict != got.verdict {
        out.push(format!(
            "{what}: verdict {} (check: {})",
            got.verdict, want.verdict
        ));
    }
    if want.violations != got.violations {
        out.push(format!(
            "{what}: {} violation(s) (check: {})",
            got.violations, want.violations
        ));
    }
    let quiet = DeviceCounts::default();
    for (dev, w) in &want.devices {
        let g = got.devices.get(dev).unwrap_or(&quiet);
        if w != g {
            out.push(format!("{what}: device {dev}: {g:?} (check: {w:?})"));
        }
    }
    for dev in got
        .devices
        .keys()
        .filter(|d| !want.devices.contains_key(*d))
    {
        out.push(format!("{what}: device {dev} is not in check's report"));
    }
    out
}

/// Where the verdict of a trace recorded with `--irq-detail all` (every interrupt an `irq`)
/// differs from that of one recorded at the same time with `--irq-detail quiesce` (bins while
/// the device could not be quiescing), both as `check --json` gave them: the verdict, the
/// violations (each rule and how often), the blind spots, and per device its quiesces and the
/// DMA and interrupts while quiesced. Quiesce durations are left out: two recorders stamp the
/// same SET with their own clock reads, nanoseconds apart.
pub fn irq_detail_disagreements(quiesce: &Value, all: &Value) -> Result<Vec<String>, String> {
    let counts = |v: &Value| -> Result<Counts, String> {
        let mut c = Counts::from_check_json(v)?;
        for d in c.devices.values_mut() {
            d.quiesce_us = None;
        }
        Ok(c)
    };
    let mut out = disagreements("--irq-detail all", &counts(quiesce)?, &counts(all)?);
    let rules = |v: &Value| -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for f in v
            .get("violations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(r) = f.get("rule").and_then(Value::as_str) {
                *m.entry(r.to_owned()).or_default() += 1;
            }
        }
        m
    };
    let (q, a) = (rules(quiesce), rules(all));
    if q != a {
        out.push(format!(
            "--irq-detail all: violations {a:?} (quiesce: {q:?})"
        ));
    }
    let blind = |v: &Value| v.get("blind_spots").cloned().unwrap_or(Value::Null);
    if blind(quiesce) != blind(all) {
        out.push(format!(
            "--irq-detail all: blind spots {} (quiesce: {})",
            blind(all),
            blind(quiesce)
        ));
    }
    Ok(out)
}

/// Every format against `check --json`: the disagreements of Perfetto, JUnit and Markdown.
pub fn compare(
    check_json: &Value,
    perfetto: &Value,
    junit: &str,
    markdown: &str,
) -> Result<Vec<String>, String> {
    let want = Counts::from_check_json(check_json)?;
    let mut out = Vec::new();
    out.extend(disagreements(
        "perfetto",
        &want,
        &Counts::from_perfetto(perfetto)?,
    ));
    out.extend(disagreements("junit", &want, &Counts::from_junit(junit)?));
    out.extend(disagreements(
        "markdown",
        &want,
        &Counts::from_markdown(markdown)?,
    ));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_json(irq_quiesced: u64, rules: &[&str], mean_ns: u64) -> Value {
        let violations: Vec<Value> = rules
            .iter()
            .map(|r| serde_json::json!({"rule": r, "dev": "0000:00:02.0", "t": 5}))
            .collect();
        serde_json::json!({
            "verdict": if rules.is_empty() { "pass" } else { "fail" },
            "violations": violations,
            "blind_spots": [],
            "devices": {"0000:00:02.0": {
                "quiesce_ns": {"count": 1, "min": mean_ns, "max": mean_ns, "mean": mean_ns},
                "dma_quiesced": 0,
                "irq_quiesced": irq_quiesced,
            }},
        })
    }

    /// Two recorders of one run agree when only their clocks differ; an interrupt while
    /// quiesced that one mode lost, or a rule that fires once more, is said.
    #[test]
    fn irq_detail_modes_disagree_only_on_what_matters() {
        let q = check_json(2, &["irq-after-quiesce", "irq-after-quiesce"], 1_000_000);
        let same = check_json(2, &["irq-after-quiesce", "irq-after-quiesce"], 1_004_000);
        assert_eq!(irq_detail_disagreements(&q, &same), Ok(vec![]));
        let fewer = check_json(1, &["irq-after-quiesce"], 1_000_000);
        let d = irq_detail_disagreements(&q, &fewer).expect("check JSON");
        assert!(
            d.iter().any(|x| x.contains("1 violation(s) (check: 2)")),
            "{d:?}"
        );
        assert!(d.iter().any(|x| x.contains("irq_quiesced: 1")), "{d:?}");
        assert!(
            d.iter()
                .any(|x| x
                    .contains(r#"{"irq-after-quiesce": 1} (quiesce: {"irq-after-quiesce": 2})"#)),
            "{d:?}"
        );
        assert!(irq_detail_disagreements(&q, &serde_json::json!({})).is_err());
    }

    #[test]
    fn markdown_numbers_read_back() {
        let d = md_device(
            "2 quiesce(s): min 1.000 ms, max 3.250 ms, mean 2.125 ms; DMA evidence 4 (1 while quiesced), IRQs 2 (0 while quiesced); 3 violation(s).",
        )
        .expect("parses");
        assert_eq!(
            d,
            DeviceCounts {
                quiesces: 2,
                quiesce_us: Some((1_000, 3_250, 2_125)),
                dma_quiesced: 1,
                irq_quiesced: 0,
                violations: 3,
            }
        );
        let z = md_device(
            "0 quiesce(s); DMA evidence 0 (0 while quiesced), IRQs 7 (0 while quiesced); 0 violation(s).",
        )
        .expect("parses");
        assert_eq!(z.quiesce_us, None);
        assert!(md_ms("1.5 ms").is_err(), "three decimals only");
    }

    #[test]
    fn tui_stats_read_back() {
        let pane = "┃verdict FAIL so far  violations 3  warnings 1 ┃\n\
                    ┃events 26 (held 26)  lost 0  span 35ms ┃\n\
                    ┃device d vm1 STOP_COPY,P2P ┃\n\
                    ┃ now STOP_COPY  sets 3  steps 3 ┃\n\
                    ┃ quiesces 2: min 1.000 ms, max 3.250 ms, mean 2.125 ms ┃\n\
                    ┃ dma 4 (1 while quiesced)  irq 2 (0 while quiesced) ┃\n\
                    ┃ violations 3  data saved 8192 B, loaded 0 B ┃\n\
                    ┃device e vm1 ┃\n\
                    ┃ quiesces 0 ┃\n\
                    ┃ dma 0 (0 while quiesced)  irq 0 (0 while quiesced) ┃\n\
                    ┃ violations 0 ┃";
        let c = Counts::from_tui_stats(pane).expect("parses");
        assert_eq!((c.verdict.as_str(), c.violations), ("fail", 3));
        assert_eq!(
            c.devices["d"],
            DeviceCounts {
                quiesces: 2,
                quiesce_us: Some((1_000, 3_250, 2_125)),
                dma_quiesced: 1,
                irq_quiesced: 0,
                violations: 3,
            }
        );
        assert_eq!(c.devices["e"], DeviceCounts::default());
        assert!(
            Counts::from_tui_stats("events 1").is_err(),
            "no verdict line"
        );
    }

    #[test]
    fn a_disagreement_names_the_format_device_and_numbers() {
        let mut want = Counts {
            verdict: "fail".into(),
            violations: 1,
            devices: BTreeMap::new(),
        };
        want.devices.insert(
            "d".into(),
            DeviceCounts {
                quiesces: 1,
                ..DeviceCounts::default()
            },
        );
        let mut got = want.clone();
        assert!(disagreements("x", &want, &got).is_empty());
        got.devices.get_mut("d").expect("d").quiesces = 4;
        let d = disagreements("perfetto", &want, &got);
        assert_eq!(d.len(), 1);
        assert!(d[0].starts_with("perfetto: device d:"), "{d:?}");
    }
}
