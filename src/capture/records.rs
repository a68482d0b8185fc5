//! Raw ring buffer records: validating the bytes the probe wrote and turning them into typed
//! `probe_common::abi` structs. Pure; no attribution.

use probe_common::abi::{
    DataXfer, DirtyChunk, EventHeader, EventKind, FdClose, Fork, IoctlCall, IoctlRet, IommuFault,
    IommuMap, IommuUnmap, Irq, IrqBin, MdevDma, MsiHandler, Step, StepLost, VfioOpen, iommufd,
};
use vfio_bindings::bindings::vfio as uapi;

/// One decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    IoctlCall(IoctlCall),
    IoctlRet(IoctlRet),
    VfioOpen(VfioOpen),
    FdClose(FdClose),
    Step(Step),
    Irq(Irq),
    IommuMap(IommuMap),
    IommuUnmap(IommuUnmap),
    IommuFault(IommuFault),
    DataXfer(DataXfer),
    MdevDma(MdevDma),
    MsiHandler(MsiHandler),
    Fork(Fork),
    StepLost(StepLost),
    DirtyChunk(Box<DirtyChunk>),
    IrqBin(IrqBin),
}

impl Record {
    pub fn header(&self) -> &EventHeader {
        match self {
            Record::IoctlCall(r) => &r.hdr,
            Record::IoctlRet(r) => &r.hdr,
            Record::VfioOpen(r) => &r.hdr,
            Record::FdClose(r) => &r.hdr,
            Record::Step(r) => &r.hdr,
            Record::Irq(r) => &r.hdr,
            Record::IommuMap(r) => &r.hdr,
            Record::IommuUnmap(r) => &r.hdr,
            Record::IommuFault(r) => &r.hdr,
            Record::DataXfer(r) => &r.hdr,
            Record::MdevDma(r) => &r.hdr,
            Record::MsiHandler(r) => &r.hdr,
            Record::Fork(r) => &r.hdr,
            Record::StepLost(r) => &r.hdr,
            Record::DirtyChunk(r) => &r.hdr,
            Record::IrqBin(r) => &r.hdr,
        }
    }
}

/// Why a record could not be decoded (counted as `lost` with source `decode`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("record kind {0} is unknown")]
    UnknownKind(u32),
    #[error("record kind {kind} has {got} bytes, expected {want}")]
    Size { kind: u32, got: usize, want: usize },
}

/// Decodes one ring buffer item.
pub fn parse(bytes: &[u8]) -> Result<Record, RecordError> {
    let hdr: EventHeader = read(bytes).ok_or(RecordError::Short(bytes.len()))?;
    let kind = EventKind::from_u32(hdr.kind).ok_or(RecordError::UnknownKind(hdr.kind))?;
    fn typed<T: aya::Pod>(kind: u32, bytes: &[u8]) -> Result<T, RecordError> {
        read(bytes).ok_or(RecordError::Size {
            kind,
            got: bytes.len(),
            want: size_of::<T>(),
        })
    }
    let k = hdr.kind;
    Ok(match kind {
        EventKind::IoctlEnter => return Err(RecordError::UnknownKind(k)),
        EventKind::IoctlCall => Record::IoctlCall(typed(k, bytes)?),
        EventKind::IoctlRet => Record::IoctlRet(typed(k, bytes)?),
        EventKind::VfioOpen => Record::VfioOpen(typed(k, bytes)?),
        EventKind::FdClose => Record::FdClose(typed(k, bytes)?),
        EventKind::Step => Record::Step(typed(k, bytes)?),
        EventKind::Irq => Record::Irq(typed(k, bytes)?),
        EventKind::IommuMap => Record::IommuMap(typed(k, bytes)?),
        EventKind::IommuUnmap => Record::IommuUnmap(typed(k, bytes)?),
        EventKind::IommuFault => Record::IommuFault(typed(k, bytes)?),
        EventKind::DataXfer => Record::DataXfer(typed(k, bytes)?),
        EventKind::MdevDma => Record::MdevDma(typed(k, bytes)?),
        EventKind::MsiHandler => Record::MsiHandler(typed(k, bytes)?),
        EventKind::Fork => Record::Fork(typed(k, bytes)?),
        EventKind::StepLost => Record::StepLost(typed(k, bytes)?),
        EventKind::DirtyChunk => Record::DirtyChunk(Box::new(typed(k, bytes)?)),
        EventKind::IrqBin => Record::IrqBin(typed(k, bytes)?),
    })
}

/// Reads a `Pod` from the start of `bytes` (ring buffer items are 8-byte aligned, but the
/// read is unaligned-safe anyway).
fn read<T: aya::Pod>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: length checked above; T is Pod (any bit pattern valid); read_unaligned has no
    // alignment requirement.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// The bytes before the first NUL, as UTF-8 (lossy).
pub fn cstr(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Little helpers over an ioctl payload (native endian, bounds-checked against `len`).
pub fn u32_at(payload: &[u8], len: u32, off: usize) -> Option<u32> {
    let b = payload
        .get(off..off + 4)
        .filter(|_| off + 4 <= len as usize)?;
    Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

pub fn u64_at(payload: &[u8], len: u32, off: usize) -> Option<u64> {
    let b = payload
        .get(off..off + 8)
        .filter(|_| off + 8 <= len as usize)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Some(u64::from_ne_bytes(a))
}

/// A uAPI argument struct an ioctl payload holds (layouts from vfio-bindings, generated from
/// `include/uapi/linux/vfio.h`, and `probe_common::abi::iommufd`).
///
/// # Safety
/// Implementors are `#[repr(C)]` structs of integer fields only: every bit pattern is a valid
/// value.
pub unsafe trait Uapi: Copy {}

macro_rules! uapi {
    ($($t:path),* $(,)?) => {$(
        // SAFETY: a bindgen (vfio-bindings) or probe-common repr(C) struct of integer fields
        // only: every bit pattern is a valid value.
        unsafe impl Uapi for $t {}
    )*};
}

uapi!(
    uapi::vfio_precopy_info,
    uapi::vfio_device_feature_mig_data_size,
    uapi::vfio_device_feature_dma_logging_control,
    uapi::vfio_device_feature_dma_logging_report,
    uapi::vfio_iommu_type1_dirty_bitmap_get,
    iommufd::HwptSetDirtyTracking,
    iommufd::HwptGetDirtyBitmap,
);

/// The uAPI struct at `off` of a payload of which `len` bytes are valid.
pub fn struct_at<T: Uapi>(payload: &[u8], len: u32, off: usize) -> Option<T> {
    let end = off.checked_add(size_of::<T>())?;
    let b = payload.get(off..end).filter(|_| end <= len as usize)?;
    // SAFETY: `b` holds size_of::<T>() bytes; T is Uapi (any bit pattern valid);
    // read_unaligned has no alignment requirement.
    Some(unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<T>()) })
}

/// Raw bytes of a record (for tests and for replaying records).
pub fn bytes_of<T: aya::Pod>(rec: &T) -> Vec<u8> {
    // SAFETY: T is Pod: every byte is initialised (no padding, asserted in probe-common).
    unsafe { std::slice::from_raw_parts((rec as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe_common::abi::PAYLOAD_LEN;

    #[test]
    fn round_trips_an_ioctl_call() {
        let rec = IoctlCall {
            hdr: EventHeader {
                kind: EventKind::IoctlCall as u32,
                size: size_of::<IoctlCall>() as u32,
                ts_ns: 5,
                pid: 7,
                tid: 8,
            },
            fd: 3,
            cmd: 0x3B75,
            arg: 0x1000,
            payload_len: 16,
            _pad: 0,
            payload: [1; PAYLOAD_LEN],
        };
        assert_eq!(parse(&bytes_of(&rec)), Ok(Record::IoctlCall(rec)));
    }

    #[test]
    fn round_trips_an_irq_bin() {
        let mut name = [0u8; probe_common::abi::NAME_LEN];
        name[..26].copy_from_slice(b"vfio-msix[3](0000:00:02.0)");
        let rec = IrqBin {
            hdr: EventHeader {
                kind: EventKind::IrqBin as u32,
                size: size_of::<IrqBin>() as u32,
                ts_ns: 90,
                pid: 0,
                tid: 0,
            },
            irq: 41,
            _pad: 0,
            n: 2000,
            t0: 10,
            t1: 80,
            name,
        };
        assert_eq!(parse(&bytes_of(&rec)), Ok(Record::IrqBin(rec)));
        assert_eq!(
            parse(&bytes_of(&rec)[..64]),
            Err(RecordError::Size {
                kind: 16,
                got: 64,
                want: 88
            })
        );
    }

    #[test]
    fn rejects_short_unknown_and_retired() {
        assert_eq!(parse(&[0; 4]), Err(RecordError::Short(4)));
        let mut hdr = EventHeader {
            kind: 999,
            ..Default::default()
        };
        assert_eq!(parse(&bytes_of(&hdr)), Err(RecordError::UnknownKind(999)));
        hdr.kind = EventKind::IoctlEnter as u32;
        assert_eq!(parse(&bytes_of(&hdr)), Err(RecordError::UnknownKind(1)));
        hdr.kind = EventKind::Step as u32;
        assert_eq!(
            parse(&bytes_of(&hdr)),
            Err(RecordError::Size {
                kind: 6,
                got: 24,
                want: 56
            })
        );
    }

    #[test]
    fn uapi_structs_are_read_whole_or_not_at_all() {
        let mut p = [0u8; PAYLOAD_LEN];
        p[..4].copy_from_slice(&24u32.to_ne_bytes());
        p[8..16].copy_from_slice(&4096u64.to_ne_bytes());
        p[16..24].copy_from_slice(&7u64.to_ne_bytes());
        let info: uapi::vfio_precopy_info = struct_at(&p, 24, 0).expect("24 bytes valid");
        assert_eq!(
            (info.argsz, info.initial_bytes, info.dirty_bytes),
            (24, 4096, 7)
        );
        assert!(struct_at::<uapi::vfio_precopy_info>(&p, 23, 0).is_none());
        assert!(struct_at::<iommufd::HwptGetDirtyBitmap>(&p, 48, 8).is_none());
        assert!(struct_at::<iommufd::HwptGetDirtyBitmap>(&p, 48, 0).is_some());
    }

    #[test]
    fn payload_accessors_respect_len() {
        let p = [1u8, 0, 0, 0, 2, 0, 0, 0, 9, 9, 9, 9];
        assert_eq!(u32_at(&p, 8, 4), Some(2));
        assert_eq!(u32_at(&p, 7, 4), None);
        assert_eq!(u64_at(&p, 8, 0), Some(0x2_0000_0001));
        assert_eq!(cstr(b"0000:00:02.0\0junk"), "0000:00:02.0");
    }
}
