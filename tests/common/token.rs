//! A token service for a registry run with `auth: token`: checks basic
//! credentials and issues ES256 JWTs carrying the requested access, signed
//! by a self-signed certificate that the registry trusts (`rootcertbundle`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
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
    password: String,
    requests: Arc<Mutex<Vec<Vec<String>>>>,
}

impl TokenServer {
    pub async fn start(dir: &Path, user: &str, password: &str) -> TokenServer {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["georep-token-signer".to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let cert_path = dir.join("token-signer.pem");
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(&cert_path, cert.pem()).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let st = Arc::new(St {
            key,
            cert_der: cert.der().to_vec(),
            user: user.to_owned(),
            password: password.to_owned(),
            requests: requests.clone(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let realm = format!("http://{}/token", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/token", axum::routing::get(token))
            .with_state(st);
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        TokenServer {
            realm,
            cert_path,
            requests,
            task,
        }
    }
}

async fn token(
    State(st): State<Arc<St>>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let expected = format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", st.user, st.password))
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
        "exp": now + 300, "nbf": now - 10, "iat": now,
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
    let jwt = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig));
    axum::Json(json!({"token": jwt, "expires_in": 300})).into_response()
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
