//! The `georep bench` comparison at `small` size: the raw baseline, a
//! georep cold sync, a no-op sync and (if installed) skopeo, on one corpus
//! and 3 local regions, every run verified. The figure to read is the
//! ratio georep / raw (and georep / skopeo), measured in the same run.
//!
//! `cargo bench --bench sync_throughput`; `GEOREP_BENCH_PRESET=medium` (or
//! `large`), `GEOREP_BENCH_REGIONS`, `GEOREP_BENCH_ROUNDS`,
//! `GEOREP_BENCH_SWEEP=1,2,4,8` and `GEOREP_BENCH_SVG=FILE` change that —
//! the same knobs as `georep bench --preset/--regions/--rounds/--sweep/--svg`.
// A benchmark: a panic is its failure report.
#![allow(clippy::unwrap_used)]

use georep::lab::bench::runner::{BenchOptions, Peer, run};
use georep::lab::corpus::{CorpusSpec, Preset};
use georep::progress::ProgressMode;

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; any other filter argument is ignored.
    let (preset, name) = match std::env::var("GEOREP_BENCH_PRESET").as_deref() {
        Ok("medium") => (Preset::Medium, "medium"),
        Ok("large") => (Preset::Large, "large"),
        _ => (Preset::Small, "small"),
    };
    let levels: Vec<usize> = std::env::var("GEOREP_BENCH_SWEEP")
        .unwrap_or_default()
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let opts = BenchOptions {
        georep: env!("CARGO_BIN_EXE_georep").into(),
        corpus_name: name.to_owned(),
        spec: CorpusSpec::preset(preset, 1),
        config: None,
        regions: env_or("GEOREP_BENCH_REGIONS", 3),
        port_base: None,
        dir: None,
        keep: false,
        levels,
        rounds: env_or("GEOREP_BENCH_ROUNDS", 1),
        skopeo: Peer::Auto,
        read_back: true,
        progress: ProgressMode::Plain,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let report = rt.block_on(run(&opts)).unwrap();
    if let Ok(path) = std::env::var("GEOREP_BENCH_SVG") {
        std::fs::write(&path, georep::lab::bench::output::svg(&report).unwrap()).unwrap();
    }
    print!("{}", georep::lab::bench::output::render(&report));
    assert!(report.ok(), "some run failed or was not verified");
}
