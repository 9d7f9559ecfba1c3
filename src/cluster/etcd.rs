//! The etcd v3 API through etcd's own JSON gateway (`POST /v3/...`, served
//! on every etcd client port since 3.3; 3.4 is what the tests run): the
//! handful of calls membership needs — leases, put, a prefix read, a
//! prefix watch — over the HTTP client georep already has, so building
//! georep needs no protobuf compiler. Keys and values travel base64, 64-bit
//! numbers as strings, as the gateway has them. Each call tries the
//! endpoints in turn, so one etcd member down is not an outage.

use base64::Engine as _;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::lock::Locked;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// A watch stream's line, at most (a member key is small).
const MAX_LINE: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("no etcd endpoint answered {path} ({tried}): {last}")]
    Unreachable {
        path: &'static str,
        tried: String,
        last: String,
    },
    #[error("etcd at {endpoint} refused {path}: {message}")]
    Refused {
        endpoint: String,
        path: &'static str,
        message: String,
    },
    #[error("etcd at {endpoint}: {path} answered something unexpected: {detail}")]
    Unexpected {
        endpoint: String,
        path: &'static str,
        detail: String,
    },
}

/// One key as read or watched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
}

/// One change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Put(Kv),
    Delete { key: String, mod_revision: i64 },
}

/// etcd's own user and password (`etcdctl user add`), exchanged for a
/// token that every request carries.
#[derive(Clone)]
pub struct EtcdAuth {
    pub username: String,
    pub password: crate::config::Secret,
}

/// A client of one etcd cluster.
#[derive(Clone)]
pub struct Etcd {
    http: reqwest::Client,
    endpoints: Vec<String>,
    auth: Option<EtcdAuth>,
    /// The token of the last authentication, while etcd takes it.
    token: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl Etcd {
    /// `endpoints` as `http://host:port` (a bare `host:port` is taken as
    /// http); `http` carries the timeouts and any TLS material.
    pub fn new(endpoints: &[String], http: reqwest::Client) -> Etcd {
        Etcd {
            http,
            endpoints: endpoints
                .iter()
                .map(|e| {
                    let e = e.trim_end_matches('/');
                    if e.contains("://") {
                        e.to_owned()
                    } else {
                        format!("http://{e}")
                    }
                })
                .collect(),
            auth: None,
            token: Default::default(),
        }
    }

    /// Signs in as `auth` (etcd with `auth enable`).
    pub fn with_auth(mut self, auth: Option<EtcdAuth>) -> Etcd {
        self.auth = auth;
        self
    }

    pub fn endpoints(&self) -> String {
        self.endpoints.join(",")
    }

    /// The response of the first endpoint that answers.
    async fn send(
        &self,
        path: &'static str,
        body: &Value,
    ) -> Result<(String, reqwest::Response), EtcdError> {
        let mut last = String::new();
        for e in &self.endpoints {
            let mut signed_in_again = false;
            loop {
                let mut req = self.http.post(format!("{e}{path}")).json(body);
                if let Some(token) = self.current_token(e).await? {
                    req = req.header(reqwest::header::AUTHORIZATION, token);
                }
                match req.send().await {
                    Ok(resp) if resp.status().is_success() => return Ok((e.clone(), resp)),
                    Ok(resp) => {
                        let status = resp.status();
                        let text = resp.text().await.unwrap_or_default();
                        // An expired token (etcd's simple tokens live five
                        // minutes): sign in again, once.
                        if self.auth.is_some() && !signed_in_again && token_refused(status, &text) {
                            self.token.locked().take();
                            signed_in_again = true;
                            continue;
                        }
                        // A member that is up but cannot serve (no leader)
                        // answers 5xx: the next one may.
                        if status.is_server_error() {
                            last = format!(
                                "{e}: {status} {}",
                                text.chars().take(200).collect::<String>()
                            );
                            break;
                        }
                        return Err(EtcdError::Refused {
                            endpoint: e.clone(),
                            path,
                            message: format!(
                                "{status} {}",
                                text.chars().take(300).collect::<String>()
                            ),
                        });
                    }
                    Err(err) => {
                        last = format!("{e}: {err}");
                        break;
                    }
                }
            }
        }
        Err(EtcdError::Unreachable {
            path,
            tried: self.endpoints(),
            last,
        })
    }

    /// The token to send to `endpoint`, signing in first when there is none.
    async fn current_token(&self, endpoint: &str) -> Result<Option<String>, EtcdError> {
        let Some(auth) = &self.auth else {
            return Ok(None);
        };
        if let Some(t) = self.token.locked().clone() {
            return Ok(Some(t));
        }
        const PATH: &str = "/v3/auth/authenticate";
        let resp = self
            .http
            .post(format!("{endpoint}{PATH}"))
            .json(&json!({ "name": auth.username, "password": auth.password.expose() }))
            .send()
            .await
            .map_err(|err| EtcdError::Unreachable {
                path: PATH,
                tried: endpoint.to_owned(),
                last: err.to_string(),
            })?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        let Some(token) = v["token"].as_str().filter(|_| status.is_success()) else {
            return Err(EtcdError::Refused {
                endpoint: endpoint.to_owned(),
                path: PATH,
                message: format!(
                    "signing in as {:?}: {status} {}",
                    auth.username,
                    v["message"].as_str().or(v["error"].as_str()).unwrap_or("")
                ),
            });
        };
        *self.token.locked() = Some(token.to_owned());
        Ok(Some(token.to_owned()))
    }

    async fn call(&self, path: &'static str, body: Value) -> Result<Value, EtcdError> {
        let (endpoint, resp) = self.send(path, &body).await?;
        resp.json::<Value>()
            .await
            .map_err(|e| EtcdError::Unexpected {
                endpoint,
                path,
                detail: e.to_string(),
            })
    }

    /// A new lease of `ttl_secs`; its id.
    pub async fn grant(&self, ttl_secs: u64) -> Result<i64, EtcdError> {
        let v = self
            .call("/v3/lease/grant", json!({ "TTL": ttl_secs.to_string() }))
            .await?;
        number(&v["ID"]).ok_or_else(|| self.unexpected("/v3/lease/grant", &v))
    }

    /// Renews lease `id` once; its remaining TTL (0: the lease is gone).
    pub async fn keep_alive(&self, id: i64) -> Result<i64, EtcdError> {
        let (endpoint, resp) = self
            .send("/v3/lease/keepalive", &json!({ "ID": id.to_string() }))
            .await?;
        let mut lines = Lines::new(resp);
        let line = lines.next().await.map_err(|detail| EtcdError::Unexpected {
            endpoint: endpoint.clone(),
            path: "/v3/lease/keepalive",
            detail,
        })?;
        let v = line.ok_or_else(|| EtcdError::Unexpected {
            endpoint,
            path: "/v3/lease/keepalive",
            detail: "no answer".to_owned(),
        })?;
        Ok(number(&v["result"]["TTL"]).unwrap_or(0))
    }

    pub async fn revoke(&self, id: i64) -> Result<(), EtcdError> {
        self.call("/v3/lease/revoke", json!({ "ID": id.to_string() }))
            .await
            .map(|_| ())
    }

    /// Writes `key`, attached to `lease` when given.
    pub async fn put(&self, key: &str, value: &[u8], lease: Option<i64>) -> Result<(), EtcdError> {
        let mut body = json!({ "key": B64.encode(key), "value": B64.encode(value) });
        if let Some(l) = lease {
            body["lease"] = json!(l.to_string());
        }
        self.call("/v3/kv/put", body).await.map(|_| ())
    }

    /// Every key starting with `prefix`, and the revision they were read at.
    pub async fn range_prefix(&self, prefix: &str) -> Result<(i64, Vec<Kv>), EtcdError> {
        let v = self
            .call(
                "/v3/kv/range",
                json!({ "key": B64.encode(prefix), "range_end": B64.encode(prefix_end(prefix)) }),
            )
            .await?;
        let revision = number(&v["header"]["revision"]).unwrap_or(0);
        let kvs = v["kvs"]
            .as_array()
            .map(|a| a.iter().filter_map(kv).collect())
            .unwrap_or_default();
        Ok((revision, kvs))
    }

    /// Watches every key starting with `prefix` from revision `from` on.
    pub async fn watch_prefix(&self, prefix: &str, from: i64) -> Result<Watch, EtcdError> {
        let body = json!({ "create_request": {
            "key": B64.encode(prefix),
            "range_end": B64.encode(prefix_end(prefix)),
            "start_revision": from.to_string(),
        }});
        let (endpoint, resp) = self.send("/v3/watch", &body).await?;
        Ok(Watch {
            endpoint,
            lines: Lines::new(resp),
        })
    }

    /// Writes `key` under `lease` unless the key exists; returns the
    /// holder's value when it does (etcd's election by create revision).
    pub async fn create_if_absent(
        &self,
        key: &str,
        value: &[u8],
        lease: i64,
    ) -> Result<Option<Kv>, EtcdError> {
        let k = B64.encode(key);
        let v = self
            .call(
                "/v3/kv/txn",
                json!({
                    "compare": [{ "key": k, "result": "EQUAL", "target": "CREATE", "create_revision": "0" }],
                    "success": [{ "request_put": { "key": k, "value": B64.encode(value), "lease": lease.to_string() } }],
                    "failure": [{ "request_range": { "key": k } }],
                }),
            )
            .await?;
        if v["succeeded"].as_bool() == Some(true) {
            return Ok(None);
        }
        Ok(v["responses"][0]["response_range"]["kvs"][0]
            .as_object()
            .and_then(|_| kv(&v["responses"][0]["response_range"]["kvs"][0])))
    }

    fn unexpected(&self, path: &'static str, v: &Value) -> EtcdError {
        EtcdError::Unexpected {
            endpoint: self.endpoints(),
            path,
            detail: v.to_string().chars().take(300).collect(),
        }
    }
}

/// A watch in progress.
pub struct Watch {
    endpoint: String,
    lines: Lines,
}

impl Watch {
    /// The next batch of changes; `Ok(None)` when the stream ended (etcd
    /// went away, or cancelled the watch: compacted past `from`).
    pub async fn next(&mut self) -> Result<Option<Vec<Event>>, EtcdError> {
        loop {
            let line = self
                .lines
                .next()
                .await
                .map_err(|detail| EtcdError::Unexpected {
                    endpoint: self.endpoint.clone(),
                    path: "/v3/watch",
                    detail,
                })?;
            let Some(v) = line else { return Ok(None) };
            let r = &v["result"];
            if r["canceled"].as_bool() == Some(true) || v.get("error").is_some() {
                return Ok(None);
            }
            let Some(events) = r["events"].as_array() else {
                continue; // the `created` answer, or progress
            };
            let out = events
                .iter()
                .filter_map(|e| {
                    let kv = &e["kv"];
                    if e["type"].as_str() == Some("DELETE") {
                        Some(Event::Delete {
                            key: text(&kv["key"])?,
                            mod_revision: number(&kv["mod_revision"]).unwrap_or(0),
                        })
                    } else {
                        self::kv(kv).map(Event::Put)
                    }
                })
                .collect();
            return Ok(Some(out));
        }
    }
}

/// Newline-delimited JSON objects from a streamed response.
struct Lines {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: Vec<u8>,
}

impl Lines {
    fn new(resp: reqwest::Response) -> Lines {
        Lines {
            body: resp.bytes_stream().boxed(),
            buf: Vec::new(),
        }
    }

    async fn next(&mut self) -> Result<Option<Value>, String> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(&line)
                    .map(Some)
                    .map_err(|e| format!("not JSON: {e}"));
            }
            match self.body.next().await {
                Some(Ok(chunk)) => {
                    self.buf.extend_from_slice(&chunk);
                    if self.buf.len() > MAX_LINE {
                        return Err(format!("a line over {MAX_LINE} bytes"));
                    }
                }
                Some(Err(e)) => return Err(e.to_string()),
                None if self.buf.iter().all(u8::is_ascii_whitespace) => return Ok(None),
                None => {
                    let rest = std::mem::take(&mut self.buf);
                    return serde_json::from_slice(&rest)
                        .map(Some)
                        .map_err(|e| format!("not JSON: {e}"));
                }
            }
        }
    }
}

/// Whether etcd refused the request's token (expired, or etcd restarted).
fn token_refused(status: reqwest::StatusCode, text: &str) -> bool {
    status == reqwest::StatusCode::UNAUTHORIZED
        || text.contains("invalid auth token")
        || text.contains("user name is empty")
}

/// The end of the range of keys starting with `prefix` (etcd's rule: the
/// prefix with its last byte incremented).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A gateway number: a JSON string (64-bit) or number.
fn number(v: &Value) -> Option<i64> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_i64())
}

fn text(v: &Value) -> Option<String> {
    B64.decode(v.as_str()?)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
}

fn kv(v: &Value) -> Option<Kv> {
    Some(Kv {
        key: text(&v["key"])?,
        value: v["value"]
            .as_str()
            .and_then(|s| B64.decode(s).ok())
            .unwrap_or_default(),
        mod_revision: number(&v["mod_revision"]).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_and_numbers() {
        assert_eq!(prefix_end("/georep/members/"), b"/georep/members0".to_vec());
        assert_eq!(prefix_end("ab"), b"ac".to_vec());
        assert_eq!(
            number(&json!("7587899328656266506")),
            Some(7587899328656266506)
        );
        assert_eq!(number(&json!(5)), Some(5));
        assert_eq!(number(&json!(null)), None);
    }
}
