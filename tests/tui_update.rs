//! `update` behaviour for every key, on fixture traces loaded as `migscope view` loads them,
//! and on a live (bounded) stream.

#![expect(
    clippy::expect_used,
    reason = "test helpers panic with context (STYLE.md: tests panic, never return Result)"
)]

use std::path::PathBuf;

use migscope::cli::view::{load_messages, trace_info};
use migscope::trace::JsonlReader;
use migscope::trace::{Event, EventKind, IrqKind};
use migscope::verify::{Finding, Verdict};
use migscope_tui::{App, Effect, Key, Msg, Pane, TraceInfo, update};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tui")
        .join(name)
}

fn app_for(name: &str) -> App {
    let path = fixture(name);
    let header = JsonlReader::open(&path)
        .unwrap_or_else(|e| panic!("open {name}: {e}"))
        .header()
        .clone();
    let mut app = App::new(trace_info(name, &header, false), None);
    app.feed(load_messages(&path, Default::default()).unwrap_or_else(|e| panic!("{name}: {e}")));
    app
}

fn key(app: &mut App, k: Key) {
    update(app, Msg::Key(k));
}

fn cursor_line(app: &App) -> u64 {
    let g = app.cursor.expect("a cursor");
    app.store.line_at(g).expect("cursor row held")
}

#[test]
fn loading_verifies_and_fits_the_whole_trace() {
    let app = app_for("late-dma-fail.jsonl");
    assert_eq!(app.report.as_ref().map(|r| r.verdict), Some(Verdict::Fail));
    assert_eq!(app.counts(), (2, 0));
    assert_eq!(app.store.len(), 10);
    assert!(app.done);
    assert_eq!(app.view_start, 0);
    assert!(app.view_start + app.view_span > 16_000_000);
    // The cursor starts on the first event.
    assert_eq!(cursor_line(&app), 2);
}

#[test]
fn q_quits_and_help_closes_on_any_key() {
    let mut app = app_for("late-dma-fail.jsonl");
    key(&mut app, Key::Char('?'));
    assert!(app.show_help);
    key(&mut app, Key::Char('x'));
    assert!(!app.show_help && !app.quit);
    key(&mut app, Key::Char('q'));
    assert!(app.quit);
}

#[test]
fn n_and_shift_n_walk_violations_in_time_order() {
    let mut app = app_for("late-dma-fail.jsonl");
    key(&mut app, Key::Char('n'));
    let f = &app.findings[app.selected_finding.expect("selected")].f;
    assert_eq!((f.rule, f.line), ("irq-after-quiesce", 9));
    assert_eq!(cursor_line(&app), 9);
    key(&mut app, Key::Char('n'));
    let f = &app.findings[app.selected_finding.expect("selected")].f;
    assert_eq!((f.rule, f.line), ("dma-after-quiesce", 10));
    assert_eq!(cursor_line(&app), 10);
    key(&mut app, Key::Char('n'));
    assert_eq!(app.status, "no later violation");
    key(&mut app, Key::Char('N'));
    assert_eq!(cursor_line(&app), 9);
    key(&mut app, Key::Char('N'));
    assert_eq!(app.status, "no earlier violation");
    key(&mut app, Key::Esc);
    assert_eq!(app.selected_finding, None);
}

#[test]
fn n_on_a_passing_trace_says_so() {
    let mut app = app_for("stopcopy-pass.jsonl");
    key(&mut app, Key::Char('n'));
    assert_eq!(app.status, "no violations");
    assert_eq!(app.selected_finding, None);
}

#[test]
fn h_l_and_arrows_pan_and_move_the_cursor_with_the_window() {
    let mut app = app_for("stopcopy-pass.jsonl");
    key(&mut app, Key::Char('+'));
    key(&mut app, Key::Char('+'));
    let s0 = app.view_start;
    let step = app.view_span / 8;
    key(&mut app, Key::Char('l'));
    assert_eq!(app.view_start, s0 + step);
    key(&mut app, Key::Right);
    assert_eq!(app.view_start, s0 + 2 * step);
    // The cursor is the event nearest the window's centre.
    let centre = app.view_start + app.view_span / 2;
    let t = app.store.t_at(app.cursor.expect("cursor")).expect("t");
    assert!(t >= centre, "cursor {t} before centre {centre}");
    key(&mut app, Key::Char('h'));
    key(&mut app, Key::Left);
    assert_eq!(app.view_start, s0);
    assert!(!app.auto_view);
}

#[test]
fn plus_minus_zoom_around_the_cursor() {
    let mut app = app_for("stopcopy-pass.jsonl");
    let span = app.view_span;
    key(&mut app, Key::Char('+'));
    assert_eq!(app.view_span, span / 2);
    key(&mut app, Key::Char('-'));
    assert_eq!(app.view_span, span / 2 * 2);
    // The cursor stays in view.
    let t = app.cursor_t();
    assert!(t >= app.view_start && t < app.view_start + app.view_span);
    // Zooming in never reaches an empty window.
    for _ in 0..80 {
        key(&mut app, Key::Char('+'));
    }
    assert!(app.view_span >= 10);
}

#[test]
fn tab_cycles_panes_both_ways() {
    let mut app = app_for("late-dma-fail.jsonl");
    assert_eq!(app.focus, Pane::Timeline);
    for want in [Pane::Events, Pane::Detail, Pane::Stats, Pane::Timeline] {
        key(&mut app, Key::Tab);
        assert_eq!(app.focus, want);
    }
    key(&mut app, Key::BackTab);
    assert_eq!(app.focus, Pane::Stats);
}

#[test]
fn j_k_arrows_and_pages_move_the_event_cursor() {
    let mut app = app_for("stopcopy-pass.jsonl");
    key(&mut app, Key::Tab); // events pane
    key(&mut app, Key::Char('j'));
    key(&mut app, Key::Down);
    assert_eq!(cursor_line(&app), 4);
    key(&mut app, Key::Char('k'));
    assert_eq!(cursor_line(&app), 3);
    key(&mut app, Key::PageDown);
    assert_eq!(cursor_line(&app), 13);
    key(&mut app, Key::PageDown);
    assert_eq!(cursor_line(&app), 18); // clamped to the last event
    key(&mut app, Key::PageUp);
    assert_eq!(cursor_line(&app), 8);
    key(&mut app, Key::Up);
    assert_eq!(cursor_line(&app), 7);
    // The mouse wheel moves three events at a time, whatever the pane.
    key(&mut app, Key::Tab);
    key(&mut app, Key::WheelDown);
    assert_eq!(cursor_line(&app), 10);
    key(&mut app, Key::WheelUp);
    assert_eq!(cursor_line(&app), 7);
}

#[test]
fn up_down_in_the_timeline_select_lanes_and_f_filters_on_it() {
    let mut app = app_for("two-dev-fail.jsonl");
    // Lanes: ctx vm1, 0000:00:03.0, 0000:00:04.0.
    key(&mut app, Key::Down);
    key(&mut app, Key::Down);
    key(&mut app, Key::Down);
    assert_eq!(app.lane, 2);
    key(&mut app, Key::Up);
    assert_eq!(app.lane, 1);
    key(&mut app, Key::Char('f'));
    assert_eq!(app.filter.text, "dev:0000:00:03.0");
    let rows = app.filter.rows.clone().expect("filtered");
    assert!(!rows.is_empty());
    for g in rows {
        let (_, e) = app.store.get(g).expect("row");
        assert_eq!(e.kind.dev(), Some("0000:00:03.0"));
    }
    key(&mut app, Key::Char('f'));
    assert_eq!(app.filter.rows, None);
}

#[test]
fn slash_filters_by_kind_device_and_words() {
    let mut app = app_for("two-dev-fail.jsonl");
    key(&mut app, Key::Char('/'));
    assert!(app.input.is_some());
    for c in "ev:irq xx".chars() {
        key(&mut app, Key::Char(c));
    }
    key(&mut app, Key::Backspace);
    key(&mut app, Key::Backspace);
    key(&mut app, Key::Backspace);
    key(&mut app, Key::Enter);
    assert_eq!(app.input, None);
    assert_eq!(app.list_len(), 2);
    assert_eq!(cursor_line(&app), 6);
    // Words match the event's summary.
    key(&mut app, Key::Char('/'));
    while app.input.as_ref().is_some_and(|s| !s.is_empty()) {
        key(&mut app, Key::Backspace);
    }
    for c in "msix dev:00:03".chars() {
        key(&mut app, Key::Char(c));
    }
    key(&mut app, Key::Enter);
    assert_eq!(app.list_len(), 1);
    assert_eq!(cursor_line(&app), 13);
    // Esc leaves the filter as it was.
    key(&mut app, Key::Char('/'));
    key(&mut app, Key::Char('z'));
    key(&mut app, Key::Esc);
    assert_eq!(app.filter.text, "msix dev:00:03");
    // An unknown kind is reported, not applied.
    key(&mut app, Key::Char('/'));
    while app.input.as_ref().is_some_and(|s| !s.is_empty()) {
        key(&mut app, Key::Backspace);
    }
    for c in "ev:bogus".chars() {
        key(&mut app, Key::Char(c));
    }
    key(&mut app, Key::Enter);
    assert!(app.status.contains("unknown event kind"), "{}", app.status);
    assert_eq!(app.filter.text, "msix dev:00:03");
    // An empty filter clears it.
    key(&mut app, Key::Char('/'));
    while app.input.as_ref().is_some_and(|s| !s.is_empty()) {
        key(&mut app, Key::Backspace);
    }
    key(&mut app, Key::Enter);
    assert_eq!(app.filter.rows, None);
    assert_eq!(app.list_len(), 26);
}

#[test]
fn e_queues_an_export_with_a_new_name_each_time() {
    let mut app = app_for("late-dma-fail.jsonl");
    key(&mut app, Key::Char('e'));
    key(&mut app, Key::Char('e'));
    assert_eq!(
        app.effects,
        vec![
            Effect::Export("late-dma-fail.export-1.jsonl".to_owned()),
            Effect::Export("late-dma-fail.export-2.jsonl".to_owned()),
        ]
    );
    assert!(app.status.contains("late-dma-fail.export-2.jsonl"));
    update(&mut app, Msg::Exported(Ok("x.jsonl".to_owned())));
    assert_eq!(app.status, "exported x.jsonl");
    update(&mut app, Msg::Exported(Err("disk full".to_owned())));
    assert_eq!(app.status, "export failed: disk full");
    update(&mut app, Msg::Note("following x.partial".to_owned()));
    assert_eq!(app.status, "following x.partial");
}

#[test]
fn export_writes_the_held_trace_back_losslessly() {
    let app = app_for("two-dev-fail.jsonl");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.jsonl");
    let header = JsonlReader::open(&fixture("two-dev-fail.jsonl"))
        .expect("open")
        .header()
        .clone();
    migscope::cli::view::export(&app, &header, out.to_str().expect("utf-8 path")).expect("export");
    let read = |p: &std::path::Path| -> Vec<migscope::trace::Event> {
        JsonlReader::open(p)
            .expect("open")
            .map(|r| r.expect("event").1)
            .collect()
    };
    assert_eq!(read(&out), read(&fixture("two-dev-fail.jsonl")));
    assert!(!migscope::trace::jsonl::partial_path(&out).exists());
}

#[test]
fn g_and_shift_g_jump_to_start_and_end() {
    let mut app = app_for("stopcopy-pass.jsonl");
    key(&mut app, Key::Char('G'));
    assert_eq!(cursor_line(&app), 18);
    key(&mut app, Key::Char('g'));
    assert_eq!(cursor_line(&app), 2);
    assert_eq!(app.view_start, app.store.first_t.expect("first"));
    key(&mut app, Key::End);
    assert_eq!(cursor_line(&app), 18);
    key(&mut app, Key::Home);
    assert_eq!(cursor_line(&app), 2);
}

#[test]
fn detail_and_stats_panes_scroll_with_j_k() {
    let mut app = app_for("two-dev-fail.jsonl");
    key(&mut app, Key::Tab);
    key(&mut app, Key::Tab);
    assert_eq!(app.focus, Pane::Detail);
    key(&mut app, Key::Char('j'));
    key(&mut app, Key::Down);
    assert_eq!(app.scroll, 2);
    key(&mut app, Key::Char('k'));
    assert_eq!(app.scroll, 1);
    key(&mut app, Key::Tab);
    assert_eq!(app.scroll, 0);
}

fn irq(t: u64, line: u64) -> (u64, Event) {
    (
        line,
        Event {
            t,
            pid: None,
            kind: EventKind::Irq {
                dev: "0000:00:03.0".to_owned(),
                kind: IrqKind::Msi,
                vector: 0,
            },
        },
    )
}

fn live_app(cap: usize) -> App {
    App::new(
        TraceInfo {
            name: "live".to_owned(),
            live: true,
            ..TraceInfo::default()
        },
        Some(cap),
    )
}

#[test]
fn space_pauses_live_follow_and_resumes() {
    let mut app = live_app(1000);
    update(
        &mut app,
        Msg::Events((0..10).map(|i| irq(i * 1000, i + 2)).collect()),
    );
    assert!(app.follow);
    assert_eq!(cursor_line(&app), 11);
    key(&mut app, Key::Char(' '));
    assert!(app.paused);
    update(
        &mut app,
        Msg::Events((10..20).map(|i| irq(i * 1000, i + 2)).collect()),
    );
    // Recorded, but the display stays where it was.
    assert_eq!(app.store.len(), 20);
    assert_eq!(cursor_line(&app), 11);
    key(&mut app, Key::Char(' '));
    assert!(!app.paused && app.follow);
    update(&mut app, Msg::Events(vec![irq(20_000, 22)]));
    assert_eq!(cursor_line(&app), 22);
    // Panning leaves follow mode; G returns to it.
    key(&mut app, Key::Char('h'));
    assert!(!app.follow);
    key(&mut app, Key::Char('G'));
    assert!(app.follow);
}

#[test]
fn space_in_replay_only_explains() {
    let mut app = app_for("late-dma-fail.jsonl");
    key(&mut app, Key::Char(' '));
    assert!(!app.paused);
    assert_eq!(app.status, "pause applies to live mode");
}

#[test]
fn live_mode_memory_is_bounded_and_summaries_survive() {
    let mut app = live_app(10_000);
    let mut line = 2;
    for batch in 0..100u64 {
        let evs = (0..1000u64)
            .map(|i| {
                line += 1;
                irq((batch * 1000 + i) * 10_000, line)
            })
            .collect();
        update(&mut app, Msg::Events(evs));
    }
    assert!(app.store.len() <= 10_000, "held {}", app.store.len());
    assert_eq!(app.store.total, 100_000);
    // The lane's state history outlives the rows: the device has been RUNNING since t=0 (the
    // core's timeline of an undeclared device), though the rows of that time are gone.
    let dev = &app.store.devices[0];
    assert!(app.store.t_at(app.store.base()).expect("held") > 0);
    assert_eq!(dev.segs.len(), 1);
    assert_eq!(dev.segs[0].t, 0);
    assert_eq!(
        dev.segs[0].what,
        migscope::verify::SegKind::State(Some(migscope::model::MigState::Running))
    );
    // Following the tail: the window ends at the newest event.
    assert!(app.view_start + app.view_span >= app.store.last_t);
    assert_eq!(cursor_line(&app), line);
}

#[test]
fn native_traces_load_like_their_jsonl_form() {
    let src = fixture("two-dev-fail.jsonl");
    let mut r = JsonlReader::open(&src).expect("open");
    let dir = tempfile::tempdir().expect("tempdir");
    let native = dir.path().join("two-dev-fail.mtr");
    let mut w =
        migscope::trace::NativeWriter::create(&native, &r.header().clone()).expect("create");
    while let Some(item) = r.next_event() {
        w.write(&item.expect("event").1).expect("write");
    }
    w.finish().expect("finish");
    let mut a = App::new(TraceInfo::default(), None);
    a.feed(load_messages(&native, Default::default()).expect("native loads"));
    let b = app_for("two-dev-fail.jsonl");
    assert_eq!(
        a.store.iter().collect::<Vec<_>>(),
        b.store.iter().collect::<Vec<_>>()
    );
    let verdict = |x: &App| {
        x.report
            .as_ref()
            .map(|r| (r.verdict, r.blind_spots.clone(), r.devices.clone()))
    };
    assert!(verdict(&a).is_some());
    assert_eq!(verdict(&a), verdict(&b));
    assert_eq!(a.counts(), b.counts());
}

#[test]
fn findings_past_the_cap_are_counted_not_held() {
    let mut app = live_app(1000);
    update(&mut app, Msg::Events(vec![irq(0, 2)]));
    let n = migscope_tui::app::MAX_FINDINGS + 5;
    let fs = (0..n)
        .map(|i| Finding {
            rule: migscope::verify::rule::IRQ_AFTER_QUIESCE,
            dev: Some("0000:00:03.0".to_owned()),
            t: i as u64,
            line: 2,
            detail: String::new(),
            warning: false,
        })
        .collect();
    update(&mut app, Msg::Findings(fs));
    assert_eq!(app.findings.len(), migscope_tui::app::MAX_FINDINGS);
    assert_eq!(app.counts().0, n);
    assert_eq!(app.dropped, (5, 0));
}

#[test]
fn text_search_proceeds_in_steps_on_ticks() {
    let mut app = App::new(TraceInfo::default(), None);
    update(
        &mut app,
        Msg::Events((0..600_000).map(|i| irq(i * 10, i + 2)).collect()),
    );
    // Move the cursor away from the start: the filter keeps it near there.
    key(&mut app, Key::Char('G'));
    key(&mut app, Key::Char('/'));
    for c in "msi[0]".chars() {
        key(&mut app, Key::Char(c));
    }
    key(&mut app, Key::Enter);
    assert!(app.status.contains("searching"), "{}", app.status);
    let partial = app.list_len();
    assert!(partial > 0 && partial < 600_000, "{partial}");
    let mut ticks = 0;
    while app.status.contains("searching") {
        update(&mut app, Msg::Tick);
        ticks += 1;
        assert!(ticks < 100, "search never finished");
    }
    assert_eq!(app.list_len(), 600_000);
    assert_eq!(app.status, "filter `msi[0]`: 600000 events");
    // The cursor is where it was (the last event), not at the first match.
    assert_eq!(cursor_line(&app), 600_001);
}
