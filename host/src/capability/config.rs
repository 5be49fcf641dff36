//! The `config` capability: a connector reads the non-secret keys it declared.

use crate::runtime::bindings::connector::flue::sandbox::config;
use crate::sandbox::wasm::ConnectorState;

impl config::Host for ConnectorState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.grants.config.get(&key).cloned())
    }
}
