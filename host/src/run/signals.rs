//! SIGINT and SIGTERM as the reasons a run or a server stops: one stream of
//! them, so that a second signal can be told from the first.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// A stop request: why, and the exit code that reports it (130 or 143).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stop {
    /// `interrupted by SIGINT` or `terminated by SIGTERM`.
    pub reason: &'static str,
    /// The conventional exit code: 128 + the signal's number.
    pub exit_code: i32,
}

/// SIGINT and SIGTERM, caught from creation on.
pub struct StopSignals {
    handlers: Option<(Signal, Signal)>,
}

impl StopSignals {
    /// Catch SIGINT and SIGTERM (needs a tokio runtime). Where they cannot be
    /// caught, [`StopSignals::next`] never resolves.
    pub fn new() -> Self {
        let handlers = match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
            (Ok(interrupt), Ok(terminate)) => Some((interrupt, terminate)),
            _ => None,
        };
        StopSignals { handlers }
    }

    /// The next SIGINT or SIGTERM.
    pub async fn next(&mut self) -> Stop {
        let Some((interrupt, terminate)) = &mut self.handlers else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = interrupt.recv() => Stop { reason: "interrupted by SIGINT", exit_code: 130 },
            _ = terminate.recv() => Stop { reason: "terminated by SIGTERM", exit_code: 143 },
        }
    }
}

impl Default for StopSignals {
    fn default() -> Self {
        Self::new()
    }
}
