//! `flue volumes ls|create|rm`: storage that outlives sandboxes, on one
//! connector (local volumes are directories under flue's data directory).

use clap::{Args, Subcommand};

use super::host_args::HostArgs;
use super::{Failure, out, usage};
use crate::events::EventLog;
use crate::runtime::Limits;
use crate::terminal::escape;

/// `flue volumes` arguments.
#[derive(Args, Debug)]
pub struct VolumesArgs {
    #[command(subcommand)]
    pub action: Action,
}

/// What to do.
#[derive(Subcommand, Debug)]
pub enum Action {
    /// List volumes with their state.
    Ls(Target),
    /// Create a volume (and wait until it can be mounted).
    Create {
        /// Its name.
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Delete a volume and everything in it.
    Rm {
        /// Its name.
        name: String,
        #[command(flatten)]
        target: Target,
    },
}

/// Which connector.
#[derive(Args, Debug)]
pub struct Target {
    /// The connector whose volumes these are.
    #[arg(long = "sandbox", value_name = "NAME", default_value = "local")]
    pub connector: String,
    #[command(flatten)]
    pub host: HostArgs,
}

/// `flue volumes`.
pub async fn volumes(args: VolumesArgs, events: EventLog) -> Result<(), Failure> {
    let target = match &args.action {
        Action::Ls(target) | Action::Create { target, .. } | Action::Rm { target, .. } => target,
    };
    let host = target.host.host(Limits::default()).await?;
    let connector = host.connector(&target.connector, &events).await.map_err(usage)?;
    let name = &target.connector;
    match &args.action {
        Action::Ls(_) => {
            let volumes = connector.list_volumes().await.map_err(|err| anyhow::anyhow!("{name}: {err}"))?;
            out!("{:<32} {:<10}", "NAME", "STATE");
            for volume in &volumes {
                // Names and states come from the connector: escaped.
                out!("{:<32} {:<10}", escape(&volume.name), escape(&volume.state));
            }
            if volumes.is_empty() {
                out!("(no volumes)");
            }
        }
        Action::Create { name: volume, .. } => {
            let created = connector.create_volume(volume).await.map_err(|err| anyhow::anyhow!("{name}: {err}"))?;
            out!("created volume {} on {name} ({})", escape(&created.name), escape(&created.state));
        }
        Action::Rm { name: volume, .. } => {
            connector.delete_volume(volume).await.map_err(|err| anyhow::anyhow!("{name}: {err}"))?;
            out!("deleted volume {volume} on {name}");
        }
    }
    Ok(())
}
