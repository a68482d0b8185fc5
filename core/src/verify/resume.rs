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
#[derive(Debug, Default)]
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
