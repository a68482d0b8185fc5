//! The help overlay (`?`): keys and the timeline legend.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};

const KEYS: &[(&str, &str)] = &[
    ("q", "quit"),
    ("space", "pause / resume (live)"),
    ("h l <- ->", "pan"),
    ("+ -", "zoom in / out"),
    ("tab", "next pane (timeline, events, detail, stats)"),
    ("j k up down", "select event (lane in timeline)"),
    ("pgup pgdn", "jump 10 events"),
    ("n N", "next / previous violation"),
    ("/", "filter: dev:X ev:dma,irq words"),
    ("f", "filter on highlighted lane's device"),
    ("e", "export trace as JSONL"),
    ("g G", "start / end (G follows live)"),
    ("esc", "clear violation selection"),
];

const LEGEND: &str = "= RUNNING  + PRE_COPY  ~ RUNNING_P2P  % PRE_COPY_P2P  . STOP  \
                      # STOP_COPY  < RESUMING  X ERROR  / in transition  ? unknown  \
                      | state change  D dma  i irq  s data  m/u map/unmap  L lost events  * mark  ! violation";

pub fn draw(f: &mut Frame, area: Rect) {
    let w = area.width.saturating_sub(4).min(64);
    let h = area.height.saturating_sub(2).min(KEYS.len() as u16 + 8);
    let r = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    let mut lines: Vec<Line> = KEYS
        .iter()
        .map(|(k, v)| Line::raw(format!("{k:>12}  {v}")))
        .collect();
    lines.push(Line::raw(""));
    lines.push(Line::styled(LEGEND, Style::new().fg(Color::Gray)));
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(
            Block::bordered()
                .title(" help (any key closes) ")
                .title_style(Style::new().add_modifier(Modifier::BOLD)),
        ),
        r,
    );
}
