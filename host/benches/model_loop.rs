//! Benchmark: the host's own cost in the model loop, next to the model
//! server's time, from one run.
//!
//!     cargo bench -p flue --bench model_loop --profile dev
//!
//! A bench agent runs `session.prompt` N times against the scripted model
//! test server (in this process, on loopback); each prompt is two model
//! turns (a `read` tool call, then an answer), streamed, in Anthropic's and
//! then OpenAI's format. The agent times each prompt; the server times each
//! of its answers (request in to last byte out); the run's events time each
//! tool call (whole milliseconds). What is left is the host's: per prompt,
//! prompt − 2 answers; per turn, (that − the tool call) / 2.
//! FLUE_BENCH_ITERS sets N (default 50).

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};
use model_test_server::{ModelServer, Script, ToolCall, Turn};
use serde_json::{Value, json};

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples.get(samples.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() -> anyhow::Result<()> {
    let iterations: usize = std::env::var("FLUE_BENCH_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf();
    let agent = flue::guest::rust::build(&repo.join("tests/fixtures/bench-agent"), &flue::events::EventLog::discard())?;
    let runtime = tokio::runtime::Runtime::new()?;
    let cache = tempfile::tempdir()?;
    let sandboxes = tempfile::tempdir()?;
    println!("session.prompt, {iterations} prompts of 2 turns (a read, then an answer), medians in ms");
    println!(
        "{:<10} {:>10} {:>14} {:>16} {:>14} {:>16}",
        "format", "prompt", "server/answer", "host/prompt", "tool call", "host/turn"
    );
    for format in ["anthropic", "openai"] {
        let mut turns = Vec::new();
        // One warm-up prompt, then the timed ones.
        for _ in 0..=iterations {
            turns.push(Turn {
                tool_calls: vec![ToolCall { name: "read".into(), input: json!({"path": "bench.txt"}) }],
                ..Default::default()
            });
            turns.push(Turn { text: Some("done".into()), ..Default::default() });
        }
        let server = runtime.block_on(ModelServer::start(Script { turns }))?;
        let (model, base_var, key_var, base) = match format {
            "anthropic" => ("anthropic/bench", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY", server.url()),
            _ => ("openai/bench", "OPENAI_BASE_URL", "OPENAI_API_KEY", format!("{}/v1", server.url())),
        };
        let payload = json!({"iterations": iterations, "ops": ["prompt"], "model": model}).to_string();
        let out = Command::new(env!("CARGO_BIN_EXE_flue"))
            .arg("run")
            .arg(&agent)
            .args(["--events", "json", "--isolation", "none", "--payload", &payload, "--cache-dir"])
            .arg(cache.path())
            .env("TMPDIR", sandboxes.path())
            .env(base_var, base)
            .env(key_var, "bench-key-0123456789")
            .output()
            .context("run flue")?;
        if !out.status.success() {
            bail!("flue run failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let result: Value = serde_json::from_slice(&out.stdout)?;
        let prompts: Vec<f64> =
            result["prompt"].as_array().context("samples")?.iter().filter_map(Value::as_f64).collect();
        let events: Vec<Value> =
            String::from_utf8_lossy(&out.stderr).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        // Skip the warm-up prompt's two answers and one tool call.
        let answers: Vec<f64> = server.busy().iter().skip(2).map(|d| d.as_secs_f64() * 1000.0).collect();
        let tools: Vec<f64> = events
            .iter()
            .filter(|e| e["type"] == "tool-call")
            .skip(1)
            .filter_map(|e| e["duration_ms"].as_f64())
            .collect();
        let (prompt, answer, tool) = (median(prompts), median(answers), median(tools));
        let host = prompt - 2.0 * answer;
        let per_turn = (host - tool) / 2.0;
        println!("{format:<10} {prompt:>10.2} {answer:>14.3} {host:>16.2} {tool:>14.0} {per_turn:>16.2}");
    }
    println!("(tool-call times come from events, in whole milliseconds: below 1 ms they read 0)");
    Ok(())
}
