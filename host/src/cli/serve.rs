//! `flue serve` (deployment) and `flue dev` (local development): agents as
//! webhook endpoints; see [`crate::serve`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::host_args::HostArgs;
use super::{Failure, usage};
use crate::events::EventLog;
use crate::runtime::Limits;
use crate::serve::ServeConfig;

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

    /// Bearer token clients must send (`Authorization: Bearer …`). Required
    /// unless listening on loopback only.
    #[arg(long, value_name = "TOKEN", env = "FLUE_SERVE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// The largest request body, in KiB (larger: 413).
    #[arg(long, value_name = "KIB", default_value_t = 1024)]
    pub max_body_kib: usize,

    /// Runs at once.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub max_concurrent: usize,

    /// Runs waiting for a slot; past that, requests get 429 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub queue: usize,

    /// A run's deadline in seconds (an agent's `deadline-secs` in flue.toml wins).
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub deadline: u64,

    /// An agent's memory limit in MiB (an agent's `memory-mib` wins).
    #[arg(long, value_name = "MIB", default_value_t = 512)]
    pub memory: usize,

    /// Connector of a run's sandbox (an agent's `sandbox` wins).
    #[arg(long, value_name = "NAME", default_value = "local")]
    pub sandbox: String,

    /// Seconds runs in flight may finish after SIGTERM/SIGINT before they are
    /// stopped (and their sandboxes deleted).
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub grace: u64,

    /// The run store (SQLite) [default: PROJECT/.flue/runs.sqlite].
    #[arg(long, value_name = "FILE")]
    pub store: Option<PathBuf>,

    /// Instance allocation: `on-demand` maps memory per instance; `pooling`
    /// reserves it for --max-concurrent runs up front (falls back to
    /// on-demand where the machine refuses the reservation). Measured with
    /// `hello`, sandbox setup dominates and pooling gains nothing, so it is
    /// not the default.
    #[arg(long, value_enum, default_value = "on-demand")]
    pub allocator: Allocator,

    /// Runs the store keeps (the newest).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub retention: usize,

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

/// Run the server; `dev` rebuilds agents and re-reads the project per request.
pub async fn serve(args: ServeArgs, dev: bool, events: EventLog) -> Result<(), Failure> {
    let listen = args.listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)));
    if !listen.ip().is_loopback() && args.token.as_deref().is_none_or(str::is_empty) {
        return Err(usage(anyhow::anyhow!(
            "listening on {listen} (not loopback) needs a bearer token: pass --token or set FLUE_SERVE_TOKEN"
        )));
    }
    if !args.project.is_dir() {
        return Err(usage(anyhow::anyhow!("{} is not a project directory", args.project.display())));
    }
    if args.build && !dev {
        let project = args.project.clone();
        tokio::task::spawn_blocking(move || crate::guest::build_project(&project, &events))
            .await
            .map_err(anyhow::Error::from)?
            .map_err(usage)?;
    }
    let limits = Limits {
        deadline: Duration::from_secs(args.deadline),
        agent_memory: args.memory.saturating_mul(1024 * 1024),
        ..Limits::default()
    };
    let pooled_runs = (args.allocator == Allocator::Pooling).then_some(args.max_concurrent as u32);
    let host = args.host.host_pooled(limits.clone(), pooled_runs).await?;
    let reload = dev.then(|| {
        let mut watch = args.host.env_files.clone();
        watch.push(PathBuf::from(".env"));
        watch.push(host.registry().dir().to_path_buf());
        let (host_args, limits) = (args.host.clone(), limits.clone());
        crate::serve::Reload {
            build: Box::new(move || {
                let (host_args, limits) = (host_args.clone(), limits.clone());
                Box::pin(
                    async move { host_args.host_pooled(limits, pooled_runs).await.map_err(|failure| failure.error) },
                )
            }),
            watch,
        }
    });
    let config = ServeConfig {
        listen,
        store: args.store.clone().unwrap_or_else(|| args.project.join(".flue").join("runs.sqlite")),
        project: args.project,
        token: args.token.filter(|t| !t.is_empty()),
        body_limit: args.max_body_kib.saturating_mul(1024),
        max_concurrent: args.max_concurrent,
        queue: args.queue,
        limits,
        sandbox: args.sandbox,
        grace: Duration::from_secs(args.grace),
        retention: args.retention.max(1),
        dev,
    };
    crate::serve::serve(host, config, reload).await?;
    Ok(())
}
