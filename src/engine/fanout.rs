//! One read, many writes (DESIGN invariant 8): a blob is streamed from the
//! primary once and written to every region that lacks it, concurrently,
//! without staging it anywhere.
//!
//! The reader hashes and counts every chunk as it passes (invariant 2) and
//! hands it to one bounded queue per region; each region's streaming `PUT`
//! drains its queue. Bounded queues give backpressure. Chunks are cut into
//! pieces of at most [`FANOUT_PIECE_BYTES`] before they are queued, because
//! the HTTP client delivers reads of up to ~400 KiB: queues counted in
//! pieces bound memory in bytes (about [`FANOUT_QUEUE_PIECES`] x 64 KiB per
//! blob in flight, shared by all its regions), whatever the blob size.
//!
//! The newest chunk is held back until the next one arrives, and the last
//! one until the whole stream has been verified. A corrupt blob therefore
//! never reaches a region complete: its upload is aborted short of its
//! `Content-Length` and the registry discards it.
//!
//! A region whose upload fails drops out without disturbing the others; a
//! region that accepts nothing for the stall timeout is cut off the same way.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::Method;
use tokio::sync::mpsc;

use super::facts::RegionId;
use crate::digest::Verifier;
use crate::registry::error::display_url;
use crate::registry::manifest::Descriptor;
use crate::registry::{Registry, RegistryError, UploadSession};

/// Pieces queued per region before the reader waits for it.
pub const FANOUT_QUEUE_PIECES: usize = 4;
/// The largest piece handed to a region's upload.
pub const FANOUT_PIECE_BYTES: usize = 256 * 1024;
/// How long, in all, one region's full queue may hold back the others of a
/// shared read (they have room and wait for it) before it leaves the read
/// and copies the blob on its own — if that is also at least
/// [`HELD_SHARE`] of the read's time so far. That bounds the drift between the
/// fastest and the slowest branch to about one second of the slow one's
/// bandwidth plus its queue (1 MiB) and the socket buffers, and the waste
/// (what it uploaded and sends again) to the same: measured 12.7 MiB for a
/// 40 MiB layer on a 6 MiB/s loopback link. Regions slow by configuration
/// (a lower `max_bytes_per_sec`) never share a read with faster ones in the
/// first place (`Engine::speed_classes`).
pub const MAX_DRIFT: Duration = Duration::from_secs(1);
/// The share of a read's time a lane must have held the others back to be
/// let go: 3/4, i.e. a region about four times slower than its peers. At
/// 1/2 (twice as slow) a busy 2-core machine running several registries
/// split shared reads that should have stayed shared.
pub const HELD_SHARE: f64 = 0.75;

/// One region taking part in a fan-out.
pub struct Target {
    pub region: RegionId,
    pub registry: Arc<Registry>,
    pub session: UploadSession,
}

type Chunk = Result<Bytes, io::Error>;

/// Streams `desc` from `repository` on the primary into every target's
/// upload session. Returns one result per target, in target order.
pub async fn fan_out(
    primary: &Registry,
    repository: &str,
    desc: &Descriptor,
    targets: Vec<Target>,
    stall: Duration,
    finish_timeout: Duration,
) -> Vec<(RegionId, Result<(), RegistryError>)> {
    let digest = &desc.digest;
    let mut stream = match primary.get_blob(repository, digest).await {
        Ok(s) => s,
        Err(e) => {
            return fail_all(&targets, &e).await;
        }
    };
    if let Some(len) = stream.size
        && len != desc.size
    {
        let e = RegistryError::Corrupt {
            url: display_url(&stream.url),
            digest: digest.clone(),
            mismatch: crate::digest::Mismatch::Size {
                expected: desc.size,
                actual: len,
            },
        };
        return fail_all(&targets, &e).await;
    }

    // Start every upload; each drains its own queue.
    let mut lanes: Vec<Lane> = Vec::with_capacity(targets.len());
    for t in &targets {
        let (tx, rx) = mpsc::channel::<Chunk>(FANOUT_QUEUE_PIECES);
        // The region's byte limits are awaited as its upload takes each
        // piece: a limited region slows only its own lane.
        let limits = t.registry.limits().clone();
        let body = reqwest::Body::wrap_stream(futures::stream::unfold(
            (rx, limits),
            |(mut rx, limits)| async move {
                let item = rx.recv().await?;
                if let Ok(piece) = &item
                    && limits.meters_bytes()
                {
                    limits.bytes(piece.len()).await;
                }
                Some((item, (rx, limits)))
            },
        ));
        let registry = t.registry.clone();
        let session = t.session.clone();
        let (d, size) = (digest.clone(), desc.size);
        let task = tokio::spawn(async move { registry.put_upload(&session, &d, size, body).await });
        lanes.push(Lane {
            region: t.region,
            url: display_url(&t.session.url),
            tx: Some(tx),
            task,
            failure: None,
            held_back: Duration::ZERO,
        });
    }

    let started = Instant::now();
    let mut verifier = Verifier::new(digest, Some(desc.size));
    let mut held: Option<Bytes> = None;
    let source_error: Option<RegistryError> = loop {
        let next = match tokio::time::timeout(stall, stream.next()).await {
            Err(_) => {
                break Some(RegistryError::Stalled {
                    method: Method::GET,
                    url: display_url(&stream.url),
                    after: stall,
                });
            }
            Ok(n) => n,
        };
        match next {
            None => break None,
            Some(Err(e)) => break Some(e),
            Some(Ok(chunk)) => {
                if let Err(mismatch) = verifier.update(&chunk) {
                    break Some(RegistryError::Corrupt {
                        url: display_url(&stream.url),
                        digest: digest.clone(),
                        mismatch,
                    });
                }
                // Zero-copy slices of the chunk; the last is held back.
                let mut rest = chunk;
                while !rest.is_empty() {
                    let piece = rest.split_to(rest.len().min(FANOUT_PIECE_BYTES));
                    if let Some(prev) = held.replace(piece) {
                        send_to_all(&mut lanes, prev, stall, started).await;
                    }
                }
                if lanes.iter().all(|l| l.tx.is_none()) {
                    // Every region dropped out: stop reading.
                    break None;
                }
            }
        }
    };
    let source_url = display_url(&stream.url);
    drop(stream);

    let source_error = match source_error {
        Some(e) => Some(e),
        None if lanes.iter().all(|l| l.tx.is_none()) => None,
        None => verifier
            .finish()
            .err()
            .map(|mismatch| RegistryError::Corrupt {
                url: source_url.clone(),
                digest: digest.clone(),
                mismatch,
            }),
    };

    match &source_error {
        None => {
            if let Some(last) = held.take() {
                send_to_all(&mut lanes, last, stall, started).await;
            }
        }
        Some(e) => {
            // Abort every upload short of its length: nothing is committed.
            for lane in &mut lanes {
                if let Some(tx) = lane.tx.take() {
                    let _ = tx.try_send(Err(io::Error::other(e.to_string())));
                }
            }
        }
    }
    // Closing the queues ends each body.
    for lane in &mut lanes {
        lane.tx = None;
    }

    let mut out = Vec::with_capacity(lanes.len());
    for (lane, target) in lanes.into_iter().zip(&targets) {
        let Lane {
            region,
            task,
            failure,
            ..
        } = lane;
        let result = if let Some(e) = &source_error {
            task.abort();
            Err(e.clone())
        } else if let Some(f) = failure {
            task.abort();
            Err(f)
        } else {
            match tokio::time::timeout(finish_timeout, task).await {
                Err(_) => Err(RegistryError::Stalled {
                    method: Method::PUT,
                    url: display_url(&target.session.url),
                    after: finish_timeout,
                }),
                Ok(Err(join)) => Err(RegistryError::Protocol {
                    method: Method::PUT,
                    url: display_url(&target.session.url),
                    reason: format!("upload task failed: {join}"),
                }),
                Ok(Ok(r)) => r,
            }
        };
        if result.is_err() {
            // A failed PUT leaves its session open on the registry.
            target.registry.cancel_upload(&target.session).await;
        }
        out.push((region, result));
    }
    out
}

struct Lane {
    region: RegionId,
    url: String,
    tx: Option<mpsc::Sender<Chunk>>,
    task: tokio::task::JoinHandle<Result<(), RegistryError>>,
    failure: Option<RegistryError>,
    /// How long the others have waited for this lane so far.
    held_back: Duration,
}

/// Hands `chunk` to every live lane, waiting (up to `stall`) for full
/// queues. A lane is let go ([`RegistryError::Lagging`]) once it has kept
/// the others waiting for more than [`MAX_DRIFT`] in all *and* for at least
/// [`HELD_SHARE`] of the time the read has taken: a region that is merely
/// a little slower now and then (a busy machine) stays in the shared read.
async fn send_to_all(lanes: &mut [Lane], chunk: Bytes, stall: Duration, started: Instant) {
    for i in 0..lanes.len() {
        let Some(tx) = lanes[i].tx.clone() else {
            continue;
        };
        let sent = match tx.try_send(Ok(chunk.clone())) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(None),
            Err(mpsc::error::TrySendError::Full(item)) => {
                let waiting_since = Instant::now();
                loop {
                    // Others with room are waiting for this one.
                    let holding_back = lanes
                        .iter()
                        .enumerate()
                        .any(|(j, l)| j != i && l.tx.as_ref().is_some_and(|t| t.capacity() > 0));
                    let left = stall.saturating_sub(waiting_since.elapsed());
                    let slice = if holding_back {
                        MAX_DRIFT
                            .saturating_sub(lanes[i].held_back)
                            .max(Duration::from_millis(100))
                            .min(left)
                    } else {
                        left
                    };
                    let t = Instant::now();
                    let r = tokio::time::timeout(slice, tx.reserve()).await;
                    if holding_back {
                        lanes[i].held_back += t.elapsed();
                    }
                    match r {
                        Ok(Ok(permit)) => {
                            permit.send(item);
                            break Ok(());
                        }
                        Ok(Err(_)) => break Err(None),
                        Err(_) => {
                            let held = lanes[i].held_back;
                            if holding_back
                                && held >= MAX_DRIFT
                                && held.as_secs_f64()
                                    >= started.elapsed().as_secs_f64() * HELD_SHARE
                            {
                                break Err(Some(RegistryError::Lagging {
                                    url: lanes[i].url.clone(),
                                    after: held,
                                }));
                            }
                            if waiting_since.elapsed() >= stall {
                                break Err(Some(RegistryError::Stalled {
                                    method: Method::PUT,
                                    url: lanes[i].url.clone(),
                                    after: stall,
                                }));
                            }
                        }
                    }
                }
            }
        };
        let lane = &mut lanes[i];
        match sent {
            Ok(()) => {}
            // The upload ended early: its task holds the reason.
            Err(None) => lane.tx = None,
            Err(Some(e)) => {
                if matches!(e, RegistryError::Lagging { .. }) {
                    tracing::debug!(url = %lane.url, "region falls behind a shared read; it will read on its own");
                }
                lane.tx = None;
                lane.failure = Some(e);
            }
        }
    }
}

/// Fails every target with `e` and cancels its (unused) upload session.
async fn fail_all(
    targets: &[Target],
    e: &RegistryError,
) -> Vec<(RegionId, Result<(), RegistryError>)> {
    let mut out = Vec::with_capacity(targets.len());
    for t in targets {
        t.registry.cancel_upload(&t.session).await;
        out.push((t.region, Err(e.clone())));
    }
    out
}
