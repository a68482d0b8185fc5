//! The header: trace name, verdict, counts, sources and blind spots, lost events, live state.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::app::App;
use crate::model::Verdict;

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let (v, w) = app.counts();
    let verdict = app.verdict.verdict;
    let vstyle = match verdict {
        Verdict::Pass => Style::new().fg(Color::Black).bg(Color::Green),
        Verdict::Fail => Style::new().fg(Color::White).bg(Color::Red),
        Verdict::Inconclusive => Style::new().fg(Color::Black).bg(Color::Yellow),
        Verdict::Pending if v > 0 => Style::new().fg(Color::White).bg(Color::Red),
        Verdict::Pending => Style::new().fg(Color::Black).bg(Color::Gray),
    }
    .add_modifier(Modifier::BOLD);
    let vtext = match (verdict, app.verdict.interim) {
        (Verdict::Pending, _) if v > 0 => " FAILING ".to_owned(),
        (Verdict::Fail, true) => " FAILING ".to_owned(),
        (_, true) => format!(" {} so far ", verdict.name()),
        _ => format!(" {} ", verdict.name()),
    };
    let mode = if app.info.live {
        if app.paused {
            " LIVE:paused"
        } else if app.follow {
            " LIVE:follow"
        } else {
            " LIVE"
        }
    } else if !app.done {
        " loading"
    } else {
        ""
    };
    let s = &app.store;
    let mut l1 = vec![
        Span::styled(
            format!("{} ", app.info.name),
            Style::new().add_modifier(Modifier::BOLD),
        ),
        Span::styled(vtext, vstyle),
        Span::raw(format!(" {v} viol {w} warn | {} events", s.total)),
    ];
    if app.dropped != (0, 0) {
        l1.push(Span::styled(
            format!(" ({} not held)", app.dropped.0 + app.dropped.1),
            Style::new().fg(Color::Yellow),
        ));
    }
    if s.total > s.len() as u64 {
        l1.push(Span::raw(format!(" ({} held)", s.len())));
    }
    let lost_style = if s.lost > 0 {
        Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD)
    } else {
        Style::new()
    };
    l1.push(Span::styled(format!(" | lost {}", s.lost), lost_style));
    if app.done && !s.end_seen && !app.info.live {
        l1.push(Span::styled(" truncated", Style::new().fg(Color::Yellow)));
    }
    l1.push(Span::styled(mode, Style::new().fg(Color::Cyan)));

    let ok: Vec<&str> = app
        .info
        .sources
        .iter()
        .filter(|(_, v)| v == "ok")
        .map(|(k, _)| k.as_str())
        .collect();
    let bad: Vec<&str> = app
        .info
        .sources
        .iter()
        .filter(|(_, v)| v != "ok")
        .map(|(k, _)| k.as_str())
        .collect();
    let mut l2 = vec![
        Span::styled("src ", Style::new().fg(Color::DarkGray)),
        Span::styled(ok.join(" "), Style::new().fg(Color::Green)),
    ];
    if !bad.is_empty() {
        l2.push(Span::styled(
            format!(" no:{}", bad.join(",")),
            Style::new().fg(Color::Yellow),
        ));
    }
    l2.push(Span::styled(" | blind ", Style::new().fg(Color::DarkGray)));
    if app.verdict.blind_spots.is_empty() {
        l2.push(Span::raw("none"));
    } else {
        // Names here; the reasons are in the stats pane.
        let names: Vec<&str> = app
            .verdict
            .blind_spots
            .iter()
            .map(|b| b.split(':').next().unwrap_or(b))
            .collect();
        l2.push(Span::styled(
            names.join(","),
            Style::new().fg(Color::Yellow),
        ));
    }
    f.render_widget(Paragraph::new(vec![Line::from(l1), Line::from(l2)]), area);
}
