//! The `flue` binary: parse the command line, set up logging, run.

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() {
    let cli = flue::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("FLUE_LOG").unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    if let Err(failure) = runtime.block_on(flue::cli::main(cli)) {
        eprintln!("error: {:#}", failure.error);
        std::process::exit(failure.code);
    }
}
