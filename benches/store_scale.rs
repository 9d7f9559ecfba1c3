//! Scale of the checkpoint store: a no-op pass over many tags.
//!
//! `cargo bench --bench store_scale` pushes 1,000 tags (100 repositories of
//! 10 small manifests) to a local primary, syncs them to 2 regions, then runs
//! no-op passes and reports: wall time, georep's CPU time, the time the
//! primary's listing alone takes (catalog, tags/list, a HEAD per tag, with
//! georep's client and concurrency), requests sent to replicas (must be 0)
//! and peak RSS. `GEOREP_SCALE_TAGS=10000` runs 10,000 tags in 1,000
//! repositories (several minutes: pushing and the first sync dominate).
// A benchmark: a panic is its failure report.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use georep::lab::bench::{LocalSetup, client, listing_alone, replica_requests, run_sync};
use georep::lab::corpus::{Corpus, CorpusSpec};
use georep::units::human_bytes;

fn main() {
    let tags: usize = std::env::var("GEOREP_SCALE_TAGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(run(tags));
}

async fn run(tags: usize) {
    let repos = (tags / 10).max(1);
    let dir = tempfile::tempdir().unwrap();
    let LocalSetup {
        primary,
        replicas: _replicas,
        config,
    } = LocalSetup::start(dir.path(), 2, "").await.unwrap();
    let corpus = Corpus::generate(&CorpusSpec::scale(repos, 10, 1)).await;
    let t = Instant::now();
    corpus.push(&client(&primary.url()).unwrap()).await.unwrap();
    eprintln!(
        "pushed {} tags in {repos} repositories in {:.1}s",
        corpus.tags.len(),
        t.elapsed().as_secs_f64()
    );

    let (secs, report) = sync(&config).await;
    println!(
        "{:<16} {:>8} {:>8} {:>10} {:>10}",
        "run", "wall s", "cpu s", "peak RSS", "replica requests"
    );
    line("cold sync", secs, &report);

    // The primary's listing alone, as georep lists it.
    let (listing, listed) = listing_alone(&primary.url()).await.unwrap();
    println!(
        "{:<16} {listing:>8.2} {:>8} {:>10} {:>10}   ({listed} tags)",
        "listing alone", "-", "-", "-"
    );

    for i in 1..=2 {
        let (secs, report) = sync(&config).await;
        line(&format!("no-op sync #{i}"), secs, &report);
        println!(
            "{:<16} {:>8.2}   wall beyond the listing",
            "",
            secs - listing
        );
    }
}

fn line(name: &str, secs: f64, report: &serde_json::Value) {
    let replica_requests = replica_requests(report);
    println!(
        "{name:<16} {secs:>8.2} {:>8.2} {:>10} {replica_requests:>10}",
        report["cpu_secs"].as_f64().unwrap_or(0.0),
        human_bytes(report["peak_rss_bytes"].as_u64().unwrap_or(0)),
    );
}

async fn sync(config: &std::path::Path) -> (f64, serde_json::Value) {
    run_sync(std::path::Path::new(env!("CARGO_BIN_EXE_georep")), config)
        .await
        .unwrap()
}
