//! Rate limits against real registries, measured by a proxy in front of
//! the limited region: bandwidth, request rate, and `429` with
//! `Retry-After`.
// A test: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::proxy::{Faults, Proxy};
use common::*;
use georep::lab::corpus::push_image;
use georep::registry::Scope;

const MIB: f64 = (1 << 20) as f64;

/// Pushes a corpus, syncs it to the cluster's one region through a proxy
/// with `faults`, checks the region, and returns the proxy (its traffic).
async fn sync_through(cluster: &Cluster, seed: u64, faults: Faults, extra: &str) -> Proxy {
    let corpus = push_corpus(&cluster.primary.url(), &quick_spec(seed)).await;
    let proxy = Proxy::start(&cluster.replicas[0].url(), faults).await;
    let config = cluster.config(
        &cluster.primary.url(),
        std::slice::from_ref(&proxy.url),
        extra,
    );
    let (code, report) = sync_json(&config, &[]).await;
    assert_eq!(code, 0, "{report:#}");
    verify_region(&cluster.primary.url(), &cluster.replicas[0].url(), &corpus)
        .await
        .unwrap();
    proxy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limited_region_gets_its_rate_and_the_other_is_not_slowed() {
    let cluster = Cluster::start(2).await;
    let proxy = Proxy::start(&cluster.replicas[0].url(), Faults::default()).await;
    let primary = client(&cluster.primary.url());
    let mut images = Vec::new();
    for i in 0..3 {
        let repo = format!("bw/app{i}");
        images.push((
            repo.clone(),
            push_image(&primary, &repo, "v1", 30 << 20, 40 + i)
                .await
                .unwrap(),
        ));
    }
    let yaml = format!(
        "state_dir: ./state\nprimary:\n  name: westeurope\n  url: {}\nregions:\n  - name: eastus\n    url: {}\n    max_bytes_per_sec: 8MiB\n  - name: japaneast\n    url: {}\n",
        cluster.primary.url(),
        proxy.url,
        cluster.replicas[1].url()
    );
    let config = cluster.dir.path().join("limited.yaml");
    std::fs::write(&config, yaml).unwrap();

    let started = Instant::now();
    let sync = tokio::spawn({
        let config = config.clone();
        async move { sync_json(&config, &[]).await }
    });
    let fast = client(&cluster.replicas[1].url());
    wait_for(
        "the unlimited region",
        Duration::from_secs(60),
        async || {
            for (repo, m) in &images {
                match fast.head_manifest(repo, "v1", &Scope::pull(repo)).await {
                    Ok(Some(h)) if h.digest == m.digest => {}
                    _ => return false,
                }
            }
            true
        },
    )
    .await;
    let fast_secs = started.elapsed().as_secs_f64();
    let (code, report) = sync.await.unwrap();
    assert_eq!(code, 0, "{report:#}");
    let limited_secs = started.elapsed().as_secs_f64();
    for (repo, m) in &images {
        let h = client(&cluster.replicas[0].url())
            .head_manifest(repo, "v1", &Scope::pull(repo))
            .await
            .unwrap();
        assert_eq!(h.map(|h| h.digest), Some(m.digest.clone()));
    }

    let (bytes, rate) = proxy.traffic.lock().unwrap().upload_rate();
    eprintln!(
        "limited region: {:.1} MiB at {:.2} MiB/s ({limited_secs:.1}s); unlimited region done after {fast_secs:.1}s",
        bytes as f64 / MIB,
        rate / MIB
    );
    assert!(bytes as f64 >= 90.0 * MIB, "{bytes}");
    assert!(
        (rate / MIB - 8.0).abs() <= 0.8,
        "rate {:.2} MiB/s is not within 10% of 8",
        rate / MIB
    );
    assert!(
        fast_secs < limited_secs / 2.0,
        "the unlimited region took {fast_secs:.1}s of the limited one's {limited_secs:.1}s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_rate_limit_holds() {
    let cluster = Cluster::start(1).await;
    let proxy = Proxy::start(&cluster.replicas[0].url(), Faults::default()).await;
    let corpus = push_corpus(&cluster.primary.url(), &quick_spec(61)).await;
    let config = cluster.config(
        &cluster.primary.url(),
        std::slice::from_ref(&proxy.url),
        "limits:\n  max_requests_per_sec: 40\n",
    );
    let (code, report) = sync_json(&config, &[]).await;
    assert_eq!(code, 0, "{report:#}");
    verify_region(&cluster.primary.url(), &cluster.replicas[0].url(), &corpus)
        .await
        .unwrap();
    let t = proxy.traffic.lock().unwrap();
    let n = t.requests.len();
    let span = t.requests[n - 1]
        .0
        .duration_since(t.requests[0].0)
        .as_secs_f64();
    // The burst (a tenth of a second's worth) may pass at once.
    let rate = (n as f64 - 4.0) / span;
    eprintln!("{n} requests in {span:.2}s: {rate:.1}/s (limit 40/s)");
    assert!(n > 80, "too few requests to measure: {n}");
    assert!(rate <= 44.0, "{rate:.1} requests/s over a limit of 40");
    assert!(
        rate >= 28.0,
        "{rate:.1} requests/s: the limit slowed georep more than it should"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_pauses_every_request_to_that_registry() {
    let cluster = Cluster::start(1).await;
    let faults = Faults {
        busy_until: Some((Instant::now() + Duration::from_secs(3), 2)),
        ..Faults::default()
    };
    let proxy = sync_through(&cluster, 62, faults, "max_attempts: 6\n").await;

    // After a 429, nothing reaches the registry until its Retry-After has
    // passed (requests already on their way when it was sent excepted).
    let t = proxy.traffic.lock().unwrap();
    let refused: Vec<Instant> = t
        .requests
        .iter()
        .filter(|r| r.3 == 429)
        .map(|r| r.0)
        .collect();
    assert!(!refused.is_empty());
    for at in &refused {
        let early: Vec<_> = t
            .requests
            .iter()
            .filter(|r| {
                r.0 > *at + Duration::from_millis(200) && r.0 < *at + Duration::from_millis(1900)
            })
            .map(|r| format!("{} {}", r.1, r.2))
            .collect();
        assert!(early.is_empty(), "requests during the pause: {early:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_slower_than_its_peers_leaves_the_shared_read() {
    let cluster = Cluster::start(2).await;
    // No configured limit: the region is just slow (a 6 MiB/s link).
    let slow = Proxy::start(
        &cluster.replicas[0].url(),
        Faults {
            slow_uploads: Some(6 << 20),
            ..Faults::default()
        },
    )
    .await;
    let fast = Proxy::start(&cluster.replicas[1].url(), Faults::default()).await;
    let m = push_image(
        &client(&cluster.primary.url()),
        "drift/app",
        "v1",
        40 << 20,
        77,
    )
    .await
    .unwrap();
    let config = cluster.config(
        &cluster.primary.url(),
        &[slow.url.clone(), fast.url.clone()],
        "",
    );
    let started = Instant::now();
    let (code, report) = sync_json(&config, &[]).await;
    assert_eq!(code, 0, "{report:#}");
    let layer_put = |p: &Proxy| {
        p.traffic
            .lock()
            .unwrap()
            .answered
            .iter()
            .filter(|r| {
                r.1 == axum::http::Method::PUT && r.2.contains("/blobs/uploads/") && r.3 == 201
            })
            .map(|r| r.0.duration_since(started).as_secs_f64())
            .fold(0.0, f64::max)
    };
    let (fast_done, slow_done) = (layer_put(&fast), layer_put(&slow));
    let (slow_bytes, _) = slow.traffic.lock().unwrap().upload_rate();
    eprintln!(
        "fast region's blobs done at {fast_done:.1}s, slow region's at {slow_done:.1}s; the slow link carried {:.1} MiB for a {:.0} MiB layer",
        slow_bytes as f64 / MIB,
        40.0
    );
    assert!(
        fast_done < slow_done / 2.0,
        "the fast region waited for the slow one"
    );
    // It left the shared read after about a second (plus what the socket
    // buffers held) and sent the layer again on its own read.
    assert!(
        slow_bytes as f64 > 40.0 * MIB && (slow_bytes as f64) < 60.0 * MIB,
        "{slow_bytes}"
    );
    let h = client(&cluster.replicas[0].url())
        .head_manifest("drift/app", "v1", &Scope::pull("drift/app"))
        .await
        .unwrap();
    assert_eq!(h.map(|h| h.digest), Some(m.digest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_429s_lower_the_concurrency_below_the_quota() {
    let cluster = Cluster::start(1).await;
    let faults = Faults {
        max_in_flight: Some(3),
        ..Faults::default()
    };
    let proxy = sync_through(&cluster, 63, faults, "max_attempts: 10\n").await;
    let t = proxy.traffic.lock().unwrap();
    let n = t.requests.len();
    let refused = |rs: &[(Instant, axum::http::Method, String, u16)]| {
        rs.iter().filter(|r| r.3 == 429).count()
    };
    let (first, second) = t.requests.split_at(n / 2);
    eprintln!(
        "{n} requests; 429s in the first half {}, in the second half {}",
        refused(first),
        refused(second)
    );
    assert!(refused(first) > 0, "the quota was never hit");
    // Without adapting, requests sent up to 16 at once against a quota of
    // 3 would keep being refused; once settled, almost none are.
    assert!(
        refused(second) * 2 <= refused(first) + 4 && refused(second) * 10 <= second.len(),
        "georep did not settle below the quota"
    );
}
