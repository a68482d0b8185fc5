//! Opens the index of a native trace as `view` does (the saved one beside the trace when it is
//! valid, else built and saved) and prints how long it took: the index pass or the sidecar's
//! load alone, for profiling (`cargo run --release -p migscope-tui --example index_build --
//! T.mgt`; remove `T.mgt.idx` to time the pass).

fn main() {
    let Some(p) = std::env::args().nth(1) else {
        eprintln!("usage: index_build TRACE.mgt");
        std::process::exit(2);
    };
    let t = std::time::Instant::now();
    match migscope_tui::index::TraceIndex::open(std::path::Path::new(&p), |_| true) {
        Ok((ix, how)) => {
            let segs: usize = ix.devices.iter().map(|d| d.segs.len()).sum();
            println!(
                "{} rows, {} blocks, {segs} segments in {:.3} s ({how:?})",
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
