//! The header: trace name, verdict, counts, sources and blind spots, lost events, live state.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use migscope_core::verify::Verdict;

use crate::app::App;

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let (v, w) = app.counts();
    // None: no report yet (pending).
    let verdict = app.report.as_ref().map(|r| r.verdict);
    let vstyle = match verdict {
        Some(Verdict::Pass) => Style::new().fg(Color::Black).bg(Color::Green),
        Some(Verdict::Fail) => Style::new().fg(Color::White).bg(Color::Red),
        Some(Verdict::Inconclusive) => Style::new().fg(Color::Black).bg(Color::Yellow),
        None if v > 0 => Style::new().fg(Color::White).bg(Color::Red),
        None => Style::new().fg(Color::Black).bg(Color::Gray),
    }
    .add_modifier(Modifier::BOLD);
    let vtext = match (verdict, app.interim) {
        (None, _) if v > 0 => " FAILING ".to_owned(),
        (None, _) => " pending ".to_owned(),
        (Some(Verdict::Fail), true) => " FAILING ".to_owned(),
        (Some(x), true) => format!(" {} so far ", x.name().to_uppercase()),
        (Some(x), false) => format!(" {} ", x.name().to_uppercase()),
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

    let sources = &app.info.header.sources;
    let ok: Vec<&str> = sources
        .iter()
        .filter(|(_, v)| *v == "ok")
        .map(|(k, _)| k.as_str())
        .collect();
    let bad: Vec<&str> = sources
        .iter()
        .filter(|(_, v)| *v != "ok")
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
    let blind = app.report.as_ref().map_or(&[][..], |r| &r.blind_spots[..]);
    if blind.is_empty() {
        l2.push(Span::raw("none"));
    } else {
        // Names here; the reasons are in the stats pane.
        let names: Vec<&str> = blind.iter().map(String::as_str).collect();
        l2.push(Span::styled(
            names.join(","),
            Style::new().fg(Color::Yellow),
        ));
    }
    f.render_widget(Paragraph::new(vec![Line::from(l1), Line::from(l2)]), area);
}
