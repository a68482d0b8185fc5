//! The VFIO migration model: state names and flag sets, the kernel's multi-step paths, and the
//! legacy v1 `device_state` bits (with the 2021 thread's proposed NDMA bit) explained in v2 terms.

use std::fmt;

pub use probe_common::mig::{
    MigFlags, MigState, PRECOPY_INFO_REINIT, PrecopyInfo, StepError, candidate, is_hazard,
    next_state,
};

/// Longest path the kernel table can produce; anything longer is a table bug.
const MAX_PATH: usize = 8;

/// The arcs a SET of `new` from `cur` walks, `cur` first, `new` last, as the kernel's
/// `vfio_mig_get_next_state()` loop in a driver would take them (e.g. mlx5's
/// `mlx5vf_pci_set_device_state`).
pub fn path(flags: MigFlags, cur: MigState, new: MigState) -> Result<Vec<MigState>, StepError> {
    let mut out = vec![cur];
    let mut at = cur;
    while at != new {
        at = next_state(flags, at, new)?;
        out.push(at);
        if out.len() > MAX_PATH {
            return Err(StepError::BlockedArc);
        }
    }
    Ok(out)
}

/// Parses a comma list of flag names (`STOP_COPY,P2P,PRE_COPY`); STOP_COPY is implied because
/// the kernel requires it of every migratable device.
pub fn parse_flags(s: &str) -> Result<MigFlags, String> {
    let mut bits = MigFlags::STOP_COPY;
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        bits |= flag_bit(part).ok_or_else(|| {
            format!("unknown migration flag `{part}` (expected STOP_COPY, P2P or PRE_COPY)")
        })?;
    }
    Ok(MigFlags(bits))
}

/// One flag name to its `VFIO_MIGRATION_*` bit.
pub fn flag_bit(name: &str) -> Option<u32> {
    match name {
        "STOP_COPY" => Some(MigFlags::STOP_COPY),
        "P2P" => Some(MigFlags::P2P),
        "PRE_COPY" => Some(MigFlags::PRE_COPY),
        _ => None,
    }
}

/// The flag names set in `flags`, in bit order.
pub fn flag_names(flags: MigFlags) -> Vec<&'static str> {
    flags.names().collect()
}

/// Parses a state name, accepting the uAPI number and an optional `VFIO_DEVICE_STATE_` prefix.
pub fn parse_state(s: &str) -> Result<MigState, String> {
    let t = s.trim();
    let t = t.strip_prefix("VFIO_DEVICE_STATE_").unwrap_or(t);
    if let Ok(n) = t.parse::<u32>() {
        return MigState::from_u32(n).ok_or_else(|| format!("unknown state number {n} (0..7)"));
    }
    MigState::from_name(&t.to_ascii_uppercase()).ok_or_else(|| {
        format!(
            "unknown state `{s}` (expected one of {})",
            MigState::ALL.map(MigState::name).join(", ")
        )
    })
}

/// Legacy v1 (Linux 5.8..5.17) `vfio_device_migration_info.device_state` bits.
pub mod v1 {
    pub const RUNNING: u32 = 1;
    pub const SAVING: u32 = 2;
    pub const RESUMING: u32 = 4;
    /// The bit proposed in the October 2021 thread; became RUNNING_P2P in v2.
    pub const NDMA: u32 = 8;
}

/// How the seed's table classifies a v1 value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum V1Class {
    /// A state userspace sets, as defined (NDMA clear, or one of the two new NDMA states).
    Valid,
    /// NDMA set where it changes nothing (with STOP, SAVING or RESUMING alone).
    Redundant,
    /// RESUMING|RUNNING: cannot be set (no pre-copy on the resume side).
    Invalid,
    /// RESUMING|SAVING[|RUNNING]: error states, cannot be set.
    Error,
    /// Bits above NDMA.
    Reserved,
}

impl V1Class {
    pub const fn name(self) -> &'static str {
        match self {
            V1Class::Valid => "valid",
            V1Class::Redundant => "redundant",
            V1Class::Invalid => "invalid",
            V1Class::Error => "error",
            V1Class::Reserved => "reserved",
        }
    }
}

/// A decoded v1 value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct V1Decoded {
    pub value: u32,
    pub bits: Vec<&'static str>,
    pub class: V1Class,
    /// The v2 state this value means, where it means one.
    pub v2: Option<MigState>,
    /// Whether userspace may write it.
    pub settable: bool,
}

/// Decodes a v1 `device_state` value per the seed thread's table.
pub fn decode_v1(value: u32) -> V1Decoded {
    let bits = [
        (v1::RUNNING, "RUNNING"),
        (v1::SAVING, "SAVING"),
        (v1::RESUMING, "RESUMING"),
        (v1::NDMA, "NDMA"),
    ]
    .into_iter()
    .filter(|(b, _)| value & b != 0)
    .map(|(_, n)| n)
    .collect();
    let (class, v2) = if value > 0xF {
        (V1Class::Reserved, None)
    } else {
        let ndma = value & v1::NDMA != 0;
        let low = value & !v1::NDMA;
        match (ndma, low) {
            (false, 0) => (V1Class::Valid, Some(MigState::Stop)),
            (false, 1) => (V1Class::Valid, Some(MigState::Running)),
            (false, 2) => (V1Class::Valid, Some(MigState::StopCopy)),
            (false, 3) => (V1Class::Valid, Some(MigState::PreCopy)),
            (false, 4) => (V1Class::Valid, Some(MigState::Resuming)),
            (_, 5) => (V1Class::Invalid, None),
            (_, 6) | (_, 7) => (V1Class::Error, None),
            (true, 1) => (V1Class::Valid, Some(MigState::RunningP2p)),
            (true, 3) => (V1Class::Valid, Some(MigState::PreCopyP2p)),
            (true, 0) => (V1Class::Redundant, Some(MigState::Stop)),
            (true, 2) => (V1Class::Redundant, Some(MigState::StopCopy)),
            (true, 4) => (V1Class::Redundant, Some(MigState::Resuming)),
            _ => (V1Class::Reserved, None),
        }
    };
    V1Decoded {
        value,
        bits,
        class,
        v2,
        settable: matches!(class, V1Class::Valid | V1Class::Redundant),
    }
}

impl fmt::Display for V1Decoded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bits = if self.bits.is_empty() {
            "no bits (STOP)".to_owned()
        } else {
            self.bits.join("|")
        };
        write!(f, "v1 device_state {:#x} = {bits}: ", self.value)?;
        match (self.class, self.v2) {
            (V1Class::Valid, Some(s)) => write!(
                f,
                "a valid state, settable; in the v2 uAPI it is {}{}",
                s.name(),
                if s.is_p2p() {
                    " (one of the two states the NDMA bit adds: the device may respond to DMA but must not initiate it)"
                } else {
                    ""
                }
            ),
            (V1Class::Redundant, Some(s)) => write!(
                f,
                "settable but NDMA is redundant here (the device is not running); same as {} in v2",
                s.name()
            ),
            (V1Class::Invalid, _) => write!(
                f,
                "invalid: RESUMING|RUNNING cannot be set (no pre-copy on the resume side); no v2 equivalent"
            ),
            (V1Class::Error, _) => write!(
                f,
                "an error state (RESUMING with SAVING): userspace cannot set it; no v2 equivalent"
            ),
            _ => write!(
                f,
                "reserved: bits above NDMA (0x8) have no meaning; not settable"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MigState::*;

    /// DESIGN.md's candidate table, written out independently of probe-common's.
    const EXPECTED: [(MigState, [MigState; 7]); 7] = [
        (
            Stop,
            [
                Stop, RunningP2p, StopCopy, Resuming, RunningP2p, RunningP2p, RunningP2p,
            ],
        ),
        (
            Running,
            [
                RunningP2p, Running, RunningP2p, RunningP2p, RunningP2p, PreCopy, RunningP2p,
            ],
        ),
        (StopCopy, [Stop, Stop, StopCopy, Stop, Stop, Error, Error]),
        (Resuming, [Stop, Stop, Stop, Resuming, Stop, Stop, Stop]),
        (
            RunningP2p,
            [Stop, Running, Stop, Stop, RunningP2p, Running, PreCopyP2p],
        ),
        (
            PreCopy,
            [
                Running, Running, PreCopyP2p, Running, Running, PreCopy, PreCopyP2p,
            ],
        ),
        (
            PreCopyP2p,
            [
                RunningP2p, RunningP2p, StopCopy, RunningP2p, RunningP2p, PreCopy, PreCopyP2p,
            ],
        ),
    ];
    const COLS: [MigState; 7] = [
        Stop, Running, StopCopy, Resuming, RunningP2p, PreCopy, PreCopyP2p,
    ];

    #[test]
    fn candidate_table_matches_design() {
        for (cur, row) in EXPECTED {
            for (new, want) in COLS.into_iter().zip(row) {
                assert_eq!(candidate(cur, new), want, "table[{cur:?}][{new:?}]");
            }
        }
        for new in MigState::ALL {
            assert_eq!(candidate(Error, new), Error);
        }
    }

    /// The kernel algorithm re-stated as a reference: next = T[cur][new]; while unsupported,
    /// next = T[next][new]; ERROR means EINVAL.
    fn reference_next(flags: MigFlags, cur: MigState, new: MigState) -> Option<MigState> {
        if !flags.supports(cur) || !flags.supports(new) {
            return None;
        }
        let row = |s: MigState| EXPECTED.iter().find(|(c, _)| *c == s).map(|(_, r)| *r);
        let col = |s: MigState| COLS.iter().position(|c| *c == s);
        let mut next = row(cur)?[col(new)?];
        let mut guard = 0;
        while next != Error && !flags.supports(next) {
            next = row(next)?[col(new)?];
            guard += 1;
            assert!(guard < 10, "loop in reference");
        }
        (next != Error).then_some(next)
    }

    #[test]
    fn every_flags_cur_new_combination() {
        let mut checked = 0;
        for flags in MigFlags::ALL_SETS {
            for cur in MigState::ALL {
                for new in MigState::ALL {
                    let got = next_state(flags, cur, new).ok();
                    assert_eq!(
                        got,
                        reference_next(flags, cur, new),
                        "{flags:?} {cur:?}->{new:?}"
                    );
                    if let Some(n) = got {
                        assert!(flags.supports(n), "step to unsupported {n:?}");
                        // Each step is a single arc that makes progress: the full path ends at new.
                        let p = path(flags, cur, new).expect("path exists when a step exists");
                        assert_eq!(p.first(), Some(&cur));
                        assert_eq!(p.last(), Some(&new));
                        assert!(p.iter().all(|s| flags.supports(*s)));
                    }
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 4 * 8 * 8);
    }

    #[test]
    fn supported_states_per_flag_set() {
        let sc = MigFlags(MigFlags::STOP_COPY);
        let p2p = MigFlags(MigFlags::STOP_COPY | MigFlags::P2P);
        let pre = MigFlags(MigFlags::STOP_COPY | MigFlags::PRE_COPY);
        let all = MigFlags(7);
        for f in MigFlags::ALL_SETS {
            for s in [Stop, Running, StopCopy, Resuming] {
                assert!(f.supports(s));
            }
            assert!(!f.supports(Error));
        }
        assert!(!sc.supports(RunningP2p) && !sc.supports(PreCopy) && !sc.supports(PreCopyP2p));
        assert!(p2p.supports(RunningP2p) && !p2p.supports(PreCopy) && !p2p.supports(PreCopyP2p));
        assert!(!pre.supports(RunningP2p) && pre.supports(PreCopy) && !pre.supports(PreCopyP2p));
        assert!(all.supports(RunningP2p) && all.supports(PreCopy) && all.supports(PreCopyP2p));
    }

    #[test]
    fn known_paths() {
        let p2p = MigFlags(MigFlags::STOP_COPY | MigFlags::P2P);
        assert_eq!(
            path(p2p, Running, Stop).unwrap(),
            vec![Running, RunningP2p, Stop]
        );
        assert_eq!(
            path(p2p, Running, StopCopy).unwrap(),
            vec![Running, RunningP2p, Stop, StopCopy]
        );
        let sc = MigFlags(MigFlags::STOP_COPY);
        // RUNNING_P2P is skipped: the driver sees RUNNING -> STOP directly.
        assert_eq!(path(sc, Running, Stop).unwrap(), vec![Running, Stop]);
        assert_eq!(path(sc, Stop, Running).unwrap(), vec![Stop, Running]);
        let all = MigFlags(7);
        assert_eq!(
            path(all, PreCopy, StopCopy).unwrap(),
            vec![PreCopy, PreCopyP2p, StopCopy]
        );
        let pre = MigFlags(MigFlags::STOP_COPY | MigFlags::PRE_COPY);
        assert_eq!(
            path(pre, PreCopy, StopCopy).unwrap(),
            vec![PreCopy, StopCopy]
        );
    }

    #[test]
    fn blocked_arcs_and_hazards() {
        for flags in MigFlags::ALL_SETS {
            for new in [PreCopy, PreCopyP2p] {
                let r = next_state(flags, StopCopy, new);
                if flags.supports(new) {
                    assert_eq!(r, Err(StepError::BlockedArc));
                    assert!(is_hazard(flags, StopCopy, new));
                } else {
                    assert_eq!(r, Err(StepError::TargetUnsupported));
                    assert!(!is_hazard(flags, StopCopy, new));
                }
            }
            assert_eq!(
                next_state(flags, Running, Error),
                Err(StepError::TargetUnsupported)
            );
            assert_eq!(
                next_state(flags, Error, Running),
                Err(StepError::CurUnsupported)
            );
        }
        // Only blocked arcs are hazards.
        let mut hazards = 0;
        for flags in MigFlags::ALL_SETS {
            for cur in MigState::ALL {
                for new in MigState::ALL {
                    if is_hazard(flags, cur, new) {
                        assert_eq!(cur, StopCopy);
                        hazards += 1;
                    }
                }
            }
        }
        // PRE_COPY (2 targets) + all flags (2 targets); PRE_COPY_P2P needs P2P too.
        assert_eq!(hazards, 1 + 2);
    }

    #[test]
    fn all_sixteen_v1_values() {
        let want: [(V1Class, Option<MigState>); 16] = [
            (V1Class::Valid, Some(Stop)),
            (V1Class::Valid, Some(Running)),
            (V1Class::Valid, Some(StopCopy)),
            (V1Class::Valid, Some(PreCopy)),
            (V1Class::Valid, Some(Resuming)),
            (V1Class::Invalid, None),
            (V1Class::Error, None),
            (V1Class::Error, None),
            (V1Class::Redundant, Some(Stop)),
            (V1Class::Valid, Some(RunningP2p)),
            (V1Class::Redundant, Some(StopCopy)),
            (V1Class::Valid, Some(PreCopyP2p)),
            (V1Class::Redundant, Some(Resuming)),
            (V1Class::Invalid, None),
            (V1Class::Error, None),
            (V1Class::Error, None),
        ];
        for (v, (class, v2)) in want.into_iter().enumerate() {
            let d = decode_v1(v as u32);
            assert_eq!((d.class, d.v2), (class, v2), "value {v:#x}");
            assert_eq!(
                d.settable,
                matches!(class, V1Class::Valid | V1Class::Redundant)
            );
            assert!(!d.to_string().is_empty());
        }
        let d = decode_v1(9);
        assert_eq!(d.bits, vec!["RUNNING", "NDMA"]);
        for v in [0x10, 0x11, 0xff, u32::MAX] {
            let d = decode_v1(v);
            assert_eq!(
                (d.class, d.v2, d.settable),
                (V1Class::Reserved, None, false)
            );
        }
    }

    #[test]
    fn parse_helpers() {
        assert_eq!(parse_flags("STOP_COPY,P2P").unwrap(), MigFlags(3));
        assert_eq!(parse_flags("P2P").unwrap(), MigFlags(3));
        assert!(parse_flags("NDMA").is_err());
        assert_eq!(parse_state("running_p2p").unwrap(), RunningP2p);
        assert_eq!(parse_state("VFIO_DEVICE_STATE_STOP").unwrap(), Stop);
        assert_eq!(parse_state("6").unwrap(), PreCopy);
        assert!(parse_state("NOPE").is_err());
    }
}
