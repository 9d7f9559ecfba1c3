//! Any-region mode, measured beside one-way mode in the same run.
//!
//! `cargo bench --bench any_region` runs two parts:
//!
//! 1. **Push latency.** One-way: a primary notifying `georep run`, and 2
//!    regions. Any-region: 3 writable regions, each notifying the daemon at
//!    its own path. Both copy each push to 2 registries. Each pushes
//!    `GEOREP_ANY_PUSHES` (20) images of one `GEOREP_ANY_LAYER_MIB` (10)
//!    MiB layer, one after the other (any-region: round robin over the
//!    regions), and measures from the end of the push (the manifest PUT
//!    answered) to the daemon's `complete` notification. Reports p50, p90,
//!    p99 and max of both, and their ratio.
//! 2. **Poll-mode reconcile cost.** 3 registries holding the same
//!    `GEOREP_ANY_TAGS` (10,000) tags, no notifications. An any-region
//!    daemon's second reconcile (the first records the base) against a
//!    one-way daemon's second reconcile over the same registries (one of
//!    them as the primary): wall time and the requests each registry
//!    logged during it.
// A benchmark: a panic is its failure report.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use georep::lab::bench::{LocalSetup, client, env_u64, people_client, percentile};
use georep::lab::corpus::push_image;
use georep::lab::localreg::{LocalNotify, LocalOptions, LocalRegistry, free_port};
use georep::registry::Registry;

const NAMES: [&str; 3] = ["us", "eu", "ap"];

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        push_latency().await;
        reconcile_cost().await;
    });
}

/// Digest -> when its `complete` notification arrived.
type Arrivals = Arc<Mutex<std::collections::HashMap<String, Instant>>>;

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
                        got.lock().unwrap().insert(d.to_owned(), Instant::now());
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

/// `georep run --config config`, ready.
async fn daemon(config: &Path, port: u16) -> tokio::process::Child {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_georep"))
        .args(["run", "--config", config.to_str().unwrap()])
        .env(
            "GEOREP_LOG",
            std::env::var("GEOREP_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .map_or(true, |r| !r.status().is_success())
    {
        assert!(Instant::now() < deadline, "daemon did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child
}

/// Pushes `n` images to `pushers` in turn; per push, seconds from the end
/// of the push to its `complete` notification.
async fn latencies(pushers: &[Registry], arrivals: &Arrivals, n: usize, layer: u64) -> Vec<f64> {
    let mut out = Vec::new();
    for i in 0..n {
        let reg = &pushers[i % pushers.len()];
        let m = push_image(
            reg,
            "latency/app",
            &format!("v{i}"),
            layer,
            50_000 + i as u64,
        )
        .await
        .unwrap();
        let pushed = Instant::now();
        let key = m.digest.as_str().to_owned();
        let deadline = pushed + Duration::from_secs(60);
        let arrived = loop {
            if let Some(a) = arrivals.lock().unwrap().get(&key).copied() {
                break a;
            }
            assert!(Instant::now() < deadline, "push {i} never completed");
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        out.push(arrived.saturating_duration_since(pushed).as_secs_f64());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    out.sort_by(f64::total_cmp);
    out
}

async fn push_latency() {
    let pushes = env_u64("GEOREP_ANY_PUSHES", 20) as usize;
    let layer = env_u64("GEOREP_ANY_LAYER_MIB", 10) << 20;

    // One-way: a primary and 2 regions.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let (hook, arrivals) = sink().await;
    let setup = LocalSetup::start_with(
        dir.path(),
        2,
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
    let mut d = daemon(&setup.config, port).await;
    let primary = [client(&setup.primary.url()).unwrap()];
    let one_way = latencies(&primary, &arrivals, pushes, layer).await;
    let _ = d.kill().await;
    drop(setup);

    // Any-region: 3 writable regions, pushes round robin.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let (hook, arrivals) = sink().await;
    let mut regs = Vec::new();
    for name in NAMES {
        regs.push(
            LocalRegistry::start(
                &dir.path().join(name),
                LocalOptions {
                    notify: Some(LocalNotify {
                        url: format!("http://127.0.0.1:{port}/v1/notifications/{name}"),
                        authorization: None,
                    }),
                    ..LocalOptions::default()
                },
            )
            .await
            .unwrap(),
        );
    }
    let config = any_region_config(
        dir.path(),
        &regs,
        &format!(
            "listen: 127.0.0.1:{port}\npoll_interval_secs: 3600\nnotify:\n  - url: {hook}\n    events: [complete]\n"
        ),
    );
    let mut d = daemon(&config, port).await;
    let pushers: Vec<Registry> = regs
        .iter()
        .map(|r| people_client(&r.url()).unwrap())
        .collect();
    let any = latencies(&pushers, &arrivals, pushes, layer).await;
    let _ = d.kill().await;

    println!(
        "push -> every other region (2 registries), {pushes} pushes of a {} MiB image",
        layer >> 20
    );
    println!(
        "{:<38} {:>8} {:>8} {:>8} {:>8}",
        "", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    for (name, v) in [
        ("one-way (primary -> 2 regions)", &one_way),
        ("any-region (any of 3 -> the other 2)", &any),
    ] {
        println!(
            "{name:<38} {:>8.0} {:>8.0} {:>8.0} {:>8.0}",
            percentile(v, 50.0) * 1e3,
            percentile(v, 90.0) * 1e3,
            percentile(v, 99.0) * 1e3,
            v.last().copied().unwrap_or(f64::NAN) * 1e3
        );
    }
    println!(
        "ratio any-region / one-way: p50 {:.2}, p99 {:.2}",
        percentile(&any, 50.0) / percentile(&one_way, 50.0),
        percentile(&any, 99.0) / percentile(&one_way, 99.0)
    );
}

fn any_region_config(dir: &Path, regs: &[LocalRegistry], extra: &str) -> std::path::PathBuf {
    let mut yaml = "state_dir: ./state-any\nmode: any-region\nregions:\n".to_owned();
    for (name, reg) in NAMES.iter().zip(regs) {
        yaml.push_str(&format!("  - name: {name}\n    url: {}\n", reg.url()));
    }
    yaml.push_str(extra);
    let path = dir.join("any-region.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Runs `georep reconcile` (which waits for the run) on `config`.
async fn reconcile(config: &Path) -> Duration {
    let t = Instant::now();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_georep"))
        .args(["reconcile", "--config", config.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed()
}

/// Requests each registry logged (settled).
async fn logged(regs: &[LocalRegistry]) -> Vec<usize> {
    let mut out = Vec::new();
    for r in regs {
        out.push(r.settled_requests().await.len());
    }
    out
}

/// Waits until the daemon's first reconcile (at start) has finished and
/// its queues are empty.
async fn first_reconcile_done(port: u16) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let s: serde_json::Value = http
            .get(format!("http://127.0.0.1:{port}/v1/status"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let done = s["reconcile"]["count"].as_u64().unwrap_or(0) >= 1
            && s["reconcile"]["running"] == false
            && s["regions"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["lag_items"] == 0 && r["in_flight"] == 0);
        if done {
            return;
        }
        assert!(Instant::now() < deadline, "the first reconcile never ended");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn reconcile_cost() {
    let tags = env_u64("GEOREP_ANY_TAGS", 10_000) as usize;
    let dir = tempfile::tempdir().unwrap();
    let mut regs = Vec::new();
    for name in NAMES {
        regs.push(
            LocalRegistry::start(&dir.path().join(name), LocalOptions::default())
                .await
                .unwrap(),
        );
    }
    // The same tags everywhere: one image, tagged `tags` times.
    let started = Instant::now();
    for reg in &regs {
        let c = people_client(&reg.url()).unwrap();
        let m = push_image(&c, "scale/app", "t0", 1024, 7).await.unwrap();
        let c = &c;
        let m = &m;
        futures::stream::iter(1..tags)
            .map(|i| async move { c.put_manifest("scale/app", &format!("t{i}"), m).await })
            .buffer_unordered(16)
            .for_each(|r| async move { r.unwrap() })
            .await;
    }
    eprintln!(
        "{tags} tags in each of 3 registries in {:.0}s",
        started.elapsed().as_secs_f64()
    );

    // Any-region: list all three.
    let port = free_port().unwrap();
    let config = any_region_config(
        dir.path(),
        &regs,
        &format!("listen: 127.0.0.1:{port}\npoll_interval_secs: 3600\naudit_interval_secs: 0\n"),
    );
    let mut d = daemon(&config, port).await;
    first_reconcile_done(port).await;
    let before = logged(&regs).await;
    let any_wall = reconcile(&config).await;
    let after = logged(&regs).await;
    let any_requests: Vec<usize> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    let _ = d.kill().await;

    // One-way over the same registries: `us` as the primary.
    let port = free_port().unwrap();
    let mut yaml = format!(
        "state_dir: ./state-one-way\nlisten: 127.0.0.1:{port}\npoll_interval_secs: 3600\naudit_interval_secs: 0\nprimary:\n  name: us\n  url: {}\nregions:\n",
        regs[0].url()
    );
    for (name, reg) in NAMES.iter().zip(&regs).skip(1) {
        yaml.push_str(&format!("  - name: {name}\n    url: {}\n", reg.url()));
    }
    let one_way_config = dir.path().join("one-way.yaml");
    std::fs::write(&one_way_config, yaml).unwrap();
    let mut d = daemon(&one_way_config, port).await;
    first_reconcile_done(port).await;
    let before = logged(&regs).await;
    let one_wall = reconcile(&one_way_config).await;
    let after = logged(&regs).await;
    let one_requests: Vec<usize> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    let _ = d.kill().await;

    println!("no-op reconcile, {tags} tags, 3 registries");
    println!(
        "{:<34} {:>8} {:>10} {:>10} {:>10}",
        "", "wall s", "us reqs", "eu reqs", "ap reqs"
    );
    for (name, wall, reqs) in [
        ("any-region (every region listed)", any_wall, &any_requests),
        ("one-way (us is the primary)", one_wall, &one_requests),
    ] {
        println!(
            "{name:<34} {:>8.2} {:>10} {:>10} {:>10}",
            wall.as_secs_f64(),
            reqs[0],
            reqs[1],
            reqs[2]
        );
    }
    println!(
        "ratio any-region / one-way wall: {:.2}",
        any_wall.as_secs_f64() / one_wall.as_secs_f64()
    );
}
