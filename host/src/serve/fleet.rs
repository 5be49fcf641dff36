//! This server as one of several sharing a run store (a PostgreSQL one;
//! alone on SQLite it works the same way): it holds its runs by lease,
//! claims queued runs when it has room, takes over the runs of servers that
//! stopped answering, and stops its own runs when the store says so.
//!
//! Three loops, each a task of its own, with the store's calls on blocking
//! threads (a store that does not answer never stalls the server):
//!
//! * **Leases**: every third of `--lease-secs`, renew the lease of every run
//!   held here (one statement), then take over the runs whose lease ran out
//!   (see `store::queue`). A server killed with `kill -9` thus loses its
//!   runs within the lease; the others resume them from their journals.
//! * **Claims**: whenever a slot may be free here (a run ended, or every
//!   [`CLAIM_POLL`]), claim as many of the oldest runs waiting in the
//!   shared queue as there are free slots no local run is waiting for, and
//!   run them. A server shutting down claims nothing.
//! * **Stops**: every [`STOP_POLL`], one statement asks which of the runs
//!   going on here were cancelled (by `POST /runs/<id>/cancel` on any
//!   server, or `flue runs cancel`) or taken over by another server (this
//!   one's lease on them ran out while it was unreachable); those stop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use super::ServerState;
use super::admission::Ticket;
use super::errors::{ApiError, ErrorKind};
use super::runs::RunTask;
use super::store::Stop;
use crate::run::RunError;

/// How often a server looks for queued runs when nothing woke it.
pub const CLAIM_POLL: Duration = Duration::from_millis(250);
/// How often a server asks the store which of its runs must stop.
pub const STOP_POLL: Duration = Duration::from_millis(200);

/// The runs going on here, and what wakes the claims.
#[derive(Default)]
pub struct Fleet {
    runs: Mutex<HashMap<String, watch::Sender<Option<Stop>>>>,
    room: Notify,
}

/// A run going on here, told when it must stop; it stops being watched
/// when dropped.
pub struct RunWatch<'a> {
    fleet: &'a Fleet,
    run_id: String,
    stop: watch::Receiver<Option<Stop>>,
}

impl Fleet {
    /// Watch run `run_id` for a cancel or a takeover.
    pub fn watch(&self, run_id: &str) -> RunWatch<'_> {
        let (tx, stop) = watch::channel(None);
        self.runs.lock().unwrap_or_else(|e| e.into_inner()).insert(run_id.to_string(), tx);
        RunWatch { fleet: self, run_id: run_id.to_string(), stop }
    }

    /// A slot may be free here: look for queued runs now.
    pub fn room(&self) {
        self.room.notify_one();
    }

    fn watched(&self) -> Vec<String> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect()
    }

    fn stop(&self, run_id: &str, stop: Stop) {
        if let Some(tx) = self.runs.lock().unwrap_or_else(|e| e.into_inner()).get(run_id) {
            tx.send_replace(Some(stop));
        }
    }
}

impl RunWatch<'_> {
    /// Resolves once the run must stop, with why.
    pub async fn stopped(&self) -> RunError {
        let mut stop = self.stop.clone();
        let why = stop.wait_for(Option::is_some).await.ok().and_then(|why| why.clone());
        match why {
            Some(Stop::TakenOver) => RunError::TakenOver,
            // Also a closed channel, which dropping the watch does, never seen here.
            _ => RunError::Cancelled,
        }
    }
}

impl Drop for RunWatch<'_> {
    fn drop(&mut self) {
        self.fleet.runs.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.run_id);
    }
}

/// Start this server's loops; claims end when `stopping` turns true.
pub fn start(state: Arc<ServerState>, stopping: watch::Receiver<bool>) {
    tokio::spawn(leases(state.clone()));
    tokio::spawn(claims(state.clone(), stopping));
    tokio::spawn(stops(state));
}

async fn leases(state: Arc<ServerState>) {
    let lease = state.store.lease();
    let mut tick = tokio::time::interval(lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let taken = state
            .store
            .off_thread(move |store| {
                store.heartbeat(lease);
                store.take_over_expired()
            })
            .await
            .unwrap_or_default();
        let count = taken.resumed + taken.failed + taken.released;
        if count > 0 {
            state.metrics.taken_over.fetch_add(count as u64, std::sync::atomic::Ordering::Relaxed);
            state.events.taken_over(taken.resumed, taken.failed, taken.released);
            // Runs to resume or start are in the shared queue now.
            state.fleet.room();
        }
    }
}

async fn claims(state: Arc<ServerState>, mut stopping: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = state.fleet.room.notified() => {}
            _ = tokio::time::sleep(CLAIM_POLL) => {}
            _ = stopping.wait_for(|stop| *stop) => return,
        }
        let room = state.admission.room(state.metrics.queued.load(std::sync::atomic::Ordering::SeqCst));
        if room == 0 {
            continue;
        }
        let agents: Vec<String> = {
            let agents = state.agents.lock().unwrap_or_else(|e| e.into_inner());
            agents.iter().filter(|(_, a)| a.manifest.webhook && a.refused.is_none()).map(|(n, _)| n.clone()).collect()
        };
        let lease = state.store.lease();
        let claimed = state.store.off_thread(move |store| store.claim(&agents, room, lease)).await.unwrap_or_default();
        for queued in claimed {
            state.metrics.claimed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            start_claimed(&state, queued);
        }
    }
}

/// Run a run claimed from the shared queue, through admission as a new
/// one is.
fn start_claimed(state: &Arc<ServerState>, queued: super::store::QueuedRun) {
    let fail = |why: String| {
        let err = ApiError::new(ErrorKind::Shutdown, why);
        state.store.finish(&queued.run_id, Err(&err), &[]);
    };
    let Some(payload) = queued.payload else {
        fail(
            "the server stopped before the run started, and its payload was not kept (a store from an older flue)"
                .into(),
        );
        return;
    };
    let agent = state.agents.lock().unwrap_or_else(|e| e.into_inner()).get(&queued.agent).cloned();
    let Some(agent) = agent.filter(|a| a.manifest.webhook && a.refused.is_none()) else {
        // Its agent went away since the claim: for another server.
        state.store.release(&queued.run_id);
        return;
    };
    let Some(ticket) = Ticket::readmit(state, &queued.run_id) else {
        state.store.release(&queued.run_id);
        return;
    };
    let task = RunTask {
        state: state.clone(),
        name: queued.agent,
        invocation: queued.invocation,
        agent,
        payload,
        run_id: queued.run_id,
        journaled: queued.journaled || state.config.journal_limit.is_some(),
    };
    tokio::spawn(async move {
        let _ = task.run(ticket, None).await;
    });
}

async fn stops(state: Arc<ServerState>) {
    let mut tick = tokio::time::interval(STOP_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let runs = state.fleet.watched();
        if runs.is_empty() {
            continue;
        }
        let stops = state.store.off_thread(move |store| store.stops(&runs)).await.unwrap_or_default();
        for (run_id, stop) in stops {
            state.fleet.stop(&run_id, stop);
        }
    }
}
