//! The resume rules (issue 14, part B): what a driver does with the data it is given in
//! RESUMING. `resume-accepted-corrupt`: a `corrupt_load` whose bytes were all taken must be
//! refused by the SET out of RESUMING. `resume-divergence`: the registers the controller reads
//! once a device was restored (`regs` `restored`) must equal the ones it read when that state
//! was saved (`regs` `saved`).

use std::collections::BTreeMap;

use super::{Out, Verifier, rule};
use crate::{
    model::MigState,
    trace::{Corruption, RegStage},
};

/// Per device: what the resume rules remember between events.
#[derive(Debug, Default, Clone)]
pub(super) struct ResumeState {
    /// A corrupted stream every byte of which was taken in RESUMING, not yet judged: its kind,
    /// size and line.
    corrupt: Option<(Corruption, u64, u64)>,
    /// The registers read when the device's state was last saved (BAR, offset -> value).
    saved: Option<(u32, BTreeMap<u64, u64>)>,
}

impl Verifier {
    /// `corrupt_load`: a write the driver refused (`ret` < 0) is the refusal; one it took whole
    /// waits for the SET out of RESUMING ([`Verifier::resume_set_done`]).
    pub(super) fn corrupt_load_rules(
        &mut self,
        out: &Out,
        i: usize,
        corruption: Corruption,
        bytes: u64,
        ret: i32,
    ) {
        let r = &mut self.devs[i].resume;
        r.corrupt = (ret == 0).then_some((corruption, bytes, out.line));
    }

    /// `set_done`: a SET that leaves RESUMING after a corrupted stream was taken whole.
    /// Returns true when this SET failing is the refusal the corrupted stream called for (not a
    /// `set-failed`).
    pub(super) fn resume_set_done(
        &mut self,
        out: &mut Out,
        i: usize,
        to: MigState,
        ret: i32,
    ) -> bool {
        let d = &mut self.devs[i];
        let from = d.tl.request().map_or(d.tl.current(), |r| r.from);
        if from != Some(MigState::Resuming) || to == MigState::Resuming {
            return false;
        }
        let Some((c, bytes, line)) = d.resume.corrupt.take() else {
            return false;
        };
        if ret == 0 {
            let what = if bytes == 0 {
                "an empty stream (nothing written)".to_owned()
            } else {
                format!("a {} stream of {bytes} bytes (line {line})", c.name())
            };
            out.add(
                rule::RESUME_ACCEPTED_CORRUPT,
                &d.name,
                format!(
                    "SET RESUMING -> {} returned 0 after {what} was written whole: the driver restored corrupt data instead of failing the write or this SET",
                    to.name()
                ),
                false,
            );
            return false;
        }
        true
    }

    /// `regs`: a `saved` reading is kept; a `restored` one is compared with it, offset by
    /// offset (the offsets both read).
    pub(super) fn regs_rules(
        &mut self,
        out: &mut Out,
        i: usize,
        stage: RegStage,
        bar: u32,
        regs: &BTreeMap<u64, u64>,
    ) {
        let d = &mut self.devs[i];
        match stage {
            RegStage::Saved => d.resume.saved = Some((bar, regs.clone())),
            RegStage::Restored => {
                let Some((sbar, saved)) = d.resume.saved.as_ref().filter(|(b, _)| *b == bar) else {
                    return;
                };
                let diff: Vec<String> = saved
                    .iter()
                    .filter_map(|(off, was)| {
                        let now = regs.get(off)?;
                        (now != was).then(|| format!("{off:#x}: saved {was:#x}, restored {now:#x}"))
                    })
                    .collect();
                if !diff.is_empty() {
                    out.add(
                        rule::RESUME_DIVERGENCE,
                        &d.name,
                        format!(
                            "after RESUMING, BAR{sbar} differs from the state that was saved: {}",
                            diff.join("; ")
                        ),
                        false,
                    );
                }
            }
        }
    }

    /// `reset`: the device starts over; a corrupted stream it took is no longer judged.
    pub(super) fn resume_reset(&mut self, i: usize) {
        self.devs[i].resume.corrupt = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MigFlags, MigState::*};
    use crate::trace::{Event, EventKind, Header};

    const D: &str = "0000:00:02.0";

    /// A verifier with D declared (STOP_COPY | P2P) and taken to STOP through a saved state.
    fn stopped() -> (Verifier, u64) {
        let mut h = Header::default();
        h.sources.insert("transitions".into(), "ok".into());
        let mut v = Verifier::new(&h, super::super::Options::default());
        let mut t = 0;
        let mut push = |v: &mut Verifier, kind| {
            t += 100;
            v.push(t / 100, &Event { t, pid: None, kind })
        };
        push(
            &mut v,
            EventKind::Device {
                dev: D.into(),
                flags: MigFlags(MigFlags::STOP_COPY | MigFlags::P2P),
                ctx: "vm".into(),
                state: Running,
                driver: None,
                sources: BTreeMap::new(),
            },
        );
        for to in [Stop, Resuming] {
            push(&mut v, EventKind::Set { dev: D.into(), to });
            assert!(
                push(
                    &mut v,
                    EventKind::SetDone {
                        dev: D.into(),
                        to,
                        ret: 0,
                        data_fd: None,
                    }
                )
                .is_empty()
            );
        }
        (v, t)
    }

    fn rules(v: &mut Verifier, t: &mut u64, kind: EventKind) -> Vec<&'static str> {
        *t += 100;
        v.push(
            *t / 100,
            &Event {
                t: *t,
                pid: None,
                kind,
            },
        )
        .into_iter()
        .filter(|f| !f.warning)
        .map(|f| f.rule)
        .collect()
    }

    fn load(c: Corruption, ret: i32) -> EventKind {
        EventKind::CorruptLoad {
            dev: D.into(),
            corruption: c,
            bytes: 44,
            ret,
        }
    }

    fn leave(v: &mut Verifier, t: &mut u64, ret: i32) -> Vec<&'static str> {
        rules(
            v,
            t,
            EventKind::Set {
                dev: D.into(),
                to: Stop,
            },
        );
        rules(
            v,
            t,
            EventKind::SetDone {
                dev: D.into(),
                to: Stop,
                ret,
                data_fd: None,
            },
        )
    }

    #[test]
    fn a_corrupt_stream_taken_and_restored_is_a_violation() {
        for c in Corruption::ALL {
            let (mut v, mut t) = stopped();
            assert!(rules(&mut v, &mut t, load(c, 0)).is_empty());
            assert_eq!(
                leave(&mut v, &mut t, 0),
                vec![rule::RESUME_ACCEPTED_CORRUPT],
                "{c:?}"
            );
        }
    }

    #[test]
    fn a_refused_corrupt_stream_is_no_violation_and_no_set_failed() {
        // Refused by the SET out of RESUMING (-22, EINVAL): neither rule fires.
        let (mut v, mut t) = stopped();
        rules(&mut v, &mut t, load(Corruption::BitFlip, 0));
        assert!(leave(&mut v, &mut t, -22).is_empty());
        // Refused by the write: the SET that follows is judged as any other (its failure is a
        // set-failed: nothing corrupt was taken), and its success is no violation.
        let (mut v, mut t) = stopped();
        rules(&mut v, &mut t, load(Corruption::Oversized, -28));
        assert!(leave(&mut v, &mut t, 0).is_empty());
        let (mut v, mut t) = stopped();
        rules(&mut v, &mut t, load(Corruption::Oversized, -28));
        assert_eq!(leave(&mut v, &mut t, -5), vec![rule::SET_FAILED]);
        // A reset before the SET ends the session: nothing left to judge.
        let (mut v, mut t) = stopped();
        rules(&mut v, &mut t, load(Corruption::Truncated, 0));
        rules(
            &mut v,
            &mut t,
            EventKind::Reset {
                dev: D.into(),
                ret: 0,
            },
        );
        rules(
            &mut v,
            &mut t,
            EventKind::Set {
                dev: D.into(),
                to: Stop,
            },
        );
        assert!(
            rules(
                &mut v,
                &mut t,
                EventKind::SetDone {
                    dev: D.into(),
                    to: Stop,
                    ret: 0,
                    data_fd: None,
                }
            )
            .is_empty()
        );
        // The good stream after a refusal resumes: no violation either.
        let (mut v, mut t) = stopped();
        rules(&mut v, &mut t, load(Corruption::Empty, 0));
        assert!(leave(&mut v, &mut t, -22).is_empty());
    }

    fn regs(stage: RegStage, pairs: &[(u64, u64)]) -> EventKind {
        EventKind::Regs {
            dev: D.into(),
            stage,
            bar: 0,
            regs: pairs.iter().copied().collect(),
        }
    }

    #[test]
    fn restored_registers_are_compared_with_the_saved_ones() {
        let saved = [(0x04, 0xffff_fffe), (0x80, 0x18_0000), (0x88, 0x10_0000)];
        let (mut v, mut t) = stopped();
        rules(&mut v, &mut t, regs(RegStage::Saved, &saved));
        // Equal: nothing.
        assert!(rules(&mut v, &mut t, regs(RegStage::Restored, &saved)).is_empty());
        // src and dst swapped: a divergence naming both offsets.
        let swapped = [(0x04, 0xffff_fffe), (0x80, 0x10_0000), (0x88, 0x18_0000)];
        t += 100;
        let f = v.push(
            t / 100,
            &Event {
                t,
                pid: None,
                kind: regs(RegStage::Restored, &swapped),
            },
        );
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].rule, rule::RESUME_DIVERGENCE);
        assert!(
            f[0].detail
                .contains("0x80: saved 0x180000, restored 0x100000"),
            "{}",
            f[0].detail
        );
        assert!(f[0].detail.contains("0x88"), "{}", f[0].detail);
        assert!(!f[0].detail.contains("0x4:"), "{}", f[0].detail);
        // An offset only one reading has is not compared; a restored reading with no saved one
        // before it, or of another BAR, judges nothing.
        assert!(rules(&mut v, &mut t, regs(RegStage::Restored, &[(0x90, 7)])).is_empty());
        let (mut v, mut t) = stopped();
        assert!(rules(&mut v, &mut t, regs(RegStage::Restored, &swapped)).is_empty());
        rules(&mut v, &mut t, regs(RegStage::Saved, &saved));
        let other_bar = EventKind::Regs {
            dev: D.into(),
            stage: RegStage::Restored,
            bar: 2,
            regs: swapped.iter().copied().collect(),
        };
        assert!(rules(&mut v, &mut t, other_bar).is_empty());
    }
}
