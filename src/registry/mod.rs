//! An HTTP client for one registry speaking the OCI distribution API.
//!
//! Written on reqwest rather than on oci-client's `Client`: the copy path
//! must stream blobs straight from one registry into others (oci-client
//! buffers whole blobs on push), mount with the source repository's pull
//! scope, ask the catalog scope for `_catalog`, and retry with knowledge of
//! which failures are transient. oci-client still supplies the media-type
//! constants and reference grammar ([`names`]).
//!
//! Every request goes through [`Registry::send`], which holds a permit of the
//! registry's concurrency limit, adds authentication, consults the circuit
//! breaker, retries transient failures with backoff (honouring
//! `Retry-After`), and counts what it did.

pub mod aimd;
pub mod auth;
pub mod breaker;
pub mod error;
pub mod limit;
pub mod manifest;
pub mod names;
pub mod retry;
pub mod stats;

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use reqwest::header::{
    ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue, LINK, LOCATION, RETRY_AFTER,
    WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{RegistryConfig, Timeouts};
use crate::digest::Digest;
use auth::Auth;
pub use auth::Scope;
use breaker::Breaker;
pub use error::RegistryError;
use error::display_url;
pub use manifest::Manifest;
use retry::Backoff;
pub use stats::{Op, Stats, StatsSnapshot};

/// Page size for `_catalog` and `tags/list`; the distribution registry
/// rejects `n` above 1000.
pub const LIST_PAGE_SIZE: usize = 1000;
/// A listing longer than this many pages is assumed to loop.
const MAX_LIST_PAGES: usize = 100_000;
/// Error bodies are read up to this size for their `errors[].code`.
const MAX_ERROR_BODY_BYTES: usize = 64 << 10;
/// Listing pages larger than this are refused.
const MAX_LIST_BODY_BYTES: usize = 16 << 20;

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
}

/// Which deadline a request gets.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Timing {
    /// The whole exchange, body included, within the request timeout.
    WholeRequest,
    /// Only the response head within the request timeout; the body streams.
    StreamedBody,
}

/// A response, with the concurrency permit it still occupies.
pub struct Answer {
    pub resp: reqwest::Response,
    permit: OwnedSemaphorePermit,
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
        }
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

    /// Lowers the open-request limit on a `429`, raises it slowly otherwise.
    fn adapt(&self, status: StatusCode) {
        if status == StatusCode::TOO_MANY_REQUESTS {
            if let Some(n) = self.aimd.refused() {
                tracing::info!(registry = %self.name, limit = n, "refused for load (429): fewer requests at once");
            }
        } else if let Some(n) = self.aimd.answered() {
            tracing::debug!(registry = %self.name, limit = n, "more requests at once");
        }
    }

    /// A `429` or `503` with `Retry-After` pauses every request to this
    /// registry for that long (capped), not just the one retried.
    fn pause_if_asked(&self, e: &RegistryError) {
        if matches!(
            e.status(),
            Some(StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE)
        ) && let Some(ra) = e.retry_after()
        {
            let ra = ra.min(retry::MAX_RETRY_AFTER);
            tracing::info!(registry = %self.name, pause_ms = ra.as_millis() as u64, "the registry asked for a pause");
            self.limits.pause_for(ra);
        }
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

    /// Sends a request that can be repeated, retrying transient failures and
    /// re-authenticating once on `401`. Any final status is returned; the
    /// caller decides which ones are success.
    pub async fn send(
        &self,
        op: Op,
        method: Method,
        url: url::Url,
        scope: &Scope,
        headers: HeaderMap,
        body: Option<Bytes>,
    ) -> Result<Answer, RegistryError> {
        self.send_with(op, method, url, scope, headers, body, Timing::WholeRequest)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn send_with(
        &self,
        op: Op,
        method: Method,
        url: url::Url,
        scope: &Scope,
        headers: HeaderMap,
        body: Option<Bytes>,
        timing: Timing,
    ) -> Result<Answer, RegistryError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            // The semaphore is never closed.
            .expect("registry semaphore closed");
        let mut attempt = 0u32;
        let mut reauthenticated = false;
        loop {
            attempt += 1;
            self.limits.request().await;
            self.breaker.check()?;
            let authorization = self
                .auth
                .header(&self.http, scope, self.timeouts.request)
                .await?;
            let mut rb = self
                .http
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if timing == Timing::WholeRequest {
                rb = rb.timeout(self.timeouts.request);
            }
            if let Some(a) = authorization {
                rb = rb.header(reqwest::header::AUTHORIZATION, a);
            }
            if let Some(b) = &body {
                rb = rb.body(b.clone());
            }
            self.stats.request(op);
            // A streamed body has no overall deadline (stalls are detected
            // per chunk by the reader); only the wait for the head has one.
            let sent = match tokio::time::timeout(self.timeouts.request, rb.send()).await {
                Ok(r) => r,
                Err(_) => {
                    let err = RegistryError::Stalled {
                        method: method.clone(),
                        url: display_url(&url),
                        after: self.timeouts.request,
                    };
                    self.breaker.record_failure(&err);
                    if attempt >= self.backoff.max_attempts {
                        return Err(err);
                    }
                    tokio::time::sleep(self.backoff.delay(attempt, None)).await;
                    continue;
                }
            };
            let failure = match sent {
                Err(e) => {
                    let err = RegistryError::transport(method.clone(), &url, e);
                    self.breaker.record_failure(&err);
                    err
                }
                Ok(resp) => {
                    self.breaker.record_success();
                    let status = resp.status();
                    self.adapt(status);
                    if status == StatusCode::UNAUTHORIZED && !reauthenticated {
                        let challenge = resp
                            .headers()
                            .get(WWW_AUTHENTICATE)
                            .and_then(|v| v.to_str().ok());
                        if self.auth.on_unauthorized(challenge, scope) {
                            reauthenticated = true;
                            attempt -= 1;
                            continue;
                        }
                    }
                    if !error::is_transient_status(status) {
                        return Ok(Answer { resp, permit });
                    }
                    status_error(method.clone(), &url, resp).await
                }
            };
            self.pause_if_asked(&failure);
            if !failure.is_transient() || attempt >= self.backoff.max_attempts {
                return Err(failure);
            }
            let delay = self.backoff.delay(attempt, failure.retry_after());
            tracing::debug!(
                registry = %self.name,
                attempt,
                delay_ms = delay.as_millis() as u64,
                "retrying after transient failure: {failure:#}"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// `GET /v2/`: is this a registry, and can we authenticate?
    pub async fn ping(&self) -> Result<(), RegistryError> {
        let url = self.endpoint("v2/");
        let a = self
            .send(
                Op::Ping,
                Method::GET,
                url,
                &Scope::none(),
                HeaderMap::new(),
                None,
            )
            .await?;
        // With bearer auth `/v2/` answers 401 even with a valid scope-less
        // token on some registries; reaching it at all is what counts.
        if a.resp.status().is_success() || a.resp.status() == StatusCode::UNAUTHORIZED {
            Ok(())
        } else {
            Err(a.into_error(Method::GET).await)
        }
    }

    /// Every repository in the catalog, following `Link` pagination.
    pub async fn catalog(&self) -> Result<Vec<String>, RegistryError> {
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            repositories: Option<Vec<String>>,
        }
        let first = self.endpoint(&format!("v2/_catalog?n={LIST_PAGE_SIZE}"));
        self.paginate(Op::Catalog, first, &Scope::catalog(), |b| {
            serde_json::from_slice::<Page>(b).map(|p| p.repositories.unwrap_or_default())
        })
        .await
    }

    /// Every tag of `repository`, or `None` if the registry does not know
    /// the repository (`404`).
    pub async fn tags(
        &self,
        repository: &str,
        scope: &Scope,
    ) -> Result<Option<Vec<String>>, RegistryError> {
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let first = self.endpoint(&format!("v2/{repository}/tags/list?n={LIST_PAGE_SIZE}"));
        match self
            .paginate(Op::TagsList, first, scope, |b| {
                serde_json::from_slice::<Page>(b).map(|p| p.tags.unwrap_or_default())
            })
            .await
        {
            Ok(tags) => Ok(Some(tags)),
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn paginate(
        &self,
        op: Op,
        first: url::Url,
        scope: &Scope,
        parse: impl Fn(&[u8]) -> Result<Vec<String>, serde_json::Error>,
    ) -> Result<Vec<String>, RegistryError> {
        let mut out = Vec::new();
        let mut next = Some(first);
        let mut pages = 0;
        while let Some(url) = next.take() {
            pages += 1;
            if pages > MAX_LIST_PAGES {
                return Err(RegistryError::Protocol {
                    method: Method::GET,
                    url: display_url(&url),
                    reason: format!("listing did not end after {MAX_LIST_PAGES} pages"),
                });
            }
            let (link, items) = self
                .with_body_retries(&url, || async {
                    let a = self
                        .send(op, Method::GET, url.clone(), scope, HeaderMap::new(), None)
                        .await?;
                    if a.resp.status() != StatusCode::OK {
                        return Err(BodyError::Answer(a.into_error(Method::GET).await));
                    }
                    let link = a
                        .resp
                        .headers()
                        .get(LINK)
                        .and_then(|v| v.to_str().ok())
                        .and_then(next_link)
                        .and_then(|l| url.join(&l).ok());
                    let body = read_capped(a.resp, MAX_LIST_BODY_BYTES)
                        .await
                        .map_err(|e| {
                            BodyError::Body(e.into_registry(Method::GET, &url, "the listing page"))
                        })?;
                    let items = parse(&body).map_err(|e| {
                        BodyError::Garbled(RegistryError::Protocol {
                            method: Method::GET,
                            url: display_url(&url),
                            reason: format!("listing is not valid JSON: {e}"),
                        })
                    })?;
                    Ok((link, items))
                })
                .await?;
            let empty = items.is_empty();
            out.extend(items);
            // A registry that sends a `next` link with an empty page would
            // loop forever; an empty page ends the listing.
            if !empty && link.as_ref() != Some(&url) {
                next = link;
            }
        }
        Ok(out)
    }

    /// Runs `once` (a request whose body is read after `send` answered)
    /// until it succeeds, fails for a reason other than its body, or has
    /// had `max_attempts`: a body that breaks, stalls, arrives corrupt or
    /// makes no sense is asked for again, as `send` does for failures
    /// before the answer.
    async fn with_body_retries<T, F, Fut>(
        &self,
        url: &url::Url,
        once: F,
    ) -> Result<T, RegistryError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, BodyError>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (e, worth_retrying) = match once().await {
                Ok(v) => return Ok(v),
                Err(BodyError::Answer(e)) => return Err(e),
                Err(BodyError::Body(e)) => {
                    let transient = e.is_transient();
                    (e, transient)
                }
                Err(BodyError::Garbled(e)) => (e, true),
            };
            if !worth_retrying || attempt >= self.backoff.max_attempts {
                return Err(e);
            }
            let delay = self.backoff.delay(attempt, None);
            tracing::debug!(
                registry = %self.name,
                url = %display_url(url),
                attempt,
                delay_ms = delay.as_millis() as u64,
                "reading the body failed, asking again: {e}"
            );
            tokio::time::sleep(delay).await;
        }
    }

    fn manifest_url(&self, repository: &str, reference: &str) -> url::Url {
        self.endpoint(&format!("v2/{repository}/manifests/{reference}"))
    }

    fn accept_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, HeaderValue::from_static(manifest::ACCEPT));
        h
    }

    /// `HEAD` a manifest by tag or digest; `None` if absent.
    pub async fn head_manifest(
        &self,
        repository: &str,
        reference: &str,
        scope: &Scope,
    ) -> Result<Option<ManifestHead>, RegistryError> {
        let url = self.manifest_url(repository, reference);
        let a = self
            .send(
                Op::ManifestHead,
                Method::HEAD,
                url.clone(),
                scope,
                Self::accept_headers(),
                None,
            )
            .await?;
        match a.resp.status() {
            StatusCode::OK => {
                let h = a.resp.headers();
                let digest = h
                    .get("docker-content-digest")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<Digest>().ok());
                let digest = match digest {
                    Some(d) => d,
                    // Registries that omit the header: the reference is
                    // the digest, or a GET must tell.
                    None => match reference.parse::<Digest>() {
                        Ok(d) => d,
                        Err(_) => {
                            drop(a);
                            let m = self.get_manifest(repository, reference, scope).await?;
                            return Ok(m.map(|m| ManifestHead {
                                size: Some(m.bytes.len() as u64),
                                media_type: Some(m.media_type),
                                digest: m.digest,
                            }));
                        }
                    },
                };
                Ok(Some(ManifestHead {
                    digest,
                    media_type: h
                        .get(CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned),
                    size: h
                        .get(CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok()),
                }))
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(a.into_error(Method::HEAD).await),
        }
    }

    /// `GET` a manifest by tag or digest, verified: by digest, the bytes must
    /// hash to it; by tag, they must hash to the `Docker-Content-Digest`.
    pub async fn get_manifest(
        &self,
        repository: &str,
        reference: &str,
        scope: &Scope,
    ) -> Result<Option<Manifest>, RegistryError> {
        let url = self.manifest_url(repository, reference);
        self.with_body_retries(&url, || self.get_manifest_once(&url, reference, scope))
            .await
    }

    /// One `GET` of a manifest; errors after the answer's head (reading
    /// or verifying the body) are [`BodyError::Body`].
    async fn get_manifest_once(
        &self,
        url: &url::Url,
        reference: &str,
        scope: &Scope,
    ) -> Result<Option<Manifest>, BodyError> {
        let a = self
            .send(
                Op::ManifestGet,
                Method::GET,
                url.clone(),
                scope,
                Self::accept_headers(),
                None,
            )
            .await?;
        match a.resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            _ => return Err(BodyError::Answer(a.into_error(Method::GET).await)),
        }
        let headers = a.resp.headers().clone();
        let bytes = read_capped(a.resp, manifest::MAX_MANIFEST_BYTES)
            .await
            .map_err(|e| BodyError::Body(e.into_registry(Method::GET, url, "the manifest")))?;
        self.stats.read(bytes.len() as u64);
        let claimed = reference.parse::<Digest>().ok().or_else(|| {
            headers
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
        });
        let digest = match claimed {
            Some(expected) => {
                let mut v = crate::digest::Verifier::new(&expected, None);
                let verified = v.update(&bytes).and_then(|()| v.finish());
                if let Err(mismatch) = verified {
                    return Err(BodyError::Body(RegistryError::Corrupt {
                        url: display_url(url),
                        digest: expected,
                        mismatch,
                    }));
                }
                expected
            }
            None => Digest::sha256_of(&bytes),
        };
        let media_type = Manifest::resolve_media_type(
            headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()),
            &bytes,
        );
        Ok(Some(Manifest {
            bytes,
            media_type,
            digest,
        }))
    }

    /// `PUT` a manifest's exact bytes under `reference` (a tag or its digest).
    pub async fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        manifest: &Manifest,
    ) -> Result<(), RegistryError> {
        let url = self.manifest_url(repository, reference);
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_str(&manifest.media_type).map_err(|_| RegistryError::Protocol {
                method: Method::PUT,
                url: display_url(&url),
                reason: format!("media type {:?} is not a valid header", manifest.media_type),
            })?,
        );
        let a = self
            .send(
                Op::ManifestPut,
                Method::PUT,
                url.clone(),
                &Scope::push(repository),
                h,
                Some(manifest.bytes.clone()),
            )
            .await?;
        if !a.resp.status().is_success() {
            return Err(a.into_error(Method::PUT).await);
        }
        self.stats.written(manifest.bytes.len() as u64);
        let echoed = a
            .resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok());
        if let Some(d) = echoed
            && d != manifest.digest
        {
            return Err(RegistryError::Protocol {
                method: Method::PUT,
                url: display_url(&url),
                reason: format!(
                    "registry stored the manifest as {d}, not {}: it altered the bytes",
                    manifest.digest
                ),
            });
        }
        Ok(())
    }

    /// `DELETE` a manifest by digest (and with it every tag pointing at
    /// it) or a tag alone (where the registry supports it). `false` if the
    /// registry did not have it.
    pub async fn delete_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<bool, RegistryError> {
        let url = self.manifest_url(repository, reference);
        self.delete(Op::ManifestDelete, url, repository).await
    }

    /// `DELETE` a blob from a repository (the registry unlinks it; its
    /// garbage collection frees the space). `false` if it was not there.
    /// Registries with deletes disabled answer 405, an error here.
    pub async fn delete_blob(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        let url = self.blob_url(repository, digest);
        self.delete(Op::BlobDelete, url, repository).await
    }

    async fn delete(&self, op: Op, url: url::Url, repository: &str) -> Result<bool, RegistryError> {
        let a = self
            .send(
                op,
                Method::DELETE,
                url,
                &Scope::delete(repository),
                HeaderMap::new(),
                None,
            )
            .await?;
        match a.resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(a.into_error(Method::DELETE).await),
        }
    }

    fn blob_url(&self, repository: &str, digest: &Digest) -> url::Url {
        self.endpoint(&format!("v2/{repository}/blobs/{digest}"))
    }

    /// `HEAD` a blob; its size if present.
    pub async fn head_blob(
        &self,
        repository: &str,
        digest: &Digest,
        scope: &Scope,
    ) -> Result<Option<u64>, RegistryError> {
        let url = self.blob_url(repository, digest);
        let a = self
            .send(
                Op::BlobHead,
                Method::HEAD,
                url,
                scope,
                HeaderMap::new(),
                None,
            )
            .await?;
        match a.resp.status() {
            StatusCode::OK => Ok(Some(
                a.resp
                    .headers()
                    .get(CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            )),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(a.into_error(Method::HEAD).await),
        }
    }

    /// Starts streaming a blob. Chunks come as the network delivers them.
    pub async fn get_blob(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<BlobStream, RegistryError> {
        let url = self.blob_url(repository, digest);
        // No whole-request timeout on a stream: stalls are detected by the
        // reader (per chunk), so a large blob on a slow link is not cut off.
        let a = self
            .send_with(
                Op::BlobGet,
                Method::GET,
                url.clone(),
                &Scope::pull(repository),
                HeaderMap::new(),
                None,
                Timing::StreamedBody,
            )
            .await?;
        if a.resp.status() != StatusCode::OK {
            return Err(a.into_error(Method::GET).await);
        }
        let size = a.resp.content_length();
        let stats = self.stats.clone();
        let err_url = url.clone();
        let stream = a
            .resp
            .bytes_stream()
            .map_err(move |e| RegistryError::transport(Method::GET, &err_url, e))
            .inspect_ok(move |b| stats.read(b.len() as u64));
        // Reads are metered as they arrive: the reader waits, TCP
        // backpressure slows the sender.
        let stream: std::pin::Pin<Box<dyn Stream<Item = _> + Send>> = if self.limits.meters_bytes()
        {
            let limits = self.limits.clone();
            Box::pin(stream.and_then(move |b| {
                let limits = limits.clone();
                async move {
                    limits.bytes(b.len()).await;
                    Ok(b)
                }
            }))
        } else {
            Box::pin(stream)
        };
        Ok(BlobStream {
            size,
            url,
            stream,
            _permit: a.permit,
        })
    }

    fn uploads_url(&self, repository: &str) -> url::Url {
        self.endpoint(&format!("v2/{repository}/blobs/uploads/"))
    }

    fn session_from(
        &self,
        repository: &str,
        request_url: &url::Url,
        resp: &reqwest::Response,
    ) -> Result<UploadSession, RegistryError> {
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::Protocol {
                method: Method::POST,
                url: display_url(request_url),
                reason: "upload session answer has no Location header".to_owned(),
            })?;
        let url = request_url
            .join(location)
            .map_err(|e| RegistryError::Protocol {
                method: Method::POST,
                url: display_url(request_url),
                reason: format!("upload Location {location:?} is not a URL: {e}"),
            })?;
        Ok(UploadSession {
            repository: repository.to_owned(),
            url,
        })
    }

    /// Opens an upload session in `repository`.
    pub async fn start_upload(&self, repository: &str) -> Result<UploadSession, RegistryError> {
        let url = self.uploads_url(repository);
        let mut h = HeaderMap::new();
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        let a = self
            .send(
                Op::UploadStart,
                Method::POST,
                url.clone(),
                &Scope::push(repository),
                h,
                None,
            )
            .await?;
        if a.resp.status() != StatusCode::ACCEPTED {
            return Err(a.into_error(Method::POST).await);
        }
        self.session_from(repository, &url, &a.resp)
    }

    /// Asks the registry to mount `digest` from `from` into `repository`.
    pub async fn mount_blob(
        &self,
        repository: &str,
        digest: &Digest,
        from: &str,
    ) -> Result<Mount, RegistryError> {
        let mut url = self.uploads_url(repository);
        url.query_pairs_mut()
            .append_pair("mount", digest.as_str())
            .append_pair("from", from);
        let mut h = HeaderMap::new();
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        let a = self
            .send(
                Op::BlobMount,
                Method::POST,
                url.clone(),
                &Scope::mount(repository, from),
                h,
                None,
            )
            .await?;
        match a.resp.status() {
            StatusCode::CREATED => Ok(Mount::Mounted),
            StatusCode::ACCEPTED => Ok(Mount::Session(
                self.session_from(repository, &url, &a.resp)?,
            )),
            _ => Err(a.into_error(Method::POST).await),
        }
    }

    /// Completes `session` with one streaming `PUT` of the whole blob. The
    /// body is not retried here (it is a one-shot stream): the caller opens a
    /// new session and reads again.
    pub async fn put_upload(
        &self,
        session: &UploadSession,
        digest: &Digest,
        size: u64,
        body: reqwest::Body,
    ) -> Result<(), RegistryError> {
        let _permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("registry semaphore closed");
        self.limits.request().await;
        self.breaker.check()?;
        let mut url = session.url.clone();
        url.query_pairs_mut().append_pair("digest", digest.as_str());
        let scope = Scope::push(&session.repository);
        let authorization = self
            .auth
            .header(&self.http, &scope, self.timeouts.request)
            .await?;
        let mut rb = self
            .http
            .put(url.clone())
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, size)
            .body(body);
        if let Some(a) = authorization {
            rb = rb.header(reqwest::header::AUTHORIZATION, a);
        }
        self.stats.request(Op::UploadPut);
        let resp = rb.send().await.map_err(|e| {
            let err = RegistryError::transport(Method::PUT, &url, e);
            self.breaker.record_failure(&err);
            err
        })?;
        self.breaker.record_success();
        let status = resp.status();
        self.adapt(status);
        if status == StatusCode::CREATED || status == StatusCode::NO_CONTENT {
            self.stats.written(size);
            Ok(())
        } else {
            if status == StatusCode::UNAUTHORIZED {
                let challenge = resp
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok());
                self.auth.on_unauthorized(challenge, &scope);
            }
            let e = status_error(Method::PUT, &url, resp).await;
            self.pause_if_asked(&e);
            Err(e)
        }
    }

    /// Cancels an unused upload session; failures are only logged (the
    /// registry expires sessions by itself).
    pub async fn cancel_upload(&self, session: &UploadSession) {
        let r = self
            .send(
                Op::UploadCancel,
                Method::DELETE,
                session.url.clone(),
                &Scope::push(&session.repository),
                HeaderMap::new(),
                None,
            )
            .await;
        if let Err(e) = r {
            tracing::debug!(registry = %self.name, "cancelling an upload session failed: {e:#}");
        }
    }
}

impl Answer {
    /// Turns an unwanted answer into an error carrying the registry's code.
    pub async fn into_error(self, method: Method) -> RegistryError {
        let url = self.resp.url().clone();
        status_error(method, &url, self.resp).await
    }
}

async fn status_error(method: Method, url: &url::Url, resp: reqwest::Response) -> RegistryError {
    #[derive(serde::Deserialize)]
    struct Errors {
        #[serde(default)]
        errors: Vec<ErrorItem>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorItem {
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        message: Option<String>,
    }
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry::parse_retry_after(v, SystemTime::now()));
    let body = read_limited(resp, MAX_ERROR_BODY_BYTES)
        .await
        .unwrap_or_default();
    let (code, message) = serde_json::from_slice::<Errors>(&body)
        .ok()
        .and_then(|e| e.errors.into_iter().next())
        .map(|e| (e.code, e.message))
        .unwrap_or_default();
    RegistryError::Status {
        method,
        url: display_url(url),
        status,
        code,
        message,
        retry_after,
    }
}

/// Why a body that must be whole was not read.
pub(crate) enum ReadError {
    Transport(reqwest::Error),
    /// More than the reader takes: refused, not truncated.
    TooLarge {
        max: usize,
    },
}

/// Reads a whole body that must be complete (a manifest, a listing page, a
/// token answer): more than `max` bytes is an error, never a truncation.
pub(crate) async fn read_capped(resp: reqwest::Response, max: usize) -> Result<Bytes, ReadError> {
    if resp.content_length().is_some_and(|len| len > max as u64) {
        // Read nothing: dropping the answer closes it.
        return Err(ReadError::TooLarge { max });
    }
    let mut out = bytes::BytesMut::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(ReadError::Transport)?;
        if out.len() + chunk.len() > max {
            return Err(ReadError::TooLarge { max });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

impl ReadError {
    /// As a registry error for `method url`: a transport failure (worth
    /// retrying), or a protocol error naming the limit.
    fn into_registry(self, method: Method, url: &url::Url, what: &str) -> RegistryError {
        match self {
            ReadError::Transport(e) => RegistryError::transport(method, url, e),
            ReadError::TooLarge { max } => RegistryError::Protocol {
                method,
                url: display_url(url),
                reason: format!("{what} is larger than {max} bytes; refused"),
            },
        }
    }
}

/// Reads at most `max` bytes of a body whose end does not matter (an
/// error message): the rest is dropped.
pub(crate) async fn read_limited(
    resp: reqwest::Response,
    max: usize,
) -> Result<Bytes, reqwest::Error> {
    if let Some(len) = resp.content_length()
        && len as usize > max
    {
        // Read nothing: the body is not wanted. Dropping closes it.
        return Ok(Bytes::new());
    }
    let mut out = bytes::BytesMut::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if out.len() + chunk.len() > max {
            break;
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

/// How a request with a body to read failed.
enum BodyError {
    /// Before or with the answer's head (`send` retried what it could).
    Answer(RegistryError),
    /// Reading or checking the body (retried when transient).
    Body(RegistryError),
    /// A body that arrived whole but makes no sense, as bytes damaged in
    /// transit would (retried; the last one's error is reported).
    Garbled(RegistryError),
}

impl From<RegistryError> for BodyError {
    fn from(e: RegistryError) -> Self {
        BodyError::Answer(e)
    }
}

/// The target of a `Link: <...>; rel="next"` header.
fn next_link(header: &str) -> Option<String> {
    for part in header.split(',') {
        let part = part.trim();
        let Some(end) = part.find('>') else { continue };
        if !part.starts_with('<') {
            continue;
        }
        let target = &part[1..end];
        let params = &part[end + 1..];
        let is_next = params.split(';').any(|p| {
            let p = p.trim().replace(' ', "");
            p == "rel=\"next\"" || p == "rel=next"
        });
        if is_next {
            return Some(target.to_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn whole_bodies_over_their_limit_are_refused_not_cut() {
        let answer = |body: &'static str, declared: bool| {
            let mut r = axum::http::Response::new(body);
            if declared {
                r.headers_mut()
                    .insert(reqwest::header::CONTENT_LENGTH, body.len().into());
            }
            reqwest::Response::from(r)
        };
        for declared in [true, false] {
            assert!(matches!(
                read_capped(answer("0123456789", declared), 5).await,
                Err(ReadError::TooLarge { max: 5 })
            ));
            assert_eq!(
                read_capped(answer("01234", declared), 5)
                    .await
                    .ok()
                    .unwrap(),
                "01234"
            );
        }
        assert_eq!(
            read_limited(answer("0123456789", false), 5).await.unwrap(),
            ""
        );
        let e = ReadError::TooLarge { max: 5 }.into_registry(
            Method::GET,
            &url::Url::parse("http://h/v2/a/manifests/b").unwrap(),
            "the manifest",
        );
        assert!(!e.is_transient());
        assert_eq!(
            e.to_string(),
            "GET http://h/v2/a/manifests/b: the manifest is larger than 5 bytes; refused"
        );
    }

    #[test]
    fn parses_link_headers() {
        assert_eq!(
            next_link(r#"</v2/_catalog?last=b&n=2>; rel="next""#),
            Some("/v2/_catalog?last=b&n=2".into())
        );
        assert_eq!(
            next_link(r#"<http://h/x>; rel="prev", </v2/t?last=z>; rel=next"#),
            Some("/v2/t?last=z".into())
        );
        assert_eq!(next_link(r#"</x>; rel="prev""#), None);
        assert_eq!(next_link("garbage"), None);
    }
}

/// Property tests (fuzzing) of the `Link` header parser.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::next_link;

    proptest! {
        #![proptest_config(crate::fuzz_config())]
        #[test]
        fn any_link_header_without_panic(h in ".{0,300}") {
            let _ = next_link(&h);
        }

        #[test]
        fn the_next_target_is_found_among_others(
            target in "/v2/[a-z0-9/_.?=&-]{0,80}",
            other in "/[a-z0-9/_.?=&-]{0,40}",
            next_first in any::<bool>(),
            quoted in any::<bool>(),
        ) {
            let rel = if quoted { "rel=\"next\"" } else { "rel=next" };
            let next = format!("<{target}>; {rel}");
            let prev = format!("<{other}>; rel=\"prev\"");
            let h = if next_first { format!("{next}, {prev}") } else { format!("{prev}, {next}") };
            prop_assert_eq!(next_link(&h), Some(target));
        }
    }
}
