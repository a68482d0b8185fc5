//! `check`'s fast path (a native trace read as borrowed events, devices by string id,
//! `Verifier::push_ref`) gives the verdict of the owned path (every event copied out with its
//! names, `Verifier::push`) on every fixture, under every rule option, and on a generated
//! trace of every kind in bulk; and `check_path` gives it for either format.

#![expect(
    clippy::expect_used,
    reason = "test helpers panic with context (STYLE.md: tests panic, never return Result)"
)]

mod export_common;

use export_common::{RICH, fixtures, write};
use migscope::{
    trace::{JsonlReader, NativeReader, NativeWriter},
    verify::{self, Options, P2pPolicy, Report, Verifier},
};

fn jsonl_to_native(name: &str, text: &[u8]) -> Vec<u8> {
    let mut r = JsonlReader::new(name, text).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut w = NativeWriter::new(Vec::new(), r.header()).expect("header");
    while let Some(x) = r.next_event() {
        w.write(&x.expect("event").1).expect("write");
    }
    w.into_inner()
}

/// The owned path: each event copied out of the reader and pushed by name.
fn owned(name: &str, native: &[u8], opts: &Options) -> Report {
    let mut r = NativeReader::new(name, native).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut v = Verifier::new(r.header(), opts.clone());
    let mut warned = 0;
    while let Some(x) = r.next_event() {
        let (line, ev) = x.unwrap_or_else(|e| panic!("{name}: {e}"));
        v.forward_warnings(r.warnings(), &mut warned);
        v.push(line, &ev);
    }
    v.forward_warnings(r.warnings(), &mut warned);
    v.finish()
}

/// The borrowed path, as `check_path` runs it on a native trace.
fn borrowed(name: &str, native: &[u8], opts: &Options) -> Report {
    let mut r = NativeReader::new(name, native).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut v = Verifier::new(r.header(), opts.clone());
    let mut warned = 0;
    while let Some(line) = r.next_line() {
        let line = line.unwrap_or_else(|e| panic!("{name}: {e}"));
        v.forward_warnings(r.warnings(), &mut warned);
        v.push_ref(line, r.current());
    }
    v.forward_warnings(r.warnings(), &mut warned);
    v.finish()
}

fn option_sets() -> Vec<Options> {
    vec![
        Options::default(),
        Options {
            p2p_policy: P2pPolicy::P2pOnly,
            ..Options::default()
        },
        Options {
            max_quiesce_ms: Some(0),
            max_set_ms: Some(0),
            accept_blind_dma: true,
            ..Options::default()
        },
        Options {
            max_quiesce_ms: Some(2),
            max_set_ms: Some(5),
            ..Options::default()
        },
    ]
}

#[test]
fn the_fast_path_gives_the_owned_paths_verdict_on_every_fixture() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut list = fixtures();
    list.push(write(dir.path(), "rich.jsonl", RICH));
    let mut compared = 0;
    for f in &list {
        let name = f.display().to_string();
        let text = std::fs::read(f).unwrap_or_else(|e| panic!("{name}: {e}"));
        // Rejection fixtures are not traces to verify.
        if !JsonlReader::new(&name, &text[..]).is_ok_and(|mut r| r.all(|x| x.is_ok())) {
            continue;
        }
        let native = jsonl_to_native(&name, &text);
        let nat_path = dir.path().join(format!("{compared}.mgt"));
        std::fs::write(&nat_path, &native).expect("write native");
        for opts in option_sets() {
            let a = owned(&name, &native, &opts);
            let b = borrowed(&name, &native, &opts);
            assert_eq!(a.to_json(), b.to_json(), "{name} {opts:?}");
            assert_eq!(a, b, "{name} {opts:?}");
            let c = verify::check_path(&nat_path, opts.clone()).expect("check native");
            assert_eq!(c, a, "{name} {opts:?}: check_path on the native file");
            // JSONL through check_path: the owned path by name. Unknown `ev`s are skipped on
            // converting, so only fixtures without them compare whole.
            let j = verify::check_path(f, opts.clone()).expect("check jsonl");
            if !j
                .warnings
                .iter()
                .any(|w| w.rule == verify::rule::UNKNOWN_EVENT)
            {
                assert_eq!(j.to_json(), a.to_json(), "{name} {opts:?}: JSONL vs native");
            }
        }
        compared += 1;
    }
    assert!(
        compared > 40 || std::env::var_os("MIGSCOPE_NO_FIXTURES").is_some(),
        "only {compared} fixtures compared"
    );
}

/// A trace of every kind the verifier judges, many devices and contexts, repeated migrations
/// with failures, losses, resets and DMA of every source: both paths, whole reports.
#[test]
fn the_fast_path_gives_the_owned_paths_verdict_on_a_generated_trace() {
    use migscope::{
        model::{MigFlags, MigState},
        trace::{DataDir, DataFile, DmaSource, Event, EventKind, Header, IrqKind, source},
    };
    let mut h = Header::default();
    for s in [
        source::TRANSITIONS,
        source::IRQ,
        source::WITNESS,
        source::DIRTY_LOG,
    ] {
        h.sources.insert(s.to_owned(), "ok".to_owned());
    }
    let devs: Vec<String> = (0..6).map(|i| format!("0000:00:{:02x}.0", i + 2)).collect();
    let mut evs = Vec::new();
    let t = std::cell::Cell::new(0u64);
    let mut push = |kind: EventKind| {
        t.set(t.get() + 700);
        evs.push(Event {
            t: t.get(),
            pid: Some(7),
            kind,
        });
    };
    for (i, d) in devs.iter().enumerate().take(5) {
        push(EventKind::Device {
            dev: d.clone(),
            flags: MigFlags(MigFlags::STOP_COPY | MigFlags::P2P | MigFlags::PRE_COPY),
            ctx: format!("vm{}", i % 2),
            state: MigState::Running,
            driver: None,
            sources: Default::default(),
        });
    }
    // devs[5] is never declared: undeclared-device, found by id afterwards.
    let states = [
        MigState::RunningP2p,
        MigState::StopCopy,
        MigState::Stop,
        MigState::Running,
        MigState::PreCopy,
        MigState::Resuming,
    ];
    for round in 0..400u64 {
        let d = &devs[(round as usize * 7) % devs.len()];
        let to = states[(round as usize) % states.len()];
        push(EventKind::Set { dev: d.clone(), to });
        if round % 3 != 0 {
            push(EventKind::Step {
                dev: d.clone(),
                from: MigState::Running,
                to,
            });
        }
        push(EventKind::Dma {
            dev: devs[(round as usize) % devs.len()].clone(),
            src: DmaSource::ALL[(round as usize) % DmaSource::ALL.len()],
            iova: 0x1000 * (round % 9),
            len: 4096 * (1 + round % 3),
            write: round % 2 == 0,
            window: (round % 4 == 0).then_some((t.get().saturating_sub(900), t.get())),
            p2p: (round % 5 == 0).then_some(round % 10 == 0),
        });
        push(EventKind::SetDone {
            dev: d.clone(),
            to,
            ret: if round % 11 == 0 { -22 } else { 0 },
            data_fd: (round % 6 == 1).then_some(9),
        });
        push(EventKind::Irq {
            dev: d.clone(),
            kind: IrqKind::ALL[(round as usize) % 3],
            vector: (round % 4) as u32,
        });
        push(EventKind::Get {
            dev: d.clone(),
            state: if round % 13 == 0 { MigState::Stop } else { to },
        });
        push(EventKind::Data {
            dev: d.clone(),
            dir: if round % 2 == 0 {
                DataDir::Save
            } else {
                DataDir::Load
            },
            bytes: 4096,
            file: (round % 3 == 0).then_some(DataFile {
                fd: 9,
                fd_gen: 0,
                reset_gen: round % 2,
            }),
        });
        push(EventKind::Map {
            ctx: "vm0".to_owned(),
            iova: round * 4096,
            len: 4096,
        });
        if round % 17 == 0 {
            push(EventKind::Reset {
                dev: d.clone(),
                ret: 0,
            });
        }
        if round % 50 == 0 {
            push(EventKind::Lost {
                n: 1,
                source: "probe".to_owned(),
                dev: Some(d.clone()),
            });
        }
        if round % 40 == 0 {
            push(EventKind::DirtyReport {
                dev: d.clone(),
                iova: 0,
                len: 0x10000,
                page_size: 4096,
                window: (t.get().saturating_sub(5000), t.get()),
                dirty_pages: 0,
            });
        }
    }
    push(EventKind::End);
    let mut w = NativeWriter::new(Vec::new(), &h).expect("header");
    for e in &evs {
        w.write(e).expect("write");
    }
    let native = w.into_inner();
    for opts in option_sets() {
        let a = owned("gen", &native, &opts);
        let b = borrowed("gen", &native, &opts);
        assert!(
            !a.violations.is_empty() && !a.warnings.is_empty(),
            "the generated trace exercises findings: {:?}",
            a.to_json()
        );
        assert_eq!(a.to_json(), b.to_json(), "{opts:?}");
        assert_eq!(a, b, "{opts:?}");
    }
}
