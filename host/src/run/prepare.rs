//! Agents made ready to run: linked against the agent world (the current
//! WIT and every earlier release the host still serves, [`super::compat`]),
//! type-checked once, and kept by the SHA-256 of their bytes (hashed once,
//! [`ComponentBytes`]), so a server runs the same agent again without
//! loading it again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use wasmtime::component::{HasSelf, Linker};

use super::compat::{self, AnyAgentPre};
use super::imports::AgentState;
use crate::bindings;
use crate::events::EventLog;
use crate::runtime::engine::wasm_error;
use crate::runtime::{ComponentBytes, Runtime};

/// Agents kept prepared at once (past this, the memo starts over).
const MAX_PREPARED: usize = 64;

/// The agent world's linker and the agents prepared with it.
pub struct AgentLinker {
    linker: Linker<AgentState>,
    prepared: Mutex<HashMap<[u8; 32], Arc<AnyAgentPre>>>,
}

impl AgentLinker {
    /// The agent imports, linked for `runtime`'s engine.
    pub fn new(runtime: &Runtime) -> anyhow::Result<Self> {
        let mut linker = Linker::new(&runtime.engine);
        // WASI is linked because guest toolchains import it; what a guest can
        // reach through it is set by each store's WasiCtx (nothing but output).
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(wasm_error)?;
        bindings::agent::Agent::add_to_linker::<_, HasSelf<AgentState>>(&mut linker, |state| state)
            .map_err(wasm_error)?;
        // Agents built against an earlier release of the WIT.
        crate::bindings::v0_1_0::Agent::add_to_linker::<_, HasSelf<AgentState>>(&mut linker, |state| state)
            .map_err(wasm_error)?;
        Ok(AgentLinker { linker, prepared: Mutex::default() })
    }

    /// An agent compiled (or loaded from the cache) and type-checked, ready
    /// to instantiate; the same bytes again reuse the same `InstancePre`.
    pub fn prepare(
        &self,
        runtime: &Runtime,
        bytes: &ComponentBytes,
        label: &str,
        events: &EventLog,
    ) -> anyhow::Result<Arc<AnyAgentPre>> {
        let key = *bytes.sha256();
        if let Some(pre) = self.prepared.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(pre.clone());
        }
        let component = runtime.load_component(bytes, label, events)?;
        let pre = Arc::new(compat::agent_pre(&self.linker, &component)?);
        let mut prepared = self.prepared.lock().unwrap_or_else(|e| e.into_inner());
        if prepared.len() >= MAX_PREPARED {
            prepared.clear();
        }
        prepared.insert(key, pre.clone());
        Ok(pre)
    }
}
