//! `flue dev`: the project's agents and `flue.toml` are read again, and the
//! host (configuration and connectors) rebuilt when what it came from
//! changed. Runs in flight keep the host they started with.

use std::path::PathBuf;
use std::sync::Arc;

use super::{ServerState, agents};
use crate::host::Host;

/// Builds a fresh host (configuration and connectors read again).
pub type BuildHost =
    Box<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<Host>> + Send>> + Send + Sync>;

/// What a [`Reload`] saw last: each watched path's modification time.
pub type Fingerprint = Vec<(PathBuf, Option<std::time::SystemTime>)>;

/// `flue dev`: how to build the host again, and what to watch for that.
pub struct Reload {
    /// Builds a fresh host.
    pub build: BuildHost,
    /// Files and directories whose change calls for a new host (`--env`
    /// files, `.env`, the connectors directory).
    pub watch: Vec<PathBuf>,
}

/// Modification times of what a [`Reload`] watches (directories: of their entries).
pub fn fingerprint(paths: &[PathBuf]) -> Fingerprint {
    let mut seen = Vec::new();
    for path in paths {
        seen.push((path.clone(), std::fs::metadata(path).and_then(|m| m.modified()).ok()));
        if let Ok(entries) = std::fs::read_dir(path) {
            let mut inner: Vec<_> =
                entries.flatten().map(|e| (e.path(), e.metadata().and_then(|m| m.modified()).ok())).collect();
            inner.sort();
            seen.extend(inner);
        }
    }
    seen
}

/// Before a request in `flue dev`: read the agents again, and rebuild the
/// host if its configuration or connectors changed.
pub async fn refresh(state: &Arc<ServerState>) {
    if state.config.dev
        && let Ok(found) = agents::discover(&state.config.project)
    {
        *state.agents.lock().unwrap_or_else(|e| e.into_inner()) = found;
    }
    if let Some((reload, seen)) = &state.reload {
        let mut seen = seen.lock().await;
        let now = fingerprint(&reload.watch);
        if *seen != now {
            match (reload.build)().await {
                Ok(host) => {
                    *state.host.write().unwrap_or_else(|e| e.into_inner()) = host;
                    eprintln!("flue: configuration or connectors changed: reloaded");
                }
                Err(err) => eprintln!("flue: could not reload the configuration or connectors: {err:#}"),
            }
            *seen = now;
        }
    }
}
