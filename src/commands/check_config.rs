//! `georep check-config`: load and validate a config and print what it
//! resolved to (every size and rate in bytes, every interval, the delete
//! policy, the notify targets), so a value read differently than meant
//! shows; with `--connect`, ask every registry `GET /v2/` with its
//! credentials and report each problem before anything is copied.

use std::time::Duration;

use crate::cli::CheckConfigArgs;
use crate::commands::ExitStatus;
use crate::config::{self, Config, DeletePolicy, Mode, RegistryConfig};
use crate::registry::{Registry, http_client};
use crate::units::human_bytes;

/// Time for all the registries to answer `--connect`.
const CONNECT_WAIT: Duration = Duration::from_secs(20);

fn rate(bytes_per_sec: Option<u64>) -> String {
    match bytes_per_sec {
        None => "unlimited".to_owned(),
        Some(b) => format!(
            "{b} bytes/s ({}/s, {:.1} Mbit/s)",
            human_bytes(b),
            b as f64 * 8.0 / 1e6
        ),
    }
}

fn registry_line(role: &str, r: &RegistryConfig) -> String {
    format!(
        "  {role} {} {}: {} requests at once, {} requests/s, {}{}",
        r.name,
        r.display_url(),
        r.max_concurrent_requests,
        r.max_requests_per_sec
            .map_or("unlimited".to_owned(), |n| n.to_string()),
        rate(r.max_bytes_per_sec),
        match &r.credentials {
            Some(c) => format!(", credentials: {}", c.describe()),
            None => ", anonymous".to_owned(),
        }
    )
}

/// What the config resolved to, for people.
pub fn summary(c: &Config) -> String {
    let mut out = String::new();
    if let Some(p) = c.primary() {
        out.push_str(&registry_line("primary", p));
        out.push('\n');
    }
    for r in &c.regions {
        let role = match (c.mode, r.accepts_pushes) {
            (Mode::AnyRegion, true) => "region (accepts pushes)",
            (Mode::AnyRegion, false) => "region (read-only)",
            (Mode::OneWay, _) => "region ",
        };
        out.push_str(&registry_line(role, r));
        out.push('\n');
    }
    if c.any_region() {
        let order: Vec<&str> = c
            .conflicts
            .order
            .iter()
            .map(|&i| c.regions[i].name.as_str())
            .collect();
        out.push_str(&format!(
            "  any-region: each writable region notifies http://{}/v1/notifications/<region>; conflicts: the later push wins, pushes within {} ms go to the first of {}\n",
            c.daemon.listen,
            c.conflicts.skew.as_millis(),
            order.join(", ")
        ));
    }
    if let Some(cl) = &c.cluster {
        out.push_str(&format!(
            "  cluster: instance {} (others reach it at {}), etcd {} (prefix {}, lease {} s{}); the primary may notify any instance at /v1/notifications\n",
            cl.instance_id,
            cl.advertise_url,
            cl.endpoints.join(", "),
            cl.prefix,
            cl.lease_ttl.as_secs(),
            cl.username
                .as_deref()
                .map(|u| format!(", user {u}"))
                .unwrap_or_default(),
        ));
    }
    let every =
        |d: Option<Duration>| d.map_or("off".to_owned(), |d| format!("every {} s", d.as_secs()));
    let d = &c.daemon;
    out.push_str(&format!(
        "  all regions together: {}\n  concurrency: {} images, {} blobs ({} per region)\n  state_dir: {}\n  daemon: listen {}, reconcile {}, audit {}, deletes {}{}\n",
        rate(c.total_max_bytes_per_sec),
        c.concurrency.images,
        c.concurrency.blobs,
        c.concurrency.blobs_per_region,
        c.state_dir.display(),
        d.listen,
        every(d.poll_interval),
        every(d.audit_interval),
        match d.deletes {
            DeletePolicy::Ignore => "ignored".to_owned(),
            DeletePolicy::Propagate => format!(
                "propagated (at most {} per region per hour{})",
                d.max_deletes_per_hour,
                if d.deletes_dry_run { ", dry run" } else { "" }
            ),
        },
        if d.api_auth.is_some() { ", api.auth set" } else { "" },
    ));
    for t in &d.notify {
        out.push_str(&format!(
            "  notify {} → {}: {} ({:?} format)\n",
            t.name,
            crate::notify::display_url(&t.url),
            t.events
                .iter()
                .map(|e| e.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            t.format
        ));
    }
    out
}

pub async fn run(args: &CheckConfigArgs) -> anyhow::Result<ExitStatus> {
    let c = config::load(&args.config)?;
    let source = match c.primary() {
        Some(p) => format!("primary {}", p.name),
        None => "any-region mode".to_owned(),
    };
    println!(
        "{}: ok — {source}, {} region{}",
        args.config.display(),
        c.regions.len(),
        if c.regions.len() == 1 { "" } else { "s" },
    );
    print!("{}", summary(&c));
    if !args.connect {
        return Ok(ExitStatus::Success);
    }
    let http = http_client(&c.timeouts);
    let registries: Vec<Registry> = c
        .registries()
        .map(|r| Registry::new(r, http.clone(), c.timeouts, c.max_attempts))
        .collect();
    let checks = futures::future::join_all(
        registries
            .iter()
            .map(|r| async move { tokio::time::timeout(CONNECT_WAIT, r.check()).await }),
    )
    .await;
    let mut ok = true;
    for (r, result) in registries.iter().zip(checks) {
        match result {
            Ok(Ok(())) => println!("connect {}: ok", r.name()),
            Ok(Err(problem)) => {
                ok = false;
                println!("connect {}: {problem}", r.name());
            }
            Err(_) => {
                ok = false;
                println!(
                    "connect {}: no answer from {} within {} s",
                    r.name(),
                    r.url(),
                    CONNECT_WAIT.as_secs()
                );
            }
        }
    }
    if let Some(cl) = &c.cluster {
        let settings = crate::cluster::membership::Settings::from_config(cl);
        match crate::cluster::probe(&settings).await {
            Ok(members) => println!(
                "connect etcd: ok ({} live member{}{})",
                members.len(),
                if members.len() == 1 { "" } else { "s" },
                if members.is_empty() {
                    String::new()
                } else {
                    format!(
                        ": {}",
                        members
                            .iter()
                            .map(|m| m.id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            ),
            Err(e) => {
                ok = false;
                println!("connect etcd: {e}");
            }
        }
    }
    Ok(ExitStatus::from_ok(ok))
}
