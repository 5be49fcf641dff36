//! Connectors by name: the [`registry`] of built-in connectors and `*.wasm`
//! files, and [`wasm`], the [`crate::sandbox::Connector`] implementation
//! that calls a connector component.
//!
//! This room sits above [`crate::sandbox`] (the native seam every backend
//! implements) and [`crate::capability`] (what a component is granted), so
//! neither of them needs to know that connectors can be components.

pub mod registry;
pub mod wasm;
