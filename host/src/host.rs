//! [`HostBuilder`]: the one way to put a host together — runtime, limits,
//! configuration, built-in connectors and the connectors directory — used by
//! the CLI, the tests, the benchmarks and the Daytona test server alike.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::connector::registry::{ConnectorError, ConnectorRegistry};
use crate::events::EventLog;
use crate::run::{AgentLinker, AgentRun, RunOutcome, run_agent};
use crate::runtime::cache::ComponentCache;
use crate::runtime::{Limits, Runtime};
use crate::sandbox::Connector;

/// Builds a [`Host`].
///
/// Its defaults are the secure ones:
///
/// * no built-in connectors — add them with [`HostBuilder::builtin`] or
///   [`HostBuilder::builtins`] (the CLI adds
///   [`crate::sandbox::builtin_connectors`]);
/// * an empty configuration: connectors see no settings and no secrets until
///   [`HostBuilder::config`] provides them, and then only the keys they
///   declare;
/// * [`Limits::default`]: 600 s per run, 512 MiB per agent, 256 MiB per
///   connector instance, 300 s per connector call;
/// * connectors from `./connectors` when it exists, else the source tree's;
/// * compiled components cached in [`ComponentCache::default_dir`].
pub struct HostBuilder {
    limits: Limits,
    cache_dir: Option<PathBuf>,
    connectors_dir: Option<PathBuf>,
    config: HashMap<String, String>,
    builtins: Vec<Arc<dyn Connector>>,
    pooling: Option<crate::runtime::engine::Pooling>,
}

impl Default for HostBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl HostBuilder {
    /// A builder with the defaults above.
    pub fn new() -> Self {
        HostBuilder {
            limits: Limits::default(),
            cache_dir: ComponentCache::default_dir(),
            connectors_dir: None,
            config: HashMap::new(),
            builtins: Vec::new(),
            pooling: None,
        }
    }

    /// Pool instances for `runs` concurrent runs (a server), falling back to
    /// on-demand allocation where the machine refuses the reservations.
    pub fn pooling(mut self, runs: Option<u32>) -> Self {
        self.pooling = runs.map(|runs| crate::runtime::engine::Pooling { runs });
        self
    }

    /// The limits runs and connectors get.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Where compiled components are cached; `None` compiles every time.
    pub fn cache_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.cache_dir = dir;
        self
    }

    /// The directory of `*.wasm` connectors.
    pub fn connectors_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.connectors_dir = Some(dir.into());
        self
    }

    /// Connector configuration (environment and `--env` files).
    pub fn config(mut self, config: HashMap<String, String>) -> Self {
        self.config = config;
        self
    }

    /// Add a built-in connector, known by its `info().name`.
    pub fn builtin(mut self, connector: Arc<dyn Connector>) -> Self {
        self.builtins.push(connector);
        self
    }

    /// Add several built-in connectors.
    pub fn builtins(mut self, connectors: impl IntoIterator<Item = Arc<dyn Connector>>) -> Self {
        self.builtins.extend(connectors);
        self
    }

    /// Create the engine and the registry.
    pub fn build(self) -> anyhow::Result<Host> {
        let runtime = Arc::new(Runtime::new(self.cache_dir, self.limits, self.pooling)?);
        let dir = self.connectors_dir.unwrap_or_else(default_connectors_dir);
        let agents = Arc::new(AgentLinker::new(&runtime)?);
        let registry = Arc::new(ConnectorRegistry::new(
            runtime.clone(),
            dir,
            self.builtins,
            self.config,
            Arc::new(crate::guest::installable_connector),
        )?);
        Ok(Host { runtime, agents, registry })
    }
}

/// `./connectors` when it exists, else the source tree's.
fn default_connectors_dir() -> PathBuf {
    let here = PathBuf::from("connectors");
    if here.is_dir() { here } else { crate::guest::project_root().join("connectors") }
}

/// A runtime and the connectors it can link agents to.
#[derive(Clone)]
pub struct Host {
    runtime: Arc<Runtime>,
    agents: Arc<AgentLinker>,
    registry: Arc<ConnectorRegistry>,
}

impl Host {
    /// The wasm runtime.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The connectors.
    pub fn registry(&self) -> &Arc<ConnectorRegistry> {
        &self.registry
    }

    /// A connector by name (a built-in or a file in the connectors directory).
    pub async fn connector(&self, name: &str, events: &EventLog) -> Result<Arc<dyn Connector>, ConnectorError> {
        self.registry.connector(name, events).await
    }

    /// Run one agent to its end.
    pub async fn run(&self, run: AgentRun, events: EventLog) -> RunOutcome {
        run_agent(&self.runtime, &self.agents, self.registry.clone(), run, events, std::future::pending()).await
    }

    /// Run one agent to its end, or until `stop` resolves (with why the run
    /// ends: interrupted or cancelled); its sandboxes are deleted either way.
    pub async fn run_until(
        &self,
        run: AgentRun,
        events: EventLog,
        stop: impl std::future::Future<Output = crate::run::RunError>,
    ) -> RunOutcome {
        run_agent(&self.runtime, &self.agents, self.registry.clone(), run, events, stop).await
    }
}
