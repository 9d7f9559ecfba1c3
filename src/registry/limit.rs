//! Rate limits on the traffic to one registry (governor): requests per
//! second, bytes per second, and a pause when the registry asks for one
//! (`429`/`503` with `Retry-After`).
//!
//! Bytes are metered in pieces of at most [`PIECE_BYTES`], against a quota
//! counted in KiB cells. Small pieces let many streams share a link fairly
//! (each waits for its next 64 KiB, not for a whole chunk), and since the
//! burst is always at least one piece, a large request never fails with
//! `InsufficientCapacity`: it just waits for its pieces in turn. The burst
//! is a tenth of a second's worth (at least one piece), so a rate holds
//! over any transfer longer than a fraction of a second.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::lock::Locked;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// The largest piece metered at once.
pub const PIECE_BYTES: usize = 64 * 1024;
/// Bytes per quota cell.
const CELL_BYTES: u64 = 1024;

/// A bandwidth limit, shareable by many streams.
pub struct ByteLimiter {
    limiter: DefaultDirectRateLimiter,
}

impl ByteLimiter {
    pub fn new(bytes_per_sec: u64) -> ByteLimiter {
        let kib_per_sec = (bytes_per_sec / CELL_BYTES).clamp(1, u32::MAX as u64) as u32;
        let piece_cells = (PIECE_BYTES as u64 / CELL_BYTES) as u32;
        let burst = (kib_per_sec / 10).max(piece_cells);
        // Both are at least 1 by construction.
        let quota = Quota::per_second(NonZeroU32::new(kib_per_sec).unwrap_or(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        ByteLimiter {
            limiter: RateLimiter::direct(quota),
        }
    }

    /// Waits until `bytes` may pass.
    pub async fn take(&self, mut bytes: usize) {
        while bytes > 0 {
            let piece = bytes.min(PIECE_BYTES);
            bytes -= piece;
            let cells = (piece as u64).div_ceil(CELL_BYTES) as u32;
            // A piece is never more cells than the burst (at least one
            // piece's worth), so this cannot be refused.
            if let Some(n) = NonZeroU32::new(cells) {
                let _ = self.limiter.until_n_ready(n).await;
            }
        }
    }
}

/// Every limit on one registry.
#[derive(Default)]
pub struct Limits {
    requests: Option<DefaultDirectRateLimiter>,
    bytes: Option<ByteLimiter>,
    /// A cap shared with other registries (all regions' uploads together).
    shared_bytes: Option<std::sync::Arc<ByteLimiter>>,
    paused_until: Mutex<Option<Instant>>,
}

impl Limits {
    pub fn new(requests_per_sec: Option<u32>, bytes_per_sec: Option<u64>) -> Limits {
        Limits {
            requests: requests_per_sec.and_then(NonZeroU32::new).map(|n| {
                let burst = NonZeroU32::new((n.get() / 10).max(1)).unwrap_or(NonZeroU32::MIN);
                RateLimiter::direct(Quota::per_second(n).allow_burst(burst))
            }),
            bytes: bytes_per_sec.filter(|b| *b > 0).map(ByteLimiter::new),
            shared_bytes: None,
            paused_until: Mutex::new(None),
        }
    }

    pub fn set_shared_bytes(&mut self, shared: Option<std::sync::Arc<ByteLimiter>>) {
        self.shared_bytes = shared;
    }

    /// Waits out a pause the registry asked for, then for a request slot.
    pub async fn request(&self) {
        loop {
            let until = *self.paused_until.locked();
            match until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t.into()).await,
                _ => break,
            }
        }
        if let Some(r) = &self.requests {
            r.until_ready().await;
        }
    }

    /// Waits until `bytes` may be sent or received.
    pub async fn bytes(&self, bytes: usize) {
        if let Some(b) = &self.bytes {
            b.take(bytes).await;
        }
        if let Some(b) = &self.shared_bytes {
            b.take(bytes).await;
        }
    }

    /// Whether byte metering is on at all (the copy path skips the call
    /// otherwise).
    pub fn meters_bytes(&self) -> bool {
        self.bytes.is_some() || self.shared_bytes.is_some()
    }

    /// The registry asked for a pause (`Retry-After`): no request to it
    /// before `now + d`.
    pub fn pause_for(&self, d: Duration) {
        let until = Instant::now() + d;
        let mut p = self.paused_until.locked();
        if p.is_none_or(|old| old < until) {
            *p = Some(until);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_pass_at_the_rate_in_pieces() {
        // 4 MiB/s: 2 MiB beyond the 0.4 MiB burst takes about 0.4 s.
        let l = ByteLimiter::new(4 << 20);
        let t = Instant::now();
        l.take(400 << 10).await;
        l.take(2 << 20).await;
        let secs = t.elapsed().as_secs_f64();
        assert!((0.4..0.75).contains(&secs), "{secs}");
    }

    #[tokio::test]
    async fn a_request_waits_out_a_pause() {
        let l = Limits::new(None, None);
        l.pause_for(Duration::from_millis(200));
        let t = Instant::now();
        l.request().await;
        assert!(t.elapsed() >= Duration::from_millis(190));
    }

    #[tokio::test]
    async fn a_tiny_rate_still_passes_a_large_piece() {
        // 2 KiB/s with a burst of one 64 KiB piece: the first piece passes
        // at once instead of failing with InsufficientCapacity.
        let l = ByteLimiter::new(2048);
        tokio::time::timeout(Duration::from_secs(1), l.take(PIECE_BYTES))
            .await
            .expect("the first piece fits the burst");
    }
}
