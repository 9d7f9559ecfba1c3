//! `georep sync` progress: off a terminal, plain `[sync] REGION: ...` lines
//! (periodically and once at the end) whose figures match the report;
//! `--progress none` silences them.
// A test: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Cluster, georep, push_corpus, quick_spec};

#[tokio::test]
async fn plain_progress_lines_per_region_match_the_report() {
    let cluster = Cluster::start(2).await;
    push_corpus(&cluster.primary.url(), &quick_spec(8)).await;
    let config = cluster.default_config();
    let config = config.to_str().unwrap();

    // Not a terminal: plain lines by default.
    let out = georep(&["sync", "--config", config, "--json"], &[]).await;
    assert_eq!(out.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    for region in report["regions"].as_array().unwrap() {
        let name = region["name"].as_str().unwrap();
        let done = stderr
            .lines()
            .find(|l| l.starts_with(&format!("[sync] {name}: ")) && l.ends_with("(done)"))
            .unwrap_or_else(|| panic!("no final line for {name}:\n{stderr}"));
        let blobs = region["blobs_uploaded"].as_u64().unwrap();
        let mounts = region["blobs_mounted"].as_u64().unwrap();
        let manifests = region["manifests_pushed"].as_u64().unwrap();
        assert!(blobs > 0);
        for part in [
            format!("{blobs} blobs"),
            format!("{mounts} mounts"),
            format!("{manifests} manifests"),
        ] {
            assert!(done.contains(&part), "{part} not in {done:?}");
        }
    }

    let out = georep(&["sync", "--config", config, "--progress", "none"], &[]).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("[sync]"));
}
