//! The Daytona test server itself: it leaves nothing behind when stopped,
//! and sends what it writes at once (no Nagle delay on streamed answers).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::support::{TEST_API_KEY, repo_root, scratch};

/// The `daytona-test-server` binary, built once (cargo builds only the
/// test's own package's binaries for it).
fn server_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = Command::new(env!("CARGO"))
                .args(["build", "-p", "daytona-test-server", "--bin", "daytona-test-server", "--message-format=json"])
                .current_dir(repo_root())
                .stderr(Stdio::inherit())
                .output()
                .expect("run cargo");
            assert!(out.status.success(), "cargo could not build daytona-test-server");
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                .filter_map(|msg| msg["executable"].as_str().map(PathBuf::from))
                .next_back()
                .expect("cargo named the binary")
        })
        .clone()
}

/// One HTTP/1.1 request on its own connection; the whole response.
fn request(addr: SocketAddr, head: &str, body: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "{head} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {TEST_API_KEY}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn a_stopped_server_removes_its_temporary_directory() {
    for (signal, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        let tmp = scratch();
        let mut server = Command::new(server_binary())
            .args(["--port", "0", "--api-key", TEST_API_KEY])
            .env("TMPDIR", tmp.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the server");
        let mut url = String::new();
        BufReader::new(server.stdout.take().unwrap()).read_line(&mut url).unwrap();
        let addr: SocketAddr = url.trim().trim_start_matches("http://").trim_end_matches("/api").parse().unwrap();
        // A sandbox, so that there is something in the directory to clean up.
        let created = request(addr, "POST /api/sandbox", "{}");
        assert!(created.starts_with("HTTP/1.1 200"), "{name}: {created}");
        let left = || std::fs::read_dir(tmp.path()).unwrap().count();
        assert_eq!(left(), 1, "{name}: the server made no temporary directory in TMPDIR");

        // SAFETY: kill(2) on our child.
        unsafe { libc::kill(server.id() as i32, signal) };
        let started = Instant::now();
        let status = loop {
            if let Some(status) = server.try_wait().unwrap() {
                break status;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "{name}: the server did not stop");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        server.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        assert!(status.success(), "{name}: {status:?}: {stderr}");
        assert_eq!(left(), 0, "{name}: the temporary directory outlived the server: {stderr}");
    }
}

#[test]
fn the_server_sends_without_waiting_for_acks() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let config = daytona_test_server::ServerConfig { api_key: TEST_API_KEY.into(), ..Default::default() };
    let server = runtime.block_on(daytona_test_server::DaytonaServer::start(config)).expect("start the server");
    let addr: SocketAddr = server.api_url().trim_start_matches("http://").trim_end_matches("/api").parse().unwrap();

    // A connection the server has accepted (it answered on it), still open.
    let mut client = TcpStream::connect(addr).unwrap();
    write!(client, "GET /api/sandbox HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {TEST_API_KEY}\r\n\r\n").unwrap();
    let mut first = [0u8; 12];
    client.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");

    // The server's end of it is a socket of this very process: find it by
    // its two addresses, and read its TCP_NODELAY.
    let client_addr = client.local_addr().unwrap();
    let mut found = None;
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        // SAFETY: only inspected, never closed; a number that was closed
        // meanwhile just fails the calls below.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let local = rustix::net::getsockname(fd).ok().and_then(|a| SocketAddr::try_from(a).ok());
        let peer = rustix::net::getpeername(fd).ok().flatten().and_then(|a| SocketAddr::try_from(a).ok());
        if local == Some(addr) && peer == Some(client_addr) {
            found = Some(rustix::net::sockopt::tcp_nodelay(fd).unwrap());
        }
    }
    assert_eq!(found, Some(true), "the server's socket for this connection has Nagle's algorithm on");
    drop(server);
    runtime.shutdown_background();
}
