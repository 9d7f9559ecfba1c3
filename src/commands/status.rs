//! `georep status`: where every region stands, in one table and one JSON
//! shape ([`crate::status::StatusView`]) whoever answers. While `georep
//! run` holds the state store, the daemon is asked (`/v1/status`); else the
//! store is read and each registry is asked `GET /v2/` (so a primary that
//! is down shows, and fails the command). Registry passwords are not
//! needed: the config is read without its secrets.

use std::time::Duration;

use anyhow::Context;

use crate::cli::StatusArgs;
use crate::commands::ExitStatus;
use crate::commands::health::daemon_base;
use crate::config::{self, Config};
use crate::engine::Engine;
use crate::registry::check::{Health, ProblemKind};
use crate::status::{Detail, Live, StatusView, all_in_sync, render};
use crate::store::now_unix;

/// How long `georep status` waits for the registries' answers.
const CHECK_WAIT: Duration = Duration::from_secs(10);

/// A request to the daemon's API with its credentials (`api.auth`).
pub fn daemon_request(
    config: &Config,
    method: reqwest::Method,
    url: &str,
) -> anyhow::Result<reqwest::RequestBuilder> {
    let mut request = reqwest::Client::new()
        .request(method, url)
        .timeout(Duration::from_secs(30));
    if let Some(auth) = &config.daemon.api_auth {
        let mut value = reqwest::header::HeaderValue::from_str(auth.authorization().expose())
            .context("api.auth holds characters not allowed in an HTTP header")?;
        value.set_sensitive(true);
        request = request.header(reqwest::header::AUTHORIZATION, value);
    }
    Ok(request)
}

/// The daemon's own view, for when it holds the store.
async fn from_daemon(
    config: &Config,
    busy: crate::store::StoreError,
) -> anyhow::Result<StatusView> {
    let url = format!("{}/v1/status", daemon_base(config));
    let resp = daemon_request(config, reqwest::Method::GET, &url)?
        .send()
        .await
        .with_context(|| format!("{busy}; no daemon answered at {url} either"))?;
    if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
        anyhow::bail!(
            "the daemon at {url} refused the request (401): set the credentials `api.auth` names in {}",
            config.path.display()
        );
    }
    resp.error_for_status()
        .with_context(|| format!("asking the daemon at {url}"))?
        .json()
        .await
        .with_context(|| format!("reading {url}"))
}

/// The view from the store, with every registry asked once.
async fn from_store(config: &Config, store: std::sync::Arc<crate::store::Store>) -> StatusView {
    let engine = Engine::new(config, store.clone());
    let registries: Vec<_> = engine.registries().cloned().collect();
    let checks = futures::future::join_all(
        registries
            .iter()
            .map(|r| async move { tokio::time::timeout(CHECK_WAIT, r.check()).await }),
    )
    .await;
    let now = now_unix();
    let withheld = config.registries().map(|r| r.credentials_withheld);
    let health: Vec<Health> = checks
        .into_iter()
        .zip(withheld)
        .map(|(c, withheld)| match c {
            // Its credentials were not loaded here (no registry password is
            // needed for a status): it answered, and that is what is known.
            Ok(Err(p)) if withheld && p.kind == ProblemKind::Credentials => Health {
                reachable: Some(true),
                checked_at: Some(crate::store::format_unix(now)),
                ..Health::default()
            },
            Ok(result) => crate::watch::probe::health_of(result, None, now),
            Err(_) => Health::default(),
        })
        .map(|h| Health { since: None, ..h })
        .collect();
    crate::status::build(config, &store, health, Live::default(), Detail::Full)
}

pub async fn run(args: &StatusArgs) -> anyhow::Result<ExitStatus> {
    let config = config::load_without_secrets(&args.config)?;
    let path = crate::engine::store_path(&config);
    if !path.exists() {
        eprintln!(
            "no state store at {} yet: run `georep sync --config {}` or `georep run` first",
            path.display(),
            args.config.display()
        );
        return Ok(ExitStatus::Failure);
    }
    let view = match Engine::open_store(&config) {
        Ok(store) => from_store(&config, store).await,
        Err(e @ crate::store::StoreError::Busy { .. }) => from_daemon(&config, e).await?,
        Err(e) => return Err(e.into()),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        print!("{}", render(&view));
    }
    Ok(ExitStatus::from_ok(all_in_sync(
        &view,
        config.daemon.deletes,
    )))
}
