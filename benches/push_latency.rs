//! Push-to-every-region latency of the daemon.
//!
//! `cargo bench --bench push_latency` starts a primary whose notifications
//! go to `georep run`, and 3 replica regions; then pushes 50 images of one
//! 10 MiB layer each, one after the other. For each it measures the time
//! from the end of the push (the primary answered the manifest PUT) to the
//! daemon's outgoing `complete` notification (the image is in all 3
//! regions), received by a local endpoint. The baseline, measured in the
//! same run for each image right after, is a raw copy of the same image to
//! the 3 regions (one GET per blob streamed to 3 PUTs, then the manifest):
//! the time the copy itself takes on this machine with no notification,
//! queue or checks. Reports p50, p90, p99 and max of both, and the ratio.
//!
//! Knobs: GEOREP_LATENCY_PUSHES (50), GEOREP_LATENCY_LAYER_MIB (10),
//! GEOREP_LATENCY_REGIONS (3).
// A benchmark: a panic is its failure report.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use georep::lab::bench::{LocalSetup, client, env_u64, percentile, raw_copy_image};
use georep::lab::corpus::push_image;
use georep::lab::localreg::{LocalNotify, LocalOptions, free_port};

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(run());
}

/// Digest -> when its `complete` notification arrived, and the daemon's
/// own latency figure (from the primary's event timestamp).
type Arrivals = Arc<Mutex<std::collections::HashMap<String, (Instant, f64)>>>;

async fn sink() -> (String, Arrivals) {
    let got: Arrivals = Arc::default();
    let app = axum::Router::new().route(
        "/done",
        axum::routing::post({
            let got = got.clone();
            move |axum::Json(v): axum::Json<serde_json::Value>| {
                let got = got.clone();
                async move {
                    if let Some(d) = v["digest"].as_str() {
                        let own = v["latency_secs"].as_f64().unwrap_or(f64::NAN);
                        got.lock()
                            .unwrap()
                            .insert(d.to_owned(), (Instant::now(), own));
                    }
                    "ok"
                }
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/done", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (url, got)
}

async fn run() {
    let pushes = env_u64("GEOREP_LATENCY_PUSHES", 50) as usize;
    let layer = env_u64("GEOREP_LATENCY_LAYER_MIB", 10) << 20;
    let regions = env_u64("GEOREP_LATENCY_REGIONS", 3) as usize;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let (hook, arrivals) = sink().await;
    let setup = LocalSetup::start_with(
        dir.path(),
        regions,
        &format!(
            "listen: 127.0.0.1:{port}\npoll_interval_secs: 3600\nnotify:\n  - url: {hook}\n    events: [complete]\n"
        ),
        LocalOptions {
            notify: Some(LocalNotify {
                url: format!("http://127.0.0.1:{port}/v1/notifications"),
                authorization: None,
            }),
            ..LocalOptions::default()
        },
    )
    .await
    .unwrap();
    let mut daemon = tokio::process::Command::new(env!("CARGO_BIN_EXE_georep"))
        .args(["run", "--config", setup.config.to_str().unwrap()])
        .env(
            "GEOREP_LOG",
            std::env::var("GEOREP_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while http
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .map_or(true, |r| !r.status().is_success())
    {
        assert!(Instant::now() < deadline, "daemon did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let primary = client(&setup.primary.url()).unwrap();
    let replicas: Vec<_> = setup
        .replicas
        .iter()
        .map(|r| client(&r.url()).unwrap())
        .collect();
    let mut georep = Vec::new();
    let mut own = Vec::new();
    let mut raw = Vec::new();
    for i in 0..pushes {
        let tag = format!("v{i}");
        let m = push_image(&primary, "latency/app", &tag, layer, 10_000 + i as u64)
            .await
            .unwrap();
        let pushed = Instant::now();
        let key = m.digest.as_str().to_owned();
        let timeout = pushed + Duration::from_secs(60);
        let (arrived, daemon_secs) = loop {
            if let Some(a) = arrivals.lock().unwrap().get(&key).copied() {
                break a;
            }
            assert!(Instant::now() < timeout, "push {i} never completed");
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        georep.push(arrived.saturating_duration_since(pushed).as_secs_f64());
        own.push(daemon_secs);
        let t = raw_copy_image(&primary, &replicas, "latency/app", "baseline/app", &tag, &m)
            .await
            .unwrap();
        raw.push(t.as_secs_f64());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = daemon.kill().await;

    for v in [&mut georep, &mut own, &mut raw] {
        v.sort_by(f64::total_cmp);
    }
    println!(
        "push -> all {regions} regions, {pushes} pushes of a {} MiB image",
        layer >> 20
    );
    println!(
        "{:<34} {:>8} {:>8} {:>8} {:>8}",
        "", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    for (name, v) in [
        ("georep (push end -> complete)", &georep),
        ("georep (event time -> complete)", &own),
        ("raw copy baseline", &raw),
    ] {
        println!(
            "{name:<34} {:>8.0} {:>8.0} {:>8.0} {:>8.0}",
            percentile(v, 50.0) * 1e3,
            percentile(v, 90.0) * 1e3,
            percentile(v, 99.0) * 1e3,
            v.last().copied().unwrap_or(f64::NAN) * 1e3
        );
    }
    println!(
        "ratio georep / raw copy: p50 {:.2}, p99 {:.2}",
        percentile(&georep, 50.0) / percentile(&raw, 50.0),
        percentile(&georep, 99.0) / percentile(&raw, 99.0)
    );
}
