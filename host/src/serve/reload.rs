//! `flue dev`: the project's agents and `flue.toml` are read again, and the
//! host (configuration and connectors) rebuilt when what it came from
//! changed — checked every half second and before every request.
//!
//! A broken `flue.toml` or `--env`/`.env` file is said at once on the
//! terminal, and webhook requests answer `503` naming the error until it is
//! fixed; meanwhile the last good agents and host stay loaded (runs in
//! flight keep the host they started with), and serve again once it is.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{ServerState, agents};
use crate::host::Host;

/// Builds a fresh host (configuration and connectors read again).
pub type BuildHost =
    Box<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<Host>> + Send>> + Send + Sync>;

/// What was seen last: each watched path's modification time.
type Fingerprint = Vec<(PathBuf, Option<std::time::SystemTime>)>;

/// How often `flue dev` looks for changes without a request.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// `flue dev`: how to build the host again, and what to watch for that.
pub struct Reload {
    /// Builds a fresh host.
    pub build: BuildHost,
    /// Files and directories whose change calls for a new host (`--env`
    /// files, `.env`, the connectors directory).
    pub watch: Vec<PathBuf>,
}

/// A [`Reload`] and what it saw last.
pub struct DevReload {
    reload: Reload,
    seen: tokio::sync::Mutex<Seen>,
}

struct Seen {
    host_inputs: Fingerprint,
    manifest: Fingerprint,
    host_error: Option<String>,
}

impl DevReload {
    /// Watching from now on.
    pub fn new(reload: Reload, project: &std::path::Path) -> Self {
        let seen = Seen {
            host_inputs: fingerprint(&reload.watch),
            manifest: fingerprint(&[project.join("flue.toml")]),
            host_error: None,
        };
        DevReload { reload, seen: tokio::sync::Mutex::new(seen) }
    }
}

/// Modification times of `paths` (directories: of their entries too).
fn fingerprint(paths: &[PathBuf]) -> Fingerprint {
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

/// `flue dev`: refresh every [`WATCH_INTERVAL`], so that a broken file is
/// reported when it is saved, not at the next request.
pub fn watch(state: Arc<ServerState>) {
    if state.reload.is_none() {
        return;
    }
    let state = Arc::downgrade(&state);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(WATCH_INTERVAL).await;
            let Some(state) = state.upgrade() else { return };
            refresh(&state).await;
        }
    });
}

/// `flue dev`: read the agents again, rebuild the host if its inputs
/// changed, and say when the configuration breaks or is fixed.
pub async fn refresh(state: &Arc<ServerState>) {
    let Some(dev) = &state.reload else { return };
    let mut seen = dev.seen.lock().await;
    let project = &state.config.project;

    let manifest_now = fingerprint(&[project.join("flue.toml")]);
    let manifest_changed = seen.manifest != manifest_now;
    seen.manifest = manifest_now;
    let manifest_error = match agents::discover(project) {
        Ok(agents::Project { agents: found, .. }) => {
            let mut agents = state.agents.lock().unwrap_or_else(|e| e.into_inner());
            for (name, entry) in &found {
                let known = agents.get(name).is_some_and(|old| old.refused == entry.refused);
                if let (Some(why), false) = (&entry.refused, known) {
                    state.events.agent_refused(name, why);
                }
            }
            *agents = found;
            if manifest_changed {
                state.events.reloaded("flue.toml");
            }
            None
        }
        Err(err) => Some(err.to_string()),
    };

    let host_now = fingerprint(&dev.reload.watch);
    if seen.host_inputs != host_now {
        seen.host_inputs = host_now;
        seen.host_error = match (dev.reload.build)().await {
            Ok(host) => {
                host.registry().start_ready();
                // Runs in flight keep the host they started with. The old
                // one is let go of off the lock and off the runtime's
                // threads (its ready sandboxes are stopped and deleted).
                let old = std::mem::replace(&mut *state.host.write().unwrap_or_else(|e| e.into_inner()), host);
                tokio::task::spawn_blocking(move || drop(old));
                state.events.reloaded("the configuration (--env, .env) or connectors/");
                None
            }
            Err(err) => Some(format!("{err:#}")),
        };
    }

    let broken: Vec<String> = manifest_error.into_iter().chain(seen.host_error.clone()).collect();
    let broken = (!broken.is_empty()).then(|| broken.join("; "));
    let mut current = state.config_error.lock().unwrap_or_else(|e| e.into_inner());
    if *current != broken {
        match &broken {
            Some(message) => state.events.config_broken(message),
            None => state.events.config_fixed(),
        }
        *current = broken;
    }
}
