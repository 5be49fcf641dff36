//! hyper answers a request it cannot parse itself, before any route runs:
//! `400` (a malformed request line or header), `414` (a target too long),
//! `431` (too many or too large headers), each with an empty body. This
//! socket wrapper puts those answers in the one error shape as they are
//! written, so that a client gets JSON whatever it sent.
//!
//! hyper writes such an answer as a head alone, at the start of a write,
//! with `content-length: 0` and no `content-type` — which no answer of the
//! server's own is (every error of its own is JSON). Anything else passes
//! through untouched.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::errors::{ApiError, ErrorKind};

/// A socket whose parse-error answers are JSON.
pub struct JsonParseErrors<T> {
    inner: T,
    /// An answer being written in place of hyper's, and the length of
    /// hyper's (what it is told was written once ours is).
    replacing: Option<(Vec<u8>, usize)>,
}

impl<T> JsonParseErrors<T> {
    pub fn new(inner: T) -> Self {
        JsonParseErrors { inner, replacing: None }
    }
}

/// The longest head hyper's parse-error answers have (they are about 100
/// bytes); a longer write is never one.
const MAX_HEAD: usize = 512;

/// The JSON answer for `head`, if it is one of hyper's parse-error answers.
/// Cheap for every other write: most are refused on their first bytes.
fn json_answer(head: &[u8]) -> Option<Vec<u8>> {
    if head.len() > MAX_HEAD || !(head.starts_with(b"HTTP/1.1 4") || head.starts_with(b"HTTP/1.0 4")) {
        return None;
    }
    let text = std::str::from_utf8(head).ok()?;
    let status = text.strip_prefix("HTTP/1.1 ").or_else(|| text.strip_prefix("HTTP/1.0 "))?.get(..3)?;
    let (kind, message) = match status {
        "400" => {
            (ErrorKind::BadRequest, "the request is not valid HTTP/1.1: its request line or a header is malformed")
        }
        "414" => (ErrorKind::UriTooLong, "the request's target (its path and query) is too long"),
        "431" => (ErrorKind::HeadersTooLarge, "the request has too many headers, or headers too large"),
        _ => return None,
    };
    let lower = text.to_ascii_lowercase();
    if !lower.ends_with("\r\n\r\n") || !lower.contains("\r\ncontent-length: 0\r\n") || lower.contains("content-type:") {
        return None;
    }
    let status = kind.status();
    let body = serde_json::json!({"error": ApiError::new(kind, message).to_json()}).to_string();
    Some(
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            status.as_u16(),
            status.canonical_reason().unwrap_or_default(),
            body.len()
        )
        .into_bytes(),
    )
}

impl<T: AsyncWrite + Unpin> JsonParseErrors<T> {
    /// Write our answer in place of hyper's; `Ready` with hyper's length
    /// once all of it is written.
    fn poll_replacing(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        let Some((answer, replaced)) = &mut self.replacing else { unreachable!("called while replacing") };
        while !answer.is_empty() {
            let written = ready!(Pin::new(&mut self.inner).poll_write(cx, answer))?;
            if written == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            answer.drain(..written);
        }
        let replaced = *replaced;
        self.replacing = None;
        Poll::Ready(Ok(replaced))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonParseErrors<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonParseErrors<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.replacing.is_none() {
            match json_answer(buf) {
                Some(answer) => this.replacing = Some((answer, buf.len())),
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
            }
        }
        this.poll_replacing(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.replacing.is_none() {
            // hyper's answer is a head alone: the first buffer.
            let first = bufs.iter().find(|buf| !buf.is_empty());
            match first.and_then(|head| Some((json_answer(head)?, head.len()))) {
                Some(replacing) => this.replacing = Some(replacing),
                None => return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
            }
        }
        this.poll_replacing(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::json_answer;

    #[test]
    fn only_hypers_empty_parse_error_answers_are_replaced() {
        let hyper = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\n\
                      date: Mon, 07 Dec 2026 02:32:24 GMT\r\n\r\n";
        let answer = String::from_utf8(json_answer(hyper).expect("replaced")).unwrap();
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
        assert!(answer.ends_with(r#"{"error":{"kind":"headers-too-large","message":"the request has too many headers, or headers too large"}}"#), "{answer}");
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(json_answer(ours), None);
        let with_body = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(json_answer(with_body), None);
        assert_eq!(json_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"), None);
    }
}
