//! Integration tests of the `flue` host: one test binary, a module per feature.
//!
//! Everything is real: the `flue` binary, wasm components built from source
//! by flue's own builder (`tests/fixtures`, `guest-examples`), `bash` and
//! bubblewrap processes, files on disk.

mod agent_tools;
mod bad_input;
mod cache;
mod connectors;
mod contract;
mod daytona;
mod daytona_server;
mod durable;
mod examples;
mod files;
mod fleet;
mod hardening;
mod hostile_build;
mod hostile_model;
mod hostile_server;
mod isolation;
mod languages;
mod lifecycle;
mod limits;
mod model;
mod portable_examples;
mod postgres;
mod ready_sandboxes;
mod resume;
mod runs_page;
mod serve;
mod subagents;
mod support;
mod volumes;
mod workspace;
