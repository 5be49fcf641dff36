//! Sandboxes: the seam between the host and whatever provides them.
//!
//! A [`Connector`] creates, finds and deletes sandboxes; a [`Sandbox`]
//! is one sandbox. Built-in backends ([`local`]) implement these natively;
//! wasm connectors (`connector::wasm`, a room above this one) by calling
//! into their component, and `connector::registry` finds both by name.
//! Backends see only absolute, normalised paths: session semantics (cwd,
//! relative paths, parent creation, events) live once, in [`session`].
//!
//! A new built-in connector is a module here plus one line in
//! [`builtin_connectors`].

pub mod conformance;
pub mod error;
pub mod local;
pub mod paths;
pub mod session;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use error::{SandboxError, SandboxResult};
use local::{IsolationSetting, LocalConfig, LocalConnector};

/// Where an agent's sandbox comes from (the WIT `sandbox-source`).
#[derive(Clone, Debug)]
pub enum SandboxSource {
    /// The run's sandbox (`--sandbox`), created on first use.
    RunDefault,
    /// A new sandbox.
    Create {
        /// The connector (`None`: the run's).
        connector: Option<String>,
        /// How to create it.
        options: CreateOptions,
        /// Keep it after the run.
        keep: bool,
    },
    /// An existing sandbox, by id.
    Connect {
        /// The connector (`None`: the run's).
        connector: Option<String>,
        /// Its id.
        id: String,
    },
}

/// What the user chose for the built-in connectors (flags of `flue run` and
/// the other commands).
#[derive(Clone, Debug)]
pub struct BuiltinSettings {
    /// How `local` isolates commands.
    pub isolation: IsolationSetting,
    /// `local`: use this directory as the sandbox (`--workdir`).
    pub workdir: Option<PathBuf>,
    /// `local`: limits of a sandbox created without `resources`.
    pub limits: local::SandboxLimits,
    /// `local`: the `flue` binary, run as each isolated sandbox's supervisor
    /// (`None`: a new bubblewrap sandbox per command).
    pub supervisor: Option<PathBuf>,
    /// `local`: isolated sandboxes made ready ahead (a server's
    /// `--ready-sandboxes`, or one for `flue run`).
    pub ready_sandboxes: local::ReadyAhead,
    /// `local`: the labels of a ready sandbox until a run takes it.
    pub ready_labels: Vec<(String, String)>,
}

/// The built-in connectors, registered by name like any connector.
pub fn builtin_connectors(settings: &BuiltinSettings) -> Vec<Arc<dyn Connector>> {
    let mut local = LocalConfig::new(settings.isolation.clone());
    local.workdir = settings.workdir.clone();
    local.limits = settings.limits;
    local.supervisor = settings.supervisor.clone();
    local.ready = settings.ready_sandboxes;
    local.ready_labels = settings.ready_labels.clone();
    vec![Arc::new(LocalConnector::new(local))]
}

/// A command to run, with its working directory already resolved.
#[derive(Clone, Debug)]
pub struct ExecRequest {
    /// Shell command line.
    pub command: String,
    /// Absolute path inside the sandbox.
    pub cwd: String,
    /// Variables for this command only.
    pub env: Vec<(String, String)>,
    /// Kill the command after this long.
    pub timeout: Option<Duration>,
}

/// What a command printed and how it ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ExecOutput {
    /// Standard output (UTF-8, invalid sequences replaced).
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Exit code; 124 when killed by its timeout, 128+N when killed by signal N.
    pub exit_code: i32,
    /// Whether the command was killed by its timeout (its exit code is then
    /// [`TIMEOUT_EXIT_CODE`]; a command may also exit 124 on its own).
    pub timed_out: bool,
}

/// Exit code of a command killed by its timeout, as with coreutils `timeout`.
pub const TIMEOUT_EXIT_CODE: i32 = 124;

/// What is known about a path; unknown fields stay `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct FileStat {
    /// A regular file.
    pub is_file: bool,
    /// A directory.
    pub is_directory: bool,
    /// Whether the path itself is a symbolic link.
    pub is_symlink: Option<bool>,
    /// Size in bytes.
    pub size: Option<u64>,
    /// Last modification, milliseconds since the Unix epoch.
    pub mtime_ms: Option<i64>,
    /// Unix permission bits.
    pub mode: Option<u32>,
}

/// Machine size of a new sandbox.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Resources {
    /// CPU cores.
    pub cpu: Option<u32>,
    /// Memory, GiB.
    pub memory_gib: Option<u32>,
    /// Disk, GiB.
    pub disk_gib: Option<u32>,
    /// GPUs.
    pub gpu: Option<u32>,
}

impl Resources {
    /// Refuse sizes of zero: no sandbox runs on no CPU, memory or disk, and
    /// a zero must never read as "no limit".
    pub fn check(&self) -> SandboxResult<()> {
        let zero = [("cpu", self.cpu), ("memory-gib", self.memory_gib), ("disk-gib", self.disk_gib)]
            .into_iter()
            .find(|(_, value)| *value == Some(0));
        match zero {
            Some((name, _)) => Err(SandboxError::invalid_input(format!(
                "resources.{name} is 0: give at least 1, or leave it out for the default"
            ))),
            None => Ok(()),
        }
    }

    /// What an agent asked for, lowered to the operator's `ceiling` field by
    /// field (a field the agent left out gets the ceiling's). Ceilings may
    /// be lowered, never raised; the second value says what was lowered.
    pub fn within(asked: Option<Resources>, ceiling: Option<Resources>) -> (Option<Resources>, Vec<String>) {
        let Some(ceiling) = ceiling else { return (asked, Vec::new()) };
        let asked = asked.unwrap_or_default();
        let mut lowered = Vec::new();
        let mut lower = |what: &str, asked: Option<u32>, ceiling: Option<u32>| match (asked, ceiling) {
            (Some(wanted), Some(most)) if wanted > most => {
                lowered.push(format!("{what} {wanted} (the ceiling is {most})"));
                Some(most)
            }
            (asked, ceiling) => asked.or(ceiling),
        };
        let within = Resources {
            cpu: lower("cpu", asked.cpu, ceiling.cpu),
            memory_gib: lower("memory-gib", asked.memory_gib, ceiling.memory_gib),
            disk_gib: lower("disk-gib", asked.disk_gib, ceiling.disk_gib),
            gpu: asked.gpu,
        };
        (Some(within), lowered)
    }
}

/// How to create a sandbox (the WIT `create-options`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CreateOptions {
    /// Container image (remote backends).
    pub image: Option<String>,
    /// Snapshot to start from (remote backends).
    pub snapshot: Option<String>,
    /// Variables every command sees.
    pub env: Vec<(String, String)>,
    /// Labels to find it again with `list`.
    pub labels: Vec<(String, String)>,
    /// A human-readable name.
    pub name: Option<String>,
    /// Stop after this many idle minutes.
    pub auto_stop_minutes: Option<u32>,
    /// Machine size.
    pub resources: Option<Resources>,
    /// Volumes to mount.
    pub volumes: Vec<VolumeMount>,
}

/// A volume mounted into a new sandbox.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VolumeMount {
    /// The volume's name.
    pub volume: String,
    /// Where commands see it (absolute).
    pub mount_path: String,
    /// Mount only this directory of the volume.
    pub subpath: Option<String>,
    /// Create the volume when it does not exist.
    pub create: bool,
}

/// A volume, as a connector lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VolumeInfo {
    /// Its name.
    pub name: String,
    /// Provider state, e.g. `ready`.
    pub state: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: Option<i64>,
}

/// One sandbox, as `list` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SandboxSummary {
    /// Its id.
    pub id: String,
    /// Its name, if it has one.
    pub name: Option<String>,
    /// Provider state, e.g. `started`.
    pub state: String,
    /// Its labels.
    pub labels: Vec<(String, String)>,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: Option<i64>,
}

/// A setting a connector reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConfigKey {
    /// The variable's name, e.g. `DAYTONA_API_KEY`.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Never handed to the connector; filled into HTTP headers by the host.
    pub secret: bool,
    /// The connector cannot work without it.
    pub required: bool,
    /// Used when unset.
    pub default_value: Option<String>,
}

/// What a connector says about itself (`lifecycle.info`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConnectorInfo {
    /// Its short name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// One line about it.
    pub description: String,
    /// The settings it reads.
    pub config: Vec<ConfigKey>,
    /// Origins it may call.
    pub allowed_hosts: Vec<String>,
    /// `exec` returns stderr merged into stdout.
    pub merges_output: bool,
}

/// One sandbox. Paths are absolute and normalised.
#[async_trait]
pub trait Sandbox: Send + Sync {
    /// The provider's id.
    fn id(&self) -> &str;
    /// The default working directory, absolute.
    fn workdir(&self) -> &str;
    /// Name of the connector that owns this sandbox.
    fn connector(&self) -> &str;

    /// Read a whole file, refusing one larger than `max_bytes` (`invalid-input`)
    /// without holding more than that in memory.
    async fn read_file(&self, path: &str, max_bytes: u64) -> SandboxResult<Vec<u8>>;
    /// Create or replace a file. May fail with `not-found` when the parent is
    /// missing; the session layer then creates it and retries.
    async fn write_file(&self, path: &str, data: &[u8]) -> SandboxResult<()>;
    /// What is known about a path.
    async fn stat(&self, path: &str) -> SandboxResult<FileStat>;
    /// Entry names of a directory.
    async fn readdir(&self, path: &str) -> SandboxResult<Vec<String>>;
    /// `Ok(false)` for a missing path.
    async fn exists(&self, path: &str) -> SandboxResult<bool>;
    /// Create a directory.
    async fn mkdir(&self, path: &str, recursive: bool) -> SandboxResult<()>;
    /// Remove a path.
    async fn rm(&self, path: &str, recursive: bool, force: bool) -> SandboxResult<()>;
    /// Run a command.
    async fn exec(&self, request: &ExecRequest) -> SandboxResult<ExecOutput>;
    /// Read a file in parts, from byte `offset` on.
    async fn open_read(&self, path: &str, offset: u64) -> SandboxResult<Box<dyn FileReader>>;
    /// Create or replace a file, written in parts. May fail with `not-found`
    /// when the parent is missing, like `write_file`.
    async fn open_write(&self, path: &str) -> SandboxResult<Box<dyn FileWriter>>;
}

/// A file being read in parts.
#[async_trait]
pub trait FileReader: Send + Sync {
    /// At most `max` next bytes; empty at the end of the file.
    async fn read(&mut self, max: usize) -> SandboxResult<Vec<u8>>;
}

/// A file being written in parts; complete once `finish` returns.
#[async_trait]
pub trait FileWriter: Send + Sync {
    /// Append `data`.
    async fn write(&mut self, data: &[u8]) -> SandboxResult<()>;
    /// Complete the file.
    async fn finish(&mut self) -> SandboxResult<()>;
}

/// A provider of sandboxes.
#[async_trait]
pub trait Connector: Send + Sync {
    /// What it says about itself.
    fn info(&self) -> &ConnectorInfo;
    /// Sandboxes it holds made ready ahead, not yet handed out (the
    /// built-in `local` with `--ready-sandboxes`).
    fn ready_sandboxes(&self) -> usize {
        0
    }
    /// Start making the sandboxes it keeps ready, if any (in the
    /// background; a server calls it once it serves).
    fn start_ready(&self) {}
    /// Create a sandbox and wait until it accepts commands.
    async fn create(&self, options: &CreateOptions) -> SandboxResult<Arc<dyn Sandbox>>;
    /// Attach to an existing sandbox.
    async fn connect(&self, id: &str) -> SandboxResult<Arc<dyn Sandbox>>;
    /// Delete a sandbox.
    async fn delete(&self, id: &str) -> SandboxResult<()>;
    /// Sandboxes carrying all of `labels`.
    async fn list(&self, labels: &[(String, String)]) -> SandboxResult<Vec<SandboxSummary>>;
    /// Every volume.
    async fn list_volumes(&self) -> SandboxResult<Vec<VolumeInfo>>;
    /// Create a volume.
    async fn create_volume(&self, name: &str) -> SandboxResult<VolumeInfo>;
    /// Delete a volume.
    async fn delete_volume(&self, name: &str) -> SandboxResult<()>;
}
