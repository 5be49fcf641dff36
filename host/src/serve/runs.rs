//! One webhook run, from admission to its record: wait for a slot, build or
//! read the agent (inside the project only), apply its `flue.toml` limits,
//! run it until it ends or the grace period does, record the outcome with
//! its error kind.
//!
//! The run's task is its own boundary: a panic in it ends that run as
//! failed (inside the run, `run::panics` still deletes its sandboxes; the
//! [`Ticket`] gives back its slot and counts), never the server.
//!
//! A build failure answers the caller with a short summary (the agent and
//! the first error, no server paths); the whole compiler output goes to the
//! server's events.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::ServerState;
use super::admission::{NotStarted, Ticket};
use super::agents::{self, AgentEntry};
use super::builds::Interrupted;
use super::errors::{ApiError, ErrorKind};
use super::fleet::RunWatch;
use super::id_turns::SharedTurn;
use super::sse::LiveFeed;
use crate::events::{Event, EventLog, EventSink, one_line};
use crate::guest::AgentSourceError;
use crate::run::conversations::Conversations;
use crate::run::panics::catch_panic;
use crate::run::{AgentRun, RunError, RunJournal, RunSettings};
use crate::runtime::ComponentBytes;

/// The most events a run keeps in the store.
const MAX_STORED_EVENTS: usize = 2000;
/// How often a run's new events are written to the store as it goes (for
/// `GET /runs/<id>/events` on any server); a run's end writes them all.
const EVENT_FLUSH: Duration = Duration::from_millis(250);

/// Forwards a run's events to the run (for the store) and to an SSE stream,
/// and tells the server's events when the agent is being rebuilt.
struct RunSink {
    state: Arc<ServerState>,
    run_id: String,
    agent: String,
    events: Mutex<Vec<Value>>,
    /// How many of `events` are in the store already.
    flushed: AtomicUsize,
    live: Option<Arc<LiveFeed>>,
    /// When a build of the agent started, if one did.
    build_started: Mutex<Option<Instant>>,
}

impl EventSink for RunSink {
    fn record(&self, event: &Event) {
        let value = serde_json::to_value(event).unwrap_or(Value::Null);
        if let Some(live) = &self.live {
            live.push(&value);
        }
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if events.len() < MAX_STORED_EVENTS {
            events.push(value);
        }
    }

    fn progress_started(&self, _id: u64, task: &str) {
        // `guest::build` says "building <dir>" when the agent is stale.
        if task.starts_with("building ") {
            *self.build_started.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            self.state.events.rebuilding(&self.agent);
        }
    }
}

impl RunSink {
    /// The events not written to the store yet, and the first one's number.
    fn unflushed(&self) -> Option<(usize, Vec<Value>)> {
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let from = self.flushed.swap(events.len(), Ordering::SeqCst);
        (from < events.len()).then(|| (from, events[from..].to_vec()))
    }
}

/// Write a run's new events to the store every [`EVENT_FLUSH`], in one
/// statement each time, until the task is stopped.
async fn flush_events(sink: Arc<RunSink>) {
    let mut tick = tokio::time::interval(EVENT_FLUSH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Some((from, batch)) = sink.unflushed() {
            let run_id = sink.run_id.clone();
            sink.state.store.off_thread(move |store| store.append_events(&run_id, from, &batch)).await;
        }
    }
}

/// An admitted run, ready to go.
pub struct RunTask {
    pub state: Arc<ServerState>,
    pub name: String,
    pub invocation: String,
    pub agent: AgentEntry,
    pub payload: Value,
    pub run_id: String,
    /// The run keeps a journal: new runs when the server keeps them, and
    /// runs resumed from one.
    pub journaled: bool,
}

impl RunTask {
    /// Run to the end and record the outcome; a panic anywhere in here
    /// becomes the run's error.
    pub async fn run(self, mut ticket: Ticket, live: Option<Arc<LiveFeed>>) -> Result<Value, ApiError> {
        let sink = Arc::new(RunSink {
            state: self.state.clone(),
            run_id: self.run_id.clone(),
            agent: self.name.clone(),
            events: Mutex::default(),
            flushed: AtomicUsize::new(0),
            live: live.clone(),
            build_started: Mutex::default(),
        });
        let started = Instant::now();
        let flusher = tokio::spawn(flush_events(sink.clone()));
        let outcome = match catch_panic(self.execute(&mut ticket, &sink)).await {
            Ok(outcome) => outcome,
            Err(panic) => Err(ApiError::new(
                ErrorKind::Internal,
                format!("flue failed inside this run (a bug, please report it): {panic}"),
            )),
        };
        // The record takes every event now.
        flusher.abort();
        let stored = std::mem::take(&mut *sink.events.lock().unwrap_or_else(|e| e.into_inner()));
        if !ticket.kept_queued() {
            ticket.record(outcome.as_ref(), &stored);
            self.state.events.run_finished(&self.run_id, &self.name, outcome.as_ref().map(|_| ()), started.elapsed());
        }
        if let Some(live) = &live {
            let error = outcome.as_ref().err().map(ApiError::to_json);
            live.finish(outcome.as_ref().map_err(|_| error.as_ref().expect("an error")));
        }
        outcome
    }

    async fn execute(&self, ticket: &mut Ticket, sink: &Arc<RunSink>) -> Result<Value, ApiError> {
        // Not started before the grace period ended: it stays queued, and
        // runs when the server starts again.
        let not_started = |ticket: &mut Ticket| {
            ticket.keep_queued();
            ApiError::new(
                ErrorKind::Shutdown,
                format!(
                    "the server shut down and its grace period ended before the run started; it stays queued and \
                     runs when the server starts again (GET /runs/{})",
                    self.run_id
                ),
            )
        };
        // First this id's turn (runs of one conversation, one at a time),
        // here and then among the servers sharing the store, then a slot;
        // a cancel or a shutdown ends each wait.
        let watch = self.state.fleet.watch(&self.run_id);
        let mut shutdown = self.state.cancel.clone();
        let _turn = tokio::select! {
            turn = self.state.id_turns.take(&self.name, &self.invocation) => turn,
            _ = shutdown.wait_for(|stop| *stop) => return Err(not_started(ticket)),
            stopped = watch.stopped() => return Err(ApiError::from_run(&stopped)),
        };
        let _shared_turn = tokio::select! {
            turn = SharedTurn::take(&self.state.store, &self.name, &self.invocation, &self.run_id) => turn,
            _ = shutdown.wait_for(|stop| *stop) => return Err(not_started(ticket)),
            stopped = watch.stopped() => return Err(ApiError::from_run(&stopped)),
        };
        let started = tokio::select! {
            started = ticket.start(self.journaled) => started,
            stopped = watch.stopped() => return Err(ApiError::from_run(&stopped)),
        };
        match started {
            Ok(()) => {}
            Err(NotStarted::ShuttingDown) => return Err(not_started(ticket)),
            Err(NotStarted::TakenOver) => return Err(ApiError::from_run(&RunError::TakenOver)),
        }
        self.state.events.run_started(&self.run_id, &self.name, &self.invocation);
        let events = EventLog::new(sink.clone());
        let wasm = self.agent_component(&events, sink).await?;
        self.run_agent(wasm, &events, &watch).await
    }

    /// The agent's component: built first when it is a stale source directory.
    async fn agent_component(&self, events: &EventLog, sink: &RunSink) -> Result<ComponentBytes, ApiError> {
        let project = self.state.config.project.clone();
        let source = agents::inside_project(&project, &self.agent.source)
            .map_err(|why| ApiError::new(ErrorKind::AgentOutsideProject, why))?;
        let build_events = events.clone();
        // `flue dev` builds source agents when stale (how it picks up edits);
        // `flue serve` runs only what was built before (never an agent's
        // build scripts while serving).
        let dev = self.state.config.dev;
        let build = move || crate::guest::component_for(&source, dev, &build_events);
        let built = match self.state.builds.run(self.state.config.build_timeout, self.state.cancel.clone(), build).await
        {
            Ok(built) => built,
            Err(Interrupted::Shutdown) => {
                return Err(ApiError::new(
                    ErrorKind::Shutdown,
                    "the server shut down and its grace period ended while the agent was building; the build was \
                     stopped",
                ));
            }
            Err(Interrupted::TimedOut(limit)) => {
                let why = format!("the build took longer than {} s (--build-timeout) and was stopped", limit.as_secs());
                self.state.events.build_failed(&self.name, &why);
                return Err(ApiError::new(
                    ErrorKind::BuildTimeout,
                    format!("agent {} does not build: {why}", self.name),
                ));
            }
            Err(Interrupted::Panicked(err)) => {
                return Err(ApiError::new(
                    ErrorKind::Internal,
                    format!("building the agent failed inside flue: {err}"),
                ));
            }
        };
        let build_started = sink.build_started.lock().unwrap_or_else(|e| e.into_inner()).take();
        let wasm_path = match built {
            Ok(path) => {
                if let Some(started) = build_started {
                    self.state.events.rebuilt(&self.name, started.elapsed());
                }
                path
            }
            Err(err) => {
                self.state.events.build_failed(&self.name, &err.to_string());
                return Err(ApiError::new(ErrorKind::BuildFailed, build_summary(&self.name, &project, &err)));
            }
        };
        self.state.components.read(&wasm_path).await.map_err(|err| {
            self.state.events.build_failed(&self.name, &format!("cannot read {}: {err}", wasm_path.display()));
            ApiError::new(ErrorKind::BuildFailed, format!("agent {}: its component cannot be read ({err})", self.name))
        })
    }

    async fn run_agent(
        &self,
        wasm: ComponentBytes,
        events: &EventLog,
        watch: &RunWatch<'_>,
    ) -> Result<Value, ApiError> {
        let manifest = &self.agent.manifest;
        let mut limits = self.state.config.limits.clone();
        // Both were checked against `bounds` when flue.toml was read.
        if let Some(secs) = manifest.deadline_secs {
            limits.deadline = Duration::from_secs(secs);
        }
        if let Some(mib) = manifest.memory_mib {
            limits.agent_memory = usize::try_from(mib).unwrap_or(usize::MAX).saturating_mul(1024 * 1024);
        }
        let run = AgentRun {
            label: self.name.clone(),
            wasm,
            id: self.invocation.clone(),
            payload: self.payload.to_string(),
            settings: RunSettings {
                default_connector: manifest.sandbox.clone().unwrap_or_else(|| self.state.config.sandbox.clone()),
                keep: false,
                reuse: None,
                sandbox_per_id: manifest.sandbox_per_id,
                default_resources: self.state.config.resources,
                sandbox_idle: manifest.sandbox_idle,
            },
            limits: Some(limits),
            run_id: Some(self.run_id.clone()),
            conversations: Some(Conversations::new(self.state.store.clone(), self.state.config.conversation_limit)),
            id_sandbox_ledger: Some(self.state.store.clone()),
            journal: self.journaled.then(|| RunJournal {
                store: self.state.store.clone(),
                limit: self.state.config.journal_limit.unwrap_or(crate::journal::DEFAULT_LIMIT_BYTES),
            }),
        };
        let mut shutdown = self.state.cancel.clone();
        let stop = async move {
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => {
                    RunError::Interrupted { reason: "the server shut down and its grace period ended".into() }
                }
                stopped = watch.stopped() => stopped,
            }
        };
        let host = self.state.host.read().unwrap_or_else(|e| e.into_inner()).clone();
        let outcome = host.run_until(run, events.clone(), stop).await;
        outcome.result.map_err(|err| ApiError::from_run(&err))
    }
}

/// What a caller learns of a failed build: the agent and the first error,
/// with no path of the server's in it (the server's events have the rest).
fn build_summary(agent: &str, project: &Path, err: &AgentSourceError) -> String {
    let first = match err {
        AgentSourceError::BuildFailed { log, .. } => {
            let lines = || log.lines().map(str::trim).filter(|l| !l.is_empty());
            let first = lines().find(|l| l.to_ascii_lowercase().contains("error")).or_else(|| lines().next());
            first.map(|line| one_line(line, 300)).unwrap_or_else(|| "the toolchain failed".into())
        }
        AgentSourceError::UnknownLanguage { .. } => {
            "no agent source here (expected Cargo.toml, app.py or agent.js)".to_string()
        }
        AgentSourceError::Toolchain(_) => "its toolchain is missing or cannot run here".to_string(),
        AgentSourceError::Cache(_) => "flue's build cache cannot be used (the server's log says why)".to_string(),
        AgentSourceError::NotBuilt { .. } => {
            "it has not been built, and `flue serve` runs only prebuilt agents (run `flue build`, or start the \
             server with --build)"
                .to_string()
        }
        AgentSourceError::Read { .. } | AgentSourceError::NotFound { .. } => {
            "a file of its source cannot be read".to_string()
        }
    };
    format!("agent {agent} does not build: {} (the server's log has the whole output)", without_paths(&first, project))
}

/// `text` with the project's directory (and the home directory) left out,
/// so that a caller does not learn where the server keeps things.
fn without_paths(text: &str, project: &Path) -> String {
    let mut text = text.to_string();
    let project = project.canonicalize().unwrap_or_else(|_| project.to_path_buf());
    for (dir, shown) in [(project.display().to_string(), "."), (std::env::var("HOME").unwrap_or_default(), "~")] {
        if dir.len() > 1 {
            text = text.replace(&format!("{dir}/"), &format!("{shown}/")).replace(&dir, shown);
        }
    }
    text
}
