//! `georep sync --dry-run`: nothing reaches any region, and the plan it
//! reports is what the real sync then does, figure for figure.
// A test: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Cluster, georep, push_corpus, quick_spec, sync_json, writes};

const FIGURES: [&str; 5] = [
    "tags_copied",
    "blobs_uploaded",
    "bytes_uploaded",
    "blobs_mounted",
    "manifests_pushed",
];

/// Figures a dry run predicts exactly. Manifest pushes are within one or
/// two: a manifest that is both tagged and referenced (an index's child, a
/// referrer's subject) is pushed once or twice, depending on whether its tag
/// or its referrer comes first — an order the real pass does not fix either.
const EXACT: [&str; 4] = [
    "tags_copied",
    "blobs_uploaded",
    "bytes_uploaded",
    "blobs_mounted",
];

#[tokio::test]
async fn dry_run_writes_nothing_and_predicts_the_sync() {
    let cluster = Cluster::start(2).await;
    let corpus = push_corpus(&cluster.primary.url(), &quick_spec(5)).await;
    let config = cluster.default_config();
    let path = config.to_str().unwrap();

    let out = georep(&["sync", "--config", path, "--dry-run", "--json"], &[]).await;
    assert_eq!(out.status.code(), Some(0));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["dry_run"], true);
    for r in &cluster.replicas {
        assert_eq!(writes(r).await, 0, "a dry run wrote to {}", r.url());
    }
    let tags = corpus.tags.len() as u64;
    for region in plan["regions"].as_array().unwrap() {
        assert_eq!(region["tags_copied"], tags, "{region:#}");
        assert!(
            region["bytes_uploaded"].as_u64().unwrap() > 60 << 10,
            "{region:#}"
        );
    }
    // A dry run writes nothing: with no state yet, it leaves none behind,
    // and status still says nothing was ever synced.
    let state = cluster.dir.path().join("state");
    assert!(!state.exists(), "a dry run created {}", state.display());
    let status = georep(&["status", "--config", path], &[]).await;
    assert_eq!(status.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&status.stderr).contains("no state store"));

    // The human form says what it is and lists the tags.
    let out = georep(&["sync", "--config", path, "--dry-run"], &[]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("DRY RUN: nothing was written"), "{text}");
    assert!(
        text.contains("TO COPY") && text.contains("would copy"),
        "{text}"
    );

    let (code, done) = sync_json(&config, &[]).await;
    assert_eq!(code, 0);
    for (p, d) in plan["regions"]
        .as_array()
        .unwrap()
        .iter()
        .zip(done["regions"].as_array().unwrap())
    {
        for f in EXACT {
            assert_eq!(p[f], d[f], "{f}: plan {p:#} vs sync {d:#}");
        }
        let (pm, dm) = (
            p["manifests_pushed"].as_i64().unwrap(),
            d["manifests_pushed"].as_i64().unwrap(),
        );
        assert!((pm - dm).abs() <= 2, "manifests: plan {pm} vs sync {dm}");
    }

    // In sync: the plan is empty, and still nothing is written.
    let before = futures::future::join_all(cluster.replicas.iter().map(writes)).await;
    let out = georep(&["sync", "--config", path, "--dry-run", "--json"], &[]).await;
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for region in plan["regions"].as_array().unwrap() {
        for f in FIGURES {
            assert_eq!(region[f], 0, "{f}: {region:#}");
        }
        assert_eq!(region["tags_in_sync"], tags);
    }
    let after = futures::future::join_all(cluster.replicas.iter().map(writes)).await;
    assert_eq!(before, after);
}
