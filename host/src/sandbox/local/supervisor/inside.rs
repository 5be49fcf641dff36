//! The supervisor's side: the process inside the sandbox. It holds no more
//! privilege than the commands it starts (same namespaces, no capabilities,
//! same seccomp filter), so a command that kills or subverts it gains
//! nothing; the host treats what it says as untrusted and replaces it when
//! it dies.
//!
//! Each command runs as `bash -c` in a session of its own. When it exits —
//! or is killed — every process of its session is killed, and so is every
//! process that left its session (`setsid`) without belonging to a running
//! command: as under a per-command sandbox, nothing outlives its `exec`.
//! The supervisor is the sandbox's child subreaper, so orphans come to it
//! and are reaped. When the host closes the socket, it kills everything
//! and exits.

use std::collections::HashMap;
use std::ffi::{CString, OsString};
use std::io::{IoSlice, IoSliceMut, Read};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendFlags};

use super::{MAX_PACKET, Reply, Request, StartRequest};

/// The argument that turns the `flue` binary into a supervisor.
pub const SUPERVISOR_ARG: &str = "__flue-supervisor";

/// Run as the supervisor if the command line says so (call first thing in
/// `main`); otherwise return.
pub fn run_if_requested() {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(std::ffi::OsStr::new(SUPERVISOR_ARG)) {
        return;
    }
    let number = |arg: Option<OsString>| arg.and_then(|a| a.to_str()?.parse::<u64>().ok());
    let (Some(fd), Some(nproc)) = (number(args.next()), number(args.next())) else {
        eprintln!("flue: {SUPERVISOR_ARG} is started by flue itself, inside a sandbox");
        std::process::exit(2);
    };
    // SAFETY: the host handed this fd over, open, for us alone.
    let socket = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    std::process::exit(match supervise(socket, nproc) {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("flue supervisor: {err}");
            1
        }
    });
}

/// A command being run: its leader's pid (= its session id).
struct Running {
    id: u64,
}

fn supervise(socket: OwnedFd, nproc: u64) -> std::io::Result<()> {
    // Orphans come here to be reaped; commands (same user) can neither
    // ptrace this process nor reach its fds through /proc.
    // SAFETY: plain prctl calls on this single-threaded process.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    // Commands inherit stdin, stdout and stderr only: not this socket, nor
    // whatever bubblewrap left open. close_range needs no /proc, so nothing
    // mounted over /proc can hide an fd from it.
    mark_fds_cloexec_from(3);
    if nproc > 0 {
        super::super::limits::set_rlimit(libc::RLIMIT_NPROC, nproc)?;
    }
    let signals = child_signals()?;
    let bash = ["/bin/bash", "/usr/bin/bash"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .map(|p| CString::new(p).expect("no NUL"))
        .ok_or_else(|| std::io::Error::other("bash is not installed"))?;
    send(&socket, &Reply::Ready.encode())?;
    let mut running: HashMap<i32, Running> = HashMap::new();
    loop {
        let mut polled = [
            libc::pollfd { fd: socket.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: signals.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: poll over two valid pollfds.
        if unsafe { libc::poll(polled.as_mut_ptr(), 2, -1) } < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if polled[1].revents != 0 {
            let mut info = [0u8; 128];
            // SAFETY: reading signalfd records into a local buffer.
            while unsafe { libc::read(signals.as_raw_fd(), info.as_mut_ptr().cast(), info.len()) } > 0 {}
            reap(&socket, &mut running)?;
        }
        if polled[0].revents != 0 {
            let mut buf = [0u8; MAX_PACKET];
            let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(3))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let received =
                rustix::net::recvmsg(&socket, &mut [IoSliceMut::new(&mut buf)], &mut control, RecvFlags::CMSG_CLOEXEC)?;
            let mut fds: Vec<OwnedFd> = Vec::new();
            for message in control.drain() {
                if let RecvAncillaryMessage::ScmRights(rights) = message {
                    fds.extend(rights);
                }
            }
            if received.bytes == 0 {
                // The host is gone: nothing may outlive it.
                // SAFETY: kill(2); -1 spares only this process and pid 1.
                unsafe { libc::kill(-1, libc::SIGKILL) };
                return Ok(());
            }
            match serde_json::from_slice::<Request>(&buf[..received.bytes]) {
                Ok(Request::Start { id }) => match start(&bash, fds) {
                    Ok(pid) => {
                        running.insert(pid, Running { id });
                    }
                    Err(err) => send(&socket, &Reply::not_started(id, &err).encode())?,
                },
                Ok(Request::Kill { id }) => {
                    if let Some((&pid, _)) = running.iter().find(|(_, r)| r.id == id) {
                        kill_session(pid);
                    }
                }
                Err(_) => {}
            }
        }
    }
}

/// Mark every fd from `first` on close-on-exec.
fn mark_fds_cloexec_from(first: u32) {
    // SAFETY: close_range(2) with CLOSE_RANGE_CLOEXEC only sets flags.
    let done = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) } == 0;
    if done {
        return;
    }
    // Kernels before 5.11: every fd number up to the limit.
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(1 << 20);
    for fd in first..limit.min(1 << 20) as u32 {
        // SAFETY: fcntl on an fd number; one that is not open fails harmlessly.
        unsafe { libc::fcntl(fd as i32, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

/// A signalfd for `SIGCHLD`, which is blocked from now on.
fn child_signals() -> std::io::Result<OwnedFd> {
    // SAFETY: building and installing a signal mask; signalfd returns a new fd.
    unsafe {
        let mut mask = MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigemptyset(mask.as_mut_ptr());
        libc::sigaddset(mask.as_mut_ptr(), libc::SIGCHLD);
        let mask = mask.assume_init();
        libc::sigprocmask(libc::SIG_BLOCK, &mask, std::ptr::null_mut());
        let fd = libc::signalfd(-1, &mask, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

fn send(socket: &OwnedFd, message: &[u8]) -> std::io::Result<()> {
    rustix::net::sendmsg(socket, &[IoSlice::new(message)], &mut SendAncillaryBuffer::default(), SendFlags::empty())?;
    Ok(())
}

/// Start one command: `fds` are the request memfd, stdout and stderr.
fn start(bash: &CString, fds: Vec<OwnedFd>) -> std::io::Result<i32> {
    let [request, stdout, stderr]: [OwnedFd; 3] =
        fds.try_into().map_err(|_| std::io::Error::other("a start request carries three fds"))?;
    let mut json = String::new();
    std::fs::File::from(request).read_to_string(&mut json)?;
    let request: StartRequest = serde_json::from_str(&json).map_err(std::io::Error::other)?;
    let cstring = |s: &str| CString::new(s).map_err(|_| std::io::Error::other("a NUL byte in the command"));
    let argv_owned = [cstring("bash")?, cstring("-c")?, cstring(&request.command)?];
    let envp_owned: Vec<CString> =
        request.env.iter().map(|(k, v)| cstring(&format!("{k}={v}"))).collect::<Result<_, _>>()?;
    let cwd = cstring(&request.cwd)?;
    let mut argv: Vec<*const libc::c_char> = argv_owned.iter().map(|s| s.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = envp_owned.iter().map(|s| s.as_ptr()).collect();
    envp.push(std::ptr::null());
    let cwd_failed = b"flue: cannot enter the working directory\n";

    // SAFETY: fork in a single-threaded process; the child only makes
    // syscalls on memory prepared above, then execs or exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: in the child, see above.
        unsafe {
            let mut empty = MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(empty.as_mut_ptr());
            libc::sigprocmask(libc::SIG_SETMASK, empty.as_ptr(), std::ptr::null_mut());
            libc::setsid();
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            libc::dup2(null, 0);
            libc::dup2(stdout.as_raw_fd(), 1);
            libc::dup2(stderr.as_raw_fd(), 2);
            if libc::chdir(cwd.as_ptr()) != 0 {
                libc::write(2, cwd_failed.as_ptr().cast(), cwd_failed.len());
                libc::_exit(126);
            }
            libc::execve(bash.as_ptr(), argv.as_ptr(), envp.as_ptr());
            libc::_exit(127);
        }
    }
    drop((stdout, stderr));
    Ok(pid)
}

/// Reap every child that ended; report commands, then clean up after them.
fn reap(socket: &OwnedFd, running: &mut HashMap<i32, Running>) -> std::io::Result<()> {
    loop {
        // SAFETY: waitid into a zeroed siginfo.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let peeked = unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT) };
        // SAFETY: si_pid is valid for SIGCHLD-style siginfo.
        let pid = unsafe { info.si_pid() };
        if peeked != 0 || pid == 0 {
            return Ok(());
        }
        if running.contains_key(&pid) {
            // The leader is a zombie still: its session id cannot be reused
            // while the rest of its session is killed.
            kill_session(pid);
        }
        let mut status = 0;
        // SAFETY: reaping a child that waitid reported as ended.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        if let Some(command) = running.remove(&pid) {
            let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) };
            send(socket, &Reply::Exited { id: command.id, code }.encode())?;
            sweep(running);
        }
    }
}

/// The session of each other process in this namespace.
fn sessions() -> Vec<(i32, i32)> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me && pid != 1)
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // pid (comm) state ppid pgrp session ...
            let after = &stat[stat.rfind(')')? + 2..];
            let session = after.split(' ').nth(3)?.parse().ok()?;
            Some((pid, session))
        })
        .collect()
}

/// Kill every process of the session `leader` leads.
fn kill_session(leader: i32) {
    // SAFETY: kill(2) on a process group and on pids just read.
    unsafe { libc::kill(-leader, libc::SIGKILL) };
    for (pid, session) in sessions() {
        if session == leader {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Kill every process that belongs to no running command (a leader that
/// has not called `setsid` yet is spared by its own pid).
fn sweep(running: &HashMap<i32, Running>) {
    for (pid, session) in sessions() {
        if !running.contains_key(&session) && !running.contains_key(&pid) {
            // SAFETY: kill(2) on a pid just read.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}
