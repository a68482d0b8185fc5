//! Trace growth of an interrupt storm, full detail against kernel bins (issue 16 point 1):
//! `cargo run --release --example irqbin_size -- [RATE_PER_S] [BIN_MS...]`.
//!
//! Writes one second of a RUNNING device raising `RATE_PER_S` MSIs (default 200000) with the
//! real writers, in memory, both formats: once as one `irq` event per interrupt (today's
//! `--irq-detail all`), once as one `irq_bin` per bin of each width (default 10, 100 ms), and
//! prints the bytes each adds per second. A model of what the recorder writes: the events are
//! generated here, not captured (the interrupt timing is evenly spaced).

use migscope::trace::{Event, EventKind, Header, IrqKind, JsonlWriter, NativeWriter};

const DEV: &str = "0000:00:02.0";
const SECOND: u64 = 1_000_000_000;

fn sizes(events: &[Event]) -> anyhow::Result<(usize, usize)> {
    let h = Header::default();
    let head_j = JsonlWriter::new(Vec::new(), &h)?.into_inner().len();
    let head_n = NativeWriter::new(Vec::new(), &h)?.into_inner().len();
    let mut j = JsonlWriter::new(Vec::new(), &h)?;
    let mut n = NativeWriter::new(Vec::new(), &h)?;
    for e in events {
        j.write(e)?;
        n.write(e)?;
    }
    Ok((j.into_inner().len() - head_j, n.into_inner().len() - head_n))
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let rate: u64 = args.next().map_or(Ok(200_000), |s| s.parse())?;
    let mut widths: Vec<u64> = args.map(|s| s.parse()).collect::<Result<_, _>>()?;
    if widths.is_empty() {
        widths = vec![10, 100];
    }
    anyhow::ensure!(
        rate > 0 && rate <= SECOND,
        "rate must be 1..=1e9 per second"
    );
    let gap = SECOND / rate;
    let at = |i: u64| SECOND + i * gap;
    let full: Vec<Event> = (0..rate)
        .map(|i| Event {
            t: at(i),
            pid: None,
            kind: EventKind::Irq {
                dev: DEV.into(),
                kind: IrqKind::Msi,
                vector: 0,
            },
        })
        .collect();
    let (j, n) = sizes(&full)?;
    println!("{rate} MSI/s, one device, RUNNING, one second:");
    println!("  full detail (irq per interrupt): JSONL {j} B/s, native {n} B/s");
    for ms in widths {
        anyhow::ensure!(ms > 0, "a bin width must be at least 1 ms");
        let per_bin = (rate * ms / 1000).max(1);
        let mut bins = Vec::new();
        let mut i = 0;
        while i < rate {
            let last = (i + per_bin).min(rate) - 1;
            bins.push(Event {
                t: at(last),
                pid: None,
                kind: EventKind::IrqBin {
                    dev: DEV.into(),
                    kind: IrqKind::Msi,
                    vector: 0,
                    n: last - i + 1,
                    window: (at(i), at(last)),
                },
            });
            i = last + 1;
        }
        let (j, n) = sizes(&bins)?;
        println!(
            "  {ms} ms bins ({} irq_bin/s): JSONL {j} B/s, native {n} B/s",
            bins.len()
        );
    }
    Ok(())
}
