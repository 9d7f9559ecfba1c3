//! Blobs: `HEAD`, streamed `GET` (metered by the byte limit), upload
//! sessions, cross-repository mounts, the streamed `PUT` that completes an
//! upload, and cancelling an unused session.

use futures::{Stream, TryStreamExt};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue, LOCATION};
use reqwest::{Method, StatusCode};

use super::error::{RegistryError, display_url};
use super::transport::Timing;
use super::{BlobStream, Mount, Op, Registry, Scope, UploadSession};
use crate::digest::Digest;

impl Registry {
    pub(super) fn blob_url(&self, repository: &str, digest: &Digest) -> url::Url {
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
        let mut url = session.url.clone();
        url.query_pairs_mut().append_pair("digest", digest.as_str());
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        h.insert(CONTENT_LENGTH, HeaderValue::from(size));
        let resp = self
            .send_once_streamed(
                Op::UploadPut,
                Method::PUT,
                url.clone(),
                &Scope::push(&session.repository),
                h,
                body,
            )
            .await?;
        match resp.status() {
            StatusCode::CREATED | StatusCode::NO_CONTENT => {
                self.stats.written(size);
                Ok(())
            }
            // Another 2xx is not the answer a completed upload gets.
            _ => Err(super::transport::status_error(Method::PUT, &url, resp).await),
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
