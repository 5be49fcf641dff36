//! The limits every store runs under, and the limiter that enforces them.
//!
//! [`Limits`] is what a user sets (`--deadline`, `--memory`); each store gets
//! a [`StoreLimitsConfig`] derived from it. The [`Limiter`] enforces the
//! memory, table and instance caps and *records* what it refused, so that a
//! trap can be explained from state ("the agent ran out of memory") instead
//! of by reading wasmtime's error text.

use std::time::Duration;

use wasmtime::ResourceLimiter;

const MIB: usize = 1024 * 1024;

/// Limits for agents and connectors. The defaults suit interactive runs.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Wall-clock limit of a whole agent run.
    pub deadline: Duration,
    /// Linear memory an agent may use.
    pub agent_memory: usize,
    /// Linear memory a connector may use.
    pub connector_memory: usize,
    /// Longest a single connector call may take (commands add their own
    /// timeout on top).
    pub connector_call: Duration,
    /// Log output guests (the agent, its stdout and stderr, connectors) may
    /// produce in one run; past it lines are dropped, after one marker.
    pub log_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline: Duration::from_secs(600),
            agent_memory: 512 * MIB,
            connector_memory: 256 * MIB,
            connector_call: Duration::from_secs(300),
            log_bytes: 2 * MIB,
        }
    }
}

/// The longest deadline a run may be given (seven days).
pub const MAX_DEADLINE_SECS: u64 = 7 * 86_400;
/// The most linear memory an agent may be given (16 GiB, in MiB).
pub const MAX_AGENT_MEMORY_MIB: u64 = 16 * 1024;

/// A limit given out of its range (a flag, a `flue.toml` value).
#[derive(Debug, thiserror::Error)]
#[error("{setting} must be between {min} and {max}{unit}, not {value}")]
pub struct LimitOutOfRange {
    /// Which setting, as the user wrote it (e.g. `--deadline`).
    pub setting: String,
    /// What was given.
    pub value: u64,
    /// The smallest allowed.
    pub min: u64,
    /// The largest allowed.
    pub max: u64,
    /// The unit, with its leading space (e.g. ` seconds`).
    pub unit: &'static str,
}

/// `value` if it is within `min..=max`, else why not.
pub fn bounded(setting: &str, value: u64, min: u64, max: u64, unit: &'static str) -> Result<u64, LimitOutOfRange> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(LimitOutOfRange { setting: setting.to_string(), value, min, max, unit })
    }
}

impl Limits {
    /// These limits with a run's deadline and agent memory, as a user gave
    /// them (`deadline_setting` and `memory_setting` name where, for the
    /// error), each checked against its range.
    pub fn with_run_limits(
        self,
        (deadline_setting, deadline_secs): (&str, u64),
        (memory_setting, memory_mib): (&str, u64),
    ) -> Result<Limits, LimitOutOfRange> {
        let deadline = bounded(deadline_setting, deadline_secs, 1, MAX_DEADLINE_SECS, " seconds")?;
        let memory = bounded(memory_setting, memory_mib, 1, MAX_AGENT_MEMORY_MIB, " MiB")?;
        Ok(Limits { deadline: Duration::from_secs(deadline), agent_memory: memory as usize * MIB, ..self })
    }

    /// The store limits of an agent.
    pub fn agent_store(&self) -> StoreLimitsConfig {
        StoreLimitsConfig::with_memory(self.agent_memory)
    }

    /// The largest file `read-file` returns at once: a quarter of the
    /// agent's memory, so that the answer fits in the agent with room to
    /// spare, and host memory a guest can drive stays bounded by its limit.
    pub fn max_read(&self) -> u64 {
        (self.agent_memory / 4) as u64
    }

    /// The store limits of a connector instance.
    pub fn connector_store(&self) -> StoreLimitsConfig {
        StoreLimitsConfig::with_memory(self.connector_memory)
    }
}

/// Caps applied to one store.
#[derive(Clone, Debug)]
pub struct StoreLimitsConfig {
    /// Largest linear memory a guest may grow to.
    pub memory_bytes: usize,
    /// Largest table a guest may grow to, in elements (a pointer each).
    pub table_elements: usize,
    /// Component instances pull in several core instances, tables and
    /// memories each; these caps stop a guest from instantiating without end.
    pub instances: usize,
    /// Tables per store.
    pub tables: usize,
    /// Linear memories per store.
    pub memories: usize,
    /// Entries in the store's resource table: every handle the guest holds
    /// (sandboxes, sessions, WASI streams) is one. Host memory per entry is
    /// small and bounded, so this cap bounds what a guest can pin in the host.
    pub handles: usize,
}

impl StoreLimitsConfig {
    /// Defaults for everything but the memory size.
    pub fn with_memory(memory_bytes: usize) -> Self {
        StoreLimitsConfig {
            memory_bytes,
            // 1 M elements is 8 MiB of host memory: plenty for indirect calls.
            table_elements: 1 << 20,
            instances: 1000,
            tables: 1000,
            memories: 100,
            handles: 1_000,
        }
    }
}

/// Raised (as a trap) when a guest tries to grow its memory past its limit.
#[derive(Debug, thiserror::Error)]
#[error("memory limit exceeded: tried to grow to {desired} bytes, the limit is {limit} bytes")]
pub struct MemoryLimitExceeded {
    /// The size the guest asked for.
    pub desired: usize,
    /// The store's limit.
    pub limit: usize,
}

/// Enforces a [`StoreLimitsConfig`] and remembers what it refused.
#[derive(Debug)]
pub struct Limiter {
    config: StoreLimitsConfig,
    memory_refused: Option<usize>,
}

impl Limiter {
    /// A limiter for `config`.
    pub fn new(config: StoreLimitsConfig) -> Self {
        Limiter { config, memory_refused: None }
    }

    /// The caps this limiter enforces.
    pub fn config(&self) -> &StoreLimitsConfig {
        &self.config
    }

    /// The memory size a refused growth asked for, if one was refused.
    pub fn memory_refused(&self) -> Option<usize> {
        self.memory_refused
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.config.memory_bytes {
            self.memory_refused = Some(desired);
            // Trap rather than fail the growth: a guest whose allocation
            // fails would often abort with a confusing message of its own.
            return Err(wasmtime::Error::new(MemoryLimitExceeded { desired, limit: self.config.memory_bytes }));
        }
        Ok(maximum.is_none_or(|max| desired <= max))
    }

    fn table_growing(&mut self, _current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= self.config.table_elements && maximum.is_none_or(|max| desired <= max))
    }

    fn instances(&self) -> usize {
        self.config.instances
    }

    fn tables(&self) -> usize {
        self.config.tables
    }

    fn memories(&self) -> usize {
        self.config.memories
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_limits_are_bounded_with_a_clear_error() {
        let limits = Limits::default().with_run_limits(("--deadline", 60), ("--memory", 256)).unwrap();
        assert_eq!((limits.deadline, limits.agent_memory), (Duration::from_secs(60), 256 * MIB));
        let err = Limits::default().with_run_limits(("deadline-secs", u64::MAX), ("memory-mib", 1)).unwrap_err();
        assert_eq!(err.to_string(), format!("deadline-secs must be between 1 and 604800 seconds, not {}", u64::MAX));
        let err = Limits::default().with_run_limits(("--deadline", 1), ("--memory", 0)).unwrap_err();
        assert!(err.to_string().starts_with("--memory must be between 1 and 16384 MiB"), "{err}");
    }

    #[test]
    fn a_refused_growth_is_remembered() {
        let mut limiter = Limiter::new(StoreLimitsConfig::with_memory(2 * MIB));
        assert!(limiter.memory_growing(0, MIB, None).unwrap());
        assert_eq!(limiter.memory_refused(), None);
        let err = limiter.memory_growing(MIB, 3 * MIB, None).unwrap_err();
        assert!(err.downcast_ref::<MemoryLimitExceeded>().is_some(), "{err}");
        assert_eq!(limiter.memory_refused(), Some(3 * MIB));
    }

    #[test]
    fn tables_are_capped_too() {
        let mut limiter = Limiter::new(StoreLimitsConfig::with_memory(MIB));
        assert!(limiter.table_growing(0, 10, None).unwrap());
        assert!(!limiter.table_growing(0, (1 << 20) + 1, None).unwrap());
    }
}
