//! `flue serve` and `flue dev`: agents as webhook endpoints, many runs at
//! once in one process, each in its own store with its own sandboxes.
//!
//! * `POST /agents/<name>/<id>` with a JSON payload runs agent `<name>`
//!   (one that opted in to webhooks, see [`agents`]): synchronously
//!   (`200 {"result": …}`), as server-sent events ([`sse`]), or in the
//!   background (`X-Webhook: true`: `202 {"runId": …}`). Every answer
//!   carries `x-flue-run-id`.
//! * `GET /`: the runs page ([`ui`]) — runs newest first (`GET /runs`,
//!   a page at a time), each run's timeline live, the agents.
//! * `GET /runs/<runId>`: status, result, events and the conversations kept
//!   for its id, from the [`store`]; `GET /runs/<runId>/events` streams its
//!   events wherever it runs ([`sse`]); `POST /runs/<runId>/cancel` stops a
//!   queued or running run (status `cancelled`); `GET /sessions/<agent>/<id>`
//!   shows the conversations an agent keeps for an id.
//! * `GET /healthz`; `GET /metrics` in Prometheus text format ([`metrics`]).
//! * Every error, whatever answers it, is `{"error": {"kind", "message"}}`
//!   ([`errors`]); `--events` lines go to stderr ([`server_events`]).
//!
//! Every request first passes the [`http_guard`] (host names, cross-site
//! browsers, the token); connections are capped and timed ([`connections`]);
//! bodies share one memory budget ([`bodies`]); runs are admitted atomically
//! ([`admission`]) and run in their own task ([`runs`]); servers sharing a
//! store hold their runs by lease and claim queued ones ([`fleet`]); `flue dev`'s builds
//! are timed and stoppable ([`builds`]). Shutdown: stop accepting, let runs
//! finish for a grace period, then stop them (their sandboxes are deleted,
//! their builds killed) and close every connection; a second signal exits at
//! once, saying what may be left behind.

mod admission;
pub mod agents;
mod bodies;
pub mod bounds;
mod builds;
mod component_files;
pub mod connections;
pub mod errors;
mod fleet;
pub mod http_guard;
mod id_turns;
pub mod idle_sandboxes;
mod metrics;
mod parse_errors;
mod private_files;
mod reload;
mod routes;
mod runs;
mod server_events;
mod sse;
pub mod store;
mod ui;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::events::EventFormat;
use crate::host::Host;
use crate::runtime::Limits;
pub use reload::{BuildHost, Reload};

/// How a server runs.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The project: `agents/` and `flue.toml`.
    pub project: PathBuf,
    /// Required as `Authorization: Bearer …` when set.
    pub token: Option<String>,
    /// Host names accepted besides the loopback ones (`--allowed-host`).
    pub allowed_hosts: Vec<String>,
    /// The largest request body.
    pub body_limit: usize,
    /// The most bytes of request bodies held at once, all requests together.
    pub body_memory: usize,
    /// Runs at once.
    pub max_concurrent: usize,
    /// Runs waiting for a slot; past that, 429.
    pub queue: usize,
    /// Client connections, and their timeouts.
    pub connections: connections::ConnectionLimits,
    /// Time to send a request body.
    pub body_timeout: Duration,
    /// Default limits of a run (an agent's `flue.toml` may change them).
    pub limits: Limits,
    /// The most a session's conversation keeps between runs with one id.
    pub conversation_limit: usize,
    /// The bound on a run's journal in bytes; `None`: runs keep none (and a
    /// crash loses them).
    pub journal_limit: Option<u64>,
    /// The connector of a run's sandbox, unless the agent's manifest names one.
    pub sandbox: String,
    /// The size of a run's sandbox and the ceiling of every sandbox a run
    /// creates (`--cpus`, `--memory-gib`, `--disk-gib`).
    pub resources: Option<crate::sandbox::Resources>,
    /// How long runs may finish after a shutdown signal.
    pub grace: Duration,
    /// Where the run store is.
    pub store: store::StoreLocation,
    /// How long this server holds its runs without renewing its lease
    /// (`--lease-secs`): a server that stops answering loses them to the
    /// others after that.
    pub lease: Duration,
    /// The store's directory is flue's own (`<project>/.flue`): made private
    /// if it is not.
    pub own_store_dir: bool,
    /// Runs kept in the store.
    pub retention: usize,
    /// `flue dev`: look for agents (and rebuild them) at every request.
    pub dev: bool,
    /// `flue dev`: the longest an agent's build may take.
    pub build_timeout: Duration,
    /// How the server's events are shown on stderr (`--events`).
    pub events: EventFormat,
}

/// How long shutdown waits for the threads of stopped builds to return.
const BUILD_THREADS_GRACE: Duration = Duration::from_secs(5);

/// What every request handler shares.
pub struct ServerState {
    host: std::sync::RwLock<Host>,
    reload: Option<reload::DevReload>,
    /// `flue dev`: what is broken in the configuration, while it is.
    config_error: Mutex<Option<String>>,
    events: server_events::ServerEvents,
    config: ServeConfig,
    guard: http_guard::GuardConfig,
    agents: Mutex<HashMap<String, agents::AgentEntry>>,
    store: Arc<store::RunStore>,
    metrics: Arc<metrics::Metrics>,
    admission: admission::Admission,
    /// The memory request bodies being read may hold.
    body_budget: bodies::BodyBudget,
    /// Agent builds going on (`flue dev`).
    builds: builds::Builds,
    /// Agents' components, read once while unchanged.
    components: component_files::ComponentFiles,
    /// Runs of one agent and id, one at a time.
    id_turns: id_turns::IdTurns,
    /// This server among those sharing the store: its runs, its claims.
    fleet: fleet::Fleet,
    /// Set when runs still going must stop (the grace period is over).
    cancel: watch::Receiver<bool>,
}

/// Serve until SIGINT or SIGTERM, then shut down gracefully. Prints the
/// base URL once listening.
pub async fn serve(host: Host, config: ServeConfig, reload: Option<Reload>) -> anyhow::Result<()> {
    let listener = connections::listen(config.listen)
        .map_err(|err| anyhow::anyhow!("cannot listen on {}: {err}", config.listen))?;
    let addr = listener.local_addr()?;
    let project = agents::discover(&config.project)?;
    let store = Arc::new(
        store::RunStore::open(config.store.clone(), config.retention, config.own_store_dir)?.with_lease(config.lease),
    );
    let (cancel_tx, cancel) = watch::channel(false);
    let reload = reload.map(|reload| reload::DevReload::new(reload, &config.project));
    let events = server_events::ServerEvents::new(config.events);
    let mut refused: Vec<_> = project.agents.iter().filter_map(|(n, a)| Some((n, a.refused.as_ref()?))).collect();
    refused.sort();
    for (name, why) in refused {
        events.agent_refused(name, why);
    }
    for name in &project.missing {
        events
            .agent_refused(name, &format!("flue.toml names it, but there is no agents/{name}/ or agents/{name}.wasm"));
    }
    let guard = http_guard::GuardConfig {
        loopback: config.listen.ip().is_loopback(),
        allowed_hosts: config.allowed_hosts.iter().filter_map(|h| http_guard::host_name(h)).collect(),
        token: config.token.clone(),
    };
    let state = Arc::new(ServerState {
        host: std::sync::RwLock::new(host),
        reload,
        config_error: Mutex::default(),
        events,
        guard,
        agents: Mutex::new(project.agents),
        store,
        metrics: Arc::default(),
        admission: admission::Admission::new(config.max_concurrent, config.queue),
        body_budget: bodies::BodyBudget::new(config.body_memory),
        builds: builds::Builds::default(),
        components: component_files::ComponentFiles::default(),
        id_turns: id_turns::IdTurns::default(),
        fleet: fleet::Fleet::default(),
        cancel,
        config: config.clone(),
    });
    let webhooks: Vec<String> = {
        let agents = state.agents.lock().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<String> =
            agents.iter().filter(|(_, a)| a.manifest.webhook).map(|(n, _)| n.clone()).collect();
        names.sort();
        names
    };
    // Caught from here on, so that a signal right after the "listening" line counts.
    let mut signals = crate::run::signals::StopSignals::new();
    // Bound and set up: now worth making sandboxes ahead.
    state.host.read().unwrap_or_else(|e| e.into_inner()).registry().start_ready();
    println!("flue {} listening on http://{addr}", if config.dev { "dev" } else { "serve" });
    println!(
        "webhooks: {}",
        if webhooks.is_empty() {
            "(none: an agent declares webhook = true, or flue.toml sets it)".to_string()
        } else {
            webhooks.join(", ")
        }
    );
    use std::io::Write as _;
    let _ = std::io::stdout().flush();

    let (stopping_tx, mut stopping) = watch::channel(false);
    // Runs waiting in the store (accepted by any server, or left by one
    // that stopped) start here as slots allow.
    fleet::start(state.clone(), stopping.clone());
    reload::watch(state.clone());
    idle_sandboxes::watch(state.clone());
    let grace = config.grace;
    let runs = state.clone();
    tokio::spawn(async move {
        let reason = signals.next().await.reason;
        eprintln!(
            "flue: {reason}: no new runs; letting runs in flight finish (up to {} s; send it again to exit at once)",
            grace.as_secs()
        );
        let _ = stopping_tx.send(true);
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let _ = cancel_tx.send(true);
        });
        let second = signals.next().await;
        runs.builds.stop_all();
        let left = runs.admission.active();
        eprintln!(
            "flue: {}: exiting at once; {left} run(s) were still going: their sandboxes may be left behind \
             (`flue sandboxes gc` deletes them); another server sharing the store, or this one's next start, resumes \
             those that keep a journal and fails the others",
            second.reason
        );
        std::process::exit(second.exit_code);
    });
    let stop_accepting = async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    };
    let mut cancelled = state.cancel.clone();
    let runs = state.clone();
    let close_all = async move {
        let _ = cancelled.wait_for(|cancel| *cancel).await;
        // Runs stopped by the grace period answer their callers as they
        // end; give those answers a moment to be written, then close.
        runs.admission.idle().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let app = routes::router(state.clone());
    connections::serve(listener, app, config.connections, state.metrics.clone(), stop_accepting, close_all).await;
    // Detached (webhook) runs may still be going: wait for them, and for
    // the cleanup of those the grace period stopped.
    state.admission.idle().await;
    let released = state.store.release_held();
    if released > 0 {
        eprintln!("flue: {released} run(s) that had not started are back in the store's queue for the next server");
    }
    eprintln!("flue: stopped; every run's result is in the run store");
    // A stopped build's thread returns at once, unless it waits for the build
    // lock of a build in another process: do not wait on that to exit.
    if !state.builds.finished(BUILD_THREADS_GRACE).await {
        eprintln!("flue: a build thread is still waiting (for another process's build of the same agent); exiting");
        std::process::exit(0);
    }
    Ok(())
}
