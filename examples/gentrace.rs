//! Generates a large, realistic, valid trace for benchmarks and the streaming-memory check:
//! `cargo run --release --example gentrace -- EVENTS [DEVICES] [--native] > big.jsonl` (with
//! `--native`, the native format: a 100M-event trace without its ~10 GB of JSONL).
//!
//! Devices (in contexts of up to four) repeatedly migrate in QEMU order (every device to
//! RUNNING_P2P before any stops, STOP_COPY with a save, STOP, back through RUNNING_P2P to
//! RUNNING) while running devices issue witnessed DMA, interrupts and IOMMU map/unmap traffic.
//! The trace passes `check`: memory, not verdict, is what it exercises.

use std::io::{self, BufWriter, Write as _};

use migscope::{
    model::{MigFlags, MigState, path},
    trace::{DmaSource, Event, EventKind, Header, IrqKind, JsonlWriter, NativeWriter, source},
};

/// The writer of the chosen format.
enum Out<W: io::Write> {
    Jsonl(JsonlWriter<W>),
    Native(NativeWriter<W>),
}

impl<W: io::Write> Out<W> {
    fn write(&mut self, e: &Event) -> anyhow::Result<()> {
        match self {
            Out::Jsonl(w) => w.write(e)?,
            Out::Native(w) => w.write(e)?,
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        match self {
            Out::Jsonl(w) => w.flush()?,
            Out::Native(w) => w.flush()?,
        }
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    let native = std::env::args().any(|a| a == "--native");
    let mut args = std::env::args().skip(1).filter(|a| a != "--native");
    let total: u64 = args.next().map_or(Ok(1_000_000), |s| s.parse())?;
    let ndev: usize = args.next().map_or(Ok(8), |s| s.parse())?;
    let flags = MigFlags(MigFlags::STOP_COPY | MigFlags::P2P);
    let devs: Vec<String> = (0..ndev)
        .map(|i| format!("0000:{:02x}:00.0", i + 1))
        .collect();
    let ctx = |i: usize| format!("vm{}", i / 4);
    let mut header = Header::default();
    for s in [
        source::TRANSITIONS,
        source::IRQ,
        source::IOMMU_MAP,
        source::WITNESS,
    ] {
        header.sources.insert(s.to_owned(), "ok".to_owned());
    }
    header.tool = Some("gentrace".to_owned());
    let out = BufWriter::with_capacity(1 << 20, io::stdout().lock());
    let mut w = if native {
        Out::Native(NativeWriter::new(out, &header)?)
    } else {
        Out::Jsonl(JsonlWriter::new(out, &header)?)
    };
    let mut t = 1_000u64;
    let emit = |w: &mut Out<_>, t: &mut u64, kind: EventKind| -> anyhow::Result<()> {
        *t += 1_000;
        w.write(&Event {
            t: *t,
            pid: Some(4242),
            kind,
        })?;
        Ok(())
    };
    for (i, d) in devs.iter().enumerate() {
        emit(
            &mut w,
            &mut t,
            EventKind::Device {
                dev: d.clone(),
                flags,
                ctx: ctx(i),
                state: MigState::Running,
                driver: Some("gentrace".to_owned()),
                sources: Default::default(),
            },
        )?;
    }
    let mut round = 0u64;
    // Leave room for the last migration round and `end`.
    while (t - 1_000) / 1_000 + 64 * ndev as u64 + 200 < total {
        // A burst of running traffic.
        for k in 0..200u64 {
            let i = (k as usize) % ndev;
            let d = devs[i].clone();
            let kind = match k % 5 {
                0 | 1 => EventKind::Dma {
                    dev: d,
                    src: DmaSource::Witness,
                    iova: 0x10_0000 + (k % 64) * 4096,
                    len: 4096,
                    write: true,
                    window: Some((t + 1, t + 1_000)),
                    p2p: None,
                },
                2 | 3 => EventKind::Irq {
                    dev: d,
                    kind: IrqKind::Msix,
                    vector: (k % 4) as u32,
                },
                _ => EventKind::Map {
                    ctx: ctx(i),
                    iova: 0x4000_0000 + round * 4096,
                    len: 4096,
                },
            };
            emit(&mut w, &mut t, kind)?;
        }
        // Migrate every context in QEMU order, every few rounds.
        if round.is_multiple_of(4) {
            for (from, to) in [
                (MigState::Running, MigState::RunningP2p),
                (MigState::RunningP2p, MigState::StopCopy),
                (MigState::StopCopy, MigState::RunningP2p),
                (MigState::RunningP2p, MigState::Running),
            ] {
                for d in &devs {
                    emit(&mut w, &mut t, EventKind::Set { dev: d.clone(), to })?;
                    let steps = path(flags, from, to).map_err(|e| anyhow::anyhow!("{e:?}"))?;
                    for s in steps.windows(2) {
                        emit(
                            &mut w,
                            &mut t,
                            EventKind::Step {
                                dev: d.clone(),
                                from: s[0],
                                to: s[1],
                            },
                        )?;
                    }
                    emit(
                        &mut w,
                        &mut t,
                        EventKind::SetDone {
                            dev: d.clone(),
                            to,
                            ret: 0,
                            data_fd: None,
                        },
                    )?;
                    emit(
                        &mut w,
                        &mut t,
                        EventKind::Get {
                            dev: d.clone(),
                            state: to,
                        },
                    )?;
                }
                if to == MigState::StopCopy {
                    for d in &devs {
                        emit(
                            &mut w,
                            &mut t,
                            EventKind::Data {
                                dev: d.clone(),
                                dir: migscope::trace::DataDir::Save,
                                bytes: 4160,
                                file: None,
                            },
                        )?;
                    }
                }
            }
        }
        round += 1;
    }
    emit(&mut w, &mut t, EventKind::End)?;
    w.flush()?;
    eprintln!(
        "gentrace: {} events, {ndev} devices, {round} rounds",
        (t - 1_000) / 1_000
    );
    io::stdout().flush()?;
    Ok(())
}
