//! A minimal `newc` cpio writer for the initramfs (no host cpio needed).

use std::io::{self, Write};

/// Writes entries in the kernel's initramfs format (`usr/gen_init_cpio` layout).
pub struct Cpio<W: Write> {
    w: W,
    ino: u32,
    written: u64,
}

impl<W: Write> Cpio<W> {
    pub fn new(w: W) -> Self {
        Cpio {
            w,
            ino: 1,
            written: 0,
        }
    }

    fn header(&mut self, name: &str, mode: u32, size: usize) -> io::Result<()> {
        let namesize = name.len() + 1;
        let hdr = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, namesize, 0
        );
        self.ino += 1;
        self.put(hdr.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.w.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 3][..n])
    }

    pub fn dir(&mut self, name: &str) -> io::Result<()> {
        self.header(name, 0o040755, 0)
    }

    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        self.header(name, 0o100000 | mode, data.len())?;
        self.put(data)?;
        self.pad()
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.header("TRAILER!!!", 0, 0)?;
        self.w.flush()?;
        Ok(self.w)
    }
}

#[cfg(test)]
mod tests {
    use super::Cpio;

    /// Walks a newc archive and returns (name, mode, data) per entry, checking alignment.
    fn parse(b: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut i = 0;
        let hex = |s: &[u8]| u32::from_str_radix(std::str::from_utf8(s).unwrap(), 16).unwrap();
        loop {
            assert_eq!(&b[i..i + 6], b"070701", "magic at {i}");
            let mode = hex(&b[i + 14..i + 22]);
            let size = hex(&b[i + 54..i + 62]) as usize;
            let namesize = hex(&b[i + 94..i + 102]) as usize;
            let name = String::from_utf8(b[i + 110..i + 110 + namesize - 1].to_vec()).unwrap();
            i = (i + 110 + namesize).next_multiple_of(4);
            let data = b[i..i + size].to_vec();
            i = (i + size).next_multiple_of(4);
            if name == "TRAILER!!!" {
                assert_eq!(i, b.len());
                return out;
            }
            out.push((name, mode, data));
        }
    }

    #[test]
    fn newc_entries_round_trip_with_alignment() {
        let mut c = Cpio::new(Vec::new());
        c.dir("bin").unwrap();
        c.file("bin/x", 0o755, b"hello").unwrap();
        c.file("init", 0o755, b"#!/bin/sh\n").unwrap();
        let b = c.finish().unwrap();
        let e = parse(&b);
        assert_eq!(e.len(), 3);
        assert_eq!(e[0], ("bin".into(), 0o040755, vec![]));
        assert_eq!(e[1], ("bin/x".into(), 0o100755, b"hello".to_vec()));
        assert_eq!(e[2].0, "init");
    }
}
