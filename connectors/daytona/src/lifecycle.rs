//! Sandbox lifecycle on the main API: create (then wait for `started`),
//! connect, delete, list; and the liveness probe behind `sandbox-died`.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use crate::DaytonaSandbox;
use crate::api::{self, Call, api_url, encode};
use crate::exports::flue::sandbox::lifecycle::{ConfigKey, ConnectorInfo, SandboxSummary};
use crate::flue::sandbox::config;
use crate::flue::sandbox::log::{Level, log};
use crate::flue::sandbox::types::{CreateOptions, SandboxError};
use crate::model::{DirResponse, SandboxDto, SandboxList, UrlResponse};

/// Default wait for a new sandbox to reach `started`.
const DEFAULT_CREATE_TIMEOUT_SECS: u64 = 120;
const FALLBACK_WORKDIR: &str = "/home/daytona";
/// States from which a sandbox will not answer commands.
const DEAD_STATES: &[&str] =
    &["destroyed", "destroying", "stopped", "stopping", "error", "build_failed", "archived", "archiving"];

pub fn info() -> ConnectorInfo {
    let key = |name: &str, description: &str, secret: bool, required: bool, default_value: Option<&str>| ConfigKey {
        name: name.into(),
        description: description.into(),
        secret,
        required,
        default_value: default_value.map(str::to_string),
    };
    ConnectorInfo {
        name: "daytona".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        description: "Daytona sandboxes: full Linux containers, over Daytona's REST API".into(),
        config: vec![
            key("DAYTONA_API_KEY", "Your Daytona API key (app.daytona.io → Keys).", true, true, None),
            key(
                "DAYTONA_API_URL",
                "Daytona API URL, for self-hosted Daytona.",
                false,
                false,
                Some(api::DEFAULT_API_URL),
            ),
            key("DAYTONA_TARGET", "Target (region) for new sandboxes, e.g. us or eu.", false, false, None),
            key("DAYTONA_CREATE_TIMEOUT", "Seconds to wait for a new sandbox to start.", false, false, Some("120")),
        ],
        allowed_hosts: vec!["{{DAYTONA_API_URL}}".into(), "https://*.daytona.io".into()],
        merges_output: false,
    }
}

fn sandbox_url(id: &str) -> String {
    format!("{}/sandbox/{}", api_url(), encode(id))
}

fn get(id: &str) -> Result<SandboxDto, SandboxError> {
    let url = sandbox_url(id);
    let response = api::send(&Call::get(url.clone()))?;
    Ok(api::json(&url, &response)?)
}

fn state(dto: &SandboxDto) -> &str {
    dto.state.as_deref().unwrap_or("unknown")
}

fn failure(dto: &SandboxDto) -> SandboxError {
    SandboxError::Other(format!(
        "Sandbox {} failed to start with status: {}, error reason: {}",
        dto.id,
        state(dto),
        dto.error_reason.as_deref().unwrap_or("none given")
    ))
}

/// Pauses between polls of a starting sandbox: the first poll at once (a
/// sandbox is often ready by then), then backing off to one a second — the
/// SDK's steady rate, so a slow start costs no more requests than with it.
const POLL_INTERVALS_MS: [u64; 5] = [0, 100, 200, 400, 800];
const POLL_STEADY: Duration = Duration::from_secs(1);

/// Poll until `started`; fail fast on `error`/`build_failed`.
fn wait_started(mut dto: SandboxDto, limit: Duration) -> Result<SandboxDto, SandboxError> {
    let started = Instant::now();
    let mut polls = 0;
    loop {
        match state(&dto) {
            "started" => return Ok(dto),
            "error" | "build_failed" => return Err(failure(&dto)),
            "destroyed" | "destroying" => {
                return Err(SandboxError::SandboxDied(format!("sandbox {} was destroyed while starting", dto.id)));
            }
            _ => {}
        }
        if started.elapsed() >= limit {
            return Err(SandboxError::Timeout(format!(
                "sandbox {} did not start within {} s (still {}); raise DAYTONA_CREATE_TIMEOUT to wait longer",
                dto.id,
                limit.as_secs(),
                state(&dto)
            )));
        }
        let pause = POLL_INTERVALS_MS.get(polls).map(|ms| Duration::from_millis(*ms)).unwrap_or(POLL_STEADY);
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
        polls += 1;
        dto = get(&dto.id)?;
    }
}

/// A handle on a started sandbox: its toolbox base and its workdir.
fn open(dto: &SandboxDto) -> Result<DaytonaSandbox, SandboxError> {
    let proxy = match dto.toolbox_proxy_url.as_deref().filter(|u| !u.is_empty()) {
        Some(url) => url.to_string(),
        None => {
            let url = format!("{}/toolbox-proxy-url", sandbox_url(&dto.id));
            let response = api::send(&Call::get(url.clone()))?;
            api::json::<UrlResponse>(&url, &response)?.url
        }
    };
    let toolbox = format!("{}/{}", proxy.trim_end_matches('/'), dto.id);
    let workdir = {
        let url = format!("{toolbox}/work-dir");
        match api::send(&Call::get(url.clone())).and_then(|r| api::json::<DirResponse>(&url, &r)) {
            Ok(dir) if dir.dir.starts_with('/') => dir.dir,
            _ => FALLBACK_WORKDIR.into(),
        }
    };
    Ok(DaytonaSandbox { id: dto.id.clone(), toolbox, workdir, dead: RefCell::new(None) })
}

pub fn create(options: CreateOptions) -> Result<DaytonaSandbox, SandboxError> {
    let volumes = crate::volumes::mounts(&options.volumes)?;
    let mut labels: serde_json::Map<String, serde_json::Value> =
        options.labels.into_iter().map(|(k, v)| (k, v.into())).collect();
    labels.insert("created-by".into(), "flue".into());
    let env: serde_json::Map<String, serde_json::Value> = options.env.into_iter().map(|(k, v)| (k, v.into())).collect();
    let mut body = serde_json::json!({ "env": env, "labels": labels });
    if !volumes.is_empty() {
        body["volumes"] = volumes.into();
    }
    if let Some(image) = options.image {
        if options.snapshot.is_some() {
            return Err(SandboxError::InvalidInput("give an image or a snapshot, not both".into()));
        }
        body["buildInfo"] = serde_json::json!({ "dockerfileContent": format!("FROM {image}\n") });
    }
    if let Some(snapshot) = options.snapshot {
        body["snapshot"] = snapshot.into();
    }
    if let Some(name) = options.name {
        body["name"] = name.into();
    }
    if let Some(minutes) = options.auto_stop_minutes {
        body["autoStopInterval"] = minutes.into();
    }
    if let Some(resources) = options.resources {
        // Daytona's rule: a snapshot fixes the machine size.
        if body.get("buildInfo").is_none() {
            return Err(SandboxError::InvalidInput(
                "Daytona sets cpu, memory, disk and gpu only for sandboxes built from an image: give an image too"
                    .into(),
            ));
        }
        let fields = [
            ("cpu", resources.cpu),
            ("memory", resources.memory_gib),
            ("disk", resources.disk_gib),
            ("gpu", resources.gpu),
        ];
        for (field, value) in fields {
            if let Some(value) = value {
                body[field] = value.into();
            }
        }
    }
    if let Some(target) = config::get("DAYTONA_TARGET").filter(|t| !t.is_empty()) {
        body["target"] = target.into();
    }
    let limit = config::get("DAYTONA_CREATE_TIMEOUT")
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(DEFAULT_CREATE_TIMEOUT_SECS);

    let url = format!("{}/sandbox", api_url());
    let response = api::send(&Call::post_json(url.clone(), &body).timeout(90_000))?;
    let dto: SandboxDto = api::json(&url, &response)?;
    let id = dto.id.clone();
    log(Level::Info, &format!("created sandbox {id} ({})", state(&dto)));
    match wait_started(dto, Duration::from_secs(limit)).and_then(|dto| open(&dto)) {
        Ok(sandbox) => Ok(sandbox),
        Err(err) => {
            // Nobody else knows this sandbox exists: do not leak it.
            if let Err(cleanup) = delete(&id) {
                log(Level::Warn, &format!("could not delete sandbox {id} after a failed start: {cleanup:?}"));
            }
            Err(err)
        }
    }
}

pub fn connect(id: &str) -> Result<DaytonaSandbox, SandboxError> {
    let dto = match get(id) {
        Err(SandboxError::NotFound(m)) => return Err(SandboxError::NotFound(format!("no Daytona sandbox {id}: {m}"))),
        other => other?,
    };
    let dto = match state(&dto) {
        "stopped" | "archived" => {
            log(Level::Info, &format!("starting sandbox {id} ({})", state(&dto)));
            let url = format!("{}/start", sandbox_url(id));
            let call = Call {
                method: "POST",
                body: Vec::new(),
                content_type: None,
                idempotent: false,
                ..Call::get(url.clone())
            };
            let response = api::send(&call.timeout(90_000))?;
            wait_started(api::json(&url, &response)?, Duration::from_secs(DEFAULT_CREATE_TIMEOUT_SECS))?
        }
        "error" | "build_failed" | "destroyed" | "destroying" => {
            return Err(SandboxError::SandboxDied(format!(
                "sandbox {id} is {}{}",
                state(&dto),
                dto.error_reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
            )));
        }
        _ => wait_started(dto, Duration::from_secs(DEFAULT_CREATE_TIMEOUT_SECS))?,
    };
    open(&dto)
}

pub fn delete(id: &str) -> Result<(), SandboxError> {
    api::send(&Call::delete(sandbox_url(id)))?;
    Ok(())
}

pub fn list(labels: &[(String, String)]) -> Result<Vec<SandboxSummary>, SandboxError> {
    let filter: serde_json::Map<String, serde_json::Value> =
        labels.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
    let mut found = Vec::new();
    let mut cursor: Option<String> = None;
    for _page in 0..100 {
        let mut url =
            format!("{}/sandbox?labels={}", api_url(), encode(&serde_json::Value::Object(filter.clone()).to_string()));
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={}", encode(cursor)));
        }
        let response = api::send(&Call::get(url.clone()))?;
        let (items, next) = match api::json::<SandboxList>(&url, &response)? {
            SandboxList::Paged { items, next_cursor } => (items, next_cursor),
            SandboxList::Plain(items) => (items, None),
        };
        found.extend(items.into_iter().map(|dto| SandboxSummary {
            state: state(&dto).to_string(),
            created_ms: dto.created_at.as_deref().and_then(crate::time::rfc3339_to_unix_ms),
            id: dto.id,
            name: dto.name,
            labels: dto.labels.into_iter().collect(),
        }));
        match next.filter(|c| !c.is_empty()) {
            Some(next) => cursor = Some(next),
            None => return Ok(found),
        }
    }
    Ok(found)
}

/// Why the sandbox is dead, if it is (asked after a toolbox call failed).
pub fn death_of(id: &str) -> Option<String> {
    match get(id) {
        Err(SandboxError::NotFound(_)) => Some(format!("sandbox {id} no longer exists")),
        Ok(dto) if DEAD_STATES.contains(&state(&dto)) => Some(format!(
            "sandbox {id} is {}{}",
            state(&dto),
            dto.error_reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
        )),
        _ => None,
    }
}
