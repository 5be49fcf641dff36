//! Agent sources: finding an agent by name, building it with its language's
//! toolchain (isolated: building runs the agent's code), and creating new
//! ones from templates.

pub mod build;
mod cache_dirs;
mod cargo_fetch;
mod componentize;
pub mod declaration;
pub(crate) mod embedded_connectors;
pub mod isolate;
pub mod rust;
pub mod scaffold;
pub mod serving;
mod source_copy;
pub mod toolchains;
mod wit;

pub use build::{AgentSourceError, BuildOptions, Language, build, built_component, detect, project_root, resolve};
pub use isolate::BuildIsolation;
pub use serving::{build_project, component_for};
pub(crate) use source_copy::never_copy;

/// Whether `flue add NAME` can install a connector of this name: its source
/// is in this checkout's `connectors/`, or built into flue.
pub fn installable_connector(name: &str) -> bool {
    project_root().join("connectors").join(name).join("Cargo.toml").is_file()
        || embedded_connectors::find(name).is_some()
}
