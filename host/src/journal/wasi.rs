//! The clocks and random bytes an agent reads through WASI, journaled: in a
//! resumed run they answer what the first process answered, so the agent
//! takes the same path. An error here (the agent diverged) cannot be
//! returned from a clock read: it poisons the journal, and the agent's next
//! host call stops the run.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{Bytes, Journal};

/// `wasi:clocks/wall-clock`, journaled.
pub struct WallClock(pub Arc<Journal>);

impl wasmtime_wasi::HostWallClock for WallClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        let live = || SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
        match self.0.step_sync("wall-clock", live) {
            Ok(nanos) => Duration::from_nanos(nanos),
            Err(err) => {
                self.0.poison(err);
                Duration::from_nanos(live())
            }
        }
    }
}

/// `wasi:clocks/monotonic-clock`, journaled. Live readings continue from
/// the last replayed one (another process's clock started elsewhere), so
/// the agent never sees time go back.
pub struct MonotonicClock {
    journal: Arc<Journal>,
    started: std::time::Instant,
    /// Added to live readings: the last replayed reading, where this
    /// process's clock started.
    offset: std::sync::Mutex<Option<u64>>,
    last_replayed: std::sync::atomic::AtomicU64,
}

impl MonotonicClock {
    /// A clock for a run recorded in `journal`.
    pub fn new(journal: Arc<Journal>) -> Self {
        MonotonicClock {
            journal,
            started: std::time::Instant::now(),
            offset: Default::default(),
            last_replayed: Default::default(),
        }
    }
}

impl wasmtime_wasi::HostMonotonicClock for MonotonicClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        let replaying = self.journal.replaying();
        let live = || {
            let base = *self
                .offset
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert_with(|| self.last_replayed.load(std::sync::atomic::Ordering::Relaxed));
            base + self.started.elapsed().as_nanos() as u64
        };
        match self.journal.step_sync("monotonic-clock", live) {
            Ok(nanos) => {
                if replaying {
                    self.last_replayed.store(nanos, std::sync::atomic::Ordering::Relaxed);
                }
                nanos
            }
            Err(err) => {
                self.journal.poison(err);
                live()
            }
        }
    }
}

/// `wasi:random/random` or `insecure`, journaled: bytes from the thread's
/// CSPRNG, recorded.
pub struct Random {
    journal: Arc<Journal>,
    key: &'static str,
}

impl Random {
    /// The secure generator of a run recorded in `journal`.
    pub fn secure(journal: Arc<Journal>) -> Self {
        Random { journal, key: "random" }
    }

    /// The insecure generator of a run recorded in `journal`.
    pub fn insecure(journal: Arc<Journal>) -> Self {
        Random { journal, key: "insecure-random" }
    }

    /// The insecure seed, journaled.
    pub fn seed(journal: &Journal) -> u128 {
        let live = || u128::from_le_bytes(fresh(16).try_into().expect("16 bytes"));
        journal.step_sync("insecure-seed", || live().to_string()).ok().and_then(|s| s.parse().ok()).unwrap_or_else(live)
    }
}

fn fresh(len: usize) -> Vec<u8> {
    use rand::Rng as _;
    let mut bytes = vec![0; len];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

impl rand::TryRng for Random {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut bytes = [0; 4];
        self.try_fill_bytes(&mut bytes)?;
        Ok(u32::from_le_bytes(bytes))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut bytes = [0; 8];
        self.try_fill_bytes(&mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        let len = dst.len();
        match self.journal.step_sync(self.key, || Bytes(fresh(len))) {
            Ok(Bytes(bytes)) if bytes.len() == len => dst.copy_from_slice(&bytes),
            Ok(_) => {
                self.journal.poison(super::JournalError::Corrupt {
                    seq: 0,
                    reason: "random bytes of another length were recorded".into(),
                });
                dst.copy_from_slice(&fresh(len));
            }
            Err(err) => {
                self.journal.poison(err);
                dst.copy_from_slice(&fresh(len));
            }
        }
        Ok(())
    }
}

impl rand::TryCryptoRng for Random {}
