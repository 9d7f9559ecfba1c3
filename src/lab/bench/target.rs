//! Where `georep bench` runs: registries it starts itself (a local primary
//! and N regions, wiped by restarting them empty) or the registries of an
//! operator's config, where it writes only under its own repository prefix
//! and wipes and cleans up by deleting what it pushed.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, bail};

use crate::config::Config;
use crate::lab::corpus::Corpus;
use crate::lab::localreg::LocalRegistry;
use crate::registry::{Registry, RegistryError, http_client};

/// The repository prefix the benchmark owns on an operator's registries.
pub const PREFIX: &str = "georep-bench/";

pub struct Target {
    config: Config,
    /// Registries started by the benchmark (full control, server-side
    /// request counts from their logs); `None`: an operator's.
    local: Option<Local>,
}

struct Local {
    primary: LocalRegistry,
    replicas: Vec<LocalRegistry>,
}

/// Requests by kind, as the registries logged them.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ServerRequests {
    pub primary: BTreeMap<String, u64>,
    /// All regions together.
    pub replicas: BTreeMap<String, u64>,
}

/// Each registry's log length at one moment.
pub struct Marks(Vec<usize>);

impl Target {
    /// Starts a primary and `regions` replicas under `dir`.
    pub async fn local(
        dir: &Path,
        regions: usize,
        port_base: Option<u16>,
    ) -> anyhow::Result<Target> {
        let mut ports = crate::lab::localreg::Ports::from_base(port_base);
        let setup =
            super::LocalSetup::start_on(dir, regions, "", ports.options()?, &mut ports).await?;
        let config = crate::config::load(&setup.config)?;
        Ok(Target {
            config,
            local: Some(Local {
                primary: setup.primary,
                replicas: setup.replicas,
            }),
        })
    }

    /// The registries of the config at `path`.
    pub fn configured(path: &Path) -> anyhow::Result<Target> {
        let config = crate::config::load(path)?;
        if config.primary().is_none() {
            anyhow::bail!(
                "{}: `georep bench --config` measures copies from a primary; an any-region config has none (the any-region figures are in benches/)",
                path.display()
            );
        }
        Ok(Target {
            config,
            local: None,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn config_path(&self) -> &Path {
        &self.config.path
    }

    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }

    /// Clients for the primary and each region, with the config's
    /// credentials and timeouts.
    pub fn clients(&self) -> (Registry, Vec<Registry>) {
        let c = self.config();
        let http = http_client(&c.timeouts);
        let client = |r| Registry::new(r, http.clone(), c.timeouts, c.max_attempts);
        let primary = c
            .primary()
            .expect("a benchmark target is one-way (checked when it was made)");
        (client(primary), c.regions.iter().map(client).collect())
    }

    /// Empties every region of the corpus: local registries restart with
    /// empty storage; an operator's registries get every manifest and
    /// blob of the corpus deleted (deletes must be enabled there).
    pub async fn wipe_regions(&mut self, corpus: &Corpus) -> anyhow::Result<()> {
        match &mut self.local {
            Some(local) => {
                for r in &mut local.replicas {
                    r.wipe().await?;
                }
                Ok(())
            }
            None => {
                let (_, regions) = self.clients();
                for r in &regions {
                    delete_corpus(r, corpus).await.with_context(|| {
                        format!(
                            "wiping the benchmark's repositories ({PREFIX}*) in region {} ({}) \
                             between runs; the benchmark needs deletes enabled there \
                             (distribution: storage.delete.enabled: true)",
                            r.name(),
                            r.url()
                        )
                    })?;
                }
                Ok(())
            }
        }
    }

    /// Deletes the corpus from the primary and every region of an
    /// operator's registries; returns what could not be deleted. Local
    /// registries go with their directory.
    pub async fn cleanup(&self, corpus: &Corpus) -> Vec<String> {
        if self.is_local() {
            return Vec::new();
        }
        let (primary, regions) = self.clients();
        let mut problems = Vec::new();
        for r in std::iter::once(&primary).chain(&regions) {
            if let Err(e) = delete_corpus(r, corpus).await {
                problems.push(format!(
                    "cleaning up {PREFIX}* in {} ({}): {e:#}",
                    r.name(),
                    r.url()
                ));
            }
        }
        problems
    }

    /// Each registry's log position, for [`Target::requests_since`];
    /// `None` for an operator's registries (no logs to read).
    pub async fn marks(&self) -> Option<Marks> {
        let local = self.local.as_ref()?;
        let mut marks = Vec::new();
        for r in local.all() {
            marks.push(r.settled_requests().await.len());
        }
        Some(Marks(marks))
    }

    /// Requests the registries logged since `marks`, by kind.
    pub async fn requests_since(&self, marks: &Marks) -> Option<ServerRequests> {
        let local = self.local.as_ref()?;
        let mut out = ServerRequests::default();
        for (i, r) in local.all().enumerate() {
            let into = if i == 0 {
                &mut out.primary
            } else {
                &mut out.replicas
            };
            for (method, uri, _) in r.settled_requests().await.iter().skip(marks.0[i]) {
                *into
                    .entry(request_kind(method, uri).to_owned())
                    .or_insert(0) += 1;
            }
        }
        Some(out)
    }

    /// CPU seconds all local registry processes have used so far.
    pub fn registries_cpu(&self) -> Option<f64> {
        Some(
            self.local
                .as_ref()?
                .all()
                .filter_map(|r| r.cpu_secs())
                .sum(),
        )
    }

    /// Bytes the local regions hold on disk (progress for runs that report
    /// none themselves).
    pub fn replica_disk_bytes(&self) -> Option<u64> {
        let local = self.local.as_ref()?;
        Some(
            local
                .replicas
                .iter()
                .map(|r| dir_bytes(&r.dir.join("data")))
                .sum(),
        )
    }
}

impl Local {
    /// The primary, then the regions.
    fn all(&self) -> impl Iterator<Item = &LocalRegistry> {
        std::iter::once(&self.primary).chain(&self.replicas)
    }
}

/// Deletes every manifest and blob of `corpus` from `registry` (absent is
/// fine). Manifests go first: a tag goes with its manifest.
async fn delete_corpus(registry: &Registry, corpus: &Corpus) -> Result<(), RegistryError> {
    for (repo, manifests) in &corpus.manifests {
        // Parents first, so no index is left pointing at a deleted child.
        for m in manifests.iter().rev() {
            registry.delete_manifest(repo, m.digest.as_str()).await?;
        }
    }
    for (repo, blobs) in &corpus.blobs {
        for d in blobs.keys() {
            registry.delete_blob(repo, d).await?;
        }
    }
    Ok(())
}

/// A logged request's kind, named as georep's client counts them (plus
/// `upload_patch` and `upload_status`, which georep does not send).
pub fn request_kind(method: &str, uri: &str) -> &'static str {
    let path = uri.split('?').next().unwrap_or(uri);
    let query = uri.split_once('?').map(|(_, q)| q).unwrap_or("");
    if path == "/v2/" || path == "/v2" {
        return "ping";
    }
    if path.starts_with("/v2/_catalog") {
        return "catalog";
    }
    if path.ends_with("/tags/list") {
        return "tags_list";
    }
    if path.contains("/manifests/") {
        return match method {
            "HEAD" => "manifest_head",
            "GET" => "manifest_get",
            "PUT" => "manifest_put",
            "DELETE" => "manifest_delete",
            _ => "other",
        };
    }
    if path.contains("/blobs/uploads") {
        return match method {
            "POST" if query.contains("mount=") => "blob_mount",
            "POST" => "upload_start",
            "PATCH" => "upload_patch",
            "PUT" => "upload_put",
            "DELETE" => "upload_cancel",
            "GET" => "upload_status",
            _ => "other",
        };
    }
    if path.contains("/blobs/") {
        return match method {
            "HEAD" => "blob_head",
            "GET" => "blob_get",
            "DELETE" => "blob_delete",
            _ => "other",
        };
    }
    "other"
}

/// Total size of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

/// Refuses a config whose registries the benchmark cannot name as
/// `host[:port]` references (skopeo needs them) — only used for skopeo.
pub fn reference_host(url: &url::Url) -> anyhow::Result<String> {
    if url.path() != "/" {
        bail!(
            "{} has a path; image references cannot name it (skopeo needs host[:port])",
            url.as_str().trim_end_matches('/')
        );
    }
    let host = url.host_str().context("URL without a host")?;
    Ok(match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_requests_get_their_kind() {
        let d = "sha256:0123";
        for (m, uri, kind) in [
            ("GET", "/v2/", "ping"),
            ("GET", "/v2/_catalog?n=100", "catalog"),
            ("GET", "/v2/a/b/tags/list?n=10", "tags_list"),
            ("HEAD", "/v2/a/manifests/latest", "manifest_head"),
            ("PUT", "/v2/a/manifests/latest", "manifest_put"),
            ("HEAD", &format!("/v2/a/blobs/{d}"), "blob_head"),
            ("GET", &format!("/v2/a/blobs/{d}"), "blob_get"),
            ("POST", "/v2/a/blobs/uploads/", "upload_start"),
            (
                "POST",
                &format!("/v2/a/blobs/uploads/?mount={d}&from=b"),
                "blob_mount",
            ),
            ("PATCH", "/v2/a/blobs/uploads/u-1?_state=x", "upload_patch"),
            (
                "PUT",
                &format!("/v2/a/blobs/uploads/u-1?digest={d}"),
                "upload_put",
            ),
            ("DELETE", &format!("/v2/a/blobs/{d}"), "blob_delete"),
        ] {
            assert_eq!(request_kind(m, uri), kind, "{m} {uri}");
        }
    }

    #[test]
    fn reference_hosts() {
        let u = |s| url::Url::parse(s).unwrap();
        assert_eq!(
            reference_host(&u("http://127.0.0.1:5000/")).unwrap(),
            "127.0.0.1:5000"
        );
        assert_eq!(
            reference_host(&u("https://r.example.com/")).unwrap(),
            "r.example.com"
        );
        assert!(reference_host(&u("https://r.example.com/mirror/")).is_err());
    }
}
