//! The run store: every run a server accepted, with its status, result (or
//! error kind and message) and events, the conversations agents keep per
//! invocation id, the journals of runs going on, and the last use of the
//! sandboxes kept per id — so that finished runs and conversations survive
//! a restart and unfinished runs can be resumed. Retention is bounded: only
//! the newest finished runs are kept, a queued or running run is never
//! deleted, and only the [`MAX_CONVERSATIONS`] most recently used
//! conversations are kept.
//!
//! Where it lives ([`StoreLocation`]): an embedded SQLite file (the default,
//! `<project>/.flue/runs.sqlite`; `sqlite.rs`) or a PostgreSQL database that
//! several servers share (`--store postgres://…`; [`postgres`]). The SQL
//! below is written once for both ([`db`]).
//!
//! Other processes use the same store: `flue runs` reads it and asks for a
//! run to be cancelled (a flag the process running it polls), `flue run`
//! keeps its runs, journals and conversations in it. A run whose process is
//! gone is taken up again only by one process (compare-and-set on its
//! owner).

pub mod db;
mod listing;
pub mod postgres;
mod queue;
mod sqlite;

pub use listing::{Cursor, MAX_PAGE, RunQuery};
pub use queue::{Stop, TakenOver};

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::errors::{ApiError, ErrorKind};
use crate::events::unix_millis;
use crate::journal::{Entry, JournalStore, JournalStoreError};
use crate::model::Message;
use crate::run::conversations::{ConversationKey, ConversationStore, ConversationStoreError};
use crate::run::ownership;
use crate::run::{IdSandbox, IdSandboxLedger};
use db::{Db, DbError, Row, Sql};

/// Conversations kept, the most recently used.
pub const MAX_CONVERSATIONS: usize = 10_000;

/// Finished runs kept unless `--retention` says otherwise.
pub const DEFAULT_RETENTION: usize = 1000;

/// How often a `flue run` looks in the store for a cancel (`flue runs
/// cancel` from another process asks there). A server asks for all its runs
/// at once instead (`serve::fleet`).
const CANCEL_POLL: Duration = Duration::from_millis(200);

/// How long a server's hold on its runs lasts without a heartbeat, unless
/// `--lease-secs` says otherwise.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);

/// The run store.
pub struct RunStore {
    db: Db,
    retention: usize,
    /// This process, as the owner of the runs it holds.
    me: String,
    /// How long this process's hold on a run lasts without a heartbeat.
    lease: Duration,
}

/// Where a run store lives: `--store` (or `FLUE_STORE`), a file path or a
/// `postgres://` URL.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// An SQLite file.
    File(PathBuf),
    /// A PostgreSQL database (a `postgres://` or `postgresql://` URL).
    Postgres(String),
}

impl StoreLocation {
    /// `text` as a location: a PostgreSQL URL, else a file path.
    pub fn parse(text: &str) -> StoreLocation {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            StoreLocation::Postgres(text.to_string())
        } else {
            StoreLocation::File(PathBuf::from(text))
        }
    }
}

impl From<&Path> for StoreLocation {
    fn from(path: &Path) -> Self {
        StoreLocation::File(path.to_path_buf())
    }
}

impl From<&PathBuf> for StoreLocation {
    fn from(path: &PathBuf) -> Self {
        StoreLocation::File(path.clone())
    }
}

/// Shown without a URL's password: it is a secret.
impl std::fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::File(path) => write!(f, "{}", path.display()),
            StoreLocation::Postgres(url) => f.write_str(&postgres::without_password(url)),
        }
    }
}

impl std::fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreLocation({self})")
    }
}

/// A run waiting in the store's queue, claimed to be started here.
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

fn journal_error(err: DbError) -> JournalStoreError {
    JournalStoreError { source: Box::new(err) }
}

/// Text from column `i`.
fn text(row: &Row, i: usize) -> Option<String> {
    row.get(i).and_then(Sql::text)
}

/// A number from column `i`.
fn int(row: &Row, i: usize) -> Option<i64> {
    row.get(i).and_then(Sql::int)
}

impl RunStore {
    /// Open (or create) the store at `location` for a server, keeping the
    /// newest `retention` runs, its schema migrated. Runs a server left
    /// running whose process is gone are resumed if they kept a journal
    /// (queued again), else marked failed; the ones left queued stay
    /// queued, for the server to start ([`RunStore::queued`]). A file and
    /// its directory are made private; `own_dir`: the directory is flue's
    /// own (`.flue/`), so an existing one readable by others is made `0700`
    /// too.
    pub fn open(location: impl Into<StoreLocation>, retention: usize, own_dir: bool) -> anyhow::Result<Self> {
        let store = Self::attach(location, retention, own_dir)?;
        let left = store.db.query(
            "SELECT id, owner, journaled, status FROM runs
             WHERE status IN ('running', 'queued') AND owner IS NOT NULL AND COALESCE(origin, 'serve') = 'serve'",
            &[],
        )?;
        for row in left {
            let (Some(id), owner, journaled) = (text(&row, 0), text(&row, 1), int(&row, 2) == Some(1)) else {
                continue;
            };
            // A server still running it (beside this one) keeps it; one on
            // another machine loses it when its lease runs out (`queue`).
            if owner.as_deref().is_some_and(|owner| !ownership::run_owner_gone(owner)) {
                continue;
            }
            // Only if nobody changed it since (another server starting).
            if text(&row, 3).as_deref() == Some("queued") || journaled {
                // Back in the shared queue: resumed from its journal, or
                // started, as any queued run.
                store.db.execute(
                    "UPDATE runs SET status = 'queued', owner = NULL, lease_until_ms = NULL
                     WHERE id = ?1 AND status IN ('running', 'queued') AND owner IS NOT DISTINCT FROM ?2",
                    &[id.into(), owner.into()],
                )?;
            } else {
                store.db.execute(
                    "UPDATE runs SET status = 'failed', error = 'the server stopped before the run finished',
                         error_kind = ?2, finished_ms = ?1, payload = NULL
                     WHERE id = ?3 AND status = 'running' AND owner IS NOT DISTINCT FROM ?4",
                    &[unix_millis().into(), ErrorKind::Shutdown.as_str().into(), id.into(), owner.into()],
                )?;
            }
        }
        Ok(store)
    }

    /// Open (or create) the store at `location` beside whatever server may
    /// use it (`flue runs`, `flue run`): the same checks, the same schema,
    /// and no run's status changed.
    pub fn attach(location: impl Into<StoreLocation>, retention: usize, own_dir: bool) -> anyhow::Result<Self> {
        let db = match location.into() {
            StoreLocation::File(path) => sqlite::open(&path, own_dir)?,
            StoreLocation::Postgres(url) => postgres::open(&url)?,
        };
        Ok(RunStore { db, retention, me: ownership::run_owner(), lease: DEFAULT_LEASE })
    }

    /// This store, holding this process's runs for `lease` between
    /// heartbeats.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long this process's hold on a run lasts without a heartbeat.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// The lease in milliseconds, as a statement parameter.
    fn lease_ms(&self) -> i64 {
        i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX)
    }

    /// `work` with this store on a blocking thread, so that a store slow
    /// to answer never stalls the async runtime; `None` if `work` panicked.
    pub async fn off_thread<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&RunStore) -> T + Send + 'static,
    ) -> Option<T> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || work(&store)).await.ok()
    }

    /// Which database engine keeps it.
    pub fn engine(&self) -> &'static str {
        self.db.engine()
    }

    /// Run a statement; a failure is a warning (the run goes on), `None`.
    fn execute(&self, sql: &str, params: &[Sql]) -> Option<usize> {
        self.db.execute(sql, params).map_err(|err| tracing::warn!("run store: {err}")).ok()
    }

    /// Select rows; a failure is a warning and no rows.
    fn query(&self, sql: &str, params: &[Sql]) -> Vec<Row> {
        self.db.query(sql, params).map_err(|err| tracing::warn!("run store: {err}")).unwrap_or_default()
    }

    /// A run was accepted by this server, which holds it (its caller waits
    /// here), with its payload (kept until it ends, so that another server
    /// can start it if this one stops first).
    pub fn insert(&self, id: &str, agent: &str, invocation: &str, payload: &Value) {
        self.insert_queued(id, agent, invocation, payload, true);
    }

    /// A run accepted by this server, queued: held by it (`held`), or in
    /// the shared queue.
    fn insert_queued(&self, id: &str, agent: &str, invocation: &str, payload: &Value, held: bool) {
        let (owner, lease_ms) = if held { (Some(self.me.as_str()), Some(self.lease_ms())) } else { (None, None) };
        self.execute(
            &format!(
                "INSERT INTO runs (id, agent, invocation, status, created_ms, payload, owner, lease_until_ms, accepted_by)
                 VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?6, {} + CAST(?7 AS BIGINT), ?8)",
                self.db.now_ms()
            ),
            &[
                id.into(),
                agent.into(),
                invocation.into(),
                unix_millis().into(),
                payload.to_string().into(),
                owner.into(),
                lease_ms.into(),
                self.me.as_str().into(),
            ],
        );
    }

    /// Keep the newest `retention` finished runs; never a queued or running
    /// one. Only an ending run adds a finished one: runs are pruned as one
    /// ends ([`RunStore::finish`]).
    const PRUNE: &str = "DELETE FROM runs WHERE status NOT IN ('queued', 'running') AND id NOT IN
         (SELECT id FROM runs WHERE status NOT IN ('queued', 'running') ORDER BY created_ms DESC LIMIT ?1)";

    /// A run starts in this process: its payload is no longer needed,
    /// unless it keeps a journal (`journaled`), whose resume needs it.
    /// False when the run is no longer this process's to start (while it
    /// waited here, its lease ran out and another server claimed it).
    pub fn running(&self, id: &str, journaled: bool) -> bool {
        let started = self.execute(
            &format!(
                "UPDATE runs SET status = 'running', owner = ?2, journaled = ?3, lease_until_ms = {} + ?4,
                     payload = CASE WHEN CAST(?3 AS BIGINT) = 1 THEN payload ELSE NULL END
                 WHERE id = ?1 AND (owner = ?2 OR owner IS NULL) AND status IN ('queued', 'running')",
                self.db.now_ms()
            ),
            &[id.into(), self.me.as_str().into(), journaled.into(), self.lease_ms().into()],
        );
        // A store that failed to answer does not stop the run (as before).
        started != Some(0)
    }

    /// `flue run` started a run with a journal, in this process: what it
    /// needs to be resumed (`resume`: the agent's path and sandbox settings)
    /// is kept with it.
    pub fn insert_cli(&self, id: &str, agent: &str, invocation: &str, payload: &Value, resume: &Value) {
        self.execute(
            "INSERT INTO runs (id, agent, invocation, status, created_ms, payload, origin, owner, journaled, resume)
             VALUES (?1, ?2, ?3, 'running', ?4, ?5, 'cli', ?6, 1, ?7)",
            &[
                id.into(),
                agent.into(),
                invocation.into(),
                unix_millis().into(),
                payload.to_string().into(),
                self.me.as_str().into(),
                resume.to_string().into(),
            ],
        );
    }

    /// Take up run `id` to resume it in this process (`flue runs resume`):
    /// only a run of `flue run` that kept a journal and whose process is
    /// gone. It then belongs to this process.
    pub fn claim_for_resume(&self, id: &str) -> Result<ResumableRun, NotResumable> {
        let row = self
            .query(
                "SELECT agent, invocation, status, payload, origin, owner, journaled, resume FROM runs WHERE id = ?1",
                &[id.into()],
            )
            .into_iter()
            .next();
        let Some(row) = row else {
            return Err(NotResumable::Unknown(id.into()));
        };
        let status = text(&row, 2).unwrap_or_default();
        if status != "running" && status != "queued" {
            return Err(NotResumable::Ended { run: id.into(), status });
        }
        if text(&row, 4).as_deref() != Some("cli") {
            return Err(NotResumable::Served(id.into()));
        }
        let (true, Some(payload), Some(resume)) = (int(&row, 6) == Some(1), text(&row, 3), text(&row, 7)) else {
            return Err(NotResumable::NoJournal(id.into()));
        };
        let Some(owner) = text(&row, 5).filter(|owner| ownership::run_owner_gone(owner)) else {
            return Err(NotResumable::Running(id.into()));
        };
        // One taker: the owner changes only from the one that is gone.
        let taken = self
            .execute(
                "UPDATE runs SET owner = ?2
                 WHERE id = ?1 AND owner = ?3 AND status IN ('running', 'queued') AND journaled = 1",
                &[id.into(), self.me.as_str().into(), owner.into()],
            )
            .unwrap_or(0);
        if taken != 1 {
            return Err(NotResumable::Running(id.into()));
        }
        Ok(ResumableRun {
            agent: text(&row, 0).unwrap_or_default(),
            invocation: text(&row, 1).unwrap_or_default(),
            payload: serde_json::from_str(&payload).unwrap_or(Value::Null),
            resume: serde_json::from_str(&resume).unwrap_or(Value::Null),
        })
    }

    /// A run this process ran ended, with its result or error, and its
    /// events — unless another process took it over meanwhile (its lease
    /// ran out, and it is queued to resume or someone else's now): the end
    /// is then theirs to record.
    /// Whether it was this process's to end (a run another server took over
    /// is that server's to end).
    pub fn finish(&self, id: &str, result: Result<&Value, &ApiError>, events: &[Value]) -> bool {
        let (status, result, kind, error) = match result {
            Ok(value) => ("succeeded", Some(value.to_string()), None, None),
            Err(err) => (err.kind.run_status(), None, Some(err.kind.as_str()), Some(err.message.clone())),
        };
        let events = Value::from(events.to_vec()).to_string();
        let (run, me) = (Sql::from(id), Sql::from(self.me.as_str()));
        // An ended run is never resumed: its journal goes, and its events
        // are in its record now — in the same commit as its end, and only
        // if it was this process's to end.
        let mine_ended = "EXISTS (SELECT 1 FROM runs WHERE id = ?1 AND owner = ?2
                              AND status NOT IN ('queued', 'running'))";
        let forget_journal = format!("DELETE FROM journal WHERE run_id = ?1 AND {mine_ended}");
        let forget_events = format!("DELETE FROM run_events WHERE run_id = ?1 AND {mine_ended}");
        let retention = [Sql::from(self.retention as u64)];
        let end_params = [
            run.clone(),
            status.into(),
            result.into(),
            kind.into(),
            error.into(),
            events.into(),
            unix_millis().into(),
            me.clone(),
        ];
        let (journal_params, events_params) = ([run.clone(), me.clone()], [run, me]);
        let ended = self.db.batch_then_prune(
            &[
                (
                    "UPDATE runs SET status = ?2, result = ?3, error_kind = ?4, error = ?5, events = ?6,
                         finished_ms = ?7, payload = NULL, lease_until_ms = NULL
                     WHERE id = ?1 AND owner = ?8",
                    &end_params,
                ),
                (&forget_journal, &journal_params),
                (&forget_events, &events_params),
            ],
            (Self::PRUNE, &retention),
        );
        match ended {
            Ok(changed) => changed.first() == Some(&1),
            Err(err) => {
                tracing::warn!("run store: {err}");
                false
            }
        }
    }

    /// A run's record, as `GET /runs/<id>` shows it, with the
    /// conversations kept for its agent and invocation id.
    pub fn get(&self, id: &str) -> Option<Value> {
        let row = self.query(&format!("{} WHERE id = ?1", self.record_sql()), &[id.into()]).into_iter().next()?;
        let mut record = record(&row)?;
        let (agent, invocation) = (record["agent"].as_str()?.to_string(), record["id"].as_str()?.to_string());
        record["conversations"] = Value::from(self.conversations(&agent, &invocation));
        Some(record)
    }

    /// What is left of a run's lease, in milliseconds by the database's
    /// clock, as a column (negative: it ran out; NULL: not held by lease).
    fn lease_left(&self) -> String {
        format!("lease_until_ms - {}", self.db.now_ms())
    }

    /// The columns of a run's record, in the order [`record`] reads them.
    fn record_sql(&self) -> String {
        format!(
            "SELECT id, agent, invocation, status, result, error, events, created_ms, finished_ms, error_kind,
                 owner, (SELECT COUNT(*) FROM journal WHERE run_id = runs.id), {} FROM runs",
            self.lease_left()
        )
    }

    /// Run `id`'s status as stored (`None`: no such run).
    pub fn status(&self, id: &str) -> Option<String> {
        self.query("SELECT status FROM runs WHERE id = ?1", &[id.into()]).first().and_then(|row| text(row, 0))
    }

    /// The newest `limit` runs, newest first, without their events.
    pub fn list(&self, limit: usize) -> Vec<Value> {
        self.query(&format!("{} ORDER BY created_ms DESC LIMIT ?1", self.record_sql()), &[(limit as u64).into()])
            .iter()
            .filter_map(record)
            .map(|mut value| {
                value.as_object_mut().map(|o| o.remove("events"));
                value
            })
            .collect()
    }

    /// Ask run `id` to stop: the process running it sees the flag (see
    /// [`RunStore::cancel_requested`]) and stops it.
    pub fn request_cancel(&self, id: &str) -> CancelRequest {
        let Some(row) = self
            .query(&format!("SELECT status, owner, {} FROM runs WHERE id = ?1", self.lease_left()), &[id.into()])
            .into_iter()
            .next()
        else {
            return CancelRequest::Unknown;
        };
        let (status, owner, lease) = (text(&row, 0).unwrap_or_default(), text(&row, 1), int(&row, 2));
        let ask = || {
            self.execute(
                "UPDATE runs SET cancel_requested_ms = COALESCE(cancel_requested_ms, ?2) WHERE id = ?1",
                &[id.into(), unix_millis().into()],
            );
        };
        match owner {
            // Interrupted (its process is gone): nobody would see the flag,
            // and it must not be resumed. It ends here; what its sandboxes
            // hold is `flue sandboxes gc`'s.
            Some(owner) if status == "running" && gone(&owner, lease) => {
                let ended = self.execute(
                    "UPDATE runs SET status = 'cancelled', error_kind = ?2, finished_ms = ?3, payload = NULL,
                         cancel_requested_ms = ?3,
                         error = 'the run was cancelled while interrupted (its process was gone); flue sandboxes \
                                  gc deletes the sandboxes it left'
                     WHERE id = ?1 AND status = 'running' AND owner = ?4",
                    &[id.into(), ErrorKind::Cancelled.as_str().into(), unix_millis().into(), owner.into()],
                );
                if ended == Some(1) {
                    self.execute("DELETE FROM journal WHERE run_id = ?1", &[id.into()]);
                } else {
                    // Taken up meanwhile: ask it as any running run.
                    ask();
                }
                CancelRequest::Requested
            }
            // Waiting in the shared queue: nobody runs it yet. It ends here
            // unless a server claims it meanwhile, which then sees the flag.
            None if status == "queued" => {
                let ended = self.execute(
                    "UPDATE runs SET status = 'cancelled', error_kind = ?2, finished_ms = ?3, payload = NULL,
                         cancel_requested_ms = ?3, error = 'the run was cancelled before it started'
                     WHERE id = ?1 AND status = 'queued' AND owner IS NULL",
                    &[id.into(), ErrorKind::Cancelled.as_str().into(), unix_millis().into()],
                );
                if ended != Some(1) {
                    ask();
                }
                CancelRequest::Requested
            }
            _ if status == "queued" || status == "running" => {
                ask();
                CancelRequest::Requested
            }
            _ => CancelRequest::AlreadyEnded(status),
        }
    }

    /// Whether run `id` has been asked to stop.
    pub fn cancel_requested(&self, id: &str) -> bool {
        let rows = self.query("SELECT cancel_requested_ms FROM runs WHERE id = ?1", &[id.into()]);
        rows.first().is_some_and(|row| int(row, 0).is_some())
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
        self.query(
            "SELECT harness, session, messages, updated_ms FROM conversations
             WHERE agent = ?1 AND invocation = ?2 ORDER BY harness, session",
            &[agent.into(), invocation.into()],
        )
        .into_iter()
        .map(|row| {
            let messages = text(&row, 2).unwrap_or_default();
            json!({
                "harness": text(&row, 0),
                "session": text(&row, 1),
                "messages": serde_json::from_str::<Value>(&messages).unwrap_or_else(|_| json!([])),
                "updatedMs": int(&row, 3),
            })
        })
        .collect()
    }

    /// The sandboxes kept per id that have gone unused past their idle
    /// time, as of `now_ms`.
    pub fn idle_id_sandboxes(&self, now_ms: i64) -> Vec<IdSandbox> {
        self.query(
            "SELECT agent, invocation, connector, sandbox_id, idle_ms, in_use_by FROM id_sandboxes
             WHERE idle_ms IS NOT NULL AND last_used_ms + idle_ms <= ?1 ORDER BY last_used_ms",
            &[now_ms.into()],
        )
        .into_iter()
        // One a run holds is not idle, however long that run takes, while
        // its process lives.
        .filter(|row| text(row, 5).as_deref().is_none_or(ownership::run_owner_gone))
        .filter_map(|row| {
            Some(IdSandbox {
                agent: text(&row, 0)?,
                id: text(&row, 1)?,
                connector: text(&row, 2)?,
                sandbox_id: text(&row, 3)?,
                idle: int(&row, 4).map(|ms| Duration::from_millis(ms.max(0) as u64)),
            })
        })
        .collect()
    }

    /// The runs with a journal that have not ended, as `flue sandboxes gc`
    /// sees them: those a process runs or a server will resume (queued, or
    /// running with their process alive) — their sandboxes are no orphans —
    /// and those interrupted (running, their process gone).
    pub fn unended_journaled_runs(&self) -> (HashSet<String>, HashSet<String>) {
        let rows = self.query(
            &format!(
                "SELECT id, status, owner, {} FROM runs WHERE status IN ('queued', 'running') AND journaled = 1",
                self.lease_left()
            ),
            &[],
        );
        let (mut going, mut interrupted) = (HashSet::new(), HashSet::new());
        for row in rows {
            let Some(id) = text(&row, 0) else { continue };
            if text(&row, 1).as_deref() == Some("running")
                && text(&row, 2).is_some_and(|owner| gone(&owner, int(&row, 3)))
            {
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
        self.execute(
            "DELETE FROM id_sandboxes WHERE agent = ?1 AND invocation = ?2 AND connector = ?3
                 AND sandbox_id = ?4 AND last_used_ms <= ?5",
            &[
                sandbox.agent.as_str().into(),
                sandbox.id.as_str().into(),
                sandbox.connector.as_str().into(),
                sandbox.sandbox_id.as_str().into(),
                found_ms.into(),
            ],
        );
    }
}

/// Whether the process `owner` that holds a run (with `lease_left_ms` of
/// its lease left, if it holds it by lease) is gone: provably, or its
/// lease ran out.
fn gone(owner: &str, lease_left_ms: Option<i64>) -> bool {
    lease_left_ms.is_some_and(|left| left < 0) || ownership::run_owner_gone(owner)
}

/// A run's status as shown, from its row's `status`, `owner` and lease
/// left (columns `status_at`, `owner_at`, `lease_left_at`): a run whose
/// process is gone before it ended is `interrupted` until it is resumed
/// (by its server's next start, or `flue runs resume`).
fn shown_status(row: &Row, status_at: usize, owner_at: usize, lease_left_at: usize) -> Option<String> {
    let status = text(row, status_at)?;
    let interrupted =
        status == "running" && text(row, owner_at).is_some_and(|owner| gone(&owner, int(row, lease_left_at)));
    Some(if interrupted { "interrupted".into() } else { status })
}

/// A run's record from a row of [`RunStore::record_sql`].
fn record(row: &Row) -> Option<Value> {
    let parse = |text: Option<String>| text.and_then(|t| serde_json::from_str::<Value>(&t).ok());
    let status = shown_status(row, 3, 10, 12)?;
    Some(json!({
        "runId": text(row, 0)?,
        "agent": text(row, 1)?,
        "id": text(row, 2)?,
        "status": status,
        "journalEntries": int(row, 11).unwrap_or(0),
        "result": parse(text(row, 4)),
        // Runs stored before kinds existed: `unknown`.
        "error": text(row, 5).map(|message| json!({
            "kind": text(row, 9).unwrap_or_else(|| "unknown".into()),
            "message": message,
        })),
        "events": parse(text(row, 6)).unwrap_or_else(|| json!([])),
        "createdMs": int(row, 7),
        "finishedMs": int(row, 8),
    }))
}

impl IdSandboxLedger for RunStore {
    fn used(&self, sandbox: &IdSandbox, in_use: bool) {
        let idle_ms = sandbox.idle.map(|idle| i64::try_from(idle.as_millis()).unwrap_or(i64::MAX));
        let in_use_by = in_use.then(|| self.me.clone());
        self.execute(
            "INSERT INTO id_sandboxes (agent, invocation, connector, sandbox_id, idle_ms, last_used_ms, in_use_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (agent, invocation, connector) DO UPDATE SET
                 sandbox_id = excluded.sandbox_id, idle_ms = excluded.idle_ms,
                 last_used_ms = excluded.last_used_ms, in_use_by = excluded.in_use_by",
            &[
                sandbox.agent.as_str().into(),
                sandbox.id.as_str().into(),
                sandbox.connector.as_str().into(),
                sandbox.sandbox_id.as_str().into(),
                idle_ms.into(),
                unix_millis().into(),
                in_use_by.into(),
            ],
        );
    }
}

impl JournalStore for RunStore {
    fn entries(&self, run_id: &str) -> Result<Vec<Entry>, JournalStoreError> {
        let rows = self
            .db
            .query("SELECT seq, key, value FROM journal WHERE run_id = ?1 ORDER BY seq", &[run_id.into()])
            .map_err(journal_error)?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                Some(Entry { seq: u64::try_from(int(row, 0)?).ok()?, key: text(row, 1)?, value: text(row, 2)? })
            })
            .collect())
    }

    // A run's journal is written only by the process that holds the run: one
    // that lost it (another server took it over) changes nothing there.

    fn holds(&self, run_id: &str) -> bool {
        match self
            .db
            .query("SELECT 1 FROM runs WHERE id = ?1 AND owner = ?2", &[run_id.into(), self.me.as_str().into()])
        {
            Ok(rows) => !rows.is_empty(),
            Err(err) => {
                tracing::warn!("run store: {err}");
                true
            }
        }
    }

    fn abandon(&self, run_id: &str) -> Result<(), JournalStoreError> {
        self.db
            .execute(
                "UPDATE runs SET journaled = 0 WHERE id = ?1 AND owner = ?2",
                &[run_id.into(), self.me.as_str().into()],
            )
            .map_err(journal_error)?;
        Ok(())
    }

    fn append(&self, run_id: &str, entry: &Entry) -> Result<(), JournalStoreError> {
        let appended = self
            .db
            .execute(
                "INSERT INTO journal (run_id, seq, key, value)
                 SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM runs WHERE id = ?1 AND owner = ?5)",
                &[
                    run_id.into(),
                    entry.seq.into(),
                    entry.key.as_str().into(),
                    entry.value.as_str().into(),
                    self.me.as_str().into(),
                ],
            )
            .map_err(journal_error)?;
        if appended == 0 {
            let why = format!("run {run_id} is no longer this process's: another took it over");
            return Err(JournalStoreError { source: why.into() });
        }
        Ok(())
    }
}

impl ConversationStore for RunStore {
    fn load(&self, key: &ConversationKey) -> Result<Vec<Message>, ConversationStoreError> {
        let rows = self
            .db
            .query(
                "SELECT messages FROM conversations WHERE agent = ?1 AND invocation = ?2 AND harness = ?3 AND session = ?4",
                &[key.agent.as_str().into(), key.id.as_str().into(), key.harness.as_str().into(), key.session.as_str().into()],
            )
            .map_err(store_error)?;
        match rows.first().and_then(|row| text(row, 0)) {
            Some(json) => serde_json::from_str(&json).map_err(store_error),
            None => Ok(Vec::new()),
        }
    }

    fn save(&self, key: &ConversationKey, messages: &[Message]) -> Result<(), ConversationStoreError> {
        let json = serde_json::to_string(messages).map_err(store_error)?;
        // Saved, then the oldest beyond the cap forgotten ([`Db::batch_then_prune`]).
        self.db
            .batch_then_prune(
                &[(
                    "INSERT INTO conversations (agent, invocation, harness, session, messages, updated_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (agent, invocation, harness, session)
                     DO UPDATE SET messages = excluded.messages, updated_ms = excluded.updated_ms",
                    &[
                        key.agent.as_str().into(),
                        key.id.as_str().into(),
                        key.harness.as_str().into(),
                        key.session.as_str().into(),
                        json.into(),
                        unix_millis().into(),
                    ],
                )],
                (
                    "DELETE FROM conversations WHERE (agent, invocation, harness, session) NOT IN
                         (SELECT agent, invocation, harness, session FROM conversations ORDER BY updated_ms DESC LIMIT ?1)",
                    &[(MAX_CONVERSATIONS as u64).into()],
                ),
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
        owner_gone(&store, "run_b");
        drop(store);
        let store = RunStore::open(&path, 10, false).unwrap();
        let queued = store.claim(&["triage".into()], 10, DEFAULT_LEASE);
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
        store.db.execute("UPDATE runs SET owner = ?2 WHERE id = ?1", &[id.into(), gone.into()]).unwrap();
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
        let queued = store.claim(&["triage".into()], 10, DEFAULT_LEASE);
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
        let before_use = unix_millis() - 1_000;
        store.used(&sandbox("a", Some(60)), false);
        store.used(&sandbox("b", None), false);
        store.used(&sandbox("c", Some(60)), true);
        let now = unix_millis();
        assert!(store.idle_id_sandboxes(now).is_empty());
        let later = now + 61_000;
        assert_eq!(store.idle_id_sandboxes(later), vec![sandbox("a", Some(60))], "c is in use by this process");
        // Used again after it was found idle: not forgotten.
        store.forget_id_sandbox(&sandbox("a", Some(60)), before_use);
        assert_eq!(store.idle_id_sandboxes(later).len(), 1);
        store.forget_id_sandbox(&sandbox("a", Some(60)), later);
        assert!(store.idle_id_sandboxes(later + 10_000_000).is_empty(), "b has no idle time");
    }

    #[test]
    fn conversations_are_kept_per_key_and_shown_with_their_runs() {
        let dir = tempfile::tempdir().unwrap();
        let store = RunStore::open(&dir.path().join("runs.sqlite"), 10, false).unwrap();
        assert_eq!(store.load(&key("default")).unwrap(), vec![]);
        let messages = vec![
            Message::User("hello".into()),
            Message::Assistant { text: "hi".into(), calls: vec![], reasoning: vec![] },
        ];
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
