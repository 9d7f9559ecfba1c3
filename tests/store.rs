//! The checkpoint store: incremental passes, `--verify`, `--rebuild-state`,
//! `georep status`, and crash safety with kill -9 — all with real
//! registries and the real binary.
// A test: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use georep::lab::corpus::{Corpus, CorpusSpec, Preset};
use georep::lab::localreg::LocalRegistry;
use georep::registry::Scope;
use tokio::io::AsyncBufReadExt;

fn requests_total(report: &serde_json::Value, region: usize) -> u64 {
    report["regions"][region]["requests"]["requests"]
        .as_object()
        .map(|m| m.values().filter_map(|v| v.as_u64()).sum())
        .unwrap_or(0)
}

/// After a pass, a pass with nothing changed asks the replicas nothing and
/// the primary only lists and HEADs; a moved tag is replicated; a deleted
/// tag is recorded and left in the regions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_op_pass_asks_replicas_nothing_and_changes_are_followed() {
    let cluster = Cluster::start(2).await;
    let corpus = push_corpus(&cluster.primary.url(), &quick_spec(31)).await;
    let config = cluster.default_config();
    let (code, _) = sync_json(&config, &[]).await;
    assert_eq!(code, 0);

    let mut before = Vec::new();
    for r in &cluster.replicas {
        before.push(r.settled_requests().await.len());
    }
    let (code, report) = sync_json(&config, &[]).await;
    assert_eq!(code, 0, "{report:#}");
    for (i, r) in cluster.replicas.iter().enumerate() {
        assert_eq!(requests_total(&report, i), 0, "{:#}", report["regions"][i]);
        assert_eq!(
            r.settled_requests().await.len(),
            before[i],
            "{} was asked something",
            r.url()
        );
        assert_eq!(report["regions"][i]["tags_in_sync"], corpus.tags.len());
    }
    let primary_ops: Vec<&String> = report["primary"]["requests"]["requests"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    for op in primary_ops {
        assert!(
            ["catalog", "tags_list", "manifest_head"].contains(&op.as_str()),
            "no-op pass sent {op} to the primary"
        );
    }

    // Move a tag: `library/base:v1` now points at what `v2` points at.
    let primary = client(&cluster.primary.url());
    let v2 = primary
        .get_manifest("library/base", "v2", &Scope::pull("library/base"))
        .await
        .unwrap()
        .unwrap();
    primary
        .put_manifest("library/base", "v1", &v2)
        .await
        .unwrap();
    // Delete a tag: the manifest of `team/app/api:v1` (its only tag).
    let gone = tag_digest(&corpus, "team/app/api", "v1");
    let del = reqwest::Client::new()
        .delete(format!(
            "{}/v2/team/app/api/manifests/{gone}",
            cluster.primary.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 202);

    let (code, report) = sync_json(&config, &[]).await;
    assert_eq!(code, 0, "{report:#}");
    for (i, r) in cluster.replicas.iter().enumerate() {
        assert_eq!(
            report["regions"][i]["tags_copied"], 1,
            "{:#}",
            report["regions"][i]
        );
        assert_eq!(report["regions"][i]["blobs_uploaded"], 0);
        let c = client(&r.url());
        let h = c
            .head_manifest("library/base", "v1", &Scope::pull("library/base"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(h.digest, v2.digest);
        // Deletes are not propagated here.
        assert!(
            c.head_manifest("team/app/api", "v1", &Scope::pull("team/app/api"))
                .await
                .unwrap()
                .is_some()
        );
    }

    // `georep status`: the deleted tag no longer counts; everything in sync.
    let out = georep(
        &["status", "--json", "--config", config.to_str().unwrap()],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(0));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for r in status["regions"].as_array().unwrap() {
        assert_eq!(r["tags_total"], corpus.tags.len() - 1, "{r:#}");
        assert_eq!(r["tags_in_sync"], corpus.tags.len() - 1, "{r:#}");
        assert!(
            r["last_success_at"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z'))
        );
    }
}

/// A blob deleted by hand in a region is invisible to a normal pass (the
/// store is trusted) and repaired by `--verify`, which corrects the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_and_repairs_what_the_store_wrongly_believes() {
    let cluster = Cluster::start(2).await;
    let corpus = push_corpus(&cluster.primary.url(), &quick_spec(32)).await;
    let config = cluster.default_config();
    assert_eq!(sync_json(&config, &[]).await.0, 0);

    let (repo, tag) = ("team/app/web", "v1");
    let blob = unique_layer(&corpus, repo, tag);
    let del = reqwest::Client::new()
        .delete(format!(
            "{}/v2/{repo}/blobs/{blob}",
            cluster.replicas[1].url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 202);
    assert!(
        verify_region(&cluster.primary.url(), &cluster.replicas[1].url(), &corpus)
            .await
            .is_err()
    );

    let (code, report) = sync_json(&config, &[]).await;
    assert_eq!(code, 0);
    assert_eq!(
        requests_total(&report, 1),
        0,
        "a normal pass trusts the store"
    );

    let out = georep(
        &[
            "sync",
            "--verify",
            "--json",
            "--config",
            config.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["regions"][1]["blobs_uploaded"], 1,
        "{:#}",
        report["regions"][1]
    );
    assert_eq!(report["regions"][0]["blobs_uploaded"], 0);
    for r in &cluster.replicas {
        verify_region(&cluster.primary.url(), &r.url(), &corpus)
            .await
            .unwrap();
    }
    let (code, report) = sync_json(&config, &[]).await;
    assert_eq!(code, 0);
    assert_eq!(requests_total(&report, 1), 0);
}

/// `georep status` reads the store: a failing region shows what it misses
/// and its last error; a store held by another process is reported busy; a
/// corrupt store is a clear error and `--rebuild-state` recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_busy_store_and_rebuild_state() {
    let mut cluster = Cluster::start(2).await;
    let corpus = push_corpus(&cluster.primary.url(), &quick_spec(33)).await;
    let config = cluster.default_config();
    let cfg = config.to_str().unwrap();

    let out = georep(&["status", "--config", cfg], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("run `georep sync"));

    cluster.replicas[1].stop().await;
    assert_eq!(sync_json(&config, &[]).await.0, 1);
    let out = georep(&["status", "--config", cfg], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8_lossy(&out.stdout);
    let n = corpus.tags.len();
    let east = table.lines().find(|l| l.starts_with("eastus")).unwrap();
    assert!(east.contains(&format!("{n}/{n}")), "{table}");
    let japan = table.lines().find(|l| l.starts_with("japaneast")).unwrap();
    assert!(japan.contains(&format!("0/{n}")), "{table}");
    assert!(japan.contains("never"), "{table}");
    let out = georep(&["status", "--json", "--config", cfg], &[]).await;
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let japan = &status["regions"][1];
    assert_eq!(japan["tags_missing"], n, "{japan:#}");
    let error = japan["last_error"].as_str().unwrap();
    assert!(
        error.contains("japaneast") && error.contains("unreachable"),
        "{error}"
    );

    // Busy: another process holds the store.
    let config_loaded = georep::config::load(&config).unwrap();
    let held = georep::engine::Engine::open_store(&config_loaded).unwrap();
    let out = georep(&["status", "--config", cfg], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another georep process"), "{err}");
    // It names the holder (this test's process) and what to do.
    assert!(
        err.contains(&format!("(pid {}: ", std::process::id())),
        "{err}"
    );
    assert!(err.contains("georep status"), "{err}");
    drop(held);

    // Corrupt: every file of the store overwritten with junk.
    cluster.replicas[1].restart().await.unwrap();
    let store_dir = cluster.dir.path().join("state/store");
    for entry in walk(&store_dir) {
        std::fs::write(&entry, b"this is not a sled database").unwrap();
    }
    let out = georep(&["sync", "--config", cfg], &[]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&store_dir.display().to_string()),
        "{stderr}"
    );
    assert!(stderr.contains("--rebuild-state"), "{stderr}");

    let out = georep(&["sync", "--rebuild-state", "--config", cfg], &[]).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(
        std::fs::read_dir(cluster.dir.path().join("state"))
            .unwrap()
            .any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("store.broken-"))
    );
    for r in &cluster.replicas {
        verify_region(&cluster.primary.url(), &r.url(), &corpus)
            .await
            .unwrap();
    }
    let out = georep(&["status", "--json", "--config", cfg], &[]).await;
    assert_eq!(out.status.code(), Some(0));

    // An item a daemon left queued for work a sync then did is not left
    // standing: the sync takes it off the queue.
    {
        let config_loaded = georep::config::load(&config).unwrap();
        let store = georep::engine::Engine::open_store(&config_loaded).unwrap();
        let t = &corpus.tags[0];
        let item = georep::store::queue::WorkItem::new(
            georep::store::queue::Action::Copy,
            t.digest.clone(),
            georep::store::queue::Origin::Event,
            1,
            georep::store::now_unix_ms(),
        );
        store
            .accept(
                Some("left-by-a-daemon"),
                &[georep::store::queue::Change {
                    repository: t.repository.clone(),
                    reference: t.tag.clone(),
                    item,
                    regions: None,
                }],
            )
            .unwrap();
        store.flush().await.unwrap();
    }
    let out = georep(&["status", "--json", "--config", cfg], &[]).await;
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{status:#}");
    assert_eq!(status["regions"][0]["queue_depth"], 1, "{status:#}");
    assert_eq!(sync_json(&config, &[]).await.0, 0);
    let out = georep(&["status", "--config", cfg], &[]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");

    // A primary that is down is the first thing said, and not "in sync".
    cluster.primary.stop().await;
    let out = georep(&["status", "--config", cfg], &[]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.lines().next().unwrap().contains("UNREACHABLE"),
        "{text}"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Every tag a region serves points at complete content.
async fn consistent(primary: &str, region: &LocalRegistry, corpus: &Corpus) -> Result<(), String> {
    let c = client(&region.url());
    let mut present = Vec::new();
    for t in &corpus.tags {
        if let Some(h) = c
            .head_manifest(&t.repository, &t.tag, &Scope::pull(&t.repository))
            .await
            .map_err(|e| e.to_string())?
        {
            assert_eq!(
                h.digest, t.digest,
                "{}:{} has a wrong digest",
                t.repository, t.tag
            );
            present.push((t.repository.clone(), t.tag.clone()));
        }
    }
    verify_tags(primary, &region.url(), corpus, |t| {
        present.contains(&(t.repository.clone(), t.tag.clone()))
    })
    .await
}

/// A region that lost what the store recorded (here: wiped) refuses the
/// next manifest that needs that content; the pass then asks the region
/// about that repository again and copies what is missing, in the same pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_that_lost_recorded_content_is_asked_again_and_refilled() {
    let mut cluster = Cluster::start(1).await;
    let corpus = push_corpus(&cluster.primary.url(), &quick_spec(37)).await;
    let config = cluster.default_config();
    let (code, report) = sync_json(&config, &[]).await;
    assert_eq!(code, 0, "{report:#}");
    cluster.replicas[0].wipe().await.unwrap();

    // A new tag for an image the store says the region holds.
    let primary = client(&cluster.primary.url());
    let scope = Scope::pull("library/base");
    let v2 = primary
        .get_manifest("library/base", "v2", &scope)
        .await
        .unwrap()
        .unwrap();
    primary
        .put_manifest("library/base", "again", &v2)
        .await
        .unwrap();
    let out = georep(
        &["sync", "--config", config.to_str().unwrap(), "--json"],
        &[],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("lacks content of library/base that georep had recorded as copied"),
        "{stderr}"
    );
    let region = cluster.replicas[0].url();
    let again = client(&region)
        .head_manifest("library/base", "again", &scope)
        .await
        .unwrap()
        .map(|h| h.digest);
    assert_eq!(again, Some(v2.digest.clone()));
    // The image under both tags is whole again, every blob and child.
    verify_tags(&cluster.primary.url(), &region, &corpus, |t| {
        t.repository == "library/base" && t.tag == "v2"
    })
    .await
    .unwrap();
}

/// Completed blob uploads per (repository, digest) in a registry's log.
fn completed_uploads(reg: &LocalRegistry) -> HashMap<(String, String), usize> {
    let mut out = HashMap::new();
    for (m, uri, status) in reg.requests() {
        if m != "PUT" || status != 201 || !uri.contains("/blobs/uploads/") {
            continue;
        }
        let repo = uri
            .trim_start_matches("/v2/")
            .split("/blobs/uploads/")
            .next()
            .unwrap()
            .to_owned();
        let digest = uri
            .split("digest=")
            .nth(1)
            .map(|d| d.split('&').next().unwrap().replace("%3A", ":"))
            .unwrap_or_default();
        *out.entry((repo, digest)).or_default() += 1;
    }
    out
}

/// Unique blobs of the corpus that region `r` does not store at all (by
/// the registry's storage layout): each needs one more upload there, the
/// other uses of a digest being mounts. Foreign layers are never copied.
fn blobs_absent(r: &LocalRegistry, corpus: &Corpus) -> usize {
    let store = r.dir.join("data/docker/registry/v2/blobs/sha256");
    let digests: std::collections::BTreeSet<&georep::digest::Digest> = corpus
        .blobs
        .values()
        .flat_map(|b| b.keys())
        .filter(|d| !corpus.foreign.contains(d))
        .collect();
    digests
        .iter()
        .filter(|d| {
            let hex = d.as_str().trim_start_matches("sha256:");
            !store.join(&hex[..2]).join(hex).join("data").exists()
        })
        .count()
}

/// kill -9 at several points (early, mid-blob, between manifests), restart
/// each time: no region ever serves a tag pointing at missing content, the
/// final pass completes every region, and no finished blob is sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_any_point_then_resume() {
    let cluster = Cluster::start(2).await;
    let spec = CorpusSpec {
        big_layers: 3,
        big_layer_bytes: (40 << 20, 48 << 20),
        ..CorpusSpec::preset(Preset::Test, 34)
    };
    let corpus = push_corpus(&cluster.primary.url(), &spec).await;
    let config = cluster.default_config();
    let sizes: HashMap<String, u64> = corpus
        .blobs
        .values()
        .flat_map(|b| b.values())
        .map(|b| (b.digest.to_string(), b.size))
        .collect();

    // Kill points, each relative to what the replicas had logged when that
    // run started: (name, counter, how many new ones to wait for).
    type Counter = fn(&LocalRegistry) -> usize;
    let counters: [(&str, Counter, usize); 4] = [
        (
            "early: first upload session opened",
            |r| r.count_requests("POST", "/blobs/uploads/"),
            1,
        ),
        ("mid-blob: a 40+ MiB layer is streaming", |_| 0, 0),
        (
            "after some blobs: 8 uploads completed",
            |r| completed_uploads(r).values().sum(),
            8,
        ),
        (
            "between manifests: a manifest was pushed",
            |r| r.count_requests("PUT", "/manifests/"),
            1,
        ),
    ];
    let big_streaming = |log: &[String]| {
        log.iter().any(|l| {
            l.contains("streaming blob")
                && l.split("size=")
                    .nth(1)
                    .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
                    .and_then(|s| s.parse::<u64>().ok())
                    .is_some_and(|n| n >= 40 << 20)
        })
    };
    for (name, count, wanted) in counters {
        // How far a run gets before its kill depends on the machine's speed
        // (and the registries log a request only after answering it): a
        // point is skipped, saying so, when earlier runs left too little
        // work to reach it before the sync would end by itself.
        let mut whole = true;
        for r in &cluster.replicas {
            whole &= verify_region(&cluster.primary.url(), &r.url(), &corpus)
                .await
                .is_ok();
        }
        if whole {
            eprintln!("kill point {name:?} skipped: the regions are complete already");
            continue;
        }
        let wanted = if name.starts_with("after some blobs") {
            // At most half of what every region still lacks, so that the
            // sync is still uploading when the point is seen.
            let absent = cluster
                .replicas
                .iter()
                .map(|r| blobs_absent(r, &corpus))
                .min()
                .unwrap_or(0);
            if absent < 2 {
                eprintln!("kill point {name:?} skipped: only {absent} blob(s) left to upload");
                continue;
            }
            wanted.min(absent / 2)
        } else {
            wanted
        };
        let base: Vec<usize> = cluster.replicas.iter().map(count).collect();
        let log = Arc::new(Mutex::new(Vec::<String>::new()));
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_georep"))
            .args(["sync", "--config", config.to_str().unwrap()])
            .env("GEOREP_LOG", "georep=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        let reader = tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                sink.lock().unwrap().push(l);
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let reached = if wanted == 0 {
                big_streaming(&log.lock().unwrap())
            } else {
                cluster
                    .replicas
                    .iter()
                    .zip(&base)
                    .any(|(r, b)| count(r) >= b + wanted)
            };
            if reached {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("sync ended ({status}) before the kill point {name:?}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "kill point {name:?} never reached"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if name.starts_with("mid-blob") {
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        child.start_kill().unwrap();
        let status = child.wait().await.unwrap();
        reader.abort();
        eprintln!("killed at {name:?} (waited for {wanted} new): {status}");
        for r in &cluster.replicas {
            consistent(&cluster.primary.url(), r, &corpus)
                .await
                .unwrap_or_else(|e| panic!("after kill at {name:?}: {e}"));
        }
    }

    let (code, report) = sync_json(&config, &[]).await;
    assert_eq!(code, 0, "{report:#}");
    for r in &cluster.replicas {
        verify_region(&cluster.primary.url(), &r.url(), &corpus)
            .await
            .unwrap();
        let mut again = 0u64;
        for ((repo, digest), n) in completed_uploads(r) {
            if n > 1 {
                let size = sizes.get(&digest).copied().unwrap_or(0);
                eprintln!(
                    "{} re-uploaded {repo}@{digest} ({size} bytes) {} times",
                    r.url(),
                    n - 1
                );
                again += size * (n as u64 - 1);
            }
        }
        assert_eq!(
            again,
            0,
            "bytes of finished blobs sent again to {}",
            r.url()
        );
    }
}
