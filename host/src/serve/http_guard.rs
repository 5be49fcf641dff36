//! Who may talk to the server, checked before any route runs:
//!
//! * **DNS rebinding**: on a loopback address, only requests naming the
//!   server by a loopback name (`localhost`, `127.0.0.1`, `[::1]`, any
//!   port) or an `--allowed-host` are served (`421`): a page on
//!   `evil.example` whose name was re-pointed at 127.0.0.1 sends
//!   `Host: evil.example`. The name is checked wherever the request gives
//!   it: the `Host` header (exactly one), and the target when it is in
//!   absolute form (`POST http://evil.example/agents/…`), which HTTP/1.1
//!   says wins over `Host`. With `--allowed-host`, any address checks it.
//! * **Cross-site requests from browsers**: an `Origin` that is not the
//!   server's own, or `Sec-Fetch-Site` other than `same-origin`/`none`, is
//!   refused (`403`); a `POST` body must be JSON — a `Content-Type` other
//!   than `application/json` (or `…+json`), such as the `text/plain` a
//!   page may send without asking first, is refused (`415`). A body with no
//!   `Content-Type` is taken as JSON: a page can send one, but a browser
//!   always adds `Origin` to a cross-origin `POST`, which is refused above.
//! * **The bearer token**, when set (`401`; `/healthz` is open, and so are
//!   the runs page's own files, which hold nothing of the server's). A
//!   browser gives it once to `POST /ui/login` and then sends it as the
//!   `flue_token` cookie (`HttpOnly`, `SameSite=Strict`): the checks above
//!   keep any other site from sending a request that carries it.

use std::sync::Arc;

use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};

use super::ServerState;
use super::errors::{ApiError, ErrorKind};

/// What the guard lets through.
#[derive(Clone, Debug, Default)]
pub struct GuardConfig {
    /// Check `Host` against the loopback names (a loopback listen address).
    pub loopback: bool,
    /// More host names to accept (`--allowed-host`), lower-case, without port.
    pub allowed_hosts: Vec<String>,
    /// Required as `Authorization: Bearer …` when set.
    pub token: Option<String>,
}

/// The names a loopback server answers to.
const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The host name of a `Host` header value: lower-case, without port,
/// brackets or a trailing dot. `None` if it is not a plausible host.
pub fn host_name(value: &str) -> Option<String> {
    let value = value.trim();
    let name = if let Some(rest) = value.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))) {
            return None;
        }
        inside
    } else {
        match value.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            Some(_) => return None,
            None => value,
        }
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    (!name.is_empty()).then_some(name)
}

impl GuardConfig {
    /// Why a request naming host `name` is refused, if it is.
    fn foreign_host(&self, name: &str) -> Option<ApiError> {
        let loopback_name = self.loopback && LOOPBACK_NAMES.contains(&name);
        (!loopback_name && !self.allowed_hosts.iter().any(|allowed| allowed == name)).then(|| {
            ApiError::new(
                ErrorKind::UnknownHost,
                format!(
                    "this server does not answer to the host name {name:?} (a request through a re-pointed DNS \
                     name?); use localhost or 127.0.0.1, or start the server with --allowed-host {name}"
                ),
            )
        })
    }

    /// Why this request is refused, if it is.
    fn refusal(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Option<ApiError> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if headers.get_all("host").iter().nth(1).is_some() {
            return Some(ApiError::new(ErrorKind::BadRequest, "the request has more than one Host header"));
        }
        let host = header("host");
        if self.loopback || !self.allowed_hosts.is_empty() {
            let Some(name) = host.and_then(host_name) else {
                return Some(ApiError::new(ErrorKind::BadRequest, "the request has no valid Host header"));
            };
            if let Some(refusal) = self.foreign_host(&name) {
                return Some(refusal);
            }
            if let Some(authority) = uri.authority() {
                let Some(name) = host_name(authority.host()) else {
                    return Some(ApiError::new(ErrorKind::BadRequest, "the request's target names no valid host"));
                };
                if let Some(refusal) = self.foreign_host(&name) {
                    return Some(refusal);
                }
            }
        }
        if let Some(origin) = header("origin") {
            let own = host.map(|h| format!("http://{}", h.trim()));
            if !own.is_some_and(|own| own.eq_ignore_ascii_case(origin.trim())) {
                return Some(ApiError::new(
                    ErrorKind::CrossOrigin,
                    format!(
                        "cross-origin requests are refused: this request comes from a page at {origin:?}, not from \
                         this server"
                    ),
                ));
            }
        }
        if let Some(site) = header("sec-fetch-site")
            && !matches!(site.trim(), "same-origin" | "none")
        {
            return Some(ApiError::new(
                ErrorKind::CrossOrigin,
                format!("cross-site requests are refused: the browser says this request is {site:?}"),
            ));
        }
        if let Some(token) = &self.token
            && !open_without_token(uri.path())
        {
            let expected = format!("Bearer {token}");
            let given = header("authorization").unwrap_or_default();
            let by_cookie = token_cookie(headers).is_some_and(|given| constant_time_eq(given, token.as_bytes()));
            if !constant_time_eq(given.as_bytes(), expected.as_bytes()) && !by_cookie {
                return Some(ApiError::new(
                    ErrorKind::Unauthorized,
                    "missing or wrong bearer token (Authorization: Bearer …)",
                ));
            }
        }
        if method == Method::POST
            && let Some(content_type) = headers.get("content-type")
        {
            let media = content_type.to_str().unwrap_or_default().split(';').next().unwrap_or_default();
            let media = media.trim().to_ascii_lowercase();
            if media != "application/json" && !(media.starts_with("application/") && media.ends_with("+json")) {
                return Some(ApiError::new(
                    ErrorKind::UnsupportedMediaType,
                    format!(
                        "the body must be JSON: send Content-Type: application/json (or none), not {media:?} \
                         (with curl: --json '{{…}}')"
                    ),
                ));
            }
        }
        None
    }
}

/// What anyone may ask for without the token: the health check, and the
/// runs page and its files (`POST /ui/login` checks the token itself).
fn open_without_token(path: &str) -> bool {
    path == "/healthz" || path == "/" || path == "/ui/login" || super::ui::is_asset(path)
}

/// The cookie a browser keeps the token in, once given.
pub const TOKEN_COOKIE: &str = "flue_token";

/// The value of the [`TOKEN_COOKIE`] cookie, if the request carries one.
fn token_cookie(headers: &HeaderMap) -> Option<&[u8]> {
    headers
        .get_all("cookie")
        .iter()
        .flat_map(|value| value.as_bytes().split(|b| *b == b';'))
        .find_map(|pair| pair.trim_ascii().strip_prefix(TOKEN_COOKIE.as_bytes())?.strip_prefix(b"="))
}

/// Whether `given` is the server's token (in constant time).
pub fn is_token(config: &GuardConfig, given: &str) -> bool {
    config.token.as_ref().is_some_and(|token| constant_time_eq(given.as_bytes(), token.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The middleware: refuse, or pass the request on.
pub async fn guard(
    axum::extract::State(state): axum::extract::State<Arc<ServerState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(refusal) = state.guard.refusal(request.method(), request.uri(), request.headers()) {
        return refusal.into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(target: &str, hosts: &[&str]) -> Option<ErrorKind> {
        let guard = GuardConfig { loopback: true, ..GuardConfig::default() };
        let mut headers = HeaderMap::new();
        for host in hosts {
            headers.append("host", host.parse().unwrap());
        }
        guard.refusal(&Method::POST, &target.parse().unwrap(), &headers).map(|refusal| refusal.kind)
    }

    #[test]
    fn the_host_is_checked_in_an_absolute_target_and_given_once() {
        assert_eq!(refusal("/agents/a/x", &["localhost"]), None);
        assert_eq!(refusal("http://localhost:1/agents/a/x", &["localhost"]), None);
        assert_eq!(refusal("http://[::1]/agents/a/x", &["127.0.0.1"]), None);
        assert_eq!(refusal("http://evil.example/agents/a/x", &["localhost"]), Some(ErrorKind::UnknownHost));
        assert_eq!(refusal("http://localhost@evil.example/a", &["localhost"]), Some(ErrorKind::UnknownHost));
        assert_eq!(refusal("/agents/a/x", &["localhost", "evil.example"]), Some(ErrorKind::BadRequest));
    }

    #[test]
    fn the_token_is_taken_from_the_header_or_its_cookie_and_the_page_is_open() {
        let guard = GuardConfig { token: Some("s3cret-token".into()), ..GuardConfig::default() };
        let ask = |path: &str, header: Option<(&'static str, &str)>| {
            let mut headers = HeaderMap::new();
            if let Some((name, value)) = header {
                headers.append(name, value.parse().unwrap());
            }
            guard.refusal(&Method::GET, &path.parse().unwrap(), &headers).map(|refusal| refusal.kind)
        };
        let unauthorized = Some(ErrorKind::Unauthorized);
        assert_eq!(ask("/runs", None), unauthorized);
        assert_eq!(ask("/runs", Some(("authorization", "Bearer s3cret-token"))), None);
        assert_eq!(ask("/runs", Some(("cookie", "a=b; flue_token=s3cret-token"))), None);
        assert_eq!(ask("/runs", Some(("cookie", "flue_token=s3cret-tokenX"))), unauthorized);
        assert_eq!(ask("/runs", Some(("cookie", "xflue_token=s3cret-token"))), unauthorized);
        assert_eq!(ask("/runs", Some(("cookie", "flue_token="))), unauthorized);
        for open in ["/", "/healthz", "/ui/login", "/ui/app.js", "/ui/app.css"] {
            assert_eq!(ask(open, None), None, "{open}");
        }
        assert_eq!(ask("/ui/other.js", None), unauthorized);
    }

    #[test]
    fn host_names_lose_port_brackets_case_and_trailing_dot() {
        assert_eq!(host_name("LocalHost:3583").as_deref(), Some("localhost"));
        assert_eq!(host_name("[::1]:80").as_deref(), Some("::1"));
        assert_eq!(host_name("127.0.0.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(host_name("example.com.:1").as_deref(), Some("example.com"));
        assert_eq!(host_name("evil.example:x"), None);
        assert_eq!(host_name("[::1]junk"), None);
        assert_eq!(host_name(""), None);
    }
}
