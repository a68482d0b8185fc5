//! QEMU's own account of a migration against migscope's: the MIG_DEVICE_STATE SETs QEMU 10
//! issued (from its `-trace` log and stderr), with their outcome, and its device resets,
//! compared in order with migscope's `set_done` and `reset` events; and the device names
//! migscope used.
//!
//! QEMU 10's `vfio_migration_set_state()` (hw/vfio/migration.c) traces
//! `vfio_migration_set_state (DEV) new state N, recover state R` on entry, returns at once
//! without an ioctl when N is already QEMU's state, and traces
//! `vfio_migration_set_device_state (DEV) state S` each time it records a state: N after a
//! successful SET; after a failed one R once the recover SET succeeded, or RUNNING after
//! VFIO_DEVICE_RESET (R is ERROR for `vfio_migration_set_state_or_reset`, or the recover SET
//! failed too, which QEMU reports on stderr: "DEV: Failed setting device in recover state").
//! QEMU's initial state is RUNNING (`vfio_migration_init`).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde_json::Value;

/// One kernel request, as QEMU made it or as migscope saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A MIG_DEVICE_STATE SET `from -> to`; `ok` is `None` when its outcome is unknown.
    Set {
        dev: String,
        from: String,
        to: String,
        ok: Option<bool>,
    },
    /// VFIO_DEVICE_RESET.
    Reset { dev: String },
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Set { dev, from, to, ok } => write!(
                f,
                "{dev} SET {from} -> {to} {}",
                match ok {
                    Some(true) => "ok",
                    Some(false) => "failed",
                    None => "(no outcome)",
                }
            ),
            Op::Reset { dev } => write!(f, "{dev} RESET"),
        }
    }
}

const RUNNING: &str = "RUNNING";

/// QEMU's SETs and resets in order, and how many `set_state` calls issued no ioctl (the state
/// was already the target).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct QemuOps {
    pub ops: Vec<Op>,
    pub noops: usize,
    /// Each device's state as QEMU last recorded it.
    pub last: HashMap<String, String>,
}

enum Line {
    SetState {
        dev: String,
        new: String,
        recover: String,
    },
    DeviceState {
        dev: String,
        state: String,
    },
}

/// `... EVENT  (DEV) rest` -> (DEV, rest) when the line is EVENT (with or without the log
/// backend's `pid@sec.usec:` prefix).
fn event<'a>(line: &'a str, name: &str) -> Option<(&'a str, &'a str)> {
    let at = line.find(name)?;
    if at > 0 && !line[..at].ends_with(':') {
        return None;
    }
    let rest = line[at + name.len()..].strip_prefix(' ')?.trim_start();
    let rest = rest.strip_prefix('(')?;
    let (dev, tail) = rest.split_once(')')?;
    Some((dev, tail.trim()))
}

fn parse_line(line: &str) -> Option<Line> {
    if let Some((dev, tail)) = event(line, "vfio_migration_set_state") {
        let (new, recover) = tail
            .strip_prefix("new state ")?
            .split_once(", recover state ")?;
        return Some(Line::SetState {
            dev: dev.into(),
            new: new.trim().into(),
            recover: recover.trim().into(),
        });
    }
    let (dev, tail) = event(line, "vfio_migration_set_device_state")?;
    Some(Line::DeviceState {
        dev: dev.into(),
        state: tail.strip_prefix("state ")?.trim().into(),
    })
}

/// Rebuilds the ioctls QEMU issued from its trace log and stderr.
pub fn qemu_ops(trace: &str, stderr: &str) -> QemuOps {
    let lines: Vec<Line> = trace.lines().filter_map(parse_line).collect();
    // Recover SETs that failed (then QEMU reset the device), per device, in order.
    let mut recover_failed: HashMap<&str, usize> = HashMap::new();
    for l in stderr.lines() {
        // error_report() prefixes the program name: "qemu-system-x86_64: DEV: Failed ..."
        if let Some((head, _)) = l.split_once(": Failed setting device in recover state") {
            let dev = head.rsplit(": ").next().unwrap_or(head).trim();
            *recover_failed.entry(dev).or_default() += 1;
        }
    }
    let mut out = QemuOps::default();
    for (i, l) in lines.iter().enumerate() {
        let Line::SetState { dev, new, recover } = l else {
            continue;
        };
        let cur = out.last.get(dev).cloned().unwrap_or_else(|| RUNNING.into());
        if *new == cur {
            out.noops += 1;
            continue;
        }
        // The state QEMU recorded next for this device is the outcome of this call.
        let outcome = lines[i + 1..].iter().find_map(|n| match n {
            Line::DeviceState { dev: d, state } if d == dev => Some(Some(state.clone())),
            Line::SetState { dev: d, .. } if d == dev => Some(None),
            _ => None,
        });
        let set = |to: &str, ok| Op::Set {
            dev: dev.clone(),
            from: cur.clone(),
            to: to.into(),
            ok,
        };
        let Some(Some(got)) = outcome else {
            out.ops.push(set(new, None));
            continue;
        };
        if got == *new {
            out.ops.push(set(new, Some(true)));
        } else {
            out.ops.push(set(new, Some(false)));
            if recover != "ERROR" {
                let mut said_failed = || {
                    recover_failed.get_mut(dev.as_str()).is_some_and(|n| {
                        let had = *n > 0;
                        *n = n.saturating_sub(1);
                        had
                    })
                };
                // QEMU records the recover state when it worked, RUNNING after the reset when
                // it did not: only a recover state of RUNNING needs stderr to tell them apart.
                let failed = if got != *recover {
                    said_failed();
                    true
                } else {
                    *recover == RUNNING && said_failed()
                };
                out.ops.push(set(recover, Some(!failed)));
                if failed {
                    out.ops.push(Op::Reset { dev: dev.clone() });
                }
            } else {
                out.ops.push(Op::Reset { dev: dev.clone() });
            }
        }
        out.last.insert(dev.clone(), got);
    }
    out
}

/// migscope's SETs (at their `set_done`) and resets in order, each SET with the state the
/// device was last known in (declared, a successful `set_done`, RUNNING after a successful
/// reset, a `get`; a failed SET leaves it as QEMU does), and each device's last known state.
pub fn trace_ops(jsonl: &str) -> (Vec<Op>, HashMap<String, String>) {
    let mut known: HashMap<String, String> = HashMap::new();
    let mut open: HashMap<String, String> = HashMap::new();
    let mut ops = Vec::new();
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(String::from);
    for l in jsonl.lines().skip(1) {
        let Ok(v) = serde_json::from_str::<Value>(l) else {
            continue;
        };
        let (Some(ev), Some(dev)) = (s(&v, "ev"), s(&v, "dev")) else {
            continue;
        };
        let from = || known.get(&dev).cloned().unwrap_or_else(|| "?".into());
        match ev.as_str() {
            "device" => {
                known.insert(
                    dev.clone(),
                    s(&v, "state").unwrap_or_else(|| RUNNING.into()),
                );
            }
            "set" => {
                if let Some(to) = s(&v, "to") {
                    open.insert(dev, to);
                }
            }
            "set_done" => {
                let to = s(&v, "to").unwrap_or_default();
                let ok = v.get("ret").and_then(Value::as_i64) == Some(0);
                open.remove(&dev);
                ops.push(Op::Set {
                    dev: dev.clone(),
                    from: from(),
                    to: to.clone(),
                    ok: Some(ok),
                });
                if ok {
                    known.insert(dev, to);
                }
            }
            "reset" => {
                ops.push(Op::Reset { dev: dev.clone() });
                if v.get("ret").and_then(Value::as_i64) == Some(0) {
                    known.insert(dev, RUNNING.into());
                }
            }
            "get" => {
                if let Some(st) = s(&v, "state") {
                    known.insert(dev, st);
                }
            }
            _ => {}
        }
    }
    // SETs still open at the end of the trace.
    let mut rest: Vec<_> = open.into_iter().collect();
    rest.sort();
    for (dev, to) in rest {
        let from = known.get(&dev).cloned().unwrap_or_else(|| "?".into());
        ops.push(Op::Set {
            dev,
            from,
            to,
            ok: None,
        });
    }
    (ops, known)
}

/// Where QEMU's and migscope's sequences part: `None` when they agree. With `late` migscope
/// attached after QEMU's first requests, so its sequence must be QEMU's last ones (a suffix).
pub fn compare(qemu: &[Op], traced: &[Op], late: bool) -> Option<String> {
    let skip = if late {
        qemu.len().saturating_sub(traced.len())
    } else {
        0
    };
    let q = &qemu[skip.min(qemu.len())..];
    if let Some(i) = (0..q.len().max(traced.len())).find(|&i| q.get(i) != traced.get(i)) {
        let show = |o: Option<&Op>| o.map_or_else(|| "nothing".into(), Op::to_string);
        return Some(format!(
            "request {} of {} differs: QEMU {}, migscope {}",
            skip + i + 1,
            qemu.len(),
            show(q.get(i)),
            show(traced.get(i))
        ));
    }
    if late && traced.is_empty() && !qemu.is_empty() {
        return Some("migscope saw none of QEMU's requests".into());
    }
    None
}

/// The lines of QEMU's trace log that are event `name` (the name whole, with or without the
/// log backend's `pid@sec.usec:` prefix), e.g. each `vfio_get_dirty_bitmap` sync.
pub fn count_events(trace: &str, name: &str) -> usize {
    trace
        .lines()
        .filter(|l| {
            l.find(name).is_some_and(|at| {
                (at == 0 || l[..at].ends_with(':')) && l[at + name.len()..].starts_with([' ', '('])
            })
        })
        .count()
}

/// QEMU 10's account of each dirty-bitmap sync, in order: `(iova, size, dirty_pages)` of its
/// `vfio_get_dirty_bitmap iova=.. size= .. bitmap_size=.. start=.. dirty_pages=N` trace
/// (hw/vfio/common.c `vfio_get_dirty_bitmap()`, after the device REPORTs or type1's GET).
pub fn dirty_syncs(trace: &str) -> Vec<(u64, u64, u64)> {
    let hex = |v: &str| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok();
    trace
        .lines()
        .filter(|l| count_events(l, "vfio_get_dirty_bitmap") == 1)
        .filter_map(|l| {
            let field = |k: &str| {
                let at = l.find(k)? + k.len();
                l[at..].split_whitespace().next()
            };
            Some((
                hex(field("iova=")?)?,
                hex(field("size=")?)?,
                field("dirty_pages=")?.parse().ok()?,
            ))
        })
        .collect()
}

/// Migration data bytes per (device, `save`/`load`).
pub type DataBytes = BTreeMap<(String, &'static str), u64>;

/// The bytes QEMU moved through each device's data_fd by its own trace: every
/// `vfio_save_block (DEV) data_size N` read, every `vfio_load_state_device_data (DEV) size N
/// ret R` write that returned 0.
pub fn qemu_data(trace: &str) -> DataBytes {
    let mut out = DataBytes::new();
    for l in trace.lines() {
        if let Some((dev, tail)) = event(l, "vfio_save_block") {
            if let Some(n) = tail
                .strip_prefix("data_size ")
                .and_then(|n| n.trim().parse::<u64>().ok())
            {
                *out.entry((dev.into(), "save")).or_default() += n;
            }
        } else if let Some((dev, tail)) = event(l, "vfio_load_state_device_data")
            && let Some((n, ret)) = tail
                .strip_prefix("size ")
                .and_then(|t| t.split_once(" ret "))
            && ret.trim() == "0"
            && let Ok(n) = n.trim().parse::<u64>()
        {
            *out.entry((dev.into(), "load")).or_default() += n;
        }
    }
    out
}

/// The bytes migscope's `data` events account for, per device and direction.
pub fn trace_data(jsonl: &str) -> DataBytes {
    let mut out = DataBytes::new();
    for l in jsonl.lines().skip(1) {
        let Ok(v) = serde_json::from_str::<Value>(l) else {
            continue;
        };
        if v.get("ev").and_then(Value::as_str) != Some("data") {
            continue;
        }
        let dir = match v.get("dir").and_then(Value::as_str) {
            Some("save") => "save",
            Some("load") => "load",
            _ => continue,
        };
        if let (Some(dev), Some(n)) = (
            v.get("dev").and_then(Value::as_str),
            v.get("bytes").and_then(Value::as_u64),
        ) {
            *out.entry((dev.into(), dir)).or_default() += n;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::runner::naming_problems;

    const D: &str = "0000:00:02.0";

    fn set(from: &str, to: &str, ok: bool) -> Op {
        Op::Set {
            dev: D.into(),
            from: from.into(),
            to: to.into(),
            ok: Some(ok),
        }
    }

    /// QEMU 10's lines (log backend), as its source prints them on a STOP_COPY migration.
    const SOURCE: &str = "\
1234@1700000000.000001:vfio_migration_realize  (0000:00:02.0)
1234@1700000000.000002:vfio_migration_set_state  (0000:00:02.0) new state RUNNING_P2P, recover state ERROR
1234@1700000000.000003:vfio_migration_set_device_state  (0000:00:02.0) state RUNNING_P2P
1234@1700000000.000004:vfio_vmstate_change_prepare  (0000:00:02.0) running 1 reason running device state RUNNING_P2P
1234@1700000000.000005:vfio_migration_set_state  (0000:00:02.0) new state RUNNING, recover state ERROR
1234@1700000000.000006:vfio_migration_set_device_state  (0000:00:02.0) state RUNNING
1234@1700000000.000007:vfio_migration_set_state  (0000:00:02.0) new state RUNNING, recover state ERROR
1234@1700000001.000001:vfio_migration_set_state  (0000:00:02.0) new state RUNNING_P2P, recover state ERROR
1234@1700000001.000002:vfio_migration_set_device_state  (0000:00:02.0) state RUNNING_P2P
1234@1700000001.000003:vfio_migration_set_state  (0000:00:02.0) new state STOP, recover state ERROR
1234@1700000001.000004:vfio_migration_set_device_state  (0000:00:02.0) state STOP
1234@1700000001.000005:vfio_migration_set_state  (0000:00:02.0) new state STOP_COPY, recover state STOP
1234@1700000001.000006:vfio_migration_set_device_state  (0000:00:02.0) state STOP_COPY
";

    #[test]
    fn qemu_source_sequence_skips_requests_for_the_current_state() {
        let q = qemu_ops(SOURCE, "");
        assert_eq!(
            q.ops,
            vec![
                set("RUNNING", "RUNNING_P2P", true),
                set("RUNNING_P2P", "RUNNING", true),
                set("RUNNING", "RUNNING_P2P", true),
                set("RUNNING_P2P", "STOP", true),
                set("STOP", "STOP_COPY", true),
            ]
        );
        assert_eq!(q.noops, 1);
        assert_eq!(q.last[D], "STOP_COPY");
    }

    #[test]
    fn qemu_failures_recover_or_reset() {
        let t = "\
vfio_migration_set_state  (0000:00:02.0) new state RUNNING_P2P, recover state ERROR
vfio_migration_set_device_state  (0000:00:02.0) state RUNNING
vfio_migration_set_state  (0000:00:02.0) new state STOP_COPY, recover state STOP
vfio_migration_set_device_state  (0000:00:02.0) state STOP
vfio_migration_set_state  (0000:00:02.0) new state RESUMING, recover state RUNNING
vfio_migration_set_device_state  (0000:00:02.0) state RUNNING
vfio_migration_set_state  (0000:00:02.0) new state STOP, recover state RUNNING
vfio_migration_set_device_state  (0000:00:02.0) state RUNNING
";
        let err = "qemu-system-x86_64: 0000:00:02.0: Failed setting device in recover state, \
                   err: Input/output error. Resetting device\n";
        let q = qemu_ops(t, err);
        assert_eq!(
            q.ops,
            vec![
                // set_or_reset: the failed SET, then VFIO_DEVICE_RESET.
                set("RUNNING", "RUNNING_P2P", false),
                Op::Reset { dev: D.into() },
                // the recover SET succeeded (QEMU recorded the recover state).
                set("RUNNING", "STOP_COPY", false),
                set("RUNNING", "STOP", true),
                // RESUMING failed and so did recovering to RUNNING (stderr says so): reset.
                set("STOP", "RESUMING", false),
                set("STOP", "RUNNING", false),
                Op::Reset { dev: D.into() },
                // STOP failed, recovering to RUNNING worked (no stderr line left for it).
                set("RUNNING", "STOP", false),
                set("RUNNING", "RUNNING", true),
            ]
        );
    }

    #[test]
    fn events_are_counted_by_their_whole_name() {
        let t = "\
1234@1700000000.000001:vfio_device_dirty_tracking_start nr_ranges 2 32:[0x0 - 0x3ffffff]
vfio_get_dirty_bitmap iova=0x0 size= 0xa0000 bitmap_size=0x8 start=0x0 dirty_pages=0
1234@1700000000.000002:vfio_get_dirty_bitmap iova=0x100000 size= 0x3f00000 bitmap_size=0x7e0 start=0x100000 dirty_pages=3
vfio_get_dirty_bitmap_extra iova=0x0
xvfio_get_dirty_bitmap iova=0x0
";
        assert_eq!(count_events(t, "vfio_get_dirty_bitmap"), 2);
        assert_eq!(count_events(t, "vfio_device_dirty_tracking_start"), 1);
        assert_eq!(count_events(t, "vfio_device_dirty_tracking"), 0);
        assert_eq!(
            dirty_syncs(t),
            vec![(0, 0xa0000, 0), (0x10_0000, 0x3f0_0000, 3)]
        );
    }

    #[test]
    fn a_set_without_outcome_is_reported_as_such() {
        let t = "vfio_migration_set_state  (0000:00:02.0) new state STOP, recover state ERROR\n";
        let q = qemu_ops(t, "");
        assert_eq!(
            q.ops,
            vec![Op::Set {
                dev: D.into(),
                from: "RUNNING".into(),
                to: "STOP".into(),
                ok: None
            }]
        );
    }

    const TRACE: &str = r#"{"migscope_trace":1}
{"t":1,"ev":"device","dev":"0000:00:02.0","flags":["STOP_COPY","P2P"],"ctx":"pid9"}
{"t":2,"ev":"set","dev":"0000:00:02.0","to":"RUNNING_P2P"}
{"t":3,"ev":"step","dev":"0000:00:02.0","from":"RUNNING","to":"RUNNING_P2P"}
{"t":4,"ev":"set_done","dev":"0000:00:02.0","to":"RUNNING_P2P","ret":-5}
{"t":5,"ev":"reset","dev":"0000:00:02.0","ret":0}
{"t":6,"ev":"set","dev":"0000:00:02.0","to":"STOP"}
{"t":7,"ev":"set_done","dev":"0000:00:02.0","to":"STOP","ret":0}
{"t":8,"ev":"set","dev":"0000:00:02.0","to":"STOP_COPY"}
{"t":9,"ev":"end"}
"#;

    #[test]
    fn trace_sequence_tracks_the_known_state() {
        let (ops, last) = trace_ops(TRACE);
        assert_eq!(
            ops,
            vec![
                set("RUNNING", "RUNNING_P2P", false),
                Op::Reset { dev: D.into() },
                set("RUNNING", "STOP", true),
                Op::Set {
                    dev: D.into(),
                    from: "STOP".into(),
                    to: "STOP_COPY".into(),
                    ok: None
                },
            ]
        );
        assert_eq!(last[D], "STOP");
    }

    #[test]
    fn comparison_names_the_first_difference() {
        let q = qemu_ops(SOURCE, "").ops;
        assert_eq!(compare(&q, &q, false), None);
        // Attached late: migscope saw the last three.
        assert_eq!(compare(&q, &q[2..], true), None);
        assert!(compare(&q, &q[2..], false).is_some());
        let mut wrong = q.clone();
        wrong[3] = set("RUNNING_P2P", "STOP_COPY", true);
        assert_eq!(
            compare(&q, &wrong, false).unwrap(),
            "request 4 of 5 differs: QEMU 0000:00:02.0 SET RUNNING_P2P -> STOP ok, migscope \
             0000:00:02.0 SET RUNNING_P2P -> STOP_COPY ok"
        );
        assert!(compare(&q, &[], true).is_some());
        assert!(
            compare(&q[..4], &q, false)
                .unwrap()
                .contains("QEMU nothing")
        );
    }

    /// A real lab run (qemu-fail-p2p on 6.1): QEMU's trace and stderr, and record's trace.
    const FAIL_P2P_QEMU: &str = include_str!("testdata/fail-p2p-6.1.qemu.trace");
    const FAIL_P2P_ERR: &str = include_str!("testdata/fail-p2p-6.1.qemu.err");
    const FAIL_P2P_TRACE: &str = include_str!("testdata/fail-p2p-6.1.jsonl");

    #[test]
    fn real_fail_p2p_run_agrees_with_qemu() {
        let q = qemu_ops(FAIL_P2P_QEMU, FAIL_P2P_ERR);
        // Startup, the migration's P2P and STOP, the restart after the failed migration, the
        // shutdown: each SET refused, each followed by VFIO_DEVICE_RESET.
        let failed_then_reset = |to: &str| [set("RUNNING", to, false), Op::Reset { dev: D.into() }];
        let want: Vec<Op> = [
            "RUNNING_P2P",
            "RUNNING_P2P",
            "STOP",
            "RUNNING_P2P",
            "RUNNING_P2P",
        ]
        .into_iter()
        .flat_map(failed_then_reset)
        .collect();
        assert_eq!(q.ops, want);
        // QEMU asked for RUNNING three times while it believed the device RUNNING: no ioctl.
        assert_eq!(q.noops, 3);
        let (ops, last) = trace_ops(FAIL_P2P_TRACE);
        assert_eq!(compare(&q.ops, &ops, false), None);
        assert_eq!(last[D], q.last[D]);
        assert_eq!(q.last[D], "RUNNING");
        assert!(naming_problems(FAIL_P2P_TRACE, &[D]).is_empty());
    }

    #[test]
    fn data_bytes_by_qemu_and_by_the_trace() {
        let q = "\
vfio_save_block  (0000:00:02.0) data_size 80
vfio_save_block_precopy_empty_hit  (0000:00:02.0)
vfio_save_block  (0000:00:02.0) data_size 80
vfio_load_state_device_data  (0000:00:03.0) size 80 ret 0
vfio_load_state_device_data  (0000:00:03.0) size 80 ret -22
";
        let mut want = DataBytes::new();
        want.insert((D.into(), "save"), 160);
        want.insert(("0000:00:03.0".into(), "load"), 80);
        assert_eq!(qemu_data(q), want);
        let t = r#"{"migscope_trace":1}
{"t":1,"ev":"data","dev":"0000:00:02.0","dir":"save","bytes":80}
{"t":2,"ev":"data","dev":"0000:00:02.0","dir":"save","bytes":80}
{"t":3,"ev":"data","dev":"0000:00:03.0","dir":"load","bytes":80}
"#;
        assert_eq!(trace_data(t), want);
    }

    #[test]
    fn device_names_must_be_declared_bdfs() {
        assert!(naming_problems(TRACE, &[D]).is_empty());
        let bad = r#"{"migscope_trace":1}
{"t":1,"ev":"irq","dev":"0000:00:02.0","kind":"msi","vector":0}
{"t":2,"ev":"device","dev":"fd:7@12","flags":["STOP_COPY"],"ctx":"pid12"}
"#;
        let p = naming_problems(bad, &[D]);
        assert_eq!(
            p,
            vec![
                "line 2: irq of 0000:00:02.0 before its declaration",
                "line 3: device names fd:7@12, not one of [\"0000:00:02.0\"]",
                "0000:00:02.0 was never declared",
            ]
        );
    }
}
