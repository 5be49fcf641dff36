//! `flue connectors` (what is installed) and `flue add` (install one).

use anyhow::Context as _;
use clap::Args;

use super::host_args::HostArgs;
use super::{Failure, out, usage};
use crate::events::EventLog;
use crate::guest::embedded_connectors::CONNECTORS as EMBEDDED;
use crate::runtime::Limits;
use crate::sandbox::ConnectorInfo;
use crate::terminal::escape;

/// `flue add` arguments.
#[derive(Args, Debug)]
pub struct AddArgs {
    /// Connector to install, e.g. `daytona`. Without it, lists what can be added.
    pub name: Option<String>,

    /// Print how to wire the connector up (its settings) instead of installing it.
    #[arg(long)]
    pub print: bool,

    /// The project to install into: its `connectors/` (created when
    /// missing) [default: the current directory; --connectors wins].
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub project: std::path::PathBuf,

    /// Host flags.
    #[command(flatten)]
    pub host: HostArgs,
}

/// `flue connectors`: every connector with its settings, or why it cannot load.
pub async fn list(args: HostArgs, _events: EventLog) -> Result<(), Failure> {
    let host = args.host(Limits::default()).await?;
    out!("connectors (from {}):", host.registry().dir().display());
    for listing in host.registry().list().await {
        let source = listing.file.as_ref().map(|f| f.display().to_string()).unwrap_or_else(|| "built in".into());
        match listing.info {
            Ok(info) => {
                // Everything but the file name comes from the connector: escaped.
                let info = escaped_info(&info);
                out!("  {:<12} {} {} — {}", escape(&listing.name), info.name, info.version, info.description);
                out!("  {:<12} source: {source}", "");
                for key in &info.config {
                    let flags = [(key.required, "required"), (key.secret, "secret")]
                        .iter()
                        .filter(|(on, _)| *on)
                        .map(|(_, f)| *f)
                        .collect::<Vec<_>>()
                        .join(", ");
                    out!(
                        "  {:<12} {} ({}) {}",
                        "",
                        key.name,
                        if flags.is_empty() { "optional" } else { &flags },
                        key.description
                    );
                }
                if !info.allowed_hosts.is_empty() {
                    out!("  {:<12} may call: {}", "", info.allowed_hosts.join(", "));
                }
            }
            Err(err) => out!("  {:<12} error: {}", escape(&listing.name), escape(&err.to_string())),
        }
    }
    Ok(())
}

/// `flue add`: build a connector from this project's source and install it.
pub async fn add(mut args: AddArgs, events: EventLog) -> Result<(), Failure> {
    // Inside a flue checkout, its sources (so that edits show); else those
    // built into this binary.
    let checkout = crate::guest::build::checkout_root().map(|root| root.join("connectors"));
    let in_checkout =
        |name: &str| checkout.as_ref().map(|dir| dir.join(name)).filter(|dir| dir.join("Cargo.toml").is_file());
    let mut available: Vec<String> = checkout
        .as_ref()
        .and_then(|dir| std::fs::read_dir(dir).ok())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .chain(EMBEDDED.iter().map(|c| c.name.to_string()))
        .collect();
    available.sort();
    available.dedup();
    let Some(name) = args.name.clone() else {
        out!("connectors that can be added:");
        for name in &available {
            out!("  {name:<12} flue add {name}    (or `flue add {name} --print` for its settings)");
        }
        return Ok(());
    };
    let source = match (in_checkout(&name), crate::guest::embedded_connectors::find(&name)) {
        (Some(dir), _) => dir,
        (None, Some(embedded)) => embedded.write_source().map_err(|err| anyhow::anyhow!(err))?,
        (None, None) => {
            return Err(usage(anyhow::anyhow!(
                "no connector named {name:?} ships with flue; available: {}",
                available.join(", ")
            )));
        }
    };
    // Always through cargo: it sees every change, path dependencies included.
    let built = crate::guest::rust::build_with(&source, true, &events).map_err(anyhow::Error::from)?;
    // Into the project's connectors/, wherever flue is started from.
    args.host.project = Some(args.project.clone());
    let host = args.host.host(Limits::default()).await?;
    let info = escaped_info(&host.registry().inspect(&built, &name).await?);
    if !args.print {
        let dir = host.registry().dir();
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let target = dir.join(format!("{name}.wasm"));
        std::fs::copy(&built, &target).with_context(|| format!("cannot write {}", target.display()))?;
        out!("installed {}", target.display());
    }
    out!("{}", wiring_instructions(&name, &info).trim_end());
    Ok(())
}

/// A connector's self-description with every string escaped for a terminal.
fn escaped_info(info: &ConnectorInfo) -> ConnectorInfo {
    let mut info = info.clone();
    for text in [&mut info.name, &mut info.version, &mut info.description] {
        *text = escape(text);
    }
    for key in &mut info.config {
        key.name = escape(&key.name);
        key.description = escape(&key.description);
        key.default_value = key.default_value.as_deref().map(escape);
    }
    info.allowed_hosts = info.allowed_hosts.iter().map(|h| escape(h)).collect();
    info
}

/// How to configure and use a connector, from what it declares.
fn wiring_instructions(name: &str, info: &ConnectorInfo) -> String {
    let mut out = format!("# {} {}: {}\n", info.name, info.version, info.description);
    out.push_str("# Settings (environment variables, or lines of an --env file):\n");
    for key in &info.config {
        let what = match (key.required, key.secret) {
            (true, true) => "required, secret",
            (true, false) => "required",
            (false, true) => "optional, secret",
            (false, false) => "optional",
        };
        let value = key.default_value.clone().unwrap_or_default();
        out.push_str(&format!("{}={value}    # {what}: {}\n", key.name, key.description));
    }
    if !info.allowed_hosts.is_empty() {
        out.push_str(&format!("# It may call: {}\n", info.allowed_hosts.join(", ")));
    }
    out.push_str(&format!(
        "# Install it with `flue add {name}`, then run an agent on it:\n#   flue run hello --sandbox {name} --env .env.{name}\n"
    ));
    out
}
