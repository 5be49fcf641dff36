//! The wasm runtime: one engine, the component cache, one linker per world,
//! and the one place stores are built.
//!
//! Every store — an agent's, a connector instance's — comes from
//! [`Runtime::new_store`], which installs the [`Limiter`], caps the resource
//! table and arms the deadline. Nothing else creates stores, so no store can
//! miss a limit.

pub mod bindings;
pub mod cache;
pub mod compat;
pub(crate) mod convert;
pub mod engine;
pub mod guest_output;
pub mod limits;
pub mod trap;

use std::path::PathBuf;
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store};

use crate::events::EventLog;
use crate::run::imports::AgentState;
use crate::sandbox::wasm::ConnectorState;
use bindings::connector::ConnectorPre;
use cache::{CacheOutcome, ComponentCache};
use compat::AnyAgentPre;
use engine::{arm_deadline, new_engine, wasm_error};
pub use limits::{Limiter, Limits, StoreLimitsConfig};

/// What every store's data carries for the runtime: the resource table and
/// the limiter. Built only by [`Runtime::new_store`].
pub struct StoreBase {
    /// Handles the guest holds (sandboxes, sessions, WASI streams).
    pub table: ResourceTable,
    /// Enforces the store's memory, table and instance caps.
    pub limiter: Limiter,
}

/// Store data that has a [`StoreBase`].
pub trait HasStoreBase: Send + 'static {
    /// The store's base.
    fn base(&mut self) -> &mut StoreBase;
}

/// The engine, the compiled-component cache, and a linker per world.
pub struct Runtime {
    /// The one engine every component is compiled for.
    pub engine: Engine,
    /// The limits stores are built with.
    pub limits: Limits,
    cache: ComponentCache,
    agent_linker: Linker<AgentState>,
    connector_linker: Linker<ConnectorState>,
    /// Whether instances come from the pooling allocator.
    pub pooled: bool,
    /// Agents already compiled and type-checked, by the SHA-256 of their
    /// bytes: a server runs the same agent again without loading it again.
    prepared: std::sync::Mutex<std::collections::HashMap<[u8; 32], std::sync::Arc<AnyAgentPre>>>,
}

/// Agents kept prepared at once (past this, the memo starts over).
const MAX_PREPARED: usize = 64;

impl Runtime {
    /// A runtime caching compiled components in `cache_dir` (`None`: no
    /// cache), with the pooling allocator when `pooling` asks for it and the
    /// machine allows it.
    pub fn new(cache_dir: Option<PathBuf>, limits: Limits, pooling: Option<engine::Pooling>) -> anyhow::Result<Self> {
        let (engine, pooled) = new_engine(pooling)?;
        let cache = ComponentCache::new(&engine, cache_dir);

        let mut agent_linker = Linker::new(&engine);
        // WASI is linked because guest toolchains import it; what a guest can
        // reach through it is set by each store's WasiCtx (nothing but output).
        wasmtime_wasi::p2::add_to_linker_async(&mut agent_linker).map_err(wasm_error)?;
        bindings::agent::Agent::add_to_linker::<_, HasSelf<AgentState>>(&mut agent_linker, |state| state)
            .map_err(wasm_error)?;
        // Agents built against an earlier release of the WIT.
        compat::v0_1_0::bindings::Agent::add_to_linker::<_, HasSelf<AgentState>>(&mut agent_linker, |state| state)
            .map_err(wasm_error)?;

        let mut connector_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut connector_linker).map_err(wasm_error)?;
        bindings::connector::Connector::add_to_linker::<_, HasSelf<ConnectorState>>(&mut connector_linker, |state| {
            state
        })
        .map_err(wasm_error)?;

        Ok(Runtime { engine, limits, cache, agent_linker, connector_linker, prepared: Default::default(), pooled })
    }

    /// Compile (or load from the cache) a component. Compiling shows as a
    /// progress step in `events`.
    pub fn load_component(&self, bytes: &[u8], label: &str, events: &EventLog) -> anyhow::Result<Component> {
        let mut progress = None;
        let (component, outcome) = self.cache.load(&self.engine, bytes, || {
            progress = Some(events.progress(format!("compiling {label}")));
        })?;
        drop(progress);
        tracing::debug!("{label}: {}", if outcome == CacheOutcome::Hit { "loaded precompiled" } else { "compiled" });
        Ok(component)
    }

    /// An agent compiled (or loaded from the cache) and type-checked, ready
    /// to instantiate; the same bytes again reuse the same `InstancePre`.
    pub fn prepare_agent(
        &self,
        bytes: &[u8],
        label: &str,
        events: &EventLog,
    ) -> anyhow::Result<std::sync::Arc<AnyAgentPre>> {
        use sha2::Digest as _;
        let key: [u8; 32] = sha2::Sha256::digest(bytes).into();
        if let Some(pre) = self.prepared.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(pre.clone());
        }
        let component = self.load_component(bytes, label, events)?;
        let pre = std::sync::Arc::new(self.agent_pre(&component)?);
        let mut prepared = self.prepared.lock().unwrap_or_else(|e| e.into_inner());
        if prepared.len() >= MAX_PREPARED {
            prepared.clear();
        }
        prepared.insert(key, pre.clone());
        Ok(pre)
    }

    /// Type-check an agent against the agent world (the current version,
    /// or an earlier one the host still runs).
    pub fn agent_pre(&self, component: &Component) -> anyhow::Result<AnyAgentPre> {
        compat::agent_pre(&self.agent_linker, component)
    }

    /// Type-check a connector against the connector world.
    pub fn connector_pre(&self, component: &Component) -> anyhow::Result<ConnectorPre<ConnectorState>> {
        let pre = self.connector_linker.instantiate_pre(component).map_err(wasm_error)?;
        ConnectorPre::new(pre).map_err(wasm_error)
    }

    /// A store with every per-store limit applied: the limiter for `limits`,
    /// the resource-table cap, and a deadline of `deadline` from now for
    /// `what` (re-arm it with [`engine::arm_deadline`] before later calls).
    pub fn new_store<T: HasStoreBase>(
        &self,
        limits: &StoreLimitsConfig,
        what: &str,
        deadline: Duration,
        data: impl FnOnce(StoreBase) -> T,
    ) -> Store<T> {
        let mut table = ResourceTable::new();
        table.set_max_capacity(limits.handles);
        let base = StoreBase { table, limiter: Limiter::new(limits.clone()) };
        let mut store = Store::new(&self.engine, data(base));
        store.limiter(|data| &mut data.base().limiter);
        arm_deadline(&mut store, what, deadline);
        store
    }
}
