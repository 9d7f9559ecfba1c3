//! A region's registry stopped for a while during a steady stream of
//! pushes: the live regions' replication latency does not change (measured
//! before and during the outage), the stopped region's backlog waits —
//! across a restart of the daemon meanwhile — and it catches up when the
//! region returns.
//!
//! `GEOREP_OUTAGE_SECS` (default 20; the soak in README.md uses 60) sets
//! how long the region is down.
// A test: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::daemon::{DaemonProc, bound, rebind};
use common::*;
use georep::digest::Digest;
use georep::lab::corpus::push_image;
use georep::registry::Scope;

/// Between two pushes.
const PACE: Duration = Duration::from_millis(400);

/// One push and when each live region had it.
struct Sample {
    tag: String,
    digest: Digest,
    pushed: Instant,
    /// Seconds from the push until both live regions had it.
    latency: Option<f64>,
    /// Pushed while the third region was down.
    during_outage: bool,
    /// Pushed while the daemon was restarting (excluded from latencies).
    during_restart: bool,
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_delays_only_its_region_and_its_backlog_survives_a_restart() {
    let outage = Duration::from_secs(env_or("GEOREP_OUTAGE_SECS", 20u64));
    let baseline = Duration::from_secs(6);
    let (listener, port) = bound();
    let mut cluster = Cluster::notifying(3, port, None).await;
    let config = cluster.config(
        &cluster.primary.url(),
        &cluster.replica_urls(),
        &format!(
            "listen: 127.0.0.1:{port}\npoll_interval_secs: 3600\nretry_max_secs: 2\nshutdown_grace_secs: 5\n"
        ),
    );
    let mut daemon = DaemonProc::in_process(&config, listener, &[]).await;
    let urls = cluster.replica_urls();

    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let phase = Arc::new(Mutex::new((false, false))); // (outage, restarting)
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pusher = tokio::spawn({
        let samples = samples.clone();
        let phase = phase.clone();
        let stop = stop.clone();
        let primary = client(&cluster.primary.url());
        let live = [client(&urls[0]), client(&urls[1])];
        async move {
            let live = Arc::new(live);
            let mut watchers = Vec::new();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let pace = tokio::time::sleep(PACE);
                let tag = format!("s{i}");
                let (during_outage, during_restart) = *phase.lock().unwrap();
                let pushed = Instant::now();
                let m = push_image(&primary, "steady/app", &tag, 64 * 1024, 500 + i)
                    .await
                    .expect("push");
                let index = {
                    let mut s = samples.lock().unwrap();
                    s.push(Sample {
                        tag: tag.clone(),
                        digest: m.digest.clone(),
                        pushed,
                        latency: None,
                        during_outage,
                        during_restart,
                    });
                    s.len() - 1
                };
                // Watch the live regions for it.
                let (samples, live) = (samples.clone(), live.clone());
                watchers.push(tokio::spawn(async move {
                    let deadline = pushed + Duration::from_secs(60);
                    for region in live.iter() {
                        while !matches!(
                            region.head_manifest("steady/app", &tag, &Scope::pull("steady/app")).await,
                            Ok(Some(h)) if h.digest == m.digest
                        ) {
                            if Instant::now() > deadline {
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                    samples.lock().unwrap()[index].latency =
                        Some(pushed.elapsed().as_secs_f64());
                }));
                // A restart makes the next pushes wait for the daemon.
                if during_restart {
                    phase.lock().unwrap().1 = false;
                }
                i += 1;
                pace.await;
            }
            for w in watchers {
                let _ = w.await;
            }
        }
    });

    tokio::time::sleep(baseline).await;
    cluster.replicas[2].stop().await;
    phase.lock().unwrap().0 = true;
    let down_at = Instant::now();
    tokio::time::sleep(outage / 2).await;
    // The daemon restarts in the middle of the outage: the backlog of the
    // stopped region is in the store, not in memory.
    let lag_before = daemon.status().await["regions"][2]["lag_items"]
        .as_u64()
        .unwrap();
    assert!(lag_before > 0, "no backlog for the stopped region");
    phase.lock().unwrap().1 = true;
    assert_eq!(daemon.terminate(Duration::from_secs(20)).await, Some(0));
    daemon = DaemonProc::in_process(&config, rebind(port), &[]).await;
    let lag_after = daemon.status().await["regions"][2]["lag_items"]
        .as_u64()
        .unwrap();
    assert!(
        lag_after >= lag_before,
        "backlog lost in the restart: {lag_before} before, {lag_after} after"
    );
    tokio::time::sleep(outage.saturating_sub(down_at.elapsed())).await;
    let backlog = daemon.status().await["regions"][2]["lag_items"]
        .as_u64()
        .unwrap();
    phase.lock().unwrap().0 = false;
    cluster.replicas[2].restart().await.unwrap();
    let back_at = Instant::now();
    tokio::time::sleep(baseline / 2).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    pusher.await.unwrap();

    // The stopped region catches up with everything.
    let samples = std::mem::take(&mut *samples.lock().unwrap());
    let region = client(&urls[2]);
    for s in &samples {
        wait_for(
            &format!("{} steady/app:{}", urls[2], s.tag),
            Duration::from_secs(90),
            async || {
                matches!(
                    region.head_manifest("steady/app", &s.tag, &Scope::pull("steady/app")).await,
                    Ok(Some(h)) if h.digest == s.digest
                )
            },
        )
        .await;
    }
    let caught_up = back_at.elapsed().as_secs_f64();

    let latencies = |outage: bool| -> Vec<f64> {
        samples
            .iter()
            .filter(|s| s.during_outage == outage && !s.during_restart)
            .map(|s| s.latency.expect("a live region never got an image"))
            .collect()
    };
    let (before, during) = (latencies(false), latencies(true));
    let (b50, b90) = (percentile(before.clone(), 0.5), percentile(before, 0.9));
    let (d50, d90) = (percentile(during.clone(), 0.5), percentile(during, 0.9));
    eprintln!(
        "{} pushes; live regions' latency p50/p90 {b50:.3}/{b90:.3}s outside the outage, {d50:.3}/{d90:.3}s during it ({}s); backlog {backlog} (restart: {lag_before} -> {lag_after}); caught up {caught_up:.1}s after the region returned",
        samples.len(),
        outage.as_secs()
    );
    assert!(samples.iter().all(|s| s.pushed <= Instant::now()));
    // The same within noise: an outage elsewhere adds no waiting.
    assert!(
        d50 <= b50 * 2.0 + 0.25 && d90 <= b90 * 2.0 + 0.5,
        "live regions slowed down during the outage: p50 {b50:.3} -> {d50:.3}, p90 {b90:.3} -> {d90:.3}"
    );
}
