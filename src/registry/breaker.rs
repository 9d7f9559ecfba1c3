//! A circuit breaker per registry: after a few connection failures in a row,
//! requests fail at once for a cool-down, so a dead region costs seconds, not
//! a retry storm, and never holds up the others (DESIGN invariant 6).
//!
//! The cool-down starts at a second and doubles each time the probe that
//! follows it fails, up to [`MAX_COOLDOWN`]: a blip costs a second, a long
//! outage a probe every few seconds, and a region that returns is noticed
//! within that time.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::error::RegistryError;
use crate::lock::Locked;

/// Connection failures in a row that open the breaker.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
/// The first cool-down: how long an open breaker refuses requests before
/// letting one through.
pub const MIN_COOLDOWN: Duration = Duration::from_secs(1);
/// The longest cool-down between two probes of a registry that stays down.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(8);

pub struct Breaker {
    registry: String,
    url: String,
    threshold: u32,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    consecutive: u32,
    open_until: Option<Instant>,
    /// Times opened since the last success (the cool-down doubles).
    opened: u32,
    last_error: String,
}

impl Breaker {
    pub fn new(registry: &str, url: &str) -> Self {
        Breaker {
            registry: registry.to_owned(),
            url: url.to_owned(),
            threshold: DEFAULT_FAILURE_THRESHOLD,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is three plain fields; a panic elsewhere cannot leave it
        // half-written in a way that matters.
        self.state.locked()
    }

    /// Refuses a request while the breaker is open.
    pub fn check(&self) -> Result<(), RegistryError> {
        let s = self.state();
        match s.open_until {
            Some(until) if Instant::now() < until => Err(RegistryError::Unreachable {
                registry: self.registry.clone(),
                url: self.url.clone(),
                last_error: s.last_error.clone(),
            }),
            _ => Ok(()),
        }
    }

    pub fn record_success(&self) {
        let mut s = self.state();
        s.consecutive = 0;
        s.open_until = None;
        s.opened = 0;
    }

    pub fn record_failure(&self, err: &RegistryError) {
        if !err.is_connect() {
            return;
        }
        let mut s = self.state();
        s.consecutive += 1;
        s.last_error = format!("{err:#}");
        let now = Instant::now();
        if s.consecutive >= self.threshold && s.open_until.is_none_or(|u| u <= now) {
            // Closed, or a probe after the cool-down failed: (re)open.
            s.opened = s.opened.saturating_add(1);
            let cooldown = MIN_COOLDOWN
                .saturating_mul(1 << (s.opened - 1).min(16))
                .min(MAX_COOLDOWN);
            if s.opened == 1 {
                tracing::warn!(
                    registry = %self.registry,
                    url = %self.url,
                    "registry unreachable, pausing requests to it (probing it every {}-{} s): {}",
                    MIN_COOLDOWN.as_secs(),
                    MAX_COOLDOWN.as_secs(),
                    s.last_error
                );
            }
            s.open_until = Some(now + cooldown);
        }
    }

    /// Whether the registry is down: the breaker opened and nothing has
    /// succeeded since (even while a probe is let through).
    pub fn is_down(&self) -> bool {
        self.state().opened > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> RegistryError {
        RegistryError::Unreachable {
            registry: "r".into(),
            url: "u".into(),
            last_error: "refused".into(),
        }
    }

    #[test]
    fn opens_after_threshold_and_closes_on_success() {
        let b = Breaker::new("eastus", "http://h");
        for _ in 0..DEFAULT_FAILURE_THRESHOLD - 1 {
            b.record_failure(&refused());
            assert!(b.check().is_ok());
        }
        b.record_failure(&refused());
        let err = b.check().unwrap_err().to_string();
        assert!(err.contains("eastus") && err.contains("http://h"), "{err}");
        assert!(b.is_down());
        b.record_success();
        assert!(b.check().is_ok() && !b.is_down());
    }

    #[test]
    fn the_cooldown_doubles_while_probes_fail_and_resets_on_success() {
        let b = Breaker::new("eastus", "http://h");
        let cooldown = |b: &Breaker| {
            let until = b.state().open_until.unwrap();
            until.saturating_duration_since(Instant::now())
        };
        for _ in 0..DEFAULT_FAILURE_THRESHOLD {
            b.record_failure(&refused());
        }
        assert!(cooldown(&b) <= MIN_COOLDOWN);
        let mut seen = Vec::new();
        for _ in 0..6 {
            // The cool-down is over; the probe fails.
            b.state().open_until = Some(Instant::now());
            b.record_failure(&refused());
            // More failures while open change nothing.
            b.record_failure(&refused());
            seen.push(cooldown(&b).as_secs_f64().round() as u64);
        }
        assert_eq!(seen, [2, 4, 8, 8, 8, 8]);
        b.record_success();
        for _ in 0..DEFAULT_FAILURE_THRESHOLD {
            b.record_failure(&refused());
        }
        assert!(cooldown(&b) <= MIN_COOLDOWN);
    }
}
