//! Interrupts counted in the kernel while they cannot matter (`--irq-detail quiesce`).
//!
//! Each device has a phase, keyed by its PCI address ([`BdfKey`]): the one name both sides
//! carry through stable ABI only — the handler name `vfio-msix[N](BDF)` of
//! `irq:irq_handler_entry` (drivers/vfio/pci/vfio_pci_intrs.c names its handlers so), and the
//! device fd, whose BDF is the VFIO_GROUP_GET_DEVICE_FD argument (or is filled in by
//! userspace for fds it resolved itself: cdevs, fds held before attach, a controller's own).
//!
//! - A MIG_DEVICE_STATE SET entering on a device switches it to exact *at the syscall's
//!   entry*, before any arc of it can run, and flushes its open bins first (so every bin
//!   closes before the request's `set`); a SET on an fd of no known device makes every
//!   interrupt exact from then on ([`IRQ_BLIND`]).
//! - Its return (or a GET's) switches it back to bins only when it left the device in a
//!   DMA-allowed state (`MigState::dma_allowed`: RUNNING, PRE_COPY) and no other SET is open
//!   on it; a failed SET leaves it exact.
//! - A device with no phase is exact: the probe never bins what it cannot attribute.
//!
//! Bins are per device and irq number, [`IRQ_BIN_SLOTS`] per device, each at most
//! `IRQ_BIN_NS` wide; one is flushed (an [`IrqBin`] record) when the next hit falls past its
//! window, when another handler needs its slot, when its device leaves bin mode, or by
//! userspace when capture stops. A bin whose record cannot be reserved stays in its slot
//! (counted in `LOST`, flushed again next time): no interrupt is dropped from the counts.
//!
//! A bin's count is taken atomically: one irq's handlers never run on two CPUs at once
//! (`handle_edge_irq`/`handle_fasteoi_irq` in kernel/irq/chip.c skip an irq already
//! `IRQD_IRQ_INPROGRESS`), but a SET's flush on another CPU (or a second irq sharing the
//! slot) can meet the handler at the same bin. Counting is an atomic add and a flush takes
//! the count with an atomic exchange, writing a record only for a nonzero count it took, so
//! two flushers never write the same interrupts twice (seen in the lab's storm on 6.1 before:
//! one bin written twice, 7-11 µs apart, at the quiescing SET's entry) and an interrupt
//! counted during a flush stays in the bin for the next one. The window's ends are plain
//! reads: a bin raced so can carry an earlier `t0` than its count needs (a wider window,
//! never a narrower one).

use core::intrinsics::{AtomicOrdering::Relaxed, atomic_xadd, atomic_xchg};

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap},
};
use probe_common::{
    MigState,
    abi::{
        BDF_LEN, BdfKey, BinKey, EventHeader, EventKind, IRQ_BIN_SLOTS, IoctlRet, IrqBin, IrqPhase,
        NAME_LEN, PAYLOAD_LEN, PHASE_BIN, PHASE_EXACT, feature, ioctl, uapi,
    },
};

/// Width of a bin in ns, set by the loader; 0: every interrupt is exact (`--irq-detail all`).
#[unsafe(no_mangle)]
static IRQ_BIN_NS: u64 = 0;

/// (tgid, fd) of a device fd -> its device's key.
#[map(name = "DEV_BDF")]
static DEV_BDF: HashMap<u64, BdfKey> = HashMap::with_max_entries(4096, 0);

/// Device -> its interrupt phase.
#[map(name = "IRQ_PHASE")]
static IRQ_PHASE: HashMap<BdfKey, IrqPhase> = HashMap::with_max_entries(1024, 0);

/// (device, slot) -> its open bin (n 0: none).
#[map(name = "IRQ_BINS")]
static IRQ_BINS: HashMap<BinKey, IrqBin> = HashMap::with_max_entries(1024 * IRQ_BIN_SLOTS, 0);

/// Index 0: SETs seen on fds of no known device (nonzero: nothing is binned any more).
#[map(name = "IRQ_BLIND")]
static IRQ_BLIND: Array<u32> = Array::with_max_entries(1, 0);

/// irq numbers the tracepoint program saw (the vfio_msihandler hook skips them).
#[map(name = "IRQ_TP")]
static IRQ_TP: HashMap<i32, u32> = HashMap::with_max_entries(4096, 0);

#[inline(always)]
fn bin_ns() -> u64 {
    // SAFETY: a read of our own read-only global, patched before load.
    unsafe { core::ptr::read_volatile(&IRQ_BIN_NS) }
}

/// Whether the ioctl is a MIG_DEVICE_STATE SET (`Some(true)`) or GET (`Some(false)`), from
/// its copied argument struct.
#[inline(always)]
fn mig_state_op(cmd: u32, payload: &[u8; PAYLOAD_LEN], len: u32) -> Option<bool> {
    if cmd != ioctl::DEVICE_FEATURE || (len as usize) < uapi::MIG_STATE_DATA_FD + 4 {
        return None;
    }
    let flags = u32_at(payload, uapi::FEATURE_FLAGS);
    if flags & (feature::MASK | feature::PROBE) != feature::MIG_DEVICE_STATE {
        return None;
    }
    match flags & (feature::SET | feature::GET) {
        feature::SET => Some(true),
        feature::GET => Some(false),
        _ => None,
    }
}

#[inline(always)]
fn u32_at(p: &[u8; PAYLOAD_LEN], off: usize) -> u32 {
    u32::from_ne_bytes([p[off], p[off + 1], p[off + 2], p[off + 3]])
}

/// At a VFIO ioctl's entry: a MIG_DEVICE_STATE SET switches its device to exact (flushing its
/// bins) before the kernel runs any arc of it.
#[inline(always)]
pub fn on_ioctl_enter(key: u64, cmd: u32, payload: &[u8; PAYLOAD_LEN], len: u32) {
    if bin_ns() == 0 || mig_state_op(cmd, payload, len) != Some(true) {
        return;
    }
    // SAFETY: plain map lookup; the value is copied.
    let Some(dev) = (unsafe { DEV_BDF.get(key) }).copied() else {
        // A container's 0x3B75 (VFIO_IOMMU_DIRTY_PAGES) never carries MIG_DEVICE_STATE's
        // flags and argsz; anything else is a device fd of no known device.
        if let Some(b) = IRQ_BLIND.get_ptr_mut(0) {
            // SAFETY: the map's only slot; a racing increment loses nothing that matters
            // (any nonzero value blinds).
            unsafe { *b = (*b).saturating_add(1) };
        }
        return;
    };
    match IRQ_PHASE.get_ptr_mut(dev) {
        Some(p) => {
            // SAFETY: a value of the map, alive while the program runs.
            unsafe {
                (*p).mode = PHASE_EXACT;
                (*p).open_sets = (*p).open_sets.saturating_add(1);
            }
        }
        None => {
            let phase = IrqPhase {
                mode: PHASE_EXACT,
                open_sets: 1,
            };
            if IRQ_PHASE.insert(dev, phase, 0).is_err() {
                super::count_lost();
            }
        }
    }
    flush_device(&dev);
}

/// At a VFIO ioctl's return: learns device fds' keys, and bins a device again once a SET or
/// GET showed it DMA-allowed with no SET open.
#[inline(always)]
pub fn on_ioctl_exit(key: u64, rec: &IoctlRet) {
    if bin_ns() == 0 {
        return;
    }
    if rec.cmd == ioctl::GROUP_GET_DEVICE_FD {
        if rec.ret >= 0 && rec.payload_len > 1 {
            let mut dev = BdfKey::default();
            let mut i = 0;
            while i < BDF_LEN {
                dev.bdf[i] = rec.payload[i];
                i += 1;
            }
            let fd_key = probe_common::abi::fd_key(rec.hdr.pid, rec.ret as i32);
            let _ = DEV_BDF.insert(fd_key, dev, 0);
        }
        return;
    }
    let Some(set) = mig_state_op(rec.cmd, &rec.payload, rec.payload_len) else {
        return;
    };
    // SAFETY: plain map lookup; the value is copied.
    let Some(dev) = (unsafe { DEV_BDF.get(key) }).copied() else {
        return;
    };
    let state = MigState::from_u32(u32_at(&rec.payload, uapi::MIG_STATE_DEVICE_STATE));
    let may_dma = rec.ret == 0 && state.is_some_and(MigState::dma_allowed);
    match IRQ_PHASE.get_ptr_mut(dev) {
        Some(p) => {
            // SAFETY: a value of the map, alive while the program runs.
            unsafe {
                if set {
                    (*p).open_sets = (*p).open_sets.saturating_sub(1);
                }
                (*p).mode = if may_dma && (*p).open_sets == 0 {
                    PHASE_BIN
                } else {
                    PHASE_EXACT
                };
            }
        }
        None if may_dma && !set => {
            // A GET on a device no SET was seen for: it starts binning from here. (A SET's
            // return without an entry belongs to a SET already running at attach: its
            // device stays unknown, so exact.)
            let phase = IrqPhase {
                mode: PHASE_BIN,
                open_sets: 0,
            };
            let _ = IRQ_PHASE.insert(dev, phase, 1 /* BPF_NOEXIST */);
        }
        None => {}
    }
}

/// A tracked fd closed: a device fd's number may come back as anything.
#[inline(always)]
pub fn on_close(key: u64) {
    let _ = DEV_BDF.remove(key);
}

/// At `irq:irq_handler_entry` of a `vfio-` handler named `name`: true when the hit went into
/// a bin (no exact record to write).
#[inline(always)]
pub fn on_irq(irq: i32, name: &[u8; NAME_LEN], now: u64) -> bool {
    let width = bin_ns();
    if width == 0 {
        return false;
    }
    // SAFETY: plain map lookup; the value is copied.
    if unsafe { IRQ_TP.get(irq) }.is_none() {
        let _ = IRQ_TP.insert(irq, 1, 0);
    }
    let Some(dev) = BdfKey::of_handler(name) else {
        return false;
    };
    let key = BinKey {
        dev,
        slot: (irq as u32) % IRQ_BIN_SLOTS,
        _pad: 0,
    };
    let blind = IRQ_BLIND.get(0).copied().unwrap_or(0) != 0;
    // SAFETY: plain map lookup; the value is copied.
    let phase = unsafe { IRQ_PHASE.get(dev) }.copied();
    let binning = !blind && phase.is_some_and(|p| p.mode == PHASE_BIN && p.open_sets == 0);
    let Some(b) = IRQ_BINS.get_ptr_mut(key) else {
        if binning {
            let bin = IrqBin {
                hdr: EventHeader::default(),
                irq,
                _pad: 0,
                n: 1,
                t0: now,
                t1: now,
                name: *name,
            };
            if IRQ_BINS.insert(key, bin, 0).is_err() {
                // No room for a bin: this one is exact.
                return false;
            }
            return true;
        }
        return false;
    };
    // SAFETY: a value of the map, alive while the program runs; its writers are this
    // program and userspace's final drain (after detach).
    let bin = unsafe { &mut *b };
    if binning && bin.n > 0 && bin.irq == irq && now.saturating_sub(bin.t0) < width {
        add(bin, 1);
        bin.t1 = now;
        return true;
    }
    // The slot's bin ends here: its window is over, another handler needs the slot, or the
    // device is exact now (a bin counted on another CPU as the phase switched).
    if bin.n > 0 && !flush(bin) {
        return false;
    }
    if binning {
        bin.irq = irq;
        bin.t0 = now;
        bin.t1 = now;
        bin.name = *name;
        // Added, not stored: a flush on another CPU may have run since this one.
        add(bin, 1);
        return true;
    }
    false
}

/// Whether the `vfio_msihandler` hook should leave interrupt `irq` to the tracepoint.
#[inline(always)]
pub fn seen_by_tracepoint(irq: i32) -> bool {
    // SAFETY: plain map lookup.
    bin_ns() != 0 && unsafe { IRQ_TP.get(irq) }.is_some()
}

/// Flushes every open bin of `dev`.
#[inline(always)]
fn flush_device(dev: &BdfKey) {
    let mut slot = 0;
    while slot < IRQ_BIN_SLOTS {
        let key = BinKey {
            dev: *dev,
            slot,
            _pad: 0,
        };
        if let Some(b) = IRQ_BINS.get_ptr_mut(key) {
            // SAFETY: a value of the map, alive while the program runs.
            let bin = unsafe { &mut *b };
            if bin.n > 0 {
                flush(bin);
            }
        }
        slot += 1;
    }
}

/// Adds `k` to the bin's count, atomically (a flush on another CPU may be taking it).
#[inline(always)]
fn add(bin: &mut IrqBin, k: u64) {
    // SAFETY: `n` is an aligned u64 inside a map value that outlives the program run; every
    // access to it that can race (a handler's add, a flush's exchange) is atomic (BPF_ADD).
    unsafe { atomic_xadd::<u64, u64, { Relaxed }>(&raw mut bin.n, k) };
}

/// Writes `bin` as a record and empties it, taking its count atomically so that a second
/// flusher of the same bin writes nothing; false (the count put back, the failure counted
/// as lost) when the ring buffer is full.
#[inline(always)]
fn flush(bin: &mut IrqBin) -> bool {
    // SAFETY: as in `add` (BPF_XCHG, kernels 5.12+).
    let n = unsafe { atomic_xchg::<u64, { Relaxed }>(&raw mut bin.n, 0) };
    if n == 0 {
        return true;
    }
    let (hdr, _) = super::header(EventKind::IrqBin, core::mem::size_of::<IrqBin>());
    let rec = IrqBin { hdr, n, ..*bin };
    if !super::emit_ok(&rec) {
        add(bin, n);
        return false;
    }
    true
}
