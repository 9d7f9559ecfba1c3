//! The transport: every request to a registry goes through here. A
//! request holds a permit of the registry's concurrency limit; each try
//! ([`Registry::attempt`], the one place a request is sent) waits for the
//! rate limit, consults the circuit breaker, adds authentication, and
//! records what happened (breaker, AIMD limit, counters). [`Registry::send`]
//! retries transient failures with backoff (honouring `Retry-After`) and
//! re-authenticates once on `401`; [`Registry::with_body_retries`] asks
//! again when a body breaks after its head arrived.

use std::time::SystemTime;

use bytes::Bytes;
use reqwest::header::{HeaderMap, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use tokio::sync::OwnedSemaphorePermit;

use super::body::{BodyError, read_limited};
use super::error::{self, RegistryError, display_url};
use super::{Op, Registry, Scope, retry};

/// Error bodies are read up to this size for their `errors[].code`.
const MAX_ERROR_BODY_BYTES: usize = 64 << 10;

/// Which deadline a request gets.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Timing {
    /// The whole exchange, body included, within the request timeout.
    WholeRequest,
    /// Only the response head within the request timeout; the body streams.
    StreamedBody,
    /// No deadline: a streamed upload's answer comes after its whole body,
    /// whose pace the sender's own stall detection watches.
    Upload,
}

/// A response, with the concurrency permit it still occupies.
pub struct Answer {
    pub resp: reqwest::Response,
    pub(super) permit: OwnedSemaphorePermit,
}

/// One try of a request.
struct Try<'a> {
    op: Op,
    method: &'a Method,
    url: &'a url::Url,
    scope: &'a Scope,
    headers: &'a HeaderMap,
    body: Option<reqwest::Body>,
    timing: Timing,
}

impl Registry {
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
    pub(super) async fn send_with(
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
            let sent = self
                .attempt(Try {
                    op,
                    method: &method,
                    url: &url,
                    scope,
                    headers: &headers,
                    body: body.clone().map(reqwest::Body::from),
                    timing,
                })
                .await;
            let failure = match sent {
                Err(e) => e,
                Ok(resp) => {
                    let status = resp.status();
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

    /// One try, with no retry: waits for the rate limit, checks the
    /// breaker, authenticates, sends within the timing's deadline, and
    /// records the outcome in the breaker, the AIMD limit and the counters.
    /// Any answer is returned as is; a failure to get one is an error.
    async fn attempt(&self, t: Try<'_>) -> Result<reqwest::Response, RegistryError> {
        self.limits.request().await;
        self.breaker.check()?;
        let authorization = self
            .auth
            .header(&self.http, t.scope, self.timeouts.request)
            .await?;
        let mut rb = self
            .http
            .request(t.method.clone(), t.url.clone())
            .headers(t.headers.clone());
        if t.timing == Timing::WholeRequest {
            rb = rb.timeout(self.timeouts.request);
        }
        if let Some(a) = authorization {
            rb = rb.header(reqwest::header::AUTHORIZATION, a);
        }
        if let Some(agent) = &self.agent {
            rb = rb.header(reqwest::header::USER_AGENT, agent.clone());
        }
        if let Some(b) = t.body {
            rb = rb.body(b);
        }
        self.stats.request(t.op);
        // A streamed body has no overall deadline (stalls are detected per
        // chunk by the reader); only the wait for the head has one. An
        // upload's head comes after its body: no deadline at all.
        let sent = if t.timing == Timing::Upload {
            Ok(rb.send().await)
        } else {
            tokio::time::timeout(self.timeouts.request, rb.send()).await
        };
        let result = match sent {
            Ok(Ok(resp)) => {
                self.breaker.record_success();
                self.adapt(resp.status());
                return Ok(resp);
            }
            Ok(Err(e)) => RegistryError::transport(t.method.clone(), t.url, e),
            Err(_) => RegistryError::Stalled {
                method: t.method.clone(),
                url: display_url(t.url),
                after: self.timeouts.request,
            },
        };
        self.breaker.record_failure(&result);
        Err(result)
    }

    /// Sends a request whose body is a one-shot stream (a blob upload):
    /// one try, a permit held throughout, no deadline on the answer; on a
    /// `401` the credentials are refreshed for the caller's next try. The
    /// caller retries with a new body.
    pub(super) async fn send_once_streamed(
        &self,
        op: Op,
        method: Method,
        url: url::Url,
        scope: &Scope,
        headers: HeaderMap,
        body: reqwest::Body,
    ) -> Result<reqwest::Response, RegistryError> {
        let _permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            // The semaphore is never closed.
            .expect("registry semaphore closed");
        let resp = self
            .attempt(Try {
                op,
                method: &method,
                url: &url,
                scope,
                headers: &headers,
                body: Some(body),
                timing: Timing::Upload,
            })
            .await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        if status == StatusCode::UNAUTHORIZED {
            let challenge = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok());
            self.auth.on_unauthorized(challenge, scope);
        }
        let e = status_error(method, &url, resp).await;
        self.pause_if_asked(&e);
        Err(e)
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

    /// Runs `once` (a request whose body is read after `send` answered)
    /// until it succeeds, fails for a reason other than its body, or has
    /// had `max_attempts`: a body that breaks, stalls, arrives corrupt or
    /// makes no sense is asked for again, as `send` does for failures
    /// before the answer.
    pub(super) async fn with_body_retries<T, F, Fut>(
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
}

impl Answer {
    /// Turns an unwanted answer into an error carrying the registry's code.
    pub async fn into_error(self, method: Method) -> RegistryError {
        let url = self.resp.url().clone();
        status_error(method, &url, self.resp).await
    }
}

pub(super) async fn status_error(
    method: Method,
    url: &url::Url,
    resp: reqwest::Response,
) -> RegistryError {
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
