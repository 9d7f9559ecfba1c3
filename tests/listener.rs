//! The API's listener against clients that misbehave: headers sent half
//! way, and more connections than it serves at once.
// A test: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use georep::api::serve::{Limits, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn server(limits: Limits) -> (std::net::SocketAddr, georep::shutdown::Trigger) {
    let app = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok\n" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (trigger, signal) = georep::shutdown::channel();
    tokio::spawn(serve(listener, app, limits, signal));
    (addr, trigger)
}

/// Half a header block, then silence.
async fn stalled(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    s
}

/// Whether the server closed `s` (EOF or reset) within `within`.
async fn closed(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 512];
    match tokio::time::timeout(within, s.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => {
            // An error answer (408) before the close is fine: read on.
            matches!(
                tokio::time::timeout(within, s.read(&mut buf)).await,
                Ok(Ok(0)) | Ok(Err(_))
            )
        }
        Err(_) => false,
    }
}

async fn healthz(addr: std::net::SocketAddr) -> reqwest::Result<reqwest::Response> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap()
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_headers_time_out() {
    let limits = Limits {
        header_timeout: Duration::from_secs(1),
        max_connections: 512,
    };
    let (addr, _stop) = server(limits).await;
    let mut conns = Vec::new();
    for _ in 0..300 {
        conns.push(stalled(addr).await);
    }
    // Served meanwhile: the stalled ones hold no one else up.
    assert_eq!(healthz(addr).await.unwrap().status(), 200);
    let started = Instant::now();
    for c in &mut conns {
        assert!(
            closed(c, Duration::from_secs(5)).await,
            "a half-sent request was still open {:?} later",
            started.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_wait_their_turn() {
    let limits = Limits {
        header_timeout: Duration::from_secs(2),
        max_connections: 4,
    };
    let (addr, _stop) = server(limits).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(stalled(addr).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        healthz(addr).await.is_err(),
        "a fifth connection was served while four were held"
    );
    // The held ones time out, and the next client is served.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match healthz(addr).await {
            Ok(r) => {
                assert_eq!(r.status(), 200);
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "never served: {e}"),
        }
    }
}
