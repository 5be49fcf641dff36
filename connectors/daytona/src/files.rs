//! Files, via the toolbox's `/files…` endpoints. Reads and writes use the
//! multipart bulk endpoints exactly as the SDK does (binary-safe).
//!
//! Failures are [`ApiError`]s, so that only the daemon's own answer ("no such
//! file") counts as a missing file: a sandbox that stopped answering is never
//! mistaken for one.

use crate::api::{self, ApiError, Call, encode};
use crate::exec::nonce;
use crate::flue::sandbox::types::{FileStat, SandboxError};
use crate::model::FileInfo;
use crate::multipart;
use crate::time::rfc3339_to_unix_ms;

use ApiError::Answer;

/// The daemon's answer, or why there is none.
pub type Result<T> = std::result::Result<T, ApiError>;

/// A malformed answer from Daytona: the sandbox may be in trouble.
fn garbled(message: String) -> ApiError {
    ApiError::Unreachable(SandboxError::Other(message))
}

pub fn read(toolbox: &str, path: &str) -> Result<Vec<u8>> {
    let url = format!("{toolbox}/files/bulk-download");
    let mut call = Call::post_json(url.clone(), &serde_json::json!({ "paths": [path] })).idempotent();
    call.accept = "multipart/form-data";
    let response = api::send(&call)?;
    let content_type = response
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    let boundary = multipart::boundary(content_type)
        .ok_or_else(|| garbled(format!("Daytona sent {content_type:?} for a download, not multipart")))?;
    let parts = multipart::parse(&response.body, &boundary)
        .map_err(|e| garbled(format!("unreadable download from Daytona: {e}")))?;
    let part = parts
        .into_iter()
        .find(|p| p.filename.as_deref() == Some(path) || p.name == "error")
        .ok_or_else(|| garbled(format!("Daytona's download has no part for {path}")))?;
    if part.name != "error" {
        return Ok(part.body.to_vec());
    }
    // A per-file failure inside a 200 response: the daemon's answer.
    let (message, code) = api::error_message(part.body);
    Err(Answer(match code.as_deref() {
        Some("FILE_NOT_FOUND") => SandboxError::NotFound(message),
        Some("FILE_ACCESS_DENIED") => SandboxError::PermissionDenied(message),
        Some("INVALID_FILE_PATH") => match stat(toolbox, path) {
            Ok(st) if st.is_directory => SandboxError::IsADirectory(format!("{path} is a directory")),
            _ => SandboxError::InvalidInput(message),
        },
        _ => SandboxError::Other(message),
    }))
}

pub fn write(toolbox: &str, path: &str, data: &[u8]) -> Result<()> {
    let boundary = format!("flue-{}", nonce());
    let call = Call {
        method: "POST",
        url: format!("{toolbox}/files/bulk-upload"),
        accept: "*/*",
        content_type: Some(format!("multipart/form-data; boundary={boundary}")),
        body: multipart::upload_body(&boundary, path, data),
        // Writing the same bytes twice leaves the same file.
        idempotent: true,
        timeout_ms: None,
    };
    api::send(&call).map(|_| ())
}

fn info(toolbox: &str, path: &str) -> Result<FileInfo> {
    let url = format!("{toolbox}/files/info?path={}", encode(path));
    match api::send(&Call::get(url.clone())) {
        Ok(response) => api::json(&url, &response),
        // A path through a file: the daemon answers 400 with the OS's words
        // and no code of its own for it, so whether a file stands in the
        // way is asked of the parent (one more call, on this path only).
        Err(Answer(SandboxError::InvalidInput(m))) if path != "/" && through_a_file(toolbox, parent(path)) => {
            Err(Answer(SandboxError::NotADirectory(m)))
        }
        Err(err) => Err(err),
    }
}

/// Whether `dir` is, or passes through, something that is not a directory.
fn through_a_file(toolbox: &str, dir: &str) -> bool {
    match info(toolbox, dir) {
        Ok(info) => !info.is_dir,
        Err(Answer(SandboxError::NotADirectory(_))) => true,
        Err(_) => false,
    }
}

pub fn stat(toolbox: &str, path: &str) -> Result<FileStat> {
    let info = info(toolbox, path)?;
    Ok(FileStat {
        is_file: !info.is_dir,
        is_directory: info.is_dir,
        // Daytona does not say.
        is_symlink: None,
        size: info.size,
        mtime_ms: info.modified_at.as_deref().and_then(rfc3339_to_unix_ms),
        mode: info.permissions.as_deref().and_then(|p| u32::from_str_radix(p, 8).ok()),
    })
}

/// Whether `path` exists: `false` only on the daemon's own "not found".
pub fn exists(toolbox: &str, path: &str) -> Result<bool> {
    match stat(toolbox, path) {
        Ok(_) => Ok(true),
        Err(Answer(SandboxError::NotFound(_) | SandboxError::NotADirectory(_))) => Ok(false),
        Err(err) => Err(err),
    }
}

pub fn readdir(toolbox: &str, path: &str) -> Result<Vec<String>> {
    let url = format!("{toolbox}/files?path={}", encode(path));
    let response = api::send(&Call::get(url.clone()))?;
    let entries: Vec<FileInfo> = api::json(&url, &response)?;
    Ok(entries.into_iter().map(|e| e.name).collect())
}

fn parent(path: &str) -> &str {
    match path.trim_end_matches('/').rfind('/') {
        Some(0) | None => "/",
        Some(at) => &path[..at],
    }
}

/// Daytona's folder endpoint creates missing parents; the non-recursive
/// contract is checked first, before anything changes.
pub fn mkdir(toolbox: &str, path: &str, recursive: bool) -> Result<()> {
    match stat(toolbox, path) {
        Ok(st) if st.is_directory && recursive => return Ok(()),
        Ok(_) => return Err(Answer(SandboxError::AlreadyExists(format!("{path} already exists")))),
        Err(Answer(SandboxError::NotFound(_))) => {}
        Err(err) => return Err(err),
    }
    if !recursive {
        match stat(toolbox, parent(path)) {
            Ok(st) if st.is_directory => {}
            Ok(_) => {
                return Err(Answer(SandboxError::NotADirectory(format!("{} is not a directory", parent(path)))));
            }
            Err(Answer(SandboxError::NotFound(_))) => {
                return Err(Answer(SandboxError::NotFound(format!(
                    "{}: no such directory (use recursive to create parents)",
                    parent(path)
                ))));
            }
            Err(err) => return Err(err),
        }
    }
    let url = format!("{toolbox}/files/folder?path={}&mode=755", encode(path));
    let call = Call { method: "POST", body: Vec::new(), content_type: None, ..Call::get(url) };
    api::send(&call).map(|_| ())
}

/// Daytona has no `force` and refuses directories without `recursive` even
/// when empty; both are honoured here by looking first.
pub fn rm(toolbox: &str, path: &str, recursive: bool, force: bool) -> Result<()> {
    let st = match stat(toolbox, path) {
        Ok(st) => st,
        Err(Answer(SandboxError::NotFound(_))) if force => return Ok(()),
        Err(err) => return Err(err),
    };
    let mut delete_recursively = recursive;
    if st.is_directory && !recursive {
        if !readdir(toolbox, path)?.is_empty() {
            return Err(Answer(SandboxError::InvalidInput(format!(
                "{path}: directory not empty (pass recursive to remove it with its contents)"
            ))));
        }
        delete_recursively = true; // empty: same effect, and Daytona requires it
    }
    let mut url = format!("{toolbox}/files?path={}", encode(path));
    if delete_recursively {
        url.push_str("&recursive=true");
    }
    match api::send(&Call::delete(url)) {
        Err(Answer(SandboxError::NotFound(_))) if force => Ok(()),
        other => other.map(|_| ()),
    }
}

/// A file read in parts through `GET /files/download`.
pub struct Reader {
    stream: crate::flue::sandbox::http::ResponseStream,
    /// Bytes still to skip (a server that ignored `Range`).
    skip: u64,
    done: bool,
}

pub fn open_read(toolbox: &str, path: &str, offset: u64) -> Result<Reader> {
    let url = format!("{toolbox}/files/download?path={}", encode(path));
    let (stream, skip) = api::download(url, offset)?;
    Ok(Reader { stream, skip, done: skip == u64::MAX })
}

impl Reader {
    pub fn read(&mut self, max: u32) -> Result<Vec<u8>> {
        let broken = |err| ApiError::Unreachable(SandboxError::Unavailable(format!("the download broke off: {err:?}")));
        while self.skip > 0 && !self.done {
            let part = self.stream.read(self.skip.min(1 << 20) as u32).map_err(broken)?;
            if part.is_empty() {
                self.done = true;
            }
            self.skip -= part.len() as u64;
        }
        if self.done {
            return Ok(Vec::new());
        }
        self.stream.read(max).map_err(broken)
    }
}

/// A file written in parts: one multipart upload, its body streamed.
pub struct Writer {
    url: String,
    body: Option<crate::flue::sandbox::http::OutgoingBody>,
    suffix: Vec<u8>,
}

pub fn open_write(toolbox: &str, path: &str) -> Result<Writer> {
    let boundary = format!("flue-{}", nonce());
    let url = format!("{toolbox}/files/bulk-upload");
    let body = api::upload(url.clone(), &format!("multipart/form-data; boundary={boundary}"))?;
    let writer = Writer { url, body: Some(body), suffix: multipart::upload_suffix(&boundary) };
    writer.send(&multipart::upload_prefix(&boundary, path))?;
    Ok(writer)
}

impl Writer {
    fn send(&self, data: &[u8]) -> Result<()> {
        let body = self
            .body
            .as_ref()
            .ok_or_else(|| Answer(SandboxError::InvalidInput("the file was already finished".into())))?;
        body.write(data)
            .map_err(|err| ApiError::Unreachable(SandboxError::Unavailable(format!("the upload broke off: {err:?}"))))
    }

    pub fn write(&self, data: &[u8]) -> Result<()> {
        self.send(data)
    }

    pub fn finish(&mut self) -> Result<()> {
        self.send(&self.suffix)?;
        let body = self
            .body
            .take()
            .ok_or_else(|| Answer(SandboxError::InvalidInput("the file was already finished".into())))?;
        api::upload_result(&self.url, body)
    }
}
