//! Long-lived tasks that must run until shutdown. A task that ends before then — it returned or
//! it panicked — would leave the daemon half alive while `/ready` still answers 200 (no users
//! sync, no health checks, a stale snapshot). Instead its end is recorded, logged, and starts
//! the shutdown, so the run ends with an error, the process exits non-zero and systemd
//! (`Restart=always`) starts a whole one again.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::error;

/// How a long-lived task ended early.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TaskEnded {
    #[error("task {0} returned before shutdown")]
    Returned(&'static str),
    #[error("task {task} panicked: {message}")]
    Panicked { task: &'static str, message: String },
}

/// Spawns long-lived tasks on the daemon's tracker and watches each one's end.
#[derive(Clone)]
pub struct Supervisor {
    tracker: TaskTracker,
    shutdown: CancellationToken,
    /// The first task that ended early.
    ended: Arc<Mutex<Option<TaskEnded>>>,
}

impl Supervisor {
    pub fn new(tracker: TaskTracker, shutdown: CancellationToken) -> Self {
        Self {
            tracker,
            shutdown,
            ended: Arc::default(),
        }
    }

    /// Runs `task` until it ends. Ending once shutdown has started is its job; ending before
    /// (returning or panicking) starts the shutdown and is reported by [`Self::ended`].
    pub fn spawn<F>(&self, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let this = self.clone();
        self.tracker.spawn(async move {
            let outcome = AssertUnwindSafe(task).catch_unwind().await;
            if this.shutdown.is_cancelled() && outcome.is_ok() {
                return;
            }
            let ended = match outcome {
                Ok(()) => TaskEnded::Returned(name),
                Err(panic) => TaskEnded::Panicked {
                    task: name,
                    message: panic_message(panic.as_ref()),
                },
            };
            error!(error = %ended, "a long-lived task ended: shutting down for a restart");
            this.ended
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert(ended);
            this.shutdown.cancel();
        });
    }

    /// The first task that ended early, if any.
    pub fn ended(&self) -> Option<TaskEnded> {
        self.ended.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "(no message)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn supervisor() -> (Supervisor, TaskTracker, CancellationToken) {
        let tracker = TaskTracker::new();
        let shutdown = CancellationToken::new();
        (
            Supervisor::new(tracker.clone(), shutdown.clone()),
            tracker,
            shutdown,
        )
    }

    async fn within_a_second(shutdown: &CancellationToken) {
        tokio::time::timeout(Duration::from_secs(1), shutdown.cancelled())
            .await
            .expect("the supervisor did not start the shutdown");
    }

    #[tokio::test]
    async fn a_panicking_task_starts_the_shutdown_and_is_reported() {
        let (supervisor, _tracker, shutdown) = supervisor();
        supervisor.spawn("steady", std::future::pending());
        supervisor.spawn("sampler", async { panic!("injected fault") });
        within_a_second(&shutdown).await;
        let expected = TaskEnded::Panicked {
            task: "sampler",
            message: "injected fault".into(),
        };
        assert_eq!(supervisor.ended(), Some(expected));
    }

    #[tokio::test]
    async fn a_task_that_returns_early_starts_the_shutdown() {
        let (supervisor, _tracker, shutdown) = supervisor();
        supervisor.spawn("health", async {});
        within_a_second(&shutdown).await;
        assert_eq!(supervisor.ended(), Some(TaskEnded::Returned("health")));
    }

    #[tokio::test]
    async fn tasks_ending_on_shutdown_are_fine() {
        let (supervisor, tracker, shutdown) = supervisor();
        let token = shutdown.clone();
        supervisor.spawn("http", async move { token.cancelled().await });
        shutdown.cancel();
        tracker.close();
        tracker.wait().await;
        assert_eq!(supervisor.ended(), None);
    }
}
