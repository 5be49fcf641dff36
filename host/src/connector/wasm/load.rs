//! Loading a connector file: read it, check what it is, instantiate it,
//! ask `info()` what it needs, and grant exactly that.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime_wasi::WasiCtxBuilder;

use super::{ConnectorState, Instance, WasmConnector};
use crate::bindings::connector::ConnectorPre;
use crate::capability::ConnectorGrants;
use crate::connector::registry::{ConnectorError, LoadStep};
use crate::events::{EventLog, LogLevel};
use crate::runtime::Runtime;
use crate::runtime::engine::wasm_error;
use crate::runtime::guest_output::GuestOutput;
use crate::sandbox::ConnectorInfo;

/// The connector world's linker for one runtime: what turns a `.wasm` file
/// into a [`WasmConnector`].
pub(crate) struct ConnectorLoader {
    runtime: Arc<Runtime>,
    linker: Linker<ConnectorState>,
}

impl ConnectorLoader {
    /// The connector imports, linked for `runtime`'s engine.
    pub fn new(runtime: Arc<Runtime>) -> anyhow::Result<Self> {
        let mut linker = Linker::new(&runtime.engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(wasm_error)?;
        // The shared interfaces are the store's own; the capabilities see
        // the store through their view of it.
        crate::bindings::types::add_to_linker::<_, HasSelf<ConnectorState>>(&mut linker, |state| state)
            .map_err(wasm_error)?;
        crate::bindings::agent::flue::sandbox::log::add_to_linker::<_, HasSelf<ConnectorState>>(&mut linker, |state| {
            state
        })
        .map_err(wasm_error)?;
        crate::capability::add_to_linker(&mut linker).map_err(wasm_error)?;
        Ok(ConnectorLoader { runtime, linker })
    }

    /// Type-check a connector against the connector world.
    fn pre(&self, component: &Component) -> anyhow::Result<ConnectorPre<ConnectorState>> {
        let pre = self.linker.instantiate_pre(component).map_err(wasm_error)?;
        ConnectorPre::new(pre).map_err(wasm_error)
    }

    /// Load `file` as the connector `name`, configured from `config`.
    pub async fn load(
        &self,
        file: &Path,
        name: &str,
        config: &HashMap<String, String>,
        events: &EventLog,
    ) -> Result<WasmConnector, ConnectorError> {
        let runtime = &*self.runtime;
        let fail = |step: LoadStep| {
            move |source: anyhow::Error| ConnectorError::Load { file: file.to_path_buf(), step, source }
        };
        let bytes = std::fs::read(file).map_err(|err| fail(LoadStep::Read)(err.into()))?;
        check_component_header(&bytes).map_err(|why| fail(LoadStep::Header)(anyhow::anyhow!(why)))?;
        let label = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let bytes = crate::runtime::ComponentBytes::new(bytes);
        let component = runtime.load_component(&bytes, &label, events).map_err(fail(LoadStep::Compile))?;
        let pre = self.pre(&component).map_err(fail(LoadStep::Link))?;

        let name = name.to_string();
        let stderr = GuestOutput::new(&format!("connector {name}"), LogLevel::Warn, events.clone());
        // Secure defaults: no env, args, files or sockets; stderr to events.
        let wasi = WasiCtxBuilder::new().stderr(stderr).build();
        let limits = runtime.limits.connector_store();
        let mut store =
            runtime.new_store(&limits, &format!("connector {name} (start)"), runtime.limits.connector_call, |base| {
                ConnectorState {
                    wasi,
                    base,
                    name: name.clone(),
                    // Until info() says what it needs, the connector gets nothing:
                    // no configuration, no network.
                    grants: ConnectorGrants::none(&name),
                    events: events.clone(),
                }
            });
        let bindings =
            pre.instantiate_async(&mut store).await.map_err(|err| fail(LoadStep::Start)(guest_error(err)))?;
        let info: ConnectorInfo = bindings
            .flue_sandbox_lifecycle()
            .call_info(&mut store)
            .await
            .map_err(|err| fail(LoadStep::Info)(guest_error(err)))?
            .into();
        if info.name != name {
            tracing::warn!("{}: declares the name {:?}; it is used as {name:?}", file.display(), info.name);
        }

        let (grants, warnings) =
            ConnectorGrants::grant(&name, &info, config).map_err(|err| fail(LoadStep::Grant)(err.into()))?;
        for warning in warnings {
            tracing::warn!("connector {name}: {warning}");
        }
        store.data_mut().grants = grants;
        let instance = Instance { store, bindings, poisoned: None };
        Ok(WasmConnector::new(info, instance, runtime.limits.connector_call))
    }
}

/// A connector's trap in the words of [`crate::runtime::trap`] (a stack
/// overflow named as one), any other error with its causes.
fn guest_error(err: wasmtime::Error) -> anyhow::Error {
    match crate::runtime::trap::describe(&err) {
        Some(trap) => anyhow::Error::msg(trap),
        None => wasm_error(err),
    }
}

/// Tell apart "not wasm", "a core module" and "a component" from the header,
/// so the error says what the file is.
fn check_component_header(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err("it is not a WebAssembly file (no \\0asm header)".into());
    }
    // Core modules have version 1 and layer 0; components layer 1.
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err("it is a core WebAssembly module: build it with \
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
        assert!(check_component_header(b"hello world").unwrap_err().contains("is not a WebAssembly file"));
        assert!(check_component_header(b"\0asm\x01\0\0\0").unwrap_err().contains("is a core WebAssembly module"));
        assert!(check_component_header(b"\0asm\x0d\0\x01\0").is_ok());
    }
}
