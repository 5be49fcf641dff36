//! The agent's imports (`sandbox-api`, `harness`, `log`), served by the host.
//!
//! Handles the agent holds are entries in the store's resource table; each
//! points at a backend sandbox. Every file and shell call goes through a
//! [`Session`], so session semantics and events apply uniformly, whichever
//! backend serves the sandbox.

use std::sync::Arc;

use wasmtime::StoreLimits;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::backend::SandboxBackend;
use crate::bindings::agent::flue::sandbox::{harness, log, sandbox_api, types};
use crate::error::{ErrorKind, SandboxError};
use crate::paths;
use crate::run::{RunServices, SandboxSource};
use crate::session::Session;

/// The data of an agent's store.
pub struct AgentState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: StoreLimits,
    pub(crate) services: Arc<RunServices>,
}

impl WasiView for AgentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// An agent's `sandbox` handle.
pub struct AgentSandbox {
    sandbox: Arc<dyn SandboxBackend>,
}

/// An agent's `harness` handle.
pub struct AgentHarness {
    sandbox: Arc<dyn SandboxBackend>,
    cwd: String,
}

/// An agent's `session` handle.
pub struct AgentSession {
    session: Session,
    name: String,
}

type WitResult<T> = wasmtime::Result<Result<T, types::SandboxError>>;

fn wit<T>(result: Result<T, SandboxError>) -> WitResult<T> {
    Ok(result.map_err(Into::into))
}

impl AgentState {
    /// A session rooted at the sandbox's workdir: raw `sandbox` calls resolve
    /// relative paths against it.
    fn workdir_session(&self, this: &Resource<AgentSandbox>) -> wasmtime::Result<Session> {
        let sandbox = self.table.get(this)?.sandbox.clone();
        Ok(Session::new(sandbox, None, self.services.events.clone()).expect("workdir is absolute"))
    }

    fn session(&self, this: &Resource<AgentSession>) -> wasmtime::Result<Session> {
        Ok(self.table.get(this)?.session.clone())
    }
}

impl types::Host for AgentState {}
impl sandbox_api::Host for AgentState {}

impl sandbox_api::HostSandbox for AgentState {
    async fn id(&mut self, this: Resource<AgentSandbox>) -> wasmtime::Result<String> {
        Ok(self.table.get(&this)?.sandbox.id().to_string())
    }

    async fn workdir(&mut self, this: Resource<AgentSandbox>) -> wasmtime::Result<String> {
        Ok(self.table.get(&this)?.sandbox.workdir().to_string())
    }

    async fn read_file(&mut self, this: Resource<AgentSandbox>, path: String) -> WitResult<Vec<u8>> {
        wit(self.workdir_session(&this)?.read_file(&path).await)
    }

    async fn write_file(&mut self, this: Resource<AgentSandbox>, path: String, data: Vec<u8>) -> WitResult<()> {
        wit(self.workdir_session(&this)?.write_file(&path, &data).await)
    }

    async fn stat(&mut self, this: Resource<AgentSandbox>, path: String) -> WitResult<types::FileStat> {
        wit(self.workdir_session(&this)?.stat(&path).await.map(Into::into))
    }

    async fn readdir(&mut self, this: Resource<AgentSandbox>, path: String) -> WitResult<Vec<String>> {
        wit(self.workdir_session(&this)?.readdir(&path).await)
    }

    async fn exists(&mut self, this: Resource<AgentSandbox>, path: String) -> WitResult<bool> {
        wit(self.workdir_session(&this)?.exists(&path).await)
    }

    async fn mkdir(
        &mut self,
        this: Resource<AgentSandbox>,
        path: String,
        options: types::MkdirOptions,
    ) -> WitResult<()> {
        wit(self.workdir_session(&this)?.mkdir(&path, options.recursive).await)
    }

    async fn rm(&mut self, this: Resource<AgentSandbox>, path: String, options: types::RmOptions) -> WitResult<()> {
        wit(self.workdir_session(&this)?.rm(&path, options.recursive, options.force).await)
    }

    async fn exec(
        &mut self,
        this: Resource<AgentSandbox>,
        command: String,
        options: types::ExecOptions,
    ) -> WitResult<types::ExecResult> {
        wit(self.workdir_session(&this)?.exec(&command, options.into()).await.map(Into::into))
    }

    async fn drop(&mut self, this: Resource<AgentSandbox>) -> wasmtime::Result<()> {
        // Dropping a handle never deletes the sandbox: the run owns that.
        self.table.delete(this)?;
        Ok(())
    }
}

impl harness::Host for AgentState {
    async fn open_sandbox(&mut self, source: harness::SandboxSource) -> WitResult<Resource<AgentSandbox>> {
        let source = match source {
            harness::SandboxSource::RunDefault => SandboxSource::RunDefault,
            harness::SandboxSource::Create(request) => SandboxSource::Create {
                connector: request.connector,
                options: request.options.into(),
                keep: request.keep,
            },
            harness::SandboxSource::Connect(request) => {
                SandboxSource::Connect { connector: request.connector, id: request.id }
            }
        };
        match self.services.open_sandbox(source).await {
            Ok(sandbox) => Ok(Ok(self.table.push(AgentSandbox { sandbox })?)),
            Err(err) => wit(Err(err)),
        }
    }

    async fn init(
        &mut self,
        sandbox: Resource<AgentSandbox>,
        options: harness::InitOptions,
    ) -> WitResult<Resource<AgentHarness>> {
        let sandbox = self.table.get(&sandbox)?.sandbox.clone();
        let session = match Session::new(sandbox.clone(), options.cwd.as_deref(), self.services.events.clone()) {
            Ok(session) => session,
            Err(err) => return wit(Err(err)),
        };
        // Fail at init, with the reason, rather than at the first command.
        let cwd = session.cwd().to_string();
        match session.stat(".").await {
            Ok(stat) if stat.is_directory => {}
            Ok(_) => {
                return wit(Err(SandboxError::new(
                    ErrorKind::NotADirectory,
                    format!("harness cwd {cwd} is not a directory"),
                )));
            }
            Err(err) if err.kind == ErrorKind::NotFound => {
                return wit(Err(SandboxError::not_found(format!(
                    "harness cwd {cwd} does not exist in sandbox {}; create it first (e.g. session.mkdir)",
                    sandbox.id()
                ))));
            }
            Err(err) => return wit(Err(err)),
        }
        Ok(Ok(self.table.push(AgentHarness { sandbox, cwd })?))
    }
}

impl harness::HostHarness for AgentState {
    async fn cwd(&mut self, this: Resource<AgentHarness>) -> wasmtime::Result<String> {
        Ok(self.table.get(&this)?.cwd.clone())
    }

    async fn session(
        &mut self,
        this: Resource<AgentHarness>,
        name: Option<String>,
    ) -> wasmtime::Result<Resource<AgentSession>> {
        let harness = self.table.get(&this)?;
        let session = Session::new(harness.sandbox.clone(), Some(&harness.cwd), self.services.events.clone())
            .expect("harness cwd is absolute");
        let name = name.unwrap_or_else(|| "default".into());
        Ok(self.table.push(AgentSession { session, name })?)
    }

    async fn drop(&mut self, this: Resource<AgentHarness>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl harness::HostSession for AgentState {
    async fn name(&mut self, this: Resource<AgentSession>) -> wasmtime::Result<String> {
        Ok(self.table.get(&this)?.name.clone())
    }

    async fn cwd(&mut self, this: Resource<AgentSession>) -> wasmtime::Result<String> {
        Ok(self.table.get(&this)?.session.cwd().to_string())
    }

    async fn resolve_path(&mut self, this: Resource<AgentSession>, path: String) -> wasmtime::Result<String> {
        let session = &self.table.get(&this)?.session;
        Ok(paths::resolve(session.cwd(), &path).unwrap_or_else(|_| session.cwd().to_string()))
    }

    async fn shell(
        &mut self,
        this: Resource<AgentSession>,
        command: String,
        options: types::ExecOptions,
    ) -> WitResult<types::ExecResult> {
        wit(self.session(&this)?.exec(&command, options.into()).await.map(Into::into))
    }

    async fn read_file(&mut self, this: Resource<AgentSession>, path: String) -> WitResult<Vec<u8>> {
        wit(self.session(&this)?.read_file(&path).await)
    }

    async fn read_text(&mut self, this: Resource<AgentSession>, path: String) -> WitResult<String> {
        wit(self.session(&this)?.read_text(&path).await)
    }

    async fn write_file(&mut self, this: Resource<AgentSession>, path: String, data: Vec<u8>) -> WitResult<()> {
        wit(self.session(&this)?.write_file(&path, &data).await)
    }

    async fn write_text(&mut self, this: Resource<AgentSession>, path: String, text: String) -> WitResult<()> {
        wit(self.session(&this)?.write_file(&path, text.as_bytes()).await)
    }

    async fn stat(&mut self, this: Resource<AgentSession>, path: String) -> WitResult<types::FileStat> {
        wit(self.session(&this)?.stat(&path).await.map(Into::into))
    }

    async fn readdir(&mut self, this: Resource<AgentSession>, path: String) -> WitResult<Vec<String>> {
        wit(self.session(&this)?.readdir(&path).await)
    }

    async fn exists(&mut self, this: Resource<AgentSession>, path: String) -> WitResult<bool> {
        wit(self.session(&this)?.exists(&path).await)
    }

    async fn mkdir(
        &mut self,
        this: Resource<AgentSession>,
        path: String,
        options: types::MkdirOptions,
    ) -> WitResult<()> {
        wit(self.session(&this)?.mkdir(&path, options.recursive).await)
    }

    async fn rm(&mut self, this: Resource<AgentSession>, path: String, options: types::RmOptions) -> WitResult<()> {
        wit(self.session(&this)?.rm(&path, options.recursive, options.force).await)
    }

    async fn drop(&mut self, this: Resource<AgentSession>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl log::Host for AgentState {
    async fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            log::Level::Trace => "trace",
            log::Level::Debug => "debug",
            log::Level::Info => "info",
            log::Level::Warn => "warn",
            log::Level::Error => "error",
        };
        self.services.events.log("agent", level, message);
        Ok(())
    }
}
