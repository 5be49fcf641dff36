//! Sandboxes kept per id (`sandbox-per-id`) that have gone unused past
//! their idle time (`sandbox-idle-secs`, a week by default) are deleted:
//! by the server, which looks once a minute, and by `flue sandboxes gc`.
//! The run store notes each id sandbox's last use (when a run takes it up
//! and when it ends); one that a run of this server holds is never
//! deleted under it.

use std::sync::Arc;
use std::time::Duration;

use super::ServerState;
use super::store::RunStore;
use crate::Host;
use crate::events::{EventLog, unix_millis};
use crate::run::IdSandbox;
use crate::sandbox::error::ErrorKind;

/// How often a server looks for idle id sandboxes.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// What happened to one idle sandbox.
pub struct Swept {
    /// The sandbox.
    pub sandbox: IdSandbox,
    /// Deleted (or already gone), or why not.
    pub deleted: Result<(), String>,
}

/// Delete `sandbox`, found idle at `found_ms`, and forget it once deleted
/// (or found gone).
pub async fn delete(store: &RunStore, host: &Host, sandbox: IdSandbox, found_ms: i64) -> Swept {
    let events = EventLog::discard();
    let deleted = match host.connector(&sandbox.connector, &events).await {
        Ok(connector) => match connector.delete(&sandbox.sandbox_id).await {
            Ok(()) => Ok(()),
            Err(err) if err.kind == ErrorKind::NotFound => Ok(()),
            Err(err) => Err(err.to_string()),
        },
        Err(err) => Err(err.to_string()),
    };
    if deleted.is_ok() {
        store.forget_id_sandbox(&sandbox, found_ms);
    }
    Swept { sandbox, deleted }
}

/// The server's sweep: once a minute until it stops.
pub fn watch(state: Arc<ServerState>) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(SWEEP_EVERY);
        let mut stopping = state.cancel.clone();
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = stopping.wait_for(|stop| *stop) => return,
            }
            let host = state.host.read().unwrap_or_else(|e| e.into_inner()).clone();
            let found_ms = unix_millis();
            for sandbox in state.store.idle_id_sandboxes(found_ms) {
                // The id's turn, held while its sandbox goes: a run of the
                // id waits, then finds none and creates a new one. A run
                // holding it now is using the sandbox: not idle after all.
                let turn = state.id_turns.take(&sandbox.agent, &sandbox.id);
                let Ok(_turn) = tokio::time::timeout(Duration::ZERO, turn).await else { continue };
                let swept = delete(&state.store, &host, sandbox, found_ms).await;
                state.events.idle_sandbox_deleted(&swept.sandbox, swept.deleted.as_ref().err());
            }
        }
    });
}
