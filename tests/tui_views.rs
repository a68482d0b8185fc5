//! Snapshots of every TUI view (ratatui `TestBackend`) on fixture traces loaded and verified
//! exactly as `migscope view` does.

#![expect(
    clippy::expect_used,
    reason = "test helpers panic with context (STYLE.md: tests panic, never return Result)"
)]

use std::path::PathBuf;

use migscope::cli::view::{load_messages, trace_info};
use migscope::trace::JsonlReader;
use migscope_tui::ratatui::Terminal;
use migscope_tui::ratatui::backend::TestBackend;
use migscope_tui::{App, Key, Msg, update};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tui")
        .join(name)
}

/// An app holding the whole fixture, verified.
fn app_for(name: &str) -> App {
    let path = fixture(name);
    let header = JsonlReader::open(&path)
        .unwrap_or_else(|e| panic!("open {name}: {e}"))
        .header()
        .clone();
    let mut app = App::new(trace_info(name, &header, false), None);
    let msgs =
        load_messages(&path, Default::default()).unwrap_or_else(|e| panic!("load {name}: {e}"));
    app.feed(msgs);
    app
}

fn keys(app: &mut App, ks: &[Key]) {
    for k in ks {
        update(app, Msg::Key(*k));
    }
}

/// The screen as text, one line per row (styles are not part of the snapshot).
fn render(app: &App, w: u16, h: u16) -> String {
    let mut term = Terminal::new(TestBackend::new(w, h)).expect("test backend");
    term.draw(|f| migscope_tui::ui::draw(f, app)).expect("draw");
    let buf = term.backend().buffer();
    let mut out = String::new();
    for y in 0..h {
        let mut line = String::new();
        for x in 0..w {
            line.push_str(buf[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[test]
fn fail_trace_overview_80x24() {
    let app = app_for("late-dma-fail.jsonl");
    insta::assert_snapshot!(render(&app, 80, 24));
}

#[test]
fn fail_trace_first_violation_selected_80x24() {
    let mut app = app_for("late-dma-fail.jsonl");
    keys(&mut app, &[Key::Char('n')]);
    insta::assert_snapshot!(render(&app, 80, 24));
}

#[test]
fn fail_trace_second_violation_wide() {
    let mut app = app_for("late-dma-fail.jsonl");
    keys(&mut app, &[Key::Char('n'), Key::Char('n')]);
    insta::assert_snapshot!(render(&app, 120, 30));
}

#[test]
fn pass_trace_overview_wide() {
    let app = app_for("stopcopy-pass.jsonl");
    insta::assert_snapshot!(render(&app, 120, 30));
}

#[test]
fn pass_trace_event_selected_detail() {
    let mut app = app_for("stopcopy-pass.jsonl");
    // Down the list to the STOP_COPY set_done.
    keys(&mut app, &[Key::Tab]);
    for _ in 0..11 {
        keys(&mut app, &[Key::Char('j')]);
    }
    insta::assert_snapshot!(render(&app, 100, 28));
}

#[test]
fn two_devices_grouped_by_context_with_violation() {
    let mut app = app_for("two-dev-fail.jsonl");
    keys(&mut app, &[Key::Char('n')]);
    insta::assert_snapshot!(render(&app, 120, 30));
}

#[test]
fn two_devices_zoomed_and_panned() {
    let mut app = app_for("two-dev-fail.jsonl");
    keys(
        &mut app,
        &[
            Key::Char('+'),
            Key::Char('+'),
            Key::Char('l'),
            Key::Char('l'),
        ],
    );
    insta::assert_snapshot!(render(&app, 120, 30));
}

#[test]
fn stats_pane() {
    let mut app = app_for("two-dev-fail.jsonl");
    keys(&mut app, &[Key::Tab, Key::Tab, Key::Tab]);
    insta::assert_snapshot!(render(&app, 100, 30));
}

#[test]
fn help_overlay() {
    let mut app = app_for("late-dma-fail.jsonl");
    keys(&mut app, &[Key::Char('?')]);
    insta::assert_snapshot!(render(&app, 80, 24));
}

#[test]
fn filter_input_and_result() {
    let mut app = app_for("two-dev-fail.jsonl");
    keys(&mut app, &[Key::Char('/')]);
    for c in "ev:irq,dma".chars() {
        keys(&mut app, &[Key::Char(c)]);
    }
    let typing = render(&app, 100, 24);
    keys(&mut app, &[Key::Enter]);
    insta::assert_snapshot!(format!("{typing}----\n{}", render(&app, 100, 24)));
}

#[test]
fn narrow_terminal_still_shows_every_pane() {
    let mut app = app_for("two-dev-fail.jsonl");
    keys(&mut app, &[Key::Char('n')]);
    let s = render(&app, 80, 24);
    for want in [
        "timeline",
        "events",
        "detail",
        "VIOLATION",
        "0000:00:03.0",
        "t+",
    ] {
        assert!(s.contains(want), "80x24 screen lacks `{want}`:\n{s}");
    }
    // Tiny terminals must not panic.
    let _ = render(&app, 20, 6);
    let _ = render(&app, 1, 1);
}

#[test]
fn inconclusive_trace_header_and_stats_name_blind_spots() {
    let mut app = app_for("blind-lost-truncated.jsonl");
    let overview = render(&app, 100, 26);
    keys(&mut app, &[Key::BackTab]);
    insta::assert_snapshot!(format!("{overview}----\n{}", render(&app, 100, 26)));
}

#[test]
fn extreme_and_unordered_times_never_panic() {
    use migscope::trace::{Event, EventKind, IrqKind};
    use migscope_tui::TraceInfo;
    let irq = |t: u64, line: u64| {
        (
            line,
            Event {
                t,
                pid: None,
                kind: EventKind::Irq {
                    dev: "d".to_owned(),
                    kind: IrqKind::Msi,
                    vector: 0,
                },
            },
        )
    };
    for live in [false, true] {
        let mut app = App::new(
            TraceInfo {
                live,
                ..TraceInfo::default()
            },
            live.then_some(100),
        );
        update(
            &mut app,
            Msg::Events(vec![
                irq(u64::MAX - 1, 2),
                irq(0, 3),
                irq(u64::MAX, 4),
                irq(5, 5),
            ]),
        );
        for k in [
            Key::Char('+'),
            Key::Char('l'),
            Key::Char('-'),
            Key::Char('-'),
            Key::Char('h'),
            Key::Char('G'),
            Key::Char('g'),
            Key::Char('n'),
            Key::Down,
            Key::Char('f'),
            Key::Tab,
            Key::Char('j'),
        ] {
            keys(&mut app, &[k]);
            let _ = render(&app, 80, 24);
        }
        for _ in 0..70 {
            keys(&mut app, &[Key::Char('-')]);
        }
        let _ = render(&app, 80, 24);
    }
}

#[test]
fn selected_windowed_dma_underlines_its_window() {
    use migscope_tui::ratatui::style::Modifier;
    let mut app = app_for("late-dma-fail.jsonl");
    keys(&mut app, &[Key::Char('n'), Key::Char('n')]); // the windowed DMA, (13 ms, 15 ms]
    let mut term = Terminal::new(TestBackend::new(100, 24)).expect("test backend");
    term.draw(|f| migscope_tui::ui::draw(f, &app))
        .expect("draw");
    let buf = term.backend().buffer();
    // Row 4 is the device lane (header 2 rows, border, ctx lane).
    let underlined: Vec<u16> = (0..100)
        .filter(|&x| buf[(x, 4)].modifier.contains(Modifier::UNDERLINED))
        .collect();
    assert!(!underlined.is_empty(), "no window drawn");
    // The window is the 2 ms before the DMA: about 2/16.8 of the 83 timeline cells.
    assert!((8..=14).contains(&underlined.len()), "{underlined:?}");
    let lane: String = (0..100).map(|x| buf[(x, 4)].symbol().to_owned()).collect();
    let last = *underlined.last().expect("cells") as usize;
    assert!(
        lane.chars().nth(last) == Some('!'),
        "window must end on the violation: {lane}"
    );
}

/// Every rule fixture of the verifier's own suite: the view's counts match `check`, and each
/// violation is reached with `n` and explained in the detail pane, at 80x24.
#[test]
fn every_rule_fixture_is_navigable_and_explained() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rules");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("SKIP: no {} (the verifier's fixtures)", dir.display());
        return;
    };
    let mut seen = 0;
    for entry in entries {
        let path = entry.expect("dir entry").path();
        if path.extension().is_none_or(|e| e != "jsonl") {
            continue;
        }
        seen += 1;
        let name = path.display().to_string();
        let header = JsonlReader::open(&path)
            .unwrap_or_else(|e| panic!("{e}"))
            .header()
            .clone();
        let mut app = App::new(trace_info(&name, &header, false), None);
        app.feed(load_messages(&path, Default::default()).unwrap_or_else(|e| panic!("{e}")));
        let report = migscope::verify::check_path(&path, Default::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(app.counts().0, report.violations.len(), "{name}");
        assert_eq!(
            app.report.as_ref().map(|r| r.verdict),
            Some(report.verdict),
            "{name}"
        );
        for v in &report.violations {
            keys(&mut app, &[Key::Char('n')]);
            let screen = render(&app, 80, 24);
            assert!(screen.contains("VIOLATION"), "{name}:\n{screen}");
            let f = &app.findings[app.selected_finding.expect("selected")].f;
            assert_eq!((f.rule, f.line), (v.rule, v.line), "{name}");
            assert!(
                screen.contains(v.rule),
                "{name}: {} not shown:\n{screen}",
                v.rule
            );
        }
    }
    assert!(seen > 10, "only {seen} fixtures in {}", dir.display());
}

/// Broken traces are refused with the file and line, never a panic.
#[test]
fn bad_fixtures_are_refused_with_a_reason() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("SKIP: no {}", dir.display());
        return;
    };
    for entry in entries {
        let path = entry.expect("dir entry").path();
        let err = load_messages(&path, Default::default())
            .err()
            .unwrap_or_else(|| panic!("{} loaded", path.display()));
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }
}
