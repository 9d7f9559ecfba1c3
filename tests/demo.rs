//! The README's first quick-start command: `georep demo` works end to end.
// A test: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_replicates_the_sample_set_and_shows_where_each_tag_landed() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::georep(&["demo", "--dir", dir.path().to_str().unwrap()], &[]).await;
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("team/app/api:latest"), "{stdout}");
    assert!(
        stdout.contains("all 9 tags are in every region with the primary's digest"),
        "{stdout}"
    );
    // It leaves the config it used, valid, for `georep sync` to be tried.
    let config = dir.path().join("georep.yaml");
    georep::config::load(&config).unwrap();
}
