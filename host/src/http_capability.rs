//! The HTTP capability of a connector: the only way it reaches the network.
//!
//! This version grants no network at all: every request is refused with a
//! clear reason. (The allowlisted, secret-substituting client lands with the
//! Daytona connector.)

use crate::bindings::connector::flue::sandbox::http;

pub struct HttpCapability {
    connector: String,
}

impl HttpCapability {
    pub fn deny_all(connector: &str) -> Self {
        HttpCapability { connector: connector.to_string() }
    }

    pub async fn send(&self, request: http::Request) -> Result<http::Response, http::HttpError> {
        Err(http::HttpError::Denied(format!(
            "connector {} may not call {} {}: it has no network access in this host",
            self.connector, request.method, request.url
        )))
    }

    /// Remove secrets from text that leaves the connector (logs, errors).
    pub fn redact(&self, text: &str) -> String {
        text.to_string()
    }
}
