//! Load benchmark of `flue serve` (loopback only, bounded in count):
//!
//!     cargo bench -p flue --bench serve_load --profile dev
//!
//! For the `hello` agent as a webhook, on the local sandbox and on the
//! Daytona test server: requests/s sequentially and at 50 concurrent, p50 and
//! p99 latency, errors, and the server's RSS before and after; then 1,000
//! concurrent runs on the Daytona test server, with errors and peak RSS.
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
            let ok = match response {
                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                Err(_) => false,
            };
            (sent.elapsed(), ok)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (latency, ok) = task.await.expect("task");
        latencies.push(latency.as_secs_f64() * 1000.0);
        errors += usize::from(!ok);
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    Phase { per_second: requests as f64 / started.elapsed().as_secs_f64(), p50: at(0.5), p99: at(0.99), errors }
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
    println!("flue serve, hello as a webhook, {requests} requests per phase (loopback)");
    println!(
        "{:<20} {:<14} {:>8} {:>9} {:>9} {:>7} {:>16}",
        "sandbox, allocator", "phase", "req/s", "p50 ms", "p99 ms", "errors", "RSS MiB (now)"
    );
    // The local sandbox with each instance allocator, then Daytona (pooling).
    for (sandbox, allocator) in [("local", "on-demand"), ("local", "pooling"), ("daytona", "pooling")] {
        let tmp = tempfile::tempdir()?;
        let mut args =
            vec!["--sandbox", sandbox, "--max-concurrent", "64", "--queue", "2000", "--allocator", allocator];
        let connectors_dir = connectors.path().to_string_lossy().into_owned();
        if sandbox == "daytona" {
            args.extend(["--connectors", &connectors_dir]);
        }
        let env = [("DAYTONA_API_URL", daytona.api_url()), ("DAYTONA_API_KEY", KEY.to_string())];
        let server = start(project.path(), tmp.path(), &args, &env)?;
        let pid = server.child.id();
        runtime.block_on(phase(&client, &server.url, 5, 1)); // warm the compiled-component cache
        let before = rss(pid).0;
        let label = format!("{sandbox}, {allocator}");
        println!("{label:<20} {:<14} {:>8} {:>9} {:>9} {:>7} {:>16.0}", "(start)", "", "", "", "", before);
        for (name, concurrency) in [("sequential", 1), ("50 concurrent", 50)] {
            let p = runtime.block_on(phase(&client, &server.url, requests, concurrency));
            println!(
                "{label:<20} {name:<14} {:>8.1} {:>9.1} {:>9.1} {:>7} {:>16.0}",
                p.per_second,
                p.p50,
                p.p99,
                p.errors,
                rss(pid).0
            );
        }
        if sandbox == "daytona" {
            let p = runtime.block_on(phase(&client, &server.url, 1000, 1000));
            let (now, peak) = rss(pid);
            println!(
                "{label:<20} {:<14} {:>8.1} {:>9.1} {:>9.1} {:>7} {:>16.0}",
                "1000 at once", p.per_second, p.p50, p.p99, p.errors, now
            );
            println!(
                "1,000 concurrent runs on the Daytona test server: {} errors, server peak RSS {peak:.0} MiB",
                p.errors
            );
        }
    }
    Ok(())
}
