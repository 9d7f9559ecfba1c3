//! Fixtures for the integration tests: real `docker-registry` processes as
//! primary and replicas, the real `georep` binary, a corpus pushed through
//! the API, and an independent check of what landed in each region.
#![allow(dead_code)]

pub mod daemon;
pub mod proxy;
pub mod token;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

use georep::config::{RegistryConfig, Timeouts};
use georep::digest::Digest;
use georep::lab::corpus::{Corpus, CorpusSpec, Preset};
use georep::lab::localreg::{LocalOptions, LocalRegistry};
use georep::registry::{Registry, Scope, http_client};

pub const REGION_NAMES: [&str; 3] = ["eastus", "japaneast", "brazilsouth"];

/// A primary and some replicas, each in its own directory.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub primary: LocalRegistry,
    pub replicas: Vec<LocalRegistry>,
}

impl Cluster {
    pub async fn start(regions: usize) -> Cluster {
        Self::start_with(regions, LocalOptions::default(), |_| {
            LocalOptions::default()
        })
        .await
    }

    pub async fn start_with(
        regions: usize,
        primary: LocalOptions,
        replica: impl Fn(usize) -> LocalOptions,
    ) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = LocalRegistry::start(&dir.path().join("primary"), primary)
            .await
            .expect("primary registry starts");
        let mut replicas = Vec::new();
        for (i, name) in REGION_NAMES.iter().enumerate().take(regions) {
            replicas.push(
                LocalRegistry::start(&dir.path().join(name), replica(i))
                    .await
                    .expect("replica registry starts"),
            );
        }
        Cluster {
            dir,
            primary: p,
            replicas,
        }
    }

    /// A cluster whose primary notifies a daemon on `port` (with `auth` as
    /// the Authorization header, if any).
    pub async fn notifying(regions: usize, port: u16, auth: Option<&str>) -> Cluster {
        Self::start_with(
            regions,
            LocalOptions {
                notify: Some(georep::lab::localreg::LocalNotify {
                    url: format!("http://127.0.0.1:{port}/v1/notifications"),
                    authorization: auth.map(str::to_owned),
                }),
                ..LocalOptions::default()
            },
            |_| LocalOptions::default(),
        )
        .await
    }

    /// Writes a config naming `primary_url` and the replicas (or other
    /// URLs), plus `extra` YAML, and returns its path.
    pub fn config(&self, primary_url: &str, region_urls: &[String], extra: &str) -> PathBuf {
        let mut yaml = format!(
            "state_dir: ./state\nprimary:\n  name: westeurope\n  url: {primary_url}\nregions:\n"
        );
        for (i, url) in region_urls.iter().enumerate() {
            yaml.push_str(&format!("  - name: {}\n    url: {url}\n", REGION_NAMES[i]));
        }
        yaml.push_str(extra);
        let path = self.dir.path().join("georep.yaml");
        std::fs::write(&path, yaml).expect("write config");
        path
    }

    pub fn default_config(&self) -> PathBuf {
        let urls: Vec<String> = self.replicas.iter().map(|r| r.url()).collect();
        self.config(&self.primary.url(), &urls, "")
    }

    pub fn replica_urls(&self) -> Vec<String> {
        self.replicas.iter().map(|r| r.url()).collect()
    }

    /// A config (as [`Cluster::default_config`]) whose primary is reached
    /// through a proxy injecting `faults`; keep the proxy alive.
    pub async fn config_with_faulty_primary(
        &self,
        faults: proxy::Faults,
    ) -> (proxy::Proxy, PathBuf) {
        let proxy = proxy::Proxy::start(&self.primary.url(), faults).await;
        let config = self.config(&proxy.url, &self.replica_urls(), "");
        (proxy, config)
    }

    /// A config (as [`Cluster::default_config`]) whose region `i` is
    /// reached through a proxy injecting `faults`; keep the proxy alive.
    pub async fn config_with_faulty_region(
        &self,
        i: usize,
        faults: proxy::Faults,
    ) -> (proxy::Proxy, PathBuf) {
        let proxy = proxy::Proxy::start(&self.replicas[i].url(), faults).await;
        let mut urls = self.replica_urls();
        urls[i] = proxy.url.clone();
        let config = self.config(&self.primary.url(), &urls, "");
        (proxy, config)
    }
}

/// A client for a registry at `url`.
pub fn client(url: &str) -> Registry {
    let timeouts = Timeouts::default();
    Registry::new(
        &RegistryConfig::new("test", url).expect("valid URL"),
        http_client(&timeouts),
        timeouts,
        3,
    )
}

/// A client sending HTTP basic credentials `georep`:`password` (to the
/// registry or its token service).
pub fn client_as(url: &str, password: &str) -> Registry {
    let mut cfg = RegistryConfig::new("test", url).expect("registry URL");
    cfg.credentials = Some(georep::config::Credentials::Basic {
        username: "georep".into(),
        password: georep::config::Secret::new(password),
    });
    let timeouts = Timeouts::default();
    Registry::new(&cfg, http_client(&timeouts), timeouts, 6)
}

/// Panics unless the region at `url` holds the whole corpus, every blob
/// read back and hashed.
pub async fn assert_identical(url: &str, corpus: &Corpus) {
    georep::lab::bench::verify::region(
        &client(url),
        corpus,
        georep::lab::bench::verify::Expect::Images,
        true,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Generates and pushes a corpus to the registry at `url`.
pub async fn push_corpus(url: &str, spec: &CorpusSpec) -> Corpus {
    let corpus = Corpus::generate(spec).await;
    corpus.push(&client(url)).await.expect("corpus pushed");
    corpus
}

/// The `test` preset, with the big layer as the issue asks (64 MiB).
pub fn test_spec(seed: u64) -> CorpusSpec {
    CorpusSpec::preset(Preset::Test, seed)
}

/// A smaller corpus with every shape, for tests where size does not matter.
pub fn quick_spec(seed: u64) -> CorpusSpec {
    CorpusSpec {
        big_layer_bytes: (300_000, 300_001),
        layer_bytes: (1, 200_000),
        base_layer_bytes: (100_000, 200_000),
        ..CorpusSpec::preset(Preset::Test, seed)
    }
}

/// Runs the georep binary.
pub async fn georep(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_georep"));
    cmd.args(args).env("GEOREP_LOG", "georep=debug,warn");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().await.expect("georep runs");
    eprintln!(
        "--- georep {} -> {:?}\n--- stdout:\n{}\n--- stderr (tail):\n{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        tail(&String::from_utf8_lossy(&out.stderr), 40)
    );
    out
}

/// `georep sync --json`, parsed.
pub async fn sync_json(config: &Path, envs: &[(&str, &str)]) -> (i32, serde_json::Value) {
    let out = georep(
        &["sync", "--config", config.to_str().unwrap(), "--json"],
        envs,
    )
    .await;
    let code = out.status.code().unwrap_or(-1);
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (code, v)
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Checks that `region` serves every tag of `corpus` with the primary's
/// digest, that every manifest under it is byte-identical to the primary's,
/// and that every blob it references is present (foreign layers excepted).
pub async fn verify_region(
    primary_url: &str,
    region_url: &str,
    corpus: &Corpus,
) -> Result<(), String> {
    verify_tags(primary_url, region_url, corpus, |_| true).await
}

pub async fn verify_tags(
    primary_url: &str,
    region_url: &str,
    corpus: &Corpus,
    which: impl Fn(&georep::lab::corpus::TagRef) -> bool,
) -> Result<(), String> {
    let primary = client(primary_url);
    let region = client(region_url);
    for t in corpus.tags.iter().filter(|t| which(t)) {
        let repo = &t.repository;
        let head = region
            .head_manifest(repo, &t.tag, &Scope::pull(repo))
            .await
            .map_err(|e| format!("{region_url} {repo}:{}: {e:#}", t.tag))?;
        match head {
            Some(h) if h.digest == t.digest => {}
            other => {
                return Err(format!(
                    "{region_url} {repo}:{} resolves to {other:?}, expected {}",
                    t.tag, t.digest
                ));
            }
        }
        let mut stack = vec![t.digest.clone()];
        while let Some(d) = stack.pop() {
            let want = primary
                .get_manifest(repo, d.as_str(), &Scope::pull(repo))
                .await
                .map_err(|e| format!("primary {repo}@{d}: {e:#}"))?
                .ok_or_else(|| format!("primary lacks {repo}@{d}"))?;
            let got = region
                .get_manifest(repo, d.as_str(), &Scope::pull(repo))
                .await
                .map_err(|e| format!("{region_url} {repo}@{d}: {e:#}"))?
                .ok_or_else(|| format!("{region_url} lacks manifest {repo}@{d}"))?;
            if got.bytes != want.bytes || got.media_type != want.media_type {
                return Err(format!(
                    "{region_url} {repo}@{d} differs: {} vs {}",
                    got.media_type, want.media_type
                ));
            }
            let refs = want.references().map_err(|e| e.to_string())?;
            stack.extend(refs.manifests.iter().map(|m| m.digest.clone()));
            blobs_whole(&region, region_url, repo, &refs.blobs, &corpus.foreign).await?;
        }
    }
    Ok(())
}

/// Every blob of `blobs` but the `foreign` ones is in `repo` of the region
/// at its size.
async fn blobs_whole(
    region: &Registry,
    region_url: &str,
    repo: &str,
    blobs: &[georep::registry::manifest::Descriptor],
    foreign: &[Digest],
) -> Result<(), String> {
    for b in blobs.iter().filter(|b| !foreign.contains(&b.digest)) {
        let size = region
            .head_blob(repo, &b.digest, &Scope::pull(repo))
            .await
            .map_err(|e| format!("{region_url} blob {repo}@{}: {e:#}", b.digest))?;
        if size != Some(b.size) {
            return Err(format!(
                "{region_url} blob {repo}@{} has size {size:?}, expected {}",
                b.digest, b.size
            ));
        }
    }
    Ok(())
}

/// The raw manifest bytes skopeo gets for `reference` (an independent client).
pub async fn skopeo_raw(reference: &str) -> Result<Vec<u8>, String> {
    let out = tokio::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .await
        .map_err(|e| format!("running skopeo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "skopeo inspect {reference}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out.stdout)
}

/// Polls `f` until it returns true or the deadline passes.
pub async fn wait_for(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The digest `repository:tag` has in the corpus.
pub fn tag_digest(corpus: &Corpus, repository: &str, tag: &str) -> Digest {
    corpus
        .tags
        .iter()
        .find(|t| t.repository == repository && t.tag == tag)
        .expect("tag in corpus")
        .digest
        .clone()
}

/// Blobs referenced by exactly one manifest of the corpus (changing one
/// affects one image only).
pub fn unique_layer(corpus: &Corpus, repository: &str, tag: &str) -> Digest {
    let target = tag_digest(corpus, repository, tag);
    let manifests = &corpus.manifests[repository];
    let m = manifests
        .iter()
        .find(|m| m.digest == target)
        .expect("manifest");
    let refs = m.references().expect("parses");
    let mut count = std::collections::HashMap::<Digest, usize>::new();
    for mm in corpus.manifests.values().flatten() {
        if let Ok(r) = mm.references() {
            for b in r.blobs {
                *count.entry(b.digest).or_default() += 1;
            }
        }
    }
    refs.blobs
        .iter()
        .rev()
        .find(|b| count[&b.digest] == 1 && b.size > 1000)
        .map(|b| b.digest.clone())
        .expect("a layer unique to this image")
}

/// Requests that change a registry (uploads, mounts, manifest pushes,
/// deletes), every one answered so far.
pub async fn writes(reg: &LocalRegistry) -> usize {
    reg.settled_requests()
        .await
        .iter()
        .filter(|(m, _, _)| m == "PUT" || m == "POST" || m == "PATCH" || m == "DELETE")
        .count()
}

pub type Shared<T> = Arc<T>;

/// Installs `docker-credential-georeptest` in `dir/bin`, answering `get`
/// for `server` (any server if `None`) with user `georep` and the password
/// that the shell expression `secret` prints; returns a PATH that has it.
pub fn credential_helper(dir: &Path, server: Option<&str>, secret: &str) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-georeptest");
    let only = server.map_or(String::new(), |s| {
        format!("[ \"$server\" = \"{s}\" ] || {{ echo 'credentials not found in native keychain'; exit 1; }}\n")
    });
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nread server\n{only}printf '{{\"ServerURL\":\"%s\",\"Username\":\"georep\",\"Secret\":\"%s\"}}' \"$server\" \"{secret}\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!("{}:{}", bin.display(), std::env::var("PATH").unwrap())
}

/// Every corpus tag that `region_url` serves points at complete content:
/// its manifest, every child manifest and every blob are there (a tag may
/// be missing, but never dangling). Returns how many tags it serves.
pub async fn no_dangling_tags(region_url: &str, corpus: &Corpus) -> Result<usize, String> {
    let tags: Vec<(String, String)> = corpus
        .tags
        .iter()
        .map(|t| (t.repository.clone(), t.tag.clone()))
        .collect();
    no_dangling(region_url, &tags, &corpus.foreign).await
}

/// [`no_dangling_tags`] for these (repository, tag) pairs; `foreign`
/// layers are not expected in the region.
pub async fn no_dangling(
    region_url: &str,
    tags: &[(String, String)],
    foreign: &[Digest],
) -> Result<usize, String> {
    use futures::StreamExt as _;
    let region = client(region_url);
    let region = &region;
    // Tags are checked 16 at a time: the crash test checks hundreds.
    let results: Vec<Result<bool, String>> = futures::stream::iter(tags)
        .map(|(repo, tag)| async move {
            let scope = Scope::pull(repo);
            let Some(head) = region
                .head_manifest(repo, tag, &scope)
                .await
                .map_err(|e| format!("{region_url} {repo}:{tag}: {e:#}"))?
            else {
                return Ok(false);
            };
            let mut stack = vec![head.digest.clone()];
            while let Some(d) = stack.pop() {
                let m = region
                    .get_manifest(repo, d.as_str(), &scope)
                    .await
                    .map_err(|e| format!("{region_url} {repo}@{d}: {e:#}"))?
                    .ok_or_else(|| format!("{region_url} {repo}:{tag} is dangling: no {d}"))?;
                let refs = m.references().map_err(|e| e.to_string())?;
                stack.extend(refs.manifests.iter().map(|c| c.digest.clone()));
                blobs_whole(region, region_url, repo, &refs.blobs, foreign)
                    .await
                    .map_err(|e| format!("{repo}:{tag} is dangling: {e}"))?;
            }
            Ok(true)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut present = 0;
    for r in results {
        present += usize::from(r?);
    }
    Ok(present)
}

/// Every fact the state store at `store_dir` records about the corpus in
/// each region is true of the region itself (reached at `direct[r]`):
/// recorded manifests exist with that digest, recorded blobs exist with
/// their size. `regions` are (name, URL) as the config gave them. Returns
/// how many facts were checked.
pub async fn store_facts_hold(
    store_dir: &Path,
    regions: &[(String, String)],
    direct: &[String],
    corpus: &Corpus,
) -> Result<usize, String> {
    let store = georep::store::Store::open(store_dir, regions).map_err(|e| e.to_string())?;
    let mut checked = 0;
    for (r, url) in direct.iter().enumerate() {
        let region = client(url);
        for (repo, reference, fact) in store.region_manifests(r).collect::<Vec<_>>() {
            let scope = Scope::pull(&repo);
            let head = region
                .head_manifest(&repo, fact.digest.as_str(), &scope)
                .await
                .map_err(|e| format!("{url} {repo}@{}: {e:#}", fact.digest))?;
            if head.is_none() {
                return Err(format!(
                    "the store says {url} has {repo}:{reference} = {}, it does not",
                    fact.digest
                ));
            }
            checked += 1;
        }
        for (repo, blobs) in &corpus.blobs {
            for (digest, blob) in blobs {
                if !store.has_blob(r, repo, digest) {
                    continue;
                }
                let size = region
                    .head_blob(repo, digest, &Scope::pull(repo))
                    .await
                    .map_err(|e| format!("{url} blob {repo}@{digest}: {e:#}"))?;
                if size != Some(blob.size) {
                    return Err(format!(
                        "the store says {url} has blob {repo}@{digest}, it has {size:?}"
                    ));
                }
                checked += 1;
            }
        }
    }
    Ok(checked)
}

/// A test knob from the environment (for soak runs), else `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
