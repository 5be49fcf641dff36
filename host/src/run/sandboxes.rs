//! The sandboxes of one run: which connector serves each, which the run
//! created (and so must delete), and the run's default sandbox.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::connector::registry::ConnectorRegistry;
use crate::events::{Event, EventLog, LogLevel, millis};
use crate::sandbox::error::{ErrorKind, SandboxError, SandboxResult};
use crate::sandbox::session::Session;
use crate::sandbox::{Connector, CreateOptions, Resources, Sandbox, SandboxSource};

/// What the user chose for this run.
#[derive(Clone, Debug)]
pub struct RunSettings {
    /// Connector of the run's default sandbox (`--sandbox`).
    pub default_connector: String,
    /// Keep every sandbox the run creates (`--keep`).
    pub keep: bool,
    /// Reuse this sandbox (by id) as the run's default instead of creating one.
    pub reuse: Option<String>,
    /// The run's default sandbox belongs to its agent and invocation id:
    /// found by its labels and reconnected, created (and kept) on first use.
    pub sandbox_per_id: bool,
    /// Resources of the run's default sandbox (`--cpus`, `--memory-gib`,
    /// `--disk-gib`), and the ceiling of every sandbox the agent creates;
    /// `None`: the connector's defaults, no ceiling but the connector's own.
    pub default_resources: Option<Resources>,
    /// With `sandbox_per_id`: how long the id's sandbox may go unused
    /// before it is deleted (`None`: never).
    pub sandbox_idle: Option<Duration>,
}

/// How long a sandbox kept per id may go unused, unless configured: a week.
pub const DEFAULT_SANDBOX_IDLE: Duration = Duration::from_secs(7 * 24 * 3600);
/// The range of `sandbox-idle-secs` (0: never deleted; at most a year).
pub const SANDBOX_IDLE_SECS: std::ops::RangeInclusive<u64> = 0..=365 * 24 * 3600;

/// `sandbox-idle-secs` as a run takes it: unset, the default; 0, never.
pub fn sandbox_idle(secs: Option<u64>) -> Option<Duration> {
    match secs {
        None => Some(DEFAULT_SANDBOX_IDLE),
        Some(0) => None,
        Some(secs) => Some(Duration::from_secs(secs)),
    }
}

/// A sandbox that belongs to an agent and invocation id, as last used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdSandbox {
    /// The agent (as `run::agent_name` names it).
    pub agent: String,
    /// The invocation id.
    pub id: String,
    /// The connector, by name.
    pub connector: String,
    /// The sandbox's id.
    pub sandbox_id: String,
    /// How long it may go unused (`None`: for ever).
    pub idle: Option<Duration>,
}

/// Where the use of sandboxes kept per id is noted, so that one left idle
/// past its time can be found and deleted (the run store).
pub trait IdSandboxLedger: Send + Sync {
    /// `sandbox` was used now: a run took it up (`in_use`: never idle while
    /// that run's process lives), or ended with it.
    fn used(&self, sandbox: &IdSandbox, in_use: bool);
}

/// A sandbox created by this run.
struct OwnedSandbox {
    connector: Arc<dyn Connector>,
    /// The name the connector was found by (its file name), to find it again.
    lookup: String,
    id: String,
    keep: bool,
}

/// The sandboxes of one run, shared by the agent's imports.
pub struct RunSandboxes {
    registry: Arc<ConnectorRegistry>,
    /// The run's id and agent, for the labels of the sandboxes it creates.
    run_id: String,
    agent: String,
    /// The id the agent was invoked with (`--id`, or a webhook's `<id>`).
    invocation: String,
    settings: RunSettings,
    pub(crate) events: EventLog,
    /// The largest file a session reads at once.
    max_read: u64,
    connectors: tokio::sync::Mutex<HashMap<String, Arc<dyn Connector>>>,
    default_sandbox: tokio::sync::Mutex<Option<Arc<dyn Sandbox>>>,
    owned: Mutex<Vec<OwnedSandbox>>,
    /// The first sandbox the run could not get because its provider was
    /// down, timing out or refusing the credentials: connector and error.
    unavailable: Mutex<Option<(String, SandboxError)>>,
    /// Where the use of the id's sandbox is noted, if anywhere.
    ledger: Option<Arc<dyn IdSandboxLedger>>,
    /// The id's sandbox, once the run took it up.
    id_sandbox: Mutex<Option<IdSandbox>>,
}

impl RunSandboxes {
    /// Nothing opened yet.
    pub fn new(
        registry: Arc<ConnectorRegistry>,
        (run_id, agent, invocation): (&str, &str, &str),
        settings: RunSettings,
        events: EventLog,
        max_read: u64,
        ledger: Option<Arc<dyn IdSandboxLedger>>,
    ) -> Arc<Self> {
        Arc::new(RunSandboxes {
            registry,
            run_id: run_id.to_string(),
            agent: agent.to_string(),
            invocation: invocation.to_string(),
            settings,
            events,
            max_read,
            connectors: Default::default(),
            default_sandbox: Default::default(),
            owned: Default::default(),
            unavailable: Default::default(),
            ledger,
            id_sandbox: Default::default(),
        })
    }

    /// The user's configuration (`--env` files and the environment): where
    /// model keys come from. Agents never see it.
    pub fn config(&self) -> &std::collections::HashMap<String, String> {
        self.registry.config()
    }

    /// The named connector (the run's default when `None`), instantiated
    /// once per run.
    pub async fn connector(&self, name: Option<&str>) -> SandboxResult<Arc<dyn Connector>> {
        let name = name.unwrap_or(&self.settings.default_connector);
        let mut connectors = self.connectors.lock().await;
        if let Some(connector) = connectors.get(name) {
            return Ok(connector.clone());
        }
        let connector = self.registry.connector(name, &self.events).await.map_err(|err| err.into_sandbox_error())?;
        connectors.insert(name.to_string(), connector.clone());
        Ok(connector)
    }

    /// A session on `sandbox` in `cwd` (default: its workdir), recording
    /// into the run's events, under the run's limits.
    pub fn session(&self, sandbox: Arc<dyn Sandbox>, cwd: Option<&str>) -> SandboxResult<Session> {
        Ok(Session::new(sandbox, cwd, self.events.clone())?.with_max_read(self.max_read))
    }

    /// A sandbox for the agent, from `source`. A provider that is down is
    /// remembered (see [`RunSandboxes::unavailable`]).
    pub async fn open_sandbox(&self, source: SandboxSource) -> SandboxResult<Arc<dyn Sandbox>> {
        let connector = self.connector_name(&source);
        let opened = self.open_sandbox_from(source).await;
        if let Err(err) = &opened
            && matches!(err.kind, ErrorKind::Unavailable | ErrorKind::Timeout | ErrorKind::Auth)
        {
            self.unavailable.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(|| (connector, err.clone()));
        }
        opened
    }

    /// The connector a sandbox from `source` comes from, by name.
    pub fn connector_name(&self, source: &SandboxSource) -> String {
        match source {
            SandboxSource::Create { connector: Some(name), .. }
            | SandboxSource::Connect { connector: Some(name), .. } => name.clone(),
            _ => self.settings.default_connector.clone(),
        }
    }

    /// Whether the run created sandbox `id` (`Some`), and then whether it
    /// keeps it.
    pub fn owned_keep(&self, id: &str) -> Option<bool> {
        let owned = self.owned.lock().unwrap_or_else(|e| e.into_inner());
        owned.iter().find(|sandbox| sandbox.id == id).map(|sandbox| sandbox.keep)
    }

    /// A resumed run's sandbox: the one an earlier process opened from
    /// `source`, sandbox `id` on `connector`, connected to again; the run
    /// owns it again if it created it (`owned`: then whether to keep it).
    pub async fn reopen(
        &self,
        source: &SandboxSource,
        connector: &str,
        id: &str,
        owned: Option<bool>,
    ) -> SandboxResult<Arc<dyn Sandbox>> {
        let mut default = self.default_sandbox.lock().await;
        if matches!(source, SandboxSource::RunDefault)
            && let Some(sandbox) = default.as_ref()
        {
            return Ok(sandbox.clone());
        }
        let sandbox = self.connect(Some(connector), id).await?;
        if let Some(keep) = owned {
            let connector_instance = self.connector(Some(connector)).await?;
            self.owned.lock().unwrap_or_else(|e| e.into_inner()).push(OwnedSandbox {
                connector: connector_instance,
                lookup: connector.to_string(),
                id: id.to_string(),
                keep,
            });
        }
        if matches!(source, SandboxSource::RunDefault) {
            *default = Some(sandbox.clone());
        }
        Ok(sandbox)
    }

    /// The first sandbox provider that failed the run this way, if one did:
    /// a run that then failed, failed because of it.
    pub fn unavailable(&self) -> Option<(String, SandboxError)> {
        self.unavailable.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn open_sandbox_from(&self, source: SandboxSource) -> SandboxResult<Arc<dyn Sandbox>> {
        match source {
            SandboxSource::RunDefault => {
                let mut default = self.default_sandbox.lock().await;
                if let Some(sandbox) = default.as_ref() {
                    return Ok(sandbox.clone());
                }
                let options = CreateOptions { resources: self.settings.default_resources, ..Default::default() };
                let sandbox = match self.settings.reuse.clone() {
                    Some(id) => self.connect(None, &id).await?,
                    None if self.settings.sandbox_per_id => self.id_sandbox(None, options).await?,
                    None => self.create(None, &options, self.settings.keep).await?,
                };
                *default = Some(sandbox.clone());
                Ok(sandbox)
            }
            SandboxSource::Create { connector, mut options, keep } => {
                let for_id = options.labels.iter().position(|(key, _)| key == super::ownership::KEEP_FOR_ID);
                let for_id = for_id.map(|at| options.labels.remove(at));
                // `flue.` labels are flue's word on who owns a sandbox: an
                // agent's own would let it pass one off as another id's.
                options.labels.retain(|(key, _)| !key.starts_with("flue."));
                match for_id {
                    Some((_, value)) if value == "true" => self.id_sandbox(connector.as_deref(), options).await,
                    Some((_, value)) => Err(SandboxError::invalid_input(format!(
                        "label {}={value:?}: the only value is \"true\" (the invocation id's own sandbox)",
                        super::ownership::KEEP_FOR_ID
                    ))),
                    None => self.create(connector.as_deref(), &options, keep || self.settings.keep).await,
                }
            }
            SandboxSource::Connect { connector, id } => self.connect(connector.as_deref(), &id).await,
        }
    }

    async fn create(
        &self,
        connector: Option<&str>,
        options: &CreateOptions,
        keep: bool,
    ) -> SandboxResult<Arc<dyn Sandbox>> {
        let lookup = connector.unwrap_or(&self.settings.default_connector).to_string();
        let connector = self.connector(connector).await?;
        let name = connector.info().name.clone();
        let started = Instant::now();
        crate::sandbox::session::check_env(&options.env)?;
        if let Some(resources) = &options.resources {
            resources.check()?;
        }
        let mut options = options.clone();
        // The operator's sizes are ceilings for every sandbox of the run.
        let (resources, lowered) = Resources::within(options.resources, self.settings.default_resources);
        options.resources = resources;
        if !lowered.is_empty() {
            self.events.log(
                "flue",
                LogLevel::Warn,
                format!(
                    "the agent asked for {} on {name}: it gets the ceiling (the operator sets it with --cpus, \
                     --memory-gib, --disk-gib)",
                    lowered.join(", ")
                ),
            );
        }
        let ours = super::ownership::labels(&self.run_id, &self.agent, keep);
        options.labels.retain(|(key, _)| !ours.iter().any(|(k, _)| k == key));
        options.labels.extend(ours);
        let sandbox = {
            let _progress = self.events.progress(format!("creating a sandbox on {name}"));
            connector.create(&options).await?
        };
        // Record ownership before anything else can fail.
        self.owned.lock().unwrap_or_else(|e| e.into_inner()).push(OwnedSandbox {
            connector,
            lookup,
            id: sandbox.id().to_string(),
            keep,
        });
        #[cfg(debug_assertions)]
        super::test_hooks::after_sandbox_created(&self.invocation);
        self.events.record(Event::Sandbox {
            action: "created",
            connector: name,
            id: sandbox.id().to_string(),
            detail: format!("workdir {}, {} ms", sandbox.workdir(), millis(started.elapsed())),
        });
        Ok(sandbox)
    }

    /// The sandbox of the run's agent and invocation id on `connector`
    /// (the run's by default): the one its labels name if there is one,
    /// else a new one, kept when the run ends.
    async fn id_sandbox(&self, connector: Option<&str>, mut options: CreateOptions) -> SandboxResult<Arc<dyn Sandbox>> {
        let label = super::ownership::for_id(&super::agent_name(&self.agent), &self.invocation);
        let name = connector.unwrap_or(&self.settings.default_connector).to_string();
        let connector = self.connector(Some(&name)).await?;
        let found = connector.list(std::slice::from_ref(&label)).await?;
        let sandbox = match found.iter().find(|sandbox| sandbox.labels.contains(&label)) {
            Some(existing) => self.connect(Some(&name), &existing.id).await?,
            None => {
                options.labels.push(label);
                options.labels.push((super::ownership::ID.into(), super::ownership::label_safe(&self.invocation)));
                self.create(Some(&name), &options, true).await?
            }
        };
        let used = IdSandbox {
            agent: super::agent_name(&self.agent),
            id: self.invocation.clone(),
            connector: name,
            sandbox_id: sandbox.id().to_string(),
            idle: self.settings.sandbox_idle,
        };
        if let Some(ledger) = &self.ledger {
            ledger.used(&used, true);
        }
        *self.id_sandbox.lock().unwrap_or_else(|e| e.into_inner()) = Some(used);
        Ok(sandbox)
    }

    async fn connect(&self, connector: Option<&str>, id: &str) -> SandboxResult<Arc<dyn Sandbox>> {
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

    /// Let go of the run's sandboxes without deleting them: the run goes on
    /// in another process, whose resume reconnects to them.
    pub async fn leave_for_resume(&self) {
        self.default_sandbox.lock().await.take();
        self.id_sandbox.lock().unwrap_or_else(|e| e.into_inner()).take();
        let owned = std::mem::take(&mut *self.owned.lock().unwrap_or_else(|e| e.into_inner()));
        for sandbox in owned {
            self.events.record(Event::Sandbox {
                action: "left",
                connector: sandbox.connector.info().name.clone(),
                id: sandbox.id,
                detail: "the run goes on in another process".into(),
            });
        }
    }

    /// Delete what the run created and was not asked to keep.
    pub async fn cleanup(&self) {
        // Let go of the run's sandbox first: a local one then stops its
        // processes at once, before slower deletions elsewhere.
        self.default_sandbox.lock().await.take();
        // The id's sandbox was in use until now: its idle time starts here.
        let id_sandbox = self.id_sandbox.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let (Some(ledger), Some(used)) = (&self.ledger, id_sandbox) {
            ledger.used(&used, false);
        }
        // A panic elsewhere in the run (see `run::panics`) must not stop this.
        let owned = std::mem::take(&mut *self.owned.lock().unwrap_or_else(|e| e.into_inner()));
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
                Err(first) => match self.registry.connector(&sandbox.lookup, &self.events).await {
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
                    LogLevel::Error,
                    format!("could not delete sandbox {} on {connector}: {err}; delete it by hand", sandbox.id),
                ),
            }
        }
    }
}
