//! The run store in PostgreSQL, for several servers sharing one store
//! (`flue serve --store postgres://…`, or `FLUE_STORE`).
//!
//! The store's calls are synchronous (they come from agents' host calls
//! too, in the middle of a run), so the client is the synchronous
//! `postgres` crate on threads of its own: a small pool of connections,
//! each on its own thread, taking statements from one queue. A caller waits
//! for its answer as it waits for SQLite's; a connection that broke is made
//! again for the next statement.
//!
//! The schema is versioned: [`MIGRATIONS`], applied in order at start (and
//! by `flue store migrate`) inside a transaction holding an advisory lock,
//! so that servers starting together apply each once. A database migrated
//! by a newer flue (a version this one does not know) is refused.

use std::sync::mpsc::{Receiver, Sender, channel, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postgres::types::{ToSql, Type};
use postgres::{Client, NoTls};

use super::db::{Db, DbError, Row, Sql};

/// Connections per store (each with its thread).
const CONNECTIONS: usize = 4;
/// The advisory lock migrations hold: a constant of ours ("fluemig").
const MIGRATION_LOCK: i64 = 0x0066_6c75_656d_6967;
/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The schema, one migration per version, in order. Never edit one that
/// has shipped: add the next.
pub const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "CREATE TABLE runs (
         id TEXT PRIMARY KEY, agent TEXT NOT NULL, invocation TEXT NOT NULL, status TEXT NOT NULL,
         result TEXT, error TEXT, events TEXT, created_ms BIGINT NOT NULL, finished_ms BIGINT,
         error_kind TEXT, cancel_requested_ms BIGINT, payload TEXT, owner TEXT, journaled BIGINT,
         origin TEXT, resume TEXT);
     CREATE INDEX runs_created ON runs (created_ms);
     CREATE INDEX runs_status ON runs (status);
     CREATE TABLE conversations (
         agent TEXT NOT NULL, invocation TEXT NOT NULL, harness TEXT NOT NULL, session TEXT NOT NULL,
         messages TEXT NOT NULL, updated_ms BIGINT NOT NULL,
         PRIMARY KEY (agent, invocation, harness, session));
     CREATE INDEX conversations_updated ON conversations (updated_ms);
     CREATE TABLE id_sandboxes (
         agent TEXT NOT NULL, invocation TEXT NOT NULL, connector TEXT NOT NULL, sandbox_id TEXT NOT NULL,
         idle_ms BIGINT, last_used_ms BIGINT NOT NULL, in_use_by TEXT,
         PRIMARY KEY (agent, invocation, connector));
     CREATE TABLE journal (
         run_id TEXT NOT NULL, seq BIGINT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
         PRIMARY KEY (run_id, seq));",
    ),
    (
        2,
        // Several servers: who runs a run until when (its lease, renewed
        // by heartbeats), who accepted it, its events as they happen, and
        // whose turn each agent and id is.
        "ALTER TABLE runs ADD COLUMN lease_until_ms BIGINT;
         ALTER TABLE runs ADD COLUMN accepted_by TEXT;
         CREATE INDEX runs_waiting ON runs (created_ms) WHERE status = 'queued';
         CREATE INDEX runs_owner ON runs (owner) WHERE status IN ('queued', 'running');
         CREATE TABLE run_events (
             run_id TEXT NOT NULL, seq BIGINT NOT NULL, event TEXT NOT NULL, PRIMARY KEY (run_id, seq));
         CREATE TABLE id_turns (
             agent TEXT NOT NULL, invocation TEXT NOT NULL, run_id TEXT NOT NULL, owner TEXT NOT NULL,
             lease_until_ms BIGINT NOT NULL, PRIMARY KEY (agent, invocation));",
    ),
];

type Job = Box<dyn FnOnce(&mut Client) + Send>;

/// Connections to one database, each on its own thread.
pub struct Pool {
    jobs: Mutex<Sender<Job>>,
}

/// `url` with its password (if any) left out, for messages.
pub fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (authority, tail) = rest.split_once('/').map_or((rest, None), |(a, t)| (a, Some(t)));
    let shown = match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{user_info}@{host}"),
        },
        None => authority.to_string(),
    };
    // A password can also come as a query parameter.
    let tail = tail.map(|t| match t.split_once('?') {
        Some((db, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| if kv.starts_with("password=") { "password=***".to_string() } else { kv.to_string() })
                .collect();
            format!("{db}?{}", query.join("&"))
        }
        None => t.to_string(),
    });
    match tail {
        Some(tail) => format!("{scheme}://{shown}/{tail}"),
        None => format!("{scheme}://{shown}"),
    }
}

fn connect(url: &str) -> Result<Client, DbError> {
    let mut config: postgres::Config = url
        .parse()
        .map_err(|err| DbError::Postgres(format!("{}: not a PostgreSQL URL: {err}", without_password(url))))?;
    config.connect_timeout(CONNECT_TIMEOUT);
    config
        .connect(NoTls)
        .map_err(|err| DbError::Postgres(format!("cannot connect to {}: {err}", without_password(url))))
}

/// The store in the database at `url`, migrated.
pub fn open(url: &str) -> anyhow::Result<Db> {
    let first = off_runtime(url, |url| {
        let mut client = connect(url)?;
        migrate(&mut client)?;
        Ok(client)
    })?;
    Ok(Db::Postgres(Pool::start(url, first)))
}

/// Bring the database at `url` to this flue's schema; the versions applied.
pub fn migrate_at(url: &str) -> anyhow::Result<Vec<i64>> {
    Ok(off_runtime(url, |url| migrate(&mut connect(url)?))?)
}

/// `work` on a thread of its own: the synchronous client runs a runtime of
/// its own, which cannot start on a thread that drives tokio's.
fn off_runtime<T: Send + 'static>(
    url: &str,
    work: impl FnOnce(&str) -> Result<T, DbError> + Send + 'static,
) -> Result<T, DbError> {
    let url = url.to_string();
    std::thread::spawn(move || work(&url))
        .join()
        .unwrap_or_else(|_| Err(DbError::Postgres("the store's connection thread failed".into())))
}

fn migrate(client: &mut Client) -> Result<Vec<i64>, DbError> {
    let failed = |err: postgres::Error| DbError::Postgres(format!("migrating the store failed: {}", described(&err)));
    let mut tx = client.transaction().map_err(failed)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).map_err(failed)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS flue_migrations (version BIGINT PRIMARY KEY, applied_ms BIGINT NOT NULL)",
    )
    .map_err(failed)?;
    let current: i64 =
        tx.query_one("SELECT COALESCE(MAX(version), 0) FROM flue_migrations", &[]).map_err(failed)?.get(0);
    let newest = MIGRATIONS.last().map_or(0, |(version, _)| *version);
    if current > newest {
        return Err(DbError::Postgres(format!(
            "the store's schema is version {current}, newer than this flue knows ({newest}): upgrade flue"
        )));
    }
    let mut applied = Vec::new();
    for (version, sql) in MIGRATIONS.iter().filter(|(version, _)| *version > current) {
        tx.batch_execute(sql).map_err(failed)?;
        tx.execute(
            "INSERT INTO flue_migrations (version, applied_ms) VALUES ($1, $2)",
            &[version, &crate::events::unix_millis()],
        )
        .map_err(failed)?;
        applied.push(*version);
    }
    tx.commit().map_err(failed)?;
    Ok(applied)
}

impl Pool {
    fn start(url: &str, first: Client) -> Pool {
        let (jobs, queue) = channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let mut first = Some(first);
        for _ in 0..CONNECTIONS {
            let (queue, url, client) = (queue.clone(), url.to_string(), first.take());
            std::thread::Builder::new()
                .name("flue-store".into())
                .spawn(move || serve_jobs(&queue, &url, client))
                .expect("a thread for the store");
        }
        Pool { jobs: Mutex::new(jobs) }
    }

    fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Client) -> Result<T, postgres::Error> + Send + 'static,
    ) -> Result<T, DbError> {
        let (answer, answered) = sync_channel(1);
        let job: Job = Box::new(move |client| {
            let _ = answer.send(job(client).map_err(|err| DbError::Postgres(described(&err))));
        });
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(job)
            .map_err(|_| DbError::Postgres("the store's connections are gone".into()))?;
        answered.recv().map_err(|_| DbError::Postgres("the store's connection failed".into()))?
    }

    /// Run `sql` (with `$N` parameters).
    pub fn execute(&self, sql: &str, params: &[Sql]) -> Result<usize, DbError> {
        let (sql, params) = (sql.to_string(), params.to_vec());
        self.run(move |client| {
            let values = values(&params);
            let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v.as_ref()).collect();
            client.execute(sql.as_str(), &refs).map(|n| usize::try_from(n).unwrap_or(usize::MAX))
        })
    }

    /// Run `statements` (with `$N` parameters) in one transaction.
    pub fn batch(&self, statements: Vec<(String, Vec<Sql>)>) -> Result<Vec<usize>, DbError> {
        self.run(move |client| {
            let mut tx = client.transaction()?;
            let mut changed = Vec::with_capacity(statements.len());
            for (sql, params) in &statements {
                let values = values(params);
                let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v.as_ref()).collect();
                changed.push(usize::try_from(tx.execute(sql.as_str(), &refs)?).unwrap_or(usize::MAX));
            }
            tx.commit()?;
            Ok(changed)
        })
    }

    /// The rows `sql` (with `$N` parameters) selects.
    pub fn query(&self, sql: &str, params: &[Sql]) -> Result<Vec<Row>, DbError> {
        let (sql, params) = (sql.to_string(), params.to_vec());
        self.run(move |client| {
            let values = values(&params);
            let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v.as_ref()).collect();
            let rows = client.query(sql.as_str(), &refs)?;
            Ok(rows.iter().map(row).collect())
        })
    }
}

/// One connection's thread: take statements until the pool is dropped.
fn serve_jobs(queue: &Mutex<Receiver<Job>>, url: &str, mut client: Option<Client>) {
    loop {
        let job = match queue.lock().unwrap_or_else(|e| e.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        if client.as_ref().is_none_or(Client::is_closed) {
            client = connect(url).map_err(|err| tracing::warn!("run store: {err}")).ok();
        }
        match client.as_mut() {
            Some(client) => job(client),
            // The caller sees its answer channel close: the store failed.
            None => drop(job),
        }
    }
}

/// The server's own words for an error, not only "db error".
fn described(err: &postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => err.to_string(),
    }
}

fn values(params: &[Sql]) -> Vec<Box<dyn ToSql + Sync>> {
    params
        .iter()
        .map(|param| -> Box<dyn ToSql + Sync> {
            match param {
                Sql::Int(n) => Box::new(*n),
                Sql::Text(text) => Box::new(text.clone()),
                Sql::NullInt => Box::new(None::<i64>),
                Sql::NullText => Box::new(None::<String>),
            }
        })
        .collect()
}

fn row(row: &postgres::Row) -> Row {
    (0..row.len())
        .map(|i| {
            let ty = row.columns()[i].type_();
            let int = |n: Option<i64>| n.map_or(Sql::NullInt, Sql::Int);
            if *ty == Type::INT8 {
                int(row.get::<_, Option<i64>>(i))
            } else if *ty == Type::INT4 {
                int(row.get::<_, Option<i32>>(i).map(i64::from))
            } else if *ty == Type::INT2 {
                int(row.get::<_, Option<i16>>(i).map(i64::from))
            } else if *ty == Type::BOOL {
                int(row.get::<_, Option<bool>>(i).map(i64::from))
            } else {
                row.try_get::<_, Option<String>>(i).ok().flatten().map_or(Sql::NullText, Sql::Text)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_shown_without_its_password() {
        assert_eq!(without_password("postgres://flue:s3cret@db:5432/runs"), "postgres://flue:***@db:5432/runs");
        assert_eq!(
            without_password("postgres://db/runs?password=s3cret&sslmode=disable"),
            "postgres://db/runs?password=***&sslmode=disable"
        );
        assert_eq!(without_password("postgresql://db"), "postgresql://db");
    }
}
