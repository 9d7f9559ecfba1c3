//! Backfill through the daemon's queue, against `georep sync` of the same
//! corpus in the same run.
//!
//! `cargo bench --bench daemon_backfill` pushes a corpus to a local primary
//! (`GEOREP_BENCH_PRESET`, default `small`; or `GEOREP_SCALE_TAGS=N` small
//! manifests), then, with 2 empty regions each time:
//! 1. `georep sync` (cold) — the baseline;
//! 2. `georep run` started on an empty store: its start-up reconcile queues
//!    every tag for every region and the workers copy them; timed until
//!    `/v1/status` shows no lag anywhere.
//!
//! Reports both wall times, the ratio, and the daemon's peak RSS, then
//! checks with a no-op `georep sync` that the daemon left nothing to do.
// A benchmark: a panic is its failure report.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use georep::lab::bench::{LocalSetup, client, replica_requests, run_sync};
use georep::lab::corpus::{Corpus, CorpusSpec, Preset};
use georep::lab::localreg::free_port;

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(run());
}

/// Requests the replicas logged, by method and the kind of path.
fn logged_requests(
    replicas: &[georep::lab::localreg::LocalRegistry],
) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for r in replicas {
        for (method, uri, _) in r.requests() {
            let kind = if uri.contains("/blobs/uploads") {
                "uploads"
            } else if uri.contains("/blobs/") {
                "blobs"
            } else if uri.contains("/manifests/") {
                "manifests"
            } else if uri.contains("/tags/list") {
                "tags"
            } else {
                "other"
            };
            *out.entry(format!("{method} {kind}")).or_default() += 1;
        }
    }
    out
}

fn spec() -> CorpusSpec {
    if let Some(tags) = std::env::var("GEOREP_SCALE_TAGS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        return CorpusSpec::scale((tags / 10).max(1), 10, 1);
    }
    let preset = match std::env::var("GEOREP_BENCH_PRESET").as_deref() {
        Ok("medium") => Preset::Medium,
        Ok("large") => Preset::Large,
        _ => Preset::Small,
    };
    CorpusSpec::preset(preset, 1)
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let LocalSetup {
        primary,
        mut replicas,
        config,
    } = LocalSetup::start(
        dir.path(),
        2,
        &format!("listen: 127.0.0.1:{port}\npoll_interval_secs: 3600"),
    )
    .await
    .unwrap();
    let corpus = Corpus::generate(&spec()).await;
    corpus.push(&client(&primary.url()).unwrap()).await.unwrap();
    let mib = corpus.unique_blob_bytes() as f64 / (1 << 20) as f64;
    eprintln!(
        "corpus: {} tags, {} unique blobs, {mib:.0} MiB",
        corpus.tags.len(),
        corpus.unique_blobs()
    );
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_georep"));
    let (sync_secs, sync_report) = run_sync(bin, &config).await.unwrap();
    let sync_cpu = sync_report["cpu_secs"].as_f64().unwrap_or(f64::NAN);
    let sync_requests = logged_requests(&replicas);

    for r in &mut replicas {
        r.wipe().await.unwrap();
    }
    std::fs::remove_dir_all(dir.path().join("state")).unwrap();

    let t = Instant::now();
    let mut daemon = tokio::process::Command::new(bin)
        .args(["run", "--config", config.to_str().unwrap()])
        .env(
            "GEOREP_LOG",
            std::env::var("GEOREP_BENCH_DAEMON_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = daemon.id().unwrap().to_string();
    let http = reqwest::Client::new();
    let status_url = format!("http://127.0.0.1:{port}/v1/status");
    let mut peak_rss_kib = 0u64;
    loop {
        assert!(
            t.elapsed() < Duration::from_secs(3600),
            "backfill never finished"
        );
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            let hwm = s
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            peak_rss_kib = peak_rss_kib.max(hwm);
        }
        let status: Option<serde_json::Value> = match http.get(&status_url).send().await {
            Ok(r) => r.json().await.ok(),
            Err(_) => None,
        };
        if let Some(s) = status {
            let reconciled = s["reconcile"]["count"].as_u64().unwrap_or(0) >= 1;
            let idle = s["regions"]
                .as_array()
                .is_some_and(|rs| rs.iter().all(|r| r["lag_items"] == 0));
            if reconciled && idle {
                break;
            }
        }
        // Not too often: a status read costs the daemon a pass over its queue.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let daemon_secs = t.elapsed().as_secs_f64();
    let daemon_requests = logged_requests(&replicas);
    let daemon_cpu = georep::resources::process_cpu_secs(&pid).unwrap_or(f64::NAN);
    // A graceful stop, as an operator would: the store is flushed.
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let _ = daemon.wait().await;

    let (_, report) = run_sync(bin, &config).await.unwrap();
    let left = replica_requests(&report);

    println!(
        "{:<24} {:>7} {:>7} {:>7}  replica requests",
        "run", "wall s", "MiB/s", "cpu s"
    );
    for (name, secs, cpu, requests) in [
        (
            "georep sync (baseline)",
            sync_secs,
            sync_cpu,
            &sync_requests,
        ),
        (
            "georep run backfill",
            daemon_secs,
            daemon_cpu,
            &daemon_requests,
        ),
    ] {
        println!(
            "{name:<24} {secs:>7.2} {:>7.1} {cpu:>7.2}  {requests:?}",
            mib / secs
        );
    }
    println!(
        "ratio run / sync: {:.2}; daemon peak RSS {:.0} MiB; requests to replicas in a no-op sync afterwards: {left}",
        daemon_secs / sync_secs,
        peak_rss_kib as f64 / 1024.0
    );
}
