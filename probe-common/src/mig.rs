//! VFIO v2 migration states, flags and the kernel's FSM step table, usable without std.
//!
//! Numbers are the uAPI's (`include/uapi/linux/vfio.h`, `enum vfio_device_mig_state` and
//! `VFIO_MIGRATION_*`); the step algorithm is `vfio_mig_get_next_state()` in
//! `drivers/vfio/vfio_main.c`.

/// `enum vfio_device_mig_state`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MigState {
    Error = 0,
    Stop = 1,
    Running = 2,
    StopCopy = 3,
    Resuming = 4,
    RunningP2p = 5,
    PreCopy = 6,
    PreCopyP2p = 7,
}

impl MigState {
    /// Every state in uAPI order.
    pub const ALL: [MigState; 8] = [
        MigState::Error,
        MigState::Stop,
        MigState::Running,
        MigState::StopCopy,
        MigState::Resuming,
        MigState::RunningP2p,
        MigState::PreCopy,
        MigState::PreCopyP2p,
    ];

    /// Decodes a uAPI state number.
    pub const fn from_u32(v: u32) -> Option<MigState> {
        Some(match v {
            0 => MigState::Error,
            1 => MigState::Stop,
            2 => MigState::Running,
            3 => MigState::StopCopy,
            4 => MigState::Resuming,
            5 => MigState::RunningP2p,
            6 => MigState::PreCopy,
            7 => MigState::PreCopyP2p,
            _ => return None,
        })
    }

    /// The uAPI name without the `VFIO_DEVICE_STATE_` prefix, as the trace format spells it.
    pub const fn name(self) -> &'static str {
        match self {
            MigState::Error => "ERROR",
            MigState::Stop => "STOP",
            MigState::Running => "RUNNING",
            MigState::StopCopy => "STOP_COPY",
            MigState::Resuming => "RESUMING",
            MigState::RunningP2p => "RUNNING_P2P",
            MigState::PreCopy => "PRE_COPY",
            MigState::PreCopyP2p => "PRE_COPY_P2P",
        }
    }

    /// Parses a trace-format state name (exact, upper case).
    pub fn from_name(s: &str) -> Option<MigState> {
        MigState::ALL.into_iter().find(|st| st.name() == s)
    }

    /// The `VFIO_MIGRATION_*` flags a device needs to support this state
    /// (`state_flags_table` in `vfio_mig_get_next_state`). ERROR needs every bit, so no device
    /// "supports" it as a target.
    pub const fn required_flags(self) -> u32 {
        match self {
            MigState::Error => u32::MAX,
            MigState::Stop | MigState::Running | MigState::StopCopy | MigState::Resuming => {
                MigFlags::STOP_COPY
            }
            MigState::RunningP2p => MigFlags::STOP_COPY | MigFlags::P2P,
            MigState::PreCopy => MigFlags::STOP_COPY | MigFlags::PRE_COPY,
            MigState::PreCopyP2p => MigFlags::STOP_COPY | MigFlags::P2P | MigFlags::PRE_COPY,
        }
    }

    /// A device in this state may initiate DMA and raise interrupts.
    pub const fn dma_allowed(self) -> bool {
        matches!(self, MigState::Running | MigState::PreCopy)
    }

    /// A device in this state must not initiate DMA (the NDMA states and the stopped ones).
    pub const fn quiescent(self) -> bool {
        matches!(
            self,
            MigState::RunningP2p
                | MigState::PreCopyP2p
                | MigState::Stop
                | MigState::StopCopy
                | MigState::Resuming
        )
    }

    /// One of the two NDMA states (`RUNNING_P2P`, `PRE_COPY_P2P`).
    pub const fn is_p2p(self) -> bool {
        matches!(self, MigState::RunningP2p | MigState::PreCopyP2p)
    }

    /// Fully stopped: STOP, STOP_COPY, RESUMING.
    pub const fn stopped(self) -> bool {
        matches!(
            self,
            MigState::Stop | MigState::StopCopy | MigState::Resuming
        )
    }
}

impl core::fmt::Display for MigState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// `VFIO_MIGRATION_*` flags as reported by `VFIO_DEVICE_FEATURE_MIGRATION`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct MigFlags(pub u32);

impl MigFlags {
    pub const STOP_COPY: u32 = 1;
    pub const P2P: u32 = 2;
    pub const PRE_COPY: u32 = 4;

    /// The four flag sets a migratable device can report (STOP_COPY is mandatory).
    pub const ALL_SETS: [MigFlags; 4] = [
        MigFlags(MigFlags::STOP_COPY),
        MigFlags(MigFlags::STOP_COPY | MigFlags::P2P),
        MigFlags(MigFlags::STOP_COPY | MigFlags::PRE_COPY),
        MigFlags(MigFlags::STOP_COPY | MigFlags::P2P | MigFlags::PRE_COPY),
    ];

    pub const fn contains(self, bits: u32) -> bool {
        self.0 & bits == bits
    }

    /// The names of the flags set, in bit order (`STOP_COPY`, `P2P`, `PRE_COPY`).
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        [
            (MigFlags::STOP_COPY, "STOP_COPY"),
            (MigFlags::P2P, "P2P"),
            (MigFlags::PRE_COPY, "PRE_COPY"),
        ]
        .into_iter()
        .filter(move |(b, _)| self.contains(*b))
        .map(|(_, n)| n)
    }

    /// Whether a device with these flags supports `state`.
    pub const fn supports(self, state: MigState) -> bool {
        self.contains(state.required_flags())
    }
}

/// What `VFIO_MIG_GET_PRECOPY_INFO` returned on a device's data_fd (`struct vfio_precopy_info`,
/// include/uapi/linux/vfio.h, less its `argsz`): the driver's estimate of the pre-copy data
/// still to read, and its `flags` exactly as returned (0 in the 6.2 uAPI; newer kernels define
/// `VFIO_PRECOPY_INFO_REINIT` for users that enabled `VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct PrecopyInfo {
    pub initial_bytes: u64,
    pub dirty_bytes: u64,
    pub flags: u32,
}

/// `VFIO_PRECOPY_INFO_REINIT` (include/uapi/linux/vfio.h): the only bit a driver may return in
/// `vfio_precopy_info.flags`, and only to a user that enabled
/// `VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2`: new initial data is on the stream, `initial_bytes`
/// starts over. Without the opt-in the word is reserved.
pub const PRECOPY_INFO_REINIT: u32 = 1;

/// The kernel's candidate table `vfio_from_fsm_table[cur][new]`, indexed by uAPI number.
const TABLE: [[MigState; 8]; 8] = {
    use MigState::{
        Error as E, PreCopy as PC, PreCopyP2p as PCP, Resuming as R, Running as RN,
        RunningP2p as P2P, Stop as S, StopCopy as SC,
    };
    [
        // cur = ERROR
        [E, E, E, E, E, E, E, E],
        // cur = STOP: new = ERROR, STOP, RUNNING, STOP_COPY, RESUMING, RUNNING_P2P, PRE_COPY, PRE_COPY_P2P
        [E, S, P2P, SC, R, P2P, P2P, P2P],
        // cur = RUNNING
        [E, P2P, RN, P2P, P2P, P2P, PC, P2P],
        // cur = STOP_COPY
        [E, S, S, SC, S, S, E, E],
        // cur = RESUMING
        [E, S, S, S, R, S, S, S],
        // cur = RUNNING_P2P
        [E, S, RN, S, S, P2P, RN, PCP],
        // cur = PRE_COPY
        [E, RN, RN, PCP, RN, RN, PC, PCP],
        // cur = PRE_COPY_P2P
        [E, P2P, P2P, SC, P2P, P2P, PC, PCP],
    ]
};

/// The raw table entry, before unsupported states are skipped.
pub const fn candidate(cur: MigState, new: MigState) -> MigState {
    TABLE[cur as usize][new as usize]
}

/// Why the kernel refuses a step (`vfio_mig_get_next_state` returns -EINVAL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepError {
    /// `cur` is not a state the device supports (the kernel WARNs).
    CurUnsupported,
    /// `new` is ERROR or not supported by the device's flags.
    TargetUnsupported,
    /// The table routes through ERROR: STOP_COPY -> PRE_COPY / PRE_COPY_P2P.
    BlockedArc,
}

/// `vfio_mig_get_next_state()`: the next arc the driver must execute from `cur` toward `new`.
///
/// Unsupported intermediate states are skipped exactly as the kernel does:
/// `next = table[cur][new]; while !supported(next) { next = table[next][new] }`. The kernel's
/// loop only terminates on a supported state; before the 2026 fix it spins forever on a blocked
/// arc of a PRE_COPY device (ERROR is never "supported" and ERROR's row is all ERROR). We stop at
/// ERROR and report it as [`StepError::BlockedArc`].
pub const fn next_state(
    flags: MigFlags,
    cur: MigState,
    new: MigState,
) -> Result<MigState, StepError> {
    if !flags.supports(cur) {
        return Err(StepError::CurUnsupported);
    }
    if !flags.supports(new) {
        return Err(StepError::TargetUnsupported);
    }
    let mut next = candidate(cur, new);
    while !matches!(next, MigState::Error) && !flags.supports(next) {
        next = candidate(next, new);
    }
    if matches!(next, MigState::Error) {
        Err(StepError::BlockedArc)
    } else {
        Ok(next)
    }
}

/// A request that makes unpatched kernels spin in `vfio_mig_get_next_state` (the 2026 fix
/// "prevent infinite loop in vfio_mig_get_next_state"): a blocked arc on a device whose flags
/// support the target, so the early target check does not catch it.
pub const fn is_hazard(flags: MigFlags, cur: MigState, new: MigState) -> bool {
    flags.supports(cur)
        && flags.supports(new)
        && matches!(next_state(flags, cur, new), Err(StepError::BlockedArc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip() {
        for (i, s) in MigState::ALL.iter().enumerate() {
            assert_eq!(*s as u32, i as u32);
            assert_eq!(MigState::from_u32(i as u32), Some(*s));
            assert_eq!(MigState::from_name(s.name()), Some(*s));
        }
        assert_eq!(MigState::from_u32(8), None);
    }

    #[test]
    fn quiescent_and_dma_allowed_partition_the_valid_states() {
        for s in MigState::ALL {
            if s == MigState::Error {
                assert!(!s.quiescent() && !s.dma_allowed());
            } else {
                assert_ne!(s.quiescent(), s.dma_allowed(), "{s:?}");
            }
        }
    }
}
