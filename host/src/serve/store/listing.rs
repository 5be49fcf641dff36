//! Runs a page at a time, newest first, filtered by agent, status and id
//! (`GET /runs`, the runs page): one indexed statement per page, whatever
//! the number of runs kept. Pages follow each other by a cursor (the last
//! run's creation time and id), so a run added meanwhile moves nothing.

use serde_json::{Value, json};

use super::db::Sql;
use super::{RunStore, int, shown_status, text};

/// The most runs one page holds.
pub const MAX_PAGE: usize = 200;
/// The most characters of a run's error message a page shows.
const MESSAGE_CHARS: usize = 200;

/// Which runs a page shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunQuery {
    /// Only this agent's.
    pub agent: Option<String>,
    /// Only runs with this status (`interrupted` is a `running` run whose
    /// process is gone: asked for as `running`, shown as it is).
    pub status: Option<String>,
    /// Only runs with this invocation id, or this run id.
    pub id: Option<String>,
    /// Only runs older than this cursor (a page's `next`).
    pub before: Option<Cursor>,
    /// At most this many (at most [`MAX_PAGE`]).
    pub limit: usize,
}

/// Where a page ended: the last run's creation time and id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// When that run was created (unix ms).
    pub created_ms: i64,
    /// Its id (runs created in the same millisecond follow their ids).
    pub run_id: String,
}

impl Cursor {
    /// `created_ms:run_id`, as a page's `next` gives it.
    pub fn parse(text: &str) -> Option<Cursor> {
        let (ms, id) = text.split_once(':')?;
        Some(Cursor { created_ms: ms.parse().ok()?, run_id: id.to_string() })
    }

    fn text(&self) -> String {
        format!("{}:{}", self.created_ms, self.run_id)
    }
}

impl RunStore {
    /// One page of runs, newest first: `{"runs": […], "next": cursor or
    /// null}`, each run without its payload, result or events.
    pub fn page(&self, query: &RunQuery) -> Value {
        let limit = query.limit.clamp(1, MAX_PAGE);
        let mut conditions = Vec::new();
        let mut params: Vec<Sql> = Vec::new();
        let param = |value: Sql, params: &mut Vec<Sql>| {
            params.push(value);
            format!("?{}", params.len())
        };
        if let Some(agent) = &query.agent {
            conditions.push(format!("agent = {}", param(agent.as_str().into(), &mut params)));
        }
        if let Some(status) = &query.status {
            let status = if status == "interrupted" { "running" } else { status.as_str() };
            conditions.push(format!("status = {}", param(status.into(), &mut params)));
        }
        if let Some(id) = &query.id {
            let p = param(id.as_str().into(), &mut params);
            conditions.push(format!("(invocation = {p} OR id = {p})"));
        }
        if let Some(before) = &query.before {
            let ms = param(before.created_ms.into(), &mut params);
            let id = param(before.run_id.as_str().into(), &mut params);
            conditions.push(format!("(created_ms < {ms} OR (created_ms = {ms} AND id < {id}))"));
        }
        let filter = if conditions.is_empty() { String::new() } else { format!("WHERE {}", conditions.join(" AND ")) };
        let limit_param = param((limit as u64 + 1).into(), &mut params);
        let sql = format!(
            "SELECT id, agent, invocation, status, created_ms, finished_ms, error_kind, error, owner, {}
             FROM runs {filter} ORDER BY created_ms DESC, id DESC LIMIT {limit_param}",
            self.lease_left()
        );
        let rows = self.query(&sql, &params);
        let more = rows.len() > limit;
        let mut runs = Vec::with_capacity(limit);
        let mut last = None;
        for row in rows.iter().take(limit) {
            let (Some(run_id), Some(created_ms)) = (text(row, 0), int(row, 4)) else { continue };
            let status = shown_status(row, 3, 8, 9).unwrap_or_default();
            if query.status.as_deref() == Some("interrupted") && status != "interrupted" {
                continue;
            }
            let error = text(row, 7).map(|message| {
                json!({
                    "kind": text(row, 6).unwrap_or_else(|| "unknown".into()),
                    "message": crate::events::one_line(&message, MESSAGE_CHARS),
                })
            });
            let finished_ms = int(row, 5);
            runs.push(json!({
                "runId": run_id,
                "agent": text(row, 1),
                "id": text(row, 2),
                "status": status,
                "createdMs": created_ms,
                "finishedMs": finished_ms,
                "durationMs": finished_ms.map(|end| end.saturating_sub(created_ms)),
                "error": error,
            }));
            last = Some(Cursor { created_ms, run_id });
        }
        let next = if more { last.map(|cursor| cursor.text()) } else { None };
        json!({ "runs": runs, "next": next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::errors::{ApiError, ErrorKind};

    #[test]
    fn pages_follow_each_other_newest_first_and_filters_hold() {
        let dir = tempfile::tempdir().unwrap();
        let store = RunStore::open(&dir.path().join("runs.sqlite"), 10_000, false).unwrap();
        for n in 0..25 {
            let (run, agent) = (format!("run_{n:02}"), if n % 2 == 0 { "even" } else { "odd" });
            store.insert(&run, agent, &format!("id-{}", n % 5), &Value::Null);
            store.running(&run, false);
            if n < 20 {
                let failed = ApiError::new(ErrorKind::AgentFailed, "x".repeat(1000));
                let outcome = if n % 3 == 0 { Err(&failed) } else { Ok(&Value::Null) };
                store.finish(&run, outcome, &[]);
            }
        }
        let mut seen = Vec::new();
        let mut query = RunQuery { limit: 10, ..RunQuery::default() };
        loop {
            let page = store.page(&query);
            let runs = page["runs"].as_array().unwrap();
            assert!(runs.len() <= 10);
            seen.extend(runs.iter().map(|run| run["runId"].as_str().unwrap().to_string()));
            match page["next"].as_str() {
                Some(next) => query.before = Some(Cursor::parse(next).unwrap()),
                None => break,
            }
        }
        let mut newest_first: Vec<String> = (0..25).map(|n| format!("run_{n:02}")).collect();
        newest_first.sort_by(|a, b| b.cmp(a));
        // Created in the same millisecond, runs still come in one order.
        let mut sorted = seen.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        assert_eq!(seen.len(), 25, "{seen:?}");
        assert_eq!(sorted, newest_first);

        let only = |query: RunQuery| -> Vec<Value> {
            store.page(&RunQuery { limit: 100, ..query })["runs"].as_array().unwrap().clone()
        };
        let odd = only(RunQuery { agent: Some("odd".into()), ..RunQuery::default() });
        assert_eq!(odd.len(), 12);
        assert!(odd.iter().all(|run| run["agent"] == "odd"));
        let failed = only(RunQuery { status: Some("failed".into()), ..RunQuery::default() });
        assert_eq!(failed.len(), 7, "{failed:?}");
        assert!(failed.iter().all(|run| run["error"]["kind"] == "agent-failed"));
        assert!(failed[0]["error"]["message"].as_str().unwrap().chars().count() <= MESSAGE_CHARS + 1);
        assert_eq!(only(RunQuery { status: Some("running".into()), ..RunQuery::default() }).len(), 5);
        let by_id = only(RunQuery { id: Some("id-3".into()), ..RunQuery::default() });
        assert_eq!(by_id.len(), 5);
        assert_eq!(only(RunQuery { id: Some("run_07".into()), ..RunQuery::default() }).len(), 1);
        assert!(Cursor::parse("not a cursor").is_none());
    }
}
