//! A token service for a registry run with `auth: token`: checks basic
//! credentials (GET) or a refresh token (POST, the OAuth2 refresh-token
//! grant) and issues ES256 JWTs carrying the requested access, signed by a
//! self-signed certificate that the registry trusts (`rootcertbundle`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rcgen::SigningKey as _;
use serde_json::json;

pub const SERVICE: &str = "georep-test-registry";
pub const ISSUER: &str = "georep-test-issuer";

pub struct TokenServer {
    pub realm: String,
    pub cert_path: PathBuf,
    /// The scopes of every token request, in order.
    pub requests: Arc<Mutex<Vec<Vec<String>>>>,
    /// Every token issued (to check that none is ever printed).
    pub issued: Arc<Mutex<Vec<String>>>,
    st: Arc<St>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct St {
    key: rcgen::KeyPair,
    cert_der: Vec<u8>,
    user: String,
    password: Mutex<String>,
    /// The refresh token accepted by POST, if any.
    refresh_token: Option<String>,
    /// Seconds an issued token lives.
    lifetime: u64,
    requests: Arc<Mutex<Vec<Vec<String>>>>,
    issued: Arc<Mutex<Vec<String>>>,
}

impl TokenServer {
    pub async fn start(dir: &Path, user: &str, password: &str) -> TokenServer {
        Self::start_with(dir, user, password, None, 300).await
    }

    /// Also accepts `refresh_token` by POST; tokens live `lifetime` s.
    pub async fn start_with(
        dir: &Path,
        user: &str,
        password: &str,
        refresh_token: Option<&str>,
        lifetime: u64,
    ) -> TokenServer {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["georep-token-signer".to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let cert_path = dir.join("token-signer.pem");
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(&cert_path, cert.pem()).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let issued = Arc::new(Mutex::new(Vec::new()));
        let st = Arc::new(St {
            key,
            cert_der: cert.der().to_vec(),
            user: user.to_owned(),
            password: Mutex::new(password.to_owned()),
            refresh_token: refresh_token.map(str::to_owned),
            lifetime,
            requests: requests.clone(),
            issued: issued.clone(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let realm = format!("http://{}/token", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/token", axum::routing::get(token).post(refresh))
            .with_state(st.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        TokenServer {
            realm,
            cert_path,
            requests,
            issued,
            st,
            task,
        }
    }

    /// From now on only `password` is accepted.
    pub fn set_password(&self, password: &str) {
        *self.st.password.lock().unwrap() = password.to_owned();
    }

    /// A token for `scopes` living `lifetime` s, as the service would
    /// issue it (for a static bearer token).
    pub fn mint(&self, scopes: &[&str], lifetime: u64) -> String {
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        jwt(&self.st, &scopes, lifetime)
    }
}

async fn token(
    State(st): State<Arc<St>>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let expected = format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", st.user, st.password.lock().unwrap()))
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return (StatusCode::UNAUTHORIZED, "bad credentials").into_response();
    }
    let scopes: Vec<String> = query
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_owned))
        .collect();
    st.requests.lock().unwrap().push(scopes.clone());
    let jwt = jwt(&st, &scopes, st.lifetime);
    axum::Json(json!({"token": jwt, "expires_in": st.lifetime})).into_response()
}

/// The OAuth2 refresh-token grant (form body), answering `access_token`.
async fn refresh(State(st): State<Arc<St>>, Form(form): Form<Vec<(String, String)>>) -> Response {
    let get = |k: &str| {
        form.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    if get("grant_type") != Some("refresh_token")
        || st.refresh_token.is_none()
        || get("refresh_token") != st.refresh_token.as_deref()
    {
        return (StatusCode::UNAUTHORIZED, "bad refresh token").into_response();
    }
    let scopes: Vec<String> = get("scope")
        .unwrap_or_default()
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    st.requests.lock().unwrap().push(scopes.clone());
    let jwt = jwt(&st, &scopes, st.lifetime);
    axum::Json(json!({"access_token": jwt, "expires_in": st.lifetime})).into_response()
}

fn jwt(st: &St, scopes: &[String], lifetime: u64) -> String {
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|s| {
            let (kind, rest) = s.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            Some(json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = json!({"alg": "ES256", "typ": "JWT", "x5c": [STANDARD.encode(&st.cert_der)]});
    let claims = json!({
        "iss": ISSUER, "sub": st.user, "aud": SERVICE,
        "exp": now + lifetime, "nbf": now - 10, "iat": now,
        "jti": format!("{now}-{}", rand_id()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let der = st.key.sign(signing_input.as_bytes()).unwrap();
    let sig = der_to_fixed(&der);
    let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig));
    st.issued.lock().unwrap().push(token.clone());
    token
}

fn rand_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    h.finish()
}

/// An ASN.1 ECDSA signature (SEQUENCE { r INTEGER, s INTEGER }) as JWS
/// wants it: r and s as 32-byte big-endian numbers, concatenated.
fn der_to_fixed(der: &[u8]) -> Vec<u8> {
    let mut i = 2; // SEQUENCE tag and (short) length
    let mut out = Vec::with_capacity(64);
    for _ in 0..2 {
        assert_eq!(der[i], 0x02, "INTEGER expected");
        let len = der[i + 1] as usize;
        let mut n = &der[i + 2..i + 2 + len];
        while n.len() > 32 && n[0] == 0 {
            n = &n[1..];
        }
        out.extend(std::iter::repeat_n(0u8, 32 - n.len()));
        out.extend_from_slice(n);
        i += 2 + len;
    }
    out
}
