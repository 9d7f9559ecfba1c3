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
    assert!(stderr.contains("unknown key `colour`"), "{stderr}");

    // A mistake the parser stops at does not hide the others; sizes and
    // numbers are refused in plain words, keys get a suggestion.
    let (code, _, stderr) = check_config(
        "state_dir: s\nprimary:\n  name: p\n  url: http://127.0.0.1:5000\n  max_bytes_per_sec: -5\nregions:\n  - name: r\n    url: http://127.0.0.1:5001\n\
         concurrency:\n  max_concurrent_images: four\nmax_concurrent_blobs: 2\ndeletes:\n  polcy: propagate\n",
    );
    assert_eq!(code, Some(2));
    for want in [
        "invalid config bad.yaml: 4 problems",
        "bad.yaml:5:22: max_bytes_per_sec must be at least 1 byte, not -5",
        "bad.yaml:10:26: expected a whole number (0 or more), not \"four\"",
        "bad.yaml:11:1: unknown key `max_concurrent_blobs`: did you mean `max_concurrent_blobs` (under `concurrency:`)?",
        "bad.yaml:13:3: unknown key `polcy`: did you mean `policy`?",
    ] {
        assert!(stderr.contains(want), "{want}\n{stderr}");
    }
    assert!(!stderr.contains("untagged"), "{stderr}");
    // A valid config is shown as understood: `50 MB/s` is 50 000 000 bytes/s.
    let (code, stdout, _) = check_config(
        "state_dir: s\nprimary:\n  name: p\n  url: http://127.0.0.1:5000\nregions:\n  - name: r\n    url: http://127.0.0.1:5001\nlimits:\n  max_bytes_per_sec: 50 MB/s\n",
    );
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains("50000000 bytes/s (47.7 MiB/s, 400.0 Mbit/s)"),
        "{stdout}"
    );

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

#[test]
fn check_config_explains_the_any_region_mode_and_its_mistakes() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/any-region.yaml"),
    )
    .unwrap();
    let (code, stdout, _) = check_config(&text);
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains("ok — any-region mode, 4 regions"),
        "{stdout}"
    );
    assert!(stdout.contains("region (read-only)"), "{stdout}");
    assert!(stdout.contains("/v1/notifications/<region>"), "{stdout}");

    let mixed = "state_dir: s\nmode: any-region\nprimary:\n  name: home\n  url: http://127.0.0.1:5000\nregions:\n  - name: us\n    url: http://127.0.0.1:5001\n    accepts_pushes: true\n  - name: eu\n    url: http://127.0.0.1:5002\nconflicts:\n  order: [us, eu, mars]\n";
    let (code, _, stderr) = check_config(mixed);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("bad.yaml:4:9: any-region mode has no primary"),
        "{stderr}"
    );
    assert!(
        stderr.contains("bad.yaml:13:19: conflicts.order names \"mars\""),
        "{stderr}"
    );
}

/// The Kubernetes example: its config loads (secrets from the pod's
/// environment), is a cluster config, and fits the StatefulSet around it.
#[test]
fn the_kubernetes_statefulset_fits_its_config() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/georep.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
    let of_kind = |kind: &str| -> Vec<&serde_json::Value> {
        docs.iter().filter(|d| d["kind"] == kind).collect()
    };
    let config_map = of_kind("ConfigMap")[0];
    let yaml = config_map["data"]["georep.yaml"].as_str().unwrap();
    let env = |_: &str| Some("from-a-secret".to_owned());
    let config = georep::config::load_str(Path::new("/etc/georep/georep.yaml"), yaml, &env)
        .unwrap_or_else(|e| panic!("{}: the ConfigMap's georep.yaml: {e}", path.display()));
    let cluster = config.cluster.as_ref().expect("a cluster config");
    assert!(
        cluster.endpoints.len() >= 3,
        "an etcd cluster, not one node"
    );
    assert!(
        cluster.advertise_url.contains(".georep-peers."),
        "{}",
        cluster.advertise_url
    );

    let set = of_kind("StatefulSet")[0];
    let spec = &set["spec"];
    assert!(spec["replicas"].as_u64().unwrap() >= 2);
    assert_eq!(spec["serviceName"], "georep-peers");
    let headless = of_kind("Service")
        .into_iter()
        .find(|s| s["metadata"]["name"] == "georep-peers")
        .expect("the headless Service the advertise_url names");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    let pod = &spec["template"]["spec"];
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args, ["run", "--config", "/etc/georep/georep.yaml"]);
    // The store lives on the per-instance volume.
    let mounts = container["volumeMounts"].as_array().unwrap();
    let state = mounts.iter().find(|m| m["name"] == "state").unwrap();
    assert_eq!(
        Path::new(state["mountPath"].as_str().unwrap()),
        config.state_dir.as_path()
    );
    assert_eq!(spec["volumeClaimTemplates"][0]["metadata"]["name"], "state");
    let config_mount = mounts.iter().find(|m| m["name"] == "config").unwrap();
    assert_eq!(config_mount["mountPath"], "/etc/georep");
    // The API's port, in the container, the probes and the advertise_url.
    let port: u16 = config
        .daemon
        .listen
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        container["ports"][0]["containerPort"].as_u64(),
        Some(u64::from(port))
    );
    assert!(cluster.advertise_url.ends_with(&format!(":{port}")));
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(
        !config.daemon.listen.starts_with("127."),
        "the others must reach it"
    );
    // The drain fits in the pod's grace period.
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(grace > config.daemon.shutdown_grace.as_secs());
}
