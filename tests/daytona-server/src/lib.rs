//! A Daytona-compatible server for tests and for trying flue without an
//! account.
//!
//! It speaks the wire protocol of `shared/daytona-wire-spec.md` — the main
//! API under `/api` and the toolbox proxy under `/toolbox/{id}` — with the
//! SDK's status codes, JSON bodies, multipart formats, state transitions and
//! error bodies. Commands really run: each sandbox is a flue local sandbox
//! (bubblewrap-isolated when available) whose directory commands see at
//! `/home/daytona`. Faults can be injected while it runs ([`Faults`]).

mod api;
mod errors;
mod faults;
mod home;
mod time;
#[allow(clippy::result_large_err, reason = "handlers return ready-made error responses")]
mod toolbox;
mod volumes;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

pub use faults::{Faults, Injected};
use flue::events::EventLog;
use flue::sandbox::local::{Isolation, LocalConfig, LocalConnector};
use flue::sandbox::{Connector, Sandbox};

/// Largest request body accepted whole (uploads stream, whatever their size).
pub(crate) const BODY_LIMIT: usize = 512 * 1024 * 1024;
/// How much of each request body is kept in the request record.
const RECORD_CAP: usize = 4 * 1024 * 1024;

/// Where Daytona sandboxes keep their files; commands see the sandbox there.
pub const HOME: &str = "/home/daytona";

pub struct ServerConfig {
    /// 0 picks a free port.
    pub port: u16,
    /// The key clients must send.
    pub api_key: String,
    /// Use bubblewrap when it works here.
    pub isolated: bool,
    /// Where sandboxes' files live (default: a fresh temporary directory).
    /// Without isolation, commands see this path itself.
    pub sandboxes_dir: Option<PathBuf>,
    /// Faults to inject.
    pub faults: Faults,
    /// Keep every request (bodies up to 4 MiB) for [`DaytonaServer::requests`].
    /// Tests want this; a long-running server or a benchmark does not.
    pub record_requests: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            port: 0,
            api_key: "test-key".into(),
            isolated: true,
            sandboxes_dir: None,
            faults: Faults::default(),
            record_requests: true,
        }
    }
}

/// A request as received (for tests asserting what clients send).
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub headers: Vec<(String, String)>,
    /// The body, or its first 4 MiB.
    pub body: bytes::Bytes,
}

/// One sandbox on the server.
pub(crate) struct SandboxRecord {
    pub id: String,
    pub name: String,
    pub labels: serde_json::Map<String, serde_json::Value>,
    pub env: serde_json::Map<String, serde_json::Value>,
    pub target: String,
    pub state: String,
    pub error_reason: Option<String>,
    pub polls_left: u32,
    pub fail_reason: Option<String>,
    pub toolbox_calls: u64,
    pub created_at: String,
    pub auto_stop: Option<u64>,
    pub backend: Arc<dyn Sandbox>,
    /// Its `SandboxVolume`s, volume ids resolved.
    pub volumes: Vec<serde_json::Value>,
}

/// A volume.
pub(crate) struct VolumeRecord {
    pub id: String,
    pub name: String,
    pub state: String,
    pub created_at: String,
}

pub(crate) struct AppState {
    pub api_key: String,
    pub faults: Faults,
    pub base_url: String,
    /// flue's local backend: each Daytona sandbox is one of its sandboxes.
    pub local: Arc<dyn Connector>,
    pub sandboxes: Mutex<HashMap<String, SandboxRecord>>,
    pub volumes: Mutex<HashMap<String, VolumeRecord>>,
    /// `None` when requests are not recorded.
    pub requests: Option<Mutex<Vec<RecordedRequest>>>,
    pub next_id: Mutex<u64>,
    _dir: tempfile::TempDir,
}

pub struct DaytonaServer {
    addr: SocketAddr,
    state: Arc<AppState>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    /// The HTTP server's task, awaited by [`DaytonaServer::shutdown`].
    serving: Option<tokio::task::JoinHandle<()>>,
    /// The temporary directory (sandboxes, volumes) this server made.
    dir: PathBuf,
}

impl DaytonaServer {
    /// Bind 127.0.0.1 and serve in the background.
    pub async fn start(config: ServerConfig) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port)).await?;
        let addr = listener.local_addr()?;
        let isolation = match (config.isolated, flue::sandbox::local::probe_bubblewrap().await) {
            (true, Ok(bwrap)) => Isolation::Bubblewrap { bwrap, allow_network: false },
            _ => Isolation::None,
        };
        let isolated = isolation.is_isolated();
        let dir = tempfile::Builder::new().prefix("daytona-test-server-").tempdir()?;
        let dir_path = dir.path().to_path_buf();
        let mut local = LocalConfig::new(isolation);
        local.base_dir = config.sandboxes_dir.clone().unwrap_or_else(|| dir.path().join("sandboxes"));
        if let Some(parent) = local.base_dir.parent() {
            std::fs::create_dir_all(parent)?;
        }
        local.visible_root = HOME.into();
        local.volumes_dir = dir.path().join("volumes");
        // The same host assembly as flue itself, with only the local backend.
        let host = flue::HostBuilder::new().cache_dir(None).builtin(Arc::new(LocalConnector::new(local))).build()?;
        let local = host.connector("local", &EventLog::discard()).await?;
        // Without bubblewrap the sandboxes cannot be at /home/daytona for
        // real: map that path (see `home`).
        let local: Arc<dyn flue::sandbox::Connector> =
            if isolated { local } else { Arc::new(home::HomeMapped::new(local)) };
        let state = Arc::new(AppState {
            api_key: config.api_key,
            faults: config.faults,
            base_url: format!("http://{addr}"),
            local,
            sandboxes: Mutex::default(),
            volumes: Mutex::default(),
            requests: config.record_requests.then(Mutex::default),
            next_id: Mutex::new(1),
            _dir: dir,
        });
        let app = Router::new()
            .nest("/api", api::routes().merge(volumes::routes()))
            .nest("/toolbox/{id}", toolbox::routes())
            .layer(middleware::from_fn_with_state(state.clone(), gate))
            .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
            .with_state(state.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        // Responses go out in several writes (headers, then each part of a
        // streamed body): with Nagle's algorithm a small write waits for the
        // client's delayed ACK, ~40 ms. Send each write at once.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
            let _ = tcp.set_nodelay(true);
        });
        let serving = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(DaytonaServer { addr, state, shutdown: Some(tx), serving: Some(serving), dir: dir_path })
    }

    /// Stop serving (requests in flight get a few seconds), delete every
    /// sandbox — their processes and files — and remove the server's
    /// temporary directory: what a stopped server leaves is nothing.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(serving) = self.serving.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), serving).await;
        }
        let sandboxes: Vec<SandboxRecord> =
            self.state.sandboxes.lock().expect("lock").drain().map(|(_, record)| record).collect();
        for record in sandboxes {
            let _ = self.state.local.delete(record.backend.id()).await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// The temporary directory the server keeps its sandboxes and volumes
    /// in (removed by [`DaytonaServer::shutdown`]).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The value for `DAYTONA_API_URL`.
    pub fn api_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    pub fn toolbox_url(&self) -> String {
        format!("http://{}/toolbox", self.addr)
    }

    pub fn faults(&self) -> &Faults {
        &self.state.faults
    }

    /// Ids of the sandboxes that exist (not deleted), sorted.
    pub fn sandbox_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.state.sandboxes.lock().expect("lock").keys().cloned().collect();
        ids.sort();
        ids
    }

    /// The state of a sandbox, if it exists.
    pub fn sandbox_state(&self, id: &str) -> Option<String> {
        self.state.sandboxes.lock().expect("lock").get(id).map(|s| s.state.clone())
    }

    /// Move a sandbox to `state` (e.g. `stopped`), as if Daytona had.
    pub fn set_sandbox_state(&self, id: &str, state: &str) {
        if let Some(record) = self.state.sandboxes.lock().expect("lock").get_mut(id) {
            record.state = state.into();
        }
    }

    /// Every request received so far (none unless
    /// [`ServerConfig::record_requests`]).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests.as_ref().map(|r| r.lock().expect("lock").clone()).unwrap_or_default()
    }
}

/// Record `request` (its body's first RECORD_CAP bytes) and hand it on. A
/// larger body (a big upload) streams on to its handler rather than sitting
/// in memory.
async fn record(request: Request, requests: &Mutex<Vec<RecordedRequest>>) -> Result<Request, Response> {
    let (parts, body) = request.into_parts();
    let mut stream = body.into_data_stream();
    let mut head: Vec<bytes::Bytes> = Vec::new();
    let mut head_len = 0;
    let mut ended = false;
    while head_len <= RECORD_CAP {
        match futures_util::StreamExt::next(&mut stream).await {
            Some(Ok(chunk)) => {
                head_len += chunk.len();
                head.push(chunk);
            }
            Some(Err(err)) => {
                return Err(errors::api_error(StatusCode::BAD_REQUEST, parts.uri.path(), err.to_string()));
            }
            None => {
                ended = true;
                break;
            }
        }
    }
    let recorded: bytes::Bytes = head.concat().into();
    let body = if ended {
        Body::from(recorded.clone())
    } else {
        let rest = futures_util::StreamExt::map(stream, |chunk| chunk.map_err(std::io::Error::other));
        let head = futures_util::stream::iter(head.into_iter().map(Ok::<_, std::io::Error>));
        Body::from_stream(futures_util::StreamExt::chain(head, rest))
    };
    let request = Request::from_parts(parts, body);
    requests.lock().expect("lock").push(RecordedRequest {
        body: recorded.slice(..recorded.len().min(RECORD_CAP)),
        method: request.method().to_string(),
        uri: request.uri().to_string(),
        headers: request
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
    });
    Ok(request)
}

impl Drop for DaytonaServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Every request: record it, inject faults, check the bearer token.
async fn gate(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let request = match &state.requests {
        Some(requests) => match record(request, requests).await {
            Ok(request) => request,
            Err(refused) => return refused,
        },
        None => request,
    };
    let path = request.uri().path().to_string();
    let latency = state.faults.latency_ms();
    if latency > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(latency)).await;
    }
    match state.faults.next() {
        Injected::None => {}
        Injected::ServiceUnavailable => {
            return errors::api_error(
                StatusCode::SERVICE_UNAVAILABLE,
                &path,
                "Service temporarily unavailable (injected fault)",
            );
        }
        Injected::RateLimited => {
            let mut response =
                errors::api_error(StatusCode::TOO_MANY_REQUESTS, &path, "Too many requests (injected fault)");
            response.headers_mut().insert("retry-after", "0".parse().expect("valid header"));
            return response;
        }
        Injected::Drop => return dropped_connection(),
    }
    if state.faults.fail_auth() || !authorized(request.headers(), &state.api_key) {
        let message = if state.faults.echo_credentials() {
            let sent = request
                .headers()
                .get("authorization")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default();
            let key = sent.strip_prefix("Bearer ").unwrap_or(&sent);
            // A careless server: the key as sent, and encoded two ways.
            format!(
                "Invalid credentials: {sent} (base64 {}, as a query parameter key={})",
                base64_encode(key.as_bytes()),
                url_encode(key)
            )
        } else {
            "Invalid credentials".to_string()
        };
        return errors::api_error(StatusCode::UNAUTHORIZED, &path, message);
    }
    next.run(request).await
}

fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    while !out.len().is_multiple_of(4) {
        out.push('=');
    }
    out
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

fn authorized(headers: &HeaderMap, key: &str) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()).is_some_and(|v| v == format!("Bearer {key}"))
}

/// Headers go out, then the connection breaks mid-body.
pub(crate) fn dropped_connection() -> Response {
    let stream = futures_util::stream::once(async {
        Err::<bytes::Bytes, std::io::Error>(std::io::Error::other("connection dropped (injected fault)"))
    });
    (StatusCode::OK, [("content-type", "application/json")], Body::from_stream(stream)).into_response()
}
