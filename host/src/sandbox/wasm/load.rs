//! Loading a connector file: read it, check what it is, instantiate it,
//! ask `info()` what it needs, and grant exactly that.

use std::collections::HashMap;
use std::path::Path;

use wasmtime_wasi::WasiCtxBuilder;

use super::{ConnectorState, Instance, WasmConnector};
use crate::capability::ConnectorGrants;
use crate::events::{EventLog, one_line};
use crate::runtime::Runtime;
use crate::runtime::guest_output::GuestOutput;
use crate::sandbox::ConnectorInfo;
use crate::sandbox::registry::ConnectorError;

/// Load `file` as the connector `name`, configured from `config`.
pub(crate) async fn load(
    runtime: &Runtime,
    file: &Path,
    name: &str,
    config: &HashMap<String, String>,
    events: &EventLog,
) -> Result<WasmConnector, ConnectorError> {
    let fail = |reason: String| ConnectorError::Load { file: file.to_path_buf(), reason };
    let bytes = std::fs::read(file).map_err(|err| fail(format!("cannot read: {err}")))?;
    check_component_header(&bytes).map_err(fail)?;
    let label = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let component = runtime
        .load_component(&bytes, &label, events)
        .map_err(|err| fail(format!("not a valid component: {}", one_line(&format!("{err:#}"), 200))))?;
    let pre = runtime.connector_pre(&component).map_err(|err| {
        fail(format!("does not fit the flue:sandbox/connector world: {}", one_line(&format!("{err:#}"), 200)))
    })?;

    let name = name.to_string();
    let stderr = GuestOutput::new(&format!("connector {name}"), "warn", events.clone());
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
        tracing::warn!("{}: declares the name {:?}; it is used as {name:?}", file.display(), info.name);
    }

    let (grants, warnings) = ConnectorGrants::grant(&name, &info, config).map_err(|err| fail(err.to_string()))?;
    for warning in warnings {
        tracing::warn!("connector {name}: {warning}");
    }
    store.data_mut().grants = grants;
    let instance = Instance { store, bindings, poisoned: None };
    Ok(WasmConnector::new(info, instance, runtime.limits.connector_call))
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
