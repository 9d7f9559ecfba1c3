//! Backoff between attempts: exponential, jittered, bounded, and deferring to
//! the registry's own `Retry-After` when it sends one.

use std::time::{Duration, SystemTime};

/// First wait after a failure.
pub const DEFAULT_BASE_DELAY: Duration = Duration::from_millis(250);
/// No single wait is longer than this, whatever the attempt number.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(10);
/// A `Retry-After` longer than this is capped: a registry asking for an hour
/// should fail this pass, not hang it.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
    /// Total attempts, the first included.
    pub max_attempts: u32,
}

impl Backoff {
    pub fn new(max_attempts: u32) -> Self {
        Backoff {
            base: DEFAULT_BASE_DELAY,
            max: DEFAULT_MAX_DELAY,
            max_attempts: max_attempts.max(1),
        }
    }

    /// The wait before attempt `attempt + 1`, given that attempt `attempt`
    /// (1-based) just failed: `base * 2^(attempt-1)`, capped, with "equal
    /// jitter" (half fixed, half random) so that many clients that failed
    /// together do not come back together, yet none retries at once.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(ra) = retry_after {
            return ra.min(MAX_RETRY_AFTER);
        }
        let exp = attempt.saturating_sub(1).min(20);
        let full = self
            .base
            .checked_mul(1u32 << exp)
            .unwrap_or(self.max)
            .min(self.max);
        let half = full / 2;
        let jitter_ms = rand::random_range(0..=half.as_millis() as u64);
        half + Duration::from_millis(jitter_ms)
    }
}

/// Parses a `Retry-After` value: delta-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_bounded() {
        let b = Backoff::new(5);
        for attempt in 1..40 {
            let d = b.delay(attempt, None);
            assert!(d <= DEFAULT_MAX_DELAY, "{attempt}: {d:?}");
            let full = DEFAULT_BASE_DELAY
                .saturating_mul(1 << (attempt - 1).min(20))
                .min(DEFAULT_MAX_DELAY);
            assert!(d >= full / 2, "{attempt}: {d:?}");
        }
    }

    #[test]
    fn retry_after_wins_but_is_capped() {
        let b = Backoff::new(5);
        assert_eq!(
            b.delay(1, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(b.delay(1, Some(Duration::from_secs(9999))), MAX_RETRY_AFTER);
    }

    #[test]
    fn parses_retry_after_forms() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:40 GMT", now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
