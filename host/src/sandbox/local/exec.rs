//! Running a command for the local sandbox: `bash -c` in the sandbox
//! directory, under bubblewrap when available ([`super::bwrap`]).
//!
//! * Only an allowlisted environment reaches the command: a fixed `PATH`,
//!   `HOME`, `LANG`, `TMPDIR`, then the sandbox's and the call's variables.
//!   Nothing of the host's environment (where secrets live) is passed on,
//!   and under bubblewrap the variables are set inside the sandbox only.
//! * The command leads its own process group. On timeout the whole group is
//!   killed (under bubblewrap, killing bwrap tears down the PID namespace), the
//!   result has exit code 124, what was printed so far, and a note on stderr.
//!   When the command exits, stragglers it left in its group are killed too,
//!   so no process outlives the `exec` call.
//! * Each output stream is capped; past the cap the rest is read and dropped
//!   and a marker says how much was cut.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::Isolation;
use crate::sandbox::error::{SandboxError, SandboxResult};
use crate::sandbox::{ExecOutput, TIMEOUT_EXIT_CODE};

/// The `PATH` commands see.
const SANDBOX_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How long to wait for the output pipes to close after the command exited
/// and its process group was killed (a daemon that escaped the group may
/// hold them open).
const PIPE_DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Where a sandbox lives: `root` on the host, seen as `visible_root` by commands.
pub struct CommandSpec<'a> {
    pub command: &'a str,
    pub root: &'a Path,
    pub visible_root: &'a str,
    /// Absolute path as commands see it.
    pub cwd: &'a str,
    pub env: &'a [(String, String)],
    pub timeout: Option<Duration>,
    pub output_cap: usize,
}

/// The environment a command sees: fixed variables, then the sandbox's and
/// the call's (`env`), later ones winning.
fn command_env(visible_root: &str, env: &[(String, String)]) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> =
        [("PATH", SANDBOX_PATH), ("HOME", visible_root), ("LANG", "C.UTF-8"), ("TMPDIR", "/tmp")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .to_vec();
    for (name, value) in env {
        all.retain(|(k, _)| k != name);
        all.push((name.clone(), value.clone()));
    }
    all
}

/// Run one command to its end (or its timeout).
pub async fn run(isolation: &Isolation, spec: CommandSpec<'_>) -> SandboxResult<ExecOutput> {
    let env = command_env(spec.visible_root, spec.env);
    let mut command = match isolation {
        Isolation::Bubblewrap { bwrap, allow_network } => {
            let isolated = super::bwrap::Isolated {
                root: spec.root,
                visible_root: spec.visible_root,
                cwd: spec.cwd,
                env: &env,
                allow_network: *allow_network,
            };
            super::bwrap::command(bwrap, &isolated, spec.command)?
        }
        Isolation::None => {
            let rel = crate::sandbox::paths::strip_root(spec.visible_root, spec.cwd).ok_or_else(|| {
                SandboxError::permission_denied(format!(
                    "working directory {} is outside the sandbox root {} (commands run without isolation here)",
                    spec.cwd, spec.visible_root
                ))
            })?;
            let mut command = Command::new("bash");
            command.arg("-c").arg(spec.command).current_dir(spec.root.join(rel)).env_clear().envs(env);
            command
        }
    };
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);

    let child = command
        .spawn()
        .map_err(|err| SandboxError::other(format!("could not start the command: {err} (is bash installed?)")))?;
    // If this future is dropped (the run's deadline), the guard takes the
    // group down and still reaps the child.
    let mut child = ReapOnDrop(Some(child));
    let pgid = child.pgid();

    let stdout = tokio::spawn(read_capped(child.stdout_pipe(), spec.output_cap));
    let stderr = tokio::spawn(read_capped(child.stderr_pipe(), spec.output_cap));

    let waited = match spec.timeout {
        Some(limit) => tokio::time::timeout(limit, child.wait()).await.ok(),
        None => Some(child.wait().await),
    };
    kill_group(pgid);
    if waited.is_none() {
        let _ = child.wait().await;
    }
    child.done();
    let (exit_code, timed_out) = match waited {
        Some(status) => {
            let status = status.map_err(|err| SandboxError::other(format!("waiting for the command failed: {err}")))?;
            (exit_code_of(status), false)
        }
        None => (TIMEOUT_EXIT_CODE, true),
    };

    let stdout = drain(stdout).await;
    let mut stderr = drain(stderr).await;
    // bwrap itself failed (it says so, exit 1, before the command ran).
    if isolation.is_isolated() && exit_code == 1 && stdout.is_empty() && stderr.starts_with("bwrap: ") {
        super::isolation::forget_probe();
        return Err(SandboxError::other(format!(
            "bubblewrap could not set up the sandbox: {} (the command did not run)",
            stderr.trim()
        )));
    }
    if timed_out {
        let limit = spec.timeout.unwrap_or_default();
        stderr.push_str(&format!("\n[flue: command timed out after {} ms and was killed]\n", limit.as_millis()));
    }
    Ok(ExecOutput { stdout, stderr, exit_code, timed_out })
}

fn exit_code_of(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

fn kill_group(pgid: Option<i32>) {
    if let Some(pgid) = pgid.and_then(rustix::process::Pid::from_raw) {
        // ESRCH (already gone) is the common, fine case.
        let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
    }
}

/// A running command. Dropped before it was waited for (its exec call was
/// abandoned), it kills the command's process group and reaps the child in
/// the background, so no zombie is left behind — even in a long-lived host.
struct ReapOnDrop(Option<tokio::process::Child>);

impl ReapOnDrop {
    fn child(&mut self) -> &mut tokio::process::Child {
        self.0.as_mut().expect("present until dropped")
    }

    fn pgid(&mut self) -> Option<i32> {
        self.child().id().map(|pid| pid as i32)
    }

    fn stdout_pipe(&mut self) -> tokio::process::ChildStdout {
        self.child().stdout.take().expect("piped")
    }

    fn stderr_pipe(&mut self) -> tokio::process::ChildStderr {
        self.child().stderr.take().expect("piped")
    }

    async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child().wait().await
    }

    /// The command was waited for: nothing left to do on drop.
    fn done(&mut self) {
        self.0 = None;
    }
}

impl Drop for ReapOnDrop {
    fn drop(&mut self) {
        let Some(mut child) = self.0.take() else { return };
        // Not yet waited for, so the group id is still ours (a zombie leader
        // keeps it reserved): kill the group, then reap.
        kill_group(child.id().map(|pid| pid as i32));
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let _ = child.wait().await;
                });
            }
            Err(_) => {
                let _ = child.start_kill();
                std::thread::spawn(move || {
                    if let Some(pid) = child.id() {
                        // SAFETY: waitpid on our own child's pid.
                        unsafe { libc::waitpid(pid as i32, std::ptr::null_mut(), 0) };
                    }
                });
            }
        }
    }
}

/// Read a stream to its end, keeping the first `cap` bytes.
async fn read_capped(mut stream: impl AsyncRead + Unpin, cap: usize) -> String {
    let mut kept = Vec::new();
    let mut dropped: u64 = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                dropped += (n - n.min(room)) as u64;
            }
        }
    }
    let mut text = String::from_utf8_lossy(&kept).into_owned();
    if dropped > 0 {
        text.push_str(&format!("\n[flue: output truncated: kept the first {cap} bytes, dropped {dropped} more]\n"));
    }
    text
}

async fn drain(reader: tokio::task::JoinHandle<String>) -> String {
    let abort = reader.abort_handle();
    match tokio::time::timeout(PIPE_DRAIN_GRACE, reader).await {
        Ok(Ok(text)) => text,
        _ => {
            abort.abort();
            String::new()
        }
    }
}
