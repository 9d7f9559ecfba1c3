//! Logs: `--log-format json` gives one JSON object per stderr line (errors
//! included); `GEOREP_LOG`, else `RUST_LOG`, filters them; a filter that
//! does not parse is named, not silently ignored.
// A test: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Output;

use common::{Cluster, client};

/// A cluster whose primary holds one image.
async fn cluster(regions: usize) -> Cluster {
    let c = Cluster::start(regions).await;
    georep::lab::corpus::push_image(&client(&c.primary.url()), "team/app", "1", 50_000, 1)
        .await
        .unwrap();
    c
}

async fn georep(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_georep"));
    cmd.args(args)
        .env_remove("GEOREP_LOG")
        .env_remove("RUST_LOG")
        .env_remove("GEOREP_LOG_FORMAT");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().await.expect("georep runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let mut cluster = cluster(2).await;
    // One region down: the sync logs warnings about it and exits 1.
    cluster.replicas[1].stop().await;
    let config = cluster.default_config();
    let config = config.to_str().unwrap();
    let out = georep(
        &["--log-format", "json", "sync", "--config", config],
        &[("GEOREP_LOG", "georep=debug,warn")],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    let mut levels = std::collections::BTreeSet::new();
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["timestamp"].is_string(), "{line}");
        assert!(v["message"].is_string(), "{line}");
        levels.insert(v["level"].as_str().unwrap().to_owned());
    }
    assert!(
        levels.contains("DEBUG") && levels.contains("WARN"),
        "{levels:?}"
    );
    // The report still goes to stdout, as a table.
    assert!(String::from_utf8_lossy(&out.stdout).contains("REGION"));

    // The environment variable chooses the format too; a fatal error is
    // one more JSON object naming the file.
    let out = georep(
        &["sync", "--config", "/nonexistent/georep.yaml"],
        &[("GEOREP_LOG_FORMAT", "json")],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_str(stderr(&out).trim()).unwrap();
    assert_eq!(v["level"], "ERROR");
    assert_eq!(
        v["error"],
        "cannot read config file /nonexistent/georep.yaml: No such file or directory (os error 2)"
    );
}

#[tokio::test]
async fn log_filters_come_from_georep_log_then_rust_log() {
    let cluster = cluster(1).await;
    let config = cluster.default_config();
    let config = config.to_str().unwrap();
    let sync = ["sync", "--config", config];

    let out = georep(&sync, &[]).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(!stderr(&out).contains("DEBUG"), "default is info");

    let out = georep(&sync, &[("RUST_LOG", "debug")]).await;
    assert!(stderr(&out).contains("DEBUG"), "RUST_LOG is honoured");

    let out = georep(&sync, &[("RUST_LOG", "debug"), ("GEOREP_LOG", "error")]).await;
    assert!(!stderr(&out).contains("DEBUG"), "GEOREP_LOG wins");
    assert!(!stderr(&out).contains("INFO"), "GEOREP_LOG wins");

    let out = georep(&sync, &[("GEOREP_LOG", "georep=[nope")]).await;
    assert_eq!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(
        err.contains(r#"GEOREP_LOG="georep=[nope" is not a log filter"#)
            && err.contains("using georep=info,warn"),
        "{err}"
    );
}
