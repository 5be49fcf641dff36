//! The main API: `/api/sandbox…`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use flue::sandbox::CreateOptions;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::errors::api_error;
use crate::time::now_rfc3339;
use crate::{AppState, SandboxRecord};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/sandbox", post(create).get(list))
        .route("/sandbox/{id}", get(get_one).delete(delete))
        .route("/sandbox/{id}/start", post(start))
        .route("/sandbox/{id}/stop", post(stop))
        .route("/sandbox/{id}/toolbox-proxy-url", get(toolbox_proxy_url))
        .route("/redirect", get(redirect))
}

#[derive(Deserialize)]
struct RedirectQuery {
    to: String,
}

/// Not Daytona's: a redirect to anywhere, for testing clients' redirect policy.
async fn redirect(Query(query): Query<RedirectQuery>) -> Response {
    (StatusCode::FOUND, [("location", query.to)]).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateSandbox {
    name: Option<String>,
    snapshot: Option<String>,
    build_info: Option<Value>,
    #[serde(default)]
    env: serde_json::Map<String, Value>,
    #[serde(default)]
    labels: serde_json::Map<String, Value>,
    target: Option<String>,
    cpu: Option<u32>,
    gpu: Option<u32>,
    memory: Option<u32>,
    disk: Option<u32>,
    auto_stop_interval: Option<u64>,
    #[serde(default)]
    volumes: Vec<SandboxVolume>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SandboxVolume {
    volume_id: String,
    mount_path: String,
    subpath: Option<String>,
}

pub(crate) fn dto(state: &AppState, s: &SandboxRecord) -> Value {
    let mut dto = json!({
        "id": s.id,
        "organizationId": "org-test",
        "name": s.name,
        "user": "daytona",
        "env": s.env,
        "labels": s.labels,
        "public": false,
        "networkBlockAll": false,
        "target": s.target,
        "cpu": 1, "gpu": 0, "memory": 1, "disk": 3,
        "state": s.state,
        "desiredState": if s.state == "stopped" { "stopped" } else { "started" },
        "errorReason": s.error_reason,
        "recoverable": false,
        "autoStopInterval": s.auto_stop.unwrap_or(15),
        "createdAt": s.created_at,
        "updatedAt": now_rfc3339(),
        "volumes": s.volumes,
        "toolboxProxyUrl": state.faults.toolbox_url_override().unwrap_or_else(|| format!("{}/toolbox", state.base_url)),
    });
    if state.faults.omit_toolbox_url() {
        dto.as_object_mut().expect("object").remove("toolboxProxyUrl");
    }
    dto
}

fn not_found(id: &str) -> Response {
    api_error(StatusCode::NOT_FOUND, &format!("/api/sandbox/{id}"), format!("Sandbox with ID or name {id} not found"))
}

async fn create(State(state): State<Arc<AppState>>, Json(body): Json<CreateSandbox>) -> Response {
    let path = "/api/sandbox";
    if body.build_info.is_some() && body.snapshot.is_some() {
        return api_error(StatusCode::BAD_REQUEST, path, "Cannot specify both snapshot and build info");
    }
    if body.build_info.is_none()
        && (body.cpu.is_some() || body.gpu.is_some() || body.memory.is_some() || body.disk.is_some())
    {
        return api_error(StatusCode::BAD_REQUEST, path, "Cannot specify Sandbox resources when using a snapshot");
    }
    if let Some(dockerfile) = body.build_info.as_ref().and_then(|b| b.get("dockerfileContent")).and_then(Value::as_str)
        && !dockerfile.starts_with("FROM ")
    {
        return api_error(StatusCode::BAD_REQUEST, path, "buildInfo.dockerfileContent must start with FROM");
    }
    let env: Vec<(String, String)> = body
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
        .collect();
    // Volumes: by id or name (resolved to the id, as Daytona does), ready.
    let mut mounts = Vec::new();
    let mut volumes = Vec::new();
    for volume in &body.volumes {
        let Some(found) = crate::volumes::find(&state, &volume.volume_id) else {
            return api_error(StatusCode::NOT_FOUND, path, format!("Volume {} not found", volume.volume_id));
        };
        if found["state"] != "ready" {
            return api_error(StatusCode::BAD_REQUEST, path, format!("Volume {} is not ready", volume.volume_id));
        }
        let id = found["id"].as_str().unwrap_or_default().to_string();
        mounts.push(flue::sandbox::VolumeMount {
            volume: id.clone(),
            mount_path: volume.mount_path.clone(),
            subpath: volume.subpath.clone(),
            create: false,
        });
        volumes.push(json!({ "volumeId": id, "mountPath": volume.mount_path, "subpath": volume.subpath }));
    }
    let backend = match state.local.create(&CreateOptions { env, volumes: mounts, ..Default::default() }).await {
        Ok(backend) => backend,
        Err(err) => return api_error(StatusCode::INTERNAL_SERVER_ERROR, path, err.to_string()),
    };
    let id = {
        let mut next = state.next_id.lock().expect("lock");
        *next += 1;
        format!("sbx-{:04}-{}", *next - 1, &uuid::Uuid::new_v4().simple().to_string()[..6])
    };
    let polls = state.faults.start_polls();
    let record = SandboxRecord {
        name: body.name.unwrap_or_else(|| id.clone()),
        id: id.clone(),
        labels: body.labels,
        env: body.env,
        target: body.target.unwrap_or_else(|| "us".into()),
        state: if polls == 0 { "started".into() } else { "creating".into() },
        error_reason: None,
        polls_left: polls,
        fail_reason: state.faults.fail_start(),
        toolbox_calls: 0,
        created_at: now_rfc3339(),
        auto_stop: body.auto_stop_interval,
        backend,
        volumes,
    };
    let response = dto(&state, &record);
    state.sandboxes.lock().expect("lock").insert(id, record);
    (StatusCode::OK, Json(response)).into_response()
}

async fn get_one(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let mut sandboxes = state.sandboxes.lock().expect("lock");
    let Some(record) = sandboxes.get_mut(&id) else { return not_found(&id) };
    if record.state == "creating" {
        let path = format!("/api/sandbox/{id}");
        match state.faults.next_poll() {
            crate::faults::Injected::ServiceUnavailable => {
                return api_error(StatusCode::SERVICE_UNAVAILABLE, &path, "Service temporarily unavailable");
            }
            crate::faults::Injected::RateLimited => {
                let mut response = api_error(StatusCode::TOO_MANY_REQUESTS, &path, "Too many requests");
                response.headers_mut().insert("retry-after", "0".parse().expect("valid header"));
                return response;
            }
            _ => {}
        }
    }
    // Each poll moves a new sandbox along: creating → started (or build_failed).
    if record.state == "creating" {
        record.polls_left = record.polls_left.saturating_sub(1);
        if record.polls_left == 0 {
            match record.fail_reason.take() {
                Some(reason) => {
                    record.state = "build_failed".into();
                    record.error_reason = Some(reason);
                }
                None => record.state = "started".into(),
            }
        }
    }
    Json(dto(&state, record)).into_response()
}

#[derive(Deserialize)]
struct ListQuery {
    labels: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

async fn list(State(state): State<Arc<AppState>>, Query(query): Query<ListQuery>) -> Response {
    let wanted: serde_json::Map<String, Value> = match query.labels.as_deref().map(serde_json::from_str) {
        None => Default::default(),
        Some(Ok(map)) => map,
        Some(Err(err)) => {
            return api_error(StatusCode::BAD_REQUEST, "/api/sandbox", format!("labels must be a JSON object: {err}"));
        }
    };
    let sandboxes = state.sandboxes.lock().expect("lock");
    let mut matching: Vec<&SandboxRecord> =
        sandboxes.values().filter(|s| wanted.iter().all(|(k, v)| s.labels.get(k) == Some(v))).collect();
    matching.sort_by(|a, b| a.id.cmp(&b.id));
    let start = query.cursor.as_deref().and_then(|c| c.parse::<usize>().ok()).unwrap_or(0);
    let limit = query.limit.unwrap_or(100).max(1);
    let page: Vec<Value> = matching
        .iter()
        .skip(start)
        .take(limit)
        .map(|s| {
            let mut item = dto(&state, s);
            item.as_object_mut().expect("object").remove("env");
            item
        })
        .collect();
    let next = (start + limit < matching.len()).then(|| (start + limit).to_string());
    Json(json!({ "items": page, "nextCursor": next })).into_response()
}

async fn delete(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let Some(record) = state.sandboxes.lock().expect("lock").remove(&id) else { return not_found(&id) };
    let _ = state.local.delete(record.backend.id()).await;
    let mut body = dto(&state, &record);
    body["desiredState"] = "destroyed".into();
    Json(body).into_response()
}

async fn set_state(state: &AppState, id: &str, new_state: &str) -> Response {
    let mut sandboxes = state.sandboxes.lock().expect("lock");
    let Some(record) = sandboxes.get_mut(id) else { return not_found(id) };
    if record.state == "error" || record.state == "build_failed" {
        return api_error(
            StatusCode::BAD_REQUEST,
            &format!("/api/sandbox/{id}"),
            format!("Sandbox is in {} state", record.state),
        );
    }
    record.state = new_state.into();
    Json(dto(state, record)).into_response()
}

async fn start(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    set_state(&state, &id, "started").await
}

async fn stop(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    set_state(&state, &id, "stopped").await
}

async fn toolbox_proxy_url(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    if !state.sandboxes.lock().expect("lock").contains_key(&id) {
        return not_found(&id);
    }
    Json(json!({ "url": format!("{}/toolbox", state.base_url) })).into_response()
}
