//! Agent sources: finding an agent by name, building it with its language's
//! toolchain, and creating new ones from templates.

pub mod build;
mod componentize;
pub mod rust;
pub mod scaffold;
pub mod toolchains;
pub(crate) mod which;

pub use build::{AgentSourceError, Language, build, detect, project_root, resolve};
