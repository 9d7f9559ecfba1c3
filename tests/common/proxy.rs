//! A fault-injecting HTTP proxy in front of a real registry: forwards every
//! request, and on the paths it is told about, corrupts a blob's bytes in
//! flight, serves a schema1 manifest instead of the real one, or shrinks
//! listing pages so pagination is exercised. With [`Chaos`] it faults a
//! share of all requests on a seeded schedule: 5xx, 429 with Retry-After,
//! connections reset mid-body, truncated bodies, stalls longer than the
//! client's timeouts, and flipped bytes in downloaded content.

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
    /// Break only this many uploads of `cut_upload` (none: every one).
    pub cut_upload_times: Option<usize>,
    /// Until this time, answer every request `429` with `Retry-After`
    /// of this many seconds.
    pub busy_until: Option<(std::time::Instant, u64)>,
    /// Read upload bodies this slowly (bytes per second): a slow link.
    pub slow_uploads: Option<u64>,
    /// A quota: answer `429` (no Retry-After) to a request arriving while
    /// this many are already open.
    pub max_in_flight: Option<usize>,
    /// Random faults on a seeded schedule.
    pub chaos: Option<Chaos>,
    /// This fault on the first GET whose path contains the string, and on
    /// no other (with or without `chaos`).
    pub first: Option<(String, Fault)>,
    /// Names added to every catalog page and every tag list: a primary
    /// that lists hostile names.
    pub inject_names: Option<(Vec<String>, Vec<String>)>,
}

/// Faults `rate` of the requests: whether the n-th request through the
/// proxy is faulted, and how, depends only on `seed` and n.
#[derive(Clone, Copy, Debug)]
pub struct Chaos {
    pub seed: u64,
    pub rate: f64,
    /// How long a stall lasts: longer than the client's timeouts.
    pub stall: std::time::Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// 500 or 503, not forwarded.
    ServerError,
    /// 429 with `Retry-After: 1`, not forwarded.
    TooMany,
    /// The connection breaks: mid-upload, or mid-download.
    Reset,
    /// The answer stops at half its declared length.
    Truncate,
    /// Nothing at all for `stall`, then the request goes on.
    StallHead,
    /// The first bytes of the answer, then nothing for `stall`.
    StallBody,
    /// One byte of a downloaded body inverted.
    Flip,
}

/// A stall of `Faults::first` without `chaos`.
const FIRST_STALL: std::time::Duration = std::time::Duration::from_secs(3);

pub const FAULTS: [Fault; 7] = [
    Fault::ServerError,
    Fault::TooMany,
    Fault::Reset,
    Fault::Truncate,
    Fault::StallHead,
    Fault::StallBody,
    Fault::Flip,
];

impl Chaos {
    /// The fault for request number `n`, if any.
    pub fn pick(&self, n: u64) -> Option<Fault> {
        // SplitMix64 of (seed, n): independent, well-spread draws.
        let mut z = self
            .seed
            .wrapping_add(n.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
        (unit < self.rate).then(|| FAULTS[(z % FAULTS.len() as u64) as usize])
    }
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
    /// Every chaos fault injected, with its request.
    pub faults: Vec<(Fault, Method, String)>,
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

    /// How many faults of each kind were injected.
    pub fn fault_counts(&self) -> std::collections::BTreeMap<Fault, usize> {
        let mut out = std::collections::BTreeMap::new();
        for (f, _, _) in &self.faults {
            *out.entry(*f).or_default() += 1;
        }
        out
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
    /// Requests so far (the chaos schedule's index).
    seen: Arc<std::sync::atomic::AtomicU64>,
    /// Uploads cut so far.
    cut: Arc<std::sync::atomic::AtomicUsize>,
    /// Whether `first` has been applied.
    first_done: Arc<std::sync::atomic::AtomicBool>,
    /// Body faults drawn for answers without a body, for later ones.
    pending: Arc<Mutex<Vec<(Fault, std::time::Duration)>>>,
}

impl Proxy {
    pub async fn start(upstream: &str, faults: Faults) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(Mutex::new(Vec::new()));
        let traffic = Arc::new(Mutex::new(Traffic::default()));
        let st = St {
            open: Arc::default(),
            seen: Arc::default(),
            cut: Arc::default(),
            first_done: Arc::default(),
            pending: Arc::default(),
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
    let n = st.seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let mut chaos = st
        .faults
        .chaos
        .and_then(|c| c.pick(n).map(|f| (f, c.stall)));
    if let Some((fragment, fault)) = &st.faults.first
        && method == Method::GET
        && req.uri().path().contains(fragment.as_str())
        && !st
            .first_done
            .swap(true, std::sync::atomic::Ordering::SeqCst)
    {
        let stall = st.faults.chaos.map_or(FIRST_STALL, |c| c.stall);
        chaos = Some((*fault, stall));
    }
    let record = |fault: Fault, method: &Method, pq: &str| {
        st.traffic
            .lock()
            .unwrap()
            .faults
            .push((fault, method.clone(), pq.to_owned()));
    };
    match chaos {
        Some((f @ (Fault::ServerError | Fault::TooMany), _)) => {
            record(f, &method, &pq);
            let (status, retry) = match (f, n % 2) {
                (Fault::TooMany, _) => (StatusCode::TOO_MANY_REQUESTS, Some("1")),
                (_, 0) => (StatusCode::INTERNAL_SERVER_ERROR, None),
                _ => (StatusCode::SERVICE_UNAVAILABLE, None),
            };
            let mut r = Response::builder().status(status);
            if let Some(secs) = retry {
                r = r.header("retry-after", secs);
            }
            return r
                .body(Body::from("fault injected by the test proxy"))
                .unwrap();
        }
        Some((Fault::StallHead, stall)) => {
            record(Fault::StallHead, &method, &pq);
            tokio::time::sleep(stall).await;
            chaos = None;
        }
        _ => {}
    }
    let sends_body = req
        .headers()
        .get("content-length")
        .is_some_and(|v| v != "0")
        || req.headers().contains_key("transfer-encoding");
    if let Some((Fault::Reset, _)) = chaos
        && sends_body
    {
        // Take some of the upload, then break the connection.
        record(Fault::Reset, &method, &pq);
        let mut body = req.into_body().into_data_stream();
        if let Some(Ok(_)) = body.next().await {}
        return Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .header("connection", "close")
            .body(Body::from_stream(futures::stream::once(async {
                Err::<Bytes, std::io::Error>(std::io::Error::other("reset by the test proxy"))
            })))
            .unwrap();
    }
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
        && st
            .faults
            .cut_upload_times
            .is_none_or(|times| st.cut.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < times)
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
    let has_body = sends_body;
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
        t.answered.push((
            std::time::Instant::now(),
            log_method.clone(),
            log_pq.clone(),
            status,
        ));
    }
    let mut builder = Response::builder().status(up.status());
    if let Some((repositories, tags)) = &st.faults.inject_names
        && up.status() == StatusCode::OK
        && (log_pq.starts_with("/v2/_catalog") || log_pq.contains("/tags/list"))
    {
        let (key, extra) = if log_pq.starts_with("/v2/_catalog") {
            ("repositories", repositories)
        } else {
            ("tags", tags)
        };
        let mut json: serde_json::Value = up.json().await.unwrap();
        if let Some(list) = json[key].as_array_mut() {
            list.extend(extra.iter().map(|n| serde_json::Value::from(n.as_str())));
        }
        return builder
            .header("content-type", "application/json")
            .body(Body::from(json.to_string()))
            .unwrap();
    }
    for (k, v) in up.headers() {
        if k != "transfer-encoding" && k != "connection" {
            builder = builder.header(k, v);
        }
    }
    // Faults in the answer's body need one: drawn for an answer without
    // a body, they wait for the next answer that has one (a flip, for
    // the next download).
    let declared = up
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let has_answer_body = log_method != Method::HEAD && declared.is_none_or(|n| n > 0);
    let fits = |f: Fault| has_answer_body && (f != Fault::Flip || log_method == Method::GET);
    let body_fault = {
        let mut pending = st.pending.lock().unwrap();
        match chaos {
            Some((f, stall)) if fits(f) => Some((f, stall)),
            Some(drawn) => {
                pending.push(drawn);
                None
            }
            None => pending
                .iter()
                .position(|(f, _)| fits(*f))
                .map(|i| pending.remove(i)),
        }
    };
    if let Some((f, _)) = body_fault {
        record(f, &log_method, &log_pq);
    }
    let mut first = true;
    let stream = up.bytes_stream().map(move |chunk| {
        let chunk = chunk?;
        if (tamper || matches!(body_fault, Some((Fault::Flip, _)))) && first && !chunk.is_empty() {
            first = false;
            let mut v = chunk.to_vec();
            let i = v.len() / 2;
            v[i] ^= 0xff;
            return Ok::<Bytes, reqwest::Error>(Bytes::from(v));
        }
        Ok(chunk)
    });
    let Some((fault, stall)) = body_fault.filter(|(f, _)| *f != Fault::Flip) else {
        return builder.body(Body::from_stream(stream)).unwrap();
    };
    // Reset, Truncate, StallBody: pass half (of the declared length, or of
    // the first chunk), then break, end, or stall.
    let keep = declared.map(|n| n / 2);
    let faulted = async_stream_of(stream, keep, fault, stall);
    builder.body(Body::from_stream(faulted)).unwrap()
}

/// `stream` up to `keep` bytes (or its first half-chunk), then per `fault`:
/// an error (the connection breaks), the end (short of the declared
/// length), or a pause of `stall` before the rest.
fn async_stream_of(
    stream: impl futures::Stream<Item = Result<Bytes, reqwest::Error>> + Send + 'static,
    keep: Option<u64>,
    fault: Fault,
    stall: std::time::Duration,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    enum Next {
        Pass,
        /// Pause, then send this.
        Stalled(Bytes),
        Done,
    }
    let stream = Box::pin(stream);
    futures::stream::unfold(
        (stream, 0u64, Next::Pass),
        move |(mut stream, sent, next)| async move {
            match next {
                Next::Done => return None,
                Next::Stalled(rest) => {
                    tokio::time::sleep(stall).await;
                    return Some((Ok(rest), (stream, sent, Next::Pass)));
                }
                Next::Pass => {}
            }
            let chunk = match stream.next().await {
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    return Some((Err(std::io::Error::other(e)), (stream, sent, Next::Done)));
                }
                None => return None,
            };
            let limit = keep.unwrap_or(chunk.len() as u64 / 2);
            if sent >= limit || sent + chunk.len() as u64 <= limit {
                // Before the fault's point, or after a stall: pass it on.
                let n = chunk.len() as u64;
                return Some((Ok(chunk), (stream, sent + n, Next::Pass)));
            }
            let cut = (limit - sent) as usize;
            let head = chunk.slice(..cut);
            let after = match fault {
                Fault::StallBody => Next::Stalled(chunk.slice(cut..)),
                Fault::Truncate => Next::Done,
                _ => {
                    return Some((
                        Err(std::io::Error::other("connection reset by the test proxy")),
                        (stream, limit, Next::Done),
                    ));
                }
            };
            Some((Ok(head), (stream, limit, after)))
        },
    )
}
