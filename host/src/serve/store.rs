//! The run store: every run a server accepted, with its status, result (or
//! error kind and message) and events, and the conversations agents keep
//! per invocation id, in an embedded SQLite database, so finished runs and
//! conversations survive a restart. Retention is bounded: only the newest
//! finished runs are kept, a queued or running run is never deleted, and
//! only the [`MAX_CONVERSATIONS`] most recently used conversations are kept.
//!
//! Other processes use the same file: `flue runs` reads it and asks for a
//! run to be cancelled (a flag the server polls), `flue run --id` keeps its
//! conversations in it. Only the server marks runs it left unfinished.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};

use super::errors::{ApiError, ErrorKind};
use super::private_files;
use crate::events::unix_millis;
use crate::model::Message;
use crate::run::conversations::{ConversationKey, ConversationStore, ConversationStoreError};

/// Conversations kept, the most recently used.
pub const MAX_CONVERSATIONS: usize = 10_000;

/// How long a write waits for another process's (e.g. `flue runs cancel`
/// beside a server) before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQLite run store.
pub struct RunStore {
    conn: Mutex<Connection>,
    retention: usize,
}

/// A run accepted and not started.
pub struct QueuedRun {
    /// Its id.
    pub run_id: String,
    /// The agent.
    pub agent: String,
    /// The id it was invoked with.
    pub invocation: String,
    /// Its payload (`None`: stored by a flue that did not keep payloads).
    pub payload: Option<Value>,
}

/// Where a project keeps its run store: `<project>/.flue/runs.sqlite`
/// (`.flue/` is flue's own directory, made private).
pub fn project_store(project: &Path) -> std::path::PathBuf {
    project.join(".flue").join("runs.sqlite")
}

/// What asking to cancel a run found.
#[derive(Debug, PartialEq, Eq)]
pub enum CancelRequest {
    /// The run is queued or running: it has been asked to stop.
    Requested,
    /// The run had already ended, with this status.
    AlreadyEnded(String),
    /// No such run.
    Unknown,
}

fn store_error(err: impl std::error::Error + Send + Sync + 'static) -> ConversationStoreError {
    ConversationStoreError { source: Box::new(err) }
}

impl RunStore {
    /// Open (or create) the store at `path` for a server, keeping the
    /// newest `retention` runs. Runs a previous server left running are
    /// marked failed; the ones it left queued stay queued, for the server
    /// to start ([`RunStore::queued`]). Its directory and files are made
    /// private (see [`super::private_files`]); `own_dir`: the directory is
    /// flue's own (`.flue/`), so an existing one readable by others is made
    /// `0700` too.
    pub fn open(path: &Path, retention: usize, own_dir: bool) -> anyhow::Result<Self> {
        let store = Self::attach(path, retention, own_dir)?;
        store.conn.lock().unwrap_or_else(|e| e.into_inner()).execute(
            "UPDATE runs SET status = 'failed', error = 'the server stopped before the run finished',
                 error_kind = ?2, finished_ms = ?1
             WHERE status = 'running'",
            params![unix_millis(), ErrorKind::Shutdown.as_str()],
        )?;
        Ok(store)
    }

    /// The runs accepted and not started, oldest first: what a server that
    /// stopped (or was killed) left waiting.
    pub fn queued(&self) -> Vec<QueuedRun> {
        self.with(|c| {
            let mut statement = c.prepare(
                "SELECT id, agent, invocation, payload FROM runs WHERE status = 'queued' ORDER BY created_ms, rowid",
            )?;
            let rows = statement.query_map([], |row| {
                Ok(QueuedRun {
                    run_id: row.get(0)?,
                    agent: row.get(1)?,
                    invocation: row.get(2)?,
                    payload: row.get::<_, Option<String>>(3)?.and_then(|text| serde_json::from_str(&text).ok()),
                })
            })?;
            rows.collect::<rusqlite::Result<Vec<QueuedRun>>>()
        })
        .unwrap_or_default()
    }

    /// Open (or create) the store at `path` beside whatever server may use
    /// it (`flue runs`, `flue run --id`): the same checks, the same schema,
    /// and no run's status changed.
    pub fn attach(path: &Path, retention: usize, own_dir: bool) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            private_files::prepare_dir(dir, own_dir)?;
        }
        private_files::prepare_database(path)?;
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE IF NOT EXISTS runs (
                 id TEXT PRIMARY KEY, agent TEXT NOT NULL, invocation TEXT NOT NULL, status TEXT NOT NULL,
                 result TEXT, error TEXT, events TEXT, created_ms INTEGER NOT NULL, finished_ms INTEGER);
             CREATE INDEX IF NOT EXISTS runs_created ON runs (created_ms);
             CREATE TABLE IF NOT EXISTS conversations (
                 agent TEXT NOT NULL, invocation TEXT NOT NULL, harness TEXT NOT NULL, session TEXT NOT NULL,
                 messages TEXT NOT NULL, updated_ms INTEGER NOT NULL,
                 PRIMARY KEY (agent, invocation, harness, session));
             CREATE INDEX IF NOT EXISTS conversations_updated ON conversations (updated_ms);",
        )?;
        // Stores written before these columns existed: add them.
        for (column, kind) in [("error_kind", "TEXT"), ("cancel_requested_ms", "INTEGER"), ("payload", "TEXT")] {
            let exists = conn.prepare("SELECT 1 FROM pragma_table_info('runs') WHERE name = ?1")?.exists([column])?;
            if !exists {
                conn.execute_batch(&format!("ALTER TABLE runs ADD COLUMN {column} {kind}"))?;
            }
        }
        Ok(RunStore { conn: Mutex::new(conn), retention })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Option<T> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        match f(&conn) {
            Ok(value) => Some(value),
            Err(err) => {
                tracing::warn!("run store: {err}");
                None
            }
        }
    }

    /// A run was accepted, with its payload (kept until it starts, so that
    /// a server that stops first can start it later).
    pub fn insert(&self, id: &str, agent: &str, invocation: &str, payload: &Value) {
        self.with(|c| {
            c.execute(
                "INSERT INTO runs (id, agent, invocation, status, created_ms, payload)
                 VALUES (?1, ?2, ?3, 'queued', ?4, ?5)",
                params![id, agent, invocation, unix_millis(), payload.to_string()],
            )?;
            self.prune(c)
        });
    }

    /// Keep the newest `retention` finished runs; never a queued or running one.
    fn prune(&self, c: &Connection) -> rusqlite::Result<usize> {
        c.execute(
            "DELETE FROM runs WHERE status NOT IN ('queued', 'running') AND id NOT IN
                 (SELECT id FROM runs WHERE status NOT IN ('queued', 'running') ORDER BY created_ms DESC LIMIT ?1)",
            params![self.retention as i64],
        )
    }

    /// A run started: its payload is no longer needed.
    pub fn running(&self, id: &str) {
        self.with(|c| c.execute("UPDATE runs SET status = 'running', payload = NULL WHERE id = ?1", params![id]));
    }

    /// A run ended, with its result or error, and its events.
    pub fn finish(&self, id: &str, result: Result<&Value, &ApiError>, events: &[Value]) {
        let (status, result, kind, error) = match result {
            Ok(value) => ("succeeded", Some(value.to_string()), None, None),
            Err(err) => (err.kind.run_status(), None, Some(err.kind.as_str()), Some(err.message.clone())),
        };
        let events = Value::from(events.to_vec()).to_string();
        self.with(|c| {
            c.execute(
                "UPDATE runs SET status = ?2, result = ?3, error_kind = ?4, error = ?5, events = ?6, finished_ms = ?7
                 WHERE id = ?1",
                params![id, status, result, kind, error, events, unix_millis()],
            )?;
            self.prune(c)
        });
    }

    /// A run's record, as `GET /runs/<id>` shows it, with the
    /// conversations kept for its agent and invocation id.
    pub fn get(&self, id: &str) -> Option<Value> {
        let mut record =
            self.with(|c| c.query_row(&format!("{RECORD} WHERE id = ?1"), params![id], record).optional()).flatten()?;
        let (agent, invocation) = (record["agent"].as_str()?.to_string(), record["id"].as_str()?.to_string());
        record["conversations"] = Value::from(self.conversations(&agent, &invocation));
        Some(record)
    }

    /// The newest `limit` runs, newest first, without their events.
    pub fn list(&self, limit: usize) -> Vec<Value> {
        self.with(|c| {
            let mut statement = c.prepare(&format!("{RECORD} ORDER BY created_ms DESC LIMIT ?1"))?;
            let rows = statement.query_map(params![i64::try_from(limit).unwrap_or(i64::MAX)], record)?;
            rows.map(|row| {
                row.map(|mut value| {
                    value.as_object_mut().map(|o| o.remove("events"));
                    value
                })
            })
            .collect::<rusqlite::Result<Vec<Value>>>()
        })
        .unwrap_or_default()
    }

    /// Ask run `id` to stop: the process running it sees the flag (see
    /// [`RunStore::cancel_requested`]) and stops it.
    pub fn request_cancel(&self, id: &str) -> CancelRequest {
        self.with(|c| {
            let status: Option<String> =
                c.query_row("SELECT status FROM runs WHERE id = ?1", params![id], |row| row.get(0)).optional()?;
            Ok(match status {
                None => CancelRequest::Unknown,
                Some(status) if status == "queued" || status == "running" => {
                    c.execute(
                        "UPDATE runs SET cancel_requested_ms = COALESCE(cancel_requested_ms, ?2) WHERE id = ?1",
                        params![id, unix_millis()],
                    )?;
                    CancelRequest::Requested
                }
                Some(status) => CancelRequest::AlreadyEnded(status),
            })
        })
        .unwrap_or(CancelRequest::Unknown)
    }

    /// Whether run `id` has been asked to stop.
    pub fn cancel_requested(&self, id: &str) -> bool {
        self.with(|c| {
            c.query_row("SELECT cancel_requested_ms IS NOT NULL FROM runs WHERE id = ?1", params![id], |row| row.get(0))
                .optional()
        })
        .flatten()
        .unwrap_or(false)
    }

    /// The conversations kept for `agent` invoked with `invocation`, as
    /// `GET /sessions/<agent>/<id>` shows them.
    pub fn conversations(&self, agent: &str, invocation: &str) -> Vec<Value> {
        self.with(|c| {
            let mut statement = c.prepare(
                "SELECT harness, session, messages, updated_ms FROM conversations
                 WHERE agent = ?1 AND invocation = ?2 ORDER BY harness, session",
            )?;
            let rows = statement.query_map(params![agent, invocation], |row| {
                let messages: String = row.get(2)?;
                Ok(json!({
                    "harness": row.get::<_, String>(0)?,
                    "session": row.get::<_, String>(1)?,
                    "messages": serde_json::from_str::<Value>(&messages).unwrap_or_else(|_| json!([])),
                    "updatedMs": row.get::<_, i64>(3)?,
                }))
            })?;
            rows.collect::<rusqlite::Result<Vec<Value>>>()
        })
        .unwrap_or_default()
    }
}

/// The columns of a run's record, in the order [`record`] reads them.
const RECORD: &str =
    "SELECT id, agent, invocation, status, result, error, events, created_ms, finished_ms, error_kind FROM runs";

/// A run's record from a row of [`RECORD`].
fn record(row: &rusqlite::Row<'_>) -> rusqlite::Result<Value> {
    let parse = |text: Option<String>| text.and_then(|t| serde_json::from_str::<Value>(&t).ok());
    Ok(json!({
        "runId": row.get::<_, String>(0)?,
        "agent": row.get::<_, String>(1)?,
        "id": row.get::<_, String>(2)?,
        "status": row.get::<_, String>(3)?,
        "result": parse(row.get(4)?),
        // Runs stored before kinds existed: `unknown`.
        "error": row.get::<_, Option<String>>(5)?.map(|message| json!({
            "kind": row.get::<_, Option<String>>(9).ok().flatten().unwrap_or_else(|| "unknown".into()),
            "message": message,
        })),
        "events": parse(row.get(6)?).unwrap_or_else(|| json!([])),
        "createdMs": row.get::<_, i64>(7)?,
        "finishedMs": row.get::<_, Option<i64>>(8)?,
    }))
}

impl ConversationStore for RunStore {
    fn load(&self, key: &ConversationKey) -> Result<Vec<Message>, ConversationStoreError> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let messages: Option<String> = conn
            .query_row(
                "SELECT messages FROM conversations WHERE agent = ?1 AND invocation = ?2 AND harness = ?3 AND session = ?4",
                params![key.agent, key.id, key.harness, key.session],
                |row| row.get(0),
            )
            .optional()
            .map_err(store_error)?;
        match messages {
            Some(json) => serde_json::from_str(&json).map_err(store_error),
            None => Ok(Vec::new()),
        }
    }

    fn save(&self, key: &ConversationKey, messages: &[Message]) -> Result<(), ConversationStoreError> {
        let json = serde_json::to_string(messages).map_err(store_error)?;
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        conn.execute(
            "INSERT INTO conversations (agent, invocation, harness, session, messages, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (agent, invocation, harness, session)
             DO UPDATE SET messages = excluded.messages, updated_ms = excluded.updated_ms",
            params![key.agent, key.id, key.harness, key.session, json, unix_millis()],
        )
        .map_err(store_error)?;
        conn.execute(
            "DELETE FROM conversations WHERE rowid NOT IN
                 (SELECT rowid FROM conversations ORDER BY updated_ms DESC LIMIT ?1)",
            params![MAX_CONVERSATIONS as i64],
        )
        .map_err(store_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(session: &str) -> ConversationKey {
        ConversationKey {
            agent: "triage".into(),
            id: "issue-1".into(),
            harness: "default".into(),
            session: session.into(),
        }
    }

    #[test]
    fn a_cancel_is_asked_only_of_a_run_that_has_not_ended() {
        let dir = tempfile::tempdir().unwrap();
        let store = RunStore::open(&dir.path().join("runs.sqlite"), 10, false).unwrap();
        store.insert("run_a", "triage", "issue-1", &Value::Null);
        assert!(!store.cancel_requested("run_a"));
        assert_eq!(store.request_cancel("run_a"), CancelRequest::Requested);
        assert!(store.cancel_requested("run_a"));
        let cancelled = ApiError::new(ErrorKind::Cancelled, "cancelled");
        store.finish("run_a", Err(&cancelled), &[]);
        assert_eq!(store.get("run_a").unwrap()["status"], "cancelled");
        assert_eq!(store.request_cancel("run_a"), CancelRequest::AlreadyEnded("cancelled".into()));
        assert_eq!(store.request_cancel("run_b"), CancelRequest::Unknown);
    }

    #[test]
    fn attaching_beside_a_server_leaves_its_runs_running() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.sqlite");
        let server = RunStore::open(&path, 10, false).unwrap();
        server.insert("run_a", "triage", "issue-1", &Value::Null);
        server.running("run_a");
        let beside = RunStore::attach(&path, usize::MAX, false).unwrap();
        assert_eq!(beside.get("run_a").unwrap()["status"], "running");
        assert_eq!(beside.list(10).len(), 1);
        // A server starting again marks it failed: its process is gone.
        drop(server);
        let restarted = RunStore::open(&path, 10, false).unwrap();
        assert_eq!(restarted.get("run_a").unwrap()["error"]["kind"], "shutdown");
    }

    #[test]
    fn a_restarted_server_finds_what_was_queued_with_its_payload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.sqlite");
        let store = RunStore::open(&path, 10, false).unwrap();
        store.insert("run_a", "triage", "issue-1", &serde_json::json!({"n": 1}));
        store.insert("run_b", "triage", "issue-2", &serde_json::json!({"n": 2}));
        store.running("run_a");
        drop(store);
        let store = RunStore::open(&path, 10, false).unwrap();
        let queued = store.queued();
        assert_eq!(queued.len(), 1);
        assert_eq!(
            (queued[0].run_id.as_str(), queued[0].payload.clone()),
            ("run_b", Some(serde_json::json!({"n": 2})))
        );
        assert_eq!(store.get("run_a").unwrap()["status"], "failed", "a run left running is not resumed yet");
    }

    #[test]
    fn conversations_are_kept_per_key_and_shown_with_their_runs() {
        let dir = tempfile::tempdir().unwrap();
        let store = RunStore::open(&dir.path().join("runs.sqlite"), 10, false).unwrap();
        assert_eq!(store.load(&key("default")).unwrap(), vec![]);
        let messages = vec![Message::User("hello".into()), Message::Assistant { text: "hi".into(), calls: vec![] }];
        store.save(&key("default"), &messages).unwrap();
        store.save(&key("other"), &messages[..1]).unwrap();
        assert_eq!(store.load(&key("default")).unwrap(), messages);
        store.save(&key("default"), &messages[..1]).unwrap();
        assert_eq!(store.load(&key("default")).unwrap(), &messages[..1], "a save replaces");
        store.insert("run_a", "triage", "issue-1", &Value::Null);
        let shown = store.get("run_a").unwrap();
        assert_eq!(shown["conversations"].as_array().unwrap().len(), 2, "{shown}");
        assert!(store.conversations("triage", "issue-2").is_empty());
    }
}
