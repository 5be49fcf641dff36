//! The runs page (`GET /`): what agents did, live, in the browser — the
//! runs newest first, each run's timeline as it happens (over the run's
//! SSE), and the webhook agents with a form to invoke them. Its three files
//! are built into the binary (no CDN, no request elsewhere; a strict
//! content security policy says so to the browser) and use only the API
//! every client uses, with the same authentication: off loopback, the page
//! asks for the token once and `POST /ui/login` keeps it in an `HttpOnly`,
//! `SameSite=Strict` cookie.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::ServerState;
use super::errors::{ApiError, ErrorKind};
use super::http_guard::{self, TOKEN_COOKIE};

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/app.css");

/// The page's files besides `/`, by path, with their media types.
const ASSETS: [(&str, &str, &str); 2] =
    [("/ui/app.js", "text/javascript; charset=utf-8", SCRIPT), ("/ui/app.css", "text/css; charset=utf-8", STYLE)];

/// What the page may load and reach: only this server.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Whether `path` is one of the page's files (open without the token).
pub fn is_asset(path: &str) -> bool {
    ASSETS.iter().any(|(asset, _, _)| *asset == path)
}

/// `GET /`: the page.
pub async fn index() -> Response {
    file("text/html; charset=utf-8", INDEX)
}

/// `GET /ui/<file>`: one of its files.
pub async fn asset(uri: axum::http::Uri) -> Response {
    match ASSETS.iter().find(|(path, _, _)| *path == uri.path()) {
        Some((_, media, body)) => file(media, body),
        None => ApiError::new(ErrorKind::NotFound, "no such file of the runs page").into_response(),
    }
}

fn file(media: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    // A new flue may bring a new page: asked again each time (it is small).
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `POST /ui/login` `{"token": "…"}`: the token, checked and kept in the
/// browser's cookie. `204` with the cookie; `401` for a wrong token; `204`
/// without one where the server asks for none.
pub async fn login(State(state): State<Arc<ServerState>>, Json(body): Json<Value>) -> Response {
    if state.guard.token.is_none() {
        return StatusCode::NO_CONTENT.into_response();
    }
    let given = body.get("token").and_then(Value::as_str).unwrap_or_default();
    if !http_guard::is_token(&state.guard, given) {
        return ApiError::new(ErrorKind::Unauthorized, "wrong token: it is the one flue serve was given (--token)")
            .into_response();
    }
    // The token's own characters are those a cookie may carry (see the
    // check on --token); a value that could not be a header is refused.
    match HeaderValue::from_str(&format!("{TOKEN_COOKIE}={given}; Path=/; HttpOnly; SameSite=Strict")) {
        Ok(cookie) => ([(header::SET_COOKIE, cookie)], StatusCode::NO_CONTENT).into_response(),
        Err(_) => ApiError::new(ErrorKind::BadRequest, "this token cannot be kept in a cookie").into_response(),
    }
}

/// `POST /ui/logout`: the cookie forgotten.
pub async fn logout() -> Response {
    let expired = format!("{TOKEN_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, HeaderValue::from_str(&expired).expect("a header value"))], StatusCode::NO_CONTENT)
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_small_and_loads_nothing_from_elsewhere() {
        let total = INDEX.len() + SCRIPT.len() + STYLE.len();
        assert!(total < 150 * 1024, "the page is {total} bytes");
        for (name, text) in [("index.html", INDEX), ("app.js", SCRIPT), ("app.css", STYLE)] {
            for outside in ["http://", "https://", "//cdn", "@import"] {
                assert!(!text.contains(outside), "{name} names {outside}");
            }
            // Text from runs is set as text, never parsed as HTML.
            assert!(!text.contains("innerHTML") && !text.contains("outerHTML"), "{name}");
        }
        assert!(INDEX.contains("/ui/app.js") && INDEX.contains("/ui/app.css"));
    }
}
