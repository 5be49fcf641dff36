//! The sandbox contract suite: what every backend must do, checked through
//! the same session layer agents use.
//!
//! `flue conformance <connector>` runs it against `local`, a wasm connector,
//! or any third-party `.wasm`, and prints a pass/fail table; the integration
//! tests run it against every backend. Checks work in a scratch directory
//! under the sandbox's workdir, which is removed afterwards.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::events::EventLog;
use crate::sandbox::error::{ErrorKind, SandboxError, SandboxResult};
use crate::sandbox::session::{ExecOptions, Session};
use crate::sandbox::{Connector, CreateOptions, Sandbox, TIMEOUT_EXIT_CODE};

/// The outcome of one check.
#[derive(Debug)]
pub struct CheckResult {
    /// The check's name.
    pub name: &'static str,
    /// Passed, or why not.
    pub outcome: Result<(), String>,
    /// How long it took.
    pub duration: Duration,
    /// Not run, and why: the connector does not support what it checks.
    pub skipped: Option<String>,
}

type CheckFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;
type Check = for<'a> fn(&'a Suite) -> CheckFuture<'a>;

/// What a check can use.
pub struct Suite {
    /// A session whose cwd is the scratch directory.
    pub scratch: Session,
    /// True when the backend returns stderr merged into stdout.
    pub merges_output: bool,
}

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

macro_rules! checks {
    ($($name:literal => $f:ident),* $(,)?) => {
        /// Names of all checks, in order.
        pub const CHECK_NAMES: &[&str] = &[$($name),*];
        fn all_checks() -> Vec<(&'static str, Check)> {
            vec![$(($name, |s| Box::pin($f(s)))),*]
        }
    };
}

checks! {
    "path resolution table" => path_resolution,
    "`..` clamped at /" => dotdot_clamped,
    "write creates parents" => write_creates_parents,
    "binary round trip (all 256 byte values)" => binary_round_trip,
    "large file round trip (5 MiB)" => large_file,
    "unicode names" => unicode_names,
    "exists is false for missing paths" => exists_semantics,
    "read of a missing file is not-found" => read_missing,
    "mkdir semantics" => mkdir_semantics,
    "rm recursive/force semantics" => rm_semantics,
    "stat fields" => stat_fields,
    "readdir lists names, sorted" => readdir_sorted,
    "exec cwd default and relative cwd" => exec_cwd,
    "exec env" => exec_env,
    "non-zero exit is a result" => nonzero_exit,
    "timeout returns 124 and the process is gone" => timeout_kills,
    "streamed write and read in parts (12 MiB)" => streamed_round_trip,
    "streamed read from an offset" => streamed_offset,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn sh(timeout: Option<Duration>) -> ExecOptions {
    ExecOptions { cwd: None, env: Vec::new(), timeout }
}

async fn path_resolution(s: &Suite) -> Result<(), String> {
    let base = s.scratch.cwd().to_string();
    let table = [
        ("a.txt", format!("{base}/a.txt")),
        ("./a.txt", format!("{base}/a.txt")),
        ("dir//x/../a.txt", format!("{base}/dir/a.txt")),
        (".", base.clone()),
        ("/abs/./p", "/abs/p".to_string()),
    ];
    for (input, want) in &table {
        let got = s.scratch.resolve(input).map_err(err)?;
        ensure!(&got == want, "resolve({input:?}) = {got:?}, want {want:?}");
    }
    s.scratch.write_file("dir/x/../resolved.txt", b"r").await.map_err(err)?;
    let direct = s.scratch.read_file(&format!("{base}/dir/resolved.txt")).await.map_err(err)?;
    ensure!(direct == b"r", "a file written through a relative path with .. was not where resolution says");
    Ok(())
}

async fn dotdot_clamped(s: &Suite) -> Result<(), String> {
    let depth = s.scratch.cwd().matches('/').count();
    let up = "../".repeat(depth + 5);
    let got = s.scratch.resolve(&up).map_err(err)?;
    ensure!(got == "/", "resolve({up:?}) = {got:?}, want \"/\"");
    let got = s.scratch.resolve(&format!("{up}etc")).map_err(err)?;
    ensure!(got == "/etc", "resolve(\"{up}etc\") = {got:?}, want \"/etc\"");
    Ok(())
}

async fn write_creates_parents(s: &Suite) -> Result<(), String> {
    s.scratch.write_file("deep/er/still/file.txt", b"nested").await.map_err(err)?;
    let back = s.scratch.read_file("deep/er/still/file.txt").await.map_err(err)?;
    ensure!(back == b"nested", "read back {:?}", String::from_utf8_lossy(&back));
    let stat = s.scratch.stat("deep/er").await.map_err(err)?;
    ensure!(stat.is_directory, "the created parent is not a directory: {stat:?}");
    Ok(())
}

async fn binary_round_trip(s: &Suite) -> Result<(), String> {
    let all: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    s.scratch.write_file("bytes.bin", &all).await.map_err(err)?;
    let back = s.scratch.read_file("bytes.bin").await.map_err(err)?;
    ensure!(back == all, "bytes differ: wrote {} bytes, read {} bytes", all.len(), back.len());
    Ok(())
}

/// Deterministic pseudo-random bytes (xorshift), so corruption shows.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

async fn large_file(s: &Suite) -> Result<(), String> {
    let data = pseudo_random(5 * 1024 * 1024, 0);
    s.scratch.write_file("large.bin", &data).await.map_err(err)?;
    let back = s.scratch.read_file("large.bin").await.map_err(err)?;
    ensure!(back.len() == data.len(), "size differs: wrote {}, read {}", data.len(), back.len());
    ensure!(back == data, "content differs at byte {}", back.iter().zip(&data).position(|(a, b)| a != b).unwrap_or(0));
    let stat = s.scratch.stat("large.bin").await.map_err(err)?;
    if let Some(size) = stat.size {
        ensure!(size == data.len() as u64, "stat size {size}, want {}", data.len());
    }
    Ok(())
}

async fn unicode_names(s: &Suite) -> Result<(), String> {
    let dir = "ünï cødé";
    let name = "日本語 ✓ émoji 🦀.txt";
    let text = "grüße, мир, 世界\n";
    s.scratch.write_file(&format!("{dir}/{name}"), text.as_bytes()).await.map_err(err)?;
    let names = s.scratch.readdir(dir).await.map_err(err)?;
    ensure!(names == vec![name.to_string()], "readdir gave {names:?}");
    let back = s.scratch.read_text(&format!("{dir}/{name}")).await.map_err(err)?;
    ensure!(back == text, "read back {back:?}");
    let ls = s.scratch.exec(&format!("cat '{dir}/{name}'"), sh(None)).await.map_err(err)?;
    ensure!(ls.stdout == text, "the shell read {:?}", ls.stdout);
    Ok(())
}

async fn exists_semantics(s: &Suite) -> Result<(), String> {
    ensure!(!s.scratch.exists("missing").await.map_err(err)?, "exists(missing) = true");
    ensure!(!s.scratch.exists("missing/deeper/x").await.map_err(err)?, "exists(missing/deeper/x) = true");
    s.scratch.write_file("present.txt", b"x").await.map_err(err)?;
    ensure!(s.scratch.exists("present.txt").await.map_err(err)?, "exists(file) = false");
    ensure!(!s.scratch.exists("present.txt/child").await.map_err(err)?, "exists(file/child) = true");
    ensure!(s.scratch.exists(".").await.map_err(err)?, "exists(.) = false");
    Ok(())
}

async fn read_missing(s: &Suite) -> Result<(), String> {
    match s.scratch.read_file("nope.txt").await {
        Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("want not-found, got {e}")),
        Ok(_) => Err("reading a missing file succeeded".into()),
    }
}

async fn mkdir_semantics(s: &Suite) -> Result<(), String> {
    match s.scratch.mkdir("no/parent", false).await {
        Err(e) if e.kind == ErrorKind::NotFound => {}
        Err(e) => return Err(format!("mkdir without recursive and a missing parent: want not-found, got {e}")),
        Ok(()) => return Err("mkdir without recursive created missing parents".into()),
    }
    s.scratch.mkdir("made/with/parents", true).await.map_err(err)?;
    ensure!(s.scratch.stat("made/with/parents").await.map_err(err)?.is_directory, "recursive mkdir made no directory");
    s.scratch
        .mkdir("made/with/parents", true)
        .await
        .map_err(|e| format!("recursive mkdir of an existing dir failed: {e}"))?;
    match s.scratch.mkdir("made", false).await {
        Err(e) if e.kind == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("mkdir of an existing dir: want already-exists, got {e}")),
        Ok(()) => Err("mkdir of an existing dir without recursive succeeded".into()),
    }
}

async fn rm_semantics(s: &Suite) -> Result<(), String> {
    s.scratch.write_file("tree/a/b.txt", b"b").await.map_err(err)?;
    if s.scratch.rm("tree", false, false).await.is_ok() {
        return Err("rm of a non-empty directory without recursive succeeded".into());
    }
    ensure!(s.scratch.exists("tree/a/b.txt").await.map_err(err)?, "a refused rm still removed files");
    s.scratch.rm("tree", true, false).await.map_err(err)?;
    ensure!(!s.scratch.exists("tree").await.map_err(err)?, "rm recursive left the directory");
    match s.scratch.rm("tree", false, false).await {
        Err(e) if e.kind == ErrorKind::NotFound => {}
        Err(e) => return Err(format!("rm of a missing path: want not-found, got {e}")),
        Ok(()) => return Err("rm of a missing path without force succeeded".into()),
    }
    s.scratch.rm("tree", false, true).await.map_err(|e| format!("rm force of a missing path failed: {e}"))?;
    s.scratch.write_file("single.txt", b"x").await.map_err(err)?;
    s.scratch.rm("single.txt", false, false).await.map_err(err)?;
    ensure!(!s.scratch.exists("single.txt").await.map_err(err)?, "rm left the file");
    Ok(())
}

async fn stat_fields(s: &Suite) -> Result<(), String> {
    s.scratch.write_file("stat.txt", b"12345").await.map_err(err)?;
    let file = s.scratch.stat("stat.txt").await.map_err(err)?;
    ensure!(file.is_file && !file.is_directory, "file stat: {file:?}");
    ensure!(file.size == Some(5), "file size {:?}, want Some(5)", file.size);
    if let Some(mtime) = file.mtime_ms {
        let now = crate::events::unix_millis();
        ensure!((now - mtime).abs() < 24 * 3600 * 1000, "mtime {mtime} is not close to now ({now})");
    }
    let dir = s.scratch.stat(".").await.map_err(err)?;
    ensure!(dir.is_directory && !dir.is_file, "dir stat: {dir:?}");
    match s.scratch.stat("missing").await {
        Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("stat of a missing path: want not-found, got {e}")),
        Ok(st) => Err(format!("stat of a missing path succeeded: {st:?}")),
    }
}

async fn readdir_sorted(s: &Suite) -> Result<(), String> {
    for name in ["c.txt", "a.txt", "b"] {
        if name == "b" {
            s.scratch.mkdir("list/b", true).await.map_err(err)?;
        } else {
            s.scratch.write_file(&format!("list/{name}"), b"x").await.map_err(err)?;
        }
    }
    let names = s.scratch.readdir("list").await.map_err(err)?;
    ensure!(names == ["a.txt", "b", "c.txt"], "readdir gave {names:?}");
    Ok(())
}

async fn exec_cwd(s: &Suite) -> Result<(), String> {
    let out = s.scratch.exec("pwd", sh(None)).await.map_err(err)?;
    ensure!(
        out.stdout.trim() == s.scratch.cwd(),
        "pwd = {:?}, want the session cwd {:?}",
        out.stdout.trim(),
        s.scratch.cwd()
    );
    s.scratch.mkdir("sub/dir", true).await.map_err(err)?;
    let out = s.scratch.exec("pwd", ExecOptions { cwd: Some("sub/dir".into()), ..sh(None) }).await.map_err(err)?;
    let want = format!("{}/sub/dir", s.scratch.cwd());
    ensure!(out.stdout.trim() == want, "pwd with relative cwd = {:?}, want {want:?}", out.stdout.trim());
    s.scratch.exec("echo made-by-shell > shell.txt", sh(None)).await.map_err(err)?;
    let text = s.scratch.read_text("shell.txt").await.map_err(err)?;
    ensure!(text == "made-by-shell\n", "a file the shell wrote in cwd reads {text:?}");
    Ok(())
}

async fn exec_env(s: &Suite) -> Result<(), String> {
    let options = ExecOptions { env: vec![("FLUE_CHECK".into(), "it works; with $pecial 'chars'".into())], ..sh(None) };
    let out = s.scratch.exec("printf '%s' \"$FLUE_CHECK\"", options).await.map_err(err)?;
    ensure!(out.stdout == "it works; with $pecial 'chars'", "env value arrived as {:?}", out.stdout);
    let out = s.scratch.exec("printf '%s' \"${FLUE_CHECK-unset}\"", sh(None)).await.map_err(err)?;
    ensure!(out.stdout == "unset", "env of one call leaked into the next: {:?}", out.stdout);
    Ok(())
}

async fn nonzero_exit(s: &Suite) -> Result<(), String> {
    let out = s.scratch.exec("echo out; echo err >&2; exit 3", sh(None)).await.map_err(err)?;
    ensure!(out.exit_code == 3, "exit code {}, want 3", out.exit_code);
    if s.merges_output {
        ensure!(out.stdout.contains("out") && out.stdout.contains("err"), "merged output {:?}", out.stdout);
    } else {
        ensure!(out.stdout == "out\n", "stdout {:?}", out.stdout);
        ensure!(out.stderr == "err\n", "stderr {:?}", out.stderr);
    }
    Ok(())
}

async fn timeout_kills(s: &Suite) -> Result<(), String> {
    let started = Instant::now();
    let out = s
        .scratch
        .exec("echo before; sleep 3; echo after > late.txt", sh(Some(Duration::from_millis(1000))))
        .await
        .map_err(err)?;
    let took = started.elapsed();
    ensure!(out.exit_code == TIMEOUT_EXIT_CODE, "exit code {}, want {TIMEOUT_EXIT_CODE}", out.exit_code);
    ensure!(out.stdout.contains("before"), "output printed before the timeout was lost: {:?}", out.stdout);
    ensure!(took < Duration::from_millis(2900), "the call returned after {took:?}, not at its timeout");
    ensure!(out.timed_out, "the result does not say it timed out: {out:?}");
    // Had the command survived, it would write late.txt at ~3 s.
    tokio::time::sleep(Duration::from_millis(3500).saturating_sub(started.elapsed())).await;
    ensure!(!s.scratch.exists("late.txt").await.map_err(err)?, "the timed-out command kept running");
    Ok(())
}

const MIB: usize = 1024 * 1024;

async fn streamed_round_trip(s: &Suite) -> Result<(), String> {
    let parts: Vec<Vec<u8>> = (0..12).map(|i| pseudo_random(MIB, i)).collect();
    let mut writer = s.scratch.open_write("deep/streamed.bin").await.map_err(err)?;
    for part in &parts {
        writer.write(part).await.map_err(err)?;
    }
    writer.finish().await.map_err(err)?;
    let stat = s.scratch.stat("deep/streamed.bin").await.map_err(err)?;
    ensure!(stat.size.is_none_or(|size| size == 12 * MIB as u64), "stat size {:?}, want {}", stat.size, 12 * MIB);
    let mut reader = s.scratch.open_read("deep/streamed.bin", 0).await.map_err(err)?;
    let mut back = Vec::new();
    loop {
        let part = reader.read(MIB).await.map_err(err)?;
        if part.is_empty() {
            break;
        }
        ensure!(part.len() <= MIB, "a read returned {} bytes, more than the {MIB} asked for", part.len());
        back.extend(part);
    }
    let want = parts.concat();
    ensure!(back.len() == want.len(), "read back {} bytes, wrote {}", back.len(), want.len());
    ensure!(back == want, "content differs at byte {}", back.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(0));
    Ok(())
}

async fn streamed_offset(s: &Suite) -> Result<(), String> {
    let data = pseudo_random(3 * MIB + 17, 42);
    s.scratch.write_file("offset.bin", &data).await.map_err(err)?;
    let offset = 2 * MIB + 5;
    let mut reader = s.scratch.open_read("offset.bin", offset as u64).await.map_err(err)?;
    let mut back = Vec::new();
    loop {
        let part = reader.read(256 * 1024).await.map_err(err)?;
        if part.is_empty() {
            break;
        }
        back.extend(part);
    }
    ensure!(back == data[offset..], "from offset {offset}: read {} bytes, want {}", back.len(), data.len() - offset);
    let mut past = s.scratch.open_read("offset.bin", data.len() as u64 + 10).await.map_err(err)?;
    let tail = past.read(1024).await.map_err(err)?;
    ensure!(tail.is_empty(), "reading past the end gave {} bytes", tail.len());
    match s.scratch.open_read("missing.bin", 0).await {
        Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("open-read of a missing file: want not-found, got {e}")),
        Ok(_) => Err("open-read of a missing file succeeded".into()),
    }
}

/// Run every check against `sandbox`.
pub async fn run(sandbox: Arc<dyn Sandbox>, merges_output: bool, events: EventLog) -> Vec<CheckResult> {
    let root = Session::new(sandbox.clone(), None, events.clone()).expect("workdir is absolute");
    let scratch_name = format!(".flue-conformance-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut results = Vec::new();
    if let Err(e) = root.mkdir(&scratch_name, true).await {
        results.push(CheckResult {
            name: "create a scratch directory",
            outcome: Err(e.to_string()),
            duration: Duration::ZERO,
            skipped: None,
        });
        return results;
    }
    for (name, check) in all_checks() {
        // Each check gets a fresh directory, so one failure cannot cascade.
        let dir = format!("{scratch_name}/{}", results.len());
        let outcome = match root.mkdir(&dir, true).await {
            Ok(()) => {
                let scratch = Session::new(sandbox.clone(), Some(&root.resolve(&dir).expect("valid")), events.clone())
                    .expect("valid");
                let suite = Suite { scratch, merges_output };
                let started = Instant::now();
                let outcome = check(&suite).await;
                results.push(CheckResult { name, outcome, duration: started.elapsed(), skipped: None });
                continue;
            }
            Err(e) => Err(format!("could not create its scratch directory: {e}")),
        };
        results.push(CheckResult { name, outcome, duration: Duration::ZERO, skipped: None });
    }
    let _ = root.rm(&scratch_name, true, true).await;
    results
}

/// The volume checks, by name.
pub const VOLUME_CHECK_NAMES: &[&str] = &["volumes: create, list, delete", "volume data outlives its sandbox"];

/// The volume checks against `connector`, whose sandboxes work in
/// `workdir`. A connector without volumes (`unsupported`) has them skipped
/// with its reason, not failed.
pub async fn run_volumes(connector: &dyn Connector, workdir: &str) -> Vec<CheckResult> {
    let name = format!("flue-conformance-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut results = Vec::new();
    let started = Instant::now();
    let lifecycle = volume_lifecycle(connector, &name).await;
    let unsupported = matches!(&lifecycle, Err(err) if err.kind == ErrorKind::Unsupported);
    results.push(volume_result(VOLUME_CHECK_NAMES[0], lifecycle, started));
    if unsupported {
        let why = results[0].skipped.clone();
        results.push(CheckResult {
            name: VOLUME_CHECK_NAMES[1],
            outcome: Ok(()),
            duration: Duration::ZERO,
            skipped: why,
        });
        return results;
    }
    let started = Instant::now();
    let outlives = volume_outlives_sandbox(connector, &name, workdir).await;
    let _ = connector.delete_volume(&name).await;
    results.push(volume_result(VOLUME_CHECK_NAMES[1], outlives, started));
    results
}

fn volume_result(name: &'static str, outcome: SandboxResult<()>, started: Instant) -> CheckResult {
    match outcome {
        Err(err) if err.kind == ErrorKind::Unsupported => {
            CheckResult { name, outcome: Ok(()), duration: started.elapsed(), skipped: Some(err.message) }
        }
        outcome => CheckResult {
            name,
            outcome: outcome.map_err(|err| err.to_string()),
            duration: started.elapsed(),
            skipped: None,
        },
    }
}

async fn volume_lifecycle(connector: &dyn Connector, name: &str) -> SandboxResult<()> {
    let fail = |message: String| Err(SandboxError::other(message));
    let created = connector.create_volume(name).await?;
    if created.name != name {
        return fail(format!("created volume is called {}, not {name}", created.name));
    }
    match connector.create_volume(name).await {
        Err(err) if err.kind == ErrorKind::AlreadyExists => {}
        other => return fail(format!("creating {name} twice: expected already-exists, got {other:?}")),
    }
    if !connector.list_volumes().await?.iter().any(|v| v.name == name) {
        return fail(format!("{name} is not listed after create"));
    }
    connector.delete_volume(name).await?;
    if connector.list_volumes().await?.iter().any(|v| v.name == name) {
        return fail(format!("{name} is still listed after delete"));
    }
    match connector.delete_volume(name).await {
        Err(err) if err.kind == ErrorKind::NotFound => Ok(()),
        other => fail(format!("deleting {name} twice: expected not-found, got {other:?}")),
    }
}

async fn volume_outlives_sandbox(connector: &dyn Connector, name: &str, workdir: &str) -> SandboxResult<()> {
    let mount_path = format!("{}/flue-volume", workdir.trim_end_matches('/'));
    let options = CreateOptions {
        volumes: vec![crate::sandbox::VolumeMount {
            volume: name.to_string(),
            mount_path: mount_path.clone(),
            subpath: None,
            create: true,
        }],
        ..Default::default()
    };
    let file = format!("{mount_path}/note.txt");
    let first = connector.create(&options).await?;
    let wrote = first.write_file(&file, b"kept across sandboxes").await;
    connector.delete(first.id()).await?;
    wrote?;
    let second = connector.create(&options).await?;
    let read = second.read_file(&file, 1024).await;
    connector.delete(second.id()).await?;
    match read? {
        data if data == b"kept across sandboxes" => Ok(()),
        other => Err(SandboxError::other(format!("the next sandbox read {:?}", String::from_utf8_lossy(&other)))),
    }
}
