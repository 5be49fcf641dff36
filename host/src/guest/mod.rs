//! Agent sources: finding an agent by name, building it with its language's
//! toolchain, and creating new ones from templates.

pub mod build;
pub mod scaffold;
pub(crate) mod which;

pub use build::{AgentSourceError, Language, build, build_rust, detect, project_root, resolve};
