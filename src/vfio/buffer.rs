//! DMA buffers: anonymous page-aligned mappings a device may write behind our back, read and
//! written only with volatile accesses.

use std::io;
use std::ptr::NonNull;

/// Page size used for buffer sizes and witness granularity.
pub const PAGE: usize = 4096;

/// An anonymous `mmap` shared with a device through the IOMMU.
#[derive(Debug)]
pub struct DmaBuffer {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; every access goes through volatile
// reads/writes of whole words, which is the only sound way to touch memory a device also writes.
unsafe impl Send for DmaBuffer {}
// SAFETY: as above; concurrent volatile accesses from several threads are racy by design (the
// device races too) but never produce references to the memory.
unsafe impl Sync for DmaBuffer {}

impl DmaBuffer {
    /// Maps `len` bytes (rounded up to whole pages), zeroed, populated, not inherited on fork.
    pub fn new(len: usize) -> io::Result<DmaBuffer> {
        let len = len.div_ceil(PAGE).max(1) * PAGE;
        // SAFETY: an anonymous private mapping at a kernel-chosen address; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `p` is a mapping of `len` bytes we own; MADV_DONTFORK keeps pinned pages out of
        // children (what QEMU does for guest RAM); failure only costs that protection.
        unsafe { libc::madvise(p, len, libc::MADV_DONTFORK) };
        let ptr =
            NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned NULL"))?;
        Ok(DmaBuffer { ptr, len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The virtual address, for VFIO_IOMMU_MAP_DMA.
    pub fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    /// A copy of the whole buffer, read with volatile word loads.
    pub fn snapshot(&self) -> Vec<u8> {
        let words = self.len / 8;
        let base = self.ptr.as_ptr().cast::<u64>();
        let mut out = Vec::with_capacity(self.len);
        for i in 0..words {
            // SAFETY: `i < len/8` keeps the read inside the page-aligned mapping.
            let w = unsafe { base.add(i).read_volatile() };
            out.extend_from_slice(&w.to_ne_bytes());
        }
        out
    }

    /// A copy of the whole buffer as native-endian words, read with volatile loads (the
    /// witness's baseline form: [`DmaBuffer::diff_pages`] compares against it).
    pub fn words(&self) -> Vec<u64> {
        let base = self.ptr.as_ptr().cast::<u64>();
        (0..self.len / 8)
            // SAFETY: `i < len/8` keeps the read inside the page-aligned mapping.
            .map(|i| unsafe { base.add(i).read_volatile() })
            .collect()
    }

    /// Compares the buffer with `base` (as [`DmaBuffer::words`] returns it) page by page, with
    /// volatile loads and no allocation unless a page changed; every changed page is copied
    /// into `base`. Returns the changed pages' indices.
    pub fn diff_pages(&self, base: &mut [u64]) -> Vec<usize> {
        const WORDS: usize = PAGE / 8;
        let src = self.ptr.as_ptr().cast::<u64>();
        let mut changed = Vec::new();
        let words = base.len().min(self.len / 8);
        for (page, chunk) in base[..words].chunks_mut(WORDS).enumerate() {
            let mut differs = false;
            for (j, b) in chunk.iter_mut().enumerate() {
                // SAFETY: `page * WORDS + j < words <= len/8` keeps the read inside the mapping.
                let w = unsafe { src.add(page * WORDS + j).read_volatile() };
                if w != *b {
                    *b = w;
                    differs = true;
                }
            }
            if differs {
                changed.push(page);
            }
        }
        changed
    }

    /// Writes `data` at `off` with volatile stores (bounds-checked).
    pub fn write(&self, off: usize, data: &[u8]) -> io::Result<()> {
        let end = off
            .checked_add(data.len())
            .filter(|e| *e <= self.len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "write beyond buffer"))?;
        let base = self.ptr.as_ptr();
        for (i, b) in (off..end).zip(data) {
            // SAFETY: `i < end <= len` keeps the store inside the mapping.
            unsafe { base.add(i).write_volatile(*b) };
        }
        Ok(())
    }
}

impl Drop for DmaBuffer {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping created in `new`; nothing refers to it any more.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_and_snapshot() {
        let b = DmaBuffer::new(100).expect("mmap");
        assert_eq!(b.len(), PAGE);
        assert!(b.snapshot().iter().all(|x| *x == 0));
        b.write(10, &[1, 2, 3]).expect("write");
        let s = b.snapshot();
        assert_eq!(&s[10..13], &[1, 2, 3]);
        assert!(b.write(PAGE - 1, &[1, 2]).is_err());
    }

    #[test]
    fn diff_pages_reports_and_absorbs_changed_pages() {
        let b = DmaBuffer::new(3 * PAGE).expect("mmap");
        let mut base = b.words();
        assert_eq!(base.len(), 3 * PAGE / 8);
        assert!(b.diff_pages(&mut base).is_empty());
        b.write(PAGE + 17, &[9]).expect("write");
        b.write(3 * PAGE - 1, &[1]).expect("write");
        assert_eq!(b.diff_pages(&mut base), vec![1, 2]);
        // Absorbed: the same content is no change; the baseline now equals the buffer.
        assert!(b.diff_pages(&mut base).is_empty());
        assert_eq!(base, b.words());
    }
}
