//! skopeo as a peer: `skopeo sync --all` per repository, the way people
//! script it today. Each region gets its own sequence of `skopeo sync`
//! runs (one per repository, fully-qualified references); the regions run
//! side by side. Every run goes through `georep bench-exec`, which measures
//! the CPU time and peak RSS skopeo used.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use base64::Engine as _;

use super::child::ExecUsage;
use super::target::reference_host;
use crate::config::{Config, Credentials, RegistryConfig};

/// The installed skopeo's version line, if there is one.
pub async fn version() -> Option<String> {
    let out = tokio::process::Command::new("skopeo")
        .arg("--version")
        .output()
        .await
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// What the skopeo runs used, all regions together.
#[derive(Clone, Debug, Default)]
pub struct SkopeoRun {
    pub elapsed_secs: f64,
    pub cpu_secs: f64,
    /// The largest of the skopeo processes.
    pub peak_rss_bytes: u64,
    pub failures: Vec<String>,
}

/// One `skopeo sync` invocation, as arguments.
pub struct Invocation {
    pub region: String,
    pub repository: String,
    pub args: Vec<String>,
}

/// The invocations copying `repositories` from the primary to each region.
/// `authfile` holds the config's credentials, if any.
pub fn invocations(
    config: &Config,
    repositories: &[String],
    authfile: Option<&Path>,
) -> anyhow::Result<Vec<Vec<Invocation>>> {
    let primary = config
        .primary()
        .context("skopeo copies from a primary: the benchmark needs a one-way config")?;
    let src_host =
        reference_host(&primary.url).with_context(|| format!("primary {}", primary.name))?;
    let mut out = Vec::new();
    for region in &config.regions {
        let dest_host =
            reference_host(&region.url).with_context(|| format!("region {}", region.name))?;
        let mut runs = Vec::new();
        for repo in repositories {
            // skopeo puts an image under DESTINATION/<last path segment>.
            let parent = repo.rsplit_once('/').map(|(p, _)| p);
            let dest = match parent {
                Some(p) => format!("{dest_host}/{p}"),
                None => dest_host.clone(),
            };
            let mut args: Vec<String> = [
                "sync",
                "--all",
                "--preserve-digests",
                "--retry-times",
                "3",
                "--src",
                "docker",
                "--dest",
                "docker",
            ]
            .map(String::from)
            .to_vec();
            args.push(format!("--src-tls-verify={}", tls(primary)));
            args.push(format!("--dest-tls-verify={}", tls(region)));
            if let Some(a) = authfile {
                args.push(format!("--src-authfile={}", a.display()));
                args.push(format!("--dest-authfile={}", a.display()));
            }
            args.push(format!("{src_host}/{repo}"));
            args.push(dest);
            runs.push(Invocation {
                region: region.name.clone(),
                repository: repo.clone(),
                args,
            });
        }
        out.push(runs);
    }
    Ok(out)
}

fn tls(r: &RegistryConfig) -> bool {
    r.url.scheme() == "https"
}

/// Writes a containers-auth.json (mode 0600) with the config's
/// credentials; `None` when no registry has any.
pub fn write_authfile(config: &Config, dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    let mut auths = serde_json::Map::new();
    for r in config.registries() {
        let entry = match &r.credentials {
            None => continue,
            Some(Credentials::Basic { username, password }) => {
                let auth = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{}", password.expose()));
                serde_json::json!({ "auth": auth })
            }
            Some(Credentials::IdentityToken(t)) => {
                serde_json::json!({ "identitytoken": t.expose() })
            }
            Some(Credentials::Bearer(_)) => anyhow::bail!(
                "skopeo cannot use the static bearer token of {} ({}): run with --skopeo never",
                r.name,
                r.display_url()
            ),
        };
        auths.insert(reference_host(&r.url)?, entry);
    }
    if auths.is_empty() {
        return Ok(None);
    }
    let path = dir.join("skopeo-auth.json");
    let body = serde_json::to_vec(&serde_json::json!({ "auths": auths }))?;
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        f.write_all(&body)?;
    }
    Ok(Some(path))
}

/// Runs every region's invocations (regions side by side, repositories one
/// after another), output appended to `log`.
pub async fn run(
    georep: &Path,
    per_region: Vec<Vec<Invocation>>,
    dir: &Path,
    log: &Path,
) -> anyhow::Result<SkopeoRun> {
    let started = Instant::now();
    let regions = per_region
        .into_iter()
        .enumerate()
        .map(|(ri, runs)| async move {
            let mut usage = Vec::new();
            let mut failures = Vec::new();
            for (i, inv) in runs.into_iter().enumerate() {
                let out = dir.join(format!("skopeo-usage-{ri}-{i}.json"));
                let logf = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .with_context(|| format!("opening {}", log.display()))?;
                let status = tokio::process::Command::new(georep)
                    .arg("bench-exec")
                    .arg("--out")
                    .arg(&out)
                    .arg("--")
                    .arg("skopeo")
                    .args(&inv.args)
                    .stdin(std::process::Stdio::null())
                    .stdout(logf.try_clone()?)
                    .stderr(logf)
                    .status()
                    .await
                    .with_context(|| format!("running {}", georep.display()))?;
                match std::fs::read(&out)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<ExecUsage>(&b).ok())
                {
                    Some(u) => usage.push(u),
                    None => failures.push(format!(
                        "{} {}: skopeo could not be run ({status})",
                        inv.region, inv.repository
                    )),
                }
                if !status.success() {
                    failures.push(format!(
                        "{} {}: skopeo sync exited with {status} (see {})",
                        inv.region,
                        inv.repository,
                        log.display()
                    ));
                }
            }
            Ok::<_, anyhow::Error>((usage, failures))
        });
    let mut run = SkopeoRun::default();
    for r in futures::future::join_all(regions).await {
        let (usage, failures) = r?;
        for u in usage {
            run.cpu_secs += u.cpu_secs;
            run.peak_rss_bytes = run.peak_rss_bytes.max(u.peak_rss_bytes);
        }
        run.failures.extend(failures);
    }
    run.elapsed_secs = started.elapsed().as_secs_f64();
    Ok(run)
}
