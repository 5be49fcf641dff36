//! Benchmark: a command on the local sandbox as an agent sees it, under
//! bubblewrap with the sandbox's supervisor (one process per sandbox starts
//! each command), under bubblewrap with a new sandbox per command, and
//! without isolation.
//!
//!     cargo bench -p flue --bench local_exec --profile dev
//!
//! Prints, from one run, the median of `exec("true")` and of one command
//! running ten programs, for each mode, and the ratios to unisolated. The
//! modes alternate over rounds, each a fresh `flue run` of the bench agent,
//! so drift on a shared machine hits them alike. FLUE_BENCH_ITERS sets the
//! iterations per round (default 100).

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

const ROUNDS: usize = 3;
const MODES: [(&str, &[&str]); 3] = [
    ("bwrap + supervisor", &["--isolation", "bwrap", "--exec-mode", "supervisor"]),
    ("bwrap per command", &["--isolation", "bwrap", "--exec-mode", "per-command"]),
    ("no isolation", &["--isolation", "none"]),
];

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let iterations: usize = std::env::var("FLUE_BENCH_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf();
    let agent = flue::guest::rust::build(&repo.join("tests/fixtures/bench-agent"), &flue::events::EventLog::discard())?;
    let cache = tempfile::tempdir()?;
    let sandboxes = tempfile::tempdir()?;
    let run = |args: &[&str]| -> anyhow::Result<Value> {
        let payload = json!({ "iterations": iterations, "ops": ["exec", "script"] }).to_string();
        let out = Command::new(env!("CARGO_BIN_EXE_flue"))
            .arg("run")
            .arg(&agent)
            .args(["--events", "none", "--payload", &payload])
            .args(args)
            .arg("--cache-dir")
            .arg(cache.path())
            .env("TMPDIR", sandboxes.path())
            .output()
            .context("run flue")?;
        if !out.status.success() {
            bail!("flue run {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    if run(MODES[0].1).is_err() {
        println!("bubblewrap does not work here: only unisolated exec could be measured");
        return Ok(());
    }
    let mut samples: Vec<[Vec<f64>; 2]> = vec![Default::default(); MODES.len()];
    for _ in 0..ROUNDS {
        for (i, (_, args)) in MODES.iter().enumerate() {
            let result = run(args)?;
            for (j, op) in ["exec", "script"].iter().enumerate() {
                let values = result[op].as_array().context("samples")?;
                samples[i][j].extend(values.iter().filter_map(Value::as_f64));
            }
        }
    }
    let medians: Vec<[f64; 2]> = samples.iter_mut().map(|[a, b]| [median(a), median(b)]).collect();
    let none = medians[MODES.len() - 1];
    println!("local sandbox: exec as an agent sees it, medians of {ROUNDS} alternating rounds x {iterations}");
    println!("{:<22} {:>14} {:>10} {:>18} {:>10}", "mode", "exec(\"true\")", "vs none", "10-program script", "vs none");
    for ((name, _), [exec, script]) in MODES.iter().zip(&medians) {
        println!(
            "{name:<22} {:>11.2} ms {:>9.2}x {:>15.2} ms {:>9.2}x",
            exec,
            exec / none[0],
            script,
            script / none[1]
        );
    }
    Ok(())
}
