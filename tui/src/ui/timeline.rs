//! The timeline: one lane per device grouped under its context, state segments as coloured
//! fills, ticks for DMA / IRQ / data / map-unmap, violations in red, a time axis with units.
//! Each cell costs a few binary searches, so drawing depends on the window, not the trace.

use ratatui::Frame;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};

use crate::app::{App, Pane};
use migscope_core::model::MigState as State;
use migscope_core::trace::EventKind;
use migscope_core::verify::SegKind;

use crate::index::{Tick, TraceIndex};
use crate::store::{Device, Lane, Seg, fmt_dur, seg_label};

use super::pane_block;

/// Fill glyph and colour of a state (the glyph keeps lanes readable without colour).
pub fn state_look(st: SegKind) -> (char, Color) {
    match st {
        SegKind::State(Some(s)) => match s {
            State::Running => ('=', Color::Green),
            State::PreCopy => ('+', Color::LightGreen),
            State::RunningP2p => ('~', Color::Yellow),
            State::PreCopyP2p => ('%', Color::LightYellow),
            State::Stop => ('.', Color::Blue),
            State::StopCopy => ('#', Color::Magenta),
            State::Resuming => ('<', Color::Cyan),
            State::Error => ('X', Color::LightRed),
        },
        SegKind::Transition { .. } => ('/', Color::Gray),
        SegKind::State(None) => ('?', Color::DarkGray),
    }
}

/// Cell `i` of `w` covers `[t0, t1)`.
fn cell_range(start: u64, span: u64, w: u16, i: u16) -> (u64, u64) {
    let at = |i: u16| start.saturating_add((span as u128 * i as u128 / w.max(1) as u128) as u64);
    let (a, b) = (at(i), at(i + 1));
    (a, b.max(a.saturating_add(1)))
}

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let title = format!(
        " timeline {} / {} cols{}{} ",
        fmt_dur(app.view_span),
        area.width.saturating_sub(2),
        if app.follow && !app.paused {
            " follow"
        } else {
            ""
        },
        if app.paused { " PAUSED" } else { "" }
    );
    let block = pane_block(title, app.focus == Pane::Timeline);
    let inner = block.inner(area);
    f.render_widget(block, area);
    if inner.height < 2 || inner.width < 10 {
        return;
    }
    let buf = f.buffer_mut();
    let label_w = (inner.width / 5).clamp(6, 14);
    let cells_x = inner.x + label_w + 1;
    let w = inner.width - label_w - 1;
    let rows = inner.height - 1;
    let lanes = app.store.lanes();
    if lanes.is_empty() {
        buf.set_string(
            inner.x,
            inner.y,
            "(no devices yet)",
            Style::new().fg(Color::DarkGray),
        );
    }
    // Scroll lanes so the highlighted one is visible.
    let first = (app.lane + 1).saturating_sub(rows as usize);
    let cur_t = app.cursor.and_then(|g| app.store.t_at(g));
    let cur_x = cur_t
        .filter(|&t| t >= app.view_start && t < app.view_end())
        .map(|t| ((t - app.view_start) as u128 * w as u128 / app.view_span.max(1) as u128) as u16);
    let cur_dev = app.cursor.and_then(|g| app.store.dev_at(g));
    let cur_window = app.cursor.and_then(|g| match app.store.get(g)?.1.kind {
        EventKind::Dma { window, .. } => window,
        _ => None,
    });
    for (k, lane) in lanes.iter().enumerate().skip(first).take(rows as usize) {
        let y = inner.y + (k - first) as u16;
        let hl = k == app.lane;
        match *lane {
            Lane::Ctx(c) => {
                let ctx = &app.store.ctxs[c];
                let st = Style::new().fg(Color::White).add_modifier(Modifier::BOLD);
                buf.set_stringn(
                    inner.x,
                    y,
                    format!("ctx {}", ctx.name),
                    label_w as usize,
                    if hl {
                        st.add_modifier(Modifier::REVERSED)
                    } else {
                        st
                    },
                );
                let notes = &app.store.notes;
                let ix = summaries(app);
                for i in 0..w {
                    let (t0, t1) = cell_range(app.view_start, app.view_span, w, i);
                    let (mut lo, mut hi) = (0, 0);
                    let (lost, any_note) = match ix {
                        // The index's counts and notes (the window does not hold the view).
                        Some(ix) => {
                            if ix
                                .ctxs
                                .get(c)
                                .is_some_and(|x| x.maps.around(&ix.buckets, t0, t1) > 0)
                            {
                                hi = 1;
                            }
                            let nlo = ix.notes.partition_point(|n| n.t < t0);
                            let nhi = ix.notes.partition_point(|n| n.t < t1);
                            let lost = ix.notes[nlo..nhi].iter().take(8).any(|n| n.lost);
                            (lost, nhi > nlo)
                        }
                        None => {
                            lo = ctx
                                .maps
                                .partition_point(|&r| app.store.t_local(r as usize) < t0);
                            hi = ctx
                                .maps
                                .partition_point(|&r| app.store.t_local(r as usize) < t1);
                            let nlo =
                                notes.partition_point(|&r| app.store.t_local(r as usize) < t0);
                            let nhi =
                                notes.partition_point(|&r| app.store.t_local(r as usize) < t1);
                            // A few notes per cell at most matter; look at no more than 8.
                            let lost = notes[nlo..nhi].iter().take(8).any(|&r| {
                                app.store.ev_at(app.store.base() + r as u64) == Some("lost")
                            });
                            (lost, nhi > nlo)
                        }
                    };
                    let (ch, style) = if lost {
                        let st = Style::new().fg(Color::Black).bg(Color::Yellow);
                        ('L', st.add_modifier(Modifier::BOLD))
                    } else if any_note {
                        (
                            '*',
                            Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
                        )
                    } else if hi > lo && ix.is_some() {
                        ('m', Style::new().fg(Color::LightBlue))
                    } else if hi > lo {
                        let g = app.store.base() + ctx.maps[lo] as u64;
                        let c = if app.store.ev_at(g) == Some("unmap") {
                            'u'
                        } else {
                            'm'
                        };
                        (c, Style::new().fg(Color::LightBlue))
                    } else {
                        ('\u{2500}', Style::new().fg(Color::DarkGray))
                    };
                    put(buf, cells_x + i, y, ch, style);
                }
            }
            Lane::Dev(d) => {
                let dv = &app.store.devices[d];
                let st = if hl {
                    Style::new().add_modifier(Modifier::REVERSED)
                } else {
                    Style::new()
                };
                buf.set_stringn(inner.x, y, &dv.name, label_w as usize, st);
                draw_lane(buf, app, dv, d, cells_x, y, w);
                // The selected event's evidence window (windowed DMA), underlined on its lane.
                if let Some((t0, t1)) = cur_window.filter(|_| cur_dev == Some(d)) {
                    for i in 0..w {
                        let (c0, c1) = cell_range(app.view_start, app.view_span, w, i);
                        if c1 > t0
                            && c0 <= t1
                            && let Some(cell) = buf.cell_mut((cells_x + i, y))
                        {
                            cell.modifier.insert(Modifier::UNDERLINED);
                        }
                    }
                }
            }
        }
        if let Some(x) = cur_x
            && let Some(cell) = buf.cell_mut((cells_x + x, y))
        {
            cell.modifier.insert(Modifier::REVERSED);
        }
    }
    draw_axis(buf, app, cells_x, inner.y + rows, w, cur_x);
}

fn put(buf: &mut Buffer, x: u16, y: u16, ch: char, style: Style) {
    if let Some(c) = buf.cell_mut((x, y)) {
        c.set_char(ch).set_style(style);
    }
}

/// The index, when the view must draw from its summaries: an indexed trace whose window
/// does not hold every event of the visible time range.
fn summaries(app: &App) -> Option<&TraceIndex> {
    app.index
        .as_deref()
        .filter(|ix| !app.store.covers(app.view_start, app.view_end(), ix.rows))
}

fn draw_lane(buf: &mut Buffer, app: &App, dv: &Device, d: usize, x0: u16, y: u16, w: u16) {
    let s = &app.store;
    let viol = app.dev_viol.get(d).map(Vec::as_slice).unwrap_or(&[]);
    // An indexed trace's segments are the index's (the window holds those of its rows only);
    // its ticks are the index's counts unless the window holds the whole view.
    let ixd = app.index.as_deref().and_then(|ix| ix.devices.get(d));
    let counts = summaries(app).and_then(|ix| ix.devices.get(d).map(|x| (ix, x)));
    let mut segs = ixd.map(|x| x.segs.cursor());
    // Pass 1: each cell's glyph, whether it is a mark (tick or boundary), its segment.
    let mut cells: Vec<(char, Style, bool, Option<Seg>)> = Vec::with_capacity(w as usize);
    for i in 0..w {
        let (t0, t1) = cell_range(app.view_start, app.view_span, w, i);
        let mid = t0 + (t1 - t0) / 2;
        let (seg, boundary) = match segs.as_mut() {
            Some(cur) => cur.cell(t0, mid, t1),
            None => {
                let seg = dv
                    .segs
                    .partition_point(|sg| sg.t <= mid)
                    .checked_sub(1)
                    .map(|k| dv.segs[k]);
                // A state change inside this cell (a segment other than the first starts in it).
                let lo = dv.segs.partition_point(|sg| sg.t < t0);
                let hi = dv.segs.partition_point(|sg| sg.t < t1);
                (seg, hi > lo.max(1))
            }
        };
        let Some(seg) = seg else {
            cells.push((' ', Style::new(), true, None));
            continue;
        };
        let (fill, color) = state_look(seg.what);
        let base = Style::new().fg(Color::Black).bg(color);
        let has = |k: Tick| match counts {
            Some((ix, x)) => x.counts(k).around(&ix.buckets, t0, t1) > 0,
            None => {
                let list = match k {
                    Tick::Dma => &dv.dma,
                    Tick::Irq => &dv.irq,
                    Tick::Data => &dv.data,
                    Tick::Fsm => &dv.fsm,
                };
                s.count_in(list, t0, t1) > 0
            }
        };
        let nv = viol.partition_point(|&t| t < t0) < viol.partition_point(|&t| t < t1);
        let cell = if nv {
            let st = Style::new()
                .fg(Color::White)
                .bg(Color::Red)
                .add_modifier(Modifier::BOLD);
            ('!', st, true)
        } else if has(Tick::Dma) {
            ('D', base.fg(Color::Red).add_modifier(Modifier::BOLD), true)
        } else if has(Tick::Irq) {
            ('i', base.fg(Color::Red), true)
        } else if has(Tick::Data) {
            ('s', base.fg(Color::Blue).add_modifier(Modifier::BOLD), true)
        } else if boundary {
            ('|', base.add_modifier(Modifier::BOLD), true)
        } else {
            (fill, base, false)
        };
        cells.push((cell.0, cell.1, cell.2, Some(seg)));
    }
    // Pass 2: a segment's name in the first gap of unmarked cells wide enough for it.
    let mut i = 0usize;
    while i < cells.len() {
        let Some(seg) = cells[i].3 else {
            i += 1;
            continue;
        };
        let mut end = i;
        while end < cells.len() && cells[end].3.is_some_and(|x| x.t == seg.t) {
            end += 1;
        }
        let name = seg_label(&seg.what);
        let need = name.chars().count() + 2;
        let mut run = 0usize;
        for j in i..end {
            run = if cells[j].2 { 0 } else { run + 1 };
            if run == need {
                let start = j + 1 - need + 1;
                for (k, c) in name.chars().enumerate() {
                    let cell = &mut cells[start + k];
                    cell.0 = c;
                    cell.1 = cell.1.add_modifier(Modifier::BOLD);
                }
                break;
            }
        }
        i = end;
    }
    for (i, (ch, st, _, _)) in cells.into_iter().enumerate() {
        put(buf, x0 + i as u16, y, ch, st);
    }
}

/// A "nice" step (1, 2, 5 x 10^k ns) for about one label every `cells` cells.
fn nice_step(span: u64, w: u16, cells: u16) -> u64 {
    let raw = (span as u128 * cells as u128 / w.max(1) as u128).max(1) as u64;
    let mut p = 1u64;
    while p.saturating_mul(10) <= raw {
        p *= 10;
    }
    [1, 2, 5, 10]
        .into_iter()
        .map(|m| p.saturating_mul(m))
        .find(|&s| s >= raw)
        .unwrap_or(p.saturating_mul(10))
}

fn draw_axis(buf: &mut Buffer, app: &App, x0: u16, y: u16, w: u16, cur_x: Option<u16>) {
    let origin = app.store.first_t.unwrap_or(0);
    let dim = Style::new().fg(Color::DarkGray);
    for i in 0..w {
        put(buf, x0 + i, y, '\u{2500}', dim);
    }
    buf.set_string(x0.saturating_sub(7), y, "t+", dim);
    let step = nice_step(app.view_span, w, 12);
    // First tick at or after view start, on the grid relative to the origin.
    let rel0 = app.view_start.saturating_sub(origin);
    let mut rel = rel0.div_ceil(step).saturating_mul(step);
    let mut free = 0u16;
    while origin.saturating_add(rel) < app.view_end() {
        let x = ((origin + rel - app.view_start) as u128 * w as u128 / app.view_span.max(1) as u128)
            as u16;
        if x >= w {
            break;
        }
        if x >= free {
            let label = if rel == 0 {
                "0".to_owned()
            } else {
                fmt_dur(rel)
            };
            put(buf, x0 + x, y, '\u{253c}', dim);
            if x + 1 + label.len() as u16 <= w {
                buf.set_string(x0 + x + 1, y, &label, Style::new().fg(Color::Gray));
            }
            free = x + label.len() as u16 + 2;
        }
        rel = rel.saturating_add(step);
        if step == 0 {
            break;
        }
    }
    if let Some(x) = cur_x {
        put(
            buf,
            x0 + x,
            y,
            '^',
            Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
        );
    }
}
