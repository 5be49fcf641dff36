//! The bubblewrap invocation: what an isolated command can see and do.
//!
//! * Fresh namespaces (user, pid, ipc, uts, cgroup, and network unless
//!   `--allow-network`); the system read-only (`/usr`, `/etc`, …), a private
//!   `/tmp`, the sandbox directory read-write at its visible root. Bind
//!   mounts are `nosuid` and `nodev`.
//! * Host files an unprivileged user could not read stay unreadable:
//!   everything under `/etc` that is not world-readable (`shadow`, SSH host
//!   keys, …) is masked, because the command may run as root.
//! * Every capability is dropped (`--cap-drop ALL`), whoever starts flue, and
//!   a seccomp filter ([`super::seccomp`]) refuses setuid and setgid bits.
//! * bubblewrap itself starts with an empty environment; the command's
//!   variables are set *inside* by bubblewrap (`--clearenv`, `--setenv`), so
//!   `LD_PRELOAD` and friends never reach a host-side process.
//! * All arguments — variables, paths, the command itself — travel in a
//!   memfd (`--args`), not in bubblewrap's command line, where other users of
//!   the machine could read them with `ps`.
//!
//! Builds of agent source ([`build_command`]) run in the same sandbox, with
//! the paths the build names and no network — but for the phase that fetches
//! dependencies, which has the host's network and no unix sockets.

use std::ffi::{CString, OsString};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tokio::process::Command;

use super::limits::Launch;
use super::seccomp;
use crate::sandbox::error::SandboxError;

/// The variable that carries the command to the shell inside.
const COMMAND_VAR: &str = "__FLUE_COMMAND";
/// Runs the command from [`COMMAND_VAR`], after removing it from the
/// environment the command and its children see.
const RUN_COMMAND: &str = "__flue_command=$__FLUE_COMMAND; unset __FLUE_COMMAND; eval \"$__flue_command\"";
/// The first fd number handed to bubblewrap (0–2 are stdio).
const FIRST_FD: i32 = 3;

/// One isolated command: where its sandbox is and what it gets.
pub(crate) struct Isolated<'a> {
    /// The sandbox directory on the host.
    pub root: &'a Path,
    /// Where commands see it.
    pub visible_root: &'a str,
    /// The working directory, as commands see it.
    pub cwd: &'a str,
    /// The command's whole environment.
    pub env: &'a [(String, String)],
    /// Volumes, bind-mounted where they belong.
    pub mounts: &'a [super::volumes::Mounted],
    /// Share the host's network.
    pub allow_network: bool,
}

/// Where the supervisor binary appears inside the sandbox.
const SUPERVISOR_PATH: &str = "/run/flue/supervisor";

/// What bubblewrap starts inside the sandbox.
pub(crate) enum Program<'a> {
    /// One command, with `bash -c`; `nproc` limits processes inside. The
    /// shell writes one byte to `started` (then closes it) before anything
    /// else: no byte means bubblewrap failed before the command ran.
    Shell { command: &'a str, nproc: Option<u64>, started: OwnedFd },
    /// The sandbox's supervisor ([`super::supervisor`]): `program` is the
    /// `flue` binary, `socket` its end of the host's socket.
    Supervisor { program: &'a Path, socket: OwnedFd, nproc: Option<u64> },
}

/// A `bwrap` command that starts `program` inside the sandbox; `launch`
/// puts bubblewrap in the sandbox's cgroups and rlimits before it starts.
pub(crate) fn command(
    bwrap: &Path,
    isolated: &Isolated<'_>,
    program: Program<'_>,
    launch: Launch,
) -> Result<Command, SandboxError> {
    let mut passed = Passed::default();
    let mut args = sandbox_args(isolated, &mut passed)?;
    let mut tail: Vec<String> = Vec::new();
    match program {
        Program::Shell { command, nproc, started } => {
            args.extend(["--setenv".into(), COMMAND_VAR.into(), command.into()]);
            let started = passed.pass(started)?;
            // `printf` is a builtin: no process, and the command never
            // sees the fd.
            let mut run = format!("printf 1 >&{started}; exec {started}>&-; ");
            if let Some(n) = nproc {
                run.push_str(&format!("ulimit -u {n}; "));
            }
            run.push_str(RUN_COMMAND);
            tail.extend(["bash".into(), "-c".into(), run]);
        }
        Program::Supervisor { program, socket, nproc } => {
            args.extend(["--ro-bind".into(), program.to_string_lossy().into_owned(), SUPERVISOR_PATH.into()]);
            // bubblewrap passes on fds it was given; this one reaches the supervisor.
            let fd = passed.pass(socket)?;
            tail.extend([SUPERVISOR_PATH.into(), super::supervisor::SUPERVISOR_ARG.into(), fd.to_string()]);
            tail.push(nproc.unwrap_or(0).to_string());
        }
    }
    let mut args: Vec<OsString> = args.into_iter().map(OsString::from).collect();
    refuse_nul(tail.iter().map(|arg| arg.as_bytes()))?;
    let fds = passed.finish(&mut args)?;

    let mut cmd = Command::new(bwrap);
    cmd.env_clear().arg("--args").arg(FIRST_FD.to_string()).arg("--").args(&tail);
    // SAFETY: the closure runs in the child between fork and exec and only
    // makes async-signal-safe calls (dup2, write, setrlimit, close_range). The fds it
    // uses are owned by the closure, so they stay open until the command is
    // dropped.
    unsafe {
        cmd.pre_exec(move || {
            // First: its fds may have any number, including those the
            // dup2 calls below take over.
            launch.apply()?;
            place_fds(&fds)
        });
    }
    Ok(cmd)
}

/// The sandbox: namespaces, mounts, capabilities, environment. Volumes are
/// mounted from their descriptors (`--bind-fd`), handed over in `passed`:
/// bubblewrap checks that what it mounted is what the descriptor is, so no
/// path is looked up again.
fn sandbox_args(isolated: &Isolated<'_>, passed: &mut Passed) -> Result<Vec<String>, SandboxError> {
    let mut args = system_args("flue-sandbox", isolated.allow_network);
    args.extend(["--bind".into(), isolated.root.to_string_lossy().into_owned(), isolated.visible_root.into()]);
    for mount in isolated.mounts {
        let fd = passed.pass(&*mount.dir)?;
        args.extend(["--bind-fd".into(), fd.to_string(), mount.visible.clone()]);
    }
    args.extend(["--chdir".into(), isolated.cwd.into(), "--clearenv".into()]);
    for (name, value) in isolated.env {
        args.extend(["--setenv".into(), name.clone(), value.clone()]);
    }
    Ok(args)
}

/// What every bubblewrap sandbox of flue's has: fresh namespaces (the
/// network too, unless `share_net`), no capabilities, the system read-only
/// with `/etc`'s private files masked, and its own `/proc`, `/dev` and `/tmp`.
fn system_args(hostname: &str, share_net: bool) -> Vec<String> {
    let mut args: Vec<String> = [
        "--unshare-all",
        "--die-with-parent",
        // A new session: the command cannot inject input into our terminal.
        "--new-session",
        "--cap-drop",
        "ALL",
        "--hostname",
        hostname,
        "--ro-bind",
        "/usr",
        "/usr",
    ]
    .map(String::from)
    .to_vec();
    if share_net {
        args.push("--share-net".into());
    }
    // Merged-/usr systems have these as symlinks; older ones as directories.
    for top in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let host = Path::new("/").join(top);
        match std::fs::read_link(&host) {
            Ok(target) => args.extend([
                "--symlink".into(),
                target.to_string_lossy().into_owned(),
                host.to_string_lossy().into_owned(),
            ]),
            Err(_) if host.is_dir() => args.extend([
                "--ro-bind".into(),
                host.to_string_lossy().into_owned(),
                host.to_string_lossy().into_owned(),
            ]),
            Err(_) => {}
        }
    }
    args.extend(["--ro-bind".into(), "/etc".into(), "/etc".into()]);
    for masked in private_etc() {
        match masked {
            Masked::File(path) => args.extend(["--ro-bind".into(), "/dev/null".into(), path.clone()]),
            Masked::Dir(path) => args.extend(["--tmpfs".into(), path.clone()]),
        }
    }
    args.extend(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"].map(String::from));
    args
}

/// A build of agent source (see `guest::isolate`): what it may see
/// and change besides the system.
pub(crate) struct BuildSandbox<'a> {
    /// Host paths it sees read-only, where they are (toolchains, WIT).
    pub read_only: &'a [PathBuf],
    /// Host directories it may change, and where it sees them.
    pub writable: &'a [(PathBuf, PathBuf)],
    /// Host directories it sees read-only at a path inside one of the
    /// writable ones (mounted after them): the fetched crates in a build's
    /// own cargo home.
    pub read_only_within: &'a [(PathBuf, PathBuf)],
    /// Files in what it sees that it must not read (a cargo home's
    /// credentials): each replaced by an empty file.
    pub masked: &'a [PathBuf],
    /// Whether it has the host's network (only the phase that fetches
    /// dependencies, which runs no agent code; it cannot create unix sockets).
    pub network: bool,
    /// Its working directory, as it sees it.
    pub cwd: &'a Path,
    /// Its whole environment.
    pub env: &'a [(OsString, OsString)],
}

/// A `bwrap` command that runs `program args…` as a build: the sandbox of
/// [`system_args`] (so no capabilities, and the seccomp filter), without
/// network unless `build.network`, and nothing of the host's but `build`'s
/// paths. `program` runs directly, without a shell.
pub(crate) fn build_command(
    bwrap: &Path,
    build: &BuildSandbox<'_>,
    program: &Path,
    program_args: &[OsString],
) -> Result<std::process::Command, SandboxError> {
    let mut args: Vec<OsString> = system_args("flue-build", build.network).into_iter().map(OsString::from).collect();
    // With systemd-resolved, /etc/resolv.conf points into /run, which is not
    // there: without it, no name resolves.
    if build.network
        && let Ok(resolver) = std::fs::canonicalize("/etc/resolv.conf")
        && !resolver.starts_with("/etc")
        && !resolver.starts_with("/usr")
    {
        args.extend(["--ro-bind".into(), resolver.clone().into(), resolver.into()]);
    }
    for path in build.read_only {
        args.extend(["--ro-bind".into(), path.into(), path.into()]);
    }
    for (host, visible) in build.writable {
        args.extend(["--bind".into(), host.into(), visible.into()]);
    }
    for (host, visible) in build.read_only_within {
        args.extend(["--ro-bind".into(), host.into(), visible.into()]);
    }
    for path in build.masked {
        args.extend(["--ro-bind".into(), "/dev/null".into(), path.into()]);
    }
    args.extend(["--chdir".into(), build.cwd.into(), "--clearenv".into()]);
    for (name, value) in build.env {
        args.extend(["--setenv".into(), name.clone(), value.clone()]);
    }
    refuse_nul(program_args.iter().map(|arg| arg.as_bytes()))?;
    let mut passed = Passed::default();
    if build.network {
        let program = seccomp::no_unix_sockets().map_err(|e| SandboxError::other(format!("seccomp filter: {e}")))?;
        let fd = passed.pass(memfd("flue-seccomp", program)?)?;
        args.extend(["--add-seccomp-fd".into(), fd.to_string().into()]);
    }
    let fds = passed.finish(&mut args)?;
    let mut cmd = std::process::Command::new(bwrap);
    cmd.env_clear().arg("--args").arg(FIRST_FD.to_string()).arg("--").arg(program).args(program_args);
    // SAFETY: as in `command`: dup2 only, on fds the closure owns.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || place_fds(&fds));
    }
    Ok(cmd)
}

/// The fds handed to bubblewrap, numbered from `FIRST_FD + 1` in the order
/// they are passed; `FIRST_FD` itself is the memfd of arguments, written
/// last ([`Passed::finish`]).
#[derive(Default)]
struct Passed {
    fds: Vec<OwnedFd>,
}

impl Passed {
    /// Hand a copy of `fd` over: the number it will have in bubblewrap.
    fn pass(&mut self, fd: impl AsFd) -> Result<i32, SandboxError> {
        self.fds.push(clear_of_targets(fd)?);
        Ok(FIRST_FD + self.fds.len() as i32)
    }

    /// Add the seccomp programs (and the options naming them to `args`),
    /// then the memfd of `args`: every fd, in the order [`place_fds`]
    /// numbers them from [`FIRST_FD`].
    fn finish(mut self, args: &mut Vec<OsString>) -> Result<Vec<OwnedFd>, SandboxError> {
        let programs = seccomp::programs().map_err(|e| SandboxError::other(format!("seccomp filter: {e}")))?;
        for program in programs.iter() {
            let fd = self.pass(memfd("flue-seccomp", program)?)?;
            args.extend(["--add-seccomp-fd".into(), fd.to_string().into()]);
        }
        refuse_nul(args.iter().map(|arg| arg.as_bytes()))?;
        let mut encoded = Vec::new();
        for arg in args.iter() {
            encoded.extend_from_slice(arg.as_bytes());
            encoded.push(0);
        }
        self.fds.insert(0, clear_of_targets(memfd("flue-bwrap-args", &encoded)?)?);
        Ok(self.fds)
    }
}

/// Arguments travel NUL-separated: one holding a NUL byte would become
/// several, and could add mounts of its own. Refused, whatever its source
/// (a command, a variable, a path).
fn refuse_nul<'a>(args: impl IntoIterator<Item = &'a [u8]>) -> Result<(), SandboxError> {
    match args.into_iter().find(|arg| arg.contains(&0)) {
        Some(arg) => Err(SandboxError::invalid_input(format!(
            "a NUL byte in {:?}: commands, paths and variables cannot hold one",
            String::from_utf8_lossy(arg.split(|b| *b == 0).next().unwrap_or_default())
        ))),
        None => Ok(()),
    }
}

/// In the child, between fork and exec: `fds` at [`FIRST_FD`] onwards, and
/// nothing else flue inherited from whoever started it (a terminal, a
/// socket) — bubblewrap passes on every fd it gets. Those are marked
/// close-on-exec rather than closed, so the pipe that reports a failed exec
/// keeps working. Only dup2 and close_range, which are async-signal-safe.
fn place_fds(fds: &[OwnedFd]) -> std::io::Result<()> {
    for (i, fd) in fds.iter().enumerate() {
        // SAFETY: dup2 on fds that stay open for the call.
        if unsafe { libc::dup2(fd.as_raw_fd(), FIRST_FD + i as i32) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    // SAFETY: close_range(2) with CLOSE_RANGE_CLOEXEC only sets flags.
    unsafe { libc::syscall(libc::SYS_close_range, FIRST_FD + fds.len() as i32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    Ok(())
}

/// Compute, once per process, what every isolated command's arguments
/// need: the seccomp programs and the private `/etc` entries.
pub(crate) fn prepare() {
    let _ = super::seccomp::programs();
    let _ = private_etc();
}

/// A host path hidden from commands.
enum Masked {
    /// Replaced by an empty file.
    File(String),
    /// Replaced by an empty directory.
    Dir(String),
}

/// Everything under `/etc` that is not world-readable (found once).
fn private_etc() -> &'static [Masked] {
    static MASKED: OnceLock<Vec<Masked>> = OnceLock::new();
    MASKED.get_or_init(|| {
        let mut masked = Vec::new();
        let mut pending = vec![std::path::PathBuf::from("/etc")];
        while let Some(dir) = pending.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                // Links (most of /etc) are skipped as they always were, by
                // the type the directory listing gives: no stat for them.
                if entry.file_type().is_ok_and(|kind| kind.is_symlink()) {
                    continue;
                }
                let Ok(meta) = entry.metadata() else { continue };
                let path = entry.path().to_string_lossy().into_owned();
                let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions());
                if meta.is_dir() {
                    if mode & 0o005 != 0o005 {
                        masked.push(Masked::Dir(path));
                    } else {
                        pending.push(entry.path());
                    }
                } else if meta.is_file() && mode & 0o004 == 0 {
                    masked.push(Masked::File(path));
                }
            }
        }
        masked
    })
}

/// A copy of `fd` at a number clear of those the child dup2s onto
/// (`FIRST_FD` up: the arguments, the seccomp programs, the socket and at
/// most [`super::volumes::MAX_VOLUMES`] volumes).
fn clear_of_targets(fd: impl AsFd) -> Result<OwnedFd, SandboxError> {
    rustix::io::fcntl_dupfd_cloexec(fd, 64).map_err(|e| SandboxError::other(format!("cannot prepare the sandbox: {e}")))
}

/// An anonymous in-memory file holding `data`, read from its start.
fn memfd(name: &str, data: &[u8]) -> Result<OwnedFd, SandboxError> {
    let fail = |err: std::io::Error| SandboxError::other(format!("cannot prepare the sandbox ({name}): {err}"));
    let name = CString::new(name).expect("no NUL in fd names");
    let fd = rustix::fs::memfd_create(&name, rustix::fs::MemfdFlags::CLOEXEC).map_err(|e| fail(e.into()))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(data).map_err(fail)?;
    rustix::fs::seek(&file, rustix::fs::SeekFrom::Start(0)).map_err(|e| fail(e.into()))?;
    Ok(file.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_and_capabilities_are_set_inside() {
        let env = vec![("LD_PRELOAD".to_string(), "/workspace/x.so".to_string())];
        let isolated = Isolated {
            root: Path::new("/tmp/x"),
            visible_root: "/workspace",
            cwd: "/workspace",
            env: &env,
            mounts: &[],
            allow_network: false,
        };
        let args = sandbox_args(&isolated, &mut Passed::default()).unwrap();
        let joined = args.join(" ");
        assert!(joined.contains("--cap-drop ALL"), "{joined}");
        let clearenv = args.iter().position(|a| a == "--clearenv").unwrap();
        assert_eq!(args[clearenv + 1..], ["--setenv", "LD_PRELOAD", "/workspace/x.so"]);
        assert!(!joined.contains("--share-net"));
    }
}
