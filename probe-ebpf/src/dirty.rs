//! The bitmap of a device DMA log REPORT the VMM received (issue 14, `dirty_miss`, VMM half).
//!
//! At the return of a successful `VFIO_DEVICE_FEATURE` `GET|DMA_LOGGING_REPORT` on a device
//! fd, the kernel has written the device's dirty bits into the caller's bitmap and cleared
//! them in the device (`vfio_ioctl_device_feature_logging_report()`, drivers/vfio/vfio_main.c:
//! `iova_bitmap_for_each()` over the user's pages, then the driver's `log_read_and_clear`).
//! The probe copies that user bitmap into [`DirtyChunk`] records, never issuing a REPORT of
//! its own (that would clear the VMM's bits). Bounded: at most [`DIRTY_MAX_CHUNKS`] chunks of
//! [`DIRTY_CHUNK`] bytes; userspace names whatever lies beyond as not decoded.

use aya_ebpf::helpers::generated::bpf_probe_read_user;
use probe_common::abi::{
    DIRTY_CHUNK, DIRTY_MAX_CHUNKS, DirtyChunk, EventKind, IoctlRet, fd_key, fd_kind, feature,
    ioctl, uapi,
};

use crate::{EVENTS, VFIO_FDS, count_lost, header, payload_u32};

/// The u64 at byte `off` of the ioctl's copied argument struct.
#[inline(always)]
fn payload_u64(rec: &IoctlRet, off: usize) -> u64 {
    u64::from(payload_u32(rec, off)) | (u64::from(payload_u32(rec, off + 4)) << 32)
}

/// Emits the REPORT's bitmap in chunks when `rec` is the return of a successful REPORT
/// (called before `rec` itself is emitted, so its chunks precede it).
#[inline(always)]
pub fn report_bitmap(rec: &IoctlRet) {
    if rec.cmd != ioctl::DEVICE_FEATURE
        || rec.ret != 0
        || (rec.payload_len as usize) < uapi::LOG_REPORT_BITMAP + 8
    {
        return;
    }
    let flags = payload_u32(rec, uapi::FEATURE_FLAGS);
    if flags & (feature::MASK | feature::GET | feature::SET | feature::PROBE)
        != feature::GET | feature::DMA_LOGGING_REPORT
    {
        return;
    }
    // SAFETY: plain map lookup; the value is copied.
    if unsafe { VFIO_FDS.get(fd_key(rec.hdr.pid, rec.fd)) }.copied() == Some(fd_kind::CONTAINER) {
        // 0x3B75 on a container is VFIO_IOMMU_DIRTY_PAGES.
        return;
    }
    let length = payload_u64(rec, uapi::LOG_REPORT_LENGTH);
    let page_size = payload_u64(rec, uapi::LOG_REPORT_PAGE_SIZE);
    let bitmap = payload_u64(rec, uapi::LOG_REPORT_BITMAP);
    // The kernel refused anything else; a 0 return means these held.
    if page_size < 4096 || page_size & (page_size - 1) != 0 || bitmap == 0 {
        return;
    }
    let pages = length.div_ceil(page_size);
    let total = pages.div_ceil(64) * 8;
    for i in 0..DIRTY_MAX_CHUNKS {
        let off = u64::from(i) * DIRTY_CHUNK as u64;
        if off >= total {
            return;
        }
        let left = total - off;
        let n = if left < DIRTY_CHUNK as u64 {
            left as u32
        } else {
            DIRTY_CHUNK as u32
        };
        if n as usize > DIRTY_CHUNK {
            return;
        }
        let Some(mut entry) = EVENTS.reserve::<DirtyChunk>(0) else {
            count_lost();
            return;
        };
        let (hdr, _) = header(EventKind::DirtyChunk, core::mem::size_of::<DirtyChunk>());
        let p = entry.as_mut_ptr();
        // SAFETY: `p` is the reserved record, `size_of::<DirtyChunk>()` bytes, ours until
        // submitted; the helper validates the user address (a fault is an error) and writes
        // at most `n` <= DIRTY_CHUNK bytes into `data`.
        let read = unsafe {
            (*p).hdr = hdr;
            (*p).fd = rec.fd;
            (*p).offset = off;
            (*p).enter_ns = rec.enter_ns;
            bpf_probe_read_user(
                core::ptr::addr_of_mut!((*p).data).cast(),
                n,
                (bitmap + off) as *const core::ffi::c_void,
            )
        };
        // SAFETY: as above.
        unsafe { (*p).len = if read == 0 { n } else { 0 } };
        entry.submit(0);
        if read != 0 {
            return;
        }
    }
}
