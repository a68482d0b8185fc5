//! `cargo xtask lab` progress on a terminal: which scenario of how many the guest is running,
//! from its `LAB:` console markers, refreshed in place. Nothing when stderr is not a terminal
//! or `CI` is set (the same rule as migscope's own `cli::progress`).

use std::cell::Cell;
use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

fn wanted() -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    std::io::stderr().is_terminal() && !ci && std::env::var("TERM").as_deref() != Ok("dumb")
}

pub struct Lab {
    bar: Option<ProgressBar>,
    kernel: &'static str,
    total: usize,
    started: Cell<usize>,
}

impl Lab {
    pub fn new(kernel: &'static str, total: usize) -> Self {
        let bar = wanted().then(|| {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4));
            b.set_style(
                ProgressStyle::with_template("{spinner} {elapsed_precise} {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b.enable_steady_tick(Duration::from_millis(250));
            b.set_message(format!("lab {kernel}: booting the VM"));
            b
        });
        Lab {
            bar,
            kernel,
            total,
            started: Cell::new(0),
        }
    }

    /// Follows one console line of the guest.
    pub fn line(&self, text: &str) {
        let Some(b) = &self.bar else { return };
        if let Some(name) = text.strip_prefix("LAB:START ") {
            self.started.set(self.started.get() + 1);
            b.set_message(format!(
                "lab {}: scenario {} of {}: {name}",
                self.kernel,
                self.started.get(),
                self.total
            ));
        } else if text.starts_with("LAB:READY") {
            b.set_message(format!("lab {}: VFIO and edu-mig ready", self.kernel));
        }
    }

    /// A line above the progress line.
    pub fn say(&self, line: &str) {
        match &self.bar {
            Some(b) => b.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
