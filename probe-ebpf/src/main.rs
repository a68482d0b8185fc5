//! migscope's eBPF programs. Thin entry points; each reads only stable ABI (tracepoint fields,
//! syscall arguments, uAPI structs, kernel function arguments by position) and writes
//! fixed-size records from `probe_common::abi` into one ring buffer. Decoding, attribution and
//! ordering happen in userspace (`migscope::capture`); the probe only keeps the per-thread
//! and per-fd state that must exist at the moment a syscall returns.
#![no_std]
#![no_main]
// The interrupt bins' count needs BPF_ADD and BPF_XCHG (irqbin.rs); core's atomic types
// offer no read-modify-write on the bpf target, the intrinsics lower to those instructions.
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "core::intrinsics::atomic_xadd/atomic_xchg for BPF_ADD/BPF_XCHG"
)]

mod irqbin;

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task_btf, bpf_ktime_get_ns,
        bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes, bpf_probe_read_user_buf,
        bpf_probe_read_user_str_bytes, bpf_task_pt_regs,
    },
    macros::{fentry, fexit, kprobe, kretprobe, map, tracepoint},
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext, TracePointContext},
};
use probe_common::abi::{
    DATA_READ, DATA_WRITE, DataXfer, ENOIOCTLCMD, ENOTTY, EventHeader, EventKind, FdClose, Fork,
    Inflight, IoctlCall, IoctlRet, IommuFault, IommuMap, IommuUnmap, Irq, MDEV_DMA_RW,
    MDEV_PIN_PAGES, MdevDma, MsiHandler, NAME_LEN, PATH_LEN, PAYLOAD_LEN, Step, StepArgs, StepLost,
    VFIO_IOCTL_FIRST, VFIO_IOCTL_LAST, VfioOpen, fd_key, fd_kind, feature, hook, ioctl, uapi,
    user_regs,
};

mod dirty;

/// 1 MiB of records by default; userspace may resize it before loading (`ring_bytes`).
#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Reservations that failed because the ring buffer was full, per CPU (index 0).
#[map(name = "LOST")]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

// Per-thread state is LRU: a thread killed inside a syscall never reaches the exit half, and
// its stale entry must not keep others out.

/// tid -> the VFIO ioctl it is inside.
#[map(name = "INFLIGHT")]
static INFLIGHT: LruHashMap<u32, Inflight> = LruHashMap::with_max_entries(8192, 0);

/// (tgid, fd) -> fd kind, for fds userspace must know about (opens, device fds, data fds).
/// Not LRU: losing an entry would silently lose a data fd. Userspace removes the entries of
/// processes that exit (an exit closes fds without the close syscall).
#[map(name = "VFIO_FDS")]
static VFIO_FDS: HashMap<u64, u32> = HashMap::with_max_entries(16384, 0);

/// tid -> pending open of a VFIO path (record filled at exit).
#[map(name = "OPENS")]
static OPENS: LruHashMap<u32, VfioOpen> = LruHashMap::with_max_entries(1024, 0);

/// tid -> (fd << 32 | dir) of a pending read/write on a migration data fd.
#[map(name = "RW")]
static RW: LruHashMap<u32, u64> = LruHashMap::with_max_entries(1024, 0);

/// tid -> arguments of a `vfio_mig_get_next_state` call (kprobe -> kretprobe).
#[map(name = "STEP_ARGS")]
static STEP_ARGS: LruHashMap<u32, StepArgs> = LruHashMap::with_max_entries(1024, 0);

/// tid -> FSM steps that thread made but the probe could not record, reported (as a
/// [`StepLost`] record) at the exit of the VFIO ioctl they happened in.
#[map(name = "STEP_MISSED")]
static STEP_MISSED: LruHashMap<u32, u32> = LruHashMap::with_max_entries(1024, 0);

// Tracepoint field offsets: probe_common::abi::tp, the one table userspace also checks
// against the running kernel's format files before attaching.
use probe_common::abi::tp::{
    IOMMU_FAULT_DEVICE_LOC, IOMMU_FAULT_DRIVER_LOC, IOMMU_FAULT_FLAGS, IOMMU_FAULT_IOVA,
    IOMMU_MAP_IOVA, IOMMU_MAP_PADDR, IOMMU_MAP_SIZE, IOMMU_UNMAP_IOVA, IOMMU_UNMAP_SIZE,
    IOMMU_UNMAP_UNMAPPED, IRQ_IRQ, IRQ_NAME_LOC, SYS_ARG0, SYS_ARG1, SYS_ARG2, SYS_EXIT_RET,
};

/// `IOMMU_WRITE` from include/linux/iommu.h (the `prot` bits of vfio_pin_pages).
const IOMMU_WRITE: u64 = 1 << 1;

// ---- syscalls: ioctl --------------------------------------------------------------------

#[tracepoint(category = "syscalls", name = "sys_enter_ioctl")]
pub fn sys_enter_ioctl(ctx: TracePointContext) -> u32 {
    try_sys_enter_ioctl(&ctx).unwrap_or(1)
}

fn try_sys_enter_ioctl(ctx: &TracePointContext) -> Result<u32, u32> {
    let cmd = tp_field::<u64>(ctx, SYS_ARG1) as u32;
    if !(VFIO_IOCTL_FIRST..=VFIO_IOCTL_LAST).contains(&cmd) {
        return Ok(0);
    }
    let fd = tp_read::<u64>(ctx, SYS_ARG0)? as i32;
    let arg = tp_read::<u64>(ctx, SYS_ARG2)?;
    ioctl_enter(fd, cmd, arg);
    Ok(0)
}

/// The entry half of a VFIO ioctl, from either hook path: the in-flight state and the
/// `IoctlCall` record.
#[inline(always)]
fn ioctl_enter(fd: i32, cmd: u32, arg: u64) {
    let (hdr, tid) = header(EventKind::IoctlCall, core::mem::size_of::<IoctlCall>());
    let inflight = Inflight {
        enter_ns: hdr.ts_ns,
        arg,
        fd,
        cmd,
    };
    // A full map only costs the pairing (the exit record is then missing); count it as lost.
    if INFLIGHT.insert(tid, inflight, 0).is_err() {
        count_lost();
    }
    let mut rec = IoctlCall {
        hdr,
        fd,
        cmd,
        arg,
        payload_len: 0,
        _pad: 0,
        payload: [0; PAYLOAD_LEN],
    };
    rec.payload_len = read_payload(cmd, arg, &mut rec.payload);
    // Before the request's own record: a quiescing SET closes its device's bins first.
    irqbin::on_ioctl_enter(fd_key(hdr.pid, fd), cmd, &rec.payload, rec.payload_len);
    emit(&rec);
}

#[tracepoint(category = "syscalls", name = "sys_exit_ioctl")]
pub fn sys_exit_ioctl(ctx: TracePointContext) -> u32 {
    try_sys_exit_ioctl(&ctx).unwrap_or(1)
}

fn try_sys_exit_ioctl(ctx: &TracePointContext) -> Result<u32, u32> {
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: the value is copied out before the entry is removed.
    let Some(inf) = (unsafe { INFLIGHT.get(tid) }).copied() else {
        return Ok(0);
    };
    let _ = INFLIGHT.remove(tid);
    let ret = tp_read::<i64>(ctx, SYS_EXIT_RET)?;
    ioctl_exit(tid, inf, ret);
    Ok(0)
}

/// The return half of a VFIO ioctl, from either hook path.
#[inline(always)]
fn ioctl_exit(tid: u32, inf: Inflight, ret: i64) {
    // Steps this ioctl made that were not recorded: reported first, so the loss is stamped
    // before the SET's return.
    let missed = take_missed_steps(tid, inf.enter_ns);
    if missed > 0 {
        let (hdr, _) = header(EventKind::StepLost, core::mem::size_of::<StepLost>());
        emit(&StepLost {
            hdr,
            fd: inf.fd,
            cmd: inf.cmd,
            n: missed,
            _pad: 0,
        });
    }
    let (hdr, _) = header(EventKind::IoctlRet, core::mem::size_of::<IoctlRet>());
    let mut rec = IoctlRet {
        hdr,
        fd: inf.fd,
        cmd: inf.cmd,
        ret,
        enter_ns: inf.enter_ns,
        payload_len: 0,
        _pad: 0,
        payload: [0; PAYLOAD_LEN],
    };
    rec.payload_len = read_payload(inf.cmd, inf.arg, &mut rec.payload);
    track_ioctl_fds(&rec);
    dirty::report_bitmap(&rec);
    irqbin::on_ioctl_exit(fd_key(rec.hdr.pid, rec.fd), &rec);
    emit(&rec);
}

/// Learns the fds an ioctl created: device fds (GROUP_GET_DEVICE_FD) and migration data fds
/// (a MIG_DEVICE_STATE SET that returned one), so close/read/write on them are seen.
#[inline(always)]
fn track_ioctl_fds(rec: &IoctlRet) {
    let tgid = rec.hdr.pid;
    if rec.cmd == ioctl::GROUP_GET_DEVICE_FD && rec.ret >= 0 {
        let _ = VFIO_FDS.insert(fd_key(tgid, rec.ret as i32), fd_kind::DEVICE, 0);
        return;
    }
    if rec.cmd != ioctl::DEVICE_FEATURE
        || rec.ret != 0
        || (rec.payload_len as usize) < uapi::MIG_STATE_DATA_FD + 4
    {
        return;
    }
    // SAFETY: plain map lookup; the value is copied.
    let kind = unsafe { VFIO_FDS.get(fd_key(tgid, rec.fd)) }.copied();
    if kind == Some(fd_kind::CONTAINER) {
        // 0x3B75 on a container is VFIO_IOMMU_DIRTY_PAGES.
        return;
    }
    let flags = payload_u32(rec, uapi::FEATURE_FLAGS);
    let want = feature::SET | feature::MIG_DEVICE_STATE;
    if flags & (feature::MASK | feature::SET | feature::PROBE) != want {
        return;
    }
    let data_fd = payload_u32(rec, uapi::MIG_STATE_DATA_FD) as i32;
    if data_fd >= 0 {
        let _ = VFIO_FDS.insert(fd_key(tgid, data_fd), fd_kind::DATA, 0);
    }
}

/// The u32 at byte `off` of an ioctl's copied argument struct (`off` a constant of
/// `abi::uapi`, inside the payload).
#[inline(always)]
fn payload_u32(rec: &IoctlRet, off: usize) -> u32 {
    u32::from_ne_bytes([
        rec.payload[off],
        rec.payload[off + 1],
        rec.payload[off + 2],
        rec.payload[off + 3],
    ])
}

/// Copies the ioctl's argument struct (or, for GROUP_GET_DEVICE_FD, the device name) from
/// user memory; returns how many bytes are valid. Shorter reads are tried when the full
/// length crosses into an unmapped page.
#[inline(always)]
fn read_payload(cmd: u32, arg: u64, out: &mut [u8; PAYLOAD_LEN]) -> u32 {
    if arg == 0 || cmd == ioctl::DEVICE_RESET {
        return 0;
    }
    let src = arg as *const u8;
    if cmd == ioctl::GROUP_GET_DEVICE_FD {
        // SAFETY: the helper validates the user address and faults are returned as errors.
        return match unsafe { bpf_probe_read_user_str_bytes(src, out) } {
            Ok(s) => s.len() as u32,
            Err(_) => 0,
        };
    }
    // SAFETY: the helper validates the user address (a fault is an error) and writes at most
    // the slice it is given.
    if unsafe { bpf_probe_read_user_buf(src, &mut out[..48]) }.is_ok() {
        return 48;
    }
    // SAFETY: as above.
    if unsafe { bpf_probe_read_user_buf(src, &mut out[..24]) }.is_ok() {
        return 24;
    }
    // SAFETY: as above.
    if unsafe { bpf_probe_read_user_buf(src, &mut out[..16]) }.is_ok() {
        return 16;
    }
    // SAFETY: as above.
    if unsafe { bpf_probe_read_user_buf(src, &mut out[..8]) }.is_ok() {
        return 8;
    }
    0
}

// ---- syscalls: opens and closes of VFIO fds ---------------------------------------------

#[tracepoint(category = "syscalls", name = "sys_enter_openat")]
pub fn sys_enter_openat(ctx: TracePointContext) -> u32 {
    try_sys_enter_openat(&ctx).unwrap_or(1)
}

/// `open(2)` (x86_64; musl's `open()` uses it): same as openat with the path in arg 0.
#[tracepoint(category = "syscalls", name = "sys_enter_open")]
pub fn sys_enter_open(ctx: TracePointContext) -> u32 {
    match tp_read::<u64>(&ctx, SYS_ARG0) {
        Ok(p) => open_enter(p as *const u8).unwrap_or(1),
        Err(e) => e,
    }
}

#[tracepoint(category = "syscalls", name = "sys_exit_open")]
pub fn sys_exit_open(ctx: TracePointContext) -> u32 {
    try_sys_exit_openat(&ctx).unwrap_or(1)
}

fn try_sys_enter_openat(ctx: &TracePointContext) -> Result<u32, u32> {
    open_enter(tp_read::<u64>(ctx, SYS_ARG1)? as *const u8)
}

fn open_enter(filename: *const u8) -> Result<u32, u32> {
    let mut rec = VfioOpen {
        hdr: EventHeader::default(),
        fd: -1,
        fd_kind: 0,
        path: [0; PATH_LEN],
    };
    // SAFETY: the helper validates the user address; a fault is an error.
    if unsafe { bpf_probe_read_user_str_bytes(filename, &mut rec.path) }.is_err() {
        return Ok(0);
    }
    let p = &rec.path;
    let kind = if p[..10] == *b"/dev/vfio/" {
        if p[10..15] == *b"vfio\0" {
            fd_kind::CONTAINER
        } else if p[10..18] == *b"devices/" {
            fd_kind::CDEV
        } else {
            fd_kind::GROUP
        }
    } else if p[..11] == *b"/dev/iommu\0" {
        fd_kind::IOMMUFD
    } else {
        return Ok(0);
    };
    rec.fd_kind = kind;
    let tid = bpf_get_current_pid_tgid() as u32;
    let _ = OPENS.insert(tid, rec, 0);
    Ok(0)
}

#[tracepoint(category = "syscalls", name = "sys_exit_openat")]
pub fn sys_exit_openat(ctx: TracePointContext) -> u32 {
    try_sys_exit_openat(&ctx).unwrap_or(1)
}

fn try_sys_exit_openat(ctx: &TracePointContext) -> Result<u32, u32> {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(ptr) = OPENS.get_ptr_mut(tid) else {
        return Ok(0);
    };
    let ret = tp_read::<i64>(ctx, SYS_EXIT_RET)?;
    if ret >= 0 {
        let (hdr, _) = header(EventKind::VfioOpen, core::mem::size_of::<VfioOpen>());
        // SAFETY: ptr points at this thread's map value, alive until the remove below.
        let rec = unsafe { &mut *ptr };
        rec.hdr = hdr;
        rec.fd = ret as i32;
        let _ = VFIO_FDS.insert(fd_key(hdr.pid, rec.fd), rec.fd_kind, 0);
        emit(rec);
    }
    let _ = OPENS.remove(tid);
    Ok(0)
}

#[tracepoint(category = "syscalls", name = "sys_enter_close")]
pub fn sys_enter_close(ctx: TracePointContext) -> u32 {
    try_sys_enter_close(&ctx).unwrap_or(1)
}

fn try_sys_enter_close(ctx: &TracePointContext) -> Result<u32, u32> {
    let fd = tp_read::<u64>(ctx, SYS_ARG0)? as i32;
    fd_closed(fd);
    Ok(0)
}

/// A `close(2)` of `fd` by the current process: reported if the probe knows the fd.
#[inline(always)]
fn fd_closed(fd: i32) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let key = fd_key(tgid, fd);
    // SAFETY: plain map lookup; the value is copied.
    let Some(kind) = (unsafe { VFIO_FDS.get(key) }).copied() else {
        return;
    };
    let _ = VFIO_FDS.remove(key);
    irqbin::on_close(key);
    let (hdr, _) = header(EventKind::FdClose, core::mem::size_of::<FdClose>());
    emit(&FdClose {
        hdr,
        fd,
        fd_kind: kind,
    });
}

// ---- syscalls: read/write on migration data fds ------------------------------------------

#[tracepoint(category = "syscalls", name = "sys_enter_read")]
pub fn sys_enter_read(ctx: TracePointContext) -> u32 {
    rw_enter(&ctx, DATA_READ).unwrap_or(1)
}

#[tracepoint(category = "syscalls", name = "sys_enter_write")]
pub fn sys_enter_write(ctx: TracePointContext) -> u32 {
    rw_enter(&ctx, DATA_WRITE).unwrap_or(1)
}

#[tracepoint(category = "syscalls", name = "sys_exit_read")]
pub fn sys_exit_read(ctx: TracePointContext) -> u32 {
    rw_exit(&ctx).unwrap_or(1)
}

#[tracepoint(category = "syscalls", name = "sys_exit_write")]
pub fn sys_exit_write(ctx: TracePointContext) -> u32 {
    rw_exit(&ctx).unwrap_or(1)
}

#[inline(always)]
fn rw_enter(ctx: &TracePointContext, dir: u32) -> Result<u32, u32> {
    let fd = tp_field::<u64>(ctx, SYS_ARG0) as i32;
    let pid_tgid = bpf_get_current_pid_tgid();
    let key = fd_key((pid_tgid >> 32) as u32, fd);
    // SAFETY: plain map lookup; the value is copied.
    if (unsafe { VFIO_FDS.get(key) }).copied() != Some(fd_kind::DATA) {
        return Ok(0);
    }
    let pending = ((fd as u32 as u64) << 32) | dir as u64;
    let _ = RW.insert(pid_tgid as u32, pending, 0);
    Ok(0)
}

#[inline(always)]
fn rw_exit(ctx: &TracePointContext) -> Result<u32, u32> {
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: plain map lookup; the value is copied.
    let Some(pending) = (unsafe { RW.get(tid) }).copied() else {
        return Ok(0);
    };
    let _ = RW.remove(tid);
    let ret = tp_read::<i64>(ctx, SYS_EXIT_RET)?;
    emit_xfer(pending, ret);
    Ok(0)
}

/// The `DataXfer` record of a finished read/write (`pending` as saved in `RW`).
#[inline(always)]
fn emit_xfer(pending: u64, ret: i64) {
    let (hdr, _) = header(EventKind::DataXfer, core::mem::size_of::<DataXfer>());
    emit(&DataXfer {
        hdr,
        fd: (pending >> 32) as i32,
        dir: pending as u32,
        ret,
    });
}

// ---- direct hooks: the VFIO file operations (`record --hooks direct`) -----------------------
//
// Kprobes on the functions VFIO and the variant drivers run for an fd, so no syscall
// tracepoint needs to be attached (those switch every task of the host onto the slow syscall
// path). The functions get a `struct file *`; the fd number is the syscall's first argument,
// read from the task's user registers together with the syscall number.

/// The current syscall's number and first argument, or `None` when the registers cannot be
/// read (a kernel thread).
#[inline(always)]
fn user_syscall() -> Option<(u64, u64)> {
    // SAFETY: bpf_get_current_task_btf has no preconditions; bpf_task_pt_regs takes the task
    // it returned and gives that task's user registers (a kernel pointer, read below through
    // the probe-read helper, which returns an error instead of faulting).
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as u64;
    if regs == 0 {
        return None;
    }
    // SAFETY: as above.
    let nr = unsafe { bpf_probe_read_kernel((regs + user_regs::SYSCALL_NR as u64) as *const u64) }
        .ok()?;
    // SAFETY: as above.
    let arg0 =
        unsafe { bpf_probe_read_kernel((regs + user_regs::ARG0 as u64) as *const u64) }.ok()?;
    Some((nr, arg0))
}

#[kprobe]
pub fn kprobe_ioctl_device(ctx: ProbeContext) -> u32 {
    direct_ioctl_enter(&ctx, fd_kind::DEVICE);
    0
}

#[kprobe]
pub fn kprobe_ioctl_group(ctx: ProbeContext) -> u32 {
    direct_ioctl_enter(&ctx, fd_kind::GROUP);
    0
}

#[kprobe]
pub fn kprobe_ioctl_container(ctx: ProbeContext) -> u32 {
    direct_ioctl_enter(&ctx, fd_kind::CONTAINER);
    0
}

#[kprobe]
pub fn kprobe_ioctl_iommufd(ctx: ProbeContext) -> u32 {
    direct_ioctl_enter(&ctx, fd_kind::IOMMUFD);
    0
}

/// The `unlocked_ioctl` of a migration data file (VFIO_MIG_GET_PRECOPY_INFO).
#[kprobe]
pub fn kprobe_ioctl_data(ctx: ProbeContext) -> u32 {
    direct_ioctl_enter(&ctx, fd_kind::DATA);
    0
}

/// `long (*unlocked_ioctl)(struct file *, unsigned int cmd, unsigned long arg)`.
#[inline(always)]
fn direct_ioctl_enter(ctx: &ProbeContext, kind: u32) {
    let cmd = ctx.arg::<u64>(1).unwrap_or(0) as u32;
    if !(VFIO_IOCTL_FIRST..=VFIO_IOCTL_LAST).contains(&cmd) {
        return;
    }
    let arg: u64 = ctx.arg(2).unwrap_or(0);
    let Some((nr, fd)) = user_syscall() else {
        return;
    };
    if nr != user_regs::NR_IOCTL {
        // Called for no ioctl(2) of this task (the fd number is unknown): counted, never silent.
        count_lost();
        return;
    }
    let fd = fd as i32;
    let tid = bpf_get_current_pid_tgid() as u32;
    // A VFIO ioctl does not run inside another on one thread: an entry still here means the
    // earlier call's return half never ran (every kretprobe instance was in use).
    // SAFETY: plain map lookup.
    if unsafe { INFLIGHT.get(tid) }.is_some() {
        count_lost();
    }
    // The hooked function tells the fd's kind (a cdev and a group's device fd share one).
    let key = fd_key((bpf_get_current_pid_tgid() >> 32) as u32, fd);
    // SAFETY: plain map lookup; the value is copied.
    let known = unsafe { VFIO_FDS.get(key) }.copied();
    let same = match known {
        Some(k) if k == fd_kind::CDEV || k == fd_kind::DEVICE => kind == fd_kind::DEVICE,
        Some(k) => k == kind,
        None => false,
    };
    if !same {
        let _ = VFIO_FDS.insert(key, kind, 0);
    }
    ioctl_enter(fd, cmd, arg);
}

#[kretprobe]
pub fn kretprobe_ioctl(ctx: RetProbeContext) -> u32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: the value is copied out before the entry is removed.
    let Some(inf) = (unsafe { INFLIGHT.get(tid) }).copied() else {
        return 0;
    };
    let _ = INFLIGHT.remove(tid);
    let ret: i64 = ctx.ret();
    // What the syscall returns: vfs_ioctl turns a file operation's -ENOIOCTLCMD into -ENOTTY.
    let ret = if ret == -ENOIOCTLCMD { -ENOTTY } else { ret };
    ioctl_exit(tid, inf, ret);
    0
}

/// The `read` of a migration data file's `file_operations`.
#[kprobe]
pub fn kprobe_data_read(_ctx: ProbeContext) -> u32 {
    direct_rw_enter(DATA_READ);
    0
}

/// The `write` of a migration data file's `file_operations`.
#[kprobe]
pub fn kprobe_data_write(_ctx: ProbeContext) -> u32 {
    direct_rw_enter(DATA_WRITE);
    0
}

#[inline(always)]
fn direct_rw_enter(dir: u32) {
    let Some((nr, fd)) = user_syscall() else {
        return;
    };
    let fd_first = matches!(
        nr,
        user_regs::NR_READ
            | user_regs::NR_WRITE
            | user_regs::NR_PREAD64
            | user_regs::NR_PWRITE64
            | user_regs::NR_READV
            | user_regs::NR_WRITEV
            | user_regs::NR_PREADV
            | user_regs::NR_PWRITEV
            | user_regs::NR_PREADV2
            | user_regs::NR_PWRITEV2
    );
    if !fd_first {
        // A transfer through another syscall (splice, sendfile): its fd is unknown.
        count_lost();
        return;
    }
    let pending = ((fd as u32 as u64) << 32) | dir as u64;
    let _ = RW.insert(bpf_get_current_pid_tgid() as u32, pending, 0);
}

#[kretprobe]
pub fn kretprobe_data_rw(ctx: RetProbeContext) -> u32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: plain map lookup; the value is copied.
    let Some(pending) = (unsafe { RW.get(tid) }).copied() else {
        return 0;
    };
    let _ = RW.remove(tid);
    emit_xfer(pending, ctx.ret());
    0
}

/// The `release` of a VFIO file (device, group, container, iommufd, migration data): run
/// when its last reference goes, for a `close(2)` at that syscall's return (task work).
#[kprobe]
pub fn kprobe_release(_ctx: ProbeContext) -> u32 {
    if let Some((user_regs::NR_CLOSE, fd)) = user_syscall() {
        fd_closed(fd as i32);
    }
    0
}

// ---- interrupts ----------------------------------------------------------------------------

#[tracepoint(category = "irq", name = "irq_handler_entry")]
pub fn irq_handler_entry(ctx: TracePointContext) -> u32 {
    try_irq_handler_entry(&ctx).unwrap_or(1)
}

fn try_irq_handler_entry(ctx: &TracePointContext) -> Result<u32, u32> {
    let loc = tp_read::<u32>(ctx, IRQ_NAME_LOC)?;
    let name = data_loc(ctx, loc);
    // Cheap prefix test first: this runs for every interrupt on the machine.
    // SAFETY: kernel read through the helper; a fault is an error.
    let head: [u8; 8] =
        unsafe { bpf_probe_read_kernel(name as *const [u8; 8]) }.map_err(|_| 1u32)?;
    if head[..5] != *b"vfio-" {
        return Ok(0);
    }
    let (hdr, _) = header(EventKind::Irq, core::mem::size_of::<Irq>());
    let mut rec = Irq {
        hdr,
        irq: tp_read::<i32>(ctx, IRQ_IRQ)?,
        _pad: 0,
        name: [0; NAME_LEN],
    };
    // SAFETY: as above.
    let _ = unsafe { bpf_probe_read_kernel_str_bytes(name, &mut rec.name) };
    if irqbin::on_irq(rec.irq, &rec.name, hdr.ts_ns) {
        return Ok(0);
    }
    emit(&rec);
    Ok(0)
}

// ---- processes ----------------------------------------------------------------------------

/// Offset of `child_pid` in `sched_process_fork` records, set by the loader from the running
/// kernel's format file (the layout changed when the comm fields became `__data_loc`).
#[unsafe(no_mangle)]
static FORK_CHILD_PID_OFFSET: u32 = 0;

#[tracepoint(category = "sched", name = "sched_process_fork")]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    try_sched_process_fork(&ctx).unwrap_or(1)
}

fn try_sched_process_fork(ctx: &TracePointContext) -> Result<u32, u32> {
    // SAFETY: a read of our own read-only global, patched before load.
    let off = unsafe { core::ptr::read_volatile(&FORK_CHILD_PID_OFFSET) };
    if off == 0 {
        return Ok(0);
    }
    let child: i32 = tp_read(ctx, off as usize)?;
    let (hdr, _) = header(EventKind::Fork, core::mem::size_of::<Fork>());
    emit(&Fork {
        hdr,
        child_pid: child as u32,
        _pad: 0,
    });
    Ok(0)
}

// ---- IOMMU ---------------------------------------------------------------------------------

#[tracepoint(category = "iommu", name = "map")]
pub fn iommu_map(ctx: TracePointContext) -> u32 {
    try_iommu_map(&ctx).unwrap_or(1)
}

fn try_iommu_map(ctx: &TracePointContext) -> Result<u32, u32> {
    // Only maps made inside a VFIO/iommufd ioctl: the kernel DMA API of every other driver
    // goes through the same tracepoint.
    let Some(inf) = current_inflight() else {
        return Ok(0);
    };
    let (hdr, _) = header(EventKind::IommuMap, core::mem::size_of::<IommuMap>());
    emit(&IommuMap {
        hdr,
        iova: tp_read(ctx, IOMMU_MAP_IOVA)?,
        paddr: tp_read(ctx, IOMMU_MAP_PADDR)?,
        size: tp_read(ctx, IOMMU_MAP_SIZE)?,
        fd: inf.fd,
        cmd: inf.cmd,
    });
    Ok(0)
}

#[tracepoint(category = "iommu", name = "unmap")]
pub fn iommu_unmap(ctx: TracePointContext) -> u32 {
    try_iommu_unmap(&ctx).unwrap_or(1)
}

fn try_iommu_unmap(ctx: &TracePointContext) -> Result<u32, u32> {
    let Some(inf) = current_inflight() else {
        return Ok(0);
    };
    let (hdr, _) = header(EventKind::IommuUnmap, core::mem::size_of::<IommuUnmap>());
    emit(&IommuUnmap {
        hdr,
        iova: tp_read(ctx, IOMMU_UNMAP_IOVA)?,
        size: tp_read(ctx, IOMMU_UNMAP_SIZE)?,
        unmapped: tp_read(ctx, IOMMU_UNMAP_UNMAPPED)?,
        fd: inf.fd,
        cmd: inf.cmd,
    });
    Ok(0)
}

#[tracepoint(category = "iommu", name = "io_page_fault")]
pub fn iommu_io_page_fault(ctx: TracePointContext) -> u32 {
    try_iommu_io_page_fault(&ctx).unwrap_or(1)
}

fn try_iommu_io_page_fault(ctx: &TracePointContext) -> Result<u32, u32> {
    let (hdr, _) = header(EventKind::IommuFault, core::mem::size_of::<IommuFault>());
    let mut rec = IommuFault {
        hdr,
        iova: tp_read(ctx, IOMMU_FAULT_IOVA)?,
        flags: tp_read(ctx, IOMMU_FAULT_FLAGS)?,
        _pad: 0,
        device: [0; NAME_LEN],
        driver: [0; NAME_LEN],
    };
    let dev = data_loc(ctx, tp_read::<u32>(ctx, IOMMU_FAULT_DEVICE_LOC)?);
    let drv = data_loc(ctx, tp_read::<u32>(ctx, IOMMU_FAULT_DRIVER_LOC)?);
    // SAFETY: a kernel read through the helper (a fault is an error), bounded by the buffer.
    let _ = unsafe { bpf_probe_read_kernel_str_bytes(dev, &mut rec.device) };
    // SAFETY: as above.
    let _ = unsafe { bpf_probe_read_kernel_str_bytes(drv, &mut rec.driver) };
    emit(&rec);
    Ok(0)
}

// ---- vfio module functions: FSM steps ------------------------------------------------------

/// `int vfio_mig_get_next_state(struct vfio_device *, enum cur, enum new, enum *next)`
/// (drivers/vfio/vfio_main.c). Reading `*next` from fexit is refused by 6.1's verifier
/// ("arg3 type ENUM is not a struct"): the kprobe/kretprobe pair below is the fallback.
#[fexit(function = "vfio_mig_get_next_state")]
pub fn fexit_mig_get_next_state(ctx: FExitContext) -> u32 {
    let vdev: u64 = ctx.arg(0);
    let cur: u32 = ctx.arg(1);
    let new: u32 = ctx.arg(2);
    let next_ptr: u64 = ctx.arg(3);
    let ret: i64 = ctx.arg(4);
    emit_step(vdev, cur, new, next_ptr, ret as i32, hook::FEXIT);
    0
}

#[kprobe]
pub fn kprobe_mig_get_next_state(ctx: ProbeContext) -> u32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    let ioctl_ns = current_inflight().map_or(0, |i| i.enter_ns);
    let args = StepArgs {
        vdev: ctx.arg(0).unwrap_or(0),
        next_ptr: ctx.arg(3).unwrap_or(0),
        cur: ctx.arg::<u64>(1).unwrap_or(u64::MAX) as u32,
        new: ctx.arg::<u64>(2).unwrap_or(u64::MAX) as u32,
        ioctl_ns,
    };
    // The function does not recurse: arguments still saved from an earlier call of the same
    // request mean that call's return half never ran (kretprobe maxactive exhausted).
    // SAFETY: plain map lookup; the value is copied.
    if let Some(old) = unsafe { STEP_ARGS.get(tid) }.copied()
        && ioctl_ns != 0
        && old.ioctl_ns == ioctl_ns
    {
        step_missed(tid);
    }
    if STEP_ARGS.insert(tid, args, 0).is_err() {
        // The return half will find nothing and count the step.
        count_lost();
    }
    0
}

#[kretprobe]
pub fn kretprobe_mig_get_next_state(ctx: RetProbeContext) -> u32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: plain map lookup; the value is copied.
    let Some(args) = (unsafe { STEP_ARGS.get(tid) }).copied() else {
        // The entry half was missed (an LRU eviction, or a call already running when the
        // probe attached): the step is gone.
        if current_inflight().is_some() {
            step_missed(tid);
        }
        return 0;
    };
    let _ = STEP_ARGS.remove(tid);
    let ret: i64 = ctx.ret();
    emit_step(
        args.vdev,
        args.cur,
        args.new,
        args.next_ptr,
        ret as i32,
        hook::KRETPROBE,
    );
    0
}

#[inline(always)]
fn emit_step(vdev: u64, cur: u32, new: u32, next_ptr: u64, ret: i32, hook: u32) {
    // SAFETY: kernel read through the helper; a fault is an error and leaves has_next 0.
    let next = unsafe { bpf_probe_read_kernel(next_ptr as *const u32) };
    if next.is_err() && ret == 0 && current_inflight().is_some() {
        // The arc was taken but which one is unknown: a lost step (the record still teaches
        // userspace which device this vfio_device pointer is).
        step_missed(bpf_get_current_pid_tgid() as u32);
    }
    let (hdr, _) = header(EventKind::Step, core::mem::size_of::<Step>());
    emit(&Step {
        hdr,
        vdev,
        cur,
        new,
        next: next.unwrap_or(0),
        ret,
        hook,
        has_next: next.is_ok() as u32,
    });
}

/// Counts one FSM step the current thread made inside a recorded VFIO ioctl but the probe
/// could not record. Callers count only steps inside a recorded ioctl: those of a SET already
/// running when the probe attached belong to no request in the trace.
#[inline(always)]
fn step_missed(tid: u32) {
    match STEP_MISSED.get_ptr_mut(tid) {
        // SAFETY: this thread's own map value; only this thread updates it.
        Some(n) => unsafe { *n = (*n).saturating_add(1) },
        None => {
            if STEP_MISSED.insert(tid, 1, 0).is_err() {
                count_lost();
            }
        }
    }
}

/// Takes the steps the ioctl that entered at `enter_ns` lost: those counted, and a call whose
/// arguments were saved but whose return never ran (the kretprobe's maxactive instances were
/// all in use).
#[inline(always)]
fn take_missed_steps(tid: u32, enter_ns: u64) -> u32 {
    // SAFETY: a plain map lookup; the value is copied before anything can remove it.
    let mut n = unsafe { STEP_MISSED.get(tid) }.copied().unwrap_or(0);
    if n > 0 {
        let _ = STEP_MISSED.remove(tid);
    }
    // SAFETY: as above.
    if let Some(args) = unsafe { STEP_ARGS.get(tid) }.copied() {
        let _ = STEP_ARGS.remove(tid);
        if args.ioctl_ns == enter_ns {
            n = n.saturating_add(1);
        }
    }
    n
}

// ---- vfio module functions: interrupts and mediated-device DMA ----------------------------

/// `irqreturn_t vfio_msihandler(int irq, void *arg)` (drivers/vfio/pci/vfio_pci_intrs.c).
#[fentry(function = "vfio_msihandler")]
pub fn fentry_msihandler(ctx: FEntryContext) -> u32 {
    let irq: u64 = ctx.arg(0);
    emit_msi(irq as i32, hook::FENTRY);
    0
}

#[kprobe]
pub fn kprobe_msihandler(ctx: ProbeContext) -> u32 {
    let irq: u64 = ctx.arg(0).unwrap_or(u64::MAX);
    emit_msi(irq as i32, hook::KPROBE);
    0
}

#[inline(always)]
fn emit_msi(irq: i32, hook: u32) {
    // The tracepoint already has this interrupt (exact or binned): the ring need not carry it
    // twice (userspace keeps the tracepoint's when it is attached).
    if irqbin::seen_by_tracepoint(irq) {
        return;
    }
    let (hdr, _) = header(EventKind::MsiHandler, core::mem::size_of::<MsiHandler>());
    emit(&MsiHandler { hdr, irq, hook });
}

/// `int vfio_dma_rw(struct vfio_device *, dma_addr_t iova, void *data, size_t len, bool write)`
/// (drivers/vfio/vfio_main.c).
#[fentry(function = "vfio_dma_rw")]
pub fn fentry_dma_rw(ctx: FEntryContext) -> u32 {
    let vdev: u64 = ctx.arg(0);
    let iova: u64 = ctx.arg(1);
    let len: u64 = ctx.arg(3);
    let write: u64 = ctx.arg(4);
    emit_mdev(vdev, iova, len, (write & 1) as u32, MDEV_DMA_RW);
    0
}

#[kprobe]
pub fn kprobe_dma_rw(ctx: ProbeContext) -> u32 {
    let vdev: u64 = ctx.arg(0).unwrap_or(0);
    let iova: u64 = ctx.arg(1).unwrap_or(0);
    let len: u64 = ctx.arg(3).unwrap_or(0);
    let write: u64 = ctx.arg(4).unwrap_or(0);
    emit_mdev(vdev, iova, len, (write & 1) as u32, MDEV_DMA_RW);
    0
}

/// `int vfio_pin_pages(struct vfio_device *, dma_addr_t iova, int npage, int prot,
/// struct page **pages)` (drivers/vfio/vfio_main.c).
#[fentry(function = "vfio_pin_pages")]
pub fn fentry_pin_pages(ctx: FEntryContext) -> u32 {
    let vdev: u64 = ctx.arg(0);
    let iova: u64 = ctx.arg(1);
    let npage: u64 = ctx.arg(2);
    let prot: u64 = ctx.arg(3);
    emit_mdev(
        vdev,
        iova,
        npage & 0xffff_ffff,
        (prot & IOMMU_WRITE != 0) as u32,
        MDEV_PIN_PAGES,
    );
    0
}

#[kprobe]
pub fn kprobe_pin_pages(ctx: ProbeContext) -> u32 {
    let vdev: u64 = ctx.arg(0).unwrap_or(0);
    let iova: u64 = ctx.arg(1).unwrap_or(0);
    let npage: u64 = ctx.arg(2).unwrap_or(0);
    let prot: u64 = ctx.arg(3).unwrap_or(0);
    emit_mdev(
        vdev,
        iova,
        npage & 0xffff_ffff,
        (prot & IOMMU_WRITE != 0) as u32,
        MDEV_PIN_PAGES,
    );
    0
}

#[inline(always)]
fn emit_mdev(vdev: u64, iova: u64, len: u64, write: u32, func: u32) {
    let (hdr, _) = header(EventKind::MdevDma, core::mem::size_of::<MdevDma>());
    emit(&MdevDma {
        hdr,
        vdev,
        iova,
        len,
        write,
        func,
    });
}

// ---- helpers -------------------------------------------------------------------------------

#[inline(always)]
fn tp_read<T>(ctx: &TracePointContext, offset: usize) -> Result<T, u32> {
    // SAFETY: offsets come from the tracepoint's format file; read_at goes through the
    // probe-read helper and returns an error instead of faulting.
    unsafe { ctx.read_at::<T>(offset) }.map_err(|_| 1u32)
}

/// A field of the tracepoint record read straight from the context (a plain load the verifier
/// checks, as bpftrace's `args->x`), not through the probe-read helper: for the fields every
/// hit reads before filtering (ioctl cmd, read/write fd). `offset` must be a multiple of the
/// field's size and inside the record.
#[inline(always)]
fn tp_field<T: Copy>(ctx: &TracePointContext, offset: usize) -> T {
    // SAFETY: tracepoint programs may load from their context at constant, size-aligned
    // offsets inside the record (kernel: tp_prog_is_valid_access); the offsets come from the
    // format files and are 8-aligned u64 slots.
    unsafe { core::ptr::read((ctx.as_ptr() as *const u8).add(offset) as *const T) }
}

/// Address of a `__data_loc` field: the low 16 bits are its offset in the record.
#[inline(always)]
fn data_loc(ctx: &TracePointContext, loc: u32) -> *const u8 {
    (ctx.as_ptr() as *const u8).wrapping_add((loc & 0xffff) as usize)
}

/// The VFIO ioctl the current thread is inside, if any.
#[inline(always)]
fn current_inflight() -> Option<Inflight> {
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: plain map lookup; the value is copied.
    unsafe { INFLIGHT.get(tid) }.copied()
}

/// `bpf_ringbuf_output` flags and `bpf_ringbuf_query` selector (include/uapi/linux/bpf.h).
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

/// Wake the reader only once this many bytes wait (set by the loader to a fraction of the
/// ring); 0 leaves the kernel's default of waking on every record. Readers also drain on a
/// timer, so batching only adds latency up to that period, never loss.
#[unsafe(no_mangle)]
static WAKE_BYTES: u64 = 0;

/// Writes one record; a full ring buffer is counted, never silent.
#[inline(always)]
fn emit<T>(rec: &T) {
    emit_ok(rec);
}

/// [`emit`], saying whether the record was written.
#[inline(always)]
fn emit_ok<T>(rec: &T) -> bool {
    // SAFETY: a read of our own read-only global, patched before load.
    let wake = unsafe { core::ptr::read_volatile(&WAKE_BYTES) };
    let flags = if wake == 0 {
        0
    } else if EVENTS.query(BPF_RB_AVAIL_DATA) >= wake {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    if EVENTS.output::<T>(rec, flags).is_err() {
        count_lost();
        return false;
    }
    true
}

#[inline(always)]
fn count_lost() {
    if let Some(n) = LOST.get_ptr_mut(0) {
        // SAFETY: per-CPU slot of this CPU; programs do not migrate while running.
        unsafe { *n += 1 };
    }
}

/// A record header for the current task, and its thread id.
#[inline(always)]
fn header(kind: EventKind, size: usize) -> (EventHeader, u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let hdr = EventHeader {
        kind: kind as u32,
        size: size as u32,
        // SAFETY: bpf_ktime_get_ns has no preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
    };
    (hdr, pid_tgid as u32)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
