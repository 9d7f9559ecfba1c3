//! Background tasks of the daemon and the one driver that runs them all:
//! on a period, and at once when someone asks ([`TaskHandle::activate`]).
//!
//! The shape is omicron's: a task is an idempotent piece of work
//! ([`BackgroundTask::activate`]) that knows nothing about timing; the
//! driver decides when it runs, never runs two activations of one task at
//! once, and keeps the last run's status ([`TaskStatus`]) for the API. A
//! wake-up that arrives while the task runs is kept and starts one more
//! activation afterwards, so no request to run is lost and none piles up.
//!
//! The reconcile ([`crate::watch::poller`]), the audit
//! ([`crate::watch::audit`]) and the forgetting of old event ids
//! ([`crate::watch::intake`]) are such tasks.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::lock::Locked;
use crate::shutdown::Signal;
use crate::store::{format_unix, now_unix};

/// What one activation of a task found.
pub struct Activation<R> {
    /// The task's own figures (what it checked, queued...).
    pub report: R,
    /// What went wrong, if anything; the figures still count.
    pub error: Option<String>,
}

/// A piece of periodic, idempotent work.
pub trait BackgroundTask: Send + Sync + 'static {
    /// The figures one activation reports, kept as the last run's.
    type Report: Clone + Default + Serialize + Send + 'static;
    /// For the log.
    const NAME: &'static str;
    fn activate(&self) -> impl Future<Output = Activation<Self::Report>> + Send;
}

/// A task's runs so far, as `/v1/status` shows them.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TaskStatus<R> {
    pub running: bool,
    pub count: u64,
    /// RFC 3339.
    pub last_started_at: Option<String>,
    /// RFC 3339.
    pub last_finished_at: Option<String>,
    /// How long the last run took.
    #[serde(default)]
    pub last_secs: f64,
    pub last_error: Option<String>,
    /// The last run's own figures.
    #[serde(flatten)]
    pub last: R,
}

/// When a task runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Period {
    pub every: Duration,
    /// Run once as soon as the driver starts, before the first period.
    pub at_start: bool,
}

/// The driver's hold on one running task.
pub struct TaskHandle<R> {
    status: Arc<Mutex<TaskStatus<R>>>,
    wake: Arc<Notify>,
    /// Runs finished so far, for [`TaskHandle::run_now`].
    finished: tokio::sync::watch::Receiver<u64>,
    join: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl<R: Clone> TaskHandle<R> {
    /// The task's status now.
    pub fn status(&self) -> TaskStatus<R> {
        self.status.locked().clone()
    }

    /// Asks for one activation now (or right after the one running).
    pub fn activate(&self) {
        self.wake.notify_one();
    }

    /// Runs the task now (after the run in progress, if any: a run that
    /// started before the call is not the answer) and returns its status
    /// once that run has finished. `None` if the task stopped first.
    pub async fn run_now(&self) -> Option<TaskStatus<R>> {
        let mut finished = self.finished.clone();
        let (count, running) = {
            let s = self.status.locked();
            (s.count, s.running)
        };
        let wanted = count + 1 + u64::from(running);
        self.activate();
        finished.wait_for(|n| *n >= wanted).await.ok()?;
        Some(self.status())
    }

    /// Stops the task where it is (its work is idempotent: whatever it
    /// had not finished is done again by its next run).
    pub async fn stop(&self) {
        let join = self.join.locked().take();
        if let Some(join) = join {
            join.abort();
            let _ = join.await;
        }
    }
}

/// Starts `task`: at start if `period.at_start`, then every
/// `period.every` after a run ends, and whenever activated; until `stop`.
/// With `period` `None` it runs only when activated.
pub fn spawn<T: BackgroundTask>(
    task: T,
    period: Option<Period>,
    mut stop: Signal,
) -> TaskHandle<T::Report> {
    let status = Arc::new(Mutex::new(TaskStatus::<T::Report>::default()));
    let wake = Arc::new(Notify::new());
    let (done, finished) = tokio::sync::watch::channel(0u64);
    let join = {
        let status = status.clone();
        let wake = wake.clone();
        tokio::spawn(async move {
            if period.is_some_and(|p| p.at_start) {
                run_once(&task, &status, &done).await;
            }
            loop {
                let sleep = async {
                    match period {
                        Some(p) => tokio::time::sleep(p.every).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = sleep => {}
                    _ = wake.notified() => {}
                    _ = stop.wait() => return,
                }
                run_once(&task, &status, &done).await;
            }
        })
    };
    TaskHandle {
        status,
        wake,
        finished,
        join: Mutex::new(Some(join)),
    }
}

/// One activation, with its status kept before and after.
async fn run_once<T: BackgroundTask>(
    task: &T,
    status: &Mutex<TaskStatus<T::Report>>,
    done: &tokio::sync::watch::Sender<u64>,
) {
    let started = Instant::now();
    {
        let mut s = status.locked();
        s.running = true;
        s.last_started_at = Some(format_unix(now_unix()));
    }
    tracing::debug!(task = T::NAME, "background task starts");
    let Activation { report, error } = task.activate().await;
    let mut s = status.locked();
    s.running = false;
    s.count += 1;
    s.last_finished_at = Some(format_unix(now_unix()));
    s.last_secs = started.elapsed().as_secs_f64();
    s.last_error = error;
    s.last = report;
    done.send_replace(s.count);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[derive(Clone)]
    struct Counting(Arc<AtomicU64>);

    impl BackgroundTask for Counting {
        type Report = u64;
        const NAME: &'static str = "counting";
        async fn activate(&self) -> Activation<u64> {
            let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
            Activation {
                report: n,
                error: (n == 2).then(|| "second run failed".to_owned()),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn runs_at_start_on_its_period_and_when_activated() {
        let (trigger, signal) = crate::shutdown::channel();
        let runs = Arc::new(AtomicU64::new(0));
        let handle = spawn(
            Counting(runs.clone()),
            Some(Period {
                every: Duration::from_secs(60),
                at_start: true,
            }),
            signal,
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1, "at start");
        handle.activate();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let s = handle.status();
        assert_eq!((s.count, s.last), (2, 2), "activated");
        assert_eq!(s.last_error.as_deref(), Some("second run failed"));
        assert!(!s.running);
        tokio::time::sleep(Duration::from_secs(60)).await;
        let s = handle.status();
        assert_eq!(s.count, 3, "on its period");
        assert_eq!(s.last_error, None, "a run's error lasts until the next run");
        trigger.fire();
        handle.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn run_now_answers_with_a_run_that_started_after_the_call() {
        let (_trigger, signal) = crate::shutdown::channel();
        let runs = Arc::new(AtomicU64::new(0));
        let handle = spawn(Counting(runs.clone()), None, signal);
        let s = handle.run_now().await.expect("a run");
        assert_eq!((s.count, s.last), (1, 1));
        let s = handle.run_now().await.expect("a run");
        assert_eq!((s.count, s.last), (2, 2));
        handle.stop().await;
        assert!(handle.run_now().await.is_none(), "stopped");
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_period_only_activations_run_it() {
        let (_trigger, signal) = crate::shutdown::channel();
        let runs = Arc::new(AtomicU64::new(0));
        let handle = spawn(Counting(runs.clone()), None, signal);
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        handle.activate();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        handle.stop().await;
    }
}
