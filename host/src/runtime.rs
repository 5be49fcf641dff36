//! The host runtime: one engine, the component cache, one linker per world,
//! and the limits stores run under.

use std::path::PathBuf;
use std::time::Duration;

use wasmtime::Engine;
use wasmtime::component::{Component, HasSelf, Linker};

use crate::agent_host::AgentState;
use crate::bindings::agent::AgentPre;
use crate::bindings::connector::ConnectorPre;
use crate::cache::{CacheOutcome, ComponentCache};
use crate::connector_host::ConnectorState;
use crate::engine::{StoreLimitsConfig, new_engine, wasm_error};
use crate::progress;

/// Limits for agents and connectors. Defaults suit interactive runs.
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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline: Duration::from_secs(600),
            agent_memory: 512 * 1024 * 1024,
            connector_memory: 256 * 1024 * 1024,
            connector_call: Duration::from_secs(300),
        }
    }
}

impl Limits {
    pub fn agent_store(&self) -> StoreLimitsConfig {
        StoreLimitsConfig::with_memory(self.agent_memory)
    }

    pub fn connector_store(&self) -> StoreLimitsConfig {
        StoreLimitsConfig::with_memory(self.connector_memory)
    }
}

pub struct Runtime {
    pub engine: Engine,
    pub limits: Limits,
    cache: ComponentCache,
    agent_linker: Linker<AgentState>,
    connector_linker: Linker<ConnectorState>,
}

impl Runtime {
    /// `cache_dir: None` disables the compiled-component cache.
    pub fn new(cache_dir: Option<PathBuf>, limits: Limits) -> anyhow::Result<Self> {
        let engine = new_engine()?;
        let cache = ComponentCache::new(&engine, cache_dir);

        let mut agent_linker = Linker::new(&engine);
        // WASI is linked because guest toolchains import it; what a guest can
        // reach through it is set by each store's WasiCtx (nothing but output).
        wasmtime_wasi::p2::add_to_linker_async(&mut agent_linker).map_err(wasm_error)?;
        crate::bindings::agent::Agent::add_to_linker::<_, HasSelf<AgentState>>(&mut agent_linker, |state| state)
            .map_err(wasm_error)?;

        let mut connector_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut connector_linker).map_err(wasm_error)?;
        crate::bindings::connector::Connector::add_to_linker::<_, HasSelf<ConnectorState>>(
            &mut connector_linker,
            |state| state,
        )
        .map_err(wasm_error)?;

        Ok(Runtime { engine, limits, cache, agent_linker, connector_linker })
    }

    /// Compile (or load from the cache) a component.
    pub fn load_component(&self, bytes: &[u8], label: &str) -> anyhow::Result<Component> {
        let mut spinner = None;
        let (component, outcome) = self.cache.load(&self.engine, bytes, || {
            spinner = Some(progress::spinner(format!("compiling {label}")));
        })?;
        drop(spinner);
        tracing::debug!("{label}: {}", if outcome == CacheOutcome::Hit { "loaded precompiled" } else { "compiled" });
        Ok(component)
    }

    /// Type-check an agent against the agent world.
    pub fn agent_pre(&self, component: &Component) -> anyhow::Result<AgentPre<AgentState>> {
        let pre = self.agent_linker.instantiate_pre(component).map_err(|err| {
            anyhow::anyhow!(
                "not a flue agent (expected the flue:sandbox/agent world): {}",
                crate::engine::wasm_error(err)
            )
        })?;
        AgentPre::new(pre).map_err(|err| anyhow::anyhow!("not a flue agent: {}", wasm_error(err)))
    }

    /// Type-check a connector against the connector world.
    pub fn connector_pre(&self, component: &Component) -> anyhow::Result<ConnectorPre<ConnectorState>> {
        let pre = self.connector_linker.instantiate_pre(component).map_err(wasm_error)?;
        ConnectorPre::new(pre).map_err(wasm_error)
    }
}
