//! Benchmark: the official Daytona TypeScript SDK (`@daytonaio/sdk`, npm)
//! against a flue agent, both driving the same Daytona test server (this
//! benchmark's binary, run a second time as the server), with a native Rust client (reqwest, the same HTTP requests the
//! connector makes) as the floor.
//!
//!     cargo bench -p flue --bench daytona     # add --profile dev to reuse the test build
//!
//! Prints, side by side from one run, the medians of create, `exec("true")`,
//! a 1 MiB write + read and a 64 MiB write + read; the peak RSS of the SDK's
//! node process and of the `flue` process during the 64 MiB round trips; the
//! 64 MiB throughput as a share of the native client's, in parts and in
//! whole-file calls (the SDK's `uploadFile`/`downloadFile` are whole-file);
//! and warm `flue run hello` by name. The SDK is installed by this benchmark (npm, pinned) into
//! cargo's target directory. FLUE_BENCH_ITERS sets the iterations of the
//! small operations (default 20; the 64 MiB round trip runs a quarter as
//! many, at least 3).

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use daytona_test_server::{DaytonaServer, ServerConfig};
use flue::events::EventLog;
use serde_json::{Value, json};

const KEY: &str = "bench-key";
const SDK: &str = "@daytonaio/sdk@0.218.0";
const MIB: usize = 1024 * 1024;
const OPS: [(&str, &str); 4] =
    [("create", "create"), ("exec", "exec(\"true\")"), ("io1", "write+read 1 MiB"), ("io64", "write+read 64 MiB")];

/// One benchmark process's timings per op (milliseconds) and its peak
/// resident memory.
struct Measured {
    samples: HashMap<String, Vec<f64>>,
    peak_rss_mib: f64,
}

/// Run `command` to completion; its stdout must be one JSON object of
/// timings. The peak RSS is the process's own high-water mark (`VmHWM`),
/// sampled until it exits. (`wait4`'s `ru_maxrss` would not do: it counts
/// the memory of the benchmark process that spawned it.)
fn measure(command: &mut Command) -> anyhow::Result<Measured> {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let mut stderr = child.stderr.take().expect("piped");
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut stdout = child.stdout.take().expect("piped");
    let output = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let status = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    let exit = loop {
        if let Some(exit) = child.try_wait()? {
            break exit;
        }
        let hwm = std::fs::read_to_string(&status).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        });
        peak_kib = peak_kib.max(hwm.unwrap_or(0));
        std::thread::sleep(Duration::from_millis(2));
    };
    let (stdout, errors) = (output.join().unwrap_or_default(), errors.join().unwrap_or_default());
    if !exit.success() {
        bail!("{command:?} failed ({exit}):\n{errors}");
    }
    let samples = serde_json::from_str(stdout.trim()).with_context(|| format!("output of {command:?}: {stdout}"))?;
    Ok(Measured { samples, peak_rss_mib: peak_kib as f64 / 1024.0 })
}

/// Timings of one op gathered over several rounds.
#[derive(Default)]
struct Samples(HashMap<String, Vec<f64>>);

impl Samples {
    fn add(&mut self, measured: &Measured) {
        for (op, samples) in &measured.samples {
            self.0.entry(op.clone()).or_default().extend(samples);
        }
    }

    fn median(&self, op: &str) -> Option<f64> {
        let mut samples = self.0.get(op)?.clone();
        samples.sort_by(f64::total_cmp);
        samples.get(samples.len() / 2).copied()
    }
}

/// Install the pinned SDK next to its script (once) and return the script.
fn install_sdk() -> anyhow::Result<PathBuf> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("daytona-sdk-0.218.0");
    std::fs::create_dir_all(&dir)?;
    if !dir.join("node_modules/@daytonaio/sdk/package.json").is_file() {
        eprintln!("installing {SDK} from the npm registry into {}", dir.display());
        let status = Command::new("npm")
            .args(["install", "--no-save", "--no-audit", "--no-fund", "--loglevel", "error", "--prefix"])
            .arg(&dir)
            .arg(SDK)
            .status()
            .context("npm (node) is needed to run the official SDK")?;
        if !status.success() {
            bail!("npm could not install {SDK}");
        }
    }
    let script = dir.join("bench.mjs");
    std::fs::write(&script, include_str!("daytona_sdk.mjs"))?;
    Ok(script)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// The floor: a native client (reqwest) timing `ops` with the requests the
/// connector makes, minus its command wrapper: exec sends the bare command.
async fn native(api_url: &str, toolbox_url: &str, ops: &[&str], iterations: usize) -> anyhow::Result<Measured> {
    let client = reqwest::Client::new();
    let auth = format!("Bearer {KEY}");
    let post_json = |url: String, body: Value| {
        client
            .post(url)
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .header("x-daytona-sdk-version", "0.218.0")
            .body(body.to_string())
    };
    let answer = |response: reqwest::Response| async move {
        anyhow::Ok(serde_json::from_slice::<Value>(&response.error_for_status()?.bytes().await?)?)
    };
    let created = answer(post_json(format!("{api_url}/sandbox"), json!({})).send().await?).await?;
    let id = created["id"].as_str().context("sandbox id")?.to_string();
    let toolbox = format!("{toolbox_url}/{id}");
    let one_mib: Vec<u8> = (0..MIB).map(|i| (i * 31 % 251) as u8).collect();
    // Upload bodies are built before the clock starts.
    let boundary = "native-bench";
    let upload = |size: usize| {
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"files[0].path\"\r\n\r\nnative.bin\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"files[0].file\"; filename=\"native.bin\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        body.extend(std::iter::repeat_n(&one_mib, size / MIB).flatten());
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        (bytes::Bytes::from(body), size)
    };
    let round_trip = |(body, size): (bytes::Bytes, usize)| {
        let (client, auth, toolbox) = (&client, &auth, &toolbox);
        async move {
            let response = client
                .post(format!("{toolbox}/files/bulk-upload"))
                .header("authorization", auth)
                .header("content-type", format!("multipart/form-data; boundary={boundary}"))
                .body(body)
                .send()
                .await?;
            anyhow::ensure!(response.status().is_success(), "upload: {}", response.status());
            let mut response = client
                .get(format!("{toolbox}/files/download?path=native.bin"))
                .header("authorization", auth)
                .send()
                .await?;
            let mut read = 0;
            while let Some(chunk) = response.chunk().await? {
                read += chunk.len();
            }
            anyhow::ensure!(read == size, "downloaded {read} of {size} bytes");
            anyhow::Ok(())
        }
    };
    let (small, big) = (upload(MIB), upload(64 * MIB));
    let mut samples = HashMap::new();
    for &op in ops {
        let mut timings = Vec::with_capacity(iterations);
        for i in 0..=iterations {
            let started = Instant::now();
            match op {
                "exec" => {
                    let response =
                        post_json(format!("{toolbox}/process/execute"), json!({ "command": "true" })).send().await?;
                    let answer = answer(response).await?;
                    anyhow::ensure!(answer["exitCode"] == 0, "exec: {answer}");
                }
                "io1" => round_trip(small.clone()).await?,
                "io64" => round_trip(big.clone()).await?,
                other => bail!("no native {other}"),
            }
            if i > 0 {
                timings.push(started.elapsed().as_secs_f64() * 1000.0); // the first is a warm-up
            }
        }
        samples.insert(op.to_string(), timings);
    }
    client.delete(format!("{api_url}/sandbox/{id}")).header("authorization", &auth).send().await?;
    Ok(Measured { samples, peak_rss_mib: f64::NAN })
}

/// Median wall time of `flue run AGENT` on the local sandbox, after one
/// warm-up run (which builds and compiles what it needs).
fn warm_run(agent: &str, cache: &Path, iterations: usize) -> anyhow::Result<f64> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root");
    let run = || -> anyhow::Result<Duration> {
        let started = Instant::now();
        let status = Command::new(env!("CARGO_BIN_EXE_flue"))
            .current_dir(repo)
            .args(["run", agent, "--events", "none", "--cache-dir"])
            .arg(cache)
            .stdout(Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "flue run {agent} failed");
        Ok(started.elapsed())
    };
    run()?;
    let samples = (0..iterations).map(|_| run()).collect::<anyhow::Result<Vec<_>>>()?;
    Ok(median(samples).as_secs_f64() * 1000.0)
}

/// Set in the environment of this benchmark's own second process, the
/// test server.
const SERVER_ROLE: &str = "FLUE_BENCH_DAYTONA_SERVER";

/// The test server's two base URLs.
struct Server {
    api_url: String,
    toolbox_url: String,
    _process: std::process::Child,
}

/// Serve the Daytona test server until stdin closes (the benchmark exits).
fn serve() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let server = runtime.block_on(DaytonaServer::start(ServerConfig {
        api_key: KEY.into(),
        record_requests: false,
        ..Default::default()
    }))?;
    println!("{}", json!({ "api": server.api_url(), "toolbox": server.toolbox_url() }));
    std::io::copy(&mut std::io::stdin(), &mut std::io::sink())?;
    Ok(())
}

/// Start the test server in a process of its own: in this one, its
/// commands would be forked from a process holding the native client's
/// 64 MiB buffers, which slows every exec down.
fn start_server() -> anyhow::Result<Server> {
    let mut process = Command::new(std::env::current_exe()?)
        .env(SERVER_ROLE, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(process.stdout.take().expect("piped")), &mut line)?;
    let urls: Value = serde_json::from_str(&line).context("the test server did not start")?;
    let url = |key: &str| urls[key].as_str().map(str::to_string).context("a server URL");
    Ok(Server { api_url: url("api")?, toolbox_url: url("toolbox")?, _process: process })
}

fn main() -> anyhow::Result<()> {
    if std::env::var_os(SERVER_ROLE).is_some() {
        return serve();
    }
    let iterations: usize = std::env::var("FLUE_BENCH_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(30);
    let big_iterations = (iterations / 4).max(3);
    let runtime = tokio::runtime::Runtime::new()?;
    let server = start_server()?;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf();
    let quiet = EventLog::discard();
    let connector = flue::guest::rust::build(&repo.join("connectors/daytona"), &quiet)?;
    let agent = flue::guest::rust::build(&repo.join("tests/fixtures/bench-agent"), &quiet)?;
    let connectors = tempfile::tempdir()?;
    std::fs::copy(&connector, connectors.path().join("daytona.wasm"))?;
    let cache = tempfile::tempdir()?;
    let script = install_sdk()?;

    let sdk = |ops: &[&str], iterations: usize| {
        measure(
            Command::new("node")
                .arg(&script)
                .env("DAYTONA_API_URL", &server.api_url)
                .env("DAYTONA_API_KEY", KEY)
                .env("BENCH_OPS", ops.join(","))
                .env("BENCH_ITERS", iterations.to_string()),
        )
    };
    let flue_with = |ops: &[&str], iterations: usize, memory_mib: &str| {
        let payload = json!({ "iterations": iterations, "ops": ops }).to_string();
        measure(
            Command::new(env!("CARGO_BIN_EXE_flue"))
                .arg("run")
                .arg(&agent)
                .args(["--sandbox", "daytona", "--events", "none", "--memory", memory_mib, "--payload", &payload])
                .arg("--connectors")
                .arg(connectors.path())
                .arg("--cache-dir")
                .arg(cache.path())
                .env("DAYTONA_API_URL", &server.api_url)
                .env("DAYTONA_API_KEY", KEY),
        )
    };
    let flue = |ops: &[&str], iterations: usize| flue_with(ops, iterations, "64");
    let native = |ops: &[&str], iterations: usize| {
        runtime.block_on(native(&server.api_url, &server.toolbox_url, ops, iterations))
    };
    // Warm flue's compiled-component cache so that no side pays a one-off.
    flue(&["exec"], 1)?;
    // Rounds alternate the clients so that drift on a shared machine hits
    // all of them alike; each round is a fresh process.
    const ROUNDS: usize = 3;
    let (mut sdk_all, mut flue_all, mut native_all) = (Samples::default(), Samples::default(), Samples::default());
    let (mut sdk_rss, mut flue_rss, mut whole_rss) = (0f64, 0f64, 0f64);
    for _ in 0..ROUNDS {
        let small = ["create", "exec", "io1"];
        sdk_all.add(&sdk(&small, iterations / ROUNDS)?);
        flue_all.add(&flue(&small, iterations / ROUNDS)?);
        native_all.add(&native(&small[1..], iterations / ROUNDS)?);
        // The 64 MiB round trips alone, for their processes' peak RSS.
        let big = sdk(&["io64"], big_iterations)?;
        sdk_rss = sdk_rss.max(big.peak_rss_mib);
        sdk_all.add(&big);
        let big = flue(&["io64"], big_iterations)?;
        flue_rss = flue_rss.max(big.peak_rss_mib);
        flue_all.add(&big);
        // Whole-file calls: the agent holds one copy of the file at a time.
        let whole = flue_with(&["whole64"], big_iterations, "512")?;
        whole_rss = whole_rss.max(whole.peak_rss_mib);
        flue_all.add(&whole);
        native_all.add(&native(&["io64"], big_iterations)?);
    }
    let by_name = warm_run("hello", cache.path(), iterations)?;
    let hello_wasm = flue::guest::rust::build(&repo.join("guest-examples/rust/hello"), &quiet)?;
    let by_path = warm_run(hello_wasm.to_str().context("utf-8 path")?, cache.path(), iterations)?;

    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    println!(
        "Daytona: official TS SDK ({SDK}) vs a flue agent ({profile} build), same test server;\n\
         medians of {ROUNDS} alternating rounds ({} iterations per op; 64 MiB: {})",
        iterations / ROUNDS * ROUNDS,
        big_iterations * ROUNDS
    );
    println!("{:<20} {:>11} {:>11} {:>9} {:>12}", "operation", "SDK", "flue", "flue/SDK", "native Rust");
    for (op, label) in OPS {
        let (Some(sdk_ms), Some(flue_ms)) = (sdk_all.median(op), flue_all.median(op)) else { bail!("no {op} result") };
        let native = native_all.median(op).map(|ms| format!("{ms:.1} ms")).unwrap_or_else(|| "-".into());
        println!("{label:<20} {sdk_ms:>8.1} ms {flue_ms:>8.1} ms {:>8.2}x {native:>12}", flue_ms / sdk_ms);
    }
    println!(
        "{:<20} {sdk_rss:>7.0} MiB {flue_rss:>7.0} MiB {:>8.2}x {:>12}",
        "peak RSS (64 MiB)",
        flue_rss / sdk_rss,
        "-"
    );
    let (flue_io64, native_io64) =
        (flue_all.median("io64").unwrap_or(f64::NAN), native_all.median("io64").unwrap_or(f64::NAN));
    println!(
        "64 MiB round trip: flue {:.0} MiB/s = {:.0} % of native ({:.0} MiB/s); flue's peak RSS = {:.2}x the file",
        128_000.0 / flue_io64,
        100.0 * native_io64 / flue_io64,
        128_000.0 / native_io64,
        flue_rss / 64.0
    );
    let flue_whole64 = flue_all.median("whole64").unwrap_or(f64::NAN);
    println!(
        "64 MiB round trip in whole-file calls: flue {flue_whole64:.1} ms = {:.0} MiB/s = {:.0} % of native, {:.2}x \
         the SDK's (whole-file too); flue's peak RSS {whole_rss:.0} MiB = {:.2}x the file (goal: at most 2x the \
         file + 40 MiB, {} MiB)",
        128_000.0 / flue_whole64,
        100.0 * native_io64 / flue_whole64,
        flue_whole64 / sdk_all.median("io64").unwrap_or(f64::NAN),
        whole_rss / 64.0,
        2 * 64 + 40
    );
    println!("warm `flue run hello` (local sandbox): by name {by_name:.1} ms, as a .wasm path {by_path:.1} ms");
    Ok(())
}
