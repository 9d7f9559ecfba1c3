//! Change sources of the daemon and the one door they use. None copies
//! anything: the webhook ([`webhook`], served by [`crate::api`]), the
//! reconcile ([`poller`]) and the audit ([`audit`]) hand what changed to
//! the [`intake`], which records it in the durable queue and rings the
//! workers' [`doorbell`].

pub mod audit;
pub mod doorbell;
pub mod intake;
pub mod poller;
pub mod webhook;
