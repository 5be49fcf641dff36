//! `flue runs ls|show|resume|cancel`: a project's run store, as `flue
//! serve`, `flue dev` and `flue run` keep it, read from the command line
//! beside a server that may be using it; a run cancelled, or a `flue run`
//! that was killed resumed from its journal.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};

use super::render::short_age;
use super::{EXIT_FAILED, Failure, out, usage};
use crate::events::age_of;
use crate::serve::store::{CancelRequest, RunStore, StoreLocation, project_store};
use crate::terminal::escape;

/// `flue runs` arguments.
#[derive(Args, Debug)]
pub struct RunsArgs {
    #[command(subcommand)]
    pub action: Action,

    /// The project whose store to read.
    #[arg(long, value_name = "DIR", default_value = ".", global = true)]
    pub project: PathBuf,

    /// The run store itself: a file, or a PostgreSQL URL
    /// [default: PROJECT/.flue/runs.sqlite].
    #[arg(long, value_name = "FILE|URL", global = true, env = "FLUE_STORE", hide_env_values = true)]
    pub store: Option<String>,
}

/// What to do.
#[derive(Subcommand, Debug)]
pub enum Action {
    /// List the newest runs: id, agent, invocation id, status, age.
    Ls {
        /// How many.
        #[arg(long, value_name = "N", default_value_t = 20, value_parser = super::ranged(1..=10_000))]
        limit: u64,
    },
    /// A run's whole record as JSON (as `GET /runs/<runId>` answers it):
    /// result or error, events, and the conversations kept for its id.
    Show {
        /// The run, as `flue runs ls` or `x-flue-run-id` names it.
        run_id: String,
    },
    /// Resume a `flue run` that was killed before it ended (status
    /// `interrupted`): a fresh instance of the same agent is replayed from
    /// the run's journal (the model turns and sandbox operations it
    /// completed are answered from it, not repeated), then goes on live
    /// from where it stopped; the call in flight at the crash is made
    /// again. A server resumes its own runs when it starts again.
    Resume {
        /// The run.
        run_id: String,
        /// The agent's limits for the rest of the run.
        #[command(flatten)]
        agent_limits: super::host_args::AgentLimitArgs,
        /// Host flags.
        #[command(flatten)]
        host: super::host_args::HostArgs,
    },
    /// Stop a queued or running run: the process running it stops the agent,
    /// its model loop and its commands within a second and deletes its
    /// sandboxes (unless kept); the run ends `cancelled`.
    Cancel {
        /// The run.
        run_id: String,
        /// How long to wait for the run to end, in seconds (0: do not wait).
        #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = super::ranged(0..=3600))]
        wait: u64,
    },
}

/// Run `flue runs`.
pub async fn runs(args: RunsArgs, events: crate::events::EventLog) -> Result<(), Failure> {
    let own_dir = args.store.is_none();
    let location = match &args.store {
        Some(store) => StoreLocation::parse(store),
        None => project_store(&args.project).as_path().into(),
    };
    if let StoreLocation::File(path) = &location
        && !path.exists()
    {
        return Err(usage(anyhow::anyhow!(
            "no run store at {}: runs are kept by `flue serve`, `flue dev` and `flue run` in their project (pass \
             --project DIR or --store FILE|URL)",
            path.display()
        )));
    }
    let store = RunStore::attach(location.clone(), usize::MAX, own_dir)?;
    match args.action {
        Action::Ls { limit } => {
            let runs = store.list(limit as usize);
            if runs.is_empty() {
                out!("no runs in {location}");
                return Ok(());
            }
            out!("{:<38} {:<16} {:<20} {:<10} AGE", "RUN", "AGENT", "ID", "STATUS");
            for run in runs {
                let text = |field: &str| escape(run[field].as_str().unwrap_or_default()).to_string();
                let age = run["createdMs"].as_i64().map(age_of).unwrap_or_default();
                out!(
                    "{:<38} {:<16} {:<20} {:<10} {}",
                    text("runId"),
                    text("agent"),
                    text("id"),
                    text("status"),
                    short_age(age)
                );
            }
            Ok(())
        }
        Action::Show { run_id } => match store.get(&run_id) {
            Some(record) => {
                out!("{}", serde_json::to_string_pretty(&record).expect("JSON value serialises"));
                Ok(())
            }
            None => Err(no_run(&run_id, &location)),
        },
        Action::Resume { run_id, agent_limits, host } => {
            super::run::resume(&run_id, std::sync::Arc::new(store), &agent_limits, &host, events).await
        }
        Action::Cancel { run_id, wait } => match store.request_cancel(&run_id) {
            CancelRequest::Unknown => Err(no_run(&run_id, &location)),
            CancelRequest::AlreadyEnded(status) => Err(Failure {
                code: EXIT_FAILED,
                error: anyhow::anyhow!("run {} has already ended ({status}): nothing to cancel", escape(&run_id)),
            }),
            CancelRequest::Requested => {
                let asked = Instant::now();
                loop {
                    let status = store.get(&run_id).and_then(|r| r["status"].as_str().map(str::to_string));
                    match status.as_deref() {
                        Some("queued" | "running") if asked.elapsed() < Duration::from_secs(wait) => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Some("queued" | "running") => {
                            out!("run {} was asked to stop; it has not ended yet", escape(&run_id));
                            return Ok(());
                        }
                        Some(status) => {
                            out!("run {} {status}", escape(&run_id));
                            return Ok(());
                        }
                        None => return Err(no_run(&run_id, &location)),
                    }
                }
            }
        },
    }
}

fn no_run(run_id: &str, store: &StoreLocation) -> Failure {
    usage(anyhow::anyhow!("no run {} in {store} (`flue runs ls` lists them)", escape(run_id)))
}
