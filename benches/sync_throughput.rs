//! Cold-sync throughput of the `georep` binary against the raw baseline,
//! measured in the same run on the same corpus and registries.
//!
//! `cargo bench --bench sync_throughput` uses the `small` corpus and 3
//! regions; `GEOREP_BENCH_PRESET=medium` (or `large`), `GEOREP_BENCH_REGIONS`
//! and `GEOREP_BENCH_ROUNDS` change that, `GEOREP_BENCH_BIG_LAYER_MIB` adds
//! one layer of that size, `GEOREP_BENCH_RAW_CONCURRENCY` sets the
//! baseline's blobs in flight and `GEOREP_BENCH_EXTRA_YAML` appends config
//! keys to georep's config. Each round runs the raw baseline
//! and a georep cold sync (regions wiped before each), then one no-op sync.
//! The figure to read is the ratio georep / raw.

use std::time::Instant;

use georep::bench::{LocalSetup, client, raw_copy, replica_requests, run_sync};
use georep::corpus::{Corpus, CorpusSpec, Preset};
use georep::engine::blob::human_bytes;
use georep::localreg::LocalRegistry;
use georep::registry::Registry;

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; any other filter argument is ignored.
    let preset = match std::env::var("GEOREP_BENCH_PRESET").as_deref() {
        Ok("medium") => Preset::Medium,
        Ok("large") => Preset::Large,
        Ok("test") => Preset::Test,
        _ => Preset::Small,
    };
    let regions: usize = env_or("GEOREP_BENCH_REGIONS", 3);
    let rounds: usize = env_or("GEOREP_BENCH_ROUNDS", 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(run(preset, regions, rounds));
}

async fn run(preset: Preset, n_regions: usize, rounds: usize) {
    let dir = tempfile::tempdir().unwrap();
    // Extra config keys to experiment with (e.g. concurrency settings).
    let extra = std::env::var("GEOREP_BENCH_EXTRA_YAML").unwrap_or_default();
    let LocalSetup {
        primary,
        mut replicas,
        config,
    } = LocalSetup::start(dir.path(), n_regions, &extra)
        .await
        .unwrap();
    let mut spec = CorpusSpec::preset(preset, 1);
    // One extra layer of this many MiB, to show memory does not follow blob size.
    if let Some(mib) = std::env::var("GEOREP_BENCH_BIG_LAYER_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        spec.big_layers = 1;
        spec.big_layer_bytes = (mib << 20, (mib << 20) + 1);
    }
    let corpus = Corpus::generate(&spec).await;
    let bytes = corpus.unique_blob_bytes();
    let t = Instant::now();
    corpus.push(&client(&primary.url()).unwrap()).await.unwrap();
    eprintln!(
        "corpus {preset:?}: {} tags, {} unique blobs, {} (pushed in {:.1}s); {n_regions} regions",
        corpus.tags.len(),
        corpus.unique_blobs(),
        human_bytes(bytes),
        t.elapsed().as_secs_f64()
    );

    let mib = bytes as f64 / (1024.0 * 1024.0);
    let raw_concurrency: usize = env_or(
        "GEOREP_BENCH_RAW_CONCURRENCY",
        georep::config::DEFAULT_MAX_CONCURRENT_BLOBS,
    );
    let mut ratios = Vec::new();
    let row = |run: &str, secs: f64, ratio: &str, cpu: f64, reg_cpu: f64, rss: &str| {
        println!(
            "{run:<14} {secs:>8.2} {:>9.1} {ratio:>7} {cpu:>8.2} {reg_cpu:>9.2} {rss:>10}",
            mib / secs
        );
    };
    println!(
        "{:<14} {:>8} {:>9} {:>7} {:>8} {:>9} {:>10}",
        "run", "wall s", "MiB/s", "ratio", "cpu s", "reg cpu s", "peak RSS"
    );
    for round in 1..=rounds {
        for r in &mut replicas {
            r.wipe().await.unwrap();
        }
        let region_clients: Vec<Registry> =
            replicas.iter().map(|r| client(&r.url()).unwrap()).collect();
        let reg0 = registries_cpu(&primary, &replicas);
        let cpu0 = georep::engine::report::cpu_secs().unwrap_or(0.0);
        let raw = raw_copy(
            &client(&primary.url()).unwrap(),
            &region_clients,
            &corpus,
            raw_concurrency,
        )
        .await
        .unwrap();
        let raw_secs = raw.elapsed.as_secs_f64();
        row(
            &format!("raw #{round}"),
            raw_secs,
            "1.00",
            georep::engine::report::cpu_secs().unwrap_or(0.0) - cpu0,
            registries_cpu(&primary, &replicas) - reg0,
            "-",
        );

        for r in &mut replicas {
            r.wipe().await.unwrap();
        }
        // The regions were wiped behind georep's back: its store must go too
        // (a real operator would run `georep sync --rebuild-state`).
        let _ = std::fs::remove_dir_all(dir.path().join("state"));
        let reg0 = registries_cpu(&primary, &replicas);
        let (secs, report) = georep_sync(&config).await;
        let ratio = raw_secs / secs;
        ratios.push(ratio);
        row(
            &format!("georep #{round}"),
            secs,
            &format!("{ratio:.2}"),
            report["cpu_secs"].as_f64().unwrap_or(0.0),
            registries_cpu(&primary, &replicas) - reg0,
            &human_bytes(report["peak_rss_bytes"].as_u64().unwrap_or(0)),
        );
    }
    let (secs, report) = georep_sync(&config).await;
    let replica_requests = replica_requests(&report);
    println!(
        "{:<14} {secs:>8.2} {:>9} {:>7} {:>8.2} {:>9} {:>10}   {replica_requests} requests to replicas",
        "georep no-op",
        "-",
        "-",
        report["cpu_secs"].as_f64().unwrap_or(0.0),
        "-",
        human_bytes(report["peak_rss_bytes"].as_u64().unwrap_or(0)),
    );
    let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
    println!(
        "georep / raw throughput: {mean:.2} (mean of {} rounds; cpu s = the copying process, reg cpu s = all registries)",
        ratios.len()
    );
}

fn registries_cpu(primary: &LocalRegistry, replicas: &[LocalRegistry]) -> f64 {
    std::iter::once(primary)
        .chain(replicas)
        .filter_map(|r| r.cpu_secs())
        .sum()
}

async fn georep_sync(config: &std::path::Path) -> (f64, serde_json::Value) {
    run_sync(std::path::Path::new(env!("CARGO_BIN_EXE_georep")), config)
        .await
        .unwrap()
}
