//! Running a command for the local sandbox: `bash -c` in the sandbox
//! directory, started by the sandbox's supervisor ([`super::supervisor`])
//! when isolated, else under a bubblewrap sandbox of its own
//! ([`super::bwrap`], `--exec-mode per-command`) or, without isolation, as a
//! plain child.
//!
//! * Only an allowlisted environment reaches the command: a fixed `PATH`,
//!   `HOME`, `LANG`, `TMPDIR`, then the sandbox's and the call's variables.
//!   Nothing of the host's environment (where secrets live) is passed on,
//!   and when isolated the variables are set inside the sandbox only.
//! * On timeout the command and everything it started are killed (its
//!   session under the supervisor; its process group, or bubblewrap's PID
//!   namespace, otherwise); the result has exit code 124, what was printed
//!   so far, and a note on stderr. When the command exits, stragglers are
//!   killed too, so no process outlives the `exec` call.
//! * Each output stream is capped; past the cap the rest is read and dropped
//!   and a marker says how much was cut.
//! * Everything runs inside the sandbox's limits ([`super::limits`]); a
//!   command a limit stopped gets a note saying which.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::Isolation;
use super::bwrap::{Isolated, Program};
use super::limits::{Counters, Enforced, Launch, SandboxLimits};
use super::supervisor::{Ended, Supervisor};
use super::volumes::Mounted;
use crate::sandbox::error::{SandboxError, SandboxResult};
use crate::sandbox::{ExecOutput, TIMEOUT_EXIT_CODE};

/// The `PATH` commands see.
const SANDBOX_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How long to wait for the output pipes to close after the command exited
/// and its process group was killed (a daemon that escaped the group may
/// hold them open).
const PIPE_DRAIN_GRACE: Duration = Duration::from_secs(2);

/// One command to run.
pub struct CommandSpec<'a> {
    pub command: &'a str,
    /// Absolute path as commands see it.
    pub cwd: &'a str,
    /// The sandbox's and the call's variables.
    pub env: &'a [(String, String)],
    pub timeout: Option<Duration>,
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

/// Where a sandbox is: its directory on the host, where commands see it,
/// and the volumes bind-mounted into it (isolated only).
pub(crate) struct Place {
    pub root: PathBuf,
    pub visible_root: String,
    pub mounts: Vec<Mounted>,
}

/// How one sandbox runs its commands: its isolation, its limits, and (when
/// isolated) its supervisor, started at the first command.
pub(crate) struct Runner {
    pub isolation: Isolation,
    /// The `flue` binary, to run as the supervisor; `None`: a new bubblewrap
    /// sandbox per command.
    pub supervisor_program: Option<PathBuf>,
    pub root: PathBuf,
    pub visible_root: String,
    pub output_cap: usize,
    pub limits: SandboxLimits,
    pub enforced: Enforced,
    /// Volumes bind-mounted into the sandbox (isolated only).
    pub mounts: Vec<Mounted>,
    supervisor: tokio::sync::Mutex<Option<Arc<Supervisor>>>,
}

impl Drop for Runner {
    fn drop(&mut self) {
        // The supervisor owns the sandbox's processes: stop and reap it
        // first. Left to field order, the cgroup (in `enforced`) would kill
        // its bubblewrap and wait for the cgroup to empty while nobody reaps
        // it, a zombie for up to 100 ms.
        self.supervisor.get_mut().take();
    }
}

/// A command that was started: its output readers and how to wait for it.
struct Running {
    stdout: tokio::task::JoinHandle<String>,
    stderr: tokio::task::JoinHandle<String>,
    /// Under bubblewrap without a supervisor: the read end the sandbox's
    /// shell writes a byte to once it runs.
    started: Option<OwnedFd>,
}

impl Runner {
    /// A runner; nothing is started yet.
    pub fn new(
        isolation: Isolation,
        supervisor_program: Option<PathBuf>,
        place: Place,
        output_cap: usize,
        limits: SandboxLimits,
        enforced: Enforced,
    ) -> Self {
        let Place { root, visible_root, mounts } = place;
        Runner {
            isolation,
            supervisor_program,
            root,
            visible_root,
            output_cap,
            limits,
            enforced,
            mounts,
            supervisor: Default::default(),
        }
    }

    fn isolated<'a>(&'a self, cwd: &'a str, env: &'a [(String, String)]) -> Option<(&'a Path, Isolated<'a>)> {
        match &self.isolation {
            Isolation::Bubblewrap { bwrap, allow_network } => Some((
                bwrap.as_path(),
                Isolated {
                    root: &self.root,
                    visible_root: &self.visible_root,
                    cwd,
                    env,
                    mounts: &self.mounts,
                    allow_network: *allow_network,
                },
            )),
            Isolation::None => None,
        }
    }

    /// Start the supervisor now (isolated with a supervisor only), so that
    /// the first command does not wait for it.
    pub async fn warm(&self) -> SandboxResult<()> {
        match (&self.supervisor_program, self.isolation.is_isolated()) {
            (Some(program), true) => self.supervisor(program).await.map(drop),
            _ => Ok(()),
        }
    }

    /// `RLIMIT_NPROC` to set inside the sandbox, when no cgroup limits processes.
    fn nproc(&self) -> Option<u64> {
        self.enforced.rlimits.nproc
    }

    /// Run one command to its end (or its timeout).
    pub async fn run(&self, spec: CommandSpec<'_>) -> SandboxResult<ExecOutput> {
        let env = command_env(&self.visible_root, spec.env);
        let before = self.counters();
        let (exit_code, timed_out, running) = match (&self.supervisor_program, self.isolation.is_isolated()) {
            (Some(program), true) => self.run_supervised(program, &spec, &env).await?,
            _ => self.run_spawned(&spec, &env).await?,
        };
        let stdout = drain(running.stdout).await;
        let mut stderr = drain(running.stderr).await;
        // bwrap itself failed: the sandbox's shell never said it started.
        if running.started.as_ref().is_some_and(|started| !started_said_so(started)) {
            super::isolation::forget_probe();
            return Err(SandboxError::other(format!(
                "bubblewrap could not set up the sandbox: {} (the command did not run)",
                stderr.trim()
            )));
        }
        if timed_out {
            let limit = spec.timeout.unwrap_or_default();
            stderr.push_str(&format!("\n[flue: command timed out after {} ms and was killed]\n", limit.as_millis()));
        } else if let Some(note) = super::limits::note(&self.limits, before, self.counters(), exit_code) {
            stderr.push_str(&format!("\n{note}\n"));
        }
        Ok(ExecOutput { stdout, stderr, exit_code, timed_out })
    }

    fn counters(&self) -> Counters {
        self.enforced.cgroup.as_ref().map(|cgroup| cgroup.counters()).unwrap_or_default()
    }

    /// The live supervisor, started (or replaced, if it died) as needed.
    async fn supervisor(&self, program: &Path) -> SandboxResult<Arc<Supervisor>> {
        let mut slot = self.supervisor.lock().await;
        if let Some(live) = slot.as_ref().filter(|s| !s.is_dead()) {
            return Ok(live.clone());
        }
        if slot.is_some() {
            tracing::debug!("the local sandbox's supervisor died; starting a new one");
        }
        let (bwrap, isolated) = self.isolated(&self.visible_root, &[]).expect("isolated");
        let started =
            Arc::new(Supervisor::start(bwrap, &isolated, program, self.nproc(), Launch::new(&self.enforced)).await?);
        *slot = Some(started.clone());
        Ok(started)
    }

    async fn run_supervised(
        &self,
        program: &Path,
        spec: &CommandSpec<'_>,
        env: &[(String, String)],
    ) -> SandboxResult<(i32, bool, Running)> {
        let supervisor = self.supervisor(program).await?;
        let mut started = supervisor.start_command(spec.command, spec.cwd, env)?;
        let (stdout, stderr) = started.take_outputs();
        let running = Running {
            stdout: tokio::spawn(read_capped(stdout, self.output_cap)),
            stderr: tokio::spawn(read_capped(stderr, self.output_cap)),
            started: None,
        };
        let (ended, timed_out) = started.wait(spec.timeout).await?;
        match ended {
            Ended::Exited(code) => Ok((if timed_out { TIMEOUT_EXIT_CODE } else { code }, timed_out, running)),
            Ended::NotStarted { errno, message: why } => {
                let counters = self.counters();
                let _ = (drain(running.stdout).await, drain(running.stderr).await);
                let note = if errno == Some(libc::EAGAIN) || counters.refused_forks > 0 {
                    format!(" (the sandbox's limit of {} processes is reached)", self.limits.max_processes)
                } else {
                    String::new()
                };
                Ok((
                    126,
                    false,
                    Running {
                        stdout: tokio::spawn(async { String::new() }),
                        stderr: tokio::spawn(
                            async move { format!("flue: the command could not start: {why}{note}\n") },
                        ),
                        started: None,
                    },
                ))
            }
        }
    }

    async fn run_spawned(
        &self,
        spec: &CommandSpec<'_>,
        env: &[(String, String)],
    ) -> SandboxResult<(i32, bool, Running)> {
        let launch = Launch::new(&self.enforced);
        let mut started = None;
        let mut command = match self.isolated(spec.cwd, env) {
            Some((bwrap, isolated)) => {
                let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
                    .map_err(|err| SandboxError::other(format!("cannot create a pipe: {err}")))?;
                started = Some(read);
                super::bwrap::command(
                    bwrap,
                    &isolated,
                    Program::Shell { command: spec.command, nproc: self.nproc(), started: write },
                    launch,
                )?
            }
            None => {
                let rel = crate::sandbox::paths::strip_root(&self.visible_root, spec.cwd).ok_or_else(|| {
                    SandboxError::permission_denied(format!(
                        "working directory {} is outside the sandbox root {} (commands run without isolation here)",
                        spec.cwd, self.visible_root
                    ))
                })?;
                let mut command = Command::new("bash");
                command
                    .arg("-c")
                    .arg(spec.command)
                    .current_dir(self.root.join(rel))
                    .env_clear()
                    .envs(env.iter().map(|(k, v)| (k, v)));
                // SAFETY: `Launch::apply` is async-signal-safe.
                unsafe { command.pre_exec(move || launch.apply()) };
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

        // Our copies of the shell's `started` end close with the command.
        drop(command);
        let running = Running {
            stdout: tokio::spawn(read_capped(child.stdout_pipe(), self.output_cap)),
            stderr: tokio::spawn(read_capped(child.stderr_pipe(), self.output_cap)),
            started,
        };
        let waited = match spec.timeout {
            Some(limit) => tokio::time::timeout(limit, child.wait()).await.ok(),
            None => Some(child.wait().await),
        };
        kill_group(pgid);
        if waited.is_none() {
            let _ = child.wait().await;
        }
        child.done();
        match waited {
            Some(status) => {
                let status =
                    status.map_err(|err| SandboxError::other(format!("waiting for the command failed: {err}")))?;
                Ok((exit_code_of(status), false, running))
            }
            None => Ok((TIMEOUT_EXIT_CODE, true, running)),
        }
    }
}

/// Whether the sandbox's shell wrote its byte to `started` (it has exited
/// by now, so what it wrote is in the pipe).
fn started_said_so(started: &OwnedFd) -> bool {
    let _ = rustix::io::ioctl_fionbio(started, true);
    let mut byte = [0u8; 1];
    matches!(rustix::io::read(started, &mut byte), Ok(1))
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
        let Some(child) = self.0.take() else { return };
        // Not yet waited for, so the group id is still ours (a zombie leader
        // keeps it reserved): kill the group, then reap.
        kill_group(child.id().map(|pid| pid as i32));
        reap_in_background(child);
    }
}

/// Kill `child` and reap it without waiting here: on the tokio runtime when
/// there is one, else on a thread of its own. No zombie is left behind.
pub(crate) fn reap_in_background(mut child: tokio::process::Child) {
    let _ = child.start_kill();
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(async move {
                let _ = child.wait().await;
            });
        }
        Err(_) => {
            std::thread::spawn(move || {
                while let Ok(None) = child.try_wait() {
                    std::thread::sleep(Duration::from_millis(10));
                }
            });
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
