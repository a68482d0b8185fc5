//! The event list: the rows around the cursor (filtered when a filter is set), violations
//! marked; it scrolls with the timeline because both follow the cursor.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::app::{App, Pane};
use crate::store::summary;

use super::pane_block;

/// Time relative to the trace start, fixed width, in ms with µs precision.
pub fn rel_ms(app: &App, t: u64) -> String {
    let rel = t.saturating_sub(app.store.first_t.unwrap_or(0));
    format!("{:>10.3}ms", rel as f64 / 1e6)
}

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let n = app.list_len();
    let pos = app.cursor.map(|g| app.list_pos(g));
    let title = match (&app.filter.rows, pos) {
        (Some(_), Some(p)) => format!(" events {}/{} filter `{}` ", p + 1, n, app.filter.text),
        (Some(_), None) => format!(" events 0/0 filter `{}` ", app.filter.text),
        (None, Some(p)) => format!(" events {}/{} ", p + 1, n),
        (None, None) => format!(" events {n} "),
    };
    let block = pane_block(title, app.focus == Pane::Events);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let h = inner.height as u64;
    if h == 0 {
        return;
    }
    let start = pos
        .map_or(0, |p| p.saturating_sub(h / 2))
        .min(n.saturating_sub(h));
    let mut lines = Vec::new();
    for i in start..(start + h).min(n) {
        let Some(g) = app.list_row(i) else { break };
        let Some((_, e)) = app.store.get(g) else {
            break;
        };
        let mark = match app.row_marks.get(&g) {
            Some(true) => Span::styled("!", Style::new().fg(Color::White).bg(Color::Red)),
            Some(false) => Span::styled("w", Style::new().fg(Color::Black).bg(Color::Yellow)),
            None => Span::raw(" "),
        };
        let sel = Some(g) == app.cursor;
        let style = if sel {
            Style::new().add_modifier(Modifier::REVERSED)
        } else {
            Style::new()
        };
        lines.push(Line::from(vec![
            mark,
            Span::styled(rel_ms(app, e.t), style.fg(Color::Gray)),
            Span::styled(format!(" {}", summary(&e)), style),
        ]));
    }
    if lines.is_empty() {
        lines.push(Line::styled(
            if app.filter.rows.is_some() {
                "(no event matches the filter)"
            } else {
                "(no events)"
            },
            Style::new().fg(Color::DarkGray),
        ));
    }
    f.render_widget(Paragraph::new(lines), inner);
}
