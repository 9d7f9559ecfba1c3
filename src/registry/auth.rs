//! Authentication: anonymous, HTTP basic, and the distribution bearer-token
//! flow, behind one token service per registry.
//!
//! The scheme is learnt from the registry's first `401` challenge
//! (`WWW-Authenticate`). With bearer auth every request names the scopes it
//! needs (`repository:R:pull`, `repository:R:pull,push`, the source
//! repository's pull scope for a cross-repository mount, `registry:catalog:*`
//! for the catalog); one token per scope set is fetched from the realm,
//! cached until shortly before it expires, and shared by every request that
//! needs the same scopes. Concurrent requests for the same scopes wait for
//! one token fetch instead of stampeding the token service.
//!
//! Credentials are a username and password (basic to the registry or to the
//! token service), an identity token (exchanged at the token service with
//! the OAuth2 refresh-token grant), or a static bearer token sent as is.
//! Credentials that came from a Docker credential helper are asked for
//! again when they are refused (at most every [`HELPER_RETRY`]): helpers
//! hand out tokens that expire while a daemon runs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::HeaderValue;

use super::error::{RegistryError, display_url};
use super::stats::{Op, Stats};
use crate::config::{CredentialHelper, Credentials, Secret};
use crate::lock::Locked;

/// Tokens that do not say how long they live are assumed to live this long
/// (the distribution token spec's default).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// A cached token is renewed this long before it expires.
const TOKEN_EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// Token service answers larger than this are refused.
const MAX_TOKEN_RESPONSE_BYTES: usize = 1 << 20;
/// Tries of a token fetch that fails for a transient reason (connection,
/// 5xx, 429, a broken answer), with a doubling pause from 250 ms.
const TOKEN_ATTEMPTS: u32 = 4;
/// A credential helper is asked again at most this often.
pub const HELPER_RETRY: Duration = Duration::from_secs(30);

/// The access a request needs, as distribution token scopes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Scope(Vec<String>);

impl Scope {
    pub fn pull(repository: &str) -> Scope {
        Scope(vec![format!("repository:{repository}:pull")])
    }
    pub fn push(repository: &str) -> Scope {
        Scope(vec![format!("repository:{repository}:pull,push")])
    }
    /// Delete manifests of `repository` (distribution's token servers call
    /// the action `delete`; others grant it with `*`).
    pub fn delete(repository: &str) -> Scope {
        Scope(vec![format!("repository:{repository}:delete")])
    }
    /// Push to `repository` and read `from`, for a cross-repository mount.
    pub fn mount(repository: &str, from: &str) -> Scope {
        Scope(vec![
            format!("repository:{repository}:pull,push"),
            format!("repository:{from}:pull"),
        ])
    }
    pub fn catalog() -> Scope {
        Scope(vec!["registry:catalog:*".to_owned()])
    }
    /// No particular access (the `/v2/` ping).
    pub fn none() -> Scope {
        Scope(Vec::new())
    }
    fn key(&self) -> String {
        self.0.join(" ")
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            f.write_str("(no scope)")
        } else {
            f.write_str(&self.key())
        }
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// Parses the first challenge of a `WWW-Authenticate` header value.
/// Quoted values may contain commas (scopes do) and escaped quotes.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header
        .split_once(char::is_whitespace)
        .unwrap_or((header, ""));
    let params = parse_auth_params(rest);
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => {
            let realm = params.get("realm")?.clone();
            Some(Challenge::Bearer {
                realm,
                service: params.get("service").cloned(),
            })
        }
        _ => None,
    }
}

fn parse_auth_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() {
            break;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek() != Some(&'=') {
            // A bare token: the start of a second challenge. Stop here.
            break;
        }
        chars.next();
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => break,
                    _ => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
            value = value.trim().to_owned();
        }
        out.insert(key.to_ascii_lowercase(), value);
    }
    out
}

#[derive(Clone, Debug)]
enum Scheme {
    /// No challenge seen yet: requests go out anonymously.
    Unknown,
    Basic,
    Bearer {
        realm: url::Url,
        service: Option<String>,
    },
}

struct Token {
    value: Secret,
    renew_at: Instant,
}

type TokenSlot = Arc<tokio::sync::Mutex<Option<Token>>>;

/// The token service of one registry.
pub struct Auth {
    /// Replaced when a credential helper gives new ones.
    credentials: RwLock<Option<Credentials>>,
    helper: Option<CredentialHelper>,
    /// The registry or its token service refused the credentials: ask the
    /// helper again before the next request.
    refused: AtomicBool,
    /// When the helper was last asked; one asks at a time.
    helper_asked: tokio::sync::Mutex<Option<Instant>>,
    stats: Arc<Stats>,
    scheme: RwLock<Scheme>,
    tokens: Mutex<HashMap<String, TokenSlot>>,
}

/// A token fetch that failed: whether the credentials were refused, or
/// asking again may help.
struct TokenFailure {
    error: RegistryError,
    refused: bool,
    transient: bool,
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl Auth {
    pub fn new(
        credentials: Option<Credentials>,
        helper: Option<CredentialHelper>,
        stats: Arc<Stats>,
    ) -> Self {
        Auth {
            credentials: RwLock::new(credentials),
            helper,
            refused: AtomicBool::new(false),
            helper_asked: tokio::sync::Mutex::new(None),
            stats,
            scheme: RwLock::new(Scheme::Unknown),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    fn credentials(&self) -> Option<Credentials> {
        self.credentials
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whose credentials these are, for messages: `user "bob"`, `an
    /// identity token`, `a bearer token`; `None` when anonymous.
    pub fn whose(&self) -> Option<String> {
        Some(match self.credentials()? {
            Credentials::Basic { username, .. } => format!("user {username:?}"),
            Credentials::IdentityToken(_) => "an identity token".to_owned(),
            Credentials::Bearer(_) => "a bearer token".to_owned(),
        })
    }

    fn basic_header(&self) -> Option<HeaderValue> {
        let Some(Credentials::Basic { username, password }) = self.credentials() else {
            return None;
        };
        let raw = format!("{username}:{}", password.expose());
        let mut v = HeaderValue::from_str(&format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        ))
        .ok()?;
        v.set_sensitive(true);
        Some(v)
    }

    fn scheme(&self) -> Scheme {
        // A poisoned lock only means another thread panicked mid-write of a
        // plain enum; the value is still usable.
        self.scheme
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The `Authorization` header for a request needing `scope`, if any.
    pub async fn header(
        &self,
        http: &reqwest::Client,
        scope: &Scope,
        timeout: Duration,
    ) -> Result<Option<HeaderValue>, RegistryError> {
        if self.refused.load(Ordering::Relaxed) {
            self.ask_helper_again().await;
        }
        if let Some(Credentials::Bearer(token)) = self.credentials() {
            return Ok(Some(bearer(&token)));
        }
        match self.scheme() {
            Scheme::Unknown => Ok(None),
            Scheme::Basic => Ok(self.basic_header()),
            Scheme::Bearer { realm, service } => {
                let slot = {
                    let mut tokens = self.tokens.locked();
                    tokens.entry(scope.key()).or_default().clone()
                };
                let mut token = slot.lock().await;
                if let Some(t) = token.as_ref()
                    && Instant::now() < t.renew_at
                {
                    return Ok(Some(bearer(&t.value)));
                }
                let (mut attempt, mut asked_helper) = (1, false);
                let fresh = loop {
                    match self
                        .fetch_token(http, &realm, service.as_deref(), scope, timeout)
                        .await
                    {
                        Ok(t) => break t,
                        Err(f) if f.transient && attempt < TOKEN_ATTEMPTS => {
                            tracing::debug!(
                                attempt,
                                "token fetch failed, trying again: {}",
                                f.error
                            );
                            tokio::time::sleep(Duration::from_millis(250 << (attempt - 1))).await;
                            attempt += 1;
                        }
                        Err(f) if f.refused && !asked_helper && self.ask_helper_again().await => {
                            asked_helper = true;
                        }
                        Err(f) => return Err(f.error),
                    }
                };
                let header = bearer(&fresh.value);
                *token = Some(fresh);
                Ok(Some(header))
            }
        }
    }

    /// Learns from a `401`. Returns whether the request is worth repeating
    /// with new credentials.
    pub fn on_unauthorized(&self, www_authenticate: Option<&str>, scope: &Scope) -> bool {
        let credentials = self.credentials();
        if matches!(credentials, Some(Credentials::Bearer(_))) {
            // The token went out and was refused; only a helper (none
            // gives static tokens today) could give another.
            return false;
        }
        let Some(challenge) = www_authenticate.and_then(parse_challenge) else {
            return false;
        };
        let mut scheme = self.scheme.write().unwrap_or_else(|e| e.into_inner());
        match challenge {
            Challenge::Basic => {
                if matches!(*scheme, Scheme::Basic) && self.helper.is_some() {
                    // Sent and refused: the helper's password has expired.
                    self.refused.store(true, Ordering::Relaxed);
                }
                *scheme = Scheme::Basic;
                // Repeating helps if we have credentials: this request may
                // have gone out before the scheme was known. The caller
                // repeats at most once, so wrong credentials do not loop.
                credentials.is_some()
            }
            Challenge::Bearer { realm, service } => {
                let Ok(realm) = url::Url::parse(&realm) else {
                    return false;
                };
                *scheme = Scheme::Bearer { realm, service };
                drop(scheme);
                // Forget the token for this scope: it was refused (or never
                // existed); the next header() fetches a new one.
                let tokens = self.tokens.locked();
                if let Some(slot) = tokens.get(&scope.key())
                    && let Ok(mut t) = slot.try_lock()
                {
                    *t = None;
                }
                true
            }
        }
    }

    /// Asks the credential helper again, unless it was asked less than
    /// [`HELPER_RETRY`] ago; returns whether the credentials changed (and
    /// then forgets every cached token).
    async fn ask_helper_again(&self) -> bool {
        let Some(helper) = self.helper.clone() else {
            return false;
        };
        let mut asked = self.helper_asked.lock().await;
        self.refused.store(false, Ordering::Relaxed);
        if asked.is_some_and(|at| at.elapsed() < HELPER_RETRY) {
            return false;
        }
        *asked = Some(Instant::now());
        let name = format!(
            "docker-credential-{} (for {})",
            helper.helper, helper.server
        );
        let answer =
            tokio::task::spawn_blocking(move || crate::config::docker::ask_helper(&helper)).await;
        let fresh = match answer {
            Ok(Ok(Some(c))) => c,
            Ok(Ok(None)) => {
                tracing::warn!("{name} no longer has credentials for this registry");
                return false;
            }
            Ok(Err(e)) => {
                tracing::warn!("asking for new credentials: {e}");
                return false;
            }
            Err(e) => {
                tracing::warn!("asking {name} for new credentials: {e}");
                return false;
            }
        };
        let mut current = self.credentials.write().unwrap_or_else(|e| e.into_inner());
        if current.as_ref() == Some(&fresh) {
            tracing::debug!("{name} gave the same credentials again");
            return false;
        }
        tracing::info!("new credentials from {name}");
        *current = Some(fresh);
        drop(current);
        self.tokens.locked().clear();
        true
    }

    async fn fetch_token(
        &self,
        http: &reqwest::Client,
        realm: &url::Url,
        service: Option<&str>,
        scope: &Scope,
        timeout: Duration,
    ) -> Result<Token, TokenFailure> {
        let fail = |reason: String| TokenFailure {
            error: RegistryError::Auth {
                realm: display_url(realm),
                scope: scope.to_string(),
                reason,
            },
            refused: false,
            transient: true,
        };
        let mut url = realm.clone();
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            for s in &scope.0 {
                q.append_pair("scope", s);
            }
        }
        let credentials = self.credentials();
        let req = match &credentials {
            // An identity token (from `docker login` to an OAuth2 token
            // service) is exchanged with the refresh-token grant.
            Some(Credentials::IdentityToken(refresh)) => {
                let mut form = vec![
                    ("grant_type", "refresh_token".to_owned()),
                    ("refresh_token", refresh.expose().to_owned()),
                    ("client_id", "georep".to_owned()),
                    ("scope", scope.0.join(" ")),
                ];
                if let Some(s) = service {
                    form.push(("service", s.to_owned()));
                }
                let body = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(form)
                    .finish();
                http.post(realm.clone())
                    .timeout(timeout)
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(body)
            }
            _ => {
                let mut req = http.get(url).timeout(timeout);
                if let Some(h) = self.basic_header() {
                    req = req.header(reqwest::header::AUTHORIZATION, h);
                }
                req
            }
        };
        let started = Instant::now();
        self.stats.request(Op::Token);
        let resp = req.send().await.map_err(|e| fail(format!("{e:#}")))?;
        let status = resp.status();
        if !status.is_success() {
            let refused = status == reqwest::StatusCode::UNAUTHORIZED
                || status == reqwest::StatusCode::FORBIDDEN;
            let hint = match (&credentials, refused) {
                (Some(c), true) => format!(" ({} refused)", c.describe()),
                (None, true) => {
                    " (the registry needs credentials: add `credentials` to its config)".to_owned()
                }
                (_, false) => String::new(),
            };
            let mut f = fail(format!("token service answered HTTP {status}{hint}"));
            f.refused = refused && credentials.is_some();
            f.transient = super::error::is_transient_status(status);
            return Err(f);
        }
        let body = super::body::read_capped(resp, MAX_TOKEN_RESPONSE_BYTES)
            .await
            .map_err(|e| match e {
                super::body::ReadError::Transport(e) => fail(format!("reading the answer: {e:#}")),
                super::body::ReadError::TooLarge { max } => TokenFailure {
                    transient: false,
                    ..fail(format!("the answer is larger than {max} bytes"))
                },
            })?;
        let parsed: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| fail(format!("answer is not a token response: {e}")))?;
        let value = parsed
            .token
            .filter(|t| !t.is_empty())
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| TokenFailure {
                transient: false,
                ..fail("answer holds no token".to_owned())
            })?;
        let lifetime = parsed
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        let margin = TOKEN_EXPIRY_MARGIN.min(lifetime / 2);
        Ok(Token {
            value: Secret::new(value),
            renew_at: started + lifetime - margin,
        })
    }
}

fn bearer(token: &Secret) -> HeaderValue {
    let mut v = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer invalid-token-characters"));
    v.set_sensitive(true);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token service that answers 503 to its first request: the fetch
    /// is tried again and the header carries the token.
    #[tokio::test]
    async fn a_token_fetch_that_fails_transiently_is_tried_again() {
        use std::sync::atomic::AtomicUsize;
        let calls = Arc::new(AtomicUsize::new(0));
        let app = axum::Router::new().route(
            "/token",
            axum::routing::get({
                let calls = calls.clone();
                move || async move {
                    if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                        (reqwest::StatusCode::SERVICE_UNAVAILABLE, "busy".to_owned())
                    } else {
                        (reqwest::StatusCode::OK, r#"{"token":"t0k"}"#.to_owned())
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let auth = Auth::new(
            Some(Credentials::Basic {
                username: "u".into(),
                password: Secret::new("p"),
            }),
            None,
            Arc::new(Stats::default()),
        );
        let scope = Scope::pull("team/app");
        let challenge = format!(r#"Bearer realm="http://{addr}/token",service="s""#);
        assert!(auth.on_unauthorized(Some(&challenge), &scope));
        let header = auth
            .header(&reqwest::Client::new(), &scope, Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(header, "Bearer t0k");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn parses_bearer_with_commas_in_scope() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push",error="insufficient_scope""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.example.com/token".into(),
                service: Some("registry.example.com".into()),
            })
        );
    }

    #[test]
    fn parses_basic_and_odd_spacing() {
        assert_eq!(
            parse_challenge(r#"Basic realm="basic-realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(r#"bearer  realm = "http://h/t" , service=svc"#),
            Some(Challenge::Bearer {
                realm: "http://h/t".into(),
                service: Some("svc".into())
            })
        );
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Negotiate abc"), None);
        assert_eq!(parse_challenge(""), None);
    }

    #[test]
    fn escaped_quotes_in_values() {
        let p = parse_auth_params(r#"realm="a\"b", x=1"#);
        assert_eq!(p["realm"], "a\"b");
        assert_eq!(p["x"], "1");
    }

    #[test]
    fn scopes_format() {
        assert_eq!(
            Scope::mount("team/app", "base").to_string(),
            "repository:team/app:pull,push repository:base:pull"
        );
    }
}

/// Property tests (fuzzing): the challenge parser never panics, and reads
/// back any realm and service, whatever they contain.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    fn quote(s: &str) -> String {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }

    proptest! {
        #![proptest_config(crate::fuzz_config())]
        #[test]
        fn any_header_parses_or_not_without_panic(h in ".{0,300}") {
            let _ = parse_challenge(&h);
        }

        #[test]
        fn bearer_params_round_trip(
            realm in "[ -~]{1,80}",
            service in "[ -~]{0,40}",
            scope in "[ -~]{0,60}",
            spaces in " {0,3}",
        ) {
            let h = format!(
                "Bearer realm={}{spaces},{spaces}service={},scope={}",
                quote(&realm),
                quote(&service),
                quote(&scope)
            );
            prop_assert_eq!(
                parse_challenge(&h),
                Some(Challenge::Bearer { realm, service: Some(service) })
            );
        }
    }
}
