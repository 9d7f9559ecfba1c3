//! Any-region mode against real registries: every region accepts pushes
//! and posts its real notifications to the daemon at its own path; georep
//! spreads each push to the other regions, decides conflicts, and does
//! not replicate its own writes again.
// A test: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::daemon::{DaemonProc, bound, metric, notification_sink};
use common::*;
use georep::digest::Digest;
use georep::lab::corpus::{push_image, stage_image};
use georep::lab::localreg::{LocalNotify, LocalOptions, LocalRegistry};
use georep::registry::Scope;

const NAMES: [&str; 3] = ["us", "eu", "ap"];

/// Three writable regions, each notifying a daemon on `port` at its own
/// path (or not at all).
struct Regions {
    dir: tempfile::TempDir,
    regs: Vec<LocalRegistry>,
}

impl Regions {
    async fn start(port: Option<u16>) -> Regions {
        Self::start_with(|_| port.map(|p| format!("http://127.0.0.1:{p}"))).await
    }

    /// Each region notifying the daemon reached at `daemon(name)` (none:
    /// no notifications).
    async fn start_with(daemon: impl Fn(&str) -> Option<String>) -> Regions {
        let dir = tempfile::tempdir().unwrap();
        let mut regs = Vec::new();
        for name in NAMES {
            let notify = daemon(name).map(|base| LocalNotify {
                url: format!("{base}/v1/notifications/{name}"),
                authorization: None,
            });
            regs.push(
                LocalRegistry::start(
                    &dir.path().join(name),
                    LocalOptions {
                        notify,
                        ..LocalOptions::default()
                    },
                )
                .await
                .unwrap(),
            );
        }
        Regions { dir, regs }
    }

    /// An any-region config for the daemon on `port`, with `extra` YAML.
    fn config(&self, port: u16, extra: &str) -> PathBuf {
        let mut yaml = format!(
            "state_dir: ./state\nmode: any-region\nlisten: 127.0.0.1:{port}\nretry_max_secs: 2\nshutdown_grace_secs: 10\nregions:\n"
        );
        for (name, reg) in NAMES.iter().zip(&self.regs) {
            yaml.push_str(&format!("  - name: {name}\n    url: {}\n", reg.url()));
        }
        yaml.push_str(extra);
        let path = self.dir.path().join("georep.yaml");
        std::fs::write(&path, yaml).unwrap();
        path
    }

    fn url(&self, i: usize) -> String {
        self.regs[i].url()
    }
}

/// A client pushing as people do: not with georep's user agent.
fn pusher(url: &str) -> georep::registry::Registry {
    georep::lab::bench::people_client(url).unwrap()
}

async fn serves(url: &str, repo: &str, tag: &str) -> Option<Digest> {
    client(url)
        .head_manifest(repo, tag, &Scope::pull(repo))
        .await
        .ok()
        .flatten()
        .map(|h| h.digest)
}

/// Waits until every region serves `digest` under `repo:tag`.
async fn everywhere(regions: &Regions, repo: &str, tag: &str, digest: &Digest) {
    for (name, reg) in NAMES.iter().zip(&regions.regs) {
        let url = reg.url();
        wait_for(
            &format!("{repo}:{tag} at {digest} in {name}"),
            Duration::from_secs(60),
            async || serves(&url, repo, tag).await.as_ref() == Some(digest),
        )
        .await;
    }
}

/// Requests georep itself sent to a registry, but its health probe
/// (`GET /v2/`).
async fn georep_requests(reg: &LocalRegistry) -> usize {
    reg.settled_requests().await;
    reg.log()
        .lines()
        .filter(|l| l.contains("msg=\"response completed"))
        .filter(|l| l.contains("http.request.useragent=\"georep/"))
        .filter(|l| !l.contains("http.request.uri=\"/v2/\""))
        .count()
}

async fn settled(daemon: &DaemonProc) {
    wait_for("empty queues", Duration::from_secs(30), async || {
        let s = daemon.status().await;
        s["regions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["lag_items"] == 0 && r["in_flight"] == 0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_in_any_region_reaches_the_others_and_is_not_echoed() {
    let (listener, port) = bound();
    let regions = Regions::start(Some(port)).await;
    let config = regions.config(port, "poll_interval_secs: 3600\n");
    let daemon = DaemonProc::in_process(&config, listener, &[]).await;

    // One push in each region, all at once, each a different tag.
    let pushes = futures::future::join_all((0..3).map(|i| {
        let url = regions.url(i);
        async move {
            let repo = format!("team/{}", NAMES[i]);
            push_image(&pusher(&url), &repo, "v1", 256 * 1024, 10 + i as u64)
                .await
                .unwrap()
        }
    }))
    .await;
    for (i, pushed) in pushes.iter().enumerate() {
        everywhere(
            &regions,
            &format!("team/{}", NAMES[i]),
            "v1",
            &pushed.digest,
        )
        .await;
    }
    // Verbatim: the bytes another region serves are the pushed ones.
    let raw = skopeo_raw(&format!("{}/team/us:v1", regions.regs[2].host()))
        .await
        .unwrap();
    assert_eq!(raw, pushes[0].bytes.to_vec());

    // A tag pushed again in another region moves everywhere.
    let moved = push_image(&pusher(&regions.url(2)), "team/us", "v1", 64 * 1024, 99)
        .await
        .unwrap();
    everywhere(&regions, "team/us", "v1", &moved.digest).await;

    // Converged: georep's own writes notified back are echoes, and cost
    // no further request to any registry.
    settled(&daemon).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut before = Vec::new();
    for reg in &regions.regs {
        before.push(georep_requests(reg).await);
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    for (i, reg) in regions.regs.iter().enumerate() {
        assert_eq!(
            georep_requests(reg).await,
            before[i],
            "georep sent requests to {} after converging:\n{}",
            NAMES[i],
            tail(&daemon.log_text(), 40)
        );
    }
    let metrics = daemon.metrics().await;
    assert!(
        metric(&metrics, "georep_events_total{result=\"echo\"}").unwrap() >= 6.0,
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "georep_conflicts_total"), Some(0.0));
    let status = daemon.status().await;
    assert_eq!(status["mode"], "any-region");
    assert!(status["primary"].is_null());
    for r in status["regions"].as_array().unwrap() {
        assert_eq!(r["accepts_pushes"], true);
        assert_eq!(r["tags_in_sync"], r["tags_total"], "{status:#}");
        assert_eq!(r["tags_total"], 3, "{status:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_tag_pushed_in_two_regions_converges_on_the_later_push() {
    let (listener, port) = bound();
    let regions = Regions::start(Some(port)).await;
    let (hook, received) = notification_sink().await;
    // The order would pick `us`; the times say `eu` pushed last.
    let config = regions.config(
        port,
        &format!(
            "poll_interval_secs: 3600\nconflicts:\n  order: [us, eu, ap]\n  skew_ms: 10\nnotify:\n  - url: {hook}\n    events: [conflict]\n"
        ),
    );
    let daemon = DaemonProc::in_process(&config, listener, &[]).await;
    // Blobs first, then the two manifests 25 ms apart: both land before
    // georep could have copied either (a copy takes a notification and a
    // few round trips).
    let (us, eu) = (pusher(&regions.url(0)), pusher(&regions.url(1)));
    let first = stage_image(&us, "app", 128 * 1024, 1).await.unwrap();
    let second = stage_image(&eu, "app", 128 * 1024, 2).await.unwrap();
    let (a, b) = tokio::join!(us.put_manifest("app", "latest", &first), async {
        tokio::time::sleep(Duration::from_millis(25)).await;
        eu.put_manifest("app", "latest", &second).await
    });
    a.unwrap();
    b.unwrap();
    for (name, reg) in NAMES.iter().zip(&regions.regs) {
        let url = reg.url();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while serves(&url, "app", "latest").await.as_ref() != Some(&second.digest) {
            if std::time::Instant::now() > deadline {
                panic!(
                    "{name} does not serve the later push; status: {:#}",
                    daemon.status().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    settled(&daemon).await;
    // It stays so: nothing moves it back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in 0..3 {
        assert_eq!(
            serves(&regions.url(i), "app", "latest").await,
            Some(second.digest.clone())
        );
    }
    // The loser stays reachable by digest where it was pushed.
    assert_eq!(
        serves(&regions.url(0), "app", first.digest.as_str()).await,
        Some(first.digest.clone())
    );

    // Seen everywhere it should be.
    let log = daemon.log_text();
    assert!(log.contains("conflict on app:latest"), "{}", tail(&log, 40));
    let metrics = daemon.metrics().await;
    assert_eq!(
        metric(&metrics, "georep_conflicts_total"),
        Some(1.0),
        "{metrics}"
    );
    let status = daemon.status().await;
    let c = &status["conflicts"][0];
    assert_eq!(c["repository"], "app");
    assert_eq!(c["winner"]["region"], "eu");
    assert_eq!(c["winner"]["digest"], second.digest.as_str());
    assert_eq!(c["losers"][0]["region"], "us");
    assert_eq!(c["decided_by"], "time");
    wait_for(
        "the conflict notification",
        Duration::from_secs(10),
        async || !received.lock().unwrap().is_empty(),
    )
    .await;
    let n = received.lock().unwrap()[0].clone();
    assert_eq!(n["event"], "conflict", "{n:#}");
    assert_eq!(n["digest"], second.digest.as_str(), "{n:#}");
    let out = georep(&["status", "--config", config.to_str().unwrap()], &[]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("conflict app:latest"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_notifications_the_configured_order_decides() {
    let regions = Regions::start(None).await;
    // Pushed before georep starts: only its reconcile sees them, with no
    // times.
    let us = push_image(&pusher(&regions.url(0)), "app", "v2", 64 * 1024, 3)
        .await
        .unwrap();
    let eu = push_image(&pusher(&regions.url(1)), "app", "v2", 64 * 1024, 4)
        .await
        .unwrap();
    let only_ap = push_image(&pusher(&regions.url(2)), "solo", "v1", 64 * 1024, 5)
        .await
        .unwrap();
    let (listener, port) = bound();
    let config = regions.config(port, "conflicts:\n  order: [eu, us, ap]\n");
    let daemon = DaemonProc::in_process(&config, listener, &[]).await;
    everywhere(&regions, "app", "v2", &eu.digest).await;
    everywhere(&regions, "solo", "v1", &only_ap.digest).await;
    settled(&daemon).await;
    let status = daemon.status().await;
    let c = &status["conflicts"][0];
    assert_eq!(c["winner"]["region"], "eu", "{status:#}");
    assert_eq!(c["losers"][0]["digest"], us.digest.as_str());
    assert_eq!(c["decided_by"], "order");

    // `georep wait` with no digest: every region agrees.
    let out = georep(
        &[
            "wait",
            "--config",
            config.to_str().unwrap(),
            "app:v2",
            "--timeout",
            "20s",
        ],
        &[],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_follow_the_policy_in_every_region() {
    // Propagated: a manifest deleted in one region goes everywhere.
    let (listener, port) = bound();
    let regions = Regions::start(Some(port)).await;
    let config = regions.config(
        port,
        "poll_interval_secs: 3600\ndeletes:\n  policy: propagate\n",
    );
    let daemon = DaemonProc::in_process(&config, listener, &[]).await;
    let m = push_image(&pusher(&regions.url(0)), "gone/app", "v1", 64 * 1024, 20)
        .await
        .unwrap();
    everywhere(&regions, "gone/app", "v1", &m.digest).await;
    settled(&daemon).await;
    pusher(&regions.url(1))
        .delete_manifest("gone/app", m.digest.as_str())
        .await
        .unwrap();
    for (name, reg) in NAMES.iter().zip(&regions.regs) {
        let url = reg.url();
        wait_for(
            &format!("the delete in {name}"),
            Duration::from_secs(30),
            async || {
                serves(&url, "gone/app", "v1").await.is_none()
                    && serves(&url, "gone/app", m.digest.as_str()).await.is_none()
            },
        )
        .await;
    }
    settled(&daemon).await;
    let status = daemon.status().await;
    for r in status["regions"].as_array().unwrap() {
        assert_eq!(r["tags_total"], 0, "the base has the delete: {status:#}");
    }
    drop(daemon);

    // Ignored (the default): the deleted tag comes back from the others.
    let (listener, port) = bound();
    let regions = Regions::start(Some(port)).await;
    let config = regions.config(port, "poll_interval_secs: 3600\n");
    let daemon = DaemonProc::in_process(&config, listener, &[]).await;
    let m = push_image(&pusher(&regions.url(0)), "kept/app", "v1", 64 * 1024, 21)
        .await
        .unwrap();
    everywhere(&regions, "kept/app", "v1", &m.digest).await;
    settled(&daemon).await;
    pusher(&regions.url(2))
        .delete_manifest("kept/app", m.digest.as_str())
        .await
        .unwrap();
    // Gone for a moment in `ap`, then back, at the same digest.
    everywhere(&regions, "kept/app", "v1", &m.digest).await;
    settled(&daemon).await;
    let raw = skopeo_raw(&format!("{}/kept/app:v1", regions.regs[2].host()))
        .await
        .unwrap();
    assert_eq!(raw, m.bytes.to_vec());
}

/// A TCP link that can be cut (connections refused, open ones dropped)
/// and restored on the same port: a network partition, on loopback.
struct Link {
    port: u16,
    upstream: String,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Link {
    async fn start(upstream: &str) -> Link {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let mut link = Link {
            port,
            upstream,
            task: None,
        };
        link.task = Some(Self::serve(l, link.upstream.clone()));
        link
    }

    fn serve(l: tokio::net::TcpListener, upstream: String) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = l.accept().await {
                let upstream = upstream.clone();
                conns.spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
            // Dropping the set aborts every open connection.
        })
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Refuses new connections and drops the open ones.
    async fn cut(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    async fn restore(&mut self) {
        let l = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        self.task = Some(Self::serve(l, self.upstream.clone()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_cut_off_from_georep_catches_up_and_its_pushes_spread() {
    let (listener, port) = bound();
    // `ap` reaches georep, and georep reaches `ap`, only through links
    // that are cut; its users reach it directly all along.
    let mut to_georep = Link::start(&format!("127.0.0.1:{port}")).await;
    let ap_base = to_georep.url();
    let regions = Regions::start_with(|name| {
        Some(if name == "ap" {
            ap_base.clone()
        } else {
            format!("http://127.0.0.1:{port}")
        })
    })
    .await;
    let mut to_ap = Link::start(&regions.url(2)).await;
    let mut yaml = format!(
        "state_dir: ./state\nmode: any-region\nlisten: 127.0.0.1:{port}\nretry_max_secs: 2\npoll_interval_secs: 3\nregions:\n"
    );
    for (i, name) in NAMES.iter().enumerate() {
        let url = if i == 2 { to_ap.url() } else { regions.url(i) };
        yaml.push_str(&format!("  - name: {name}\n    url: {url}\n"));
    }
    let config = regions.dir.path().join("georep.yaml");
    std::fs::write(&config, yaml).unwrap();
    let daemon = DaemonProc::in_process(&config, listener, &[]).await;

    to_ap.cut().await;
    to_georep.cut().await;
    // Pushes elsewhere go on; one made in `ap` waits for the link.
    let one = push_image(&pusher(&regions.url(0)), "part/app", "one", 64 * 1024, 30)
        .await
        .unwrap();
    let two = push_image(&pusher(&regions.url(2)), "part/app", "two", 64 * 1024, 31)
        .await
        .unwrap();
    let eu = regions.url(1);
    wait_for("`one` in eu", Duration::from_secs(30), async || {
        serves(&eu, "part/app", "one").await.as_ref() == Some(&one.digest)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(serves(&regions.url(2), "part/app", "one").await, None);
    assert_eq!(serves(&regions.url(0), "part/app", "two").await, None);
    let status = daemon.status().await;
    assert_eq!(status["regions"][2]["reachable"], false, "{status:#}");
    assert_eq!(status["regions"][1]["reachable"], true, "{status:#}");

    to_ap.restore().await;
    to_georep.restore().await;
    everywhere(&regions, "part/app", "one", &one.digest).await;
    everywhere(&regions, "part/app", "two", &two.digest).await;
    settled(&daemon).await;
}

/// Every tag of `tags` that region `url` serves has all its content there
/// (tags last: never a tag whose manifest or blobs are missing).
async fn nothing_dangles(url: &str, tags: &[(String, String)]) -> Result<(), String> {
    let reg = client(url);
    for (repo, tag) in tags {
        let scope = Scope::pull(repo);
        let Some(m) = reg
            .get_manifest(repo, tag, &scope)
            .await
            .map_err(|e| e.to_string())?
        else {
            continue;
        };
        let refs = m.references().map_err(|e| e.to_string())?;
        for blob in refs.blobs {
            if reg
                .head_blob(repo, &blob.digest, &scope)
                .await
                .map_err(|e| e.to_string())?
                .is_none()
            {
                return Err(format!(
                    "{url} serves {repo}:{tag} without blob {}",
                    blob.digest
                ));
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_pushes_in_every_region_loses_nothing() {
    let port = georep::lab::localreg::free_port().unwrap();
    let regions = Regions::start(Some(port)).await;
    let config = regions.config(port, "poll_interval_secs: 5\n");
    let mut daemon = DaemonProc::start(&config, port, &[]).await;
    let mut pushed: Vec<(String, String, Digest)> = Vec::new();
    for n in 0..24u64 {
        let i = (n % 3) as usize;
        let (repo, tag) = (format!("stream/{}", NAMES[i]), format!("v{n}"));
        let m = push_image(&pusher(&regions.url(i)), &repo, &tag, 96 * 1024, 100 + n)
            .await
            .unwrap();
        pushed.push((repo, tag, m.digest));
        if n == 8 {
            daemon.kill9().await;
        }
        if n == 16 {
            daemon = DaemonProc::start(&config, port, &[]).await;
        }
        if n % 4 == 0 {
            let tags: Vec<(String, String)> = pushed
                .iter()
                .map(|(r, t, _)| (r.clone(), t.clone()))
                .collect();
            for i in 0..3 {
                nothing_dangles(&regions.url(i), &tags).await.unwrap();
            }
        }
    }
    for (repo, tag, digest) in &pushed {
        everywhere(&regions, repo, tag, digest).await;
    }
    let tags: Vec<(String, String)> = pushed
        .iter()
        .map(|(r, t, _)| (r.clone(), t.clone()))
        .collect();
    for i in 0..3 {
        nothing_dangles(&regions.url(i), &tags).await.unwrap();
    }
    settled(&daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_region_posts_at_its_own_door_with_its_own_credentials() {
    let regions = Regions::start(None).await;
    let (listener, port) = bound();
    // `eu` has a token of its own; `ap` accepts no pushes; the rest use
    // webhook.auth.
    let mut yaml = format!(
        "state_dir: ./state\nmode: any-region\nlisten: 127.0.0.1:{port}\npoll_interval_secs: 3600\nwebhook:\n  auth:\n    bearer_token_env: SHARED_TOKEN\nregions:\n"
    );
    for (name, reg) in NAMES.iter().zip(&regions.regs) {
        yaml.push_str(&format!("  - name: {name}\n    url: {}\n", reg.url()));
        match *name {
            "eu" => yaml.push_str("    webhook_auth:\n      bearer_token_env: EU_TOKEN\n"),
            "ap" => yaml.push_str("    accepts_pushes: false\n"),
            _ => {}
        }
    }
    let config = regions.dir.path().join("doors.yaml");
    std::fs::write(&config, yaml).unwrap();
    let daemon = DaemonProc::in_process(
        &config,
        listener,
        &[("SHARED_TOKEN", "shared"), ("EU_TOKEN", "eu-only")],
    )
    .await;
    let post = async |path: &str, token: Option<&str>| {
        let mut req = reqwest::Client::new()
            .post(daemon.url(path))
            .header("content-type", common::daemon::EVENTS)
            .body(r#"{"events":[]}"#);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    };
    assert_eq!(post("/v1/notifications/us", Some("shared")).await.0, 200);
    assert_eq!(post("/v1/notifications/us", None).await.0, 401);
    // eu's own token, and no other, opens eu's door.
    assert_eq!(post("/v1/notifications/eu", Some("eu-only")).await.0, 200);
    let (code, body) = post("/v1/notifications/eu", Some("shared")).await;
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("webhook_auth` of region eu"), "{body}");
    let (code, body) = post("/v1/notifications/ap", Some("shared")).await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("does not accept pushes"), "{body}");
    let (code, body) = post("/v1/notifications/mars", Some("shared")).await;
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("regions: us, eu, ap"), "{body}");
    let (code, body) = post("/v1/notifications", Some("shared")).await;
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("/v1/notifications/<region>"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_pass_spreads_every_region_s_tags_and_records_the_agreement() {
    let regions = Regions::start(None).await;
    let mine = push_image(&pusher(&regions.url(0)), "sync/us", "v1", 64 * 1024, 40)
        .await
        .unwrap();
    let theirs = push_image(&pusher(&regions.url(1)), "sync/eu", "v1", 64 * 1024, 41)
        .await
        .unwrap();
    push_image(&pusher(&regions.url(0)), "sync/both", "v1", 64 * 1024, 42)
        .await
        .unwrap();
    let ap_wins = push_image(&pusher(&regions.url(2)), "sync/both", "v1", 64 * 1024, 43)
        .await
        .unwrap();
    let config = regions.config(free_port(), "conflicts:\n  order: [ap, us, eu]\n");
    let (code, report) = sync_json(&config, &[]).await;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["primary"]["name"], "any-region", "{report:#}");
    everywhere(&regions, "sync/us", "v1", &mine.digest).await;
    everywhere(&regions, "sync/eu", "v1", &theirs.digest).await;
    everywhere(&regions, "sync/both", "v1", &ap_wins.digest).await;
    // A second pass finds every region agreeing: nothing written, and the
    // base recorded, so the status is all in sync.
    let (code, report) = sync_json(&config, &[]).await;
    assert_eq!(code, 0);
    for r in report["regions"].as_array().unwrap() {
        assert_eq!(r["manifests_pushed"], 0, "{report:#}");
    }
    let out = georep(&["status", "--config", config.to_str().unwrap()], &[]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn free_port() -> u16 {
    georep::lab::localreg::free_port().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_found_by_polling_goes_with_its_manifest_where_tags_cannot_go_alone() {
    // No notifications: only the reconcile sees the delete, and the
    // registries (2.x) cannot delete a tag alone.
    let regions = Regions::start(None).await;
    let (listener, port) = bound();
    let config = regions.config(
        port,
        "poll_interval_secs: 2\ndeletes:\n  policy: propagate\n",
    );
    let daemon = DaemonProc::in_process(&config, listener, &[]).await;
    let m = push_image(&pusher(&regions.url(0)), "polled/app", "v1", 64 * 1024, 50)
        .await
        .unwrap();
    // Another tag on another manifest, and a manifest with two tags: the
    // latter is kept (deleting it would take the other tag too).
    let shared = push_image(&pusher(&regions.url(0)), "polled/app", "a", 64 * 1024, 51)
        .await
        .unwrap();
    pusher(&regions.url(0))
        .put_manifest("polled/app", "b", &shared)
        .await
        .unwrap();
    everywhere(&regions, "polled/app", "v1", &m.digest).await;
    everywhere(&regions, "polled/app", "b", &shared.digest).await;
    settled(&daemon).await;
    // Let a reconcile record that every region agrees.
    tokio::time::sleep(Duration::from_secs(3)).await;
    pusher(&regions.url(1))
        .delete_manifest("polled/app", m.digest.as_str())
        .await
        .unwrap();
    for (name, reg) in NAMES.iter().zip(&regions.regs) {
        let url = reg.url();
        wait_for(
            &format!("v1 gone in {name}"),
            Duration::from_secs(30),
            async || serves(&url, "polled/app", "v1").await.is_none(),
        )
        .await;
    }
    for i in 0..3 {
        assert_eq!(
            serves(&regions.url(i), "polled/app", "b").await,
            Some(shared.digest.clone())
        );
    }
    let log = daemon.log_text();
    assert!(
        log.contains("deleted polled/app:v1 with its manifest"),
        "{}",
        tail(&log, 40)
    );
}
