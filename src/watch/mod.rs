//! Change sources of the daemon. Neither copies anything: the webhook
//! ([`webhook`], served by [`crate::api`]) and the poller ([`poller`]) both
//! record what changed in the durable queue and wake the workers.

pub mod poller;
pub mod webhook;
