//! Change sources of the daemon. None copies anything: the webhook
//! ([`webhook`], served by [`crate::api`]), the poller ([`poller`]) and the
//! audit ([`audit`]) record what changed in the durable queue and wake the
//! workers.

pub mod audit;
pub mod poller;
pub mod webhook;
