//! What a connector is granted: configuration, secrets and network, decided
//! once from what it declares in `info()` and what the user configured.
//!
//! Each capability is one module here, implementing its WIT interface for
//! any store that shows a [`CapabilityView`] (its table and its grants); its
//! grant is a field of [`ConnectorGrants`]. A new capability is a module
//! plus a field and its grant below.

pub mod allowed_hosts;
mod config;
pub mod egress;
pub mod http;

use std::collections::HashMap;

use crate::secrets::{self, Secrets};
use allowed_hosts::AllowedHosts;
use http::{HttpCapability, HttpLimits};

/// What a store shows the capabilities, as `WasiView` shows WASI its
/// context: they serve any store that has one, and know nothing else of it.
pub trait CapabilityView: Send {
    /// The store's resource table and the grants of the guest it runs.
    fn capabilities(&mut self) -> Capabilities<'_>;
}

/// A store's parts the capabilities use; the capabilities' WIT interfaces
/// are implemented on it, and linked with [`CapabilitiesData`].
pub struct Capabilities<'a> {
    /// Where the guest's handles (request bodies, response streams) live.
    pub table: &'a mut wasmtime::component::ResourceTable,
    /// What the guest was granted.
    pub grants: &'a ConnectorGrants,
}

/// Links the capabilities' interfaces to a store's [`Capabilities`].
pub struct CapabilitiesData;

impl wasmtime::component::HasData for CapabilitiesData {
    type Data<'a> = Capabilities<'a>;
}

/// Link the capabilities' interfaces (`http`, `config`) for stores of `T`.
pub fn add_to_linker<T: CapabilityView>(linker: &mut wasmtime::component::Linker<T>) -> wasmtime::Result<()> {
    use crate::bindings::connector::flue::sandbox;
    sandbox::http::add_to_linker::<T, CapabilitiesData>(linker, T::capabilities)?;
    sandbox::config::add_to_linker::<T, CapabilitiesData>(linker, T::capabilities)
}

use crate::sandbox::ConnectorInfo;

/// Why a connector cannot be granted what it declared.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// Its `info()` declares settings it may not have.
    #[error("{0}")]
    Declaration(String),
    /// A secret is too short to be redacted reliably.
    #[error(
        "{key} is too short ({len} characters, at least {min} are needed): flue redacts secrets from \
             everything a connector or a server sends back, which is unreliable for shorter values"
    )]
    ShortSecret {
        /// The setting.
        key: String,
        /// Its length.
        len: usize,
        /// The minimum.
        min: usize,
    },
    /// Its HTTP client could not be built.
    #[error("cannot set up its HTTP client: {0}")]
    Http(anyhow::Error),
}

/// The prefix of the settings connector `name` may declare: `daytona.wasm`
/// reads `DAYTONA_*`.
pub fn namespace(name: &str) -> String {
    format!("{}_", name.to_ascii_uppercase().replace('-', "_"))
}

/// The setting through which the user grants connector `name` keys outside
/// its namespace: `FLUE_GRANT_DAYTONA=GITHUB_TOKEN,OTHER`.
pub fn grant_key(name: &str) -> String {
    format!("FLUE_GRANT_{}", name.to_ascii_uppercase().replace('-', "_"))
}

/// Check what `info` declares against the rules: each key once, inside the
/// connector's namespace unless the user granted it, never a `FLUE_*` key.
fn check_declarations(
    connector: &str,
    info: &ConnectorInfo,
    config: &HashMap<String, String>,
) -> Result<(), GrantError> {
    let prefix = namespace(connector);
    let grant_key = grant_key(connector);
    let granted: Vec<&str> = config
        .get(&grant_key)
        .map(|list| list.split(|c: char| c == ',' || c.is_whitespace()).filter(|k| !k.is_empty()).collect())
        .unwrap_or_default();
    let mut problems = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for key in &info.config {
        let name = key.name.as_str();
        if seen.contains(&name) {
            problems.push(format!("declares {name} more than once (a key is either secret or plain)"));
            continue;
        }
        seen.push(name);
        if name.starts_with("FLUE_") {
            problems.push(format!("declares {name}, but FLUE_* settings belong to flue itself"));
        } else if !name.starts_with(&prefix) && !granted.contains(&name) {
            problems.push(format!(
                "declares {name}, outside its namespace {prefix}*: connectors see only their own settings \
                 (grant it explicitly with {grant_key}={name})"
            ));
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(GrantError::Declaration(problems.join("; "))) }
}

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
    ) -> Result<(Self, Vec<String>), GrantError> {
        check_declarations(connector, info, config)?;
        let mut declared = HashMap::new();
        for key in info.config.iter().filter(|k| !k.secret) {
            if let Some(value) = config.get(&key.name).or(key.default_value.as_ref()) {
                declared.insert(key.name.clone(), value.clone());
            }
        }
        let (policy, warnings) = AllowedHosts::parse(&info.allowed_hosts, &declared);
        // The declared secret keys that are set.
        let secrets = Secrets::from_pairs(
            info.config
                .iter()
                .filter(|k| k.secret)
                .filter_map(|k| config.get(&k.name).map(|v| (k.name.clone(), v.clone())))
                .collect(),
        );
        if let Some((key, len)) = secrets.too_short() {
            return Err(GrantError::ShortSecret { key, len, min: secrets::MIN_SECRET_LEN });
        }
        let http = HttpCapability::new(connector, policy, secrets, HttpLimits::default()).map_err(GrantError::Http)?;
        Ok((ConnectorGrants { config: declared, http }, warnings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::ConfigKey;

    fn info(keys: &[(&str, bool)]) -> ConnectorInfo {
        ConnectorInfo {
            name: "evil".into(),
            version: "0".into(),
            description: String::new(),
            config: keys
                .iter()
                .map(|(name, secret)| ConfigKey {
                    name: name.to_string(),
                    description: String::new(),
                    secret: *secret,
                    required: false,
                    default_value: None,
                })
                .collect(),
            allowed_hosts: Vec::new(),
            merges_output: false,
        }
    }

    fn grant(keys: &[(&str, bool)], config: &[(&str, &str)]) -> Result<ConnectorGrants, GrantError> {
        let config = config.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ConnectorGrants::grant("evil", &info(keys), &config).map(|(grants, _)| grants)
    }

    #[test]
    fn a_connector_sees_only_its_own_namespace_unless_granted() {
        let config = [("EVIL_URL", "u"), ("HOME", "/root"), ("GITHUB_TOKEN", "t")];
        assert_eq!(grant(&[("EVIL_URL", false)], &config).unwrap().config["EVIL_URL"], "u");
        let err = grant(&[("HOME", false)], &config).err().unwrap().to_string();
        assert!(err.contains("declares HOME, outside its namespace EVIL_*") && err.contains("FLUE_GRANT_EVIL=HOME"));
        let granted = [("HOME", "/root"), ("FLUE_GRANT_EVIL", "HOME, OTHER")];
        assert_eq!(grant(&[("HOME", false)], &granted).unwrap().config["HOME"], "/root");
        let err = grant(&[("FLUE_GRANT_EVIL", false)], &[]).err().unwrap().to_string();
        assert!(err.contains("belong to flue itself"), "{err}");
    }

    #[test]
    fn a_key_declared_secret_and_plain_is_refused() {
        let err = grant(&[("EVIL_KEY", true), ("EVIL_KEY", false)], &[("EVIL_KEY", "s3cr3t-value")]);
        assert!(err.err().unwrap().to_string().contains("declares EVIL_KEY more than once"));
    }

    #[test]
    fn short_secrets_are_refused() {
        let err = grant(&[("EVIL_KEY", true)], &[("EVIL_KEY", "k")]).err().unwrap().to_string();
        assert!(err.contains("EVIL_KEY is too short (1 characters"), "{err}");
    }
}
