//! Migration plans (`--plan`) and ordering policies (`--order`): which states each device is
//! asked for, in which order across devices.

use std::fmt;

use crate::model::{self, MigFlags, MigState};

/// One requested state. What happens in it follows from the state: STOP_COPY saves to EOF,
/// PRE_COPY / PRE_COPY_P2P read iteratively, RESUMING loads saved data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub to: MigState,
    /// Built-in plans skip optional steps the device's flags do not support (e.g. RUNNING_P2P
    /// on a device without P2P, as QEMU does); custom plans send every step as written.
    pub optional: bool,
}

/// A `--plan`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    StopCopy,
    PreCopy,
    RoundTrip,
    Conformance,
    /// Corrupted streams in RESUMING, each to be refused, then the good one (issue 14).
    ResumeFuzz,
    /// A VFIO_DEVICE_RESET in STOP_COPY with the data_fd still open, before any byte is
    /// read: the GET after it must say RUNNING, and the old data_fd must be refused (issue 14).
    Reset,
    Custom(Vec<MigState>),
}

impl Plan {
    pub fn parse(s: &str) -> Result<Plan, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "stopcopy" | "stop_copy" => Ok(Plan::StopCopy),
            "precopy" | "pre_copy" => Ok(Plan::PreCopy),
            "roundtrip" => Ok(Plan::RoundTrip),
            "conformance" => Ok(Plan::Conformance),
            "resume-fuzz" | "resume_fuzz" => Ok(Plan::ResumeFuzz),
            "reset" => Ok(Plan::Reset),
            _ => {
                let states = s
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(model::parse_state)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| {
                        format!(
                            "{e}; a plan is stopcopy, precopy, roundtrip, conformance, resume-fuzz, reset or a comma list of states"
                        )
                    })?;
                if states.is_empty() {
                    return Err("empty plan".to_owned());
                }
                Ok(Plan::Custom(states))
            }
        }
    }

    /// The steps of a plan (not for conformance, resume-fuzz and reset, which have their own
    /// loops).
    pub fn steps(&self) -> Vec<Step> {
        use MigState::*;
        let req = |to| Step {
            to,
            optional: false,
        };
        let opt = |to| Step { to, optional: true };
        match self {
            Plan::StopCopy => vec![
                opt(RunningP2p),
                req(StopCopy),
                req(Stop),
                opt(RunningP2p),
                req(Running),
            ],
            Plan::PreCopy => vec![
                req(PreCopy),
                opt(PreCopyP2p),
                req(StopCopy),
                req(Stop),
                opt(RunningP2p),
                req(Running),
            ],
            Plan::RoundTrip => vec![
                opt(RunningP2p),
                req(StopCopy),
                req(Stop),
                req(Resuming),
                req(Stop),
                req(StopCopy),
                req(Stop),
                opt(RunningP2p),
                req(Running),
            ],
            Plan::Conformance | Plan::ResumeFuzz | Plan::Reset => Vec::new(),
            Plan::Custom(states) => states.iter().map(|s| req(*s)).collect(),
        }
    }

    /// Why a device with `flags` cannot run this plan, if it cannot.
    pub fn unsupported_by(&self, flags: MigFlags) -> Option<String> {
        if *self == Plan::PreCopy && !flags.contains(MigFlags::PRE_COPY) {
            return Some(format!(
                "the precopy plan needs PRE_COPY but the device reports {}",
                model::flag_names(flags).join("|")
            ));
        }
        None
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Plan::StopCopy => f.write_str("stopcopy"),
            Plan::PreCopy => f.write_str("precopy"),
            Plan::RoundTrip => f.write_str("roundtrip"),
            Plan::Conformance => f.write_str("conformance"),
            Plan::ResumeFuzz => f.write_str("resume-fuzz"),
            Plan::Reset => f.write_str("reset"),
            Plan::Custom(s) => {
                f.write_str(&s.iter().map(|s| s.name()).collect::<Vec<_>>().join(","))
            }
        }
    }
}

/// Multi-device ordering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// QEMU's: every device reaches a P2P state before any stops, and every stopped device
    /// reaches RUNNING_P2P before any runs (step by step across devices).
    Qemu,
    /// One device through its whole plan, then the next: violates the multi-device rules.
    Naive,
}

impl Order {
    pub fn parse(s: &str) -> Result<Order, String> {
        match s {
            "qemu" => Ok(Order::Qemu),
            "naive" => Ok(Order::Naive),
            _ => Err(format!("unknown order `{s}` (expected qemu or naive)")),
        }
    }
}

/// The P2P state a device in `s` must pass through before any peer stops (QEMU's
/// `vfio_save_setup`/`vfio_vmstate_change_prepare` order): RUNNING -> RUNNING_P2P,
/// PRE_COPY -> PRE_COPY_P2P.
pub fn quiesce_target(s: MigState) -> Option<MigState> {
    match s {
        MigState::Running => Some(MigState::RunningP2p),
        MigState::PreCopy => Some(MigState::PreCopyP2p),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MigState::*;

    #[test]
    fn parse_plans() {
        assert_eq!(Plan::parse("stopcopy").unwrap(), Plan::StopCopy);
        assert_eq!(Plan::parse("PreCopy").unwrap(), Plan::PreCopy);
        assert_eq!(Plan::parse("resume-fuzz").unwrap(), Plan::ResumeFuzz);
        assert_eq!(Plan::ResumeFuzz.to_string(), "resume-fuzz");
        assert_eq!(Plan::parse("reset").unwrap(), Plan::Reset);
        assert_eq!(Plan::Reset.to_string(), "reset");
        assert_eq!(
            Plan::parse("RUNNING_P2P, stop ,2").unwrap(),
            Plan::Custom(vec![RunningP2p, Stop, Running])
        );
        let e = Plan::parse("RUNNING,BOGUS").unwrap_err();
        assert!(e.contains("BOGUS"), "{e}");
        assert!(Plan::parse(",").is_err());
        assert_eq!(
            Plan::parse("STOP,RUNNING").unwrap().to_string(),
            "STOP,RUNNING"
        );
    }

    #[test]
    fn builtin_plans_end_running_and_never_hit_hazards() {
        for p in [Plan::StopCopy, Plan::PreCopy, Plan::RoundTrip] {
            let steps = p.steps();
            assert_eq!(steps.last().map(|s| s.to), Some(Running));
            for flags in MigFlags::ALL_SETS {
                if p.unsupported_by(flags).is_some() {
                    continue;
                }
                let mut cur = Running;
                for s in steps.iter().filter(|s| !s.optional || flags.supports(s.to)) {
                    assert!(!model::is_hazard(flags, cur, s.to), "{p} {flags:?}");
                    model::path(flags, cur, s.to).expect("legal");
                    cur = s.to;
                }
            }
        }
        assert!(Plan::PreCopy.unsupported_by(MigFlags(3)).is_some());
        assert!(Plan::PreCopy.unsupported_by(MigFlags(7)).is_none());
    }
}
