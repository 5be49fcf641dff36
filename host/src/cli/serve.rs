//! `flue serve` (deployment) and `flue dev` (local development): agents as
//! webhook endpoints; see [`crate::serve`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::host_args::{AgentLimitArgs, HostArgs};
use super::{Failure, ranged, usage};
use crate::events::EventLog;
use crate::serve::{ServeConfig, bounds};

/// The shortest bearer token accepted, in bytes.
const MIN_TOKEN_BYTES: usize = 16;

/// Descriptors kept free for runs (sandbox processes' pipes, files, the
/// run store) besides client connections.
const RESERVED_FDS: u64 = 64;

/// The default port of `flue dev` and `flue serve`.
pub const DEFAULT_PORT: u16 = 3583;

/// `flue serve` / `flue dev` arguments.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The project directory: `agents/<name>/` or `agents/<name>.wasm`, and
    /// `flue.toml` (which agents are webhooks, their limits).
    #[arg(default_value = ".")]
    pub project: PathBuf,

    /// Address to listen on [default: 127.0.0.1:3583].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Bearer token clients must send (`Authorization: Bearer …`), at least
    /// 16 bytes. Required unless listening on loopback only.
    #[arg(long, value_name = "TOKEN", env = "FLUE_SERVE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// A host name clients may use besides localhost, 127.0.0.1 and [::1]
    /// (repeatable). On a loopback address other names are refused (421):
    /// that is how a web page re-pointing its DNS name at this machine is
    /// kept out. On other addresses, when given, only these names are served.
    #[arg(long = "allowed-host", value_name = "NAME")]
    pub allowed_hosts: Vec<String>,

    /// The largest request body, in KiB (larger: 413).
    #[arg(long, value_name = "KIB", default_value_t = 1024, value_parser = ranged(bounds::MAX_BODY_KIB))]
    pub max_body_kib: u64,

    /// The most memory request bodies being received may hold, all
    /// together, in MiB; past it, requests are refused at once (503 with
    /// Retry-After). At least --max-body-kib.
    #[arg(long, value_name = "MIB", default_value_t = 64, value_parser = ranged(bounds::BODY_MEMORY_MIB))]
    pub body_memory_mib: u64,

    /// Runs at once.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = ranged(bounds::MAX_CONCURRENT))]
    pub max_concurrent: u64,

    /// Isolated local sandboxes kept ready, bubblewrap and supervisor
    /// started, so that a run's first command does not wait for them; each
    /// is used by one run, then deleted, and replaced in the background.
    /// Only plain sandboxes come from here (no volumes, no environment, the
    /// default limits). 0 turns it off; without isolation there are none.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = ranged(bounds::READY_SANDBOXES))]
    pub ready_sandboxes: u64,

    /// Runs waiting for a slot, per server; past that, requests get 429 with
    /// Retry-After. Two waits count separately up to N each: runs whose
    /// callers wait on this server (synchronous and streamed ones), and
    /// background runs this server accepted into the store's shared queue
    /// while it had no free slot (any server sharing the store may start
    /// those).
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = ranged(bounds::QUEUE))]
    pub queue: u64,

    /// Client connections open at once; more wait until one closes
    /// [default: 512, or half the open-file limit (ulimit -n) if lower].
    #[arg(long, value_name = "N", value_parser = ranged(bounds::MAX_CONNECTIONS))]
    pub max_connections: Option<u64>,

    /// Seconds a client has to send a request's headers; an idle connection
    /// is closed after as long.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = ranged(bounds::HEADER_TIMEOUT_SECS))]
    pub header_timeout: u64,

    /// Seconds a client has to send a request's body; a client that stops
    /// reading its answer is disconnected after as long.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = ranged(bounds::BODY_TIMEOUT_SECS))]
    pub body_timeout: u64,

    /// Each run's limits.
    #[command(flatten)]
    pub agent_limits: AgentLimitArgs,

    /// `flue dev`: seconds an agent's build may take; a longer one is stopped
    /// (its processes killed) and the request fails with build-timeout.
    #[arg(long, value_name = "SECS", default_value_t = 600, value_parser = ranged(bounds::BUILD_TIMEOUT_SECS))]
    pub build_timeout: u64,

    /// Connector of a run's sandbox (an agent's `sandbox` wins).
    #[arg(long, value_name = "NAME", default_value = "local")]
    pub sandbox: String,

    /// Seconds runs in flight may finish after SIGTERM/SIGINT before they are
    /// stopped (and their sandboxes deleted) and every connection closed.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = ranged(bounds::GRACE_SECS))]
    pub grace: u64,

    /// The run store: an SQLite file, or a PostgreSQL database
    /// (`postgres://user:password@host/db`) that several servers share
    /// [default: PROJECT/.flue/runs.sqlite].
    #[arg(long, value_name = "FILE|URL", env = "FLUE_STORE", hide_env_values = true)]
    pub store: Option<String>,

    /// Seconds this server holds its runs without a heartbeat (it renews
    /// every third of it). With several servers on one store, one that stops
    /// answering — killed, frozen, cut off — loses its runs after this long:
    /// another server resumes those that keep a journal, and fails the rest.
    #[arg(long, value_name = "SECS", default_value_t = 15, value_parser = ranged(bounds::LEASE_SECS))]
    pub lease_secs: u64,

    /// Instance allocation: `on-demand` maps memory per instance; `pooling`
    /// reserves it for --max-concurrent runs up front (falls back to
    /// on-demand where the machine refuses the reservation). Measured with
    /// `hello`, sandbox setup dominates and pooling gains nothing, so it is
    /// not the default.
    #[arg(long, value_enum, default_value = "on-demand")]
    pub allocator: Allocator,

    /// Runs the store keeps (the newest).
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = ranged(bounds::RETENTION))]
    pub retention: u64,

    /// serve: build every agent source (`agents/<name>/`) at start, isolated
    /// as `flue build` is. Without it, serve runs prebuilt components only —
    /// `agents/<name>.wasm`, or what `flue build` made of `agents/<name>/` —
    /// and never runs an agent's build scripts. (`flue dev` always builds.)
    #[arg(long)]
    pub build: bool,

    /// Host flags.
    #[command(flatten)]
    pub host: HostArgs,
}

/// `--allocator`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Allocator {
    /// wasmtime's pooling allocator.
    Pooling,
    /// Memory mapped per instance.
    OnDemand,
}

/// Run the server; `dev` rebuilds agents and re-reads the project per
/// request. `events`: how its events are shown on stderr; `log`: where
/// `--build`'s progress goes.
pub async fn serve(
    mut args: ServeArgs,
    dev: bool,
    events: crate::events::EventFormat,
    log: EventLog,
) -> Result<(), Failure> {
    let listen = args.listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)));
    let token = args.token.clone().filter(|t| !t.is_empty());
    if !listen.ip().is_loopback() && token.is_none() {
        return Err(usage(anyhow::anyhow!(
            "listening on {listen} (not loopback) needs a bearer token: pass --token or set FLUE_SERVE_TOKEN"
        )));
    }
    if let Some(token) = &token
        && token.len() < MIN_TOKEN_BYTES
    {
        return Err(usage(anyhow::anyhow!(
            "the bearer token (--token or FLUE_SERVE_TOKEN) is {} bytes long; it must be at least {MIN_TOKEN_BYTES}: \
             a short token can be guessed by trying them all. Make one with: openssl rand -hex 32",
            token.len()
        )));
    }
    // Sent as a header and kept as a cookie by the runs page: only the
    // characters both may carry.
    if let Some(token) = &token
        && token.chars().any(|c| !c.is_ascii_graphic() || matches!(c, ';' | ',' | '"' | '\\'))
    {
        return Err(usage(anyhow::anyhow!(
            "the bearer token (--token or FLUE_SERVE_TOKEN) holds a character it cannot: use visible ASCII \
             without spaces, ; , \" or \\ (make one with: openssl rand -hex 32)"
        )));
    }
    for name in &args.allowed_hosts {
        if crate::serve::http_guard::host_name(name).is_none() {
            return Err(usage(anyhow::anyhow!("--allowed-host {name:?} is not a host name (like app.example.com)")));
        }
    }
    if args.body_memory_mib * 1024 < args.max_body_kib {
        return Err(usage(anyhow::anyhow!(
            "--body-memory-mib {} is less than one body of --max-body-kib {}: raise it to at least {}",
            args.body_memory_mib,
            args.max_body_kib,
            args.max_body_kib.div_ceil(1024)
        )));
    }
    if !args.project.is_dir() {
        return Err(usage(anyhow::anyhow!("{} is not a project directory", args.project.display())));
    }
    // flue.toml's errors (say, a limit out of range) are the user's to fix: exit 2, before anything starts.
    crate::serve::agents::discover(&args.project).map_err(usage)?;
    if args.build && !dev {
        let project = args.project.clone();
        tokio::task::spawn_blocking(move || crate::guest::build_project(&project, &log))
            .await
            .map_err(anyhow::Error::from)?
            .map_err(usage)?;
    }
    let max_connections = connection_cap(args.max_connections)?;
    let limits = args.agent_limits.limits();
    let pooled_runs = (args.allocator == Allocator::Pooling).then_some(args.max_concurrent as u32);
    let ready = crate::sandbox::local::ReadyAhead::Kept(args.ready_sandboxes as usize);
    // The project stands alone: its connectors/ and .env, wherever flue was
    // started from.
    args.host.project = Some(args.project.clone());
    let host = args.host.host_pooled(limits.clone(), pooled_runs, ready).await?;
    let reload = dev.then(|| {
        let mut watch = args.host.env_files.clone();
        watch.push(args.host.dotenv());
        watch.push(host.registry().dir().to_path_buf());
        let (host_args, limits) = (args.host.clone(), limits.clone());
        crate::serve::Reload {
            build: Box::new(move || {
                let (host_args, limits) = (host_args.clone(), limits.clone());
                Box::pin(async move {
                    host_args.host_pooled(limits, pooled_runs, ready).await.map_err(|failure| failure.error)
                })
            }),
            watch,
        }
    });
    let config = ServeConfig {
        listen,
        own_store_dir: args.store.is_none(),
        store: match &args.store {
            Some(store) => crate::serve::store::StoreLocation::parse(store),
            None => crate::serve::store::project_store(&args.project).as_path().into(),
        },
        project: args.project,
        token,
        allowed_hosts: args.allowed_hosts,
        body_limit: (args.max_body_kib as usize) * 1024,
        // Bounded by its parser (64 GiB): no overflow.
        body_memory: (args.body_memory_mib as usize) << 20,
        max_concurrent: args.max_concurrent as usize,
        queue: args.queue as usize,
        connections: crate::serve::connections::ConnectionLimits {
            max: max_connections,
            header_timeout: Duration::from_secs(args.header_timeout),
            stall_timeout: Duration::from_secs(args.body_timeout),
        },
        body_timeout: Duration::from_secs(args.body_timeout),
        limits,
        conversation_limit: args.agent_limits.conversation_limit(),
        journal_limit: args.agent_limits.journal_limit(),
        sandbox: args.sandbox,
        resources: args.host.resources(),
        grace: Duration::from_secs(args.grace),
        retention: args.retention as usize,
        lease: Duration::from_secs(args.lease_secs),
        dev,
        build_timeout: Duration::from_secs(args.build_timeout),
        events,
    };
    crate::serve::serve(host, config, reload).await?;
    Ok(())
}

/// `--max-connections`, or its default: 512, or half the open-file limit if
/// lower. A cap that leaves runs fewer than [`RESERVED_FDS`] descriptors
/// is refused.
fn connection_cap(asked: Option<u64>) -> Result<usize, Failure> {
    let fds = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(u64::MAX);
    let Some(asked) = asked else {
        return Ok(512.min(fds / 2).max(1) as usize);
    };
    if asked.saturating_add(RESERVED_FDS) > fds {
        return Err(usage(anyhow::anyhow!(
            "--max-connections {asked} leaves too few file descriptors for runs: this process may open {fds} \
             (ulimit -n); use at most {} or raise ulimit -n",
            fds.saturating_sub(RESERVED_FDS).max(1)
        )));
    }
    Ok(asked as usize)
}
