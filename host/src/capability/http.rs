//! The HTTP capability of a connector: the only way it reaches the network.
//!
//! Every request passes this one choke point:
//!
//! * the destination, and every redirect hop, must match the connector's
//!   [`AllowedHosts`]; names resolve only to public addresses unless a
//!   configured URL names a private one ([`super::egress`]: no SSRF into the
//!   host's network);
//! * `{{SECRET}}` placeholders in header values are replaced with the
//!   secret's value — secrets never enter the connector's memory — and
//!   secret values are redacted from responses, logs and errors
//!   ([`Secrets`]);
//! * connect and total timeouts, and a cap on the response size.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};

use super::allowed_hosts::{AllowedHosts, Refusal, origin};
use super::egress::PublicResolver;
use super::secrets::Secrets;
use crate::runtime::bindings::connector::flue::sandbox::http;
use crate::sandbox::wasm::ConnectorState;

/// Timeouts and caps of connector HTTP.
#[derive(Clone, Debug)]
pub struct HttpLimits {
    /// To establish a connection.
    pub connect_timeout: Duration,
    /// When the connector gives no timeout.
    pub default_timeout: Duration,
    /// The most a connector may ask for.
    pub max_timeout: Duration,
    /// The largest response body accepted.
    pub max_response_bytes: usize,
    /// Redirect hops followed (each one re-checked).
    pub max_redirects: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            connect_timeout: Duration::from_secs(10),
            default_timeout: Duration::from_secs(60),
            max_timeout: Duration::from_secs(30 * 60),
            max_response_bytes: 256 * 1024 * 1024,
            max_redirects: 5,
        }
    }
}

/// One connector's HTTP: its allowlist, its secrets, its clients.
pub struct HttpCapability {
    connector: String,
    policy: Arc<AllowedHosts>,
    secrets: Secrets,
    /// For every allowed origin; names resolve to public addresses only.
    /// `None` when the connector may call nothing.
    public: Option<reqwest::Client>,
    /// For the origins configured URLs name as private addresses (a test
    /// server on 127.0.0.1, a self-hosted Daytona on the LAN), and only
    /// those: its redirects may not leave them.
    private: Option<reqwest::Client>,
    limits: HttpLimits,
}

impl HttpCapability {
    /// No network at all (a connector before `info()` declared anything).
    pub fn deny_all(connector: &str) -> Self {
        HttpCapability {
            connector: connector.into(),
            policy: Arc::default(),
            secrets: Secrets::default(),
            public: None,
            private: None,
            limits: HttpLimits::default(),
        }
    }

    /// Requests to `policy`'s origins, carrying `secrets`, within `limits`.
    pub fn new(connector: &str, policy: AllowedHosts, secrets: Secrets, limits: HttpLimits) -> anyhow::Result<Self> {
        if policy.is_empty() {
            return Ok(HttpCapability { secrets, ..Self::deny_all(connector) });
        }
        let policy = Arc::new(policy);
        let public = client(&policy, &limits, false)?;
        let private = if policy.has_private() { Some(client(&policy, &limits, true)?) } else { None };
        Ok(HttpCapability { connector: connector.into(), policy, secrets, public: Some(public), private, limits })
    }

    /// Replace every secret value in `text` with `[redacted NAME]`.
    pub fn redact(&self, text: &str) -> String {
        self.secrets.redact(text)
    }

    /// Perform `request`, checked and filled in.
    pub async fn send(&self, request: http::Request) -> Result<http::Response, http::HttpError> {
        let started = Instant::now();
        let method_and_url = format!("{} {}", request.method, request.url.split('?').next().unwrap_or(""));
        let result = self.perform(request).await;
        match &result {
            Ok(response) => tracing::debug!(
                "connector {}: {method_and_url} → {} in {:?}",
                self.connector,
                response.status,
                started.elapsed()
            ),
            Err(err) => tracing::debug!("connector {}: {method_and_url} → {err:?}", self.connector),
        }
        result
    }

    async fn perform(&self, request: http::Request) -> Result<http::Response, http::HttpError> {
        let invalid = |m: String| http::HttpError::InvalidRequest(m);
        let url = Url::parse(&request.url).map_err(|e| invalid(format!("{:?} is not a URL: {e}", request.url)))?;
        let method = Method::from_bytes(request.method.as_bytes())
            .map_err(|_| invalid(format!("bad method {:?}", request.method)))?;
        let deny = |refusal: Refusal| {
            http::HttpError::Denied(format!("connector {} may not call it: {refusal}", self.connector))
        };
        self.policy.check(&url).map_err(deny)?;
        let client = if self.policy.allows_private(&url) { &self.private } else { &self.public };
        let Some(client) = client else {
            return Err(deny(Refusal::NotAllowed { origin: origin(&url), allowed: "none".into() }));
        };

        let mut headers = HeaderMap::new();
        for (name, value) in &request.headers {
            let name =
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid(format!("bad header name {name:?}")))?;
            let value = self.secrets.substitute(value).map_err(|e| invalid(format!("header {name}: {e}")))?;
            let mut value =
                HeaderValue::from_str(&value).map_err(|_| invalid(format!("bad value for header {name}")))?;
            if self.secrets.appear_in(value.as_bytes()) {
                value.set_sensitive(true);
            }
            headers.append(name, value);
        }
        let timeout = request
            .timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(self.limits.default_timeout)
            .min(self.limits.max_timeout);

        let mut response = client
            .request(method, url.clone())
            .headers(headers)
            .body(request.body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|err| self.transport_error(&url, timeout, err))?;

        let status = response.status().as_u16();
        let headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), self.redact(&String::from_utf8_lossy(v.as_bytes()))))
            .collect();
        let cap = self.limits.max_response_bytes;
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|err| self.transport_error(&url, timeout, err))? {
            if body.len() + chunk.len() > cap {
                return Err(http::HttpError::TooLarge(format!(
                    "the response from {} is larger than {cap} bytes",
                    origin(&url)
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(http::Response { status, headers, body: self.secrets.redact_bytes(body) })
    }

    fn transport_error(&self, url: &Url, timeout: Duration, err: reqwest::Error) -> http::HttpError {
        let origin = origin(url);
        let (is_redirect, is_timeout, is_connect) = (err.is_redirect(), err.is_timeout(), err.is_connect());
        // reqwest's message and its causes, without the URL (named as origin).
        let err = err.without_url();
        let mut detail = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            detail.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        let detail = self.redact(&detail);
        if is_redirect {
            http::HttpError::Denied(format!("{origin}: {detail}"))
        } else if is_timeout {
            http::HttpError::Timeout(format!("{origin}: no response within {timeout:?}"))
        } else if is_connect {
            http::HttpError::Transport(format!("cannot connect to {origin}: {detail}"))
        } else {
            http::HttpError::Transport(format!("{origin}: {detail}"))
        }
    }
}

/// A client that re-checks every redirect hop. With `private`, its resolver
/// may return private addresses for configured names, and its redirects must
/// stay on configured private origins; without, names resolve to public
/// addresses only.
fn client(policy: &Arc<AllowedHosts>, limits: &HttpLimits, private: bool) -> anyhow::Result<reqwest::Client> {
    let redirect_policy = {
        let policy = policy.clone();
        let max = limits.max_redirects;
        reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= max {
                return attempt.error(format!("more than {max} redirects"));
            }
            if let Err(refusal) = policy.check(attempt.url()) {
                return attempt.error(format!("redirect refused: {refusal}"));
            }
            if private && !policy.allows_private(attempt.url()) {
                let to = origin(attempt.url());
                return attempt
                    .error(format!("redirect refused: from a configured private address to {to}, which is not one"));
            }
            attempt.follow()
        })
    };
    Ok(reqwest::Client::builder()
        .redirect(redirect_policy)
        .dns_resolver(Arc::new(PublicResolver { policy: policy.clone(), private }))
        .connect_timeout(limits.connect_timeout)
        .no_proxy()
        .build()?)
}

impl http::Host for ConnectorState {
    async fn send(&mut self, request: http::Request) -> wasmtime::Result<Result<http::Response, http::HttpError>> {
        Ok(self.grants.http.send(request).await)
    }
}
