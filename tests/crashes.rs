//! kill -9 of the daemon at random moments while images are pushed and
//! announced: no event that got a 2xx is lost, no region ever serves a tag
//! pointing at missing content, and everything converges.
//!
//! Polling is off, so only the daemon's durable queue can bring an image
//! over. `GEOREP_CRASH_TRIALS` (default 20) and `GEOREP_CHAOS_SEED` set the
//! run; the soak in README.md runs more.
// A test: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::daemon::{DaemonProc, EVENTS, push_event};
use common::*;
use georep::digest::Digest;
use georep::lab::corpus::push_image;
use georep::lab::localreg::free_port;
use georep::registry::Scope;

/// One pushed image and whether the daemon acknowledged its event.
struct Pushed {
    repository: String,
    tag: String,
    digest: Digest,
    acked: bool,
}

/// A small deterministic generator for the kill times.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_pushes_loses_no_acknowledged_event() {
    let trials = env_or("GEOREP_CRASH_TRIALS", 20u64);
    let mut rng = env_or("GEOREP_CHAOS_SEED", 1u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let port = free_port().unwrap();
    let cluster = Cluster::start(2).await;
    let config = cluster.config(
        &cluster.primary.url(),
        &cluster.replica_urls(),
        &format!(
            "listen: 127.0.0.1:{port}\npoll_interval_secs: 0\nretry_max_secs: 1\nshutdown_grace_secs: 5\n"
        ),
    );
    let mut daemon = DaemonProc::start(&config, port, &[]).await;

    // Push images and announce each to the daemon, as the registry would,
    // without redelivering: an event is either acknowledged or refused.
    let pushed: Arc<Mutex<Vec<Pushed>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let pusher = tokio::spawn({
        let pushed = pushed.clone();
        let stop = stop.clone();
        let primary = client(&cluster.primary.url());
        let hook = format!("http://127.0.0.1:{port}/v1/notifications");
        async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // A steady stream: eight pushes a second.
                let pace = tokio::time::sleep(Duration::from_millis(125));
                let repository = format!("crash/app{}", i % 3);
                let tag = format!("t{i}");
                let m = push_image(&primary, &repository, &tag, 96 * 1024, 1000 + i)
                    .await
                    .expect("push to the primary");
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap();
                let timestamp = format!(
                    "{}.{:09}Z",
                    georep::store::format_unix(now.as_secs()).trim_end_matches('Z'),
                    now.subsec_nanos()
                );
                let event = push_event(
                    &format!("crash-{i}"),
                    &timestamp,
                    &repository,
                    &tag,
                    m.digest.as_str(),
                    m.bytes.len(),
                );
                let acked = matches!(
                    http.post(&hook).header("content-type", EVENTS).body(event).send().await,
                    Ok(r) if r.status().is_success()
                );
                pushed.lock().unwrap().push(Pushed {
                    repository,
                    tag,
                    digest: m.digest,
                    acked,
                });
                i += 1;
                pace.await;
            }
        }
    });

    let tags = |pushed: &Arc<Mutex<Vec<Pushed>>>| -> Vec<(String, String)> {
        pushed
            .lock()
            .unwrap()
            .iter()
            .map(|p| (p.repository.clone(), p.tag.clone()))
            .collect()
    };
    let mut served_at_kill = Vec::new();
    for _ in 0..trials {
        let wait_ms = 200 + next(&mut rng) % 1300;
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        daemon.kill9().await;
        // Whatever the daemon was doing, no region serves a dangling tag.
        let tags = tags(&pushed);
        let mut served = 0;
        for url in cluster.replica_urls() {
            served += no_dangling(&url, &tags, &[])
                .await
                .unwrap_or_else(|e| panic!("after a kill: {e}"));
        }
        served_at_kill.push(served);
        daemon = DaemonProc::start(&config, port, &[]).await;
    }
    stop.store(true, Ordering::Relaxed);
    pusher.await.unwrap();

    // Every acknowledged image reaches every region.
    let started = Instant::now();
    let pushed = std::mem::take(&mut *pushed.lock().unwrap());
    let acked: Vec<&Pushed> = pushed.iter().filter(|p| p.acked).collect();
    for url in cluster.replica_urls() {
        let region = client(&url);
        for p in &acked {
            wait_for(
                &format!("{url} {}:{}", p.repository, p.tag),
                Duration::from_secs(90),
                async || {
                    matches!(
                        region.head_manifest(&p.repository, &p.tag, &Scope::pull(&p.repository)).await,
                        Ok(Some(h)) if h.digest == p.digest
                    )
                },
            )
            .await;
        }
        let all: Vec<(String, String)> = pushed
            .iter()
            .map(|p| (p.repository.clone(), p.tag.clone()))
            .collect();
        no_dangling(&url, &all, &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    eprintln!(
        "{trials} kills; {} pushes, {} acknowledged, {} refused while down; tags served at each kill {served_at_kill:?}; converged {:.1}s after the last restart",
        pushed.len(),
        acked.len(),
        pushed.len() - acked.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        acked.len() >= trials as usize,
        "too few events acknowledged"
    );
    drop(daemon);
}
