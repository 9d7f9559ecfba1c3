//! `georep status`: what each region has and how far behind it is, read
//! from the state store alone (no registry is contacted, no daemon needed).
//! While `georep run` holds the store, the same question goes to the
//! daemon's `/v1/status` instead (its queues, lag and parked items).

use serde::Serialize;

use crate::cli::StatusArgs;
use crate::commands::ExitStatus;
use crate::config;
use crate::engine::Engine;
use crate::store::{Store, format_unix, now_unix};
use crate::units::table;

/// One region's state as the store knows it.
#[derive(Debug, Serialize)]
pub struct RegionState {
    pub name: String,
    pub url: String,
    /// Live tags of the primary (after the repository filter).
    pub tags_total: usize,
    /// Tags the region serves with the primary's digest.
    pub tags_in_sync: usize,
    /// Tags the region is not known to serve.
    pub tags_missing: usize,
    /// Tags the region serves with another digest.
    pub tags_differ: usize,
    /// When the oldest change not yet in the region was seen on the primary.
    pub behind_since: Option<u64>,
    pub last_pass_at: Option<u64>,
    pub last_success_at: Option<u64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<u64>,
    /// Daemon work queued for the region (parked items included).
    pub queued: usize,
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub primary: String,
    pub store: String,
    pub regions: Vec<RegionState>,
}

/// Computes every region's state from the store.
pub fn compute(config: &config::Config, store: &Store) -> Status {
    let mut regions: Vec<RegionState> = config
        .regions
        .iter()
        .enumerate()
        .map(|(r, reg)| {
            let s = store.region_status(r);
            RegionState {
                name: reg.name.clone(),
                url: reg.display_url(),
                tags_total: 0,
                tags_in_sync: 0,
                tags_missing: 0,
                tags_differ: 0,
                behind_since: None,
                last_pass_at: s.last_pass_at,
                last_success_at: s.last_success_at,
                last_error: s.last_error,
                last_error_at: s.last_error_at,
                queued: store.queue_figures(r).len,
            }
        })
        .collect();
    for (repo, tag, t) in store.all_primary_tags() {
        if t.deleted_at.is_some() || !config.repositories.allows(&repo) {
            continue;
        }
        for (r, state) in regions.iter_mut().enumerate() {
            state.tags_total += 1;
            match store.manifest(r, &repo, &tag) {
                Some(f) if f.digest == t.digest => state.tags_in_sync += 1,
                other => {
                    if other.is_some() {
                        state.tags_differ += 1;
                    } else {
                        state.tags_missing += 1;
                    }
                    state.behind_since = Some(
                        state
                            .behind_since
                            .map_or(t.seen_at, |b: u64| b.min(t.seen_at)),
                    );
                }
            }
        }
    }
    Status {
        primary: format!("{} ({})", config.primary.name, config.primary.display_url()),
        store: store.path().display().to_string(),
        regions,
    }
}

fn when(t: Option<u64>) -> String {
    t.map(format_unix).unwrap_or_else(|| "never".to_owned())
}

fn ago(t: Option<u64>) -> String {
    match t {
        None => "-".to_owned(),
        Some(t) => {
            let secs = now_unix().saturating_sub(t);
            match secs {
                0..60 => format!("{secs}s"),
                60..3600 => format!("{}m", secs / 60),
                3600..86_400 => format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60),
                _ => format!("{}d", secs / 86_400),
            }
        }
    }
}

pub fn render(status: &Status) -> String {
    let mut rows = vec![
        [
            "REGION",
            "IN SYNC",
            "MISSING",
            "DIFFER",
            "BEHIND",
            "QUEUED",
            "LAST PASS",
            "LAST SUCCESS",
            "LAST ERROR",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>(),
    ];
    for r in &status.regions {
        let error = match (&r.last_error, r.last_error_at) {
            (Some(e), Some(at)) if Some(at) >= r.last_success_at => {
                let mut e = e.replace('\n', " ");
                if e.chars().count() > 160 {
                    e = e.chars().take(159).collect::<String>() + "…";
                }
                format!("{} {e}", format_unix(at))
            }
            _ => "-".to_owned(),
        };
        rows.push(vec![
            r.name.clone(),
            format!("{}/{}", r.tags_in_sync, r.tags_total),
            r.tags_missing.to_string(),
            r.tags_differ.to_string(),
            ago(r.behind_since),
            r.queued.to_string(),
            when(r.last_pass_at),
            when(r.last_success_at),
            error,
        ]);
    }
    let mut out = table(
        &rows,
        &[false, true, true, true, true, true, false, false, false],
    );
    out.push_str(&format!(
        "primary {}; state store {}\n",
        status.primary, status.store
    ));
    out
}

/// The daemon's own status, for when it holds the store.
async fn from_daemon(
    config: &config::Config,
    json: bool,
    busy: crate::store::StoreError,
) -> anyhow::Result<ExitStatus> {
    use anyhow::Context;
    let listen: std::net::SocketAddr = config.daemon.listen.parse()?;
    let host = if listen.ip().is_unspecified() {
        std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), listen.port())
    } else {
        listen
    };
    let url = format!("http://{host}/v1/status");
    let mut request = reqwest::Client::new()
        .get(&url)
        .timeout(std::time::Duration::from_secs(10));
    if let Some(auth) = &config.daemon.api_auth {
        let mut value = reqwest::header::HeaderValue::from_str(auth.authorization().expose())
            .context("api.auth holds characters not allowed in an HTTP header")?;
        value.set_sensitive(true);
        request = request.header(reqwest::header::AUTHORIZATION, value);
    }
    let view: crate::status::StatusView = request
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("{busy}; no daemon answered at {url} either"))?
        .json()
        .await
        .with_context(|| format!("reading {url}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        let mut rows = vec![
            [
                "REGION",
                "LAG ITEMS",
                "LAG",
                "IN FLIGHT",
                "PARKED",
                "LAST SUCCESS",
                "LAST ERROR",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
        ];
        for r in &view.regions {
            let text = |v: &Option<String>| v.as_deref().unwrap_or("-").replace('\n', " ");
            rows.push(vec![
                r.name.replace('\n', " "),
                r.lag_items.to_string(),
                format!("{:.1}s", r.lag_secs),
                r.in_flight.to_string(),
                r.parked_count.to_string(),
                text(&r.last_success_at),
                text(&r.last_error),
            ]);
        }
        print!(
            "{}",
            table(&rows, &[false, true, true, true, true, false, false])
        );
        println!("from the running daemon at {url}");
    }
    let caught_up = view.regions.iter().all(|r| r.lag_items == 0);
    Ok(ExitStatus::from_ok(caught_up))
}

pub async fn run(args: &StatusArgs) -> anyhow::Result<ExitStatus> {
    let config = config::load(&args.config)?;
    let path = crate::engine::store_path(&config);
    if !path.exists() {
        eprintln!(
            "no state store at {} yet: run `georep sync --config {}` first",
            path.display(),
            args.config.display()
        );
        return Ok(ExitStatus::Failure);
    }
    let store = match Engine::open_store(&config) {
        Ok(s) => s,
        Err(e @ crate::store::StoreError::Busy { .. }) => {
            return from_daemon(&config, args.json, e).await;
        }
        Err(e) => return Err(e.into()),
    };
    let status = compute(&config, &store);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", render(&status));
    }
    let all_in_sync = status
        .regions
        .iter()
        .all(|r| r.tags_in_sync == r.tags_total && r.queued == 0);
    Ok(ExitStatus::from_ok(all_in_sync))
}
