//! The builds a server starts (`flue dev` builds a stale agent for the
//! request that needs it): each on a blocking thread, each with a time limit
//! (`--build-timeout`), each stoppable. A build past its limit, or still
//! going when the grace period ends, is stopped — its processes killed, the
//! run failing — so that no build holds a run slot or shutdown for longer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::guest::isolate::BuildStop;

/// Why a build gave no result.
#[derive(Debug)]
pub enum Interrupted {
    /// It ran past its time limit and was stopped.
    TimedOut(Duration),
    /// The grace period ended while it ran, and it was stopped.
    Shutdown,
    /// Its thread panicked (a bug).
    Panicked(String),
}

/// The builds going on.
#[derive(Clone, Default)]
pub struct Builds(Arc<Inner>);

#[derive(Default)]
struct Inner {
    next: AtomicU64,
    /// Each build's stop, until its thread has returned.
    going: Mutex<HashMap<u64, BuildStop>>,
    finished: Notify,
}

/// Takes a build off the list when its thread returns (or unwinds).
struct Going(Arc<Inner>, u64);

impl Drop for Going {
    fn drop(&mut self) {
        self.0.going.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.1);
        self.0.finished.notify_waiters();
    }
}

/// Stops a build whose caller went away (its task ended or was dropped).
struct StopOnDrop(BuildStop);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

impl Builds {
    /// Run `build` on a blocking thread, stopped after `limit` or once
    /// `cancel` is set.
    pub async fn run<T: Send + 'static>(
        &self,
        limit: Duration,
        mut cancel: watch::Receiver<bool>,
        build: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Interrupted> {
        let stop = BuildStop::default();
        let id = self.0.next.fetch_add(1, Ordering::Relaxed);
        self.0.going.lock().unwrap_or_else(|e| e.into_inner()).insert(id, stop.clone());
        let going = Going(self.0.clone(), id);
        let thread_stop = stop.clone();
        let thread = tokio::task::spawn_blocking(move || {
            let _going = going;
            thread_stop.run(build)
        });
        // From here on, however this future ends, the build ends with it.
        let _stop = StopOnDrop(stop);
        tokio::select! {
            joined = thread => joined.map_err(|err| Interrupted::Panicked(err.to_string())),
            () = tokio::time::sleep(limit) => Err(Interrupted::TimedOut(limit)),
            _ = cancel.wait_for(|stop| *stop) => Err(Interrupted::Shutdown),
        }
    }

    /// Stop every build (a second signal: the process exits at once).
    pub fn stop_all(&self) {
        for stop in self.0.going.lock().unwrap_or_else(|e| e.into_inner()).values() {
            stop.stop();
        }
    }

    /// Wait up to `limit` for every build's thread to return; whether they did.
    /// (A stopped build's thread returns at once, unless it waits for the
    /// build lock another process holds.)
    pub async fn finished(&self, limit: Duration) -> bool {
        let all_returned = async {
            loop {
                let notified = self.0.finished.notified();
                if self.0.going.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, all_returned).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_build_past_its_limit_is_stopped_and_its_thread_returns() {
        let builds = Builds::default();
        let (_cancel_tx, cancel) = watch::channel(false);
        let outcome = builds
            .run(Duration::from_millis(50), cancel, || {
                let mut command = std::process::Command::new("sleep");
                command.arg("600");
                crate::guest::isolate::run(command, "sleep").map(|ran| ran.success)
            })
            .await;
        assert!(matches!(outcome, Err(Interrupted::TimedOut(_))), "{outcome:?}");
        // The thread returned: `sleep` was killed, not waited for.
        assert!(builds.finished(Duration::from_secs(60)).await);
    }
}
