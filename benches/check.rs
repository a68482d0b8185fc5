//! Criterion benches of the `check` pipeline's parts on an in-memory trace (no disk, no
//! process start): the JSONL reader, the native reader, the verifier alone, and reader +
//! verifier as `check` runs them. `cargo bench --bench check`; throughput is in events.

#![expect(
    clippy::expect_used,
    reason = "a benchmark's set-up panics with context"
)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use migscope::{
    model::{MigFlags, MigState, path},
    trace::{
        DmaSource, Event, EventKind, Header, IrqKind, JsonlReader, JsonlWriter, NativeReader,
        NativeWriter, source,
    },
    verify::{Options, Verifier},
};

const DEVS: usize = 8;

/// A valid trace like `examples/gentrace.rs` writes: running traffic, QEMU-order migrations.
fn events(total: usize) -> (Header, Vec<Event>) {
    let mut h = Header::default();
    for s in [
        source::TRANSITIONS,
        source::IRQ,
        source::IOMMU_MAP,
        source::WITNESS,
    ] {
        h.sources.insert(s.to_owned(), "ok".to_owned());
    }
    let flags = MigFlags(MigFlags::STOP_COPY | MigFlags::P2P);
    let devs: Vec<String> = (1..=DEVS).map(|i| format!("0000:{i:02x}:00.0")).collect();
    let mut out = Vec::with_capacity(total + 64);
    let mut t = 0u64;
    let mut push = |out: &mut Vec<Event>, kind: EventKind| {
        t += 1_000;
        out.push(Event {
            t,
            pid: Some(4242),
            kind,
        });
    };
    for (i, d) in devs.iter().enumerate() {
        push(
            &mut out,
            EventKind::Device {
                dev: d.clone(),
                flags,
                ctx: format!("vm{}", i / 4),
                state: MigState::Running,
                driver: None,
                sources: Default::default(),
            },
        );
    }
    let mut round = 0u64;
    while out.len() < total {
        for k in 0..200u64 {
            let i = k as usize % DEVS;
            let tt = out.last().map_or(0, |e| e.t);
            let kind = match k % 5 {
                0 | 1 => EventKind::Dma {
                    dev: devs[i].clone(),
                    src: DmaSource::Witness,
                    iova: 0x10_0000 + (k % 64) * 4096,
                    len: 4096,
                    write: true,
                    window: Some((tt + 1, tt + 1_000)),
                    p2p: None,
                },
                2 | 3 => EventKind::Irq {
                    dev: devs[i].clone(),
                    kind: IrqKind::Msix,
                    vector: (k % 4) as u32,
                },
                _ => EventKind::Map {
                    ctx: format!("vm{}", i / 4),
                    iova: 0x4000_0000 + round * 4096,
                    len: 4096,
                },
            };
            push(&mut out, kind);
        }
        if round.is_multiple_of(4) {
            for (from, to) in [
                (MigState::Running, MigState::RunningP2p),
                (MigState::RunningP2p, MigState::StopCopy),
                (MigState::StopCopy, MigState::RunningP2p),
                (MigState::RunningP2p, MigState::Running),
            ] {
                for d in &devs {
                    push(&mut out, EventKind::Set { dev: d.clone(), to });
                    for s in path(flags, from, to).unwrap_or_default().windows(2) {
                        push(
                            &mut out,
                            EventKind::Step {
                                dev: d.clone(),
                                from: s[0],
                                to: s[1],
                            },
                        );
                    }
                    push(
                        &mut out,
                        EventKind::SetDone {
                            dev: d.clone(),
                            to,
                            ret: 0,
                            data_fd: None,
                        },
                    );
                }
            }
        }
        round += 1;
    }
    push(&mut out, EventKind::End);
    (h, out)
}

fn bench(c: &mut Criterion) {
    let (h, evs) = events(200_000);
    let mut jw = JsonlWriter::new(Vec::new(), &h).expect("jsonl header");
    let mut nw = NativeWriter::new(Vec::new(), &h).expect("native header");
    for e in &evs {
        jw.write(e).expect("jsonl write");
        nw.write(e).expect("native write");
    }
    let jsonl = jw.into_inner();
    let native = nw.into_inner();
    let mut g = c.benchmark_group("check");
    g.throughput(Throughput::Elements(evs.len() as u64));
    g.sample_size(10);
    g.bench_function("jsonl_read", |b| {
        b.iter(|| {
            let r = JsonlReader::new("bench", jsonl.as_slice()).expect("header");
            black_box(r.map(|e| e.expect("event").0).sum::<u64>())
        })
    });
    g.bench_function("native_read", |b| {
        b.iter(|| {
            let r = NativeReader::new("bench", native.as_slice()).expect("header");
            black_box(r.map(|e| e.expect("event").0).sum::<u64>())
        })
    });
    g.bench_function("verify", |b| {
        b.iter(|| {
            let mut v = Verifier::new(&h, Options::default());
            for (i, e) in evs.iter().enumerate() {
                black_box(v.push(i as u64 + 2, e));
            }
            black_box(v.finish())
        })
    });
    g.bench_function("jsonl_check", |b| {
        b.iter(|| {
            // As `check` does it: each event's buffers handed back to the reader.
            let mut r = JsonlReader::new("bench", jsonl.as_slice()).expect("header");
            let mut v = Verifier::new(r.header(), Options::default());
            while let Some(e) = r.next_event() {
                let (line, ev) = e.expect("event");
                black_box(v.push(line, &ev));
                r.recycle(ev);
            }
            black_box(v.finish())
        })
    });
    g.bench_function("native_check", |b| {
        b.iter(|| {
            // As `check` does it: each event's buffers handed back to the reader.
            let mut r = NativeReader::new("bench", native.as_slice()).expect("header");
            let mut v = Verifier::new(r.header(), Options::default());
            while let Some(e) = r.next_event() {
                let (line, ev) = e.expect("event");
                black_box(v.push(line, &ev));
                r.recycle(ev);
            }
            black_box(v.finish())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
