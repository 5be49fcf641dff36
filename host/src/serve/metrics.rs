//! The server's counters and gauges, and `GET /metrics` (Prometheus text).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// What `/metrics` shows.
#[derive(Default)]
pub struct Metrics {
    pub started: AtomicU64,
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
    pub cancelled: AtomicU64,
    pub rejected: AtomicU64,
    pub in_flight: AtomicUsize,
    pub queued: AtomicUsize,
    pub duration_ms_sum: AtomicU64,
    /// Event-stream readers dropped for falling behind.
    pub readers_dropped: AtomicU64,
    /// Client connections open now.
    pub connections: AtomicUsize,
    /// Requests refused because bodies held all of `--body-memory-mib`.
    pub bodies_refused: AtomicU64,
    /// Runs claimed from the shared queue (accepted here or elsewhere).
    pub claimed: AtomicU64,
    /// Runs of servers that stopped answering, taken over (resumed, failed
    /// or queued again).
    pub taken_over: AtomicU64,
}

impl Metrics {
    /// The Prometheus text exposition, with `ready` local sandboxes held
    /// ready now.
    pub fn render(&self, ready: usize) -> String {
        let succeeded = self.succeeded.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        let cancelled = self.cancelled.load(Ordering::Relaxed);
        format!(
            "# HELP flue_runs_started_total Runs started.\n# TYPE flue_runs_started_total counter\n\
             flue_runs_started_total {}\n\
             # HELP flue_runs_finished_total Runs finished, by outcome.\n# TYPE flue_runs_finished_total counter\n\
             flue_runs_finished_total{{outcome=\"succeeded\"}} {succeeded}\n\
             flue_runs_finished_total{{outcome=\"failed\"}} {failed}\n\
             flue_runs_finished_total{{outcome=\"cancelled\"}} {cancelled}\n\
             # HELP flue_runs_rejected_total Runs refused with 429 (queue full).\n\
             # TYPE flue_runs_rejected_total counter\nflue_runs_rejected_total {}\n\
             # HELP flue_runs_in_flight Runs running now.\n# TYPE flue_runs_in_flight gauge\nflue_runs_in_flight {}\n\
             # HELP flue_runs_queued Runs waiting for a slot.\n# TYPE flue_runs_queued gauge\nflue_runs_queued {}\n\
             # HELP flue_run_duration_seconds Run durations.\n# TYPE flue_run_duration_seconds summary\n\
             flue_run_duration_seconds_sum {:.3}\nflue_run_duration_seconds_count {}\n\
             # HELP flue_event_readers_dropped_total Event-stream readers dropped for falling behind.\n\
             # TYPE flue_event_readers_dropped_total counter\nflue_event_readers_dropped_total {}\n\
             # HELP flue_connections_open Client connections open now.\n\
             # TYPE flue_connections_open gauge\nflue_connections_open {}\n\
             # HELP flue_bodies_refused_total Requests refused with 503 while bodies held all of --body-memory-mib.\n\
             # TYPE flue_bodies_refused_total counter\nflue_bodies_refused_total {}\n\
             # HELP flue_runs_claimed_total Runs claimed from the shared queue.\n\
             # TYPE flue_runs_claimed_total counter\nflue_runs_claimed_total {}\n\
             # HELP flue_runs_taken_over_total Runs of servers whose lease ran out, taken over.\n\
             # TYPE flue_runs_taken_over_total counter\nflue_runs_taken_over_total {}\n\
             # HELP flue_store_statements_total Statements run against the run store.\n\
             # TYPE flue_store_statements_total counter\nflue_store_statements_total {}\n\
             # HELP flue_sandboxes_ready Local sandboxes made ready ahead, not yet taken by a run.\n\
             # TYPE flue_sandboxes_ready gauge\nflue_sandboxes_ready {ready}\n",
            self.started.load(Ordering::Relaxed),
            self.rejected.load(Ordering::Relaxed),
            self.in_flight.load(Ordering::Relaxed),
            self.queued.load(Ordering::Relaxed),
            self.duration_ms_sum.load(Ordering::Relaxed) as f64 / 1000.0,
            succeeded + failed + cancelled,
            self.readers_dropped.load(Ordering::Relaxed),
            self.connections.load(Ordering::Relaxed),
            self.bodies_refused.load(Ordering::Relaxed),
            self.claimed.load(Ordering::Relaxed),
            self.taken_over.load(Ordering::Relaxed),
            super::store::db::statements(),
        )
    }
}
