//! Load benchmark of `flue serve` (loopback only, bounded in count):
//!
//!     cargo bench -p flue --bench serve_load
//!
//! (the bench profile: release). For the `hello` agent as a webhook: on the
//! local sandbox isolated with bubblewrap, with sandboxes made ready ahead
//! (`--ready-sandboxes 4`, the default) and without (`0`); unisolated; and
//! on the Daytona test server. Per phase: requests/s sequentially and at 50
//! concurrent, p50 and p99 latency, errors, the server's RSS; where a
//! sequential request's time goes (inside the run, as the server's own
//! metrics count it, and outside it: HTTP, admission, the run store), the
//! server's CPU per run (its own and its sandboxes' processes) and store
//! statements per run. Then 1,000 concurrent runs on each, with the peak
//! memory of the server and every process it started (its sandboxes).
//! FLUE_BENCH_REQUESTS sets the requests per phase (default 200).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;

const KEY: &str = "bench-key-0123456789";

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(project: &Path, tmp: &Path, args: &[&str], env: &[(&str, String)]) -> anyhow::Result<Server> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_flue"));
    command
        .arg("serve")
        .arg(project)
        .args(["--listen", "127.0.0.1:0", "--events", "none"])
        .args(args)
        .env("TMPDIR", tmp)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().context("stdout")?).read_line(&mut line)?;
    let url = line.split("listening on ").nth(1).context("no URL")?.trim().to_string();
    Ok(Server { child, url })
}

/// (RSS now, peak RSS) of `pid`, MiB.
fn rss(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

struct Phase {
    per_second: f64,
    p50: f64,
    p99: f64,
    errors: usize,
    /// What the first error was.
    first_error: Option<String>,
}

async fn phase(client: &reqwest::Client, url: &str, requests: usize, concurrency: usize) -> Phase {
    let started = Instant::now();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = Vec::new();
    for i in 0..requests {
        let (client, url, semaphore) = (client.clone(), url.to_string(), semaphore.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = semaphore.acquire().await.expect("open");
            let sent = Instant::now();
            let response = client.post(format!("{url}/agents/hello/{i}")).body("{}").send().await;
            let error = match response {
                Ok(r) if r.status().is_success() => r.bytes().await.err().map(|e| e.to_string()),
                Ok(r) => Some(format!("{}: {}", r.status(), r.text().await.unwrap_or_default())),
                Err(e) => Some(format!("{e:?}")),
            };
            (sent.elapsed(), error)
        }));
    }
    let mut latencies = Vec::new();
    let (mut errors, mut first_error) = (0, None);
    for task in tasks {
        let (latency, error) = task.await.expect("task");
        latencies.push(latency.as_secs_f64() * 1000.0);
        errors += usize::from(error.is_some());
        first_error = first_error.or(error);
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    Phase {
        per_second: requests as f64 / started.elapsed().as_secs_f64(),
        p50: at(0.5),
        p99: at(0.99),
        errors,
        first_error,
    }
}

/// The server's counters: (run seconds summed, runs, store statements).
async fn metrics(client: &reqwest::Client, url: &str) -> (f64, f64, f64) {
    let text = match client.get(format!("{url}/metrics")).send().await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let value = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (
        value("flue_run_duration_seconds_sum"),
        value("flue_run_duration_seconds_count"),
        value("flue_store_statements_total"),
    )
}

/// CPU seconds of `pid`, with the children it reaped (its sandboxes).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name's closing parenthesis: fields 3 onwards.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime, stime, cutime, cstime (fields 14-17), in clock ticks.
    // SAFETY: sysconf reads a constant of the system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(14) + ticks(15) + ticks(16) + ticks(17)) / per_second
}

/// RSS of `pid` and every process under it, MiB.
fn tree_rss(pid: u32) -> f64 {
    let mut parents = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parents.insert(child, ppid);
        }
    }
    let under = |mut p: u32| {
        while let Some(&parent) = parents.get(&p) {
            if p == pid {
                return true;
            }
            p = parent;
        }
        p == pid
    };
    parents.keys().filter(|&&p| under(p)).map(|&p| rss(p).0).sum()
}

/// Run `work` while sampling the peak of [`tree_rss`] of `pid`.
fn with_peak_tree_rss<T>(pid: u32, work: impl FnOnce() -> T) -> (T, f64) {
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0f64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(tree_rss(pid));
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            peak
        })
    };
    let out = work();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    (out, sampler.join().unwrap_or(0.0))
}

fn bwrap_works() -> bool {
    Command::new("bwrap")
        .args(["--unshare-all", "--ro-bind", "/", "/", "--", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn main() -> anyhow::Result<()> {
    let requests: usize = std::env::var("FLUE_BENCH_REQUESTS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf();
    let quiet = flue::events::EventLog::discard();
    let hello = flue::guest::rust::build(&repo.join("guest-examples/rust/hello"), &quiet)?;
    let connector = flue::guest::rust::build(&repo.join("connectors/daytona"), &quiet)?;
    let project = tempfile::tempdir()?;
    std::fs::create_dir(project.path().join("agents"))?;
    std::fs::copy(&hello, project.path().join("agents/hello.wasm"))?;
    std::fs::write(project.path().join("flue.toml"), "[agents.hello]\nwebhook = true\n")?;
    let connectors = tempfile::tempdir()?;
    std::fs::copy(&connector, connectors.path().join("daytona.wasm"))?;
    let runtime = tokio::runtime::Runtime::new()?;
    let daytona = runtime.block_on(daytona_test_server::DaytonaServer::start(daytona_test_server::ServerConfig {
        api_key: KEY.into(),
        record_requests: false,
        ..Default::default()
    }))?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
    let profile = if cfg!(debug_assertions) { "dev" } else { "release" };
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!(
        "flue serve, hello as a webhook, {requests} requests per phase (loopback; {profile} build, {cores} cores)"
    );
    println!(
        "{:<28} {:<14} {:>8} {:>9} {:>9} {:>7} {:>9}",
        "sandbox", "phase", "req/s", "p50 ms", "p99 ms", "errors", "RSS MiB"
    );
    let connectors_dir = connectors.path().to_string_lossy().into_owned();
    let isolated = bwrap_works();
    if !isolated {
        println!("(bubblewrap does not work here: the isolated rows are left out)");
    }
    let mut setups: Vec<(&str, Vec<&str>)> = Vec::new();
    if isolated {
        setups.push((
            "local, isolated, 4 ready",
            vec!["--sandbox", "local", "--isolation", "bwrap", "--ready-sandboxes", "4"],
        ));
        setups.push((
            "local, isolated, 0 ready",
            vec!["--sandbox", "local", "--isolation", "bwrap", "--ready-sandboxes", "0"],
        ));
    }
    setups.push(("local, unisolated", vec!["--sandbox", "local", "--isolation", "none"]));
    setups.push(("Daytona test server", vec!["--sandbox", "daytona", "--connectors", &connectors_dir]));
    let mut splits = Vec::new();
    for (label, setup) in &setups {
        let tmp = tempfile::tempdir()?;
        let mut args = vec!["--max-concurrent", "64", "--queue", "2000"];
        args.extend(setup.iter().copied());
        let env = [("DAYTONA_API_URL", daytona.api_url()), ("DAYTONA_API_KEY", KEY.to_string())];
        let server = start(project.path(), tmp.path(), &args, &env)?;
        let pid = server.child.id();
        runtime.block_on(phase(&client, &server.url, 5, 1)); // warm the compiled-component cache
        std::thread::sleep(std::time::Duration::from_millis(300)); // ready sandboxes made again
        for (name, concurrency) in [("sequential", 1), ("50 concurrent", 50)] {
            let (before, cpu_before) = (runtime.block_on(metrics(&client, &server.url)), cpu_seconds(pid));
            let p = runtime.block_on(phase(&client, &server.url, requests, concurrency));
            let (after, cpu_after) = (runtime.block_on(metrics(&client, &server.url)), cpu_seconds(pid));
            println!(
                "{label:<28} {name:<14} {:>8.1} {:>9.1} {:>9.1} {:>7} {:>9.0}",
                p.per_second,
                p.p50,
                p.p99,
                p.errors,
                rss(pid).0
            );
            if concurrency == 1 {
                let runs = (after.1 - before.1).max(1.0);
                let in_run = 1000.0 * (after.0 - before.0) / runs;
                let request = 1000.0 / p.per_second;
                let cpu = 1000.0 * (cpu_after - cpu_before) / runs;
                splits.push(format!(
                    "{label:<28} {request:>7.1} ms a request: {in_run:.1} in the run, {:.1} outside it; CPU {cpu:.1} ms \
                     a run (server and sandboxes); {:.1} store statements a run",
                    request - in_run,
                    (after.2 - before.2) / runs
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        let (p, peak) = with_peak_tree_rss(pid, || runtime.block_on(phase(&client, &server.url, 1000, 1000)));
        println!(
            "{label:<28} {:<14} {:>8.1} {:>9.1} {:>9.1} {:>7} {:>9.0}",
            "1000 at once",
            p.per_second,
            p.p50,
            p.p99,
            p.errors,
            rss(pid).0
        );
        splits.push(format!(
            "{label:<28} 1,000 at once: peak memory of the server and all its processes {peak:.0} MiB, {} errors{}",
            p.errors,
            p.first_error
                .map(|e| format!(" (the first: {})", e.chars().take(200).collect::<String>()))
                .unwrap_or_default()
        ));
    }
    println!();
    for line in splits {
        println!("{line}");
    }
    Ok(())
}
