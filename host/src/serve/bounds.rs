//! The allowed range of every number a server takes from outside: its flags
//! and an agent's `flue.toml` limits. One table, so that the flags, the
//! manifest and their error messages agree. Past these, values overflow
//! (`Instant + deadline`, MiB to bytes) or exhaust the machine.

use std::ops::RangeInclusive;

/// A run's deadline, in seconds (as for `flue run`).
pub const DEADLINE_SECS: RangeInclusive<u64> = crate::runtime::limits::DEADLINE_SECS;
/// An agent's memory, in MiB (as for `flue run`).
pub const MEMORY_MIB: RangeInclusive<u64> = crate::runtime::limits::AGENT_MEMORY_MIB;
/// Seconds runs may finish after a shutdown signal: up to a day.
/// An id's sandbox's idle time (`sandbox-idle-secs`; 0: never deleted).
pub const SANDBOX_IDLE_SECS: RangeInclusive<u64> = crate::run::sandboxes::SANDBOX_IDLE_SECS;
/// Seconds a server holds its runs between heartbeats (it renews every
/// third of it).
pub const LEASE_SECS: RangeInclusive<u64> = 2..=3600;
/// Seconds.
pub const GRACE_SECS: RangeInclusive<u64> = 0..=24 * 3600;
/// The largest request body, in KiB: up to 64 MiB (bodies are held in memory).
pub const MAX_BODY_KIB: RangeInclusive<u64> = 1..=64 * 1024;
/// The most memory request bodies being read may hold, all together, in
/// MiB: up to 64 GiB.
pub const BODY_MEMORY_MIB: RangeInclusive<u64> = 1..=64 * 1024;
/// Seconds an agent's build (`flue dev`) may take: up to a day.
pub const BUILD_TIMEOUT_SECS: RangeInclusive<u64> = 1..=24 * 3600;
/// Local sandboxes kept ready.
pub const READY_SANDBOXES: RangeInclusive<u64> = 0..=crate::sandbox::local::MAX_READY as u64;
/// Runs at once.
pub const MAX_CONCURRENT: RangeInclusive<u64> = 1..=4096;
/// Runs waiting for a slot.
pub const QUEUE: RangeInclusive<u64> = 0..=100_000;
/// Runs the store keeps.
pub const RETENTION: RangeInclusive<u64> = 1..=10_000_000;
/// Open client connections.
pub const MAX_CONNECTIONS: RangeInclusive<u64> = 1..=65_536;
/// Seconds to send a request's headers (and how long an idle connection stays open).
pub const HEADER_TIMEOUT_SECS: RangeInclusive<u64> = 1..=3600;
/// Seconds to send a request's body (and the longest an answer may wait on a
/// client that does not read it).
pub const BODY_TIMEOUT_SECS: RangeInclusive<u64> = 1..=3600;

/// `value` if it lies in `range`, else an error naming `key` and the range.
pub fn check(key: &str, value: u64, range: &RangeInclusive<u64>, unit: &str) -> Result<u64, OutOfRange> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(OutOfRange { key: key.to_string(), value, min: *range.start(), max: *range.end(), unit: unit.to_string() })
    }
}

/// A number outside its allowed range.
#[derive(Debug, thiserror::Error)]
#[error("{key} = {value} is out of range: it must be from {min} to {max}{unit}")]
pub struct OutOfRange {
    /// The flag or setting, e.g. `deadline-secs`.
    pub key: String,
    /// What was given.
    pub value: u64,
    /// The smallest allowed.
    pub min: u64,
    /// The largest allowed.
    pub max: u64,
    /// ` seconds`, ` MiB`, or empty.
    pub unit: String,
}
