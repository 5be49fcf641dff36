//! Running one agent: its store, its sandboxes, its deadline, its outcome.
//!
//! The run owns every sandbox it creates. When the run ends — returned,
//! failed, trapped or out of time — the host deletes them (unless created with
//! `keep`, or `--keep`): guest destructors never run after a trap, so cleanup
//! cannot be left to the guest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::Store;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::WasiCtxBuilder;

use crate::agent_host::AgentState;
use crate::backend::{Connector, CreateOptions, SandboxBackend};
use crate::bindings::agent::exports::flue::sandbox::run::Context;
use crate::connectors::ConnectorRegistry;
use crate::engine::{DeadlineExceeded, arm_deadline};
use crate::error::SandboxResult;
use crate::events::{Event, EventLog, millis};
use crate::guest_output::GuestOutput;
use crate::progress;
use crate::runtime::Runtime;

/// Where an agent's sandbox comes from (the WIT `sandbox-source`).
#[derive(Clone, Debug)]
pub enum SandboxSource {
    RunDefault,
    Create { connector: Option<String>, options: CreateOptions, keep: bool },
    Connect { connector: Option<String>, id: String },
}

/// What the user chose for this run.
#[derive(Clone, Debug)]
pub struct RunSettings {
    /// Connector of the run's default sandbox (`--sandbox`).
    pub default_connector: String,
    /// Keep every sandbox the run creates (`--keep`).
    pub keep: bool,
    /// Reuse this sandbox (by id) as the run's default instead of creating one.
    pub reuse: Option<String>,
}

/// A sandbox created by this run.
struct OwnedSandbox {
    connector: Arc<dyn Connector>,
    /// The name the connector was found by (its file name), to find it again.
    lookup: String,
    id: String,
    keep: bool,
}

/// Host services shared by the agent's imports during one run.
pub struct RunServices {
    registry: Arc<ConnectorRegistry>,
    settings: RunSettings,
    pub(crate) events: EventLog,
    connectors: tokio::sync::Mutex<HashMap<String, Arc<dyn Connector>>>,
    default_sandbox: tokio::sync::Mutex<Option<Arc<dyn SandboxBackend>>>,
    owned: Mutex<Vec<OwnedSandbox>>,
}

impl RunServices {
    pub fn new(registry: Arc<ConnectorRegistry>, settings: RunSettings, events: EventLog) -> Arc<Self> {
        Arc::new(RunServices {
            registry,
            settings,
            events,
            connectors: Default::default(),
            default_sandbox: Default::default(),
            owned: Default::default(),
        })
    }

    /// The named connector (the run's default when `None`), instantiated
    /// once per run.
    pub async fn connector(&self, name: Option<&str>) -> SandboxResult<Arc<dyn Connector>> {
        let name = name.unwrap_or(&self.settings.default_connector);
        let mut connectors = self.connectors.lock().await;
        if let Some(connector) = connectors.get(name) {
            return Ok(connector.clone());
        }
        let connector = self.registry.instantiate(name, &self.events).await.map_err(|err| err.into_sandbox_error())?;
        connectors.insert(name.to_string(), connector.clone());
        Ok(connector)
    }

    pub async fn open_sandbox(&self, source: SandboxSource) -> SandboxResult<Arc<dyn SandboxBackend>> {
        match source {
            SandboxSource::RunDefault => {
                let mut default = self.default_sandbox.lock().await;
                if let Some(sandbox) = default.as_ref() {
                    return Ok(sandbox.clone());
                }
                let sandbox = match self.settings.reuse.clone() {
                    Some(id) => self.connect(None, &id).await?,
                    None => self.create(None, &CreateOptions::default(), self.settings.keep).await?,
                };
                *default = Some(sandbox.clone());
                Ok(sandbox)
            }
            SandboxSource::Create { connector, options, keep } => {
                self.create(connector.as_deref(), &options, keep || self.settings.keep).await
            }
            SandboxSource::Connect { connector, id } => self.connect(connector.as_deref(), &id).await,
        }
    }

    async fn create(
        &self,
        connector: Option<&str>,
        options: &CreateOptions,
        keep: bool,
    ) -> SandboxResult<Arc<dyn SandboxBackend>> {
        let lookup = connector.unwrap_or(&self.settings.default_connector).to_string();
        let connector = self.connector(connector).await?;
        let name = connector.info().name.clone();
        let started = Instant::now();
        let sandbox = {
            let _spinner = progress::spinner(format!("creating a sandbox on {name}"));
            connector.create(options).await?
        };
        // Record ownership before anything else can fail.
        self.owned.lock().expect("owned lock").push(OwnedSandbox {
            connector,
            lookup,
            id: sandbox.id().to_string(),
            keep,
        });
        self.events.record(Event::Sandbox {
            action: "created",
            connector: name,
            id: sandbox.id().to_string(),
            detail: format!("workdir {}, {} ms", sandbox.workdir(), millis(started.elapsed())),
        });
        Ok(sandbox)
    }

    async fn connect(&self, connector: Option<&str>, id: &str) -> SandboxResult<Arc<dyn SandboxBackend>> {
        let connector = self.connector(connector).await?;
        let sandbox = connector.connect(id).await?;
        self.events.record(Event::Sandbox {
            action: "connected",
            connector: connector.info().name.clone(),
            id: id.to_string(),
            detail: format!("workdir {}", sandbox.workdir()),
        });
        Ok(sandbox)
    }

    /// Delete what the run created and was not asked to keep.
    pub async fn cleanup(&self) {
        let owned = std::mem::take(&mut *self.owned.lock().expect("owned lock"));
        for sandbox in owned {
            let connector = sandbox.connector.info().name.clone();
            if sandbox.keep {
                self.events.record(Event::Sandbox {
                    action: "kept",
                    connector,
                    id: sandbox.id.clone(),
                    detail: format!("reuse it with --reuse {}", sandbox.id),
                });
                continue;
            }
            // The run's connector instance may be unusable (it trapped, or the
            // deadline stopped it mid-call): then delete through a fresh one.
            let deleted = match sandbox.connector.delete(&sandbox.id).await {
                Ok(()) => Ok(()),
                Err(first) => match self.registry.instantiate(&sandbox.lookup, &self.events).await {
                    Ok(fresh) => fresh.delete(&sandbox.id).await.map_err(|_| first),
                    Err(_) => Err(first),
                },
            };
            match deleted {
                Ok(()) => self.events.record(Event::Sandbox {
                    action: "deleted",
                    connector,
                    id: sandbox.id,
                    detail: String::new(),
                }),
                Err(err) => self.events.log(
                    "flue",
                    "error",
                    format!("could not delete sandbox {} on {connector}: {err}; delete it by hand", sandbox.id),
                ),
            }
        }
    }
}

/// One agent run's input.
pub struct AgentRun {
    /// Shown in events and errors.
    pub label: String,
    pub wasm: Vec<u8>,
    pub id: String,
    /// JSON text.
    pub payload: String,
    pub settings: RunSettings,
}

/// Why a run did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Load(String),
    #[error("the agent failed: {0}")]
    AgentFailed(String),
    #[error("the agent returned a result that is not JSON ({reason}): {excerpt}")]
    InvalidResult { reason: String, excerpt: String },
    #[error("deadline exceeded: the agent ran longer than {limit:?} and was stopped (raise it with --deadline)")]
    DeadlineExceeded { limit: Duration },
    #[error("the agent ran out of memory: it tried to grow past its limit of {limit_mib} MiB (raise it with --memory)")]
    OutOfMemory { limit_mib: usize },
    #[error("the agent crashed (trap): {trap}{}", guest_said.as_ref().map(|s| format!("\n  its last output: {s}")).unwrap_or_default())]
    Trapped { trap: String, guest_said: Option<String> },
}

pub struct RunOutcome {
    pub run_id: String,
    pub result: Result<serde_json::Value, RunError>,
}

pub async fn run_agent(
    runtime: &Runtime,
    registry: Arc<ConnectorRegistry>,
    run: AgentRun,
    events: EventLog,
) -> RunOutcome {
    let run_id = format!("run_{}", uuid::Uuid::new_v4().simple());
    let started = Instant::now();
    events.record(Event::RunStarted { run_id: run_id.clone(), agent: run.label.clone() });
    let services = RunServices::new(registry, run.settings.clone(), events.clone());
    let deadline = runtime.limits.deadline;

    // The epoch callback stops a guest that computes past the deadline; this
    // timeout also stops one that waits on the host (a long command) past it.
    let result = match tokio::time::timeout(deadline, execute(runtime, &services, &run, &run_id)).await {
        Ok(result) => result,
        Err(_) => Err(RunError::DeadlineExceeded { limit: deadline }),
    };
    services.cleanup().await;
    events.record(Event::RunFinished {
        run_id: run_id.clone(),
        ok: result.is_ok(),
        duration_ms: millis(started.elapsed()),
    });
    RunOutcome { run_id, result }
}

async fn execute(
    runtime: &Runtime,
    services: &Arc<RunServices>,
    run: &AgentRun,
    run_id: &str,
) -> Result<serde_json::Value, RunError> {
    let events = &services.events;
    let component = runtime
        .load_component(&run.wasm, &run.label)
        .map_err(|err| RunError::Load(format!("{}: {err:#}", run.label)))?;
    let pre = runtime.agent_pre(&component).map_err(|err| RunError::Load(format!("{}: {err:#}", run.label)))?;

    let stdout = GuestOutput::new("agent stdout", "info", events.clone());
    let stderr = GuestOutput::new("agent stderr", "warn", events.clone());
    // Secure defaults (see WasiCtxBuilder): no env, no args, no preopened
    // directories, no sockets, no name lookup, stdin closed. Only stdout and
    // stderr are granted, and they go into the run's events.
    let wasi = WasiCtxBuilder::new().stdout(stdout.clone()).stderr(stderr.clone()).build();
    let state = AgentState {
        wasi,
        table: ResourceTable::new(),
        limits: runtime.limits.agent_store().build(),
        services: services.clone(),
    };
    let mut store = Store::new(&runtime.engine, state);
    store.limiter(|state| &mut state.limits);
    arm_deadline(&mut store, "the agent", runtime.limits.deadline);

    let outcome = async {
        let agent = pre.instantiate_async(&mut store).await?;
        let context = Context { id: run.id.clone(), run_id: run_id.to_string(), payload: run.payload.clone() };
        agent.flue_sandbox_run().call_run(&mut store, &context).await
    }
    .await;
    stdout.finish();
    stderr.finish();

    match outcome {
        Ok(Ok(json)) => serde_json::from_str(&json).map_err(|err| RunError::InvalidResult {
            reason: err.to_string(),
            excerpt: crate::events::one_line(&json, 200),
        }),
        Ok(Err(message)) => Err(RunError::AgentFailed(message)),
        Err(err) => Err(classify_trap(err, runtime, &stderr)),
    }
}

fn classify_trap(err: wasmtime::Error, runtime: &Runtime, stderr: &GuestOutput) -> RunError {
    if let Some(deadline) = err.downcast_ref::<DeadlineExceeded>() {
        return RunError::DeadlineExceeded { limit: deadline.limit };
    }
    let chain = format!("{err:?}");
    if chain.contains("forcing trap when growing memory") || chain.contains("memory allocation of") {
        return RunError::OutOfMemory { limit_mib: runtime.limits.agent_memory / (1024 * 1024) };
    }
    let trap = match err.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => crate::events::one_line(&format!("{err:#}"), 300),
    };
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
