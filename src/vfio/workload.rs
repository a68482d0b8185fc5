//! Workloads that keep a device doing DMA and raising interrupts up to and across a quiesce:
//! QEMU's `edu` DMA engine programmed through BAR0, an external command, or nothing.
//!
//! edu (QEMU `hw/misc/edu.c`): registers 0x80 src, 0x88 dst, 0x90 count, 0x98 cmd (1 run,
//! 2 edu->RAM, 4 interrupt on completion; writes are ignored while RUN is set), a 4 KiB buffer at
//! device address 0x40000, interrupt status 0x24 (DMA = 0x100), ack at 0x64, DMA addresses masked
//! to 28 bits. Each transfer fires from a 100 ms timer.

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::buffer::{DmaBuffer, PAGE};
use super::sys::DeviceIo;

pub mod edu {
    /// Identification, `0xRRrr00ed` (major, minor revision): its low 16 bits are [`ID_LOW`].
    pub const ID: u64 = 0x00;
    pub const ID_LOW: u32 = 0x00ed;
    /// The registers that hold the device's state, as migrated by edu-mig (`edu_snapshot`):
    /// liveness (reads back the complement of what was written), status (factorial interrupt
    /// enable), DMA source, destination, count and command. Read 32 bits wide: vfio-pci on 6.1
    /// splits an 8-byte BAR read into 4-byte ones (`vfio_pci_core_do_io_rw` has no 8-byte
    /// access there) and edu answers a 4-byte read of an upper half (0x84, ...) with all ones
    /// (`edu_mmio_read`), so only the low halves read the same on every kernel; edu's DMA
    /// addresses are 28 bits and its count at most 4096, so the low halves are the whole state.
    pub const STATE_REGS: &[u64] = &[0x04, 0x20, SRC, DST, CNT, CMD];
    pub const SRC: u64 = 0x80;
    pub const DST: u64 = 0x88;
    pub const CNT: u64 = 0x90;
    pub const CMD: u64 = 0x98;
    pub const IRQ_STATUS: u64 = 0x24;
    pub const IRQ_ACK: u64 = 0x64;
    pub const CMD_RUN: u64 = 1;
    pub const CMD_TO_RAM: u64 = 2;
    pub const CMD_IRQ: u64 = 4;
    pub const DMA_IRQ: u32 = 0x100;
    pub const BUF: u64 = 0x40000;
    /// Kept below 4096: QEMU 7.2's edu aborts the VM on a full-buffer transfer.
    pub const XFER: u64 = 2048;
    /// edu's default DMA mask: IOVAs must be below 2^28.
    pub const IOVA_LIMIT: u64 = 1 << 28;
}

/// The `--workload`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Workload {
    None,
    Edu,
    Exec(String),
}

impl Workload {
    pub fn parse(s: &str) -> Result<Workload, String> {
        match s {
            "none" => Ok(Workload::None),
            "edu" => Ok(Workload::Edu),
            _ => match s.strip_prefix("exec:") {
                Some(cmd) if !cmd.trim().is_empty() => Ok(Workload::Exec(cmd.to_owned())),
                _ => Err(format!(
                    "unknown workload `{s}` (expected edu, none or exec:CMD)"
                )),
            },
        }
    }
}

/// Devices whose in-flight transfers are tracked for the quiesce barrier.
pub const TRACKED_DEVICES: usize = 32;

/// Counters shared with the workload threads.
#[derive(Debug, Default)]
pub struct Counters {
    pub issued: AtomicU64,
    pub completed: AtomicU64,
    pub stalled: AtomicU64,
    pub errors: AtomicU64,
    pub irqs: AtomicU64,
    /// Per device (the job's tag): CLOCK_MONOTONIC ns when the transfer now running was
    /// started, 0 while the engine is idle.
    pub in_flight_since: [AtomicU64; TRACKED_DEVICES],
}

impl Counters {
    /// Waits (at most `limit`) until device `dev` has a transfer that started less than
    /// `fresh` ago, so a quiesce issued now finds DMA in flight (edu runs each transfer ~100 ms
    /// after its command). Returns whether it saw one.
    pub fn await_in_flight(&self, dev: usize, fresh: Duration, limit: Duration) -> bool {
        let Some(slot) = self.in_flight_since.get(dev) else {
            return false;
        };
        let end = Instant::now() + limit;
        loop {
            let since = slot.load(Ordering::Acquire);
            if since != 0 && super::now_ns().saturating_sub(since) < fresh.as_nanos() as u64 {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn started(&self, dev: u8) {
        if let Some(slot) = self.in_flight_since.get(usize::from(dev)) {
            slot.store(super::now_ns(), Ordering::Release);
        }
    }

    fn idle(&self, dev: u8) {
        if let Some(slot) = self.in_flight_since.get(usize::from(dev)) {
            slot.store(0, Ordering::Release);
        }
    }
}

impl Counters {
    pub fn summary(&self) -> String {
        format!(
            "dma issued {} completed {} stalled-polls {} errors {} msi {}",
            self.issued.load(Ordering::Relaxed),
            self.completed.load(Ordering::Relaxed),
            self.stalled.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
            self.irqs.load(Ordering::Relaxed)
        )
    }
}

/// One device's edu DMA loop: for transfer n, stamp a fresh pattern into `src`, copy it
/// RAM->edu, then edu->RAM into page n % pages of the witnessed `dst` with an interrupt.
pub struct EduJob {
    pub bar: Box<dyn DeviceIo>,
    pub src: Arc<DmaBuffer>,
    pub src_iova: u64,
    pub dst_iova: u64,
    pub dst_pages: u64,
    pub tag: u8,
}

/// Running workload threads; stop() joins them.
pub struct Running {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    child: Option<Child>,
    pub counters: Arc<Counters>,
}

impl Running {
    pub fn new() -> Running {
        Running {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            child: None,
            counters: Arc::new(Counters::default()),
        }
    }

    /// Counts interrupts arriving on `eventfd` until stopped, unmasking INTx after each.
    pub fn count_irqs(&mut self, eventfd: OwnedFd, unmask: Option<Box<dyn Fn() + Send>>) {
        let stop = Arc::clone(&self.stop);
        let c = Arc::clone(&self.counters);
        self.threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let mut pfd = libc::pollfd {
                    fd: eventfd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd, 50 ms timeout.
                let r = unsafe { libc::poll(&mut pfd, 1, 50) };
                if r > 0 {
                    let mut v = 0u64;
                    // SAFETY: an eventfd read writes exactly 8 bytes into `v`.
                    let n = unsafe {
                        libc::read(eventfd.as_raw_fd(), (&raw mut v).cast(), size_of::<u64>())
                    };
                    if n == 8 {
                        c.irqs.fetch_add(v, Ordering::Relaxed);
                        if let Some(u) = &unmask {
                            u();
                        }
                    }
                }
            }
        }));
    }

    pub fn start_edu(&mut self, job: EduJob) {
        let stop = Arc::clone(&self.stop);
        let c = Arc::clone(&self.counters);
        self.threads
            .push(std::thread::spawn(move || edu_loop(job, &stop, &c)));
    }

    /// Runs `sh -c cmd` with `$MIGSCOPE_DEVICES` (the devices, space separated) and `env`.
    pub fn start_exec(
        &mut self,
        cmd: &str,
        devices: &[String],
        env: &[(&str, String)],
    ) -> std::io::Result<()> {
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(cmd)
            .env("MIGSCOPE_DEVICES", devices.join(" "))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    /// Stops every thread (an edu transfer in progress is waited for up to 2 s) and the child.
    pub fn stop(mut self) -> Arc<Counters> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                // SAFETY: signalling the child we spawned, by its pid.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            }
            let _ = child.wait();
        }
        self.counters
    }
}

impl Default for Running {
    fn default() -> Self {
        Running::new()
    }
}

/// Waits until edu's RUN bit clears. A correct driver holds commands while quiesced, so long
/// waits are expected then: keep polling while the workload runs; give up only when stopping
/// and the grace period passed.
fn wait_idle(bar: &dyn DeviceIo, stop: &AtomicBool, c: &Counters) -> bool {
    let mut stop_seen: Option<Instant> = None;
    loop {
        match bar.read32(edu::CMD) {
            Ok(v) if u64::from(v) & edu::CMD_RUN == 0 => return true,
            Ok(_) => {}
            Err(_) => {
                c.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        if stop.load(Ordering::Relaxed) {
            let t = *stop_seen.get_or_insert_with(Instant::now);
            if t.elapsed() > Duration::from_secs(2) {
                return false;
            }
        }
        c.stalled.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn edu_loop(job: EduJob, stop: &AtomicBool, c: &Counters) {
    let bar = job.bar.as_ref();
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        // A pattern no page has held before: transfer number, device tag, then a fill.
        let mut pat = vec![(n as u8) ^ job.tag; edu::XFER as usize];
        pat[..8].copy_from_slice(&n.to_le_bytes());
        pat[8] = job.tag;
        if job.src.write(0, &pat).is_err() {
            c.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let dst = job.dst_iova + (n % job.dst_pages.max(1)) * PAGE as u64;
        let first = program(bar, job.src_iova, edu::BUF, edu::CMD_RUN, c);
        if first {
            c.started(job.tag);
        }
        let ok = first && wait_idle(bar, stop, c) && {
            c.idle(job.tag);
            program(
                bar,
                edu::BUF,
                dst,
                edu::CMD_RUN | edu::CMD_TO_RAM | edu::CMD_IRQ,
                c,
            )
        };
        if !ok {
            c.idle(job.tag);
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        c.started(job.tag);
        c.issued.fetch_add(1, Ordering::Relaxed);
        if wait_idle(bar, stop, c) {
            c.completed.fetch_add(1, Ordering::Relaxed);
        }
        c.idle(job.tag);
        if let Ok(st) = bar.read32(edu::IRQ_STATUS)
            && st & edu::DMA_IRQ != 0
        {
            let _ = bar.write32(edu::IRQ_ACK, edu::DMA_IRQ);
        }
    }
}

/// 32-bit accesses only: edu accepts 4 or 8 bytes at 0x80+, and vfio-pci may split 8-byte
/// BAR accesses into two 32-bit ones anyway (`vfio_pci_core_do_io_rw`); every address we use is
/// below 2^28, so the upper halves stay 0 (edu zero-extends a 32-bit write).
fn program(bar: &dyn DeviceIo, src: u64, dst: u64, cmd: u64, c: &Counters) -> bool {
    let r = bar
        .write32(edu::SRC, src as u32)
        .and_then(|_| bar.write32(edu::DST, dst as u32))
        .and_then(|_| bar.write32(edu::CNT, edu::XFER as u32))
        .and_then(|_| bar.write32(edu::CMD, cmd as u32));
    if r.is_err() {
        c.errors.fetch_add(1, Ordering::Relaxed);
    }
    r.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_workloads() {
        assert_eq!(Workload::parse("edu").unwrap(), Workload::Edu);
        assert_eq!(Workload::parse("none").unwrap(), Workload::None);
        assert_eq!(
            Workload::parse("exec:sleep 1").unwrap(),
            Workload::Exec("sleep 1".into())
        );
        assert!(Workload::parse("exec:").is_err());
        assert!(Workload::parse("fio").is_err());
    }

    #[test]
    fn quiesce_barrier_waits_for_a_fresh_transfer() {
        let c = Arc::new(Counters::default());
        // Idle engine: the barrier gives up after its limit.
        assert!(!c.await_in_flight(0, Duration::from_millis(40), Duration::from_millis(30)));
        // A transfer started long ago does not count; a fresh one does.
        c.in_flight_since[0].store(1, Ordering::Release);
        assert!(!c.await_in_flight(0, Duration::from_millis(40), Duration::from_millis(10)));
        let c2 = Arc::clone(&c);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            c2.started(0);
        });
        assert!(c.await_in_flight(0, Duration::from_millis(40), Duration::from_secs(5)));
        t.join().expect("thread");
        c.idle(0);
        assert_eq!(c.in_flight_since[0].load(Ordering::Acquire), 0);
        // Untracked devices never block.
        assert!(!c.await_in_flight(
            TRACKED_DEVICES,
            Duration::from_millis(40),
            Duration::from_secs(5)
        ));
    }

    #[test]
    fn exec_workload_is_stopped() {
        let mut r = Running::new();
        r.start_exec("sleep 30", &["0000:00:02.0".into()], &[])
            .expect("spawn sh");
        let t = Instant::now();
        r.stop();
        assert!(t.elapsed() < Duration::from_secs(30));
    }
}
