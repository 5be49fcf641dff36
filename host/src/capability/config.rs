//! The `config` capability: a connector reads the non-secret keys it declared.

use super::Capabilities;
use crate::bindings::connector::flue::sandbox::config;

impl config::Host for Capabilities<'_> {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.grants.config.get(&key).cloned())
    }
}
