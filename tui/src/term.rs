//! The terminal loop: raw mode and the alternate screen (restored on exit and, through
//! ratatui's panic hook, on panic), key events and source messages turned into [`Msg`]s,
//! effects handed to the caller, a redraw after each round.

use std::io;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use crossterm::event::{
    self, DisableMouseCapture, EnableMouseCapture, Event, KeyCode, KeyEventKind, KeyModifiers,
    MouseEventKind,
};

use crate::app::{App, Effect, Key, Msg, update};

/// Longest time spent ingesting source messages between two redraws.
const INGEST_BUDGET: Duration = Duration::from_millis(40);
/// How long to wait for a key when nothing else happens.
const POLL: Duration = Duration::from_millis(50);

/// Restores the terminal when dropped (normal exit and early returns).
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = crossterm::execute!(io::stdout(), DisableMouseCapture);
        ratatui::restore();
    }
}

/// Mouse capture is ours to undo: on panic, before ratatui's own hook restores the rest.
fn hook_mouse_restore() {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let _ = crossterm::execute!(io::stdout(), DisableMouseCapture);
        prev(info);
    }));
}

/// Maps a terminal key to the view's key.
pub fn map_key(code: KeyCode, mods: KeyModifiers) -> Option<Key> {
    Some(match code {
        KeyCode::Char('c') if mods.contains(KeyModifiers::CONTROL) => Key::Char('q'),
        KeyCode::Char(c) => Key::Char(c),
        KeyCode::Left => Key::Left,
        KeyCode::Right => Key::Right,
        KeyCode::Up => Key::Up,
        KeyCode::Down => Key::Down,
        KeyCode::PageUp => Key::PageUp,
        KeyCode::PageDown => Key::PageDown,
        KeyCode::Home => Key::Home,
        KeyCode::End => Key::End,
        KeyCode::Tab => Key::Tab,
        KeyCode::BackTab => Key::BackTab,
        KeyCode::Enter => Key::Enter,
        KeyCode::Esc => Key::Esc,
        KeyCode::Backspace => Key::Backspace,
        _ => return None,
    })
}

/// Runs the view until the user quits. `source` delivers events, findings and verdicts (from
/// a file loader or a live capture thread); `export` performs an [`Effect::Export`] and
/// returns the file written. Returns the final model.
pub fn run(
    app: App,
    source: Receiver<Msg>,
    export: &mut dyn FnMut(&App, &str) -> Result<String, String>,
) -> io::Result<App> {
    run_timed(app, source, export, &mut |_| {})
}

/// [`run`], telling `frame` how long each redraw took (laying the frame out and writing it to
/// the terminal): the caller's frame-time statistics.
pub fn run_timed(
    mut app: App,
    source: Receiver<Msg>,
    export: &mut dyn FnMut(&App, &str) -> Result<String, String>,
    frame: &mut dyn FnMut(Duration),
) -> io::Result<App> {
    let mut terminal = ratatui::try_init()?;
    let _restore = Restore;
    hook_mouse_restore();
    // The wheel scrolls the event list (optional: a terminal without mouse support is fine).
    let _ = crossterm::execute!(io::stdout(), EnableMouseCapture);
    let mut source_open = true;
    loop {
        let drawn = Instant::now();
        terminal.draw(|f| crate::ui::draw(f, &app))?;
        frame(drawn.elapsed());
        if event::poll(POLL)? {
            // Every pending input event, then redraw.
            loop {
                match event::read()? {
                    Event::Key(k) if k.kind != KeyEventKind::Release => {
                        if let Some(key) = map_key(k.code, k.modifiers) {
                            update(&mut app, Msg::Key(key));
                        }
                    }
                    Event::Mouse(m) => match m.kind {
                        MouseEventKind::ScrollUp => update(&mut app, Msg::Key(Key::WheelUp)),
                        MouseEventKind::ScrollDown => update(&mut app, Msg::Key(Key::WheelDown)),
                        _ => {}
                    },
                    _ => {}
                }
                if !event::poll(Duration::ZERO)? {
                    break;
                }
            }
        }
        let t0 = Instant::now();
        while source_open && t0.elapsed() < INGEST_BUDGET {
            match source.try_recv() {
                Ok(m) => update(&mut app, m),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    source_open = false;
                    if !app.done {
                        update(&mut app, Msg::SourceDone);
                    }
                }
            }
        }
        update(&mut app, Msg::Tick);
        for eff in std::mem::take(&mut app.effects) {
            match eff {
                Effect::Export(name) => {
                    let r = export(&app, &name);
                    update(&mut app, Msg::Exported(r));
                }
            }
        }
        if app.quit {
            break;
        }
    }
    Ok(app)
}
