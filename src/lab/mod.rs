//! The lab: what `georep demo`, `georep bench` and the tests need around
//! georep, not georep itself. Product modules never import it; only
//! [`crate::cli`] and [`crate::commands`] do.
//!
//! - [`corpus`] — deterministic synthetic images.
//! - [`localreg`] — local `docker-registry` processes on loopback.
//! - [`etcd`] — local etcd processes (one node or a cluster).
//! - [`bench`] — `georep bench`: the corpus copied by a raw baseline,
//!   georep and skopeo side by side, each run a measured child process,
//!   every run verified; table, JSON and SVG chart.

pub mod bench;
pub mod corpus;
pub mod etcd;
pub mod localreg;
