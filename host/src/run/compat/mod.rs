//! Earlier releases of the WIT that the host still runs agents for.
//!
//! Each released version is frozen in `host/wit-compat/`, bound in
//! [`crate::bindings`] and served here, in a
//! module of its own, the way Zed keeps its extension API versions. Its
//! imports are served by the same version-independent operations as the
//! current WIT ([`crate::run::imports`]); only the types are converted.

pub mod v0_1_0;

use wasmtime::component::{Component, Linker};

use crate::bindings::agent::AgentPre;
use crate::bindings::agent_with_tools::AgentWithToolsPre;
use crate::run::imports::AgentState;
use crate::runtime::engine::wasm_error;

/// An agent checked against one of the WIT versions the host runs.
pub enum AnyAgentPre {
    /// The current version (0.2.1, or 0.2.0, which it links by semver).
    Current {
        /// The agent world.
        agent: AgentPre<AgentState>,
        /// Its `tools` export, when it has one (the `agent-with-tools` world).
        tools: Option<AgentWithToolsPre<AgentState>>,
    },
    /// `flue:sandbox@0.1.0`.
    V0_1_0(crate::bindings::v0_1_0::AgentPre<AgentState>),
}

/// Type-check `component` against the current agent world, then the earlier
/// ones; the current version's complaint if none fits.
pub fn agent_pre(linker: &Linker<AgentState>, component: &Component) -> anyhow::Result<AnyAgentPre> {
    let current =
        linker.instantiate_pre(component).map_err(wasm_error).and_then(|pre| AgentPre::new(pre).map_err(wasm_error));
    let err = match current {
        Ok(agent) => {
            let tools = AgentWithToolsPre::new(agent.instance_pre().clone()).ok();
            return Ok(AnyAgentPre::Current { agent, tools });
        }
        Err(err) => err,
    };
    if let Ok(pre) = linker
        .instantiate_pre(component)
        .map_err(wasm_error)
        .and_then(|pre| crate::bindings::v0_1_0::AgentPre::new(pre).map_err(wasm_error))
    {
        return Ok(AnyAgentPre::V0_1_0(pre));
    }
    Err(anyhow::anyhow!(
        "not a flue agent (expected the flue:sandbox/agent world, version 0.2.1, 0.2.0 or 0.1.0): {err}"
    ))
}
