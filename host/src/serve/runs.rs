//! One webhook run, from admission to its record: wait for a slot, build or
//! read the agent (inside the project only), apply its `flue.toml` limits,
//! run it until it ends or the grace period does, record the outcome.
//!
//! The run's task is its own boundary: a panic in it ends that run as
//! failed (inside the run, `run::panics` still deletes its sandboxes; the
//! [`Ticket`] gives back its slot and counts), never the server.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::ServerState;
use super::admission::Ticket;
use super::agents::{self, AgentEntry};
use super::sse::LiveFeed;
use crate::events::{Event, EventLog, EventSink};
use crate::run::panics::catch_panic;
use crate::run::{AgentRun, RunSettings};

/// The most events a run keeps in the store.
const MAX_STORED_EVENTS: usize = 2000;

/// Forwards a run's events to the run (for the store) and to an SSE stream.
struct RunSink {
    events: Mutex<Vec<Value>>,
    live: Option<Arc<LiveFeed>>,
    /// The id the run was invoked with (for the test-only panic below).
    #[cfg(debug_assertions)]
    invocation: String,
}

impl EventSink for RunSink {
    fn record(&self, event: &Event) {
        #[cfg(debug_assertions)]
        panic_for_tests(&self.invocation, event);
        let value = serde_json::to_value(event).unwrap_or(Value::Null);
        if let Some(live) = &self.live {
            live.push(&value);
        }
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if events.len() < MAX_STORED_EVENTS {
            events.push(value);
        }
    }
}

/// Test-only, compiled into debug builds only: with
/// `FLUE_TEST_ONLY_PANIC_RUN=<id>`, a run invoked as `/agents/<name>/<id>`
/// panics inside flue right after its first sandbox is created — how the
/// tests prove that a panicking run is cleaned up (there is no known real
/// input that panics a run).
#[cfg(debug_assertions)]
fn panic_for_tests(invocation: &str, event: &Event) {
    if let Event::Sandbox { action: "created", .. } = event
        && std::env::var("FLUE_TEST_ONLY_PANIC_RUN").is_ok_and(|id| id == invocation)
    {
        panic!("FLUE_TEST_ONLY_PANIC_RUN: run {invocation} panics on purpose");
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
}

impl RunTask {
    /// Run to the end and record the outcome; a panic anywhere in here
    /// becomes the run's error.
    pub async fn run(self, mut ticket: Ticket, live: Option<Arc<LiveFeed>>) -> Result<Value, String> {
        let sink = Arc::new(RunSink {
            events: Mutex::default(),
            live: live.clone(),
            #[cfg(debug_assertions)]
            invocation: self.invocation.clone(),
        });
        let outcome = match catch_panic(self.execute(&mut ticket, sink.clone())).await {
            Ok(outcome) => outcome,
            Err(panic) => Err(format!("flue failed inside this run (a bug, please report it): {panic}")),
        };
        let stored = std::mem::take(&mut *sink.events.lock().unwrap_or_else(|e| e.into_inner()));
        ticket.record(outcome.as_ref().map_err(String::as_str), &stored);
        if let Some(live) = &live {
            let error = outcome.as_ref().err().map(|message| Value::from(message.as_str()));
            live.finish(outcome.as_ref().map_err(|_| error.as_ref().expect("an error")));
        }
        outcome
    }

    async fn execute(&self, ticket: &mut Ticket, sink: Arc<RunSink>) -> Result<Value, String> {
        if ticket.start().await.is_err() {
            return Err("the server shut down and its grace period ended before the run started".into());
        }
        let events = EventLog::new(sink);
        self.run_agent(&events).await
    }

    async fn run_agent(&self, events: &EventLog) -> Result<Value, String> {
        let project = self.state.config.project.clone();
        let source = agents::inside_project(&project, &self.agent.source)?;
        let build_events = events.clone();
        // Source agents are built when stale (this is how `flue dev` picks up edits).
        let wasm_path = tokio::task::spawn_blocking(move || {
            if source.is_dir() {
                crate::guest::build(&source, &build_events).map_err(|e| e.to_string())
            } else {
                Ok(source)
            }
        })
        .await
        .map_err(|err| err.to_string())??;
        let wasm =
            tokio::fs::read(&wasm_path).await.map_err(|err| format!("cannot read {}: {err}", wasm_path.display()))?;
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
                default_resources: None,
            },
            limits: Some(limits),
            run_id: Some(self.run_id.clone()),
        };
        let mut cancel = self.state.cancel.clone();
        let stop = async move {
            let _ = cancel.wait_for(|stop| *stop).await;
            "the server shut down and its grace period ended".to_string()
        };
        let host = self.state.host.read().unwrap_or_else(|e| e.into_inner()).clone();
        let outcome = host.run_until(run, events.clone(), stop).await;
        outcome.result.map_err(|err| format!("{:#}", anyhow::Error::new(err)))
    }
}
