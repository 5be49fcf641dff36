//! The `flue` command line.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::agent_source;
use crate::backend::CreateOptions;
use crate::cache::ComponentCache;
use crate::connectors::ConnectorRegistry;
use crate::events::{EventFormat, EventLog, StderrSink};
use crate::local::{Isolation, LocalConfig, LocalConnector, probe_bubblewrap};
use crate::run::{AgentRun, RunSettings, run_agent};
use crate::runtime::{Limits, Runtime};

/// Write a line to stdout. A closed pipe (`flue run … | head`) is not an
/// error worth a panic: the reader has what it wanted.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// Exit code when the run (or check) failed.
pub const EXIT_FAILED: i32 = 1;
/// Exit code for bad usage or input (as clap uses).
pub const EXIT_USAGE: i32 = 2;

const AFTER_HELP: &str = "\
Examples:
  flue run hello                              run the `hello` example on the local sandbox
  flue run hello --payload '{\"name\":\"Ada\"}'   pass a JSON payload to the agent
  flue run ./my-agent                         build the agent in ./my-agent and run it
  flue run agent.wasm --sandbox daytona --env .env.daytona
  flue new python my-agent                    create an agent (rust, python or js) that builds and runs as is
  flue build my-agent                         build it to a component (flue run rebuilds when stale)
  flue connectors                             list connectors and their settings
  flue conformance local                      check a connector against the sandbox contract

Exit codes: 0 success, 1 the run or check failed, 2 bad usage or input.
Set FLUE_LOG=debug for more detail on stderr.";

#[derive(Parser, Debug)]
#[command(
    name = "flue",
    version,
    about = "Run WebAssembly agents against sandboxes: local, Daytona, or any connector component",
    long_about = "Run WebAssembly agents against sandboxes.\n\n\
        An agent is a wasm component (written in Rust, Python, JavaScript, ...) that imports \
        flue:sandbox. Every shell command and file operation it makes goes to a sandbox: the \
        built-in `local` one (a directory on this machine, isolated with bubblewrap when \
        available) or a connector component from the connectors directory, such as Daytona.",
    after_help = AFTER_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// How to show run events on stderr.
    #[arg(long, global = true, value_enum, default_value = "text", env = "FLUE_EVENTS")]
    pub events: EventFormat,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run an agent: result JSON on stdout, events on stderr.
    Run(RunArgs),
    /// List the connectors found, with their settings or why they failed to load.
    Connectors(HostArgs),
    /// Run the sandbox contract suite against a connector and print a pass/fail table.
    Conformance(ConformanceArgs),
    /// Install a connector from this project's source into the connectors directory.
    Add(AddArgs),
    /// Build the agent in DIR (Rust, Python or JavaScript) to a component.
    Build(BuildArgs),
    /// Create a new agent from a template that builds and runs as is.
    New(NewArgs),
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// The agent's directory (with Cargo.toml, app.py or agent.js).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct NewArgs {
    /// The agent's language.
    #[arg(value_enum)]
    pub language: agent_source::Language,
    /// Name of the agent, and of the directory created for it.
    pub name: String,
}

#[derive(Args, Debug)]
pub struct AddArgs {
    /// Connector to install, e.g. `daytona`. Without it, lists what can be added.
    pub name: Option<String>,

    /// Print how to wire the connector up (its settings) instead of installing it.
    #[arg(long)]
    pub print: bool,

    #[command(flatten)]
    pub host: HostArgs,
}

#[derive(Args, Debug)]
pub struct HostArgs {
    /// Directory of connector components (*.wasm).
    #[arg(long, value_name = "DIR", env = "FLUE_CONNECTORS")]
    pub connectors: Option<PathBuf>,

    /// Read configuration (e.g. DAYTONA_API_KEY) from FILE. Repeatable: later
    /// files win, and the real environment wins over files.
    #[arg(long = "env", value_name = "FILE")]
    pub env_files: Vec<PathBuf>,

    /// local sandbox: use DIR as the sandbox directory (kept afterwards)
    /// instead of a fresh temporary one.
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,

    /// local sandbox: how to isolate commands. `auto` uses bubblewrap when it
    /// works here and warns when it does not.
    #[arg(long, value_enum, default_value = "auto", env = "FLUE_ISOLATION")]
    pub isolation: IsolationChoice,

    /// local sandbox: let commands use the network (isolated commands have none by default).
    #[arg(long)]
    pub allow_network: bool,

    /// Where compiled components are cached [default: $XDG_CACHE_HOME/flue].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IsolationChoice {
    Auto,
    Bwrap,
    None,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The agent: a .wasm component, a directory with an agent's source (built
    /// first), or an example name such as `hello` or `persistent`.
    pub agent: String,

    /// Connector for the run's sandbox: `local`, or NAME for connectors/NAME.wasm.
    #[arg(long, value_name = "NAME", default_value = "local", env = "FLUE_SANDBOX")]
    pub sandbox: String,

    /// JSON payload handed to the agent.
    #[arg(long, value_name = "JSON")]
    pub payload: Option<String>,

    /// The id the agent is invoked with (e.g. a conversation or ticket id).
    #[arg(long, default_value = "cli")]
    pub id: String,

    /// Keep the sandboxes this run creates (their ids are printed) instead of deleting them.
    #[arg(long)]
    pub keep: bool,

    /// Use an existing sandbox (by id) as the run's sandbox instead of creating one.
    #[arg(long, value_name = "ID")]
    pub reuse: Option<String>,

    /// Stop the agent after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub deadline: u64,

    /// The agent's memory limit, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 512)]
    pub memory: usize,

    #[command(flatten)]
    pub host: HostArgs,
}

#[derive(Args, Debug)]
pub struct ConformanceArgs {
    /// Connector to check: `local`, a name from the connectors directory, or a path to a .wasm.
    pub connector: String,

    /// Keep the sandbox the suite creates.
    #[arg(long)]
    pub keep: bool,

    #[command(flatten)]
    pub host: HostArgs,
}

/// A failure with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(error: E) -> Self {
        Failure { code: EXIT_FAILED, error: error.into() }
    }
}

fn usage(error: impl Into<anyhow::Error>) -> Failure {
    Failure { code: EXIT_USAGE, error: error.into() }
}

pub async fn main(cli: Cli) -> Result<(), Failure> {
    let events = EventLog::new(Arc::new(StderrSink::new(cli.events)));
    match cli.command {
        Command::Run(args) => run(args, events).await,
        Command::Connectors(args) => connectors(args).await,
        Command::Conformance(args) => conformance(args, events).await,
        Command::Add(args) => add(args).await,
        Command::Build(args) => {
            let wasm = agent_source::build(&args.dir).map_err(usage)?;
            out!("{}", wasm.display());
            Ok(())
        }
        Command::New(args) => {
            let dir = crate::scaffold::create(args.language, &args.name, Path::new(".")).map_err(usage)?;
            out!(
                "created {}: build it with `flue build {}`, run it with `flue run {}`",
                dir.display(),
                args.name,
                args.name
            );
            Ok(())
        }
    }
}

async fn run(args: RunArgs, events: EventLog) -> Result<(), Failure> {
    // Cheap checks first: bad input is refused before anything slow happens.
    let payload = match &args.payload {
        Some(text) => serde_json::from_str::<serde_json::Value>(text).map_err(|err| {
            usage(anyhow::anyhow!("--payload is not valid JSON ({err}); for example --payload '{{\"name\":\"Ada\"}}'"))
        })?,
        None => serde_json::Value::Null,
    };
    if args.memory == 0 || args.deadline == 0 {
        return Err(usage(anyhow::anyhow!("--memory and --deadline must be greater than zero")));
    }
    let limits = Limits {
        deadline: Duration::from_secs(args.deadline),
        agent_memory: args.memory.saturating_mul(1024 * 1024),
        ..Limits::default()
    };
    let (runtime, registry) = host(&args.host, limits).await?;
    let wasm_path = agent_source::resolve(&args.agent).map_err(usage)?;
    let wasm = std::fs::read(&wasm_path).with_context(|| format!("cannot read {}", wasm_path.display()))?;

    let outcome = run_agent(
        &runtime,
        registry,
        AgentRun {
            label: args.agent.clone(),
            wasm,
            id: args.id,
            payload: payload.to_string(),
            settings: RunSettings { default_connector: args.sandbox, keep: args.keep, reuse: args.reuse },
        },
        events,
    )
    .await;
    match outcome.result {
        Ok(result) => {
            out!("{}", serde_json::to_string_pretty(&result).expect("JSON value serialises"));
            Ok(())
        }
        Err(err) => Err(anyhow::Error::new(err).context(format!("run {} failed", outcome.run_id)).into()),
    }
}

async fn connectors(args: HostArgs) -> Result<(), Failure> {
    let (_, registry) = host(&args, Limits::default()).await?;
    out!("connectors (from {}):", registry.dir().display());
    for listing in registry.list().await {
        let source = listing.file.as_ref().map(|f| f.display().to_string()).unwrap_or_else(|| "built in".into());
        match listing.info {
            Ok(info) => {
                out!("  {:<12} {} {} — {}", listing.name, info.name, info.version, info.description);
                out!("  {:<12} source: {source}", "");
                for key in &info.config {
                    let flags = [(key.required, "required"), (key.secret, "secret")]
                        .iter()
                        .filter(|(on, _)| *on)
                        .map(|(_, f)| *f)
                        .collect::<Vec<_>>()
                        .join(", ");
                    out!(
                        "  {:<12} {} ({}) {}",
                        "",
                        key.name,
                        if flags.is_empty() { "optional" } else { &flags },
                        key.description
                    );
                }
                if !info.allowed_hosts.is_empty() {
                    out!("  {:<12} may call: {}", "", info.allowed_hosts.join(", "));
                }
            }
            Err(err) => out!("  {:<12} error: {err}", listing.name),
        }
    }
    Ok(())
}

async fn conformance(args: ConformanceArgs, events: EventLog) -> Result<(), Failure> {
    let (_, registry) = host(&args.host, Limits::default()).await?;
    let connector = if args.connector.ends_with(".wasm") && std::path::Path::new(&args.connector).is_file() {
        registry.instantiate_file(std::path::Path::new(&args.connector), &events).await
    } else {
        registry.instantiate(&args.connector, &events).await
    }
    .map_err(usage)?;
    let sandbox = connector.create(&CreateOptions::default()).await.context("could not create a sandbox")?;
    let results = crate::conformance::run(sandbox.clone(), connector.info().merges_output, EventLog::discard()).await;
    if args.keep {
        eprintln!("kept sandbox {}", sandbox.id());
    } else if let Err(err) = connector.delete(sandbox.id()).await {
        eprintln!("warning: could not delete sandbox {}: {err}", sandbox.id());
    }
    out!("{}", crate::conformance::render_table(&args.connector, &results).trim_end());
    if results.iter().any(|r| r.outcome.is_err()) {
        return Err(anyhow::anyhow!("{} does not conform to the sandbox contract", args.connector).into());
    }
    Ok(())
}

async fn add(args: AddArgs) -> Result<(), Failure> {
    let sources = agent_source::project_root().join("connectors");
    let mut available: Vec<String> = std::fs::read_dir(&sources)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().join("Cargo.toml").is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    available.sort();
    let Some(name) = args.name.clone() else {
        out!("connectors that can be added (from {}):", sources.display());
        for name in &available {
            out!("  {name:<12} flue add {name}    (or `flue add {name} --print` for its settings)");
        }
        return Ok(());
    };
    if !available.contains(&name) {
        return Err(usage(anyhow::anyhow!("no connector source named {name:?}; available: {}", available.join(", "))));
    }
    let built = agent_source::build_rust(&sources.join(&name)).map_err(anyhow::Error::from)?;
    let (_, registry) = host(&args.host, Limits::default()).await?;
    let info = registry.inspect(&built).await?;
    if !args.print {
        std::fs::create_dir_all(registry.dir())
            .with_context(|| format!("cannot create {}", registry.dir().display()))?;
        let target = registry.dir().join(format!("{name}.wasm"));
        std::fs::copy(&built, &target).with_context(|| format!("cannot write {}", target.display()))?;
        out!("installed {}", target.display());
    }
    out!("{}", wiring_instructions(&name, &info).trim_end());
    Ok(())
}

/// How to configure and use a connector, from what it declares.
fn wiring_instructions(name: &str, info: &crate::backend::ConnectorInfo) -> String {
    let mut out = format!("# {} {}: {}\n", info.name, info.version, info.description);
    out.push_str("# Settings (environment variables, or lines of an --env file):\n");
    for key in &info.config {
        let what = match (key.required, key.secret) {
            (true, true) => "required, secret",
            (true, false) => "required",
            (false, true) => "optional, secret",
            (false, false) => "optional",
        };
        let value = key.default_value.clone().unwrap_or_default();
        out.push_str(&format!("{}={value}    # {what}: {}\n", key.name, key.description));
    }
    if !info.allowed_hosts.is_empty() {
        out.push_str(&format!("# It may call: {}\n", info.allowed_hosts.join(", ")));
    }
    out.push_str(&format!(
        "# Install it with `flue add {name}`, then run an agent on it:\n#   flue run hello --sandbox {name} --env .env.{name}\n"
    ));
    out
}

/// The runtime and connector registry the commands share.
async fn host(args: &HostArgs, limits: Limits) -> Result<(Arc<Runtime>, Arc<ConnectorRegistry>), Failure> {
    let config = crate::config::load(&args.env_files, std::env::vars()).map_err(usage)?;
    let cache_dir = args.cache_dir.clone().or_else(ComponentCache::default_dir);
    let runtime = Arc::new(Runtime::new(cache_dir, limits)?);

    let isolation = match args.isolation {
        IsolationChoice::None => Isolation::None,
        IsolationChoice::Bwrap => match probe_bubblewrap().await {
            Ok(bwrap) => Isolation::Bubblewrap { bwrap, allow_network: args.allow_network },
            Err(reason) => return Err(usage(anyhow::anyhow!("--isolation bwrap: {reason}"))),
        },
        IsolationChoice::Auto => match probe_bubblewrap().await {
            Ok(bwrap) => Isolation::Bubblewrap { bwrap, allow_network: args.allow_network },
            Err(reason) => {
                tracing::debug!("no isolation for the local sandbox: {reason}");
                Isolation::None
            }
        },
    };
    let mut local = LocalConfig::new(isolation);
    local.workdir = args.workdir.clone();

    let connectors_dir = args.connectors.clone().unwrap_or_else(|| {
        let here = PathBuf::from("connectors");
        if here.is_dir() { here } else { agent_source::project_root().join("connectors") }
    });
    let registry = ConnectorRegistry::new(runtime.clone(), connectors_dir, LocalConnector::new(local), config);
    Ok((runtime, Arc::new(registry)))
}
