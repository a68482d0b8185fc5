//! The lab scenarios: what runs in the guest, the verdict and rules expected, and the extra
//! facts checked on the host from what came back.

use std::fmt::Write as _;

/// What the guest runs for a scenario.
#[derive(Clone, Copy, Debug)]
pub enum Run {
    /// The driver's own self-test (`lab/selftest`), judged by its exit status.
    Selftest,
    /// A guest shell command (init.sh's functions are available), judged by `migscope check` when it leaves a
    /// trace.jsonl and by its exit status otherwise.
    Shell(&'static str),
    /// `migscope drive` with a plan (and a multi-device order), judged by `migscope check`.
    Drive {
        plan: &'static str,
        order: Option<&'static str>,
    },
    /// A benchmark (`drive_rss` in lab/guest/init.sh): `migscope drive` through a long plan
    /// of STOP_COPY cycles with the edu workload for `secs`, then SIGINT, its VmRSS and VmHWM
    /// sampled every 10 s; with `/bin/migscope-base` (`MIGSCOPE_LAB_BASE`: an earlier build)
    /// the same for that one first, for `base_secs`. Judged by its exit status (every drive
    /// left a trace).
    Memory { secs: u64, base_secs: u64 },
    /// QEMU as the L2 VMM (`qemu_case` in lab/guest/init.sh): a source QEMU migrates the
    /// devices to a file, a destination QEMU loads them, each beside its own `migscope
    /// record`; every trace judged by `migscope check` and against QEMU's own trace.
    Qemu(Qemu),
}

/// How a QEMU scenario runs.
#[derive(Clone, Copy, Debug)]
pub struct Qemu {
    /// `record --pid` attached after QEMU opened its devices; otherwise `record` (every VFIO
    /// user) started before QEMU.
    pub late: bool,
    /// The L2 guest `lab/l2-dma` keeps edu DMA running through the migration.
    pub dma: bool,
    /// The source must have a transfer in flight at its quiesce: an attempt where the L2
    /// guest was between two transfers is repeated (at most 5 attempts; edu-mig's dmesg says).
    pub inflight: bool,
    /// The destination runs too (not when the source's migration is meant to fail).
    pub dest: bool,
}

impl Qemu {
    /// The roles that leave a trace, in order (`src.jsonl`, `dst.jsonl`).
    pub fn roles(&self) -> &'static [&'static str] {
        if self.dest { &["src", "dst"] } else { &["src"] }
    }
}

/// An extra fact a scenario must show beyond verdict and rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extra {
    /// The driver verified the restored registers on read-back.
    RestoreVerified,
    /// After the failed SET a GET reported the device's true state (RUNNING).
    TrueStateReadBack,
    /// drive's conformance table matched the kernel FSM on every pair.
    ConformanceTable,
    /// The probe traced FSM steps (the kernel's vfio_mig_get_next_state calls).
    StepsTraced,
    /// Passing runs must have had witness and irq sources ok (the witness also in every
    /// device's own `sources`: a workload write landed before its first quiesce) and DMA in
    /// flight at the quiesce.
    Evidence,
    /// Every event names one of these devices by its PCI address, each declared by a
    /// `device` event before any other event of it (no `fd:N@pid`, no undeclared device).
    NamedByBdf(&'static [&'static str]),
    /// The rule was violated on each of these devices.
    RuleOnEach(&'static str, &'static [&'static str]),
    /// The device's declaration states this migration state.
    DeclaredState(&'static str, &'static str),
    /// One device fd per listed address that cannot be told apart: each declared under a
    /// placeholder (`fd:N@pid`) with `irq` and `iommu_fault` unavailable, no event naming any
    /// of the addresses, and their interrupts noted as not attributed (no phantom device).
    Unresolved(&'static [&'static str]),
    /// Every device's own `sources` say the witness is unavailable (nothing wrote to its pages)
    /// and the verdict names the `dma` blind spot.
    WitnessUnavailable,
    /// A `dma-after-quiesce` violation comes from the witness (not only from another source).
    WitnessCaught,
    /// The probe decoded drive's VFIO_MIG_GET_PRECOPY_INFO replies (`precopy_info`), the
    /// same values drive itself got (its `precopy round` marks).
    PrecopyInfo,
    /// Every event names its device by one of the scenario's BDFs, declared before its first
    /// use (no `fd:N@pid`, no `vdev:`, no undeclared device).
    BdfNamed,
    /// edu-mig drained a transfer in flight at the source QEMU's quiesce (its dmesg says so).
    DrainedAtQuiesce,
    /// The L2 guest's DMA ran on the source and kept running, data intact, on the destination.
    L2Dma,
    /// QEMU's reset path: every failed SET and VFIO_DEVICE_RESET is in the trace, and each
    /// device's final state there is QEMU's final state.
    ResetPath,
    /// Every open of every device found edu quiet (edu-mig's `open:` lines): nothing an
    /// earlier case left — a transfer, an interrupt — reached this one.
    CleanOpen,
    /// resume-fuzz ran whole: a `corrupt_load` of each corruption (truncated, bitflip,
    /// oversized, empty), then the good stream loaded (`data` load) and the device RUNNING at
    /// its last GET.
    ResumeFuzzed,
    /// drive read the device's registers when saved and once restored (`regs` of both stages).
    RegsCompared,
    /// `migscope check` and every export judge the trace with these verifier options (e.g.
    /// `--max-set-ms N`); the verdict and rules are theirs.
    CheckedWith(&'static [&'static str]),
    /// Every successful `reset` in the trace is followed by a `get` of its device before any
    /// other SET or reset of it (drive's "has it got there?" after a reset).
    ResetReadBack,
    /// The correct driver refused the read of each device's data_fd from before its reset
    /// (drive's mark says so) and no `data` moved through a file older than the last reset.
    StaleReadRefused,
    /// drive read a quiesced device's state back while dwelling: some `get` of a device comes
    /// after the `get` that follows its quiescing SET and before its next SET.
    QuiescedGets,
    /// The trace cut just before the slowest SET's `set_done` (an `end` appended) is
    /// `inconclusive` with the blind spot `unfinished` when checked without options: an open
    /// SET is never a pass.
    CutWhileOpen,
    /// Device DMA logging ran: edu-mig's dmesg has its DMA_LOGGING_START, the trace's
    /// `dirty_log` source is ok, and drive's REPORTs are in it (`dirty_report`s).
    DirtyLogged,
    /// QEMU used the device's DMA log, not type1's dirty pages: QEMU's own trace has
    /// `vfio_device_dirty_tracking_start` and its `vfio_get_dirty_bitmap` syncs, migscope's
    /// trace has QEMU's DMA_LOGGING_START and no type1 VFIO_IOMMU_DIRTY_PAGES, and every
    /// REPORT QEMU made is one `dirty_report` the probe decoded.
    VmmDirtyLogged,
    /// `drive --tui` ran in a tmux pane (`drive_tui` in lab/guest/init.sh): the pane captured
    /// while the device was quiesced (`mid.txt`, taken once drive's trace has the device in
    /// STOP_COPY and the view shows that SET) has the device's lane in a quiescent state and
    /// an interim verdict; the one captured after the plan (`final.txt`, once the trace is
    /// complete) has the final verdict, `check`'s on the same trace; `q` ended drive with its
    /// verdict's exit status; the view's frame times came back (`drive.err`).
    TuiLive,
    /// An interrupt storm ran (`rec_storm`: edu-mig `storm=N`): edu-mig started its storm
    /// thread and stopped the storm at a quiesce with every raised interrupt handled, the binned
    /// trace holds bins of many interrupts, it and the full-detail trace counted the same
    /// interrupts, and each trace's growth while RUNNING is measured (`storm` in the JSON).
    Storm,
}

#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    /// edu-mig's `bug=` parameter ("none" for a correct driver).
    pub bug: &'static str,
    pub precopy: bool,
    /// edu devices on the root bus, at `bdf(0)`, `bdf(1)`, ...
    pub devices: usize,
    /// edu devices each behind its own PCIe root port, at `bridged_bdf(0)`, ... (a slot or
    /// bus reset is possible there: VFIO_DEVICE_GET_PCI_HOT_RESET_INFO answers). A QEMU case
    /// with `bridged > 0` gives QEMU these devices instead of the root-bus ones
    /// ([`Scenario::behind_root_ports`]).
    pub bridged: usize,
    pub run: Run,
    /// "pass" or "fail".
    pub expected: &'static str,
    /// Rules that must be among the violations (for "fail").
    pub rules: &'static [&'static str],
    pub extras: &'static [Extra],
    /// Needs PRE_COPY (6.2+): skipped on the 6.1 baseline.
    pub needs_precopy: bool,
    /// Run only when named with --scenario (a known open question, not a gate).
    pub on_request: bool,
    /// With edu-mig `dma_log=1` (device DMA logging through log_ops): skipped on a kernel
    /// that does not export the iova_bitmap helpers a log_ops driver needs (`runner`).
    pub dma_log: bool,
}

const fn drive(plan: &'static str) -> Run {
    Run::Drive { plan, order: None }
}

/// The probe alone beside the driver self-test (`rec_selftest` in lab/guest/init.sh).
const REC: &str = "rec_selftest 0000:00:02.0";
/// The bridged devices (`bridged_bdf`) the two-device attach scenario uses.
const BRIDGED_TWO: &[&str] = &["0000:01:00.0", "0000:02:00.0"];

/// A QEMU case: record started before QEMU, no L2 DMA guest, source and destination.
const QEMU: Qemu = Qemu {
    late: false,
    dma: false,
    inflight: false,
    dest: true,
};
/// The same with `record --pid` attached after QEMU opened its devices.
const QEMU_LATE: Qemu = Qemu { late: true, ..QEMU };
/// The L2 guest's DMA running, a transfer in flight at the source's quiesce.
const QEMU_DMA: Qemu = Qemu {
    dma: true,
    inflight: true,
    ..QEMU
};

/// A QEMU case whose migration is meant to fail or whose bug shows on the source: no
/// destination, record attached late.
const QEMU_LATE_SRC: Qemu = Qemu {
    dest: false,
    ..QEMU_LATE
};

/// What `record` alone can say of a good device (no DMA witness): inconclusive, never pass.
const RECORD_GOOD: (&str, &[&str]) = ("inconclusive", &[]);
/// An interrupt after the quiesce.
const FAIL_IRQ: (&str, &[&str]) = ("fail", &["irq-after-quiesce"]);

/// What every QEMU scenario checks beside its own extras.
pub const QEMU_EXTRAS: &[Extra] = &[Extra::BdfNamed, Extra::CleanOpen];

/// A QEMU scenario (no PRE_COPY unless `.with_precopy()`; `QEMU_EXTRAS` always checked).
const fn qemu(
    name: &'static str,
    about: &'static str,
    bug: &'static str,
    devices: usize,
    run: Qemu,
    (expected, rules): (&'static str, &'static [&'static str]),
) -> Scenario {
    Scenario {
        name,
        about,
        bug,
        precopy: false,
        devices,
        bridged: 0,
        run: Run::Qemu(run),
        expected,
        rules,
        extras: &[],
        needs_precopy: false,
        on_request: false,
        dma_log: false,
    }
}

pub const ALL: &[Scenario] = &[
    Scenario {
        name: "doctor",
        about: "migscope doctor in the guest: kernel, BTF, which hooks attach, VFIO devices",
        bug: "none",
        precopy: false,
        devices: 1,
        bridged: 0,
        run: Run::Shell("migscope doctor"),
        expected: "pass",
        rules: &[],
        extras: &[],
        needs_precopy: false,
        on_request: false,
        dma_log: false,
    },
    Scenario {
        name: "syscall-cost",
        about: "what an unrelated ioctl/read/write costs: nothing attached, one empty BPF \
                program on sys_enter_ioctl, record --hooks tracepoint, record --hooks direct \
                (printed, not judged: TCG timings; the ratios are what matter)",
        bug: "none",
        precopy: false,
        devices: 1,
        bridged: 0,
        run: Run::Shell("syscall_cost"),
        expected: "pass",
        rules: &[],
        extras: &[],
        needs_precopy: false,
        on_request: false,
        dma_log: false,
    },
    Scenario {
        name: "driver-selftest",
        about: "edu-mig's own self-test: BAR0 trapped, DMA drained and held, stream round trip",
        bug: "none",
        precopy: false,
        devices: 1,
        bridged: 0,
        run: Run::Selftest,
        expected: "pass",
        rules: &[],
        extras: &[],
        needs_precopy: false,
        on_request: false,
        dma_log: false,
    },
    Scenario {
        name: "good-stopcopy",
        about: "correct driver, RUNNING -> RUNNING_P2P -> STOP_COPY -> STOP -> RUNNING",
        bug: "none",
        precopy: false,
        devices: 1,
        bridged: 0,
        run: drive("stopcopy"),
        expected: "pass",
        rules: &[],
        extras: &[Extra::Evidence],
        needs_precopy: false,
        on_request: false,
        dma_log: false,
    },
    Scenario {
        name: "good-precopy",
        about: "correct driver with PRE_COPY: iterative reads, PRE_COPY_P2P, STOP_COPY",
        bug: "none",
        precopy: true,
        devices: 1,
        bridged: 0,
        run: drive("precopy"),
        expected: "pass",
        rules: &[],
        extras: &[Extra::Evidence, Extra::PrecopyInfo],
        needs_precopy: true,
        on_request: false,
        dma_log: false,
    },
    Scenario {
        name: "roundtrip",
        about: "save in STOP_COPY, restore through RESUMING, registers equal on read-back",
        bug: "none",
        precopy: false,
        devices: 1,
        bridged: 0,
        run: drive("roundtrip"),
        expected: "pass",
        rules: &[],
        extras: &[Extra::Evidence, Extra::RestoreVerified],
        needs_precopy: false,
        on_request: false,
        dma_log: false,
    },
    Scenario {
        name: "conformance",
        about: "every ordered pair of states: outcomes and steps equal the kernel FSM",
        bug: "none",
        precopy: false,
        devices: 1,
        bridged: 0,
        run: drive("conformance"),
        expected: "pass",
        rules: &[],
        extras: &[Extra::ConformanceTable],
        needs_precopy: false,
        on_request: false,
        dma_log: false,
    },
    Scenario {
        name: "early-p2p",
        about: "bug=early_p2p: returns from the P2P arc with DMA in flight, lets commands through",
        bug: "early_p2p",
        precopy: false,
        devices: 1,
        bridged: 0,
        run: drive("stopcopy"),
        expected: "fail",
        rules: &["dma-after-quiesce", "irq-after-quiesce"],
        extras: &[],
        needs_precopy: false,
        on_request: false,
        dma_log: false,
    },
    Scenario {
        name: "irq-in-stop",
        about: "bug=irq_in_stop: raises an edu interrupt while stopped",
        bug: "irq_in_stop",
        precopy: false,
        devices: 1,
        bridged: 0,
        run: drive("stopcopy"),
        expected: "fail",
        rules: &["irq-after-quiesce"],
        extras: &[],
        needs_precopy: false,
        on_request: false,
        dma_log: false,
    },
    Scenario {
        name: "fail-p2p",
        about: "bug=fail_p2p: the RUNNING -> RUNNING_P2P arc fails; GET tells the truth",
        bug: "fail_p2p",
        precopy: false,
        devices: 1,
        bridged: 0,
        run: drive("stopcopy"),
        expected: "fail",
        rules: &["set-failed"],
        extras: &[Extra::TrueStateReadBack],
        needs_precopy: false,
        on_request: false,
        dma_log: false,
    },
    Scenario {
        name: "no-steps",
        about: "bug=no_steps: jumps to the target without stepping through the kernel FSM",
        bug: "no_steps",
        precopy: false,
        devices: 1,
        bridged: 0,
        run: drive("stopcopy"),
        expected: "fail",
        rules: &["illegal-arc"],
        extras: &[],
        needs_precopy: false,
        on_request: false,
        dma_log: false,
    },
    Scenario {
        name: "two-dev-qemu-order",
        about: "two devices, QEMU's order: every device to RUNNING_P2P before any stops",
        bug: "none",
        precopy: false,
        devices: 2,
        bridged: 0,
        run: Run::Drive {
            plan: "stopcopy",
            order: Some("qemu"),
        },
        expected: "pass",
        rules: &[],
        extras: &[Extra::Evidence],
        needs_precopy: false,
        on_request: false,
        dma_log: false,
    },
    Scenario {
        name: "two-dev-naive-order",
        about: "two devices, one fully after the other: a device stops while its peer runs",
        bug: "none",
        precopy: false,
        devices: 2,
        bridged: 0,
        run: Run::Drive {
            plan: "stopcopy",
            order: Some("naive"),
        },
        expected: "fail",
        rules: &["stop-while-peer-running"],
        extras: &[],
        needs_precopy: false,
        on_request: false,
        dma_log: false,
    },
    Scenario {
        name: "record-good",
        about: "record beside the self-test, correct driver: the probe alone cannot see a PCI \
                device's DMA (no witness; mdev_dma covers mediated devices only), so the verdict \
                is inconclusive with the dma blind spot, never a false pass",
        bug: "none",
        precopy: false,
        devices: 1,
        bridged: 0,
        run: Run::Shell(REC),
        expected: "inconclusive",
        rules: &[],
        extras: &[Extra::StepsTraced],
        needs_precopy: false,
        on_request: false,
        dma_log: false,
    },
    Scenario {
        name: "record-early-p2p",
        about: "record beside the self-test, bug=early_p2p: the interrupt lands after RUNNING_P2P",
        bug: "early_p2p",
        precopy: false,
        devices: 1,
        bridged: 0,
        run: Run::Shell(REC),
        expected: "fail",
        rules: &["irq-after-quiesce"],
        extras: &[],
        needs_precopy: false,
        on_request: false,
        dma_log: false,
    },
    Scenario {
        name: "record-irq-in-stop",
        about: "record beside the self-test, bug=irq_in_stop",
        bug: "irq_in_stop",
        precopy: false,
        devices: 1,
        bridged: 0,
        run: Run::Shell(REC),
        expected: "fail",
        rules: &["irq-after-quiesce"],
        extras: &[],
        needs_precopy: false,
        on_request: false,
        dma_log: false,
    },
    Scenario {
        name: "irq-storm",
        about: "an interrupt storm (edu-mig storm=200000, as fast as edu raises under TCG) while \
                RUNNING, correct driver, record beside the self-test: binned while the device may \
                DMA, stopped with every interrupt handled by the quiescing arc: no irq \
                violation, inconclusive (record has no DMA witness), both details agree, nothing \
                lost; every trace's growth measured",
        bug: "none",
        precopy: false,
        devices: 1,
        bridged: 0,
        run: Run::Shell("rec_storm -measure 200000 0000:00:02.0"),
        expected: "inconclusive",
        rules: &[],
        extras: &[Extra::Storm, Extra::StepsTraced],
        needs_precopy: false,
        on_request: false,
        dma_log: false,
    },
    Scenario {
        name: "irq-storm-in-stop",
        about: "the storm with bug=irq_in_stop: the RUNNING_P2P -> STOP arc raises 10 ms of it \
                (2000 interrupts) after the quiesce, handled before the SET returns (every \
                interrupt exact in both details, both recorders with a 64 MiB ring)",
        bug: "irq_in_stop",
        precopy: false,
        devices: 1,
        bridged: 0,
        run: Run::Shell("rec_storm -qring 67108864 200000 0000:00:02.0"),
        expected: "fail",
        rules: &["irq-after-quiesce"],
        extras: &[Extra::Storm],
        needs_precopy: false,
        on_request: false,
        dma_log: false,
    },
    Scenario {
        name: "record-fail-p2p",
        about: "record beside the self-test, bug=fail_p2p: SET fails, GET tells the truth",
        bug: "fail_p2p",
        precopy: false,
        devices: 1,
        bridged: 0,
        run: Run::Shell(REC),
        expected: "fail",
        rules: &["set-failed"],
        extras: &[Extra::TrueStateReadBack],
        needs_precopy: false,
        on_request: false,
        dma_log: false,
    },
    Scenario {
        name: "record-no-steps",
        about: "record beside the self-test, bug=no_steps: multi-arc SETs skip traced steps",
        bug: "no_steps",
        precopy: false,
        devices: 1,
        bridged: 0,
        run: Run::Shell(REC),
        expected: "fail",
        rules: &["illegal-arc"],
        extras: &[],
        needs_precopy: false,
        on_request: false,
        dma_log: false,
    },
    Scenario {
        name: "record-attach-late",
        about: "record --pid attached to a process that already opened its device and set up \
                MSI (a VMM running before the tracer), bug=irq_in_stop: declared at once with \
                flags and state read through a duplicate of its fd, the interrupt in STOP \
                attributed to it by its PCI address",
        bug: "irq_in_stop",
        precopy: false,
        devices: 1,
        bridged: 0,
        run: Run::Shell("rec_attach 0000:00:02.0"),
        expected: "fail",
        rules: &["irq-after-quiesce"],
        extras: &[
            Extra::NamedByBdf(&["0000:00:02.0"]),
            Extra::RuleOnEach("irq-after-quiesce", &["0000:00:02.0"]),
        ],
        needs_precopy: false,
        on_request: false,
        dma_log: false,
    },
    Scenario {
        name: "record-attach-late-2dev",
        about: "as record-attach-late with two devices in one process, each behind a PCIe root \
                port: before 6.18 only VFIO_DEVICE_GET_PCI_HOT_RESET_INFO through a duplicate \
                tells which fd is which device; both named by their PCI address, both caught",
        bug: "irq_in_stop",
        precopy: false,
        devices: 1,
        bridged: 2,
        run: Run::Shell("rec_attach 0000:01:00.0 0000:02:00.0"),
        expected: "fail",
        rules: &["irq-after-quiesce"],
        extras: &[
            Extra::NamedByBdf(BRIDGED_TWO),
            Extra::RuleOnEach("irq-after-quiesce", BRIDGED_TWO),
        ],
        needs_precopy: false,
        on_request: false,
        dma_log: false,
    },
    Scenario {
        name: "record-attach-ambiguous",
        about: "record --pid attached to a process holding two identical devices on the root \
                bus (no slot or bus reset: VFIO_DEVICE_GET_PCI_HOT_RESET_INFO says ENODEV; one \
                group each; same config identity), bug=irq_in_stop: neither fd can be named, so \
                both keep placeholders with irq and iommu_fault unavailable and their \
                interrupts are not given to anyone: inconclusive, never a phantom device",
        bug: "irq_in_stop",
        precopy: false,
        devices: 2,
        bridged: 0,
        run: Run::Shell("rec_attach 0000:00:02.0 0000:00:03.0"),
        expected: "inconclusive",
        rules: &[],
        extras: &[Extra::Unresolved(&["0000:00:02.0", "0000:00:03.0"])],
        needs_precopy: false,
        on_request: false,
        dma_log: false,
    },
    Scenario {
        name: "record-mid-migration",
        about: "record --pid attached while the device is already in STOP_COPY: declared \
                STOP_COPY (read through a duplicate of its fd), the rest of the migration is \
                legal; the probe alone sees no DMA of a PCI device: inconclusive, dma",
        bug: "none",
        precopy: false,
        devices: 1,
        bridged: 0,
        run: Run::Shell("rec_attach --pause-at STOP_COPY 0000:00:02.0"),
        expected: "inconclusive",
        rules: &[],
        extras: &[
            Extra::NamedByBdf(&["0000:00:02.0"]),
            Extra::DeclaredState("0000:00:02.0", "STOP_COPY"),
        ],
        needs_precopy: false,
        on_request: false,
        dma_log: false,
    },
    Scenario {
        name: "no-workload",
        about: "correct driver, drive --workload none: nothing ever wrote to the witnessed pages, so \
                the witness saw nothing (the device's sources say so): inconclusive with the dma \
                blind spot, never a pass",
        bug: "none",
        precopy: false,
        devices: 1,
        bridged: 0,
        run: Run::Shell(
            "drive_rec migscope drive --device 0000:00:02.0 --plan stopcopy --workload none \
             --dwell-ms 250 -o trace.jsonl",
        ),
        expected: "inconclusive",
        rules: &[],
        extras: &[Extra::WitnessUnavailable],
        needs_precopy: false,
        on_request: false,
        dma_log: false,
    },
    Scenario {
        name: "late-dma",
        about: "bug=late_dma: drains correctly, then one DMA write lands in the witnessed page after \
                the P2P SET left the kernel and before userspace sees it return: the gap a witness \
                baselined after the SET cannot see; caught by the witness watching across the SET",
        bug: "late_dma",
        precopy: false,
        devices: 1,
        bridged: 0,
        run: drive("stopcopy"),
        expected: "fail",
        rules: &["dma-after-quiesce"],
        extras: &[Extra::WitnessCaught],
        needs_precopy: false,
        on_request: false,
        dma_log: false,
    },
    qemu(
        "qemu-irq-in-stop",
        "QEMU drives, bug=irq_in_stop, record --pid attached after QEMU opened the device: the \
         interrupt raised in STOP is caught on the device's BDF",
        "irq_in_stop",
        1,
        QEMU_LATE_SRC,
        FAIL_IRQ,
    ),
    qemu(
        "qemu-irq-in-stop-two-dev",
        "QEMU drives two devices, each behind a PCIe root port, bug=irq_in_stop, record --pid \
         attached late: both fds named through VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, both caught",
        "irq_in_stop",
        2,
        QEMU_LATE_SRC,
        FAIL_IRQ,
    )
    .behind_root_ports(),
    qemu(
        "qemu-stopcopy",
        "QEMU migrates one good device (STOP_COPY) to a file and loads it, record started first; \
         right after the irq_in_stop cases on the same device: nothing they left may reach it \
         (edu-mig quiets edu on open, close and reset)",
        "none",
        1,
        QEMU,
        RECORD_GOOD,
    ),
    qemu(
        "qemu-precopy",
        "QEMU migrates one good device with PRE_COPY (edu-mig precopy=1)",
        "none",
        1,
        QEMU,
        RECORD_GOOD,
    )
    .with_precopy(),
    qemu(
        "qemu-two-dev",
        "QEMU migrates two good devices (every device to RUNNING_P2P before any stops), record \
         started first",
        "none",
        2,
        QEMU,
        RECORD_GOOD,
    ),
    qemu(
        "qemu-two-dev-precopy",
        "QEMU migrates two good devices with PRE_COPY (PRE_COPY_P2P on every device first)",
        "none",
        2,
        QEMU,
        RECORD_GOOD,
    )
    .with_precopy(),
    qemu(
        "qemu-attach-late",
        "QEMU migrates two good devices, each behind a PCIe root port, record --pid attached \
         after each QEMU opened them: declared at once by BDF with their current state (two \
         identical devices on the root bus cannot be told apart by an attached recorder: see \
         record-attach-ambiguous)",
        "none",
        2,
        QEMU_LATE,
        RECORD_GOOD,
    )
    .behind_root_ports(),
    qemu(
        "qemu-no-steps",
        "QEMU drives, bug=no_steps: the destination's multi-arc SETs (RUNNING -> RESUMING, \
         RESUMING -> RUNNING_P2P) skip the kernel's steps",
        "no_steps",
        1,
        QEMU,
        ("fail", &["illegal-arc"]),
    ),
    qemu(
        "qemu-fail-p2p",
        "QEMU drives, bug=fail_p2p: the P2P arc fails, QEMU resets the device and the migration \
         fails; every failed SET and reset decoded, final state right",
        "fail_p2p",
        1,
        Qemu {
            dest: false,
            ..QEMU
        },
        ("fail", &["set-failed"]),
    )
    .with(&[Extra::ResetPath]),
    qemu(
        "qemu-dma-early-p2p",
        "QEMU drives, the L2 guest keeps edu DMA running, bug=early_p2p: the transfer in flight \
         at RUNNING_P2P completes after it and its interrupt is caught",
        "early_p2p",
        1,
        Qemu {
            dest: false,
            ..QEMU_DMA
        },
        FAIL_IRQ,
    )
    .with(&[Extra::L2Dma]),
    qemu(
        "qemu-dma-drain",
        "QEMU drives, the L2 guest keeps edu DMA running, good driver: the transfer in flight at \
         RUNNING_P2P is drained before the arc returns; the guest's DMA carries on at the \
         destination",
        "none",
        1,
        QEMU_DMA,
        RECORD_GOOD,
    )
    .with(&[Extra::DrainedAtQuiesce, Extra::L2Dma]),
    drive_bug(
        "fw-crash",
        "bug=fw_crash: the firmware dies after 2 SETs: every SET fails -EIO, ERROR until drive's reset",
        "fw_crash",
        "stopcopy",
        "fail",
        &["set-failed", "error-state"],
    ),
    drive_bug(
        "fw-crash-good",
        "bug=none on the fw-crash plan: the correct driver raises nothing",
        "none",
        "stopcopy",
        "pass",
        &[],
    )
    .with(&[Extra::Evidence]),
    drive_bug(
        "fail-stopcopy",
        "bug=fail_stopcopy: the STOP -> STOP_COPY arc fails -EIO, the device stays in STOP; drive returns it to RUNNING",
        "fail_stopcopy",
        "stopcopy",
        "fail",
        &["set-failed"],
    ),
    drive_bug(
        "fail-stopcopy-good",
        "bug=none on the fail-stopcopy plan: the correct driver raises nothing",
        "none",
        "stopcopy",
        "pass",
        &[],
    )
    .with(&[Extra::Evidence]),
    drive_bug(
        "late-flush",
        "bug=late_flush: one DMA write (a cache written back) after the STOP -> STOP_COPY arc left the kernel; caught by the witness",
        "late_flush",
        "stopcopy",
        "fail",
        &["dma-after-quiesce"],
    )
    .with(&[Extra::WitnessCaught]),
    drive_bug(
        "late-flush-good",
        "bug=none on the late-flush plan: the correct driver raises nothing",
        "none",
        "stopcopy",
        "pass",
        &[],
    )
    .with(&[Extra::Evidence]),
    drive_bug(
        "precopy-lie",
        "bug=precopy_lie: VFIO_MIG_GET_PRECOPY_INFO's initial_bytes does not fall as the initial data is read",
        "precopy_lie",
        "precopy",
        "fail",
        &["precopy-initial-bytes"],
    )
    .with(&[Extra::PrecopyInfo])
    .with_precopy(),
    drive_bug(
        "precopy-lie-good",
        "bug=none on the precopy-lie plan: the correct driver raises nothing",
        "none",
        "precopy",
        "pass",
        &[],
    )
    .with(&[Extra::Evidence, Extra::PrecopyInfo])
    .with_precopy(),
    drive_bug(
        "echo-flags",
        "bug=echo_flags: VFIO_MIG_GET_PRECOPY_INFO returns VFIO_PRECOPY_INFO_REINIT in flags without the PRECOPY_INFOv2 opt-in",
        "echo_flags",
        "precopy",
        "fail",
        &["precopy-flags"],
    )
    .with_precopy(),
    drive_bug(
        "echo-flags-good",
        "bug=none on the echo-flags plan: the correct driver raises nothing",
        "none",
        "precopy",
        "pass",
        &[],
    )
    .with(&[Extra::Evidence, Extra::PrecopyInfo])
    .with_precopy(),
    drive_bug(
        "size-lie",
        "bug=size_lie: VFIO_DEVICE_FEATURE_MIG_DATA_SIZE estimates half of what STOP_COPY then saves (MIG_DATA_SIZE is 6.4+)",
        "size_lie",
        "stopcopy",
        "fail",
        &["data-size-exceeded"],
    )
    .not_on_6_1(),
    drive_bug(
        "size-lie-good",
        "bug=none on the size-lie plan: the correct driver raises nothing",
        "none",
        "stopcopy",
        "pass",
        &[],
    )
    .with(&[Extra::Evidence])
    .not_on_6_1(),
    drive_bug(
        "accept-corrupt",
        "bug=accept_corrupt, drive --plan resume-fuzz: truncated, bit-flipped, oversized and \
         empty streams in RESUMING are taken and restored (hisi/qat before their resume_write \
         checks); caught from the trace's corrupt_load and set_done",
        "accept_corrupt",
        "resume-fuzz",
        "fail",
        &["resume-accepted-corrupt"],
    )
    .with(&[Extra::ResumeFuzzed]),
    drive_bug(
        "accept-corrupt-good",
        "correct driver, drive --plan resume-fuzz: every corrupted stream is refused (the write \
         or the SET out of RESUMING fails), the good one resumes and the device runs",
        "none",
        "resume-fuzz",
        "pass",
        &[],
    )
    .with(&[Extra::Evidence, Extra::ResumeFuzzed]),
    drive_bug(
        "swap-addr",
        "bug=swap_addr, drive --plan roundtrip: restore puts DMA src and dst in each other's \
         registers (hisi XQE address swap); the driver's own read-back still says verified, \
         BAR0 read by drive before and after says otherwise",
        "swap_addr",
        "roundtrip",
        "fail",
        &["resume-divergence"],
    )
    .with(&[Extra::RestoreVerified, Extra::RegsCompared]),
    drive_bug(
        "swap-addr-good",
        "correct driver, drive --plan roundtrip: BAR0 read after RESUMING equals BAR0 read when \
         the state was saved",
        "none",
        "roundtrip",
        "pass",
        &[],
    )
    .with(&[Extra::Evidence, Extra::RestoreVerified, Extra::RegsCompared]),
    // bugs-c: issue 14 part C (lost_reset, stale_fd, slow_arc, async_state).
    drive_bug(
        "stale-fd",
        "bug=stale_fd, drive --plan reset: a reset in STOP_COPY leaves the data_fd working \
         (pds \"clear the save/restore FDs on reset\"): drive's read of it after the reset \
         still moves the pre-reset stream",
        "stale_fd",
        "reset",
        "fail",
        &["stale-data-fd"],
    )
    .with(&[Extra::ResetReadBack]),
    drive_bug(
        "stale-fd-good",
        "correct driver, drive --plan reset: the reset invalidates the migration file, the read \
         of the old data_fd fails ENODEV",
        "none",
        "reset",
        "pass",
        &[],
    )
    .with(RESET_GOOD),
    drive_bug(
        "lost-reset",
        "bug=lost_reset, drive --plan reset: VFIO_DEVICE_RESET in STOP_COPY returns 0 but the \
         migration state stays STOP_COPY (hisi/mlx5 deferred reset lost): drive's GET after \
         the reset says so",
        "lost_reset",
        "reset",
        "fail",
        &["state-mismatch"],
    )
    .with(&[Extra::ResetReadBack]),
    drive_bug(
        "lost-reset-good",
        "correct driver, drive --plan reset: the GET after the reset says RUNNING",
        "none",
        "reset",
        "pass",
        &[],
    )
    .with(RESET_GOOD),
    drive_bug(
        "slow-arc",
        "bug=slow_arc: the RUNNING_P2P -> STOP arc stalls 5 s under state_mutex (a blocked \
         arc); check --max-set-ms 2000 fails it, and the trace cut while it is open is \
         unfinished",
        "slow_arc",
        "stopcopy",
        "fail",
        &["set-timeout"],
    )
    .with(&[Extra::CheckedWith(SLOW_ARC_CHECK), Extra::CutWhileOpen]),
    drive_bug(
        "slow-arc-good",
        "correct driver on the slow-arc plan with check --max-set-ms 2000: every SET returns \
         in time",
        "none",
        "stopcopy",
        "pass",
        &[],
    )
    .with(&[Extra::Evidence, Extra::CheckedWith(SLOW_ARC_CHECK)]),
    drive_bug(
        "async-state",
        "bug=async_state: the first DMA command written while quiesced drops the device to \
         RUNNING without a SET (libvfio-user #853); drive's GET while dwelling sees it",
        "async_state",
        "stopcopy",
        "fail",
        &["state-mismatch"],
    )
    .with(&[Extra::QuiescedGets]),
    drive_bug(
        "async-state-good",
        "correct driver on the async-state plan: every GET while dwelling says the state drive \
         set",
        "none",
        "stopcopy",
        "pass",
        &[],
    )
    .with(&[Extra::Evidence, Extra::QuiescedGets]),
    // ---- branch dirty: issue 14's dirty_miss row (device DMA logging, edu-mig dma_log=1) ----
    drive_bug(
        "dirty-miss",
        "bug=dirty_miss, edu-mig dma_log=1, drive --plan stopcopy: the device's DMA log drops \
         the last page of each transfer (pds dirty_sync, mlx5 report size, QEMU's 64-bit \
         window); drive's own REPORTs lack pages its witness saw written",
        "dirty_miss",
        "stopcopy",
        "fail",
        &["dirty-log-missed"],
    )
    .with_dma_log()
    .with(&[Extra::DirtyLogged]),
    drive_bug(
        "dirty-miss-good",
        "correct driver, edu-mig dma_log=1, drive --plan stopcopy: every page the witness saw \
         written is in a REPORT over that time",
        "none",
        "stopcopy",
        "pass",
        &[],
    )
    .with_dma_log()
    .with(&[Extra::Evidence, Extra::DirtyLogged]),
    // ---- branch dirty-vmm: issue 14's dirty_miss row, the VMM half (QEMU reads the log) ----
    qemu(
        "qemu-dirty-miss",
        "QEMU drives with device dirty tracking (edu-mig dma_log=1: QEMU's DMA_LOGGING_START and \
         REPORTs instead of type1's dirty pages), the L2 guest's DMA running while RAM is \
         migrated, bug=dirty_miss: the log drops the last page of each transfer; the probe \
         decodes every REPORT QEMU received",
        "dirty_miss",
        1,
        QEMU_DMA,
        RECORD_GOOD,
    )
    .with_dma_log()
    .with(&[Extra::VmmDirtyLogged, Extra::L2Dma]),
    qemu(
        "qemu-dirty-miss-good",
        "correct driver on the qemu-dirty-miss plan: QEMU's device dirty tracking, every REPORT \
         decoded by the probe",
        "none",
        1,
        QEMU_DMA,
        RECORD_GOOD,
    )
    .with_dma_log()
    .with(&[Extra::VmmDirtyLogged, Extra::L2Dma]),
    // ---- session (issue 13): the live timeline of a drive, read back from a real terminal ----
    Scenario {
        name: "drive-tui",
        about: "drive --tui on a good device in a tmux pane (tmux and its library closure in the \
                initramfs): captured mid-drive while the device is quiesced, the lane shows the \
                quiescent state and the verdict so far; captured after the plan, the final \
                verdict, check's",
        bug: "none",
        precopy: false,
        dma_log: false,
        devices: 1,
        bridged: 0,
        run: Run::Shell("drive_tui 0000:00:02.0"),
        expected: "pass",
        rules: &[],
        extras: &[Extra::TuiLive],
        needs_precopy: false,
        on_request: false,
    },
    Scenario {
        name: "drive-memory",
        about: "benchmark, on request: a 10-minute drive through STOP_COPY cycles with the edu \
                workload, its VmRSS/VmHWM every 10 s (MIGSCOPE_LAB_BASE=BIN: that build first, \
                4 minutes, for before/after)",
        bug: "none",
        precopy: false,
        dma_log: false,
        devices: 1,
        bridged: 0,
        run: Run::Memory {
            secs: 600,
            base_secs: 240,
        },
        expected: "pass",
        rules: &[],
        extras: &[],
        needs_precopy: false,
        on_request: true,
    },
];

/// What the reset plan shows on a correct driver: evidence, the GET after each reset, the old
/// data_fd refused.
const RESET_GOOD: &[Extra] = &[
    Extra::Evidence,
    Extra::ResetReadBack,
    Extra::StaleReadRefused,
];

/// slow-arc's limit: 14 times the longest SET measured on a correct driver in the lab (~140 ms,
/// a drain of edu's in-flight transfer under TCG), 2.5 times below edu-mig's `slow_arc_ms`.
const SLOW_ARC_CHECK: &[&str] = &["--max-set-ms", "2000"];

/// A `drive` case on one root-bus device with edu-mig `bug=` (issue 14's pairs: `NAME` with
/// the bug, `NAME-good` with `none` on the same plan).
const fn drive_bug(
    name: &'static str,
    about: &'static str,
    bug: &'static str,
    plan: &'static str,
    expected: &'static str,
    rules: &'static [&'static str],
) -> Scenario {
    Scenario {
        name,
        about,
        bug,
        precopy: false,
        devices: 1,
        bridged: 0,
        run: drive(plan),
        expected,
        rules,
        extras: &[],
        needs_precopy: false,
        on_request: false,
        dma_log: false,
    }
}

impl Scenario {
    /// Skipped on 6.1 without PRE_COPY (a feature 6.1 lacks, e.g. MIG_DATA_SIZE, 6.4+).
    const fn not_on_6_1(self) -> Scenario {
        Scenario {
            needs_precopy: true,
            ..self
        }
    }

    /// With edu-mig `precopy=1` (PRE_COPY: not on 6.1).
    const fn with_precopy(self) -> Scenario {
        Scenario {
            precopy: true,
            needs_precopy: true,
            ..self
        }
    }

    /// QEMU gets the devices behind root ports (`bridged_bdf`), which an attached recorder
    /// can tell apart by their reset scope, instead of the root-bus ones.
    const fn behind_root_ports(self) -> Scenario {
        Scenario {
            bridged: self.devices,
            ..self
        }
    }

    /// With edu-mig `dma_log=1`: device DMA logging (6.1 here; not where the kernel lacks the
    /// iova_bitmap helpers).
    const fn with_dma_log(self) -> Scenario {
        Scenario {
            dma_log: true,
            ..self
        }
    }

    /// With these extras.
    const fn with(self, extras: &'static [Extra]) -> Scenario {
        Scenario { extras, ..self }
    }

    /// The verifier options `check` runs with ([`Extra::CheckedWith`]).
    pub fn check_options(&self) -> Vec<&'static str> {
        self.extras
            .iter()
            .filter_map(|e| match e {
                Extra::CheckedWith(o) => Some(*o),
                _ => None,
            })
            .flatten()
            .copied()
            .collect()
    }

    /// The extras to check: the scenario's own and, for a QEMU case, `QEMU_EXTRAS`.
    pub fn all_extras(&self) -> impl Iterator<Item = Extra> + '_ {
        let implied = if self.qemu() { QEMU_EXTRAS } else { &[] };
        self.extras.iter().chain(implied).copied()
    }

    /// Runs `drive --tui` in tmux (the initramfs then carries tmux).
    pub fn tmux(&self) -> bool {
        self.extras.contains(&Extra::TuiLive)
    }

    /// Runs QEMU in the guest (the initramfs then carries it and the VM gets more memory).
    pub fn qemu(&self) -> bool {
        matches!(self.run, Run::Qemu(_))
    }

    /// The guest BDFs of the scenario's devices (a QEMU case's: the ones QEMU is given).
    pub fn bdfs(&self) -> Vec<String> {
        if self.qemu() && self.bridged > 0 {
            (0..self.bridged).map(bridged_bdf).collect()
        } else {
            (0..self.devices).map(bdf).collect()
        }
    }
}

pub fn find(name: &str) -> Option<&'static Scenario> {
    ALL.iter().find(|s| s.name == name)
}

/// The guest PCI address of edu device `i` (QEMU is told `addr=02.0`, `03.0`, ...).
pub fn bdf(i: usize) -> String {
    format!("0000:00:{:02x}.0", 2 + i)
}

/// The guest PCI address of bridged edu device `i`: behind root port `i` (QEMU
/// `pcie-root-port` at `00:1{i}.0`), whose secondary bus the firmware numbers `i + 1`.
pub fn bridged_bdf(i: usize) -> String {
    format!("0000:{:02x}:00.0", 1 + i)
}

/// The guest shell line for one scenario (see `lab_scenario` in lab/guest/init.sh).
pub fn guest_line(s: &Scenario) -> String {
    let mut cmd = String::new();
    match s.run {
        Run::Selftest => {
            let _ = write!(cmd, "edu-selftest {}", bdf(0));
        }
        Run::Shell(script) => {
            cmd.push_str(script);
        }
        Run::Memory { secs, base_secs } => {
            let _ = write!(cmd, "drive_rss {secs} {base_secs}");
        }
        Run::Qemu(q) => {
            cmd.push_str("qemu_case");
            for (on, flag) in [
                (q.late, " -late"),
                (q.dma, " -dma"),
                (q.inflight, " -inflight"),
                (!q.dest, " -src-only"),
            ] {
                if on {
                    cmd.push_str(flag);
                }
            }
            for b in s.bdfs() {
                let _ = write!(cmd, " {b}");
            }
        }
        Run::Drive { plan, order } => {
            if s.extras.contains(&Extra::Evidence) {
                cmd.push_str("drive_inflight ");
            }
            cmd.push_str("drive_rec migscope drive");
            for i in 0..s.devices {
                let _ = write!(cmd, " --device {}", bdf(i));
            }
            let _ = write!(cmd, " --plan {plan}");
            if let Some(o) = order {
                let _ = write!(cmd, " --order {o}");
            }
            // drive quiesces one dwell after the warm-up's first completion; edu runs each
            // transfer 100 ms after its command and drive's workload issues them back to back,
            // so the default 300 ms lands on a transfer boundary. 250 ms lands mid-transfer:
            // DMA really in flight at the first quiesce.
            cmd.push_str(" --workload edu --dwell-ms 250 -o trace.jsonl");
        }
    }
    format!(
        "lab_scenario {} {} {} {} -- {cmd}\n",
        s.name,
        s.bug,
        u8::from(s.precopy),
        u8::from(s.dma_log)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_expectations_sane() {
        for (i, s) in ALL.iter().enumerate() {
            assert!(
                ALL[i + 1..].iter().all(|o| o.name != s.name),
                "duplicate {}",
                s.name
            );
            assert!(
                ["pass", "fail", "inconclusive"].contains(&s.expected),
                "{}",
                s.name
            );
            assert_eq!(
                s.expected == "fail",
                !s.rules.is_empty(),
                "{}: fail iff rules",
                s.name
            );
        }
    }

    #[test]
    fn late_attached_qemu_cases_with_several_devices_use_root_ports() {
        // Identical devices on the root bus have no reset scope to tell them apart once QEMU
        // holds them (record-attach-ambiguous shows that inconclusive); a QEMU case that
        // expects them named must give QEMU the bridged ones.
        for s in ALL {
            if let Run::Qemu(q) = s.run
                && q.late
                && s.devices > 1
            {
                assert_eq!(s.bridged, s.devices, "{}", s.name);
                assert!(
                    s.bdfs().iter().all(|b| !b.starts_with("0000:00:")),
                    "{}",
                    s.name
                );
                assert!(guest_line(s).contains(&bridged_bdf(1)), "{}", s.name);
            }
        }
    }

    #[test]
    fn extras_name_devices_the_vm_has() {
        for s in ALL {
            let have: Vec<String> = (0..s.devices)
                .map(bdf)
                .chain((0..s.bridged).map(bridged_bdf))
                .collect();
            for e in s.extras {
                let devs: Vec<&str> = match e {
                    Extra::NamedByBdf(d) | Extra::RuleOnEach(_, d) | Extra::Unresolved(d) => {
                        d.to_vec()
                    }
                    Extra::DeclaredState(d, _) => vec![*d],
                    _ => Vec::new(),
                };
                for d in devs {
                    assert!(
                        have.iter().any(|h| h == d),
                        "{}: {d} not in {have:?}",
                        s.name
                    );
                    if let Run::Shell(cmd) = s.run {
                        assert!(cmd.contains(d), "{}: {d} not used by `{cmd}`", s.name);
                    }
                }
            }
        }
    }

    #[test]
    fn guest_lines_name_every_device_and_the_order() {
        let s = find("two-dev-naive-order").unwrap();
        assert_eq!(
            guest_line(s),
            "lab_scenario two-dev-naive-order none 0 0 -- drive_rec migscope drive --device 0000:00:02.0 \
             --device 0000:00:03.0 --plan stopcopy --order naive --workload edu --dwell-ms 250 -o \
             trace.jsonl\n"
        );
        assert!(guest_line(find("early-p2p").unwrap()).contains(" early_p2p 0 0 -- "));
    }

    #[test]
    fn drive_scenarios_that_judge_their_evidence_repeat_an_attempt_with_nothing_in_flight() {
        let judged = find("good-stopcopy").unwrap();
        assert!(judged.extras.contains(&Extra::Evidence));
        assert!(
            guest_line(judged).contains(" -- drive_inflight drive_rec migscope drive "),
            "{}",
            guest_line(judged)
        );
        let unjudged = find("early-p2p").unwrap();
        assert!(!unjudged.extras.contains(&Extra::Evidence));
        assert!(guest_line(unjudged).contains(" -- drive_rec migscope drive "));
    }

    #[test]
    fn qemu_lines_name_the_mode_and_every_device() {
        assert_eq!(
            guest_line(find("qemu-irq-in-stop-two-dev").unwrap()),
            "lab_scenario qemu-irq-in-stop-two-dev irq_in_stop 0 0 -- qemu_case -late -src-only \
             0000:01:00.0 \
             0000:02:00.0\n"
        );
        assert_eq!(
            guest_line(find("qemu-dma-drain").unwrap()),
            "lab_scenario qemu-dma-drain none 0 0 -- qemu_case -dma -inflight 0000:00:02.0\n"
        );
        assert!(guest_line(find("qemu-fail-p2p").unwrap()).ends_with(" -src-only 0000:00:02.0\n"));
        assert!(guest_line(find("qemu-precopy").unwrap()).contains(" none 1 0 -- qemu_case 0000"));
    }

    #[test]
    fn qemu_good_scenarios_are_never_pass() {
        for s in ALL.iter().filter(|s| s.qemu()) {
            // record has no DMA witness for a PCI device: a good device is inconclusive (dma).
            assert_ne!(s.expected, "pass", "{}", s.name);
            let extras: Vec<Extra> = s.all_extras().collect();
            assert!(extras.contains(&Extra::BdfNamed), "{}", s.name);
            assert!(extras.contains(&Extra::CleanOpen), "{}", s.name);
        }
    }
}
