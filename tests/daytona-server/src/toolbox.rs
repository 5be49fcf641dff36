//! The toolbox proxy: `/toolbox/{id}/…`, served by the sandbox's daemon.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Multipart, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use flue::sandbox::{ExecRequest, FileStat, Sandbox};
use futures_util::StreamExt as _;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::errors::{daemon_body, daemon_error, from_sandbox};
use crate::time::{go_time_string, rfc3339};
use crate::{AppState, dropped_connection};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/process/execute", post(execute))
        // Uploads stream to disk, whatever their size.
        .route("/files/bulk-upload", post(bulk_upload).layer(axum::extract::DefaultBodyLimit::disable()))
        .route("/files/bulk-download", post(bulk_download))
        .route("/files/download", get(download))
        .route("/files", get(list_files).delete(delete_file))
        .route("/files/info", get(file_info))
        .route("/files/folder", post(create_folder))
        .route("/work-dir", get(work_dir))
        .route("/user-home-dir", get(work_dir))
}

/// The sandbox behind a toolbox call, or the proxy's error. Counts calls for
/// the "dies on its Nth call" fault.
fn sandbox(state: &AppState, id: &str, route: &str, method: &str) -> Result<Arc<dyn Sandbox>, Response> {
    let mut sandboxes = state.sandboxes.lock().expect("lock");
    let Some(record) = sandboxes.get_mut(id) else {
        return Err(daemon_error(StatusCode::NOT_FOUND, "NOT_FOUND", format!("sandbox {id} not found"), route, method));
    };
    if record.state != "started" {
        return Err(daemon_error(
            StatusCode::BAD_GATEWAY,
            "BAD_GATEWAY",
            format!("sandbox {id} is not running (state {})", record.state),
            route,
            method,
        ));
    }
    record.toolbox_calls += 1;
    if state.faults.die_after_calls().is_some_and(|n| record.toolbox_calls >= n) {
        record.state = "error".into();
        record.error_reason = Some("the sandbox container crashed (injected fault)".into());
        return Err(dropped_connection());
    }
    Ok(record.backend.clone())
}

/// A sandbox error as the daemon reports it.
fn daemon_failure(err: &flue::sandbox::error::SandboxError, route: &str, method: &str) -> Response {
    let (status, code) = from_sandbox(err);
    daemon_error(status, code, err.message.clone(), route, method)
}

fn absolute(backend: &dyn Sandbox, path: &str) -> String {
    flue::sandbox::paths::resolve(backend.workdir(), if path.is_empty() { "." } else { path })
        .unwrap_or_else(|_| backend.workdir().into())
}

fn file_info_json(path: &str, stat: &FileStat) -> Value {
    let mode = stat.mode.unwrap_or(if stat.is_directory { 0o755 } else { 0o644 });
    let mut mode_string = String::from(if stat.is_directory { "d" } else { "-" });
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        mode_string.push(if bits & 4 != 0 { 'r' } else { '-' });
        mode_string.push(if bits & 2 != 0 { 'w' } else { '-' });
        mode_string.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    let mtime = stat.mtime_ms.unwrap_or(0);
    json!({
        "name": path.rsplit('/').next().unwrap_or(path),
        "path": path,
        "isDir": stat.is_directory,
        "size": stat.size.unwrap_or(0),
        "mode": mode_string,
        "permissions": format!("{:04o}", mode & 0o7777),
        "owner": "daytona",
        "group": "daytona",
        "modTime": go_time_string(mtime),
        "modifiedAt": rfc3339(mtime),
    })
}

#[derive(Deserialize)]
struct ExecuteRequest {
    command: String,
    timeout: Option<u64>,
    cwd: Option<String>,
    #[serde(default)]
    envs: std::collections::BTreeMap<String, String>,
}

async fn execute(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Json(body): Json<ExecuteRequest>,
) -> Result<Response, Response> {
    let route = "/process/execute";
    let backend = sandbox(&state, &id, route, "POST")?;
    let request = ExecRequest {
        command: body.command,
        cwd: absolute(backend.as_ref(), body.cwd.as_deref().unwrap_or("")),
        env: body.envs.into_iter().collect(),
        timeout: body.timeout.filter(|t| *t > 0).map(Duration::from_secs),
    };
    let out = backend.exec(&request).await.map_err(|err| daemon_failure(&err, route, "POST"))?;
    if out.timed_out {
        return Err(daemon_error(
            StatusCode::REQUEST_TIMEOUT,
            "PROCESS_EXECUTION_TIMEOUT",
            "command execution timeout",
            route,
            "POST",
        ));
    }
    // Daytona merges the streams into `result`.
    Ok(Json(json!({ "exitCode": out.exit_code, "result": format!("{}{}", out.stdout, out.stderr) })).into_response())
}

async fn bulk_upload(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    mut form: Multipart,
) -> Result<Response, Response> {
    let route = "/files/bulk-upload";
    let backend = sandbox(&state, &id, route, "POST")?;
    let mut paths: std::collections::HashMap<String, String> = Default::default();
    let mut written = Vec::new();
    let mut errors = Vec::new();
    loop {
        let field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(err) => return Err(upload_failed(&[err.to_string()], &written)),
        };
        let name = field.name().unwrap_or_default().to_string();
        if let Some(index) = name.strip_suffix(".path") {
            let text = field.text().await.unwrap_or_default();
            paths.insert(index.to_string(), text);
        } else if let Some(index) = name.strip_suffix(".file") {
            let mut field = field;
            let Some(path) = paths.get(index).cloned() else {
                errors.push(format!("{name}: no {index}.path part before it"));
                continue;
            };
            let path = absolute(backend.as_ref(), &path);
            // The daemon creates parents (0755) and overwrites; the file's
            // bytes stream to disk part by part.
            let parent =
                flue::sandbox::paths::split_parent(&path).map(|(p, _)| p.to_string()).unwrap_or_else(|| "/".into());
            let mut writer = match backend.mkdir(&parent, true).await {
                Ok(()) => match backend.open_write(&path).await {
                    Ok(writer) => writer,
                    Err(err) => {
                        errors.push(format!("{path}: {}", err.message));
                        continue;
                    }
                },
                Err(err) => {
                    errors.push(format!("{path}: {}", err.message));
                    continue;
                }
            };
            let mut bytes = 0usize;
            loop {
                match field.chunk().await {
                    Ok(Some(chunk)) => {
                        bytes += chunk.len();
                        if let Err(err) = writer.write(&chunk).await {
                            errors.push(format!("{path}: {}", err.message));
                            break;
                        }
                    }
                    Ok(None) => match writer.finish().await {
                        Ok(()) => {
                            written.push(json!({ "path": path, "bytes": bytes }));
                            break;
                        }
                        Err(err) => {
                            errors.push(format!("{path}: {}", err.message));
                            break;
                        }
                    },
                    Err(err) => return Err(upload_failed(&[err.to_string()], &written)),
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(upload_failed(&errors, &written));
    }
    Ok(Json(json!({ "files": written })).into_response())
}

/// The daemon's 400 for an upload, in its normal error envelope: what
/// failed (and how many files were written before it).
fn upload_failed(errors: &[String], written: &[Value]) -> Response {
    let message =
        format!("failed to upload {} file(s): {} ({} written)", errors.len(), errors.join("; "), written.len());
    daemon_error(StatusCode::BAD_REQUEST, "BAD_REQUEST", message, "/files/bulk-upload", "POST")
}

#[derive(Deserialize)]
struct DownloadRequest {
    #[serde(default)]
    paths: Vec<String>,
}

fn pct(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

async fn bulk_download(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Json(body): Json<DownloadRequest>,
) -> Result<Response, Response> {
    let route = "/files/bulk-download";
    let backend = sandbox(&state, &id, route, "POST")?;
    if body.paths.is_empty() {
        return Err((StatusCode::BAD_REQUEST, Json(json!({ "error": "paths must not be empty" }))).into_response());
    }
    // One part per path, in order; each file streams from disk, so a large
    // download never sits in memory.
    let parts = futures_util::stream::iter(body.paths).then(move |requested| {
        let backend = backend.clone();
        async move { download_part(backend, requested).await }
    });
    let stream = futures_util::StreamExt::flatten(parts)
        .chain(futures_util::stream::once(async { Ok(bytes::Bytes::from(format!("--{BOUNDARY}--\r\n"))) }));
    Ok((
        StatusCode::OK,
        [("content-type", format!("multipart/form-data; boundary={BOUNDARY}"))],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

const BOUNDARY: &str = "DAYTONA-FILE-BOUNDARY";

type Chunks = std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send>>;

/// One part of a bulk download: the file, or the daemon's error for it.
async fn download_part(backend: Arc<dyn Sandbox>, requested: String) -> Chunks {
    let route = "/files/bulk-download";
    let path = absolute(backend.as_ref(), &requested);
    let opened = match backend.stat(&path).await {
        Ok(stat) if stat.is_directory => Err(flue::sandbox::error::SandboxError::new(
            flue::sandbox::error::ErrorKind::IsADirectory,
            format!("{path} is a directory"),
        )),
        Ok(stat) => backend.open_read(&path, 0).await.map(|reader| (stat.size.unwrap_or(0), reader)),
        Err(err) => Err(err),
    };
    let mut head = format!("--{BOUNDARY}\r\n");
    match opened {
        Ok((size, reader)) => {
            head.push_str(&format!(
                "Content-Disposition: form-data; name=\"file\"; filename=\"{requested}\"; filename*=utf-8''{}\r\n\
                 Content-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n",
                pct(&requested)
            ));
            let head = futures_util::stream::once(async move { Ok(bytes::Bytes::from(head)) });
            let tail = futures_util::stream::once(async { Ok(bytes::Bytes::from_static(b"\r\n")) });
            Box::pin(head.chain(file_chunks(reader)).chain(tail))
        }
        Err(err) => {
            let (status, code) = match err.kind {
                flue::sandbox::error::ErrorKind::NotFound => (StatusCode::NOT_FOUND, "FILE_NOT_FOUND"),
                flue::sandbox::error::ErrorKind::PermissionDenied => (StatusCode::FORBIDDEN, "FILE_ACCESS_DENIED"),
                flue::sandbox::error::ErrorKind::IsADirectory => (StatusCode::BAD_REQUEST, "INVALID_FILE_PATH"),
                _ => (StatusCode::INTERNAL_SERVER_ERROR, "FILE_READ_FAILED"),
            };
            let message = match code {
                "FILE_NOT_FOUND" => format!("file not found: {requested}"),
                _ => err.message.clone(),
            };
            let json = daemon_body(status, code, &message, route, "POST").to_string();
            head.push_str(&format!(
                "Content-Disposition: form-data; name=\"error\"; filename=\"{requested}\"\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}\r\n",
                json.len()
            ));
            Box::pin(futures_util::stream::once(async move { Ok(bytes::Bytes::from(head)) }))
        }
    }
}

/// A file's bytes as a stream of parts.
fn file_chunks(reader: Box<dyn flue::sandbox::FileReader>) -> Chunks {
    Box::pin(futures_util::stream::unfold(Some(reader), |reader| async move {
        let mut reader = reader?;
        match reader.read(1 << 20).await {
            Ok(part) if part.is_empty() => None,
            Ok(part) => Some((Ok(bytes::Bytes::from(part)), Some(reader))),
            Err(err) => Some((Err(std::io::Error::other(err.message)), None)),
        }
    }))
}

/// `GET /files/download?path=`: the raw file, honouring `Range: bytes=N-[M]`
/// (206 with `Content-Range`, 416 past the end) as Go's file server does.
async fn download(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(query): Query<PathQuery>,
    headers: axum::http::HeaderMap,
) -> Result<Response, Response> {
    let route = "/files/download";
    let backend = sandbox(&state, &id, route, "GET")?;
    let path = absolute(backend.as_ref(), &query.path);
    let stat = stat_or_error(backend.as_ref(), &path, route, "GET").await?;
    if stat.is_directory {
        let message = format!("{path} is a directory");
        return Err(daemon_error(StatusCode::BAD_REQUEST, "INVALID_FILE_PATH", message, route, "GET"));
    }
    let size = stat.size.unwrap_or(0);
    let range = headers.get("range").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("bytes="));
    let (start, end) = match range.and_then(|r| r.split_once('-')) {
        Some((start, end)) => {
            let start: u64 = start.trim().parse().unwrap_or(0);
            let end = end.trim().parse::<u64>().map(|e| e + 1).unwrap_or(size).min(size);
            if start >= size {
                return Ok(
                    (StatusCode::RANGE_NOT_SATISFIABLE, [("content-range", format!("bytes */{size}"))]).into_response()
                );
            }
            (start, end)
        }
        None => (0, size),
    };
    let reader = backend.open_read(&path, start).await.map_err(|err| daemon_failure(&err, route, "GET"))?;
    let limited = limit_stream(axum::body::Body::from_stream(file_chunks(reader)), end - start);
    let mut response = Response::new(limited);
    *response.status_mut() = if range.is_some() { StatusCode::PARTIAL_CONTENT } else { StatusCode::OK };
    let headers = response.headers_mut();
    headers.insert("content-type", "application/octet-stream".parse().expect("valid"));
    headers.insert("content-length", (end - start).to_string().parse().expect("valid"));
    if range.is_some() {
        headers
            .insert("content-range", format!("bytes {start}-{}/{size}", end.saturating_sub(1)).parse().expect("valid"));
    }
    Ok(response)
}

/// At most `len` bytes of `body`.
fn limit_stream(body: axum::body::Body, len: u64) -> axum::body::Body {
    let stream = futures_util::stream::unfold((body.into_data_stream(), len), |(mut stream, left)| async move {
        if left == 0 {
            return None;
        }
        match futures_util::StreamExt::next(&mut stream).await? {
            Ok(mut chunk) => {
                chunk.truncate(left.min(chunk.len() as u64) as usize);
                let left = left - chunk.len() as u64;
                Some((Ok::<_, axum::Error>(chunk), (stream, left)))
            }
            Err(err) => Some((Err(err), (stream, 0))),
        }
    });
    axum::body::Body::from_stream(stream)
}

#[derive(Deserialize)]
struct PathQuery {
    #[serde(default)]
    path: String,
    #[serde(default)]
    recursive: Option<bool>,
}

async fn stat_or_error(backend: &dyn Sandbox, path: &str, route: &str, method: &str) -> Result<FileStat, Response> {
    backend.stat(path).await.map_err(|err| {
        let (status, code) = from_sandbox(&err);
        let message = if code == "FILE_NOT_FOUND" { format!("file not found: {path}") } else { err.message };
        daemon_error(status, code, message, route, method)
    })
}

async fn file_info(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(query): Query<PathQuery>,
) -> Result<Response, Response> {
    let backend = sandbox(&state, &id, "/files/info", "GET")?;
    let path = absolute(backend.as_ref(), &query.path);
    let stat = stat_or_error(backend.as_ref(), &path, "/files/info", "GET").await?;
    Ok(Json(file_info_json(&path, &stat)).into_response())
}

async fn list_files(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(query): Query<PathQuery>,
) -> Result<Response, Response> {
    let backend = sandbox(&state, &id, "/files", "GET")?;
    let path = absolute(backend.as_ref(), &query.path);
    let names = backend.readdir(&path).await.map_err(|err| daemon_failure(&err, "/files", "GET"))?;
    let mut entries = Vec::new();
    for name in names {
        let child = format!("{}/{name}", path.trim_end_matches('/'));
        if let Ok(stat) = backend.stat(&child).await {
            entries.push(file_info_json(&child, &stat));
        }
    }
    Ok(Json(entries).into_response())
}

async fn create_folder(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(query): Query<PathQuery>,
) -> Result<Response, Response> {
    let backend = sandbox(&state, &id, "/files/folder", "POST")?;
    // os.MkdirAll: parents too, and an existing directory is fine.
    let path = absolute(backend.as_ref(), &query.path);
    backend.mkdir(&path, true).await.map_err(|err| daemon_failure(&err, "/files/folder", "POST"))?;
    Ok(StatusCode::CREATED.into_response())
}

async fn delete_file(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(query): Query<PathQuery>,
) -> Result<Response, Response> {
    let backend = sandbox(&state, &id, "/files", "DELETE")?;
    let path = absolute(backend.as_ref(), &query.path);
    let recursive = query.recursive.unwrap_or(false);
    let stat = stat_or_error(backend.as_ref(), &path, "/files", "DELETE").await?;
    if stat.is_directory && !recursive {
        let message = format!("cannot delete directory {path} without recursive");
        return Err(daemon_error(StatusCode::BAD_REQUEST, "BAD_REQUEST", message, "/files", "DELETE"));
    }
    backend.rm(&path, recursive, false).await.map_err(|err| daemon_failure(&err, "/files", "DELETE"))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn work_dir(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Response, Response> {
    let backend = sandbox(&state, &id, "/work-dir", "GET")?;
    Ok(Json(json!({ "dir": backend.workdir() })).into_response())
}
