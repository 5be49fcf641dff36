//! flue: run WebAssembly agents against sandbox connectors.
//!
//! # How a run flows
//!
//! ```text
//! cli ── HostArgs ──▶ host::HostBuilder ──▶ Host { runtime, registry }
//!   flue run: guest::resolve(agent) ─▶ .wasm ─▶ Host::run ─▶ run::run_agent
//! run::run_agent ── one Store per agent (runtime::Runtime::new_store: limits, deadline)
//!   agent.wasm ──imports flue:sandbox──▶ run::imports (harness, session, sandbox-api, log)
//!     └─ sandbox::session (cwd, paths, parents, events) ─▶ dyn Sandbox
//!          ├─ sandbox::local: a directory + bash, under bubblewrap
//!          └─ connector::wasm: connector.wasm in its own Store
//!               └─ imports http/config ─▶ capability (allowed hosts, egress, secrets) ─▶ network
//!     └─ session.prompt ─▶ model (provider HTTP in the host, tools on the session)
//!   run::sandboxes owns what the run created and deletes it when the run ends
//!   journal: every host call and its answer, replayed when a run is resumed
//! events: every operation, log line and lifecycle step ─▶ EventSink (cli::render, tests)
//! ```
//!
//! Modules by role: [`cli`] (commands and presentation), [`host`] (the
//! builder), [`runtime`] (the floor: engine, limits, stores, cache, traps),
//! [`bindings`] (the WIT's types and their conversions to flue's),
//! [`run`] (one agent run), [`sandbox`] (backends, sessions, the contract
//! suite), [`connector`] (connectors by name, and wasm connectors), [`model`] (the model loop behind `session.prompt`),
//! [`serve`] (webhook agents over HTTP, and the runs page), [`capability`] (what connectors are granted),
//! [`guest`] (building agents from source, isolated), [`events`], [`config`];
//! rooms of the floor beside [`runtime`]: [`journal`] (a run's host calls,
//! recorded to resume it after a crash), [`secrets`] (filling in and
//! redacting), [`terminal`] (guest text made safe), [`which`] (programs on
//! the PATH), [`private_dir`] (directories flue trusts).

#![deny(missing_docs)]

pub mod bindings;
pub mod capability;
pub mod cli;
pub mod config;
pub mod connector;
pub mod events;
pub mod guest;
pub mod host;
pub mod journal;
#[cfg(test)]
mod layering;
pub mod model;
pub mod private_dir;
pub mod run;
pub mod runtime;
pub mod sandbox;
pub mod secrets;
pub mod serve;
pub mod terminal;
pub mod which;

pub use host::{Host, HostBuilder};
