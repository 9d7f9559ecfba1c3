//! Serving the API: an accept loop with the limits a listener facing a
//! network needs (axum's own `serve` has none). A client has
//! [`HEADER_TIMEOUT`] to send a request's headers (an idle kept-alive
//! connection as well), at most [`MAX_CONNECTIONS`] connections are served
//! at once (more wait in the kernel's backlog), and on shutdown the
//! connections finish their requests for at most [`DRAIN`]. Request bodies
//! have their own time limit where they are read ([`BODY_TIMEOUT`]).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::shutdown::Signal;

/// Time to send a request's headers (and for an idle connection to send
/// its next request).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time to send a request's body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 512;
/// How long open connections may finish their requests at shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// The listener's limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub header_timeout: Duration,
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: HEADER_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
        }
    }
}

/// Serves `app` on `listener` until `stop`, then drains.
pub async fn serve(listener: TcpListener, app: Router, limits: Limits, mut stop: Signal) {
    let limit = limits.max_connections.max(1);
    let permits = Arc::new(Semaphore::new(limit));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let mut full_said = false;
    loop {
        // A permit first: past the limit, new connections wait in the
        // backlog instead of each costing a task and a descriptor here.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stop.wait() => break,
        };
        if permits.available_permits() == 0 && !full_said {
            tracing::warn!(
                limit,
                "the API serves its maximum of connections; more wait"
            );
            full_said = true;
        } else if permits.available_permits() > limit / 2 {
            full_said = false;
        }
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: pause, not spin.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.wait() => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, "API connection ended: {e}");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!(
            "API connections still open after {} s; leaving them",
            DRAIN.as_secs()
        );
    }
}
