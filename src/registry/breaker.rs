//! A circuit breaker per registry: after a few connection failures in a row,
//! requests fail at once for a cool-down, so a dead region costs seconds, not
//! a retry storm, and never holds up the others (DESIGN invariant 6).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::error::RegistryError;

/// Connection failures in a row that open the breaker.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
/// How long an open breaker refuses requests before letting one through.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(30);

pub struct Breaker {
    registry: String,
    url: String,
    threshold: u32,
    cooldown: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    consecutive: u32,
    open_until: Option<Instant>,
    last_error: String,
}

impl Breaker {
    pub fn new(registry: &str, url: &str) -> Self {
        Breaker {
            registry: registry.to_owned(),
            url: url.to_owned(),
            threshold: DEFAULT_FAILURE_THRESHOLD,
            cooldown: DEFAULT_COOLDOWN,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is three plain fields; a panic elsewhere cannot leave it
        // half-written in a way that matters.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
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
    }

    pub fn record_failure(&self, err: &RegistryError) {
        if !err.is_connect() {
            return;
        }
        let mut s = self.state();
        s.consecutive += 1;
        s.last_error = format!("{err:#}");
        if s.consecutive >= self.threshold {
            if s.open_until.is_none_or(|u| u <= Instant::now()) {
                tracing::warn!(
                    registry = %self.registry,
                    url = %self.url,
                    cooldown_secs = self.cooldown.as_secs(),
                    "registry unreachable, pausing requests to it: {}",
                    s.last_error
                );
            }
            s.open_until = Some(Instant::now() + self.cooldown);
        }
    }

    /// Whether the breaker is open now.
    pub fn is_open(&self) -> bool {
        self.check().is_err()
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
        b.record_success();
        assert!(b.check().is_ok());
    }
}
