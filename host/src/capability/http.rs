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

use super::Capabilities;
use super::allowed_hosts::{AllowedHosts, Refusal, origin};
use super::egress::PublicResolver;
use crate::bindings::connector::flue::sandbox::http;
use crate::bindings::handles::{OutgoingBody, ResponseStream};
use crate::secrets::Secrets;
use wasmtime::component::Resource;

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

    /// Check a request and build it: the destination against the allowlist,
    /// secrets filled into headers, the timeout capped. Every request, whole
    /// or streamed, goes through here.
    fn prepare(
        &self,
        method: &str,
        url: &str,
        headers: &[(String, String)],
        timeout_ms: Option<u64>,
    ) -> Result<Prepared, http::HttpError> {
        let invalid = |m: String| http::HttpError::InvalidRequest(m);
        let url = Url::parse(url).map_err(|e| invalid(format!("{url:?} is not a URL: {e}")))?;
        let method = Method::from_bytes(method.as_bytes()).map_err(|_| invalid(format!("bad method {method:?}")))?;
        let deny = |refusal: Refusal| {
            http::HttpError::Denied(format!("connector {} may not call it: {refusal}", self.connector))
        };
        self.policy.check(&url).map_err(deny)?;
        let client = if self.policy.allows_private(&url) { &self.private } else { &self.public };
        let Some(client) = client else {
            return Err(deny(Refusal::NotAllowed { origin: origin(&url), allowed: "none".into() }));
        };

        let mut header_map = HeaderMap::new();
        for (name, value) in headers {
            let name =
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid(format!("bad header name {name:?}")))?;
            let value = self.secrets.substitute(value).map_err(|e| invalid(format!("header {name}: {e}")))?;
            let mut value =
                HeaderValue::from_str(&value).map_err(|_| invalid(format!("bad value for header {name}")))?;
            if self.secrets.appear_in(value.as_bytes()) {
                value.set_sensitive(true);
            }
            header_map.append(name, value);
        }
        let timeout =
            timeout_ms.map(Duration::from_millis).unwrap_or(self.limits.default_timeout).min(self.limits.max_timeout);
        let builder = client.request(method, url.clone()).headers(header_map).timeout(timeout);
        Ok(Prepared { builder, url, timeout })
    }

    async fn perform(&self, request: http::Request) -> Result<http::Response, http::HttpError> {
        let prepared = self.prepare(&request.method, &request.url, &request.headers, request.timeout_ms)?;
        let (url, timeout) = (prepared.url.clone(), prepared.timeout);
        let mut response =
            prepared.builder.body(request.body).send().await.map_err(|err| self.transport_error(&url, timeout, err))?;
        let status = response.status().as_u16();
        let headers = self.response_headers(&response);
        let cap = self.limits.max_response_bytes;
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|err| self.transport_error(&url, timeout, err))? {
            if body.len() + chunk.len() > cap {
                return Err(http::HttpError::TooLarge(format!(
                    "the response from {} is larger than {cap} bytes (read large bodies with fetch)",
                    origin(&url)
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(http::Response { status, headers, body: self.secrets.redact_bytes(body) })
    }

    /// A response's headers, secrets redacted.
    fn response_headers(&self, response: &reqwest::Response) -> Vec<(String, String)> {
        response
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), self.redact(&String::from_utf8_lossy(v.as_bytes()))))
            .collect()
    }

    /// Start `head`, its body to follow through the returned [`OutgoingBody`].
    fn start(&self, head: http::RequestHead) -> Result<OutgoingBody, http::HttpError> {
        let prepared = self.prepare(&head.method, &head.url, &head.headers, head.timeout_ms)?;
        // Two parts in flight at most: the connector waits while the
        // network catches up, so memory holds a part or two, never the body.
        let (sender, receiver) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(2);
        let parts = futures_util::stream::unfold(receiver, |mut rx| async move { rx.recv().await.map(|p| (p, rx)) });
        let body = reqwest::Body::wrap_stream(parts);
        let request = prepared.builder.body(body).send();
        Ok(OutgoingBody {
            sender: Some(sender),
            response: Some(tokio::spawn(request)),
            url: prepared.url,
            timeout: prepared.timeout,
        })
    }

    /// Send `request` and hand back its response to be read in parts.
    async fn fetch(&self, request: http::Request) -> Result<ResponseStream, http::HttpError> {
        let prepared = self.prepare(&request.method, &request.url, &request.headers, request.timeout_ms)?;
        let (url, timeout) = (prepared.url.clone(), prepared.timeout);
        let response =
            prepared.builder.body(request.body).send().await.map_err(|err| self.transport_error(&url, timeout, err))?;
        Ok(self.stream(response, url, timeout))
    }

    fn stream(&self, response: reqwest::Response, url: Url, timeout: Duration) -> ResponseStream {
        ResponseStream {
            status: response.status().as_u16(),
            headers: self.response_headers(&response),
            response,
            url,
            timeout,
            buffer: Vec::new(),
            redacted: 0,
            done: false,
        }
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

/// A checked request, ready for its body.
struct Prepared {
    builder: reqwest::RequestBuilder,
    url: Url,
    timeout: Duration,
}

impl http::Host for Capabilities<'_> {
    async fn send(&mut self, request: http::Request) -> wasmtime::Result<Result<http::Response, http::HttpError>> {
        let view = self;
        Ok(view.grants.http.send(request).await)
    }

    async fn start(
        &mut self,
        request: http::RequestHead,
    ) -> wasmtime::Result<Result<Resource<OutgoingBody>, http::HttpError>> {
        let view = self;
        match view.grants.http.start(request) {
            Ok(body) => Ok(Ok(view.table.push(body)?)),
            Err(err) => Ok(Err(err)),
        }
    }

    async fn fetch(
        &mut self,
        request: http::Request,
    ) -> wasmtime::Result<Result<Resource<ResponseStream>, http::HttpError>> {
        let view = self;
        match view.grants.http.fetch(request).await {
            Ok(stream) => Ok(Ok(view.table.push(stream)?)),
            Err(err) => Ok(Err(err)),
        }
    }
}

impl http::HostOutgoingBody for Capabilities<'_> {
    async fn write(
        &mut self,
        this: Resource<OutgoingBody>,
        data: Vec<u8>,
    ) -> wasmtime::Result<Result<(), http::HttpError>> {
        let view = self;
        let body = view.table.get_mut(&this)?;
        let Some(sender) = &body.sender else {
            return Ok(Err(http::HttpError::InvalidRequest("the body was already finished".into())));
        };
        if sender.send(Ok(data.into())).await.is_ok() {
            return Ok(Ok(()));
        }
        // The request ended early: say why.
        let (url, timeout) = (body.url.clone(), body.timeout);
        let outcome = match body.response.take() {
            Some(request) => request.await,
            None => return Ok(Err(http::HttpError::Transport("the request already failed".into()))),
        };
        Ok(Err(match outcome {
            Ok(Err(err)) => view.grants.http.transport_error(&url, timeout, err),
            _ => http::HttpError::Transport(format!("{}: the request ended before its body", origin(&url))),
        }))
    }

    async fn finish(
        &mut self,
        this: Resource<OutgoingBody>,
    ) -> wasmtime::Result<Result<Resource<ResponseStream>, http::HttpError>> {
        let view = self;
        let body = view.table.get_mut(&this)?;
        body.sender = None; // the end of the body
        let (url, timeout) = (body.url.clone(), body.timeout);
        let Some(request) = body.response.take() else {
            return Ok(Err(http::HttpError::InvalidRequest("the body was already finished".into())));
        };
        let response = match request.await {
            Ok(Ok(response)) => response,
            Ok(Err(err)) => return Ok(Err(view.grants.http.transport_error(&url, timeout, err))),
            Err(err) => return Ok(Err(http::HttpError::Transport(format!("{}: {err}", origin(&url))))),
        };
        let stream = view.grants.http.stream(response, url, timeout);
        Ok(Ok(view.table.push(stream)?))
    }

    async fn drop(&mut self, this: Resource<OutgoingBody>) -> wasmtime::Result<()> {
        let view = self;
        view.table.delete(this)?;
        Ok(())
    }
}

impl http::HostResponseStream for Capabilities<'_> {
    async fn status(&mut self, this: Resource<ResponseStream>) -> wasmtime::Result<u16> {
        let view = self;
        Ok(view.table.get(&this)?.status)
    }

    async fn headers(&mut self, this: Resource<ResponseStream>) -> wasmtime::Result<Vec<(String, String)>> {
        let view = self;
        Ok(view.table.get(&this)?.headers.clone())
    }

    async fn read(
        &mut self,
        this: Resource<ResponseStream>,
        max: u32,
    ) -> wasmtime::Result<Result<Vec<u8>, http::HttpError>> {
        let view = self;
        let max = (max as usize).clamp(1, MAX_STREAM_PART);
        let stream = view.table.get_mut(&this)?;
        let secrets = &view.grants.http.secrets;
        // Wait for the first part; then take what has already arrived, up to
        // `max`, so that a big download crosses into the guest in few calls.
        // Each byte is copied once here: into `buffer`, redacted in place.
        while stream.redacted < max && !stream.done {
            let chunk = if stream.redacted == 0 {
                stream.response.chunk().await
            } else {
                // `chunk` takes nothing from the body until it is ready.
                match futures_util::FutureExt::now_or_never(stream.response.chunk()) {
                    Some(chunk) => chunk,
                    None => break,
                }
            };
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(err) => {
                    let (url, timeout) = (stream.url.clone(), stream.timeout);
                    return Ok(Err(view.grants.http.transport_error(&url, timeout, err)));
                }
            };
            stream.done = chunk.is_none();
            stream.buffer.extend_from_slice(chunk.as_deref().unwrap_or_default());
            stream.redacted = secrets.redact_tail(&mut stream.buffer, stream.redacted, stream.done);
        }
        let n = stream.redacted.min(max);
        stream.redacted -= n;
        if n == stream.buffer.len() {
            return Ok(Ok(std::mem::take(&mut stream.buffer)));
        }
        let rest = stream.buffer.split_off(n);
        Ok(Ok(std::mem::replace(&mut stream.buffer, rest)))
    }

    async fn drop(&mut self, this: Resource<ResponseStream>) -> wasmtime::Result<()> {
        let view = self;
        view.table.delete(this)?;
        Ok(())
    }
}

/// The most one `read` of a response stream returns.
const MAX_STREAM_PART: usize = 8 * 1024 * 1024;
