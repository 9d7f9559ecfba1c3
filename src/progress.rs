//! Progress on stderr, for `georep sync` (per region: blobs, bytes,
//! mounts, manifests, rate) and `georep bench` (a bar per phase): redrawn
//! in place on a terminal, plain grep-able lines (`[sync] …`, `[bench] …`)
//! every few seconds otherwise, or nothing.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::engine::{CopyCounts, Engine};
use crate::lock::Locked;
use crate::units::human_bytes;

/// Between two redraws of the sync's lines on a terminal.
const TICK: Duration = Duration::from_millis(200);
/// Between two plain progress lines (of one phase, or of the sync).
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// How `sync` and `bench` show progress on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// Bars when stderr is a terminal, plain lines otherwise.
    Auto,
    Bars,
    Plain,
    None,
}

impl ProgressMode {
    /// `Auto` decided: `Bars` on a terminal, else `Plain`.
    pub fn resolve(self) -> ProgressMode {
        use std::io::IsTerminal;
        match self {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Bars,
            ProgressMode::Auto => ProgressMode::Plain,
            m => m,
        }
    }
}

/// A line that moves without a known end: name, spinner, message, time.
fn spinner_style() -> ProgressStyle {
    // A constant template: it parses or this is a bug caught by any test
    // that shows progress.
    ProgressStyle::with_template("{prefix} {spinner} {msg} {elapsed}").expect("valid template")
}

/// A bar of bytes moved towards a known total.
fn bytes_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} {elapsed:>4}",
    )
    .expect("valid template")
    .progress_chars("=> ")
}

/// Runs `work` while showing the engine's per-region counters.
pub async fn sync_progress<T>(
    engine: &Engine,
    mode: ProgressMode,
    work: impl Future<Output = T>,
) -> T {
    let mode = mode.resolve();
    if mode == ProgressMode::None {
        return work.await;
    }
    let names: Vec<String> = engine
        .regions()
        .iter()
        .map(|r| r.name().to_owned())
        .collect();
    let base: Vec<CopyCounts> = (0..names.len()).map(|r| engine.copied(r)).collect();
    let started = Instant::now();
    let line = |r: usize| {
        let d = engine.copied(r) - base[r];
        let secs = started.elapsed().as_secs_f64().max(1e-3);
        format!(
            "{} blobs, {}, {} mounts, {} manifests, {}/s",
            d.blobs_uploaded,
            human_bytes(d.bytes_uploaded),
            d.blobs_mounted,
            d.manifests_pushed,
            human_bytes((d.bytes_uploaded as f64 / secs) as u64)
        )
    };
    let width = names.iter().map(String::len).max().unwrap_or(0);
    let bars: Vec<ProgressBar> = if mode == ProgressMode::Bars {
        let multi = MultiProgress::new();
        names
            .iter()
            .map(|n| {
                let b = multi.add(ProgressBar::new_spinner());
                b.set_style(spinner_style());
                b.set_prefix(format!("{n:>width$}"));
                b
            })
            .collect()
    } else {
        Vec::new()
    };
    let show = |final_line: bool| {
        for (r, name) in names.iter().enumerate() {
            match bars.get(r) {
                Some(b) => b.set_message(line(r)),
                None => eprintln!(
                    "[sync] {name}: {}{}",
                    line(r),
                    if final_line { " (done)" } else { "" }
                ),
            }
        }
    };
    let mut work = std::pin::pin!(work);
    let mut tick = tokio::time::interval(TICK);
    let mut last_plain = Instant::now();
    let out = loop {
        tokio::select! {
            out = &mut work => break out,
            _ = tick.tick() => {
                if !bars.is_empty() {
                    show(false);
                } else if last_plain.elapsed() >= PLAIN_EVERY {
                    last_plain = Instant::now();
                    show(false);
                }
            }
        }
    };
    for b in &bars {
        b.finish_and_clear();
    }
    if bars.is_empty() {
        show(true);
    }
    out
}

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
                Some(t) => ProgressBar::new(t).with_style(bytes_style()),
                None => ProgressBar::new_spinner().with_style(spinner_style()),
            };
            bar.set_prefix(format!("{name:>24}"));
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
        let mut last = self.last_line.locked();
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
