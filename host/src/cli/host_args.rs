//! The flags every host-using command shares, turned into a [`Host`].

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::{Failure, usage};
use crate::host::{Host, HostBuilder};
use crate::runtime::Limits;
use crate::runtime::cache::ComponentCache;
use crate::sandbox::local::{Isolation, IsolationSetting, ReadyAhead, SandboxLimits, probe_bubblewrap};
use crate::sandbox::{BuiltinSettings, builtin_connectors};

/// An agent's own limits, for `flue run` and (as defaults that an agent's
/// `flue.toml` entry may change) for `flue serve`/`flue dev`.
#[derive(Args, Clone, Debug)]
pub struct AgentLimitArgs {
    /// Stop the agent after this many seconds (at most a week). Served
    /// agents: `deadline-secs` in flue.toml wins.
    #[arg(long, value_name = "SECS", default_value_t = 600,
          value_parser = super::ranged(crate::runtime::limits::DEADLINE_SECS))]
    pub deadline: u64,

    /// The agent's memory limit, in MiB (at most 4096, all a 32-bit wasm
    /// memory can address). Served agents: `memory-mib` in flue.toml wins.
    #[arg(long, value_name = "MIB", default_value_t = 512,
          value_parser = super::ranged(crate::runtime::limits::AGENT_MEMORY_MIB))]
    pub memory: u64,

    /// The most a session's conversation keeps between runs with the same
    /// id, in KiB of JSON (at most 8192). Past it the oldest whole turns are
    /// dropped: the next run's model no longer sees them.
    #[arg(long, value_name = "KIB", default_value_t = 1024,
          value_parser = super::ranged(crate::run::conversations::CONVERSATION_KIB))]
    pub conversation_kib: u64,

    /// Keep no journal of the run's host calls: a run a crash interrupts
    /// (`kill -9`, a power cut) is then lost instead of resumed.
    #[arg(long)]
    pub no_journal: bool,

    /// The most one run's journal records, in MiB (at most 4096). Past it
    /// the run goes on unrecorded, and cannot be resumed after a crash.
    #[arg(long, value_name = "MIB", default_value_t = 64, value_parser = super::ranged(1..=4096))]
    pub journal_mib: u64,
}

impl AgentLimitArgs {
    /// The bound on a run's journal in bytes; `None` with `--no-journal`.
    pub fn journal_limit(&self) -> Option<u64> {
        // Bounded by its parser: no overflow.
        (!self.no_journal).then_some(self.journal_mib << 20)
    }

    /// `--conversation-kib` in bytes.
    pub fn conversation_limit(&self) -> usize {
        // Bounded by its parser: no overflow.
        (self.conversation_kib as usize) * 1024
    }

    /// The run limits these flags give.
    pub fn limits(&self) -> Limits {
        Limits {
            deadline: std::time::Duration::from_secs(self.deadline),
            // Bounded by its parser: no overflow.
            agent_memory: (self.memory as usize) * 1024 * 1024,
            ..Limits::default()
        }
    }
}

/// Where connectors, configuration and the local sandbox come from.
#[derive(Args, Clone, Debug)]
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

    /// local sandbox: how isolated commands start. `supervisor` keeps one
    /// process alive in each sandbox that starts every command (a command
    /// costs a fork); `per-command` sets up a new bubblewrap sandbox for each.
    #[arg(long, value_enum, default_value = "supervisor", env = "FLUE_EXEC_MODE")]
    pub exec_mode: ExecMode,

    /// local sandbox: the most processes (and threads) its commands may run
    /// at once.
    #[arg(long, value_name = "N", default_value_t = SandboxLimits::default().max_processes)]
    pub max_processes: u64,

    /// CPU cores for each sandbox (local: a CPU quota; Daytona: the
    /// sandbox's size). A ceiling: an agent may ask for fewer, not more.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub cpus: Option<u32>,

    /// Memory for each sandbox, in GiB (local: all its commands together;
    /// default 2). A ceiling: an agent may ask for less, not more.
    #[arg(long, value_name = "GIB", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub memory_gib: Option<u32>,

    /// Disk for each sandbox, in GiB (local: the largest file a command or
    /// the file API may write; default 10). A ceiling: an agent may ask for
    /// less, not more.
    #[arg(long, value_name = "GIB", value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub disk_gib: Option<u32>,

    /// The project these flags are for (set by `serve`/`dev`, not a flag):
    /// its `connectors/` and `.env` are used, wherever flue is started from.
    /// `None`: the current directory's.
    #[arg(skip)]
    pub project: Option<PathBuf>,

    /// Where compiled components are cached [default: $XDG_CACHE_HOME/flue].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

/// `--isolation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IsolationChoice {
    /// Bubblewrap when it works here, else none (with a warning).
    Auto,
    /// Bubblewrap, or fail.
    Bwrap,
    /// No isolation: commands run as you, on this machine.
    None,
}

/// `--exec-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExecMode {
    /// One supervisor process per sandbox starts each command.
    Supervisor,
    /// A new bubblewrap sandbox for each command.
    PerCommand,
}

impl HostArgs {
    /// The sandbox size the operator chose (`--cpus`, `--memory-gib`,
    /// `--disk-gib`): the size of a run's sandbox, and the ceiling of every
    /// sandbox an agent creates.
    pub fn resources(&self) -> Option<crate::sandbox::Resources> {
        (self.cpus.is_some() || self.memory_gib.is_some() || self.disk_gib.is_some()).then_some(
            crate::sandbox::Resources {
                cpu: self.cpus,
                memory_gib: self.memory_gib,
                disk_gib: self.disk_gib,
                gpu: None,
            },
        )
    }

    /// The host these flags describe, with `limits`.
    pub async fn host(&self, limits: Limits) -> Result<Host, Failure> {
        self.host_pooled(limits, None, ReadyAhead::None).await
    }

    /// The host these flags describe, with `limits`, pooling instances for
    /// `pooled_runs` concurrent runs when given, and the local sandboxes
    /// `ready_sandboxes` asks to be made ready ahead.
    pub async fn host_pooled(
        &self,
        limits: Limits,
        pooled_runs: Option<u32>,
        ready_sandboxes: ReadyAhead,
    ) -> Result<Host, Failure> {
        let config = crate::config::load(&self.dotenv(), &self.env_files, std::env::vars()).map_err(usage)?;
        let cache_dir = self.cache_dir.clone().or_else(ComponentCache::default_dir);
        let isolation = match self.isolation {
            IsolationChoice::None => Isolation::None.into(),
            // Asked for by name: fail before anything starts if it cannot work.
            IsolationChoice::Bwrap => match probe_bubblewrap().await {
                Ok(bwrap) => Isolation::Bubblewrap { bwrap, allow_network: self.allow_network }.into(),
                Err(reason) => return Err(usage(anyhow::anyhow!("--isolation bwrap: {reason}"))),
            },
            IsolationChoice::Auto => IsolationSetting::probe_in_background(self.allow_network, cache_dir.clone()),
        };
        let supervisor = match self.exec_mode {
            // This very binary answers `__flue-supervisor` (see main.rs).
            ExecMode::Supervisor => std::env::current_exe().ok(),
            ExecMode::PerCommand => None,
        };
        let sandbox_limits = SandboxLimits { max_processes: self.max_processes, ..SandboxLimits::default() }
            .sized(self.resources().as_ref());
        let settings = BuiltinSettings {
            isolation,
            workdir: self.workdir.clone(),
            limits: sandbox_limits,
            supervisor,
            ready_sandboxes,
            // (Labels note this boot in flue's data directory: only when used.)
            ready_labels: if ready_sandboxes != ReadyAhead::None {
                crate::run::ownership::labels("ready", "flue", false)
            } else {
                Vec::new()
            },
        };
        let mut builder = HostBuilder::new()
            .limits(limits)
            .cache_dir(cache_dir)
            .config(config)
            .builtins(builtin_connectors(&settings))
            .pooling(pooled_runs);
        if let Some(dir) = self.connectors.clone().or_else(|| Some(self.project.as_ref()?.join("connectors"))) {
            builder = builder.connectors_dir(dir);
        }
        Ok(builder.build()?)
    }

    /// The `.env` read before `--env` files: the project's.
    pub fn dotenv(&self) -> PathBuf {
        self.project.as_deref().unwrap_or(std::path::Path::new(".")).join(".env")
    }
}
