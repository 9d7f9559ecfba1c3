//! What can go wrong talking to a registry, and whether trying again can help.

use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::digest::{Digest, Mismatch};

/// An error from one registry, naming the request that failed.
///
/// URLs are printed without their query string: upload-session URLs carry
/// opaque state there, and no URL georep builds has anything useful in it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    /// The request never got an HTTP answer: refused, reset, timed out, TLS.
    /// The message ends with the root cause (`connection refused`, `invalid
    /// peer certificate: UnknownIssuer`...): it is in the message rather
    /// than a `source`, so every way of printing keeps it, once.
    #[error("{method} {url}: {kind}{}", if cause.is_empty() { String::new() } else { format!(" ({cause})") })]
    Transport {
        method: Method,
        url: String,
        kind: TransportKind,
        cause: String,
        /// Shared so that one failure can be reported to every region of a
        /// fan-out.
        error: std::sync::Arc<reqwest::Error>,
    },
    /// The registry answered with a status the operation does not accept.
    #[error("{method} {url}: HTTP {status}{}", detail(code.as_deref(), message.as_deref()))]
    Status {
        method: Method,
        url: String,
        status: StatusCode,
        /// The distribution error code (`MANIFEST_BLOB_UNKNOWN`, ...), if sent.
        code: Option<String>,
        message: Option<String>,
        retry_after: Option<Duration>,
    },
    /// Several connections in a row failed: requests are not sent until a
    /// cool-down has passed, so a dead registry fails fast.
    #[error("registry {registry} ({url}) is unreachable: {last_error}")]
    Unreachable {
        registry: String,
        url: String,
        last_error: String,
    },
    /// The registry answered something the protocol does not allow.
    #[error("{method} {url}: {reason}")]
    Protocol {
        method: Method,
        url: String,
        reason: String,
    },
    /// Content did not match its digest or size.
    #[error("{url}: content of {digest} is corrupt: {mismatch}")]
    Corrupt {
        url: String,
        digest: Digest,
        mismatch: Mismatch,
    },
    /// The token service refused or failed.
    #[error("authentication at {realm} for {scope} failed: {reason}")]
    Auth {
        realm: String,
        scope: String,
        reason: String,
    },
    /// A blob stream made no progress for too long.
    #[error("{method} {url}: no progress for {}s", after.as_secs())]
    Stalled {
        method: Method,
        url: String,
        after: Duration,
    },
    /// In a fan-out, this region's upload held the others back for too
    /// long (it is slower or rate-limited): it leaves the shared read and
    /// copies the blob with a read of its own. Not a failure.
    #[error("PUT {url}: fell behind the other regions of a shared read by more than {}s; continuing with its own read", after.as_secs_f64())]
    Lagging { url: String, after: Duration },
}

/// The innermost message of an error chain, the one that says what
/// happened (hyper and reqwest wrap it in generic layers).
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e.source();
    while let Some(inner) = last.and_then(|l| l.source()) {
        last = Some(inner);
    }
    last.map(|l| l.to_string()).unwrap_or_default()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    Connect,
    Timeout,
    Body,
    Other,
}

impl std::fmt::Display for TransportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TransportKind::Connect => "cannot connect",
            TransportKind::Timeout => "timed out",
            TransportKind::Body => "connection broke while streaming",
            TransportKind::Other => "request failed",
        })
    }
}

fn detail(code: Option<&str>, message: Option<&str>) -> String {
    match (code, message) {
        (Some(c), Some(m)) => format!(" {c}: {m}"),
        (Some(c), None) => format!(" {c}"),
        (None, Some(m)) => format!(": {m}"),
        (None, None) => String::new(),
    }
}

impl RegistryError {
    pub fn transport(method: Method, url: &url::Url, source: reqwest::Error) -> Self {
        let kind = if source.is_connect() {
            TransportKind::Connect
        } else if source.is_timeout() {
            TransportKind::Timeout
        } else if source.is_body() || source.is_decode() {
            TransportKind::Body
        } else {
            TransportKind::Other
        };
        RegistryError::Transport {
            method,
            url: display_url(url),
            kind,
            cause: root_cause(&source),
            error: std::sync::Arc::new(source),
        }
    }

    /// Whether the same request may succeed if tried again later.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Transport { .. }
            | RegistryError::Stalled { .. }
            | RegistryError::Lagging { .. } => true,
            RegistryError::Status { status, .. } => is_transient_status(*status),
            // Corrupt bytes in transit may be a broken proxy; a second read
            // is cheap compared with giving up on the blob.
            RegistryError::Corrupt { .. } => true,
            RegistryError::Unreachable { .. }
            | RegistryError::Protocol { .. }
            | RegistryError::Auth { .. } => false,
        }
    }

    /// Whether the error says the registry could not be reached at all:
    /// refused or unanswered connections, and requests that got no answer
    /// in time (a registry that accepts connections but never answers is
    /// as unreachable as one that refuses them).
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            RegistryError::Transport {
                kind: TransportKind::Connect | TransportKind::Timeout,
                ..
            } | RegistryError::Unreachable { .. }
        )
    }

    pub fn status(&self) -> Option<StatusCode> {
        match self {
            RegistryError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The registry refused a manifest because content it references is
    /// not there (`MANIFEST_BLOB_UNKNOWN`, `BLOB_UNKNOWN`): whoever recorded
    /// that content as present was wrong, or it was deleted since.
    pub fn lacks_content(&self) -> bool {
        matches!(self.code(), Some("MANIFEST_BLOB_UNKNOWN" | "BLOB_UNKNOWN"))
    }

    pub fn code(&self) -> Option<&str> {
        match self {
            RegistryError::Status { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RegistryError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

pub(crate) fn is_transient_status(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::REQUEST_TIMEOUT
            | StatusCode::TOO_MANY_REQUESTS
            | StatusCode::INTERNAL_SERVER_ERROR
            | StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT
    )
}

/// A URL as printed in messages: no userinfo, no query.
pub fn display_url(url: &url::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_url_drops_secrets_and_state() {
        let u = url::Url::parse("http://bob:pw@h:5000/v2/r/blobs/uploads/x?_state=abc").unwrap();
        assert_eq!(display_url(&u), "http://h:5000/v2/r/blobs/uploads/x");
    }

    #[test]
    fn status_errors_classify() {
        let e = RegistryError::Status {
            method: Method::PUT,
            url: "u".into(),
            status: StatusCode::BAD_REQUEST,
            code: Some("MANIFEST_INVALID".into()),
            message: Some("bad".into()),
            retry_after: None,
        };
        assert!(!e.is_transient());
        assert_eq!(
            e.to_string(),
            "PUT u: HTTP 400 Bad Request MANIFEST_INVALID: bad"
        );
        let e = RegistryError::Status {
            method: Method::GET,
            url: "u".into(),
            status: StatusCode::TOO_MANY_REQUESTS,
            code: None,
            message: None,
            retry_after: Some(Duration::from_secs(2)),
        };
        assert!(e.is_transient());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
    }
}
