//! Wasm connectors: the [`Connector`]/[`Sandbox`] implementations
//! that call a connector component's exports.
//!
//! Each connector instance runs in its own store ([`ConnectorState`]), with
//! its own memory limit, a deadline re-armed before every call, and only the
//! grants its `info()` declared ([`load`]). A trap poisons the instance:
//! every later call, and every sandbox handle into it, fails with a clear
//! error instead of a confusing one.

mod imports;
mod load;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use wasmtime::Store;
use wasmtime::component::ResourceAny;

pub use imports::ConnectorState;
pub(crate) use load::ConnectorLoader;

use crate::bindings::connector::Connector as ConnectorBindings;
use crate::bindings::types;
use crate::runtime::engine::arm_deadline;
use crate::sandbox::error::{SandboxError, SandboxResult};
use crate::sandbox::{
    Connector, ConnectorInfo, CreateOptions, ExecOutput, ExecRequest, FileReader, FileStat, FileWriter, Sandbox,
    SandboxSummary, VolumeInfo,
};

type CallFuture<'a, T> = Pin<Box<dyn Future<Output = wasmtime::Result<T>> + Send + 'a>>;

/// The live instance: its store and bindings, behind a lock (calls into one
/// instance are serialised).
pub(crate) struct Instance {
    pub(crate) store: Store<ConnectorState>,
    pub(crate) bindings: ConnectorBindings,
    /// Why the instance is unusable, once it trapped.
    pub(crate) poisoned: Option<String>,
}

/// A running wasm connector.
pub struct WasmConnector {
    info: ConnectorInfo,
    instance: Arc<tokio::sync::Mutex<Instance>>,
    call_limit: Duration,
}

impl WasmConnector {
    pub(crate) fn new(info: ConnectorInfo, instance: Instance, call_limit: Duration) -> Self {
        WasmConnector { info, instance: Arc::new(tokio::sync::Mutex::new(instance)), call_limit }
    }
}

/// Call into a connector instance under a deadline, turning traps into
/// errors and poisoning the instance.
async fn call<T: Send>(
    instance: &tokio::sync::Mutex<Instance>,
    connector: &str,
    what: &str,
    limit: Duration,
    f: impl for<'a> FnOnce(&'a mut Store<ConnectorState>, &'a ConnectorBindings) -> CallFuture<'a, T>,
) -> SandboxResult<T> {
    let mut guard = instance.lock().await;
    let instance = &mut *guard;
    if let Some(reason) = &instance.poisoned {
        return Err(SandboxError::other(format!(
            "connector {connector} crashed earlier ({reason}); its sandboxes cannot be used in this run"
        )));
    }
    arm_deadline(&mut instance.store, &format!("connector {connector} ({what})"), limit);
    match f(&mut instance.store, &instance.bindings).await {
        Ok(value) => Ok(value),
        Err(err) => {
            let state = instance.store.data();
            let reason = if state.base.limiter.memory_refused().is_some() {
                format!("it ran out of memory (its limit is {} MiB)", state.base.limiter.config().memory_bytes >> 20)
            } else {
                let cause = crate::runtime::trap::describe(&err).unwrap_or_else(|| err.root_cause().to_string());
                state.grants.http.redact(&crate::events::one_line(&cause, 300))
            };
            instance.poisoned = Some(reason.clone());
            Err(SandboxError::other(format!("connector {connector} crashed during {what}: {reason}")))
        }
    }
}

#[async_trait]
impl Connector for WasmConnector {
    fn info(&self) -> &ConnectorInfo {
        &self.info
    }

    async fn create(&self, options: &CreateOptions) -> SandboxResult<Arc<dyn Sandbox>> {
        let options = types::CreateOptions::from(options);
        let resource = call(&self.instance, &self.info.name, "create", self.call_limit, |store, b| {
            Box::pin(async move { b.flue_sandbox_lifecycle().call_create(store, &options).await })
        })
        .await?
        .map_err(SandboxError::from)?;
        self.sandbox(resource).await
    }

    async fn connect(&self, id: &str) -> SandboxResult<Arc<dyn Sandbox>> {
        let id = id.to_string();
        let resource = call(&self.instance, &self.info.name, "connect", self.call_limit, |store, b| {
            Box::pin(async move { b.flue_sandbox_lifecycle().call_connect(store, &id).await })
        })
        .await?
        .map_err(SandboxError::from)?;
        self.sandbox(resource).await
    }

    async fn delete(&self, id: &str) -> SandboxResult<()> {
        let id = id.to_string();
        call(&self.instance, &self.info.name, "delete", self.call_limit, |store, b| {
            Box::pin(async move { b.flue_sandbox_lifecycle().call_delete(store, &id).await })
        })
        .await?
        .map_err(SandboxError::from)
    }

    async fn list(&self, labels: &[(String, String)]) -> SandboxResult<Vec<SandboxSummary>> {
        let labels = labels.to_vec();
        let found = call(&self.instance, &self.info.name, "list", self.call_limit, |store, b| {
            Box::pin(async move { b.flue_sandbox_lifecycle().call_list(store, &labels).await })
        })
        .await?
        .map_err(SandboxError::from)?;
        Ok(found.into_iter().map(Into::into).collect())
    }

    async fn list_volumes(&self) -> SandboxResult<Vec<VolumeInfo>> {
        let found = call(&self.instance, &self.info.name, "list-volumes", self.call_limit, |store, b| {
            Box::pin(async move { b.flue_sandbox_lifecycle().call_list_volumes(store).await })
        })
        .await?
        .map_err(SandboxError::from)?;
        Ok(found.into_iter().map(Into::into).collect())
    }

    async fn create_volume(&self, name: &str) -> SandboxResult<VolumeInfo> {
        let name = name.to_string();
        call(&self.instance, &self.info.name, "create-volume", self.call_limit, |store, b| {
            Box::pin(async move { b.flue_sandbox_lifecycle().call_create_volume(store, &name).await })
        })
        .await?
        .map(Into::into)
        .map_err(SandboxError::from)
    }

    async fn delete_volume(&self, name: &str) -> SandboxResult<()> {
        let name = name.to_string();
        call(&self.instance, &self.info.name, "delete-volume", self.call_limit, |store, b| {
            Box::pin(async move { b.flue_sandbox_lifecycle().call_delete_volume(store, &name).await })
        })
        .await?
        .map_err(SandboxError::from)
    }
}

impl WasmConnector {
    async fn sandbox(&self, resource: ResourceAny) -> SandboxResult<Arc<dyn Sandbox>> {
        let (id, workdir) = call(&self.instance, &self.info.name, "id", self.call_limit, |store, b| {
            Box::pin(async move {
                let api = b.flue_sandbox_sandbox_api().sandbox();
                let id = api.call_id(&mut *store, resource).await?;
                let workdir = api.call_workdir(&mut *store, resource).await?;
                Ok((id, workdir))
            })
        })
        .await?;
        let workdir = crate::sandbox::paths::resolve("/", &workdir).map_err(|err| {
            SandboxError::other(format!("connector {} gave an invalid workdir: {err}", self.info.name))
        })?;
        Ok(Arc::new(WasmSandbox {
            connector: self.info.name.clone(),
            id,
            workdir,
            resource,
            instance: self.instance.clone(),
            call_limit: self.call_limit,
        }))
    }
}

/// The part whole files are read and written in through a connector: a
/// connector's memory holds one part, never the whole file.
const WHOLE_FILE_PART: usize = 1 << 20;

/// A sandbox served by a wasm connector.
pub struct WasmSandbox {
    connector: String,
    id: String,
    workdir: String,
    resource: ResourceAny,
    instance: Arc<tokio::sync::Mutex<Instance>>,
    call_limit: Duration,
}

/// Call a `sandbox` method of the connector; flatten its `result`.
macro_rules! sandbox_call {
    ($self:ident, $what:literal, $limit:expr, |$api:ident, $store:ident, $res:ident| $body:expr) => {{
        let $res = $self.resource;
        call(&$self.instance, &$self.connector, $what, $limit, |$store, b| {
            Box::pin(async move {
                let $api = b.flue_sandbox_sandbox_api().sandbox();
                $body.await
            })
        })
        .await?
        .map_err(SandboxError::from)
    }};
}

#[async_trait]
impl Sandbox for WasmSandbox {
    fn id(&self) -> &str {
        &self.id
    }

    fn workdir(&self) -> &str {
        &self.workdir
    }

    fn connector(&self) -> &str {
        &self.connector
    }

    /// In parts through the connector's `open-read` (the connector holds
    /// one part at a time, whatever the file's size); through its
    /// `read-file` only if it cannot read in parts.
    async fn read_file(&self, path: &str, max_bytes: u64) -> SandboxResult<Vec<u8>> {
        let too_large = |size: String| {
            SandboxError::new(
                crate::sandbox::error::ErrorKind::TooLarge,
                format!(
                    "{path}: it is {size}; at most {} can be read at once (read large files in parts, with open-read)",
                    crate::sandbox::session::format_bytes(usize::try_from(max_bytes).unwrap_or(usize::MAX))
                ),
            )
        };
        let mut reader = match self.open_read(path, 0).await {
            Ok(reader) => reader,
            Err(err) if err.kind == crate::sandbox::error::ErrorKind::Unsupported => {
                let owned = path.to_string();
                let data = sandbox_call!(self, "read-file", self.call_limit, |api, store, res| api
                    .call_read_file(store, res, &owned))?;
                // The connector's memory limit bounded what it could return.
                if data.len() as u64 > max_bytes {
                    return Err(too_large(crate::sandbox::session::format_bytes(data.len())));
                }
                return Ok(data);
            }
            Err(err) => return Err(err),
        };
        let mut data = Vec::new();
        loop {
            let part = reader.read(WHOLE_FILE_PART).await?;
            if part.is_empty() {
                return Ok(data);
            }
            if (data.len() + part.len()) as u64 > max_bytes {
                return Err(too_large(format!(
                    "larger than {}",
                    crate::sandbox::session::format_bytes(usize::try_from(max_bytes).unwrap_or(usize::MAX))
                )));
            }
            data.extend_from_slice(&part);
        }
    }

    /// A small file in one `write-file` call; a larger one in parts through
    /// the connector's `open-write` (the connector holds one part at a
    /// time), unless it cannot write in parts.
    async fn write_file(&self, path: &str, data: &[u8]) -> SandboxResult<()> {
        if data.len() > WHOLE_FILE_PART {
            match self.open_write(path).await {
                Ok(mut writer) => {
                    for part in data.chunks(WHOLE_FILE_PART) {
                        writer.write(part).await?;
                    }
                    return writer.finish().await;
                }
                Err(err) if err.kind == crate::sandbox::error::ErrorKind::Unsupported => {}
                Err(err) => return Err(err),
            }
        }
        let (path, data) = (path.to_string(), data.to_vec());
        sandbox_call!(self, "write-file", self.call_limit, |api, store, res| api
            .call_write_file(store, res, &path, &data))
    }

    async fn stat(&self, path: &str) -> SandboxResult<FileStat> {
        let path = path.to_string();
        sandbox_call!(self, "stat", self.call_limit, |api, store, res| api.call_stat(store, res, &path)).map(Into::into)
    }

    async fn readdir(&self, path: &str) -> SandboxResult<Vec<String>> {
        let path = path.to_string();
        sandbox_call!(self, "readdir", self.call_limit, |api, store, res| api.call_readdir(store, res, &path))
    }

    async fn exists(&self, path: &str) -> SandboxResult<bool> {
        let path = path.to_string();
        sandbox_call!(self, "exists", self.call_limit, |api, store, res| api.call_exists(store, res, &path))
    }

    async fn mkdir(&self, path: &str, recursive: bool) -> SandboxResult<()> {
        let path = path.to_string();
        let options = types::MkdirOptions { recursive };
        sandbox_call!(self, "mkdir", self.call_limit, |api, store, res| api.call_mkdir(store, res, &path, options))
    }

    async fn rm(&self, path: &str, recursive: bool, force: bool) -> SandboxResult<()> {
        let path = path.to_string();
        let options = types::RmOptions { recursive, force };
        sandbox_call!(self, "rm", self.call_limit, |api, store, res| api.call_rm(store, res, &path, options))
    }

    async fn exec(&self, request: &ExecRequest) -> SandboxResult<ExecOutput> {
        let command = request.command.clone();
        let options = types::ExecOptions::from(request);
        // A command may legitimately run as long as its own timeout.
        let limit = self.call_limit + request.timeout.unwrap_or_default();
        sandbox_call!(self, "exec", limit, |api, store, res| api.call_exec(store, res, &command, &options))
            .map(Into::into)
    }

    async fn open_read(&self, path: &str, offset: u64) -> SandboxResult<Box<dyn FileReader>> {
        let path = path.to_string();
        let resource = sandbox_call!(self, "open-read", self.call_limit, |api, store, res| api
            .call_open_read(store, res, &path, offset))?;
        Ok(Box::new(WasmReader(self.handle(resource))))
    }

    async fn open_write(&self, path: &str) -> SandboxResult<Box<dyn FileWriter>> {
        let path = path.to_string();
        let resource = sandbox_call!(self, "open-write", self.call_limit, |api, store, res| api
            .call_open_write(store, res, &path))?;
        Ok(Box::new(WasmWriter(self.handle(resource))))
    }
}

impl WasmSandbox {
    fn handle(&self, resource: ResourceAny) -> Handle {
        Handle {
            connector: self.connector.clone(),
            resource,
            instance: self.instance.clone(),
            call_limit: self.call_limit,
        }
    }
}

/// A resource the connector handed out (a reader, a writer); released in
/// the connector when dropped, so that its handle table does not fill up.
struct Handle {
    connector: String,
    resource: ResourceAny,
    instance: Arc<tokio::sync::Mutex<Instance>>,
    call_limit: Duration,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let (resource, instance) = (self.resource, self.instance.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let mut instance = instance.lock().await;
                if instance.poisoned.is_none() {
                    // The connector's own drop code may trap: then the
                    // instance is as unusable as after any other trap.
                    if let Err(err) = resource.resource_drop_async(&mut instance.store).await {
                        instance.poisoned = Some(format!("dropping a handle failed: {err}"));
                    }
                }
            });
        }
    }
}

/// A file a connector reads in parts.
struct WasmReader(Handle);

#[async_trait]
impl FileReader for WasmReader {
    async fn read(&mut self, max: usize) -> SandboxResult<Vec<u8>> {
        let h = &self.0;
        let (resource, max) = (h.resource, u32::try_from(max).unwrap_or(u32::MAX));
        call(&h.instance, &h.connector, "file-reader.read", h.call_limit, |store, b| {
            Box::pin(async move { b.flue_sandbox_sandbox_api().file_reader().call_read(store, resource, max).await })
        })
        .await?
        .map_err(SandboxError::from)
    }
}

/// A file a connector writes in parts.
struct WasmWriter(Handle);

#[async_trait]
impl FileWriter for WasmWriter {
    async fn write(&mut self, data: &[u8]) -> SandboxResult<()> {
        let h = &self.0;
        let (resource, data) = (h.resource, data.to_vec());
        call(&h.instance, &h.connector, "file-writer.write", h.call_limit, |store, b| {
            Box::pin(async move { b.flue_sandbox_sandbox_api().file_writer().call_write(store, resource, &data).await })
        })
        .await?
        .map_err(SandboxError::from)
    }

    async fn finish(&mut self) -> SandboxResult<()> {
        let h = &self.0;
        let resource = h.resource;
        call(&h.instance, &h.connector, "file-writer.finish", h.call_limit, |store, b| {
            Box::pin(async move { b.flue_sandbox_sandbox_api().file_writer().call_finish(store, resource).await })
        })
        .await?
        .map_err(SandboxError::from)
    }
}
