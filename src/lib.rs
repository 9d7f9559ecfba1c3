//! georep: geo-replication of OCI container registries.
//!
//! # Layout
//!
//! - [`api`] — the daemon's HTTP API (axum): webhook, health, readiness,
//!   status, Prometheus metrics.
//! - [`bench`] — `georep bench`: a generated corpus copied by the raw
//!   baseline, georep and skopeo side by side, each run a measured child
//!   process, every run verified; table, JSON and SVG chart.
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
//! - [`digest`] — content digests and streaming verification.
//! - [`engine`] — the replication pass: list the primary, diff each region,
//!   copy blobs (one read fanned out to every region) then manifests then
//!   tags, and report.
//! - [`store`] — the checkpoint store (sled): facts about the primary and
//!   each region, the daemon's durable queue, key layout and schema version.
//! - [`watch`] — change sources: the registry's notifications (parsed and
//!   decided) and the poller's periodic reconcile.
//! - [`shutdown`] — SIGINT/SIGTERM to one shutdown signal.
//! - [`corpus`] — deterministic synthetic images for the demo, the tests and
//!   the benchmark.
//! - [`localreg`] — local `docker-registry` processes for the demo, tests
//!   and benchmark.
#![forbid(unsafe_code)]

pub mod api;
pub mod bench;
pub mod cli;
pub mod commands;
pub mod config;
pub mod corpus;
pub mod daemon;
pub mod digest;
pub mod engine;
pub mod localreg;
pub mod registry;
pub mod shutdown;
pub mod store;
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
