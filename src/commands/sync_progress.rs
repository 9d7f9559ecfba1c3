//! Progress of `georep sync` on stderr, per region: blobs and bytes
//! uploaded, mounts and manifests pushed, and the upload rate. A line per
//! region redrawn in place on a terminal; on anything else a plain,
//! grep-able line per region every few seconds and once at the end.

use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::cli::ProgressMode;
use crate::engine::Engine;
use crate::engine::blob::human_bytes;

const TICK: Duration = Duration::from_millis(200);
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// Runs `work` while showing the engine's per-region counters.
pub async fn with_progress<T>(
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
    let base: Vec<[u64; 4]> = (0..names.len()).map(|r| engine.counter_values(r)).collect();
    let started = Instant::now();
    let line = |r: usize| {
        let now = engine.counter_values(r);
        let d: Vec<u64> = now.iter().zip(&base[r]).map(|(a, b)| a - b).collect();
        let secs = started.elapsed().as_secs_f64().max(1e-3);
        format!(
            "{} blobs, {}, {} mounts, {} manifests, {}/s",
            d[0],
            human_bytes(d[1]),
            d[2],
            d[3],
            human_bytes((d[1] as f64 / secs) as u64)
        )
    };
    let width = names.iter().map(String::len).max().unwrap_or(0);
    let bars: Vec<ProgressBar> = if mode == ProgressMode::Bars {
        let multi = MultiProgress::new();
        names
            .iter()
            .map(|n| {
                let b = multi.add(ProgressBar::new_spinner());
                b.set_style(
                    ProgressStyle::with_template("{prefix} {spinner} {msg} {elapsed}")
                        .expect("valid template"),
                );
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
