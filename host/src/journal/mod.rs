//! A run's journal: every host call an agent makes, with its answer, in the
//! order made, so that a run a crash interrupted can be resumed.
//!
//! A wasm component is deterministic given its inputs, and every input
//! reaches it through a host call (sandbox operations, model turns, the
//! clocks, random bytes). So a fresh instance of the same component, whose
//! calls are answered from the journal, walks the same path the first one
//! did: completed calls are *replayed* (their answers come from the journal;
//! nothing is repeated in the sandbox or at the model's provider), and once
//! the journal runs out the run continues *live*, appending as before. The
//! call in flight at the crash was never recorded, so it is made again
//! (at-least-once).
//!
//! Each entry carries a key naming the call and a digest of its arguments.
//! During replay the next entry must have the key of the call being made:
//! otherwise the agent no longer behaves as it did and the run stops with
//! [`JournalError::Diverged`] rather than act on answers meant for other
//! calls. The first entry names the component's content hash, so a changed
//! component is refused before it runs ([`JournalError::ComponentChanged`]).
//!
//! A journal is bounded ([`Journal::open`]'s `limit`): past it, recording
//! stops, the run goes on, and a resume of it fails saying why. Storage is
//! whatever implements [`JournalStore`] (the project's SQLite run store).

pub mod wasi;

use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

/// The default bound on one run's journal (`--journal-mib`).
pub const DEFAULT_LIMIT_BYTES: u64 = 64 * 1024 * 1024;

/// The key of the entry that ends a journal which reached its bound.
const FULL: &str = "journal-full";
/// The key of the entry that ends a journal the store stopped taking.
const CUT: &str = "journal-cut";
/// What an entry costs beyond its key and answer (its row, its place).
const ENTRY_OVERHEAD: u64 = 64;
/// The key of the first entry: the component's content hash.
const COMPONENT: &str = "component";
/// The key of the last entry of a run whose agent returned: what it
/// returned, recorded before the run's sandboxes are deleted.
pub const AGENT_RETURNED: &str = "agent-returned";

/// One recorded call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its place in the run, from 0.
    pub seq: u64,
    /// The call and a digest of its arguments, e.g. `exec:3f2a…`.
    pub key: String,
    /// Its answer, as JSON.
    pub value: String,
}

/// Why a journal could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("the journal store failed: {source}")]
pub struct JournalStoreError {
    /// The storage's own error.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Where journals are kept.
pub trait JournalStore: Send + Sync {
    /// Every entry of run `run_id`, in order.
    fn entries(&self, run_id: &str) -> Result<Vec<Entry>, JournalStoreError>;
    /// Append one entry to run `run_id`'s journal.
    fn append(&self, run_id: &str, entry: &Entry) -> Result<(), JournalStoreError>;
    /// Run `run_id`'s journal is not whole: never resume from it.
    fn abandon(&self, run_id: &str) -> Result<(), JournalStoreError>;
    /// Whether this process still holds run `run_id`: another may have
    /// taken it over (and with it the run's journal and sandboxes). A store
    /// that cannot tell says yes.
    fn holds(&self, _run_id: &str) -> bool {
        true
    }
}

/// What an entry counts against the bound.
fn entry_cost(entry: &Entry) -> u64 {
    (entry.key.len() + entry.value.len()) as u64 + ENTRY_OVERHEAD
}

/// Why a run cannot go on from its journal.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    /// The component is not the one the run started with.
    #[error(
        "the agent's component changed since the run started (sha256 {then}, now {now}): a journal replays only the \
         component that wrote it"
    )]
    ComponentChanged {
        /// Its hash when the run started.
        then: String,
        /// Its hash now.
        now: String,
    },
    /// The agent made another call than the one recorded at this point.
    #[error(
        "the agent diverged from its journal at call {seq}: it made {made}, the journal has {recorded} (the agent \
         depends on something the journal does not record)"
    )]
    Diverged {
        /// Where.
        seq: u64,
        /// What the journal has.
        recorded: String,
        /// What the agent asked for.
        made: String,
    },
    /// The journal reached its bound before the crash, so the rest of the
    /// run was not recorded.
    #[error("its journal reached its bound of {limit_mib} MiB before the run stopped, so the rest was not recorded")]
    Full {
        /// The bound.
        limit_mib: u64,
    },
    /// The store refused an entry, so the rest of the run was not recorded.
    #[error("its journal could not be written past call {seq} (the store failed), so the rest was not recorded")]
    Cut {
        /// Where it ends.
        seq: u64,
    },
    /// A large file the run read is not the same any more (the journal
    /// keeps a large file's digest, not its bytes).
    #[error("file {path} changed since the run read it ({then}; now {now}), so the run cannot go on as it did")]
    FileChanged {
        /// The file.
        path: String,
        /// What it was.
        then: String,
        /// What it is now (or why it cannot be read).
        now: String,
    },
    /// An entry cannot be read back.
    #[error("entry {seq} of its journal cannot be read ({reason})")]
    Corrupt {
        /// Which.
        seq: u64,
        /// Why.
        reason: String,
    },
    /// A sandbox the run used no longer exists.
    #[error("sandbox {id} on {connector}, which the run used, is gone ({reason})")]
    SandboxGone {
        /// Its connector.
        connector: String,
        /// Its id.
        id: String,
        /// What connecting to it said.
        reason: String,
    },
}

/// A run's journal: replaying what was recorded, then recording.
pub struct Journal {
    run_id: String,
    store: Arc<dyn JournalStore>,
    limit: u64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// What an earlier process recorded, to replay.
    recorded: Vec<Entry>,
    /// The next call's place.
    next: u64,
    /// Bytes and entries recorded by this process.
    bytes: u64,
    written: u64,
    /// Recording stopped (the bound, or a store that failed).
    stopped: bool,
    /// The first error met where it could not be returned (a clock read):
    /// the next call that can fail reports it.
    poisoned: Option<JournalError>,
}

/// Arguments longer than this enter a key by their [`large_digest`].
const LARGE: usize = 64 * 1024;

/// A digest of a call's arguments, for its key: `op:` and 16 hex digits.
/// (Keys tell calls apart for a deterministic component; they guard
/// against no adversary.)
pub fn key(op: &str, parts: &[&[u8]]) -> String {
    let mut digest = Sha256::new();
    for part in parts {
        digest.update((part.len() as u64).to_le_bytes());
        if part.len() > LARGE {
            digest.update(large_digest(part).as_bytes());
        } else {
            digest.update(part);
        }
    }
    format!("{op}:{}", hex::encode(&digest.finalize()[..8]))
}

/// A digest of large data, fast (XXH3-128, hex): what a key holds of a
/// large argument, and the journal of a large file read whole.
pub fn large_digest(data: &[u8]) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(data))
}

impl Journal {
    /// The journal of run `run_id` in `store`, for `component` (its SHA-256,
    /// hex): what the store holds is replayed first. A journal written for
    /// another component is refused.
    pub fn open(
        store: Arc<dyn JournalStore>,
        run_id: &str,
        component: &str,
        limit: u64,
    ) -> Result<Arc<Journal>, JournalStoreOrReplayError> {
        let recorded = store.entries(run_id)?;
        // The bound is the run's, whichever process records: what earlier
        // ones wrote counts.
        let bytes = recorded.iter().map(entry_cost).sum();
        let journal = Arc::new(Journal {
            run_id: run_id.to_string(),
            store,
            limit,
            state: Mutex::new(State { recorded, bytes, ..State::default() }),
        });
        let then: String = journal.step_sync(COMPONENT, || component.to_string())?;
        if then != component {
            return Err(JournalError::ComponentChanged { then, now: component.to_string() }.into());
        }
        Ok(journal)
    }

    /// How many calls an earlier process recorded (0: a fresh run).
    pub fn recorded(&self) -> u64 {
        self.lock().recorded.len() as u64
    }

    /// Whether calls are still answered from the journal.
    pub fn replaying(&self) -> bool {
        let state = self.lock();
        state.next < state.recorded.len() as u64
    }

    /// The place of the next call: a name, stable across a resume, for a
    /// stream opened now.
    pub fn position(&self) -> u64 {
        self.lock().next
    }

    /// Whether call `key` is recorded at or after the next call's place
    /// (a resumed run asks whether a stream it reopens was finished).
    pub fn recorded_ahead(&self, key: &str) -> bool {
        let state = self.lock();
        state.recorded.iter().skip(state.next as usize).any(|entry| entry.key == key)
    }

    /// The error a call that could not fail (a clock read) met, if any.
    pub fn poisoned(&self) -> Option<JournalError> {
        self.lock().poisoned.clone()
    }

    /// Record that the run cannot go on, where the error cannot be returned.
    pub fn poison(&self, err: JournalError) {
        self.lock().poisoned.get_or_insert(err);
    }

    /// Answer call `key` from the journal, or — past its end — by `live`,
    /// recording the answer.
    pub async fn step<T, F>(&self, key: &str, live: F) -> Result<T, JournalError>
    where
        T: Serialize + DeserializeOwned,
        F: Future<Output = T>,
    {
        if let Some(replayed) = self.replay(key)? {
            return Ok(replayed);
        }
        let value = live.await;
        self.record(key, &value);
        Ok(value)
    }

    /// [`Journal::step`] for a call that does not wait.
    pub fn step_sync<T>(&self, key: &str, live: impl FnOnce() -> T) -> Result<T, JournalError>
    where
        T: Serialize + DeserializeOwned,
    {
        if let Some(replayed) = self.replay(key)? {
            return Ok(replayed);
        }
        let value = live();
        self.record(key, &value);
        Ok(value)
    }

    /// The recorded answer of call `key`, if the journal has not run out
    /// (then the caller makes the call and [`Journal::record`]s its answer).
    pub fn replay<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, JournalError> {
        let mut state = self.lock();
        if let Some(err) = &state.poisoned {
            return Err(err.clone());
        }
        let Some(entry) = state.recorded.get(state.next as usize) else {
            return Ok(None);
        };
        if entry.key == FULL {
            return Err(JournalError::Full { limit_mib: self.limit >> 20 });
        }
        if entry.key == CUT {
            return Err(JournalError::Cut { seq: entry.seq });
        }
        if entry.key != key {
            return Err(JournalError::Diverged { seq: entry.seq, recorded: entry.key.clone(), made: key.to_string() });
        }
        let value = serde_json::from_str(&entry.value)
            .map_err(|err| JournalError::Corrupt { seq: entry.seq, reason: err.to_string() })?;
        // Answered: its text is not needed again (its key is, for
        // `recorded_ahead`).
        let at = state.next as usize;
        state.recorded[at].value = String::new();
        state.next += 1;
        Ok(Some(value))
    }

    /// What the agent returned, if the journal ends with it: the run had
    /// ended when its process died, before its end was recorded (perhaps
    /// after its sandboxes were deleted), so it ends with that, and the
    /// agent is not run again.
    pub fn returned<T: DeserializeOwned>(&self) -> Option<T> {
        let state = self.lock();
        let last = state.recorded.last().filter(|entry| entry.key == AGENT_RETURNED)?;
        serde_json::from_str(&last.value).ok()
    }

    /// Record the answer of call `key`, made live.
    pub fn record<T: Serialize>(&self, key: &str, value: &T) {
        let mut state = self.lock();
        let seq = state.next;
        state.next += 1;
        if state.stopped {
            return;
        }
        let value = serde_json::to_string(value).unwrap_or_else(|_| "null".into());
        let entry = Entry { seq, key: key.to_string(), value };
        let entry = if state.bytes + entry_cost(&entry) > self.limit {
            state.stopped = true;
            Entry { seq, key: FULL.into(), value: "null".into() }
        } else {
            state.bytes += entry_cost(&entry);
            state.written += 1;
            entry
        };
        if let Err(err) = self.store.append(&self.run_id, &entry) {
            // Never a journal that ends without saying so: a resume would
            // take the calls after it for new ones and make them again.
            tracing::warn!("run {}: the journal stops at call {seq}: {err}", self.run_id);
            state.stopped = true;
            let cut = Entry { seq, key: CUT.into(), value: "null".into() };
            let marked = self.store.append(&self.run_id, &cut);
            if let Err(err) = marked.and(self.store.abandon(&self.run_id)) {
                tracing::warn!("run {}: and it cannot be marked cut: {err}", self.run_id);
            }
        }
        #[cfg(debug_assertions)]
        crash_if_asked(seq);
    }

    /// Entries and bytes (keys and answers) this process recorded.
    pub fn written(&self) -> (u64, u64) {
        let state = self.lock();
        (state.written, state.bytes)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A crash the tests can ask for, in debug builds only: with
/// `FLUE_TEST_ONLY_CRASH_AFTER_JOURNAL_ENTRY=<n>`, the process aborts right
/// after it recorded entry `n` — so the tests can resume a run from every
/// point of its journal. Release builds have no such hook.
#[cfg(debug_assertions)]
fn crash_if_asked(seq: u64) {
    let asked = std::env::var("FLUE_TEST_ONLY_CRASH_AFTER_JOURNAL_ENTRY").ok().and_then(|n| n.parse::<u64>().ok());
    if asked == Some(seq) {
        std::process::abort();
    }
}

/// `live`'s answer, through `journal` when the run keeps one ([`Journal::step`]),
/// else `live`'s alone. `key` is computed only for a journal.
pub async fn through<T, F>(journal: Option<&Journal>, key: impl FnOnce() -> String, live: F) -> Result<T, JournalError>
where
    T: Serialize + DeserializeOwned,
    F: Future<Output = T>,
{
    match journal {
        Some(journal) => journal.step(&key(), live).await,
        None => Ok(live.await),
    }
}

/// [`through`] for a call that does not wait.
pub fn through_sync<T>(
    journal: Option<&Journal>,
    key: impl FnOnce() -> String,
    live: impl FnOnce() -> T,
) -> Result<T, JournalError>
where
    T: Serialize + DeserializeOwned,
{
    match journal {
        Some(journal) => journal.step_sync(&key(), live),
        None => Ok(live()),
    }
}

/// Why a journal could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum JournalStoreOrReplayError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] JournalStoreError),
    /// What it holds cannot be replayed here.
    #[error(transparent)]
    Replay(#[from] JournalError),
}

/// Bytes recorded as base64 (not a JSON array of numbers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use base64::Engine as _;
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD_NO_PAD.encode(&self.0))
    }
}

impl<'de> serde::Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use base64::Engine as _;
        let text = String::deserialize(deserializer)?;
        base64::engine::general_purpose::STANDARD_NO_PAD.decode(text).map(Bytes).map_err(serde::de::Error::custom)
    }
}

/// A journal store in memory, for tests.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct MemoryStore(pub Mutex<Vec<Entry>>);

#[cfg(test)]
impl JournalStore for MemoryStore {
    fn entries(&self, _run_id: &str) -> Result<Vec<Entry>, JournalStoreError> {
        Ok(self.0.lock().unwrap().clone())
    }

    fn append(&self, _run_id: &str, entry: &Entry) -> Result<(), JournalStoreError> {
        self.0.lock().unwrap().push(entry.clone());
        Ok(())
    }

    fn abandon(&self, _run_id: &str) -> Result<(), JournalStoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(store: &Arc<MemoryStore>, component: &str) -> Result<Arc<Journal>, JournalStoreOrReplayError> {
        Journal::open(store.clone(), "run_1", component, 1024)
    }

    #[test]
    fn keys_of_small_arguments_are_as_before_and_large_ones_still_tell_data_apart() {
        // Small arguments: SHA-256 over them, as journals already written have it.
        let mut digest = Sha256::new();
        for part in [b"a.txt".as_slice(), b"hello"] {
            digest.update((part.len() as u64).to_le_bytes());
            digest.update(part);
        }
        let before = format!("write-file:{}", hex::encode(&digest.finalize()[..8]));
        assert_eq!(key("write-file", &[b"a.txt", b"hello"]), before);
        // Large ones by their fast digest: one changed byte is another key.
        let big = vec![7u8; LARGE + 1];
        let mut other = big.clone();
        other[LARGE / 2] = 8;
        assert_eq!(key("write-file", &[b"a", &big]), key("write-file", &[b"a", &big.clone()]));
        assert_ne!(key("write-file", &[b"a", &big]), key("write-file", &[b"a", &other]));
        assert_ne!(large_digest(&big), large_digest(&other));
    }

    #[test]
    fn the_bound_is_the_runs_whichever_process_records() {
        let store = Arc::new(MemoryStore::default());
        let first = open(&store, "abc").unwrap();
        first.step_sync("read-file:1", || "x".repeat(600)).unwrap();
        drop(first);
        let second = open(&store, "abc").unwrap();
        second.step_sync("read-file:1", String::new).unwrap();
        second.step_sync("read-file:2", || "y".repeat(600)).unwrap();
        let keys: Vec<String> = store.0.lock().unwrap().iter().map(|e| e.key.clone()).collect();
        assert_eq!(keys.last().map(String::as_str), Some(FULL), "the second process got a bound of its own: {keys:?}");
    }

    #[test]
    fn a_second_process_replays_what_the_first_recorded_then_goes_live() {
        let store = Arc::new(MemoryStore::default());
        let first = open(&store, "abc").unwrap();
        assert_eq!(first.step_sync("exec:1", || 1).unwrap(), 1);
        assert_eq!(first.step_sync("exec:2", || 2).unwrap(), 2);
        drop(first); // the crash: call 3 was in flight
        let second = open(&store, "abc").unwrap();
        assert!(second.replaying());
        let mut live_calls = 0;
        let mut call = |key: &str, live: i32| {
            second
                .step_sync(key, || {
                    live_calls += 1;
                    live
                })
                .unwrap()
        };
        assert_eq!(call("exec:1", 10), 1, "answered from the journal");
        assert_eq!(call("exec:2", 20), 2);
        assert_eq!(call("exec:3", 30), 30, "the call in flight is made again");
        assert_eq!(live_calls, 1);
        assert_eq!(store.0.lock().unwrap().len(), 4, "component, two replayed calls, one new");
    }

    #[test]
    fn another_component_or_another_call_is_refused() {
        let store = Arc::new(MemoryStore::default());
        let first = open(&store, "abc").unwrap();
        first.step_sync("exec:1", || 1).unwrap();
        assert!(matches!(
            open(&store, "def").err(),
            Some(JournalStoreOrReplayError::Replay(JournalError::ComponentChanged { .. }))
        ));
        let second = open(&store, "abc").unwrap();
        let err = second.step_sync("read-file:9", || 0).unwrap_err();
        assert!(matches!(err, JournalError::Diverged { seq: 1, .. }), "{err}");
    }

    #[test]
    fn past_its_bound_a_journal_stops_and_says_so_at_resume() {
        let store = Arc::new(MemoryStore::default());
        let first = open(&store, "abc").unwrap();
        first.step_sync("read-file:1", || "x".repeat(2000)).unwrap();
        first.step_sync("exec:2", || 2).unwrap();
        assert_eq!(store.0.lock().unwrap().len(), 2, "nothing after the marker");
        let second = open(&store, "abc").unwrap();
        let err = second.step_sync("read-file:1", String::new).unwrap_err();
        assert!(matches!(err, JournalError::Full { .. }), "{err}");
    }

    #[test]
    fn bytes_are_kept_as_base64() {
        let json = serde_json::to_string(&Bytes(vec![0, 255, 10])).unwrap();
        assert_eq!(json, "\"AP8K\"");
        assert_eq!(serde_json::from_str::<Bytes>(&json).unwrap(), Bytes(vec![0, 255, 10]));
        assert_ne!(key("exec", &[b"ab", b"c"]), key("exec", &[b"a", b"bc"]));
    }
}
