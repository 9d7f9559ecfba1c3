//! Credentials as the ecosystem keeps them: a region behind basic auth
//! whose georep config has no `credentials` is reached with what the
//! Docker config (`DOCKER_CONFIG`) says — an `auths` entry, a `credHelpers`
//! helper, the `credsStore` — and no secret ever shows in any output.
// A test: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use base64::Engine as _;
use common::{Cluster, client};
use georep::lab::localreg::{LocalAuth, LocalOptions};

const PASSWORD: &str = "S3cret-pw-7f3a9c";
const WRONG: &str = "Wr0ng-pw-51d2e8";

async fn run(args: &[&str], docker_config: &Path, path: &str) -> (i32, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_georep"))
        .args(args)
        .env("DOCKER_CONFIG", docker_config)
        .env("PATH", path)
        .env("GEOREP_LOG", "trace")
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // No secret, nor its base64 form in a header, anywhere.
    for secret in [PASSWORD, WRONG] {
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("georep:{secret}"));
        assert!(
            !text.contains(secret),
            "{args:?} printed a password:\n{text}"
        );
        assert!(
            !text.contains(&b64),
            "{args:?} printed a basic-auth header:\n{text}"
        );
    }
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test]
async fn docker_config_auths_helpers_and_store_without_leaking() {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    let hash = bcrypt::hash_with_result(PASSWORD, 4)
        .unwrap()
        .format_for_version(bcrypt::Version::TwoY);
    std::fs::write(&htpasswd, format!("georep:{hash}\n")).unwrap();
    let mut cluster = Cluster::start_with(1, LocalOptions::default(), |_| LocalOptions {
        auth: Some(LocalAuth::Htpasswd {
            path: htpasswd.clone(),
        }),
        ..LocalOptions::default()
    })
    .await;
    georep::lab::corpus::push_image(&client(&cluster.primary.url()), "team/app", "1", 100_000, 4)
        .await
        .unwrap();
    let config = cluster.default_config();
    let config = config.to_str().unwrap();
    let region_host = cluster.replicas[0].host();

    // A credential helper on PATH that knows only the region.
    let path = common::credential_helper(dir.path(), Some(&region_host), PASSWORD);

    let docker = dir.path().join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    let write_docker = |json: String| std::fs::write(docker.join("config.json"), json).unwrap();
    let auth = |pw: &str| base64::engine::general_purpose::STANDARD.encode(format!("georep:{pw}"));
    let sync = ["sync", "--config", config, "--json"];

    // Wrong password in `auths`: refused, the region named, no secret shown.
    write_docker(format!(
        r#"{{"auths": {{"{region_host}": {{"auth": "{}"}}}}}}"#,
        auth(WRONG)
    ));
    let (code, text) = run(&sync, &docker, &path).await;
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("401") || text.contains("Unauthorized"),
        "{text}"
    );
    // Said once, about the registry, not once per tag.
    assert!(
        text.contains("refused the credentials of user")
            && text.contains("(1 item(s) not replicated, e.g. team/app:1)"),
        "{text}"
    );
    // `check-config --connect` says it once, about the registry, in words.
    // (`Cluster::config` always writes the same file: the https one is
    // moved aside.)
    let tls_config = cluster.config(
        &cluster.primary.url().replace("http://", "https://"),
        &cluster.replica_urls(),
        "",
    );
    let moved = tls_config.with_file_name("https.yaml");
    std::fs::rename(&tls_config, &moved).unwrap();
    let tls_config = moved;
    let plain_config = cluster.default_config();
    let cases = [
        (
            None,
            plain_config.as_path(),
            format!(
                "connect eastus: eastus (http://{region_host}) refused the credentials of user \"georep\""
            ),
        ),
        (
            Some("{}"),
            plain_config.as_path(),
            "requires credentials and none are configured".to_owned(),
        ),
        (
            Some("{}"),
            tls_config.as_path(),
            "the registry speaks plain http: use http:// or fix its TLS".to_owned(),
        ),
    ];
    for (docker_json, cfg, want) in cases {
        if let Some(json) = docker_json {
            write_docker(json.to_owned());
        }
        let args = [
            "check-config",
            "--config",
            cfg.to_str().unwrap(),
            "--connect",
        ];
        let (code, text) = run(&args, &docker, &path).await;
        assert_eq!(code, 1, "{text}");
        assert!(text.contains(&want), "{want}\n{text}");
    }
    let config_path = cluster.default_config();
    let config = config_path.to_str().unwrap();

    // The right one, as `auths`, then through credHelpers, then credsStore.
    let cases = [
        format!(
            r#"{{"auths": {{"http://{region_host}": {{"auth": "{}"}}}}}}"#,
            auth(PASSWORD)
        ),
        format!(
            r#"{{"auths": {{"{region_host}": {{"username": "georep", "password": "{PASSWORD}"}}}}}}"#
        ),
        format!(r#"{{"credHelpers": {{"{region_host}": "georeptest"}}}}"#),
        r#"{"auths": {}, "credsStore": "georeptest"}"#.to_owned(),
    ];
    for json in cases {
        cluster.replicas[0].wipe().await.unwrap();
        let _ = std::fs::remove_dir_all(cluster.dir.path().join("state"));
        write_docker(json.clone());
        let (code, text) = run(&sync, &docker, &path).await;
        assert_eq!(code, 0, "{json}: {text}");
        assert!(text.contains("\"tags_copied\": 1"), "{json}: {text}");
        let (code, _) = run(&["status", "--config", config], &docker, &path).await;
        assert_eq!(code, 0, "{json}");
    }

    // A broken Docker config is a warning naming it, not a failure for
    // registries that need nothing from it.
    write_docker("{not json".to_owned());
    let (code, text) = run(&["check-config", "--config", config], &docker, &path).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("is not a Docker config"), "{text}");

    // `georep status` needs no registry password: the region's password
    // variable unset, it still answers, in sync, with no credential problem
    // made up from the password it was not given.
    let with_env = cluster.config(&cluster.primary.url(), &cluster.replica_urls(), "");
    let text = std::fs::read_to_string(&with_env).unwrap().replace(
        &format!("url: {}\n", cluster.replicas[0].url()),
        &format!(
            "url: {}\n    credentials:\n      username: georep\n      password_env: GEOREP_TEST_UNSET_PW\n",
            cluster.replicas[0].url()
        ),
    );
    std::fs::write(&with_env, text).unwrap();
    let with_env = with_env.to_str().unwrap();
    let (code, text) = run(&["status", "--config", with_env], &docker, &path).await;
    assert_eq!(code, 0, "{text}");
    assert!(!text.contains("credentials"), "{text}");
    let (code, text) = run(&["check-config", "--config", with_env], &docker, &path).await;
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("GEOREP_TEST_UNSET_PW is not set"), "{text}");
}
