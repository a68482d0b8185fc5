//! The stats pane: the verifier's numbers, as `check --json` states them: the verdict and the
//! violation count; per device its quiesces (count; min, max, mean duration), DMA and
//! interrupt evidence (total, while quiesced), violations, migration data moved. Every number
//! is the latest [`Report`](migscope_core::verify::Report)'s: the view counts nothing itself
//! (`export::agree` reads this pane back and holds it to `check --json`).

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};

use migscope_core::model::MigState;

use crate::app::{App, Pane};
use crate::store::{fmt_dur, seg_label};

use super::pane_block;

/// `2000.5 µs` -> `2.000 ms`: cut to the microsecond, as the Markdown report prints.
fn ms3(ns: u64) -> String {
    let us = ns / 1_000;
    format!("{}.{:03} ms", us / 1_000, us % 1_000)
}

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let mut lines = Vec::new();
    let dim = Style::new().fg(Color::DarkGray);
    let s = &app.store;
    match &app.report {
        Some(r) => lines.push(Line::from(vec![
            Span::styled("verdict ", dim),
            Span::styled(
                r.verdict.name().to_uppercase(),
                Style::new().add_modifier(Modifier::BOLD),
            ),
            Span::raw(if app.interim { " so far" } else { "" }),
            Span::styled("  violations ", dim),
            Span::raw(r.violations.len().to_string()),
            Span::styled("  warnings ", dim),
            Span::raw(r.warnings.len().to_string()),
        ])),
        None => lines.push(Line::styled(
            "verdict pending (the verifier has not reported yet)",
            dim,
        )),
    }
    lines.push(Line::from(vec![
        Span::styled("events ", dim),
        Span::raw(format!("{} (held {})", s.total, s.len())),
        Span::styled("  lost ", dim),
        Span::raw(s.lost.to_string()),
        Span::styled("  span ", dim),
        Span::raw(fmt_dur(s.last_t.saturating_sub(s.first_t.unwrap_or(0)))),
    ]));
    if let Some(r) = &app.report {
        for b in &r.blind_spots {
            let text = match r.blind_spot_details.get(b) {
                Some(why) => format!("{b}: {why}"),
                None => b.clone(),
            };
            lines.push(Line::from(vec![
                Span::styled("blind spot ", Style::new().fg(Color::Yellow)),
                Span::raw(text),
            ]));
        }
    }
    // Findings tied to no event (e.g. a SET that never returned) are listed here.
    for rec in app.findings.iter().filter(|r| r.f.line == 0) {
        let (tag, st) = if rec.f.warning {
            ("warning ", Style::new().fg(Color::Yellow))
        } else {
            ("violation ", Style::new().fg(Color::Red))
        };
        lines.push(Line::from(vec![
            Span::styled(tag, st),
            Span::raw(format!(
                "{} {}: {}",
                rec.f.rule,
                rec.f.dev.as_deref().unwrap_or("-"),
                rec.f.detail
            )),
        ]));
    }
    let Some(r) = &app.report else {
        for dv in &s.devices {
            lines.push(Line::styled(
                dv.name.clone(),
                Style::new().add_modifier(Modifier::BOLD),
            ));
        }
        return render(f, area, app, lines);
    };
    for (name, d) in &r.devices {
        let flags = d
            .flags
            .map(|f| f.names().collect::<Vec<_>>().join(","))
            .unwrap_or_else(|| "?".to_owned());
        lines.push(Line::from(vec![
            Span::styled(
                format!("device {name}"),
                Style::new().add_modifier(Modifier::BOLD),
            ),
            Span::styled(format!(" {} {flags}", d.ctx), dim),
        ]));
        let now = s
            .device_index(name)
            .and_then(|i| s.devices[i].current())
            .map_or_else(
                || d.final_state.map_or("UNKNOWN", MigState::name).to_owned(),
                |w| seg_label(&w),
            );
        lines.push(Line::from(vec![
            Span::styled(" now ", dim),
            Span::raw(now),
            Span::styled("  sets ", dim),
            Span::raw(d.sets.to_string()),
            Span::styled("  steps ", dim),
            Span::raw(d.steps.to_string()),
        ]));
        let mut q = vec![
            Span::styled(" quiesces ", dim),
            Span::raw(d.quiesce_count.to_string()),
        ];
        if let Some(mean) = d.quiesce_total_ns.checked_div(d.quiesce_count) {
            q.push(Span::raw(format!(
                ": min {}, max {}, mean {}",
                ms3(d.quiesce_min_ns),
                ms3(d.quiesce_max_ns),
                ms3(mean)
            )));
        }
        lines.push(Line::from(q));
        lines.push(Line::from(vec![
            Span::styled(" dma ", dim),
            Span::raw(format!("{} ({} while quiesced)", d.dma, d.dma_quiesced)),
            Span::styled("  irq ", dim),
            Span::raw(format!("{} ({} while quiesced)", d.irq, d.irq_quiesced)),
        ]));
        let own = r
            .violations
            .iter()
            .filter(|v| v.dev.as_deref() == Some(name.as_str()))
            .count();
        let mut v = vec![
            Span::styled(" violations ", dim),
            Span::raw(own.to_string()),
        ];
        if d.data_saved > 0 || d.data_loaded > 0 {
            v.push(Span::styled("  data ", dim));
            v.push(Span::raw(format!(
                "saved {} B, loaded {} B",
                d.data_saved, d.data_loaded
            )));
        }
        lines.push(Line::from(v));
    }
    render(f, area, app, lines);
}

fn render(f: &mut Frame, area: Rect, app: &App, lines: Vec<Line<'static>>) {
    let block = pane_block(" stats ".to_owned(), app.focus == Pane::Stats);
    f.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false })
            .scroll((app.scroll, 0)),
        area,
    );
}
