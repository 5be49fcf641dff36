//! Admission: at most `max_concurrent` runs at once and `queue` more
//! waiting, checked and counted in one step (a semaphore of `max_concurrent
//! + queue` permits), so a burst cannot slip past the limit.
//!
//! An admitted run holds a [`Ticket`] until it ends. Whatever way the run
//! ends — a result, an error, or a panic unwinding through its task — the
//! ticket's `Drop` gives back its permits, its queued or in-flight count and
//! its place among the runs shutdown waits for, and a run that never
//! recorded an outcome is recorded as failed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde_json::Value;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::ServerState;
use super::errors::{ApiError, ErrorKind};

/// The server's run counts.
pub struct Admission {
    /// One permit per run admitted and not yet ended (running or queued).
    admitted: Arc<Semaphore>,
    /// One permit per running run.
    running: Arc<Semaphore>,
    /// Runs admitted and not yet ended, for shutdown to wait on.
    active: AtomicUsize,
    idle: Notify,
    /// Held while a background run is counted against `--queue` and put in
    /// the store's shared queue: one at a time, so a burst cannot slip past.
    shared_queue: tokio::sync::Mutex<()>,
}

impl Admission {
    /// Room for `max_concurrent` running and `queue` waiting.
    pub fn new(max_concurrent: usize, queue: usize) -> Self {
        Admission {
            admitted: Arc::new(Semaphore::new(max_concurrent + queue)),
            running: Arc::new(Semaphore::new(max_concurrent)),
            active: AtomicUsize::new(0),
            idle: Notify::new(),
            shared_queue: tokio::sync::Mutex::new(()),
        }
    }

    /// Runs admitted and not yet ended.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// How many more runs could start here at once, beside the `waiting`
    /// ones already admitted and waiting for a slot.
    pub fn room(&self, waiting: usize) -> usize {
        self.running.available_permits().saturating_sub(waiting).min(self.admitted.available_permits())
    }

    /// Wait until no admitted run is left.
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.active.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One admitted run.
pub struct Ticket {
    state: Arc<ServerState>,
    run_id: String,
    _admitted: OwnedSemaphorePermit,
    /// A slot taken at admission, for [`Ticket::start`].
    reserved: Option<OwnedSemaphorePermit>,
    running: Option<(OwnedSemaphorePermit, Instant)>,
    recorded: bool,
    /// Left queued for the server's next start, or to the server that
    /// took it over: not ended here.
    kept_queued: bool,
}

/// Why a queued run did not start.
pub enum NotStarted {
    /// The grace period ended first: the run stays queued.
    ShuttingDown,
    /// While it waited here, its lease ran out and another server claimed
    /// it: the run is that server's now.
    TakenOver,
}

impl Ticket {
    /// Admit run `run_id` (recorded as queued, with its payload), or `None`
    /// when the queue is full.
    pub fn admit(
        state: &Arc<ServerState>,
        run_id: &str,
        agent: &str,
        invocation: &str,
        payload: &Value,
    ) -> Option<Ticket> {
        let ticket = Ticket::readmit(state, run_id)?;
        state.store.insert(run_id, agent, invocation, payload);
        Some(ticket)
    }

    /// Admit run `run_id` only if a slot is free now, taking it (recorded
    /// as queued until it starts, with its payload); `None` otherwise.
    pub fn admit_with_slot(
        state: &Arc<ServerState>,
        run_id: &str,
        agent: &str,
        invocation: &str,
        payload: &Value,
    ) -> Option<Ticket> {
        let slot = state.admission.running.clone().try_acquire_owned().ok()?;
        let mut ticket = Ticket::admit(state, run_id, agent, invocation, payload)?;
        ticket.reserved = Some(slot);
        Some(ticket)
    }

    /// Put background run `run_id` in the store's shared queue, for any
    /// server to start, unless the runs this server accepted there and no
    /// server has started number `--queue` already (then `false`).
    pub async fn queue_in_store(
        state: &Arc<ServerState>,
        run_id: &str,
        agent: &str,
        invocation: &str,
        payload: Value,
    ) -> bool {
        let _one_at_a_time = state.admission.shared_queue.lock().await;
        let queue = state.config.queue;
        let (run, agent, id) = (run_id.to_string(), agent.to_string(), invocation.to_string());
        state
            .store
            .off_thread(move |store| {
                (store.waiting_accepted_here() < queue).then(|| store.enqueue(&run, &agent, &id, &payload)).is_some()
            })
            .await
            .unwrap_or(false)
    }

    /// Admit run `run_id`, already in the store as queued (a previous
    /// server accepted it and stopped first), or `None` when the queue is
    /// full.
    pub fn readmit(state: &Arc<ServerState>, run_id: &str) -> Option<Ticket> {
        let permit = state.admission.admitted.clone().try_acquire_owned().ok()?;
        state.admission.active.fetch_add(1, Ordering::SeqCst);
        state.metrics.queued.fetch_add(1, Ordering::SeqCst);
        Some(Ticket {
            state: state.clone(),
            run_id: run_id.to_string(),
            _admitted: permit,
            reserved: None,
            running: None,
            recorded: false,
            kept_queued: false,
        })
    }

    /// Wait for a slot, then count the run as running; a run still waiting
    /// when the grace period ends does not start.
    pub async fn start(&mut self, journaled: bool) -> Result<(), NotStarted> {
        let mut cancel = self.state.cancel.clone();
        let slot = match self.reserved.take() {
            Some(slot) => slot,
            None => tokio::select! {
                slot = self.state.admission.running.clone().acquire_owned() => {
                    slot.map_err(|_| NotStarted::ShuttingDown)?
                }
                _ = cancel.wait_for(|stop| *stop) => return Err(NotStarted::ShuttingDown),
            },
        };
        if !self.state.store.running(&self.run_id, journaled) {
            // Not this server's to end either.
            self.kept_queued = true;
            return Err(NotStarted::TakenOver);
        }
        let metrics = &self.state.metrics;
        metrics.queued.fetch_sub(1, Ordering::SeqCst);
        metrics.in_flight.fetch_add(1, Ordering::SeqCst);
        metrics.started.fetch_add(1, Ordering::Relaxed);
        self.running = Some((slot, Instant::now()));
        Ok(())
    }

    /// The run did not start before the server shut down: it stays queued
    /// in the store, with its payload, and goes back to the shared queue
    /// when the server exits (for another server, or its next start).
    pub fn keep_queued(&mut self) {
        self.kept_queued = true;
    }

    /// Whether [`Ticket::keep_queued`] left the run for the next start.
    pub fn kept_queued(&self) -> bool {
        self.kept_queued
    }

    /// Record how the run ended, with its events.
    pub fn record(&mut self, outcome: Result<&Value, &ApiError>, events: &[Value]) {
        self.recorded = true;
        if !self.state.store.finish(&self.run_id, outcome, events) {
            return;
        }
        let metrics = &self.state.metrics;
        if let Some((_, started)) = &self.running {
            metrics.duration_ms_sum.fetch_add(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
        let counter = match outcome {
            Ok(_) => &metrics.succeeded,
            Err(err) if err.kind == ErrorKind::Cancelled => &metrics.cancelled,
            Err(_) => &metrics.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.recorded && !self.kept_queued {
            // Only a panic in the run's task gets here without an outcome.
            let lost = ApiError::new(ErrorKind::Internal, "flue failed inside this run (a bug, please report it)");
            self.record(Err(&lost), &[]);
        }
        let metrics = &self.state.metrics;
        match self.running.take() {
            Some(_) => metrics.in_flight.fetch_sub(1, Ordering::SeqCst),
            None => metrics.queued.fetch_sub(1, Ordering::SeqCst),
        };
        let admission = &self.state.admission;
        admission.active.fetch_sub(1, Ordering::SeqCst);
        admission.idle.notify_waiters();
        // A slot or a place in the queue is free: a queued run may take it.
        self.state.fleet.room();
    }
}
