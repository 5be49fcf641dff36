//! Benchmark: the Daytona connector (daytona.wasm, running in the host, its
//! HTTP performed by the host) against a native Rust client making the same
//! HTTP calls (byte-identical bodies) to the same in-process test server.
//!
//!     cargo bench -p flue --bench daytona
//!
//! Prints, side by side from one run, the median latency of `exec("true")`
//! and of a 1 MiB write + read, and the ratio. FLUE_BENCH_ITERS sets the
//! number of timed iterations (default 40).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use daytona_test_server::{DaytonaServer, ServerConfig};
use flue::HostBuilder;
use flue::events::EventLog;
use flue::sandbox::session::{ExecOptions, Session};

const KEY: &str = "bench-key";
const MIB: usize = 1024 * 1024;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

async fn time<F, Fut>(iterations: usize, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..3 {
        f().await; // warm-up
    }
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        f().await;
        samples.push(started.elapsed());
    }
    median(samples)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let iterations: usize = std::env::var("FLUE_BENCH_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(40);
    let server = DaytonaServer::start(ServerConfig { api_key: KEY.into(), ..Default::default() }).await?;
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf();
    let wasm = flue::guest::build_rust(&repo.join("connectors/daytona"), &EventLog::discard())?;
    let connectors = tempfile::tempdir()?;
    std::fs::copy(&wasm, connectors.path().join("daytona.wasm"))?;
    let config = HashMap::from([
        ("DAYTONA_API_URL".to_string(), server.api_url()),
        ("DAYTONA_API_KEY".to_string(), KEY.to_string()),
    ]);
    let host = HostBuilder::new().connectors_dir(connectors.path()).config(config).build()?;
    let connector = host.connector("daytona", &EventLog::discard()).await?;
    let sandbox = connector.create(&Default::default()).await?;
    let session = Session::new(sandbox.clone(), None, EventLog::discard())?;
    let data: Vec<u8> = (0..MIB).map(|i| (i * 31 % 251) as u8).collect();

    // Through daytona.wasm.
    let wasm_exec = time(iterations, || async {
        assert_eq!(session.exec("true", ExecOptions::default()).await.unwrap().exit_code, 0)
    })
    .await;
    let exec_body =
        server.requests().iter().rev().find(|r| r.uri.ends_with("/process/execute")).expect("an exec").body.clone();
    let wasm_io = time(iterations, || async {
        session.write_file("bench.bin", &data).await.unwrap();
        assert_eq!(session.read_file("bench.bin").await.unwrap().len(), MIB);
    })
    .await;
    let requests = server.requests();
    let upload = requests.iter().rev().find(|r| r.uri.ends_with("/files/bulk-upload")).expect("an upload");
    let upload_type =
        upload.headers.iter().find(|(k, _)| k == "content-type").map(|(_, v)| v.clone()).expect("content type");
    let upload_body = upload.body.clone();
    let download_body =
        requests.iter().rev().find(|r| r.uri.ends_with("/files/bulk-download")).expect("a download").body.clone();

    // Native: reqwest straight to the same endpoints with the same bodies.
    let toolbox = format!("{}/{}", server.toolbox_url(), sandbox.id());
    let client = reqwest::Client::new();
    let post = |path: &str, content_type: &str, body: bytes::Bytes| {
        client
            .post(format!("{toolbox}{path}"))
            .header("authorization", format!("Bearer {KEY}"))
            .header("x-daytona-source", "bench-native")
            .header("x-daytona-sdk-version", "0.218.0")
            .header("content-type", content_type)
            .body(body)
    };
    let native_exec = time(iterations, || async {
        let response = post("/process/execute", "application/json", exec_body.clone()).send().await.unwrap();
        let json: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        assert_eq!(json["exitCode"], 0);
    })
    .await;
    let native_io = time(iterations, || async {
        let response = post("/files/bulk-upload", &upload_type, upload_body.clone()).send().await.unwrap();
        assert!(response.status().is_success());
        let response = post("/files/bulk-download", "application/json", download_body.clone()).send().await.unwrap();
        assert!(response.bytes().await.unwrap().len() > MIB);
    })
    .await;

    connector.delete(sandbox.id()).await?;
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    println!("Daytona connector benchmark ({profile} build, {iterations} iterations, medians, same test server)");
    println!("{:<22} {:>14} {:>14} {:>8}", "operation", "daytona.wasm", "native Rust", "ratio");
    for (name, wasm, native) in [("exec(\"true\")", wasm_exec, native_exec), ("write+read 1 MiB", wasm_io, native_io)] {
        println!("{name:<22} {:>14} {:>14} {:>7.2}x", ms(wasm), ms(native), wasm.as_secs_f64() / native.as_secs_f64());
    }
    Ok(())
}
