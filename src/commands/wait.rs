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

/// An image as a pipeline holds it, split.
#[derive(Debug, PartialEq, Eq)]
struct Image {
    /// `host[:port]` when the reference names a registry.
    host: Option<String>,
    repository: String,
    /// A tag, or the digest (a pinned `repo:tag@digest` waits for the
    /// digest).
    reference: String,
}

/// `[host[:port]/]repository[:tag][@digest]`, as Docker reads it: the first
/// path component is a registry host when it has a `.` or a `:`, or is
/// `localhost`; no tag and no digest means `:latest`.
fn parse_image(image: &str) -> anyhow::Result<Image> {
    let bad = |why: String| anyhow::anyhow!("image {image:?}: {why}");
    let (name, digest) = match image.split_once('@') {
        Some((name, d)) => {
            let d: Digest = d.parse().map_err(|e| bad(format!("bad digest: {e}")))?;
            (name, Some(d))
        }
        None => (image, None),
    };
    let (host, rest) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            if !valid_host(first) {
                return Err(bad(format!("{first:?} is not a registry host[:port]")));
            }
            (Some(first.to_owned()), rest)
        }
        _ => (None, name),
    };
    // A ':' after the last '/' starts the tag.
    let (repository, tag) = match rest.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag)),
        _ => (rest, None),
    };
    if repository.is_empty() {
        bail!(
            "image {image:?} has no repository: give REPOSITORY[:TAG], REPOSITORY@DIGEST or HOST/REPOSITORY:TAG"
        );
    }
    names::check_repository(repository).map_err(|e| bad(e.to_string()))?;
    if let Some(t) = tag {
        names::check_tag(t).map_err(|e| bad(e.to_string()))?;
    }
    let reference = match (digest, tag) {
        (Some(d), _) => d.as_str().to_owned(),
        (None, Some(t)) => t.to_owned(),
        (None, None) => "latest".to_owned(),
    };
    Ok(Image {
        host,
        repository: repository.to_owned(),
        reference,
    })
}

/// `host[:port]`: DNS labels (or an IPv4 address) and an optional port.
fn valid_host(s: &str) -> bool {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    let labels_ok = !host.is_empty()
        && host.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    labels_ok && port.is_none_or(|p| p.parse::<u16>().is_ok())
}

/// `host[:port]` of a registry URL, as an image reference names it.
fn authority(url: &url::Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        _ => String::new(),
    }
}

/// The reference's registry host must be the primary's or a region's:
/// which one it is (its index among `config.registries()`).
fn check_host(config: &config::Config, image: &str, host: &str) -> anyhow::Result<usize> {
    let known: Vec<String> = config.registries().map(|r| authority(&r.url)).collect();
    if let Some(i) = known.iter().position(|k| k.eq_ignore_ascii_case(host)) {
        return Ok(i);
    }
    bail!(
        "image {image:?} names the registry {host}, which is neither the primary nor a region of {} (they are {})",
        config.path.display(),
        known.join(", ")
    )
}

pub(crate) fn parse_duration(what: &str, s: &str) -> anyhow::Result<Duration> {
    let d: jiff::SignedDuration = s
        .parse()
        .with_context(|| format!("{what} {s:?}: expected a duration such as 90s, 5m or 1h"))?;
    Duration::try_from(d).with_context(|| format!("{what} {s:?} must not be negative"))
}

pub async fn run(args: &WaitArgs) -> anyhow::Result<ExitStatus> {
    let config = config::load(&args.config)?;
    let image = parse_image(&args.image)?;
    let named = match &image.host {
        Some(host) => Some(check_host(&config, &args.image, host)?),
        None => None,
    };
    let (repo, reference) = (image.repository, image.reference);
    let pinned: Option<Digest> = match &args.digest {
        Some(d) => Some(
            d.parse()
                .with_context(|| format!("--digest {d:?} is not a digest (sha256:<64 hex>)"))?,
        ),
        None => reference.parse().ok(),
    };
    let timeout = parse_duration("--timeout", &args.timeout)?;
    let interval = parse_duration("--interval", &args.interval)?.max(Duration::from_millis(50));
    let http = http_client(&config.timeouts);
    let mk = |r| Registry::new(r, http.clone(), config.timeouts, config.max_attempts);
    let registries: Vec<Registry> = config.registries().map(mk).collect();
    let first_region = usize::from(config.primary().is_some());
    // Where the digest is learnt: the primary; in any-region mode the
    // region the image names (a pushed region), else none (every region
    // must come to agree).
    let source: Option<&Registry> = match (config.primary(), named) {
        (Some(_), _) => registries.first(),
        (None, Some(i)) => registries.get(i),
        (None, None) => None,
    };
    let regions = &registries[first_region..];
    let scope = Scope::pull(&repo);
    let started = Instant::now();
    let deadline = started + timeout;
    let check = async || -> (Option<Digest>, Vec<String>) {
        let heads = futures::future::join_all(regions.iter().map(|reg| {
            let scope = &scope;
            let repo = &repo;
            let reference = &reference;
            async move { (reg, reg.head_manifest(repo, reference, scope).await) }
        }));
        let want = match (&pinned, source) {
            (Some(d), _) => Some(d.clone()),
            (None, Some(src)) => match src.head_manifest(&repo, &reference, &scope).await {
                Ok(Some(h)) => Some(h.digest),
                Ok(None) => {
                    let what = if config.primary().is_some() {
                        "the primary"
                    } else {
                        "region"
                    };
                    return (
                        None,
                        vec![format!("{what} {} (no such image yet)", src.name())],
                    );
                }
                Err(e) => {
                    tracing::debug!("asking {} failed: {e:#}", src.name());
                    return (None, vec![format!("{} ({e})", src.name())]);
                }
            },
            (None, None) => None,
        };
        let heads = heads.await;
        // Any-region without a digest: whatever they all serve, once they
        // agree.
        let want = want.or_else(|| match heads.first() {
            Some((_, Ok(Some(h)))) => Some(h.digest.clone()),
            _ => None,
        });
        let Some(want) = want else {
            return (None, vec!["every region (no such image yet)".to_owned()]);
        };
        let mut lacking = Vec::new();
        for (reg, res) in heads {
            match res {
                Ok(Some(h)) if h.digest == want => {}
                Ok(Some(h)) => lacking.push(format!("{} (has {})", reg.name(), h.digest)),
                Ok(None) => lacking.push(reg.name().to_owned()),
                Err(e) => lacking.push(format!("{} ({e})", reg.name())),
            }
        }
        (Some(want), lacking)
    };
    let mut lacking: Vec<String> = vec!["every region (no answer in time)".to_owned()];
    loop {
        // A check is cut short at the deadline: `--timeout 5s` is 5 s.
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, check()).await {
            Ok((want, l)) if l.is_empty() => {
                println!(
                    "{} is in all {} regions at {}",
                    args.image,
                    regions.len(),
                    want.map(|d| d.to_string()).unwrap_or_default()
                );
                return Ok(ExitStatus::Success);
            }
            Ok((_, l)) => lacking = l,
            Err(_) => {}
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        tokio::time::sleep(interval.min(deadline - now)).await;
    }
    eprintln!(
        "timed out after {:.1}s waiting for {}; not there yet: {}",
        started.elapsed().as_secs_f64(),
        args.image,
        lacking.join(", ")
    );
    Ok(ExitStatus::Failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_as_pipelines_hold_them() {
        let img = |s: &str| parse_image(s).unwrap();
        let plain = |repo: &str, reference: &str| Image {
            host: None,
            repository: repo.to_owned(),
            reference: reference.to_owned(),
        };
        assert_eq!(img("team/app:v1"), plain("team/app", "v1"));
        assert_eq!(img("team/app"), plain("team/app", "latest"));
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(img(&format!("app@{d}")), plain("app", &d));
        assert_eq!(img(&format!("app:v1@{d}")), plain("app", &d), "pinned");
        assert_eq!(
            img("registry.example.com:5000/team/app:v1"),
            Image {
                host: Some("registry.example.com:5000".into()),
                ..plain("team/app", "v1")
            }
        );
        assert_eq!(
            img("localhost/app").host.as_deref(),
            Some("localhost"),
            "Docker's rule: localhost is a host"
        );
        assert_eq!(img("127.0.0.1:5000/app").reference, "latest");
        assert!(parse_image("../x:v1").is_err());
        assert!(parse_image("app@sha256:zz").is_err());
        assert!(parse_image("host:5000/").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("t", "5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("t", "90s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("t", "soon").is_err());
    }
}
