//! Finding connectors by name: the built-in connectors, and every `*.wasm`
//! file in the connectors directory.
//!
//! Built-ins are registered by their `info().name`; a file is known by its
//! name (`connectors/daytona.wasm` is `daytona`) and loaded only when asked
//! for, so one bad file never stops the others, nor a run that does not use
//! it. Load failures are one line naming the file and the reason.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::events::EventLog;
use crate::runtime::Runtime;
use crate::sandbox::error::{ErrorKind, SandboxError};
use crate::sandbox::{Connector, ConnectorInfo};

/// The steps of loading a connector, each a way it can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadStep {
    /// Reading the file.
    Read,
    /// Its header: not wasm, or a core module.
    Header,
    /// Compiling it.
    Compile,
    /// Linking it against the connector world.
    Link,
    /// Instantiating it.
    Start,
    /// Calling its `info()`.
    Info,
    /// Granting what its `info()` asked for.
    Grant,
}

impl std::fmt::Display for LoadStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LoadStep::Read => "cannot read",
            LoadStep::Header => "not a component",
            LoadStep::Compile => "not a valid component",
            LoadStep::Link => "does not fit the flue:sandbox/connector world",
            LoadStep::Start => "failed to start",
            LoadStep::Info => "trapped in info()",
            LoadStep::Grant => "cannot be granted what it asks",
        })
    }
}

/// Why a connector could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The file exists but is not a usable connector.
    #[error("{}: {step}: {}", file.display(), crate::events::one_line(&format!("{source:#}"), 200))]
    Load {
        /// The connector file.
        file: PathBuf,
        /// The step of loading that failed.
        step: LoadStep,
        /// Why.
        #[source]
        source: anyhow::Error,
    },
    /// flue ships this connector (or the checkout has its source), but it
    /// is not installed in this project.
    #[error("connector {name:?} is not installed in {}: install it there with `flue add {name}` (run in the project, or with --project DIR)", dir.display())]
    NotInstalled {
        /// The name asked for.
        name: String,
        /// The connectors directory.
        dir: PathBuf,
    },
    /// No built-in and no file has this name.
    #[error("no connector named {name:?}: available are {available} (add one by dropping NAME.wasm into {})", dir.display())]
    Unknown {
        /// The name asked for.
        name: String,
        /// The names that exist.
        available: String,
        /// The connectors directory.
        dir: PathBuf,
    },
    /// A required setting is not set.
    #[error("connector {connector} needs {key}: {description} Set it in the environment or in an --env file.")]
    MissingConfig {
        /// The connector.
        connector: String,
        /// The setting.
        key: String,
        /// What the connector says it is for.
        description: String,
    },
}

impl ConnectorError {
    /// The error as an agent sees it.
    pub fn into_sandbox_error(self) -> SandboxError {
        let kind = match &self {
            ConnectorError::Unknown { .. } | ConnectorError::NotInstalled { .. } => ErrorKind::NotFound,
            ConnectorError::MissingConfig { .. } => ErrorKind::Auth,
            ConnectorError::Load { .. } => ErrorKind::Other,
        };
        SandboxError::new(kind, self.to_string())
    }
}

/// One entry of `flue connectors`.
pub struct ConnectorListing {
    /// The name it is used by.
    pub name: String,
    /// `None` for built-in connectors.
    pub file: Option<PathBuf>,
    /// What it says about itself, or why it cannot be loaded.
    pub info: Result<ConnectorInfo, ConnectorError>,
}

/// The connectors a host knows: built-ins by name, files by file name.
pub struct ConnectorRegistry {
    loader: super::wasm::ConnectorLoader,
    dir: PathBuf,
    builtins: BTreeMap<String, Arc<dyn Connector>>,
    /// Configuration values (environment and --env files); connectors see
    /// only the keys they declare.
    config: HashMap<String, String>,
    /// Whether flue can install a connector of this name (`flue add`), so
    /// a missing one is "not installed" rather than unknown.
    installable: Installable,
}

/// Whether flue can install a connector by name.
pub type Installable = Arc<dyn Fn(&str) -> bool + Send + Sync>;

impl ConnectorRegistry {
    /// A registry of `builtins` (by their `info().name`) and the `*.wasm`
    /// files in `dir`, configured from `config`.
    pub fn new(
        runtime: Arc<Runtime>,
        dir: PathBuf,
        builtins: Vec<Arc<dyn Connector>>,
        config: HashMap<String, String>,
        installable: Installable,
    ) -> anyhow::Result<Self> {
        let builtins = builtins.into_iter().map(|c| (c.info().name.clone(), c)).collect();
        let loader = super::wasm::ConnectorLoader::new(runtime)?;
        Ok(ConnectorRegistry { loader, dir, builtins, config, installable })
    }

    /// The user's configuration, as given to the builder.
    pub fn config(&self) -> &HashMap<String, String> {
        &self.config
    }

    /// The connectors directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `*.wasm` files in the connectors directory, sorted by name.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|entry| entry.path())
                    .filter(|path| path.extension().is_some_and(|ext| ext == "wasm") && path.is_file())
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }

    fn available(&self) -> String {
        let files = self.files();
        let from_files = files.iter().filter_map(|f| f.file_stem()).map(|s| s.to_string_lossy());
        self.builtins.keys().cloned().chain(from_files.map(|s| s.into_owned())).collect::<Vec<_>>().join(", ")
    }

    /// Start making the sandboxes the built-in connectors keep ready.
    pub fn start_ready(&self) {
        for connector in self.builtins.values() {
            connector.start_ready();
        }
    }

    /// Sandboxes the built-in connectors hold ready ahead.
    pub fn ready_sandboxes(&self) -> usize {
        self.builtins.values().map(|connector| connector.ready_sandboxes()).sum()
    }

    /// A connector ready for a run: a built-in, or `<dir>/<name>.wasm`
    /// instantiated with its configuration checked.
    pub async fn connector(&self, name: &str, events: &EventLog) -> Result<Arc<dyn Connector>, ConnectorError> {
        if let Some(builtin) = self.builtins.get(name) {
            return Ok(builtin.clone());
        }
        let valid_name = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        let file = self.dir.join(format!("{name}.wasm"));
        if valid_name && !file.is_file() && (self.installable)(name) {
            return Err(ConnectorError::NotInstalled { name: name.into(), dir: self.dir.clone() });
        }
        if !valid_name || !file.is_file() {
            return Err(ConnectorError::Unknown {
                name: name.into(),
                available: self.available(),
                dir: self.dir.clone(),
            });
        }
        self.connector_from_file(&file, events).await
    }

    /// A connector from any `.wasm` file, its required configuration checked.
    pub async fn connector_from_file(
        &self,
        file: &Path,
        events: &EventLog,
    ) -> Result<Arc<dyn Connector>, ConnectorError> {
        let connector = self.loader.load(file, &file_name(file), &self.config, events).await?;
        for key in connector.info().config.iter().filter(|k| k.required) {
            if !self.config.contains_key(&key.name) && key.default_value.is_none() {
                return Err(ConnectorError::MissingConfig {
                    connector: connector.info().name.clone(),
                    key: key.name.clone(),
                    description: key.description.clone(),
                });
            }
        }
        Ok(Arc::new(connector))
    }

    /// What a connector file says about itself when installed as `name`
    /// (no configuration needed).
    pub async fn inspect(&self, file: &Path, name: &str) -> Result<ConnectorInfo, ConnectorError> {
        self.loader.load(file, name, &self.config, &EventLog::discard()).await.map(|c| c.info().clone())
    }

    /// Every connector with its info or its load error: built-ins first.
    pub async fn list(&self) -> Vec<ConnectorListing> {
        let mut listings: Vec<ConnectorListing> = self
            .builtins
            .iter()
            .map(|(name, c)| ConnectorListing { name: name.clone(), file: None, info: Ok(c.info().clone()) })
            .collect();
        for file in self.files() {
            let name = file_name(&file);
            let info = self.inspect(&file, &name).await;
            listings.push(ConnectorListing { name, file: Some(file), info });
        }
        listings
    }
}

/// A connector file's name as a connector: its file stem (`daytona.wasm` is
/// `daytona`).
fn file_name(file: &Path) -> String {
    file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}
