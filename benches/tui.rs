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
//! With `--indexed` (a native trace), the view as `view` runs it on a native file: the index
//! built in one pass (`migscope_tui::index`) while the session's verifier runs on another
//! thread (summaries only: the view holds no events), the first frame drawn once the index is
//! in, then the same keys, each answered with the window loads it asks for (decoding rows from
//! the file) before its frame is drawn: the key-to-frame time. The index is opened as `view`
//! opens it (`TraceIndex::open`): the one saved beside the trace (`T.mgt.idx`) when it is
//! valid, else built and saved; `--fresh` removes a saved one first (the first open).
//!
//! Output: tab-separated `ROW` / `NOTE` lines on stdout (xtask reads them).

use std::{path::PathBuf, sync::Arc, time::Instant};

use migscope::{cli::view, trace::open_any};
use migscope_tui::{
    App, Key, Msg,
    index::Opened,
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

/// CPU time of the calling thread, ms: a frame's own cost, which other work sharing the
/// machine does not inflate as it does the wall time.
fn thread_cpu_ms() -> f64 {
    // SAFETY: clock_gettime fills the timespec we pass; the clock id is always valid.
    unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        if libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) == 0 {
            ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6
        } else {
            f64::NAN
        }
    }
}

/// The keys of a user panning and zooming over the timeline and scrolling the list.
const PATTERN: [Key; 10] = [
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

fn p99(times: &mut [f64]) -> (f64, f64, f64) {
    times.sort_by(f64::total_cmp);
    let n = times.len().max(1);
    let mean = times.iter().sum::<f64>() / n as f64;
    let p = times
        .get((times.len() * 99 / 100).min(times.len().saturating_sub(1)))
        .copied()
        .unwrap_or(f64::NAN);
    (p, mean, times.last().copied().unwrap_or(f64::NAN))
}

/// `view` of a native trace through its index (see the module docs).
fn indexed_rows(
    trace: &std::path::Path,
    name: &str,
    header: &migscope::trace::Header,
    frames: usize,
) {
    eprintln!("tui bench: indexing {name}");
    let t0 = Instant::now();
    let vp = trace.to_owned();
    let verifier = std::thread::spawn(move || {
        let r = view::verify_messages(&vp, Default::default(), true);
        (r, t0.elapsed().as_secs_f64())
    });
    let mut term = match Terminal::new(TestBackend::new(200, 50)) {
        Ok(t) => t,
        Err(e) => {
            println!("NOTE\tSKIP tui indexed: {e}");
            return;
        }
    };
    let mut app = App::new(view::trace_info(name, header, false), None);
    // The frame `view` shows at once (header, "indexing…").
    if let Err(e) = term.draw(|f| migscope_tui::ui::draw(f, &app)) {
        println!("NOTE\tSKIP tui indexed: draw failed: {e}");
        return;
    }
    let at_once = t0.elapsed().as_secs_f64();
    let (ix, how) = match migscope_tui::index::TraceIndex::open(trace, |_| true) {
        Ok(x) => x,
        Err(e) => {
            println!("NOTE\tSKIP tui indexed: {e}");
            return;
        }
    };
    let built = t0.elapsed().as_secs_f64();
    let rows = ix.rows;
    let blocks = ix.blocks.len();
    let segs: usize = ix.devices.iter().map(|d| d.segs.len()).sum();
    update(&mut app, Msg::Index(Arc::new(ix)));
    migscope_tui::index::serve_loads(&mut app);
    if let Err(e) = term.draw(|f| migscope_tui::ui::draw(f, &app)) {
        println!("NOTE\tSKIP tui indexed: draw failed: {e}");
        return;
    }
    let first = t0.elapsed().as_secs_f64();
    let (open, how) = match how {
        Opened::Loaded(_) => ("second open", "the saved index loaded".to_owned()),
        Opened::Built { stale, saved } => (
            "first open",
            format!(
                "index built ({stale}), {}",
                match saved {
                    Ok(p) => format!(
                        "saved ({:.1} MB)",
                        std::fs::metadata(&p).map_or(0, |m| m.len()) as f64 / 1e6
                    ),
                    Err(e) => format!("not saved: {e}"),
                }
            ),
        ),
    };
    let (msgs, verified) = match verifier.join() {
        Ok((Ok(m), t)) => (m, t),
        Ok((Err(e), _)) => {
            println!("NOTE\tSKIP tui indexed: verifier: {e}");
            return;
        }
        Err(_) => {
            println!("NOTE\tSKIP tui indexed: the verifier thread panicked");
            return;
        }
    };
    let verdict = msgs.iter().rev().find_map(|m| match m {
        Msg::Verdict { report, .. } => Some(report.verdict.name()),
        _ => None,
    });
    app.feed(msgs);
    let mut times = Vec::with_capacity(frames);
    let mut cpu = Vec::with_capacity(frames);
    let mut loads = 0usize;
    for i in 0..frames {
        let t = Instant::now();
        let c = thread_cpu_ms();
        update(&mut app, Msg::Key(PATTERN[i % PATTERN.len()]));
        loads += app
            .effects
            .iter()
            .filter(|e| matches!(e, migscope_tui::Effect::Load(_)))
            .count();
        migscope_tui::index::serve_loads(&mut app);
        if let Err(e) = term.draw(|f| migscope_tui::ui::draw(f, &app)) {
            println!("NOTE\tSKIP tui indexed frames: draw failed: {e}");
            return;
        }
        times.push(t.elapsed().as_secs_f64() * 1e3);
        cpu.push(thread_cpu_ms() - c);
    }
    let (cpu_p, cpu_mean, _) = p99(&mut cpu);
    let held = app.store.len();
    let rss_mb = peak_rss_kb() as f64 / 1024.0;
    let (p, mean, max) = p99(&mut times);
    let m = rows as f64 / 1e6;
    println!(
        "ROW\ttui\tindexed view {m:.0}M events, {open}: first frame with the whole trace's summaries\t{first}\ts\t\tNaN\t< 1 s\t{}\t{how} in {built:.2} s ({:.1}M ev/s, {blocks} blocks, {segs} state segments); a frame with the header and progress at {:.3} s; verdict {} at {verified:.2} s (the verifier ran beside it)",
        if first < 1.0 { "yes" } else { "no" },
        rows as f64 / built / 1e6,
        at_once,
        verdict.unwrap_or("?"),
    );
    println!(
        "ROW\ttui\tindexed view {m:.0}M events, {open}: peak RSS\t{rss_mb}\tMB\t\tNaN\t< 256 MB\t{}\tindex, the verifier's state, {held} events held after {frames} keys",
        if rss_mb < 256.0 { "yes" } else { "no" }
    );
    println!(
        "ROW\ttui\tindexed view {m:.0}M events, {open}: key to frame while panning/zooming, p99 ms\t{p}\tms\t\tNaN\t< 16 ms\t{}\tmean {mean:.2} ms, max {max:.2} ms over {frames} keys (the thread's CPU time per key: p99 {cpu_p:.2} ms, mean {cpu_mean:.2} ms), {loads} window loads decoded from the file (200x50 TestBackend)",
        if p < 16.0 { "yes" } else { "no" }
    );
}

fn main() {
    let mut trace: Option<PathBuf> = None;
    let mut frames = 300usize;
    let mut indexed = false;
    let mut fresh = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--trace" => trace = args.next().map(PathBuf::from),
            "--frames" => frames = args.next().and_then(|s| s.parse().ok()).unwrap_or(frames),
            "--indexed" => indexed = true,
            "--fresh" => fresh = true,
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
    if indexed {
        if fresh {
            // The first open: no index saved beside the trace yet.
            let side = migscope_tui::index::sidecar::path_of(&trace);
            if let Err(e) = std::fs::remove_file(&side)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                println!("NOTE\tSKIP tui indexed: {}: {e}", side.display());
                return;
            }
        }
        indexed_rows(&trace, &name, &header, frames);
        return;
    }
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
    let pattern = PATTERN;
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
    let (p99, mean, max) = p99(&mut times);
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
