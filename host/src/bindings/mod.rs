//! The WIT room: host bindings generated from `wit/` for the two worlds,
//! and (in [`convert`]) every conversion between their types and flue's
//! own. The one place that knows both sides; everything else speaks native
//! types.
//!
//! The shared interfaces (`types`, `log`) are generated once, in the agent
//! world's module; the connector world reuses them through `with:`, so each
//! WIT type has one Rust type and every conversion in
//! [`convert`] is written and compiled once. Agents built against an
//! earlier release of the WIT are bound in [`v0_1_0`] (and served by
//! `run::compat`). The state behind each resource handle is in [`handles`].

pub(crate) mod convert;
pub mod handles;
pub mod v0_1_0;

/// The `agent` world: the host implements the agent's imports.
#[allow(missing_docs, reason = "generated; the WIT carries the documentation")]
pub mod agent {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "flue:sandbox/agent",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "flue:sandbox/sandbox-api.sandbox": crate::bindings::handles::AgentSandbox,
            "flue:sandbox/sandbox-api.file-reader": crate::bindings::handles::AgentReader,
            "flue:sandbox/sandbox-api.file-writer": crate::bindings::handles::AgentWriter,
            "flue:sandbox/harness.harness": crate::bindings::handles::AgentHarness,
            "flue:sandbox/harness.session": crate::bindings::handles::AgentSession,
        },
    });
}

/// The `agent-with-tools` world: an agent that also exports `tools`. Its
/// imports are the agent world's (the same Rust types); only the export is
/// new, looked up in a second instance of the agent when the model calls one
/// of the agent's tools.
#[allow(missing_docs, reason = "generated; the WIT carries the documentation")]
pub mod agent_with_tools {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "flue:sandbox/agent-with-tools",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "flue:sandbox/types": super::agent::flue::sandbox::types,
            "flue:sandbox/log": super::agent::flue::sandbox::log,
            "flue:sandbox/model": super::agent::flue::sandbox::model,
            "flue:sandbox/sandbox-api": super::agent::flue::sandbox::sandbox_api,
            "flue:sandbox/harness": super::agent::flue::sandbox::harness,
        },
    });
}

/// The `connector` world: the host implements the connector's imports and
/// calls its exports.
#[allow(missing_docs, reason = "generated; the WIT carries the documentation")]
pub mod connector {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "flue:sandbox/connector",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "flue:sandbox/types": super::agent::flue::sandbox::types,
            "flue:sandbox/log": super::agent::flue::sandbox::log,
            "flue:sandbox/http.outgoing-body": crate::bindings::handles::OutgoingBody,
            "flue:sandbox/http.response-stream": crate::bindings::handles::ResponseStream,
        },
    });
}

/// The shared `types` interface (one Rust type per WIT type).
pub use agent::flue::sandbox::types;
