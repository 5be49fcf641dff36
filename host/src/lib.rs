//! flue: run WebAssembly agents against sandbox connectors.
//!
//! The host loads agents (components of the `flue:sandbox/agent` world) and
//! connectors (the `connector` world), links each agent's sandbox calls to a
//! backend at run time — the built-in [`local`] sandbox or a wasm connector —
//! and applies the session semantics, limits and events in one place.

pub mod agent_host;
pub mod agent_source;
pub mod allowed_hosts;
pub mod backend;
pub mod bindings;
pub mod cache;
pub mod cli;
pub mod config;
pub mod conformance;
pub mod connector_host;
pub mod connectors;
mod convert;
pub mod engine;
pub mod error;
pub mod events;
pub mod guest_output;
pub mod http_capability;
pub mod local;
pub mod paths;
pub mod progress;
pub mod run;
pub mod runtime;
pub mod scaffold;
pub mod session;
mod which;
