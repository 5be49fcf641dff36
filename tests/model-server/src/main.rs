//! `model-test-server`: serve a scripted conversation on 127.0.0.1 in both
//! provider formats. Prints its base URL first.

use clap::Parser;

/// A model provider for tests: answers `POST /v1/messages` (Anthropic) and
/// `POST /v1/chat/completions` (OpenAI-compatible) with the script's turns,
/// one per request, streaming when asked.
#[derive(Parser)]
struct Args {
    /// The script: JSON `{"turns": [...]}` (see the crate's docs).
    #[arg(long)]
    script: std::path::PathBuf,
    /// Port on 127.0.0.1 (0: any free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let script: model_test_server::Script = serde_json::from_slice(&std::fs::read(&args.script)?)?;
    let server = model_test_server::ModelServer::start_on(script, args.port).await?;
    println!("{}", server.url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
