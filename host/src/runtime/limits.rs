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

/// A run's deadline, in seconds: up to a week (further is no deadline,
/// and `Instant + deadline` would overflow).
pub const DEADLINE_SECS: std::ops::RangeInclusive<u64> = 1..=7 * 24 * 3600;
/// An agent's memory, in MiB: up to 4 GiB, all a 32-bit wasm memory can
/// address.
pub const AGENT_MEMORY_MIB: std::ops::RangeInclusive<u64> = 1..=4096;

impl Limits {
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
