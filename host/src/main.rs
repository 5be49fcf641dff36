//! The `flue` binary: parse the command line, set up logging, run.

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() {
    // Inside a local sandbox, this binary is the sandbox's supervisor.
    flue::sandbox::local::run_supervisor_if_requested();
    let cli = flue::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("FLUE_LOG").unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none())
        .with_target(false)
        .without_time()
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let outcome = runtime.block_on(flue::cli::main(cli));
    // What still goes on in the background stops and cleans up after
    // itself (a sandbox being made ahead deletes its files), on a failure
    // too, but never holds the exit up for long.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    if let Err(failure) = outcome {
        // The message may quote guests (an agent's failure, a connector's
        // error): escaped, so it cannot steer the terminal or forge lines.
        eprintln!("error: {}", flue::terminal::escape_block(&format!("{:#}", failure.error)));
        std::process::exit(failure.code);
    }
}
