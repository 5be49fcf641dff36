//! Benchmark: what a run's journal costs. The bench agent runs
//! `exec("true")` in a loop, timing each call with its own clock, with the
//! journal off (`--no-journal`) and on (the default: every host call,
//! the agent's two clock reads per call included, appended to the project's
//! SQLite store), alternating over rounds so that drift on a shared machine
//! hits both alike.
//!
//!     cargo bench -p flue --bench journal
//!
//! Prints the median per call for each, their ratio (goal: ≤ 1.05), and the
//! journal's bytes per loop iteration (one `exec` and two clock reads) from
//! the run's own count. FLUE_BENCH_ITERS sets the iterations per round
//! (default 200).

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

const ROUNDS: usize = 5;

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// `(entries, bytes)` from the run's `journal: …` log line.
fn journal_size(stderr: &str) -> Option<(f64, f64)> {
    stderr.lines().filter_map(|line| serde_json::from_str::<Value>(line).ok()).find_map(|event| {
        let message = event["message"].as_str()?;
        let rest = message.strip_prefix("journal: ")?;
        let entries: f64 = rest.split(' ').next()?.parse().ok()?;
        let bytes: f64 = rest.rsplit('(').next()?.trim_end_matches(" B)").parse().ok()?;
        Some((entries, bytes))
    })
}

fn main() -> anyhow::Result<()> {
    let iterations: usize = std::env::var("FLUE_BENCH_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf();
    let agent = flue::guest::rust::build(&repo.join("tests/fixtures/bench-agent"), &flue::events::EventLog::discard())?;
    let (cache, sandboxes, project) = (tempfile::tempdir()?, tempfile::tempdir()?, tempfile::tempdir()?);
    let run = |journal: bool, iterations: usize| -> anyhow::Result<(Value, String)> {
        let payload = json!({ "iterations": iterations, "ops": ["exec"] }).to_string();
        let mut command = Command::new(env!("CARGO_BIN_EXE_flue"));
        command
            .current_dir(project.path())
            .arg("run")
            .arg(&agent)
            .args(["--events", "json", "--payload", &payload])
            .arg("--cache-dir")
            .arg(cache.path())
            .env("TMPDIR", sandboxes.path());
        if !journal {
            command.arg("--no-journal");
        }
        let out = command.output().context("run flue")?;
        if !out.status.success() {
            bail!("flue run failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok((serde_json::from_slice(&out.stdout)?, String::from_utf8_lossy(&out.stderr).into_owned()))
    };
    let mut samples: [Vec<f64>; 2] = Default::default();
    let mut per_iteration = Vec::new();
    let (_, empty) = run(true, 0)?;
    let (base_entries, base_bytes) = journal_size(&empty).context("no journal size in the run's events")?;
    for _ in 0..ROUNDS {
        for (i, journal) in [false, true].into_iter().enumerate() {
            let (result, stderr) = run(journal, iterations)?;
            samples[i].extend(result["exec"].as_array().context("samples")?.iter().filter_map(Value::as_f64));
            if journal {
                let (entries, bytes) = journal_size(&stderr).context("no journal size in the run's events")?;
                per_iteration
                    .push(((entries - base_entries) / iterations as f64, (bytes - base_bytes) / iterations as f64));
            }
        }
    }
    let (off, on) = (median(&mut samples[0]), median(&mut samples[1]));
    let (entries, bytes) = per_iteration[0];
    println!(
        "journal cost: exec(\"true\") as the agent times it, medians of {ROUNDS} alternating rounds x {iterations}"
    );
    println!("{:<14} {:>12}", "journal off", format!("{off:.3} ms"));
    println!("{:<14} {:>12} {:>8.3}x", "journal on", format!("{on:.3} ms"), on / off);
    println!("journal per iteration (one exec, two clock reads): {entries:.1} entries, {bytes:.0} bytes");
    Ok(())
}
