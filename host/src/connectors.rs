//! Finding and loading connectors: the built-in `local` one, and every
//! `*.wasm` file in the connectors directory.
//!
//! A connector is known by its file name (`connectors/daytona.wasm` is
//! `daytona`) and loaded only when a run asks for it, so one bad file never
//! stops the others, nor a run that does not use it. Load failures are one
//! line naming the file and the reason.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use wasmtime::Store;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::WasiCtxBuilder;

use crate::allowed_hosts::AllowedHosts;
use crate::backend::{Connector, ConnectorInfo};
use crate::connector_host::{ConnectorState, Instance, WasmConnector};
use crate::engine::arm_deadline;
use crate::error::SandboxError;
use crate::events::{EventLog, one_line};
use crate::guest_output::GuestOutput;
use crate::http_capability::{HttpCapability, HttpLimits, secrets_for};
use crate::local::LocalConnector;
use crate::runtime::Runtime;

/// Why a connector could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("{}: {reason}", file.display())]
    Load { file: PathBuf, reason: String },
    #[error("no connector named {name:?}: available are {available} (add one by dropping NAME.wasm into {})", dir.display())]
    Unknown { name: String, available: String, dir: PathBuf },
    #[error("connector {connector} needs {key}: {description} Set it in the environment or in an --env file.")]
    MissingConfig { connector: String, key: String, description: String },
}

impl ConnectorError {
    pub fn into_sandbox_error(self) -> SandboxError {
        match &self {
            ConnectorError::Unknown { .. } => SandboxError::not_found(self.to_string()),
            ConnectorError::MissingConfig { .. } => SandboxError::new(crate::error::ErrorKind::Auth, self.to_string()),
            ConnectorError::Load { .. } => SandboxError::other(self.to_string()),
        }
    }
}

/// One entry of `flue connectors`.
pub struct ConnectorListing {
    pub name: String,
    /// `None` for built-in connectors.
    pub file: Option<PathBuf>,
    pub info: Result<ConnectorInfo, ConnectorError>,
}

pub struct ConnectorRegistry {
    runtime: Arc<Runtime>,
    dir: PathBuf,
    local: Arc<LocalConnector>,
    /// Configuration values (environment and --env files); connectors see
    /// only the keys they declare.
    config: HashMap<String, String>,
}

impl ConnectorRegistry {
    pub fn new(runtime: Arc<Runtime>, dir: PathBuf, local: LocalConnector, config: HashMap<String, String>) -> Self {
        ConnectorRegistry { runtime, dir, local: Arc::new(local), config }
    }

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
        let mut names = vec!["local".to_string()];
        names.extend(self.files().iter().filter_map(|f| f.file_stem()).map(|s| s.to_string_lossy().into_owned()));
        names.join(", ")
    }

    /// A connector ready for a run: `local`, or `<dir>/<name>.wasm`
    /// instantiated with its configuration checked.
    pub async fn instantiate(&self, name: &str, events: &EventLog) -> Result<Arc<dyn Connector>, ConnectorError> {
        if name == "local" {
            return Ok(self.local.clone());
        }
        let valid_name = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        let file = self.dir.join(format!("{name}.wasm"));
        if !valid_name || !file.is_file() {
            return Err(ConnectorError::Unknown {
                name: name.into(),
                available: self.available(),
                dir: self.dir.clone(),
            });
        }
        self.instantiate_file(&file, events).await
    }

    /// A connector from any `.wasm` file, its required configuration checked.
    pub async fn instantiate_file(&self, file: &Path, events: &EventLog) -> Result<Arc<dyn Connector>, ConnectorError> {
        let connector = self.load_file(file, events).await?;
        for key in connector.info().config.iter().filter(|k| k.required) {
            if !self.config.contains_key(&key.name) && key.default_value.is_none() {
                return Err(ConnectorError::MissingConfig {
                    connector: connector.info().name.clone(),
                    key: key.name.clone(),
                    description: key.description.clone(),
                });
            }
        }
        Ok(connector)
    }

    /// What a connector file says about itself (no configuration needed).
    pub async fn inspect(&self, file: &Path) -> Result<ConnectorInfo, ConnectorError> {
        self.load_file(file, &EventLog::discard()).await.map(|c| c.info().clone())
    }

    /// Every connector with its info or its load error.
    pub async fn list(&self) -> Vec<ConnectorListing> {
        let mut listings =
            vec![ConnectorListing { name: "local".into(), file: None, info: Ok(self.local.info().clone()) }];
        for file in self.files() {
            let name = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let info = self.inspect(&file).await;
            listings.push(ConnectorListing { name, file: Some(file), info });
        }
        listings
    }

    async fn load_file(&self, file: &Path, events: &EventLog) -> Result<Arc<dyn Connector>, ConnectorError> {
        let fail = |reason: String| ConnectorError::Load { file: file.to_path_buf(), reason };
        let bytes = std::fs::read(file).map_err(|err| fail(format!("cannot read: {err}")))?;
        check_component_header(&bytes).map_err(fail)?;
        let label = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let component = self
            .runtime
            .load_component(&bytes, &label)
            .map_err(|err| fail(format!("not a valid component: {}", one_line(&format!("{err:#}"), 200))))?;
        let pre = self.runtime.connector_pre(&component).map_err(|err| {
            fail(format!("does not fit the flue:sandbox/connector world: {}", one_line(&format!("{err:#}"), 200)))
        })?;

        let name = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let stderr = GuestOutput::new(&format!("connector {name}"), "warn", events.clone());
        // Secure defaults: no env, args, files or sockets; stderr to events.
        let wasi = WasiCtxBuilder::new().stderr(stderr.clone()).build();
        let state = ConnectorState {
            wasi,
            table: ResourceTable::new(),
            limits: self.runtime.limits.connector_store().build(),
            name: name.clone(),
            config: HashMap::new(),
            http: HttpCapability::deny_all(&name),
            events: events.clone(),
        };
        let mut store = Store::new(&self.runtime.engine, state);
        store.limiter(|state| &mut state.limits);
        arm_deadline(&mut store, &format!("connector {name} (start)"), self.runtime.limits.connector_call);
        let bindings = pre
            .instantiate_async(&mut store)
            .await
            .map_err(|err| fail(format!("failed to start: {}", one_line(&format!("{err:#}"), 200))))?;
        let info: ConnectorInfo = bindings
            .flue_sandbox_lifecycle()
            .call_info(&mut store)
            .await
            .map_err(|err| fail(format!("trapped in info(): {}", one_line(&format!("{err:#}"), 200))))?
            .into();
        if info.name != name {
            tracing::warn!(
                "{}: declares the name {:?}; it is used as {name:?} (its file name)",
                file.display(),
                info.name
            );
        }

        // Hand the connector the non-secret keys it declared, nothing else;
        // its secrets stay here, for the HTTP capability to fill in.
        let mut declared = HashMap::new();
        for key in info.config.iter().filter(|k| !k.secret) {
            if let Some(value) = self.config.get(&key.name).or(key.default_value.as_ref()) {
                declared.insert(key.name.clone(), value.clone());
            }
        }
        let (policy, warnings) = AllowedHosts::parse(&info.allowed_hosts, &declared);
        for warning in warnings {
            tracing::warn!("connector {name}: {warning}");
        }
        let secrets = secrets_for(&info.config, &self.config);
        let http = HttpCapability::new(&name, policy, secrets, HttpLimits::default())
            .map_err(|err| fail(format!("cannot set up its HTTP client: {err}")))?;
        let state = store.data_mut();
        state.config = declared;
        state.http = http;
        let instance = Instance { store, bindings, poisoned: None };
        Ok(Arc::new(WasmConnector::new(info, instance, self.runtime.limits.connector_call)))
    }
}

/// Tell apart "not wasm", "a core module" and "a component" from the header,
/// so the error says what the file is.
fn check_component_header(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err("not a WebAssembly file (no \\0asm header)".into());
    }
    // Core modules have version 1 and layer 0; components layer 1.
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err("a core WebAssembly module, not a component: build it with \
                    `cargo build --target wasm32-wasip2`, or wrap it with `wasm-tools component new`"
            .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_told_apart() {
        assert!(check_component_header(b"hello world").unwrap_err().contains("not a WebAssembly file"));
        assert!(check_component_header(b"\0asm\x01\0\0\0").unwrap_err().contains("core WebAssembly module"));
        assert!(check_component_header(b"\0asm\x0d\0\x01\0").is_ok());
    }
}
