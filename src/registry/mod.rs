//! An HTTP client for one registry speaking the OCI distribution API.
//!
//! Written on reqwest rather than on oci-client's `Client`: the copy path
//! must stream blobs straight from one registry into others (oci-client
//! buffers whole blobs on push), mount with the source repository's pull
//! scope, ask the catalog scope for `_catalog`, and retry with knowledge of
//! which failures are transient. oci-client still supplies the media-type
//! constants and reference grammar ([`names`]).
//!
//! Two concepts, in their files: the transport ([`transport`]: permits,
//! rate limits, breaker, auth, AIMD, retries — every request goes through
//! one attempt function there) and the distribution API on top of it
//! ([`listing`], [`manifests`], [`blobs`]), with [`body`] reading answers.

pub mod aimd;
pub mod auth;
mod blobs;
pub(crate) mod body;
pub mod breaker;
pub mod check;
pub mod error;
pub mod limit;
mod listing;
pub mod manifest;
mod manifests;
pub mod names;
pub mod retry;
pub mod stats;
mod transport;

use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{RegistryConfig, Timeouts};
use crate::digest::Digest;
use auth::Auth;
pub use auth::Scope;
use breaker::Breaker;
pub use error::RegistryError;
pub use manifest::Manifest;
use retry::Backoff;
pub use stats::{Op, Stats, StatsSnapshot};

pub use listing::LIST_PAGE_SIZE;
pub use transport::Answer;

/// One registry: its name, URL, credentials, limits and counters.
pub struct Registry {
    name: String,
    base: url::Url,
    display: String,
    http: reqwest::Client,
    auth: Auth,
    permits: Arc<Semaphore>,
    breaker: Breaker,
    backoff: Backoff,
    timeouts: Timeouts,
    stats: Arc<Stats>,
    limits: Arc<limit::Limits>,
    /// Adapts the open-request limit to `429`s.
    aimd: aimd::Aimd,
    /// One of the regions (not the primary), for messages.
    region: bool,
    /// The `User-Agent` of every request, when not the client's own (a
    /// cluster member names itself, so a registry's log tells who wrote).
    agent: Option<reqwest::header::HeaderValue>,
}

/// A blob being downloaded: a stream of chunks, holding its request permit
/// until dropped.
pub struct BlobStream {
    pub size: Option<u64>,
    pub url: url::Url,
    stream: std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, RegistryError>> + Send>>,
    _permit: OwnedSemaphorePermit,
}

impl BlobStream {
    pub async fn next(&mut self) -> Option<Result<Bytes, RegistryError>> {
        self.stream.next().await
    }
}

/// An open upload session (the `Location` of a `POST .../blobs/uploads/`).
#[derive(Clone, Debug)]
pub struct UploadSession {
    pub repository: String,
    pub url: url::Url,
}

/// What a cross-repository mount did.
#[derive(Debug)]
pub enum Mount {
    /// The blob is now in the target repository.
    Mounted,
    /// The registry did not mount and opened an upload session instead,
    /// which must be used or cancelled.
    Session(UploadSession),
}

/// The head of a manifest: what `HEAD` tells without the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestHead {
    pub digest: Digest,
    pub media_type: Option<String>,
    pub size: Option<u64>,
}

/// The client shared by every registry without TLS settings of its own
/// (see [`crate::http`]).
pub fn http_client(timeouts: &Timeouts) -> reqwest::Client {
    crate::http::shared_client(timeouts.connect)
}

impl Registry {
    pub fn new(
        config: &RegistryConfig,
        http: reqwest::Client,
        timeouts: Timeouts,
        max_attempts: u32,
    ) -> Self {
        let stats = Arc::new(Stats::default());
        let display = config.display_url();
        // A registry with TLS settings has the client the config loader
        // built and checked for it.
        let http = config.client.clone().unwrap_or(http);
        if config.insecure && config.url.scheme() == "https" {
            let url = &display;
            tracing::warn!(registry = %config.name, %url, "insecure: true: the registry's certificate is not verified");
        }
        let permits = Arc::new(Semaphore::new(config.max_concurrent_requests));
        Registry {
            aimd: aimd::Aimd::new(permits.clone(), config.max_concurrent_requests),
            name: config.name.clone(),
            base: config.url.clone(),
            breaker: Breaker::new(&config.name, &display),
            display,
            http,
            auth: Auth::new(
                config.credentials.clone(),
                config.credential_helper.clone(),
                stats.clone(),
            ),
            permits,
            backoff: Backoff::new(max_attempts),
            timeouts,
            stats,
            limits: Arc::new(limit::Limits::new(
                config.max_requests_per_sec,
                config.max_bytes_per_sec,
            )),
            region: false,
            agent: None,
        }
    }

    /// Sends `agent` as every request's `User-Agent` (it should start with
    /// `georep/`: that is how georep knows its own writes in events).
    pub fn with_agent(mut self, agent: &str) -> Self {
        self.agent = reqwest::header::HeaderValue::from_str(agent).ok();
        self
    }

    /// This registry is one of the regions: messages call it `region NAME`.
    pub fn as_region(mut self) -> Self {
        self.region = true;
        self
    }

    pub fn is_region(&self) -> bool {
        self.region
    }

    /// Shares `limiter` (a cap on several registries together) with this
    /// registry's own byte limit.
    pub fn with_shared_bytes(mut self, limiter: Option<Arc<limit::ByteLimiter>>) -> Self {
        // Called right after `new`, before the limits are shared with any
        // stream, so the `Arc` is still unique.
        if let Some(l) = Arc::get_mut(&mut self.limits) {
            l.set_shared_bytes(limiter);
        }
        self
    }

    /// The rate limits on this registry.
    pub fn limits(&self) -> &Arc<limit::Limits> {
        &self.limits
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The base URL for messages (`http://127.0.0.1:5001`).
    pub fn url(&self) -> &str {
        &self.display
    }

    /// `host:port` as container tools write it in references.
    pub fn host(&self) -> String {
        let host = self.base.host_str().unwrap_or("");
        match self.base.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        }
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    pub fn is_unreachable(&self) -> bool {
        self.breaker.is_down()
    }

    fn endpoint(&self, path: &str) -> url::Url {
        // `base` always ends with '/', and callers pass validated names, so
        // joining a relative path cannot fail or escape the base.
        self.base.join(path).unwrap_or_else(|_| self.base.clone())
    }
}
