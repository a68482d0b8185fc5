//! Output files are written under `<name>.partial` and renamed into place only once complete
//! (after an fsync), so a reader or an artifact collector never sees a half-written trace or
//! report under its real name. What a failure leaves depends on what the file is: a trace
//! keeps what it recorded in `<name>.partial` (cut back to whole records, `trace::sink`); a
//! report or a saved blob that cannot be completed is removed (`export::OutFile`,
//! [`write_then_rename`]): it can be made again.

use std::{
    fs::File,
    io,
    path::{Path, PathBuf},
};

/// The temporary name an output is written under until it is complete.
pub fn partial_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".partial");
    PathBuf::from(p)
}

/// Makes a finished `.partial` file durable and gives it its real name. Its writer must have
/// been flushed and dropped.
pub fn commit_partial(tmp: &Path, dst: &Path) -> io::Result<()> {
    File::open(tmp)?.sync_all()?;
    std::fs::rename(tmp, dst)
}

/// Writes `data` to `path` through a `.partial` file; when that fails, nothing is left (the
/// caller still has `data`).
pub fn write_then_rename(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = partial_path(path);
    let res = std::fs::write(&tmp, data).and_then(|()| commit_partial(&tmp, path));
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}
