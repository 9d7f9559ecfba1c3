//! Token credentials end to end against registries run with `auth: token`:
//! an identity (refresh) token for the primary, a credential helper whose
//! password changes while the daemon runs for one region, a static bearer
//! token for another — and no secret or issued token in the daemon's log,
//! its status or metrics, or `georep wait`'s output.
// A test: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::daemon::DaemonProc;
use common::token::{self, TokenServer};
use common::{Cluster, client_as, wait_for};
use georep::lab::corpus::push_image;
use georep::lab::localreg::{LocalAuth, LocalNotify, LocalOptions, free_port};

const OLD_PASSWORD: &str = "Old-pw-4c1e77";
const NEW_PASSWORD: &str = "New-pw-90ab2f";
const REFRESH: &str = "Refresh-tok-e3d5a1";
/// Issued tokens live this long, so the daemon renews them during the test.
const TOKEN_SECS: u64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_helper_and_static_tokens_work_and_never_show() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = TokenServer::start_with(
        dir.path(),
        "georep",
        OLD_PASSWORD,
        Some(REFRESH),
        TOKEN_SECS,
    )
    .await;
    let token_auth = || LocalAuth::Token {
        realm: tokens.realm.clone(),
        service: token::SERVICE.into(),
        issuer: token::ISSUER.into(),
        root_cert_bundle: tokens.cert_path.clone(),
    };
    let port = free_port().unwrap();
    let cluster = Cluster::start_with(
        2,
        LocalOptions {
            auth: Some(token_auth()),
            notify: Some(LocalNotify {
                url: format!("http://127.0.0.1:{port}/v1/notifications"),
                authorization: None,
            }),
            ..LocalOptions::default()
        },
        |_| LocalOptions {
            auth: Some(token_auth()),
            ..LocalOptions::default()
        },
    )
    .await;
    let primary = cluster.primary.url();
    let first = push_image(
        &client_as(&primary, OLD_PASSWORD),
        "team/app",
        "1",
        50_000,
        2,
    )
    .await
    .unwrap();

    // Region eastus: a credential helper reading the current password.
    let password_file = dir.path().join("helper-password");
    std::fs::write(&password_file, OLD_PASSWORD).unwrap();
    let path = common::credential_helper(
        dir.path(),
        None,
        &format!("$(cat {})", password_file.display()),
    );
    let docker = dir.path().join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    std::fs::write(
        docker.join("config.json"),
        format!(
            r#"{{"credHelpers": {{"{}": "georeptest"}}}}"#,
            cluster.replicas[0].host()
        ),
    )
    .unwrap();

    // Region japaneast: a static token for exactly what georep does there.
    let static_token = tokens.mint(&["repository:team/app:pull,push"], 3600);
    let static_file = dir.path().join("static-token");
    std::fs::write(&static_file, format!("{static_token}\n")).unwrap();

    let yaml = format!(
        "state_dir: ./state\nlisten: 127.0.0.1:{port}\npoll_interval_secs: 3600\nretry_max_secs: 1\n\
         primary:\n  name: westeurope\n  url: {primary}\n  credentials:\n    identity_token_env: GEOREP_TEST_REFRESH\n\
         regions:\n  - name: eastus\n    url: {}\n  - name: japaneast\n    url: {}\n    credentials:\n      token_file: {}\n",
        cluster.replicas[0].url(),
        cluster.replicas[1].url(),
        static_file.display()
    );
    let config = cluster.dir.path().join("georep.yaml");
    std::fs::write(&config, yaml).unwrap();
    let docker_dir = docker.to_str().unwrap().to_owned();
    let envs = [
        ("GEOREP_TEST_REFRESH", REFRESH),
        ("DOCKER_CONFIG", docker_dir.as_str()),
        ("PATH", path.as_str()),
        ("GEOREP_LOG", "trace"),
    ];
    let daemon = DaemonProc::start(&config, port, &envs).await;

    let wait = |tag: &'static str| {
        let config = config.clone();
        async move {
            common::georep(
                &[
                    "wait",
                    "--config",
                    config.to_str().unwrap(),
                    &format!("team/app:{tag}"),
                    "--timeout",
                    "60s",
                ],
                &envs,
            )
            .await
        }
    };
    let out = wait("1").await;
    let mut printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{printed}\n{}",
        daemon.log_text()
    );
    let refresh_grants = tokens.requests.lock().unwrap().len();
    assert!(refresh_grants > 0);

    // The helper's password changes; the daemon's tokens expire and the
    // old password is refused: it must ask the helper again.
    tokens.set_password(NEW_PASSWORD);
    std::fs::write(&password_file, NEW_PASSWORD).unwrap();
    tokio::time::sleep(Duration::from_secs(TOKEN_SECS + 1)).await;
    let second = push_image(
        &client_as(&primary, NEW_PASSWORD),
        "team/app",
        "2",
        50_000,
        2,
    )
    .await
    .unwrap();
    let out = wait("2").await;
    printed.push_str(&String::from_utf8_lossy(&out.stdout));
    printed.push_str(&String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{printed}\n{}",
        daemon.log_text()
    );
    wait_for(
        "the helper asked again",
        Duration::from_secs(10),
        async || {
            daemon
                .log_text()
                .contains("new credentials from docker-credential-georeptest")
        },
    )
    .await;
    for r in &cluster.replicas {
        for (tag, digest) in [("1", &first.digest), ("2", &second.digest)] {
            let got = client_as(&r.url(), NEW_PASSWORD)
                .head_manifest("team/app", tag, &georep::registry::Scope::pull("team/app"))
                .await
                .unwrap()
                .map(|h| h.digest);
            assert_eq!(got.as_ref(), Some(digest), "{} team/app:{tag}", r.url());
        }
    }

    let status = daemon.status().await;
    assert_eq!(status["regions"].as_array().unwrap().len(), 2);
    printed.push_str(&status.to_string());
    printed.push_str(&daemon.metrics().await);
    printed.push_str(&daemon.log_text());
    let b64 = |pw: &str| base64::engine::general_purpose::STANDARD.encode(format!("georep:{pw}"));
    let mut secrets = vec![
        OLD_PASSWORD.to_owned(),
        NEW_PASSWORD.to_owned(),
        REFRESH.to_owned(),
        b64(OLD_PASSWORD),
        b64(NEW_PASSWORD),
    ];
    secrets.extend(tokens.issued.lock().unwrap().iter().cloned());
    assert!(secrets.len() > 6, "tokens were issued");
    for secret in &secrets {
        assert!(
            !printed.contains(secret.as_str()),
            "a secret ({}...) was printed",
            &secret[..8]
        );
    }
}
