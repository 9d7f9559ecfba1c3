//! Is this registry usable? `GET /v2/` with its credentials, and the
//! answer classified into one problem about the registry as a whole —
//! unreachable, TLS, credentials, or not a registry API — with the hint
//! that fixes it. Asked by `georep check-config --connect`, by the daemon
//! at start and every few seconds after (its reachability in the status),
//! and by `georep status` when no daemon runs.

use reqwest::header::WWW_AUTHENTICATE;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use super::error::RegistryError;
use super::{Op, Registry, Scope};

/// What is wrong with a registry as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// No answer: refused, reset, timed out, no route, name not resolved.
    Unreachable,
    /// TLS could not be set up: plain http behind an https URL, or a
    /// certificate not trusted.
    Tls,
    /// Credentials refused, or needed and not configured.
    Credentials,
    /// It answered, but not as a registry's `/v2/` does.
    Http,
}

/// One problem, said once, with its hint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub kind: ProblemKind,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A registry's health as last checked.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// `None`: not checked.
    pub reachable: Option<bool>,
    /// What is wrong with it as a whole (unreachable, TLS, credentials).
    pub problem: Option<Problem>,
    /// RFC 3339.
    pub checked_at: Option<String>,
    /// Since when it has been in this state (the daemon keeps it).
    pub since: Option<String>,
}

/// The root cause of a TLS handshake with something that is not TLS
/// (rustls reads the plain-http answer as a corrupt record).
fn speaks_plain_http(cause: &str) -> bool {
    [
        "InvalidContentType",
        "corrupt message",
        "wrong version number",
    ]
    .iter()
    .any(|s| cause.contains(s))
}

fn untrusted_certificate(cause: &str) -> bool {
    ["certificate", "UnknownIssuer", "NotValidForName", "Expired"]
        .iter()
        .any(|s| cause.contains(s))
}

impl Registry {
    /// `GET /v2/` as the copies will send it (credentials, TLS, proxy):
    /// `Ok` when the registry answers and accepts the credentials (or
    /// needs none).
    pub async fn check(&self) -> Result<(), Problem> {
        let who = format!("{} ({})", self.name(), self.url());
        let url = self.endpoint("v2/");
        let answer = self
            .send(
                Op::Ping,
                Method::GET,
                url,
                &Scope::none(),
                reqwest::header::HeaderMap::new(),
                None,
            )
            .await;
        let a = match answer {
            Ok(a) => a,
            Err(e) => return Err(self.classify(&who, &e)),
        };
        let status = a.resp.status();
        if status.is_success() {
            return Ok(());
        }
        if status == StatusCode::UNAUTHORIZED {
            let challenge = a
                .resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            // A token service gave a token (else the fetch failed above);
            // some registries still answer 401 to a scope-less `/v2/`.
            if challenge
                .trim_start()
                .to_ascii_lowercase()
                .starts_with("bearer")
            {
                return Ok(());
            }
            return Err(Problem {
                kind: ProblemKind::Credentials,
                message: match self.auth.whose() {
                    Some(whose) => format!("{who} refused the credentials of {whose}"),
                    None => format!(
                        "{who} requires credentials and none are configured: set `credentials:` for it"
                    ),
                },
            });
        }
        Err(Problem {
            kind: ProblemKind::Http,
            message: format!(
                "{who} answered GET /v2/ with HTTP {status}: is this the registry's URL (its API is under /v2/)?"
            ),
        })
    }

    fn classify(&self, who: &str, e: &RegistryError) -> Problem {
        let https = self.url().starts_with("https://");
        // After a few failed tries the breaker answers for the registry;
        // the last failure is its cause.
        let cause_of = |e: &RegistryError| match e {
            RegistryError::Transport { cause, .. } => Some(cause.clone()),
            RegistryError::Unreachable { last_error, .. } => Some(last_error.clone()),
            _ => None,
        };
        match e {
            _ if https && cause_of(e).is_some_and(|c| speaks_plain_http(&c)) => Problem {
                kind: ProblemKind::Tls,
                message: format!(
                    "{who}: the registry speaks plain http: use http:// or fix its TLS ({})",
                    cause_of(e).unwrap_or_default()
                ),
            },
            _ if https && cause_of(e).is_some_and(|c| untrusted_certificate(&c)) => Problem {
                kind: ProblemKind::Tls,
                message: format!(
                    "{who}: its TLS certificate is not trusted ({}): set `tls.ca_file` to the CA that signed it, or fix the certificate",
                    cause_of(e).unwrap_or_default()
                ),
            },
            RegistryError::Transport { cause, kind, .. } => Problem {
                kind: ProblemKind::Unreachable,
                message: if cause.is_empty() {
                    format!("{who}: {kind}")
                } else {
                    format!("{who}: {kind} ({cause})")
                },
            },
            RegistryError::Unreachable { last_error, .. } => Problem {
                kind: ProblemKind::Unreachable,
                message: format!("{who} is unreachable: {last_error}"),
            },
            RegistryError::Auth { realm, reason, .. } => Problem {
                kind: ProblemKind::Credentials,
                message: match self.auth.whose() {
                    Some(whose) => format!(
                        "{who}: its token service {realm} refused the credentials of {whose}: {reason}"
                    ),
                    None => format!(
                        "{who}: its token service {realm} refused anonymous access ({reason}): set `credentials:` for it"
                    ),
                },
            },
            other => Problem {
                kind: ProblemKind::Http,
                message: format!("{who}: {other:#}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_causes_are_told_apart() {
        assert!(speaks_plain_http(
            "received corrupt message of type InvalidContentType"
        ));
        assert!(!speaks_plain_http("connection refused"));
        assert!(untrusted_certificate(
            "invalid peer certificate: UnknownIssuer"
        ));
        assert!(!untrusted_certificate("connection refused"));
    }
}
