//! The stats pane: per device, transitions, quiesce durations (min / median / max), DMA and
//! interrupt counts by the state the device was in, migration data moved.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};

use crate::app::{App, Pane};
use crate::store::{SegState, fmt_dur};

use super::pane_block;

fn by_state(counts: &[u64; 10]) -> String {
    let parts: Vec<String> = counts
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(i, n)| format!("{} {n}", SegState::slot_name(i)))
        .collect();
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(", ")
    }
}

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let mut lines = Vec::new();
    let dim = Style::new().fg(Color::DarkGray);
    let s = &app.store;
    lines.push(Line::from(vec![
        Span::styled("events ", dim),
        Span::raw(format!("{} (held {})", s.total, s.len())),
        Span::styled("  lost ", dim),
        Span::raw(s.lost.to_string()),
        Span::styled("  span ", dim),
        Span::raw(fmt_dur(s.last_t.saturating_sub(s.first_t.unwrap_or(0)))),
    ]));
    for b in &app.verdict.blind_spots {
        lines.push(Line::from(vec![
            Span::styled("blind spot ", Style::new().fg(Color::Yellow)),
            Span::raw(b.clone()),
        ]));
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
    for dv in &s.devices {
        lines.push(Line::from(vec![
            Span::styled(dv.name.clone(), Style::new().add_modifier(Modifier::BOLD)),
            Span::styled(
                format!(
                    " {} {}",
                    s.ctxs[dv.ctx].name,
                    dv.flags.names().collect::<Vec<_>>().join(",")
                ),
                dim,
            ),
        ]));
        let st = &dv.stats;
        lines.push(Line::from(vec![
            Span::styled(" transitions ", dim),
            Span::raw(st.transitions.to_string()),
            Span::styled(" failed ", dim),
            Span::raw(st.failed_sets.to_string()),
            Span::styled(" now ", dim),
            Span::raw(dv.current().map_or("-".to_owned(), SegState::label)),
        ]));
        let q = match st.quiesce_summary() {
            Some((mn, md, mx)) => format!(
                "min {} med {} max {} (n={})",
                fmt_dur(mn),
                fmt_dur(md),
                fmt_dur(mx),
                st.quiesce_count
            ),
            None => "-".to_owned(),
        };
        lines.push(Line::from(vec![
            Span::styled(" quiesce ", dim),
            Span::raw(q),
        ]));
        lines.push(Line::from(vec![
            Span::styled(" dma ", dim),
            Span::raw(by_state(&st.dma)),
        ]));
        lines.push(Line::from(vec![
            Span::styled(" irq ", dim),
            Span::raw(by_state(&st.irq)),
        ]));
        if st.data_bytes > 0 {
            lines.push(Line::from(vec![
                Span::styled(" data ", dim),
                Span::raw(format!("{} B", st.data_bytes)),
            ]));
        }
    }
    let block = pane_block(" stats ".to_owned(), app.focus == Pane::Stats);
    f.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false })
            .scroll((app.scroll, 0)),
        area,
    );
}
