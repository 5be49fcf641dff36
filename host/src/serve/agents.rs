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
//! sandbox-per-id = true # the run's sandbox belongs to its id (default: one per run)
//! ```
//!
//! Numbers are checked against [`super::bounds`] when the manifest is read.
//! An agent must lie inside the project: `agents/x.wasm` as a symbolic link
//! to a file elsewhere is refused (listed, with the reason, so that a request
//! for it says why), and checked again when a run reads it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::bounds;

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
    pub memory_mib: Option<u64>,
    /// Its sandbox's connector.
    pub sandbox: Option<String>,
    /// Its runs' sandbox belongs to their invocation id: kept between runs.
    #[serde(default)]
    pub sandbox_per_id: bool,
}

impl AgentManifest {
    /// Refuse numbers outside [`bounds`].
    fn check(&self, name: &str) -> Result<(), bounds::OutOfRange> {
        let key = |field: &str| format!("[agents.{name}] {field}");
        if let Some(secs) = self.deadline_secs {
            bounds::check(&key("deadline-secs"), secs, &bounds::DEADLINE_SECS, " seconds")?;
        }
        if let Some(mib) = self.memory_mib {
            bounds::check(&key("memory-mib"), mib, &bounds::MEMORY_MIB, " MiB")?;
        }
        Ok(())
    }
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
    /// A source directory or a `.wasm` file, as found under `agents/`.
    pub source: PathBuf,
    /// Its `flue.toml` settings (defaults when absent: not a webhook).
    pub manifest: AgentManifest,
    /// Why it cannot be served (it leaves the project), if so.
    pub refused: Option<String>,
}

/// Why a project's agents cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    /// `flue.toml` cannot be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The manifest.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// `flue.toml` is not valid.
    #[error("{path}: {reason}")]
    Invalid {
        /// The manifest.
        path: PathBuf,
        /// The parser's complaint.
        reason: String,
    },
    /// A number in `flue.toml` is out of range.
    #[error("{path}: {source}")]
    OutOfRange {
        /// The manifest.
        path: PathBuf,
        /// Which and why.
        source: bounds::OutOfRange,
    },
}

/// What a project directory holds.
pub struct Project {
    /// Its agents, by name.
    pub agents: HashMap<String, AgentEntry>,
    /// Agents `flue.toml` names that are not under `agents/`.
    pub missing: Vec<String>,
}

/// The agents of the project in `dir`.
pub fn discover(dir: &Path) -> Result<Project, ProjectError> {
    // Errors name it as the user knows it: no server paths in answers.
    let manifest_path = PathBuf::from("flue.toml");
    let manifest: Manifest = match std::fs::read_to_string(dir.join(&manifest_path)) {
        Ok(text) => toml::from_str(&text)
            .map_err(|err| ProjectError::Invalid { path: manifest_path.clone(), reason: err.to_string() })?,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Manifest::default(),
        Err(err) => return Err(ProjectError::Read { path: manifest_path, reason: err.to_string() }),
    };
    let mut names: Vec<&String> = manifest.agents.keys().collect();
    names.sort();
    for name in names {
        manifest.agents[name]
            .check(name)
            .map_err(|source| ProjectError::OutOfRange { path: manifest_path.clone(), source })?;
    }
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
            let refused = inside_project(dir, &path).err();
            agents.insert(name, AgentEntry { source: path, manifest, refused });
        }
    }
    let mut missing: Vec<String> = manifest.agents.into_keys().filter(|name| !agents.contains_key(name)).collect();
    missing.sort();
    Ok(Project { agents, missing })
}

/// `path` with every symbolic link resolved, if it lies inside `project`;
/// else why not (in words a client may see: no server paths).
pub fn inside_project(project: &Path, path: &Path) -> Result<PathBuf, String> {
    let shown = path.strip_prefix(project).unwrap_or(path).display().to_string();
    let root = project.canonicalize().map_err(|err| format!("cannot resolve the project directory: {err}"))?;
    let resolved = path.canonicalize().map_err(|err| format!("cannot resolve {shown}: {err}"))?;
    if resolved.starts_with(&root) {
        Ok(resolved)
    } else {
        Err(format!(
            "{shown} is (or goes through) a symbolic link to something outside the project directory; flue serves \
             only agents inside the project"
        ))
    }
}
