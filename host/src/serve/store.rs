//! The run store: every run a server accepted, with its status, result (or
//! error kind and message) and events, in an embedded SQLite database, so
//! finished runs survive a restart. Retention is bounded: only the newest
//! finished runs are kept; a queued or running run is never deleted.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};

use super::errors::{ApiError, ErrorKind};
use super::private_files;

/// The SQLite run store.
pub struct RunStore {
    conn: Mutex<Connection>,
    retention: usize,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl RunStore {
    /// Open (or create) the store at `path`, keeping the newest `retention`
    /// runs. Runs a previous server left unfinished are marked failed. Its
    /// directory and files are made private (see [`super::private_files`]);
    /// `own_dir`: the directory is flue's own (`.flue/`), so an existing one
    /// readable by others is made `0700` too.
    pub fn open(path: &Path, retention: usize, own_dir: bool) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            private_files::prepare_dir(dir, own_dir)?;
        }
        private_files::prepare_database(path)?;
        let conn = Connection::open(path)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE IF NOT EXISTS runs (
                 id TEXT PRIMARY KEY, agent TEXT NOT NULL, invocation TEXT NOT NULL, status TEXT NOT NULL,
                 result TEXT, error TEXT, events TEXT, created_ms INTEGER NOT NULL, finished_ms INTEGER);
             CREATE INDEX IF NOT EXISTS runs_created ON runs (created_ms);",
        )?;
        // Stores written before error kinds existed: add the column.
        let has_kind = conn.prepare("SELECT 1 FROM pragma_table_info('runs') WHERE name = 'error_kind'")?.exists([])?;
        if !has_kind {
            conn.execute_batch("ALTER TABLE runs ADD COLUMN error_kind TEXT")?;
        }
        conn.execute(
            "UPDATE runs SET status = 'failed', error = 'the server stopped before the run finished',
                 error_kind = ?2, finished_ms = ?1
             WHERE status IN ('queued', 'running')",
            params![now_ms(), ErrorKind::Shutdown.as_str()],
        )?;
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

    /// A run was accepted.
    pub fn insert(&self, id: &str, agent: &str, invocation: &str) {
        self.with(|c| {
            c.execute(
                "INSERT INTO runs (id, agent, invocation, status, created_ms) VALUES (?1, ?2, ?3, 'queued', ?4)",
                params![id, agent, invocation, now_ms()],
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

    /// A run started.
    pub fn running(&self, id: &str) {
        self.with(|c| c.execute("UPDATE runs SET status = 'running' WHERE id = ?1", params![id]));
    }

    /// A run ended, with its result or error, and its events.
    pub fn finish(&self, id: &str, result: Result<&Value, &ApiError>, events: &[Value]) {
        let (status, result, kind, error) = match result {
            Ok(value) => ("succeeded", Some(value.to_string()), None, None),
            Err(err) => ("failed", None, Some(err.kind.as_str()), Some(err.message.clone())),
        };
        let events = Value::from(events.to_vec()).to_string();
        self.with(|c| {
            c.execute(
                "UPDATE runs SET status = ?2, result = ?3, error_kind = ?4, error = ?5, events = ?6, finished_ms = ?7
                 WHERE id = ?1",
                params![id, status, result, kind, error, events, now_ms()],
            )?;
            self.prune(c)
        });
    }

    /// A run's record, as `GET /runs/<id>` shows it.
    pub fn get(&self, id: &str) -> Option<Value> {
        self.with(|c| {
            c.query_row(
                "SELECT id, agent, invocation, status, result, error, events, created_ms, finished_ms, error_kind
                 FROM runs WHERE id = ?1",
                params![id],
                |row| {
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
                },
            )
            .optional()
        })
        .flatten()
    }
}
