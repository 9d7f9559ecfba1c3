//! `georep wait`: a deployment gate. Polls the registries themselves (not
//! the daemon, which could be down or behind) until every region serves
//! the image at the digest the primary has, then exits 0; exits 1 on
//! timeout, naming the regions that lack it.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::cli::WaitArgs;
use crate::commands::ExitStatus;
use crate::config;
use crate::digest::Digest;
use crate::registry::{Registry, Scope, http_client, names};

/// `repo:tag` or `repo@digest`, validated.
fn parse_image(image: &str) -> anyhow::Result<(String, String)> {
    let (repo, reference) = match image.split_once('@') {
        Some((repo, digest)) => {
            digest
                .parse::<Digest>()
                .with_context(|| format!("image {image:?}: bad digest"))?;
            (repo, digest)
        }
        None => match image.rsplit_once(':') {
            Some((repo, tag)) => {
                names::check_tag(tag).map_err(|e| anyhow::anyhow!("image {image:?}: {e}"))?;
                (repo, tag)
            }
            None => bail!("image {image:?} must be REPOSITORY:TAG or REPOSITORY@DIGEST"),
        },
    };
    names::check_repository(repo).map_err(|e| anyhow::anyhow!("image {image:?}: {e}"))?;
    Ok((repo.to_owned(), reference.to_owned()))
}

pub(crate) fn parse_duration(what: &str, s: &str) -> anyhow::Result<Duration> {
    let d: jiff::SignedDuration = s
        .parse()
        .with_context(|| format!("{what} {s:?}: expected a duration such as 90s, 5m or 1h"))?;
    Duration::try_from(d).with_context(|| format!("{what} {s:?} must not be negative"))
}

pub async fn run(args: &WaitArgs) -> anyhow::Result<ExitStatus> {
    let config = config::load(&args.config)?;
    let (repo, reference) = parse_image(&args.image)?;
    let timeout = parse_duration("--timeout", &args.timeout)?;
    let interval = parse_duration("--interval", &args.interval)?.max(Duration::from_millis(50));
    let http = http_client(&config.timeouts);
    let mk = |r| Registry::new(r, http.clone(), config.timeouts, config.max_attempts);
    let primary = mk(&config.primary);
    let regions: Vec<Registry> = config.regions.iter().map(mk).collect();
    let scope = Scope::pull(&repo);
    let deadline = Instant::now() + timeout;
    let mut lacking: Vec<String>;
    loop {
        let want = match primary.head_manifest(&repo, &reference, &scope).await {
            Ok(Some(h)) => Some(h.digest),
            Ok(None) => None,
            Err(e) => {
                tracing::debug!("asking the primary failed: {e:#}");
                None
            }
        };
        lacking = Vec::new();
        match &want {
            None => lacking.push(format!(
                "the primary {} (no such image yet)",
                primary.name()
            )),
            Some(want) => {
                let checks = regions.iter().map(|reg| {
                    let scope = &scope;
                    let repo = &repo;
                    let reference = &reference;
                    async move { (reg, reg.head_manifest(repo, reference, scope).await) }
                });
                for (reg, res) in futures::future::join_all(checks).await {
                    match res {
                        Ok(Some(h)) if h.digest == *want => {}
                        Ok(Some(h)) => lacking.push(format!("{} (has {})", reg.name(), h.digest)),
                        Ok(None) => lacking.push(reg.name().to_owned()),
                        Err(e) => lacking.push(format!("{} ({e})", reg.name())),
                    }
                }
            }
        }
        if lacking.is_empty() {
            println!(
                "{} is in all {} regions at {}",
                args.image,
                regions.len(),
                want.map(|d| d.to_string()).unwrap_or_default()
            );
            return Ok(ExitStatus::Success);
        }
        if Instant::now() + interval > deadline {
            break;
        }
        tokio::time::sleep(interval).await;
    }
    eprintln!(
        "timed out after {}s waiting for {}; not there yet: {}",
        timeout.as_secs(),
        args.image,
        lacking.join(", ")
    );
    Ok(ExitStatus::Failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_and_durations() {
        assert_eq!(
            parse_image("team/app:v1").unwrap(),
            ("team/app".to_owned(), "v1".to_owned())
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(parse_image(&format!("app@{d}")).unwrap().1, d);
        assert!(parse_image("app").is_err());
        assert!(parse_image("../x:v1").is_err());
        assert_eq!(parse_duration("t", "5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("t", "90s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("t", "soon").is_err());
    }
}
