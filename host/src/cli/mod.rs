//! The `flue` command line: one module per subcommand, presentation in
//! [`render`], host flags in [`host_args`].

mod conformance;
mod connectors;
mod guest;
mod host_args;
pub mod render;
mod run;
mod runs;
mod sandboxes;
mod serve;
mod store;
mod volumes;

use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::events::EventFormat;
use crate::events::EventLog;
use render::StderrSink;

/// Write a line to stdout. A closed pipe (`flue run … | head`) is not an
/// error worth a panic: the reader has what it wanted.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}
pub(crate) use out;

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
  flue sandboxes ls                           sandboxes flue runs created, and whether their run is gone
  flue sandboxes gc --older-than 1h           delete what crashed or killed runs left behind
  flue volumes create cache                   a volume agents can mount into their sandboxes
  flue dev ./my-project --env .env.local      webhook agents on http://127.0.0.1:3583
  flue runs ls --project ./my-project         the runs its server kept; `flue runs cancel RUN` stops one

Exit codes: 0 success, 1 the run or check failed, 2 bad usage or input.
Set FLUE_LOG=debug for more detail on stderr.";

/// The command line.
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
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,

    /// How to show run events on stderr.
    #[arg(long, global = true, value_enum, default_value = "text", env = "FLUE_EVENTS")]
    pub events: EventFormat,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run an agent: result JSON on stdout, events on stderr.
    Run(run::RunArgs),
    /// List the connectors found, with their settings or why they failed to load.
    Connectors(host_args::HostArgs),
    /// Run the sandbox contract suite against a connector and print a pass/fail table.
    Conformance(conformance::ConformanceArgs),
    /// List the sandboxes flue runs created, delete some, or collect the ones
    /// crashed or killed runs left behind (`flue sandboxes gc`).
    Sandboxes(sandboxes::SandboxesArgs),
    /// List, create or delete volumes: storage that outlives sandboxes.
    Volumes(volumes::VolumesArgs),
    /// Serve a project's webhook agents over HTTP (deployment): POST
    /// /agents/NAME/ID, GET /runs/RUN_ID, POST /runs/RUN_ID/cancel, GET
    /// /sessions/AGENT/ID, /healthz, /metrics.
    Serve(serve::ServeArgs),
    /// Serve a project's webhook agents on 127.0.0.1:3583, rebuilding an agent
    /// when its source changes.
    Dev(serve::ServeArgs),
    /// A project's runs, as its server keeps them: list, show, resume, cancel.
    Runs(runs::RunsArgs),
    /// The run store itself: `flue store migrate` applies its schema.
    Store(store::StoreArgs),
    /// Install a connector from this project's source into the connectors directory.
    Add(connectors::AddArgs),
    /// Build the agent in DIR (Rust, Python or JavaScript) to a component.
    Build(guest::BuildArgs),
    /// Create a new agent from a template that builds and runs as is.
    New(guest::NewArgs),
}

/// A failure with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    /// The process exit code.
    pub code: i32,
    /// What went wrong.
    pub error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(error: E) -> Self {
        Failure { code: EXIT_FAILED, error: error.into() }
    }
}

/// A flag's parser that accepts a whole number in `range` only (clap names
/// the flag and the range when it refuses).
fn ranged(range: std::ops::RangeInclusive<u64>) -> clap::builder::RangedU64ValueParser<u64> {
    clap::builder::RangedU64ValueParser::new().range(range)
}

/// A failure caused by bad usage or input (exit code 2).
fn usage(error: impl Into<anyhow::Error>) -> Failure {
    Failure { code: EXIT_USAGE, error: error.into() }
}

/// Run the command.
pub async fn main(cli: Cli) -> Result<(), Failure> {
    let events = EventLog::new(Arc::new(StderrSink::new(cli.events)));
    match cli.command {
        Command::Run(args) => run::run(args, events).await,
        Command::Connectors(args) => connectors::list(args, events).await,
        Command::Conformance(args) => conformance::conformance(args, events).await,
        Command::Sandboxes(args) => sandboxes::sandboxes(args, events).await,
        Command::Volumes(args) => volumes::volumes(args, events).await,
        Command::Serve(args) => serve::serve(args, false, cli.events, events).await,
        Command::Dev(args) => serve::serve(args, true, cli.events, events).await,
        Command::Runs(args) => runs::runs(args, events).await,
        Command::Store(args) => store::store(args),
        Command::Add(args) => connectors::add(args, events).await,
        Command::Build(args) => guest::build(args, events),
        Command::New(args) => guest::new(args),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definition_is_consistent() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
