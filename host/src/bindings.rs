//! Host bindings generated from `wit/` for the two worlds.
//!
//! Each world gets its own module and its own copy of the shared `types`;
//! [`crate::convert`] maps both onto the host's native types in
//! [`crate::backend`], so the two sides stay independent.

/// The `agent` world: the host implements the agent's imports.
pub mod agent {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "flue:sandbox/agent",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "flue:sandbox/sandbox-api.sandbox": crate::agent_host::AgentSandbox,
            "flue:sandbox/harness.harness": crate::agent_host::AgentHarness,
            "flue:sandbox/harness.session": crate::agent_host::AgentSession,
        },
    });
}

/// The `connector` world: the host implements the connector's imports and
/// calls its exports.
pub mod connector {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "flue:sandbox/connector",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}
