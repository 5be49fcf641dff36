//! Which agents a server exposes: `agents/<name>/` (source, any language,
//! built when stale) or `agents/<name>.wasm` in the project directory, and
//! `flue.toml`, where an agent opts in to webhooks and sets its limits:
//!
//! ```toml
//! [agents.hello]
//! webhook = true        # exposed as POST /agents/hello/<id>
//! deadline-secs = 60    # default: the server's --deadline
//! memory-mib = 256      # default: the server's --memory
//! sandbox = "local"     # default: the server's --sandbox
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// One agent's settings in `flue.toml`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AgentManifest {
    /// Exposed as a webhook.
    #[serde(default)]
    pub webhook: bool,
    /// Its deadline.
    pub deadline_secs: Option<u64>,
    /// Its memory.
    pub memory_mib: Option<usize>,
    /// Its sandbox's connector.
    pub sandbox: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    #[serde(default)]
    agents: HashMap<String, AgentManifest>,
}

/// An agent the project has.
#[derive(Clone, Debug)]
pub struct AgentEntry {
    /// A source directory or a `.wasm` file.
    pub source: PathBuf,
    /// Its `flue.toml` settings (defaults when absent: not a webhook).
    pub manifest: AgentManifest,
}

/// The agents of the project in `dir`, by name.
pub fn discover(dir: &Path) -> anyhow::Result<HashMap<String, AgentEntry>> {
    let manifest_path = dir.join("flue.toml");
    let manifest: Manifest = match std::fs::read_to_string(&manifest_path) {
        Ok(text) => toml::from_str(&text).map_err(|err| anyhow::anyhow!("{}: {err}", manifest_path.display()))?,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Manifest::default(),
        Err(err) => return Err(anyhow::anyhow!("cannot read {}: {err}", manifest_path.display())),
    };
    let mut agents = HashMap::new();
    let agents_dir = dir.join("agents");
    if let Ok(entries) = std::fs::read_dir(&agents_dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            let name = match path.extension().and_then(|e| e.to_str()) {
                Some("wasm") => path.file_stem(),
                _ if path.is_dir() => path.file_name(),
                _ => None,
            };
            let Some(name) = name.and_then(|n| n.to_str()).map(str::to_string) else { continue };
            let manifest = manifest.agents.get(&name).cloned().unwrap_or_default();
            agents.insert(name, AgentEntry { source: path, manifest });
        }
    }
    for name in manifest.agents.keys() {
        if !agents.contains_key(name) {
            tracing::warn!("flue.toml names agent {name}, but there is no agents/{name}/ or agents/{name}.wasm");
        }
    }
    Ok(agents)
}
