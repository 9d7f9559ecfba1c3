//! Why copying something to a region failed, and whether trying again
//! later can help: the daemon retries transient causes with backoff, waits
//! out unreachable regions, and parks permanent ones.

use std::fmt;

use crate::registry::RegistryError;

/// How a failure should be handled by whoever retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CauseKind {
    /// The region cannot be reached at all: an outage, not this item's fault.
    Unreachable,
    /// Worth trying again: 5xx, 429, a reset, a timeout, corrupt bytes in transit.
    Transient,
    /// The primary no longer has what was to be copied (deleted after the
    /// push): there is nothing left to do.
    Gone,
    /// Trying again will fail the same way until someone changes something:
    /// a 4xx such as MANIFEST_INVALID, a refused login, a schema1 manifest.
    Permanent,
}

impl CauseKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CauseKind::Unreachable => "unreachable",
            CauseKind::Transient => "transient",
            CauseKind::Gone => "gone",
            CauseKind::Permanent => "permanent",
        }
    }
}

/// A failure message for one region, with its kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    pub kind: CauseKind,
    pub message: String,
}

impl Cause {
    pub fn permanent(message: impl Into<String>) -> Cause {
        Cause {
            kind: CauseKind::Permanent,
            message: message.into(),
        }
    }

    pub fn gone(message: impl Into<String>) -> Cause {
        Cause {
            kind: CauseKind::Gone,
            message: message.into(),
        }
    }

    /// `what` failed because of `e`; the kind follows from the error.
    pub fn of(what: impl fmt::Display, e: &RegistryError) -> Cause {
        let kind = if e.is_connect() {
            CauseKind::Unreachable
        } else if e.is_transient() {
            CauseKind::Transient
        } else {
            CauseKind::Permanent
        };
        Cause {
            kind,
            message: format!("{what} failed: {e:#}"),
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
