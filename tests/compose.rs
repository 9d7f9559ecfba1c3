//! What can be checked of the container setup without a Docker engine:
//! docker-compose.yml, its registry configs, config/compose.yaml and the
//! Dockerfile agree with each other (paths, ports, host names); the same
//! registry configs start the real `docker-registry` binary and take a
//! push; and the image's health check command works against a daemon.
// A test: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::daemon::DaemonProc;
use common::{Cluster, client, georep};
use georep::lab::localreg::free_port;
use georep::registry::Scope;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `./host/path:/container/path[:ro]` of a service, host side resolved.
fn mounts(service: &Value) -> Vec<(String, String)> {
    service["volumes"]
        .as_array()
        .map(|v| {
            v.iter()
                .map(|m| {
                    let parts: Vec<&str> = m.as_str().unwrap().split(':').collect();
                    (parts[0].to_owned(), parts[1].to_owned())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The container port of a `127.0.0.1:HOST:CONTAINER` mapping; every
/// published port must be on loopback.
fn container_port(service: &Value) -> u16 {
    let p = service["ports"][0].as_str().unwrap();
    assert!(
        p.starts_with("127.0.0.1:"),
        "{p} is published beyond loopback"
    );
    p.rsplit(':').next().unwrap().parse().unwrap()
}

fn port_of_addr(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn compose_file_agrees_with_its_configs_and_the_dockerfile() {
    let compose = yaml(&root().join("docker-compose.yml"));
    let services = compose["services"].as_object().expect("services");
    let named_volumes = compose["volumes"].as_object().expect("volumes");
    for (name, s) in services {
        for (host, target) in mounts(s) {
            if host.starts_with("./") {
                assert!(
                    root().join(&host).is_file(),
                    "{name}: {host} does not exist"
                );
            } else {
                assert!(
                    named_volumes.contains_key(&host),
                    "{name}: volume {host} undeclared"
                );
                assert!(target.starts_with("/var/lib/"), "{name}: {target}");
            }
        }
    }

    // The registries: the image reads its config from this path; the port
    // the config listens on is the one published; storage on the volume.
    let mut registry_ports = std::collections::BTreeMap::new();
    for name in ["primary", "eastus", "japaneast"] {
        let s = &services[name];
        assert_eq!(s["image"], "registry:2", "{name}");
        let m = mounts(s);
        let (config, _) = m
            .iter()
            .find(|(_, t)| t == "/etc/docker/registry/config.yml")
            .unwrap_or_else(|| panic!("{name} mounts no registry config"));
        let want = if name == "primary" {
            "primary.yml"
        } else {
            "replica.yml"
        };
        assert!(config.ends_with(want), "{name}: {config}");
        let rc = yaml(&root().join(config));
        let port = port_of_addr(rc["http"]["addr"].as_str().unwrap());
        assert_eq!(port, container_port(s), "{name}");
        let data = rc["storage"]["filesystem"]["rootdirectory"]
            .as_str()
            .unwrap();
        assert!(
            m.iter().any(|(v, t)| t == data && v == name),
            "{name}: {data} not on its volume"
        );
        assert_eq!(rc["storage"]["delete"]["enabled"], true, "{name}");
        registry_ports.insert(name, port);
    }

    // georep: built from the Dockerfile, its config mounted where the
    // command reads it, the registries named by their service names.
    let g = &services["georep"];
    let dockerfile = root().join(g["build"]["dockerfile"].as_str().unwrap());
    assert!(dockerfile.is_file());
    let command: Vec<&str> = g["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(&command[..2], ["run", "--config"]);
    let config_target = command[2];
    let m = mounts(g);
    let (config_file, _) = m
        .iter()
        .find(|(_, t)| t == config_target)
        .expect("config mounted");
    let config = georep::config::load(&root().join(config_file)).expect("compose config loads");
    let host_port = |u: &url::Url| (u.host_str().unwrap().to_owned(), u.port().unwrap());
    assert_eq!(
        host_port(&config.primary().expect("a primary").url),
        ("primary".to_owned(), registry_ports["primary"])
    );
    let regions: Vec<(String, u16)> = config.regions.iter().map(|r| host_port(&r.url)).collect();
    assert_eq!(
        regions,
        [
            ("eastus".to_owned(), registry_ports["eastus"]),
            ("japaneast".to_owned(), registry_ports["japaneast"])
        ]
    );
    let state = config.state_dir.to_str().unwrap();
    assert!(
        m.iter().any(|(v, t)| t == state && v == "georep"),
        "state_dir {state} not on a volume"
    );
    let listen = port_of_addr(&config.daemon.listen);
    assert_eq!(listen, container_port(g));

    // The primary notifies georep's webhook at that port.
    let primary = yaml(&root().join("config/registry/primary.yml"));
    let endpoint = &primary["notifications"]["endpoints"][0]["url"];
    assert_eq!(
        endpoint.as_str().unwrap(),
        format!("http://georep:{listen}/v1/notifications")
    );

    // The Dockerfile: multi-stage, non-root, health check, same config path.
    let df = std::fs::read_to_string(&dockerfile).unwrap();
    assert!(
        df.matches("\nFROM ").count() + usize::from(df.starts_with("FROM ")) >= 2,
        "multi-stage"
    );
    assert!(df.contains("\nUSER georep\n"), "runs as root");
    assert!(df.contains("HEALTHCHECK"), "no health check");
    assert!(df.contains(r#"ENTRYPOINT ["georep"]"#));
    assert!(df.contains(&format!(r#"CMD ["run", "--config", "{config_target}"]"#)));
    assert!(df.contains(&format!("EXPOSE {listen}")));
    assert!(df.contains(&format!(
        r#""georep", "health", "--config", "{config_target}""#
    )));
}

/// Starts `docker-registry serve` on a shipped config, on a free loopback
/// port and a temporary storage directory (environment overrides, as the
/// registry documents them).
async fn serve(config: &Path, data: &Path) -> (tokio::process::Child, String) {
    let port = free_port().unwrap();
    let child = tokio::process::Command::new(
        std::env::var("GEOREP_REGISTRY_BIN").unwrap_or_else(|_| "docker-registry".into()),
    )
    .arg("serve")
    .arg(config)
    .env("REGISTRY_HTTP_ADDR", format!("127.0.0.1:{port}"))
    .env("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", data)
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .kill_on_drop(true)
    .spawn()
    .expect("docker-registry starts");
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !reqwest::get(format!("{url}/v2/"))
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(
            Instant::now() < deadline,
            "{} did not start",
            config.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, url)
}

#[tokio::test]
async fn shipped_registry_configs_run_the_real_registry() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["primary", "replica"] {
        let config = root().join(format!("config/registry/{name}.yml"));
        let (_child, url) = serve(&config, &dir.path().join(name)).await;
        let r = client(&url);
        let m = georep::lab::corpus::push_image(&r, "library/app", "1", 50_000, 3)
            .await
            .unwrap_or_else(|e| panic!("{name}: push: {e:#}"));
        let head = r
            .head_manifest("library/app", "1", &Scope::pull("library/app"))
            .await
            .unwrap();
        assert_eq!(head.map(|h| h.digest), Some(m.digest.clone()), "{name}");
        // Deletes are enabled (georep's delete propagation and bench need them).
        assert!(
            r.delete_manifest("library/app", m.digest.as_str())
                .await
                .unwrap(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn health_command_asks_the_daemon() {
    let cluster = Cluster::start(1).await;
    let port = free_port().unwrap();
    let urls = cluster.replica_urls();
    let config = cluster.config(
        &cluster.primary.url(),
        &urls,
        &format!("listen: 127.0.0.1:{port}\npoll_interval_secs: 0\n"),
    );
    let out = georep(&["health", "--config", config.to_str().unwrap()], &[]).await;
    assert_eq!(out.status.code(), Some(1), "nothing listens yet");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("127.0.0.1:{port}/healthz: no answer"))
    );

    let _daemon = DaemonProc::start(&config, port, &[]).await;
    let out = georep(&["health", "--config", config.to_str().unwrap()], &[]).await;
    assert_eq!(out.status.code(), Some(0));
    let out = georep(
        &["health", "--url", &format!("http://127.0.0.1:{port}/")],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("healthy"));
}
