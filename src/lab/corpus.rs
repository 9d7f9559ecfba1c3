//! A deterministic synthetic corpus of images, pushed through the registry
//! API: the sample set of `georep demo`, the content of the integration
//! tests, and (with bigger presets) the benchmark's load.
//!
//! Everything follows from a seed. Blob contents are pseudo-random bytes
//! generated in chunks as they are uploaded (never held whole in memory), so
//! a corpus of gigabytes costs a few hundred KiB of memory to push. Random
//! bytes do not compress, which is what registries and networks see with
//! real (already compressed) layers.
//!
//! The `test` preset holds every shape georep must copy verbatim: Docker
//! schema2 manifests and manifest lists, OCI manifests and indexes, an index
//! nested in an index, an OCI artifact with `artifactType`, a custom config
//! media type and a `subject` (reachable through a referrers tag
//! `sha256-<hex>`, as registries without the referrers API store them), a
//! foreign layer with `urls`, an empty layer, shared base layers across
//! repositories, nested repository names and several tags on one digest.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{Rng, RngExt, SeedableRng};
use serde_json::{Value, json};

use crate::digest::Digest;
use crate::registry::manifest::{
    DOCKER_FOREIGN_LAYER, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST,
};
use crate::registry::{Manifest, Mount, Registry, RegistryError};

const MIB: u64 = 1024 * 1024;
/// Size of the chunks blob contents are generated and uploaded in.
const CHUNK: usize = 256 * 1024;
/// Blobs pushed at once.
const PUSH_CONCURRENCY: usize = 4;

const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
const ARTIFACT_TYPE: &str = "application/vnd.georep.test.sbom";
const ARTIFACT_LAYER: &str = "application/vnd.georep.test.sbom.v1+json";

/// Named corpus sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// A few MiB: the demo's sample set.
    Demo,
    /// Every manifest shape, one 64 MiB layer, ~100 MiB in all.
    Test,
    /// ~200 MiB.
    Small,
    /// ~1.5 GiB, 75 tags, some 100+ MiB layers.
    Medium,
    /// ~8 GiB.
    Large,
}

/// The knobs of a generated corpus.
#[derive(Clone, Debug)]
pub struct CorpusSpec {
    pub seed: u64,
    pub repositories: Vec<String>,
    pub tags_per_repository: usize,
    /// Layers of each image besides the shared base layers.
    pub layers_per_image: usize,
    /// Size range of those layers.
    pub layer_bytes: (u64, u64),
    /// Base layers shared by every image (so across repositories).
    pub base_layers: usize,
    pub base_layer_bytes: (u64, u64),
    /// Extra large layers, spread over the first images.
    pub big_layers: usize,
    pub big_layer_bytes: (u64, u64),
    /// Every n-th tag is a two-platform index (0: none).
    pub multi_arch_every: usize,
    /// Add the unusual shapes (nested index, artifact, foreign layer...).
    pub exotic: bool,
    /// Every tag of a repository is its own small manifest over the same
    /// two blobs (for listing-scale tests: many tags, little data).
    pub shared_blobs: bool,
}

impl CorpusSpec {
    /// `repositories` repositories (`scale/r0001`...) of `tags_per_repository`
    /// tags each (`latest` included), each tag a distinct manifest over the
    /// repository's two tiny blobs.
    pub fn scale(repositories: usize, tags_per_repository: usize, seed: u64) -> CorpusSpec {
        CorpusSpec {
            seed,
            repositories: (1..=repositories)
                .map(|i| format!("scale/r{i:05}"))
                .collect(),
            tags_per_repository: tags_per_repository.saturating_sub(1).max(1),
            layers_per_image: 1,
            layer_bytes: (512, 1024),
            base_layers: 0,
            base_layer_bytes: (0, 0),
            big_layers: 0,
            big_layer_bytes: (0, 0),
            multi_arch_every: 0,
            exotic: false,
            shared_blobs: true,
        }
    }

    pub fn preset(preset: Preset, seed: u64) -> CorpusSpec {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        match preset {
            Preset::Demo => CorpusSpec {
                seed,
                repositories: names(&["library/hello", "team/app/api", "team/app/web"]),
                tags_per_repository: 2,
                layers_per_image: 2,
                layer_bytes: (64 << 10, 2 * MIB),
                base_layers: 1,
                base_layer_bytes: (MIB, 2 * MIB),
                big_layers: 0,
                big_layer_bytes: (0, 0),
                multi_arch_every: 2,
                exotic: false,
                shared_blobs: false,
            },
            Preset::Test => CorpusSpec {
                seed,
                repositories: names(&["library/base", "team/app/api", "team/app/web"]),
                tags_per_repository: 3,
                layers_per_image: 2,
                layer_bytes: (1, 3 * MIB),
                base_layers: 2,
                base_layer_bytes: (MIB, 4 * MIB),
                big_layers: 1,
                big_layer_bytes: (64 * MIB, 64 * MIB + 4096),
                multi_arch_every: 3,
                exotic: true,
                shared_blobs: false,
            },
            Preset::Small => CorpusSpec {
                seed,
                repositories: bench_repositories(5),
                tags_per_repository: 4,
                layers_per_image: 2,
                layer_bytes: (MIB, 6 * MIB),
                base_layers: 3,
                base_layer_bytes: (8 * MIB, 16 * MIB),
                big_layers: 0,
                big_layer_bytes: (0, 0),
                multi_arch_every: 4,
                exotic: false,
                shared_blobs: false,
            },
            Preset::Medium => CorpusSpec {
                seed,
                repositories: bench_repositories(15),
                tags_per_repository: 4,
                layers_per_image: 2,
                layer_bytes: (MIB, 10 * MIB),
                base_layers: 4,
                base_layer_bytes: (16 * MIB, 32 * MIB),
                big_layers: 6,
                big_layer_bytes: (100 * MIB, 140 * MIB),
                multi_arch_every: 5,
                exotic: false,
                shared_blobs: false,
            },
            Preset::Large => CorpusSpec {
                seed,
                repositories: bench_repositories(30),
                tags_per_repository: 8,
                layers_per_image: 2,
                layer_bytes: (2 * MIB, 16 * MIB),
                base_layers: 6,
                base_layer_bytes: (32 * MIB, 64 * MIB),
                big_layers: 16,
                big_layer_bytes: (100 * MIB, 200 * MIB),
                multi_arch_every: 5,
                exotic: false,
                shared_blobs: false,
            },
        }
    }
}

/// `n` repository names under the benchmark's prefix
/// (`georep-bench/svc01`...).
pub fn bench_repositories(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("georep-bench/svc{i:02}")).collect()
}

/// A blob: pseudo-random bytes from `seed`, or fixed small bytes.
#[derive(Clone, Debug)]
pub struct Blob {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    content: Content,
}

#[derive(Clone, Debug)]
enum Content {
    Random { seed: u64 },
    Fixed(Bytes),
}

impl Blob {
    fn random(seed: u64, size: u64, media_type: &str) -> Blob {
        Blob {
            // Generated once to hash it: the digest is needed before the upload.
            digest: Digest::sha256_of_chunks(random_chunks(seed, size)),
            size,
            media_type: media_type.to_owned(),
            content: Content::Random { seed },
        }
    }

    fn fixed(bytes: Vec<u8>, media_type: &str) -> Blob {
        Blob {
            digest: Digest::sha256_of(&bytes),
            size: bytes.len() as u64,
            media_type: media_type.to_owned(),
            content: Content::Fixed(Bytes::from(bytes)),
        }
    }

    /// The blob's bytes, in chunks.
    pub fn chunks(&self) -> Box<dyn Iterator<Item = Bytes> + Send> {
        match &self.content {
            Content::Random { seed } => Box::new(random_chunks(*seed, self.size)),
            Content::Fixed(b) => Box::new(std::iter::once(b.clone())),
        }
    }

    fn descriptor(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

fn random_chunks(seed: u64, size: u64) -> impl Iterator<Item = Bytes> + Send {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut left = size;
    std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let n = left.min(CHUNK as u64) as usize;
        let mut buf = vec![0u8; n];
        rng.fill_bytes(&mut buf);
        left -= n as u64;
        Some(Bytes::from(buf))
    })
}

/// One tag the corpus creates, and what it points at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagRef {
    pub repository: String,
    pub tag: String,
    pub digest: Digest,
    pub media_type: String,
}

/// A generated corpus: blobs, manifests (children before parents) and tags,
/// per repository.
#[derive(Clone, Debug, Default)]
pub struct Corpus {
    /// Repository -> the blobs it needs (digest -> blob).
    pub blobs: BTreeMap<String, BTreeMap<Digest, Arc<Blob>>>,
    /// Repository -> manifests pushed by digest, in push order.
    pub manifests: BTreeMap<String, Vec<Manifest>>,
    pub tags: Vec<TagRef>,
    /// Layers referenced but deliberately not pushed (foreign layers).
    pub foreign: Vec<Digest>,
}

impl Corpus {
    /// Unique blob bytes (each digest once).
    pub fn unique_blob_bytes(&self) -> u64 {
        let mut seen = HashSet::new();
        self.blobs
            .values()
            .flat_map(|m| m.values())
            .filter(|b| seen.insert(b.digest.clone()))
            .map(|b| b.size)
            .sum()
    }

    pub fn unique_blobs(&self) -> usize {
        let mut seen = HashSet::new();
        self.blobs
            .values()
            .flat_map(|m| m.keys())
            .filter(|d| seen.insert((*d).clone()))
            .count()
    }

    /// Generates the corpus described by `spec` (hashes every blob; the
    /// work is spread over blocking threads).
    pub async fn generate(spec: &CorpusSpec) -> Corpus {
        let spec = spec.clone();
        // Hashing gigabytes is CPU work: keep it off the async workers.
        tokio::task::spawn_blocking(move || Builder::new(&spec).build(&spec))
            .await
            .expect("corpus generation panicked")
    }

    /// Pushes everything to `registry`: blobs (mounting those already
    /// pushed to another repository), then manifests, then tags.
    pub async fn push(&self, registry: &Registry) -> Result<(), RegistryError> {
        // Each unique blob is uploaded once, into the first repository that
        // needs it; the other repositories mount it.
        let mut first: BTreeMap<&Digest, (&String, &Arc<Blob>)> = BTreeMap::new();
        for (repo, blobs) in &self.blobs {
            for (d, b) in blobs {
                first.entry(d).or_insert((repo, b));
            }
        }
        let mut uploads = futures::stream::iter(first.values())
            .map(|(repo, blob)| async move {
                let session = registry.start_upload(repo).await?;
                upload(registry, &session, blob).await
            })
            .buffer_unordered(PUSH_CONCURRENCY);
        while let Some(r) = uploads.next().await {
            r?;
        }
        drop(uploads);

        // Then each repository: mounts, manifests (children first, a tagged
        // manifest pushed under its first tag), remaining tags.
        let mut repos = futures::stream::iter(&self.manifests)
            .map(|(repo, manifests)| {
                let first = &first;
                async move {
                    for (d, blob) in self.blobs.get(repo).into_iter().flatten() {
                        let (from, _) = first[d];
                        if from != repo
                            && let Mount::Session(s) = registry.mount_blob(repo, d, from).await?
                        {
                            upload(registry, &s, blob).await?;
                        }
                    }
                    let tags: Vec<&TagRef> =
                        self.tags.iter().filter(|t| &t.repository == repo).collect();
                    let mut done = std::collections::HashSet::new();
                    for m in manifests {
                        let reference = match tags.iter().find(|t| t.digest == m.digest) {
                            Some(t) => {
                                done.insert(&t.tag);
                                t.tag.as_str()
                            }
                            None => m.digest.as_str(),
                        };
                        registry.put_manifest(repo, reference, m).await?;
                    }
                    for t in tags.iter().filter(|t| !done.contains(&t.tag)) {
                        let m = manifests
                            .iter()
                            .find(|m| m.digest == t.digest)
                            .expect("every tag points at a generated manifest");
                        registry.put_manifest(repo, &t.tag, m).await?;
                    }
                    Ok::<(), RegistryError>(())
                }
            })
            .buffer_unordered(PUSH_CONCURRENCY);
        while let Some(r) = repos.next().await {
            r?;
        }
        Ok(())
    }
}

/// Pushes one small image to `repository:tag`: a config and a single
/// pseudo-random layer of `layer_bytes` from `seed` (a new seed, a new
/// image). For the daemon's tests and its latency benchmark.
pub async fn push_image(
    registry: &Registry,
    repository: &str,
    tag: &str,
    layer_bytes: u64,
    seed: u64,
) -> Result<Manifest, RegistryError> {
    let manifest = stage_image(registry, repository, layer_bytes, seed).await?;
    registry.put_manifest(repository, tag, &manifest).await?;
    Ok(manifest)
}

/// [`push_image`] but the manifest: its blobs are pushed, and the manifest
/// is returned for the caller to put when it chooses (two regions'
/// manifests within milliseconds of each other, say).
pub async fn stage_image(
    registry: &Registry,
    repository: &str,
    layer_bytes: u64,
    seed: u64,
) -> Result<Manifest, RegistryError> {
    let layer = Blob::random(seed, layer_bytes, "application/vnd.oci.image.layer.v1.tar");
    let config = Blob::fixed(
        serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
            "config": {"Labels": {"georep.seed": seed.to_string()}},
        }))
        .expect("JSON values serialize"),
        "application/vnd.oci.image.config.v1+json",
    );
    for blob in [&layer, &config] {
        let session = registry.start_upload(repository).await?;
        upload(registry, &session, blob).await?;
    }
    let bytes = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": crate::registry::manifest::OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
    }))
    .expect("JSON values serialize");
    let manifest = Manifest {
        digest: Digest::sha256_of(&bytes),
        bytes: Bytes::from(bytes),
        media_type: crate::registry::manifest::OCI_MANIFEST.to_owned(),
    };
    Ok(manifest)
}

async fn upload(
    registry: &Registry,
    session: &crate::registry::UploadSession,
    blob: &Blob,
) -> Result<(), RegistryError> {
    let body = reqwest::Body::wrap_stream(futures::stream::iter(
        blob.chunks().map(Ok::<Bytes, std::io::Error>),
    ));
    registry
        .put_upload(session, &blob.digest, blob.size, body)
        .await
}

struct Builder {
    rng: Xoshiro256PlusPlus,
    next_seed: u64,
    corpus: Corpus,
    base: Vec<Arc<Blob>>,
    big: Vec<Arc<Blob>>,
}

impl Builder {
    fn new(spec: &CorpusSpec) -> Builder {
        Builder {
            rng: Xoshiro256PlusPlus::seed_from_u64(spec.seed),
            next_seed: spec.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            corpus: Corpus::default(),
            base: Vec::new(),
            big: Vec::new(),
        }
    }

    fn size(&mut self, range: (u64, u64)) -> u64 {
        if range.1 <= range.0 {
            range.0
        } else {
            self.rng.random_range(range.0..range.1)
        }
    }

    fn random_blob(&mut self, size: u64, media_type: &str) -> Arc<Blob> {
        self.next_seed = self.next_seed.wrapping_add(1);
        Arc::new(Blob::random(self.next_seed, size, media_type))
    }

    fn add_blob(&mut self, repo: &str, blob: &Arc<Blob>) {
        self.corpus
            .blobs
            .entry(repo.to_owned())
            .or_default()
            .insert(blob.digest.clone(), blob.clone());
    }

    fn add_manifest(&mut self, repo: &str, media_type: &str, value: &Value) -> Manifest {
        // Compact JSON with sorted keys: the same spec always gives the same
        // bytes, hence the same digests.
        let bytes = Bytes::from(serde_json::to_vec(value).expect("JSON values serialize"));
        let m = Manifest {
            digest: Digest::sha256_of(&bytes),
            bytes,
            media_type: media_type.to_owned(),
        };
        let list = self.corpus.manifests.entry(repo.to_owned()).or_default();
        if !list.iter().any(|x| x.digest == m.digest) {
            list.push(m.clone());
        }
        m
    }

    fn tag(&mut self, repo: &str, tag: &str, m: &Manifest) {
        self.corpus.tags.push(TagRef {
            repository: repo.to_owned(),
            tag: tag.to_owned(),
            digest: m.digest.clone(),
            media_type: m.media_type.clone(),
        });
    }

    /// A single-platform image; `docker` picks Docker schema2 types.
    fn image(
        &mut self,
        spec: &CorpusSpec,
        repo: &str,
        label: &str,
        arch: &str,
        docker: bool,
        extra: &[Arc<Blob>],
    ) -> Manifest {
        let (layer_type, config_type, manifest_type) = if docker {
            (DOCKER_LAYER, DOCKER_CONFIG, DOCKER_MANIFEST)
        } else {
            (OCI_LAYER, OCI_CONFIG, OCI_MANIFEST)
        };
        let mut layers: Vec<Arc<Blob>> = Vec::new();
        for b in self.base.clone() {
            layers.push(Arc::new(Blob {
                media_type: layer_type.to_owned(),
                ..(*b).clone()
            }));
        }
        for _ in 0..spec.layers_per_image {
            let size = self.size(spec.layer_bytes);
            layers.push(self.random_blob(size, layer_type));
        }
        if let Some(big) = self.big.pop() {
            layers.push(Arc::new(Blob {
                media_type: layer_type.to_owned(),
                ..(*big).clone()
            }));
        }
        layers.extend(extra.iter().cloned());
        let config = Arc::new(Blob::fixed(
            serde_json::to_vec(&json!({
                "architecture": arch,
                "os": "linux",
                "created": "2026-01-01T00:00:00Z",
                "config": {"Labels": {"org.georep.corpus": label}},
                "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.digest.clone()).collect::<Vec<_>>()},
            }))
            .expect("JSON values serialize"),
            config_type,
        ));
        self.add_blob(repo, &config);
        for l in &layers {
            if l.media_type != DOCKER_FOREIGN_LAYER {
                self.add_blob(repo, l);
            }
        }
        let mut value = json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": config.descriptor(),
            "layers": layers.iter().map(|l| {
                let mut d = l.descriptor();
                if l.media_type == DOCKER_FOREIGN_LAYER {
                    d["urls"] = json!([format!("https://foreign.example.invalid/{}", l.digest)]);
                }
                d
            }).collect::<Vec<_>>(),
        });
        if !docker {
            value["annotations"] = json!({"org.opencontainers.image.ref.name": label});
        }
        self.add_manifest(repo, manifest_type, &value)
    }

    fn index(&mut self, repo: &str, docker: bool, children: &[(Manifest, Value)]) -> Manifest {
        let media_type = if docker {
            DOCKER_MANIFEST_LIST
        } else {
            OCI_INDEX
        };
        let value = json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": children.iter().map(|(m, platform)| {
                let mut d = json!({"mediaType": m.media_type, "digest": m.digest, "size": m.bytes.len()});
                if !platform.is_null() {
                    d["platform"] = platform.clone();
                }
                d
            }).collect::<Vec<_>>(),
        });
        self.add_manifest(repo, media_type, &value)
    }

    fn build(mut self, spec: &CorpusSpec) -> Corpus {
        if spec.shared_blobs {
            return self.build_shared(spec);
        }
        for _ in 0..spec.base_layers {
            let size = self.size(spec.base_layer_bytes);
            let b = self.random_blob(size, OCI_LAYER);
            self.base.push(b);
        }
        for _ in 0..spec.big_layers {
            let size = self.size(spec.big_layer_bytes);
            let b = self.random_blob(size, OCI_LAYER);
            self.big.push(b);
        }
        let mut n = 0usize;
        for (ri, repo) in spec.repositories.iter().enumerate() {
            let mut last = None;
            for t in 1..=spec.tags_per_repository {
                n += 1;
                let label = format!("{repo}:v{t}");
                // Alternate Docker and OCI types across repositories and tags.
                let docker = (ri + t) % 2 == 0;
                let m = if spec.multi_arch_every > 0 && n.is_multiple_of(spec.multi_arch_every) {
                    let amd = self.image(spec, repo, &label, "amd64", docker, &[]);
                    let arm = self.image(spec, repo, &label, "arm64", docker, &[]);
                    self.index(
                        repo,
                        docker,
                        &[
                            (amd, json!({"architecture": "amd64", "os": "linux"})),
                            (arm, json!({"architecture": "arm64", "os": "linux"})),
                        ],
                    )
                } else {
                    self.image(spec, repo, &label, "amd64", docker, &[])
                };
                self.tag(repo, &format!("v{t}"), &m);
                last = Some(m);
            }
            // Several tags on one digest.
            if let Some(m) = last {
                self.tag(repo, "latest", &m);
            }
        }
        if spec.exotic {
            self.exotic(spec);
        }
        self.corpus
    }

    fn build_shared(mut self, spec: &CorpusSpec) -> Corpus {
        for repo in &spec.repositories {
            let size = self.size(spec.layer_bytes);
            let layer = self.random_blob(size, OCI_LAYER);
            let config = Arc::new(Blob::fixed(
                serde_json::to_vec(&json!({
                    "architecture": "amd64", "os": "linux",
                    "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
                }))
                .expect("JSON values serialize"),
                OCI_CONFIG,
            ));
            self.add_blob(repo, &layer);
            self.add_blob(repo, &config);
            let mut last = None;
            for t in 1..=spec.tags_per_repository {
                let m = self.add_manifest(
                    repo,
                    OCI_MANIFEST,
                    &json!({
                        "schemaVersion": 2,
                        "mediaType": OCI_MANIFEST,
                        "config": config.descriptor(),
                        "layers": [layer.descriptor()],
                        "annotations": {"org.opencontainers.image.version": format!("v{t}")},
                    }),
                );
                self.tag(repo, &format!("v{t}"), &m);
                last = Some(m);
            }
            if let Some(m) = last {
                self.tag(repo, "latest", &m);
            }
        }
        self.corpus
    }

    fn exotic(&mut self, spec: &CorpusSpec) {
        let repo = spec
            .repositories
            .last()
            .cloned()
            .unwrap_or_else(|| "exotic".to_owned());

        // An index nested in an index.
        let a = self.image(spec, &repo, "nested-amd64", "amd64", false, &[]);
        let b = self.image(spec, &repo, "nested-arm64", "arm64", false, &[]);
        let inner = self.index(
            &repo,
            false,
            &[
                (a, json!({"architecture": "amd64", "os": "linux"})),
                (b, json!({"architecture": "arm64", "os": "linux"})),
            ],
        );
        let c = self.image(spec, &repo, "nested-s390x", "s390x", false, &[]);
        let outer = self.index(
            &repo,
            false,
            &[
                (inner, Value::Null),
                (c, json!({"architecture": "s390x", "os": "linux"})),
            ],
        );
        self.tag(&repo, "nested", &outer);

        // A foreign layer (not pushed, only referenced) and an empty layer.
        let foreign = Arc::new(Blob::fixed(
            b"foreign layer bytes that live elsewhere".to_vec(),
            DOCKER_FOREIGN_LAYER,
        ));
        self.corpus.foreign.push(foreign.digest.clone());
        let empty = Arc::new(Blob::fixed(Vec::new(), DOCKER_LAYER));
        let win = self.image(spec, &repo, "foreign", "amd64", true, &[foreign, empty]);
        self.tag(&repo, "foreign", &win);

        // An artifact about `subject`, with its own artifactType and an
        // empty config, found through the referrers tag schema.
        let subject = self.image(spec, &repo, "signed", "amd64", false, &[]);
        self.tag(&repo, "signed", &subject);
        let empty_config = Arc::new(Blob::fixed(b"{}".to_vec(), OCI_EMPTY));
        self.add_blob(&repo, &empty_config);
        let sbom = Arc::new(Blob::fixed(
            serde_json::to_vec(&json!({"sbom": "test", "subject": subject.digest}))
                .expect("JSON values serialize"),
            ARTIFACT_LAYER,
        ));
        self.add_blob(&repo, &sbom);
        let artifact = self.add_manifest(
            &repo,
            OCI_MANIFEST,
            &json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": ARTIFACT_TYPE,
                "config": empty_config.descriptor(),
                "layers": [sbom.descriptor()],
                "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.bytes.len()},
                "annotations": {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"},
            }),
        );
        let referrers = self.add_manifest(
            &repo,
            OCI_INDEX,
            &json!({
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [{
                    "mediaType": OCI_MANIFEST,
                    "digest": artifact.digest,
                    "size": artifact.bytes.len(),
                    "artifactType": ARTIFACT_TYPE,
                }],
            }),
        );
        self.tag(
            &repo,
            &format!("sha256-{}", subject.digest.hex()),
            &referrers,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_corpus_other_seed_other_corpus() {
        let spec = CorpusSpec::preset(Preset::Demo, 7);
        let a = Builder::new(&spec).build(&spec);
        let b = Builder::new(&spec).build(&spec);
        assert_eq!(a.tags, b.tags);
        let spec2 = CorpusSpec::preset(Preset::Demo, 8);
        let c = Builder::new(&spec2).build(&spec2);
        assert_ne!(a.tags[0].digest, c.tags[0].digest);
    }

    #[test]
    fn blob_chunks_match_digest_and_size() {
        let b = Blob::random(42, 3 * CHUNK as u64 + 17, OCI_LAYER);
        let mut v = crate::digest::Verifier::new(&b.digest, Some(b.size));
        for c in b.chunks() {
            v.update(&c).unwrap();
        }
        v.finish().unwrap();
    }

    #[test]
    fn test_preset_has_every_shape() {
        let spec = CorpusSpec {
            big_layer_bytes: (1024, 2048),
            ..CorpusSpec::preset(Preset::Test, 1)
        };
        let c = Builder::new(&spec).build(&spec);
        let types: HashSet<&str> = c
            .manifests
            .values()
            .flatten()
            .map(|m| m.media_type.as_str())
            .collect();
        for t in [
            DOCKER_MANIFEST,
            DOCKER_MANIFEST_LIST,
            OCI_MANIFEST,
            OCI_INDEX,
        ] {
            assert!(types.contains(t), "{t} missing");
        }
        assert!(c.tags.iter().any(|t| t.tag.starts_with("sha256-")));
        assert!(c.tags.iter().any(|t| t.repository == "team/app/web"));
        assert_eq!(c.foreign.len(), 1);
        let mut per_digest: BTreeMap<(&str, &Digest), usize> = BTreeMap::new();
        for t in &c.tags {
            *per_digest.entry((&t.repository, &t.digest)).or_default() += 1;
        }
        assert!(
            per_digest.values().any(|n| *n > 1),
            "no digest with two tags"
        );
    }
}
