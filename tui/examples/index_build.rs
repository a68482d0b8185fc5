//! Opens the index of a native trace as `view` does (the saved one beside the trace when it is
//! valid, else built and saved) and prints how long it took: the index pass or the sidecar's
//! load alone, for profiling (`cargo run --release -p migscope-tui --example index_build --
//! T.mgt [--publish]`; remove `T.mgt.idx` to time the pass). With `--publish`, the partial
//! indexes are published as for `view` and the last one is held until the next arrives (as
//! the view holds it): their count and the peak RSS are printed.

use migscope_tui::index::{FIRST_PUBLISH, Publish, TraceIndex};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(p) = args.iter().find(|a| !a.starts_with("--")) else {
        eprintln!("usage: index_build TRACE.mgt [--publish]");
        std::process::exit(2);
    };
    let publishing = args.iter().any(|a| a == "--publish");
    let t = std::time::Instant::now();
    let mut held: Option<TraceIndex> = None;
    let mut published = 0usize;
    let mut first_at = None;
    let mut send = |ix: TraceIndex| {
        published += 1;
        first_at.get_or_insert(t.elapsed().as_secs_f64());
        held = Some(ix);
    };
    let publish = publishing.then_some(Publish {
        first: FIRST_PUBLISH,
        send: &mut send,
    });
    match TraceIndex::open_publishing(std::path::Path::new(p), |_| true, publish) {
        Ok((ix, how)) => {
            let segs: usize = ix.devices.iter().map(|d| d.segs.len()).sum();
            println!(
                "{} rows, {} blocks, {segs} segments in {:.3} s ({how:?}); {published} partial indexes published, the first at {first_at:?} s",
                ix.rows,
                ix.blocks.len(),
                t.elapsed().as_secs_f64()
            );
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
