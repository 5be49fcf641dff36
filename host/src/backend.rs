//! The seam between the host and whatever provides sandboxes.
//!
//! A [`Connector`] creates, finds and deletes sandboxes; a [`SandboxBackend`]
//! is one sandbox. The built-in `local` connector implements these natively,
//! wasm connectors implement them by calling into their component. Backends
//! see only absolute, normalised paths: session semantics (cwd, relative
//! paths, parent creation, events) live once, in [`crate::session`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use crate::error::SandboxResult;

/// A command to run, with its working directory already resolved.
#[derive(Clone, Debug)]
pub struct ExecRequest {
    pub command: String,
    /// Absolute path inside the sandbox.
    pub cwd: String,
    pub env: Vec<(String, String)>,
    pub timeout: Option<Duration>,
}

/// What a command printed and how it ended. Exit code 124 means it was killed
/// by its timeout.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ExecOutput {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
}

/// Exit code of a command killed by its timeout, as with coreutils `timeout`.
pub const TIMEOUT_EXIT_CODE: i32 = 124;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FileStat {
    pub is_file: bool,
    pub is_directory: bool,
    pub is_symlink: Option<bool>,
    pub size: Option<u64>,
    pub mtime_ms: Option<i64>,
    pub mode: Option<u32>,
}

/// Machine size of a new sandbox.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Resources {
    pub cpu: Option<u32>,
    pub memory_gib: Option<u32>,
    pub disk_gib: Option<u32>,
    pub gpu: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CreateOptions {
    pub image: Option<String>,
    pub snapshot: Option<String>,
    pub env: Vec<(String, String)>,
    pub labels: Vec<(String, String)>,
    pub name: Option<String>,
    pub auto_stop_minutes: Option<u32>,
    pub resources: Option<Resources>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SandboxSummary {
    pub id: String,
    pub name: Option<String>,
    pub state: String,
    pub labels: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConfigKey {
    pub name: String,
    pub description: String,
    pub secret: bool,
    pub required: bool,
    pub default_value: Option<String>,
}

/// What a connector says about itself (`lifecycle.info`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConnectorInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    pub config: Vec<ConfigKey>,
    pub allowed_hosts: Vec<String>,
    pub merges_output: bool,
}

/// One sandbox. Paths are absolute and normalised.
#[async_trait]
pub trait SandboxBackend: Send + Sync {
    fn id(&self) -> &str;
    /// The default working directory, absolute.
    fn workdir(&self) -> &str;
    /// Name of the connector that owns this sandbox.
    fn connector(&self) -> &str;

    async fn read_file(&self, path: &str) -> SandboxResult<Vec<u8>>;
    /// Create or replace a file. May fail with `not-found` when the parent is
    /// missing; the session layer then creates it and retries.
    async fn write_file(&self, path: &str, data: &[u8]) -> SandboxResult<()>;
    async fn stat(&self, path: &str) -> SandboxResult<FileStat>;
    async fn readdir(&self, path: &str) -> SandboxResult<Vec<String>>;
    /// `Ok(false)` for a missing path.
    async fn exists(&self, path: &str) -> SandboxResult<bool>;
    async fn mkdir(&self, path: &str, recursive: bool) -> SandboxResult<()>;
    async fn rm(&self, path: &str, recursive: bool, force: bool) -> SandboxResult<()>;
    async fn exec(&self, request: &ExecRequest) -> SandboxResult<ExecOutput>;
}

/// A provider of sandboxes.
#[async_trait]
pub trait Connector: Send + Sync {
    fn info(&self) -> &ConnectorInfo;
    /// Create a sandbox and wait until it accepts commands.
    async fn create(&self, options: &CreateOptions) -> SandboxResult<Arc<dyn SandboxBackend>>;
    async fn connect(&self, id: &str) -> SandboxResult<Arc<dyn SandboxBackend>>;
    async fn delete(&self, id: &str) -> SandboxResult<()>;
    async fn list(&self, labels: &[(String, String)]) -> SandboxResult<Vec<SandboxSummary>>;
}
