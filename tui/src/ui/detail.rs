//! The detail pane: the selected violation (rule, explanation, the events that caused it) or
//! the selected event (all its fields, the device's state then, findings on it).

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};

use crate::app::{App, Pane};
use migscope_core::trace::EventKind;
use migscope_core::verify::rule;

use crate::store::{fmt_dur, seg_label, summary};

use super::events::rel_ms;
use super::pane_block;

fn key(k: &str) -> Span<'static> {
    Span::styled(format!("{k} "), Style::new().fg(Color::DarkGray))
}

/// The event at `g` and the state segment that explains it (what state the device was in,
/// since when, and the event that put it there).
fn cause_lines(app: &App, g: u64, out: &mut Vec<Line<'static>>) {
    let Some((line, e)) = app.store.get(g) else {
        return;
    };
    out.push(Line::from(vec![
        Span::styled("> ", Style::new().fg(Color::Red)),
        Span::raw(format!(
            "line {} {} {}",
            line,
            rel_ms(app, e.t).trim(),
            summary(&e)
        )),
    ]));
    if let EventKind::Dma {
        window: Some((t0, t1)),
        ..
    } = &e.kind
    {
        out.push(Line::raw(format!(
            "  window ({}, {}]",
            rel_ms(app, *t0).trim(),
            rel_ms(app, *t1).trim()
        )));
    }
    let Some(d) = app.store.dev_at(g) else {
        return;
    };
    let dv = &app.store.devices[d];
    // The state the device was in when the event happened (for an event that itself began a
    // segment, the one before it).
    let i = dv.segs.partition_point(|sg| sg.t <= e.t);
    let mut k = i.checked_sub(1);
    if let Some(j) = k
        && dv.segs[j].row == Some(g)
    {
        k = j.checked_sub(1);
    }
    if let Some(seg) = k.map(|j| dv.segs[j]) {
        out.push(Line::raw(format!(
            "  {} was {} since {} ({} before)",
            dv.name,
            seg_label(&seg.what),
            rel_ms(app, seg.t).trim(),
            fmt_dur(e.t.saturating_sub(seg.t))
        )));
        let mut cause = |r: u64| {
            if let Some((xl, x)) = app.store.get(r) {
                out.push(Line::from(vec![
                    Span::styled("> ", Style::new().fg(Color::Yellow)),
                    Span::raw(format!(
                        "line {} {} {}",
                        xl,
                        rel_ms(app, x.t).trim(),
                        summary(&x)
                    )),
                ]));
            }
        };
        // The request that led there, when the segment was completed by a set_done.
        if let Some(r) = seg.row
            && app.store.ev_at(r) == Some("set_done")
            && let Some(req) = app.store.last_of_before(&dv.fsm, seg.t, "set", 16)
        {
            cause(req);
        }
        if let Some(r) = seg.row {
            cause(r);
        }
    }
    // Peers of the same context (the ordering rules are about them).
    let ctx = &app.store.ctxs[dv.ctx];
    for &p in ctx.devs.iter().filter(|&&p| p != d) {
        let pd = &app.store.devices[p];
        if let Some(seg) = pd.seg_at(e.t) {
            out.push(Line::raw(format!(
                "  peer {} was {} since {}",
                pd.name,
                seg_label(&seg.what),
                rel_ms(app, seg.t).trim()
            )));
        }
    }
}

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let mut lines: Vec<Line<'static>> = Vec::new();
    let title;
    if let Some(rec) = app.selected_finding.and_then(|i| app.findings.get(i)) {
        let fd = &rec.f;
        title = " detail: violation ".to_owned();
        let (tag, st) = if fd.warning {
            ("WARNING", Style::new().fg(Color::Black).bg(Color::Yellow))
        } else {
            ("VIOLATION", Style::new().fg(Color::White).bg(Color::Red))
        };
        lines.push(Line::from(vec![
            Span::styled(format!(" {tag} "), st.add_modifier(Modifier::BOLD)),
            Span::styled(
                format!(" {}", fd.rule),
                Style::new().add_modifier(Modifier::BOLD),
            ),
        ]));
        lines.push(Line::from(vec![
            key("dev"),
            Span::raw(fd.dev.clone().unwrap_or_else(|| "-".to_owned())),
        ]));
        lines.push(Line::from(vec![
            key("at"),
            Span::raw(format!("{}  line {}", rel_ms(app, fd.t).trim(), fd.line)),
        ]));
        lines.push(Line::raw(fd.detail.clone()));
        let explain = rule::explain(fd.rule);
        if !explain.is_empty() {
            lines.push(Line::styled(explain, Style::new().fg(Color::Gray)));
        }
        lines.push(Line::styled(
            "caused by:",
            Style::new().add_modifier(Modifier::BOLD),
        ));
        match rec.row {
            Some(g) => cause_lines(app, g, &mut lines),
            None if fd.line == 0 => {
                lines.push(Line::raw("  (no single event: found when the trace ended)"))
            }
            None => lines.push(Line::raw("  (that event is no longer held in memory)")),
        }
    } else if let Some(g) = app.cursor {
        title = " detail: event ".to_owned();
        if let Some((line, e)) = app.store.get(g) {
            lines.push(Line::from(vec![
                Span::styled(
                    e.kind.ev().to_owned(),
                    Style::new().add_modifier(Modifier::BOLD),
                ),
                Span::raw(format!("  line {}  {}", line, rel_ms(app, e.t).trim())),
            ]));
            lines.push(Line::raw(summary(&e)));
            lines.push(Line::from(vec![
                key("t"),
                Span::raw(format!("{} ns", e.t)),
                Span::raw(e.pid.map(|p| format!("  pid {p}")).unwrap_or_default()),
            ]));
            if let Some(d) = app.store.dev_at(g) {
                let dv = &app.store.devices[d];
                if let Some(seg) = dv.seg_at(e.t) {
                    lines.push(Line::from(vec![
                        key("state"),
                        Span::raw(format!(
                            "{} since {}",
                            seg_label(&seg.what),
                            rel_ms(app, seg.t).trim()
                        )),
                    ]));
                }
                let ctx = &app.store.ctxs[dv.ctx].name;
                lines.push(Line::from(vec![
                    key("ctx"),
                    Span::raw(format!(
                        "{ctx}  flags {}",
                        dv.flags.names().collect::<Vec<_>>().join(",")
                    )),
                ]));
            }
            if let EventKind::Dma {
                window: Some((t0, t1)),
                ..
            } = &e.kind
            {
                lines.push(Line::from(vec![
                    key("window"),
                    Span::raw(format!(
                        "({}, {}]",
                        rel_ms(app, *t0).trim(),
                        rel_ms(app, *t1).trim()
                    )),
                ]));
            }
            for rec in app.findings.iter().filter(|r| r.row == Some(g)) {
                let st = if rec.f.warning {
                    Style::new().fg(Color::Yellow)
                } else {
                    Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
                };
                lines.push(Line::styled(
                    format!(
                        "{} {}: {}",
                        if rec.f.warning {
                            "warning"
                        } else {
                            "violation"
                        },
                        rec.f.rule,
                        rec.f.detail
                    ),
                    st,
                ));
            }
        }
    } else {
        title = " detail ".to_owned();
        lines.push(Line::styled(
            "no selection (j/k select an event, n a violation)",
            Style::new().fg(Color::DarkGray),
        ));
    }
    let block = pane_block(title, app.focus == Pane::Detail);
    f.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false })
            .scroll((app.scroll, 0)),
        area,
    );
}
