//! The database under the run store: embedded SQLite (one machine, the
//! default) or PostgreSQL (several servers sharing one store), behind one
//! small interface — statements with numbered parameters (`?1`) and rows of
//! plain values — so that the store's SQL is written once for both.
//!
//! The SQL the store writes keeps to what both speak: `?N` parameters
//! (`$N` for PostgreSQL, rewritten here), `IS NOT DISTINCT FROM`, `ON
//! CONFLICT … DO UPDATE`, `BIGINT` numbers. Each engine's schema and
//! migrations are its own ([`super::sqlite`], [`super::postgres`]).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::types::{ToSqlOutput, ValueRef};

/// One parameter or column value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sql {
    /// A number (`BIGINT`).
    Int(i64),
    /// Text.
    Text(String),
    /// No number.
    NullInt,
    /// No text.
    NullText,
}

impl Sql {
    /// The text, if this is text.
    pub fn text(&self) -> Option<String> {
        match self {
            Sql::Text(text) => Some(text.clone()),
            _ => None,
        }
    }

    /// The number, if this is one.
    pub fn int(&self) -> Option<i64> {
        match self {
            Sql::Int(n) => Some(*n),
            _ => None,
        }
    }
}

impl From<i64> for Sql {
    fn from(n: i64) -> Self {
        Sql::Int(n)
    }
}

impl From<u64> for Sql {
    fn from(n: u64) -> Self {
        Sql::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

impl From<bool> for Sql {
    fn from(b: bool) -> Self {
        Sql::Int(i64::from(b))
    }
}

impl From<&str> for Sql {
    fn from(text: &str) -> Self {
        Sql::Text(text.to_string())
    }
}

impl From<String> for Sql {
    fn from(text: String) -> Self {
        Sql::Text(text)
    }
}

impl From<&String> for Sql {
    fn from(text: &String) -> Self {
        Sql::Text(text.clone())
    }
}

impl From<Option<String>> for Sql {
    fn from(text: Option<String>) -> Self {
        text.map_or(Sql::NullText, Sql::Text)
    }
}

impl From<Option<&str>> for Sql {
    fn from(text: Option<&str>) -> Self {
        text.map_or(Sql::NullText, |t| Sql::Text(t.to_string()))
    }
}

impl From<Option<i64>> for Sql {
    fn from(n: Option<i64>) -> Self {
        n.map_or(Sql::NullInt, Sql::Int)
    }
}

impl rusqlite::ToSql for Sql {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Sql::Int(n) => ToSqlOutput::Borrowed(ValueRef::Integer(*n)),
            Sql::Text(text) => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
            Sql::NullInt | Sql::NullText => ToSqlOutput::Borrowed(ValueRef::Null),
        })
    }
}

/// A row: its columns in order.
pub type Row = Vec<Sql>;

/// Why a statement failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite's error.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL's error.
    #[error("{0}")]
    Postgres(String),
}

/// Statements run against run stores by this process, for `/metrics` (a
/// process opens one store; `flue_store_statements_total`).
static STATEMENTS: AtomicU64 = AtomicU64::new(0);

/// Statements this process ran against its run store.
pub fn statements() -> u64 {
    STATEMENTS.load(Ordering::Relaxed)
}

/// The store's database.
pub enum Db {
    /// An SQLite file, one connection.
    Sqlite(Mutex<rusqlite::Connection>),
    /// A PostgreSQL server, through a pool of connections.
    Postgres(super::postgres::Pool),
}

impl Db {
    /// Run `sql` with `params`; the number of rows it changed.
    pub fn execute(&self, sql: &str, params: &[Sql]) -> Result<usize, DbError> {
        STATEMENTS.fetch_add(1, Ordering::Relaxed);
        match self {
            Db::Sqlite(conn) => {
                let conn = conn.lock().unwrap_or_else(|e| e.into_inner());
                let mut statement = conn.prepare_cached(sql)?;
                Ok(statement.execute(rusqlite::params_from_iter(params.iter()))?)
            }
            Db::Postgres(pool) => pool.execute(&numbered(sql), params),
        }
    }

    /// Run `statements` in one transaction, all or none; the rows each
    /// changed.
    pub fn batch(&self, statements: &[(&str, &[Sql])]) -> Result<Vec<usize>, DbError> {
        STATEMENTS.fetch_add(statements.len() as u64, Ordering::Relaxed);
        match self {
            Db::Sqlite(conn) => {
                let mut conn = conn.lock().unwrap_or_else(|e| e.into_inner());
                let tx = conn.transaction()?;
                let mut changed = Vec::with_capacity(statements.len());
                for (sql, params) in statements {
                    changed.push(tx.prepare_cached(sql)?.execute(rusqlite::params_from_iter(params.iter()))?);
                }
                tx.commit()?;
                Ok(changed)
            }
            Db::Postgres(pool) => {
                pool.batch(statements.iter().map(|(sql, params)| (numbered(sql), params.to_vec())).collect())
            }
        }
    }

    /// Run `statements` in one transaction, then `prune` (a statement that
    /// deletes old rows across a table); the rows each of `statements`
    /// changed. SQLite has one writer: the prune joins the same commit.
    /// Servers sharing PostgreSQL prune at once, and two prunes can
    /// deadlock: there it runs on its own after the commit, so that a
    /// deadlock never undoes `statements`, and its failure is a warning
    /// (the next prune catches up).
    pub fn batch_then_prune(
        &self,
        statements: &[(&str, &[Sql])],
        prune: (&str, &[Sql]),
    ) -> Result<Vec<usize>, DbError> {
        match self {
            Db::Sqlite(_) => {
                let mut all = statements.to_vec();
                all.push(prune);
                let mut changed = self.batch(&all)?;
                changed.truncate(statements.len());
                Ok(changed)
            }
            Db::Postgres(_) => {
                let changed = self.batch(statements)?;
                if let Err(err) = self.execute(prune.0, prune.1) {
                    tracing::warn!("run store: pruning failed (the next prune catches up): {err}");
                }
                Ok(changed)
            }
        }
    }

    /// The rows `sql` selects with `params`.
    pub fn query(&self, sql: &str, params: &[Sql]) -> Result<Vec<Row>, DbError> {
        STATEMENTS.fetch_add(1, Ordering::Relaxed);
        match self {
            Db::Sqlite(conn) => {
                let conn = conn.lock().unwrap_or_else(|e| e.into_inner());
                let mut statement = conn.prepare_cached(sql)?;
                let columns = statement.column_count();
                let rows = statement.query_map(rusqlite::params_from_iter(params.iter()), |row| {
                    (0..columns)
                        .map(|i| {
                            Ok(match row.get_ref(i)? {
                                ValueRef::Integer(n) => Sql::Int(n),
                                ValueRef::Real(x) => Sql::Int(x as i64),
                                ValueRef::Text(bytes) | ValueRef::Blob(bytes) => {
                                    Sql::Text(String::from_utf8_lossy(bytes).into_owned())
                                }
                                ValueRef::Null => Sql::NullText,
                            })
                        })
                        .collect::<rusqlite::Result<Row>>()
                })?;
                Ok(rows.collect::<rusqlite::Result<Vec<Row>>>()?)
            }
            Db::Postgres(pool) => pool.query(&numbered(sql), params),
        }
    }

    /// The first row `sql` selects, if any.
    pub fn query_one(&self, sql: &str, params: &[Sql]) -> Result<Option<Row>, DbError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// What a subquery picking rows to claim ends with: PostgreSQL locks
    /// them, skipping rows another server is claiming at that moment;
    /// SQLite has a single writer and needs nothing.
    pub fn skip_locked(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "",
            Db::Postgres(_) => " FOR UPDATE SKIP LOCKED",
        }
    }

    /// The database's own clock, in unix milliseconds, as SQL: leases are
    /// set and compared by it, so that servers whose clocks disagree still
    /// agree on when a lease ran out.
    pub fn now_ms(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "CAST(unixepoch('subsec') * 1000 AS INTEGER)",
            Db::Postgres(_) => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
    }

    /// Which engine, for messages.
    pub fn engine(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "SQLite",
            Db::Postgres(_) => "PostgreSQL",
        }
    }
}

/// `sql` with SQLite's `?N` parameters written as PostgreSQL's `$N`.
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
        }
        if c == '?' && !quoted && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_renumbered_outside_quotes_only() {
        assert_eq!(numbered("SELECT a FROM t WHERE b = ?1 AND c = ?12"), "SELECT a FROM t WHERE b = $1 AND c = $12");
        assert_eq!(numbered("SELECT '?1' WHERE x = ?2"), "SELECT '?1' WHERE x = $2");
    }
}
