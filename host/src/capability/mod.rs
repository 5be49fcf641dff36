//! What a connector is granted: configuration, secrets and network, decided
//! once from what it declares in `info()` and what the user configured.
//!
//! Each capability is one module here, implementing its WIT interface for
//! the connector's store ([`crate::sandbox::wasm::ConnectorState`]); its
//! grant is a field of [`ConnectorGrants`]. A new capability is a module
//! plus a field and its grant below.

pub mod allowed_hosts;
mod config;
pub mod egress;
pub mod http;
pub mod secrets;

use std::collections::HashMap;

use allowed_hosts::AllowedHosts;
use http::{HttpCapability, HttpLimits};
use secrets::Secrets;

use crate::sandbox::ConnectorInfo;

/// Everything one connector instance may use.
pub struct ConnectorGrants {
    /// Declared, non-secret configuration values (`config.get`).
    pub config: HashMap<String, String>,
    /// Requests to its allowed hosts, with its secrets filled in (`http.send`).
    pub http: HttpCapability,
}

impl ConnectorGrants {
    /// Nothing at all: what a connector has until `info()` has declared what
    /// it needs (it runs `info()` under these grants).
    pub fn none(connector: &str) -> Self {
        ConnectorGrants { config: HashMap::new(), http: HttpCapability::deny_all(connector) }
    }

    /// What `info` declares, from `config` (the user's configuration):
    /// the non-secret keys it declared, nothing else; its secrets stay in
    /// the host, for the HTTP capability to fill in. Returns the grants and
    /// warnings about allowed-hosts entries that were skipped.
    pub fn grant(
        connector: &str,
        info: &ConnectorInfo,
        config: &HashMap<String, String>,
    ) -> anyhow::Result<(Self, Vec<String>)> {
        let mut declared = HashMap::new();
        for key in info.config.iter().filter(|k| !k.secret) {
            if let Some(value) = config.get(&key.name).or(key.default_value.as_ref()) {
                declared.insert(key.name.clone(), value.clone());
            }
        }
        let (policy, warnings) = AllowedHosts::parse(&info.allowed_hosts, &declared);
        let secrets = Secrets::declared(&info.config, config);
        let http = HttpCapability::new(connector, policy, secrets, HttpLimits::default())?;
        Ok((ConnectorGrants { config: declared, http }, warnings))
    }
}
