//! The one stop path: SIGINT, SIGTERM, `q` in the view, `--duration`, the traced process
//! exiting: each only *asks* the session to stop; the session then ends every command the same
//! way (sources stop, the controller returns every device to RUNNING, the trace is completed
//! with `end`, the terminal is restored).

use std::os::fd::{FromRawFd as _, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;

/// A request to stop, shared by everything that may ask for one.
#[derive(Clone, Default)]
pub struct Stop {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The controller checks this between steps ([`crate::vfio::Options::stop`]).
    flag: Arc<AtomicBool>,
    why: Mutex<Option<String>>,
    notify: Notify,
}

impl Stop {
    pub fn new() -> Stop {
        Stop::default()
    }

    /// The flag the controller polls between plan steps.
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.inner.flag)
    }

    /// Asks the session to stop; the first reason is kept.
    pub fn request(&self, why: &str) {
        if let Ok(mut w) = self.inner.why.lock()
            && w.is_none()
        {
            *w = Some(why.to_owned());
        }
        self.inner.flag.store(true, Ordering::SeqCst);
        self.inner.notify.notify_one();
    }

    pub fn requested(&self) -> bool {
        self.inner.flag.load(Ordering::SeqCst)
    }

    /// Why a stop was asked for, if it was.
    pub fn why(&self) -> Option<String> {
        self.inner.why.lock().ok().and_then(|w| w.clone())
    }

    /// Resolves once a stop was asked for.
    pub async fn requested_async(&self) {
        while !self.requested() {
            self.inner.notify.notified().await;
        }
    }
}

/// A pidfd for `pid`: readable once the process exits.
pub fn pid_exit(pid: u32) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh pidfd this function owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: the OwnedFd is moved into the AsyncFd, which keeps it open until dropped.
    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(Into::into)
}
