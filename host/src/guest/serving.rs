//! What `flue serve` and `flue dev` run for a project's agent.
//!
//! `flue dev` is the development loop: it builds an agent's source when it
//! changed, isolated as every build is. `flue serve` is deployment: it runs
//! prebuilt components only — `agents/<name>.wasm`, or the component flue
//! built from `agents/<name>/` before (`flue build`, or `flue serve
//! --build`, which builds every source agent once, at start) — so that
//! serving never runs an agent's build scripts unasked.

use std::path::{Path, PathBuf};

use super::build::{AgentSourceError, build, built_component, detect, sources_changed_since};
use crate::events::{EventLog, LogLevel};

/// The component to run for `source` (a `.wasm` file or an agent's
/// directory): built when stale if `build`, else the one built before.
pub fn component_for(source: &Path, build_stale: bool, events: &EventLog) -> Result<PathBuf, AgentSourceError> {
    if !source.is_dir() {
        return Ok(source.to_path_buf());
    }
    if build_stale {
        return build(source, events);
    }
    let built = built_component(source)?.ok_or_else(|| AgentSourceError::NotBuilt { dir: source.into() })?;
    if sources_changed_since(source, &built) {
        events.log(
            "flue",
            LogLevel::Warn,
            format!(
                "{} changed since it was built; serving the earlier build (run `flue build {}`, or restart with \
                 --build)",
                source.display(),
                source.display()
            ),
        );
    }
    Ok(built)
}

/// Build every agent source in `project/agents/` (for `flue serve
/// --build`); returns how many there were.
pub fn build_project(project: &Path, events: &EventLog) -> Result<usize, AgentSourceError> {
    let agents = project.join("agents");
    let mut sources: Vec<PathBuf> = match std::fs::read_dir(&agents) {
        Ok(entries) => entries.flatten().map(|e| e.path()).filter(|p| p.is_dir() && detect(p).is_some()).collect(),
        Err(_) => Vec::new(),
    };
    sources.sort();
    for source in &sources {
        build(source, events)?;
    }
    Ok(sources.len())
}
