//! Drawing: the layout and one module per view. Drawing reads the [`App`] only: no I/O, no
//! locks, and work proportional to what is visible.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Paragraph};

use crate::app::{App, Pane};

pub mod detail;
pub mod events;
pub mod header;
pub mod help;
pub mod stats;
pub mod timeline;

/// Draws the whole screen.
pub fn draw(f: &mut Frame, app: &App) {
    let area = f.area();
    let lanes = app.store.lanes().len() as u16;
    // Lanes + axis + borders, at most ~45% of the screen, at least 4 rows.
    let tl_h = (lanes + 3).clamp(4, (area.height.saturating_sub(3) * 45 / 100).max(4));
    let [head, tl, bottom, status] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(tl_h),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(area);
    header::draw(f, head, app);
    timeline::draw(f, tl, app);
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(bottom);
    events::draw(f, left, app);
    if app.focus == Pane::Stats {
        stats::draw(f, right, app);
    } else {
        detail::draw(f, right, app);
    }
    draw_status(f, status, app);
    if app.show_help {
        help::draw(f, area);
    }
}

/// A pane's frame, highlighted when focused.
pub(crate) fn pane_block(title: String, focused: bool) -> Block<'static> {
    let b = Block::bordered().title(title);
    if focused {
        b.border_type(BorderType::Thick)
            .border_style(Style::new().fg(Color::Cyan))
    } else {
        b.border_style(Style::new().fg(Color::DarkGray))
    }
}

fn draw_status(f: &mut Frame, area: Rect, app: &App) {
    let line = if let Some(buf) = &app.input {
        Line::from(vec![
            Span::styled("filter: /", Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(buf.clone()),
            Span::styled(" ", Style::new().add_modifier(Modifier::REVERSED)),
            Span::styled(
                "  dev:X ev:dma,irq words | Enter apply, Esc cancel",
                Style::new().fg(Color::DarkGray),
            ),
        ])
    } else {
        let hint = format!(" [{}] ?:help q:quit", app.focus.name());
        let room = (area.width as usize).saturating_sub(hint.len());
        let mut s = app.status.clone();
        if s.chars().count() > room {
            s = s.chars().take(room).collect();
        }
        let pad = room.saturating_sub(s.chars().count());
        Line::from(vec![
            Span::styled(s, Style::new().fg(Color::Yellow)),
            Span::raw(" ".repeat(pad)),
            Span::styled(hint, Style::new().fg(Color::DarkGray)),
        ])
    };
    f.render_widget(Paragraph::new(line), area);
}
