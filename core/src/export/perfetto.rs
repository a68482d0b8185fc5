//! Perfetto / chrome://tracing export: the Chrome trace-event JSON format.
//!
//! Mapping: one process per migration context (`ctx`), one thread (track) per device, named by
//! metadata events; an `iommu` track per context for map/unmap; a `trace` process for marks,
//! lost events and the verdict. State segments and SETs are complete slices (`ph: "X"`):
//! category `state` (e.g. `RUNNING`), `transition` (`RUNNING -> STOP`) or `quiesce` (`quiesce
//! RUNNING -> RUNNING_P2P`, a SET entering a quiescent state; its duration is the quiesce
//! time, also in `args.dur_ms`). Steps, DMA, IRQ, data, get and reset are instant events
//! (`ph: "i"`) with every field in `args`. Violations are process-wide instants named
//! `VIOLATION <rule>` (category `violation`), warnings `WARNING <rule>`. Timestamps are
//! microseconds from the first event (`ts`, three decimals: nanosecond precision).
//!
//! The slices are the verifier's own [`crate::verify::DeviceTimeline`] segments (each with
//! `args.dev` and `args.dur_ns`), so the quiesce slices are exactly the quiesces `check`
//! counts.

use std::{collections::BTreeMap, path::Path};

use serde_json::{Value, json};

use super::{ExportError, OutFile};
use crate::{
    trace::{EventKind, open_any},
    verify::{Finding, Options, Report, SegKind, Segment, Verifier},
};

/// Process id of the `trace` process (marks, lost events, verdict).
const TRACE_PID: u64 = 1;

struct Out {
    file: OutFile,
    first: bool,
    t0: Option<u64>,
}

impl Out {
    fn emit(&mut self, v: &Value) -> Result<(), ExportError> {
        self.emit_raw(&v.to_string())
    }

    /// One already serialised trace event.
    fn emit_raw(&mut self, s: &str) -> Result<(), ExportError> {
        let sep = if self.first { "\n" } else { ",\n" };
        self.first = false;
        self.file.write_str(sep)?;
        self.file.write_str(s)
    }

    /// Microseconds since the first event, as a JSON number with nanosecond precision.
    fn ts(&self, t: u64) -> Value {
        let d = t.saturating_sub(self.t0.unwrap_or(t));
        us(d)
    }
}

fn us(ns: u64) -> Value {
    // Exact for any trace shorter than ~100 days; f64 is what the format has.
    let v = (ns / 1000) as f64 + (ns % 1000) as f64 / 1000.0;
    json!(v)
}

/// Track ids: processes per context, threads per device / per context's iommu track.
#[derive(Default)]
struct Tracks {
    ctx_pid: BTreeMap<String, u64>,
    dev_track: BTreeMap<String, (u64, u64)>,
    iommu_track: BTreeMap<String, (u64, u64)>,
    next_tid: u64,
}

impl Tracks {
    fn ctx(&mut self, ctx: &str, out: &mut Out) -> Result<u64, ExportError> {
        if let Some(p) = self.ctx_pid.get(ctx) {
            return Ok(*p);
        }
        let pid = TRACE_PID + 1 + self.ctx_pid.len() as u64;
        self.ctx_pid.insert(ctx.to_owned(), pid);
        out.emit(&json!({"ph":"M","name":"process_name","pid":pid,"tid":0,
            "args":{"name": format!("ctx {ctx}")}}))?;
        out.emit(
            &json!({"ph":"M","name":"process_sort_index","pid":pid,"tid":0,
            "args":{"sort_index": pid}}),
        )?;
        Ok(pid)
    }

    fn new_thread(&mut self, pid: u64, name: &str, out: &mut Out) -> Result<u64, ExportError> {
        self.next_tid += 1;
        let tid = self.next_tid;
        out.emit(&json!({"ph":"M","name":"thread_name","pid":pid,"tid":tid,
            "args":{"name": name}}))?;
        out.emit(
            &json!({"ph":"M","name":"thread_sort_index","pid":pid,"tid":tid,
            "args":{"sort_index": tid}}),
        )?;
        Ok(tid)
    }

    fn declare(
        &mut self,
        dev: &str,
        ctx: &str,
        driver: Option<&str>,
        out: &mut Out,
    ) -> Result<(u64, u64), ExportError> {
        if let Some(t) = self.dev_track.get(dev) {
            return Ok(*t);
        }
        let pid = self.ctx(ctx, out)?;
        let name = match driver {
            Some(d) => format!("{dev} ({d})"),
            None => dev.to_owned(),
        };
        let tid = self.new_thread(pid, &name, out)?;
        self.dev_track.insert(dev.to_owned(), (pid, tid));
        Ok((pid, tid))
    }

    /// The track of `dev`, created under an `(undeclared)` context if no `device` event
    /// declared it.
    fn dev(&mut self, dev: &str, out: &mut Out) -> Result<(u64, u64), ExportError> {
        self.declare(dev, "(undeclared)", None, out)
    }

    fn iommu(&mut self, ctx: &str, out: &mut Out) -> Result<(u64, u64), ExportError> {
        if let Some(t) = self.iommu_track.get(ctx) {
            return Ok(*t);
        }
        let pid = self.ctx(ctx, out)?;
        let tid = self.new_thread(pid, "iommu map/unmap", out)?;
        self.iommu_track.insert(ctx.to_owned(), (pid, tid));
        Ok((pid, tid))
    }
}

/// What an export wrote, for messages and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    pub devices: u64,
    pub slices: u64,
    pub instants: u64,
    pub violations: u64,
}

/// One timeline segment of the verifier's `DeviceTimeline` as a complete slice.
fn emit_segment(
    dev: &str,
    s: &Segment,
    tracks: &mut Tracks,
    out: &mut Out,
    counts: &mut Counts,
) -> Result<(), ExportError> {
    let (pid, tid) = tracks.dev(dev, out)?;
    let dur = s.end.saturating_sub(s.start);
    let (cat, mut args) = match &s.what {
        SegKind::State(_) => ("state", json!({})),
        SegKind::Transition {
            from,
            to,
            ret,
            quiesce,
        } => (
            if *quiesce { "quiesce" } else { "transition" },
            json!({"from": from.map(|s| s.name()), "to": to.name(), "ret": ret}),
        ),
    };
    args["dev"] = json!(dev);
    args["dur_ms"] = json!(dur as f64 / 1e6);
    args["dur_ns"] = json!(dur);
    args["start_ns"] = json!(s.start);
    let ts = out.ts(s.start);
    out.emit(
        &json!({"ph":"X","cat":cat,"name":s.what.label(),"pid":pid,"tid":tid,
        "ts":ts,"dur":us(dur),"args":args}),
    )?;
    counts.slices += 1;
    Ok(())
}

fn emit_finding(
    f: &Finding,
    tracks: &mut Tracks,
    out: &mut Out,
    counts: &mut Counts,
) -> Result<(), ExportError> {
    let (pid, tid) = match &f.dev {
        Some(d) => tracks.dev(d, out)?,
        None => (TRACE_PID, 1),
    };
    let (prefix, cat) = if f.warning {
        ("WARNING", "warning")
    } else {
        counts.violations += 1;
        ("VIOLATION", "violation")
    };
    let ts = out.ts(f.t);
    out.emit(
        &json!({"ph":"i","s":"p","cat":cat,"name":format!("{prefix} {}", f.rule),
        "pid":pid,"tid":tid,"ts":ts,
        "args":{"rule":f.rule,"dev":f.dev,"detail":f.detail,"line":f.line,"t_ns":f.t,
                "explain": crate::verify::rule::explain(f.rule)}}),
    )?;
    counts.instants += 1;
    Ok(())
}

/// Exports the trace at `input` (either format) to `output` as Chrome trace-event JSON,
/// verifying it on the way; returns the verdict and what was written.
pub fn export(input: &Path, output: &Path, opts: Options) -> Result<(Report, Counts), ExportError> {
    let mut reader = open_any(input)?;
    let header = reader.header().clone();
    let mut verifier = Verifier::new(&header, opts);
    // The state slices are the verifier's own timeline: what is drawn is what was judged.
    verifier.keep_segments();
    let mut out = Out {
        file: OutFile::create(output)?,
        first: true,
        t0: None,
    };
    out.file.write_str("{\"traceEvents\":[")?;
    let mut tracks = Tracks::default();
    let mut counts = Counts::default();
    out.emit(
        &json!({"ph":"M","name":"process_name","pid":TRACE_PID,"tid":0,
        "args":{"name":"trace"}}),
    )?;
    out.emit(
        &json!({"ph":"M","name":"process_sort_index","pid":TRACE_PID,"tid":0,
        "args":{"sort_index":0}}),
    )?;
    tracks.next_tid = 1;
    out.emit(
        &json!({"ph":"M","name":"thread_name","pid":TRACE_PID,"tid":1,
        "args":{"name":"marks, lost events, verdict"}}),
    )?;
    let mut warned = 0;
    let mut last_t = 0;
    let mut emitted = std::collections::HashSet::new();
    while let Some(item) = reader.next_event() {
        let (line, ev) = item?;
        verifier.forward_warnings(reader.warnings(), &mut warned);
        if out.t0.is_none() {
            out.t0 = Some(ev.t);
        }
        last_t = ev.t;
        if let EventKind::Device {
            dev, ctx, driver, ..
        } = &ev.kind
        {
            tracks.declare(dev, ctx, driver.as_deref(), &mut out)?;
            counts.devices += 1;
        }
        let ts = out.ts(ev.t);
        // The event's JSONL line is its args (every field, `t` in ns): written as is, no
        // re-parsing, which keeps a million-event export in seconds.
        let args = crate::trace::jsonl::event_to_json(&ev);
        let instant = |name: String, cat: &str, pid: u64, tid: u64, scope: &str| {
            format!(
                "{{\"ph\":\"i\",\"s\":\"{scope}\",\"cat\":\"{cat}\",\"name\":{},\"pid\":{pid},\"tid\":{tid},\"ts\":{ts},\"args\":{args}}}",
                Value::from(name)
            )
        };
        let v = match &ev.kind {
            EventKind::Device { .. } | EventKind::Set { .. } | EventKind::SetDone { .. } => None,
            EventKind::Step { dev, from, to } => {
                let (p, t) = tracks.dev(dev, &mut out)?;
                Some(instant(
                    format!("step {} -> {}", from.name(), to.name()),
                    "step",
                    p,
                    t,
                    "t",
                ))
            }
            EventKind::Get { dev, state } => {
                let (p, t) = tracks.dev(dev, &mut out)?;
                Some(instant(format!("get {}", state.name()), "get", p, t, "t"))
            }
            EventKind::Reset { dev, ret } => {
                let (p, t) = tracks.dev(dev, &mut out)?;
                Some(instant(format!("reset ret={ret}"), "reset", p, t, "t"))
            }
            EventKind::Dma {
                dev, src, write, ..
            } => {
                let (p, t) = tracks.dev(dev, &mut out)?;
                let rw = if *write { "write" } else { "read" };
                Some(instant(
                    format!("DMA {} {rw}", src.name()),
                    "dma",
                    p,
                    t,
                    "t",
                ))
            }
            EventKind::Irq { dev, kind, vector } => {
                let (p, t) = tracks.dev(dev, &mut out)?;
                Some(instant(
                    format!("IRQ {} {vector}", kind.name()),
                    "irq",
                    p,
                    t,
                    "t",
                ))
            }
            EventKind::IrqBin {
                dev,
                kind,
                vector,
                n,
                window: (t0, t1),
            } => {
                // An instant at the bin's end (its `t`), naming its span: the interrupts
                // inside were counted, not timed.
                let (p, t) = tracks.dev(dev, &mut out)?;
                Some(instant(
                    format!(
                        "IRQ {} {vector} x{n} over {:.3} ms",
                        kind.name(),
                        t1.saturating_sub(*t0) as f64 / 1e6
                    ),
                    "irq",
                    p,
                    t,
                    "t",
                ))
            }
            EventKind::Data {
                dev,
                dir,
                bytes,
                file,
            } => {
                let (p, t) = tracks.dev(dev, &mut out)?;
                let via = file.map_or_else(String::new, |f| {
                    format!(" fd {} (gen {}, reset gen {})", f.fd, f.fd_gen, f.reset_gen)
                });
                Some(instant(
                    format!("data {} {bytes} B{via}", dir.name()),
                    "data",
                    p,
                    t,
                    "t",
                ))
            }
            EventKind::Map { ctx, .. } => {
                let (p, t) = tracks.iommu(ctx, &mut out)?;
                Some(instant("map".to_owned(), "iommu", p, t, "t"))
            }
            EventKind::Unmap { ctx, .. } => {
                let (p, t) = tracks.iommu(ctx, &mut out)?;
                Some(instant("unmap".to_owned(), "iommu", p, t, "t"))
            }
            EventKind::Lost { n, source, dev } => Some(instant(
                match dev {
                    Some(d) => format!("LOST {n} ({source}, {d})"),
                    None => format!("LOST {n} ({source})"),
                },
                "lost",
                TRACE_PID,
                1,
                "g",
            )),
            EventKind::Mark { label } => {
                Some(instant(format!("mark: {label}"), "mark", TRACE_PID, 1, "g"))
            }
            EventKind::End => Some(instant("end".to_owned(), "end", TRACE_PID, 1, "t")),
            EventKind::PrecopyInfo { dev, result } => {
                let (p, t) = tracks.dev(dev, &mut out)?;
                let name = match result {
                    Ok(i) => format!(
                        "precopy_info initial {} B dirty {} B flags {:#x}",
                        i.initial_bytes, i.dirty_bytes, i.flags
                    ),
                    Err(e) => format!("precopy_info ret={e}"),
                };
                Some(instant(name, "mig_info", p, t, "t"))
            }
            EventKind::DataSize { dev, result } => {
                let (p, t) = tracks.dev(dev, &mut out)?;
                let name = match result {
                    Ok(b) => format!("data_size {b} B"),
                    Err(e) => format!("data_size ret={e}"),
                };
                Some(instant(name, "mig_info", p, t, "t"))
            }
            EventKind::CorruptLoad {
                dev,
                corruption,
                bytes,
                ret,
            } => {
                let (p, t) = tracks.dev(dev, &mut out)?;
                Some(instant(
                    format!("corrupt load {} {bytes} B ret={ret}", corruption.name()),
                    "data",
                    p,
                    t,
                    "t",
                ))
            }
            EventKind::Regs { dev, stage, .. } => {
                let (p, t) = tracks.dev(dev, &mut out)?;
                Some(instant(format!("regs {}", stage.name()), "regs", p, t, "t"))
            }
            EventKind::DirtyReport {
                dev,
                iova,
                len,
                dirty_pages,
                ..
            } => {
                let (p, t) = tracks.dev(dev, &mut out)?;
                Some(instant(
                    format!("dirty_report {iova:#x}+{len:#x}: {dirty_pages} dirty"),
                    "dma",
                    p,
                    t,
                    "t",
                ))
            }
            EventKind::PrecopyInfoV2 { dev, ret } => {
                let (p, t) = tracks.dev(dev, &mut out)?;
                Some(instant(
                    format!("precopy_info_v2 opt-in ret={ret}"),
                    "mig_info",
                    p,
                    t,
                    "t",
                ))
            }
        };
        if let Some(v) = v {
            out.emit_raw(&v)?;
            counts.instants += 1;
        }
        for f in verifier.push(line, &ev) {
            emitted.insert((f.rule, f.t, f.line));
            emit_finding(&f, &mut tracks, &mut out, &mut counts)?;
        }
        for (dev, s) in verifier.drain_segments() {
            emit_segment(dev, &s, &mut tracks, &mut out, &mut counts)?;
        }
    }
    verifier.forward_warnings(reader.warnings(), &mut warned);
    for (dev, s) in verifier.open_segments() {
        emit_segment(dev, &s, &mut tracks, &mut out, &mut counts)?;
    }
    let report = verifier.finish();
    // Findings not returned by `push`: known only at the end (a SET that never returned) or
    // noted by the reader (unknown event types).
    for f in report.violations.iter().chain(&report.warnings) {
        if !emitted.contains(&(f.rule, f.t, f.line)) {
            emit_finding(f, &mut tracks, &mut out, &mut counts)?;
        }
    }
    let ts = out.ts(last_t);
    out.emit(&json!({"ph":"i","s":"g","cat":"verdict",
        "name":format!("verdict: {}", report.verdict.name()),"pid":TRACE_PID,"tid":1,"ts":ts,
        "args":{"verdict":report.verdict.name(),"violations":report.violations.len(),
                "blind_spots":report.blind_spots,"truncated_at_byte":reader.truncated_at()}}))?;
    out.file
        .write_str("\n],\"displayTimeUnit\":\"ms\",\"otherData\":")?;
    let other = json!({
        "migscope_trace": header.version,
        "clock": header.clock,
        "kernel": header.kernel,
        "tool": header.tool,
        "exported_by": concat!("migscope ", env!("CARGO_PKG_VERSION")),
        "sources": header.sources,
        "t0_ns": out.t0,
        "verdict": report.verdict.name(),
    });
    out.file.write_str(&other.to_string())?;
    out.file.write_str("}\n")?;
    out.file.finish()?;
    Ok((report, counts))
}
