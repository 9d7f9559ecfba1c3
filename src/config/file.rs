//! The YAML file as serde types: field names, units and defaults as the
//! operator writes them. `config/example.yaml` documents every key.
//!
//! Values a later check may reject are `Spanned`, so the error can name the
//! line and column of the offending value.

use std::path::PathBuf;

use serde::Deserialize;
use serde_saphyr::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Directory for georep's state; relative to the config file.
    pub state_dir: Spanned<PathBuf>,
    /// `one-way` (default: pushes go to `primary`) or `any-region` (every
    /// region accepts pushes; there is no `primary`).
    #[serde(default)]
    pub mode: Option<Spanned<String>>,
    /// The registry people push to (one-way mode).
    #[serde(default)]
    pub primary: Option<FileRegistry>,
    /// The replicas, one per region.
    pub regions: Spanned<Vec<FileRegistry>>,
    /// Any-region mode: how a tag pushed in two regions at once is decided.
    #[serde(default)]
    pub conflicts: Option<Spanned<FileConflicts>>,
    #[serde(default)]
    pub repositories: FileRepositories,
    #[serde(default)]
    pub concurrency: FileConcurrency,
    #[serde(default)]
    pub timeouts: FileTimeouts,
    /// How many times a transiently failing request is tried in all.
    #[serde(default)]
    pub max_attempts: Option<Spanned<u32>>,
    /// Rate limits (defaults for every registry, and a total).
    #[serde(default)]
    pub limits: FileLimits,
    /// The daemon's HTTP API (webhook included): `host:port`.
    #[serde(default)]
    pub listen: Option<Spanned<String>>,
    /// Seconds between full reconciles of the daemon; 0 turns polling off.
    #[serde(default)]
    pub poll_interval_secs: Option<Spanned<u64>>,
    /// Seconds between the daemon's audits of the regions; 0 turns them off.
    #[serde(default)]
    pub audit_interval_secs: Option<Spanned<u64>>,
    /// How long the daemon lets in-flight copies finish on shutdown.
    #[serde(default)]
    pub shutdown_grace_secs: Option<Spanned<u64>>,
    /// The longest wait between two tries of a failing work item.
    #[serde(default)]
    pub retry_max_secs: Option<Spanned<u64>>,
    /// Transient failures in a row after which an item is parked.
    #[serde(default)]
    pub park_after_attempts: Option<Spanned<u32>>,
    #[serde(default)]
    pub webhook: FileWebhook,
    #[serde(default)]
    pub api: FileApi,
    #[serde(default)]
    pub deletes: FileDeletes,
    /// Outgoing notifications.
    #[serde(default)]
    pub notify: Vec<FileNotify>,
    /// Several instances sharing the work through etcd.
    #[serde(default)]
    pub cluster: Option<Spanned<FileCluster>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCluster {
    pub etcd: Spanned<FileEtcd>,
    /// Every key georep writes in etcd starts with this.
    #[serde(default)]
    pub prefix: Option<Spanned<String>>,
    /// Unique per instance; default: the host name.
    #[serde(default)]
    pub instance_id: Option<Spanned<String>>,
    /// Where the other instances reach this one's API; `{instance_id}` is
    /// replaced.
    #[serde(default)]
    pub advertise_url: Option<Spanned<String>>,
    #[serde(default)]
    pub lease_ttl_secs: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEtcd {
    pub endpoints: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub username: Option<Spanned<String>>,
    #[serde(default)]
    pub password_env: Option<Spanned<String>>,
    #[serde(default)]
    pub password_file: Option<Spanned<PathBuf>>,
    #[serde(default)]
    pub tls: Option<Spanned<FileTls>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConflicts {
    /// Region names, the one that wins a tie first.
    #[serde(default)]
    pub order: Vec<Spanned<String>>,
    /// Pushes closer than this (in milliseconds, by the registries'
    /// clocks) are decided by `order`, not by time.
    #[serde(default)]
    pub skew_ms: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileWebhook {
    /// Largest notification body accepted, in bytes.
    #[serde(default)]
    pub max_body_bytes: Option<Spanned<usize>>,
    /// Credentials the registry must send; none means open.
    #[serde(default)]
    pub auth: Option<Spanned<FileHttpAuth>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileApi {
    /// Credentials a client of /v1/status and /metrics must send; none
    /// means open (the probes /healthz and /readyz always are).
    #[serde(default)]
    pub auth: Option<Spanned<FileHttpAuth>>,
}

/// Credentials a client of the daemon's HTTP API must send.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHttpAuth {
    /// `Authorization: Bearer <token>`, the token read from this variable.
    #[serde(default)]
    pub bearer_token_env: Option<Spanned<String>>,
    #[serde(default)]
    pub bearer_token_file: Option<Spanned<PathBuf>>,
    /// HTTP basic: this username and a password from `password_env` or
    /// `password_file`.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_env: Option<Spanned<String>>,
    #[serde(default)]
    pub password_file: Option<Spanned<PathBuf>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDeletes {
    /// `ignore` (default) or `propagate`.
    #[serde(default)]
    pub policy: Option<Spanned<String>>,
    #[serde(default)]
    pub max_per_hour: Option<Spanned<u32>>,
    /// Log what would be deleted, delete nothing.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileNotify {
    /// How logs, metrics and `georep notify test` call the target.
    #[serde(default)]
    pub name: Option<Spanned<String>>,
    pub url: Spanned<String>,
    /// Any of `replicated`, `complete`, `deleted`, `failed`.
    #[serde(default)]
    pub events: Vec<Spanned<String>>,
    /// repository[:tag] patterns (ACR's webhook scope).
    #[serde(default)]
    pub scope: Vec<Spanned<String>>,
    /// `georep` (default), `registry` or `acr`.
    #[serde(default)]
    pub format: Option<Spanned<String>>,
    /// A bearer token sent with each notification, from this variable.
    #[serde(default)]
    pub bearer_token_env: Option<Spanned<String>>,
    #[serde(default)]
    pub timeout_secs: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRegistry {
    pub name: Spanned<String>,
    pub url: Spanned<String>,
    #[serde(default)]
    pub credentials: Option<Spanned<FileCredentials>>,
    /// HTTP requests open to this registry at once.
    #[serde(default)]
    pub max_concurrent_requests: Option<Spanned<usize>>,
    /// Requests per second to this registry (overrides `limits`).
    #[serde(default)]
    pub max_requests_per_sec: Option<Spanned<u32>>,
    /// Bytes per second to or from this registry (overrides `limits`).
    #[serde(default)]
    pub max_bytes_per_sec: Option<Spanned<FileSize>>,
    /// Certificates for an https registry: a CA bundle, a client identity.
    #[serde(default)]
    pub tls: Option<Spanned<FileTls>>,
    /// Allow plain http to a host that is not loopback, and for https skip
    /// certificate verification.
    #[serde(default)]
    pub insecure: Option<Spanned<bool>>,
    /// Any-region mode: whether people push to this region (default true).
    #[serde(default)]
    pub accepts_pushes: Option<Spanned<bool>>,
    /// Any-region mode: the credentials this region's notifications must
    /// carry (instead of `webhook.auth`), so no other sender can speak for
    /// it.
    #[serde(default)]
    pub webhook_auth: Option<Spanned<FileHttpAuth>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTls {
    /// PEM certificates trusted for this registry besides the system roots.
    #[serde(default)]
    pub ca_file: Option<Spanned<PathBuf>>,
    /// PEM client certificate (chain) for mutual TLS.
    #[serde(default)]
    pub client_cert_file: Option<Spanned<PathBuf>>,
    /// PEM private key (PKCS#8, RSA or EC) of that certificate.
    #[serde(default)]
    pub client_key_file: Option<Spanned<PathBuf>>,
}

/// A size: a number of bytes, or text such as `50MiB` or `1GB`.
#[derive(Debug, Clone)]
pub enum FileSize {
    Bytes(u64),
    /// Text, or a number that is not a whole count of bytes (`-5`, `1.5`):
    /// checked, and refused in plain words, by the loader.
    Text(String),
}

impl<'de> Deserialize<'de> for FileSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = FileSize;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a size: a number of bytes, or text such as 50MiB or 1GB")
            }
            fn visit_u64<E>(self, v: u64) -> Result<FileSize, E> {
                Ok(FileSize::Bytes(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<FileSize, E> {
                Ok(
                    u64::try_from(v)
                        .map_or_else(|_| FileSize::Text(v.to_string()), FileSize::Bytes),
                )
            }
            fn visit_f64<E>(self, v: f64) -> Result<FileSize, E> {
                Ok(FileSize::Text(v.to_string()))
            }
            fn visit_str<E>(self, v: &str) -> Result<FileSize, E> {
                Ok(FileSize::Text(v.to_owned()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    /// Default requests per second for every registry.
    #[serde(default)]
    pub max_requests_per_sec: Option<Spanned<u32>>,
    /// Default bytes per second for every registry.
    #[serde(default)]
    pub max_bytes_per_sec: Option<Spanned<FileSize>>,
    /// All regions' uploads together (one shared link).
    #[serde(default)]
    pub total_max_bytes_per_sec: Option<Spanned<FileSize>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCredentials {
    /// HTTP basic (to the registry or its token service): with a password
    /// from `password_env` or `password_file`.
    #[serde(default)]
    pub username: Option<Spanned<String>>,
    /// Name of an environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<Spanned<String>>,
    /// A file whose content (trailing newline removed) is the password.
    #[serde(default)]
    pub password_file: Option<Spanned<PathBuf>>,
    /// A registry token sent as `Authorization: Bearer`, from a variable.
    #[serde(default)]
    pub token_env: Option<Spanned<String>>,
    #[serde(default)]
    pub token_file: Option<Spanned<PathBuf>>,
    /// An OAuth2 refresh token, exchanged at the token service.
    #[serde(default)]
    pub identity_token_env: Option<Spanned<String>>,
    #[serde(default)]
    pub identity_token_file: Option<Spanned<PathBuf>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRepositories {
    /// Globs; `*` stays within one path segment, `**` crosses them.
    #[serde(default)]
    pub include: Vec<Spanned<String>>,
    #[serde(default)]
    pub exclude: Vec<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConcurrency {
    pub max_concurrent_images: Option<Spanned<usize>>,
    pub max_concurrent_blobs: Option<Spanned<usize>>,
    pub max_concurrent_blobs_per_region: Option<Spanned<usize>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTimeouts {
    pub connect_secs: Option<Spanned<u64>>,
    pub request_secs: Option<Spanned<u64>>,
    pub stall_secs: Option<Spanned<u64>>,
}
