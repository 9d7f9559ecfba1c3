//! `georep reconcile`, `georep audit`, `georep retry`: steer the running
//! daemon through its API (`POST /v1/reconcile`, …) and say what it queued.

use anyhow::Context;

use crate::api::steer::{AuditAnswer, ReconcileAnswer, RetryAnswer};
use crate::cli::SteerArgs;
use crate::commands::ExitStatus;
use crate::commands::health::daemon_base;
use crate::commands::status::daemon_request;

/// POSTs to the daemon's `path` with the scope of `args`; its JSON answer.
async fn ask<T: serde::de::DeserializeOwned>(
    args: &SteerArgs,
    path: &str,
) -> anyhow::Result<(T, String)> {
    let config = crate::config::load_without_secrets(&args.config)?;
    let timeout = super::wait::parse_duration("--timeout", &args.timeout)?;
    let mut url = url::Url::parse(&format!("{}{path}", daemon_base(&config)))
        .context("the daemon's address")?;
    {
        let mut q = url.query_pairs_mut();
        if let Some(r) = &args.region {
            q.append_pair("region", r);
        }
        if let Some(r) = &args.repository {
            q.append_pair("repository", r);
        }
    }
    let url = url.to_string().trim_end_matches('?').to_owned();
    let resp = daemon_request(&config, reqwest::Method::POST, &url)?
        .timeout(timeout)
        .send()
        .await
        .with_context(|| {
            format!("no daemon answered at {url} (is `georep run` running with this config?)")
        })?;
    let status = resp.status();
    let body = resp
        .text()
        .await
        .with_context(|| format!("reading the answer of {url}"))?;
    if status == reqwest::StatusCode::UNAUTHORIZED {
        anyhow::bail!(
            "the daemon at {url} refused the request (401): set the credentials `api.auth` names in {}",
            config.path.display()
        );
    }
    if !status.is_success() {
        anyhow::bail!("the daemon at {url} answered {status}: {}", body.trim());
    }
    let answer =
        serde_json::from_str(&body).with_context(|| format!("reading the answer of {url}"))?;
    Ok((answer, body))
}

fn scope(args: &SteerArgs) -> String {
    match (&args.region, &args.repository) {
        (None, None) => "everything".to_owned(),
        (Some(r), None) => format!("region {r}"),
        (None, Some(p)) => format!("repository {p}"),
        (Some(r), Some(p)) => format!("repository {p} in region {r}"),
    }
}

pub async fn reconcile(args: &SteerArgs) -> anyhow::Result<ExitStatus> {
    let (a, body): (ReconcileAnswer, _) = ask(args, "/v1/reconcile").await?;
    if args.json {
        println!("{body}");
    } else {
        println!(
            "reconciled {}: {} tag(s) listed on the primary, {} item(s) queued, {} delete(s) queued",
            scope(args),
            a.tags,
            a.queued,
            a.deletes_queued
        );
        for (region, n) in a.only_in_region.iter().filter(|(_, n)| **n > 0) {
            println!("{region}: {n} tag(s) only in the region (deleted on the primary)");
        }
        if let Some(e) = &a.error {
            println!("incomplete: {e}");
        }
    }
    Ok(ExitStatus::from_ok(a.error.is_none()))
}

pub async fn audit(args: &SteerArgs) -> anyhow::Result<ExitStatus> {
    let (a, body): (AuditAnswer, _) = ask(args, "/v1/audit").await?;
    if args.json {
        println!("{body}");
    } else {
        println!(
            "audited {}: {} (region, tag) pair(s) checked, {} not served as recorded and queued again",
            scope(args),
            a.checked,
            a.queued
        );
        if let Some(e) = &a.error {
            println!("incomplete: {e}");
        }
    }
    Ok(ExitStatus::from_ok(a.error.is_none()))
}

pub async fn retry(args: &SteerArgs) -> anyhow::Result<ExitStatus> {
    let (a, body): (RetryAnswer, _) = ask(args, "/v1/retry").await?;
    if args.json {
        println!("{body}");
    } else {
        println!("retrying {} parked item(s) of {}", a.requeued, scope(args));
    }
    Ok(ExitStatus::Success)
}
