//! `flue run`: run one agent, result JSON on stdout, events on stderr.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;

use super::host_args::{AgentLimitArgs, HostArgs};
use super::{EXIT_FAILED, Failure, out, usage};
use crate::events::EventLog;
use crate::run::conversations::Conversations;
use crate::run::{AgentRun, RunError, RunSettings};
use crate::serve::store::{RunStore, project_store};

/// `flue run` arguments.
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
    /// With an id, each session's conversation is kept in the project's run
    /// store (.flue/runs.sqlite here) and the next run with the same agent
    /// and id continues it; without one the id is `cli` and nothing is kept.
    #[arg(long)]
    pub id: Option<String>,

    /// Keep the sandboxes this run creates (their ids are printed) instead of deleting them.
    #[arg(long)]
    pub keep: bool,

    /// Use an existing sandbox (by id) as the run's sandbox instead of creating one.
    #[arg(long, value_name = "ID")]
    pub reuse: Option<String>,

    /// The run's sandbox belongs to the agent and --id: the first run
    /// creates it and keeps it, later runs with the same id get it again
    /// (files and installed tools included). `flue sandboxes rm` deletes it.
    #[arg(long, requires = "id", conflicts_with = "reuse")]
    pub sandbox_per_id: bool,

    /// The agent's limits.
    #[command(flatten)]
    pub agent_limits: AgentLimitArgs,

    /// Host flags.
    #[command(flatten)]
    pub host: HostArgs,
}

/// Run the agent and print its result.
pub async fn run(args: RunArgs, events: EventLog) -> Result<(), Failure> {
    // Cheap checks first: bad input is refused before anything slow happens.
    let payload = match &args.payload {
        Some(text) => serde_json::from_str::<serde_json::Value>(text).map_err(|err| {
            usage(anyhow::anyhow!("--payload is not valid JSON ({err}); for example --payload '{{\"name\":\"Ada\"}}'"))
        })?,
        None => serde_json::Value::Null,
    };
    let host = args.host.host(args.agent_limits.limits()).await?;
    let wasm_path = crate::guest::resolve(&args.agent, &events).map_err(usage)?;
    let wasm = std::fs::read(&wasm_path).with_context(|| format!("cannot read {}", wasm_path.display()))?;

    // The project is the current directory, as for connectors/ and .env.
    let conversations = match &args.id {
        Some(_) => {
            let store = RunStore::attach(&project_store(Path::new(".")), usize::MAX, true)
                .context("cannot keep this id's conversations in .flue/runs.sqlite")?;
            Some(Conversations::new(Arc::new(store), args.agent_limits.conversation_limit()))
        }
        None => None,
    };
    let run = AgentRun {
        label: args.agent.clone(),
        wasm,
        id: args.id.unwrap_or_else(|| "cli".into()),
        payload: payload.to_string(),
        settings: RunSettings {
            default_connector: args.sandbox,
            keep: args.keep,
            reuse: args.reuse,
            sandbox_per_id: args.sandbox_per_id,
            default_resources: args.host.resources(),
        },
        limits: None,
        run_id: None,
        conversations,
    };
    let signal_code = std::sync::Arc::new(std::sync::atomic::AtomicI32::new(EXIT_FAILED));
    let outcome = host.run_until(run, events, stop_on_signal(signal_code.clone())).await;
    match outcome.result {
        Ok(result) => {
            out!("{}", serde_json::to_string_pretty(&result).expect("JSON value serialises"));
            Ok(())
        }
        Err(err) => Err(Failure {
            code: signal_code.load(std::sync::atomic::Ordering::Relaxed),
            error: anyhow::Error::new(err).context(format!("run {} failed", outcome.run_id)),
        }),
    }
}

/// Resolves at the first SIGINT or SIGTERM (with why, and the exit code
/// stored in `code`: 130 or 143), so that the run stops and deletes its
/// sandboxes; a second signal then exits at once, saying what may be left.
async fn stop_on_signal(code: std::sync::Arc<std::sync::atomic::AtomicI32>) -> RunError {
    let mut signals = crate::run::signals::StopSignals::new();
    let first = signals.next().await;
    code.store(first.exit_code, std::sync::atomic::Ordering::Relaxed);
    eprintln!("flue: {}: stopping the agent and deleting its sandboxes (send it again to exit at once)", first.reason);
    tokio::spawn(async move {
        signals.next().await;
        eprintln!(
            "flue: exiting at once; sandboxes this run created may be left behind: \
             `flue sandboxes gc` deletes them"
        );
        std::process::exit(first.exit_code);
    });
    RunError::Interrupted { reason: first.reason.to_string() }
}
