//! Running one agent: its store, its sandboxes, its deadline, its outcome.
//!
//! The run owns every sandbox it creates ([`sandboxes`]). When the run ends —
//! returned, failed, trapped or out of time — the host deletes them (unless
//! created with `keep`, or `--keep`): guest destructors never run after a
//! trap, so cleanup cannot be left to the guest.

mod agent_tools;
pub mod compat;
pub mod conversations;
pub mod imports;
pub mod ownership;
pub mod panics;
mod prepare;
mod prompt;
pub mod sandboxes;
pub mod signals;
mod streams;

pub use prepare::AgentLinker;
#[cfg(debug_assertions)]
pub mod test_hooks;

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime_wasi::WasiCtxBuilder;

use crate::bindings::agent::exports::flue::sandbox::run::Context;
use crate::connector::registry::ConnectorRegistry;
use crate::events::{Event, EventLog, LogLevel, millis};
use crate::journal::{self, Journal, JournalError, JournalStore};
use crate::run::compat::AnyAgentPre;
use crate::runtime::engine::DeadlineExceeded;
use crate::runtime::guest_output::GuestOutput;
use crate::runtime::{ComponentBytes, Limits, Runtime};
use conversations::{Conversations, RunConversations};
use imports::AgentState;
pub use sandboxes::{IdSandbox, IdSandboxLedger, RunSandboxes, RunSettings};

/// One agent run's input.
pub struct AgentRun {
    /// Shown in events and errors.
    pub label: String,
    /// The agent component.
    pub wasm: ComponentBytes,
    /// The id the agent is invoked with (`--id`).
    pub id: String,
    /// JSON text.
    pub payload: String,
    /// What the user chose for its sandboxes.
    pub settings: RunSettings,
    /// Its deadline and memory, when not the host's (`flue serve`'s
    /// per-agent limits).
    pub limits: Option<Limits>,
    /// Its run id, when the caller chose one (else a fresh `run_…`).
    pub run_id: Option<String>,
    /// Where its sessions' conversations are kept between runs with the
    /// same agent and id; `None`: each run starts from nothing.
    pub conversations: Option<Conversations>,
    /// Where its journal is kept; `None`: no journal, and a crash loses the
    /// run. A run whose journal already holds entries resumes from them.
    pub journal: Option<RunJournal>,
    /// Where the use of its id's sandbox is noted (`sandbox_per_id`), so
    /// that an idle one is deleted in time; `None`: not noted.
    pub id_sandbox_ledger: Option<Arc<dyn IdSandboxLedger>>,
}

/// Where a run's journal is kept, and its bound.
#[derive(Clone)]
pub struct RunJournal {
    /// The store.
    pub store: Arc<dyn JournalStore>,
    /// The most bytes it records (see [`crate::journal`]).
    pub limit: u64,
}

/// Why a run did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The agent could not be compiled or is not an agent.
    #[error("{agent}: {source:#}")]
    Load {
        /// The agent, as the run names it.
        agent: String,
        /// Why.
        #[source]
        source: anyhow::Error,
    },
    /// The agent returned an error.
    #[error("the agent failed: {0}")]
    AgentFailed(String),
    /// The agent's result is not JSON.
    #[error("the agent returned a result that is not JSON ({reason}): {excerpt}")]
    InvalidResult {
        /// The parser's complaint.
        reason: String,
        /// The start of what it returned.
        excerpt: String,
    },
    /// The run passed its deadline.
    #[error("deadline exceeded: the agent ran longer than {limit:?} and was stopped (raise it with --deadline)")]
    DeadlineExceeded {
        /// The deadline.
        limit: Duration,
    },
    /// The run was stopped from outside (a signal, a server shutting down).
    #[error("{reason}: the agent was stopped")]
    Interrupted {
        /// Why, e.g. `interrupted by SIGINT`.
        reason: String,
    },
    /// Another server took the run over (this one's lease on it ran out):
    /// the run goes on there, from its journal, with its sandboxes.
    #[error("another server took the run over (this server's lease on it ran out): the agent was stopped here")]
    TakenOver,
    /// Someone asked for the run to be cancelled (`POST /runs/<runId>/cancel`,
    /// `flue runs cancel`).
    #[error("the run was cancelled: the agent, its model loop and its commands were stopped")]
    Cancelled,
    /// A run resumed from its journal cannot go on: its component
    /// changed, a sandbox it used is gone, it diverged, or its journal was
    /// not whole.
    #[error("the run cannot be resumed: {reason}")]
    NotResumable {
        /// Why.
        reason: String,
    },
    /// The agent tried to grow its memory past the limit.
    #[error("the agent ran out of memory: it tried to grow past its limit of {limit_mib} MiB (raise it with --memory)")]
    OutOfMemory {
        /// The limit.
        limit_mib: usize,
    },
    /// The agent failed after a sandbox provider (a connector's service)
    /// was unavailable: down, timing out, or refusing the credentials.
    #[error("the sandbox provider {connector} is unavailable: {reason}")]
    SandboxUnavailable {
        /// The connector.
        connector: String,
        /// Its error.
        reason: String,
    },
    /// flue itself failed (panicked) during the run: a bug. The run's
    /// sandboxes are still deleted.
    #[error("flue failed inside this run (a bug, please report it): {message}")]
    Panicked {
        /// What the panic said.
        message: String,
    },
    /// The agent trapped.
    #[error("the agent crashed (trap): {trap}{}", guest_said.as_ref().map(|s| format!("\n  its last output: {s}")).unwrap_or_default())]
    Trapped {
        /// What trapped.
        trap: String,
        /// The agent's last words on stderr (e.g. a panic message).
        guest_said: Option<String>,
    },
}

/// How a run ended.
pub struct RunOutcome {
    /// The run's id.
    pub run_id: String,
    /// The agent's JSON result, or why there is none.
    pub result: Result<serde_json::Value, RunError>,
}

/// Run one agent to its end — or until `stop` resolves with why it must
/// stop (a signal, a shutdown, a cancel: [`RunError::Interrupted`] or
/// [`RunError::Cancelled`]) — then delete the sandboxes it owns, unless
/// the run goes on elsewhere ([`RunError::TakenOver`]): its resume there
/// reconnects to them.
pub async fn run_agent(
    runtime: &Runtime,
    agents: &AgentLinker,
    registry: Arc<ConnectorRegistry>,
    run: AgentRun,
    events: EventLog,
    stop: impl std::future::Future<Output = RunError>,
) -> RunOutcome {
    let run_id = run.run_id.clone().unwrap_or_else(|| format!("run_{}", uuid::Uuid::new_v4().simple()));
    let limits = run.limits.clone().unwrap_or_else(|| runtime.limits.clone());
    let started = Instant::now();
    let events = events.with_log_budget(limits.log_bytes);
    events.record(Event::RunStarted { run_id: run_id.clone(), agent: run.label.clone() });
    let services = RunSandboxes::new(
        registry,
        (&run_id, &run.label, &run.id),
        run.settings.clone(),
        events.clone(),
        limits.max_read(),
        run.id_sandbox_ledger.clone(),
    );
    let deadline = limits.deadline;

    // The epoch callback stops a guest that computes past the deadline; this
    // timeout also stops one that waits on the host (a long command) past it.
    let result = tokio::select! {
        finished = tokio::time::timeout(deadline, panics::catch_panic(execute(runtime, agents, &limits, &services, &run, &run_id))) => match finished {
            Ok(Ok(result)) => result,
            // Still delete what the run created (below).
            Ok(Err(message)) => Err(RunError::Panicked { message }),
            Err(_) => Err(RunError::DeadlineExceeded { limit: deadline }),
        },
        stopped = stop => Err(stopped),
    };
    // An agent that failed once a provider was down failed because of it
    // (it got the provider's error as its own, and gave up).
    let result = match (result, services.unavailable()) {
        (Err(RunError::AgentFailed(_) | RunError::Trapped { .. }), Some((connector, err))) => {
            Err(RunError::SandboxUnavailable { connector, reason: err.to_string() })
        }
        (result, _) => result,
    };
    // A run taken over while this process was unreachable may end here
    // before it hears so: its result is not this process's to give.
    let taken_over = matches!(result, Err(RunError::TakenOver))
        || run.journal.as_ref().is_some_and(|journal| !journal.store.holds(&run_id));
    let result = if taken_over {
        services.leave_for_resume().await;
        Err(RunError::TakenOver)
    } else {
        services.cleanup().await;
        result
    };
    events.record(Event::RunFinished {
        run_id: run_id.clone(),
        ok: result.is_ok(),
        duration_ms: millis(started.elapsed()),
    });
    RunOutcome { run_id, result }
}

async fn execute(
    runtime: &Runtime,
    agents: &AgentLinker,
    limits: &Limits,
    services: &Arc<RunSandboxes>,
    run: &AgentRun,
    run_id: &str,
) -> Result<serde_json::Value, RunError> {
    let events = &services.events;
    let pre = agents
        .prepare(runtime, &run.wasm, &run.label, events)
        .map_err(|source| RunError::Load { agent: run.label.clone(), source })?;

    let journal = match &run.journal {
        Some(kept) => Some(open_journal(kept, &run.wasm, run_id, events)?),
        None => None,
    };
    if let Some(returned) = journal.as_ref().and_then(|journal| journal.returned::<Result<String, String>>()) {
        events.log("flue", LogLevel::Info, "the run had ended before its process stopped: it ends as its journal says");
        return agent_returned(returned);
    }
    let stdout = GuestOutput::new("agent stdout", LogLevel::Info, events.clone());
    let stderr = GuestOutput::new("agent stderr", LogLevel::Warn, events.clone());
    // Secure defaults (see WasiCtxBuilder): no env, no args, no preopened
    // directories, no sockets, no name lookup, stdin closed. Only stdout and
    // stderr are granted, and they go into the run's events.
    let mut wasi = WasiCtxBuilder::new();
    wasi.stdout(stdout.clone()).stderr(stderr.clone());
    if let Some(journal) = &journal {
        // What the agent reads of time and chance is journaled too.
        wasi.wall_clock(journal::wasi::WallClock(journal.clone()))
            .monotonic_clock(journal::wasi::MonotonicClock::new(journal.clone()))
            .secure_random(journal::wasi::Random::secure(journal.clone()))
            .insecure_random(journal::wasi::Random::insecure(journal.clone()))
            .insecure_random_seed(journal::wasi::Random::seed(journal));
    }
    let wasi = wasi.build();
    let store_limits = limits.agent_store();
    let conversations = run.conversations.clone().map(|store| RunConversations {
        store,
        agent: agent_name(&run.label),
        id: run.id.clone(),
    });
    // An agent that exports `tools` gets a second instance to run them in.
    let agent_tools = match pre.as_ref() {
        AnyAgentPre::Current { tools: Some(tools), .. } => Some(agent_tools::AgentToolsHost::new(
            tools.clone(),
            store_limits.clone(),
            Instant::now() + limits.deadline,
            services.clone(),
        )),
        _ => None,
    };
    let mut store = runtime.new_store(&store_limits, "the agent", limits.deadline, |base| AgentState {
        wasi,
        base,
        sandboxes: services.clone(),
        conversations,
        journal,
        agent_tools,
    });

    let (id, payload) = (run.id.clone(), run.payload.clone());
    let outcome = match pre.as_ref() {
        AnyAgentPre::Current { agent: pre, .. } => {
            async {
                let agent = pre.instantiate_async(&mut store).await?;
                let context = Context { id, run_id: run_id.to_string(), payload };
                agent.flue_sandbox_run().call_run(&mut store, &context).await
            }
            .await
        }
        AnyAgentPre::V0_1_0(pre) => {
            async {
                let agent = pre.instantiate_async(&mut store).await?;
                let context = crate::bindings::v0_1_0::exports::flue::sandbox::run::Context {
                    id,
                    run_id: run_id.to_string(),
                    payload,
                };
                agent.flue_sandbox_run().call_run(&mut store, &context).await
            }
            .await
        }
    };
    stdout.finish();
    stderr.finish();
    if let Some(journal) = &store.data().journal {
        let (entries, bytes) = journal.written();
        let size = crate::sandbox::session::format_bytes(usize::try_from(bytes).unwrap_or(usize::MAX));
        events.log("flue", LogLevel::Debug, format!("journal: {entries} host calls recorded, {size} ({bytes} B)"));
    }

    // A resumed agent must have made every call its journal holds, and
    // read the clocks as it did: else its result is not the run's.
    if let Some(journal) = &store.data().journal
        && outcome.is_ok()
    {
        if let Some(err) = journal.poisoned() {
            return Err(RunError::NotResumable { reason: err.to_string() });
        }
        if journal.replaying() {
            return Err(RunError::NotResumable {
                reason: "the agent ended before making every call its journal holds (it diverged)".into(),
            });
        }
    }
    match outcome {
        Ok(returned) => {
            // Before the run's sandboxes go: a crash after this ends the
            // run as it ended here, rather than replay it without them.
            if let Some(journal) = &store.data().journal {
                journal.record(journal::AGENT_RETURNED, &returned);
            }
            agent_returned(returned)
        }
        Err(err) => {
            let limiter = &store.data_mut().base.limiter;
            if limiter.memory_refused().is_some() {
                return Err(RunError::OutOfMemory { limit_mib: limiter.config().memory_bytes >> 20 });
            }
            if let Some(err) = err.downcast_ref::<JournalError>() {
                return Err(RunError::NotResumable { reason: err.to_string() });
            }
            if let Some(wasmtime::component::ResourceTableError::Full) = err.downcast_ref() {
                let trap = format!(
                    "it holds too many handles (sandboxes, harnesses, sessions, streams): at most {} at once",
                    limiter.config().handles
                );
                return Err(RunError::Trapped { trap, guest_said: None });
            }
            Err(classify_trap(err, &stderr))
        }
    }
}

/// The run's result from what the agent returned: its JSON, or its error.
fn agent_returned(returned: Result<String, String>) -> Result<serde_json::Value, RunError> {
    match returned {
        Ok(json) => serde_json::from_str(&json).map_err(|err| RunError::InvalidResult {
            reason: err.to_string(),
            excerpt: crate::events::one_line(&json, 200),
        }),
        Err(message) => Err(RunError::AgentFailed(message)),
    }
}

/// The run's journal, for `wasm`: when it already holds calls (the run
/// is being resumed), they are replayed first, and the events say so.
fn open_journal(
    kept: &RunJournal,
    wasm: &ComponentBytes,
    run_id: &str,
    events: &EventLog,
) -> Result<Arc<Journal>, RunError> {
    let component = hex::encode(wasm.sha256());
    let journal = Journal::open(kept.store.clone(), run_id, &component, kept.limit)
        .map_err(|err| RunError::NotResumable { reason: err.to_string() })?;
    let recorded = journal.recorded();
    if recorded > 1 {
        events.log(
            "flue",
            LogLevel::Info,
            format!(
                "resuming run {run_id}: {} host calls it made before it stopped are answered from its journal, the \
                 call in flight then is made again",
                recorded - 1
            ),
        );
    }
    Ok(journal)
}

/// The agent's name in conversation keys and id sandboxes' labels: the
/// last part of what the run calls it without `.wasm` (`agents/triage.wasm`
/// and the server's `triage` are one agent).
pub(crate) fn agent_name(label: &str) -> String {
    let last = label.trim_end_matches('/').rsplit('/').next().unwrap_or(label);
    last.strip_suffix(".wasm").unwrap_or(last).to_string()
}

/// Why a trap happened, from the error's type and the agent's last words.
fn classify_trap(err: wasmtime::Error, stderr: &GuestOutput) -> RunError {
    if let Some(deadline) = err.downcast_ref::<DeadlineExceeded>() {
        return RunError::DeadlineExceeded { limit: deadline.limit };
    }
    // An error a host function raised: its own words, not wasmtime's
    // backtrace context around them.
    let trap = crate::runtime::trap::describe(&err)
        .unwrap_or_else(|| crate::events::one_line(&err.root_cause().to_string(), 300));
    // A Rust panic prints "thread … panicked at FILE:LINE:" then the message,
    // then a hint about RUST_BACKTRACE: keep the first two, drop the hint.
    let said: Vec<String> = stderr
        .tail()
        .into_iter()
        .filter(|line| !line.trim().is_empty() && !line.starts_with("note: run with `RUST_BACKTRACE"))
        .collect();
    let guest_said = (!said.is_empty()).then(|| said[said.len().saturating_sub(2)..].join(" "));
    RunError::Trapped { trap, guest_said }
}
