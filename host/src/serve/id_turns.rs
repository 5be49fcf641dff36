//! Runs of one agent with one invocation id take turns: they run one at a
//! time, in the order they arrived. Each continues the conversation the
//! one before it left; two at once would both start from the same turns,
//! and the later one's save would drop the other's exchange.
//!
//! A run waiting for its turn is queued (it counts against `--queue`, and
//! a cancel or a shutdown ends the wait). It takes this server's turn
//! first ([`IdTurns`], in the order runs arrived here), then the store's
//! ([`SharedTurn`]), which servers sharing the store take one at a time —
//! in no promised order among servers. `flue run --id` beside a server
//! does not wait for either.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::store::RunStore;

/// How often a run waiting for the store's turn of its id asks again.
const SHARED_TURN_POLL: Duration = Duration::from_millis(100);

use tokio::sync::{Mutex as TurnLock, OwnedMutexGuard};

type Key = (String, String);

/// The turns of every agent and id with a run waiting or running.
#[derive(Default)]
pub struct IdTurns {
    locks: Mutex<HashMap<Key, Arc<TurnLock<()>>>>,
}

/// A run's turn: held until it is dropped.
pub struct Turn<'a> {
    turns: &'a IdTurns,
    key: Key,
    guard: Option<OwnedMutexGuard<()>>,
}

impl IdTurns {
    /// Wait for `agent`'s id `id` to be free (runs that asked earlier go
    /// first), and take it.
    pub async fn take(&self, agent: &str, id: &str) -> Turn<'_> {
        let key = (agent.to_string(), id.to_string());
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            // What no run holds or waits for any more (a wait given up on
            // may leave its entry behind): forgotten.
            locks.retain(|_, lock| Arc::strong_count(lock) > 1);
            locks.entry(key.clone()).or_default().clone()
        };
        // Built before the wait: a run dropped while waiting still removes
        // the entry if it was the last to want it.
        let mut turn = Turn { turns: self, key, guard: None };
        turn.guard = Some(lock.lock_owned().await);
        turn
    }

    /// How many agents and ids have a run waiting or running.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.locks.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self.turns.locks.lock().unwrap_or_else(|e| e.into_inner());
        // Nobody else holds or waits for it: forget it (the map stays as
        // large as the runs in progress).
        if locks.get(&self.key).is_some_and(|lock| Arc::strong_count(lock) == 1) {
            locks.remove(&self.key);
        }
    }
}

/// The turn of an agent's id in the store, held for one run until it is
/// dropped (or, if its server dies, until its lease runs out).
pub struct SharedTurn {
    store: Arc<RunStore>,
    agent: String,
    invocation: String,
    run_id: String,
}

impl SharedTurn {
    /// Wait until run `run_id` has the turn of `agent`'s id `invocation`.
    pub async fn take(store: &Arc<RunStore>, agent: &str, invocation: &str, run_id: &str) -> SharedTurn {
        let turn = SharedTurn {
            store: store.clone(),
            agent: agent.to_string(),
            invocation: invocation.to_string(),
            run_id: run_id.to_string(),
        };
        loop {
            let (agent, id, run) = (turn.agent.clone(), turn.invocation.clone(), turn.run_id.clone());
            let taken = store
                .off_thread(move |store| store.take_id_turn(&agent, &id, &run, store.lease()))
                .await
                .unwrap_or(false);
            if taken {
                return turn;
            }
            tokio::time::sleep(SHARED_TURN_POLL).await;
        }
    }
}

impl Drop for SharedTurn {
    fn drop(&mut self) {
        self.store.release_id_turn(&self.agent, &self.invocation, &self.run_id);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn one_id_waits_other_ids_do_not_and_nothing_is_left_behind() {
        let turns = IdTurns::default();
        let first = turns.take("triage", "issue-1").await;
        let other = tokio::time::timeout(Duration::from_secs(5), turns.take("triage", "issue-2")).await;
        assert!(other.is_ok(), "another id waited");
        let second = tokio::time::timeout(Duration::from_millis(100), turns.take("triage", "issue-1")).await;
        assert!(second.is_err(), "the same id did not wait");
        drop(other);
        assert_eq!(turns.len(), 1, "the abandoned wait or the finished id was not forgotten");
        drop(first);
        assert_eq!(turns.len(), 0);
        let _again = tokio::time::timeout(Duration::from_secs(5), turns.take("triage", "issue-1")).await.unwrap();
    }
}
