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

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};

use super::errors::{ApiError, ErrorKind};
use super::private_files;
use crate::events::unix_millis;
use crate::journal::{Entry, JournalStore, JournalStoreError};
use crate::model::Message;
use crate::run::conversations::{ConversationKey, ConversationStore, ConversationStoreError};
use crate::run::ownership;
use crate::run::{IdSandbox, IdSandboxLedger};

/// Conversations kept, the most recently used.
pub const MAX_CONVERSATIONS: usize = 10_000;

/// Finished runs kept unless `--retention` says otherwise.
pub const DEFAULT_RETENTION: usize = 1000;

/// How often a run looks in the store for a cancel: `POST
/// /runs/<runId>/cancel` and `flue runs cancel` (another process) both ask
/// there, so one mechanism serves both, well within a second.
const CANCEL_POLL: Duration = Duration::from_millis(200);

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
    /// It ran before, with a journal: it resumes from it.
    pub journaled: bool,
}

/// A run `flue runs resume` may take up: what it needs to run it again.
#[derive(Debug)]
pub struct ResumableRun {
    /// The agent, as the run named it.
    pub agent: String,
    /// The id it was invoked with.
    pub invocation: String,
    /// Its payload.
    pub payload: Value,
    /// What `flue run` stored to run it again (the agent's path, the
    /// sandbox settings).
    pub resume: Value,
}

/// Why a run cannot be resumed from the command line.
#[derive(Debug, thiserror::Error)]
pub enum NotResumable {
    /// No such run.
    #[error("there is no run {0} in this store")]
    Unknown(String),
    /// It ended.
    #[error("run {run} has ended ({status}): there is nothing to resume")]
    Ended {
        /// The run.
        run: String,
        /// How it ended.
        status: String,
    },
    /// Its process is alive.
    #[error("run {0} is still running in its process")]
    Running(String),
    /// A server's run: the server resumes it.
    #[error("run {0} belongs to `flue serve`: start the server again in its project and it resumes the run")]
    Served(String),
    /// It kept no journal.
    #[error("run {0} kept no journal (it ran with --no-journal, or before journals existed)")]
    NoJournal(String),
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
        {
            let conn = store.conn.lock().unwrap_or_else(|e| e.into_inner());
            let mut statement = conn.prepare(
                "SELECT id, owner, journaled FROM runs WHERE status = 'running' AND COALESCE(origin, 'serve') = 'serve'",
            )?;
            let left: Vec<(String, Option<String>, bool)> = statement
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get::<_, Option<bool>>(2)?.unwrap_or(false))))?
                .collect::<rusqlite::Result<_>>()?;
            drop(statement);
            for (id, owner, journaled) in left {
                // A server still running it (beside this one) keeps it.
                if owner.as_deref().is_some_and(|owner| !ownership::run_owner_gone(owner)) {
                    continue;
                }
                // Only if nobody changed it since (another server starting).
                if journaled {
                    // Resumed from its journal, as a queued run is started.
                    conn.execute(
                        "UPDATE runs SET status = 'queued' WHERE id = ?1 AND status = 'running' AND owner IS ?2",
                        params![id, owner],
                    )?;
                } else {
                    conn.execute(
                        "UPDATE runs SET status = 'failed', error = 'the server stopped before the run finished',
                             error_kind = ?2, finished_ms = ?1, payload = NULL
                         WHERE id = ?3 AND status = 'running' AND owner IS ?4",
                        params![unix_millis(), ErrorKind::Shutdown.as_str(), id, owner],
                    )?;
                }
            }
        }
        Ok(store)
    }

    /// The runs accepted and not started, oldest first: what a server that
    /// stopped (or was killed) left waiting.
    pub fn queued(&self) -> Vec<QueuedRun> {
        self.with(|c| {
            let mut statement = c.prepare(
                "SELECT id, agent, invocation, payload, journaled FROM runs
                 WHERE status = 'queued' AND COALESCE(origin, 'serve') = 'serve' ORDER BY created_ms, rowid",
            )?;
            let rows = statement.query_map([], |row| {
                Ok(QueuedRun {
                    run_id: row.get(0)?,
                    agent: row.get(1)?,
                    invocation: row.get(2)?,
                    payload: row.get::<_, Option<String>>(3)?.and_then(|text| serde_json::from_str(&text).ok()),
                    journaled: row.get::<_, Option<bool>>(4)?.unwrap_or(false),
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
             PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS runs (
                 id TEXT PRIMARY KEY, agent TEXT NOT NULL, invocation TEXT NOT NULL, status TEXT NOT NULL,
                 result TEXT, error TEXT, events TEXT, created_ms INTEGER NOT NULL, finished_ms INTEGER);
             CREATE INDEX IF NOT EXISTS runs_created ON runs (created_ms);
             CREATE TABLE IF NOT EXISTS conversations (
                 agent TEXT NOT NULL, invocation TEXT NOT NULL, harness TEXT NOT NULL, session TEXT NOT NULL,
                 messages TEXT NOT NULL, updated_ms INTEGER NOT NULL,
                 PRIMARY KEY (agent, invocation, harness, session));
             CREATE INDEX IF NOT EXISTS conversations_updated ON conversations (updated_ms);
             CREATE TABLE IF NOT EXISTS id_sandboxes (
                 agent TEXT NOT NULL, invocation TEXT NOT NULL, connector TEXT NOT NULL, sandbox_id TEXT NOT NULL,
                 idle_ms INTEGER, last_used_ms INTEGER NOT NULL, in_use_by TEXT,
                 PRIMARY KEY (agent, invocation, connector));
             CREATE TABLE IF NOT EXISTS journal (
                 run_id TEXT NOT NULL, seq INTEGER NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
                 PRIMARY KEY (run_id, seq));",
        )?;
        // Stores written before these columns existed: add them.
        let columns = [
            ("error_kind", "TEXT"),
            ("cancel_requested_ms", "INTEGER"),
            ("payload", "TEXT"),
            // Who runs it (`ownership::this_process`), whether it keeps a
            // journal, who started it (`serve` or `cli`) and, for `cli`,
            // what resuming it needs.
            ("owner", "TEXT"),
            ("journaled", "INTEGER"),
            ("origin", "TEXT"),
            ("resume", "TEXT"),
        ];
        for (column, kind) in columns {
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

    /// A run started in this process: its payload is no longer needed,
    /// unless it keeps a journal (`journaled`), whose resume needs it.
    pub fn running(&self, id: &str, journaled: bool) {
        self.with(|c| {
            c.execute(
                "UPDATE runs SET status = 'running', owner = ?2, journaled = ?3,
                     payload = CASE WHEN ?3 THEN payload ELSE NULL END
                 WHERE id = ?1",
                params![id, ownership::run_owner(), journaled],
            )
        });
    }

    /// `flue run` started a run with a journal, in this process: what it
    /// needs to be resumed (`resume`: the agent's path and sandbox settings)
    /// is kept with it.
    pub fn insert_cli(&self, id: &str, agent: &str, invocation: &str, payload: &Value, resume: &Value) {
        self.with(|c| {
            c.execute(
                "INSERT INTO runs (id, agent, invocation, status, created_ms, payload, origin, owner, journaled, resume)
                 VALUES (?1, ?2, ?3, 'running', ?4, ?5, 'cli', ?6, 1, ?7)",
                params![
                    id,
                    agent,
                    invocation,
                    unix_millis(),
                    payload.to_string(),
                    ownership::run_owner(),
                    resume.to_string()
                ],
            )?;
            self.prune(c)
        });
    }

    /// Take up run `id` to resume it in this process (`flue runs resume`):
    /// only a run of `flue run` that kept a journal and whose process is
    /// gone. It then belongs to this process.
    pub fn claim_for_resume(&self, id: &str) -> Result<ResumableRun, NotResumable> {
        type Row =
            (String, String, String, Option<String>, Option<String>, Option<String>, Option<bool>, Option<String>);
        let row: Option<Row> = self
            .with(|c| {
                c.query_row(
                    "SELECT agent, invocation, status, payload, origin, owner, journaled, resume FROM runs WHERE id = ?1",
                    params![id],
                    |row| {
                        Ok((
                            row.get(0)?,
                            row.get(1)?,
                            row.get(2)?,
                            row.get(3)?,
                            row.get(4)?,
                            row.get(5)?,
                            row.get(6)?,
                            row.get(7)?,
                        ))
                    },
                )
                .optional()
            })
            .flatten();
        let Some((agent, invocation, status, payload, origin, owner, journaled, resume)) = row else {
            return Err(NotResumable::Unknown(id.into()));
        };
        if status != "running" && status != "queued" {
            return Err(NotResumable::Ended { run: id.into(), status });
        }
        if origin.as_deref() != Some("cli") {
            return Err(NotResumable::Served(id.into()));
        }
        let (Some(true), Some(payload), Some(resume)) = (journaled, payload, resume) else {
            return Err(NotResumable::NoJournal(id.into()));
        };
        let Some(owner) = owner.filter(|owner| ownership::run_owner_gone(owner)) else {
            return Err(NotResumable::Running(id.into()));
        };
        // One taker: the owner changes only from the one that is gone.
        let taken = self
            .with(|c| {
                c.execute(
                    "UPDATE runs SET owner = ?2
                     WHERE id = ?1 AND owner = ?3 AND status IN ('running', 'queued') AND journaled = 1",
                    params![id, ownership::run_owner(), owner],
                )
            })
            .unwrap_or(0);
        if taken != 1 {
            return Err(NotResumable::Running(id.into()));
        }
        Ok(ResumableRun {
            agent,
            invocation,
            payload: serde_json::from_str(&payload).unwrap_or(Value::Null),
            resume: serde_json::from_str(&resume).unwrap_or(Value::Null),
        })
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
                "UPDATE runs SET status = ?2, result = ?3, error_kind = ?4, error = ?5, events = ?6, finished_ms = ?7,
                     payload = NULL
                 WHERE id = ?1",
                params![id, status, result, kind, error, events, unix_millis()],
            )?;
            // An ended run is never resumed: its journal goes.
            c.execute("DELETE FROM journal WHERE run_id = ?1", params![id])?;
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
            let found: Option<(String, Option<String>)> = c
                .query_row("SELECT status, owner FROM runs WHERE id = ?1", params![id], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .optional()?;
            Ok(match found {
                None => CancelRequest::Unknown,
                // Interrupted (its process is gone): nobody would see the
                // flag, and it must not be resumed. It ends here; what its
                // sandboxes hold is `flue sandboxes gc`'s.
                Some((status, Some(owner))) if status == "running" && ownership::run_owner_gone(&owner) => {
                    let ended = c.execute(
                        "UPDATE runs SET status = 'cancelled', error_kind = ?2, finished_ms = ?3, payload = NULL,
                             cancel_requested_ms = ?3,
                             error = 'the run was cancelled while interrupted (its process was gone); flue sandboxes \
                                      gc deletes the sandboxes it left'
                         WHERE id = ?1 AND status = 'running' AND owner = ?4",
                        params![id, ErrorKind::Cancelled.as_str(), unix_millis(), owner],
                    )?;
                    if ended == 1 {
                        c.execute("DELETE FROM journal WHERE run_id = ?1", params![id])?;
                    } else {
                        // Taken up meanwhile: ask it as any running run.
                        c.execute(
                            "UPDATE runs SET cancel_requested_ms = COALESCE(cancel_requested_ms, ?2) WHERE id = ?1",
                            params![id, unix_millis()],
                        )?;
                    }
                    CancelRequest::Requested
                }
                Some((status, _)) if status == "queued" || status == "running" => {
                    c.execute(
                        "UPDATE runs SET cancel_requested_ms = COALESCE(cancel_requested_ms, ?2) WHERE id = ?1",
                        params![id, unix_millis()],
                    )?;
                    CancelRequest::Requested
                }
                Some((status, _)) => CancelRequest::AlreadyEnded(status),
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

    /// Resolves once someone asked for run `id` to be cancelled.
    pub async fn wait_for_cancel(&self, id: &str) {
        let mut poll = tokio::time::interval(CANCEL_POLL);
        loop {
            poll.tick().await;
            if self.cancel_requested(id) {
                return;
            }
        }
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
const RECORD: &str = "SELECT id, agent, invocation, status, result, error, events, created_ms, finished_ms, error_kind,
     owner, (SELECT COUNT(*) FROM journal WHERE run_id = runs.id) FROM runs";

/// A run's record from a row of [`RECORD`].
fn record(row: &rusqlite::Row<'_>) -> rusqlite::Result<Value> {
    let parse = |text: Option<String>| text.and_then(|t| serde_json::from_str::<Value>(&t).ok());
    // A run whose process is gone before it ended: `interrupted` until it
    // is resumed (by its server's next start, or `flue runs resume`).
    let mut status = row.get::<_, String>(3)?;
    if status == "running" && row.get::<_, Option<String>>(10)?.is_some_and(|owner| ownership::run_owner_gone(&owner)) {
        status = "interrupted".into();
    }
    Ok(json!({
        "runId": row.get::<_, String>(0)?,
        "agent": row.get::<_, String>(1)?,
        "id": row.get::<_, String>(2)?,
        "status": status,
        "journalEntries": row.get::<_, i64>(11)?,
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

impl IdSandboxLedger for RunStore {
    fn used(&self, sandbox: &IdSandbox, in_use: bool) {
        let idle_ms = sandbox.idle.map(|idle| i64::try_from(idle.as_millis()).unwrap_or(i64::MAX));
        let in_use_by = in_use.then(ownership::run_owner);
        self.with(|c| {
            c.execute(
                "INSERT INTO id_sandboxes (agent, invocation, connector, sandbox_id, idle_ms, last_used_ms, in_use_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (agent, invocation, connector) DO UPDATE SET
                     sandbox_id = excluded.sandbox_id, idle_ms = excluded.idle_ms,
                     last_used_ms = excluded.last_used_ms, in_use_by = excluded.in_use_by",
                params![
                    sandbox.agent,
                    sandbox.id,
                    sandbox.connector,
                    sandbox.sandbox_id,
                    idle_ms,
                    unix_millis(),
                    in_use_by
                ],
            )
        });
    }
}

impl RunStore {
    /// The sandboxes kept per id that have gone unused past their idle
    /// time, as of `now_ms`.
    pub fn idle_id_sandboxes(&self, now_ms: i64) -> Vec<IdSandbox> {
        self.with(|c| {
            let mut statement = c.prepare(
                "SELECT agent, invocation, connector, sandbox_id, idle_ms, in_use_by FROM id_sandboxes
                 WHERE idle_ms IS NOT NULL AND last_used_ms + idle_ms <= ?1 ORDER BY last_used_ms",
            )?;
            let rows = statement.query_map(params![now_ms], |row| {
                let sandbox = IdSandbox {
                    agent: row.get(0)?,
                    id: row.get(1)?,
                    connector: row.get(2)?,
                    sandbox_id: row.get(3)?,
                    idle: row.get::<_, Option<i64>>(4)?.map(|ms| Duration::from_millis(ms.max(0) as u64)),
                };
                Ok((sandbox, row.get::<_, Option<String>>(5)?))
            })?;
            rows.collect::<rusqlite::Result<Vec<(IdSandbox, Option<String>)>>>()
        })
        .unwrap_or_default()
        .into_iter()
        // One a run holds is not idle, however long that run takes, while
        // its process lives.
        .filter(|(_, in_use_by)| in_use_by.as_deref().is_none_or(ownership::run_owner_gone))
        .map(|(sandbox, _)| sandbox)
        .collect()
    }

    /// The runs with a journal that have not ended, as `flue sandboxes gc`
    /// sees them: those a process runs or a server will resume (queued, or
    /// running with their process alive) — their sandboxes are no orphans —
    /// and those interrupted (running, their process gone).
    pub fn unended_journaled_runs(&self) -> (HashSet<String>, HashSet<String>) {
        let rows = self
            .with(|c| {
                let mut statement = c.prepare(
                    "SELECT id, status, owner FROM runs WHERE status IN ('queued', 'running') AND journaled = 1",
                )?;
                let rows = statement.query_map([], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, Option<String>>(2)?))
                })?;
                rows.collect::<rusqlite::Result<Vec<(String, String, Option<String>)>>>()
            })
            .unwrap_or_default();
        let (mut going, mut interrupted) = (HashSet::new(), HashSet::new());
        for (id, status, owner) in rows {
            if status == "running" && owner.as_deref().is_some_and(ownership::run_owner_gone) {
                interrupted.insert(id);
            } else {
                going.insert(id);
            }
        }
        (going, interrupted)
    }

    /// Forget `sandbox` (it was deleted) — unless a run took it up again
    /// since it was found idle.
    pub fn forget_id_sandbox(&self, sandbox: &IdSandbox, found_ms: i64) {
        self.with(|c| {
            c.execute(
                "DELETE FROM id_sandboxes WHERE agent = ?1 AND invocation = ?2 AND connector = ?3
                     AND sandbox_id = ?4 AND last_used_ms <= ?5",
                params![sandbox.agent, sandbox.id, sandbox.connector, sandbox.sandbox_id, found_ms],
            )
        });
    }
}

impl JournalStore for RunStore {
    fn entries(&self, run_id: &str) -> Result<Vec<Entry>, JournalStoreError> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let mut statement = conn
            .prepare_cached("SELECT seq, key, value FROM journal WHERE run_id = ?1 ORDER BY seq")
            .map_err(journal_error)?;
        let rows = statement
            .query_map(params![run_id], |row| Ok(Entry { seq: row.get(0)?, key: row.get(1)?, value: row.get(2)? }))
            .map_err(journal_error)?;
        rows.collect::<rusqlite::Result<Vec<Entry>>>().map_err(journal_error)
    }

    fn abandon(&self, run_id: &str) -> Result<(), JournalStoreError> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        conn.execute("UPDATE runs SET journaled = 0 WHERE id = ?1", params![run_id]).map_err(journal_error)?;
        Ok(())
    }

    fn append(&self, run_id: &str, entry: &Entry) -> Result<(), JournalStoreError> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let mut statement = conn
            .prepare_cached("INSERT INTO journal (run_id, seq, key, value) VALUES (?1, ?2, ?3, ?4)")
            .map_err(journal_error)?;
        statement.execute(params![run_id, entry.seq, entry.key, entry.value]).map_err(journal_error)?;
        Ok(())
    }
}

fn journal_error(err: rusqlite::Error) -> JournalStoreError {
    JournalStoreError { source: Box::new(err) }
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
        server.running("run_a", false);
        let beside = RunStore::attach(&path, usize::MAX, false).unwrap();
        assert_eq!(beside.get("run_a").unwrap()["status"], "running");
        assert_eq!(beside.list(10).len(), 1);
        // Another server (alive) leaves it be.
        assert_eq!(RunStore::open(&path, 10, false).unwrap().get("run_a").unwrap()["status"], "running");
        // A server starting again marks it failed: its process is gone.
        owner_gone(&server, "run_a");
        assert_eq!(beside.get("run_a").unwrap()["status"], "interrupted");
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
        store.running("run_a", false);
        owner_gone(&store, "run_a");
        drop(store);
        let store = RunStore::open(&path, 10, false).unwrap();
        let queued = store.queued();
        assert_eq!(queued.len(), 1);
        assert_eq!(
            (queued[0].run_id.as_str(), queued[0].payload.clone()),
            ("run_b", Some(serde_json::json!({"n": 2})))
        );
        assert_eq!(store.get("run_a").unwrap()["status"], "failed", "a run without a journal is not resumed");
    }

    /// Mark run `id` as run by a process that is gone (an earlier boot of
    /// this machine).
    fn owner_gone(store: &RunStore, id: &str) {
        let gone = ownership::run_owner()
            .split_once('/')
            .map(|(machine, _)| format!("{machine}/1-1-{}-1", "0".repeat(32)))
            .unwrap();
        store.with(|c| c.execute("UPDATE runs SET owner = ?2 WHERE id = ?1", params![id, gone])).unwrap();
    }

    #[test]
    fn a_journaled_run_is_resumed_once_its_process_is_gone_and_its_journal_ends_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.sqlite");
        let store = RunStore::open(&path, 10, false).unwrap();
        store.insert("run_a", "triage", "issue-1", &serde_json::json!({"n": 1}));
        store.running("run_a", true);
        let entry = Entry { seq: 0, key: "component".into(), value: "\"abc\"".into() };
        store.append("run_a", &entry).unwrap();
        assert_eq!(store.entries("run_a").unwrap(), vec![entry]);
        owner_gone(&store, "run_a");
        drop(store);
        let store = RunStore::open(&path, 10, false).unwrap();
        let queued = store.queued();
        assert_eq!((queued.len(), queued[0].journaled), (1, true));
        assert_eq!(queued[0].payload, Some(serde_json::json!({"n": 1})), "the payload is kept for the resume");
        store.finish("run_a", Ok(&Value::Null), &[]);
        assert!(store.entries("run_a").unwrap().is_empty(), "an ended run's journal is deleted");
        assert!(matches!(store.claim_for_resume("run_a"), Err(NotResumable::Ended { .. })));
    }

    #[test]
    fn only_a_cli_run_whose_process_is_gone_can_be_claimed_and_only_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = RunStore::open(&dir.path().join("runs.sqlite"), 10, false).unwrap();
        let resume = serde_json::json!({"source": "/p/agent.wasm"});
        store.insert_cli("run_c", "agent.wasm", "cli", &serde_json::json!(1), &resume);
        assert!(matches!(store.claim_for_resume("run_c"), Err(NotResumable::Running(_))));
        owner_gone(&store, "run_c");
        let claimed = store.claim_for_resume("run_c").unwrap();
        assert_eq!((claimed.payload, &claimed.resume), (serde_json::json!(1), &resume));
        assert!(matches!(store.claim_for_resume("run_c"), Err(NotResumable::Running(_))), "claimed twice");
        store.insert("run_s", "triage", "x", &Value::Null);
        assert!(matches!(store.claim_for_resume("run_s"), Err(NotResumable::Served(_))));
        assert!(matches!(store.claim_for_resume("nope"), Err(NotResumable::Unknown(_))));
        // An interrupted run is cancelled at once: nobody runs it to see a flag.
        store.insert_cli("run_d", "agent.wasm", "cli", &serde_json::json!(1), &resume);
        store.append("run_d", &Entry { seq: 0, key: "component".into(), value: "1".into() }).unwrap();
        owner_gone(&store, "run_d");
        assert_eq!(store.get("run_d").unwrap()["status"], "interrupted");
        assert_eq!(store.request_cancel("run_d"), CancelRequest::Requested);
        assert_eq!(store.get("run_d").unwrap()["status"], "cancelled");
        assert!(store.entries("run_d").unwrap().is_empty());
    }

    #[test]
    fn an_id_sandbox_is_idle_from_its_last_use_and_never_with_no_idle_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = RunStore::open(&dir.path().join("runs.sqlite"), 10, false).unwrap();
        let sandbox = |id: &str, idle: Option<u64>| IdSandbox {
            agent: "triage".into(),
            id: id.into(),
            connector: "local".into(),
            sandbox_id: format!("local-{id}"),
            idle: idle.map(Duration::from_secs),
        };
        store.used(&sandbox("a", Some(60)), false);
        store.used(&sandbox("b", None), false);
        store.used(&sandbox("c", Some(60)), true);
        let now = unix_millis();
        assert!(store.idle_id_sandboxes(now).is_empty());
        let later = now + 61_000;
        assert_eq!(store.idle_id_sandboxes(later), vec![sandbox("a", Some(60))], "c is in use by this process");
        // Used again after it was found idle: not forgotten.
        store.forget_id_sandbox(&sandbox("a", Some(60)), now - 1);
        assert_eq!(store.idle_id_sandboxes(later).len(), 1);
        store.forget_id_sandbox(&sandbox("a", Some(60)), later);
        assert!(store.idle_id_sandboxes(later + 10_000_000).is_empty(), "b has no idle time");
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
