//! The agent's imports (`sandbox-api`, `harness`, `log`), served by the host.
//!
//! Handles the agent holds are entries in the store's resource table; each
//! points at a backend sandbox. Every file and shell call goes through a
//! [`Session`], so session semantics and events apply uniformly, whichever
//! backend serves the sandbox.
//!
//! The work is done by version-independent methods on [`AgentState`], in
//! the host's own types; the trait impls below adapt them to the current
//! WIT, and [`crate::run::compat`] to earlier releases.

use std::sync::Arc;

use wasmtime::component::Resource;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::conversations::RunConversations;
use super::sandboxes::RunSandboxes;
use crate::bindings::agent::flue::sandbox::{harness, log, model, sandbox_api, types};
use crate::bindings::handles::{AgentHarness, AgentReader, AgentSandbox, AgentSession, AgentWriter};
use crate::journal::{self, Journal, JournalError};
use crate::model::PromptRequest;
use crate::runtime::{HasStoreBase, StoreBase};
use crate::sandbox::error::{ErrorKind, SandboxError, SandboxResult};
use crate::sandbox::paths;
use crate::sandbox::session::Session;
use crate::sandbox::{Sandbox, SandboxSource};

/// The longest session or harness name the host keeps (each handle's name
/// lives in the host, so its size is bounded like the number of handles).
pub(crate) const MAX_NAME_BYTES: usize = 256;

/// The data of an agent's store.
pub struct AgentState {
    pub(crate) wasi: WasiCtx,
    pub(crate) base: StoreBase,
    pub(crate) sandboxes: Arc<RunSandboxes>,
    /// Where sessions' conversations are kept between runs, if they are.
    pub(crate) conversations: Option<RunConversations>,
    /// The run's journal, if it keeps one: host calls are recorded there,
    /// or answered from it while a resumed run replays.
    pub(crate) journal: Option<Arc<Journal>>,
    /// Runs the agent's own tools, when it exports them (never in the
    /// tool handler's own store: a handler gives no tools of its own).
    pub(crate) agent_tools: Option<super::agent_tools::AgentToolsHost>,
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

/// A name the host will keep, or why not.
fn checked_name(name: Option<String>, what: &str) -> SandboxResult<String> {
    let name = name.unwrap_or_else(|| "default".into());
    if name.len() > MAX_NAME_BYTES {
        return Err(SandboxError::invalid_input(format!(
            "{what} name of {} bytes refused: names are at most {MAX_NAME_BYTES} bytes",
            name.len()
        )));
    }
    Ok(name)
}

/// Version-independent operations, in the host's types. A `wasmtime::Result`
/// error is a trap (a bad handle); the inner result is the agent's answer.
impl AgentState {
    /// A session rooted at the sandbox's workdir: raw `sandbox` calls resolve
    /// relative paths against it.
    pub(crate) fn workdir_session(&self, this: &Resource<AgentSandbox>) -> wasmtime::Result<Session> {
        let sandbox = self.base.table.get(this)?.sandbox.clone();
        // A sandbox's workdir is absolute, so this cannot fail.
        self.sandboxes.session(sandbox, None).map_err(wasmtime::Error::new)
    }

    pub(crate) fn session(&self, this: &Resource<AgentSession>) -> wasmtime::Result<Session> {
        Ok(self.base.table.get(this)?.session.clone())
    }

    pub(crate) fn sandbox_id(&self, this: &Resource<AgentSandbox>) -> wasmtime::Result<String> {
        Ok(self.base.table.get(this)?.sandbox.id().to_string())
    }

    pub(crate) fn sandbox_workdir(&self, this: &Resource<AgentSandbox>) -> wasmtime::Result<String> {
        Ok(self.base.table.get(this)?.sandbox.workdir().to_string())
    }

    pub(crate) async fn open(
        &mut self,
        source: SandboxSource,
    ) -> wasmtime::Result<SandboxResult<Resource<AgentSandbox>>> {
        let journal = self.journal.clone();
        match open_journaled(&self.sandboxes, journal.as_deref(), source).await? {
            Ok(sandbox) => Ok(Ok(self.base.table.push(AgentSandbox { sandbox })?)),
            Err(err) => Ok(Err(err)),
        }
    }

    pub(crate) async fn init_harness(
        &mut self,
        sandbox: &Resource<AgentSandbox>,
        cwd: Option<String>,
        model: Option<String>,
        id: Option<String>,
    ) -> wasmtime::Result<SandboxResult<Resource<AgentHarness>>> {
        let sandbox = self.base.table.get(sandbox)?.sandbox.clone();
        let id = match checked_name(id, "harness") {
            Ok(id) => id,
            Err(err) => return Ok(Err(err)),
        };
        let session = match self.sandboxes.session(sandbox.clone(), cwd.as_deref()) {
            Ok(session) => session,
            Err(err) => return Ok(Err(err)),
        };
        // Fail at init, with the reason, rather than at the first command.
        let cwd = session.cwd().to_string();
        let key = || journal::key("harness-cwd", &[sandbox.id().as_bytes(), cwd.as_bytes()]);
        let journal = self.journal.clone();
        match journaled(journal.as_deref(), key, session.stat(".")).await? {
            Ok(stat) if stat.is_directory => {}
            Ok(_) => {
                return Ok(Err(SandboxError::new(
                    ErrorKind::NotADirectory,
                    format!("harness cwd {cwd} is not a directory"),
                )));
            }
            Err(err) if err.kind == ErrorKind::NotFound => {
                return Ok(Err(SandboxError::not_found(format!(
                    "harness cwd {cwd} does not exist in sandbox {}; create it first (e.g. session.mkdir)",
                    sandbox.id()
                ))));
            }
            Err(err) => return Ok(Err(err)),
        }
        Ok(Ok(self.base.table.push(AgentHarness { sandbox, cwd, id, model })?))
    }

    pub(crate) fn new_session(
        &mut self,
        this: &Resource<AgentHarness>,
        name: Option<String>,
    ) -> wasmtime::Result<SandboxResult<Resource<AgentSession>>> {
        let name = match checked_name(name, "session") {
            Ok(name) => name,
            Err(err) => return Ok(Err(err)),
        };
        let harness = self.base.table.get(this)?;
        let (sandbox, cwd, id, model) =
            (harness.sandbox.clone(), harness.cwd.clone(), harness.id.clone(), harness.model.clone());
        let session = match self.sandboxes.session(sandbox, Some(&cwd)) {
            Ok(session) => session,
            Err(err) => return Ok(Err(err)),
        };
        // A session of a run with an id continues that id's conversation.
        let conversation = match &self.conversations {
            Some(kept) => {
                let load = || kept.resume(&id, &name, &self.sandboxes.events);
                // What the run read then, not what later prompts kept since.
                let key = || journal::key("conversation", &[id.as_bytes(), name.as_bytes()]);
                journal::through_sync(self.journal.as_deref(), key, load).map_err(wasmtime::Error::new)?
            }
            None => Vec::new(),
        };
        Ok(Ok(self.base.table.push(AgentSession { session, name, harness: id, model, conversation })?))
    }

    pub(crate) fn harness_cwd(&self, this: &Resource<AgentHarness>) -> wasmtime::Result<String> {
        Ok(self.base.table.get(this)?.cwd.clone())
    }

    pub(crate) fn session_name(&self, this: &Resource<AgentSession>) -> wasmtime::Result<String> {
        Ok(self.base.table.get(this)?.name.clone())
    }

    pub(crate) fn session_cwd(&self, this: &Resource<AgentSession>) -> wasmtime::Result<String> {
        Ok(self.base.table.get(this)?.session.cwd().to_string())
    }

    pub(crate) fn resolve_in_session(&self, this: &Resource<AgentSession>, path: &str) -> wasmtime::Result<String> {
        let session = &self.base.table.get(this)?.session;
        Ok(paths::resolve(session.cwd(), path).unwrap_or_else(|_| session.cwd().to_string()))
    }

    /// Hand the agent a new handle, or the error instead.
    pub(crate) fn push_handle<T: Send + 'static>(
        &mut self,
        handle: SandboxResult<T>,
    ) -> wasmtime::Result<SandboxResult<Resource<T>>> {
        match handle {
            Ok(handle) => Ok(Ok(self.base.table.push(handle)?)),
            Err(err) => Ok(Err(err)),
        }
    }

    /// Drop a handle of any kind. Dropping a sandbox handle never deletes
    /// the sandbox: the run owns that.
    pub(crate) fn drop_handle<T: 'static>(&mut self, this: Resource<T>) -> wasmtime::Result<()> {
        self.base.table.delete(this)?;
        Ok(())
    }
}

/// A journal key for an operation on `session`: its sandbox and cwd, the
/// operation and its arguments.
pub(crate) fn session_key(session: &Session, op: &str, parts: &[&[u8]]) -> String {
    let mut all: Vec<&[u8]> = vec![session.sandbox().id().as_bytes(), session.cwd().as_bytes()];
    all.extend_from_slice(parts);
    journal::key(op, &all)
}

/// A sandbox the journal says the run opened: where, and whether the run
/// created it (and then whether to keep it).
#[derive(serde::Serialize, serde::Deserialize)]
struct OpenedSandbox {
    connector: String,
    id: String,
    owned: Option<bool>,
}

/// `live`'s answer, through the run's journal when it keeps one: a journal
/// that cannot go on stops the run (a trap carrying the [`JournalError`]).
pub(crate) async fn journaled<T, F>(
    journal: Option<&Journal>,
    key: impl FnOnce() -> String,
    live: F,
) -> wasmtime::Result<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
    F: Future<Output = T>,
{
    journal::through(journal, key, live).await.map_err(wasmtime::Error::new)
}

/// A command, through the journal.
pub(crate) async fn exec_journaled(
    journal: Option<&Journal>,
    session: &Session,
    command: &str,
    options: crate::sandbox::session::ExecOptions,
) -> wasmtime::Result<SandboxResult<crate::sandbox::ExecOutput>> {
    let key = session_key(session, "exec", &[command.as_bytes(), format!("{options:?}").as_bytes()]);
    journaled(journal, || key, session.exec(command, options)).await
}

/// The most bytes of a `read-file` answer a journal keeps; of a larger
/// file it keeps the length and XXH3 digest only ([`read_journaled`]).
/// (At 1 MiB, keeping the bytes doubled a 1 MiB write and read on Daytona:
/// 9.2 ms against 4.3 without a journal.)
pub(crate) const JOURNALED_READ_MAX: usize = 256 * 1024;

/// A `read-file` answer as the journal keeps it.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum ReadAnswer {
    /// A small file's bytes.
    Bytes(journal::Bytes),
    /// A large file: what it was ([`journal::large_digest`]), not what it held.
    Digest { len: u64, xxh3: String },
}

/// Read a whole file, through the journal. A large file's bytes are not
/// copied into the journal (they would double the memory and the time of
/// the read): a resumed run reads it again, and goes on only if it is the
/// file the run read the first time. (So a run that changed or deleted a
/// large file after reading it cannot be resumed past that read.)
pub(crate) async fn read_journaled(
    journal: Option<&Journal>,
    key: impl FnOnce() -> String,
    session: &Session,
    path: &str,
) -> wasmtime::Result<SandboxResult<Vec<u8>>> {
    let Some(journal) = journal else {
        return Ok(session.read_file(path).await);
    };
    let key = key();
    let digest = journal::large_digest;
    let recorded: Option<SandboxResult<ReadAnswer>> = journal.replay(&key).map_err(wasmtime::Error::new)?;
    match recorded {
        Some(Ok(ReadAnswer::Bytes(bytes))) => Ok(Ok(bytes.0)),
        Some(Ok(ReadAnswer::Digest { len, xxh3 })) => match session.read_file(path).await {
            Ok(bytes) if bytes.len() as u64 == len && digest(&bytes) == xxh3 => Ok(Ok(bytes)),
            now => Err(wasmtime::Error::new(JournalError::FileChanged {
                path: path.to_string(),
                now: match now {
                    Ok(bytes) => format!("{} bytes, XXH3 {}", bytes.len(), digest(&bytes)),
                    Err(err) => err.to_string(),
                },
                then: format!("{len} bytes, XXH3 {xxh3}"),
            })),
        },
        Some(Err(err)) => Ok(Err(err)),
        None => {
            let read = session.read_file(path).await;
            let answer = read.as_ref().map_err(Clone::clone).map(|bytes| match bytes.len() {
                n if n <= JOURNALED_READ_MAX => ReadAnswer::Bytes(journal::Bytes(bytes.clone())),
                n => ReadAnswer::Digest { len: n as u64, xxh3: digest(bytes) },
            });
            journal.record(&key, &answer);
            Ok(read)
        }
    }
}

/// Open a sandbox; in a resumed run, reconnect to the one the journal
/// names instead of creating it again.
async fn open_journaled(
    sandboxes: &RunSandboxes,
    journal: Option<&Journal>,
    source: SandboxSource,
) -> wasmtime::Result<SandboxResult<Arc<dyn Sandbox>>> {
    let Some(journal) = journal else {
        return Ok(sandboxes.open_sandbox(source).await);
    };
    let key = journal::key("open-sandbox", &[format!("{source:?}").as_bytes()]);
    let recorded: Option<SandboxResult<OpenedSandbox>> = journal.replay(&key).map_err(wasmtime::Error::new)?;
    match recorded {
        Some(Ok(opened)) => {
            let sandbox = sandboxes.reopen(&source, &opened.connector, &opened.id, opened.owned).await;
            sandbox.map(Ok).map_err(|err| {
                wasmtime::Error::new(JournalError::SandboxGone {
                    connector: opened.connector,
                    id: opened.id,
                    reason: err.to_string(),
                })
            })
        }
        Some(Err(err)) => Ok(Err(err)),
        None => {
            let connector = sandboxes.connector_name(&source);
            let opened = sandboxes.open_sandbox(source).await;
            let record = opened.as_ref().map_err(Clone::clone).map(|sandbox| OpenedSandbox {
                connector,
                id: sandbox.id().to_string(),
                owned: sandboxes.owned_keep(sandbox.id()),
            });
            journal.record(&key, &record);
            Ok(opened)
        }
    }
}

type WitResult<T> = wasmtime::Result<Result<T, types::SandboxError>>;

fn wit<T>(result: wasmtime::Result<SandboxResult<T>>) -> WitResult<T> {
    result.map(|inner| inner.map_err(Into::into))
}

/// The file methods `sandbox` and `session` share, for a handle type and
/// the [`AgentState`] method that turns a handle into a [`Session`]. They
/// name `types`, `WitResult` and `wit` as the caller's scope defines them,
/// so each WIT version's impls use it with that version's types.
macro_rules! file_methods {
    ($handle:ty, $session:ident) => {
        async fn read_file(&mut self, this: Resource<$handle>, path: String) -> WitResult<Vec<u8>> {
            let session = self.$session(&this)?;
            let journal = self.journal.clone();
            let key = || $crate::run::imports::session_key(&session, "read-file", &[path.as_bytes()]);
            wit($crate::run::imports::read_journaled(journal.as_deref(), key, &session, &path).await)
        }

        async fn write_file(&mut self, this: Resource<$handle>, path: String, data: Vec<u8>) -> WitResult<()> {
            let session = self.$session(&this)?;
            let journal = self.journal.clone();
            let key = || $crate::run::imports::session_key(&session, "write-file", &[path.as_bytes(), &data]);
            wit($crate::run::imports::journaled(journal.as_deref(), key, session.write_file(&path, &data)).await)
        }

        async fn stat(&mut self, this: Resource<$handle>, path: String) -> WitResult<types::FileStat> {
            let session = self.$session(&this)?;
            let journal = self.journal.clone();
            let key = || $crate::run::imports::session_key(&session, "stat", &[path.as_bytes()]);
            wit($crate::run::imports::journaled(journal.as_deref(), key, session.stat(&path))
                .await
                .map(|stat| stat.map(Into::into)))
        }

        async fn readdir(&mut self, this: Resource<$handle>, path: String) -> WitResult<Vec<String>> {
            let session = self.$session(&this)?;
            let journal = self.journal.clone();
            let key = || $crate::run::imports::session_key(&session, "readdir", &[path.as_bytes()]);
            wit($crate::run::imports::journaled(journal.as_deref(), key, session.readdir(&path)).await)
        }

        async fn exists(&mut self, this: Resource<$handle>, path: String) -> WitResult<bool> {
            let session = self.$session(&this)?;
            let journal = self.journal.clone();
            let key = || $crate::run::imports::session_key(&session, "exists", &[path.as_bytes()]);
            wit($crate::run::imports::journaled(journal.as_deref(), key, session.exists(&path)).await)
        }

        async fn mkdir(
            &mut self,
            this: Resource<$handle>,
            path: String,
            options: types::MkdirOptions,
        ) -> WitResult<()> {
            let session = self.$session(&this)?;
            let journal = self.journal.clone();
            let key =
                || $crate::run::imports::session_key(&session, "mkdir", &[path.as_bytes(), &[options.recursive as u8]]);
            wit($crate::run::imports::journaled(journal.as_deref(), key, session.mkdir(&path, options.recursive)).await)
        }

        async fn rm(&mut self, this: Resource<$handle>, path: String, options: types::RmOptions) -> WitResult<()> {
            let session = self.$session(&this)?;
            let journal = self.journal.clone();
            let flags = [options.recursive as u8, options.force as u8];
            let key = || $crate::run::imports::session_key(&session, "rm", &[path.as_bytes(), &flags]);
            wit($crate::run::imports::journaled(
                journal.as_deref(),
                key,
                session.rm(&path, options.recursive, options.force),
            )
            .await)
        }
    };
}
pub(crate) use file_methods;

/// The streaming file methods `sandbox` and `session` share (added in 0.2.0).
macro_rules! stream_methods {
    ($handle:ty, $session:ident) => {
        async fn open_read(
            &mut self,
            this: Resource<$handle>,
            path: String,
            offset: u64,
        ) -> WitResult<Resource<AgentReader>> {
            let session = self.$session(&this)?;
            let journal = self.journal.clone();
            let reader = super::streams::open_reader(journal.as_deref(), &session, &path, offset).await?;
            wit(self.push_handle(reader))
        }

        async fn open_write(&mut self, this: Resource<$handle>, path: String) -> WitResult<Resource<AgentWriter>> {
            let session = self.$session(&this)?;
            let journal = self.journal.clone();
            let writer = super::streams::open_writer(journal.as_deref(), &session, &path).await?;
            wit(self.push_handle(writer))
        }
    };
}

/// The `session` methods every WIT version has: names, paths, the shell,
/// text and the file methods (as [`file_methods`], in the caller's types).
macro_rules! session_methods {
    () => {
        async fn name(&mut self, this: Resource<AgentSession>) -> wasmtime::Result<String> {
            self.session_name(&this)
        }

        async fn cwd(&mut self, this: Resource<AgentSession>) -> wasmtime::Result<String> {
            self.session_cwd(&this)
        }

        async fn resolve_path(&mut self, this: Resource<AgentSession>, path: String) -> wasmtime::Result<String> {
            self.resolve_in_session(&this, &path)
        }

        async fn shell(
            &mut self,
            this: Resource<AgentSession>,
            command: String,
            options: types::ExecOptions,
        ) -> WitResult<types::ExecResult> {
            let session = self.session(&this)?;
            let journal = self.journal.clone();
            wit($crate::run::imports::exec_journaled(journal.as_deref(), &session, &command, options.into())
                .await
                .map(|out| out.map(Into::into)))
        }

        async fn read_text(&mut self, this: Resource<AgentSession>, path: String) -> WitResult<String> {
            let session = self.session(&this)?;
            let journal = self.journal.clone();
            let key = || $crate::run::imports::session_key(&session, "read-text", &[path.as_bytes()]);
            wit($crate::run::imports::journaled(journal.as_deref(), key, session.read_text(&path)).await)
        }

        async fn write_text(&mut self, this: Resource<AgentSession>, path: String, text: String) -> WitResult<()> {
            let session = self.session(&this)?;
            let journal = self.journal.clone();
            let key = || $crate::run::imports::session_key(&session, "write-file", &[path.as_bytes(), text.as_bytes()]);
            wit($crate::run::imports::journaled(journal.as_deref(), key, session.write_file(&path, text.as_bytes()))
                .await)
        }

        file_methods!(AgentSession, session);
    };
}
pub(crate) use session_methods;

/// The `sandbox` methods every WIT version has: its id, workdir, `exec`
/// and the file methods, all in its workdir.
macro_rules! sandbox_methods {
    () => {
        async fn id(&mut self, this: Resource<AgentSandbox>) -> wasmtime::Result<String> {
            self.sandbox_id(&this)
        }

        async fn workdir(&mut self, this: Resource<AgentSandbox>) -> wasmtime::Result<String> {
            self.sandbox_workdir(&this)
        }

        async fn exec(
            &mut self,
            this: Resource<AgentSandbox>,
            command: String,
            options: types::ExecOptions,
        ) -> WitResult<types::ExecResult> {
            let session = self.workdir_session(&this)?;
            let journal = self.journal.clone();
            wit($crate::run::imports::exec_journaled(journal.as_deref(), &session, &command, options.into())
                .await
                .map(|out| out.map(Into::into)))
        }

        file_methods!(AgentSandbox, workdir_session);
    };
}
pub(crate) use sandbox_methods;

impl types::Host for AgentState {}
impl sandbox_api::Host for AgentState {}
impl model::Host for AgentState {}

impl sandbox_api::HostSandbox for AgentState {
    sandbox_methods!();
    stream_methods!(AgentSandbox, workdir_session);

    async fn drop(&mut self, this: Resource<AgentSandbox>) -> wasmtime::Result<()> {
        self.drop_handle(this)
    }
}

impl harness::Host for AgentState {
    async fn open_sandbox(&mut self, source: harness::SandboxSource) -> WitResult<Resource<AgentSandbox>> {
        wit(self.open(SandboxSource::from(source)).await)
    }

    async fn init(
        &mut self,
        sandbox: Resource<AgentSandbox>,
        options: harness::InitOptions,
    ) -> WitResult<Resource<AgentHarness>> {
        wit(self.init_harness(&sandbox, options.cwd, options.model, options.id).await)
    }
}

impl harness::HostHarness for AgentState {
    async fn id(&mut self, this: Resource<AgentHarness>) -> wasmtime::Result<String> {
        Ok(self.base.table.get(&this)?.id.clone())
    }

    async fn cwd(&mut self, this: Resource<AgentHarness>) -> wasmtime::Result<String> {
        self.harness_cwd(&this)
    }

    async fn session(
        &mut self,
        this: Resource<AgentHarness>,
        name: Option<String>,
    ) -> WitResult<Resource<AgentSession>> {
        wit(self.new_session(&this, name))
    }

    async fn drop(&mut self, this: Resource<AgentHarness>) -> wasmtime::Result<()> {
        self.drop_handle(this)
    }
}

impl harness::HostSession for AgentState {
    session_methods!();
    stream_methods!(AgentSession, session);

    async fn prompt(
        &mut self,
        this: Resource<AgentSession>,
        text: String,
        options: model::PromptOptions,
    ) -> wasmtime::Result<Result<model::PromptResult, model::PromptError>> {
        let request = PromptRequest::from_options(text, options);
        Ok(self.prompt_session(&this, request).await?.map(Into::into).map_err(Into::into))
    }

    async fn prompt_with(
        &mut self,
        this: Resource<AgentSession>,
        request: model::PromptRequest,
    ) -> wasmtime::Result<Result<model::PromptReply, model::PromptError>> {
        Ok(self.prompt_session(&this, request.into()).await?.map(Into::into).map_err(Into::into))
    }

    async fn task(
        &mut self,
        this: Resource<AgentSession>,
        request: model::TaskRequest,
    ) -> wasmtime::Result<Result<model::PromptReply, model::PromptError>> {
        Ok(self.task_in_session(&this, request.into()).await?.map(Into::into).map_err(Into::into))
    }

    async fn drop(&mut self, this: Resource<AgentSession>) -> wasmtime::Result<()> {
        self.drop_handle(this)
    }
}

impl log::Host for AgentState {
    async fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        self.sandboxes.events.log("agent", level.into(), message);
        Ok(())
    }
}
