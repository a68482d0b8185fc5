//! Scale check (prints numbers, asserts nothing): builds a large synthetic trace in the view's
//! store and times ingestion, drawing at several zoom levels, filtering and violation
//! navigation. `cargo run --release -p migscope-tui --example scale -- [EVENTS]`.

use std::time::Instant;

use migscope_tui::core::model::{MigFlags, MigState as State};
use migscope_tui::core::trace::{DmaSource, Event, EventKind as EvKind, IrqKind};
use migscope_tui::core::verify::{Finding, rule};
use migscope_tui::ratatui::{Terminal, backend::TestBackend};
use migscope_tui::{App, Key, Msg, TraceInfo, update};

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000_000);
    let devs = [
        "0000:00:03.0",
        "0000:00:04.0",
        "0000:00:05.0",
        "0000:00:06.0",
    ];
    let mut app = App::new(
        TraceInfo {
            name: "synthetic".into(),
            ..TraceInfo::default()
        },
        None,
    );
    let t0 = Instant::now();
    let mut batch = Vec::with_capacity(4096);
    let mut findings = Vec::new();
    let mut line = 1u64;
    let mut push = |app: &mut App, batch: &mut Vec<(u64, Event)>, e: EvKind, t: u64| {
        line += 1;
        batch.push((
            line,
            Event {
                t,
                pid: None,
                kind: e,
            },
        ));
        if batch.len() == 4096 {
            update(app, Msg::Events(std::mem::take(batch)));
        }
        line
    };
    for (i, d) in devs.iter().enumerate() {
        push(
            &mut app,
            &mut batch,
            EvKind::Device {
                dev: (*d).into(),
                ctx: if i < 2 { "vm1".into() } else { "vm2".into() },
                flags: MigFlags(3),
                state: State::Running,
                driver: None,
                sources: Default::default(),
            },
            0,
        );
    }
    // Every 1000 events a device goes quiescent and back; DMA/IRQ in between.
    for k in 0..n {
        let t = k * 1_000; // 1 µs apart
        let d = devs[(k % 4) as usize].to_owned();
        let e = match k % 1000 {
            0 => EvKind::Set {
                dev: d,
                to: State::RunningP2p,
            },
            1 => EvKind::SetDone {
                dev: d,
                to: State::RunningP2p,
                ret: 0,
                data_fd: None,
            },
            500 => EvKind::Set {
                dev: d,
                to: State::Running,
            },
            501 => EvKind::SetDone {
                dev: d,
                to: State::Running,
                ret: 0,
                data_fd: None,
            },
            x if x % 2 == 0 => EvKind::Dma {
                dev: d,
                src: DmaSource::Witness,
                iova: k,
                len: 4096,
                write: true,
                window: None,
                p2p: None,
            },
            _ => EvKind::Irq {
                dev: d,
                kind: IrqKind::Msix,
                vector: 1,
            },
        };
        let l = push(&mut app, &mut batch, e, t);
        if k % 100_000 == 7 {
            findings.push(Finding {
                rule: rule::IRQ_AFTER_QUIESCE,
                dev: Some(devs[(k % 4) as usize].into()),
                t,
                line: l,
                detail: "synthetic".into(),
                warning: false,
            });
        }
    }
    update(&mut app, Msg::Events(batch));
    update(&mut app, Msg::Findings(findings));
    update(&mut app, Msg::SourceDone);
    println!(
        "ingested {} events in {:.2}s",
        app.store.len(),
        t0.elapsed().as_secs_f64()
    );
    let mut term = match Terminal::new(TestBackend::new(200, 50)) {
        Ok(t) => t,
        Err(e) => return eprintln!("backend: {e}"),
    };
    let mut draw = |app: &App, what: &str| {
        let t = Instant::now();
        let reps = 10;
        for _ in 0..reps {
            if let Err(e) = term.draw(|f| migscope_tui::ui::draw(f, app)) {
                eprintln!("draw: {e}");
            }
        }
        println!(
            "draw 200x50 {what}: {:.2} ms/frame (span {} ns)",
            t.elapsed().as_secs_f64() * 1e3 / reps as f64,
            app.view_span
        );
    };
    draw(&app, "whole trace");
    for _ in 0..10 {
        update(&mut app, Msg::Key(Key::Char('+')));
    }
    draw(&app, "zoomed x1024");
    for _ in 0..10 {
        update(&mut app, Msg::Key(Key::Char('+')));
    }
    draw(&app, "zoomed x1M");
    let t = Instant::now();
    update(&mut app, Msg::Key(Key::Char('n')));
    update(&mut app, Msg::Key(Key::Char('n')));
    println!("n n: {:.3} ms", t.elapsed().as_secs_f64() * 1e3);
    draw(&app, "violation selected");
    let t = Instant::now();
    update(&mut app, Msg::Key(Key::Char('/')));
    for c in "ev:set dev:00:03".chars() {
        update(&mut app, Msg::Key(Key::Char(c)));
    }
    update(&mut app, Msg::Key(Key::Enter));
    println!(
        "filter ev:set dev:00:03 over {} events: {:.2}s -> {}",
        app.store.len(),
        t.elapsed().as_secs_f64(),
        app.status
    );
    draw(&app, "filtered");
    let t = Instant::now();
    update(&mut app, Msg::Key(Key::Char('/')));
    for _ in 0.."ev:set dev:00:03".len() {
        update(&mut app, Msg::Key(Key::Backspace));
    }
    for c in "0x2a".chars() {
        update(&mut app, Msg::Key(Key::Char(c)));
    }
    update(&mut app, Msg::Key(Key::Enter));
    let first_step = t.elapsed().as_secs_f64();
    let mut ticks = 0;
    while app.status.contains("searching") {
        update(&mut app, Msg::Tick);
        ticks += 1;
    }
    println!(
        "word filter `0x2a` (text search) over {} events: first step {:.3}s, done after {} ticks \
         in {:.2}s -> {}",
        app.store.len(),
        first_step,
        ticks,
        t.elapsed().as_secs_f64(),
        app.status
    );

    // Live: a bounded window (1M events) fed in probe-sized batches.
    let mut live = App::new(
        TraceInfo {
            name: "live".into(),
            live: true,
            ..TraceInfo::default()
        },
        Some(1_000_000),
    );
    let t = Instant::now();
    let mut line = 1u64;
    for b in 0..(n / 2000) {
        let evs: Vec<(u64, Event)> = (0..2000u64)
            .map(|i| {
                line += 1;
                let ev = Event {
                    t: (b * 2000 + i) * 10_000, // 100k events/s of trace time
                    pid: None,
                    kind: EvKind::Irq {
                        dev: devs[(i % 4) as usize].into(),
                        kind: IrqKind::Msix,
                        vector: 1,
                    },
                };
                (line, ev)
            })
            .collect();
        update(&mut live, Msg::Events(evs));
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "live: {} events through a 1M window in {:.2}s ({:.1} M events/s), holding {}",
        live.store.total,
        secs,
        live.store.total as f64 / secs / 1e6,
        live.store.len()
    );
    draw(&live, "live tail");
}
