//! What the servers sharing one store agree on through it: the shared
//! queue of runs, leases, whose turn an agent's id is, and a run's events
//! as they happen.
//!
//! * **Leases.** A server's runs (held for a caller, or running) carry
//!   `lease_until_ms`; the server renews all of them with one statement per
//!   heartbeat ([`RunStore::heartbeat`]), by the database's clock (servers
//!   need not agree on the time). A run whose lease ran out belongs
//!   to a server that stopped answering: any server takes it over
//!   ([`RunStore::take_over_expired`]) — resumed from its journal if it kept
//!   one, else failed — and its id turn is freed.
//! * **The shared queue.** A run waiting with no owner may be claimed by
//!   any server with room ([`RunStore::claim`]): one statement that takes the
//!   oldest, skipping those another server is claiming at that moment
//!   (`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite has one writer).
//! * **Id turns.** One run of an agent and id at a time across servers: a
//!   row per agent and id, taken only when free or its lease ran out.
//! * **Events.** A run's events are appended as it goes (every 250 ms, in
//!   one statement), so that any server can stream them
//!   ([`RunStore::events_after`]); when the run ends they move into its
//!   record.

use std::time::Duration;

use serde_json::Value;

use super::{QueuedRun, RunStore, int, text};
use crate::events::unix_millis;
use crate::serve::errors::ErrorKind;

/// Why a run this server runs must stop, as the store says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Someone asked for it to be cancelled.
    Cancelled,
    /// Its lease ran out and another server took it over.
    TakenOver,
}

/// What [`RunStore::take_over_expired`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TakenOver {
    /// Runs queued again to resume from their journals.
    pub resumed: usize,
    /// Runs without a journal, failed.
    pub failed: usize,
    /// Runs that had not started, back in the shared queue.
    pub released: usize,
}

/// The most runs one statement of [`RunStore::stops`] asks about.
const STOPS_PER_STATEMENT: usize = 1000;
/// The most events one statement of [`RunStore::append_events`] writes.
const EVENTS_PER_STATEMENT: usize = 400;

fn lease_ms(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX)
}

impl RunStore {
    /// Accept run `id` into the shared queue (any server may claim it),
    /// with its payload, as accepted by this server.
    pub fn enqueue(&self, id: &str, agent: &str, invocation: &str, payload: &Value) {
        self.insert_queued(id, agent, invocation, payload, false);
    }

    /// The runs this server accepted into the shared queue that no server
    /// has claimed yet.
    pub fn waiting_accepted_here(&self) -> usize {
        self.query(
            "SELECT COUNT(*) FROM runs WHERE status = 'queued' AND owner IS NULL AND accepted_by = ?1",
            &[self.me.as_str().into()],
        )
        .first()
        .and_then(|row| int(row, 0))
        .map_or(0, |n| usize::try_from(n).unwrap_or(0))
    }

    /// Claim up to `n` of the oldest runs waiting in the shared queue for
    /// one of `agents`, leased for `lease`: they are this server's now.
    pub fn claim(&self, agents: &[String], n: usize, lease: Duration) -> Vec<QueuedRun> {
        if agents.is_empty() || n == 0 {
            return Vec::new();
        }
        let served: Vec<String> = (0..agents.len()).map(|i| format!("?{}", i + 4)).collect();
        let sql = format!(
            "UPDATE runs SET owner = ?1, lease_until_ms = {} + ?2 WHERE id IN
                 (SELECT id FROM runs WHERE status = 'queued' AND owner IS NULL AND COALESCE(origin, 'serve') = 'serve'
                      AND agent IN ({}) ORDER BY created_ms, id LIMIT ?3{})
             RETURNING id, agent, invocation, payload, journaled, created_ms",
            self.db.now_ms(),
            served.join(", "),
            self.db.skip_locked()
        );
        let mut params = vec![self.me.as_str().into(), lease_ms(lease).into(), (n as u64).into()];
        params.extend(agents.iter().map(|agent| agent.as_str().into()));
        let mut claimed: Vec<(i64, QueuedRun)> = self
            .query(&sql, &params)
            .into_iter()
            .filter_map(|row| {
                let run = QueuedRun {
                    run_id: text(&row, 0)?,
                    agent: text(&row, 1)?,
                    invocation: text(&row, 2)?,
                    payload: text(&row, 3).and_then(|text| serde_json::from_str(&text).ok()),
                    journaled: int(&row, 4) == Some(1),
                };
                Some((int(&row, 5).unwrap_or(0), run))
            })
            .collect();
        // RETURNING gives no order: oldest first.
        claimed.sort_by(|a, b| (a.0, &a.1.run_id).cmp(&(b.0, &b.1.run_id)));
        claimed.into_iter().map(|(_, run)| run).collect()
    }

    /// Renew the lease of every run (and id turn) this server holds; the
    /// number of runs renewed.
    pub fn heartbeat(&self, lease: Duration) -> usize {
        let (now, lease) = (self.db.now_ms(), lease_ms(lease));
        self.execute(
            &format!("UPDATE id_turns SET lease_until_ms = {now} + ?2 WHERE owner = ?1"),
            &[self.me.as_str().into(), lease.into()],
        );
        self.execute(
            &format!(
                "UPDATE runs SET lease_until_ms = {now} + ?2 WHERE owner = ?1 AND status IN ('queued', 'running')"
            ),
            &[self.me.as_str().into(), lease.into()],
        )
        .unwrap_or(0)
    }

    /// Take over the runs of servers whose leases ran out: a running run
    /// with a journal is queued again (any server resumes it), one without
    /// fails, one that had not started goes back to the shared queue; their
    /// id turns are freed.
    pub fn take_over_expired(&self) -> TakenOver {
        let now = unix_millis();
        let expired = format!("lease_until_ms < {} AND COALESCE(origin, 'serve') = 'serve'", self.db.now_ms());
        let resumed = self
            .execute(
                &format!(
                    "UPDATE runs SET status = 'queued', owner = NULL, lease_until_ms = NULL
                     WHERE status = 'running' AND journaled = 1 AND {expired}"
                ),
                &[],
            )
            .unwrap_or(0);
        let failed = self
            .execute(
                &format!(
                    "UPDATE runs SET status = 'failed', error_kind = ?2, finished_ms = ?1, payload = NULL,
                         error = 'the server running it stopped answering (its lease ran out) before the run \
                                  finished, and the run kept no journal to resume from'
                     WHERE status = 'running' AND COALESCE(journaled, 0) = 0 AND {expired}"
                ),
                &[now.into(), ErrorKind::Shutdown.as_str().into()],
            )
            .unwrap_or(0);
        let released = self
            .execute(
                &format!(
                    "UPDATE runs SET owner = NULL, lease_until_ms = NULL
                     WHERE status = 'queued' AND owner IS NOT NULL AND {expired}"
                ),
                &[],
            )
            .unwrap_or(0);
        self.execute(&format!("DELETE FROM id_turns WHERE lease_until_ms < {}", self.db.now_ms()), &[]);
        TakenOver { resumed, failed, released }
    }

    /// This server stops: the runs it held and never started go back to
    /// the shared queue, for another server (or its next start).
    pub fn release_held(&self) -> usize {
        self.execute(
            "UPDATE runs SET owner = NULL, lease_until_ms = NULL WHERE owner = ?1 AND status = 'queued'",
            &[self.me.as_str().into()],
        )
        .unwrap_or(0)
    }

    /// Give run `id`, claimed and not started here, back to the shared
    /// queue.
    pub fn release(&self, id: &str) {
        self.execute(
            "UPDATE runs SET owner = NULL, lease_until_ms = NULL WHERE id = ?1 AND owner = ?2 AND status = 'queued'",
            &[id.into(), self.me.as_str().into()],
        );
    }

    /// Which of `runs` (this server's) must stop, and why: a cancel asked,
    /// or another server took the run over.
    pub fn stops(&self, runs: &[String]) -> Vec<(String, Stop)> {
        // A statement's parameters are bounded (PostgreSQL: 65,535).
        runs.chunks(STOPS_PER_STATEMENT).flat_map(|chunk| self.stops_among(chunk)).collect()
    }

    fn stops_among(&self, runs: &[String]) -> Vec<(String, Stop)> {
        if runs.is_empty() {
            return Vec::new();
        }
        let listed: Vec<String> = (0..runs.len()).map(|i| format!("?{}", i + 2)).collect();
        let sql = format!(
            "SELECT id, owner, cancel_requested_ms FROM runs WHERE id IN ({})
                 AND (cancel_requested_ms IS NOT NULL OR owner IS DISTINCT FROM ?1)",
            listed.join(", ")
        );
        let mut params = vec![self.me.as_str().into()];
        params.extend(runs.iter().map(|id| id.as_str().into()));
        self.query(&sql, &params)
            .into_iter()
            .filter_map(|row| {
                let id = text(&row, 0)?;
                // Cancelled wins: the caller asked for it.
                let stop = if int(&row, 2).is_some() { Stop::Cancelled } else { Stop::TakenOver };
                Some((id, stop))
            })
            .collect()
    }

    /// Take the turn of `agent`'s id `invocation` for run `run_id`: free, or
    /// held by a server whose lease ran out, or already this run's (a run
    /// resumed). Whether it was taken.
    pub fn take_id_turn(&self, agent: &str, invocation: &str, run_id: &str, lease: Duration) -> bool {
        let now = self.db.now_ms();
        self.execute(
            &format!(
                "INSERT INTO id_turns (agent, invocation, run_id, owner, lease_until_ms)
                 VALUES (?1, ?2, ?3, ?4, {now} + ?5)
                 ON CONFLICT (agent, invocation) DO UPDATE SET
                     run_id = excluded.run_id, owner = excluded.owner, lease_until_ms = excluded.lease_until_ms
                 WHERE id_turns.lease_until_ms < {now} OR id_turns.run_id = excluded.run_id"
            ),
            &[agent.into(), invocation.into(), run_id.into(), self.me.as_str().into(), lease_ms(lease).into()],
        ) == Some(1)
    }

    /// Give back the turn run `run_id` took.
    pub fn release_id_turn(&self, agent: &str, invocation: &str, run_id: &str) {
        self.execute(
            "DELETE FROM id_turns WHERE agent = ?1 AND invocation = ?2 AND run_id = ?3",
            &[agent.into(), invocation.into(), run_id.into()],
        );
    }

    /// Events of run `run_id` happened, numbered from `from`: written in
    /// one statement (or a few, for many).
    pub fn append_events(&self, run_id: &str, from: usize, events: &[Value]) {
        for (i, chunk) in events.chunks(EVENTS_PER_STATEMENT).enumerate() {
            let rows: Vec<String> = (0..chunk.len()).map(|j| format!("(?1, ?{}, ?{})", 2 * j + 2, 2 * j + 3)).collect();
            let mut params = vec![run_id.into()];
            for (j, event) in chunk.iter().enumerate() {
                params.push(((from + i * EVENTS_PER_STATEMENT + j) as u64).into());
                params.push(event.to_string().into());
            }
            self.execute(
                &format!(
                    "INSERT INTO run_events (run_id, seq, event) VALUES {} ON CONFLICT (run_id, seq) DO NOTHING",
                    rows.join(", ")
                ),
                &params,
            );
        }
    }

    /// Up to `limit` events of a run going on, from `seq` on.
    pub fn events_after(&self, run_id: &str, seq: usize, limit: usize) -> Vec<Value> {
        self.query(
            "SELECT event FROM run_events WHERE run_id = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3",
            &[run_id.into(), (seq as u64).into(), (limit as u64).into()],
        )
        .into_iter()
        .filter_map(|row| serde_json::from_str(&text(&row, 0)?).ok())
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const LEASE: Duration = Duration::from_secs(30);

    fn agents() -> Vec<String> {
        vec!["triage".to_string()]
    }

    #[test]
    fn a_queued_run_is_claimed_once_oldest_first_and_only_for_served_agents() {
        let dir = tempfile::tempdir().unwrap();
        let store = RunStore::open(&dir.path().join("runs.sqlite"), 10, false).unwrap();
        store.enqueue("run_a", "triage", "1", &json!({"n": 1}));
        store.enqueue("run_b", "other", "1", &json!(null));
        store.enqueue("run_c", "triage", "2", &json!({"n": 3}));
        assert_eq!(store.waiting_accepted_here(), 3);
        let claimed = store.claim(&agents(), 5, LEASE);
        let ids: Vec<&str> = claimed.iter().map(|run| run.run_id.as_str()).collect();
        assert_eq!(ids, ["run_a", "run_c"]);
        assert_eq!(claimed[0].payload, Some(json!({"n": 1})));
        assert!(store.claim(&agents(), 5, LEASE).is_empty(), "claimed twice");
        assert_eq!(store.waiting_accepted_here(), 1, "run_b, an agent not served here, waits");
        assert!(store.stops(&["run_a".into()]).is_empty());
    }

    #[test]
    fn runs_whose_lease_ran_out_are_taken_over_and_their_server_learns_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = RunStore::open(&dir.path().join("runs.sqlite"), 10, false).unwrap();
        for id in ["run_j", "run_n", "run_q"] {
            store.enqueue(id, "triage", id, &json!({}));
        }
        assert_eq!(store.claim(&agents(), 3, Duration::ZERO).len(), 3);
        assert!(store.running("run_j", true));
        assert!(store.running("run_n", false));
        std::thread::sleep(Duration::from_millis(5));
        // Renewed: nothing to take over.
        assert_eq!(store.heartbeat(LEASE), 3);
        assert_eq!(store.take_over_expired(), TakenOver::default());
        store.db.execute("UPDATE runs SET lease_until_ms = 1", &[]).unwrap();
        assert_eq!(store.get("run_j").unwrap()["status"], "interrupted");
        assert_eq!(store.take_over_expired(), TakenOver { resumed: 1, failed: 1, released: 1 });
        assert_eq!(store.get("run_n").unwrap()["error"]["kind"], "shutdown");
        let claimed = store.claim(&agents(), 5, LEASE);
        assert_eq!(claimed.iter().filter(|run| run.journaled).count(), 1, "run_j resumes from its journal");
        // Another server took run_j: this one stops it, and its end is not recorded here.
        store.db.execute("UPDATE runs SET owner = 'elsewhere' WHERE id = 'run_j'", &[]).unwrap();
        assert_eq!(store.stops(&["run_j".into(), "run_q".into()]), vec![("run_j".to_string(), Stop::TakenOver)]);
        assert!(!store.finish("run_j", Ok(&json!(1)), &[]));
        assert_eq!(store.get("run_j").unwrap()["status"], "queued", "a run taken over is not ended by its old owner");
        // Nor started, nor journaled, nor its journal given up.
        assert!(!store.running("run_j", true), "the old owner started a run taken over");
        use crate::journal::{Entry, JournalStore as _};
        let entry = Entry { seq: 0, key: "component".into(), value: "\"x\"".into() };
        assert!(store.append("run_j", &entry).is_err(), "the old owner wrote the journal of a run taken over");
        store.abandon("run_j").unwrap();
        assert_eq!(store.entries("run_j").unwrap(), vec![]);
        let claimed = store.db.query("SELECT journaled FROM runs WHERE id = 'run_j'", &[]).unwrap();
        assert_eq!(int(&claimed[0], 0), Some(1), "the old owner gave up the journal of a run taken over");
        store.request_cancel("run_q");
        assert_eq!(store.stops(&["run_q".into()]), vec![("run_q".to_string(), Stop::Cancelled)]);
    }

    #[test]
    fn one_run_of_an_id_has_the_turn_until_it_gives_it_back_or_its_lease_runs_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = RunStore::open(&dir.path().join("runs.sqlite"), 10, false).unwrap();
        assert!(store.take_id_turn("triage", "1", "run_a", LEASE));
        assert!(store.take_id_turn("triage", "1", "run_a", LEASE), "a resumed run takes its own turn again");
        assert!(!store.take_id_turn("triage", "1", "run_b", LEASE));
        assert!(store.take_id_turn("triage", "2", "run_b", LEASE), "another id is free");
        store.release_id_turn("triage", "1", "run_a");
        assert!(store.take_id_turn("triage", "1", "run_b", Duration::ZERO));
        std::thread::sleep(Duration::from_millis(5));
        assert!(store.take_id_turn("triage", "1", "run_c", LEASE), "run_b's lease ran out");
    }

    #[test]
    fn events_are_read_as_they_come_and_go_with_the_run_into_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = RunStore::open(&dir.path().join("runs.sqlite"), 10, false).unwrap();
        store.insert("run_a", "triage", "1", &json!({}));
        store.append_events("run_a", 0, &[json!({"seq": 0}), json!({"seq": 1})]);
        // More than one statement holds, numbered on.
        let many: Vec<Value> = (2..2 + EVENTS_PER_STATEMENT + 1).map(|seq| json!({"seq": seq})).collect();
        store.append_events("run_a", 2, &many);
        // Written again (a resumed run): the first stays.
        store.append_events("run_a", 1, &[json!({"seq": "again"})]);
        assert_eq!(store.events_after("run_a", 1, 2), vec![json!({"seq": 1}), json!({"seq": 2})]);
        let all = store.events_after("run_a", 0, 10_000);
        assert_eq!(all.len(), EVENTS_PER_STATEMENT + 3);
        assert!(all.iter().enumerate().all(|(seq, event)| event["seq"] == json!(seq)));
        store.finish("run_a", Ok(&json!(null)), &[json!({"seq": 0})]);
        assert!(store.events_after("run_a", 0, 10).is_empty());
    }
}
