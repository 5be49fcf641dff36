//! `/api/volumes…`: Daytona volumes, kept as local volumes (directories)
//! that the server's sandboxes bind-mount.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::errors::api_error;
use crate::time::now_rfc3339;
use crate::{AppState, VolumeRecord};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/volumes", get(list).post(create))
        .route("/volumes/{id}", get(get_one).delete(delete))
        .route("/volumes/by-name/{name}", get(by_name))
}

fn dto(volume: &VolumeRecord) -> Value {
    json!({
        "id": volume.id,
        "name": volume.name,
        "organizationId": "org-test",
        "state": volume.state,
        "createdAt": volume.created_at,
        "updatedAt": now_rfc3339(),
        "lastUsedAt": null,
        "errorReason": null,
    })
}

fn not_found(path: &str, what: &str) -> Response {
    api_error(StatusCode::NOT_FOUND, path, format!("Volume {what} not found"))
}

async fn list(State(state): State<Arc<AppState>>) -> Response {
    let volumes = state.volumes.lock().expect("lock");
    let mut all: Vec<&VolumeRecord> = volumes.values().collect();
    all.sort_by(|a, b| a.id.cmp(&b.id));
    Json(all.into_iter().map(dto).collect::<Vec<_>>()).into_response()
}

#[derive(Deserialize)]
struct CreateVolume {
    name: String,
}

async fn create(State(state): State<Arc<AppState>>, Json(body): Json<CreateVolume>) -> Response {
    let path = "/api/volumes";
    if state.volumes.lock().expect("lock").values().any(|v| v.name == body.name) {
        return api_error(StatusCode::CONFLICT, path, format!("Volume with name {} already exists", body.name));
    }
    let id = format!("vol-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    if let Err(err) = state.local.create_volume(&id).await {
        return api_error(StatusCode::INTERNAL_SERVER_ERROR, path, err.to_string());
    }
    // A new volume is pending until it is looked at once, as a real one
    // takes a moment to provision.
    let record =
        VolumeRecord { id: id.clone(), name: body.name, state: "pending_create".into(), created_at: now_rfc3339() };
    let response = dto(&record);
    state.volumes.lock().expect("lock").insert(id, record);
    Json(response).into_response()
}

/// The volume with this id or name, moved along from `pending_create`.
pub(crate) fn find(state: &AppState, id_or_name: &str) -> Option<Value> {
    let mut volumes = state.volumes.lock().expect("lock");
    let volume = volumes.values_mut().find(|v| v.id == id_or_name || v.name == id_or_name)?;
    if volume.state == "pending_create" {
        volume.state = "ready".into();
    }
    Some(dto(volume))
}

async fn get_one(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match find(&state, &id) {
        Some(volume) => Json(volume).into_response(),
        None => not_found(&format!("/api/volumes/{id}"), &id),
    }
}

async fn by_name(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    let id = state.volumes.lock().expect("lock").values().find(|v| v.name == name).map(|v| v.id.clone());
    match id.and_then(|id| find(&state, &id)) {
        Some(volume) => Json(volume).into_response(),
        None => not_found(&format!("/api/volumes/by-name/{name}"), &format!("with name {name}")),
    }
}

async fn delete(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let path = format!("/api/volumes/{id}");
    let in_use = state
        .sandboxes
        .lock()
        .expect("lock")
        .values()
        .any(|s| s.volumes.iter().any(|v| v["volumeId"].as_str() == Some(id.as_str())));
    if in_use {
        return api_error(StatusCode::CONFLICT, &path, "Volume is in use by one or more sandboxes");
    }
    if state.volumes.lock().expect("lock").remove(&id).is_none() {
        return not_found(&path, &id);
    }
    let _ = state.local.delete_volume(&id).await;
    StatusCode::OK.into_response()
}
