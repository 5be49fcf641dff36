//! The agent's imports (`sandbox-api`, `harness`, `log`), served by the host.
//!
//! Handles the agent holds are entries in the store's resource table; each
//! points at a backend sandbox. Every file and shell call goes through a
//! [`Session`], so session semantics and events apply uniformly, whichever
//! backend serves the sandbox.

use std::sync::Arc;

use wasmtime::component::Resource;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::sandboxes::{RunSandboxes, SandboxSource};
use crate::runtime::bindings::agent::flue::sandbox::{harness, log, sandbox_api, types};
use crate::runtime::{HasStoreBase, StoreBase};
use crate::sandbox::SandboxBackend;
use crate::sandbox::error::{ErrorKind, SandboxError};
use crate::sandbox::paths;
use crate::sandbox::session::Session;

/// The longest session name the host keeps (each handle's name lives in the
/// host, so its size is bounded like the number of handles).
const MAX_NAME_BYTES: usize = 256;

/// The data of an agent's store.
pub struct AgentState {
    pub(crate) wasi: WasiCtx,
    pub(crate) base: StoreBase,
    pub(crate) sandboxes: Arc<RunSandboxes>,
}

impl HasStoreBase for AgentState {
    fn base(&mut self) -> &mut StoreBase {
        &mut self.base
    }
}

impl WasiView for AgentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.base.table }
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
        let sandbox = self.base.table.get(this)?.sandbox.clone();
        // A sandbox's workdir is absolute, so this cannot fail.
        self.sandboxes.session(sandbox, None).map_err(wasmtime::Error::new)
    }

    fn session(&self, this: &Resource<AgentSession>) -> wasmtime::Result<Session> {
        Ok(self.base.table.get(this)?.session.clone())
    }
}

/// The file methods `sandbox` and `session` share, for a handle type and
/// the [`AgentState`] method that turns a handle into a [`Session`].
macro_rules! file_methods {
    ($handle:ty, $session:ident) => {
        async fn read_file(&mut self, this: Resource<$handle>, path: String) -> WitResult<Vec<u8>> {
            wit(self.$session(&this)?.read_file(&path).await)
        }

        async fn write_file(&mut self, this: Resource<$handle>, path: String, data: Vec<u8>) -> WitResult<()> {
            wit(self.$session(&this)?.write_file(&path, &data).await)
        }

        async fn stat(&mut self, this: Resource<$handle>, path: String) -> WitResult<types::FileStat> {
            wit(self.$session(&this)?.stat(&path).await.map(Into::into))
        }

        async fn readdir(&mut self, this: Resource<$handle>, path: String) -> WitResult<Vec<String>> {
            wit(self.$session(&this)?.readdir(&path).await)
        }

        async fn exists(&mut self, this: Resource<$handle>, path: String) -> WitResult<bool> {
            wit(self.$session(&this)?.exists(&path).await)
        }

        async fn mkdir(
            &mut self,
            this: Resource<$handle>,
            path: String,
            options: types::MkdirOptions,
        ) -> WitResult<()> {
            wit(self.$session(&this)?.mkdir(&path, options.recursive).await)
        }

        async fn rm(&mut self, this: Resource<$handle>, path: String, options: types::RmOptions) -> WitResult<()> {
            wit(self.$session(&this)?.rm(&path, options.recursive, options.force).await)
        }
    };
}

impl types::Host for AgentState {}
impl sandbox_api::Host for AgentState {}

impl sandbox_api::HostSandbox for AgentState {
    async fn id(&mut self, this: Resource<AgentSandbox>) -> wasmtime::Result<String> {
        Ok(self.base.table.get(&this)?.sandbox.id().to_string())
    }

    async fn workdir(&mut self, this: Resource<AgentSandbox>) -> wasmtime::Result<String> {
        Ok(self.base.table.get(&this)?.sandbox.workdir().to_string())
    }

    file_methods!(AgentSandbox, workdir_session);

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
        self.base.table.delete(this)?;
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
        match self.sandboxes.open_sandbox(source).await {
            Ok(sandbox) => Ok(Ok(self.base.table.push(AgentSandbox { sandbox })?)),
            Err(err) => wit(Err(err)),
        }
    }

    async fn init(
        &mut self,
        sandbox: Resource<AgentSandbox>,
        options: harness::InitOptions,
    ) -> WitResult<Resource<AgentHarness>> {
        let sandbox = self.base.table.get(&sandbox)?.sandbox.clone();
        let session = match self.sandboxes.session(sandbox.clone(), options.cwd.as_deref()) {
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
        Ok(Ok(self.base.table.push(AgentHarness { sandbox, cwd })?))
    }
}

impl harness::HostHarness for AgentState {
    async fn cwd(&mut self, this: Resource<AgentHarness>) -> wasmtime::Result<String> {
        Ok(self.base.table.get(&this)?.cwd.clone())
    }

    async fn session(
        &mut self,
        this: Resource<AgentHarness>,
        name: Option<String>,
    ) -> wasmtime::Result<Resource<AgentSession>> {
        let name = name.unwrap_or_else(|| "default".into());
        if name.len() > MAX_NAME_BYTES {
            // `session` cannot return an error in this WIT version: refuse by
            // trapping, with the reason.
            return Err(wasmtime::Error::msg(format!(
                "session name of {} bytes refused: names are at most {MAX_NAME_BYTES} bytes",
                name.len()
            )));
        }
        let harness = self.base.table.get(&this)?;
        let (sandbox, cwd) = (harness.sandbox.clone(), harness.cwd.clone());
        let session = self.sandboxes.session(sandbox, Some(&cwd)).map_err(wasmtime::Error::new)?;
        Ok(self.base.table.push(AgentSession { session, name })?)
    }

    async fn drop(&mut self, this: Resource<AgentHarness>) -> wasmtime::Result<()> {
        self.base.table.delete(this)?;
        Ok(())
    }
}

impl harness::HostSession for AgentState {
    async fn name(&mut self, this: Resource<AgentSession>) -> wasmtime::Result<String> {
        Ok(self.base.table.get(&this)?.name.clone())
    }

    async fn cwd(&mut self, this: Resource<AgentSession>) -> wasmtime::Result<String> {
        Ok(self.base.table.get(&this)?.session.cwd().to_string())
    }

    async fn resolve_path(&mut self, this: Resource<AgentSession>, path: String) -> wasmtime::Result<String> {
        let session = &self.base.table.get(&this)?.session;
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

    async fn read_text(&mut self, this: Resource<AgentSession>, path: String) -> WitResult<String> {
        wit(self.session(&this)?.read_text(&path).await)
    }

    async fn write_text(&mut self, this: Resource<AgentSession>, path: String, text: String) -> WitResult<()> {
        wit(self.session(&this)?.write_file(&path, text.as_bytes()).await)
    }

    file_methods!(AgentSession, session);

    async fn drop(&mut self, this: Resource<AgentSession>) -> wasmtime::Result<()> {
        self.base.table.delete(this)?;
        Ok(())
    }
}

impl log::Host for AgentState {
    async fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        self.sandboxes.events.log("agent", level.as_str(), message);
        Ok(())
    }
}
