//! Accuracy and cost of the bandwidth limit.
//!
//! `cargo bench --bench rate_limits`, one region:
//! 1. for 1, 8 and 64 MiB/s: a one-layer image of about 8 seconds' worth
//!    at that rate, copied by a cold `georep sync` with the region's
//!    `max_bytes_per_sec` set; reports the achieved rate (layer bytes /
//!    wall time of the pass, so slightly under the limit by the pass's
//!    fixed costs) and its ratio to the limit;
//! 2. the `small` corpus copied with no limit, and with a limit far above
//!    what the machine can do (metering on, never binding), alternately,
//!    `GEOREP_BENCH_ROUNDS` times (default 3): georep's CPU seconds and wall
//!    time for each, and the ratio — the limiter's cost at full speed.
// A benchmark: a panic is its failure report.
#![allow(clippy::unwrap_used)]

use georep::lab::bench::{LocalSetup, client, run_sync};
use georep::lab::corpus::{Corpus, CorpusSpec, Preset, push_image};

const MIB: u64 = 1 << 20;

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(run());
}

async fn setup(dir: &std::path::Path, extra: &str) -> LocalSetup {
    LocalSetup::start(dir, 1, extra).await.unwrap()
}

async fn run() {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_georep"));
    println!(
        "{:<10} {:>10} {:>10} {:>8}",
        "limit", "layer MiB", "MiB/s", "ratio"
    );
    for rate in [1u64, 8, 64] {
        let dir = tempfile::tempdir().unwrap();
        let s = setup(dir.path(), "").await;
        let layer = rate * MIB * 8;
        push_image(
            &client(&s.primary.url()).unwrap(),
            "rate/app",
            "v1",
            layer,
            rate,
        )
        .await
        .unwrap();
        // Only the region is limited.
        let limited = format!(
            "state_dir: ./state\nprimary:\n  name: primary\n  url: {}\nregions:\n  - name: r0\n    url: {}\n    max_bytes_per_sec: {rate}MiB\n",
            s.primary.url(),
            s.replicas[0].url()
        );
        std::fs::write(&s.config, limited).unwrap();
        let (secs, _) = run_sync(bin, &s.config).await.unwrap();
        let achieved = layer as f64 / MIB as f64 / secs;
        println!(
            "{:<10} {:>10} {:>10.2} {:>8.3}",
            format!("{rate} MiB/s"),
            layer / MIB,
            achieved,
            achieved / rate as f64
        );
    }

    let rounds: usize = std::env::var("GEOREP_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "").await;
    let corpus = Corpus::generate(&CorpusSpec::preset(Preset::Small, 1)).await;
    corpus
        .push(&client(&s.primary.url()).unwrap())
        .await
        .unwrap();
    let plain = std::fs::read_to_string(&s.config).unwrap();
    let metered = format!("{plain}limits:\n  max_bytes_per_sec: 100GiB\n");
    let mib = corpus.unique_blob_bytes() as f64 / MIB as f64;
    println!(
        "\n{:<22} {:>8} {:>8} {:>8}   ({mib:.0} MiB, 1 region)",
        "run", "wall s", "MiB/s", "cpu s"
    );
    let mut cpu = [0.0f64; 2];
    for _ in 0..rounds {
        for (i, (name, yaml)) in [("no limit", &plain), ("limit on, not binding", &metered)]
            .into_iter()
            .enumerate()
        {
            for r in &mut s.replicas {
                r.wipe().await.unwrap();
            }
            let _ = std::fs::remove_dir_all(dir.path().join("state"));
            std::fs::write(&s.config, yaml).unwrap();
            let (secs, report) = run_sync(bin, &s.config).await.unwrap();
            let c = report["cpu_secs"].as_f64().unwrap_or(f64::NAN);
            cpu[i] += c;
            println!("{name:<22} {secs:>8.2} {:>8.1} {c:>8.2}", mib / secs);
        }
    }
    println!(
        "limiter CPU cost at full speed: {:.3}x (georep CPU seconds, limit on / off, {rounds} rounds)",
        cpu[1] / cpu[0]
    );
}
