//! `daytona-test-server`: try the Daytona path without an account.
//!
//! Prints its base URL (`DAYTONA_API_URL`) on the first line of stdout, then
//! serves until SIGINT or SIGTERM, and leaves nothing behind.

use clap::Parser;
use daytona_test_server::{DaytonaServer, Faults, ServerConfig};

/// A Daytona-compatible server on 127.0.0.1 that really runs commands.
///
///   daytona-test-server --port 0 --api-key test-key
///   DAYTONA_API_URL=<printed URL> DAYTONA_API_KEY=test-key flue run hello --sandbox daytona
#[derive(Parser)]
#[command(version, verbatim_doc_comment)]
struct Args {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// The API key clients must send as `Authorization: Bearer KEY`.
    #[arg(long, default_value = "test-key", env = "DAYTONA_TEST_API_KEY")]
    api_key: String,
    /// Run commands without bubblewrap even when it is available.
    #[arg(long)]
    no_isolation: bool,
    /// Delay before every response, in ms.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Fraction of requests answered 503, 0..1.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Fraction of requests answered 429, 0..1.
    #[arg(long, default_value_t = 0.0)]
    rate_limit_rate: f64,
    /// Fraction of requests whose connection is dropped mid-response, 0..1.
    #[arg(long, default_value_t = 0.0)]
    drop_rate: f64,
    /// A sandbox dies (state `error`) on its Nth toolbox call.
    #[arg(long)]
    die_after_calls: Option<u64>,
    /// Polls of GET /sandbox/{id} before a new sandbox is `started`.
    #[arg(long, default_value_t = 1)]
    start_polls: u32,
    /// New sandboxes fail to build, with this error reason.
    #[arg(long)]
    fail_start: Option<String>,
    /// Reject every request with 401.
    #[arg(long)]
    fail_auth: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Caught from the start: a signal while starting up still cleans up.
    let mut signals = flue::run::signals::StopSignals::new();
    let faults = Faults::default();
    faults.set_latency_ms(args.latency_ms);
    faults.set_rates(args.error_rate, args.rate_limit_rate, args.drop_rate);
    faults.set_die_after_calls(args.die_after_calls);
    faults.set_start_polls(args.start_polls);
    faults.set_fail_start(args.fail_start);
    faults.set_fail_auth(args.fail_auth);
    let config = ServerConfig {
        port: args.port,
        api_key: args.api_key,
        isolated: !args.no_isolation,
        sandboxes_dir: None,
        faults,
        // Nobody reads the record of a standalone server: it would only grow.
        record_requests: false,
    };
    let server = DaytonaServer::start(config).await?;
    println!("{}", server.api_url());
    eprintln!(
        "daytona-test-server: serving {} (toolbox at {}); Ctrl-C to stop",
        server.api_url(),
        server.toolbox_url()
    );
    // Stopped by Ctrl-C or SIGTERM alike: delete the sandboxes and the
    // temporary directory before exiting.
    let stop = signals.next().await;
    let dir = server.dir().to_path_buf();
    server.shutdown().await;
    eprintln!("daytona-test-server: {}; removed {}", stop.reason, dir.display());
    Ok(())
}
