//! `flue run`: run one agent, result JSON on stdout, events on stderr.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;

use super::host_args::{AgentLimitArgs, HostArgs};
use super::{EXIT_FAILED, Failure, out, usage};
use crate::events::EventLog;
use crate::run::conversations::Conversations;
use crate::run::{AgentRun, RunError, RunJournal, RunSettings};
use crate::sandbox::local::ReadyAhead;
use crate::serve::errors::ApiError;
use crate::serve::store::{DEFAULT_RETENTION, RunStore, StoreLocation, project_store};

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
    /// and id continues it; without one the id is `cli` and no conversation
    /// is kept.
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

    /// With --sandbox-per-id: delete the id's sandbox once it has gone this
    /// many seconds unused (noted in .flue/runs.sqlite; a server on this
    /// project, or `flue sandboxes gc`, deletes it). 0: never. Default: a week.
    #[arg(long, value_name = "SECS", requires = "sandbox_per_id",
          value_parser = super::ranged(crate::run::sandboxes::SANDBOX_IDLE_SECS))]
    pub sandbox_idle_secs: Option<u64>,

    /// Where the run, its journal and its conversations are kept: an SQLite
    /// file or a PostgreSQL URL [default: ./.flue/runs.sqlite].
    #[arg(long, value_name = "FILE|URL", env = "FLUE_STORE", hide_env_values = true)]
    pub store: Option<String>,

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
    // A run's own sandbox, when it will be a plain local one, starts while
    // the agent is loaded.
    let plain_local =
        args.sandbox == "local" && args.reuse.is_none() && !args.sandbox_per_id && args.host.resources().is_none();
    let ready = if plain_local { ReadyAhead::One } else { ReadyAhead::None };
    let host = args.host.host_pooled(args.agent_limits.limits(), None, ready).await?;
    host.registry().start_ready();
    let wasm_path = crate::guest::resolve(&args.agent, &events).map_err(usage)?;
    let wasm = std::fs::read(&wasm_path).with_context(|| format!("cannot read {}", wasm_path.display()))?;
    let wasm = crate::runtime::ComponentBytes::new(wasm);

    // The project is the current directory, as for connectors/ and .env:
    // its store keeps the run's journal and, with an id, its conversations.
    let journal_limit = args.agent_limits.journal_limit();
    let store = match (&args.id, journal_limit) {
        (None, None) => None,
        _ => {
            let location = match &args.store {
                Some(store) => StoreLocation::parse(store),
                None => project_store(Path::new(".")).as_path().into(),
            };
            let why = format!("cannot keep this run in {location} (--no-journal runs without it)");
            Some(Arc::new(RunStore::attach(location, DEFAULT_RETENTION, args.store.is_none()).context(why)?))
        }
    };
    let settings = RunSettings {
        default_connector: args.sandbox,
        keep: args.keep,
        reuse: args.reuse,
        sandbox_per_id: args.sandbox_per_id,
        default_resources: args.host.resources(),
        sandbox_idle: crate::run::sandboxes::sandbox_idle(args.sandbox_idle_secs),
    };
    let run_id = format!("run_{}", uuid::Uuid::new_v4().simple());
    let invocation = args.id.clone().unwrap_or_else(|| "cli".into());
    let journal = match (&store, journal_limit) {
        (Some(store), Some(limit)) => {
            // What `flue runs resume` needs to run it again.
            let agent = std::fs::canonicalize(&args.agent)
                .map(|path| path.display().to_string())
                .unwrap_or_else(|_| args.agent.clone());
            let record = serde_json::to_value(ResumeRecord::of(agent, &settings)).expect("a record serialises");
            store.insert_cli(&run_id, &args.agent, &invocation, &payload, &record);
            Some(RunJournal { store: store.clone(), limit })
        }
        _ => None,
    };
    let run = AgentRun {
        label: args.agent.clone(),
        wasm,
        id: invocation,
        payload: payload.to_string(),
        settings,
        limits: None,
        run_id: Some(run_id),
        conversations: match (&args.id, &store) {
            (Some(_), Some(store)) => Some(Conversations::new(store.clone(), args.agent_limits.conversation_limit())),
            _ => None,
        },
        journal,
        id_sandbox_ledger: store.clone().map(|store| store as Arc<dyn crate::run::IdSandboxLedger>),
    };
    run_to_the_end(&host, run, store, events).await
}

/// What a `flue run` run stores so that `flue runs resume` can run it again:
/// its agent (a path made absolute, or an example's name) and the settings
/// of its sandboxes.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct ResumeRecord {
    agent: Option<String>,
    sandbox: String,
    keep: bool,
    reuse: Option<String>,
    sandbox_per_id: bool,
    /// 0: never idle; absent: the default.
    sandbox_idle_secs: Option<u64>,
}

impl Default for ResumeRecord {
    fn default() -> Self {
        ResumeRecord {
            agent: None,
            sandbox: "local".into(),
            keep: false,
            reuse: None,
            sandbox_per_id: false,
            sandbox_idle_secs: None,
        }
    }
}

impl ResumeRecord {
    fn of(agent: String, settings: &RunSettings) -> Self {
        ResumeRecord {
            agent: Some(agent),
            sandbox: settings.default_connector.clone(),
            keep: settings.keep,
            reuse: settings.reuse.clone(),
            sandbox_per_id: settings.sandbox_per_id,
            sandbox_idle_secs: Some(settings.sandbox_idle.map_or(0, |idle| idle.as_secs())),
        }
    }

    fn settings(self, default_resources: Option<crate::sandbox::Resources>) -> RunSettings {
        RunSettings {
            default_connector: self.sandbox,
            keep: self.keep,
            reuse: self.reuse,
            sandbox_per_id: self.sandbox_per_id,
            default_resources,
            sandbox_idle: crate::run::sandboxes::sandbox_idle(self.sandbox_idle_secs),
        }
    }
}

/// Resume run `run_id` of `store`, which a `flue run` left unfinished (its
/// process was killed): its agent and settings as that run had them, its
/// completed host calls answered from its journal.
pub async fn resume(
    run_id: &str,
    store: Arc<RunStore>,
    agent_limits: &AgentLimitArgs,
    host_args: &HostArgs,
    events: EventLog,
) -> Result<(), Failure> {
    let claimed = store.claim_for_resume(run_id).map_err(usage)?;
    let record: ResumeRecord = serde_json::from_value(claimed.resume.clone()).unwrap_or_default();
    let Some(agent) = record.agent.clone() else {
        return Err(usage(anyhow::anyhow!("run {run_id} did not keep its agent's path")));
    };
    let settings = record.settings(host_args.resources());
    let host = host_args.host(agent_limits.limits()).await?;
    let wasm_path = crate::guest::resolve(&agent, &events).map_err(usage)?;
    let wasm = std::fs::read(&wasm_path).with_context(|| format!("cannot read {}", wasm_path.display()))?;
    let wasm = crate::runtime::ComponentBytes::new(wasm);
    let run = AgentRun {
        label: claimed.agent,
        wasm,
        id: claimed.invocation.clone(),
        payload: claimed.payload.to_string(),
        settings,
        limits: None,
        run_id: Some(run_id.to_string()),
        conversations: (claimed.invocation != "cli")
            .then(|| Conversations::new(store.clone(), agent_limits.conversation_limit())),
        journal: Some(RunJournal {
            store: store.clone(),
            limit: agent_limits.journal_limit().unwrap_or(crate::journal::DEFAULT_LIMIT_BYTES),
        }),
        id_sandbox_ledger: Some(store.clone()),
    };
    run_to_the_end(&host, run, Some(store), events).await
}

/// Run until the end, a signal or a cancel from the store (`flue runs
/// cancel`), record the outcome there, and print the result.
async fn run_to_the_end(
    host: &crate::Host,
    run: AgentRun,
    store: Option<Arc<RunStore>>,
    events: EventLog,
) -> Result<(), Failure> {
    let journaled = run.journal.is_some();
    let run_id = run.run_id.clone().unwrap_or_default();
    let signal_code = std::sync::Arc::new(std::sync::atomic::AtomicI32::new(EXIT_FAILED));
    let cancel_store = store.clone().filter(|_| journaled);
    let stop = {
        let (signal_code, run_id) = (signal_code.clone(), run_id.clone());
        async move {
            match cancel_store {
                Some(store) => tokio::select! {
                    stopped = stop_on_signal(signal_code) => stopped,
                    () = store.wait_for_cancel(&run_id) => RunError::Cancelled,
                },
                None => stop_on_signal(signal_code).await,
            }
        }
    };
    let outcome = host.run_until(run, events, stop).await;
    if let Some(store) = store.filter(|_| journaled) {
        let error = outcome.result.as_ref().err().map(ApiError::from_run);
        store.finish(&outcome.run_id, outcome.result.as_ref().map_err(|_| error.as_ref().expect("an error")), &[]);
    }
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
