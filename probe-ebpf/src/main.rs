//! migscope's eBPF programs. Thin entry points; each reads only stable ABI (tracepoint fields,
//! syscall arguments, uAPI structs) and writes fixed-size records from `probe_common::abi`.
#![no_std]
#![no_main]

use aya_ebpf::{
    EbpfContext as _,
    helpers::bpf_ktime_get_ns,
    macros::{map, tracepoint},
    maps::RingBuf,
    programs::TracePointContext,
};
use probe_common::abi::{EventHeader, EventKind, IoctlEnter, VFIO_IOCTL_FIRST, VFIO_IOCTL_LAST};

/// 1 MiB of records; userspace sizes nothing from this, it reads `hdr.size`.
#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

// Field offsets from /sys/kernel/tracing/events/syscalls/sys_enter_ioctl/format (stable ABI:
// the syscall tracepoint lays each argument out as an 8-byte slot after __syscall_nr).
const SYS_ENTER_ARG0: usize = 16;
const SYS_ENTER_ARG1: usize = 24;
const SYS_ENTER_ARG2: usize = 32;

#[tracepoint(category = "syscalls", name = "sys_enter_ioctl")]
pub fn sys_enter_ioctl(ctx: TracePointContext) -> u32 {
    match try_sys_enter_ioctl(&ctx) {
        Ok(()) => 0,
        Err(()) => 1,
    }
}

fn try_sys_enter_ioctl(ctx: &TracePointContext) -> Result<(), ()> {
    // SAFETY: offsets come from the tracepoint's format file; read_at bounds-checks via the
    // probe-read helper and returns an error instead of faulting.
    let cmd: u64 = unsafe { ctx.read_at(SYS_ENTER_ARG1) }.map_err(|_| ())?;
    let cmd = cmd as u32;
    if !(VFIO_IOCTL_FIRST..=VFIO_IOCTL_LAST).contains(&cmd) {
        return Ok(());
    }
    // SAFETY: as above.
    let fd: u64 = unsafe { ctx.read_at(SYS_ENTER_ARG0) }.map_err(|_| ())?;
    // SAFETY: as above.
    let arg: u64 = unsafe { ctx.read_at(SYS_ENTER_ARG2) }.map_err(|_| ())?;
    let rec = IoctlEnter {
        hdr: header(
            EventKind::IoctlEnter,
            core::mem::size_of::<IoctlEnter>(),
            ctx,
        ),
        fd: fd as u32,
        cmd,
        arg,
    };
    EVENTS.output::<IoctlEnter>(&rec, 0).map_err(|_| ())
}

#[inline(always)]
fn header(kind: EventKind, size: usize, ctx: &TracePointContext) -> EventHeader {
    EventHeader {
        kind: kind as u32,
        size: size as u32,
        // SAFETY: bpf_ktime_get_ns has no preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        pid: ctx.tgid(),
        tid: ctx.pid(),
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
