//! Which agents a server exposes: `agents/<name>/` (source, any language,
//! built when stale) or `agents/<name>.wasm` in the project directory, and
//! how: what the agent declares of itself (see
//! [`crate::guest::declaration`]: a `flue:agent` section in its component,
//! written from its own manifest), with the project's `flue.toml` entry over
//! it, key by key:
//!
//! ```toml
//! [agents.hello]
//! webhook = true        # exposed as POST /agents/hello/<id>
//! description = "…"     # shown by GET /agents
//! deadline-secs = 60    # default: the server's --deadline
//! memory-mib = 256      # default: the server's --memory
//! sandbox = "local"     # default: the server's --sandbox
//! sandbox-per-id = true # the run's sandbox belongs to its id (default: one per run)
//! sandbox-idle-secs = 86400 # an id's sandbox unused this long is deleted (default: a week; 0: never)
//! ```
//!
//! So an agent that declares `webhook = true` needs no `flue.toml` entry,
//! and `webhook = false` there turns it off. Numbers are checked against
//! [`super::bounds`]: `flue.toml`'s when it is read (a bad one is the
//! project's error), a declaration's per agent (a bad one refuses that
//! agent, saying why). An agent must lie inside the project:
//! `agents/x.wasm` as a symbolic link to a file elsewhere is refused
//! (listed, with the reason, so that a request for it says why), and checked
//! again when a run reads it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use serde::Deserialize;

use super::bounds;
use crate::guest::declaration::{self, AgentSettings};

/// One agent's settings, as the server applies them.
#[derive(Clone, Debug, Default)]
pub struct AgentManifest {
    /// What it does, as it (or `flue.toml`) says.
    pub description: Option<String>,
    /// Exposed as a webhook.
    pub webhook: bool,
    /// Its deadline.
    pub deadline_secs: Option<u64>,
    /// Its memory.
    pub memory_mib: Option<u64>,
    /// Its sandbox's connector.
    pub sandbox: Option<String>,
    /// Its runs' sandbox belongs to their invocation id: kept between runs.
    pub sandbox_per_id: bool,
    /// How long an id's sandbox may go unused (`None`: never deleted).
    pub sandbox_idle: Option<std::time::Duration>,
}

impl From<AgentSettings> for AgentManifest {
    fn from(settings: AgentSettings) -> Self {
        AgentManifest {
            description: settings.description,
            webhook: settings.webhook.unwrap_or(false),
            deadline_secs: settings.deadline_secs,
            memory_mib: settings.memory_mib,
            sandbox: settings.sandbox,
            sandbox_per_id: settings.sandbox_per_id.unwrap_or(false),
            sandbox_idle: crate::run::sandboxes::sandbox_idle(settings.sandbox_idle_secs),
        }
    }
}

/// Refuse numbers outside [`bounds`]; `key` names a field for the error.
fn check(settings: &AgentSettings, key: impl Fn(&str) -> String) -> Result<(), bounds::OutOfRange> {
    if let Some(secs) = settings.deadline_secs {
        bounds::check(&key("deadline-secs"), secs, &bounds::DEADLINE_SECS, " seconds")?;
    }
    if let Some(mib) = settings.memory_mib {
        bounds::check(&key("memory-mib"), mib, &bounds::MEMORY_MIB, " MiB")?;
    }
    if let Some(secs) = settings.sandbox_idle_secs {
        bounds::check(&key("sandbox-idle-secs"), secs, &bounds::SANDBOX_IDLE_SECS, " seconds")?;
    }
    Ok(())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    #[serde(default)]
    agents: HashMap<String, AgentSettings>,
}

/// An agent the project has.
#[derive(Clone, Debug)]
pub struct AgentEntry {
    /// A source directory or a `.wasm` file, as found under `agents/`.
    pub source: PathBuf,
    /// Its settings: its declaration with its `flue.toml` entry over it
    /// (neither: not a webhook).
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
        check(&manifest.agents[name], |field| format!("[agents.{name}] {field}"))
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
            let mut refused = inside_project(dir, &path).err();
            let declared = match refused {
                Some(_) => AgentSettings::default(),
                None => declared_by(&path, &name).unwrap_or_else(|why| {
                    refused = Some(why);
                    AgentSettings::default()
                }),
            };
            let settings = declared.overridden_by(&manifest.agents.get(&name).cloned().unwrap_or_default());
            agents.insert(name, AgentEntry { source: path, manifest: settings.into(), refused });
        }
    }
    let mut missing: Vec<String> = manifest.agents.into_keys().filter(|name| !agents.contains_key(name)).collect();
    missing.sort();
    Ok(Project { agents, missing })
}

/// What agent `name` at `path` declares of itself (nothing: defaults), or
/// why it cannot be served. A component's declaration is read once per
/// version of the file (by modification time and size).
fn declared_by(path: &Path, name: &str) -> Result<AgentSettings, String> {
    let declared = if path.is_dir() {
        declaration::from_source(path).map_err(|err| format!("agent {name}: {err}"))?
    } else {
        declared_by_component(path, name)?
    };
    let declared = declared.unwrap_or_default();
    check(&declared, |field| format!("agent {name} declares {field}"))
        .map_err(|err| format!("{err} (flue.toml's [agents.{name}] may set another)"))?;
    Ok(declared)
}

/// Components' declarations read before, by path: (modified, size, what it said).
type Memo = HashMap<PathBuf, (SystemTime, u64, Result<Option<AgentSettings>, String>)>;

/// The most components whose declarations are remembered.
const MAX_REMEMBERED: usize = 1024;

fn declared_by_component(path: &Path, name: &str) -> Result<Option<AgentSettings>, String> {
    static MEMO: OnceLock<Mutex<Memo>> = OnceLock::new();
    let meta = std::fs::metadata(path).map_err(|err| format!("agent {name}: cannot read its component: {err}"))?;
    let version = (meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), meta.len());
    let memo = MEMO.get_or_init(Default::default);
    if let Some((modified, len, said)) = memo.lock().unwrap_or_else(|e| e.into_inner()).get(path)
        && (*modified, *len) == version
    {
        return said.clone();
    }
    let said = match std::fs::read(path) {
        Ok(bytes) => declaration::from_component(&bytes, &format!("agent {name}")).map_err(|err| err.to_string()),
        Err(err) => Err(format!("agent {name}: cannot read its component: {err}")),
    };
    let mut memo = memo.lock().unwrap_or_else(|e| e.into_inner());
    if memo.len() >= MAX_REMEMBERED {
        memo.clear();
    }
    memo.insert(path.to_path_buf(), (version.0, version.1, said.clone()));
    said
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
