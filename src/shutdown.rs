//! Shutdown: SIGINT or SIGTERM (or a test's own trigger) flips one shared
//! flag; every long-running task watches it, stops taking new work, and the
//! daemon drains what is in flight under a grace period.

use tokio::sync::watch;

/// The trigger side: one per daemon.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// The listening side: cheap to clone, one per task.
#[derive(Clone, Debug)]
pub struct Signal(watch::Receiver<bool>);

pub fn channel() -> (Trigger, Signal) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Signal(rx))
}

impl Trigger {
    pub fn fire(&self) {
        // Receivers may all be gone already; nothing to tell then.
        let _ = self.0.send(true);
    }
}

impl Signal {
    pub fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once shutdown has begun (at once if it has).
    pub async fn wait(&mut self) {
        // An error means the trigger was dropped: treat that as shutdown.
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// Installs the SIGINT, SIGTERM and SIGHUP handlers now (so a signal that
/// comes before anyone awaits is not lost, nor fatal) and returns a future
/// that resolves on the first SIGINT or SIGTERM. Call it before serving
/// anything.
///
/// SIGHUP, which service managers send to ask for a reload, does not stop
/// the daemon (its default action would kill it without a word): georep
/// does not reload its config, so it says so in the log and goes on with
/// the config it has; a restart applies a new one.
pub fn os_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let handlers = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        );
        async move {
            match handlers {
                (Ok(mut term), Ok(mut int), hup) => {
                    let mut hup = hup.ok();
                    loop {
                        let hangup = async {
                            match hup.as_mut() {
                                Some(h) => h.recv().await,
                                None => std::future::pending().await,
                            }
                        };
                        tokio::select! {
                            _ = term.recv() => {
                                tracing::info!("SIGTERM: shutting down");
                                return;
                            }
                            _ = int.recv() => {
                                tracing::info!("SIGINT: shutting down");
                                return;
                            }
                            Some(()) = hangup => tracing::warn!(
                                "SIGHUP: georep does not reload its config; it goes on with the one it \
                                 started with (restart it to apply changes)"
                            ),
                        }
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
