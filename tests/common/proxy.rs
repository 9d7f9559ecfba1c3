//! A fault-injecting HTTP proxy in front of a real registry: forwards every
//! request, and on the paths it is told about, corrupts a blob's bytes in
//! flight, serves a schema1 manifest instead of the real one, or shrinks
//! listing pages so pagination is exercised.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use georep::digest::Digest;

#[derive(Clone, Default)]
pub struct Faults {
    /// Flip one byte of this blob whenever it is downloaded.
    pub tamper_blob: Option<Digest>,
    /// Serve a schema1 manifest for this (repository, tag).
    pub schema1_tag: Option<(String, String)>,
    /// Replace `n=1000` in listing requests with this page size.
    pub page_size: Option<usize>,
    /// Break every upload of this blob after its first bytes.
    pub cut_upload: Option<Digest>,
    /// Until this time, answer every request `429` with `Retry-After`
    /// of this many seconds.
    pub busy_until: Option<(std::time::Instant, u64)>,
    /// Read upload bodies this slowly (bytes per second): a slow link.
    pub slow_uploads: Option<u64>,
    /// A quota: answer `429` (no Retry-After) to a request arriving while
    /// this many are already open.
    pub max_in_flight: Option<usize>,
}

/// What passed through the proxy, with times.
#[derive(Default)]
pub struct Traffic {
    /// Every request as it arrived, and the status answered.
    pub requests: Vec<(std::time::Instant, Method, String, u16)>,
    /// When each answered request was answered.
    pub answered: Vec<(std::time::Instant, Method, String, u16)>,
    /// Upload body bytes as they passed, in chunks.
    pub uploaded: Vec<(std::time::Instant, usize)>,
}

impl Traffic {
    /// Upload bytes per second between the first and the last chunk.
    pub fn upload_rate(&self) -> (u64, f64) {
        let bytes: u64 = self.uploaded.iter().map(|(_, n)| *n as u64).sum();
        let secs = match (self.uploaded.first(), self.uploaded.last()) {
            (Some(a), Some(b)) => b.0.duration_since(a.0).as_secs_f64(),
            _ => 0.0,
        };
        (bytes, if secs > 0.0 { bytes as f64 / secs } else { 0.0 })
    }
}

pub struct Proxy {
    pub url: String,
    pub hits: Arc<Mutex<Vec<(Method, String)>>>,
    pub traffic: Arc<Mutex<Traffic>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct St {
    upstream: String,
    faults: Faults,
    http: reqwest::Client,
    hits: Arc<Mutex<Vec<(Method, String)>>>,
    traffic: Arc<Mutex<Traffic>>,
    open: Arc<std::sync::atomic::AtomicUsize>,
}

impl Proxy {
    pub async fn start(upstream: &str, faults: Faults) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(Mutex::new(Vec::new()));
        let traffic = Arc::new(Mutex::new(Traffic::default()));
        let st = St {
            open: Arc::default(),
            traffic: traffic.clone(),
            upstream: upstream.trim_end_matches('/').to_owned(),
            faults,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            hits: hits.clone(),
        };
        let app = axum::Router::new().fallback(handle).with_state(st);
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Proxy {
            url,
            hits,
            traffic,
            task,
        }
    }

    pub fn count(&self, method: &Method, path_part: &str) -> usize {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, p)| m == method && p.contains(path_part))
            .count()
    }
}

fn schema1(repo: &str, tag: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"schemaVersion":1,"name":"{repo}","tag":"{tag}","architecture":"amd64","fsLayers":[{{"blobSum":"sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"}}],"history":[{{"v1Compatibility":"{{}}"}}],"signatures":[]}}"#
    ))
}

async fn handle(State(st): State<St>, req: Request) -> Response {
    let method = req.method().clone();
    let mut pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    st.hits.lock().unwrap().push((method.clone(), pq.clone()));
    let arrived = std::time::Instant::now();
    let open = st.open.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    // Counted open until this request has been answered.
    struct Open(Arc<std::sync::atomic::AtomicUsize>);
    impl Drop for Open {
        fn drop(&mut self) {
            self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let _open = Open(st.open.clone());
    let retry_after = match st.faults.busy_until {
        Some((until, secs)) if arrived < until => Some(Some(secs)),
        _ if st.faults.max_in_flight.is_some_and(|max| open >= max) => Some(None),
        _ => None,
    };
    if let Some(secs) = retry_after {
        st.traffic
            .lock()
            .unwrap()
            .requests
            .push((arrived, method, pq, 429));
        let mut r = Response::builder().status(StatusCode::TOO_MANY_REQUESTS);
        if let Some(secs) = secs {
            r = r.header("retry-after", secs.to_string());
        }
        return r.body(Body::from("slow down (test proxy)")).unwrap();
    }

    if let Some((repo, tag)) = &st.faults.schema1_tag {
        let body = schema1(repo, tag);
        let digest = Digest::sha256_of(&body);
        let path = req.uri().path();
        if path == format!("/v2/{repo}/manifests/{tag}")
            || path == format!("/v2/{repo}/manifests/{digest}")
        {
            let mut resp = Response::new(if method == Method::HEAD {
                Body::empty()
            } else {
                Body::from(body.clone())
            });
            let h = resp.headers_mut();
            h.insert(
                "content-type",
                HeaderValue::from_static(
                    "application/vnd.docker.distribution.manifest.v1+prettyjws",
                ),
            );
            h.insert("docker-content-digest", digest.as_str().parse().unwrap());
            h.insert("content-length", body.len().into());
            return resp;
        }
    }
    if let Some(d) = &st.faults.cut_upload
        && method == Method::PUT
        && pq.contains(d.hex())
    {
        // Take some of the body, then fail the request mid-stream.
        let mut body = req.into_body().into_data_stream();
        let mut seen = 0;
        while seen < 64 * 1024 {
            match body.next().await {
                Some(Ok(c)) => seen += c.len(),
                _ => break,
            }
        }
        return Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .header("connection", "close")
            .body(Body::from("upload cut by the test proxy"))
            .unwrap();
    }
    if let Some(n) = st.faults.page_size
        && (pq.contains("/_catalog") || pq.contains("/tags/list"))
    {
        pq = pq.replace("n=1000", &format!("n={n}"));
    }
    let tamper = st.faults.tamper_blob.as_ref().is_some_and(|d| {
        method == Method::GET && req.uri().path().ends_with(&format!("/blobs/{d}"))
    });

    let mut headers = HeaderMap::new();
    for (k, v) in req.headers() {
        if k != "content-length" && k != "transfer-encoding" && k != "connection" {
            headers.insert(k.clone(), v.clone());
        }
    }
    let upstream = format!("{}{pq}", st.upstream);
    let has_body = req
        .headers()
        .get("content-length")
        .is_some_and(|v| v != "0")
        || req.headers().contains_key("transfer-encoding");
    let mut rb = st.http.request(method.clone(), &upstream).headers(headers);
    if has_body {
        if let Some(len) = req.headers().get("content-length") {
            rb = rb.header("content-length", len.clone());
        }
        let traffic = st.traffic.clone();
        let slow = st.faults.slow_uploads;
        rb = rb.body(reqwest::Body::wrap_stream(
            req.into_body()
                .into_data_stream()
                .then(move |c| async move {
                    if let (Some(rate), Ok(c)) = (slow, &c) {
                        let secs = c.len() as f64 / rate as f64;
                        tokio::time::sleep(std::time::Duration::from_secs_f64(secs)).await;
                    }
                    c
                })
                .inspect(move |c| {
                    if let Ok(c) = c {
                        traffic
                            .lock()
                            .unwrap()
                            .uploaded
                            .push((std::time::Instant::now(), c.len()));
                    }
                }),
        ));
    }
    let (log_method, log_pq) = (method.clone(), pq.clone());
    let up = match rb.send().await {
        Ok(r) => r,
        Err(e) => {
            return Response::builder()
                .status(StatusCode::BAD_GATEWAY)
                .body(Body::from(e.to_string()))
                .unwrap();
        }
    };
    {
        let mut t = st.traffic.lock().unwrap();
        let status = up.status().as_u16();
        t.requests
            .push((arrived, log_method.clone(), log_pq.clone(), status));
        t.answered
            .push((std::time::Instant::now(), log_method, log_pq, status));
    }
    let mut builder = Response::builder().status(up.status());
    for (k, v) in up.headers() {
        if k != "transfer-encoding" && k != "connection" {
            builder = builder.header(k, v);
        }
    }
    let mut first = true;
    let stream = up.bytes_stream().map(move |chunk| {
        let chunk = chunk?;
        if tamper && first && !chunk.is_empty() {
            first = false;
            let mut v = chunk.to_vec();
            v[0] ^= 0xff;
            return Ok::<Bytes, reqwest::Error>(Bytes::from(v));
        }
        Ok(chunk)
    });
    builder.body(Body::from_stream(stream)).unwrap()
}
