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
    /// The registry people push to.
    pub primary: FileRegistry,
    /// The replicas, one per region.
    pub regions: Spanned<Vec<FileRegistry>>,
    #[serde(default)]
    pub repositories: FileRepositories,
    #[serde(default)]
    pub concurrency: FileConcurrency,
    #[serde(default)]
    pub timeouts: FileTimeouts,
    /// How many times a transiently failing request is tried in all.
    #[serde(default)]
    pub max_attempts: Option<Spanned<u32>>,
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCredentials {
    pub username: String,
    /// Name of an environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<Spanned<String>>,
    /// A file whose content (trailing newline removed) is the password.
    #[serde(default)]
    pub password_file: Option<Spanned<PathBuf>>,
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
