//! `georep run` against real registries: the primary posts its real
//! notifications to the daemon, which replicates into real replicas.
// A test: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::daemon::{
    DaemonProc, EVENTS, bound, metric, notification_sink, notification_sink_on, push_event, rebind,
};
use common::*;
use georep::lab::corpus::{Corpus, push_image};
use georep::lab::localreg::free_port;
use georep::registry::Scope;

fn daemon_yaml(port: u16, extra: &str) -> String {
    format!("listen: 127.0.0.1:{port}\nretry_max_secs: 2\nshutdown_grace_secs: 10\n{extra}")
}

async fn region_has(url: &str, repo: &str, tag: &str, digest: &georep::digest::Digest) -> bool {
    matches!(
        client(url).head_manifest(repo, tag, &Scope::pull(repo)).await,
        Ok(Some(h)) if h.digest == *digest
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_reach_every_region_through_notifications() {
    let (listener, port) = bound();
    let cluster = Cluster::notifying(2, port, None).await;
    let (hook, received) = notification_sink().await;
    let config = cluster.config(
        &cluster.primary.url(),
        &cluster.replica_urls(),
        &daemon_yaml(
            port,
            &format!("poll_interval_secs: 3600\nnotify:\n  - url: {hook}\n    events: [replicated, complete]\n"),
        ),
    );
    let daemon = DaemonProc::in_process(&config, listener, &[]).await;

    // Every shape of image (indexes, children by digest, shared layers,
    // artifacts), pushed through the registry API: each push notifies.
    let corpus = push_corpus(&cluster.primary.url(), &quick_spec(41)).await;
    for url in cluster.replica_urls() {
        let primary = cluster.primary.url();
        wait_for(
            "the corpus in a region",
            Duration::from_secs(90),
            async || verify_region(&primary, &url, &corpus).await.is_ok(),
        )
        .await;
    }
    // A tag pushed five times in a row ends at its last digest everywhere.
    let primary = client(&cluster.primary.url());
    let mut last = None;
    for seed in 0..5 {
        last = Some(
            push_image(&primary, "burst/app", "latest", 64 * 1024, 500 + seed)
                .await
                .unwrap(),
        );
    }
    let last = last.unwrap();
    for url in cluster.replica_urls() {
        wait_for("the last burst push", Duration::from_secs(30), async || {
            region_has(&url, "burst/app", "latest", &last.digest).await
        })
        .await;
    }
    let raw = skopeo_raw(&format!("{}/burst/app:latest", cluster.replicas[1].host()))
        .await
        .unwrap();
    assert_eq!(raw, last.bytes.to_vec(), "skopeo sees the primary's bytes");

    // Nothing came from polling: one reconcile at start, none since.
    let metrics = daemon.metrics().await;
    assert_eq!(
        metric(&metrics, "georep_reconciles_total"),
        Some(1.0),
        "{metrics}"
    );
    assert!(metric(&metrics, "georep_events_total{result=\"queued\"}").unwrap() > 10.0);
    assert!(
        metric(&metrics, "georep_events_total{result=\"ignored\"}").unwrap() > 10.0,
        "blob pushes are ignored"
    );
    assert!(metric(&metrics, "georep_bytes_copied_total{region=\"eastus\"}").unwrap() > 0.0);
    assert!(
        metric(
            &metrics,
            "georep_replication_complete_latency_seconds_count"
        )
        .unwrap()
            >= 1.0
    );
    let status = daemon.status().await;
    wait_for("empty queues", Duration::from_secs(10), async || {
        let s = daemon.status().await;
        s["regions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["lag_items"] == 0)
    })
    .await;
    assert_eq!(status["regions"][0]["name"], "eastus");

    // The gate: in every region now; an image that never comes times out.
    let cfg = config.to_str().unwrap();
    // `georep status` asks the daemon, which holds the store.
    let out = georep(&["status", "--config", cfg], &[]).await;
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("from the running daemon") && text.contains("japaneast"),
        "{text}"
    );
    let out = georep(
        &[
            "wait",
            "--config",
            cfg,
            "burst/app:latest",
            "--timeout",
            "10s",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(0));
    // What a pipeline holds: a full reference on the primary's host, a
    // repository alone (`:latest`); `--timeout` is the time waited.
    let full = format!("{}/burst/app:latest", cluster.primary.host());
    for image in [full.as_str(), "burst/app"] {
        let out = georep(&["wait", "--config", cfg, image, "--timeout", "10s"], &[]).await;
        assert_eq!(out.status.code(), Some(0), "{image}: {out:?}");
    }
    let out = georep(
        &[
            "wait",
            "--config",
            cfg,
            "elsewhere.example:5000/burst/app:latest",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("neither the primary nor a region"),
        "{out:?}"
    );
    let started = Instant::now();
    let out = georep(
        &[
            "wait",
            "--config",
            cfg,
            "burst/app:never",
            "--timeout",
            "2s",
            "--interval",
            "1500ms",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not there yet"));
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(2), "waited {waited:?} of 2 s");

    // Outgoing notifications: one `complete` for the last burst push, with
    // both regions, and `replicated` per region.
    wait_for(
        "outgoing notifications",
        Duration::from_secs(10),
        async || {
            received.lock().unwrap().iter().any(|n| {
                n["event"] == "complete"
                    && n["repository"] == "burst/app"
                    && n["digest"] == last.digest.as_str()
            })
        },
    )
    .await;
    let got = received.lock().unwrap().clone();
    let complete = got
        .iter()
        .find(|n| n["event"] == "complete" && n["digest"] == last.digest.as_str())
        .unwrap();
    assert_eq!(
        complete["regions"],
        serde_json::json!(["eastus", "japaneast"])
    );
    assert_eq!(complete["tag"], "latest");
    assert!(
        got.iter()
            .any(|n| n["event"] == "replicated" && n["region"] == "japaneast")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_event_survives_kill_9() {
    let port = free_port().unwrap();
    let mut cluster = Cluster::start(2).await;
    // No polling at all: only the durable queue can bring the image over.
    let config = cluster.config(
        &cluster.primary.url(),
        &cluster.replica_urls(),
        &daemon_yaml(port, "poll_interval_secs: 0\n"),
    );
    let m = push_image(
        &client(&cluster.primary.url()),
        "durable/app",
        "v1",
        256 * 1024,
        7,
    )
    .await
    .unwrap();
    // Regions down: the daemon cannot finish before it is killed.
    for r in &mut cluster.replicas {
        r.stop().await;
    }
    let mut daemon = DaemonProc::start(&config, port, &[]).await;
    let event = push_event(
        "evt-1",
        "2026-11-26T10:00:00.000000001Z",
        "durable/app",
        "v1",
        m.digest.as_str(),
        m.bytes.len(),
    );
    let (status, body) = daemon.post(event.clone(), EVENTS, None).await;
    assert_eq!(status, 200, "{body}");
    daemon.kill9().await;

    for r in &mut cluster.replicas {
        r.restart().await.unwrap();
    }
    let daemon = DaemonProc::start(&config, port, &[]).await;
    for url in cluster.replica_urls() {
        wait_for(
            "the acknowledged image",
            Duration::from_secs(60),
            async || region_has(&url, "durable/app", "v1", &m.digest).await,
        )
        .await;
    }
    // The registry redelivering the same event changes nothing.
    let (status, body) = daemon.post(event, EVENTS, None).await;
    assert_eq!(status, 200);
    assert!(body.contains("\"duplicate\":1"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_region_catches_up_without_delaying_the_others() {
    let (listener, port) = bound();
    let mut cluster = Cluster::notifying(3, port, None).await;
    let config = cluster.config(
        &cluster.primary.url(),
        &cluster.replica_urls(),
        &daemon_yaml(port, "poll_interval_secs: 3600\n"),
    );
    let daemon = DaemonProc::in_process(&config, listener, &[]).await;
    cluster.replicas[2].stop().await;

    let started = Instant::now();
    let m = push_image(
        &client(&cluster.primary.url()),
        "outage/app",
        "v1",
        1 << 20,
        9,
    )
    .await
    .unwrap();
    let urls = cluster.replica_urls();
    for url in &urls[..2] {
        wait_for(
            "the image in a live region",
            Duration::from_secs(10),
            async || region_has(url, "outage/app", "v1", &m.digest).await,
        )
        .await;
    }
    let live_secs = started.elapsed().as_secs_f64();
    eprintln!("live regions complete {live_secs:.2}s after the push");

    // The stopped region keeps its backlog, visibly.
    let status = daemon.status().await;
    let down = &status["regions"][2];
    assert_eq!(down["name"], "brazilsouth");
    assert_eq!(down["lag_items"], 1, "{status}");
    wait_for(
        "the outage in the status",
        Duration::from_secs(10),
        async || {
            let s = daemon.status().await;
            s["regions"][2]["reachable"] == false
                && s["regions"][2]["problem"]["kind"] == "unreachable"
        },
    )
    .await;
    let up = r#"georep_region_up{region="brazilsouth"}"#;
    wait_for(
        "the region down in the metrics",
        Duration::from_secs(15),
        async || metric(&daemon.metrics().await, up) == Some(0.0),
    )
    .await;
    assert_eq!(daemon.status().await["regions"][2]["reachable"], false);

    cluster.replicas[2].restart().await.unwrap();
    wait_for(
        "the stopped region to catch up",
        Duration::from_secs(90),
        async || region_has(&urls[2], "outage/app", "v1", &m.digest).await,
    )
    .await;
    assert_eq!(daemon.status().await["regions"][2]["lag_items"], 0);
    wait_for(
        "the region up in the metrics",
        Duration::from_secs(15),
        async || metric(&daemon.metrics().await, up) == Some(1.0),
    )
    .await;
    // Once it answers again, the outage is history: no error is left
    // standing in the status or the table.
    wait_for(
        "the region healthy again",
        Duration::from_secs(15),
        async || {
            let s = daemon.status().await;
            s["regions"][2]["reachable"] == true && s["regions"][2]["problem"].is_null()
        },
    )
    .await;
    let s = daemon.status().await;
    assert!(
        s["regions"][2]["last_error"].is_null() || s["regions"][2]["error_current"] == false,
        "{s:#}"
    );
    let cfg = config.to_str().unwrap().to_owned();
    let out = georep(&["status", "--config", &cfg], &[]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(!text.contains("refused"), "{text}");
}

/// Two regions, a corpus on the primary and a daemon that has replicated
/// it everywhere.
struct Replicated {
    cluster: Cluster,
    corpus: Corpus,
    config: std::path::PathBuf,
    daemon: DaemonProc,
}

async fn replicated(seed: u64, yaml: &str) -> Replicated {
    let (listener, port) = bound();
    let cluster = Cluster::start(2).await;
    let corpus = push_corpus(&cluster.primary.url(), &quick_spec(seed)).await;
    let config = cluster.config(
        &cluster.primary.url(),
        &cluster.replica_urls(),
        &daemon_yaml(port, yaml),
    );
    let daemon = DaemonProc::in_process(&config, listener, &[]).await;
    let primary = cluster.primary.url();
    for url in &cluster.replica_urls() {
        wait_for(
            "the corpus in a region",
            Duration::from_secs(90),
            async || verify_region(&primary, url, &corpus).await.is_ok(),
        )
        .await;
    }
    Replicated {
        cluster,
        corpus,
        config,
        daemon,
    }
}

/// A region that loses what georep copied there (wiped, here) is found by
/// the next audit and refilled, with no push and no restart; the other
/// region is found whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_refills_a_region_that_lost_its_content() {
    let Replicated {
        mut cluster,
        corpus,
        config: _,
        daemon,
    } = replicated(43, "poll_interval_secs: 3600\naudit_interval_secs: 2\n").await;
    let primary = cluster.primary.url();
    let urls = cluster.replica_urls();
    // Audits of whole regions find nothing.
    let audits = daemon.status().await["audit"]["count"].as_u64().unwrap();
    wait_for(
        "an audit of the whole regions",
        Duration::from_secs(20),
        async || daemon.status().await["audit"]["count"].as_u64().unwrap() > audits,
    )
    .await;
    let text = daemon.metrics().await;
    for name in REGION_NAMES.iter().take(2) {
        let series = format!("georep_audit_stale_total{{region=\"{name}\"}}");
        assert_eq!(metric(&text, &series), Some(0.0), "{text}");
    }

    cluster.replicas[0].wipe().await.unwrap();
    wait_for(
        "the wiped region refilled",
        Duration::from_secs(90),
        async || verify_region(&primary, &urls[0], &corpus).await.is_ok(),
    )
    .await;
    let text = daemon.metrics().await;
    let stale = |i: usize| {
        metric(
            &text,
            &format!("georep_audit_stale_total{{region=\"{}\"}}", REGION_NAMES[i]),
        )
        .unwrap()
    };
    assert!(stale(0) >= corpus.tags.len() as f64, "{text}");
    assert_eq!(stale(1), 0.0, "{text}");
    assert!(metric(&text, "georep_audits_total").unwrap() >= 2.0);
    let log = daemon.log_text();
    for line in log.lines().filter(|l| l.contains("audit done")) {
        eprintln!("{line}");
    }
    assert!(
        log.contains(&format!("audit: {} does not serve", urls[0])),
        "{}",
        tail(&log, 40)
    );
    verify_region(&primary, &urls[1], &corpus).await.unwrap();
}

/// After a region was wiped, an operator asks the running daemon for an
/// audit of that region: no restart, no `sync --verify`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_steers_the_running_daemon() {
    let Replicated {
        mut cluster,
        corpus,
        config,
        daemon,
    } = replicated(44, "poll_interval_secs: 3600\naudit_interval_secs: 0\n").await;
    let primary = cluster.primary.url();
    let urls = cluster.replica_urls();
    let cfg = config.to_str().unwrap();
    cluster.replicas[0].wipe().await.unwrap();
    let out = georep(
        &["audit", "--config", cfg, "--region", "eastus", "--json"],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["scope"]["region"], "eastus");
    assert!(
        answer["queued"].as_u64().unwrap() >= corpus.tags.len() as u64,
        "{answer:#}"
    );
    wait_for(
        "the wiped region refilled",
        Duration::from_secs(90),
        async || verify_region(&primary, &urls[0], &corpus).await.is_ok(),
    )
    .await;

    // A reconcile of everything is the periodic task's run, seen in the
    // status; one of a repository runs alone.
    let before = daemon.status().await["reconcile"]["count"]
        .as_u64()
        .unwrap();
    let out = georep(&["reconcile", "--config", cfg], &[]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        text.contains(&format!("{} tag(s) listed", corpus.tags.len())),
        "{text}"
    );
    assert_eq!(
        daemon.status().await["reconcile"]["count"]
            .as_u64()
            .unwrap(),
        before + 1
    );
    let repo = &corpus.tags[0].repository;
    let out = georep(
        &[
            "reconcile",
            "--config",
            cfg,
            "--repository",
            repo,
            "--region",
            "japaneast",
            "--json",
        ],
        &[],
    )
    .await;
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["queued"], 0, "{answer:#}");
    assert!(answer["tags"].as_u64().unwrap() >= 1, "{answer:#}");

    let out = georep(&["retry", "--config", cfg], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("retrying 0 parked item(s) of everything")
    );
    let out = georep(&["audit", "--config", cfg, "--region", "mars"], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no region named \"mars\"") && err.contains("eastus, japaneast"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_refuses_bad_input_and_credentials() {
    let (listener, port) = bound();
    let cluster = Cluster::start(1).await;
    let config = cluster.config(
        &cluster.primary.url(),
        &cluster.replica_urls(),
        &daemon_yaml(
            port,
            "poll_interval_secs: 0\nwebhook:\n  max_body_bytes: 4096\n  auth:\n    bearer_token_env: HOOK_TOKEN\n",
        ),
    );
    let daemon = DaemonProc::in_process(&config, listener, &[("HOOK_TOKEN", "t0ken")]).await;
    let ok = Some("Bearer t0ken");
    let m1 = push_image(&client(&cluster.primary.url()), "order/app", "v1", 4096, 1)
        .await
        .unwrap();
    let m2 = push_image(&client(&cluster.primary.url()), "order/app", "v1", 4096, 2)
        .await
        .unwrap();
    let newer = push_event(
        "n",
        "2026-11-26T10:00:02Z",
        "order/app",
        "v1",
        m2.digest.as_str(),
        m2.bytes.len(),
    );
    let older = push_event(
        "o",
        "2026-11-26T10:00:01Z",
        "order/app",
        "v1",
        m1.digest.as_str(),
        m1.bytes.len(),
    );

    assert_eq!(daemon.post(newer.clone(), EVENTS, None).await.0, 401);
    assert_eq!(
        daemon
            .post(newer.clone(), EVENTS, Some("Bearer t0ke"))
            .await
            .0,
        401
    );
    assert_eq!(
        daemon
            .post(newer.clone(), EVENTS, Some("Basic dDA6a2Vu"))
            .await
            .0,
        401
    );
    let (s, body) = daemon.post(newer.clone(), "text/plain", ok).await;
    assert_eq!((s, body.contains("content type")), (400, true), "{body}");
    let (s, body) = daemon.post("{\"events\": [", EVENTS, ok).await;
    assert_eq!(s, 400);
    assert!(body.contains("not a notification envelope"), "{body}");
    let (s, _) = daemon.post(vec![b'x'; 10_000], EVENTS, ok).await;
    assert_eq!(s, 413);
    // A streamed body without Content-Length is cut at the limit too.
    let stream = futures::stream::iter((0..10).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1000])));
    let (s, _) = daemon
        .post(reqwest::Body::wrap_stream(stream), EVENTS, ok)
        .await;
    assert_eq!(s, 413);
    for junk in [
        &b"\xff\xfe\x00"[..],
        b"null",
        b"{\"events\":null}",
        b"{\"events\":[1,2]}",
        b"[[[[[[[[[[[[[[[[[[[[",
    ] {
        let (s, _) = daemon.post(junk.to_vec(), EVENTS, ok).await;
        assert_eq!(s, 400, "{junk:?}");
    }
    // Valid JSON, hostile names: accepted (so the registry does not retry
    // forever) but rejected one by one, never used.
    let hostile = push_event(
        "h",
        "2026-11-26T10:00:00Z",
        "../../etc",
        "v1",
        m1.digest.as_str(),
        10,
    );
    let (s, body) = daemon.post(hostile, EVENTS, ok).await;
    assert_eq!(s, 200);
    assert!(body.contains("\"rejected\":1"), "{body}");

    // Out of order: the newer push first, the older one after it.
    let (s, body) = daemon.post(newer.clone(), EVENTS, ok).await;
    assert_eq!((s, body.contains("\"queued\":1")), (200, true), "{body}");
    let (s, body) = daemon.post(older, EVENTS, ok).await;
    assert_eq!((s, body.contains("\"stale\":1")), (200, true), "{body}");
    let (_, body) = daemon.post(newer, EVENTS, ok).await;
    assert!(body.contains("\"duplicate\":1"), "{body}");
    let url = cluster.replicas[0].url();
    wait_for("the newer digest", Duration::from_secs(30), async || {
        region_has(&url, "order/app", "v1", &m2.digest).await
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        region_has(&url, "order/app", "v1", &m2.digest).await,
        "the older event moved the tag back"
    );

    let metrics = daemon.metrics().await;
    assert_eq!(
        metric(&metrics, "georep_webhook_unauthorized_total"),
        Some(3.0)
    );
    assert_eq!(
        reqwest::get(daemon.url("/healthz")).await.unwrap().status(),
        200
    );
    assert_eq!(
        reqwest::get(daemon.url("/readyz")).await.unwrap().status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_propagate_within_the_cap_or_only_log_in_dry_run() {
    let (listener, port) = bound();
    let cluster = Cluster::notifying(1, port, None).await;
    let (hook, received) = notification_sink().await;
    let yaml_capped = |dry: bool, cap: u32| {
        daemon_yaml(
            port,
            &format!(
                "poll_interval_secs: 3600\ndeletes:\n  policy: propagate\n  max_per_hour: {cap}\n  dry_run: {dry}\n\
                 notify:\n  - url: {hook}\n    events: [complete, deleted]\n"
            ),
        )
    };
    let yaml = |dry: bool| yaml_capped(dry, 1);
    let config = cluster.config(
        &cluster.primary.url(),
        &cluster.replica_urls(),
        &yaml(false),
    );
    let mut daemon = DaemonProc::in_process(&config, listener, &[]).await;
    let primary = client(&cluster.primary.url());
    let a = push_image(&primary, "del/app", "a", 4096, 11)
        .await
        .unwrap();
    let b = push_image(&primary, "del/app", "b", 4096, 12)
        .await
        .unwrap();
    let region = cluster.replicas[0].url();
    for (tag, m) in [("a", &a), ("b", &b)] {
        wait_for("the image to delete", Duration::from_secs(30), async || {
            region_has(&region, "del/app", tag, &m.digest).await
        })
        .await;
    }
    wait_for("both complete", Duration::from_secs(10), async || {
        received.lock().unwrap().len() >= 2
    })
    .await;
    for m in [&a, &b] {
        assert!(
            primary
                .delete_manifest("del/app", m.digest.as_str())
                .await
                .unwrap()
        );
    }
    let reg = client(&region);
    let gone = async |d: &georep::digest::Digest| {
        matches!(
            reg.head_manifest("del/app", d.as_str(), &Scope::pull("del/app"))
                .await,
            Ok(None)
        )
    };
    wait_for(
        "the first delete in the region",
        Duration::from_secs(30),
        async || gone(&a.digest).await || gone(&b.digest).await,
    )
    .await;
    // The cap (1 per hour) holds the second delete back, visibly.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = daemon.status().await;
        if status["regions"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("delete cap"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no delete cap in the status: {status:#}\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !(gone(&a.digest).await && gone(&b.digest).await),
        "both deleted despite the cap"
    );
    let deleted = if gone(&a.digest).await { &a } else { &b };
    // A delete is announced as `deleted`, with the digest the registry
    // named, never as `complete`, and never with a digest nobody read.
    wait_for("the deleted event", Duration::from_secs(10), async || {
        received
            .lock()
            .unwrap()
            .iter()
            .any(|n| n["event"] == "deleted" && n["digest"] == deleted.digest.as_str())
    })
    .await;
    let got = received.lock().unwrap().clone();
    let empty = georep::digest::Digest::sha256_of(b"");
    for n in &got {
        assert_ne!(n["digest"], empty.as_str(), "a placeholder digest: {n}");
        if n["event"] == "complete" {
            assert!(
                [&a.digest, &b.digest]
                    .iter()
                    .any(|d| n["digest"] == d.as_str() && n["tag"].is_string()),
                "{n}"
            );
        }
    }
    assert_eq!(
        got.iter().filter(|n| n["event"] == "complete").count(),
        2,
        "one `complete` per push, none for deletes: {got:#?}"
    );
    assert!(
        !daemon
            .log_text()
            .contains(&format!("del/app@{} complete", deleted.digest)),
        "a delete logged as complete"
    );
    assert_eq!(daemon.terminate(Duration::from_secs(20)).await, Some(0));
    let before = received.lock().unwrap().len();

    // Dry run: the pending delete is only logged, and nothing is announced.
    let config = cluster.config(&cluster.primary.url(), &cluster.replica_urls(), &yaml(true));
    let daemon = DaemonProc::in_process(&config, rebind(port), &[]).await;
    wait_for(
        "the dry-run log line",
        Duration::from_secs(30),
        async || daemon.log_text().contains("dry run: would delete"),
    )
    .await;
    assert!(!(gone(&a.digest).await && gone(&b.digest).await));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        received.lock().unwrap().len(),
        before,
        "a dry run sent notifications: {:#?}",
        received.lock().unwrap()
    );
    assert!(
        !daemon.log_text().contains("complete in every region"),
        "{}",
        daemon.log_text()
    );
    // What the dry run held back is not forgotten: the region still holds
    // a tag the primary deleted, and the status says so.
    let kept = if gone(&a.digest).await { "b" } else { "a" };
    let status = daemon.status().await;
    assert_eq!(status["regions"][0]["tags_only_in_region"], 1, "{status:#}");
    assert_eq!(
        status["reconcile"]["last_only_in_region"]["eastus"], 1,
        "{status:#}"
    );
    let mut daemon = daemon;
    assert_eq!(daemon.terminate(Duration::from_secs(20)).await, Some(0));
    let cfg = config.to_str().unwrap();
    let out = georep(&["status", "--config", cfg], &[]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "a delete is still due: {text}");
    assert!(text.contains("ONLY HERE"), "{text}");
    let out = georep(&["sync", "--dry-run", "--config", cfg], &[]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("only in a region") && text.contains(&format!("del/app:{kept}")),
        "{text}"
    );

    // Dry run off (and room under the cap): the reconcile at start deletes
    // what is still due, and everything is in sync, deletes included.
    let config = cluster.config(
        &cluster.primary.url(),
        &cluster.replica_urls(),
        &yaml_capped(false, 10),
    );
    let mut daemon = DaemonProc::in_process(&config, rebind(port), &[]).await;
    wait_for(
        "the held-back delete",
        Duration::from_secs(30),
        async || gone(&a.digest).await && gone(&b.digest).await,
    )
    .await;
    wait_for("an empty queue", Duration::from_secs(10), async || {
        daemon.status().await["regions"][0]["lag_items"] == 0
    })
    .await;
    assert_eq!(daemon.terminate(Duration::from_secs(20)).await, Some(0));
    let out = georep(
        &["status", "--json", "--config", config.to_str().unwrap()],
        &[],
    )
    .await;
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{status:#}");
    let east = &status["regions"][0];
    assert_eq!(
        (&east["tags_missing"], &east["tags_only_in_region"]),
        (&serde_json::json!(0), &serde_json::json!(0)),
        "{status:#}"
    );
}

/// An item parked for a permanent cause is announced once, as `failed`,
/// with its reason; parked again after a retry, it is no news.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_item_is_announced_once_as_failed() {
    let (listener, port) = bound();
    let cluster = Cluster::start(1).await;
    push_corpus(&cluster.primary.url(), &quick_spec(45)).await;
    let proxy = common::proxy::Proxy::start(
        &cluster.primary.url(),
        common::proxy::Faults {
            schema1_tag: Some(("library/base".into(), "v2".into())),
            ..common::proxy::Faults::default()
        },
    )
    .await;
    let (hook, received) = notification_sink().await;
    let config = cluster.config(
        &proxy.url,
        &cluster.replica_urls(),
        &daemon_yaml(
            port,
            &format!("poll_interval_secs: 3600\nnotify:\n  - url: {hook}\n    events: [failed]\n"),
        ),
    );
    let daemon = DaemonProc::in_process(&config, listener, &[]).await;
    let failed = || {
        received
            .lock()
            .unwrap()
            .iter()
            .filter(|n| n["event"] == "failed")
            .cloned()
            .collect::<Vec<_>>()
    };
    wait_for("the failed event", Duration::from_secs(30), async || {
        !failed().is_empty()
    })
    .await;
    let n = &failed()[0];
    assert_eq!(
        (&n["repository"], &n["tag"], &n["region"]),
        (
            &serde_json::json!("library/base"),
            &serde_json::json!("v2"),
            &serde_json::json!("eastus")
        ),
        "{n:#}"
    );
    assert!(n["reason"].as_str().unwrap().contains("schema1"), "{n:#}");
    // Retried (an operator's reconcile) and parked again: no second event.
    let cfg = config.to_str().unwrap();
    let out = georep(&["retry", "--config", cfg], &[]).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("retrying 1 parked item(s)"),
        "{out:?}"
    );
    wait_for("parked again", Duration::from_secs(30), async || {
        daemon.status().await["regions"][0]["parked_count"] == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(failed().len(), 1, "{:#?}", failed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_keep_their_scope_and_format_and_survive_a_restart() {
    let (listener, port) = bound();
    let cluster = Cluster::notifying(1, port, None).await;
    // The target is down at first: its port is known but nobody listens.
    let (hook_listener, hook_port) = bound();
    drop(hook_listener);
    let hook = format!("http://127.0.0.1:{hook_port}/hook");
    let config = cluster.config(
        &cluster.primary.url(),
        &cluster.replica_urls(),
        &daemon_yaml(
            port,
            &format!(
                "poll_interval_secs: 3600\nnotify:\n  - name: cd\n    url: {hook}\n    format: registry\n    \
                 events: [replicated]\n    scope: [\"team/*:v*\"]\n"
            ),
        ),
    );
    let mut daemon = DaemonProc::in_process(&config, listener, &[]).await;
    let primary = client(&cluster.primary.url());
    let wanted = push_image(&primary, "team/app", "v1", 4096, 21)
        .await
        .unwrap();
    let _other = push_image(&primary, "other/app", "v1", 4096, 22)
        .await
        .unwrap();
    let _latest = push_image(&primary, "team/app", "latest", 4096, 23)
        .await
        .unwrap();
    wait_for("a failed delivery", Duration::from_secs(30), async || {
        let s = daemon.status().await;
        s["notify"][0]["last_failure"].is_string() && s["notify"][0]["pending"] == 1
    })
    .await;
    let metrics = daemon.metrics().await;
    assert_eq!(
        metric(&metrics, "georep_notifications_pending{target=\"cd\"}"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(daemon.terminate(Duration::from_secs(20)).await, Some(0));

    // The target comes up; the next daemon delivers what was waiting.
    let (_, received) = notification_sink_on(
        tokio::net::TcpListener::from_std({
            let l = rebind(hook_port);
            l.set_nonblocking(true).unwrap();
            l
        })
        .unwrap(),
    );
    let daemon = DaemonProc::in_process(&config, rebind(port), &[]).await;
    wait_for("the delivery", Duration::from_secs(30), async || {
        !received.lock().unwrap().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "only team/app:v1 is in scope: {got:#?}");
    let e = &got[0]["events"][0];
    assert_eq!(e["action"], "push");
    assert_eq!(e["target"]["repository"], "team/app");
    assert_eq!(e["target"]["tag"], "v1");
    assert_eq!(e["target"]["digest"], wanted.digest.as_str());
    assert_eq!(e["region"], "eastus");
    assert!(
        e["request"]["useragent"]
            .as_str()
            .unwrap()
            .starts_with("georep/")
    );
    let s = daemon.status().await;
    assert_eq!(s["notify"][0]["sent"], 1, "{s:#}");
    assert_eq!(s["notify"][0]["pending"], 0, "{s:#}");

    // `georep notify test` sends a sample to the same target.
    let cfg = config.to_str().unwrap();
    let out = georep(&["notify", "test", "--config", cfg, "cd"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = georep(&["notify", "test", "--config", cfg, "nope"], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("its targets are: cd"));
    wait_for("the sample", Duration::from_secs(5), async || {
        received.lock().unwrap().len() == 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_and_busy_port_fail_before_serving_and_sighup_is_survived_and_sigterm_drains() {
    let port = free_port().unwrap();
    let cluster = Cluster::start(1).await;
    let bad = cluster.config(
        &cluster.primary.url(),
        &cluster.replica_urls(),
        "listen: nowhere\n",
    );
    let out = georep(&["run", "--config", bad.to_str().unwrap()], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("georep.yaml:") && err.contains("listen"),
        "{err}"
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let busy = cluster.config(
        &cluster.primary.url(),
        &cluster.replica_urls(),
        &daemon_yaml(taken_port, ""),
    );
    let out = georep(&["run", "--config", busy.to_str().unwrap()], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen"));

    let config = cluster.config(
        &cluster.primary.url(),
        &cluster.replica_urls(),
        &daemon_yaml(port, ""),
    );
    let mut daemon = DaemonProc::start(&config, port, &[]).await;
    // SIGHUP (a service manager's "reload") neither kills nor stops it.
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &daemon.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    wait_for("the SIGHUP log line", Duration::from_secs(10), async || {
        daemon
            .log_text()
            .contains("SIGHUP: georep does not reload its config")
    })
    .await;
    let health = reqwest::get(daemon.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200, "still serving after SIGHUP");
    assert_eq!(daemon.terminate(Duration::from_secs(20)).await, Some(0));
    assert!(daemon.log_text().contains("georep daemon stopped"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_cut_short_by_shutdown_resumes_at_the_next_start() {
    let (listener, port) = bound();
    let cluster = Cluster::notifying(2, port, None).await;
    // No grace at all: whatever is in flight at SIGTERM is abandoned.
    let config = cluster.config(
        &cluster.primary.url(),
        &cluster.replica_urls(),
        &format!("listen: 127.0.0.1:{port}\npoll_interval_secs: 0\nshutdown_grace_secs: 0\n"),
    );
    let mut daemon = DaemonProc::in_process(&config, listener, &[]).await;
    let m = push_image(
        &client(&cluster.primary.url()),
        "big/app",
        "v1",
        96 << 20,
        3,
    )
    .await
    .unwrap();
    wait_for("the copy to start", Duration::from_secs(20), async || {
        let s = daemon.status().await;
        s["regions"][0]["in_flight"].as_u64().unwrap_or(0) > 0
    })
    .await;
    assert_eq!(daemon.terminate(Duration::from_secs(10)).await, Some(0));
    let log = daemon.log_text();
    assert!(log.contains("georep daemon stopped"), "{log}");
    let urls = cluster.replica_urls();
    let landed = futures::future::join_all(
        urls.iter()
            .map(|u| region_has(u, "big/app", "v1", &m.digest)),
    )
    .await;
    assert!(
        landed.contains(&false),
        "the copy finished before the signal; nothing to resume"
    );

    // Polling is off: only the queue can finish the job.
    let _daemon = DaemonProc::in_process(&config, rebind(port), &[]).await;
    for url in &urls {
        wait_for("the resumed copy", Duration::from_secs(60), async || {
            region_has(url, "big/app", "v1", &m.digest).await
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_push_goes_ahead_of_a_long_backfill() {
    let (listener, port) = bound();
    // No notifications from this primary: the backfill is found by the
    // start-up reconcile only, and the fresh push's event is posted here.
    let cluster = Cluster::start(1).await;
    let primary = client(&cluster.primary.url());
    // Backfill: 8 images of 12 MiB, pushed before the daemon starts, into
    // a region limited to 12 MiB/s: about 8 s of work for the start-up
    // reconcile, filling every regular slot.
    for i in 0..8 {
        push_image(
            &primary,
            &format!("backfill/app{i}"),
            "v1",
            12 << 20,
            900 + i,
        )
        .await
        .unwrap();
    }
    let config = cluster.config(
        &cluster.primary.url(),
        &cluster.replica_urls(),
        &daemon_yaml(
            port,
            "poll_interval_secs: 3600\nconcurrency:\n  max_concurrent_images: 2\nlimits:\n  max_bytes_per_sec: 12MiB\n",
        ),
    );
    let daemon = DaemonProc::in_process(&config, listener, &[]).await;
    wait_for(
        "the backfill to start",
        Duration::from_secs(20),
        async || {
            daemon.status().await["regions"][0]["in_flight"]
                .as_u64()
                .unwrap_or(0)
                >= 2
        },
    )
    .await;
    let pushed = Instant::now();
    let m = push_image(&primary, "fresh/app", "v1", 64 << 10, 5)
        .await
        .unwrap();
    let now = jiff::Timestamp::now().to_string();
    let event = push_event(
        "fresh-1",
        &now,
        "fresh/app",
        "v1",
        m.digest.as_str(),
        m.bytes.len(),
    );
    assert_eq!(daemon.post(event, EVENTS, None).await.0, 200);
    let url = cluster.replicas[0].url();
    wait_for("the fresh push", Duration::from_secs(30), async || {
        region_has(&url, "fresh/app", "v1", &m.digest).await
    })
    .await;
    let latency = pushed.elapsed().as_secs_f64();
    let behind = daemon.status().await["regions"][0]["lag_items"]
        .as_u64()
        .unwrap();
    eprintln!("fresh push replicated in {latency:.2}s with {behind} backfill items still queued");
    assert!(
        behind > 0,
        "the backfill was over before the fresh push was copied"
    );
    // Without the express slots it would wait for a backfill image (~2 s).
    assert!(
        latency < 1.0,
        "the fresh push waited {latency:.1}s behind the backfill"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_requires_credentials_when_configured() {
    const PASSWORD: &str = "Api-pw-5e21c0";
    let port = free_port().unwrap();
    let cluster = Cluster::start(1).await;
    // Every interface, so the start warns about what is left open.
    let config = cluster.config(
        &cluster.primary.url(),
        &cluster.replica_urls(),
        &format!(
            "listen: 0.0.0.0:{port}\npoll_interval_secs: 0\napi:\n  auth:\n    username: ops\n    password_env: API_PW\n"
        ),
    );
    let envs = [("API_PW", PASSWORD)];
    let daemon = DaemonProc::start(&config, port, &envs).await;
    let http = reqwest::Client::new();
    let basic = |user: &str, pw: &str| {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
        )
    };
    for path in ["/v1/status", "/metrics"] {
        for auth in [
            None,
            Some(basic("ops", "wrong")),
            Some(basic("nobody", PASSWORD)),
        ] {
            let mut req = http.get(daemon.url(path));
            if let Some(a) = &auth {
                req = req.header("authorization", a);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 401, "{path} with {auth:?}");
            assert_eq!(r.headers()["www-authenticate"], "Basic realm=\"georep\"");
        }
        let r = http
            .get(daemon.url(path))
            .header("authorization", basic("ops", PASSWORD))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let body = r.text().await.unwrap();
        assert!(!body.contains(PASSWORD));
        if path == "/metrics" {
            assert_eq!(metric(&body, "georep_api_unauthorized_total"), Some(6.0));
        }
    }
    // Steering is behind the same credentials.
    for path in ["/v1/reconcile", "/v1/audit", "/v1/retry"] {
        let r = http.post(daemon.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    let out = georep(&["retry", "--config", config.to_str().unwrap()], &envs).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // The probes stay open.
    for path in ["/healthz", "/readyz"] {
        let r = http.get(daemon.url(path)).send().await.unwrap();
        assert_ne!(r.status(), 401, "{path}");
    }
    // `georep status` asks the daemon (it holds the store) with them.
    let out = georep(&["status", "--config", config.to_str().unwrap()], &envs).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("from the running daemon"), "{text}");
    let log = daemon.log_text();
    assert!(
        log.contains(
            "reachable from the network without credentials: the webhook (set webhook.auth)"
        ),
        "{log}"
    );
    assert!(!log.contains(PASSWORD));
}
