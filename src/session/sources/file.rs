//! A trace file as a source: read whole (`view`), or followed while another process writes it
//! (`watch --follow`: `record -o` and `drive -o` write as they go). The reader runs on its own
//! thread; at the end of a growing file it sleeps in `poll(2)` on an inotify watch of the file
//! (or of its directory, until the file appears) and on the session's stop eventfd: it wakes
//! when the writer appends, never on a timer. Events reach the session in batches through a
//! bounded channel, so a file is read only as fast as the session takes it.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::trace::jsonl::{JsonlReader, partial_path};
use crate::trace::{AnyReader, Event, EventKind, Header, ReadWarning};

/// Events per batch.
const BATCH: usize = 4096;
/// Batches in flight to the session.
const CHANNEL: usize = 8;

/// What the reader thread sends.
#[derive(Debug)]
pub enum FileMsg {
    /// Something to tell the user (waiting for the file, following it).
    Note(String),
    /// The trace's header (first, before any event).
    Header(Header),
    /// Events with their lines, in trace order, and the reader's warnings so far.
    Events(Vec<(u64, Event)>, Vec<ReadWarning>),
    /// The reader reached the end (`truncated_at`: the trace ends inside a record).
    Done { truncated_at: Option<u64> },
    /// The trace could not be read on.
    Error(String),
}

/// The session's end of a file source.
pub struct FileSource {
    rx: mpsc::Receiver<FileMsg>,
    stop: Arc<OwnedFd>,
    /// Followed while its writer appends (the view shows it live).
    growing: bool,
}

impl FileSource {
    /// Reads an opened trace to its end.
    pub fn whole<R: BufRead + Send + 'static>(reader: AnyReader<R>) -> io::Result<FileSource> {
        let (tx, rx) = mpsc::channel(CHANNEL);
        let stop = Arc::new(eventfd()?);
        std::thread::spawn(move || {
            if tx
                .blocking_send(FileMsg::Header(reader.header().clone()))
                .is_ok()
            {
                pump(reader, &Out::new(tx), false);
            }
        });
        Ok(FileSource {
            rx,
            stop,
            growing: false,
        })
    }

    /// Follows `path` (or `path.partial` while its writer has not renamed it), waiting for
    /// it to appear, until its `end` event.
    pub fn follow(path: PathBuf) -> io::Result<FileSource> {
        let (tx, rx) = mpsc::channel(CHANNEL);
        let stop = Arc::new(eventfd()?);
        let stop_r = Arc::clone(&stop);
        std::thread::spawn(move || follow_thread(&path, &tx, &stop_r));
        Ok(FileSource {
            rx,
            stop,
            growing: true,
        })
    }

    /// Whether the file is followed while it grows.
    pub fn growing(&self) -> bool {
        self.growing
    }

    pub async fn recv(&mut self) -> Option<FileMsg> {
        self.rx.recv().await
    }

    /// Asks the reader thread to stop waiting for more (it ends by itself at the end of a
    /// whole file).
    pub fn stop(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd this source owns.
        let _ = unsafe {
            libc::write(
                self.stop.as_raw_fd(),
                (&raw const one).cast::<libc::c_void>(),
                8,
            )
        };
    }
}

impl Drop for FileSource {
    fn drop(&mut self) {
        self.stop();
    }
}

fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd this function owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The batch being read, shared with the tail (which sends it before it waits).
struct Out {
    batch: RefCell<Vec<(u64, Event)>>,
    tx: mpsc::Sender<FileMsg>,
}

impl Out {
    fn new(tx: mpsc::Sender<FileMsg>) -> Rc<Out> {
        Rc::new(Out {
            batch: RefCell::new(Vec::with_capacity(BATCH)),
            tx,
        })
    }

    /// Sends the batch and the new warnings; false when the session is gone.
    fn flush(&self, warnings: Vec<ReadWarning>) -> bool {
        let batch = std::mem::take(&mut *self.batch.borrow_mut());
        if batch.is_empty() && warnings.is_empty() {
            return true;
        }
        self.tx
            .blocking_send(FileMsg::Events(batch, warnings))
            .is_ok()
    }
}

/// Reads every event and sends it in batches; returns when the reader ends (or, following,
/// at `end`) or the session is gone.
fn pump<R: BufRead>(mut reader: AnyReader<R>, out: &Out, follow: bool) {
    let mut warned = 0;
    let mut new_warnings = |reader: &AnyReader<R>| {
        let w = reader.warnings();
        let new = w.get(warned..).unwrap_or_default().to_vec();
        warned = w.len();
        new
    };
    while let Some(item) = reader.next_event() {
        match item {
            Ok((line, ev)) => {
                let end = matches!(ev.kind, EventKind::End);
                let full = {
                    let mut b = out.batch.borrow_mut();
                    b.push((line, ev));
                    b.len() >= BATCH
                };
                if (full || end) && !out.flush(new_warnings(&reader)) {
                    return;
                }
                if end && follow {
                    break;
                }
            }
            Err(e) => {
                out.flush(new_warnings(&reader));
                let _ = out.tx.blocking_send(FileMsg::Error(e.to_string()));
                return;
            }
        }
    }
    if out.flush(new_warnings(&reader)) {
        let _ = out.tx.blocking_send(FileMsg::Done {
            truncated_at: reader.truncated_at(),
        });
    }
}

/// What `poll(2)` woke for.
enum Woke {
    Changed,
    Stop,
}

/// An inotify instance watching one path.
struct Watch(OwnedFd);

impl Watch {
    fn new(path: &Path, mask: u32) -> io::Result<Watch> {
        // SAFETY: inotify_init1 takes flags only.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd this function owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: a valid inotify fd and a NUL-terminated path that outlives the call.
        if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), mask) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Watch(fd))
    }

    /// Sleeps until the watched path changes or `stop` is signalled.
    fn wait(&self, stop: &OwnedFd) -> io::Result<Woke> {
        let mut fds = [
            libc::pollfd {
                fd: self.0.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        loop {
            // SAFETY: two valid pollfds; no timeout: woken only by an fd.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            break;
        }
        if fds[1].revents != 0 {
            return Ok(Woke::Stop);
        }
        // Consume the events (what changed does not matter: the caller looks again).
        let mut buf = [0u8; 4096];
        // SAFETY: reads into a live buffer of its length.
        let _ = unsafe {
            libc::read(
                self.0.as_raw_fd(),
                buf.as_mut_ptr().cast::<libc::c_void>(),
                buf.len(),
            )
        };
        Ok(Woke::Changed)
    }
}

/// A growing file: at its end, waits for the writer to append (or the session to stop).
struct Tail {
    file: File,
    watch: Watch,
    stop: Arc<OwnedFd>,
    out: Rc<Out>,
}

impl Read for Tail {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = self.file.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            // What was read so far goes out before the wait.
            if !self.out.flush(Vec::new()) {
                return Ok(0);
            }
            match self.watch.wait(&self.stop)? {
                Woke::Changed => {}
                // Stopped: the end of input.
                Woke::Stop => return Ok(0),
            }
        }
    }
}

/// Opens `path`, or `path.partial`; waits for either to appear.
fn wait_for(path: &Path, tx: &mpsc::Sender<FileMsg>, stop: &OwnedFd) -> Result<File, String> {
    let partial = partial_path(path);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // Watched before looking, so a file created in between still wakes us.
    let watch = Watch::new(dir, libc::IN_CREATE | libc::IN_MOVED_TO)
        .map_err(|e| format!("{}: cannot watch: {e}", dir.display()))?;
    let mut told = false;
    loop {
        for p in [path, partial.as_path()] {
            match File::open(p) {
                Ok(f) => {
                    let _ = tx.blocking_send(FileMsg::Note(format!("following {}", p.display())));
                    return Ok(f);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("{}: cannot open: {e}", p.display())),
            }
        }
        if !told {
            told = true;
            let note = FileMsg::Note(format!("waiting for {} to appear", path.display()));
            if tx.blocking_send(note).is_err() {
                return Err(String::new());
            }
        }
        match watch.wait(stop) {
            Ok(Woke::Changed) => {}
            Ok(Woke::Stop) => return Err(String::new()),
            Err(e) => return Err(format!("{}: cannot watch: {e}", dir.display())),
        }
    }
}

fn follow_thread(path: &Path, tx: &mpsc::Sender<FileMsg>, stop: &Arc<OwnedFd>) {
    let file = match wait_for(path, tx, stop) {
        Ok(f) => f,
        Err(e) => {
            if !e.is_empty() {
                let _ = tx.blocking_send(FileMsg::Error(e));
            }
            return;
        }
    };
    let name = path.display().to_string();
    // The open file, whatever it is renamed to (`.partial` becomes its final name).
    let watch = match Watch::new(
        &PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd())),
        libc::IN_MODIFY | libc::IN_CLOSE_WRITE,
    ) {
        Ok(w) => w,
        Err(e) => {
            let _ = tx.blocking_send(FileMsg::Error(format!("{name}: cannot watch: {e}")));
            return;
        }
    };
    let out = Out::new(tx.clone());
    let tail = Tail {
        file,
        watch,
        stop: Arc::clone(stop),
        out: Rc::clone(&out),
    };
    let reader = match JsonlReader::new(&name, BufReader::with_capacity(1 << 16, tail)) {
        Ok(r) => AnyReader::Jsonl(r),
        Err(e) => {
            let _ = tx.blocking_send(FileMsg::Error(e.to_string()));
            return;
        }
    };
    if tx
        .blocking_send(FileMsg::Header(reader.header().clone()))
        .is_err()
    {
        return;
    }
    pump(reader, &out, true);
}
