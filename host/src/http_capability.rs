//! The HTTP capability of a connector: the only way it reaches the network.
//!
//! Every request passes this one choke point:
//!
//! * the destination, and every redirect hop, must match the connector's
//!   [`AllowedHosts`]; names resolve only to public addresses unless a
//!   configured URL names a private one (no SSRF into the host's network);
//! * `{{SECRET}}` placeholders in header values are replaced with the
//!   secret's value — secrets never enter the connector's memory — and
//!   secret values are redacted from responses, logs and errors;
//! * connect and total timeouts, and a cap on the response size.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};

use crate::allowed_hosts::{AllowedHosts, Refusal, is_public, origin};
use crate::bindings::connector::flue::sandbox::http;

/// Timeouts and caps of connector HTTP.
#[derive(Clone, Debug)]
pub struct HttpLimits {
    pub connect_timeout: Duration,
    /// When the connector gives no timeout.
    pub default_timeout: Duration,
    /// The most a connector may ask for.
    pub max_timeout: Duration,
    pub max_response_bytes: usize,
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

pub struct HttpCapability {
    connector: String,
    policy: Arc<AllowedHosts>,
    /// (name, value) of the secrets the connector declared.
    secrets: Vec<(String, String)>,
    /// `None` when the connector may call nothing.
    client: Option<reqwest::Client>,
    limits: HttpLimits,
}

impl HttpCapability {
    pub fn deny_all(connector: &str) -> Self {
        HttpCapability {
            connector: connector.into(),
            policy: Arc::default(),
            secrets: Vec::new(),
            client: None,
            limits: HttpLimits::default(),
        }
    }

    pub fn new(
        connector: &str,
        policy: AllowedHosts,
        secrets: Vec<(String, String)>,
        limits: HttpLimits,
    ) -> anyhow::Result<Self> {
        if policy.is_empty() {
            return Ok(HttpCapability { secrets, ..Self::deny_all(connector) });
        }
        let policy = Arc::new(policy);
        let redirect_policy = {
            let policy = policy.clone();
            let max = limits.max_redirects;
            reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= max {
                    return attempt.error(format!("more than {max} redirects"));
                }
                match policy.check(attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(refusal) => attempt.error(format!("redirect refused: {refusal}")),
                }
            })
        };
        let client = reqwest::Client::builder()
            .redirect(redirect_policy)
            .dns_resolver(Arc::new(PublicResolver { policy: policy.clone() }))
            .connect_timeout(limits.connect_timeout)
            .no_proxy()
            .build()?;
        Ok(HttpCapability { connector: connector.into(), policy, secrets, client: Some(client), limits })
    }

    /// Replace every secret value in `text` with `[redacted NAME]`.
    pub fn redact(&self, text: &str) -> String {
        // Whole UTF-8 secrets replaced by ASCII leave valid UTF-8.
        String::from_utf8_lossy(&self.redact_bytes(text.as_bytes().to_vec())).into_owned()
    }

    fn redact_bytes(&self, body: Vec<u8>) -> Vec<u8> {
        let mut body = body;
        for (name, value) in &self.secrets {
            if value.is_empty() || memchr::memmem::find(&body, value.as_bytes()).is_none() {
                continue;
            }
            let replacement = format!("[redacted {name}]").into_bytes();
            let mut out = Vec::with_capacity(body.len());
            let mut at = 0;
            for found in memchr::memmem::find_iter(&body, value.as_bytes()) {
                out.extend_from_slice(&body[at..found]);
                out.extend_from_slice(&replacement);
                at = found + value.len();
            }
            out.extend_from_slice(&body[at..]);
            body = out;
        }
        body
    }

    /// Fill `{{NAME}}` placeholders of declared secrets in a header value.
    fn substitute(&self, value: &str) -> Result<String, String> {
        let mut out = String::new();
        let mut rest = value;
        while let Some(start) = rest.find("{{") {
            let end = rest[start..].find("}}").ok_or("unterminated {{ placeholder")? + start;
            let name = rest[start + 2..end].trim();
            let (_, secret) =
                self.secrets.iter().find(|(n, _)| n == name).ok_or_else(|| {
                    format!("{{{{{name}}}}} is not a secret this connector declared, or it is not set")
                })?;
            out.push_str(&rest[..start]);
            out.push_str(secret);
            rest = &rest[end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }

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
        let Some(client) = &self.client else {
            return Err(deny(Refusal::NotAllowed { origin: origin(&url), allowed: "none".into() }));
        };

        let mut headers = HeaderMap::new();
        for (name, value) in &request.headers {
            let name =
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid(format!("bad header name {name:?}")))?;
            let value = self.substitute(value).map_err(|e| invalid(format!("header {name}: {e}")))?;
            let mut value =
                HeaderValue::from_str(&value).map_err(|_| invalid(format!("bad value for header {name}")))?;
            if self
                .secrets
                .iter()
                .any(|(_, s)| !s.is_empty() && memchr::memmem::find(value.as_bytes(), s.as_bytes()).is_some())
            {
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
        Ok(http::Response { status, headers, body: self.redact_bytes(body) })
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

/// Resolves names to public addresses only, unless a configured URL names
/// the host (then its private addresses are allowed too).
struct PublicResolver {
    policy: Arc<AllowedHosts>,
}

impl reqwest::dns::Resolve for PublicResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = if policy.may_resolve_private(&host) {
                all
            } else {
                all.into_iter().filter(|a| is_public(a.ip())).collect()
            };
            if allowed.is_empty() {
                return Err(format!(
                    "{host} resolves only to private or loopback addresses, which connectors may not reach"
                )
                .into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The secrets (declared `secret` keys that are set) a connector's requests may carry.
pub fn secrets_for(keys: &[crate::backend::ConfigKey], config: &HashMap<String, String>) -> Vec<(String, String)> {
    keys.iter().filter(|k| k.secret).filter_map(|k| config.get(&k.name).map(|v| (k.name.clone(), v.clone()))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capability() -> HttpCapability {
        HttpCapability { secrets: vec![("API_KEY".into(), "s3cr3t".into())], ..HttpCapability::deny_all("test") }
    }

    #[test]
    fn placeholders_are_filled_only_for_declared_secrets() {
        let cap = capability();
        assert_eq!(cap.substitute("Bearer {{API_KEY}}").unwrap(), "Bearer s3cr3t");
        assert_eq!(cap.substitute("plain").unwrap(), "plain");
        assert!(cap.substitute("{{HOME}}").is_err());
        assert!(cap.substitute("{{API_KEY").is_err());
    }

    #[test]
    fn secrets_are_redacted_from_text_and_bodies() {
        let cap = capability();
        assert_eq!(cap.redact("key=s3cr3t!"), "key=[redacted API_KEY]!");
        assert_eq!(cap.redact_bytes(b"xs3cr3ts3cr3t".to_vec()), b"x[redacted API_KEY][redacted API_KEY]".to_vec());
    }
}
