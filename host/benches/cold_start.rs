//! Benchmark: first and second start of `flue run hello` per language, on the
//! local sandbox, with an empty compiled-component cache before the first.
//!
//!     cargo bench -p flue --bench cold_start
//!
//! The first run compiles the component (seconds for Python and JavaScript);
//! the second loads it from the cache. Both are wall time of the whole
//! `flue` process, measured side by side in one run. FLUE_BENCH_ITERS sets
//! how many second runs are timed (median; default 5).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn flue_run(wasm: &Path, cache: &Path) -> Duration {
    let started = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_flue"))
        .arg("run")
        .arg(wasm)
        .args(["--events", "none", "--cache-dir"])
        .arg(cache)
        .stdout(Stdio::null())
        .status()
        .expect("run flue");
    assert!(status.success(), "flue run {} failed", wasm.display());
    started.elapsed()
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn main() -> anyhow::Result<()> {
    let iterations: usize = std::env::var("FLUE_BENCH_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf();
    println!(
        "flue run hello: first start (compiles) vs second start (cached), {iterations} timed second starts, medians"
    );
    println!("{:<12} {:>10} {:>12} {:>12} {:>10}", "language", "size", "first run", "second run", "saved");
    for language in ["rust", "python", "js"] {
        let dir = repo.join("guest-examples").join(language).join("hello");
        let wasm = match flue::guest::build(&dir, &flue::events::EventLog::discard()) {
            Ok(wasm) => wasm,
            Err(err) => {
                println!("{language:<12} skipped: {err}");
                continue;
            }
        };
        let cache = tempfile::tempdir()?;
        let first = flue_run(&wasm, cache.path());
        let mut seconds: Vec<Duration> = (0..iterations).map(|_| flue_run(&wasm, cache.path())).collect();
        seconds.sort();
        let second = seconds[seconds.len() / 2];
        let size = std::fs::metadata(&wasm)?.len() as f64 / (1024.0 * 1024.0);
        println!(
            "{language:<12} {:>8.1} MiB {:>12} {:>12} {:>10}",
            size,
            secs(first),
            secs(second),
            secs(first.saturating_sub(second))
        );
    }
    Ok(())
}
