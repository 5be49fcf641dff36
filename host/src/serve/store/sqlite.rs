//! The run store in an embedded SQLite file: created private, in WAL mode
//! (readers beside a writer; `synchronous = NORMAL`, so that an entry
//! survives a killed process), its schema created or brought up to date
//! where an older flue left it.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::Connection;

use super::db::Db;
use crate::serve::private_files;

/// How long a write waits for another process's (e.g. `flue runs cancel`
/// beside a server) before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The store in the file at `path`; `own_dir`: its directory is flue's own.
pub fn open(path: &Path, own_dir: bool) -> anyhow::Result<Db> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        private_files::prepare_dir(dir, own_dir)?;
    }
    private_files::prepare_database(path)?;
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Two processes opening a new store at once may find it busy where the
    // busy timeout does not apply (switching it to WAL): try again, within
    // the same bound.
    let started = std::time::Instant::now();
    loop {
        match prepare_schema(&conn) {
            Ok(()) => break,
            Err(err) if is_busy(&err) && started.elapsed() < BUSY_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(err) => return Err(err.into()),
        }
    }
    Ok(Db::Sqlite(Mutex::new(conn)))
}

/// Whether `err` says another connection holds the database.
fn is_busy(err: &rusqlite::Error) -> bool {
    matches!(err.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

/// The store's schema: created, or brought up to date where an older flue
/// left it.
fn prepare_schema(conn: &Connection) -> rusqlite::Result<()> {
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
             PRIMARY KEY (run_id, seq));
         CREATE TABLE IF NOT EXISTS run_events (
             run_id TEXT NOT NULL, seq INTEGER NOT NULL, event TEXT NOT NULL, PRIMARY KEY (run_id, seq));
         CREATE TABLE IF NOT EXISTS id_turns (
             agent TEXT NOT NULL, invocation TEXT NOT NULL, run_id TEXT NOT NULL, owner TEXT NOT NULL,
             lease_until_ms INTEGER NOT NULL, PRIMARY KEY (agent, invocation));",
    )?;
    // Stores written before these columns existed: add them.
    let columns = [
        ("error_kind", "TEXT"),
        ("cancel_requested_ms", "INTEGER"),
        ("payload", "TEXT"),
        // Who runs it (`ownership::run_owner`), whether it keeps a journal,
        // who started it (`serve` or `cli`) and, for `cli`, what resuming
        // it needs.
        ("owner", "TEXT"),
        ("journaled", "INTEGER"),
        ("origin", "TEXT"),
        ("resume", "TEXT"),
        // Until when its owner holds it (renewed by heartbeats), and which
        // server accepted it.
        ("lease_until_ms", "INTEGER"),
        ("accepted_by", "TEXT"),
    ];
    // Looked for and added under the write lock: two processes opening a
    // new store at once (two `flue run`s in a fresh project) would both
    // find a column missing, and the second to add it would fail.
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let added = columns.iter().try_for_each(|(column, kind)| -> rusqlite::Result<()> {
        let exists = conn.prepare("SELECT 1 FROM pragma_table_info('runs') WHERE name = ?1")?.exists([column])?;
        if !exists {
            conn.execute_batch(&format!("ALTER TABLE runs ADD COLUMN {column} {kind}"))?;
        }
        Ok(())
    });
    match added {
        Ok(()) => conn.execute_batch("COMMIT")?,
        Err(err) => {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(err);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Processes opening a new store at once each get it whole: none fails
    /// adding a column another just added.
    #[test]
    fn stores_opened_at_once_are_each_brought_up_to_date() {
        for _ in 0..10 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("runs.sqlite");
            let start = std::sync::Arc::new(std::sync::Barrier::new(6));
            let openers: Vec<_> = (0..6)
                .map(|_| {
                    let (path, start) = (path.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        open(&path, true).map(|_| ()).map_err(|err| err.to_string())
                    })
                })
                .collect();
            for opener in openers {
                opener.join().unwrap().unwrap();
            }
        }
    }
}
