//! The toolbox proxy: `/toolbox/{id}/…`, served by the sandbox's daemon.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Multipart, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use flue::sandbox::{ExecRequest, FileStat, SandboxBackend};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::errors::{daemon_body, daemon_error, from_sandbox};
use crate::time::{go_time_string, rfc3339};
use crate::{AppState, dropped_connection};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/process/execute", post(execute))
        .route("/files/bulk-upload", post(bulk_upload))
        .route("/files/bulk-download", post(bulk_download))
        .route("/files", get(list_files).delete(delete_file))
        .route("/files/info", get(file_info))
        .route("/files/folder", post(create_folder))
        .route("/work-dir", get(work_dir))
        .route("/user-home-dir", get(work_dir))
}

/// The sandbox behind a toolbox call, or the proxy's error. Counts calls for
/// the "dies on its Nth call" fault.
fn sandbox(state: &AppState, id: &str, route: &str, method: &str) -> Result<Arc<dyn SandboxBackend>, Response> {
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

fn absolute(backend: &dyn SandboxBackend, path: &str) -> String {
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
            let Some(path) = paths.get(index).cloned() else {
                errors.push(format!("{name}: no {index}.path part before it"));
                continue;
            };
            let data = match field.bytes().await {
                Ok(data) => data,
                Err(err) => {
                    return Err(upload_failed(&[err.to_string()], &written));
                }
            };
            let path = absolute(backend.as_ref(), &path);
            // The daemon creates parents (0755) and overwrites.
            let parent =
                flue::sandbox::paths::split_parent(&path).map(|(p, _)| p.to_string()).unwrap_or_else(|| "/".into());
            let result = match backend.mkdir(&parent, true).await {
                Ok(()) => backend.write_file(&path, &data).await,
                Err(err) => Err(err),
            };
            match result {
                Ok(()) => written.push(json!({ "path": path, "bytes": data.len() })),
                Err(err) => errors.push(format!("{path}: {}", err.message)),
            }
        }
    }
    if !errors.is_empty() {
        return Err(upload_failed(&errors, &written));
    }
    Ok(Json(json!({ "files": written })).into_response())
}

/// The daemon's 400 for an upload: what failed, and what was written anyway.
fn upload_failed(errors: &[String], written: &[Value]) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "errors": errors, "files": written }))).into_response()
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
    const BOUNDARY: &str = "DAYTONA-FILE-BOUNDARY";
    let mut out = Vec::new();
    for requested in &body.paths {
        let path = absolute(backend.as_ref(), requested);
        out.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match backend.read_file(&path, crate::BODY_LIMIT as u64).await {
            Ok(data) => {
                out.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"file\"; filename=\"{requested}\"; filename*=utf-8''{}\r\n\
                         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                        pct(requested),
                        data.len()
                    )
                    .as_bytes(),
                );
                out.extend_from_slice(&data);
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
                out.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"error\"; filename=\"{requested}\"\r\n\
                         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
                        json.len()
                    )
                    .as_bytes(),
                );
            }
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    Ok((StatusCode::OK, [("content-type", format!("multipart/form-data; boundary={BOUNDARY}"))], out).into_response())
}

#[derive(Deserialize)]
struct PathQuery {
    #[serde(default)]
    path: String,
    #[serde(default)]
    recursive: Option<bool>,
}

async fn stat_or_error(
    backend: &dyn SandboxBackend,
    path: &str,
    route: &str,
    method: &str,
) -> Result<FileStat, Response> {
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
