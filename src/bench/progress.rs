//! Progress of `georep bench` on stderr: a bar per phase on a terminal,
//! plain grep-able lines (at most one every few seconds per phase)
//! otherwise, or nothing.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

pub use crate::cli::ProgressMode;
use crate::engine::blob::human_bytes;

/// Between two plain progress lines of one phase.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// Starts phases.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    mode: ProgressMode,
}

impl Progress {
    pub fn new(mode: ProgressMode) -> Progress {
        Progress {
            mode: mode.resolve(),
        }
    }

    /// A phase moving `total` bytes (`None`: unknown, a spinner).
    pub fn phase(&self, name: &str, total: Option<u64>) -> Phase {
        let bar = (self.mode == ProgressMode::Bars).then(|| {
            let bar = match total {
                Some(t) => ProgressBar::new(t).with_style(
                    ProgressStyle::with_template(
                        "{prefix:>24} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} {elapsed:>4}",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                ),
                None => ProgressBar::new_spinner().with_style(
                    ProgressStyle::with_template("{prefix:>24} {spinner} {msg} {elapsed}")
                        .expect("valid template"),
                ),
            };
            bar.set_prefix(name.to_owned());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        if self.mode == ProgressMode::Plain {
            eprintln!("[bench] {name}: started");
        }
        Phase {
            name: name.to_owned(),
            total,
            mode: self.mode,
            bar,
            started: Instant::now(),
            last_line: Mutex::new(Instant::now()),
        }
    }

    /// A message between phases.
    pub fn note(&self, text: &str) {
        if self.mode != ProgressMode::None {
            eprintln!("[bench] {text}");
        }
    }
}

pub struct Phase {
    name: String,
    total: Option<u64>,
    mode: ProgressMode,
    bar: Option<ProgressBar>,
    started: Instant,
    last_line: Mutex<Instant>,
}

impl Phase {
    /// `done` bytes so far.
    pub fn set(&self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            return;
        }
        if self.mode != ProgressMode::Plain {
            return;
        }
        let mut last = self.last_line.lock().unwrap_or_else(|e| e.into_inner());
        if last.elapsed() < PLAIN_EVERY {
            return;
        }
        *last = Instant::now();
        let secs = self.started.elapsed().as_secs_f64();
        let rate = human_bytes((done as f64 / secs.max(1e-3)) as u64);
        match self.total {
            Some(t) if t > 0 => eprintln!(
                "[bench] {}: {} of {} uploaded ({:.0}%), {rate}/s, {secs:.0}s",
                self.name,
                human_bytes(done),
                human_bytes(t),
                done as f64 * 100.0 / t as f64
            ),
            _ => eprintln!("[bench] {}: {}, {secs:.0}s", self.name, human_bytes(done)),
        }
    }

    /// Ends the phase with a one-line outcome.
    pub fn finish(&self, outcome: &str) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if self.mode != ProgressMode::None {
            eprintln!(
                "[bench] {}: {outcome} ({:.1}s)",
                self.name,
                self.started.elapsed().as_secs_f64()
            );
        }
    }
}

impl Drop for Phase {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar
            && !bar.is_finished()
        {
            bar.finish_and_clear();
        }
    }
}
