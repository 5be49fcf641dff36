//! The wasm runtime, the floor every other room builds on: one engine, the
//! component cache, limits, traps, and the one place stores are built. It
//! knows no world: the agent world is linked in `run`, the
//! connector world in `connector::wasm`.
//!
//! Every store — an agent's, a connector instance's — comes from
//! [`new_store`], which installs the [`Limiter`], caps the resource
//! table and arms the deadline. Nothing else creates stores, so no store can
//! miss a limit.

pub mod cache;
pub mod engine;
pub mod guest_output;
pub mod limits;
pub mod trap;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, ResourceTable};
use wasmtime::{Engine, Store};

use crate::events::EventLog;
use cache::{CacheOutcome, ComponentCache};
use engine::{arm_deadline, new_engine};
pub use limits::{Limiter, Limits, StoreLimitsConfig};

/// What every store's data carries for the runtime: the resource table and
/// the limiter. Built only by [`new_store`].
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

/// A component's bytes and their SHA-256, computed once: the compiled
/// cache, the prepared agents and a run's journal all name a component by
/// it. Cheap to clone.
#[derive(Clone)]
pub struct ComponentBytes {
    bytes: Arc<Vec<u8>>,
    sha256: [u8; 32],
}

impl ComponentBytes {
    /// `bytes`, hashed.
    pub fn new(bytes: Vec<u8>) -> Self {
        use sha2::Digest as _;
        let sha256 = sha2::Sha256::digest(&bytes).into();
        ComponentBytes { bytes: Arc::new(bytes), sha256 }
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Their SHA-256.
    pub fn sha256(&self) -> &[u8; 32] {
        &self.sha256
    }
}

/// The engine and the compiled-component cache.
pub struct Runtime {
    /// The one engine every component is compiled for.
    pub engine: Engine,
    /// The limits stores are built with.
    pub limits: Limits,
    cache: ComponentCache,
    /// Whether instances come from the pooling allocator.
    pub pooled: bool,
}

impl Runtime {
    /// A runtime caching compiled components in `cache_dir` (`None`: no
    /// cache), with the pooling allocator when `pooling` asks for it and the
    /// machine allows it.
    pub fn new(cache_dir: Option<PathBuf>, limits: Limits, pooling: Option<engine::Pooling>) -> anyhow::Result<Self> {
        let (engine, pooled) = new_engine(pooling)?;
        let cache = ComponentCache::new(&engine, cache_dir);

        Ok(Runtime { engine, limits, cache, pooled })
    }

    /// Compile (or load from the cache) a component. Compiling shows as a
    /// progress step in `events`.
    pub fn load_component(&self, bytes: &ComponentBytes, label: &str, events: &EventLog) -> anyhow::Result<Component> {
        let mut progress = None;
        let (component, outcome) = self.cache.load(&self.engine, bytes, || {
            progress = Some(events.progress(format!("compiling {label}")));
        })?;
        drop(progress);
        tracing::debug!("{label}: {}", if outcome == CacheOutcome::Hit { "loaded precompiled" } else { "compiled" });
        Ok(component)
    }

    /// A store with every per-store limit applied (see [`new_store`]).
    pub fn new_store<T: HasStoreBase>(
        &self,
        limits: &StoreLimitsConfig,
        what: &str,
        deadline: Duration,
        data: impl FnOnce(StoreBase) -> T,
    ) -> Store<T> {
        new_store(&self.engine, limits, what, deadline, data)
    }
}

/// A store with every per-store limit applied: the limiter for `limits`,
/// the resource-table cap, and a deadline of `deadline` from now for `what`
/// (re-arm it with [`engine::arm_deadline`] before later calls). The one
/// place stores are built.
pub fn new_store<T: HasStoreBase>(
    engine: &Engine,
    limits: &StoreLimitsConfig,
    what: &str,
    deadline: Duration,
    data: impl FnOnce(StoreBase) -> T,
) -> Store<T> {
    let mut table = ResourceTable::new();
    table.set_max_capacity(limits.handles);
    let base = StoreBase { table, limiter: Limiter::new(limits.clone()) };
    let mut store = Store::new(engine, data(base));
    store.limiter(|data| &mut data.base().limiter);
    arm_deadline(&mut store, what, deadline);
    store
}
