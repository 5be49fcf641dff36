//! The built-in `local` sandbox: a directory on this machine, commands run
//! with `bash -c` in it, isolated with bubblewrap when available.
//!
//! Sandboxes live under a base directory as `<id>/` (the files) beside
//! `<id>.json` (name, labels, env), so a kept sandbox can be reused by id in a
//! later run. `--workdir DIR` instead uses DIR itself, which is never deleted.
//! Under bubblewrap commands see the sandbox at [`VISIBLE_ROOT`]; without it
//! they see the real directory, and the host says once that commands are not
//! isolated. Each sandbox has resource limits ([`limits`]), and an isolated
//! one a supervisor process that starts its commands ([`supervisor`]).

mod bwrap;
mod exec;
mod fs;
mod isolation;
mod limits;
mod ready;
mod sandbox_dirs;
mod seccomp;
mod supervisor;
mod volumes;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;

pub(crate) use bwrap::{BuildSandbox, build_command};
pub(crate) use fs::ConfinedRoot;
pub use isolation::{Isolation, IsolationSetting, probe_bubblewrap};
pub use limits::SandboxLimits;
pub use ready::{MAX_READY, ReadyAhead};
use ready::{Ready, ReadyPool};
pub(crate) use sandbox_dirs::ensure_private_dir;
use sandbox_dirs::{Metadata, SandboxDirs};
pub use supervisor::{SUPERVISOR_ARG, run_if_requested as run_supervisor_if_requested};
pub use volumes::default_data_dir;
use volumes::{MountSpec, Mounted, Volumes};

use crate::sandbox::error::{SandboxError, SandboxResult};
use crate::sandbox::{
    Connector, ConnectorInfo, CreateOptions, ExecOutput, ExecRequest, FileReader, FileStat, FileWriter, Sandbox,
    SandboxSummary, VolumeInfo,
};

/// Where commands see the sandbox directory when isolated.
pub const VISIBLE_ROOT: &str = "/workspace";
/// Default cap per output stream of one command.
pub const DEFAULT_OUTPUT_CAP: usize = 8 * 1024 * 1024;

/// Settings of the local connector. The defaults are the safe ones: isolated
/// when bubblewrap works, no network, sandboxes in the system temp directory.
#[derive(Clone, Debug)]
pub struct LocalConfig {
    /// Where sandboxes are created (default: `$TMPDIR/flue-local`).
    pub base_dir: PathBuf,
    /// Use this directory as the sandbox instead of a fresh one.
    pub workdir: Option<PathBuf>,
    /// How commands are isolated.
    pub isolation: IsolationSetting,
    /// Bytes kept per output stream of one command.
    pub output_cap: usize,
    /// Where isolated commands see the sandbox (default [`VISIBLE_ROOT`]).
    pub visible_root: String,
    /// Where volumes live (default: `volumes/` in [`default_data_dir`]).
    pub volumes_dir: PathBuf,
    /// Limits of a sandbox created without `resources` (which override them).
    pub limits: SandboxLimits,
    /// The `flue` binary, run inside each isolated sandbox as its supervisor
    /// (one process per sandbox that starts every command: a command costs a
    /// fork, not new namespaces). `None`: a new bubblewrap sandbox per command.
    pub supervisor: Option<PathBuf>,
    /// Isolated sandboxes made ready ahead, supervisor started ([`ready`]).
    /// Only with a supervisor.
    pub ready: ReadyAhead,
    /// The labels a ready sandbox carries until a run takes it (who made
    /// it, so that `flue sandboxes gc` deletes what a crash left).
    pub ready_labels: Vec<(String, String)>,
}

impl LocalConfig {
    /// The defaults, with `isolation`.
    pub fn new(isolation: impl Into<IsolationSetting>) -> Self {
        LocalConfig {
            base_dir: std::env::temp_dir().join("flue-local"),
            workdir: None,
            isolation: isolation.into(),
            output_cap: DEFAULT_OUTPUT_CAP,
            visible_root: VISIBLE_ROOT.into(),
            volumes_dir: default_data_dir().join("volumes"),
            limits: SandboxLimits::default(),
            supervisor: None,
            ready: ReadyAhead::None,
            ready_labels: Vec::new(),
        }
    }
}

/// The built-in `local` connector.
pub struct LocalConnector {
    config: LocalConfig,
    info: ConnectorInfo,
    dirs: Arc<SandboxDirs>,
    volumes: Volumes,
    warned_unisolated: AtomicBool,
    /// Sandboxes made ready ahead ([`ready`]), when asked for.
    ready: Option<Arc<ReadyPool>>,
}

impl LocalConnector {
    /// A connector with `config`. Ready sandboxes, if asked for, are made
    /// in the background once [`Connector::start_ready`] is called.
    pub fn new(config: LocalConfig) -> Self {
        let mut connector = Self::without_ready(config.clone());
        if config.ready != ReadyAhead::None && config.supervisor.is_some() && config.workdir.is_none() {
            let maker = Arc::new(Self::without_ready(config.clone()));
            let make: ready::Make = Arc::new(move || {
                let maker = maker.clone();
                Box::pin(async move { maker.make_ready().await })
            });
            connector.ready = ReadyPool::new(config.ready, make, connector.dirs.clone());
        }
        connector
    }

    /// One ready sandbox: created with the default limits and its
    /// supervisor started (isolated only: otherwise there is nothing to
    /// start ahead).
    async fn make_ready(&self) -> SandboxResult<Ready> {
        if !self.config.isolation.get().await.is_isolated() {
            return Err(SandboxError::new(
                crate::sandbox::error::ErrorKind::Unsupported,
                "sandboxes are made ready only when isolated",
            ));
        }
        let metadata = Metadata {
            labels: self.config.ready_labels.clone(),
            limits: Some(self.config.limits),
            ..Metadata::default()
        };
        let id = new_sandbox_id();
        let root = self.dirs.create(&id, &metadata)?;
        // Deleted unless made whole: on an error, and when the server stops
        // (or the pool goes) while it is being made.
        let unfinished = ready::DeleteUnlessKept::new(self.dirs.clone(), id.clone());
        let sandbox = self.open(id, root, metadata.clone()).await?;
        sandbox.runner.warm().await?;
        unfinished.keep();
        Ok(Ready { sandbox, metadata })
    }

    fn without_ready(config: LocalConfig) -> Self {
        let info = ConnectorInfo {
            name: "local".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "A directory on this machine; commands run with bash, isolated by bubblewrap when available"
                .into(),
            config: Vec::new(),
            allowed_hosts: Vec::new(),
            merges_output: false,
        };
        let dirs = Arc::new(SandboxDirs::new(config.base_dir.clone()));
        let volumes = Volumes::new(config.volumes_dir.clone());
        LocalConnector { config, info, dirs, volumes, warned_unisolated: AtomicBool::new(false), ready: None }
    }

    fn warn_once_if_unisolated(&self, isolation: &Isolation) {
        if !isolation.is_isolated() && !self.warned_unisolated.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "local sandbox is NOT isolated: commands run as your user with access to this machine's files and \
                 network (install bubblewrap, e.g. `apt-get install bubblewrap`, for isolation)"
            );
        }
    }

    async fn open(&self, id: String, root: PathBuf, metadata: Metadata) -> SandboxResult<LocalSandbox> {
        let isolation = self.config.isolation.get().await;
        self.warn_once_if_unisolated(&isolation);
        let confined = ConfinedRoot::open(&root)
            .map_err(|err| SandboxError::other(format!("cannot open sandbox directory {}: {err}", root.display())))?;
        let visible_root = if isolation.is_isolated() {
            self.config.visible_root.clone()
        } else {
            // Commands see the real directory: name it the way resolved
            // paths will (absolute, no `//`, `.` or symlinks), or no path
            // would ever be found under it.
            root.canonicalize()
                .map_err(|err| SandboxError::other(format!("cannot resolve {}: {err}", root.display())))?
                .to_string_lossy()
                .into_owned()
        };
        let opened = self.volumes.open(&metadata.mounts)?;
        let Placed { binds, views } = self.place_mounts(&confined, &visible_root, &isolation, &opened)?;
        let mut mounted_fs = Vec::new();
        // The file API reaches each volume directly, confined to the
        // directory that was resolved safely.
        for (visible, mount) in views {
            let confined = ConfinedRoot::from_dir(&mount.dir).map_err(|err| {
                SandboxError::other(format!("cannot open volume directory {}: {err}", mount.host.display()))
            })?;
            mounted_fs.push((visible, Arc::new(confined)));
        }
        // Longest first: a path goes to the innermost mount that holds it.
        mounted_fs.sort_by_key(|(visible, _)| std::cmp::Reverse(visible.len()));
        // A kept sandbox reopened under lower ceilings gets the lower ones.
        let limits = metadata.limits.map_or(self.config.limits, |kept| kept.lowest(&self.config.limits));
        let isolated = isolation.is_isolated();
        let enforced = limits::enforce(&id, &limits, isolated);
        let place = exec::Place { root, visible_root: visible_root.clone(), mounts: binds };
        let runner = exec::Runner::new(
            isolation,
            self.config.supervisor.clone(),
            place,
            self.config.output_cap,
            limits,
            enforced,
        );
        Ok(LocalSandbox {
            id,
            visible_root,
            confined: Arc::new(confined),
            mounts: mounted_fs,
            env: metadata.env,
            runner,
        })
    }
}

/// Where isolated commands see the volumes mounted inside the sandbox
/// directory: `VOLUME_LINKS/<n>` is a path in bubblewrap's own fresh root,
/// out of every command's reach.
const VOLUME_LINKS: &str = "/run/flue/volumes";

/// Where a sandbox's volumes appear.
struct Placed {
    /// The bind mounts bubblewrap makes (isolated only).
    binds: Vec<Mounted>,
    /// Each path the file API finds a volume at.
    views: Vec<(String, Mounted)>,
}

impl LocalConnector {
    /// Where each volume appears: the bind mounts bubblewrap makes, and the
    /// paths the file API finds each volume at.
    ///
    /// A volume mounted inside the sandbox (under its root, e.g.
    /// `/workspace/data`) is a symbolic link there, placed through the
    /// confined root: isolated, to where bubblewrap mounts it
    /// ([`VOLUME_LINKS`]); unisolated, to its directory. bubblewrap never
    /// resolves a mount point through the sandbox directory, where a command
    /// may have planted links. A volume mounted outside (`/data`) is bound
    /// there, in bubblewrap's fresh root (isolated only).
    fn place_mounts(
        &self,
        confined: &ConfinedRoot,
        visible_root: &str,
        isolation: &Isolation,
        mounts: &[Mounted],
    ) -> SandboxResult<Placed> {
        let (mut binds, mut views) = (Vec::new(), Vec::new());
        let base = self.config.base_dir.canonicalize().ok();
        for (n, mount) in mounts.iter().enumerate() {
            // Unisolated, every local sandbox has its own real path: a mount
            // path in any of them (or under the isolated view's root) means
            // the same place in this one.
            let in_any_sandbox = || {
                let base = base.as_ref()?.to_string_lossy().into_owned();
                crate::sandbox::paths::strip_root(&base, &mount.visible)?.split_once('/').map(|(_, rest)| rest)
            };
            let inside = crate::sandbox::paths::strip_root(&self.config.visible_root, &mount.visible)
                .or_else(|| crate::sandbox::paths::strip_root(visible_root, &mount.visible))
                .or_else(|| if isolation.is_isolated() { None } else { in_any_sandbox() });
            match inside {
                Some("") => {
                    return Err(SandboxError::invalid_input(format!(
                        "a volume cannot be mounted at the sandbox root {}: mount it at a directory inside it, \
                         e.g. {}/data",
                        mount.visible, self.config.visible_root
                    )));
                }
                Some(rel) => {
                    let target = if isolation.is_isolated() {
                        let at = format!("{VOLUME_LINKS}/{n}");
                        binds.push(Mounted { visible: at.clone(), ..mount.clone() });
                        at
                    } else {
                        mount.host.to_string_lossy().into_owned()
                    };
                    confined.place_link(rel, &target).map_err(|err| {
                        SandboxError::from_io(
                            &err,
                            &format!("cannot place volume {} at {}", mount.host.display(), mount.visible),
                        )
                    })?;
                    views.push((format!("{visible_root}/{rel}"), mount.clone()));
                    if visible_root != self.config.visible_root {
                        views.push((mount.visible.clone(), mount.clone()));
                    }
                }
                None if isolation.is_isolated() => {
                    binds.push(mount.clone());
                    views.push((mount.visible.clone(), mount.clone()));
                }
                None => {
                    return Err(SandboxError::new(
                        crate::sandbox::error::ErrorKind::Unsupported,
                        format!(
                            "without isolation a volume can only be mounted inside the sandbox (under {}), not at \
                             {}: install bubblewrap, or mount it under {}",
                            self.config.visible_root, mount.visible, self.config.visible_root
                        ),
                    ));
                }
            }
        }
        Ok(Placed { binds, views })
    }
}

/// A fresh sandbox id, like `local-1a2b3c4d5e6f`.
fn new_sandbox_id() -> String {
    format!("local-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

fn io_error(context: &str, path: &Path, err: std::io::Error) -> SandboxError {
    SandboxError::other(format!("{context} {}: {err}", path.display()))
}

#[async_trait]
impl Connector for LocalConnector {
    fn info(&self) -> &ConnectorInfo {
        &self.info
    }

    fn ready_sandboxes(&self) -> usize {
        self.ready.as_ref().map_or(0, |pool| pool.ready())
    }

    fn start_ready(&self) {
        if let Some(pool) = &self.ready {
            pool.fill();
        }
    }

    async fn create(&self, options: &CreateOptions) -> SandboxResult<Arc<dyn Sandbox>> {
        if options.image.is_some()
            || options.snapshot.is_some()
            || options.resources.as_ref().is_some_and(|r| r.gpu.is_some())
        {
            tracing::warn!("the local sandbox ignores image, snapshot and gpu: commands use this machine's system");
        }
        if let Some(resources) = &options.resources {
            resources.check()?;
        }
        let (limits, capped) = self.config.limits.within(options.resources.as_ref());
        if !capped.is_empty() {
            tracing::warn!(
                "a sandbox asked for {}: it gets the ceiling (raise it with --memory-gib, --cpus or --disk-gib)",
                capped.join(", ")
            );
        }
        let metadata = Metadata {
            name: options.name.clone(),
            labels: options.labels.clone(),
            env: options.env.clone(),
            limits: Some(limits),
            mounts: self.volumes.specs(&options.volumes, &self.config.visible_root)?,
        };
        if let Some(dir) = &self.config.workdir {
            std::fs::create_dir_all(dir).map_err(|err| io_error("cannot create", dir, err))?;
            let dir = dir.canonicalize().map_err(|err| io_error("cannot resolve", dir, err))?;
            return Ok(Arc::new(self.open("local-workdir".into(), dir, metadata).await?));
        }
        // A plain request takes a sandbox made ready ahead, if one is.
        let plain = metadata.env.is_empty() && metadata.mounts.is_empty() && limits == self.config.limits;
        if let Some(pool) = self.ready.as_ref().filter(|_| plain)
            && let Some(sandbox) = pool.take(&metadata).await
        {
            return Ok(Arc::new(sandbox));
        }
        let id = new_sandbox_id();
        let root = self.dirs.create(&id, &metadata)?;
        Ok(Arc::new(self.open(id, root, metadata).await?))
    }

    async fn connect(&self, id: &str) -> SandboxResult<Arc<dyn Sandbox>> {
        let (root, metadata) = self.dirs.open(id)?;
        Ok(Arc::new(self.open(id.to_string(), root, metadata).await?))
    }

    async fn delete(&self, id: &str) -> SandboxResult<()> {
        if id == "local-workdir" {
            // The user's own directory: never ours to delete.
            return Ok(());
        }
        self.dirs.delete(id)
    }

    async fn list(&self, labels: &[(String, String)]) -> SandboxResult<Vec<SandboxSummary>> {
        Ok(self
            .dirs
            .list()
            .into_iter()
            .filter(|(_, metadata)| labels.iter().all(|wanted| metadata.labels.contains(wanted)))
            .map(|(id, metadata)| SandboxSummary {
                created_ms: self.dirs.created_ms(&id),
                id,
                name: metadata.name,
                state: "started".into(),
                labels: metadata.labels,
            })
            .collect())
    }

    async fn list_volumes(&self) -> SandboxResult<Vec<VolumeInfo>> {
        self.volumes.list()
    }

    async fn create_volume(&self, name: &str) -> SandboxResult<VolumeInfo> {
        self.volumes.create(name)
    }

    async fn delete_volume(&self, name: &str) -> SandboxResult<()> {
        self.volumes.delete(name)
    }
}

/// A local file being read.
struct LocalReader {
    file: tokio::fs::File,
    path: String,
}

#[async_trait]
impl FileReader for LocalReader {
    async fn read(&mut self, max: usize) -> SandboxResult<Vec<u8>> {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; max];
        let mut filled = 0;
        // Fill the buffer (short reads happen), stopping at the end.
        while filled < max {
            match self.file.read(&mut buf[filled..]).await {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(err) => return Err(SandboxError::from_io(&err, &self.path)),
            }
        }
        buf.truncate(filled);
        Ok(buf)
    }
}

/// A local file being written, within the sandbox's file size limit.
struct LocalWriter {
    file: tokio::fs::File,
    path: String,
    written: u64,
    max_bytes: u64,
}

/// The refusal of a write past the sandbox's file size limit (`disk-gib`),
/// which binds the file API as `RLIMIT_FSIZE` binds commands.
fn past_file_limit(path: &str, size: u64, max_bytes: u64) -> SandboxResult<()> {
    if size <= max_bytes {
        return Ok(());
    }
    Err(SandboxError::new(
        crate::sandbox::error::ErrorKind::TooLarge,
        format!(
            "{path}: writing it would make a file larger than this sandbox's file size limit of {} (disk-gib)",
            limits::bytes(max_bytes)
        ),
    ))
}

#[async_trait]
impl FileWriter for LocalWriter {
    async fn write(&mut self, data: &[u8]) -> SandboxResult<()> {
        use tokio::io::AsyncWriteExt;
        let size = self.written.saturating_add(data.len() as u64);
        past_file_limit(&self.path, size, self.max_bytes)?;
        self.file.write_all(data).await.map_err(|err| SandboxError::from_io(&err, &self.path))?;
        self.written = size;
        Ok(())
    }

    async fn finish(&mut self) -> SandboxResult<()> {
        use tokio::io::AsyncWriteExt;
        self.file.flush().await.map_err(|err| SandboxError::from_io(&err, &self.path))
    }
}

/// One local sandbox: a directory, and how its commands run.
pub struct LocalSandbox {
    id: String,
    visible_root: String,
    confined: Arc<ConfinedRoot>,
    /// Volumes, by where commands see them (innermost first).
    mounts: Vec<(String, Arc<ConfinedRoot>)>,
    env: Vec<(String, String)>,
    runner: exec::Runner,
}

impl LocalSandbox {
    /// The part of `path` under the sandbox root, or a clear refusal.
    fn relative<'a>(&self, path: &'a str) -> SandboxResult<&'a str> {
        crate::sandbox::paths::strip_root(&self.visible_root, path).ok_or_else(|| {
            SandboxError::permission_denied(format!(
                "{path} is outside the sandbox root {}: the local sandbox's files live under it",
                self.visible_root
            ))
        })
    }

    /// The confined root that holds `path` (a volume's, or the sandbox's)
    /// and the part of `path` under it.
    fn locate<'a>(&self, path: &'a str) -> SandboxResult<(Arc<ConfinedRoot>, &'a str)> {
        for (visible, confined) in &self.mounts {
            if let Some(rel) = crate::sandbox::paths::strip_root(visible, path) {
                return Ok((confined.clone(), rel));
            }
        }
        Ok((self.confined.clone(), self.relative(path)?))
    }

    /// Run a blocking confined-filesystem call off the async runtime.
    async fn with_fs<T: Send + 'static>(
        &self,
        path: &str,
        op: impl FnOnce(&ConfinedRoot, &str) -> std::io::Result<T> + Send + 'static,
    ) -> SandboxResult<T> {
        let (confined, rel) = self.locate(path)?;
        let rel = rel.to_string();
        let shown = path.to_string();
        tokio::task::spawn_blocking(move || op(&confined, &rel))
            .await
            .map_err(|err| SandboxError::other(format!("file operation failed: {err}")))?
            .map_err(|err| SandboxError::from_io(&err, &shown))
    }
}

#[async_trait]
impl Sandbox for LocalSandbox {
    fn id(&self) -> &str {
        &self.id
    }

    fn workdir(&self) -> &str {
        &self.visible_root
    }

    fn connector(&self) -> &str {
        "local"
    }

    async fn read_file(&self, path: &str, max_bytes: u64) -> SandboxResult<Vec<u8>> {
        self.with_fs(path, move |fs, rel| fs.read(rel, max_bytes)).await
    }

    async fn write_file(&self, path: &str, data: &[u8]) -> SandboxResult<()> {
        past_file_limit(path, data.len() as u64, self.runner.limits.file_size_bytes)?;
        let data = data.to_vec();
        self.with_fs(path, move |fs, rel| fs.write(rel, &data)).await
    }

    async fn stat(&self, path: &str) -> SandboxResult<FileStat> {
        self.with_fs(path, |fs, rel| fs.stat(rel)).await
    }

    async fn readdir(&self, path: &str) -> SandboxResult<Vec<String>> {
        self.with_fs(path, |fs, rel| fs.readdir(rel)).await
    }

    async fn exists(&self, path: &str) -> SandboxResult<bool> {
        if self.locate(path).is_err() {
            return Ok(false);
        }
        self.with_fs(path, |fs, rel| match fs.stat(rel) {
            Ok(_) => Ok(true),
            Err(err) if matches!(err.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => {
                Ok(false)
            }
            Err(err) => Err(err),
        })
        .await
    }

    async fn mkdir(&self, path: &str, recursive: bool) -> SandboxResult<()> {
        // The sandbox's root, or a volume's: there already.
        if self.locate(path)?.1.is_empty() {
            return if recursive {
                Ok(())
            } else {
                Err(SandboxError::new(crate::sandbox::error::ErrorKind::AlreadyExists, format!("{path}: File exists")))
            };
        }
        self.with_fs(path, move |fs, rel| fs.mkdir(rel, recursive)).await
    }

    async fn rm(&self, path: &str, recursive: bool, force: bool) -> SandboxResult<()> {
        if self.locate(path)?.1.is_empty() {
            return Err(SandboxError::permission_denied(format!(
                "refusing to remove {path}: it is the sandbox's root, or where a volume is mounted"
            )));
        }
        match self.with_fs(path, move |fs, rel| fs.rm(rel, recursive)).await {
            Err(err) if force && err.kind == crate::sandbox::error::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    async fn open_read(&self, path: &str, offset: u64) -> SandboxResult<Box<dyn FileReader>> {
        let file = self.with_fs(path, move |fs, rel| fs.open_read(rel, offset)).await?;
        Ok(Box::new(LocalReader { file: tokio::fs::File::from_std(file), path: path.to_string() }))
    }

    async fn open_write(&self, path: &str) -> SandboxResult<Box<dyn FileWriter>> {
        let file = self.with_fs(path, |fs, rel| fs.create(rel)).await?;
        Ok(Box::new(LocalWriter {
            file: tokio::fs::File::from_std(file),
            path: path.to_string(),
            written: 0,
            max_bytes: self.runner.limits.file_size_bytes,
        }))
    }

    async fn exec(&self, request: &ExecRequest) -> SandboxResult<ExecOutput> {
        // A missing working directory inside the sandbox gets a clear error
        // rather than bubblewrap's or the shell's.
        if self.locate(&request.cwd).is_ok() {
            let stat = self
                .with_fs(&request.cwd, |fs, rel| fs.stat(rel))
                .await
                .map_err(|err| SandboxError::new(err.kind, format!("working directory {}", err.message)))?;
            if !stat.is_directory {
                return Err(SandboxError::new(
                    crate::sandbox::error::ErrorKind::NotADirectory,
                    format!("working directory {} is not a directory", request.cwd),
                ));
            }
        }
        let mut env = self.env.clone();
        env.extend(request.env.iter().cloned());
        self.runner
            .run(exec::CommandSpec {
                command: &request.command,
                cwd: &request.cwd,
                env: &env,
                timeout: request.timeout,
            })
            .await
    }
}
