//! The host's side of a sandbox's supervisor: start it under bubblewrap,
//! hand it commands, learn how they ended.
//!
//! A supervisor is started at a sandbox's first isolated command and kept
//! for the sandbox's life. Each command gets two fresh pipes (the host keeps
//! the read ends) and a memfd with the request; the supervisor answers with
//! the exit code. If the supervisor dies — killed by a command, or crashed —
//! the commands it was running are reported as `sandbox-died` and the next
//! command starts a new one.

use std::collections::HashMap;
use std::io::{IoSlice, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::net::{AddressFamily, RecvFlags, SendAncillaryBuffer, SendFlags, SocketFlags, SocketType};
use tokio::io::AsyncReadExt;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe::Receiver;
use tokio::sync::oneshot;

use super::super::bwrap::{Isolated, Program};
use super::super::limits::Launch;
use super::{MAX_PACKET, Reply, Request, StartRequest};
use crate::sandbox::error::{ErrorKind, SandboxError, SandboxResult};

/// How long a new supervisor may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How a command ended, as the supervisor tells it.
#[derive(Debug)]
pub(crate) enum Ended {
    /// Exit code (signals as 128 + n).
    Exited(i32),
    /// It could not start: the OS's error number, if any (`EAGAIN`: the
    /// process limit refused the fork), and what failed.
    NotStarted { errno: Option<i32>, message: String },
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Ended>>>>;

/// A live supervisor.
pub(crate) struct Supervisor {
    socket: Arc<AsyncFd<OwnedFd>>,
    pending: Pending,
    next_id: AtomicU64,
    dead: Arc<AtomicBool>,
    reader: tokio::task::JoinHandle<()>,
    bwrap: Mutex<Option<tokio::process::Child>>,
}

/// A command started through a supervisor: its output pipes and its end.
pub(crate) struct Started<'a> {
    supervisor: &'a Supervisor,
    id: u64,
    outputs: Option<(Receiver, Receiver)>,
    ended: Option<oneshot::Receiver<Ended>>,
}

fn failed(context: &str, err: impl std::fmt::Display) -> SandboxError {
    SandboxError::other(format!("{context}: {err}"))
}

impl Supervisor {
    /// Start a supervisor for the sandbox `isolated` describes.
    pub async fn start(
        bwrap: &Path,
        isolated: &Isolated<'_>,
        program: &Path,
        nproc: Option<u64>,
        launch: Launch,
    ) -> SandboxResult<Supervisor> {
        let (host_end, supervisor_end) =
            rustix::net::socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None)
                .map_err(|err| failed("cannot create the supervisor's socket", err))?;
        let mut command = super::super::bwrap::command(
            bwrap,
            isolated,
            Program::Supervisor { program, socket: supervisor_end, nproc },
            launch,
        )?;
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true);
        let mut child =
            command.spawn().map_err(|err| failed("could not start bubblewrap for the sandbox's supervisor", err))?;
        // Dropping `command` closes our copy of the supervisor's end, so its
        // death reads as end-of-file here.
        drop(command);
        let mut stderr = child.stderr.take().expect("piped");
        let diagnostics = tokio::spawn(async move {
            let mut kept = Vec::new();
            let _ = (&mut stderr).take(4096).read_to_end(&mut kept).await;
            String::from_utf8_lossy(&kept).trim().to_string()
        });

        rustix::io::ioctl_fionbio(&host_end, true).map_err(|err| failed("supervisor socket", err))?;
        // SAFETY: an OwnedFd keeps its one fd open and unchanged while owned.
        let socket = unsafe { AsyncFd::register(host_end) }.map_err(|err| failed("supervisor socket", err))?;
        let socket = Arc::new(socket);
        match tokio::time::timeout(READY_TIMEOUT, receive(&socket)).await {
            Ok(Ok(Some(Reply::Ready))) => {}
            outcome => {
                let _ = child.start_kill();
                let said = tokio::time::timeout(Duration::from_secs(2), diagnostics).await;
                let said = said.ok().and_then(Result::ok).unwrap_or_default();
                super::super::isolation::forget_probe();
                let what = match outcome {
                    Err(_) => "it did not answer in time".to_string(),
                    _ if said.is_empty() => "it exited at once".to_string(),
                    _ => said,
                };
                return Err(SandboxError::other(format!(
                    "bubblewrap could not set up the sandbox: {what} (the command did not run)"
                )));
            }
        }
        let pending: Pending = Default::default();
        let dead = Arc::new(AtomicBool::new(false));
        let reader = tokio::spawn(read_answers(socket.clone(), pending.clone(), dead.clone()));
        Ok(Supervisor { socket, pending, next_id: AtomicU64::new(1), dead, reader, bwrap: Mutex::new(Some(child)) })
    }

    /// Whether it stopped answering (it died, or was killed).
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Start `command` in `cwd` with exactly `env`.
    pub fn start_command(&self, command: &str, cwd: &str, env: &[(String, String)]) -> SandboxResult<Started<'_>> {
        let request = StartRequest { command: command.into(), cwd: cwd.into(), env: env.to_vec() };
        let json = serde_json::to_vec(&request).map_err(|err| failed("cannot encode the command", err))?;
        let memfd = rustix::fs::memfd_create(c"flue-command", rustix::fs::MemfdFlags::CLOEXEC)
            .map_err(|err| failed("cannot pass the command", err))?;
        let mut file = std::fs::File::from(memfd);
        file.write_all(&json).map_err(|err| failed("cannot pass the command", err))?;
        rustix::fs::seek(&file, rustix::fs::SeekFrom::Start(0))
            .map_err(|err| failed("cannot pass the command", err))?;
        let (stdout, stdout_w) = output_pipe()?;
        let (stderr, stderr_w) = output_pipe()?;

        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tell, ended) = oneshot::channel();
        self.pending.lock().expect("not poisoned").insert(id, tell);
        let sent = send_with_fds(
            self.socket.get_ref(),
            &Request::Start { id }.encode(),
            &[file.as_fd(), stdout_w.as_fd(), stderr_w.as_fd()],
        );
        if let Err(err) = sent {
            self.pending.lock().expect("not poisoned").remove(&id);
            self.dead.store(true, Ordering::Release);
            return Err(died(&format!("could not reach it ({err})")));
        }
        Ok(Started { supervisor: self, id, outputs: Some((stdout, stderr)), ended: Some(ended) })
    }

    fn kill(&self, id: u64) {
        let _ = send_with_fds(self.socket.get_ref(), &Request::Kill { id }.encode(), &[]);
    }
}

impl Started<'_> {
    /// The read ends of its stdout and stderr (once).
    pub fn take_outputs(&mut self) -> (Receiver, Receiver) {
        self.outputs.take().expect("taken once")
    }

    /// Wait for the command to end, killing it after `timeout`; whether it
    /// was killed at the timeout.
    pub async fn wait(&mut self, timeout: Option<Duration>) -> SandboxResult<(Ended, bool)> {
        let mut ended = self.ended.take().expect("waited once");
        let first = match timeout {
            Some(limit) => tokio::time::timeout(limit, &mut ended).await.ok(),
            None => Some((&mut ended).await),
        };
        let (outcome, timed_out) = match first {
            Some(outcome) => (outcome, false),
            None => {
                self.supervisor.kill(self.id);
                match tokio::time::timeout(Duration::from_secs(10), ended).await {
                    Ok(outcome) => (outcome, true),
                    Err(_) => {
                        // A supervisor that cannot kill in 10 s is broken.
                        self.supervisor.dead.store(true, Ordering::Release);
                        return Err(died("it did not stop a timed-out command"));
                    }
                }
            }
        };
        match outcome {
            Ok(ended) => Ok((ended, timed_out)),
            Err(_) => Err(died("it died while the command ran (was it killed?)")),
        }
    }
}

impl Drop for Started<'_> {
    fn drop(&mut self) {
        // Abandoned before it ended (the run's deadline): stop it.
        if self.ended.is_some() {
            self.supervisor.pending.lock().expect("not poisoned").remove(&self.id);
            self.supervisor.kill(self.id);
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // Closing the socket makes the supervisor kill everything and exit;
        // bubblewrap is killed too, and reaped at once (it dies within
        // microseconds of SIGKILL), so not even a short-lived zombie is left.
        self.reader.abort();
        let Some(mut child) = self.bwrap.lock().expect("not poisoned").take() else { return };
        let _ = child.start_kill();
        for _ in 0..200 {
            match child.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_micros(250)),
                _ => return,
            }
        }
        // Still there (stuck in the kernel?): reap it in the background.
        super::super::exec::reap_in_background(child);
    }
}

fn died(why: &str) -> SandboxError {
    SandboxError::new(
        ErrorKind::SandboxDied,
        format!("the local sandbox's supervisor process is gone: {why}; the next command starts a new one"),
    )
}

/// A pipe for one output stream: our non-blocking read end, the command's
/// blocking write end.
fn output_pipe() -> SandboxResult<(Receiver, OwnedFd)> {
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|err| failed("cannot create an output pipe", err))?;
    rustix::io::ioctl_fionbio(&read, true).map_err(|err| failed("output pipe", err))?;
    let read = Receiver::from_owned_fd_unchecked(read).map_err(|err| failed("output pipe", err))?;
    Ok((read, write))
}

/// One reply from the supervisor; `None` when it is gone. A packet that is
/// not a reply (a subverted supervisor's) is skipped.
async fn receive(socket: &AsyncFd<OwnedFd>) -> std::io::Result<Option<Reply>> {
    loop {
        let mut guard = socket.readable().await?;
        let mut buf = [0u8; MAX_PACKET];
        let got = guard.try_io(|fd| {
            let mut control = rustix::net::RecvAncillaryBuffer::new(&mut []);
            rustix::net::recvmsg(
                fd.get_ref(),
                &mut [std::io::IoSliceMut::new(&mut buf)],
                &mut control,
                RecvFlags::empty(),
            )
            .map_err(std::io::Error::from)
        });
        match got {
            Ok(Ok(received)) if received.bytes == 0 => return Ok(None),
            Ok(Ok(received)) => match serde_json::from_slice(&buf[..received.bytes]) {
                Ok(reply) => return Ok(Some(reply)),
                Err(_) => continue,
            },
            Ok(Err(err)) => return Err(err),
            Err(_would_block) => continue,
        }
    }
}

/// Route the supervisor's answers to the commands waiting for them; when it
/// is gone, fail them all.
async fn read_answers(socket: Arc<AsyncFd<OwnedFd>>, pending: Pending, dead: Arc<AtomicBool>) {
    while let Ok(Some(reply)) = receive(&socket).await {
        let ended = match reply {
            Reply::Exited { id, code } => Some((id, Ended::Exited(code))),
            Reply::NotStarted { id, errno, message } => Some((id, Ended::NotStarted { errno, message })),
            Reply::Ready => None,
        };
        if let Some((id, ended)) = ended
            && let Some(tell) = pending.lock().expect("not poisoned").remove(&id)
        {
            let _ = tell.send(ended);
        }
    }
    dead.store(true, Ordering::Release);
    pending.lock().expect("not poisoned").clear();
}

/// Send `message` with `fds` attached.
fn send_with_fds(socket: impl AsFd, message: &[u8], fds: &[std::os::fd::BorrowedFd<'_>]) -> std::io::Result<()> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(3))];
    let mut control =
        if fds.is_empty() { SendAncillaryBuffer::default() } else { SendAncillaryBuffer::new(&mut space) };
    if !fds.is_empty() && !control.push(rustix::net::SendAncillaryMessage::ScmRights(fds)) {
        return Err(std::io::Error::other("too many fds for one message"));
    }
    rustix::net::sendmsg(socket, &[IoSlice::new(message)], &mut control, SendFlags::DONTWAIT)?;
    Ok(())
}
