//! georep: geo-replication of OCI container registries.
//!
//! # Layout
//!
//! - [`api`] — the daemon's HTTP API (axum): webhook, health, readiness,
//!   status, Prometheus metrics; only HTTP work, on state of its own.
//! - [`background`] — periodic background tasks and their one driver
//!   (period, wake-up, last-run status).
//! - [`cli`] — command-line definitions (clap) only.
//! - [`commands`] — one file per subcommand: `run`, `sync`, `wait`, `status`,
//!   `check-config`, `demo`, `bench`.
//! - [`daemon`] — `georep run`: build then run; per-region workers over the
//!   durable queue; outgoing notifications.
//! - [`config`] — the YAML config: serde types, loading, validation with
//!   file, line and column.
//! - [`registry`] — HTTP client for the OCI distribution API: auth (basic,
//!   bearer tokens with scopes), manifests, blobs (stream, upload, mount),
//!   listings, retries, circuit breaker, request counters.
//! - [`http`] — the HTTP clients registries are reached with (shared
//!   options, a client of its own per TLS material).
//! - [`digest`] — content digests and streaming verification.
//! - [`metrics`] — the daemon's counters and their Prometheus text.
//! - [`status`] — the daemon's status as one typed view (`/v1/status`,
//!   `/metrics`, `georep status`).
//! - [`engine`] — the replication pass: list the primary, diff each region,
//!   copy blobs (one read fanned out to every region) then manifests then
//!   tags, and report.
//! - [`store`] — the checkpoint store (sled): facts about the primary and
//!   each region, the daemon's durable queue, key layout and schema version.
//! - [`watch`] — change sources (the registry's notifications, the
//!   reconcile, the audit) and the intake they all hand changes to.
//! - [`lock`] — mutexes whose poisoning is ignored (plain bookkeeping).
//! - [`units`] — byte sizes for people and aligned text tables.
//! - [`resources`] — this process's CPU seconds and peak memory.
//! - [`shutdown`] — SIGINT/SIGTERM to one shutdown signal.
//! - [`progress`] — progress on stderr for `sync` and `bench`.
//! - [`lab`] — the lab, for `georep demo`, `georep bench` and the tests:
//!   a deterministic corpus, local `docker-registry` processes, the
//!   benchmark. Product code never imports it (only `cli`, `commands` and
//!   the lab itself do; a test reads the imports to hold that).
#![forbid(unsafe_code)]

pub mod api;
pub mod background;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod digest;
pub mod engine;
pub mod http;
pub mod lab;
pub mod lock;
pub mod merge;
pub mod metrics;
pub mod notify;
pub mod progress;
pub mod registry;
pub mod resources;
pub mod shutdown;
pub mod status;
pub mod store;
pub mod units;
pub mod watch;

/// Cases per property test (fuzz target): `PROPTEST_CASES`, else 4096 —
/// a few seconds in all, run by every `cargo test`.
#[cfg(test)]
pub(crate) fn fuzz_config() -> proptest::test_runner::Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(4096);
    proptest::test_runner::Config {
        cases,
        ..proptest::test_runner::Config::default()
    }
}
