//! `flue conformance`: the sandbox contract suite against one connector, as
//! a pass/fail table.

use anyhow::Context as _;
use clap::Args;

use super::host_args::HostArgs;
use super::{Failure, out, usage};
use crate::events::EventLog;
use crate::runtime::Limits;
use crate::sandbox::CreateOptions;
use crate::sandbox::conformance::{self, CheckResult};

/// `flue conformance` arguments.
#[derive(Args, Debug)]
pub struct ConformanceArgs {
    /// Connector to check: `local`, a name from the connectors directory, or a path to a .wasm.
    pub connector: String,

    /// Keep the sandbox the suite creates.
    #[arg(long)]
    pub keep: bool,

    /// Host flags.
    #[command(flatten)]
    pub host: HostArgs,
}

/// Create a sandbox, run every check, print the table, delete the sandbox.
pub async fn conformance(args: ConformanceArgs, events: EventLog) -> Result<(), Failure> {
    let host = args.host.host(Limits::default()).await?;
    let path = std::path::Path::new(&args.connector);
    let connector = if args.connector.ends_with(".wasm") && path.is_file() {
        host.registry().connector_from_file(path, &events).await
    } else {
        host.connector(&args.connector, &events).await
    }
    .map_err(usage)?;
    let sandbox = connector.create(&CreateOptions::default()).await.context("could not create a sandbox")?;
    let mut results = conformance::run(sandbox.clone(), connector.info().merges_output, EventLog::discard()).await;
    results.extend(conformance::run_volumes(connector.as_ref(), sandbox.workdir()).await);
    if args.keep {
        eprintln!("kept sandbox {}", crate::terminal::escape(sandbox.id()));
    } else if let Err(err) = connector.delete(sandbox.id()).await {
        eprintln!(
            "warning: could not delete sandbox {}: {}",
            crate::terminal::escape(sandbox.id()),
            crate::terminal::escape_block(&err.to_string())
        );
    }
    out!("{}", render_table(&args.connector, &results).trim_end());
    if results.iter().any(|r| r.outcome.is_err()) {
        return Err(anyhow::anyhow!("{} does not conform to the sandbox contract", args.connector).into());
    }
    Ok(())
}

/// The pass/fail table `flue conformance` prints.
pub fn render_table(connector: &str, results: &[CheckResult]) -> String {
    let width = results.iter().map(|r| r.name.chars().count()).max().unwrap_or(0);
    let mut out = format!("conformance of {connector}\n");
    for result in results {
        let pad = " ".repeat(width - result.name.chars().count());
        match &result.outcome {
            Ok(()) if result.skipped.is_some() => out.push_str(&format!(
                "  SKIP  {}{pad}  {}\n",
                result.name,
                crate::terminal::escape(result.skipped.as_deref().unwrap_or_default())
            )),
            Ok(()) => out.push_str(&format!("  PASS  {}{pad}  {:>6} ms\n", result.name, result.duration.as_millis())),
            Err(why) => out.push_str(&format!("  FAIL  {}{pad}  {}\n", result.name, crate::terminal::escape(why))),
        }
    }
    let skipped = results.iter().filter(|r| r.skipped.is_some()).count();
    let passed = results.iter().filter(|r| r.outcome.is_ok()).count() - skipped;
    let failed = results.len() - passed - skipped;
    out.push_str(&format!("{passed} passed, {failed} failed"));
    if skipped > 0 {
        out.push_str(&format!(", {skipped} skipped (unsupported)"));
    }
    out.push('\n');
    out
}
