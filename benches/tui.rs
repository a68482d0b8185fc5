//! The timeline TUI on a large trace, headless, as rows for `cargo xtask bench`:
//! `cargo bench --bench tui -- --trace target/bench/trace-10000000.mgt`.
//!
//! Open: the trace loaded and verified exactly as `migscope view` does it
//! (`cli::view::load_messages`: reader, verifier, the core's events as messages), then fed to
//! the `App`. `view` streams the same messages from a thread and is browsable while they
//! arrive; this is the time until the whole trace is in.
//! Frames: `ui::draw` into a ratatui `TestBackend` (200x50) after each pan step (`l`), zoom
//! (`+`/`-`) and cursor move; the time of the draw alone (the terminal write is not included).
//!
//! Output: tab-separated `ROW` / `NOTE` lines on stdout (xtask reads them).

use std::{path::PathBuf, time::Instant};

use migscope::{cli::view, trace::open_any};
use migscope_tui::{
    App, Key, Msg,
    ratatui::{Terminal, backend::TestBackend},
    update,
};

fn peak_rss_kb() -> i64 {
    // SAFETY: getrusage fills the struct we pass; RUSAGE_SELF is always valid.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut ru) == 0 {
            ru.ru_maxrss
        } else {
            -1
        }
    }
}

fn main() {
    let mut trace: Option<PathBuf> = None;
    let mut frames = 300usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--trace" => trace = args.next().map(PathBuf::from),
            "--frames" => frames = args.next().and_then(|s| s.parse().ok()).unwrap_or(frames),
            _ => {} // `--bench` from cargo
        }
    }
    let Some(trace) = trace else {
        println!("NOTE\tSKIP tui: no --trace given");
        return;
    };
    let name = trace.display().to_string();
    let header = match open_any(&trace) {
        Ok(r) => r.header().clone(),
        Err(e) => {
            println!("NOTE\tSKIP tui: {e}");
            return;
        }
    };
    eprintln!("tui bench: loading {name}");
    let t0 = Instant::now();
    let msgs = match view::load_messages(&trace, Default::default()) {
        Ok(m) => m,
        Err(e) => {
            println!("NOTE\tSKIP tui: {e}");
            return;
        }
    };
    let loaded = t0.elapsed().as_secs_f64();
    let mut app = App::new(view::trace_info(&name, &header, false), None);
    app.feed(msgs);
    let open = t0.elapsed().as_secs_f64();
    let events = app.store.len();
    let rss = peak_rss_kb();
    let mut term = match Terminal::new(TestBackend::new(200, 50)) {
        Ok(t) => t,
        Err(e) => {
            println!("NOTE\tSKIP tui frames: {e}");
            return;
        }
    };
    // The keys of a user panning and zooming over the timeline and scrolling the list.
    let pattern = [
        Key::Right,
        Key::Right,
        Key::Char('+'),
        Key::Right,
        Key::Down,
        Key::PageDown,
        Key::Right,
        Key::Char('-'),
        Key::Left,
        Key::Right,
    ];
    let mut times = Vec::with_capacity(frames);
    let mut upd = 0.0f64;
    for i in 0..frames {
        let u = Instant::now();
        update(&mut app, Msg::Key(pattern[i % pattern.len()]));
        upd += u.elapsed().as_secs_f64();
        let t = Instant::now();
        if let Err(e) = term.draw(|f| migscope_tui::ui::draw(f, &app)) {
            println!("NOTE\tSKIP tui frames: draw failed: {e}");
            return;
        }
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
    let p99 = times[(times.len() * 99 / 100).min(times.len() - 1)];
    let max = times.last().copied().unwrap_or(f64::NAN);
    let evs = events as f64;
    println!(
        "ROW\ttui\topen a {events}-event trace (load + verify + feed)\t{open}\ts\t\tNaN\t\tno\tload+verify {loaded:.2} s, feed {:.2} s; {:.2}M ev/s; peak RSS {} MB (the view holds every event)",
        open - loaded,
        evs / open / 1e6,
        rss / 1024
    );
    println!(
        "ROW\ttui\tframe draw while panning/zooming, p99 ms\t{p99}\tms\t\tNaN\t< 16 ms\t{}\tmean {mean:.2} ms, max {max:.2} ms over {frames} frames (200x50 TestBackend); key handling {:.3} ms/key",
        if p99 < 16.0 { "yes" } else { "no" },
        upd * 1e3 / frames as f64
    );
}
