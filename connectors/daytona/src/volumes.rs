//! Daytona volumes (`/volumes`): list, create (and wait until ready),
//! delete, and resolving the volume mounts of a new sandbox by name.

use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::api::{self, Call, api_url, encode};
use crate::exports::flue::sandbox::lifecycle::VolumeInfo;
use crate::flue::sandbox::types::{SandboxError, VolumeMount};

/// How long a new volume may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VolumeDto {
    id: String,
    name: String,
    #[serde(default)]
    state: String,
    created_at: Option<String>,
    error_reason: Option<String>,
}

impl VolumeDto {
    fn info(self) -> VolumeInfo {
        VolumeInfo {
            created_ms: self.created_at.as_deref().and_then(crate::time::rfc3339_to_unix_ms),
            name: self.name,
            state: self.state,
        }
    }
}

fn volumes_url() -> String {
    format!("{}/volumes", api_url())
}

pub fn list() -> Result<Vec<VolumeInfo>, SandboxError> {
    let url = volumes_url();
    let response = api::send(&Call::get(url.clone()))?;
    let volumes: Vec<VolumeDto> = api::json(&url, &response)?;
    Ok(volumes.into_iter().filter(|v| !matches!(v.state.as_str(), "deleted" | "deleting")).map(VolumeDto::info).collect())
}

/// The volume called `name`, if there is one.
fn by_name(name: &str) -> Result<Option<VolumeDto>, SandboxError> {
    let url = format!("{}/by-name/{}", volumes_url(), encode(name));
    match api::send(&Call::get(url.clone())) {
        Ok(response) => Ok(Some(api::json(&url, &response)?)),
        Err(err) if matches!(err.error(), SandboxError::NotFound(_)) => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// Wait until volume `dto` can be mounted.
fn wait_ready(mut dto: VolumeDto) -> Result<VolumeDto, SandboxError> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(50);
    loop {
        match dto.state.as_str() {
            "ready" => return Ok(dto),
            "error" | "deleted" | "deleting" | "pending_delete" => {
                return Err(SandboxError::Other(format!(
                    "volume {} is {}{}",
                    dto.name,
                    dto.state,
                    dto.error_reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
                )));
            }
            _ => {}
        }
        if started.elapsed() > READY_TIMEOUT {
            return Err(SandboxError::Timeout(format!(
                "volume {} was still {} after {} s",
                dto.name,
                dto.state,
                READY_TIMEOUT.as_secs()
            )));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(1));
        let url = format!("{}/{}", volumes_url(), encode(&dto.id));
        let response = api::send(&Call::get(url.clone()))?;
        dto = api::json(&url, &response)?;
    }
}

fn create_dto(name: &str) -> Result<VolumeDto, SandboxError> {
    let url = volumes_url();
    let response = api::send(&Call::post_json(url.clone(), &serde_json::json!({ "name": name })))?;
    wait_ready(api::json(&url, &response)?)
}

pub fn create(name: &str) -> Result<VolumeInfo, SandboxError> {
    if by_name(name)?.is_some() {
        return Err(SandboxError::AlreadyExists(format!("a Daytona volume named {name} exists already")));
    }
    Ok(create_dto(name)?.info())
}

pub fn delete(name: &str) -> Result<(), SandboxError> {
    let Some(dto) = by_name(name)? else {
        return Err(SandboxError::NotFound(format!("no Daytona volume named {name}")));
    };
    api::send(&Call::delete(format!("{}/{}", volumes_url(), encode(&dto.id))))?;
    Ok(())
}

/// The `volumes` of a create request: each volume resolved by name (and
/// created, when asked and missing), ready to mount.
pub fn mounts(requested: &[VolumeMount]) -> Result<Vec<serde_json::Value>, SandboxError> {
    requested
        .iter()
        .map(|mount| {
            if !mount.mount_path.starts_with('/') {
                return Err(SandboxError::InvalidInput(format!(
                    "volume {}: the mount path {:?} must be absolute",
                    mount.volume, mount.mount_path
                )));
            }
            let dto = match by_name(&mount.volume)? {
                Some(dto) => wait_ready(dto)?,
                None if mount.create => create_dto(&mount.volume)?,
                None => {
                    return Err(SandboxError::NotFound(format!(
                        "no Daytona volume named {} (create it with `flue volumes create {} --sandbox daytona`, \
                         or mount it with create: true)",
                        mount.volume, mount.volume
                    )));
                }
            };
            let mut volume = serde_json::json!({ "volumeId": dto.id, "mountPath": mount.mount_path });
            if let Some(subpath) = &mount.subpath {
                volume["subpath"] = subpath.clone().into();
            }
            Ok(volume)
        })
        .collect()
}
