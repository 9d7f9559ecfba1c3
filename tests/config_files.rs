//! Every config file shipped in `config/` loads and validates, and
//! `georep check-config` reports mistakes with file, line and column.
// A test: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::path::Path;

#[test]
fn every_shipped_config_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let config =
                georep::config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(!config.regions.is_empty(), "{}", path.display());
            n += 1;
        }
    }
    assert!(n >= 2, "no config files found in {}", dir.display());
}

fn check_config(text: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_georep"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).replace(path.to_str().unwrap(), "bad.yaml"),
    )
}

#[test]
fn check_config_accepts_the_minimal_file() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/minimal.yaml"))
            .unwrap();
    let (code, stdout, _) = check_config(&text);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("ok"), "{stdout}");
}

#[test]
fn check_config_reports_each_mistake_with_its_place() {
    let (code, _, stderr) = check_config(
        "state_dir: s\nprimary:\n  name: p\n  url: http://h:5000\nregions:\n  - name: p\n    url: http://h:5000\n",
    );
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("bad.yaml:6:11: duplicate region name \"p\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("bad.yaml:7:10: region \"p\" has the same URL"),
        "{stderr}"
    );

    let (code, _, stderr) = check_config(
        "state_dir: s\nprimary:\n  name: p\n  url: http://h:5000\n  colour: red\nregions: []\n",
    );
    assert_eq!(code, Some(2));
    assert!(stderr.contains("bad.yaml:5:3"), "{stderr}");
    assert!(stderr.contains("unknown field `colour`"), "{stderr}");

    let (code, _, stderr) = check_config("state_dir: [\n");
    assert_eq!(code, Some(2));
    assert!(stderr.contains("bad.yaml:1:"), "{stderr}");

    let (code, _, stderr) = check_config(
        "state_dir: s\nprimary:\n  name: p\n  url: http://h:5000\nregions:\n  - name: r\n    url: http://h:5001\nconcurrency:\n  max_concurrent_blobs: many\n",
    );
    assert_eq!(code, Some(2));
    assert!(stderr.contains("bad.yaml:9:25"), "{stderr}");
}

#[test]
fn missing_file_and_bad_usage_exit_2() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_georep"))
        .args(["sync", "--config", "/nonexistent/georep.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/georep.yaml"), "{stderr}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_georep"))
        .args(["sync", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
