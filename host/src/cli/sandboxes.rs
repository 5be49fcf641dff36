//! `flue sandboxes ls|rm|gc`: see the sandboxes flue runs created, on every
//! connector that can list them, and clean up what crashed or killed runs
//! left behind.

use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::host_args::HostArgs;
use super::render::short_age;
use super::{Failure, out, usage};
use crate::events::EventLog;
use crate::host::Host;
use crate::run::ownership::{self, Owner};
use crate::runtime::Limits;
use crate::sandbox::{Connector, SandboxSummary};
use crate::terminal::{escape, escape_block};

/// `flue sandboxes` arguments.
#[derive(Args, Debug)]
pub struct SandboxesArgs {
    #[command(subcommand)]
    pub action: Action,
}

/// What to do.
#[derive(Subcommand, Debug)]
pub enum Action {
    /// List sandboxes with their state, age and whether their run is still
    /// going (`orphaned`: its run is gone and it was not kept).
    Ls {
        /// Only this connector (repeatable) [default: local and every installed connector].
        #[arg(long = "sandbox", value_name = "NAME")]
        only: Vec<String>,
        /// Only sandboxes with this label (repeatable), e.g. `flue.agent=hello`.
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Also sandboxes flue did not create.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        host: HostArgs,
    },
    /// Delete sandboxes by id.
    Rm {
        /// Their ids, as `flue sandboxes ls` shows them.
        #[arg(required = true)]
        ids: Vec<String>,
        /// The connector they are on.
        #[arg(long = "sandbox", value_name = "NAME", default_value = "local")]
        connector: String,
        #[command(flatten)]
        host: HostArgs,
    },
    /// Delete the sandboxes flue runs created, did not mean to keep, and
    /// whose run is gone (a crash, a kill), and say what was deleted.
    Gc {
        /// Only sandboxes at least this old, e.g. `30m`, `2h`, `1d`.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        older_than: Option<Duration>,
        /// Only this connector (repeatable) [default: local and every installed connector].
        #[arg(long = "sandbox", value_name = "NAME")]
        only: Vec<String>,
        /// Say what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// The project whose run store gc reads: sandboxes kept per id there
        /// are deleted once idle past their `sandbox-idle-secs`; those of its
        /// runs going on (or resuming) are kept; an interrupted run whose
        /// sandboxes gc deletes ends, no longer resumable.
        #[arg(long, value_name = "DIR", default_value = ".")]
        project: std::path::PathBuf,
        #[command(flatten)]
        host: HostArgs,
    },
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))
}

/// `90`, `90s`, `30m`, `2h`, `1d`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 30m, 2h or 1d"))?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit is s, m, h or d")),
    };
    // Ten years is "everything"; past it, a number is a typo.
    const MAX_SECONDS: u64 = 10 * 365 * 86_400;
    n.checked_mul(seconds)
        .filter(|&secs| secs <= MAX_SECONDS)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is longer than ten years: give a shorter age, like 30d"))
}

/// `flue sandboxes`.
pub async fn sandboxes(args: SandboxesArgs, events: EventLog) -> Result<(), Failure> {
    match args.action {
        Action::Ls { only, labels, all, host } => {
            let host = host.host(Limits::default()).await?;
            let mut rows = Vec::new();
            for (name, listed) in listings(&host, &only, &labels, &events).await? {
                for sandbox in listed {
                    let owner = Owner::of(&sandbox.labels);
                    if all || owner != Owner::NotFlue {
                        rows.push((name.clone(), sandbox, owner));
                    }
                }
            }
            out!("{:<10} {:<40} {:<10} {:>8}  {:<12} {:<16} RUN", "CONNECTOR", "ID", "STATE", "AGE", "OWNER", "AGENT");
            // Ids, states and labels come from connectors and the sandboxes'
            // creators: shown escaped, so no value can forge a row or drive
            // the terminal.
            for (connector, sandbox, owner) in &rows {
                let label = |key: &str| {
                    escape(sandbox.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).unwrap_or("-"))
                };
                out!(
                    "{:<10} {:<40} {:<10} {:>8}  {:<12} {:<16} {}",
                    escape(connector),
                    escape(&sandbox.id),
                    escape(&sandbox.state),
                    age(sandbox).map(short_age).unwrap_or_else(|| "-".into()),
                    escape(&owner.describe()),
                    label(ownership::AGENT),
                    label(ownership::RUN)
                );
            }
            if rows.is_empty() {
                out!("(no sandboxes)");
            }
            Ok(())
        }
        Action::Rm { ids, connector, host } => {
            let host = host.host(Limits::default()).await?;
            let connector = host.connector(&connector, &events).await.map_err(usage)?;
            let mut failed = 0;
            for id in &ids {
                match connector.delete(id).await {
                    Ok(()) => out!("deleted {}", escape(id)),
                    Err(err) => {
                        failed += 1;
                        eprintln!("error: could not delete {}: {}", escape(id), escape_block(&err.to_string()));
                    }
                }
            }
            if failed > 0 {
                return Err(anyhow::anyhow!("{failed} of {} sandboxes could not be deleted", ids.len()).into());
            }
            Ok(())
        }
        Action::Gc { older_than, only, dry_run, project, host } => {
            let host = host.host(Limits::default()).await?;
            let wanted = [(ownership::CREATED_BY.to_string(), "flue".to_string())];
            let (mut deleted, mut failed) = (0, 0);
            // A run being resumed (its sandboxes still carry the dead
            // process's label) or about to be keeps its sandboxes; one
            // interrupted and left so loses them, and ends (below).
            let store_path = crate::serve::store::project_store(&project);
            let store = match store_path.exists() {
                true => Some(crate::serve::store::RunStore::attach(&store_path, usize::MAX, true)?),
                false => None,
            };
            let (going, interrupted) = store.as_ref().map(|s| s.unended_journaled_runs()).unwrap_or_default();
            let mut collected_runs = std::collections::BTreeSet::new();
            for (name, listed) in listings(&host, &only, &wanted, &events).await? {
                let connector = host.connector(&name, &events).await.map_err(usage)?;
                for sandbox in listed {
                    if Owner::of(&sandbox.labels) != Owner::Orphaned {
                        continue;
                    }
                    let run = sandbox.labels.iter().find(|(key, _)| key == ownership::RUN).map(|(_, run)| run.clone());
                    if let Some(run) = run.as_ref().filter(|run| going.contains(*run)) {
                        out!(
                            "kept {name} sandbox {}: its run {} is going on, or resumes",
                            escape(&sandbox.id),
                            escape(run)
                        );
                        continue;
                    }
                    if let (Some(min), Some(age)) = (older_than, age(&sandbox))
                        && age < min
                    {
                        continue;
                    }
                    if dry_run {
                        out!("would delete {name} sandbox {} (orphaned)", escape(&sandbox.id));
                        continue;
                    }
                    match connector.delete(&sandbox.id).await {
                        Ok(()) => {
                            deleted += 1;
                            out!("deleted {name} sandbox {} (orphaned)", escape(&sandbox.id));
                            collected_runs.extend(run.filter(|run| interrupted.contains(run)));
                        }
                        Err(err) => {
                            failed += 1;
                            eprintln!(
                                "error: could not delete {name} sandbox {}: {}",
                                escape(&sandbox.id),
                                escape_block(&err.to_string())
                            );
                        }
                    }
                }
            }
            if !dry_run {
                out!("{deleted} orphaned sandbox(es) deleted");
            }
            // An interrupted run whose sandboxes went cannot be resumed: it
            // ends (cancelled), so that nothing tries.
            if let Some(store) = &store {
                for run in collected_runs {
                    store.request_cancel(&run);
                    out!("run {} (interrupted) ended: its sandboxes were collected", escape(&run));
                }
            }
            failed += delete_idle_id_sandboxes(&host, &project, dry_run).await?;
            if failed > 0 {
                return Err(anyhow::anyhow!("{failed} sandboxes could not be deleted").into());
            }
            Ok(())
        }
    }
}

/// Delete the sandboxes kept per id in `project` that went unused past
/// their idle time; how many could not be.
async fn delete_idle_id_sandboxes(host: &Host, project: &std::path::Path, dry_run: bool) -> Result<usize, Failure> {
    let path = crate::serve::store::project_store(project);
    if !path.exists() {
        return Ok(0);
    }
    let store = crate::serve::store::RunStore::attach(&path, usize::MAX, true)?;
    let found_ms = crate::events::unix_millis();
    let mut failed = 0;
    for sandbox in store.idle_id_sandboxes(found_ms) {
        let what = format!(
            "{} sandbox {} of agent {} id {} (idle past its time)",
            escape(&sandbox.connector),
            escape(&sandbox.sandbox_id),
            escape(&sandbox.agent),
            escape(&sandbox.id)
        );
        if dry_run {
            out!("would delete {what}");
            continue;
        }
        match crate::serve::idle_sandboxes::delete(&store, host, sandbox, found_ms).await.deleted {
            Ok(()) => out!("deleted {what}"),
            Err(why) => {
                failed += 1;
                eprintln!("error: could not delete {what}: {}", escape_block(&why));
            }
        }
    }
    Ok(failed)
}

/// Each connector's sandboxes with `labels`: the named connectors, or local
/// and every installed one (those that cannot list are noted and skipped).
async fn listings(
    host: &Host,
    names: &[String],
    labels: &[(String, String)],
    events: &EventLog,
) -> Result<Vec<(String, Vec<SandboxSummary>)>, Failure> {
    let explicit = !names.is_empty();
    let names: Vec<String> = if explicit {
        names.to_vec()
    } else {
        host.registry().list().await.into_iter().filter(|l| l.info.is_ok()).map(|l| l.name).collect()
    };
    let mut all = Vec::new();
    for name in names {
        let listed = match host.connector(&name, events).await {
            Ok(connector) => list(connector, labels).await,
            Err(err) if explicit => return Err(usage(err)),
            Err(err) => Err(err.to_string()),
        };
        match listed {
            Ok(sandboxes) => all.push((name, sandboxes)),
            Err(why) if explicit => return Err(anyhow::anyhow!("cannot list sandboxes on {name}: {why}").into()),
            Err(why) => eprintln!("note: skipped {}: {}", escape(&name), escape_block(&why)),
        }
    }
    Ok(all)
}

async fn list(connector: Arc<dyn Connector>, labels: &[(String, String)]) -> Result<Vec<SandboxSummary>, String> {
    connector.list(labels).await.map_err(|err| err.to_string())
}

fn age(sandbox: &SandboxSummary) -> Option<Duration> {
    sandbox.created_ms.map(crate::events::age_of)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_labels_parse_or_say_why_not() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86_400));
        assert!(parse_duration("2w").unwrap_err().contains("s, m, h or d"));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("99999999999999999d").unwrap_err().contains("ten years"));
        assert_eq!(parse_label("flue.agent=hello").unwrap(), ("flue.agent".into(), "hello".into()));
        assert!(parse_label("nope").is_err());
        assert_eq!(short_age(Duration::from_secs(7200)), "2h");
    }
}
